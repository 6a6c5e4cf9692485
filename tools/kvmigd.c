/* SPDX-License-Identifier: MIT */
/*
 * tools/kvmigd.c - the migration agent as a daemon: attach to a pager, run
 * kvmig_agent_start() (kvmig/agent.h) until SIGINT / SIGTERM, log one line
 * per event on stderr. Options come from the command line and, first, from
 * a config file of "name = value" lines with the same names.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kvmig/kvmig.h>

#include "token.h"

static const char usage[] =
	"usage: kvmigd --pager SPEC [options]\n"
	"\n"
	"The migration agent: stays up, accepts migrations into the pager on its data\n"
	"address (several at once), starts, tracks and aborts migrations out of it on\n"
	"request, and serves an HTTP/1.1 + JSON control API with Prometheus metrics\n"
	"(docs/AGENT.md). Stops on SIGINT / SIGTERM / SIGHUP, aborting what has not\n"
	"committed.\n"
	"\n"
	"  --pager SPEC            the pager (shm:NAME)\n"
	"  --listen HOST:PORT      data address migrations arrive on (default\n"
	"                          127.0.0.1:7400; port 0: any free one)\n"
	"  --transport T           tcp (default), rdma or auto, for the data address\n"
	"  --socket PATH           control API on this unix socket, mode 0600 (default\n"
	"                          kvmigd.sock in the working directory)\n"
	"  --no-socket             no unix socket (then --http is needed)\n"
	"  --http HOST:PORT        control API on TCP too; needs --http-token-file\n"
	"  --http-token-file PATH  bearer token TCP clients must send (>= 16 bytes, 0600)\n"
	"  --token-file PATH       migrations' shared secret (both agents the same)\n"
	"  --max-migrations N      running at once, both directions (default 4); past\n"
	"                          it a start gets 429 and an incoming one is closed\n"
	"  --history N             ended migrations remembered (default 256)\n"
	"  --timeout MS            a migration whose peer is silent this long aborts\n"
	"                          (default 30000; a start may give its own)\n"
	"  --hash-ahead MS         hash the pages of runnable sequences ahead this often\n"
	"                          (default 1000; 0: never), so a migration hashes only\n"
	"                          what was written since\n"
	"  --devices HOST,...      receiver: where a sender's extra connections go (a\n"
	"                          start's \"paths\"): one address per RDMA device or\n"
	"                          NIC to stripe over (default: the host it reached)\n"
	"  --queue-depth N         receiver: reads in flight (default 32)\n"
	"  --read-size BYTES       receiver: bytes per read (default 1048576)\n"
	"  --config FILE           options from FILE first: \"name = value\" lines\n"
	"                          (names as above without --; # comments)\n"
	"  --quiet                 no log lines on stderr\n"
	"  --version               what this build has\n";

enum { O_PAGER = 256, O_LISTEN, O_TRANSPORT, O_SOCKET, O_NO_SOCKET, O_HTTP, O_HTTP_TOKEN,
       O_TOKEN, O_MAX, O_HISTORY, O_TIMEOUT, O_QD, O_READ_SIZE, O_CONFIG, O_QUIET, O_VERSION,
       O_HASH_AHEAD, O_DEVICES };

static const struct option options[] = {
	{ "pager", required_argument, NULL, O_PAGER },
	{ "listen", required_argument, NULL, O_LISTEN },
	{ "transport", required_argument, NULL, O_TRANSPORT },
	{ "socket", required_argument, NULL, O_SOCKET },
	{ "no-socket", no_argument, NULL, O_NO_SOCKET },
	{ "http", required_argument, NULL, O_HTTP },
	{ "http-token-file", required_argument, NULL, O_HTTP_TOKEN },
	{ "token-file", required_argument, NULL, O_TOKEN },
	{ "max-migrations", required_argument, NULL, O_MAX },
	{ "history", required_argument, NULL, O_HISTORY },
	{ "timeout", required_argument, NULL, O_TIMEOUT },
	{ "queue-depth", required_argument, NULL, O_QD },
	{ "read-size", required_argument, NULL, O_READ_SIZE },
	{ "hash-ahead", required_argument, NULL, O_HASH_AHEAD },
	{ "devices", required_argument, NULL, O_DEVICES },
	{ "config", required_argument, NULL, O_CONFIG },
	{ "quiet", no_argument, NULL, O_QUIET },
	{ "version", no_argument, NULL, O_VERSION },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("kvmigd: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (try kvmigd --help)\n", stderr);
	return 2;
}

/*
 * Log lines go to stderr through a file description of our own, opened
 * non-blocking (/proc/self/fd/2 names the same pipe, tty or file without
 * sharing its flags): when nobody drains stderr, lines are dropped and
 * counted instead of stopping the agent, which logs with its lock held.
 */
static int log_fd = STDERR_FILENO;
static unsigned long log_dropped;

static void log_open(void)
{
	int fd = open("/proc/self/fd/2", O_WRONLY | O_APPEND | O_NONBLOCK | O_CLOEXEC);

	if (fd >= 0)
		log_fd = fd;
}

static void log_line(void *arg, const char *line)
{
	char buf[1200];
	int n = 0;

	if (log_dropped)
		n = snprintf(buf, sizeof(buf), "kvmigd: (%lu log lines dropped: stderr was full)\n",
			     log_dropped);
	n += snprintf(buf + n, sizeof(buf) - (size_t)n, "kvmigd: %s\n", line);
	if (n > (int)sizeof(buf) - 1)
		n = (int)sizeof(buf) - 1;
	if (write(log_fd, buf, (size_t)n) == n)
		log_dropped = 0;
	else
		log_dropped++;
}

static int parse_uint(const char *name, const char *s, unsigned long lo, unsigned long hi,
		      uint32_t *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (!*s || *end || errno || *s == '-' || v < lo || v > hi)
		return usage_error("--%s \"%s\" is not a number in %lu..%lu", name, s, lo, hi);
	*out = (uint32_t)v;
	return 0;
}

/*
 * The config file as command-line words: "name = value" -> "--name",
 * "value"; a bare "name" -> "--name". Appended to *words (malloc'd).
 */
static int read_config(const char *path, char ***words, int *n)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	int lineno = 0;

	if (!f)
		return usage_error("cannot open config file %s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		char *k = line, *v, *e;
		char **w;

		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			fclose(f);
			return usage_error("%s:%d: line longer than %zu bytes", path, lineno,
					   sizeof(line) - 1);
		}
		line[strcspn(line, "#\r\n")] = 0;
		while (*k == ' ' || *k == '\t')
			k++;
		if (!*k)
			continue;
		if ((v = strchr(k, '='))) {
			*v++ = 0;
			while (*v == ' ' || *v == '\t')
				v++;
			for (e = v + strlen(v); e > v && (e[-1] == ' ' || e[-1] == '\t');)
				*--e = 0;
		}
		for (e = k + strlen(k); e > k && (e[-1] == ' ' || e[-1] == '\t');)
			*--e = 0;
		if (!strcmp(k, "config")) {
			fclose(f);
			return usage_error("%s:%d: a config file cannot name another", path, lineno);
		}
		if (!(w = realloc(*words, (size_t)(*n + 2) * sizeof(char *)))) {
			fclose(f);
			return usage_error("out of memory");
		}
		*words = w;
		if (asprintf(&w[(*n)++], "--%s", k) < 0 || (v && !(w[(*n)++] = strdup(v)))) {
			fclose(f);
			return usage_error("out of memory");
		}
	}
	fclose(f);
	return 0;
}

static int run(int argc, char **argv, char ***words_out, int *n_config);

int main(int argc, char **argv)
{
	char **words = NULL;
	int n_config = 0, ret = run(argc, argv, &words, &n_config);

	/* The config file's words are ours; the command line's are not. */
	for (int i = 1; i <= n_config; i++)
		free(words[i]);
	free(words);
	return ret;
}

static int run(int argc, char **argv, char ***words_out, int *n_config)
{
	static char data_token[4097], http_token[4097];
	struct kvmig_agent_opts o;
	struct kvmig_agent *agent = NULL;
	struct kvmig_pager *p = NULL;
	const char *pager = NULL, *socket_path = "kvmigd.sock", *config = NULL;
	const char *token_file = NULL, *http_token_file = NULL;
	char **words = NULL, why[512];
	int n_words = 0, quiet = 0, c, ret, sig;
	sigset_t stop;
	size_t len;

	kvmig_agent_opts_init(&o);
	/* --config first, wherever it is: the command line then overrides it. */
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--config") && i + 1 < argc)
			config = argv[i + 1];
		else if (!strncmp(argv[i], "--config=", 9))
			config = argv[i] + 9;
	}
	if (!(words = malloc(sizeof(char *))))
		return 1;
	*words_out = words;
	words[n_words++] = argv[0];
	ret = config ? read_config(config, words_out, &n_words) : 0;
	words = *words_out;
	*n_config = n_words - 1;
	if (ret != 0)
		return ret;
	for (int i = 1; i < argc; i++) {
		char **w = realloc(words, (size_t)(n_words + 1) * sizeof(char *));

		if (!w)
			return 1;
		*words_out = words = w;
		words[n_words++] = argv[i];
	}
	opterr = 0;
	while ((c = getopt_long(n_words, words, "h", options, NULL)) != -1) {
		switch (c) {
		case O_PAGER:
			pager = optarg;
			break;
		case O_LISTEN:
			if (kvmig_addr_check(optarg) < 0)
				return usage_error("--listen: %s", kvmig_last_error());
			o.data_addr = optarg;
			break;
		case O_TRANSPORT:
			if (kvmig_transport_parse(optarg, &o.transport) < 0)
				return usage_error("--transport \"%s\": expected tcp, rdma or auto",
						   optarg);
			break;
		case O_SOCKET:
			socket_path = optarg;
			break;
		case O_NO_SOCKET:
			socket_path = NULL;
			break;
		case O_HTTP:
			if (kvmig_addr_check(optarg) < 0)
				return usage_error("--http: %s", kvmig_last_error());
			o.control_addr = optarg;
			break;
		case O_HTTP_TOKEN:
			http_token_file = optarg;
			break;
		case O_TOKEN:
			token_file = optarg;
			break;
		case O_MAX:
			if ((ret = parse_uint("max-migrations", optarg, 1, 256, &o.max_migrations)))
				return ret;
			break;
		case O_HISTORY:
			if ((ret = parse_uint("history", optarg, 1, 65536, &o.history)))
				return ret;
			break;
		case O_TIMEOUT:
			if ((ret = parse_uint("timeout", optarg, 1, 3600000, &o.timeout_ms)))
				return ret;
			break;
		case O_QD:
			if ((ret = parse_uint("queue-depth", optarg, 1, 1024, &o.queue_depth)))
				return ret;
			break;
		case O_READ_SIZE:
			if ((ret = parse_uint("read-size", optarg, 4096, 16u << 20, &o.max_read_bytes)))
				return ret;
			break;
		case O_HASH_AHEAD:
			if ((ret = parse_uint("hash-ahead", optarg, 0, 3600000, &o.hash_ahead_ms)))
				return ret;
			break;
		case O_DEVICES:
			o.path_hosts = optarg;
			break;
		case O_CONFIG:
			break; /* read above */
		case O_QUIET:
			quiet = 1;
			break;
		case O_VERSION:
			printf("kvmigd (kvmig) %s\n", kvmig_build_info());
			return 0;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			return usage_error("unknown option or missing value: %s",
					   words[optind - 1] ? words[optind - 1] : "?");
		}
	}
	if (optind != n_words)
		return usage_error("unexpected argument \"%s\"", words[optind]);
	if (!pager)
		return usage_error("--pager is required");
	if (!socket_path && !o.control_addr)
		return usage_error("--no-socket needs --http (the API must be somewhere)");
	if (o.control_addr && !http_token_file)
		return usage_error("--http needs --http-token-file: the API on TCP takes only "
				   "requests with its bearer token");
	if (http_token_file && !o.control_addr)
		return usage_error("--http-token-file is for --http");
	if (token_file) {
		if (token_read(token_file, data_token, sizeof(data_token), &len, why, sizeof(why)) < 0)
			return usage_error("%s", why);
		o.data_token = data_token;
		o.data_token_len = len;
	}
	if (http_token_file) {
		if (token_read(http_token_file, http_token, sizeof(http_token), &len, why,
			       sizeof(why)) < 0)
			return usage_error("%s", why);
		o.control_token = http_token;
		o.control_token_len = len;
	}
	o.control_socket = socket_path;
	if (!quiet) {
		log_open();
		o.log = log_line;
	}
	/* Every thread the agent starts inherits this mask: the signals come
	 * here, to sigwait, and nowhere else. */
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGHUP); /* a closed terminal: the same clean stop */
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);
	if ((ret = kvmig_pager_open(pager, &p)) < 0) {
		fprintf(stderr, "kvmigd: cannot open pager %s: %s\n", pager, kvmig_last_error());
		return 1;
	}
	if ((ret = kvmig_agent_start(p, &o, &agent)) < 0) {
		fprintf(stderr, "kvmigd: %s\n", kvmig_last_error());
		kvmig_pager_destroy(&p);
		return 1;
	}
	printf("kvmigd: pager %s, data on %s, control on %s\n", pager,
	       kvmig_agent_data_addr(agent), kvmig_agent_control_addr(agent));
	fflush(stdout);
	sigwait(&stop, &sig);
	if (!quiet) { /* never blocks on a stderr nobody drains */
		char line[64];

		snprintf(line, sizeof(line), "%s: stopping", strsignal(sig));
		log_line(NULL, line);
	}
	kvmig_agent_stop(&agent);
	kvmig_pager_destroy(&p);
	return 0;
}
