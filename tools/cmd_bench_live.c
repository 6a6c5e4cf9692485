/* SPDX-License-Identifier: MIT */
/*
 * tools/cmd_bench_live.c - kvmig bench --live: pause and total time of
 * stop-and-copy against live migration, for several cache sizes, while a
 * decoding engine writes into the source, over loopback TCP in one run.
 *
 * Per size: a receiver process with its own pager (as in kvmig bench), and
 * this process owning the source pager with the synthetic decoding engine
 * running in a thread (kvmig_synth_engine), as an inference engine owns its
 * KV arena. One untimed stop-and-copy warms the destination up; then R
 * stop-and-copy and R live migrations alternate, all in copy mode so the
 * source keeps decoding the same sequences. Medians per size, and the ratios
 * the targets are stated in.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"

static const char live_usage[] =
	"usage: kvmig bench --live [--sizes LIST] [--rounds R] [--rate TOKENS/S]\n"
	"                          [--max-downtime-ms N] [--json]\n"
	"\n"
	"For each cache size (default 64M,256M,1G,4G; suffixes M and G, Llama-3-8B-shaped\n"
	"pages of 2 MiB, 8 sequences) migrate R times (default 3) stop-and-copy and R\n"
	"times live over loopback TCP while a decoding engine appends --rate tokens per\n"
	"second (default 240: 30 per sequence) to the source's sequences, and print the\n"
	"median pause (pause to resume) and total time of each, with the ratios the\n"
	"targets use. --json: one object per size on stdout (scripts/bench-live.sh\n"
	"turns them into a table and a plot).\n";

struct size_result {
	uint64_t bytes;      /* median bytes migrated (the cache grows while it decodes) */
	double stop_pause, stop_total, live_pause, live_total, live_rounds, live_sent;
};

static int parse_sizes(char *list, uint64_t *sizes, int max, int *n)
{
	*n = 0;
	for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
		char *end;
		unsigned long long v = strtoull(tok, &end, 10);
		uint64_t unit = *end == 'G' ? 1ull << 30 : *end == 'M' ? 1ull << 20 : 0;

		if (!v || !unit || end[1] || *n == max || v * unit < (16ull << 20) ||
		    v * unit > (64ull << 30))
			return -EINVAL;
		sizes[(*n)++] = v * unit;
	}
	return *n ? 0 : -EINVAL;
}

/* One size: fork the receiver, migrate 1 + 2R times, fill @res. */
static int one_size(uint64_t size, int rounds, double rate, uint32_t max_downtime_ms,
		    int json, struct size_result *res)
{
	double sp[64], st_[64], lp[64], lt[64], lr[64], ls[64], by[64];
	struct kvmig_synth_engine_opts eo;
	struct kvmig_synth_engine_stats es;
	struct kvmig_synth_engine *eng = NULL;
	struct kvmig_migrate_opts mo;
	struct kvmig_synth_opts so;
	struct kvmig_pager *src = NULL;
	uint32_t pages = (uint32_t)(size / (2u << 20));
	/* Room for the sequences to grow while the bench runs. */
	uint32_t capacity = pages + pages / 4 + 128;
	char addr[80] = "";
	int pipefd[2], ret = EXIT_FAIL;
	pid_t child;

	kvmig_migrate_opts_init(&mo);
	if (pipe(pipefd) < 0)
		return cli_fail("bench", -errno, "pipe");
	child = fork();
	if (child < 0) {
		ret = cli_fail("bench", -errno, "fork");
		close(pipefd[0]);
		close(pipefd[1]);
		return ret;
	}
	if (child == 0) {
		close(pipefd[0]);
		_exit(bench_receiver("127.0.0.1:0", &mo, capacity, 1 + 2 * rounds, 0, pipefd[1]));
	}
	close(pipefd[1]);
	if (read(pipefd[0], addr, sizeof(addr)) != (ssize_t)sizeof(addr))
		goto out;
	addr[sizeof(addr) - 1] = '\0';
	kvmig_synth_opts_init(&so);
	so.n_seqs = 8;
	so.pages_per_seq = pages / 8 ? pages / 8 : 1;
	so.capacity_pages = capacity;
	if ((ret = kvmig_synth_create(&so, &src)) < 0) {
		ret = cli_fail("bench", ret, "cannot create the source pager");
		goto out;
	}
	kvmig_synth_engine_opts_init(&eo);
	eo.tokens_per_second = rate;
	if ((ret = kvmig_synth_engine_start(src, &eo, &eng)) < 0) {
		ret = cli_fail("bench", ret, "cannot start the decoding engine");
		goto out;
	}
	mo.mode = KVMIG_MODE_COPY;
	mo.max_downtime_ms = max_downtime_ms;
	for (int r = 0; r < 1 + 2 * rounds; r++) {
		struct kvmig_migrate_stats st;
		int i = (r - 1) / 2;

		mo.live = r > 0 && r % 2 == 0;
		if ((ret = kvmig_migrate_send(src, addr, &mo, &st)) < 0) {
			ret = cli_fail("bench", ret, "%s migration %d failed", mo.live ? "live" :
				       "stop-and-copy", r);
			goto out;
		}
		kvmig_synth_engine_stats(eng, &es);
		if (es.stopped) {
			ret = cli_fail("bench", -ENOSPC, "the decoding engine ran out of pages; "
				       "lower --rate");
			goto out;
		}
		if (r == 0)
			continue; /* warm-up */
		if (!json) {
			printf("  %-13s %7.1f MiB  pause %8.1f ms  total %7.3f s  %u round%s",
			       mo.live ? "live" : "stop-and-copy", (double)st.bytes / (1 << 20),
			       st.pause_seconds * 1e3, st.seconds, st.n_rounds,
			       st.n_rounds == 1 ? "" : "s");
			for (uint32_t k = 0; mo.live && k < st.n_rounds; k++)
				printf("%s%u p %.1f ms", k ? ", " : ": ", st.round[k].pages,
				       st.round[k].seconds * 1e3);
			printf("\n");
		}
		fflush(stdout);
		if (mo.live) {
			lp[i] = st.pause_seconds;
			lt[i] = st.seconds;
			lr[i] = st.n_rounds;
			ls[i] = (double)st.bytes_sent;
			by[i] = (double)st.bytes;
		} else {
			sp[i] = st.pause_seconds;
			st_[i] = st.seconds;
		}
	}
	res->bytes = (uint64_t)bench_median(by, rounds);
	res->stop_pause = bench_median(sp, rounds);
	res->stop_total = bench_median(st_, rounds);
	res->live_pause = bench_median(lp, rounds);
	res->live_total = bench_median(lt, rounds);
	res->live_rounds = bench_median(lr, rounds);
	res->live_sent = bench_median(ls, rounds);
	ret = EXIT_OK;
out:
	kvmig_synth_engine_stop(&eng);
	if (child > 0) {
		int status;

		if (ret != EXIT_OK)
			kill(child, SIGKILL);
		waitpid(child, &status, 0);
	}
	close(pipefd[0]);
	kvmig_pager_destroy(&src);
	return ret;
}

int bench_live(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "live", no_argument, NULL, 'L' },
		{ "sizes", required_argument, NULL, 's' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "rate", required_argument, NULL, 'R' },
		{ "max-downtime-ms", required_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	char default_sizes[] = "64M,256M,1G,4G";
	uint64_t sizes[16], v;
	struct size_result res[16];
	int n_sizes = 0, rounds = 3, json = 0, c, ret;
	uint32_t max_downtime_ms = 20;
	double rate = 240, pmin = 1e9, pmax = 0;

	optind = 1;
	parse_sizes(default_sizes, sizes, 16, &n_sizes);
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'L':
			break;
		case 's':
			if (parse_sizes(optarg, sizes, 16, &n_sizes) < 0)
				return cli_usage_error("bench", "--sizes is a list of up to 16 sizes "
						       "like 64M,1G, each 16M to 64G");
			break;
		case 'r':
			if (cli_parse_u64(optarg, 64, &v) < 0 || !v)
				return cli_usage_error("bench", "--rounds is 1 to 64");
			rounds = (int)v;
			break;
		case 'R':
			if (cli_parse_positive(optarg, 1e5, &rate) < 0)
				return cli_usage_error("bench", "--rate is tokens per second, above 0");
			break;
		case 'd':
			if (cli_parse_u64(optarg, 3600000, &v) < 0)
				return cli_usage_error("bench", "--max-downtime-ms is 0 to 3600000");
			max_downtime_ms = (uint32_t)v;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			fputs(live_usage, stdout);
			return EXIT_OK;
		default:
			return cli_bad_option("bench", argv);
		}
	}
	if (!json)
		printf("kvmig bench --live: %d sizes, %d stop-and-copy and %d live migrations each, "
		       "engine decoding %.0f tokens/s, max downtime %u ms, loopback tcp\n", n_sizes,
		       rounds, rounds, rate, max_downtime_ms);
	for (int i = 0; i < n_sizes; i++) {
		if (!json)
			printf("size %.0f MiB\n", (double)sizes[i] / (1 << 20));
		if ((ret = one_size(sizes[i], rounds, rate, max_downtime_ms, json, &res[i])) != 0)
			return ret;
		pmin = pmin < res[i].live_pause ? pmin : res[i].live_pause;
		pmax = pmax > res[i].live_pause ? pmax : res[i].live_pause;
		if (json) {
			json_t *o = json_pack("{s:I,s:I,s:f,s:f,s:f,s:f,s:f,s:I,s:f}", "size",
					      (json_int_t)sizes[i], "bytes", (json_int_t)res[i].bytes,
					      "stop_pause_ms", res[i].stop_pause * 1e3,
					      "stop_total_s", res[i].stop_total, "live_pause_ms",
					      res[i].live_pause * 1e3, "live_total_s",
					      res[i].live_total, "live_rounds", res[i].live_rounds,
					      "live_bytes_sent", (json_int_t)res[i].live_sent,
					      "rate", rate);
			cli_emit_json(o);
		}
	}
	if (json)
		return EXIT_OK;
	printf("\n%-9s %-12s %-12s %-12s %-12s %-7s %s\n", "size", "stop pause", "stop total",
	       "live pause", "live total", "rounds", "live/stop total");
	for (int i = 0; i < n_sizes; i++)
		printf("%-9.0f %9.1f ms %10.3f s %9.1f ms %10.3f s %7.0f %8.2fx\n",
		       (double)sizes[i] / (1 << 20), res[i].stop_pause * 1e3, res[i].stop_total,
		       res[i].live_pause * 1e3, res[i].live_total, res[i].live_rounds,
		       res[i].live_total / res[i].stop_total);
	printf("live pause: largest / smallest across sizes = %.2fx   (target <= 2x)\n",
	       pmax / pmin);
	printf("live pause at %.0f MiB: %.1f ms   (target <= 20 ms at 4096 MiB)\n",
	       (double)sizes[n_sizes - 1] / (1 << 20), res[n_sizes - 1].live_pause * 1e3);
	for (int i = 0; i < n_sizes; i++)
		printf("live / stop-and-copy total at %.0f MiB: %.2fx   (target <= 1.5x)\n",
		       (double)sizes[i] / (1 << 20), res[i].live_total / res[i].stop_total);
	return EXIT_OK;
}
