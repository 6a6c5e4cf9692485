/* SPDX-License-Identifier: MIT */
/*
 * tools/cmd_demo.c - kvmig demo: capture a synthetic Llama-3-8B-shaped pager
 * into a filesystem store, restore it into a second, empty pager (which
 * allocates its own page indices), and check the result independently.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static const char demo_usage[] =
	"usage: kvmig demo [--seqs N] [--pages-per-seq N] [--shared-prefix N] [--store DIR]\n"
	"\n"
	"Capture a synthetic Llama-3-8B-shaped pager (defaults: 4 sequences of 24\n"
	"pages sharing an 8-page prefix, 72 MiB... of pages) into a store, restore it\n"
	"into a second pager and verify that every sequence holds the same bytes.\n"
	"The store defaults to a fresh temporary directory.\n";

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int cmd_demo(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "seqs", required_argument, NULL, 's' },
		{ "pages-per-seq", required_argument, NULL, 'n' },
		{ "shared-prefix", required_argument, NULL, 'x' },
		{ "store", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct kvmig_synth_opts so;
	struct kvmig_pager *src = NULL, *dst = NULL;
	struct kvmig_manifest *m = NULL;
	struct kvmig_store *s = NULL;
	struct kvmig_capture_stats cst;
	struct kvmig_restore_stats rst;
	struct kvmig_digest d;
	char tmpl[] = "/tmp/kvmig-demo-XXXXXX", text[KVMIG_DIGEST_STR_LEN + 1], b1[32], b2[32];
	const char *dir = NULL;
	uint32_t bad = 0;
	uint64_t v;
	double t0, t1, t2;
	int c, ret;

	kvmig_synth_opts_init(&so);
	so.n_seqs = 4;
	so.pages_per_seq = 24;
	so.shared_prefix_pages = 8;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
		case 'n':
		case 'x':
			if (cli_parse_u64(optarg, 4096, &v) < 0)
				return cli_usage_error("demo", "\"%s\" is not a count up to 4096", optarg);
			*(c == 's' ? &so.n_seqs : c == 'n' ? &so.pages_per_seq :
				     &so.shared_prefix_pages) = (uint32_t)v;
			break;
		case 'd':
			dir = optarg;
			break;
		case 'h':
			fputs(demo_usage, stdout);
			return EXIT_OK;
		default:
			return cli_usage_error("demo", "bad option");
		}
	}
	if (so.shared_prefix_pages > so.pages_per_seq)
		return cli_usage_error("demo", "--shared-prefix must not exceed --pages-per-seq");
	so.capacity_pages = so.n_seqs * (so.pages_per_seq - so.shared_prefix_pages) +
			    so.shared_prefix_pages;
	if (so.capacity_pages == 0)
		so.capacity_pages = 1;
	if (!dir && !(dir = mkdtemp(tmpl)))
		return cli_fail("demo", -errno, "cannot create a temporary store directory");

	printf("kvmig demo: capture a synthetic pager into %s and restore it into another\n", dir);
	if ((ret = kvmig_synth_create(&so, &src)) < 0) {
		ret = cli_fail("demo", ret, "cannot create the source pager");
		goto out;
	}
	/* The destination is empty and larger, so its page indices differ. */
	so.n_seqs = 0;
	so.capacity_pages += 16;
	so.seed = 999;
	if ((ret = kvmig_synth_create(&so, &dst)) < 0) {
		ret = cli_fail("demo", ret, "cannot create the destination pager");
		goto out;
	}
	{
		/* Occupy a few destination pages so restore must remap. */
		uint32_t busy[3];

		kvmig_pager_allocate(dst, 3, busy);
	}
	if ((ret = kvmig_store_fs_open(dir, NULL, &s)) < 0) {
		ret = cli_fail("demo", ret, "cannot open store %s", dir);
		goto out;
	}
	t0 = now();
	if ((ret = kvmig_capture(src, s, &d, &cst)) < 0) {
		ret = cli_fail("demo", ret, "capture failed");
		goto out;
	}
	t1 = now();
	kvmig_digest_format(&d, text);
	cli_fmt_bytes(cst.logical_bytes, b1, sizeof(b1));
	cli_fmt_bytes(cst.written_bytes, b2, sizeof(b2));
	printf("captured  %u pages (%s) in %.2f s: %u blobs written, %u deduplicated, %s on disk\n",
		cst.pages, b1, t1 - t0, cst.blobs_written, cst.blobs_deduped, b2);
	printf("manifest  %s\n", text);
	if ((ret = kvmig_restore(dst, s, &d, &rst)) < 0) {
		ret = cli_fail("demo", ret, "restore failed");
		goto out;
	}
	t2 = now();
	cli_fmt_bytes(rst.bytes, b1, sizeof(b1));
	printf("restored  %u sequences, %u pages (%s) in %.2f s into new page indices\n", rst.seqs,
	       rst.pages, b1, t2 - t1);
	/* Independent of restore's own checks: hash the destination afresh. */
	if ((ret = kvmig_manifest_build(src, &m)) < 0 || (ret = kvmig_verify(dst, m, &bad)) < 0) {
		ret = cli_fail("demo", ret, "destination does not match the source (%u halves differ)",
			       bad);
		goto out;
	}
	printf("verified  every sequence of the destination holds the source's bytes\n");
	ret = EXIT_OK;
out:
	kvmig_manifest_free(&m);
	kvmig_store_close(&s);
	kvmig_pager_destroy(&src);
	kvmig_pager_destroy(&dst);
	return ret;
}
