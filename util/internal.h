/* SPDX-License-Identifier: MIT */
/*
 * util/internal.h - helpers shared by the library's modules, never installed.
 */
#ifndef KVMIG_INTERNAL_H
#define KVMIG_INTERNAL_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define KVMIG_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define KVMIG_MIN(a, b) ((a) < (b) ? (a) : (b))
#define KVMIG_MAX(a, b) ((a) > (b) ? (a) : (b))

#define kvmig_container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/*
 * kvmig_err() - record a one-sentence message for kvmig_last_error() and
 * return @code (a negative errno) so callers can write
 * `return kvmig_err(-EINVAL, "...")`.
 */
int kvmig_err(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefix the existing last error with "@fmt: " (context from an outer layer); returns @code. */
int kvmig_err_prefix(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Keep the last error across calls that may record their own (a clean-up
 * after a failure must not replace the reason for it):
 *   struct kvmig_err_saved keep; kvmig_err_save(&keep); ...cleanup...;
 *   return kvmig_err_restore(&keep, code);
 */
struct kvmig_err_saved {
	char msg[1024];
};
void kvmig_err_save(struct kvmig_err_saved *k);
/* Put the saved message back; returns @code. */
int kvmig_err_restore(const struct kvmig_err_saved *k, int code);

/*
 * kvmig_fault() - test-only fault injection: 1 when $KVMIG_FAULT names
 * @point ("point" or "point:N", *arg = N when @arg). Compiled in only with
 * -Dfault_injection=true outside release builds; otherwise always 0.
 */
#ifdef KVMIG_FAULT_INJECTION
int kvmig_fault(const char *point, uint64_t *arg);
#else
static inline int kvmig_fault(const char *point, uint64_t *arg)
{
	(void)point;
	(void)arg;
	return 0;
}
#endif

/* -EIO "fault injected at @point" when $KVMIG_FAULT names it, else 0. */
#define KVMIG_FAULT_FAIL(point) \
	(kvmig_fault((point), NULL) ? kvmig_err(-EIO, "fault injected at %s", (point)) : 0)

/* qsort / bsearch order of uint32_t values. */
static inline int kvmig_cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* Seconds on the monotonic clock. */
static inline double kvmig_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Overflow-checked arithmetic; return 0 on success, -EOVERFLOW otherwise. */
static inline int kvmig_mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
	return __builtin_mul_overflow(a, b, out) ? -EOVERFLOW : 0;
}

static inline int kvmig_add_u64(uint64_t a, uint64_t b, uint64_t *out)
{
	return __builtin_add_overflow(a, b, out) ? -EOVERFLOW : 0;
}

/* SplitMix64: the synthetic pager's deterministic fill. */
static inline uint64_t kvmig_splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

#endif
