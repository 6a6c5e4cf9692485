/* SPDX-License-Identifier: MIT */
/* tests/unit/test_store.c - memory and filesystem blob stores. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <kvmig/cas.h>

struct fixture {
	struct kvmig_store *s;
	char dir[64]; /* empty for the memory store */
};

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
	assert_int_equal(kvmig_store_fs_open(f->dir, &o, &f->s), 0);
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
	assert_int_equal(kvmig_store_fs_open(f->dir, NULL, &f->s), 0);
	assert_int_equal(kvmig_store_has(f->s, &d), 1);
	/* Replace tmp/ by a file: a put must fail cleanly, nothing under objects/. */
	snprintf(cmd, sizeof(cmd), "rm -rf %s/tmp && touch %s/tmp", f->dir, f->dir);
	assert_int_equal(system(cmd), 0);
	kvmig_store_close(&f->s);
	assert_int_not_equal(kvmig_store_fs_open(f->dir, NULL, &f->s), 0);
	assert_null(f->s);
	snprintf(cmd, sizeof(cmd), "rm -f %s/tmp && mkdir %s/tmp", f->dir, f->dir);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(kvmig_store_fs_open(f->dir, NULL, &f->s), 0);
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
