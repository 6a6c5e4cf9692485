/* SPDX-License-Identifier: MIT */
/*
 * tools/cmd_bench.c - kvmig bench: migration throughput over loopback TCP
 * against iperf3's single-stream loopback throughput, measured in one run;
 * or, with --transport rdma --listen ADDR, over the verbs provider (the
 * soft-RoCE bench script, tests/softroce/bench.sh, runs ib_read_bw beside it).
 *
 * Sender and receiver are two long-lived processes that each own their
 * pager in process memory, as an engine owns its KV arena. R rounds, each an
 * untimed warm-up migration, three timed ones in a rotating order (verified
 * with the digests kept ahead, verified with none kept so the sender hashes
 * every page, unverified: bench_kind()) and two iperf3 runs of the same byte
 * count (from memory, and -F from a file in /dev/shm with -Z); every
 * migration moves the whole cache in copy mode into the same destination
 * pages (the receiver removes and frees between them). The first round's
 * warm-up touches both arenas (on VMs a process's first touch of a page
 * costs more than the copy); the later ones keep the iperf3 runs'
 * after-effects (the next migration runs ~1.4x slower) off the timed ones,
 * and the rotating order keeps any order effect off one kind. Where CPUs
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
	"                   [--paths N]\n"
	"       kvmig bench --live [--sizes LIST] [--rounds R] [--rate TOKENS/S] [--json]\n"
	"\n"
	"Migrate a Llama-3-8B-shaped cache of N pages (2 MiB each; default 512 = 1 GiB)\n"
	"between two processes over loopback TCP, R times each (default 5) verified\n"
	"with the digests kept ahead (kvmig pager hash: the sender hashes nothing),\n"
	"verified with none kept (the sender hashes every page) and unverified,\n"
	"interleaved with R iperf3 runs of the same size from memory and R from a\n"
	"file in /dev/shm (-F, -Z), and print medians, ratios and the receiver's peak\n"
	"RSS. --transport rdma\n"
	"migrates over the verbs provider to a receiver on ADDR (an RDMA device's\n"
	"address) and runs no iperf3. Where CPUs 0 and 1 are both available the\n"
	"receiver runs on CPU 0 and the sender on CPU 1 (iperf3's server and client\n"
	"likewise), as two hosts would: each end copies and hashes on its own CPU (on\n"
	"SMT hosts CPUs 0 and 1 may be two threads of one core: check lscpu -e);\n"
	"--no-pin leaves placement to the scheduler, --pin pins regardless. Each\n"
	"round is an untimed warm-up migration, then the three timed ones (in an\n"
	"order that rotates), then the iperf3 runs. --paths N stripes every\n"
	"migration over N connections (send --paths: TCP streams, queue pairs).\n"
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

enum bench_kind bench_kind(int r)
{
	int i = r % BENCH_PER_ROUND;

	return i == 0 ? BENCH_WARMUP : (enum bench_kind)(1 + (i - 1 + r / BENCH_PER_ROUND) % 3);
}

int bench_verifies(int r)
{
	return bench_kind(r) != BENCH_OFF;
}


void bench_pin_to(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		fprintf(stderr, "kvmig bench: cannot pin to CPU %d: %s\n", cpu, strerror(errno));
}

/* A file of @bytes pseudo-random bytes (iperf3 -F reads it). 0 or -errno. */
static int bench_write_file(const char *path, uint64_t bytes)
{
	static uint8_t buf[1 << 20];
	uint64_t x = 0x9e3779b97f4a7c15ull;
	FILE *f = fopen(path, "wb");

	if (!f)
		return -errno;
	for (size_t i = 0; i < sizeof(buf); i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(buf + i, &x, 8);
	}
	for (uint64_t done = 0; done < bytes; done += sizeof(buf)) {
		buf[0]++;
		if (fwrite(buf, 1, sizeof(buf), f) != sizeof(buf)) {
			fclose(f);
			unlink(path);
			return -EIO;
		}
	}
	return fclose(f) ? -errno : 0;
}

static const char *const kind_names[] = {
	[BENCH_AHEAD] = "digests ahead", [BENCH_HASHED] = "hashed now", [BENCH_OFF] = "verify off",
};

/* "cpu  SIDE  digests ahead T s (user U, system S), ...": medians of @n rounds. */
static void print_cpu(const char *side, struct cpu_use use[4][64], int n)
{
	printf("cpu       %-8s", side);
	for (int k = BENCH_AHEAD; k <= BENCH_OFF; k++) {
		double user[64], sys[64], total[64];

		for (int i = 0; i < n; i++) {
			user[i] = use[k][i].user;
			sys[i] = use[k][i].sys;
			total[i] = user[i] + sys[i];
		}
		printf("%s %s %.3f s (user %.3f, system %.3f)", k == BENCH_AHEAD ? "" : ",",
		       kind_names[k], bench_median(total, n), bench_median(user, n),
		       bench_median(sys, n));
	}
	printf("  (medians, all threads)\n");
}

/* One iperf3 client run of @bytes against a one-shot server (from @file
 * with sendfile when not NULL); GB/s or < 0. */
static double iperf3_gbps(const char *iperf3, uint64_t bytes, int port, int pin,
			  const char *file)
{
	char extra[128] = "";
	char cmd[512], buf[1 << 16];
	size_t len = 0;
	json_error_t jerr;
	json_t *root, *v;
	double gbps = -1;
	FILE *f;

	/* --pin: iperf3's ends on the same CPUs as kvmig's (server 0, client 1). */
	if (file)
		snprintf(extra, sizeof(extra), "-F %s -Z", file);
	snprintf(cmd, sizeof(cmd), "%s -s -1 -p %d -D %s >/dev/null 2>&1 && sleep 0.3 && "
		 "%s -c 127.0.0.1 -p %d -n %llu -J %s %s 2>/dev/null", iperf3, port,
		 pin ? "-A 0" : "", iperf3, port, (unsigned long long)bytes, pin ? "-A 1" : "",
		 extra);
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
		{ "paths", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *iperf3 = "iperf3", *listen_addr = "127.0.0.1:0";
	char addr[80] = "";
	uint32_t pages = 512, paths = 1;
	int rounds = 5, c, ret, pipefd[2], status, port = 5201 + (int)(getpid() % 500);
	double t[4][64], ip[64], ipz[64], med[4], ip_med = 0, ipz_med = 0, pair_med[4];
	struct cpu_use cpu[2][4][64]; /* [sender, receiver][kind][round] */
	int n_ipz = 0;
	char zfile[64] = "";
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
		case 'S':
			if (cli_parse_u64(optarg, KVMIG_MAX_PATHS, &v) < 0 || !v)
				return cli_usage_error("bench", "--paths is 1 to %u", KVMIG_MAX_PATHS);
			paths = (uint32_t)v;
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
	mo.paths = paths;
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
		_exit(bench_receiver(listen_addr, &mo, pages, BENCH_PER_ROUND * rounds, 1,
				     pipefd[1]));
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
	printf("kvmig bench: %u pages (%.2f GiB), %d rounds: verified with digests ahead, "
	       "verified hashing now, unverified, %s to %s%s\n", so.capacity_pages,
	       (double)bytes / (1 << 30), rounds, transport == KVMIG_TRANSPORT_RDMA ? "rdma" : "tcp",
	       addr, pin ? ", receiver on CPU 0, sender on CPU 1" : "");
	/* iperf3 -F: the same bytes from a file in /dev/shm (distinct memory, as
	 * a cache is), sent with sendfile (-Z, zero-copy). */
	if (iperf3) {
		snprintf(zfile, sizeof(zfile), "/dev/shm/kvmig-bench-%d", (int)getpid());
		if (bench_write_file(zfile, bytes) < 0)
			zfile[0] = '\0';
	}
	for (int r = 0; r < BENCH_PER_ROUND * rounds; r++) {
		enum bench_kind k = bench_kind(r);
		struct cpu_use c0;

		mo.verify = bench_verifies(r);
		/* Untimed: keep every page's digests current, or forget them. */
		if (k == BENCH_AHEAD)
			(void)kvmig_hash_ahead(src, NULL, 0, 1, NULL);
		else if (k == BENCH_HASHED || k == BENCH_WARMUP)
			cli_forget_digests(src);
		c0 = cpu_now();
		if ((ret = kvmig_migrate_send(src, addr, &mo, &st)) < 0) {
			ret = cli_fail("bench", ret, "round %d failed", r);
			goto out;
		}
		if (k == BENCH_WARMUP) {
			if (r)
				printf("  warm-up   verify on   %.3f s  (%snot counted)\n",
				       st.transfer_seconds, last_ip_ok ? "after iperf3; " : "");
			continue;
		}
		cpu[0][k][r / BENCH_PER_ROUND] = cpu_since(c0);
		t[k][r / BENCH_PER_ROUND] = st.transfer_seconds;
		printf("  round %2d  %-13s  %.3f s  %.2f GB/s  (digests ahead %u, hashed %u)\n",
		       r / BENCH_PER_ROUND + 1, kind_names[k], st.transfer_seconds,
		       (double)bytes / st.transfer_seconds / 1e9, st.digests_ahead, st.pages_hashed);
		if (iperf3 && r % BENCH_PER_ROUND == BENCH_PER_ROUND - 1) {
			double g = iperf3_gbps(iperf3, bytes, port, pin, NULL);

			last_ip_ok = g > 0;
			if (g > 0) {
				ip[n_ip++] = g;
				printf("  iperf3    %.2f GB/s\n", g);
			}
			if (zfile[0] && (g = iperf3_gbps(iperf3, bytes, port, pin, zfile)) > 0) {
				ipz[n_ipz++] = g;
				printf("  iperf3 -F /dev/shm file -Z  %.2f GB/s\n", g);
			}
		}
		fflush(stdout);
	}
	/* The receiver's CPU use per migration, then its peak RSS. */
	ret = 0;
	for (int r = 0; r < BENCH_PER_ROUND * rounds && ret == 0; r++) {
		struct cpu_use rc;

		if (read(pipefd[0], &rc, sizeof(rc)) != (ssize_t)sizeof(rc))
			ret = -EPIPE;
		else if (bench_kind(r) != BENCH_WARMUP)
			cpu[1][bench_kind(r)][r / BENCH_PER_ROUND] = rc;
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
	/* Each verified migration against the unverified one of its round
	 * (before the medians sort the times): slow drift on a shared machine
	 * cancels out of these pairs. */
	for (int k = BENCH_AHEAD; k <= BENCH_HASHED; k++) {
		double pair[64];

		for (int i = 0; i < rounds; i++)
			pair[i] = t[k][i] / t[BENCH_OFF][i];
		pair_med[k] = bench_median(pair, rounds);
	}
	for (int k = BENCH_AHEAD; k <= BENCH_OFF; k++) {
		med[k] = bench_median(t[k], rounds);
		printf("median    %-13s  %.3f s  %.2f GB/s\n", kind_names[k], med[k],
		       (double)bytes / med[k] / 1e9);
	}
	if (n_ip) {
		ip_med = bench_median(ip, n_ip);
		printf("median    iperf3         %.2f GB/s (%d runs, -n %llu)\n", ip_med, n_ip,
		       (unsigned long long)bytes);
		printf("ratio     kvmig (digests ahead) / iperf3 = %.2fx   (target >= 0.85x)\n",
		       (double)bytes / med[BENCH_AHEAD] / 1e9 / ip_med);
	} else {
		printf("iperf3    not run (%s)\n", iperf3 ? "not installed or failed" : "--no-iperf3");
	}
	if (n_ipz) {
		ipz_med = bench_median(ipz, n_ipz);
		printf("median    iperf3 -F -Z   %.2f GB/s (a %llu-byte file in /dev/shm, zero-copy)\n",
		       ipz_med, (unsigned long long)bytes);
		printf("ratio     kvmig (hashed now) / iperf3 -F -Z = %.2fx   (target >= 1.0x)\n",
		       (double)bytes / med[BENCH_HASHED] / 1e9 / ipz_med);
	}
	printf("verify    adds %.1f%% with digests ahead (target <= 10%%), %.1f%% hashing now "
	       "(medians of the %d rounds' pairs with the unverified one; ratios of medians "
	       "%.1f%%, %.1f%%)\n", (pair_med[BENCH_AHEAD] - 1) * 100,
	       (pair_med[BENCH_HASHED] - 1) * 100, rounds,
	       (med[BENCH_AHEAD] / med[BENCH_OFF] - 1) * 100,
	       (med[BENCH_HASHED] / med[BENCH_OFF] - 1) * 100);
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
	if (zfile[0])
		unlink(zfile);
	kvmig_pager_destroy(&src);
	return ret;
}
