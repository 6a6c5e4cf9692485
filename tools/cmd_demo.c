/* SPDX-License-Identifier: MIT */
/*
 * tools/cmd_demo.c - kvmig demo: a real migration between two synthetic
 * Llama-3-8B-shaped pagers in two processes over loopback TCP. A forked
 * receiver allocates its own pages in the destination pager and pulls the
 * bytes; this process sends (copy mode, so the source stays to compare), then
 * checks byte for byte, with memcmp and no hashing, that every sequence the
 * destination installed holds exactly the source's bytes.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

static const char demo_usage[] =
	"usage: kvmig demo [--seqs N] [--pages-per-seq N] [--shared-prefix N]\n"
	"                  [--transport tcp|rdma|auto] [--listen HOST:PORT]\n"
	"\n"
	"Migrate a synthetic Llama-3-8B-shaped pager (defaults: 4 sequences of 48\n"
	"pages sharing a 16-page prefix: 144 pages, 288 MiB) to a second pager in\n"
	"another process, then compare every installed sequence with the source byte\n"
	"for byte. By default over loopback TCP; --transport rdma --listen ADDR:0\n"
	"over the verbs provider, ADDR an RDMA device's address (scripts/rxe.sh makes\n"
	"one from any interface; scripts/rdma-demo.sh runs this in a qemu guest with\n"
	"soft-RoCE where the host has no RDMA).\n";

/* Compare one half of a page in two pagers, extent by extent. */
static int same_half(struct kvmig_pager *a, uint32_t ia, struct kvmig_pager *b, uint32_t ib,
		     enum kvmig_half half, uint64_t *bytes)
{
	struct kvmig_extent ea[1024], eb[1024];
	uint32_t na = 0, nb = 0;

	if (kvmig_pager_extents(a, ia, half, ea, 1024, &na) < 0 ||
	    kvmig_pager_extents(b, ib, half, eb, 1024, &nb) < 0 || na != nb)
		return 0;
	for (uint32_t i = 0; i < na; i++) {
		if (ea[i].len != eb[i].len || memcmp(ea[i].addr, eb[i].addr, ea[i].len))
			return 0;
		*bytes += ea[i].len;
	}
	return 1;
}

static int check_bytes(struct kvmig_pager *src, struct kvmig_pager *dst, uint32_t *pages,
		       uint64_t *bytes)
{
	struct kvmig_seq_list s = { 0 }, d = { 0 };
	int ret = -EIO;

	if (kvmig_pager_seqs(src, &s) < 0 || kvmig_pager_seqs(dst, &d) < 0 || s.n != d.n) {
		fprintf(stderr, "kvmig demo: the destination holds %u sequences, the source %u\n",
			d.n, s.n);
		goto out;
	}
	for (uint32_t i = 0; i < s.n; i++) {
		const struct kvmig_seq *a = &s.seqs[i], *b = &d.seqs[i];

		if (strcmp(a->id, b->id) || a->n_pages != b->n_pages ||
		    a->fill_in_last_page != b->fill_in_last_page) {
			fprintf(stderr, "kvmig demo: sequence %s differs in id, length or fill\n", a->id);
			goto out;
		}
		for (uint32_t j = 0; j < a->n_pages; j++) {
			if (!same_half(src, a->page_ixs[j], dst, b->page_ixs[j], KVMIG_HALF_K, bytes) ||
			    !same_half(src, a->page_ixs[j], dst, b->page_ixs[j], KVMIG_HALF_V, bytes)) {
				fprintf(stderr, "kvmig demo: sequence %s page %u (source %u, destination "
					"%u) differs\n", a->id, j, a->page_ixs[j], b->page_ixs[j]);
				goto out;
			}
			(*pages)++;
		}
	}
	ret = 0;
out:
	kvmig_seq_list_free(&s);
	kvmig_seq_list_free(&d);
	return ret;
}

int cmd_demo(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "seqs", required_argument, NULL, 's' },
		{ "pages-per-seq", required_argument, NULL, 'n' },
		{ "shared-prefix", required_argument, NULL, 'x' },
		{ "transport", required_argument, NULL, 't' },
		{ "listen", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct kvmig_synth_opts so;
	struct kvmig_pager *src = NULL, *dst = NULL;
	struct kvmig_listener *l = NULL; /* the receiver's, in its process */
	struct kvmig_migrate_opts mo;
	struct kvmig_migrate_stats st;
	char src_name[64], dst_name[64], addr[96], b1[32];
	const char *listen_addr = "127.0.0.1:0";
	enum kvmig_transport transport = KVMIG_TRANSPORT_TCP;
	uint32_t pages = 0;
	uint64_t v, bytes = 0;
	pid_t child = -1;
	int c, ret, status, pfd[2] = { -1, -1 };

	kvmig_synth_opts_init(&so);
	so.n_seqs = 4;
	so.pages_per_seq = 48;
	so.shared_prefix_pages = 16;
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
		case 't':
			if (kvmig_transport_parse(optarg, &transport) < 0)
				return cli_usage_error("demo", "%s", kvmig_last_error());
			break;
		case 'l':
			if (kvmig_addr_check(optarg) < 0)
				return cli_usage_error("demo", "%s", kvmig_last_error());
			listen_addr = optarg;
			break;
		case 'h':
			fputs(demo_usage, stdout);
			return EXIT_OK;
		default:
			return cli_bad_option("demo", argv);
		}
	}
	if (so.shared_prefix_pages > so.pages_per_seq || !so.pages_per_seq)
		return cli_usage_error("demo", "--shared-prefix must not exceed --pages-per-seq, "
				       "which must be at least 1");
	so.capacity_pages = so.n_seqs * (so.pages_per_seq - so.shared_prefix_pages) +
			    so.shared_prefix_pages;
	if (so.capacity_pages == 0)
		so.capacity_pages = 1;
	snprintf(src_name, sizeof(src_name), "kvmig-demo-src-%d", (int)getpid());
	snprintf(dst_name, sizeof(dst_name), "kvmig-demo-dst-%d", (int)getpid());
	so.shm_name = src_name;
	if ((ret = kvmig_synth_create(&so, &src)) < 0) {
		ret = cli_fail("demo", ret, "cannot create the source pager");
		goto out;
	}
	/* The destination is empty and larger, and three pages are busy, so
	 * every page table must be remapped. */
	so.n_seqs = 0;
	so.capacity_pages += 16;
	so.seed = 999;
	so.shm_name = dst_name;
	if ((ret = kvmig_synth_create(&so, &dst)) < 0) {
		ret = cli_fail("demo", ret, "cannot create the destination pager");
		goto out;
	}
	{
		uint32_t busy[3];

		kvmig_pager_allocate(dst, 3, busy);
	}
	kvmig_migrate_opts_init(&mo);
	mo.mode = KVMIG_MODE_COPY;
	mo.timeout_ms = 10000;
	mo.transport = transport;
	/* The receiver listens in its own process (an rdma_cm listener cannot
	 * change process) and hands its address back through a pipe. */
	if (pipe(pfd) < 0) {
		ret = cli_fail("demo", -errno, "pipe");
		goto out;
	}
	child = fork();
	if (child < 0) {
		ret = cli_fail("demo", -errno, "cannot fork the receiver");
		goto out;
	}
	if (child == 0) {
		struct kvmig_pager *p = NULL;
		struct kvmig_migrate_stats rs;

		close(pfd[0]);
		if ((ret = kvmig_listener_open(listen_addr, &mo, &l)) < 0)
			_exit(cli_fail("demo", ret, "cannot listen on %s", listen_addr));
		snprintf(addr, sizeof(addr), "%s %s", kvmig_listener_addr(l),
			 kvmig_listener_transport(l));
		if (write(pfd[1], addr, sizeof(addr)) != (ssize_t)sizeof(addr))
			_exit(EXIT_FAIL);
		close(pfd[1]);
		ret = kvmig_synth_attach(dst_name, &p);
		if (ret == 0)
			ret = kvmig_migrate_accept(l, p, &mo, &rs);
		if (ret < 0)
			_exit(cli_fail("demo", ret, "receiver failed"));
		printf("receiver  (process %d) allocated %u pages, verified %u by XXH3-128, "
		       "installed %u sequences\n", (int)getpid(), rs.pages, rs.pages_verified,
		       rs.seqs);
		fflush(stdout);
		kvmig_pager_destroy(&p);
		_exit(0);
	}
	close(pfd[1]);
	pfd[1] = -1;
	if (read(pfd[0], addr, sizeof(addr)) != (ssize_t)sizeof(addr)) {
		ret = EXIT_FAIL; /* the receiver said why */
		goto out;
	}
	addr[sizeof(addr) - 1] = '\0';
	{
		char *sp = strchr(addr, ' ');

		*sp = '\0';
		printf("kvmig demo: migrate shm:%s to shm:%s over %s %s\n", src_name, dst_name,
		       sp + 1, addr);
	}
	fflush(stdout);
	ret = kvmig_migrate_send(src, addr, &mo, &st);
	if (ret < 0) {
		ret = cli_fail("demo", ret, "migration failed");
		goto out;
	}
	status = 0;
	waitpid(child, &status, 0);
	child = -1;
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		fprintf(stderr, "kvmig demo: the receiver failed (status 0x%x)\n", status);
		ret = EXIT_FAIL;
		goto out;
	}
	cli_fmt_bytes(st.bytes, b1, sizeof(b1));
	printf("sender    (process %d) %u pages (%s), %u sequences in %.3f s (%.2f GB/s), "
	       "paused %.1f ms\n", (int)getpid(), st.pages, b1, st.seqs, st.transfer_seconds,
	       st.transfer_seconds > 0 ? (double)st.bytes / st.transfer_seconds / 1e9 : 0.0,
	       st.pause_seconds * 1e3);
	if ((ret = check_bytes(src, dst, &pages, &bytes)) < 0) {
		ret = EXIT_CORRUPT;
		goto out;
	}
	cli_fmt_bytes(bytes, b1, sizeof(b1));
	printf("checked   every installed sequence against the source byte for byte (memcmp, "
	       "%u page references, %s): identical\n", pages, b1);
	ret = EXIT_OK;
out:
	if (child > 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	for (int i = 0; i < 2; i++)
		if (pfd[i] >= 0)
			close(pfd[i]);
	kvmig_pager_destroy(&src);
	kvmig_pager_destroy(&dst);
	kvmig_synth_unlink(src_name);
	kvmig_synth_unlink(dst_name);
	return ret;
}
