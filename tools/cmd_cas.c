/* SPDX-License-Identifier: MIT */
/* tools/cmd_cas.c - kvmig capture | restore | verify | inspect. */
#include <errno.h>
#include <getopt.h>
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

static const char capture_usage[] =
	"usage: kvmig capture --pager shm:NAME --store DIR\n"
	"\n"
	"Pause the pager, write every occupied page (K and V halves as separate\n"
	"blobs, deduplicated) and the manifest into the store, resume the pager,\n"
	"and print the manifest digest.\n";

int cmd_capture(int argc, char **argv)
{
	struct kvmig_capture_stats st;
	struct kvmig_pager *p = NULL;
	struct kvmig_store *s = NULL;
	struct kvmig_digest d;
	struct cas_args a;
	char text[KVMIG_DIGEST_STR_LEN + 1], b1[32], b2[32];
	int ret = parse_args("capture", capture_usage, argc, argv, &a, 1, 0);

	if (ret >= 0)
		return ret;
	if ((ret = kvmig_pager_open(a.pager, &p)) < 0)
		return cli_fail("capture", ret, "cannot open pager %s", a.pager);
	if ((ret = cli_open_store("capture", a.store, &s)) != 0)
		goto out;
	ret = kvmig_capture(p, s, &d, &st);
	if (ret < 0) {
		/* The disk, not the pager, is full: not exit 5. */
		ret = cli_fail("capture", ret == -ENOSPC ? -EDQUOT : ret, "cannot capture %s into %s",
			       a.pager, a.store);
		goto out;
	}
	kvmig_digest_format(&d, text);
	cli_fmt_bytes(st.logical_bytes, b1, sizeof(b1));
	cli_fmt_bytes(st.written_bytes, b2, sizeof(b2));
	fprintf(stderr, "captured %u pages (%s): %u blobs written, %u deduplicated, %s new\n",
		st.pages, b1, st.blobs_written, st.blobs_deduped, b2);
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
	"the new page indices. Nothing is installed unless every blob verified.\n";

int cmd_restore(int argc, char **argv)
{
	struct kvmig_restore_stats st;
	struct kvmig_pager *p = NULL;
	struct kvmig_store *s = NULL;
	struct kvmig_digest d;
	struct cas_args a;
	char b[32];
	int ret = parse_args("restore", restore_usage, argc, argv, &a, 1, 1);

	if (ret >= 0 || (ret = parse_digest("restore", a.manifest, &d)) >= 0)
		return ret;
	if ((ret = kvmig_pager_open(a.pager, &p)) < 0)
		return cli_fail("restore", ret, "cannot open pager %s", a.pager);
	if ((ret = cli_open_store("restore", a.store, &s)) != 0)
		goto out;
	ret = kvmig_restore(p, s, &d, &st);
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
	if ((ret = cli_open_store(cmd, a->store, s)) != 0)
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
	printf("  meta:     %s, %s\n", desc, kvmig_layout_name(m->layout));
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
