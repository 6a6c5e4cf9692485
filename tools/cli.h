/* SPDX-License-Identifier: MIT */
/* tools/cli.h - shared helpers of the kvmig command's subcommands. */
#ifndef KVMIG_CLI_H
#define KVMIG_CLI_H

#include <jansson.h>
#include <stdio.h>

#include <kvmig/kvmig.h>

/* Exit codes (documented in kvmig(1) and README.md). */
enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,     /* the operation failed; stderr says why */
	EXIT_USAGE = 2,    /* bad command line */
	EXIT_CORRUPT = 3,  /* data did not verify: digest mismatch, corrupt or truncated blob */
	EXIT_MISMATCH = 4, /* pager meta or layout differs from the manifest / peer */
	EXIT_NOSPACE = 5,  /* destination pager out of pages */
	EXIT_PEER = 6,     /* the peer refused, vanished, went silent, misbehaved or aborted */
	EXIT_INDOUBT = 7,  /* a migration's outcome is left to resolution (kvmig pager resolve) */
	EXIT_AUTH = 8,     /* the peer did not prove the shared secret (or only one side has one) */
};

/* The exit code for a library error. */
int cli_exit_code(int err);

/* Print "kvmig CMD: WHAT: DETAIL" on stderr and return the exit code for @err. */
int cli_fail(const char *cmd, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Print "kvmig CMD: MESSAGE (try kvmig CMD --help)" and return EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* getopt_long returned '?': name the argument it stopped at; EXIT_USAGE. */
int cli_bad_option(const char *cmd, char **argv);
/* Parse an unsigned decimal that must fit @max; 0 or -EINVAL. */
int cli_parse_u64(const char *s, uint64_t max, uint64_t *out);
/* Seconds on the monotonic clock. */
double cli_now(void);
/* Parse a number above 0 and at most @max; 0 or -EINVAL. */
int cli_parse_positive(const char *s, double max, double *out);
/* Print @o as one compact JSON line on stdout, flush, and release it. */
void cli_emit_json(json_t *o);

/* @s with every byte outside printable ASCII as '?', into @buf (a JSON
 * string must be UTF-8; names and messages may carry any byte). */
const char *cli_printable(const char *s, char *buf, size_t len);
/* Open a store directory (read-only unless @writable), printing an error;
 * 0 or the exit code. */
int cli_open_store(const char *cmd, const char *dir, int writable, struct kvmig_store **s);
/* Drop the digests @p keeps ahead (every page's entry back to generation 0). */
void cli_forget_digests(struct kvmig_pager *p);
/* Print a byte count as "1.00 GiB". */
void cli_fmt_bytes(uint64_t b, char *buf, size_t len);

int cmd_pager(int argc, char **argv);
int cmd_capture(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_store(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_send(int argc, char **argv);
int cmd_recv(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
