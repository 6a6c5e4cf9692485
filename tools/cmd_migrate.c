/* SPDX-License-Identifier: MIT */
/*
 * tools/cmd_migrate.c - kvmig send / kvmig recv: one migration between two
 * pagers, with a progress bar on a terminal or one JSON object per line
 * (--json) for schedulers.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "token.h"

/* SIGINT / SIGTERM: a byte into this pipe, whose read end the library
 * watches (opts.cancel_fd): the migration aborts cleanly, as on any failure
 * before the commit point. */
static int stop_pipe[2] = { -1, -1 };
static volatile sig_atomic_t stop_signal;

static void on_stop(int sig)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	int saved = errno;

	stop_signal = sig;
	(void)!write(stop_pipe[1], "x", 1);
	/* A second signal does not wait for the clean abort. */
	sigaction(SIGINT, &dfl, NULL);
	sigaction(SIGTERM, &dfl, NULL);
	errno = saved;
}

static int catch_stop_signals(void)
{
	struct sigaction sa = { .sa_handler = on_stop }; /* no SA_RESTART: waits wake */

	if (pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	return stop_pipe[0];
}

static const char send_usage[] =
	"usage: kvmig send --to HOST:PORT --pager SPEC [options]\n"
	"\n"
	"Migrate a pager's pages and sequences to a receiver (kvmig recv). The pager is\n"
	"paused for the migration (with --live: only for its last round) and resumed\n"
	"afterwards, unchanged if it fails.\n"
	"\n"
	"  --seqs ID,...      only these sequences and their pages (default: everything)\n"
	"  --mode move|copy   move (default): after commit remove the sequences here and\n"
	"                     free the pages no remaining sequence uses; copy: keep them\n"
	"  --transport T      tcp (default), rdma, or auto: rdma when an RDMA device\n"
	"                     serves HOST, else tcp (the choice is printed)\n"
	"  --timeout MS       give up when the receiver is silent this long (default 30000)\n"
	"  --token-file PATH  shared secret (>= 16 bytes, mode 0600): the receiver must\n"
	"                     prove it holds the same before anything is registered\n"
	"  --live             pre-copy while the engine keeps decoding: round 0 sends every\n"
	"                     page of the sequences, later rounds what changed; then pause\n"
	"                     only for the rest (default: stop-and-copy, paused throughout)\n"
	"  --max-downtime-ms N  live: pause once the dirty pages would move within N ms at\n"
	"                     the last round's rate and grew since the round before, or\n"
	"                     nothing is dirty (default 20; not consulted before round 2)\n"
	"  --max-rounds K     live: pause after at most K pre-copy rounds (default 8, 1-64)\n"
	"  --hash-threads N   threads hashing the pages whose digests were not kept\n"
	"                     ahead (kvmig pager hash) while the main thread serves the\n"
	"                     reads (default: online CPUs less one, 1 to 8; reported)\n"
	"  --paths N          N connections to each of the receiver's path addresses\n"
	"                     (--streams N with tcp, --qps N with rdma: the same knob);\n"
	"                     reads are striped over all of them, and one that fails\n"
	"                     aborts the migration (default 1; at most 8 in all)\n"
	"  --no-verify        send no digests (benchmarks only; the receiver must agree)\n"
	"  --json             one JSON object per line on stdout: phases, progress, result\n"
	"  --quiet            no progress bar and no summary\n";

static const char recv_usage[] =
	"usage: kvmig recv [--listen HOST:PORT] --pager SPEC [options]\n"
	"\n"
	"Receive one migration into a pager: allocate pages, read the sender's pages\n"
	"straight into them, verify every page, install the sequences, commit. On\n"
	"failure every page allocated here is freed and nothing is installed.\n"
	"\n"
	"  --listen HOST:PORT   address to bind (default 127.0.0.1:7400, loopback only;\n"
	"                       port 0: any free port, printed)\n"
	"  --token-file PATH    shared secret (>= 16 bytes, mode 0600): the sender must\n"
	"                       prove it holds the same before anything is read\n"
	"  --transport T        tcp (default), rdma, or auto: rdma when HOST is the address\n"
	"                       of an RDMA device, else tcp (the choice is printed)\n"
	"  --queue-depth N      reads in flight (default 32)\n"
	"  --read-size BYTES    bytes per read (default 1048576)\n"
	"  --timeout MS         give up when the sender is silent this long (default 30000)\n"
	"  --accept-timeout MS  give up when no sender connects this long (default: wait)\n"
	"  --devices HOST,...   where a sender's extra connections (send --paths) go: the\n"
	"                       address of each RDMA device (or NIC) to stripe over, one\n"
	"                       listener on a free port each, for the migration only\n"
	"                       (default: the host the sender reached)\n"
	"  --no-verify          do not hash pages (benchmarks only; the sender must agree)\n"
	"  --json               one JSON object per line on stdout\n"
	"  --quiet              no progress bar and no summary\n";

struct ui {
	const char *cmd;
	int json;
	int bar;    /* progress bar on stderr */
	int quiet;
	int bar_drawn;
};

static void on_event(void *arg, const struct kvmig_event *ev)
{
	struct ui *u = arg;

	if (u->json) {
		switch (ev->type) {
		case KVMIG_EVENT_LISTENING:
			cli_emit_json(json_pack("{s:s,s:s,s:s}", "event", "listening", "addr", ev->addr,
						"transport", ev->transport));
			break;
		case KVMIG_EVENT_PHASE:
			if (!strcmp(ev->phase, "connect"))
				cli_emit_json(json_pack("{s:s,s:s,s:s}", "event", "phase", "phase", ev->phase,
							"transport", ev->transport));
			else
				cli_emit_json(json_pack("{s:s,s:s}", "event", "phase", "phase", ev->phase));
			break;
		case KVMIG_EVENT_PROGRESS:
			cli_emit_json(json_pack("{s:s,s:i,s:i,s:I,s:I}", "event", "progress", "pages",
						(int)ev->pages_done, "pages_total", (int)ev->pages_total,
						"bytes", (json_int_t)ev->bytes_done, "bytes_total",
						(json_int_t)ev->bytes_total));
			break;
		}
		return;
	}
	if (ev->type == KVMIG_EVENT_LISTENING && !u->quiet) {
		printf("listening on %s (%s)\n", ev->addr, ev->transport);
		fflush(stdout);
	}
	if (ev->type == KVMIG_EVENT_PHASE && !strcmp(ev->phase, "connect") && !u->quiet) {
		printf("connecting over %s\n", ev->transport);
		fflush(stdout);
	}
	if (ev->type == KVMIG_EVENT_PROGRESS && u->bar && ev->bytes_total) {
		char done[32], total[32], bar[31];
		unsigned fill = (unsigned)(30.0 * (double)ev->bytes_done / (double)ev->bytes_total);

		fill = fill > 30 ? 30 : fill;
		memset(bar, '#', fill);
		memset(bar + fill, '.', 30 - fill);
		bar[30] = '\0';
		cli_fmt_bytes(ev->bytes_done, done, sizeof(done));
		cli_fmt_bytes(ev->bytes_total, total, sizeof(total));
		fprintf(stderr, "\r[%s] %u/%u pages  %s / %s ", bar, ev->pages_done, ev->pages_total,
			done, total);
		u->bar_drawn = 1;
	}
}

static void end_bar(struct ui *u)
{
	if (u->bar_drawn)
		fputc('\n', stderr);
	u->bar_drawn = 0;
}

/* What an interrupted migration left, as one sentence (into @buf). */
static const char *interrupted(int role_sender, char *buf, size_t len)
{
	snprintf(buf, len, "interrupted by %s: the migration was aborted; %s",
		 stop_signal == SIGINT ? "SIGINT" : "SIGTERM",
		 role_sender ? "the source pager is resumed with every sequence" :
		 "every page allocated here is freed and nothing was installed");
	return buf;
}

/* Notice of records that earlier migrations left in @p (stderr, or a JSON
 * "records" event): the handshake with the same peer resolves them. */
static void note_records(struct ui *u, struct kvmig_pager *p, const char *spec)
{
	struct kvmig_record *r = NULL;
	uint32_t n = 0, waiting = 0;

	if (kvmig_pager_records(p, &r, &n) < 0)
		return;
	for (uint32_t i = 0; i < n; i++)
		waiting += !r[i].owner_pid;
	free(r);
	if (!waiting)
		return;
	if (u->json)
		cli_emit_json(json_pack("{s:s,s:i}", "event", "records", "unresolved", (int)waiting));
	else if (!u->quiet)
		fprintf(stderr, "kvmig %s: pager %s holds %u unresolved migration record%s (kvmig "
			"pager status shows them); those with this peer are resolved in the "
			"handshake\n", u->cmd, spec, waiting, waiting == 1 ? "" : "s");
}

static int report(struct ui *u, int role_sender, int ret, const struct kvmig_migrate_stats *st,
		  const char *mode)
{
	double gbps = st->transfer_seconds > 0 ? (double)st->bytes / st->transfer_seconds / 1e9 : 0;
	char b[32];

	char mig[33], why[256];
	const char *detail = kvmig_last_error()[0] ? kvmig_last_error() : strerror(-ret);

	static const struct kvmig_id none;

	end_bar(u);
	kvmig_id_format(&st->migration, mig);
	if (!memcmp(&st->migration, &none, sizeof(none)))
		mig[0] = '\0'; /* failed before one was drawn */
	if (ret == -ECANCELED && stop_signal)
		detail = interrupted(role_sender, why, sizeof(why));
	if (ret < 0) {
		int code = cli_exit_code(ret);

		if (u->json) {
			const char *name = strerrorname_np(-ret);
			char msg[1024];
			json_t *o;

			cli_printable(detail, msg, sizeof(msg));
			o = json_pack("{s:s,s:s,s:s,s:i,s:s}", "event", "error", "role",
				      role_sender ? "sender" : "receiver", "errno", name ? name : "?",
				      "exit", code, "message", msg);
			if (mig[0])
				json_object_set_new(o, "migration", json_string(mig));
			cli_emit_json(o);
			return code;
		}
		fprintf(stderr, "kvmig %s: migration %s%sfailed: %s\n", u->cmd, mig, mig[0] ? " " : "",
			detail);
		return code;
	}
	if (u->json) {
		json_t *o = json_pack("{s:s,s:s,s:i,s:i,s:I,s:f,s:f,s:f,s:i,s:i}", "event", "result",
				      "role", role_sender ? "sender" : "receiver", "pages",
				      (int)st->pages, "seqs", (int)st->seqs, "bytes",
				      (json_int_t)st->bytes, "seconds", st->seconds,
				      "transfer_seconds", st->transfer_seconds, "gbps", gbps,
				      "pages_verified", (int)st->pages_verified, "rereads",
				      (int)st->rereads);

		json_object_set_new(o, "transport", json_string(st->transport));
		json_object_set_new(o, "paths", json_integer(st->paths));
		json_object_set_new(o, "register_ms", json_real(st->register_seconds * 1e3));
		json_object_set_new(o, "migration", json_string(mig));
		json_object_set_new(o, "resolved", json_pack("{s:i,s:i,s:i,s:i}", "activated",
			(int)st->resolved.activated, "finished", (int)st->resolved.finished,
			"aborted", (int)st->resolved.aborted, "in_doubt", (int)st->resolved.in_doubt));
		if (role_sender) {
			json_object_set_new(o, "digests_ahead", json_integer(st->digests_ahead));
			json_object_set_new(o, "pages_hashed", json_integer(st->pages_hashed));
			json_object_set_new(o, "hash_threads", json_integer(st->hash_threads));
		}
		if (!role_sender)
			json_object_set_new(o, "unconfirmed", json_boolean(st->unconfirmed));
		if (!role_sender)
			json_object_set_new(o, "regions_reused", json_integer(st->regions_reused));
		if (role_sender) {
			json_t *rounds = json_array();

			json_object_set_new(o, "mode", json_string(mode));
			json_object_set_new(o, "pause_ms", json_real(st->pause_seconds * 1e3));
			json_object_set_new(o, "pages_freed", json_integer(st->pages_freed));
			json_object_set_new(o, "bytes_sent", json_integer((json_int_t)st->bytes_sent));
			for (uint32_t i = 0; i < st->n_rounds; i++)
				json_array_append_new(rounds, json_pack(
					"{s:i,s:b,s:i,s:I,s:f}", "round", (int)i, "paused",
					i + 1 == st->n_rounds, "pages", (int)st->round[i].pages,
					"bytes", (json_int_t)st->round[i].bytes, "seconds",
					st->round[i].seconds));
			json_object_set_new(o, "rounds", rounds);
		}
		cli_emit_json(o);
		return EXIT_OK;
	}
	if (u->quiet)
		return EXIT_OK;
	if (st->resolved.activated + st->resolved.finished + st->resolved.aborted)
		printf("resolved earlier migrations with this peer: %u activated, %u finished, %u "
		       "aborted\n", st->resolved.activated, st->resolved.finished,
		       st->resolved.aborted);
	cli_fmt_bytes(st->bytes, b, sizeof(b));
	printf("%s %u pages (%s) and %u sequences in %.3f s (%.2f GB/s over %s",
	       role_sender ? "sent" : "received", st->pages, b, st->seqs, st->transfer_seconds, gbps,
	       st->transport);
	if (st->paths > 1)
		printf(", %u connections", st->paths);
	printf(")\n");
	for (uint32_t i = 0; role_sender && st->n_rounds > 1 && i < st->n_rounds; i++) {
		cli_fmt_bytes(st->round[i].bytes, b, sizeof(b));
		printf("  round %u%s: %u pages (%s) in %.1f ms\n", i,
		       i + 1 == st->n_rounds ? " (paused)" : "", st->round[i].pages, b,
		       st->round[i].seconds * 1e3);
	}
	if (role_sender) {
		cli_fmt_bytes(st->bytes_sent, b, sizeof(b));
		printf("paused %.1f ms of %.3f s; %s sent in all; %s mode: %u source pages freed\n",
		       st->pause_seconds * 1e3, st->seconds, b, mode, st->pages_freed);
	}
	printf("verified %u pages by XXH3-128 (%u re-read); migration %s\n", st->pages_verified,
	       st->rereads, mig);
	if (!role_sender && st->unconfirmed)
		printf("the sender did not confirm it released its copy: this pager keeps the "
		       "migration's record (activated; the sequences run here) until it does\n");
	return EXIT_OK;
}

/* "a,b,c" into ids (pointing into @list): -EINVAL when empty, -EEXIST
 * naming the first id given twice in *dup. */
static int split_ids(char *list, const char ***ids, uint32_t *n, const char **dup)
{
	uint32_t cap = 1;

	for (char *c = list; *c; c++)
		cap += *c == ',';
	*ids = calloc(cap, sizeof(**ids));
	if (!*ids)
		return -ENOMEM;
	*n = 0;
	for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
		for (uint32_t i = 0; i < *n; i++)
			if (!strcmp((*ids)[i], tok)) {
				*dup = tok;
				return -EEXIST;
			}
		(*ids)[(*n)++] = tok;
	}
	return *n ? 0 : -EINVAL;
}

enum { O_TO = 256, O_LISTEN, O_PAGER, O_SEQS, O_MODE, O_TIMEOUT, O_ACCEPT_TIMEOUT, O_QD,
       O_READ_SIZE, O_NO_VERIFY, O_JSON, O_QUIET, O_TRANSPORT, O_TOKEN_FILE, O_LIVE,
       O_MAX_DOWNTIME, O_MAX_ROUNDS, O_HASH_THREADS, O_PATHS, O_DEVICES };

/* The secret in @path (tools/token.c), or the usage error's exit code. */
static int read_token(const char *cmd, const char *path, char *buf, size_t cap, size_t *len)
{
	char why[512];

	if (token_read(path, buf, cap, len, why, sizeof(why)) < 0)
		return cli_usage_error(cmd, "%s", why);
	return 0;
}

static int run(int argc, char **argv, int sender)
{
	static const struct option opts[] = {
		{ "to", required_argument, NULL, O_TO },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "pager", required_argument, NULL, O_PAGER },
		{ "seqs", required_argument, NULL, O_SEQS },
		{ "mode", required_argument, NULL, O_MODE },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "accept-timeout", required_argument, NULL, O_ACCEPT_TIMEOUT },
		{ "queue-depth", required_argument, NULL, O_QD },
		{ "read-size", required_argument, NULL, O_READ_SIZE },
		{ "no-verify", no_argument, NULL, O_NO_VERIFY },
		{ "transport", required_argument, NULL, O_TRANSPORT },
		{ "token-file", required_argument, NULL, O_TOKEN_FILE },
		{ "live", no_argument, NULL, O_LIVE },
		{ "max-downtime-ms", required_argument, NULL, O_MAX_DOWNTIME },
		{ "max-rounds", required_argument, NULL, O_MAX_ROUNDS },
		{ "hash-threads", required_argument, NULL, O_HASH_THREADS },
		{ "paths", required_argument, NULL, O_PATHS },
		{ "streams", required_argument, NULL, O_PATHS },
		{ "qps", required_argument, NULL, O_PATHS },
		{ "devices", required_argument, NULL, O_DEVICES },
		{ "json", no_argument, NULL, O_JSON },
		{ "quiet", no_argument, NULL, O_QUIET },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *cmd = sender ? "send" : "recv", *addr = NULL, *spec = NULL, *mode = "move";
	struct kvmig_migrate_opts mo;
	struct kvmig_migrate_stats st = { 0 };
	struct kvmig_pager *p = NULL;
	struct ui u = { cmd, 0, 0, 0, 0 };
	const char **ids = NULL, *token_file = NULL, *dup = NULL;
	static char token[4097];
	size_t token_len = 0;
	uint64_t v;
	int c, ret;

	kvmig_migrate_opts_init(&mo);
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case O_TO:
		case O_LISTEN:
			if ((c == O_TO) != sender)
				return cli_usage_error(cmd, "--%s is not an option of %s",
						       c == O_TO ? "to" : "listen", cmd);
			addr = optarg;
			break;
		case O_PAGER:
			spec = optarg;
			break;
		case O_SEQS:
			if (!sender)
				return cli_usage_error(cmd, "--seqs is an option of send");
			free(ids);
			if ((ret = split_ids(optarg, &ids, &mo.n_seq_ids, &dup)) < 0) {
				free(ids);
				if (ret == -EEXIST)
					return cli_usage_error(cmd, "--seqs names \"%s\" twice", dup);
				return cli_usage_error(cmd, "--seqs needs a comma-separated list of "
						       "sequence ids");
			}
			mo.seq_ids = ids;
			break;
		case O_MODE:
			if (!sender)
				return cli_usage_error(cmd, "--mode is an option of send");
			if (!strcmp(optarg, "move"))
				mo.mode = KVMIG_MODE_MOVE;
			else if (!strcmp(optarg, "copy"))
				mo.mode = KVMIG_MODE_COPY;
			else
				return cli_usage_error(cmd, "--mode is move or copy, not \"%s\"",
						       optarg);
			mode = optarg;
			break;
		case O_TIMEOUT:
		case O_ACCEPT_TIMEOUT:
			if (cli_parse_u64(optarg, 3600000, &v) < 0 || (c == O_TIMEOUT && !v))
				return cli_usage_error(cmd, "\"%s\" is not a timeout in milliseconds "
						       "(1 to 3600000)", optarg);
			*(c == O_TIMEOUT ? &mo.timeout_ms : &mo.accept_timeout_ms) = (uint32_t)v;
			break;
		case O_QD:
			if (cli_parse_u64(optarg, 1024, &v) < 0 || !v)
				return cli_usage_error(cmd, "--queue-depth is 1 to 1024");
			mo.queue_depth = (uint32_t)v;
			break;
		case O_READ_SIZE:
			if (cli_parse_u64(optarg, 16u << 20, &v) < 0 || v < 4096)
				return cli_usage_error(cmd, "--read-size is 4096 to 16777216 bytes");
			mo.max_read_bytes = (uint32_t)v;
			break;
		case O_NO_VERIFY:
			mo.verify = 0;
			break;
		case O_HASH_THREADS:
			if (!sender)
				return cli_usage_error(cmd, "--hash-threads is an option of send");
			if (cli_parse_u64(optarg, KVMIG_MAX_HASH_THREADS, &v) < 0 || !v)
				return cli_usage_error(cmd, "--hash-threads is 1 to %u",
						       KVMIG_MAX_HASH_THREADS);
			mo.hash_threads = (uint32_t)v;
			break;
		case O_PATHS:
			if (!sender)
				return cli_usage_error(cmd, "--paths (--streams, --qps) is an option of "
						       "send; the receiver takes what the sender asks");
			if (cli_parse_u64(optarg, KVMIG_MAX_PATHS, &v) < 0 || !v)
				return cli_usage_error(cmd, "--paths (--streams, --qps) is 1 to %u",
						       KVMIG_MAX_PATHS);
			mo.paths = (uint32_t)v;
			break;
		case O_DEVICES:
			if (sender)
				return cli_usage_error(cmd, "--devices is an option of recv; the sender "
						       "connects where the receiver says");
			mo.path_hosts = optarg;
			break;
		case O_LIVE:
		case O_MAX_DOWNTIME:
		case O_MAX_ROUNDS:
			if (!sender)
				return cli_usage_error(cmd, "--live and its options are options of send");
			if (c == O_LIVE)
				mo.live = 1;
			else if (c == O_MAX_DOWNTIME && cli_parse_u64(optarg, 3600000, &v) == 0)
				mo.max_downtime_ms = (uint32_t)v;
			else if (c == O_MAX_ROUNDS && cli_parse_u64(optarg, KVMIG_MAX_ROUNDS, &v) == 0 && v)
				mo.max_rounds = (uint32_t)v;
			else
				return cli_usage_error(cmd, "\"%s\" is not a valid %s", optarg,
						       c == O_MAX_DOWNTIME ? "downtime (0 to 3600000 ms)" :
						       "round count (1 to 64)");
			break;
		case O_TOKEN_FILE:
			token_file = optarg;
			break;
		case O_TRANSPORT:
			if (kvmig_transport_parse(optarg, &mo.transport) < 0)
				return cli_usage_error(cmd, "--transport is tcp, rdma or auto, not "
						       "\"%s\"", optarg);
			break;
		case O_JSON:
			u.json = 1;
			break;
		case O_QUIET:
			u.quiet = 1;
			break;
		case 'h':
			fputs(sender ? send_usage : recv_usage, stdout);
			free(ids);
			return EXIT_OK;
		default:
			free(ids);
			return cli_bad_option(cmd, argv);
		}
	}
	if (!sender && !addr)
		addr = "127.0.0.1:7400"; /* loopback unless told otherwise */
	if (optind < argc || !addr || !spec) {
		free(ids);
		return cli_usage_error(cmd, "needs %s--pager", sender ? "--to and " : "");
	}
	if (kvmig_addr_check(addr) < 0) {
		free(ids);
		return cli_usage_error(cmd, "%s", kvmig_last_error());
	}
	if (token_file) {
		if ((ret = read_token(cmd, token_file, token, sizeof(token), &token_len)) != 0) {
			free(ids);
			return ret;
		}
		mo.token = token;
		mo.token_len = token_len;
	}
	u.bar = !u.json && !u.quiet && isatty(STDERR_FILENO);
	mo.on_event = on_event;
	mo.event_arg = &u;
	mo.cancel_fd = catch_stop_signals();
	if ((ret = kvmig_pager_open(spec, &p)) < 0) {
		ret = u.json ? report(&u, sender, ret, &st, mode) :
			       cli_fail(cmd, ret, "cannot open pager %s", spec);
		free(ids);
		return ret;
	}
	note_records(&u, p, spec);
	if (sender)
		ret = kvmig_migrate_send(p, addr, &mo, &st);
	else
		ret = kvmig_migrate_recv(p, addr, &mo, &st);
	ret = report(&u, sender, ret, &st, mode);
	explicit_bzero(token, sizeof(token));
	kvmig_pager_destroy(&p);
	free(ids);
	return ret;
}

int cmd_send(int argc, char **argv)
{
	return run(argc, argv, 1);
}

int cmd_recv(int argc, char **argv)
{
	return run(argc, argv, 0);
}
