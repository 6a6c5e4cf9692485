/* SPDX-License-Identifier: MIT */
/*
 * tests/integration/harness.h - what the two-process migration tests share
 * (test_migrate.c, test_crash.c): a source and a destination shared-memory
 * pager, children that send or receive with fault points of their own, and
 * looks into both pagers. Include after <cmocka.h>; each test program gets
 * its own copy of the state below. The transport comes from
 * $KVMIG_TEST_TRANSPORT (tcp, or rdma with $KVMIG_TEST_LISTEN=ADDR:0).
 */
#ifndef KVMIG_TESTS_HARNESS_H
#define KVMIG_TESTS_HARNESS_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kvmig/kvmig.h>

#include "pager_helpers.h"

#define HARNESS_STATE static __attribute__((unused))
HARNESS_STATE char src_name[64], dst_name[64];
HARNESS_STATE enum kvmig_transport xport = KVMIG_TRANSPORT_TCP;
HARNESS_STATE const char *listen_addr = "127.0.0.1:0";
HARNESS_STATE struct kvmig_pager *src, *dst;
HARNESS_STATE uint32_t src_capacity = 64;

/* 4 layers x 4 heads x 64 dim x 16 tokens bf16: 32 KiB per half. */
static inline void small_meta(struct kvmig_cache_meta *m)
{
	*m = (struct kvmig_cache_meta){ 16, 4, 4, 64, KVMIG_DTYPE_BF16 };
}

static inline void make_pagers(enum kvmig_layout layout, uint32_t dst_capacity, int dst_other_meta)
{
	struct kvmig_synth_opts o;

	kvmig_synth_unlink(src_name);
	kvmig_synth_unlink(dst_name);
	kvmig_clear_error();
	kvmig_synth_opts_init(&o);
	small_meta(&o.meta);
	o.layout = layout;
	o.capacity_pages = src_capacity;
	o.n_seqs = 4;
	o.pages_per_seq = 6;
	o.shared_prefix_pages = 2; /* 2 + 4 x 4 = 18 pages */
	o.shm_name = src_name;
	assert_int_equal(kvmig_synth_create(&o, &src), 0);
	o.n_seqs = 0;
	o.capacity_pages = dst_capacity;
	o.seed = 77;
	o.shm_name = dst_name;
	if (dst_other_meta)
		o.meta.n_layers = 8;
	assert_int_equal(kvmig_synth_create(&o, &dst), 0);
	/* Busy destination pages, so indices must be remapped. */
	uint32_t busy[3];
	assert_int_equal(kvmig_pager_allocate(dst, 3, busy), 0);
}

/* The children attach by name: swap the names (and handles) so that a
 * migration runs from the destination's pager to the source's. */
static inline void swap_pagers(void)
{
	char name[64];
	struct kvmig_pager *p = src;

	memcpy(name, src_name, sizeof(name));
	memcpy(src_name, dst_name, sizeof(name));
	memcpy(dst_name, name, sizeof(name));
	src = dst;
	dst = p;
}

static inline void drop_pagers(void)
{
	kvmig_pager_destroy(&src);
	kvmig_pager_destroy(&dst);
	kvmig_synth_unlink(src_name);
	kvmig_synth_unlink(dst_name);
}

static inline struct kvmig_manifest *snapshot(struct kvmig_pager *p)
{
	struct kvmig_manifest *m = NULL;

	assert_int_equal(kvmig_pager_pause(p), 0);
	assert_int_equal(kvmig_manifest_build(p, &m), 0);
	assert_int_equal(kvmig_pager_resume(p), 0);
	return m;
}

static inline void digest_of(struct kvmig_pager *p, struct kvmig_digest *d)
{
	struct kvmig_manifest *m = snapshot(p);
	char *json;
	size_t len;

	assert_int_equal(kvmig_manifest_serialize(m, &json, &len), 0);
	kvmig_digest_compute(json, len, d);
	free(json);
	kvmig_manifest_free(&m);
}

static inline uint32_t pause_depth(struct kvmig_pager *p)
{
	uint32_t d = 99;

	assert_int_equal(kvmig_synth_pause_depth(p, &d), 0);
	return d;
}

/* Sequences of @p the engine may run. */
static inline uint32_t n_active(struct kvmig_pager *p)
{
	struct kvmig_seq_list l = { 0 };
	uint32_t n = 0;

	assert_int_equal(kvmig_pager_seqs(p, &l), 0);
	for (uint32_t i = 0; i < l.n; i++)
		n += l.seqs[i].state == KVMIG_SEQ_ACTIVE;
	kvmig_seq_list_free(&l);
	return n;
}

static inline uint32_t n_records(struct kvmig_pager *p)
{
	struct kvmig_record *r = NULL;
	uint32_t n = 0;

	assert_int_equal(kvmig_pager_records(p, &r, &n), 0);
	free(r);
	return n;
}

/* The state of @p's only migration record. */
static inline enum kvmig_record_state record_state(struct kvmig_pager *p)
{
	struct kvmig_record *r = NULL;
	enum kvmig_record_state st;
	uint32_t n = 0;

	assert_int_equal(kvmig_pager_records(p, &r, &n), 0);
	assert_int_equal(n, 1);
	st = r[0].state;
	free(r);
	return st;
}

/* ---- children ---- */

struct side {
	struct kvmig_migrate_opts o;
	uint32_t kill_after_pages;   /* receiver: SIGKILL itself once this many landed */
	uint64_t kill_after_bytes;   /* sender: SIGKILL itself once this much was served */
	const char *kill_at_phase;   /* SIGKILL itself when this phase begins */
	const char *fault;           /* $KVMIG_FAULT in this side only */
	int stats_fd;                /* > 0: write the stats here before exiting */
	int accepts;                 /* receiver: migrations to accept (0 means 1) */
	int reattach;                /* receiver: a fresh pager handle for each accept */
	const char *remove_at_round; /* sender: remove this sequence when round 1 begins */
	uint32_t alarm_every_ms;     /* > 0: a SIGALRM this often (an engine's timer) */
	struct kvmig_pager *p;       /* the child's pager */
};

static inline void harness_on_alarm(int sig)
{
	(void)sig;
}

static inline void kill_on_progress(void *arg, const struct kvmig_event *ev)
{
	struct side *s = arg;

	if (ev->type == KVMIG_EVENT_PHASE && s->kill_at_phase && !strcmp(ev->phase, s->kill_at_phase))
		raise(SIGKILL);
	if (ev->type == KVMIG_EVENT_PHASE && s->remove_at_round && !strcmp(ev->phase, "round") &&
	    kvmig_pager_remove(s->p, &s->remove_at_round, 1) == 0)
		s->remove_at_round = NULL; /* the engine's sequence ended meanwhile */
	if (ev->type != KVMIG_EVENT_PROGRESS)
		return;
	if ((s->kill_after_pages && ev->pages_done >= s->kill_after_pages) ||
	    (s->kill_after_bytes && ev->bytes_done >= s->kill_after_bytes))
		raise(SIGKILL);
}

static inline void side_init(struct side *s)
{
	memset(s, 0, sizeof(*s));
	kvmig_migrate_opts_init(&s->o);
	s->o.queue_depth = 4;
	s->o.max_read_bytes = 8192; /* several reads per 32 KiB extent */
	s->o.timeout_ms = xport == KVMIG_TRANSPORT_TCP ? 3000 : 15000; /* emulated RDMA is slow */
	s->o.transport = xport;
	s->o.progress_interval_ms = 0;
	/* $KVMIG_TEST_HASH_THREADS: both sides hash on that many threads (the
	 * receiver on its pool), whatever the machine's CPUs. */
	if (getenv("KVMIG_TEST_HASH_THREADS"))
		s->o.hash_threads = (uint32_t)atoi(getenv("KVMIG_TEST_HASH_THREADS"));
	/* $KVMIG_TEST_PATHS: the sender asks for that many connections, and
	 * every migration runs striped over them. */
	if (getenv("KVMIG_TEST_PATHS"))
		s->o.paths = (uint32_t)atoi(getenv("KVMIG_TEST_PATHS"));
}

/*
 * A child's whole life: the receiver accepts on @l into the destination,
 * the sender (@l NULL) sends the source to @addr. Exit status: 0, or the
 * errno the migration failed with.
 */
static inline void __attribute__((noreturn)) run_side(struct kvmig_listener *l, const char *addr,
					       struct side *s)
{
	struct kvmig_migrate_stats st = { 0 };
	struct kvmig_pager *p = NULL;
	int ret;

	if (s->fault)
		setenv("KVMIG_FAULT", s->fault, 1);
	if (s->alarm_every_ms) {
		struct sigaction sa = { .sa_handler = harness_on_alarm }; /* no SA_RESTART */
		struct itimerval it = { { 0, (long)s->alarm_every_ms * 1000 },
					{ 0, (long)s->alarm_every_ms * 1000 } };

		sigaction(SIGALRM, &sa, NULL);
		setitimer(ITIMER_REAL, &it, NULL);
	}
	if (s->kill_after_pages || s->kill_after_bytes || s->kill_at_phase || s->remove_at_round) {
		s->o.on_event = kill_on_progress;
		s->o.event_arg = s;
	}
	if (kvmig_synth_attach(l ? dst_name : src_name, &p) < 0)
		_exit(100);
	s->p = p;
	for (int i = 0; i < (s->accepts > 1 ? s->accepts : 1); i++) {
		ret = l ? kvmig_migrate_accept(l, p, &s->o, &st) :
			  kvmig_migrate_send(p, addr, &s->o, &st);
		if (s->stats_fd > 0 && write(s->stats_fd, &st, sizeof(st)) != (ssize_t)sizeof(st))
			ret = -EIO;
		if (ret < 0)
			break;
		if (s->reattach) {
			kvmig_pager_destroy(&p);
			if (kvmig_synth_attach(dst_name, &p) < 0)
				_exit(100);
		}
	}
	if (ret < 0)
		fprintf(stderr, "%s: %s\n", l ? "receiver" : "sender", kvmig_last_error());
	kvmig_pager_destroy(&p);
	kvmig_listener_close(&l);
	_exit(ret < 0 ? -ret : 0);
}

/* A receiver child accepting on the parent's listener @l (tcp). */
static inline pid_t fork_receiver(struct kvmig_listener *l, struct side *s)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0)
		run_side(l, NULL, s);
	return pid;
}

/*
 * A receiver child with its own listener on listen_addr (an rdma_cm
 * listener cannot be handed to another process); its address comes back
 * through a pipe into @addr.
 */
static inline pid_t fork_listening_receiver(struct side *s, char addr[96])
{
	int fds[2];
	ssize_t n;
	pid_t pid;

	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct kvmig_listener *l = NULL;

		close(fds[0]);
		if (kvmig_listener_open(listen_addr, &s->o, &l) < 0) {
			fprintf(stderr, "receiver: %s\n", kvmig_last_error());
			_exit(101);
		}
		n = write(fds[1], kvmig_listener_addr(l), strlen(kvmig_listener_addr(l)));
		close(fds[1]);
		run_side(l, NULL, s);
	}
	close(fds[1]);
	n = read(fds[0], addr, 95);
	close(fds[0]);
	if (n <= 0)
		fail_msg("the receiver could not listen on %s", listen_addr);
	addr[n] = '\0';
	return pid;
}

static inline pid_t fork_sender(const char *addr, struct side *s)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0)
		run_side(NULL, addr, s);
	return pid;
}

/* Exit code of a child, or 1000 + signal if it was killed. */
static inline int reap(pid_t pid)
{
	int st;

	assert_int_equal(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + WTERMSIG(st);
}

static inline void migrate(struct side *rs, struct side *ss, int *rrc, int *src_rc)
{
	char addr[96];
	pid_t r, s;

	r = fork_listening_receiver(rs, addr);
	s = fork_sender(addr, ss);
	*src_rc = reap(s);
	*rrc = reap(r);
}

/* A cmocka group teardown: the pagers go even when a failed assertion
 * skipped a test's own cleanup. */
static inline int harness_unlink_pagers(void **state)
{
	(void)state;
	kvmig_synth_unlink(src_name);
	kvmig_synth_unlink(dst_name);
	return 0;
}

/* Read $KVMIG_TEST_TRANSPORT / $KVMIG_TEST_LISTEN / $KVMIG_TEST_FILTER and
 * name the pagers after @tag and this process. 0, or an exit code. */
static inline int harness_init(const char *tag)
{
	const char *t = getenv("KVMIG_TEST_TRANSPORT");

	if (t && !strcmp(t, "rdma")) {
		xport = KVMIG_TRANSPORT_RDMA;
		listen_addr = getenv("KVMIG_TEST_LISTEN");
		if (!listen_addr) {
			fprintf(stderr, "KVMIG_TEST_TRANSPORT=rdma needs KVMIG_TEST_LISTEN=ADDR:0, the "
				"address of an RDMA device\n");
			return 2;
		}
	} else if (t && strcmp(t, "tcp")) {
		fprintf(stderr, "KVMIG_TEST_TRANSPORT is tcp or rdma, not \"%s\"\n", t);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (getenv("KVMIG_TEST_FILTER")) /* one test by name, when debugging */
		cmocka_set_test_filter(getenv("KVMIG_TEST_FILTER"));
	snprintf(src_name, sizeof(src_name), "kvmig-%s-src-%d", tag, (int)getpid());
	snprintf(dst_name, sizeof(dst_name), "kvmig-%s-dst-%d", tag, (int)getpid());
	return 0;
}

#endif
