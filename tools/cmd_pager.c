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
	"       kvmig pager rm shm:NAME\n"
	"       kvmig pager resolve shm:NAME --commit|--abort\n"
	"       kvmig pager run shm:NAME [--rate TOKENS/S] [--seconds S] [--max-tokens N]\n"
	"                                [--seed N] [--json]\n"
	"\n"
	"Create, describe or remove a synthetic pager in shared memory, which other\n"
	"kvmig processes open with --pager shm:NAME. resolve settles the sequences a\n"
	"receiver held (ids \"?ID\") after its sender vanished during commit (recv exit\n"
	"7): --commit installs them under their own ids (the sender exited 0),\n"
	"--abort removes them and frees their pages (the sender failed).\n"
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

static int pager_show(int argc, char **argv)
{
	struct kvmig_seq_list l = { 0 };
	struct kvmig_pager *p = NULL;
	struct kvmig_cache_meta meta;
	enum kvmig_layout layout;
	uint32_t *ixs = NULL, n = 0;
	uint64_t half;
	int json = 0, ret;
	const char *spec = NULL;
	char desc[128], bytes[32];

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = 1;
		else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(pager_usage, stdout);
			return EXIT_OK;
		} else if (!spec)
			spec = argv[i];
		else
			return cli_usage_error("pager show", "unexpected argument \"%s\"", argv[i]);
	}
	if (!spec)
		return cli_usage_error("pager show", "expected a pager shm:NAME");
	ret = kvmig_pager_open(spec, &p);
	if (ret < 0)
		return cli_fail("pager show", ret, "cannot open pager %s", spec);
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
			json_t *ixa = json_array();

			for (uint32_t j = 0; j < l.seqs[i].n_pages; j++)
				json_array_append_new(ixa, json_integer(l.seqs[i].page_ixs[j]));
			json_array_append_new(seqs, json_pack("{s:s,s:o,s:i}", "id",
							      cli_printable(l.seqs[i].id, name,
									    sizeof(name)),
							      "page_ixs", ixa, "fill_in_last_page",
							      (int)l.seqs[i].fill_in_last_page));
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
			printf("\n");
		}
	}
	kvmig_seq_list_free(&l);
	free(ixs);
	kvmig_pager_destroy(&p);
	return EXIT_OK;
}

static int pager_rm(int argc, char **argv)
{
	int ret;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(pager_usage, stdout);
		return EXIT_OK;
	}
	if (argc != 2 || strncmp(argv[1], "shm:", 4))
		return cli_usage_error("pager rm", "expected one pager shm:NAME");
	ret = kvmig_synth_unlink(argv[1] + 4);
	if (ret < 0)
		return cli_fail("pager rm", ret, "cannot remove pager %s", argv[1]);
	return EXIT_OK;
}

static int pager_resolve(int argc, char **argv)
{
	struct kvmig_pager *p = NULL;
	uint32_t n = 0;
	int commit, ret;

	if (argc != 3 || strncmp(argv[1], "shm:", 4) ||
	    (strcmp(argv[2], "--commit") && strcmp(argv[2], "--abort")))
		return cli_usage_error("pager resolve", "expected shm:NAME --commit or --abort");
	commit = !strcmp(argv[2], "--commit");
	if ((ret = kvmig_pager_open(argv[1], &p)) < 0)
		return cli_fail("pager resolve", ret, "cannot open pager %s", argv[1]);
	ret = kvmig_migrate_resolve(p, commit, &n);
	kvmig_pager_destroy(&p);
	if (ret < 0)
		return cli_fail("pager resolve", ret, "cannot resolve the held sequences");
	printf("%s %u held sequences\n", commit ? "installed" : "removed", n);
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
		return cli_usage_error("pager", "expected init, show, rm, resolve or run");
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
	if (!strcmp(argv[1], "run"))
		return pager_run(argc - 1, argv + 1);
	return cli_usage_error("pager", "unknown subcommand \"%s\" (expected init, show, rm, "
			       "resolve or run)", argv[1]);
}
