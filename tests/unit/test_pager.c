/* SPDX-License-Identifier: MIT */
/* tests/unit/test_pager.c - CacheMeta and the synthetic pager. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kvmig/cas.h>
#include <kvmig/migrate.h>

#include "pager/internal.h"
#include "util/internal.h"
#include "pager_helpers.h"

static struct kvmig_pager *make(enum kvmig_layout layout, uint64_t seed, uint32_t seqs,
				uint32_t per, uint32_t prefix, uint32_t cap)
{
	return synth_pager("tiny", layout, seed, seqs, per, prefix, cap);
}

/* Logical bytes of one half, concatenated over its extents. */
static void read_half(struct kvmig_pager *p, uint32_t ix, enum kvmig_half h, uint8_t *out)
{
	struct kvmig_extent ext[8];
	uint32_t n;

	assert_int_equal(kvmig_pager_extents(p, ix, h, ext, 8, &n), 0);
	for (uint32_t i = 0; i < n; i++) {
		memcpy(out, ext[i].addr, ext[i].len);
		out += ext[i].len;
	}
}

static void test_meta(void **state)
{
	struct kvmig_cache_meta m;
	uint64_t b;

	assert_int_equal(kvmig_meta_preset("llama3-8b", &m), 0);
	assert_int_equal(kvmig_meta_half_bytes(&m, &b), 0);
	assert_int_equal(b, 1u << 20); /* 1 MiB per K half */
	assert_int_equal(kvmig_dtype_size(KVMIG_DTYPE_FP8_E4M3), 1);
	assert_int_equal(kvmig_dtype_size(KVMIG_DTYPE_F32), 4);
	m.n_layers = 0;
	assert_int_equal(kvmig_meta_half_bytes(&m, &b), -EINVAL);
	assert_non_null(strstr(kvmig_last_error(), "n_layers"));
	m.n_layers = KVMIG_MAX_LAYERS + 1;
	assert_int_equal(kvmig_meta_half_bytes(&m, &b), -EINVAL);
	m.n_layers = 32;
	m.dtype = (enum kvmig_dtype)7;
	assert_int_equal(kvmig_meta_half_bytes(&m, &b), -EINVAL);
	/* The largest allowed meta still fits 64 bits: 1024*4096*1024*4096*4 = 2^46. */
	m = (struct kvmig_cache_meta){ KVMIG_MAX_PAGE_TOKENS, KVMIG_MAX_LAYERS, KVMIG_MAX_HEADS,
				       KVMIG_MAX_HEAD_DIM, KVMIG_DTYPE_F32 };
	assert_int_equal(kvmig_meta_half_bytes(&m, &b), 0);
	assert_true(b == (1ull << 46));
	enum kvmig_dtype dt;
	assert_int_equal(kvmig_dtype_parse("fp8_e4m3", &dt), 0);
	assert_int_equal(dt, KVMIG_DTYPE_FP8_E4M3);
	assert_int_equal(kvmig_dtype_parse("int4", &dt), -EINVAL);
}

static void test_arena_too_big(void **state)
{
	struct kvmig_synth_opts o;
	struct kvmig_pager *p = NULL;

	kvmig_synth_opts_init(&o);
	o.meta = (struct kvmig_cache_meta){ KVMIG_MAX_PAGE_TOKENS, KVMIG_MAX_LAYERS,
					    KVMIG_MAX_HEADS, KVMIG_MAX_HEAD_DIM, KVMIG_DTYPE_F32 };
	o.capacity_pages = KVMIG_MAX_PAGES; /* 2^46 * 2 * 2^24 overflows 64 bits */
	assert_int_equal(kvmig_synth_create(&o, &p), -EOVERFLOW);
	assert_null(p);
}

static void test_determinism_and_layouts(void **state)
{
	struct kvmig_pager *a = make(KVMIG_LAYOUT_PAGE_MAJOR, 7, 2, 3, 1, 8);
	struct kvmig_pager *b = make(KVMIG_LAYOUT_LAYER_MAJOR, 7, 2, 3, 1, 8);
	struct kvmig_pager *c = make(KVMIG_LAYOUT_PAGE_MAJOR, 8, 2, 3, 1, 8);
	uint8_t x[512], y[512], z[512];
	struct kvmig_extent ext[8];
	uint32_t n;

	/* Layer-major: a half is n_layers (2) extents, page-major: 1. */
	assert_int_equal(kvmig_pager_extents(b, 0, KVMIG_HALF_K, ext, 8, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(kvmig_pager_extents(b, 0, KVMIG_HALF_K, ext, 1, &n), -ENOBUFS);
	assert_int_equal(kvmig_pager_extents(a, 0, KVMIG_HALF_K, ext, 8, &n), 0);
	assert_int_equal(n, 1);
	for (uint32_t ix = 0; ix < 5; ix++) {
		for (int h = 0; h < 2; h++) {
			read_half(a, ix, (enum kvmig_half)h, x);
			read_half(b, ix, (enum kvmig_half)h, y);
			read_half(c, ix, (enum kvmig_half)h, z);
			/* same seed: same logical bytes whatever the layout */
			assert_memory_equal(x, y, sizeof(x));
			/* different seed: different bytes */
			assert_memory_not_equal(x, z, sizeof(x));
		}
	}
	/* K and V of one page differ, and pages differ from each other. */
	read_half(a, 0, KVMIG_HALF_K, x);
	read_half(a, 0, KVMIG_HALF_V, y);
	read_half(a, 1, KVMIG_HALF_K, z);
	assert_memory_not_equal(x, y, sizeof(x));
	assert_memory_not_equal(x, z, sizeof(x));
	kvmig_pager_destroy(&a);
	kvmig_pager_destroy(&b);
	kvmig_pager_destroy(&c);
	assert_null(a);
	kvmig_pager_destroy(&a); /* NULL-safe */
}

static void test_seqs_prefix_sharing(void **state)
{
	struct kvmig_pager *p = make(KVMIG_LAYOUT_PAGE_MAJOR, 1, 3, 4, 2, 16);
	struct kvmig_seq_list l = { 0 };
	uint32_t *ixs, n;

	assert_int_equal(kvmig_pager_occupied(p, &ixs, &n), 0);
	assert_int_equal(n, 2 + 3 * 2);
	free(ixs);
	assert_int_equal(kvmig_pager_seqs(p, &l), 0);
	assert_int_equal(l.n, 3);
	assert_string_equal(l.seqs[0].id, "seq-0");
	assert_string_equal(l.seqs[2].id, "seq-2");
	for (uint32_t i = 0; i < 3; i++) {
		assert_int_equal(l.seqs[i].n_pages, 4);
		assert_true(l.seqs[i].fill_in_last_page < 4);
		/* the prefix pages are the same physical pages */
		assert_int_equal(l.seqs[i].page_ixs[0], l.seqs[0].page_ixs[0]);
		assert_int_equal(l.seqs[i].page_ixs[1], l.seqs[0].page_ixs[1]);
	}
	assert_int_not_equal(l.seqs[1].page_ixs[2], l.seqs[0].page_ixs[2]);
	kvmig_seq_list_free(&l);
	kvmig_pager_destroy(&p);
}

static void test_allocate_install_remove_free(void **state)
{
	struct kvmig_pager *p = make(KVMIG_LAYOUT_PAGE_MAJOR, 1, 0, 4, 0, 4);
	struct kvmig_seq_list l = { 0 };
	uint32_t ixs[8], *occ, n;
	uint64_t g0, g1;

	assert_int_equal(kvmig_pager_allocate(p, 5, ixs), -ENOSPC);
	assert_int_equal(kvmig_pager_occupied(p, &occ, &n), 0);
	assert_int_equal(n, 0); /* all or nothing */
	free(occ);
	assert_int_equal(kvmig_pager_allocate(p, 3, ixs), 0);
	assert_int_equal(kvmig_pager_generation(p, ixs[0], &g0), 0);
	assert_int_equal(kvmig_pager_pause(p), 0);
	assert_int_equal(kvmig_synth_fill_page(p, ixs[0], 5, 5), -EAGAIN); /* paused */
	assert_int_equal(kvmig_pager_generation(p, ixs[0], &g1), 0);
	assert_true(g1 == g0);
	assert_int_equal(kvmig_pager_resume(p), 0);
	assert_int_equal(kvmig_synth_fill_page(p, ixs[0], 5, 5), 0);
	assert_int_equal(kvmig_pager_generation(p, ixs[0], &g1), 0);
	assert_true(g1 > g0);

	struct kvmig_seq s[2] = {
		{ .id = (char *)"a", .page_ixs = ixs, .n_pages = 2, .fill_in_last_page = 1 },
		{ .id = (char *)"b", .page_ixs = ixs, .n_pages = 3, .fill_in_last_page = 0 },
	};
	assert_int_equal(kvmig_pager_install(p, s, 2), 0);
	assert_int_equal(kvmig_pager_install(p, s, 1), -EEXIST);
	struct kvmig_seq bad = { .id = (char *)"c", .page_ixs = ixs, .n_pages = 1, .fill_in_last_page = 4 };
	assert_int_equal(kvmig_pager_install(p, &bad, 1), -EINVAL); /* fill == tokens */
	uint32_t notalloc = 3;
	struct kvmig_seq bad2 = { .id = (char *)"d", .page_ixs = &notalloc, .n_pages = 1, .fill_in_last_page = 0 };
	assert_int_equal(kvmig_pager_install(p, &bad2, 1), -EINVAL);
	/* a referenced page cannot be freed */
	assert_int_equal(kvmig_pager_free(p, ixs, 1), -EINVAL);
	const char *ids[] = { "a", "zz" };
	assert_int_equal(kvmig_pager_remove(p, ids, 2), -ENOENT);
	assert_int_equal(kvmig_pager_seqs(p, &l), 0);
	assert_int_equal(l.n, 2); /* all or nothing */
	kvmig_seq_list_free(&l);
	assert_int_equal(kvmig_pager_remove(p, ids, 1), 0);
	assert_int_equal(kvmig_pager_seqs(p, &l), 0);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.seqs[0].id, "b");
	assert_int_equal(l.seqs[0].n_pages, 3);
	assert_int_equal(l.seqs[0].page_ixs[2], ixs[2]);
	kvmig_seq_list_free(&l);
	const char *idb[] = { "b" };
	assert_int_equal(kvmig_pager_remove(p, idb, 1), 0);
	assert_int_equal(kvmig_pager_free(p, ixs, 3), 0);
	assert_int_equal(kvmig_pager_free(p, ixs, 1), -EINVAL); /* double free */
	kvmig_pager_destroy(&p);
}

static int fail_fn(struct kvmig_pager *p, void *arg)
{
	int *depth_seen = arg;
	struct kvmig_pager *q = p;

	(void)q;
	*depth_seen = 1;
	return -EIO;
}

static void test_pause_guard_resumes_on_failure(void **state)
{
	struct kvmig_pager *p = make(KVMIG_LAYOUT_PAGE_MAJOR, 1, 0, 4, 0, 4);
	int ran = 0;

	assert_int_equal(kvmig_pager_with_paused(p, fail_fn, &ran), -EIO);
	assert_int_equal(ran, 1);
	/* Resumed: one more resume has nothing to undo. */
	assert_int_equal(kvmig_pager_resume(p), -EINVAL);
	kvmig_pager_destroy(&p);
}

static void test_shm_attach_other_process(void **state)
{
	char name[64];
	struct kvmig_synth_opts o;
	struct kvmig_pager *p = NULL, *q = NULL;
	struct kvmig_seq_list l = { 0 };
	static uint8_t x[1u << 20], y[1u << 20]; /* 1 MiB halves: off the stack */
	int status;
	pid_t pid;

	snprintf(name, sizeof(name), "kvmig-test-%d", (int)getpid());
	kvmig_synth_opts_init(&o);
	o.shm_name = name;
	o.capacity_pages = 8;
	o.n_seqs = 2;
	o.pages_per_seq = 3;
	o.shared_prefix_pages = 1;
	assert_int_equal(kvmig_synth_create(&o, &p), 0);
	assert_int_equal(kvmig_synth_create(&o, &q), -EEXIST);
	/* A child process attaches and installs a sequence. */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct kvmig_pager *c = NULL;
		uint32_t ix;

		if (kvmig_pager_open(name, &c) == 0) /* no "shm:": must fail */
			_exit(10);
		char spec[80];
		snprintf(spec, sizeof(spec), "shm:%s", name);
		if (kvmig_pager_open(spec, &c) < 0 || kvmig_pager_allocate(c, 1, &ix) < 0)
			_exit(11);
		struct kvmig_seq s = { .id = (char *)"child", .page_ixs = &ix, .n_pages = 1, .fill_in_last_page = 0 };
		_exit(kvmig_pager_install(c, &s, 1) < 0 ? 12 : 0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(kvmig_pager_seqs(p, &l), 0);
	assert_int_equal(l.n, 3);
	assert_string_equal(l.seqs[0].id, "child");
	kvmig_seq_list_free(&l);
	/* Attaching sees the same bytes. */
	assert_int_equal(kvmig_synth_attach(name, &q), 0);
	read_half(p, 2, KVMIG_HALF_V, x);
	read_half(q, 2, KVMIG_HALF_V, y);
	assert_memory_equal(x, y, sizeof(x));
	kvmig_pager_destroy(&q);
	kvmig_pager_destroy(&p);
	assert_int_equal(kvmig_synth_unlink(name), 0);
	assert_int_equal(kvmig_synth_attach(name, &q), -ENOENT);
	assert_int_equal(kvmig_pager_open("file:/x", &q), -EINVAL);
}

/* A 4-page shm pager named kvmig-test-@what-PID into @name (64 bytes). */
static struct kvmig_pager *shm_pager(char *name, const char *what)
{
	struct kvmig_synth_opts o;
	struct kvmig_pager *p = NULL;

	snprintf(name, 64, "kvmig-test-%s-%d", what, (int)getpid());
	kvmig_synth_unlink(name);
	kvmig_synth_opts_init(&o);
	o.shm_name = name;
	o.capacity_pages = 4;
	assert_int_equal(kvmig_synth_create(&o, &p), 0);
	return p;
}

/* A process killed while it holds a pause (a SIGKILLed sender) does not
 * leave the pager paused: the next look drops its pauses. */
static void test_pause_of_dead_process_dropped(void **state)
{
	char name[64];
	struct kvmig_pager *p = shm_pager(name, "pause");
	uint32_t depth;
	int status;
	pid_t pid;

	assert_int_equal(kvmig_pager_pause(p), 0); /* ours stays */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct kvmig_pager *c = NULL;

		if (kvmig_synth_attach(name, &c) < 0 || kvmig_pager_pause(c) < 0 ||
		    kvmig_pager_pause(c) < 0)
			_exit(11);
		raise(SIGKILL);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(kvmig_synth_pause_depth(p, &depth), 0);
	assert_int_equal(depth, 1); /* the child's two are gone, ours is not */
	/* Only the process that paused can resume. */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(kvmig_pager_resume(p) == -EINVAL ? 0 : 12);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(kvmig_pager_resume(p), 0);
	assert_int_equal(kvmig_synth_pause_depth(p, &depth), 0);
	assert_int_equal(depth, 0);
	kvmig_pager_destroy(&p);
	assert_int_equal(kvmig_synth_unlink(name), 0);
}

/* Freeing after a remove: the candidates no sequence uses but the dropped
 * ones, each once. */
static void test_pages_unused(void **state)
{
	uint32_t a[] = { 2, 5 }, b[] = { 9, 100 }, c[] = { 1, 7 };
	struct kvmig_seq all[] = { { .id = (char *)"a", .page_ixs = a, .n_pages = 2 },
				   { .id = (char *)"b", .page_ixs = b, .n_pages = 2 },
				   { .id = (char *)"c", .page_ixs = c, .n_pages = 2 } };
	struct kvmig_seq_list l = { .seqs = all, .n = 3 };
	const char *drop[] = { "c", "zz" }, *drop_all[] = { "c", "b", "a" };
	uint32_t cand[] = { 5, 1, 1, 7, 2, 3, 9, 7 }, out[8], n = 99;

	(void)state;
	/* a and b stay (b's page 100 lies beyond every candidate). */
	assert_int_equal(kvmig_pages_unused(&l, drop, 2, cand, 8, out, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(out[0], 1);
	assert_int_equal(out[1], 7);
	assert_int_equal(out[2], 3);
	/* Nothing stays, in place. */
	assert_int_equal(kvmig_pages_unused(&l, drop_all, 3, cand, 8, cand, &n), 0);
	assert_int_equal(n, 6);
	assert_memory_equal(cand, ((uint32_t[]){ 5, 1, 7, 2, 3, 9 }), sizeof(uint32_t) * 6);
	/* No candidates; nothing dropped: every sequence's pages stay. */
	assert_int_equal(kvmig_pages_unused(&l, drop, 2, cand, 0, out, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(kvmig_pages_unused(&l, NULL, 0, cand, 6, out, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(out[0], 3);
}

/*
 * fork(), but the child gets pid @want (set through ns_last_pid, as CRIU
 * does; needs CAP_SYS_ADMIN): 0 in the child, which dies with this process,
 * its pid here, or -1 when that cannot be arranged.
 */
static pid_t fork_with_pid(pid_t want)
{
	for (int attempt = 0; attempt < 20; attempt++) {
		FILE *f = fopen("/proc/sys/kernel/ns_last_pid", "w");
		pid_t pid;

		if (!f)
			return -1;
		if (fprintf(f, "%d", (int)want - 1) < 0 || fclose(f) != 0)
			return -1;
		if ((pid = fork()) < 0)
			return -1;
		if (pid == 0) {
			if (getpid() != want)
				_exit(0); /* another process took it first */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			return 0;
		}
		if (pid == want)
			return pid;
		waitpid(pid, NULL, 0);
	}
	return -1;
}

/*
 * A process dies paused and the kernel gives its pid to a new process: the
 * dead one's pause is dropped, the new one cannot resume it, and its own
 * pause counts (a holder is its pid and its start time).
 */
static void test_pause_of_dead_process_pid_reused(void **state)
{
	char name[64], ready;
	struct kvmig_pager *p = shm_pager(name, "reuse");
	uint32_t depth;
	pid_t pid, reused;
	int status, fds[2];

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct kvmig_pager *c = NULL;

		if (kvmig_synth_attach(name, &c) < 0 || kvmig_pager_pause(c) < 0)
			_exit(11);
		raise(SIGKILL);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	/* Start times count clock ticks (10 ms): let one pass, as a pid's
	 * reuse by the kernel takes a wrap of the whole pid space. */
	usleep(50 * 1000);
	assert_int_equal(pipe(fds), 0);
	reused = fork_with_pid(pid);
	if (reused == 0) {
		struct kvmig_pager *c = NULL;

		close(fds[0]);
		if (kvmig_synth_attach(name, &c) < 0)
			_exit(12);
		if (kvmig_pager_resume(c) != -EINVAL)
			_exit(13); /* it took over the dead process's pause */
		if (kvmig_pager_pause(c) < 0)
			_exit(14);
		if (write(fds[1], "r", 1) != 1)
			_exit(15);
		pause();
		_exit(0);
	}
	close(fds[1]);
	if (reused < 0) {
		close(fds[0]);
		kvmig_pager_destroy(&p);
		kvmig_synth_unlink(name);
		skip(); /* ns_last_pid not writable here: not root */
	}
	if (read(fds[0], &ready, 1) != 1) {
		assert_int_equal(waitpid(reused, &status, 0), reused);
		fail_msg("the process with the reused pid exited with %d",
			 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	}
	close(fds[0]);
	assert_int_equal(kvmig_synth_pause_depth(p, &depth), 0);
	assert_int_equal(depth, 1); /* its own; the dead one's is gone */
	kill(reused, SIGKILL);
	assert_int_equal(waitpid(reused, NULL, 0), reused);
	assert_int_equal(kvmig_synth_pause_depth(p, &depth), 0);
	assert_int_equal(depth, 0);
	kvmig_pager_destroy(&p);
	kvmig_synth_unlink(name);
}

/* A child attaches to @name, runs @fn with $KVMIG_FAULT @fault, then exits
 * with what @fn returned (or dies where the fault says). */
static pid_t child(const char *name, const char *fault, int (*fn)(struct kvmig_pager *c))
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct kvmig_pager *c = NULL;

		if (fault)
			setenv("KVMIG_FAULT", fault, 1);
		if (kvmig_synth_attach(name, &c) < 0)
			_exit(100);
		_exit(fn(c) < 0 ? 101 : 0);
	}
	return pid;
}

static int take_a_pause(struct kvmig_pager *c)
{
	return kvmig_pager_pause(c);
}

/*
 * A holder stopped with the lock held (SIGSTOP, a debugger): a robust mutex
 * only covers a dead holder, so every operation waits a bounded time and
 * fails with EBUSY naming the holder. Once it dies, the lock is recovered.
 */
static void test_stopped_lock_holder(void **state)
{
	char name[64], pidtext[32];
	struct kvmig_pager *p = shm_pager(name, "stopped");
	struct kvmig_seq_list l = { 0 };
	uint32_t ix;
	double t0;
	int status;
	pid_t pid = child(name, "stop-synth-locked", take_a_pause);

	(void)state;
	assert_int_equal(waitpid(pid, &status, WUNTRACED), pid);
	assert_true(WIFSTOPPED(status));
	snprintf(pidtext, sizeof(pidtext), "process %d", (int)pid);
	t0 = kvmig_now();
	assert_int_equal(kvmig_pager_allocate(p, 1, &ix), -EBUSY);
	assert_non_null(strstr(kvmig_last_error(), pidtext));
	assert_non_null(strstr(kvmig_last_error(), "stopped or stuck"));
	assert_int_equal(kvmig_pager_seqs(p, &l), -EBUSY);
	assert_true(kvmig_now() - t0 < 10.0); /* two waits of SYNTH_LOCK_MS, not forever */
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(kvmig_pager_allocate(p, 1, &ix), 0); /* recovered */
	assert_int_equal(kvmig_pager_free(p, &ix, 1), 0);
	kvmig_pager_destroy(&p);
	kvmig_synth_unlink(name);
}

/* pager rm --force while the lock's holder is stopped: the pager is still
 * marked removed, so a migration into it (a handle still open) cannot
 * prepare, and the report says it could not be read. */
static void test_forced_remove_of_a_locked_pager(void **state)
{
	char name[64];
	struct kvmig_pager *p = shm_pager(name, "lockedrm");
	struct kvmig_synth_remove_report rep;
	struct kvmig_record d = { .role = KVMIG_ROLE_DEST, .state = KVMIG_REC_RECEIVING };
	int status;
	pid_t pid;

	(void)state;
	assert_int_equal(kvmig_pager_record_create(p, &d), 0);
	pid = child(name, "stop-synth-locked", take_a_pause);
	assert_int_equal(waitpid(pid, &status, WUNTRACED), pid);
	assert_int_equal(kvmig_synth_remove(name, 0, &rep), -EBUSY); /* not without --force */
	assert_int_equal(kvmig_synth_remove(name, 1, &rep), 0);
	assert_int_equal(rep.locked_by, (uint32_t)pid);
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(kvmig_pager_record_set(p, &d.id, KVMIG_REC_RECEIVING, KVMIG_REC_PREPARED),
			 -EIDRM);
	kvmig_pager_destroy(&p);
	assert_int_equal(kvmig_synth_attach(name, &p), -ENOENT);
}

static struct kvmig_id step_id;

static int activate_step(struct kvmig_pager *c)
{
	return kvmig_pager_record_set(c, &step_id, KVMIG_REC_PREPARED, KVMIG_REC_ACTIVATED);
}

/*
 * pager rm --force racing a destination's step: the holder stopped inside
 * the activation, the lock held, (a) after its check of the mark, before
 * storing the step: once it runs again it sees the mark after storing, takes
 * the step back and fails (EIDRM), so the migration does not commit there;
 * (b) after storing and checking: the remover, reading the records after
 * its mark, reports the migration that activated there.
 */
static void test_forced_remove_races_a_step(void **state)
{
	(void)state;
	for (int after = 0; after < 2; after++) {
		char name[64], fault[64];
		struct kvmig_pager *p = shm_pager(name, after ? "steprm1" : "steprm0");
		struct kvmig_synth_remove_report rep;
		struct kvmig_record d = { .role = KVMIG_ROLE_DEST, .state = KVMIG_REC_RECEIVING };
		struct kvmig_record *recs = NULL;
		uint32_t n = 0;
		int status;
		pid_t pid;

		assert_int_equal(kvmig_pager_record_create(p, &d), 0);
		assert_int_equal(kvmig_pager_record_set(p, &d.id, KVMIG_REC_RECEIVING,
							KVMIG_REC_PREPARED), 0);
		step_id = d.id;
		snprintf(fault, sizeof(fault), "%s:%d", after ? "stop-synth-stepped" :
			 "stop-synth-step", (int)KVMIG_REC_ACTIVATED);
		pid = child(name, fault, activate_step);
		assert_int_equal(waitpid(pid, &status, WUNTRACED), pid);
		assert_true(WIFSTOPPED(status));
		assert_int_equal(kvmig_synth_remove(name, 1, &rep), 0);
		assert_int_equal(rep.locked_by, (uint32_t)pid);
		assert_int_equal(rep.activated, after);
		if (after)
			assert_memory_equal(rep.activated_id.b, d.id.b, sizeof(d.id.b));
		kill(pid, SIGCONT);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), after ? 0 : 101); /* 101: EIDRM */
		/* This handle still maps it: the step was taken back, or stands. */
		assert_int_equal(kvmig_pager_records(p, &recs, &n), 0);
		assert_int_equal(n, 1);
		assert_int_equal(recs[0].state, after ? KVMIG_REC_ACTIVATED : KVMIG_REC_PREPARED);
		free(recs);
		kvmig_pager_destroy(&p);
		assert_int_equal(kvmig_synth_attach(name, &p), -ENOENT);
	}
}

static int allocate_two(struct kvmig_pager *c)
{
	uint32_t ix[2];
	struct kvmig_seq q = { .id = (char *)"kept", .page_ixs = ix, .n_pages = 1 };
	int ret = kvmig_pager_allocate(c, 2, ix);

	if (ret == 0)
		ret = kvmig_pager_install(c, &q, 1); /* ix[0] used, ix[1] not */
	if (ret == 0)
		raise(SIGKILL);
	return ret;
}

/*
 * Pages belong to the process that allocated them until a sequence uses
 * them: one that dies leaves nothing allocated that nothing uses. The next
 * attach (or gc) reclaims it.
 */
static void test_dead_process_pages_reclaimed(void **state)
{
	char name[64];
	struct kvmig_pager *p = shm_pager(name, "reclaim"), *q = NULL;
	struct kvmig_gc_stats st;
	int status;
	pid_t pid = child(name, NULL, allocate_two);

	(void)state;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(n_occupied(p), 2);
	assert_int_equal(kvmig_pager_gc(p, &st), 0);
	assert_int_equal(st.pages, 1);
	assert_int_equal(n_occupied(p), 1); /* the page "kept" uses */
	assert_int_equal(n_seqs(p), 1);
	/* Another one, reclaimed by an attach. */
	const char *ids[] = { "kept" };
	assert_int_equal(kvmig_pager_remove(p, ids, 1), 0);
	pid = child(name, NULL, allocate_two);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(n_occupied(p), 3);
	assert_int_equal(kvmig_synth_attach(name, &q), 0);
	assert_int_equal(n_occupied(p), 2); /* "kept" again, and the page we removed it from */
	kvmig_pager_destroy(&q);
	kvmig_pager_destroy(&p);
	kvmig_synth_unlink(name);
}

static int install_three(struct kvmig_pager *c)
{
	uint32_t ix[3];
	struct kvmig_seq q[3] = {
		{ .id = (char *)"a", .page_ixs = ix, .n_pages = 1 },
		{ .id = (char *)"b", .page_ixs = ix + 1, .n_pages = 1 },
		{ .id = (char *)"c", .page_ixs = ix + 2, .n_pages = 1 },
	};
	int ret = kvmig_pager_allocate(c, 3, ix);

	return ret < 0 ? ret : kvmig_pager_install(c, q, 3);
}

static int remove_two(struct kvmig_pager *c)
{
	const char *ids[] = { "a", "c" };

	return kvmig_pager_remove(c, ids, 2);
}

/*
 * A process killed inside an install or a remove, with the lock held and
 * half the slots written: the next lock recovers, and the operation is
 * all or nothing.
 */
static void test_death_inside_an_operation(void **state)
{
	char name[64];
	struct kvmig_pager *p = shm_pager(name, "inside");
	int status;
	pid_t pid;

	(void)state;
	uint64_t g0, g1;

	assert_int_equal(kvmig_pager_generation(p, 3, &g0), 0); /* a page the child never touches */
	pid = child(name, "die-synth-install", install_three);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	assert_int_equal(n_seqs(p), 0); /* none of the three */
	/* The lock came back from a dead holder: every generation moved (it
	 * may have been writing a page), so no kept digest outlives that. */
	assert_int_equal(kvmig_pager_generation(p, 3, &g1), 0);
	assert_true(g1 > g0);
	assert_int_equal(n_occupied(p), 0); /* and the dead child's pages are gone */
	pid = child(name, NULL, install_three);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(n_seqs(p), 3);
	pid = child(name, "die-synth-remove", remove_two);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(n_seqs(p), 3); /* neither removed */
	assert_int_equal(n_occupied(p), 3);
	pid = child(name, NULL, remove_two);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(n_seqs(p), 1);
	assert_int_equal(kvmig_pager_gc(p, NULL), 0); /* the remover died before freeing */
	assert_int_equal(n_occupied(p), 1);
	kvmig_pager_destroy(&p);
	kvmig_synth_unlink(name);
}

static struct kvmig_record rec_of(uint8_t tag, enum kvmig_record_role role)
{
	struct kvmig_record r = { .role = role, .move = 1 };

	r.id.b[0] = tag;
	r.peer_pager.b[0] = 0xee;
	r.state = role == KVMIG_ROLE_SOURCE ? KVMIG_REC_SENDING : KVMIG_REC_RECEIVING;
	return r;
}

static enum kvmig_seq_state state_of(struct kvmig_pager *p, const char *id)
{
	struct kvmig_seq_list l = { 0 };
	enum kvmig_seq_state st = (enum kvmig_seq_state)-1;

	assert_int_equal(kvmig_pager_seqs(p, &l), 0);
	for (uint32_t i = 0; i < l.n; i++)
		if (!strcmp(l.seqs[i].id, id))
			st = l.seqs[i].state;
	kvmig_seq_list_free(&l);
	return st;
}

/* Migration records: each state's meaning for the sequences, the legal
 * steps only, applying an outcome. */
static void test_records(void **state)
{
	struct kvmig_pager *p = make(KVMIG_LAYOUT_PAGE_MAJOR, 1, 2, 2, 0, 16);
	struct kvmig_record s = rec_of(1, KVMIG_ROLE_SOURCE), d = rec_of(2, KVMIG_ROLE_DEST), bad;
	const char *ids[] = { "seq-0" };
	uint32_t ix[2];
	struct kvmig_seq q = { .id = (char *)"new", .page_ixs = ix, .n_pages = 2 };

	(void)state;
	assert_int_equal(kvmig_pager_record_create(p, &s), 0);
	assert_int_equal(kvmig_pager_record_create(p, &s), -EEXIST);
	bad = rec_of(3, KVMIG_ROLE_SOURCE);
	bad.state = KVMIG_REC_DEPARTED;
	assert_int_equal(kvmig_pager_record_create(p, &bad), -EINVAL);
	/* Tagged while SENDING: still runnable. DEPARTED: not. */
	assert_int_equal(kvmig_pager_record_tag(p, &s.id, ids, 1), 0);
	assert_int_equal(kvmig_pager_record_tag(p, &s.id, ids, 1), -EBUSY);
	assert_int_equal(state_of(p, "seq-0"), KVMIG_SEQ_ACTIVE);
	assert_int_equal(kvmig_pager_record_set(p, &s.id, KVMIG_REC_SENDING, KVMIG_REC_ACTIVATED),
			 -EINVAL); /* not a step of the protocol */
	assert_int_equal(kvmig_pager_record_set(p, &s.id, KVMIG_REC_RECEIVING, KVMIG_REC_PREPARED),
			 -ESTALE); /* legal, but it is not RECEIVING */
	assert_int_equal(kvmig_pager_record_set(p, &s.id, KVMIG_REC_SENDING, KVMIG_REC_DEPARTED), 0);
	assert_int_equal(state_of(p, "seq-0"), KVMIG_SEQ_DEPARTED);
	assert_int_equal(kvmig_synth_decode(p, "seq-0", 1, NULL), -ENOENT); /* not runnable */
	assert_int_equal(kvmig_pager_remove(p, ids, 1), -EBUSY);
	/* A destination's pending sequences. */
	assert_int_equal(kvmig_pager_record_create(p, &d), 0);
	assert_int_equal(kvmig_pager_allocate(p, 2, ix), 0);
	assert_int_equal(kvmig_pager_record_install(p, &d.id, &q, 1), 0);
	assert_int_equal(state_of(p, "new"), KVMIG_SEQ_PENDING);
	assert_int_equal(kvmig_pager_record_set(p, &d.id, KVMIG_REC_RECEIVING, KVMIG_REC_PREPARED), 0);
	assert_int_equal(kvmig_pager_record_end(p, &d.id, KVMIG_REC_PREPARED, 1), -EINVAL); /* not activated */
	assert_int_equal(kvmig_pager_record_end(p, &d.id, KVMIG_REC_RECEIVING, 0), -ESTALE);
	assert_int_equal(kvmig_pager_record_set(p, &d.id, KVMIG_REC_PREPARED, KVMIG_REC_ACTIVATED), 0);
	assert_int_equal(state_of(p, "new"), KVMIG_SEQ_ACTIVE);
	assert_int_equal(kvmig_pager_record_end(p, &d.id, KVMIG_REC_ACTIVATED, 0), -EINVAL); /* it runs: no abort */
	assert_int_equal(kvmig_pager_record_end(p, &d.id, KVMIG_REC_ACTIVATED, 1), 0);
	/* The source's commit removes seq-0 and frees its two pages. */
	assert_int_equal(n_occupied(p), 6);
	assert_int_equal(kvmig_pager_record_end(p, &s.id, KVMIG_REC_DEPARTED, 1), 0);
	assert_int_equal(n_occupied(p), 4);
	assert_int_equal(state_of(p, "seq-0"), (enum kvmig_seq_state)-1);
	/* Aborts: a source's sequences run again, a destination's are gone. */
	s = rec_of(4, KVMIG_ROLE_SOURCE);
	const char *one[] = { "seq-1" };
	assert_int_equal(kvmig_pager_record_create(p, &s), 0);
	assert_int_equal(kvmig_pager_record_tag(p, &s.id, one, 1), 0);
	assert_int_equal(kvmig_pager_record_set(p, &s.id, KVMIG_REC_SENDING, KVMIG_REC_DEPARTED), 0);
	assert_int_equal(kvmig_pager_record_end(p, &s.id, KVMIG_REC_DEPARTED, 0), 0);
	assert_int_equal(state_of(p, "seq-1"), KVMIG_SEQ_ACTIVE);
	d = rec_of(5, KVMIG_ROLE_DEST);
	q.id = (char *)"gone";
	assert_int_equal(kvmig_pager_record_create(p, &d), 0);
	assert_int_equal(kvmig_pager_allocate(p, 2, ix), 0);
	assert_int_equal(kvmig_pager_record_install(p, &d.id, &q, 1), 0);
	assert_int_equal(kvmig_pager_record_end(p, &d.id, KVMIG_REC_RECEIVING, 0), 0);
	assert_int_equal(state_of(p, "gone"), (enum kvmig_seq_state)-1);
	assert_int_equal(n_occupied(p), 4); /* its pages went with it */
	/* The reserved prefix. */
	q.id = (char *)"?held";
	assert_int_equal(kvmig_pager_allocate(p, 2, ix), 0);
	assert_int_equal(kvmig_pager_install(p, &q, 1), -EINVAL);
	assert_non_null(strstr(kvmig_last_error(), "reserves"));
	kvmig_pager_destroy(&p);
}

static int hold_records(struct kvmig_pager *c)
{
	struct kvmig_record s = rec_of(7, KVMIG_ROLE_SOURCE), d = rec_of(8, KVMIG_ROLE_DEST),
			    e = rec_of(9, KVMIG_ROLE_DEST);

	if (kvmig_pager_record_create(c, &s) || kvmig_pager_record_create(c, &d) ||
	    kvmig_pager_record_create(c, &e) ||
	    kvmig_pager_record_set(c, &e.id, KVMIG_REC_RECEIVING, KVMIG_REC_PREPARED))
		return -1;
	raise(SIGKILL);
	return 0;
}

/* A dead process's undecided records are aborted; a prepared one stays,
 * driven by nobody, for resolution. */
static void test_records_of_a_dead_process(void **state)
{
	char name[64];
	struct kvmig_pager *p = shm_pager(name, "deadrec");
	struct kvmig_record *r = NULL;
	struct kvmig_gc_stats st;
	uint32_t n = 0;
	int status;
	pid_t pid = child(name, NULL, hold_records);

	(void)state;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(kvmig_pager_gc(p, &st), 0);
	assert_int_equal(st.aborted, 2);
	assert_int_equal(st.in_doubt, 1);
	assert_int_equal(kvmig_pager_records(p, &r, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(r[0].state, KVMIG_REC_PREPARED);
	assert_int_equal(r[0].owner_pid, 0);
	free(r);
	kvmig_pager_destroy(&p);
	kvmig_synth_unlink(name);
}

static int ready_fd = -1;

static int sleep_attached(struct kvmig_pager *c)
{
	(void)!write(ready_fd, "r", 1); /* attached */
	pause();
	return 0;
}

/* pager rm refuses a pager that is paused, in use or holds records;
 * --force removes it and a migration into it then cannot prepare. */
static void test_remove_refuses(void **state)
{
	char name[64];
	struct kvmig_pager *p = shm_pager(name, "rm");
	struct kvmig_synth_remove_report rep;
	struct kvmig_record d = rec_of(1, KVMIG_ROLE_DEST);
	int status;
	pid_t pid;

	(void)state;
	assert_int_equal(kvmig_pager_pause(p), 0);
	kvmig_pager_destroy(&p);
	/* Paused by a live process (this one: it still holds the pause). */
	assert_int_equal(kvmig_synth_remove(name, 0, &rep), -EBUSY);
	assert_non_null(strstr(kvmig_last_error(), "paused by process"));
	assert_int_equal(kvmig_synth_attach(name, &p), 0);
	assert_int_equal(kvmig_pager_resume(p), 0);
	kvmig_pager_destroy(&p);
	/* Attached by another live process. */
	int fds[2];
	char c;

	assert_int_equal(pipe(fds), 0);
	ready_fd = fds[1];
	pid = child(name, NULL, sleep_attached);
	close(fds[1]);
	assert_int_equal(read(fds[0], &c, 1), 1);
	close(fds[0]);
	assert_int_equal(kvmig_synth_remove(name, 0, &rep), -EBUSY);
	assert_int_equal(rep.attached_by, (uint32_t)pid);
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	/* A record. */
	assert_int_equal(kvmig_synth_attach(name, &p), 0);
	assert_int_equal(kvmig_pager_record_create(p, &d), 0);
	assert_int_equal(kvmig_synth_remove(name, 0, &rep), -EBUSY);
	assert_int_equal(rep.records, 1);
	assert_non_null(strstr(kvmig_last_error(), "migration record"));
	/* Forced: gone, and the receiver still attached cannot prepare. */
	assert_int_equal(kvmig_synth_remove(name, 1, &rep), 0);
	assert_int_equal(kvmig_pager_record_set(p, &d.id, KVMIG_REC_RECEIVING, KVMIG_REC_PREPARED),
			 -EIDRM);
	kvmig_pager_destroy(&p);
	assert_int_equal(kvmig_synth_attach(name, &p), -ENOENT);
}

/*
 * Every one of the 64 holder entries is taken by a process that then died,
 * one of them mid-migration (a RECEIVING record with a pending sequence).
 * The next process to attach has no entry of its own: reclaiming must not
 * need one (it once recursed until the stack ran out, with the lock held,
 * and every later attach crashed the same way).
 */
static void test_gc_with_every_holder_dead(void **state)
{
	char name[64];
	struct kvmig_pager *p = NULL;
	struct kvmig_synth_opts o;
	struct kvmig_gc_stats st;
	pid_t pids[64];
	int fds[2], status;

	(void)state;
	snprintf(name, sizeof(name), "kvmig-test-full-%d", (int)getpid());
	kvmig_synth_unlink(name);
	assert_int_equal(pipe(fds), 0);
	for (int i = 0; i < 64; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			struct kvmig_pager *c = NULL;
			struct kvmig_record d = rec_of(1, KVMIG_ROLE_DEST);
			uint32_t ix[2];
			struct kvmig_seq q = { .id = (char *)"pending", .page_ixs = ix, .n_pages = 2 };

			close(fds[0]);
			if (i == 0) { /* the first makes the pager: no parent entry */
				kvmig_synth_opts_init(&o);
				o.shm_name = name;
				o.capacity_pages = 8;
				kvmig_meta_preset("tiny", &o.meta);
				if (kvmig_synth_create(&o, &c) < 0 ||
				    kvmig_pager_record_create(c, &d) < 0 ||
				    kvmig_pager_allocate(c, 2, ix) < 0 ||
				    kvmig_pager_record_install(c, &d.id, &q, 1) < 0)
					_exit(1);
			} else {
				for (int t = 0; t < 500 && kvmig_synth_attach(name, &c) < 0; t++)
					usleep(2000);
				if (!c)
					_exit(2);
			}
			(void)!write(fds[1], "r", 1);
			pause();
			_exit(0);
		}
		if (i == 0) { /* the pager exists before the others attach */
			char c;

			assert_int_equal(read(fds[0], &c, 1), 1);
		}
	}
	close(fds[1]);
	for (int i = 1; i < 64; i++) {
		char c;

		assert_int_equal(read(fds[0], &c, 1), 1);
	}
	close(fds[0]);
	for (int i = 0; i < 64; i++) {
		kill(pids[i], SIGKILL);
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
	}
	assert_int_equal(kvmig_synth_attach(name, &p), 0);
	assert_int_equal(kvmig_pager_gc(p, &st), 0);
	assert_int_equal(n_seqs(p), 0);      /* the pending sequence is gone */
	assert_int_equal(n_occupied(p), 0);  /* and its pages */
	kvmig_pager_destroy(&p);
	assert_int_equal(kvmig_synth_attach(name, &p), 0); /* and again */
	kvmig_pager_destroy(&p);
	kvmig_synth_unlink(name);
}

/*
 * A migration whose process lives on (an engine embedding kvmig) and
 * returned in doubt: its record is disowned, and a resolver acts on
 * prepared or decided records beside a live process anyway (each step only
 * from the state it read).
 */
static void test_resolve_beside_a_live_owner(void **state)
{
	struct kvmig_pager *a = make(KVMIG_LAYOUT_PAGE_MAJOR, 1, 1, 2, 0, 8);
	struct kvmig_pager *b = make(KVMIG_LAYOUT_PAGE_MAJOR, 1, 0, 2, 0, 8);
	struct kvmig_record s = rec_of(3, KVMIG_ROLE_SOURCE), d = rec_of(3, KVMIG_ROLE_DEST);
	struct kvmig_resolve_stats rs;
	struct kvmig_record *r = NULL;
	const char *ids[] = { "seq-0" };
	uint32_t ix[2], n;
	struct kvmig_seq q = { .id = (char *)"seq-0", .page_ixs = ix, .n_pages = 2 };

	(void)state;
	assert_int_equal(kvmig_pager_identity(b, &s.peer_pager), 0);
	assert_int_equal(kvmig_pager_identity(a, &d.peer_pager), 0);
	assert_int_equal(kvmig_pager_record_create(a, &s), 0);
	assert_int_equal(kvmig_pager_record_create(b, &d), 0);
	assert_int_equal(kvmig_pager_allocate(b, 2, ix), 0);
	assert_int_equal(kvmig_pager_record_install(b, &d.id, &q, 1), 0);
	assert_int_equal(kvmig_pager_record_set(b, &d.id, KVMIG_REC_RECEIVING, KVMIG_REC_PREPARED), 0);
	assert_int_equal(kvmig_pager_record_tag(a, &s.id, ids, 1), 0);
	assert_int_equal(kvmig_pager_record_set(a, &s.id, KVMIG_REC_SENDING, KVMIG_REC_DEPARTED), 0);
	/* The receiving side gave up in doubt: it disowns its record. */
	assert_int_equal(kvmig_pager_record_disown(b, &d.id), 0);
	assert_int_equal(kvmig_pager_records(b, &r, &n), 0);
	assert_int_equal(r[0].owner_pid, 0);
	free(r);
	/* The source's record is still this live process's: resolved anyway. */
	assert_int_equal(kvmig_migrate_resolve_pair(a, b, &rs), 0);
	assert_int_equal(rs.activated, 1);
	assert_int_equal(rs.finished, 2);
	assert_int_equal(rs.in_doubt, 0);
	assert_int_equal(state_of(b, "seq-0"), KVMIG_SEQ_ACTIVE);
	assert_int_equal(state_of(a, "seq-0"), (enum kvmig_seq_state)-1);
	assert_int_equal(n_occupied(a), 0);
	kvmig_pager_destroy(&a);
	kvmig_pager_destroy(&b);
}

/*
 * The synthetic pager keeps digests per page with their generation; a page
 * freed and allocated again has moved on, so an entry from before it does
 * not match; out of range is EINVAL; a pager without the ops says ENOTSUP.
 */
static void test_digest_entries(void **state)
{
	struct kvmig_pager *p = make(KVMIG_LAYOUT_PAGE_MAJOR, 1, 0, 4, 0, 4);
	struct kvmig_page_digest d = { .gen = 0 }, got;
	uint32_t ix, ix2;
	uint64_t g;

	(void)state;
	assert_int_equal(kvmig_pager_allocate(p, 1, &ix), 0);
	assert_int_equal(kvmig_pager_digest_get(p, ix, &got), 0);
	assert_true(got.gen == 0); /* none yet */
	assert_int_equal(kvmig_pager_generation(p, ix, &g), 0);
	d.gen = g;
	memset(d.k, 0xab, sizeof(d.k));
	memset(d.v, 0xcd, sizeof(d.v));
	assert_int_equal(kvmig_pager_digest_put(p, ix, &d), 0);
	assert_int_equal(kvmig_pager_digest_get(p, ix, &got), 0);
	assert_memory_equal(&got, &d, sizeof(d));
	assert_int_equal(kvmig_pager_free(p, &ix, 1), 0);
	assert_int_equal(kvmig_pager_allocate(p, 1, &ix2), 0);
	assert_int_equal(ix2, ix); /* the same page, handed out again */
	assert_int_equal(kvmig_pager_generation(p, ix2, &g), 0);
	assert_int_equal(kvmig_pager_digest_get(p, ix2, &got), 0);
	assert_true(got.gen != g);
	assert_int_equal(kvmig_pager_digest_get(p, 4, &got), -EINVAL);
	assert_int_equal(kvmig_pager_digest_put(p, 4, &d), -EINVAL);
	/* Installing moves the pages' generations: a digest kept while a
	 * receiver (or a restore) was filling them cannot match them. */
	assert_int_equal(kvmig_pager_generation(p, ix2, &g), 0);
	d.gen = g;
	assert_int_equal(kvmig_pager_digest_put(p, ix2, &d), 0);
	struct kvmig_seq q = { .id = (char *)"q", .page_ixs = &ix2, .n_pages = 1 };

	assert_int_equal(kvmig_pager_install(p, &q, 1), 0);
	assert_int_equal(kvmig_pager_generation(p, ix2, &g), 0);
	assert_true(d.gen != g);
	kvmig_pager_destroy(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_meta),
		cmocka_unit_test(test_pages_unused),
		cmocka_unit_test(test_arena_too_big),
		cmocka_unit_test(test_determinism_and_layouts),
		cmocka_unit_test(test_seqs_prefix_sharing),
		cmocka_unit_test(test_allocate_install_remove_free),
		cmocka_unit_test(test_pause_guard_resumes_on_failure),
		cmocka_unit_test(test_shm_attach_other_process),
		cmocka_unit_test(test_pause_of_dead_process_dropped),
		cmocka_unit_test(test_pause_of_dead_process_pid_reused),
		cmocka_unit_test(test_stopped_lock_holder),
		cmocka_unit_test(test_forced_remove_of_a_locked_pager),
		cmocka_unit_test(test_forced_remove_races_a_step),
		cmocka_unit_test(test_dead_process_pages_reclaimed),
		cmocka_unit_test(test_death_inside_an_operation),
		cmocka_unit_test(test_records),
		cmocka_unit_test(test_records_of_a_dead_process),
		cmocka_unit_test(test_remove_refuses),
		cmocka_unit_test(test_gc_with_every_holder_dead),
		cmocka_unit_test(test_resolve_beside_a_live_owner),
		cmocka_unit_test(test_digest_entries),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
