/* SPDX-License-Identifier: MIT */
/* tools/cmd_pager.c - kvmig pager init | show | rm: shared-memory synthetic pagers. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char pager_usage[] =
	"usage: kvmig pager init shm:NAME [options]\n"
	"       kvmig pager show shm:NAME [--json]\n"
	"       kvmig pager status shm:NAME [--json]\n"
	"       kvmig pager resolve shm:NAME shm:OTHER [--json]\n"
	"       kvmig pager resolve shm:NAME --migration ID --peer-state STATE [--json]\n"
	"       kvmig pager gc shm:NAME [--json]\n"
	"       kvmig pager hash shm:NAME [--threads N] [--forget] [--json]\n"
	"       kvmig pager rm shm:NAME [--force]\n"
	"       kvmig pager run shm:NAME [--rate TOKENS/S] [--seconds S] [--max-tokens N]\n"
	"                                [--seed N] [--json]\n"
	"\n"
	"Create, describe or remove a synthetic pager in shared memory, which other\n"
	"kvmig processes open with --pager shm:NAME.\n"
	"status lists the pager's migration records: each migration leaves one in\n"
	"both pagers until its outcome is applied on both sides, and a process that\n"
	"died (or lost its peer) during the commit leaves one behind, in doubt.\n"
	"resolve applies them from the other side's record, never from an exit\n"
	"status: with both pagers on this host, name both; across hosts, give the\n"
	"migration ID and the state `kvmig pager status` shows for it on the other\n"
	"pager (none if it shows no such record). A restarted send / recv between\n"
	"the same two pagers resolves them by itself. gc reclaims what processes that\n"
	"died left (pauses, pages, undecided records; attaching does it too). hash\n"
	"computes the digests of the pages of runnable sequences ahead and keeps them\n"
	"in the pager, so a migration hashes only what was written since (--threads:\n"
	"default the online CPUs; --forget drops the kept ones first, to measure). rm\n"
	"refuses a pager that is paused, in use or holds records; --force removes it\n"
	"anyway and says what that destroyed.\n"
	"run is a decoding engine: it appends tokens to the pager's sequences, round\n"
	"robin at --rate tokens per second in all (default 240), each token writing its\n"
	"slot of every layer in the sequence's last page and growing the sequence by a\n"
	"page when that one is full; it waits while the pager is paused. It stops after\n"
	"--seconds (default: on SIGINT / SIGTERM) and prints what it wrote; a sequence\n"
	"stops after --max-tokens tokens (default: never) or when it is moved away.\n"
	"\n"
	"init options:\n"
	"  --preset NAME        llama3-8b (default: 32 layers, 8 heads, dim 128, bf16,\n"
	"                       16 tokens/page, 1 MiB per half) or tiny\n"
	"  --layers N --heads N --head-dim N --tokens N --dtype bf16|f16|f32|fp8_e4m3\n"
	"                       override single fields of the preset\n"
	"  --layout page-major|layer-major   (default page-major)\n"
	"  --capacity N         pages the arena holds (default 64)\n"
	"  --seqs N             sequences to create and fill (default 0: empty pager)\n"
	"  --pages-per-seq N    pages of each sequence, shared prefix included (default 4)\n"
	"  --shared-prefix N    leading pages all sequences share (default 0)\n"
	"  --seed N             fill seed; equal seeds give identical pages (default 1)\n";

static int parse_dim(const char *arg, uint32_t *out)
{
	uint64_t v;

	if (cli_parse_u64(arg, UINT32_MAX, &v) < 0)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

static int pager_init(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "preset", required_argument, NULL, 'p' },
		{ "layers", required_argument, NULL, 'L' },
		{ "heads", required_argument, NULL, 'H' },
		{ "head-dim", required_argument, NULL, 'D' },
		{ "tokens", required_argument, NULL, 'T' },
		{ "dtype", required_argument, NULL, 't' },
		{ "layout", required_argument, NULL, 'l' },
		{ "capacity", required_argument, NULL, 'c' },
		{ "seqs", required_argument, NULL, 's' },
		{ "pages-per-seq", required_argument, NULL, 'n' },
		{ "shared-prefix", required_argument, NULL, 'x' },
		{ "seed", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct kvmig_synth_opts o;
	struct kvmig_pager *p = NULL;
	uint64_t v;
	int c, ret;

	kvmig_synth_opts_init(&o);
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (kvmig_meta_preset(optarg, &o.meta) < 0)
				return cli_usage_error("pager init", "%s", kvmig_last_error());
			break;
		case 'L':
		case 'H':
		case 'D':
		case 'T': {
			uint32_t *f = c == 'L' ? &o.meta.n_layers : c == 'H' ? &o.meta.n_heads :
				      c == 'D' ? &o.meta.head_dim : &o.meta.page_size_tokens;

			if (parse_dim(optarg, f) < 0)
				return cli_usage_error("pager init", "\"%s\" is not a count", optarg);
			break;
		}
		case 't':
			if (kvmig_dtype_parse(optarg, &o.meta.dtype) < 0)
				return cli_usage_error("pager init", "%s", kvmig_last_error());
			break;
		case 'l':
			if (kvmig_layout_parse(optarg, &o.layout) < 0)
				return cli_usage_error("pager init", "%s", kvmig_last_error());
			break;
		case 'c':
		case 's':
		case 'n':
		case 'x': {
			uint32_t *f = c == 'c' ? &o.capacity_pages : c == 's' ? &o.n_seqs :
				      c == 'n' ? &o.pages_per_seq : &o.shared_prefix_pages;

			if (parse_dim(optarg, f) < 0)
				return cli_usage_error("pager init", "\"%s\" is not a count", optarg);
			break;
		}
		case 'S':
			if (cli_parse_u64(optarg, UINT64_MAX, &v) < 0)
				return cli_usage_error("pager init", "\"%s\" is not a seed", optarg);
			o.seed = v;
			break;
		case 'h':
			fputs(pager_usage, stdout);
			return EXIT_OK;
		default:
			return cli_bad_option("pager init", argv);
		}
	}
	if (optind + 1 != argc || strncmp(argv[optind], "shm:", 4) || !argv[optind][4])
		return cli_usage_error("pager init", "expected one pager name shm:NAME");
	if (!o.capacity_pages)
		return cli_usage_error("pager init", "--capacity is at least 1");
	o.shm_name = argv[optind] + 4;
	ret = kvmig_synth_create(&o, &p);
	if (ret < 0)
		return cli_fail("pager init", ret, "cannot create pager %s", argv[optind]);
	kvmig_pager_destroy(&p);
	printf("created %s\n", argv[optind]);
	return EXIT_OK;
}

static void print_seq_ixs(const struct kvmig_seq *q)
{
	for (uint32_t j = 0; j < q->n_pages; j++)
		printf("%s%u", j ? "," : "", q->page_ixs[j]);
}

/* "--json" anywhere, "--help", and the positional arguments (at most @max). */
static int simple_args(const char *cmd, int argc, char **argv, const char **pos, int max,
		       int *n, int *json)
{
	*n = 0;
	*json = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			*json = 1;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(pager_usage, stdout);
			return EXIT_OK;
		} else if (argv[i][0] == '-' || *n == max) {
			return cli_usage_error(cmd, "unexpected argument \"%s\"", argv[i]);
		} else {
			pos[(*n)++] = argv[i];
		}
	}
	return -1;
}

static int open_pager(const char *cmd, const char *spec, struct kvmig_pager **p)
{
	int ret = kvmig_pager_open(spec, p);

	return ret < 0 ? cli_fail(cmd, ret, "cannot open pager %s", spec) : 0;
}

static int pager_show(int argc, char **argv)
{
	struct kvmig_seq_list l = { 0 };
	struct kvmig_pager *p = NULL;
	struct kvmig_cache_meta meta;
	enum kvmig_layout layout;
	uint32_t *ixs = NULL, n = 0;
	uint64_t half;
	int json = 0, ret, npos;
	const char *spec = NULL;
	char desc[128], bytes[32], hex[33];

	if ((ret = simple_args("pager show", argc, argv, &spec, 1, &npos, &json)) >= 0)
		return ret;
	if (!npos)
		return cli_usage_error("pager show", "expected a pager shm:NAME");
	if ((ret = open_pager("pager show", spec, &p)) != 0)
		return ret;
	if ((ret = kvmig_pager_meta(p, &meta, &layout)) < 0 ||
	    (ret = kvmig_meta_half_bytes(&meta, &half)) < 0 ||
	    (ret = kvmig_pager_occupied(p, &ixs, &n)) < 0 || (ret = kvmig_pager_seqs(p, &l)) < 0) {
		kvmig_pager_destroy(&p);
		free(ixs);
		return cli_fail("pager show", ret, "cannot read pager %s", spec);
	}
	kvmig_meta_describe(&meta, desc, sizeof(desc));
	cli_fmt_bytes(2 * half * n, bytes, sizeof(bytes));
	if (json) {
		json_t *seqs = json_array();
		char name[256];

		for (uint32_t i = 0; i < l.n; i++) {
			json_t *ixa = json_array(), *o;

			for (uint32_t j = 0; j < l.seqs[i].n_pages; j++)
				json_array_append_new(ixa, json_integer(l.seqs[i].page_ixs[j]));
			o = json_pack("{s:s,s:o,s:i,s:s}", "id",
				      cli_printable(l.seqs[i].id, name, sizeof(name)), "page_ixs", ixa,
				      "fill_in_last_page", (int)l.seqs[i].fill_in_last_page, "state",
				      kvmig_seq_state_name(l.seqs[i].state));
			if (l.seqs[i].state != KVMIG_SEQ_ACTIVE) {
				kvmig_id_format(&l.seqs[i].migration, hex);
				json_object_set_new(o, "migration", json_string(hex));
			}
			json_array_append_new(seqs, o);
		}
		cli_emit_json(json_pack("{s:s,s:s,s:i,s:i,s:i,s:i,s:s,s:I,s:i,s:o}", "pager",
					cli_printable(spec, name, sizeof(name)), "layout",
					kvmig_layout_name(layout), "page_size_tokens",
					(int)meta.page_size_tokens, "n_layers", (int)meta.n_layers,
					"n_heads", (int)meta.n_heads, "head_dim", (int)meta.head_dim,
					"dtype", kvmig_dtype_name(meta.dtype), "half_bytes",
					(json_int_t)half, "occupied_pages", (int)n, "logical_seqs",
					seqs));
	} else {
		printf("pager %s: %s, %s\n", spec, desc, kvmig_layout_name(layout));
		printf("  %u pages occupied (%s), %u sequences\n", n, bytes, l.n);
		for (uint32_t i = 0; i < l.n; i++) {
			printf("  %-20s %u pages, fill %u: ", l.seqs[i].id, l.seqs[i].n_pages,
			       l.seqs[i].fill_in_last_page);
			print_seq_ixs(&l.seqs[i]);
			if (l.seqs[i].state != KVMIG_SEQ_ACTIVE) {
				kvmig_id_format(&l.seqs[i].migration, hex);
				printf("  [%s, migration %s]", kvmig_seq_state_name(l.seqs[i].state),
				       hex);
			}
			printf("\n");
		}
	}
	kvmig_seq_list_free(&l);
	free(ixs);
	kvmig_pager_destroy(&p);
	return EXIT_OK;
}

/* Whether @r waits for resolution (nobody drives it) and what moves it on. */
static const char *record_advice(const struct kvmig_record *r)
{
	if (r->owner_pid)
		return "in progress: its process is alive";
	switch (r->state) {
	case KVMIG_REC_PREPARED:
		return "in doubt: the sequences are pending (not running) until the source's "
		       "record says how the migration ended";
	case KVMIG_REC_DEPARTED:
		return "committed; the sequences are departed (not running) until the "
		       "destination's record confirms it runs them";
	case KVMIG_REC_COMMITTED:
		return "committed (copy); waiting for the destination's record to confirm";
	case KVMIG_REC_ACTIVATED:
		return "committed; the sequences run here; waiting for the source to release "
		       "its copy";
	default:
		return "left by a process that died: gc or the next attach aborts it";
	}
}

static json_t *record_json(const struct kvmig_record *r)
{
	char hex[33], peer[33], addr[80];

	kvmig_id_format(&r->id, hex);
	kvmig_id_format(&r->peer_pager, peer);
	/* Only the source knows the mode (HELLO does not carry it). */
	return json_pack("{s:s,s:s,s:s,s:s*,s:s,s:s,s:i,s:I,s:i,s:b,s:s}", "migration", hex,
			 "role", r->role == KVMIG_ROLE_SOURCE ? "source" : "destination", "state",
			 kvmig_record_state_name(r->state),
			 "mode", r->role != KVMIG_ROLE_SOURCE ? NULL : r->move ? "move" : "copy",
			 "peer_pager", peer, "peer_addr",
			 cli_printable(r->peer_addr, addr, sizeof(addr)), "owner_pid",
			 (int)r->owner_pid, "created", (json_int_t)r->created, "seqs",
			 (int)r->n_seqs, "in_doubt", !r->owner_pid, "advice", record_advice(r));
}

static int pager_status(int argc, char **argv)
{
	struct kvmig_record *recs = NULL;
	struct kvmig_pager *p = NULL;
	struct kvmig_id id;
	uint32_t n = 0, depth = 0;
	const char *spec = NULL;
	char hex[33], peer[33];
	int json, ret, npos;

	if ((ret = simple_args("pager status", argc, argv, &spec, 1, &npos, &json)) >= 0)
		return ret;
	if (!npos)
		return cli_usage_error("pager status", "expected a pager shm:NAME");
	if ((ret = open_pager("pager status", spec, &p)) != 0)
		return ret;
	if ((ret = kvmig_pager_identity(p, &id)) < 0 || (ret = kvmig_pager_records(p, &recs, &n)) < 0 ||
	    (ret = kvmig_synth_pause_depth(p, &depth)) < 0) {
		kvmig_pager_destroy(&p);
		return cli_fail("pager status", ret, "cannot read pager %s", spec);
	}
	kvmig_id_format(&id, hex);
	if (json) {
		json_t *a = json_array();
		char name[256];

		for (uint32_t i = 0; i < n; i++)
			json_array_append_new(a, record_json(&recs[i]));
		cli_emit_json(json_pack("{s:s,s:s,s:i,s:o}", "pager",
					cli_printable(spec, name, sizeof(name)), "id", hex, "paused",
					(int)depth, "records", a));
	} else {
		printf("pager %s (id %s): %u migration record%s%s\n", spec, hex, n, n == 1 ? "" : "s",
		       depth ? ", paused" : "");
		for (uint32_t i = 0; i < n; i++) {
			const struct kvmig_record *r = &recs[i];

			kvmig_id_format(&r->id, hex);
			kvmig_id_format(&r->peer_pager, peer);
			printf("  migration %s: %s, %s%s, %u sequence%s; peer pager %s (%s)\n", hex,
			       r->role == KVMIG_ROLE_SOURCE ? "source" : "destination",
			       kvmig_record_state_name(r->state),
			       r->role != KVMIG_ROLE_SOURCE ? "" : r->move ? " (move)" : " (copy)",
			       r->n_seqs, r->n_seqs == 1 ? "" : "s", peer, r->peer_addr);
			printf("    %s%s\n", record_advice(r),
			       r->owner_pid ? "" : "; resolve with kvmig pager resolve");
		}
	}
	free(recs);
	kvmig_pager_destroy(&p);
	return EXIT_OK;
}

static int pager_rm(int argc, char **argv)
{
	struct kvmig_synth_remove_report rep;
	const char *spec = NULL;
	int force = 0, ret;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(pager_usage, stdout);
			return EXIT_OK;
		} else if (!strcmp(argv[i], "--force")) {
			force = 1;
		} else if (!spec && !strncmp(argv[i], "shm:", 4) && argv[i][4]) {
			spec = argv[i];
		} else {
			return cli_usage_error("pager rm", "unexpected argument \"%s\"", argv[i]);
		}
	}
	if (!spec)
		return cli_usage_error("pager rm", "expected one pager shm:NAME");
	ret = kvmig_synth_remove(spec + 4, force, &rep);
	if (ret == -EBUSY && !force)
		return cli_fail("pager rm", ret, "refusing to remove pager %s (--force removes it "
				"anyway)", spec);
	if (ret < 0)
		return cli_fail("pager rm", ret, "cannot remove pager %s", spec);
	if (force && rep.activated) {
		char hex[33];

		kvmig_id_format(&rep.activated_id, hex);
		fprintf(stderr, "kvmig pager rm: warning: migration %s%s had just committed into "
			"%s (activated there as it was removed): its sequences are lost with the "
			"pager\n", hex, rep.activated > 1 ? " and others" : "", spec);
	}
	if (force && rep.locked_by)
		fprintf(stderr, "kvmig pager rm: removed %s while process %u held its lock (stopped "
			"or stuck): what it held could not be read and is gone; a migration into "
			"it that has not activated there fails before it does\n", spec,
			rep.locked_by);
	else if (force && (rep.seqs || rep.records || rep.paused_by || rep.attached_by))
		fprintf(stderr, "kvmig pager rm: removed %s with %u sequences, %u pages and %u "
			"migration records%s%s; a migration into it that was still running fails "
			"before it activates there\n", spec, rep.seqs, rep.pages, rep.records,
			rep.paused_by ? ", while paused by a live process" : "",
			rep.attached_by ? ", while a live process used it" : "");
	return EXIT_OK;
}

static void print_resolved(const char *what, const struct kvmig_resolve_stats *st, int json)
{
	if (json) {
		cli_emit_json(json_pack("{s:s,s:i,s:i,s:i,s:i,s:i}", "resolved", what, "activated",
					(int)st->activated, "finished", (int)st->finished,
					"aborted", (int)st->aborted, "in_doubt", (int)st->in_doubt,
					"in_progress", (int)st->in_progress));
		return;
	}
	printf("%s: %u activated, %u finished, %u aborted, %u still in doubt", what,
	       st->activated, st->finished, st->aborted, st->in_doubt);
	if (st->in_progress)
		printf(", %u in progress (their processes are alive and drive them)",
		       st->in_progress);
	printf("\n");
}

static int pager_resolve(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "migration", required_argument, NULL, 'm' },
		{ "peer-state", required_argument, NULL, 'p' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct kvmig_resolve_stats st = { 0 };
	struct kvmig_pager *a = NULL, *b = NULL;
	enum kvmig_record_state peer = KVMIG_REC_NONE;
	const char *mig_text = NULL, *peer_text = NULL;
	struct kvmig_id mig;
	int c, json = 0, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'm':
			mig_text = optarg;
			break;
		case 'p':
			peer_text = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			fputs(pager_usage, stdout);
			return EXIT_OK;
		default:
			return cli_bad_option("pager resolve", argv);
		}
	}
	if (!!mig_text != !!peer_text)
		return cli_usage_error("pager resolve", "--migration and --peer-state go together");
	if (argc - optind != (mig_text ? 1 : 2))
		return cli_usage_error("pager resolve", "expected shm:NAME shm:OTHER, or shm:NAME "
				       "--migration ID --peer-state STATE");
	if (mig_text && kvmig_id_parse(mig_text, &mig) < 0)
		return cli_usage_error("pager resolve", "%s", kvmig_last_error());
	if (peer_text && kvmig_record_state_parse(peer_text, &peer) < 0)
		return cli_usage_error("pager resolve", "%s", kvmig_last_error());
	if ((ret = open_pager("pager resolve", argv[optind], &a)) != 0)
		return ret;
	if (!mig_text && (ret = open_pager("pager resolve", argv[optind + 1], &b)) != 0) {
		kvmig_pager_destroy(&a);
		return ret;
	}
	ret = mig_text ? kvmig_migrate_resolve_record(a, &mig, peer, &st) :
		kvmig_migrate_resolve_pair(a, b, &st);
	kvmig_pager_destroy(&a);
	kvmig_pager_destroy(&b);
	if (ret < 0)
		return cli_fail("pager resolve", ret, "cannot resolve");
	print_resolved(mig_text ? mig_text : "records", &st, json);
	/* Records still in doubt: the other side must move first, or its
	 * record is needed; not done, as exit 7 says for a migration. Records
	 * a live process drives are not in doubt: it finishes them. */
	return st.in_doubt ? EXIT_INDOUBT : EXIT_OK;
}

static int pager_gc(int argc, char **argv)
{
	struct kvmig_gc_stats st;
	struct kvmig_pager *p = NULL;
	const char *spec = NULL;
	int json, ret, npos;

	if ((ret = simple_args("pager gc", argc, argv, &spec, 1, &npos, &json)) >= 0)
		return ret;
	if (!npos)
		return cli_usage_error("pager gc", "expected a pager shm:NAME");
	if ((ret = open_pager("pager gc", spec, &p)) != 0)
		return ret;
	ret = kvmig_pager_gc(p, &st);
	kvmig_pager_destroy(&p);
	if (ret < 0)
		return cli_fail("pager gc", ret, "cannot reclaim in %s", spec);
	if (json)
		cli_emit_json(json_pack("{s:s,s:i,s:i,s:i,s:i,s:i}", "event", "gc", "pauses",
					(int)st.pauses, "pages", (int)st.pages, "aborted",
					(int)st.aborted, "completed", (int)st.completed, "in_doubt",
					(int)st.in_doubt));
	else
		printf("%s: dropped %u pauses, freed %u pages, aborted %u undecided migrations, "
		       "completed %u interrupted steps; %u records await resolution\n", spec,
		       st.pauses, st.pages, st.aborted, st.completed, st.in_doubt);
	return EXIT_OK;
}

static int pager_hash(int argc, char **argv)
{
	struct kvmig_hash_ahead_stats st;
	struct kvmig_pager *p = NULL;
	const char *spec = NULL;
	int json = 0, forget = 0, ret;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	uint32_t threads = cpus > 64 ? 64 : cpus > 0 ? (uint32_t)cpus : 1;
	uint64_t v;

	/* --threads N (default: the online CPUs), --forget (drop the kept
	 * digests first: every page hashed, for measuring), --json. */
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = 1;
		} else if (!strcmp(argv[i], "--forget")) {
			forget = 1;
		} else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
			if (cli_parse_u64(argv[++i], 64, &v) < 0 || !v)
				return cli_usage_error("pager hash", "--threads is 1 to 64");
			threads = (uint32_t)v;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(pager_usage, stdout);
			return EXIT_OK;
		} else if (argv[i][0] == '-' || spec) {
			return cli_usage_error("pager hash", "unexpected argument \"%s\"", argv[i]);
		} else {
			spec = argv[i];
		}
	}
	if (!spec)
		return cli_usage_error("pager hash", "expected a pager shm:NAME");
	if ((ret = open_pager("pager hash", spec, &p)) != 0)
		return ret;
	if (forget)
		cli_forget_digests(p);
	ret = kvmig_hash_ahead(p, NULL, 0, threads, &st);
	kvmig_pager_destroy(&p);
	if (ret < 0)
		return cli_fail("pager hash", ret, "cannot hash ahead in %s", spec);
	if (json)
		cli_emit_json(json_pack("{s:s,s:i,s:i,s:i,s:i,s:I,s:i,s:f,s:f}", "event", "hash",
					"pages", (int)st.pages, "fresh", (int)st.fresh, "hashed",
					(int)st.hashed, "raced", (int)st.raced, "bytes",
					(json_int_t)st.bytes, "threads", (int)st.threads, "seconds",
					st.seconds, "gbps", st.seconds > 0 ?
					(double)st.bytes / st.seconds / 1e9 : 0.0));
	else
		printf("%s: %u pages of runnable sequences: %u already current, %u hashed and "
		       "kept, %u written while hashed (left for the next pass), in %.3f s "
		       "(%.2f GB/s, %u thread%s)\n", spec, st.pages, st.fresh, st.hashed, st.raced,
		       st.seconds, st.seconds > 0 ? (double)st.bytes / st.seconds / 1e9 : 0.0,
		       st.threads, st.threads == 1 ? "" : "s");
	return EXIT_OK;
}

static volatile sig_atomic_t run_stop;

static void on_stop_signal(int sig)
{
	(void)sig;
	run_stop = 1;
}

static int pager_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "rate", required_argument, NULL, 'r' },
		{ "seconds", required_argument, NULL, 's' },
		{ "max-tokens", required_argument, NULL, 'm' },
		{ "seed", required_argument, NULL, 'S' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct kvmig_synth_engine_opts eo;
	struct kvmig_synth_engine_stats st;
	struct kvmig_synth_engine *e = NULL;
	struct kvmig_pager *p = NULL;
	struct sigaction sa = { .sa_handler = on_stop_signal };
	double seconds = 0, t0;
	int c, json = 0, ret;
	uint64_t v;

	kvmig_synth_engine_opts_init(&eo);
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
		case 's':
			if (cli_parse_positive(optarg, HUGE_VAL, c == 'r' ? &eo.tokens_per_second :
					       &seconds) < 0)
				return cli_usage_error("pager run", "--%s needs a positive number, "
						       "not \"%s\"", c == 'r' ? "rate" : "seconds",
						       optarg);
			break;
		case 'm':
		case 'S':
			if (cli_parse_u64(optarg, UINT64_MAX, &v) < 0)
				return cli_usage_error("pager run", "\"%s\" is not a number", optarg);
			*(c == 'm' ? &eo.max_tokens : &eo.seed) = v;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			fputs(pager_usage, stdout);
			return EXIT_OK;
		default:
			return cli_bad_option("pager run", argv);
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("pager run", "expected one pager shm:NAME");
	if ((ret = kvmig_pager_open(argv[optind], &p)) < 0)
		return cli_fail("pager run", ret, "cannot open pager %s", argv[optind]);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	t0 = cli_now();
	if ((ret = kvmig_synth_engine_start(p, &eo, &e)) < 0) {
		kvmig_pager_destroy(&p);
		return cli_fail("pager run", ret, "cannot start the decoding engine");
	}
	if (!json)
		printf("decoding %s at %.0f tokens/s\n", argv[optind], eo.tokens_per_second);
	fflush(stdout);
	while (!run_stop && (!seconds || cli_now() - t0 < seconds))
		usleep(10000);
	kvmig_synth_engine_stats(e, &st);
	kvmig_synth_engine_stop(&e);
	kvmig_pager_destroy(&p);
	if (json)
		printf("{\"tokens\":%llu,\"pages_added\":%llu,\"seconds\":%.3f,\"paused_s\":%.3f,"
		       "\"seqs\":%u,\"finished\":%u,\"gone\":%u,\"stopped\":%u}\n",
		       (unsigned long long)st.tokens, (unsigned long long)st.pages_added,
		       cli_now() - t0, st.paused_seconds, st.n_seqs, st.finished, st.gone,
		       st.stopped);
	else
		printf("wrote %llu tokens (%llu new pages) to %u sequences in %.1f s, %.1f s of it "
		       "paused; %u finished, %u moved away, %u stopped\n",
		       (unsigned long long)st.tokens, (unsigned long long)st.pages_added, st.n_seqs,
		       cli_now() - t0, st.paused_seconds, st.finished, st.gone, st.stopped);
	return EXIT_OK;
}

int cmd_pager(int argc, char **argv)
{
	if (argc < 2)
		return cli_usage_error("pager", "expected init, show, status, resolve, gc, rm or run");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(pager_usage, stdout);
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "init"))
		return pager_init(argc - 1, argv + 1);
	if (!strcmp(argv[1], "show"))
		return pager_show(argc - 1, argv + 1);
	if (!strcmp(argv[1], "rm"))
		return pager_rm(argc - 1, argv + 1);
	if (!strcmp(argv[1], "resolve"))
		return pager_resolve(argc - 1, argv + 1);
	if (!strcmp(argv[1], "status"))
		return pager_status(argc - 1, argv + 1);
	if (!strcmp(argv[1], "gc"))
		return pager_gc(argc - 1, argv + 1);
	if (!strcmp(argv[1], "hash"))
		return pager_hash(argc - 1, argv + 1);
	if (!strcmp(argv[1], "run"))
		return pager_run(argc - 1, argv + 1);
	return cli_usage_error("pager", "unknown subcommand \"%s\" (expected init, show, status, "
			       "resolve, gc, hash, rm or run)", argv[1]);
}
