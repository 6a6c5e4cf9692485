/* SPDX-License-Identifier: MIT */
/* tools/cmd_cas.c - kvmig capture | restore | verify | inspect | store check. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

struct cas_args {
	const char *pager, *store, *manifest;
};

/* Parse --pager, --store, --manifest; returns -1 to continue, or an exit code. */
static int parse_args(const char *cmd, const char *usage, int argc, char **argv,
		      struct cas_args *a, int need_pager, int need_manifest)
{
	static const struct option opts[] = {
		{ "pager", required_argument, NULL, 'p' },
		{ "store", required_argument, NULL, 's' },
		{ "manifest", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	memset(a, 0, sizeof(*a));
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			a->pager = optarg;
			break;
		case 's':
			a->store = optarg;
			break;
		case 'm':
			a->manifest = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return EXIT_OK;
		default:
			return cli_bad_option(cmd, argv);
		}
	}
	if (optind != argc)
		return cli_usage_error(cmd, "unexpected argument \"%s\"", argv[optind]);
	if (need_pager && !a->pager)
		return cli_usage_error(cmd, "--pager is required");
	if (!a->store)
		return cli_usage_error(cmd, "--store is required");
	if (need_manifest && !a->manifest)
		return cli_usage_error(cmd, "--manifest is required");
	return -1;
}

static int parse_digest(const char *cmd, const char *text, struct kvmig_digest *d)
{
	if (kvmig_digest_parse(text, d) < 0)
		return cli_usage_error(cmd, "--manifest %s: %s", text, kvmig_last_error());
	return -1;
}

/* The SIGINT / SIGTERM that asked capture or restore to stop, or 0. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
	if (stop_signal) {
		/* A second one: whoever sent it will not wait for the clean abort
		 * (a store on a hung filesystem). Default action once this returns. */
		signal(sig, SIG_DFL);
		raise(sig);
		return;
	}
	stop_signal = sig;
}

/*
 * Turn SIGINT and SIGTERM into a request to stop that the library sees
 * between store batches (@o->cancel); a second signal kills as usual. No
 * SA_RESTART: a wait returns early.
 */
static void cancel_on_signals(struct kvmig_cas_opts *o)
{
	struct sigaction sa = { .sa_handler = on_stop_signal };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	kvmig_cas_opts_init(o);
	o->cancel = &stop_signal;
}

static const char *stop_signal_name(void)
{
	return stop_signal == SIGTERM ? "SIGTERM" : "SIGINT";
}

/*
 * Capture and restore: open --pager and --store (@writable for capture),
 * and from then on let SIGINT / SIGTERM cancel through @o. Return: -1 to
 * go on, or the exit code (the caller closes what was opened).
 */
static int open_pager_store(const char *cmd, const struct cas_args *a, int writable,
			    struct kvmig_pager **p, struct kvmig_store **s, struct kvmig_cas_opts *o)
{
	int ret;

	if ((ret = kvmig_pager_open(a->pager, p)) < 0)
		return cli_fail(cmd, ret, "cannot open pager %s", a->pager);
	if ((ret = cli_open_store(cmd, a->store, writable, s)) != 0)
		return ret;
	cancel_on_signals(o);
	return -1;
}

static const char capture_usage[] =
	"usage: kvmig capture --pager shm:NAME --store DIR\n"
	"\n"
	"Pause the pager, write every occupied page (K and V halves as separate\n"
	"blobs, deduplicated) and the manifest into the store, resume the pager,\n"
	"and print the manifest digest. A stored blob whose sampled bytes differ\n"
	"from the page's is written again (reported as repaired). SIGINT or SIGTERM\n"
	"stops it between batches: the pager resumes, no manifest is written (exit 1);\n"
	"a second one kills it at once.\n";

int cmd_capture(int argc, char **argv)
{
	struct kvmig_capture_stats st;
	struct kvmig_pager *p = NULL;
	struct kvmig_store *s = NULL;
	struct kvmig_cas_opts o;
	struct kvmig_digest d;
	struct cas_args a;
	char text[KVMIG_DIGEST_STR_LEN + 1], b1[32], b2[32], repaired[48] = "";
	int ret = parse_args("capture", capture_usage, argc, argv, &a, 1, 0);

	if (ret >= 0)
		return ret;
	if ((ret = open_pager_store("capture", &a, 1, &p, &s, &o)) >= 0)
		goto out;
	ret = kvmig_capture_ex(p, s, &o, &d, &st);
	if (ret == -ECANCELED && stop_signal) {
		ret = cli_fail("capture", ret, "interrupted by %s: %s resumed, no manifest written, "
			       "no temp file left in %s", stop_signal_name(), a.pager, a.store);
		goto out;
	}
	if (ret < 0) {
		/* The disk, not the pager, is full: not exit 5. */
		ret = cli_fail("capture", ret == -ENOSPC ? -EDQUOT : ret, "cannot capture %s into %s",
			       a.pager, a.store);
		goto out;
	}
	kvmig_digest_format(&d, text);
	cli_fmt_bytes(st.logical_bytes, b1, sizeof(b1));
	cli_fmt_bytes(st.written_bytes, b2, sizeof(b2));
	if (st.blobs_repaired)
		snprintf(repaired, sizeof(repaired), " (%u repaired: bad file replaced)",
			 st.blobs_repaired);
	fprintf(stderr, "captured %u pages (%s): %u blobs written%s, %u deduplicated, %s new\n",
		st.pages, b1, st.blobs_written, repaired, st.blobs_deduped, b2);
	printf("%s\n", text);
	ret = EXIT_OK;
out:
	kvmig_store_close(&s);
	kvmig_pager_destroy(&p);
	return ret;
}

static const char restore_usage[] =
	"usage: kvmig restore --pager shm:NAME --store DIR --manifest xxh128:HEX\n"
	"\n"
	"Read the manifest, check meta and layout against the pager, allocate pages,\n"
	"read and verify every blob into them and install the sequences remapped to\n"
	"the new page indices. Nothing is installed unless every blob verified.\n"
	"SIGINT or SIGTERM stops it between batches: nothing is installed and every\n"
	"page it allocated is freed (exit 1); a second one kills it at once.\n";

int cmd_restore(int argc, char **argv)
{
	struct kvmig_restore_stats st;
	struct kvmig_pager *p = NULL;
	struct kvmig_store *s = NULL;
	struct kvmig_cas_opts o;
	struct kvmig_digest d;
	struct cas_args a;
	char b[32];
	int ret = parse_args("restore", restore_usage, argc, argv, &a, 1, 1);

	if (ret >= 0 || (ret = parse_digest("restore", a.manifest, &d)) >= 0)
		return ret;
	if ((ret = open_pager_store("restore", &a, 0, &p, &s, &o)) >= 0)
		goto out;
	ret = kvmig_restore_ex(p, s, &o, &d, &st);
	if (ret == -ECANCELED && stop_signal) {
		ret = cli_fail("restore", ret, "interrupted by %s: nothing installed into %s, every "
			       "page allocated here freed", stop_signal_name(), a.pager);
		goto out;
	}
	if (ret < 0) {
		ret = cli_fail("restore", ret, "nothing installed into %s", a.pager);
		goto out;
	}
	cli_fmt_bytes(st.bytes, b, sizeof(b));
	printf("restored %u sequences, %u pages (%s) into %s\n", st.seqs, st.pages, b, a.pager);
	ret = EXIT_OK;
out:
	kvmig_store_close(&s);
	kvmig_pager_destroy(&p);
	return ret;
}

static int load(const char *cmd, const struct cas_args *a, struct kvmig_store **s,
		struct kvmig_manifest **m)
{
	struct kvmig_digest d;
	void *json = NULL;
	size_t len;
	int ret;

	if ((ret = parse_digest(cmd, a->manifest, &d)) >= 0)
		return ret;
	if ((ret = cli_open_store(cmd, a->store, 0, s)) != 0)
		return ret;
	ret = kvmig_store_get_alloc(*s, &d, &json, &len);
	if (ret < 0)
		return cli_fail(cmd, ret, "cannot read manifest %s", a->manifest);
	ret = kvmig_manifest_parse(json, len, m);
	free(json);
	if (ret < 0)
		return cli_fail(cmd, ret, "manifest %s is malformed", a->manifest);
	return -1;
}

static const char verify_usage[] =
	"usage: kvmig verify --pager shm:NAME --store DIR --manifest xxh128:HEX\n"
	"\n"
	"Check that the pager holds every sequence of the manifest with the same\n"
	"length, fill and page contents (by digest). Other sequences are ignored.\n"
	"Exit 0 when all match, 3 when page contents differ.\n";

int cmd_verify(int argc, char **argv)
{
	struct kvmig_manifest *m = NULL;
	struct kvmig_pager *p = NULL;
	struct kvmig_store *s = NULL;
	struct cas_args a;
	uint32_t bad = 0;
	int ret = parse_args("verify", verify_usage, argc, argv, &a, 1, 1);

	if (ret >= 0)
		return ret;
	if ((ret = load("verify", &a, &s, &m)) >= 0)
		goto out;
	if ((ret = kvmig_pager_open(a.pager, &p)) < 0) {
		ret = cli_fail("verify", ret, "cannot open pager %s", a.pager);
		goto out;
	}
	/* Paused, so an engine's writes cannot pass for a mismatch. */
	if ((ret = kvmig_pager_pause(p)) < 0) {
		ret = cli_fail("verify", ret, "cannot pause pager %s", a.pager);
		goto out;
	}
	ret = kvmig_verify(p, m, &bad);
	kvmig_pager_resume(p);
	if (ret < 0) {
		ret = cli_fail("verify", ret, "%s does not match %s (%u page halves differ)",
			       a.pager, a.manifest, bad);
		goto out;
	}
	printf("ok: %u sequences, %u pages match %s\n", m->n_seqs, m->n_pages, a.manifest);
	ret = EXIT_OK;
out:
	kvmig_manifest_free(&m);
	kvmig_store_close(&s);
	kvmig_pager_destroy(&p);
	return ret;
}

static const char inspect_usage[] =
	"usage: kvmig inspect --store DIR --manifest xxh128:HEX\n"
	"\n"
	"Print a manifest's summary: meta, layout, pages, distinct blobs, sequences.\n";

static int cmp_digest(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct kvmig_digest));
}

int cmd_inspect(int argc, char **argv)
{
	struct kvmig_manifest *m = NULL;
	struct kvmig_store *s = NULL;
	struct kvmig_digest *all = NULL;
	struct cas_args a;
	uint64_t half, refs = 0;
	uint32_t distinct = 0;
	char desc[128], b1[32], b2[32];
	int ret = parse_args("inspect", inspect_usage, argc, argv, &a, 0, 1);

	if (ret >= 0)
		return ret;
	if ((ret = load("inspect", &a, &s, &m)) >= 0)
		goto out;
	kvmig_meta_half_bytes(&m->meta, &half);
	all = malloc(sizeof(*all) * 2 * (m->n_pages ? m->n_pages : 1));
	if (!all) {
		ret = cli_fail("inspect", -ENOMEM, "out of memory");
		goto out;
	}
	for (uint32_t i = 0; i < m->n_pages; i++) {
		all[2 * i] = m->pages[i].k;
		all[2 * i + 1] = m->pages[i].v;
	}
	qsort(all, 2 * m->n_pages, sizeof(*all), cmp_digest);
	for (uint32_t i = 0; i < 2 * m->n_pages; i++)
		distinct += i == 0 || memcmp(&all[i], &all[i - 1], sizeof(*all)) != 0;
	for (uint32_t i = 0; i < m->n_seqs; i++)
		refs += m->seqs[i].n_pages;
	kvmig_meta_describe(&m->meta, desc, sizeof(desc));
	cli_fmt_bytes(2 * half * m->n_pages, b1, sizeof(b1));
	cli_fmt_bytes(half * distinct, b2, sizeof(b2));
	printf("manifest %s\n", a.manifest);
	printf("  meta:     %s, %s, %s%s%s%s\n", desc, m->format.layout,
	       kvmig_order_name(m->format.order), m->format.compat[0] ? ", compat \"" : "",
	       m->format.compat, m->format.compat[0] ? "\"" : "");
	printf("  pages:    %u (%s); %u distinct half blobs (%s)\n", m->n_pages, b1, distinct, b2);
	printf("  seqs:     %u, %llu page references\n", m->n_seqs, (unsigned long long)refs);
	for (uint32_t i = 0; i < m->n_seqs; i++)
		printf("    %-20s %u pages, fill %u\n", m->seqs[i].id, m->seqs[i].n_pages,
		       m->seqs[i].fill_in_last_page);
	ret = EXIT_OK;
out:
	free(all);
	kvmig_manifest_free(&m);
	kvmig_store_close(&s);
	return ret;
}

static const char store_usage[] =
	"usage: kvmig store check DIR [--json] [--repair]\n"
	"\n"
	"Re-hash every blob under DIR/objects, reading each in 1 MiB pieces, and\n"
	"print one line on stdout for each entry that is not a good blob:\n"
	"  corrupt      its bytes hash to another digest than its name\n"
	"  bad-name     not named objects/<2 hex>/<30 hex>\n"
	"  not-regular  a FIFO, device, directory or socket in a blob's place\n"
	"  unreadable   cannot be opened or read\n"
	"then one for each file in DIR/tmp (a write under way, or a dead writer's,\n"
	"which the next capture removes) and each unexpected entry in DIR, and a\n"
	"summary: \"N blobs checked, M bad\". Nothing is changed unless --repair.\n"
	"\n"
	"  --json    one JSON object per line for each entry, then a summary object\n"
	"  --repair  remove corrupt and non-regular blob files, so that a later\n"
	"            capture writes them again, and dead writers' temp files\n"
	"\n"
	"Exit 0 when every blob is good, 3 when any is bad, 1 if the store cannot\n"
	"be read, 2 for bad usage.\n";

static int print_issue(const struct kvmig_store_issue *is, void *arg)
{
	char path[512], msg[1024];
	int json = *(const int *)arg;

	cli_printable(is->path, path, sizeof(path));
	cli_printable(is->message, msg, sizeof(msg));
	if (json) {
		json_t *o = json_pack("{s:s,s:s,s:s}", "event", "issue", "problem",
				      kvmig_store_issue_name(is->kind), "path", path);
		char text[KVMIG_DIGEST_STR_LEN + 1];
		const char *name = is->err ? strerrorname_np(-is->err) : NULL;

		if (o && is->digest) {
			kvmig_digest_format(is->digest, text);
			json_object_set_new(o, "digest", json_string(text));
		}
		if (o && is->err)
			json_object_set_new(o, "errno", json_string(name ? name : "?"));
		if (o) {
			json_object_set_new(o, "message", json_string(msg));
			json_object_set_new(o, "removed", json_boolean(is->removed));
		}
		cli_emit_json(o);
	} else {
		printf("%-11s %s: %s%s\n", kvmig_store_issue_name(is->kind), path, msg,
		       is->removed ? " (removed)" : "");
	}
	return 0;
}

int cmd_store(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "repair", no_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct kvmig_store_check_stats st;
	struct kvmig_store *s = NULL;
	int c, json = 0, flags = 0, ret, code;
	const char *dir;

	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(store_usage, stdout);
		return EXIT_OK;
	}
	if (argc < 2 || strcmp(argv[1], "check"))
		return cli_usage_error("store", argc < 2 ? "expected a subcommand: check" :
				       "unknown subcommand \"%s\" (expected check)", argv[1]);
	argc--;
	argv++;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = 1;
			break;
		case 'r':
			flags |= KVMIG_STORE_CHECK_REPAIR;
			break;
		case 'h':
			fputs(store_usage, stdout);
			return EXIT_OK;
		default:
			return cli_bad_option("store check", argv);
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("store check", "expected one store directory");
	dir = argv[optind];
	if ((ret = cli_open_store("store check", dir, flags & KVMIG_STORE_CHECK_REPAIR, &s)) != 0)
		return ret;
	ret = kvmig_store_check(s, (unsigned)flags, print_issue, &json, &st);
	kvmig_store_close(&s);
	if (ret < 0) {
		/* Whatever the errno: the store could not be read, not found bad. */
		cli_fail("store check", ret, "cannot check %s", dir);
		return EXIT_FAIL;
	}
	code = st.bad ? EXIT_CORRUPT : EXIT_OK;
	if (json) {
		cli_emit_json(json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:i}", "event", "summary",
					"blobs", (json_int_t)st.blobs, "bad", (json_int_t)st.bad,
					"bytes", (json_int_t)st.bytes, "temp", (json_int_t)st.temp,
					"unexpected", (json_int_t)st.unexpected, "removed",
					(json_int_t)st.removed, "exit", code));
	} else {
		printf("%llu blobs checked, %llu bad; %llu temp files, %llu other entries",
		       (unsigned long long)st.blobs, (unsigned long long)st.bad,
		       (unsigned long long)st.temp, (unsigned long long)st.unexpected);
		if (flags)
			printf("; %llu removed", (unsigned long long)st.removed);
		printf("\n");
	}
	return code;
}
