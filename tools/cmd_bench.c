/* SPDX-License-Identifier: MIT */
/*
 * tools/cmd_bench.c - kvmig bench: migration throughput over loopback TCP
 * against iperf3's single-stream loopback throughput, measured in one run;
 * or, with --transport rdma --listen ADDR, over the verbs provider (the
 * soft-RoCE bench script, tests/softroce/bench.sh, runs ib_read_bw beside it).
 *
 * Sender and receiver are two long-lived processes that each own their
 * pager in process memory, as an engine owns its KV arena. R rounds, each an
 * untimed warm-up migration, one verified and one unverified migration (in
 * alternating order) and an iperf3 run of the same byte count; every
 * migration moves the whole cache in copy mode into the same destination
 * pages (the receiver removes and frees between them). The first round's
 * warm-up touches both arenas (on VMs a process's first touch of a page
 * costs more than the copy); the later ones keep the iperf3 run's
 * after-effects (the next migration runs ~1.4x slower) off the timed pair,
 * and the alternating order keeps any order effect off one side. Where CPUs
 * 0 and 1 are ours, the receiver runs on 0 and the sender on 1.
 * Reported: medians, ratios, verification overhead, each end's CPU time,
 * receiver peak RSS.
 */
#include <errno.h>
#include <sched.h>
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"

static const char bench_usage[] =
	"usage: kvmig bench [--pages N] [--rounds R] [--iperf3 PATH | --no-iperf3]\n"
	"                   [--pin | --no-pin] [--transport tcp|rdma --listen ADDR:PORT]\n"
	"       kvmig bench --live [--sizes LIST] [--rounds R] [--rate TOKENS/S] [--json]\n"
	"\n"
	"Migrate a Llama-3-8B-shaped cache of N pages (2 MiB each; default 512 = 1 GiB)\n"
	"between two processes over loopback TCP, R times with verification and R\n"
	"times without (default 5), interleaved with R iperf3 runs of the same size,\n"
	"and print medians, ratios and the receiver's peak RSS. --transport rdma\n"
	"migrates over the verbs provider to a receiver on ADDR (an RDMA device's\n"
	"address) and runs no iperf3. Where CPUs 0 and 1 are both available the\n"
	"receiver runs on CPU 0 and the sender on CPU 1 (iperf3's server and client\n"
	"likewise), as two hosts would: each end copies and hashes on its own CPU (on\n"
	"SMT hosts CPUs 0 and 1 may be two threads of one core: check lscpu -e);\n"
	"--no-pin leaves placement to the scheduler, --pin pins regardless. Each\n"
	"round is an untimed warm-up migration, then the verified and the unverified\n"
	"one (in alternating order), then the iperf3 run.\n"
	"\n"
	"--live: stop-and-copy against live migration while a decoding engine writes\n"
	"(kvmig bench --live --help).\n";

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double bench_median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* CPU time of this process, all threads: seconds in user space, in the kernel. */
struct cpu_use {
	double user, sys;
};

static struct cpu_use cpu_now(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (struct cpu_use){ (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
				 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6 };
}

static struct cpu_use cpu_since(struct cpu_use t0)
{
	struct cpu_use t = cpu_now();

	return (struct cpu_use){ t.user - t0.user, t.sys - t0.sys };
}

int bench_receiver(const char *addr, const struct kvmig_migrate_opts *lo, uint32_t pages,
		   int migrations, int alternate_verify, int out_fd)
{
	struct kvmig_listener *l = NULL;
	struct kvmig_synth_opts so;
	struct kvmig_pager *p = NULL;
	struct kvmig_migrate_opts mo;
	struct rusage ru;
	long rss_kib;
	int ret;

	/* The listener lives here: an rdma_cm one cannot change process. */
	if ((ret = kvmig_listener_open(addr, lo, &l)) < 0)
		return cli_fail("bench", ret, "cannot listen on %s", addr);
	if (write(out_fd, kvmig_listener_addr(l), 80) != 80)
		return EXIT_FAIL;
	kvmig_synth_opts_init(&so);
	so.capacity_pages = pages;
	if ((ret = kvmig_synth_create(&so, &p)) < 0)
		return cli_fail("bench", ret, "receiver: cannot create its pager");
	mo = *lo;
	for (int r = 0; r < migrations; r++) {
		struct kvmig_migrate_stats st;
		struct kvmig_seq_list seqs = { 0 };
		uint32_t *ixs = NULL, n = 0;
		struct cpu_use cpu = cpu_now();

		mo.verify = !alternate_verify || bench_verifies(r);
		if ((ret = kvmig_migrate_accept(l, p, &mo, &st)) < 0)
			return cli_fail("bench", ret, "receiver: round %d failed", r);
		cpu = cpu_since(cpu);
		if (write(out_fd, &cpu, sizeof(cpu)) != (ssize_t)sizeof(cpu))
			return EXIT_FAIL;
		if (kvmig_pager_seqs(p, &seqs) == 0) {
			const char **ids = calloc(seqs.n ? seqs.n : 1, sizeof(*ids));

			for (uint32_t i = 0; ids && i < seqs.n; i++)
				ids[i] = seqs.seqs[i].id;
			if (ids)
				kvmig_pager_remove(p, ids, seqs.n);
			free(ids);
			kvmig_seq_list_free(&seqs);
		}
		if (kvmig_pager_occupied(p, &ixs, &n) == 0)
			kvmig_pager_free(p, ixs, n);
		free(ixs);
	}
	getrusage(RUSAGE_SELF, &ru);
	rss_kib = ru.ru_maxrss;
	if (write(out_fd, &rss_kib, sizeof(rss_kib)) != (ssize_t)sizeof(rss_kib))
		return EXIT_FAIL;
	kvmig_pager_destroy(&p);
	kvmig_listener_close(&l);
	return EXIT_OK;
}

int bench_verifies(int r)
{
	/* Blocks of three: an untimed warm-up, then the timed pair, on-off in
	 * even blocks and off-on in odd ones. */
	return r % 3 == 0 || (r % 3 == 1) == (r / 3 % 2 == 0);
}

void bench_pin_to(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		fprintf(stderr, "kvmig bench: cannot pin to CPU %d: %s\n", cpu, strerror(errno));
}

/* "cpu  SIDE  verify on T s (user U, system S), off ...": medians of @n rounds. */
static void print_cpu(const char *side, struct cpu_use use[2][64], int n)
{
	printf("cpu       %-8s", side);
	for (int v = 1; v >= 0; v--) {
		double user[64], sys[64], total[64];

		for (int i = 0; i < n; i++) {
			user[i] = use[v][i].user;
			sys[i] = use[v][i].sys;
			total[i] = user[i] + sys[i];
		}
		printf("%s %.3f s (user %.3f, system %.3f)", v ? " verify on" : ", off",
		       bench_median(total, n), bench_median(user, n), bench_median(sys, n));
	}
	printf("  (medians, all threads)\n");
}

/* One iperf3 client run of @bytes against a one-shot server; GB/s or < 0. */
static double iperf3_gbps(const char *iperf3, uint64_t bytes, int port, int pin)
{
	char cmd[512], buf[1 << 16];
	size_t len = 0;
	json_error_t jerr;
	json_t *root, *v;
	double gbps = -1;
	FILE *f;

	/* --pin: iperf3's ends on the same CPUs as kvmig's (server 0, client 1). */
	snprintf(cmd, sizeof(cmd), "%s -s -1 -p %d -D %s >/dev/null 2>&1 && sleep 0.3 && "
		 "%s -c 127.0.0.1 -p %d -n %llu -J %s 2>/dev/null", iperf3, port,
		 pin ? "-A 0" : "", iperf3, port, (unsigned long long)bytes, pin ? "-A 1" : "");
	f = popen(cmd, "r");
	if (!f)
		return -1;
	len = fread(buf, 1, sizeof(buf) - 1, f);
	pclose(f);
	buf[len] = '\0';
	root = json_loads(buf, 0, &jerr);
	v = root ? json_object_get(json_object_get(json_object_get(root, "end"), "sum_received"),
				   "bits_per_second") : NULL;
	if (v && json_is_number(v))
		gbps = json_number_value(v) / 8e9;
	json_decref(root);
	return gbps;
}

int cmd_bench(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pages", required_argument, NULL, 'p' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "iperf3", required_argument, NULL, 'i' },
		{ "no-iperf3", no_argument, NULL, 'n' },
		{ "transport", required_argument, NULL, 't' },
		{ "listen", required_argument, NULL, 'l' },
		{ "pin", no_argument, NULL, 'P' },
		{ "no-pin", no_argument, NULL, 'N' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *iperf3 = "iperf3", *listen_addr = "127.0.0.1:0";
	char addr[80] = "";
	uint32_t pages = 512;
	int rounds = 5, c, ret, pipefd[2], status, port = 5201 + (int)(getpid() % 500);
	double on[64], off[64], ip[64], t_on, t_off, ip_med = 0, pair_med;
	struct cpu_use cpu[2][2][64]; /* [sender, receiver][off, on][round] */
	int last_ip_ok = 0;
	int n_ip = 0;
	struct kvmig_pager *src = NULL;
	struct kvmig_synth_opts so;
	struct kvmig_migrate_opts mo;
	struct kvmig_migrate_stats st;
	enum kvmig_transport transport = KVMIG_TRANSPORT_TCP;
	int pin = -1; /* by default where CPUs 0 and 1 are ours */
	uint64_t v, bytes;
	long rss_kib = 0;
	pid_t child;

	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--live"))
			return bench_live(argc, argv);
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (cli_parse_u64(optarg, 1u << 16, &v) < 0 || !v)
				return cli_usage_error("bench", "--pages is 1 to 65536");
			pages = (uint32_t)v;
			break;
		case 'r':
			if (cli_parse_u64(optarg, 64, &v) < 0 || !v)
				return cli_usage_error("bench", "--rounds is 1 to 64");
			rounds = (int)v;
			break;
		case 'i':
			iperf3 = optarg;
			break;
		case 'n':
			iperf3 = NULL;
			break;
		case 't':
			if (kvmig_transport_parse(optarg, &transport) < 0 ||
			    transport == KVMIG_TRANSPORT_AUTO)
				return cli_usage_error("bench", "--transport is tcp or rdma");
			break;
		case 'l':
			listen_addr = optarg;
			break;
		case 'P':
			pin = 1;
			break;
		case 'N':
			pin = 0;
			break;
		case 'h':
			fputs(bench_usage, stdout);
			return EXIT_OK;
		default:
			return cli_bad_option("bench", argv);
		}
	}
	if (pin < 0) {
		cpu_set_t set;

		pin = sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_ISSET(0, &set) &&
		      CPU_ISSET(1, &set);
	}
	if (transport == KVMIG_TRANSPORT_RDMA)
		iperf3 = NULL; /* the soft-RoCE bench script measures ib_read_bw instead */
	kvmig_migrate_opts_init(&mo);
	mo.transport = transport;
	if (pipe(pipefd) < 0)
		return cli_fail("bench", -errno, "pipe");
	/* Fork before the source exists, so the receiver's RSS is its own. */
	child = fork();
	if (child < 0)
		return cli_fail("bench", -errno, "fork");
	if (child == 0) {
		close(pipefd[0]);
		if (pin)
			bench_pin_to(0);
		_exit(bench_receiver(listen_addr, &mo, pages, 3 * rounds, 1, pipefd[1]));
	}
	close(pipefd[1]);
	if (pin)
		bench_pin_to(1);
	if (read(pipefd[0], addr, sizeof(addr)) != (ssize_t)sizeof(addr)) {
		ret = EXIT_FAIL;
		goto out;
	}
	addr[sizeof(addr) - 1] = '\0';
	kvmig_synth_opts_init(&so);
	so.capacity_pages = pages;
	so.n_seqs = pages >= 8 ? 8 : 1;
	so.pages_per_seq = pages / so.n_seqs;
	so.capacity_pages = so.n_seqs * so.pages_per_seq;
	bytes = (uint64_t)so.capacity_pages * 2 * (1u << 20);
	if ((ret = kvmig_synth_create(&so, &src)) < 0) {
		ret = cli_fail("bench", ret, "cannot create the source pager");
		goto out;
	}
	mo.mode = KVMIG_MODE_COPY;
	printf("kvmig bench: %u pages (%.2f GiB), %d rounds with and %d without verification, "
	       "%s to %s%s\n", so.capacity_pages, (double)bytes / (1 << 30), rounds, rounds,
	       transport == KVMIG_TRANSPORT_RDMA ? "rdma" : "tcp", addr,
	       pin ? ", receiver on CPU 0, sender on CPU 1" : "");
	for (int r = 0; r < 3 * rounds; r++) {
		struct cpu_use c0 = cpu_now();

		mo.verify = bench_verifies(r);
		if ((ret = kvmig_migrate_send(src, addr, &mo, &st)) < 0) {
			ret = cli_fail("bench", ret, "round %d failed", r);
			goto out;
		}
		if (r % 3 == 0) {
			if (r)
				printf("  warm-up   verify on   %.3f s  (%snot counted)\n",
				       st.transfer_seconds, last_ip_ok ? "after iperf3; " : "");
			continue;
		}
		cpu[0][mo.verify][r / 3] = cpu_since(c0);
		(mo.verify ? on : off)[r / 3] = st.transfer_seconds;
		printf("  round %2d  verify %-3s  %.3f s  %.2f GB/s\n", r / 3 + 1,
		       mo.verify ? "on" : "off", st.transfer_seconds,
		       (double)bytes / st.transfer_seconds / 1e9);
		if (iperf3 && r % 3 == 2) {
			double g = iperf3_gbps(iperf3, bytes, port, pin);

			last_ip_ok = g > 0;
			if (g > 0) {
				ip[n_ip++] = g;
				printf("  iperf3    %.2f GB/s\n", g);
			}
		}
		fflush(stdout);
	}
	/* The receiver's CPU use per migration, then its peak RSS. */
	ret = 0;
	for (int r = 0; r < 3 * rounds && ret == 0; r++) {
		struct cpu_use rc;

		if (read(pipefd[0], &rc, sizeof(rc)) != (ssize_t)sizeof(rc))
			ret = -EPIPE;
		else if (r % 3)
			cpu[1][bench_verifies(r)][r / 3] = rc;
	}
	if (ret == 0 && read(pipefd[0], &rss_kib, sizeof(rss_kib)) != (ssize_t)sizeof(rss_kib))
		ret = -EPIPE;
	status = 0;
	waitpid(child, &status, 0);
	child = -1;
	if (ret < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != EXIT_OK) {
		ret = cli_fail("bench", -EPIPE, "the receiving process did not report its CPU "
			       "use and RSS (exit status 0x%x)", status);
		goto out;
	}
	{
		/* Each verified migration against the unverified one of its round
		 * (before the medians sort on[] and off[]): slow drift on a shared
		 * machine cancels out of these pairs. */
		double pair[64];

		for (int i = 0; i < rounds; i++)
			pair[i] = on[i] / off[i];
		pair_med = bench_median(pair, rounds);
	}
	t_on = bench_median(on, rounds);
	t_off = bench_median(off, rounds);
	printf("median    verify on  %.3f s  %.2f GB/s\n", t_on, (double)bytes / t_on / 1e9);
	printf("median    verify off %.3f s  %.2f GB/s\n", t_off, (double)bytes / t_off / 1e9);
	if (n_ip) {
		ip_med = bench_median(ip, n_ip);
		printf("median    iperf3     %.2f GB/s (%d runs, -n %llu)\n", ip_med, n_ip,
		       (unsigned long long)bytes);
		printf("ratio     kvmig (verify on) / iperf3 = %.2fx   (target >= 0.85x)\n",
		       (double)bytes / t_on / 1e9 / ip_med);
	} else {
		printf("iperf3    not run (%s)\n", iperf3 ? "not installed or failed" : "--no-iperf3");
	}
	printf("verify    adds %.1f%% to the transfer time (median of the %d rounds' on/off "
	       "pairs; ratio of medians %.1f%%)   (target <= 10%%)\n", (pair_med - 1) * 100,
	       rounds, (t_on / t_off - 1) * 100);
	for (int side = 0; side < 2; side++)
		print_cpu(side ? "receiver" : "sender", cpu[side], rounds);
	printf("receiver  peak RSS %.1f MiB for a %.1f MiB arena: arena + %.1f MiB   "
	       "(target <= arena + 64 MiB)\n", rss_kib / 1024.0, (double)bytes / (1 << 20),
	       rss_kib / 1024.0 - (double)bytes / (1 << 20));
	ret = EXIT_OK;
out:
	if (child > 0) {
		kill(child, 9);
		waitpid(child, NULL, 0);
	}
	kvmig_pager_destroy(&src);
	return ret;
}
