/* SPDX-License-Identifier: MIT */
/* tools/bench.h - what kvmig bench (cmd_bench.c) and kvmig bench --live
 * (cmd_bench_live.c) share. */
#ifndef KVMIG_BENCH_H
#define KVMIG_BENCH_H

#include <kvmig/kvmig.h>

/* Median of @n values (sorts @v). */
double bench_median(double *v, int n);

/*
 * What migration @r of kvmig bench is. Each round is four migrations: an
 * untimed, verified warm-up (after the previous round's iperf3 runs, whose
 * after-effects would otherwise land on a timed one), then three timed ones
 * in an order that rotates from round to round: verified with the digests
 * kept ahead (the sender hashes nothing), verified with none kept (the
 * sender hashes every page during the migration), and unverified.
 */
enum bench_kind { BENCH_WARMUP, BENCH_AHEAD, BENCH_HASHED, BENCH_OFF };
#define BENCH_PER_ROUND 4
enum bench_kind bench_kind(int r);
/* Whether migration @r verifies (every kind but BENCH_OFF). */
int bench_verifies(int r);

/* Run this process (all its threads to come) on CPU @cpu only. */
void bench_pin_to(int cpu);

/*
 * The receiving process: listen on @addr, write the bound address (80
 * bytes) to @out_fd, then accept @migrations migrations into one pager of
 * @pages pages, emptying it after each (remove every sequence, free every
 * page), verifying as bench_verifies() says when @alternate_verify (else
 * always); after each migration write its CPU use (a struct of two doubles:
 * user and system seconds) to @out_fd, and at the end its peak RSS in KiB
 * (a long). Returns an exit code.
 */
int bench_receiver(const char *addr, const struct kvmig_migrate_opts *lo, uint32_t pages,
		   int migrations, int alternate_verify, int out_fd);

/* kvmig bench --live (argv as given to kvmig bench). */
int bench_live(int argc, char **argv);

#endif
