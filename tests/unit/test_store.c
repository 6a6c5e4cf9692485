/* SPDX-License-Identifier: MIT */
/* tests/unit/test_store.c - memory and filesystem blob stores. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kvmig/cas.h>

#include "cas/store_internal.h"

struct fixture {
	struct kvmig_store *s;
	char dir[64]; /* empty for the memory store */
};

/* Run the filesystem cases once through io_uring, once synchronously. */
static int sync_io;

static int open_fs(const char *dir, const struct kvmig_store_fs_opts *opts,
		   struct kvmig_store **ret)
{
	struct kvmig_store_fs_opts o;
	int err;

	if (opts)
		o = *opts;
	else
		kvmig_store_fs_opts_init(&o);
	o.sync_io = sync_io;
	if ((err = kvmig_store_fs_open(dir, &o, ret)) == 0 && sync_io)
		assert_string_equal(kvmig_store_fs_io(*ret), "synchronous");
	return err;
}

static int setup_mem(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_int_equal(kvmig_store_mem_create(&f->s), 0);
	*state = f;
	return 0;
}

static int setup_fs(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct kvmig_store_fs_opts o;

	strcpy(f->dir, "/tmp/kvmig-store-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	kvmig_store_fs_opts_init(&o);
	o.queue_depth = 8; /* forces many io_uring windows */
	assert_int_equal(open_fs(f->dir, &o, &f->s), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	kvmig_store_close(&f->s);
	if (f->dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
		assert_int_equal(system(cmd), 0);
	}
	free(f);
	return 0;
}

static void blob(uint8_t *buf, size_t len, unsigned seed, struct kvmig_digest *d)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(i * 31 + seed * 7 + (i >> 8));
	kvmig_digest_compute(buf, len, d);
}

static void test_round_trip_dedup(void **state)
{
	struct fixture *f = *state;
	uint8_t a[5000], out[5000];
	struct kvmig_digest d;
	uint64_t bytes, count;

	blob(a, sizeof(a), 1, &d);
	assert_int_equal(kvmig_store_has(f->s, &d), 0);
	assert_int_equal(kvmig_store_put(f->s, &d, a, sizeof(a)), 1);
	assert_int_equal(kvmig_store_put(f->s, &d, a, sizeof(a)), 0); /* dedup */
	assert_int_equal(kvmig_store_has(f->s, &d), 1);
	assert_int_equal(kvmig_store_physical_bytes(f->s, &bytes), 0);
	assert_int_equal(kvmig_store_blob_count(f->s, &count), 0);
	assert_int_equal(bytes, sizeof(a));
	assert_int_equal(count, 1);

	/* Read back into three segments. */
	struct iovec iov[3] = { { out, 1000 }, { out + 1000, 1 }, { out + 1001, 3999 } };
	struct kvmig_blob_io io = { .digest = d, .iov = iov, .iovcnt = 3 };
	memset(out, 0, sizeof(out));
	assert_int_equal(kvmig_store_get_batch(f->s, &io, 1), 0);
	assert_memory_equal(a, out, sizeof(a));

	/* Wrong expected size. */
	iov[2].iov_len = 3998;
	assert_int_equal(kvmig_store_get_batch(f->s, &io, 1), -EMSGSIZE);

	void *p;
	size_t len;
	assert_int_equal(kvmig_store_get_alloc(f->s, &d, &p, &len), 0);
	assert_int_equal(len, sizeof(a));
	assert_memory_equal(p, a, len);
	free(p);
}

static void test_absent(void **state)
{
	struct fixture *f = *state;
	struct kvmig_digest d;
	char hex[33];
	void *p;
	size_t len;
	uint8_t b[10];

	blob(b, sizeof(b), 99, &d);
	kvmig_digest_hex(&d, hex);
	assert_int_equal(kvmig_store_get_alloc(f->s, &d, &p, &len), -ENOENT);
	assert_non_null(strstr(kvmig_last_error(), hex));
}

/* @n blobs of 1 byte to 200 KiB; their total size. */
static uint64_t many_blobs(struct kvmig_blob_io *ios, struct iovec *iov, uint8_t **bufs, int n)
{
	uint64_t total = 0;

	for (int i = 0; i < n; i++) {
		size_t len = 1 + (size_t)i * 683 % (200 * 1024);

		bufs[i] = malloc(len);
		blob(bufs[i], len, (unsigned)i, &ios[i].digest);
		iov[i] = (struct iovec){ bufs[i], len };
		ios[i].iov = &iov[i];
		ios[i].iovcnt = 1;
		total += len;
	}
	return total;
}

static void test_many_blobs(void **state)
{
	struct fixture *f = *state;
	enum { N = 300 };
	struct kvmig_blob_io ios[N];
	struct iovec iov[N];
	uint8_t *bufs[N];
	uint64_t total = many_blobs(ios, iov, bufs, N), bytes;

	assert_int_equal(kvmig_store_put_batch(f->s, ios, N), N);
	assert_int_equal(kvmig_store_physical_bytes(f->s, &bytes), 0);
	assert_int_equal(bytes, total);
	for (int i = 0; i < N; i++)
		memset(bufs[i], 0, iov[i].iov_len);
	assert_int_equal(kvmig_store_get_batch(f->s, ios, N), 0);
	for (int i = 0; i < N; i++) {
		struct kvmig_digest d;

		kvmig_digest_compute(bufs[i], iov[i].iov_len, &d);
		assert_true(kvmig_digest_equal(&d, &ios[i].digest));
		assert_int_equal(ios[i].result, 0);
		free(bufs[i]);
	}
}

static void on_alarm(int sig)
{
	(void)sig;
}

/* A signal handler that interrupts the waits (a linked engine's timers,
 * a stop and continue): every blob still goes in and comes back. */
static void test_many_blobs_interrupted(void **state)
{
	struct fixture *f = *state;
	struct sigaction sa = { .sa_handler = on_alarm }, old;
	struct itimerval it = { { 0, 100 }, { 0, 100 } }, off = { 0 };
	enum { N = 300 };
	struct kvmig_blob_io ios[N];
	struct iovec iov[N];
	uint8_t *bufs[N];
	int put, get, bad = -1;

	many_blobs(ios, iov, bufs, N);
	sigemptyset(&sa.sa_mask); /* no SA_RESTART: waits return EINTR */
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
	put = kvmig_store_put_batch(f->s, ios, N);
	for (int i = 0; i < N && bad < 0; i++)
		if (ios[i].result < 0)
			bad = i;
	char why[512];
	int bad_res = bad >= 0 ? ios[bad].result : 0;

	snprintf(why, sizeof(why), "%s", kvmig_last_error());
	for (int i = 0; i < N; i++)
		memset(bufs[i], 0, iov[i].iov_len);
	get = kvmig_store_get_batch(f->s, ios, N);
	/* Timer off before any assert: a failed one returns from here. */
	setitimer(ITIMER_REAL, &off, NULL);
	sigaction(SIGALRM, &old, NULL);
	if (bad >= 0)
		fail_msg("put: blob %d: %d (%s): %s", bad, bad_res, strerror(-bad_res), why);
	assert_int_equal(put, N);
	assert_int_equal(get, 0);
	for (int i = 0; i < N; i++) {
		struct kvmig_digest d;

		kvmig_digest_compute(bufs[i], iov[i].iov_len, &d);
		assert_true(kvmig_digest_equal(&d, &ios[i].digest));
		free(bufs[i]);
	}
}

/* A writer killed mid-put left temp files behind, named as this process
 * would once have named its own (a container's kvmig runs as the same pid
 * every time): puts still succeed. */
static void test_fs_leftover_tmp(void **state)
{
	struct fixture *f = *state;
	uint8_t buf[1000];
	struct iovec iov = { buf, sizeof(buf) };
	struct kvmig_blob_io io = { .iov = &iov, .iovcnt = 1 };
	char path[256];

	for (int i = 0; i < 8; i++) {
		snprintf(path, sizeof(path), "%s/tmp/%d.%d", f->dir, (int)getpid(), i);
		FILE *leftover = fopen(path, "w");

		assert_non_null(leftover);
		fclose(leftover);
	}
	for (unsigned i = 0; i < 8; i++) {
		blob(buf, sizeof(buf), 900 + i, &io.digest);
		assert_int_equal(kvmig_store_put_batch(f->s, &io, 1), 1);
		assert_int_equal(io.result, 0);
	}
}

static void blob_path(struct fixture *f, const struct kvmig_digest *d, char *path, size_t len);

/* A blob file of the wrong size where a blob belongs (a crash before its
 * data reached the disk): the next put writes it again. */
static void test_fs_short_blob_rewritten(void **state)
{
	struct fixture *f = *state;
	uint8_t buf[5000];
	struct iovec iov = { buf, sizeof(buf) };
	struct kvmig_blob_io io = { .iov = &iov, .iovcnt = 1 };
	char path[256];
	struct stat st;

	blob(buf, sizeof(buf), 77, &io.digest);
	assert_int_equal(kvmig_store_put_batch(f->s, &io, 1), 1);
	blob_path(f, &io.digest, path, sizeof(path));
	assert_int_equal(truncate(path, 0), 0);
	assert_int_equal(kvmig_store_put_batch(f->s, &io, 1), 1);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, sizeof(buf));
	memset(buf, 0, sizeof(buf));
	assert_int_equal(kvmig_store_get_batch(f->s, &io, 1), 0);
}

static void blob_path(struct fixture *f, const struct kvmig_digest *d, char *path, size_t len)
{
	char hex[33];

	kvmig_digest_hex(d, hex);
	snprintf(path, len, "%s/objects/%.2s/%s", f->dir, hex, hex + 2);
}

/* Read @path whole into a malloc'd buffer; its length into *len. */
static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	uint8_t *buf;
	long n;

	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	rewind(fp);
	buf = malloc(n ? (size_t)n : 1);
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	*len = (size_t)n;
	return buf;
}

/* The file at @path is a regular file holding exactly @len bytes of @want. */
static void assert_file_is(const char *path, const void *want, size_t len)
{
	struct stat st;
	size_t n;
	uint8_t *got;

	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	got = slurp(path, &n);
	assert_int_equal(n, len);
	assert_memory_equal(got, want, len);
	free(got);
}

/* Flip one byte of the file at @path, at @off. */
static void flip_byte(const char *path, long off)
{
	FILE *fp = fopen(path, "r+b");
	int c;

	assert_non_null(fp);
	fseek(fp, off, SEEK_SET);
	c = fgetc(fp);
	fseek(fp, off, SEEK_SET);
	fputc(c ^ 0x5a, fp);
	fclose(fp);
}

/* A FIFO where a blob belongs: reads fail at once with -EIO naming the blob
 * and the file type (before this, the open blocked for ever); a put writes
 * the blob over it, even for an empty blob, whose size a FIFO's matches. A
 * directory in a blob's place is refused the same way. */
static void test_fs_fifo_blob(void **state)
{
	struct fixture *f = *state;
	uint8_t a[5000], out[5000];
	struct kvmig_digest d, empty;
	char path[256], hex[33];
	struct iovec iov = { out, sizeof(out) };
	struct kvmig_blob_io io = { .iov = &iov, .iovcnt = 1 };
	void *p;
	size_t len;

	alarm(20); /* a blocked open must fail the test, not hang it */
	blob(a, sizeof(a), 11, &d);
	kvmig_digest_hex(&d, hex);
	assert_int_equal(kvmig_store_put(f->s, &d, a, sizeof(a)), 1);
	blob_path(f, &d, path, sizeof(path));
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkfifo(path, 0644), 0);
	io.digest = d;
	assert_int_equal(kvmig_store_get_batch(f->s, &io, 1), -EIO);
	assert_non_null(strstr(kvmig_last_error(), "is a FIFO, not a regular file"));
	assert_non_null(strstr(kvmig_last_error(), hex));
	assert_int_equal(io.result, -EIO);
	assert_int_equal(kvmig_store_get_alloc(f->s, &d, &p, &len), -EIO);
	assert_non_null(strstr(kvmig_last_error(), "FIFO"));
	assert_int_equal(kvmig_store_has(f->s, &d), -EIO);
	/* The dedup check does not take the FIFO for the blob. */
	assert_int_equal(kvmig_store_put(f->s, &d, a, sizeof(a)), 1);
	assert_file_is(path, a, sizeof(a));
	assert_int_equal(kvmig_store_get_batch(f->s, &io, 1), 0);
	assert_memory_equal(out, a, sizeof(a));

	/* An empty blob: a FIFO has its size (0). */
	kvmig_digest_compute("", 0, &empty);
	assert_int_equal(kvmig_store_put(f->s, &empty, "", 0), 1);
	blob_path(f, &empty, path, sizeof(path));
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkfifo(path, 0644), 0);
	assert_int_equal(kvmig_store_get_alloc(f->s, &empty, &p, &len), -EIO);
	assert_int_equal(kvmig_store_put(f->s, &empty, "", 0), 1);
	assert_file_is(path, "", 0);

	/* A symbolic link to a FIFO elsewhere. */
	char elsewhere[300];

	blob_path(f, &d, path, sizeof(path));
	snprintf(elsewhere, sizeof(elsewhere), "%s/fifo", f->dir);
	assert_int_equal(mkfifo(elsewhere, 0644), 0);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(symlink(elsewhere, path), 0);
	assert_int_equal(kvmig_store_get_batch(f->s, &io, 1), -EIO);
	assert_non_null(strstr(kvmig_last_error(), "is a FIFO, not a regular file"));
	/* A directory. */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkdir(path, 0755), 0);
	assert_int_equal(kvmig_store_get_batch(f->s, &io, 1), -EIO);
	assert_non_null(strstr(kvmig_last_error(), "is a directory, not a regular file"));
	alarm(0);
}

/* A blob corrupted in place, same size: the next put of it compares sampled
 * pieces, finds the difference and rewrites it (before this it was kept:
 * "0 written"). Corruption at the start, at the end, all through the middle
 * of a 1 MiB blob; a small blob compared whole; an intact one still dedups. */
static void corrupt_in_place(struct fixture *f)
{
	enum { N = 5 };
	static const size_t lens[N] = { 100, 1 << 20, 1 << 20, 1 << 20, 9000 };
	uint8_t *bufs[N];
	struct iovec iov[N];
	struct kvmig_blob_io ios[N];
	char path[256];

	for (int i = 0; i < N; i++) {
		bufs[i] = malloc(lens[i]);
		blob(bufs[i], lens[i], 20 + (unsigned)i, &ios[i].digest);
		iov[i] = (struct iovec){ bufs[i], lens[i] };
		ios[i].iov = &iov[i];
		ios[i].iovcnt = 1;
	}
	assert_int_equal(kvmig_store_put_batch(f->s, ios, N), N);
	blob_path(f, &ios[0].digest, path, sizeof(path));
	flip_byte(path, 50);
	blob_path(f, &ios[1].digest, path, sizeof(path));
	flip_byte(path, 7);
	blob_path(f, &ios[2].digest, path, sizeof(path));
	flip_byte(path, (1 << 20) - 1);
	blob_path(f, &ios[3].digest, path, sizeof(path));
	{
		/* Every byte between the first and the last 4 KiB: any middle sample sees it. */
		FILE *fp = fopen(path, "r+b");
		uint8_t *zero = calloc(1, (1 << 20) - 8192);

		assert_non_null(fp);
		fseek(fp, 4096, SEEK_SET);
		assert_int_equal(fwrite(zero, 1, (1 << 20) - 8192, fp), (1 << 20) - 8192);
		fclose(fp);
		free(zero);
	}
	/* Blob 4 intact: deduplicated. */
	assert_int_equal(kvmig_store_put_batch(f->s, ios, N), N - 1);
	for (int i = 0; i < N; i++) {
		assert_int_equal(ios[i].result, 0);
		blob_path(f, &ios[i].digest, path, sizeof(path));
		assert_file_is(path, bufs[i], lens[i]);
	}
	assert_int_equal(kvmig_store_put_batch(f->s, ios, N), 0);
	for (int i = 0; i < N; i++)
		free(bufs[i]);
}

static void test_fs_corrupt_in_place_rewritten(void **state)
{
	corrupt_in_place(*state);
}

/* The same with every sample read through the ring (fault point
 * store-sample-ring), as when the store is not in the page cache. */
static void test_fs_corrupt_in_place_rewritten_ring(void **state)
{
#ifndef KVMIG_FAULT_INJECTION
	skip();
#endif
	setenv("KVMIG_FAULT", "store-sample-ring", 1);
	corrupt_in_place(*state);
	unsetenv("KVMIG_FAULT");
}

struct seen {
	int n;
	enum kvmig_store_issue_kind kind[16];
	char path[16][128];
	int removed[16];
};

static int collect(const struct kvmig_store_issue *is, void *arg)
{
	struct seen *s = arg;

	assert_true(s->n < 16);
	assert_non_null(is->message);
	assert_true(is->message[0] != '\0');
	s->kind[s->n] = is->kind;
	snprintf(s->path[s->n], sizeof(s->path[0]), "%s", is->path);
	s->removed[s->n] = is->removed;
	s->n++;
	return 0;
}

/* Whether @s holds an issue of @kind at a path ending with @path. */
static int has_issue(const struct seen *s, enum kvmig_store_issue_kind kind, const char *path)
{
	for (int i = 0; i < s->n; i++) {
		size_t a = strlen(s->path[i]), b = strlen(path);

		if (s->kind[i] == kind && a >= b && !strcmp(s->path[i] + a - b, path))
			return 1;
	}
	return 0;
}

/* kvmig_store_check(): a good store is all good; then a corrupt, a truncated
 * and a FIFO blob, a misnamed file, a temp file and an unexpected one are
 * each named; --repair removes the three bad blobs. */
static void test_fs_check(void **state)
{
	struct fixture *f = *state;
	enum { N = 6 };
	struct kvmig_store_check_stats st;
	struct kvmig_store *ro = NULL, *mem = NULL;
	struct kvmig_store_fs_opts o;
	struct kvmig_blob_io ios[N];
	struct iovec iov[N];
	uint8_t *bufs[N];
	char p0[256], p1[256], p2[256], path[300];
	struct seen seen = { 0 };
	uint64_t total = many_blobs(ios, iov, bufs, N);

	alarm(20);
	assert_int_equal(kvmig_store_put_batch(f->s, ios, N), N);
	assert_int_equal(kvmig_store_check(f->s, 0, collect, &seen, &st), 0);
	assert_int_equal(seen.n, 0);
	assert_int_equal(st.blobs, N);
	assert_int_equal(st.bad, 0);
	assert_int_equal(st.bytes, total);

	blob_path(f, &ios[1].digest, p0, sizeof(p0));
	blob_path(f, &ios[2].digest, p1, sizeof(p1));
	blob_path(f, &ios[3].digest, p2, sizeof(p2));
	flip_byte(p0, 0);
	assert_int_equal(truncate(p1, (off_t)iov[2].iov_len - 1), 0);
	assert_int_equal(unlink(p2), 0);
	assert_int_equal(mkfifo(p2, 0644), 0);
	snprintf(path, sizeof(path), "%s/objects/zz", f->dir);
	assert_int_equal(close(open(path, O_CREAT | O_WRONLY, 0644)), 0);
	snprintf(path, sizeof(path), "%s/tmp/not-ours", f->dir);
	assert_int_equal(close(open(path, O_CREAT | O_WRONLY, 0644)), 0);
	snprintf(path, sizeof(path), "%s/notes.txt", f->dir);
	assert_int_equal(close(open(path, O_CREAT | O_WRONLY, 0644)), 0);

	kvmig_store_fs_opts_init(&o);
	o.read_only = 1;
	assert_int_equal(open_fs(f->dir, &o, &ro), 0);
	assert_int_equal(kvmig_store_check(ro, 0, collect, &seen, &st), 0);
	assert_int_equal(st.blobs, N + 1);
	assert_int_equal(st.bad, 4);
	assert_int_equal(st.temp, 1);
	assert_int_equal(st.unexpected, 1);
	assert_int_equal(seen.n, 6);
	assert_true(has_issue(&seen, KVMIG_STORE_ISSUE_CORRUPT, p0 + strlen(f->dir) + 1));
	assert_true(has_issue(&seen, KVMIG_STORE_ISSUE_CORRUPT, p1 + strlen(f->dir) + 1));
	assert_true(has_issue(&seen, KVMIG_STORE_ISSUE_NOT_REGULAR, p2 + strlen(f->dir) + 1));
	assert_true(has_issue(&seen, KVMIG_STORE_ISSUE_BAD_NAME, "objects/zz"));
	assert_true(has_issue(&seen, KVMIG_STORE_ISSUE_TEMP, "tmp/not-ours"));
	assert_true(has_issue(&seen, KVMIG_STORE_ISSUE_UNEXPECTED, "notes.txt"));
	assert_string_equal(kvmig_store_issue_name(KVMIG_STORE_ISSUE_NOT_REGULAR), "not-regular");
	/* A read-only handle neither repairs nor writes. */
	assert_int_equal(kvmig_store_check(ro, KVMIG_STORE_CHECK_REPAIR, NULL, NULL, &st), -EROFS);
	assert_int_equal(kvmig_store_put(ro, &ios[0].digest, bufs[0], iov[0].iov_len), -EROFS);
	kvmig_store_close(&ro);

	seen.n = 0;
	assert_int_equal(kvmig_store_check(f->s, KVMIG_STORE_CHECK_REPAIR, collect, &seen, &st), 0);
	assert_int_equal(st.bad, 4);
	assert_int_equal(st.removed, 3);
	for (int i = 0; i < seen.n; i++)
		assert_int_equal(seen.removed[i], seen.kind[i] == KVMIG_STORE_ISSUE_CORRUPT ||
						  seen.kind[i] == KVMIG_STORE_ISSUE_NOT_REGULAR);
	assert_int_not_equal(access(p0, F_OK), 0);
	assert_int_not_equal(access(p2, F_OK), 0);
	/* Left: the misnamed file, which is not ours to remove. */
	assert_int_equal(kvmig_store_check(f->s, 0, NULL, NULL, &st), 0);
	assert_int_equal(st.bad, 1);
	assert_int_equal(st.blobs, N - 3 + 1);
	/* The next put writes the removed blobs again. */
	assert_int_equal(kvmig_store_put_batch(f->s, ios, N), 3);

	assert_int_equal(kvmig_store_mem_create(&mem), 0);
	assert_int_equal(kvmig_store_check(mem, 0, NULL, NULL, &st), -EOPNOTSUPP);
	kvmig_store_close(&mem);
	for (int i = 0; i < N; i++)
		free(bufs[i]);
	alarm(0);
}

/* Field 22 of /proc/self/stat, read independently of the library. */
static unsigned long long my_start_time(void)
{
	char buf[1024], *p;
	unsigned long long v = 0;
	FILE *fp = fopen("/proc/self/stat", "r");
	size_t n;

	assert_non_null(fp);
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	assert_non_null(p);
	for (int field = 2; field < 22; field++) {
		p = strchr(p + 1, ' ');
		assert_non_null(p);
	}
	assert_int_equal(sscanf(p + 1, "%llu", &v), 1);
	return v;
}

static void touch_tmp(const char *dir, const char *name)
{
	char path[300];

	snprintf(path, sizeof(path), "%s/tmp/%s", dir, name);
	assert_int_equal(close(open(path, O_CREAT | O_WRONLY, 0644)), 0);
}

static int tmp_exists(const char *dir, const char *name)
{
	char path[300];

	snprintf(path, sizeof(path), "%s/tmp/%s", dir, name);
	return access(path, F_OK) == 0;
}

/* Opening a store for writing removes the temp files of dead writers (a
 * child that exited; this pid with another start time: a predecessor in a
 * container) and keeps a live writer's (this process's), names of another
 * form, and everything when opened read-only. */
static void test_fs_dead_writer_tmp(void **state)
{
	struct fixture *f = *state;
	struct kvmig_store_fs_opts o;
	struct kvmig_store *ro = NULL;
	char dead[96], live[96], reused[96], old[96];
	int fds[2], status;
	pid_t child;

	assert_int_equal(pipe(fds), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		char name[96];

		snprintf(name, sizeof(name), "%d.%llu.0123456789abcdef.0", (int)getpid(),
			 my_start_time());
		touch_tmp(f->dir, name);
		(void)!write(fds[1], name, strlen(name) + 1);
		_exit(0);
	}
	close(fds[1]);
	assert_true(read(fds[0], dead, sizeof(dead)) > 0);
	close(fds[0]);
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	snprintf(live, sizeof(live), "%d.%llu.fedcba9876543210.3", (int)getpid(), my_start_time());
	snprintf(reused, sizeof(reused), "%d.%llu.fedcba9876543210.4", (int)getpid(),
		 my_start_time() + 1);
	snprintf(old, sizeof(old), "%d.0123456789abcdef.0", (int)child); /* the old form */
	touch_tmp(f->dir, live);
	touch_tmp(f->dir, reused);
	touch_tmp(f->dir, old);
	touch_tmp(f->dir, "junk");

	kvmig_store_fs_opts_init(&o);
	o.read_only = 1;
	assert_int_equal(open_fs(f->dir, &o, &ro), 0);
	kvmig_store_close(&ro);
	assert_true(tmp_exists(f->dir, dead));
	assert_true(tmp_exists(f->dir, reused));

	kvmig_store_close(&f->s);
	assert_int_equal(open_fs(f->dir, NULL, &f->s), 0);
	assert_false(tmp_exists(f->dir, dead));
	assert_false(tmp_exists(f->dir, reused));
	assert_true(tmp_exists(f->dir, live));
	assert_true(tmp_exists(f->dir, old));
	assert_true(tmp_exists(f->dir, "junk"));
}

/* Field 22 of /proc/PID/stat of a child, as the test reads it. */
static unsigned long long start_time_of(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long v = 0;
	FILE *fp;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fp = fopen(path, "r");
	assert_non_null(fp);
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	for (int field = 2; p && field < 22; field++)
		p = strchr(p + 1, ' ');
	assert_non_null(p);
	assert_int_equal(sscanf(p + 1, "%llu", &v), 1);
	return v;
}

/* The name of the one file in @dir/tmp into @name; 0 if there is none. */
static int one_tmp(const char *dir, char *name, size_t len)
{
	char cmd[300];
	FILE *fp;
	int got;

	snprintf(cmd, sizeof(cmd), "ls -A %s/tmp", dir);
	fp = popen(cmd, "r");
	assert_non_null(fp);
	got = fgets(name, (int)len, fp) != NULL;
	pclose(fp);
	if (got)
		name[strcspn(name, "\n")] = '\0';
	return got;
}

/* End to end: a writer stalled mid-put (fault point store-write-stall) has
 * a temp file named PID.START.SALT.N after itself; while it runs, another
 * writable open leaves the file alone; once it is killed, the next open
 * removes it. */
static void test_fs_killed_writer(void **state)
{
	struct fixture *f = *state;
	struct kvmig_store *other = NULL;
	char name[128], want[64];
	int status, i;
	pid_t child;

#ifndef KVMIG_FAULT_INJECTION
	skip();
#endif
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		struct kvmig_store *mine = NULL;
		uint8_t buf[1000];
		struct kvmig_digest d;

		/* Its own handle: one opened before the fork is named after the parent. */
		if (open_fs(f->dir, NULL, &mine) < 0)
			_exit(1);
		setenv("KVMIG_FAULT", "store-write-stall:30000", 1);
		blob(buf, sizeof(buf), 4242, &d);
		kvmig_store_put(mine, &d, buf, sizeof(buf));
		_exit(0);
	}
	for (i = 0; i < 1000 && !one_tmp(f->dir, name, sizeof(name)); i++)
		usleep(10000);
	assert_true(i < 1000);
	snprintf(want, sizeof(want), "%d.%llu.", (int)child, start_time_of(child));
	assert_memory_equal(name, want, strlen(want));
	assert_int_equal(open_fs(f->dir, NULL, &other), 0);
	kvmig_store_close(&other);
	assert_true(tmp_exists(f->dir, name)); /* a live writer's */
	assert_int_equal(kill(child, SIGKILL), 0);
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(tmp_exists(f->dir, name));
	assert_int_equal(open_fs(f->dir, NULL, &other), 0);
	kvmig_store_close(&other);
	assert_false(tmp_exists(f->dir, name));
}

static void test_fs_layout_and_xxhsum(void **state)
{
	struct fixture *f = *state;
	uint8_t a[70000];
	struct kvmig_digest d;
	char path[256], cmd[300], line[128], hex[33];
	FILE *fp;

	blob(a, sizeof(a), 3, &d);
	assert_int_equal(kvmig_store_put(f->s, &d, a, sizeof(a)), 1);
	blob_path(f, &d, path, sizeof(path));
	assert_int_equal(access(path, R_OK), 0);
	snprintf(cmd, sizeof(cmd), "ls -A %s/tmp | wc -l", f->dir);
	fp = popen(cmd, "r");
	assert_non_null(fgets(line, sizeof(line), fp));
	pclose(fp);
	assert_int_equal(atoi(line), 0); /* no temp file left behind */
	/* An independent checker agrees with our digest. */
	snprintf(cmd, sizeof(cmd), "xxhsum -H2 %s", path);
	fp = popen(cmd, "r");
	assert_non_null(fp);
	assert_non_null(fgets(line, sizeof(line), fp));
	assert_int_equal(pclose(fp), 0);
	kvmig_digest_hex(&d, hex);
	assert_memory_equal(line, hex, 32);
}

static void test_fs_corrupt_and_truncated(void **state)
{
	struct fixture *f = *state;
	uint8_t a[4096], out[4096];
	struct kvmig_digest d;
	char path[256];
	FILE *fp;
	void *p;
	size_t len;

	blob(a, sizeof(a), 4, &d);
	assert_int_equal(kvmig_store_put(f->s, &d, a, sizeof(a)), 1);
	blob_path(f, &d, path, sizeof(path));
	fp = fopen(path, "r+b");
	fseek(fp, 100, SEEK_SET);
	fputc(a[100] ^ 0x40, fp);
	fclose(fp);
	struct iovec iov = { out, sizeof(out) };
	struct kvmig_blob_io io = { .digest = d, .iov = &iov, .iovcnt = 1 };
	assert_int_equal(kvmig_store_get_batch(f->s, &io, 1), -EIO);
	assert_non_null(strstr(kvmig_last_error(), "corrupt"));
	assert_int_equal(io.result, -EIO);
	assert_int_equal(truncate(path, sizeof(a) - 1), 0);
	assert_int_equal(kvmig_store_get_batch(f->s, &io, 1), -EMSGSIZE);
	assert_non_null(strstr(kvmig_last_error(), "truncated"));
	/* get_alloc sizes from the file, so it sees the corruption instead. */
	assert_int_equal(kvmig_store_get_alloc(f->s, &d, &p, &len), -EIO);
}

static void test_fs_reopen_and_failed_put(void **state)
{
	struct fixture *f = *state;
	uint8_t a[1000];
	struct kvmig_digest d, e;
	uint64_t count;
	char path[256], cmd[200];

	blob(a, sizeof(a), 5, &d);
	assert_int_equal(kvmig_store_put(f->s, &d, a, sizeof(a)), 1);
	kvmig_store_close(&f->s);
	assert_int_equal(open_fs(f->dir, NULL, &f->s), 0);
	assert_int_equal(kvmig_store_has(f->s, &d), 1);
	/* Replace tmp/ by a file: a put must fail cleanly, nothing under objects/. */
	snprintf(cmd, sizeof(cmd), "rm -rf %s/tmp && touch %s/tmp", f->dir, f->dir);
	assert_int_equal(system(cmd), 0);
	kvmig_store_close(&f->s);
	assert_int_not_equal(open_fs(f->dir, NULL, &f->s), 0);
	assert_null(f->s);
	snprintf(cmd, sizeof(cmd), "rm -f %s/tmp && mkdir %s/tmp", f->dir, f->dir);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(open_fs(f->dir, NULL, &f->s), 0);
	/* Now break tmp/ under an open store. */
	snprintf(cmd, sizeof(cmd), "rm -rf %s/tmp", f->dir);
	assert_int_equal(system(cmd), 0);
	blob(a, sizeof(a), 6, &e);
	assert_int_equal(kvmig_store_put(f->s, &e, a, sizeof(a)), -ENOENT);
	assert_non_null(strstr(kvmig_last_error(), "cannot write blob"));
	blob_path(f, &e, path, sizeof(path));
	assert_int_not_equal(access(path, F_OK), 0);
	assert_int_equal(kvmig_store_blob_count(f->s, &count), 0);
	assert_int_equal(count, 1);
}

/* Known answers from xxhsum -H2 (printf '' | xxhsum -H2, printf abc | xxhsum -H2). */
static void test_digest_known_answers(void **state)
{
	struct kvmig_digest d, e;
	char text[KVMIG_DIGEST_STR_LEN + 1];
	struct iovec iov[2] = { { (void *)"a", 1 }, { (void *)"bc", 2 } };

	kvmig_digest_compute("", 0, &d);
	kvmig_digest_format(&d, text);
	assert_string_equal(text, "xxh128:99aa06d3014798d86001c324468d497f");
	kvmig_digest_compute("abc", 3, &d);
	kvmig_digest_format(&d, text);
	assert_string_equal(text, "xxh128:06b05ab6733a618578af5f94892f3950");
	kvmig_digest_computev(iov, 2, &e); /* streamed over segments: same digest */
	assert_true(kvmig_digest_equal(&d, &e));
	assert_int_equal(kvmig_digest_parse(text, &e), 0);
	assert_true(kvmig_digest_equal(&d, &e));
	assert_int_equal(kvmig_digest_parse("xxh128:06B05AB6733A618578AF5F94892F3950", &e), -EINVAL);
	assert_int_equal(kvmig_digest_parse("xxh128:06b05ab6733a618578af5f94892f395", &e), -EINVAL);
	assert_int_equal(kvmig_digest_parse("xxh64:06b05ab6733a618578af5f94892f3950", &e), -EINVAL);
	assert_int_equal(kvmig_digest_parse("xxh128:06b05ab6733a618578af5f94892f395g", &e), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_digest_known_answers),
		cmocka_unit_test_setup_teardown(test_round_trip_dedup, setup_mem, teardown),
		cmocka_unit_test_setup_teardown(test_round_trip_dedup, setup_fs, teardown),
		cmocka_unit_test_setup_teardown(test_absent, setup_mem, teardown),
		cmocka_unit_test_setup_teardown(test_absent, setup_fs, teardown),
		cmocka_unit_test_setup_teardown(test_many_blobs, setup_mem, teardown),
		cmocka_unit_test_setup_teardown(test_many_blobs, setup_fs, teardown),
		cmocka_unit_test_setup_teardown(test_many_blobs_interrupted, setup_fs, teardown),
		cmocka_unit_test_setup_teardown(test_fs_leftover_tmp, setup_fs, teardown),
		cmocka_unit_test_setup_teardown(test_fs_short_blob_rewritten, setup_fs, teardown),
		cmocka_unit_test_setup_teardown(test_fs_layout_and_xxhsum, setup_fs, teardown),
		cmocka_unit_test_setup_teardown(test_fs_corrupt_and_truncated, setup_fs, teardown),
		cmocka_unit_test_setup_teardown(test_fs_reopen_and_failed_put, setup_fs, teardown),
		cmocka_unit_test_setup_teardown(test_fs_fifo_blob, setup_fs, teardown),
		cmocka_unit_test_setup_teardown(test_fs_corrupt_in_place_rewritten, setup_fs, teardown),
		cmocka_unit_test_setup_teardown(test_fs_corrupt_in_place_rewritten_ring, setup_fs,
						teardown),
		cmocka_unit_test_setup_teardown(test_fs_check, setup_fs, teardown),
		cmocka_unit_test_setup_teardown(test_fs_dead_writer_tmp, setup_fs, teardown),
		cmocka_unit_test_setup_teardown(test_fs_killed_writer, setup_fs, teardown),
	};

	int failed = cmocka_run_group_tests_name("stores", tests, NULL, NULL);

	/* The filesystem cases again, every request run synchronously (a build
	 * without liburing, or a kernel that refuses io_uring). */
	sync_io = 1;
	failed += cmocka_run_group_tests_name("stores, synchronous I/O", tests, NULL, NULL);
	return failed;
}
