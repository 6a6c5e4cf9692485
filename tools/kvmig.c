/* SPDX-License-Identifier: MIT */
/*
 * tools/kvmig.c - the kvmig command: dispatch to subcommands and the helpers
 * they share. Library errors arrive as -errno plus kvmig_last_error(); this
 * is the one place they become sentences on stderr and exit codes.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"

static const char usage_text[] =
	"usage: kvmig <command> [options]\n"
	"\n"
	"Move, capture and restore the paged KV cache of an inference engine.\n"
	"\n"
	"commands:\n"
	"  demo       migrate a synthetic pager to another process over loopback TCP\n"
	"  send       migrate a pager's pages and sequences to a receiver\n"
	"  recv       receive one migration into a pager\n"
	"  bench      migration throughput over loopback tcp against iperf3\n"
	"  pager      init | show | status | resolve | gc | rm | run: shared-memory\n"
	"             synthetic pagers and their migration records\n"
	"  capture    write a pager's pages and sequences into a content-addressed store\n"
	"  restore    install a captured manifest into a pager\n"
	"  verify     check a pager's sequences against a manifest\n"
	"  inspect    summarize a manifest\n"
	"  store      check a store: re-hash every blob, list what is wrong\n"
	"\n"
	"Run 'kvmig <command> --help' for a command's options; see kvmig(1).\n";

int cli_fail(const char *cmd, int err, const char *fmt, ...)
{
	const char *detail = kvmig_last_error();
	va_list ap;

	fprintf(stderr, "kvmig %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, ": %s\n", detail[0] ? detail : strerror(-err));
	return cli_exit_code(err);
}

int cli_exit_code(int err)
{
	switch (err) {
	case -EIO:
	case -EMSGSIZE:
		return EXIT_CORRUPT;
	case -EPROTO:
		return EXIT_MISMATCH;
	case -ENOSPC:
		return EXIT_NOSPACE;
	case -ETIMEDOUT:
	case -ECONNRESET:
	case -ECONNREFUSED:
	case -ECONNABORTED:
	case -EHOSTUNREACH:
	case -ENODEV: /* the RDMA device went away */
	case -ENETUNREACH:
	case -EPIPE:
	case -EFAULT:
	case -EBADMSG: /* a malformed or out-of-order message: a peer that is not kvmig */
		return EXIT_PEER;
	case -ENOTCONN: /* a migration's outcome is left to resolution */
		return EXIT_INDOUBT;
	case -EKEYREJECTED: /* the shared secret: only the engine's handshake says it */
		return EXIT_AUTH;
	default:
		return EXIT_FAIL;
	}
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "kvmig %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (try 'kvmig %s --help')\n", cmd);
	return EXIT_USAGE;
}

double cli_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int cli_parse_positive(const char *s, double max, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v > 0) || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

void cli_emit_json(json_t *o)
{
	char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

	/* One line per event, always: a scheduler waits for it. */
	puts(s ? s : "{\"event\":\"error\",\"message\":\"kvmig could not encode this line "
		 "as JSON\"}");
	fflush(stdout);
	free(s);
	json_decref(o);
}

const char *cli_printable(const char *s, char *buf, size_t len)
{
	size_t i = 0;

	for (; s[i] && i + 1 < len; i++)
		buf[i] = s[i] >= 0x20 && s[i] <= 0x7e ? s[i] : '?';
	buf[i] = '\0';
	return buf;
}

int cli_bad_option(const char *cmd, char **argv)
{
	/* opterr is 0 (main): this is the one line about it. */
	return cli_usage_error(cmd, "unknown option or missing value at \"%s\"",
			       optind > 0 ? argv[optind - 1] : "?");
}

int cli_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int cli_open_store(const char *cmd, const char *dir, int writable, struct kvmig_store **s)
{
	struct kvmig_store_fs_opts o;
	char objects[4096];
	struct stat st;
	int ret;

	/* Only capture makes a store: a mistyped DIR elsewhere is an error,
	 * not a new empty store. Reading commands create and remove nothing
	 * (not even a dead writer's temp files). */
	snprintf(objects, sizeof(objects), "%s/objects", dir);
	if (strcmp(cmd, "capture") && stat(objects, &st) < 0)
		return cli_fail(cmd, -ENOENT, "no store at %s (no %s)", dir, objects);
	kvmig_store_fs_opts_init(&o);
	o.read_only = !writable;
	ret = kvmig_store_fs_open(dir, &o, s);

	if (ret < 0)
		return cli_fail(cmd, ret, "cannot open store %s", dir);
	return 0;
}

void cli_forget_digests(struct kvmig_pager *p)
{
	static const struct kvmig_page_digest none;
	uint32_t cap = 0;

	if (kvmig_pager_capacity(p, &cap) == 0)
		for (uint32_t ix = 0; ix < cap; ix++)
			(void)kvmig_pager_digest_put(p, ix, &none);
}

void cli_fmt_bytes(uint64_t b, char *buf, size_t len)
{
	static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)b;
	unsigned u = 0;

	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)b);
	else
		snprintf(buf, len, "%.2f %s", v, units[u]);
}

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} commands[] = {
	{ "demo", cmd_demo },       { "pager", cmd_pager },   { "capture", cmd_capture },
	{ "restore", cmd_restore }, { "verify", cmd_verify }, { "inspect", cmd_inspect },
	{ "send", cmd_send },       { "recv", cmd_recv },     { "store", cmd_store },
	{ "bench", cmd_bench },
};

int main(int argc, char **argv)
{
	opterr = 0; /* getopt's own messages would make errors two lines */
	if (argc < 2) {
		fputs(usage_text, stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(usage_text, stdout);
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("kvmig %s\n%s\n", KVMIG_VERSION_STRING, kvmig_build_info());
		return EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "kvmig: unknown command \"%s\" (try 'kvmig --help')\n", argv[1]);
	return EXIT_USAGE;
}
