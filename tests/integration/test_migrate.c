/* SPDX-License-Identifier: MIT */
/*
 * Two-process migrations, over loopback TCP by default, over the verbs
 * provider with KVMIG_TEST_TRANSPORT=rdma KVMIG_TEST_LISTEN=ADDR:0 (the
 * soft-RoCE suite, tests/softroce/, runs it so). The receiver and the sender run
 * in forked children on shared-memory pagers; the parent then inspects both
 * pagers: the destination against the source's manifest taken before the
 * migration, the source's digests and pause state, and what the destination
 * holds after a failure. Misbehaving peers (silent, bad range, wrong digests)
 * are played by the parent with the wire codec over a raw socket (tcp only).
 * Fault points ($KVMIG_FAULT, util/fault.c) make a real peer misbehave on
 * either transport.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cmocka.h>

#include <kvmig/kvmig.h>

#include "harness.h"
#include "util/internal.h"
#include "transport/wire.h"

/* ---- successful migrations ---- */

static void full(enum kvmig_layout layout, enum kvmig_migrate_mode mode)
{
	struct side rs, ss;
	struct kvmig_manifest *before;
	struct kvmig_digest d0, d1;
	uint32_t dst_occ;
	int rrc, src_rc;

	make_pagers(layout, 64, 0);
	/* A page the source has allocated but no sequence uses: not migrated,
	 * not freed (an engine may be filling it). */
	uint32_t orphan;

	assert_int_equal(kvmig_pager_allocate(src, 1, &orphan), 0);
	before = snapshot(src);
	digest_of(src, &d0);
	dst_occ = n_occupied(dst);
	side_init(&rs);
	side_init(&ss);
	ss.o.mode = mode;
	migrate(&rs, &ss, &rrc, &src_rc);
	assert_int_equal(src_rc, 0);
	assert_int_equal(rrc, 0);
	/* Every sequence landed with the source's bytes, in new indices. */
	assert_int_equal(kvmig_verify(dst, before, NULL), 0);
	assert_int_equal(n_occupied(dst), dst_occ + 18);
	assert_int_equal(n_seqs(dst), 4);
	assert_int_equal(pause_depth(src), 0);
	if (mode == KVMIG_MODE_MOVE) {
		assert_int_equal(n_seqs(src), 0);
		assert_int_equal(n_occupied(src), 1); /* the orphan */
	} else {
		digest_of(src, &d1);
		assert_true(kvmig_digest_equal(&d0, &d1));
	}
	kvmig_manifest_free(&before);
	drop_pagers();
}

static void test_full_move_page_major(void **state)
{
	full(KVMIG_LAYOUT_PAGE_MAJOR, KVMIG_MODE_MOVE);
}

static void test_full_copy_page_major(void **state)
{
	full(KVMIG_LAYOUT_PAGE_MAJOR, KVMIG_MODE_COPY);
}

static void test_full_move_layer_major(void **state)
{
	full(KVMIG_LAYOUT_LAYER_MAJOR, KVMIG_MODE_MOVE);
}

/* --seqs seq-1,seq-3: the shared prefix moves once and stays shared. */
/* A migration both sides commit, and @from's stats (rs or ss) read back. */
static void migrate_stats(struct side *rs, struct side *ss, struct side *from,
			  struct kvmig_migrate_stats *st)
{
	int rrc, src_rc, fds[2];

	assert_int_equal(pipe(fds), 0);
	from->stats_fd = fds[1];
	migrate(rs, ss, &rrc, &src_rc);
	close(fds[1]);
	assert_int_equal(src_rc, 0);
	assert_int_equal(rrc, 0);
	assert_int_equal(read(fds[0], st, sizeof(*st)), (ssize_t)sizeof(*st));
	close(fds[0]);
}

/*
 * Extents contiguous on both sides are read in one piece: a page-major page
 * is one 64 KiB run (K then V), a layer-major page 8 runs of 4 KiB (one per
 * layer and half), whatever the extent boundaries.
 */
static void coalesced(enum kvmig_layout layout, uint32_t reads_per_page)
{
	struct kvmig_migrate_stats st;
	struct kvmig_manifest *before;
	struct side rs, ss;

	make_pagers(layout, 64, 0);
	before = snapshot(src);
	side_init(&rs);
	side_init(&ss);
	rs.o.max_read_bytes = 1u << 20;
	migrate_stats(&rs, &ss, &rs, &st);
	assert_int_equal(st.reads, 18 * reads_per_page);
	assert_int_equal(st.pages_verified, 18);
	assert_int_equal(kvmig_verify(dst, before, NULL), 0);
	kvmig_manifest_free(&before);
	drop_pagers();
}

static void test_reads_coalesced(void **state)
{
	coalesced(KVMIG_LAYOUT_PAGE_MAJOR, 1);
	coalesced(KVMIG_LAYOUT_LAYER_MAJOR, 8);
}

/*
 * One listener, two migrations into the same pager: the second finds the
 * destination still registered (rdma keeps the receiver's local
 * registrations per listener; tcp has nothing to register) and both land.
 */
static void two_migrations(int reattach)
{
	static const char *const first[] = { "seq-0", "seq-1" }, *const second[] = { "seq-2", "seq-3" };
	struct kvmig_migrate_stats st[2];
	struct kvmig_manifest *before;
	struct side rs, ss;
	char addr[96];
	int fds[2];
	pid_t r;

	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	before = snapshot(src);
	side_init(&rs);
	side_init(&ss);
	ss.o.mode = KVMIG_MODE_COPY;
	rs.accepts = 2;
	rs.reattach = reattach;
	assert_int_equal(pipe(fds), 0);
	rs.stats_fd = fds[1];
	r = fork_listening_receiver(&rs, addr);
	close(fds[1]);
	ss.o.seq_ids = first;
	ss.o.n_seq_ids = 2;
	assert_int_equal(reap(fork_sender(addr, &ss)), 0);
	ss.o.seq_ids = second;
	assert_int_equal(reap(fork_sender(addr, &ss)), 0);
	assert_int_equal(reap(r), 0);
	assert_int_equal(read(fds[0], st, sizeof(st)), (ssize_t)sizeof(st));
	close(fds[0]);
	assert_int_equal(st[0].regions_reused, 0);
	/* A new handle (perhaps at the old address) is never trusted with the
	 * old registration. Over several paths the extra connections come from
	 * the migration's own listeners: registered anew, so not all reused. */
	assert_int_equal(st[1].regions_reused,
			 xport == KVMIG_TRANSPORT_RDMA && !reattach && ss.o.paths < 2 ? 1 : 0);
	assert_int_equal(st[0].pages_verified + st[1].pages_verified, 2 * (2 + 2 * 4));
	assert_int_equal(n_seqs(dst), 4);
	assert_int_equal(kvmig_verify(dst, before, NULL), 0);
	kvmig_manifest_free(&before);
	drop_pagers();
}

static void test_two_migrations_one_listener(void **state)
{
	two_migrations(0);
	two_migrations(1);
}

static void test_subset_shared_prefix(void **state)
{
	static const char *const ids[] = { "seq-1", "seq-3" };
	struct side rs, ss;
	struct kvmig_manifest *before;
	struct kvmig_seq_list got;
	uint32_t dst_occ;
	int rrc, src_rc;

	for (int mode = KVMIG_MODE_MOVE; mode <= KVMIG_MODE_COPY; mode++) {
		make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
		before = snapshot(src);
		dst_occ = n_occupied(dst);
		side_init(&rs);
		side_init(&ss);
		ss.o.seq_ids = ids;
		ss.o.n_seq_ids = 2;
		ss.o.mode = (enum kvmig_migrate_mode)mode;
		migrate(&rs, &ss, &rrc, &src_rc);
		assert_int_equal(src_rc, 0);
		assert_int_equal(rrc, 0);
		/* 2 prefix pages + 2 x 4 own pages. */
		assert_int_equal(n_occupied(dst), dst_occ + 10);
		assert_int_equal(kvmig_pager_seqs(dst, &got), 0);
		assert_int_equal(got.n, 2);
		assert_string_equal(got.seqs[0].id, "seq-1");
		assert_string_equal(got.seqs[1].id, "seq-3");
		for (int j = 0; j < 2; j++)
			assert_int_equal(got.seqs[0].page_ixs[j], got.seqs[1].page_ixs[j]);
		kvmig_seq_list_free(&got);
		/* verify() checks the manifest's sequences present in dst: drop the others. */
		for (uint32_t i = 0; i < before->n_seqs; i++)
			if (!strcmp(before->seqs[i].id, "seq-0") || !strcmp(before->seqs[i].id, "seq-2"))
				before->seqs[i].n_pages = 0;
		if (mode == KVMIG_MODE_MOVE) {
			/* seq-0 and seq-2 stay with the prefix; the movers' own pages go. */
			assert_int_equal(n_seqs(src), 2);
			assert_int_equal(n_occupied(src), 18 - 8);
		} else {
			assert_int_equal(n_seqs(src), 4);
			assert_int_equal(n_occupied(src), 18);
		}
		assert_int_equal(pause_depth(src), 0);
		kvmig_manifest_free(&before);
		drop_pagers();
	}
}

/* ---- aborts: source resumed and unchanged, destination holds nothing new ---- */

/* A migration set up to fail: the destination's capacity and meta, fault
 * points, the sequences asked for; and the exit codes it must end with. */
struct abort_case {
	uint32_t dst_capacity;        /* 0: 64 */
	int dst_other_meta;
	void (*setup)(void);          /* then changes the pagers, or NULL */
	const char *recv_fault, *send_fault;
	const char *const *seq_ids;
	uint32_t n_seq_ids;
	uint32_t paths;               /* 0: as the harness says */
	int rrc, src_rc;
};

static void check_untouched(const struct kvmig_digest *d0, uint32_t dst_occ, uint32_t dst_seqs)
{
	struct kvmig_digest d1;

	digest_of(src, &d1);
	assert_true(kvmig_digest_equal(d0, &d1));
	assert_int_equal(pause_depth(src), 0);
	assert_int_equal(n_occupied(dst), dst_occ);
	assert_int_equal(n_seqs(dst), dst_seqs);
}

/* What an abort must leave as it was: the source's digest, the
 * destination's allocated pages and sequences. */
struct before {
	struct kvmig_digest src_digest;
	uint32_t dst_occ, dst_seqs;
};

/* Fresh page-major pagers, their state in @b, then the migration. */
static void run_case(const struct abort_case *c, int *rrc, int *src_rc, struct before *b)
{
	struct side rs, ss;

	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, c->dst_capacity ? c->dst_capacity : 64,
		    c->dst_other_meta);
	if (c->setup)
		c->setup();
	digest_of(src, &b->src_digest);
	b->dst_occ = n_occupied(dst);
	b->dst_seqs = n_seqs(dst);
	side_init(&rs);
	side_init(&ss);
	rs.fault = c->recv_fault;
	ss.fault = c->send_fault;
	ss.o.seq_ids = c->seq_ids;
	ss.o.n_seq_ids = c->n_seq_ids;
	if (c->paths)
		ss.o.paths = c->paths;
	migrate(&rs, &ss, rrc, src_rc);
}

/* The exit codes of @c, the source resumed and unchanged, the destination
 * as it was before (the same pages allocated, the same sequences). */
static void expect_abort(const struct abort_case *c)
{
	struct before b;
	int rrc, src_rc;

	run_case(c, &rrc, &src_rc, &b);
	assert_int_equal(rrc, c->rrc);
	assert_int_equal(src_rc, c->src_rc);
	check_untouched(&b.src_digest, b.dst_occ, b.dst_seqs);
	drop_pagers();
}

static void test_meta_mismatch(void **state)
{
	expect_abort(&(struct abort_case){ .dst_other_meta = 1, .rrc = EPROTO, .src_rc = EPROTO });
}

/* The destination replaced by an empty layer-major pager. */
static void dst_layer_major(void)
{
	struct kvmig_synth_opts o;

	kvmig_pager_destroy(&dst);
	kvmig_synth_unlink(dst_name);
	kvmig_synth_opts_init(&o);
	small_meta(&o.meta);
	o.layout = KVMIG_LAYOUT_LAYER_MAJOR;
	o.shm_name = dst_name;
	assert_int_equal(kvmig_synth_create(&o, &dst), 0);
}

static void test_layout_mismatch(void **state)
{
	expect_abort(&(struct abort_case){ .setup = dst_layer_major, .rrc = EPROTO,
					   .src_rc = EPROTO });
}

static void test_destination_out_of_pages(void **state)
{
	/* 3 busy + 9 free < 18 */
	expect_abort(&(struct abort_case){ .dst_capacity = 12, .rrc = ENOSPC, .src_rc = ENOSPC });
}

static void test_unknown_sequence(void **state)
{
	static const char *const ids[] = { "seq-1", "nope" }, *twice[] = { "seq-1", "seq-1" };

	expect_abort(&(struct abort_case){ .seq_ids = ids, .n_seq_ids = 2, .rrc = ENOENT,
					   .src_rc = ENOENT });
	expect_abort(&(struct abort_case){ .seq_ids = twice, .n_seq_ids = 2, .rrc = EINVAL,
					   .src_rc = EINVAL });
}

/* A 128-byte sequence id (the longest) migrates like any other. */
static void src_long_id(void)
{
	char id[KVMIG_SEQ_ID_MAX + 1];
	uint32_t *ixs, n;

	memset(id, 'x', KVMIG_SEQ_ID_MAX);
	id[KVMIG_SEQ_ID_MAX] = '\0';
	assert_int_equal(kvmig_pager_occupied(src, &ixs, &n), 0);
	struct kvmig_seq q = { .id = id, .page_ixs = ixs, .n_pages = 1, .fill_in_last_page = 1 };

	assert_int_equal(kvmig_pager_install(src, &q, 1), 0);
	free(ixs);
}

static void test_longest_id(void **state)
{
	struct side rs, ss;
	int rrc, src_rc;

	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	src_long_id();
	side_init(&rs);
	side_init(&ss);
	migrate(&rs, &ss, &rrc, &src_rc);
	assert_int_equal(src_rc, 0);
	assert_int_equal(rrc, 0);
	assert_int_equal(n_seqs(dst), 5);
	assert_int_equal(n_seqs(src), 0);
	drop_pagers();
}

/*
 * A second migration of the same source while the first is under way
 * (stalled before its FINAL): the first reserved its sequences when it
 * planned its final round, so the second is refused (EBUSY) and so is a
 * remove; once the stall ends, the first completes with exactly the bytes it
 * offered. (Without the reservation, the second could move the sequences and
 * a restore re-use their pages under the first's offer.)
 */
static void test_second_migration_refused(void **state)
{
	struct kvmig_manifest *before;
	struct side rs, ss, rs2, ss2;
	const char *ids[] = { "seq-0" };
	char addr[96], addr2[96];
	pid_t r1, s1, r2, s2;
	int reserved = 0;

	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	before = snapshot(src);
	side_init(&rs);
	side_init(&ss);
	rs.o.timeout_ms = ss.o.timeout_ms = 6000;
	ss.fault = "send-stall:2500";
	r1 = fork_listening_receiver(&rs, addr);
	s1 = fork_sender(addr, &ss);
	/* Wait for the first to have reserved the four sequences. */
	for (int t = 0; t < 400 && !reserved; t++) {
		struct kvmig_record *rec = NULL;
		uint32_t n = 0;

		assert_int_equal(kvmig_pager_records(src, &rec, &n), 0);
		reserved = n == 1 && rec[0].n_seqs == 4;
		free(rec);
		if (!reserved)
			usleep(10 * 1000);
	}
	assert_true(reserved);
	assert_int_equal(kvmig_pager_remove(src, ids, 1), -EBUSY);
	side_init(&rs2);
	side_init(&ss2);
	r2 = fork_listening_receiver(&rs2, addr2);
	s2 = fork_sender(addr2, &ss2);
	assert_int_equal(reap(s2), EBUSY);
	assert_true(reap(r2) != 0);
	assert_int_equal(reap(s1), 0);
	assert_int_equal(reap(r1), 0);
	assert_int_equal(kvmig_verify(dst, before, NULL), 0);
	assert_int_equal(n_seqs(src), 0);
	assert_int_equal(n_records(src) + n_records(dst), 0);
	kvmig_manifest_free(&before);
	drop_pagers();
}

/*
 * A sequence replaced between the sender's plan and its reservation (the
 * sender stopped there, fault point stop-send-planned): seq-0 removed and
 * another installed under its name, on other pages. The sender plans again
 * from what it tagged, so the destination gets the sequences as they are
 * when reserved, byte for byte, never the old shape over reused pages.
 */
static void test_sequence_replaced_before_reserve(void **state)
{
	struct kvmig_manifest *after;
	struct side rs, ss;
	const char *ids[] = { "seq-0" };
	uint32_t ixs[3];
	struct kvmig_seq q = { .id = (char *)"seq-0", .page_ixs = ixs, .n_pages = 3,
			       .fill_in_last_page = 5 };
	char addr[96];
	int status;
	pid_t r, s;

	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	side_init(&rs);
	side_init(&ss);
	ss.o.mode = KVMIG_MODE_COPY;
	ss.fault = "stop-send-planned";
	r = fork_listening_receiver(&rs, addr);
	s = fork_sender(addr, &ss);
	assert_int_equal(waitpid(s, &status, WUNTRACED), s);
	assert_true(WIFSTOPPED(status));
	/* Paused, planned, nothing tagged yet: replace seq-0 (its four own
	 * pages freed, three pages in their place; an engine's write would
	 * wait for the resume: EAGAIN). */
	assert_int_equal(kvmig_pager_remove(src, ids, 1), 0);
	assert_int_equal(kvmig_pager_allocate(src, 3, ixs), 0);
	assert_int_equal(kvmig_synth_fill_page(src, ixs[0], 4242, 0), -EAGAIN);
	assert_int_equal(kvmig_pager_install(src, &q, 1), 0);
	after = snapshot(src);
	kill(s, SIGCONT);
	assert_int_equal(reap(s), 0);
	assert_int_equal(reap(r), 0);
	assert_int_equal(kvmig_verify(dst, after, NULL), 0);
	assert_int_equal(n_records(src) + n_records(dst), 0);
	kvmig_manifest_free(&after);
	drop_pagers();
}

/* Options the library refuses: -EINVAL with the reason, nothing touched. */
static void test_bad_options(void **state)
{
	struct kvmig_migrate_opts o;
	struct kvmig_listener *l = NULL;
	struct kvmig_migrate_stats st;
	struct kvmig_digest d0;

	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	digest_of(src, &d0);
	kvmig_migrate_opts_init(&o);
	o.queue_depth = 0;
	assert_int_equal(kvmig_migrate_send(src, "127.0.0.1:1", &o, &st), -EINVAL);
	assert_non_null(strstr(kvmig_last_error(), "queue depth"));
	assert_int_equal(kvmig_listener_open("127.0.0.1:0", NULL, &l), 0);
	kvmig_migrate_opts_init(&o);
	o.timeout_ms = 0;
	assert_int_equal(kvmig_migrate_accept(l, dst, &o, &st), -EINVAL);
	assert_non_null(strstr(kvmig_last_error(), "timeout"));
	kvmig_listener_close(&l);
	check_untouched(&d0, 3, 0);
	drop_pagers();
	/* The names come from the one provider table. */
	enum kvmig_transport t;

	for (const char *const *n = (const char *const[]){ "tcp", "rdma", "auto", NULL }; *n; n++) {
		assert_int_equal(kvmig_transport_parse(*n, &t), 0);
		assert_string_equal(kvmig_transport_name(t), *n);
	}
	assert_int_equal(kvmig_transport_parse("udp", &t), -EINVAL);
	assert_null(kvmig_transport_name((enum kvmig_transport)42));
	kvmig_migrate_opts_init(&o);
	o.transport = (enum kvmig_transport)42;
	assert_int_equal(kvmig_migrate_send(src, "127.0.0.1:1", &o, &st), -EINVAL);
}

static void test_receiver_killed_mid_transfer(void **state)
{
	struct side rs, ss;
	struct kvmig_digest d0;
	int rrc, src_rc;

	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	digest_of(src, &d0);
	side_init(&rs);
	side_init(&ss);
	rs.kill_after_pages = 3;
	migrate(&rs, &ss, &rrc, &src_rc);
	assert_int_equal(rrc, 1000 + SIGKILL);
	assert_true(src_rc == ECONNRESET || src_rc == ETIMEDOUT);
	/* The source is resumed and unchanged. The dead receiver's pages and
	 * its undecided record are reclaimed by the next look (gc). */
	struct kvmig_digest d1;
	struct kvmig_gc_stats gs;
	digest_of(src, &d1);
	assert_true(kvmig_digest_equal(&d0, &d1));
	assert_int_equal(pause_depth(src), 0);
	assert_int_equal(n_seqs(dst), 0);
	assert_int_equal(kvmig_pager_gc(dst, &gs), 0);
	assert_true(gs.pages > 0);
	assert_int_equal(gs.aborted, 1);
	assert_int_equal(n_occupied(dst), 3);
	assert_int_equal(n_records(dst), 0);
	assert_int_equal(n_records(src), 0);
	drop_pagers();
}

static void test_sender_killed_mid_transfer(void **state)
{
	struct side rs, ss;
	int rrc, src_rc;

	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	side_init(&rs);
	side_init(&ss);
	if (xport == KVMIG_TRANSPORT_TCP)
		ss.kill_after_bytes = 64 * 1024; /* 1 of 18 pages served */
	else
		ss.kill_at_phase = "transfer"; /* one-sided reads: the sender cannot count them */
	migrate(&rs, &ss, &rrc, &src_rc);
	assert_int_equal(src_rc, 1000 + SIGKILL);
	if (xport == KVMIG_TRANSPORT_TCP)
		assert_int_equal(rrc, ECONNRESET);
	else if (rrc != ECONNRESET && rrc != ETIMEDOUT && rrc != EFAULT)
		fail_msg("receiver exit %d (%s); expected ECONNRESET, ETIMEDOUT or EFAULT", rrc,
			 strerror(rrc));
	/* The receiver freed every page it had allocated; the dead sender's
	 * undecided record goes at the next look. */
	assert_int_equal(n_occupied(dst), 3);
	assert_int_equal(n_seqs(dst), 0);
	assert_int_equal(n_records(dst), 0);
	assert_int_equal(kvmig_pager_gc(src, NULL), 0);
	assert_int_equal(n_records(src), 0);
	assert_int_equal(n_seqs(src), 4);
	drop_pagers();
}

/* An abort after install whose clean-up fails: the receiver reports the
 * sequences it could not take out (they stay pending, never runnable; the
 * error says so, and gc takes them out once the receiver is gone), the
 * source resumes unchanged. */
static void test_abort_cleanup_fails(void **state)
{
	char out[4096] = "";
	struct before b;
	int rrc, src_rc, fds[2], saved;
	ssize_t n;

#ifndef KVMIG_FAULT_INJECTION
	skip();
#endif
	/* The children's one-line errors (stderr) into a pipe: a few lines. */
	assert_int_equal(pipe(fds), 0);
	saved = dup(2);
	dup2(fds[1], 2);
	run_case(&(struct abort_case){ .recv_fault = "recv-commit-send,recv-uninstall" }, &rrc,
		 &src_rc, &b);
	dup2(saved, 2);
	close(saved);
	close(fds[1]);
	n = read(fds[0], out, sizeof(out) - 1);
	close(fds[0]);
	out[n > 0 ? n : 0] = '\0';
	fputs(out, stderr);
	assert_int_equal(rrc, EIO);
	assert_int_equal(src_rc, EIO);
	check_untouched(&b.src_digest, b.dst_occ + 18, 4);
	assert_int_equal(n_active(dst), 0);
	assert_non_null(strstr(out, "installed here as pending could not be removed"));
	assert_int_equal(kvmig_pager_gc(dst, NULL), 0);
	check_untouched(&b.src_digest, b.dst_occ, 0);
	assert_int_equal(n_records(dst), 0);
	drop_pagers();
}

/* ---- a real peer misbehaves at a fault point ---- */

/* A refused read (EFAULT, or the connection it broke) on both sides, source
 * unchanged, destination empty. */
static void expect_refused(int rrc, int src_rc, const struct kvmig_digest *d0)
{
	if (rrc != EFAULT && rrc != ECONNRESET)
		fail_msg("receiver exit %d (%s); expected EFAULT or ECONNRESET", rrc, strerror(rrc));
	if (src_rc != EFAULT && src_rc != ECONNRESET)
		fail_msg("sender exit %d (%s); expected EFAULT or ECONNRESET", src_rc,
			 strerror(src_rc));
	check_untouched(d0, 3, 0);
	drop_pagers();
}

/*
 * The receiver reads the page right after the last offered one (it exists:
 * the source has 64 pages, 18 offered). The sender registered only the
 * offered pages, so the read is refused (by the sender on tcp, by its NIC on
 * rdma) instead of returning a page that is not part of the migration.
 */
static void test_fault_read_unoffered(void **state)
{
	struct before b;
	int rrc, src_rc;

#ifndef KVMIG_FAULT_INJECTION
	skip();
#endif
	run_case(&(struct abort_case){ .recv_fault = "recv-read-unoffered" }, &rrc, &src_rc, &b);
	expect_refused(rrc, src_rc, &b.src_digest);
}

/* The sender's digest of source page 9's V half is wrong: EIO after one re-read. */
static void test_fault_bad_digest(void **state)
{
#ifndef KVMIG_FAULT_INJECTION
	skip();
#endif
	expect_abort(&(struct abort_case){ .send_fault = "send-bad-digest:9", .rrc = EIO,
					   .src_rc = EIO });
}

/*
 * Several paths (transport/stripe.c, paths.c): a migration over four
 * connections commits byte for byte and both sides say four; live, the
 * rounds run over them too.
 */
static void test_paths_striped(void **state)
{
	struct kvmig_migrate_stats st;
	struct kvmig_manifest *before;
	struct side rs, ss;
	int host_len = (int)(strrchr(listen_addr, ':') - listen_addr);
	char hosts[128];

	for (int live = 0; live < 2; live++) {
		make_pagers(KVMIG_LAYOUT_LAYER_MAJOR, 64, 0);
		before = snapshot(src);
		side_init(&rs);
		side_init(&ss);
		ss.o.paths = 4;
		ss.o.live = live;
		rs.o.queue_depth = 8;
		rs.o.max_read_bytes = 4096; /* many reads, spread over the paths */
		migrate_stats(&rs, &ss, &rs, &st);
		assert_int_equal(st.paths, 4);
		assert_int_equal(st.pages_verified, 18);
		assert_int_equal(kvmig_verify(dst, before, NULL), 0);
		side_init(&rs);
		side_init(&ss);
		/* Two path hosts (both the listener's here) x 3 each: six
		 * connections, over two listeners. */
		snprintf(hosts, sizeof(hosts), "%.*s,%.*s", host_len, listen_addr, host_len,
			 listen_addr);
		rs.o.path_hosts = hosts;
		ss.o.paths = 3;
		ss.o.mode = KVMIG_MODE_COPY;
		ss.o.live = live;
		migrate_stats(&rs, &ss, &ss, &st);
		assert_int_equal(st.paths, 6);
		kvmig_manifest_free(&before);
		drop_pagers();
	}
}

/*
 * A path dies under its reads: the whole migration aborts, named, on both
 * sides; the source keeps its bytes, the destination frees what it took.
 */
static void test_path_dies_mid_transfer(void **state)
{
	struct before b;
	int rrc, src_rc;

#ifndef KVMIG_FAULT_INJECTION
	skip();
#endif
	run_case(&(struct abort_case){ .recv_fault = "stripe-drop-path:2", .paths = 3 }, &rrc,
		 &src_rc, &b);
	assert_int_equal(rrc, ECONNRESET);
	/* The sender sees its end of the path go, or the receiver's ABORT first. */
	assert_true(src_rc == ECONNRESET || src_rc == ECONNABORTED);
	check_untouched(&b.src_digest, b.dst_occ, b.dst_seqs);
	drop_pagers();
}

/* A connection that joins with the wrong token is not the sender's: the
 * receiver drops it and waits for the right one until the handshake's
 * deadline; the sender, whose path that was, never hears JOINED. Nothing was
 * paused or registered. */
static void test_path_wrong_token(void **state)
{
	struct before b;
	int rrc, src_rc;

#ifndef KVMIG_FAULT_INJECTION
	skip();
#endif
	run_case(&(struct abort_case){ .send_fault = "paths-bad-token", .paths = 2 }, &rrc,
		 &src_rc, &b);
	assert_true(src_rc == ETIMEDOUT || src_rc == ECONNRESET);
	assert_true(rrc == ETIMEDOUT || rrc == ECONNRESET);
	check_untouched(&b.src_digest, b.dst_occ, b.dst_seqs);
	drop_pagers();
}

/*
 * Digests kept ahead (kvmig_hash_ahead): the second pass finds them
 * current; a migration takes them instead of hashing, and the destination
 * still verifies every page byte for byte.
 */
static void test_digests_ahead(void **state)
{
	struct kvmig_hash_ahead_stats hs;
	struct kvmig_migrate_stats st;
	struct kvmig_manifest *before;
	struct side rs, ss;

	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	before = snapshot(src);
	assert_int_equal(kvmig_hash_ahead(src, NULL, 0, 3, &hs), 0);
	assert_int_equal(hs.pages, 18);
	assert_int_equal(hs.hashed, 18);
	assert_int_equal(hs.raced, 0);
	assert_int_equal(kvmig_hash_ahead(src, NULL, 0, 1, &hs), 0);
	assert_int_equal(hs.fresh, 18);
	assert_int_equal(hs.hashed, 0);
	/* The destination keeps none of its own: only runnable pages count. */
	assert_int_equal(kvmig_hash_ahead(dst, NULL, 0, 1, &hs), 0);
	assert_int_equal(hs.pages, 0);
	side_init(&rs);
	side_init(&ss);
	migrate_stats(&rs, &ss, &ss, &st);
	assert_int_equal(st.digests_ahead, 18);
	assert_int_equal(st.pages_hashed, 0);
	assert_int_equal(kvmig_verify(dst, before, NULL), 0);
	kvmig_manifest_free(&before);
	drop_pagers();
}

/* Three sender threads hash the pages (none kept ahead) and the receiver
 * hashes landed pages on a pool of three: every digest right (the
 * destination verifies all 18); then a wrong digest is still caught after
 * a re-read through the pool, the source untouched. */
static void test_hash_threads(void **state)
{
	struct kvmig_migrate_stats st;
	struct kvmig_manifest *before;
	struct kvmig_digest d0;
	struct side rs, ss;
	int rrc, src_rc;

	make_pagers(KVMIG_LAYOUT_LAYER_MAJOR, 64, 0);
	before = snapshot(src);
	side_init(&rs);
	side_init(&ss);
	ss.o.hash_threads = 3;
	rs.o.hash_threads = 3;
	migrate_stats(&rs, &ss, &ss, &st);
	assert_int_equal(st.hash_threads, 3);
	assert_int_equal(st.pages_hashed, 18);
	assert_int_equal(st.digests_ahead, 0);
	assert_int_equal(kvmig_verify(dst, before, NULL), 0);
	kvmig_manifest_free(&before);
	drop_pagers();
#ifdef KVMIG_FAULT_INJECTION
	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	digest_of(src, &d0);
	side_init(&rs);
	side_init(&ss);
	ss.o.hash_threads = 2;
	rs.o.hash_threads = 4;
	ss.fault = "send-bad-digest:9";
	migrate(&rs, &ss, &rrc, &src_rc);
	assert_int_equal(rrc, EIO);
	assert_int_equal(src_rc, EIO);
	check_untouched(&d0, 3, 0);
	drop_pagers();
#else
	(void)d0;
#endif
}

/* Behind the pager's back: page 9's V half changed after its digests were
 * kept, its generation not moved (an engine breaking the contract). */
static void stale_kept_digest(void)
{
	struct kvmig_extent e[8];
	uint32_t n;

	assert_int_equal(kvmig_hash_ahead(src, NULL, 0, 1, NULL), 0);
	assert_int_equal(kvmig_pager_extents(src, 9, KVMIG_HALF_V, e, 8, &n), 0);
	((uint8_t *)e[0].addr)[5] ^= 0x5a;
}

/* The sender's kept digest is stale: the receiver's own hash of what it
 * read differs, it reads once more, and the migration aborts (EIO) with the
 * source intact and nothing installed: a stale digest never installs wrong
 * bytes. */
static void test_stale_kept_digest_aborts(void **state)
{
	expect_abort(&(struct abort_case){ .setup = stale_kept_digest, .rrc = EIO,
					   .src_rc = EIO });
}

/*
 * Hashing ahead while an engine decodes into every sequence: every digest
 * kept for the generation a page still has matches the page's bytes, and
 * a page the engine wrote meanwhile is not covered by an older entry.
 */
static void test_hash_ahead_while_decoding(void **state)
{
	struct kvmig_synth_engine_opts eo;
	struct kvmig_synth_engine *e = NULL;
	struct kvmig_hash_ahead_stats hs;
	struct kvmig_extent ext[8];
	struct iovec iov[8];
	uint32_t checked = 0, raced = 0;
	double until;

	make_pagers(KVMIG_LAYOUT_LAYER_MAJOR, 64, 0);
	kvmig_synth_engine_opts_init(&eo);
	eo.tokens_per_second = 20000;
	assert_int_equal(kvmig_synth_engine_start(src, &eo, &e), 0);
	for (until = kvmig_now() + 0.5; kvmig_now() < until;) {
		assert_int_equal(kvmig_hash_ahead(src, NULL, 0, 2, &hs), 0);
		raced += hs.raced;
	}
	kvmig_synth_engine_stop(&e);
	for (uint32_t ix = 0; ix < src_capacity; ix++) {
		struct kvmig_page_digest d;
		struct kvmig_digest k, v;
		uint64_t gen;
		uint32_t n;

		assert_int_equal(kvmig_pager_digest_get(src, ix, &d), 0);
		assert_int_equal(kvmig_pager_generation(src, ix, &gen), 0);
		if (!d.gen || d.gen != gen)
			continue;
		assert_int_equal(kvmig_pager_extents(src, ix, KVMIG_HALF_K, ext, 8, &n), 0);
		for (uint32_t i = 0; i < n; i++)
			iov[i] = (struct iovec){ ext[i].addr, ext[i].len };
		kvmig_digest_computev(iov, (int)n, &k);
		assert_int_equal(kvmig_pager_extents(src, ix, KVMIG_HALF_V, ext, 8, &n), 0);
		for (uint32_t i = 0; i < n; i++)
			iov[i] = (struct iovec){ ext[i].addr, ext[i].len };
		kvmig_digest_computev(iov, (int)n, &v);
		assert_memory_equal(d.k, k.b, 16);
		assert_memory_equal(d.v, v.b, 16);
		checked++;
	}
	print_message("hash ahead while decoding: %u kept digests current and right, %u raced\n",
		      checked, raced);
	assert_true(checked >= 10);
	drop_pagers();
}

/* The receiver reads with a wrong key: the sender (tcp) or its NIC (rdma) refuses. */
static void test_fault_bad_key(void **state)
{
	struct before b;
	int rrc, src_rc;

#ifndef KVMIG_FAULT_INJECTION
	skip();
#endif
	run_case(&(struct abort_case){ .recv_fault = "recv-bad-key" }, &rrc, &src_rc, &b);
	expect_refused(rrc, src_rc, &b.src_digest);
}

/*
 * The fault matrix: every protocol step on each side fails once (or the
 * connection is cut, or a side goes silent past the peer's timeout, or
 * every write is short). After each: the source is resumed with the same
 * digests, the destination installed nothing and freed what it allocated —
 * and the same migration retried without the fault succeeds. Short writes
 * must not fail at all.
 */
struct fault_case {
	char side;          /* 'r' receiver, 's' sender */
	const char *fault;  /* $KVMIG_FAULT */
	int rrc, src_rc;    /* exit codes; -1: any failure */
};

static const struct fault_case fault_matrix[] = {
	{ 's', "send-handshake", -1, EIO },
	{ 's', "send-register", EIO, EIO },
	{ 's', "send-offer", EIO, EIO },
	{ 's', "send-digests", EIO, EIO },
	{ 's', "send-transfer", EIO, EIO },
	{ 's', "send-cut", -1, ECONNRESET },
	{ 's', "send-stall", ETIMEDOUT, -1 }, /* silent for 1.5 x the timeout */
	{ 's', "send-commit-recv", EIO, EIO },
	{ 'r', "recv-handshake", EIO, -1 },
	{ 'r', "recv-alloc", EIO, EIO },
	{ 'r', "recv-transfer", EIO, EIO },
	{ 'r', "recv-verify", EIO, EIO },
	{ 'r', "recv-install", EIO, EIO },
	{ 'r', "recv-commit-send", EIO, EIO },
	{ 'r', "recv-stall", ETIMEDOUT, ETIMEDOUT },
	{ 's', "tcp-short-write", 0, 0 },
	{ 'r', "tcp-short-write", 0, 0 },
};

static void test_fault_matrix(void **state)
{
	unsigned passed = 0;

#ifndef KVMIG_FAULT_INJECTION
	skip();
#endif
	for (size_t i = 0; i < sizeof(fault_matrix) / sizeof(fault_matrix[0]); i++) {
		const struct fault_case *fc = &fault_matrix[i];
		/* Short timeouts keep the stalls short; emulated RDMA needs more. */
		uint32_t timeout = xport == KVMIG_TRANSPORT_TCP ? 1000 : 5000;
		struct kvmig_manifest *before;
		struct kvmig_digest d0;
		struct side rs, ss;
		char fault[64];
		int rrc, src_rc;

		snprintf(fault, sizeof(fault), strstr(fc->fault, "stall") ? "%s:%u" : "%s", fc->fault,
			 timeout * 3 / 2);
		make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
		before = snapshot(src);
		digest_of(src, &d0);
		side_init(&rs);
		side_init(&ss);
		rs.o.timeout_ms = ss.o.timeout_ms = timeout;
		(fc->side == 'r' ? &rs : &ss)->fault = fault;
		migrate(&rs, &ss, &rrc, &src_rc);
		if ((fc->rrc >= 0 ? rrc != fc->rrc : (rrc == 0 || rrc >= 1000)) ||
		    (fc->src_rc >= 0 ? src_rc != fc->src_rc : (src_rc == 0 || src_rc >= 1000)))
			fail_msg("fault %s (%s): receiver exit %d, sender exit %d", fc->fault,
				 fc->side == 'r' ? "receiver" : "sender", rrc, src_rc);
		if (fc->rrc != 0) {
			check_untouched(&d0, 3, 0);
			/* Retried without the fault, the same migration succeeds. */
			side_init(&rs);
			side_init(&ss);
			migrate(&rs, &ss, &rrc, &src_rc);
			assert_int_equal(src_rc, 0);
			assert_int_equal(rrc, 0);
		}
		assert_int_equal(kvmig_verify(dst, before, NULL), 0);
		assert_int_equal(n_seqs(dst), 4);
		assert_int_equal(pause_depth(src), 0);
		kvmig_manifest_free(&before);
		drop_pagers();
		passed++;
	}
	printf("fault matrix: %u of %zu fault points passed (each then retried)\n", passed,
	       sizeof(fault_matrix) / sizeof(fault_matrix[0]));
}

/* @k one-page sequences "fill-N" on a page @p already has allocated. */
static void fill_seqs(struct kvmig_pager *p, uint32_t k)
{
	uint32_t *ixs, n;
	char id[32];

	assert_int_equal(kvmig_pager_occupied(p, &ixs, &n), 0);
	assert_true(n > 0);
	for (uint32_t i = 0; i < k; i++) {
		struct kvmig_seq q = { .id = id, .page_ixs = ixs, .n_pages = 1, .fill_in_last_page = 1 };

		snprintf(id, sizeof(id), "fill-%u", i);
		assert_int_equal(kvmig_pager_install(p, &q, 1), 0);
	}
	free(ixs);
}

/*
 * The commit step's lost messages (docs/PROTOCOL.md, "Crash safety"). COMMIT
 * lost with the connection: the sender never decided, resumes and runs its
 * sequences; the receiver is prepared, in doubt, its copy pending (not
 * running); resolving from both records aborts it. COMMIT_ACK lost: the
 * sender decided (its sequences departed, not running); the receiver is in
 * doubt; resolving activates the destination's copy, then releases the
 * source's. Never on neither side, never running on both, never decided
 * from an exit status.
 */
/*
 * A resolver finishing a migration while both of its processes live: the
 * sender stopped right after deciding (stop-send-decided), the receiver
 * waiting for the decision; kvmig_migrate_resolve_pair() activates the
 * destination and releases the source. When the sender runs again, both
 * find the records gone and the outcome applied: both succeed, neither
 * reports a migration in doubt.
 */
static void test_resolved_while_running(void **state)
{
	struct kvmig_resolve_stats st;
	struct kvmig_manifest *before;
	struct side rs, ss;
	char addr[96];
	int status;
	pid_t r, s;

#ifndef KVMIG_FAULT_INJECTION
	skip();
#endif
	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	before = snapshot(src);
	side_init(&rs);
	side_init(&ss);
	rs.o.timeout_ms = ss.o.timeout_ms = 20000; /* the receiver waits it out */
	ss.fault = "stop-send-decided";
	r = fork_listening_receiver(&rs, addr);
	s = fork_sender(addr, &ss);
	assert_int_equal(waitpid(s, &status, WUNTRACED), s);
	assert_true(WIFSTOPPED(status));
	assert_int_equal(record_state(src), KVMIG_REC_DEPARTED);
	assert_int_equal(record_state(dst), KVMIG_REC_PREPARED);
	assert_int_equal(kvmig_migrate_resolve_pair(src, dst, &st), 0);
	assert_int_equal(st.in_doubt, 0);
	assert_int_equal(n_records(src) + n_records(dst), 0);
	kill(s, SIGCONT);
	assert_int_equal(reap(s), 0);
	assert_int_equal(reap(r), 0);
	assert_int_equal(kvmig_verify(dst, before, NULL), 0);
	assert_int_equal(n_seqs(src), 0);
	assert_int_equal(n_records(src) + n_records(dst), 0);
	/* Records a live process drives (this one) are in progress, not in
	 * doubt: left as they are, and counted apart. */
	struct kvmig_record a = { .role = KVMIG_ROLE_SOURCE, .state = KVMIG_REC_SENDING };
	struct kvmig_record b = { .role = KVMIG_ROLE_DEST, .state = KVMIG_REC_RECEIVING };

	assert_int_equal(kvmig_pager_identity(dst, &a.peer_pager), 0);
	assert_int_equal(kvmig_pager_identity(src, &b.peer_pager), 0);
	assert_int_equal(kvmig_pager_record_create(src, &a), 0);
	b.id = a.id;
	assert_int_equal(kvmig_pager_record_create(dst, &b), 0);
	assert_int_equal(kvmig_migrate_resolve_pair(src, dst, &st), 0);
	assert_int_equal(st.in_progress, 2);
	assert_int_equal(st.in_doubt, 0);
	assert_int_equal(n_records(src) + n_records(dst), 2);
	assert_int_equal(kvmig_pager_record_end(src, &a.id, KVMIG_REC_SENDING, 0), 0);
	assert_int_equal(kvmig_pager_record_end(dst, &b.id, KVMIG_REC_RECEIVING, 0), 0);
	kvmig_manifest_free(&before);
	drop_pagers();
}

static void test_commit_message_lost(void **state)
{
	struct kvmig_resolve_stats rs_st;
	struct kvmig_manifest *before;
	struct kvmig_digest d0, d1;
	struct side rs, ss;
	int rrc, src_rc;

#ifndef KVMIG_FAULT_INJECTION
	skip();
#endif
	/* COMMIT lost, into a destination whose 64 sequence slots hold 58
	 * already: the pending copies need no room beyond their own. */
	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	fill_seqs(dst, 58);
	digest_of(src, &d0);
	side_init(&rs);
	side_init(&ss);
	rs.fault = "recv-commit-lost";
	migrate(&rs, &ss, &rrc, &src_rc);
	assert_int_equal(rrc, ENOTCONN);
	assert_int_equal(src_rc, ECONNRESET);
	digest_of(src, &d1);
	assert_true(kvmig_digest_equal(&d0, &d1)); /* the source runs them, unchanged */
	assert_int_equal(n_active(src), 4);
	assert_int_equal(pause_depth(src), 0);
	assert_int_equal(n_seqs(dst), 58 + 4); /* pending at the destination, */
	assert_int_equal(n_active(dst), 58);   /* not running */
	assert_int_equal(record_state(dst), KVMIG_REC_PREPARED);
	assert_int_equal(n_records(src), 0);
	assert_int_equal(kvmig_migrate_resolve_pair(dst, src, &rs_st), 0);
	assert_int_equal(rs_st.aborted, 1);
	assert_int_equal(rs_st.in_doubt, 0);
	assert_int_equal(n_seqs(dst), 58);
	assert_int_equal(n_occupied(dst), 3);
	assert_int_equal(n_records(dst), 0);
	drop_pagers();

	/* COMMIT_ACK lost, 58 of 64 slots taken again. */
	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	fill_seqs(dst, 58);
	before = snapshot(src);
	side_init(&rs);
	side_init(&ss);
	ss.fault = "send-ack-lost";
	migrate(&rs, &ss, &rrc, &src_rc);
	assert_int_equal(src_rc, ENOTCONN); /* decided; the receiver did not confirm */
	assert_int_equal(rrc, ENOTCONN);
	assert_int_equal(n_seqs(src), 4);   /* departed: kept, */
	assert_int_equal(n_active(src), 0); /* not running */
	assert_int_equal(record_state(src), KVMIG_REC_DEPARTED);
	assert_int_equal(n_active(dst), 58);
	assert_int_equal(kvmig_migrate_resolve_pair(src, dst, &rs_st), 0);
	assert_int_equal(rs_st.activated, 1);
	assert_int_equal(rs_st.finished, 2);
	assert_int_equal(rs_st.in_doubt, 0);
	assert_int_equal(n_active(dst), 58 + 4);
	assert_int_equal(n_seqs(src), 0);
	assert_int_equal(n_occupied(src), 0);
	assert_int_equal(n_records(src), 0);
	assert_int_equal(n_records(dst), 0);
	assert_int_equal(kvmig_verify(dst, before, NULL), 0);
	kvmig_manifest_free(&before);
	drop_pagers();
}

/* ---- shared secret ---- */

static void set_token(struct side *s, const char *t)
{
	s->o.token = t;
	s->o.token_len = t ? strlen(t) : 0;
}

/*
 * Migrate with these secrets (NULL: none). Returns the sender's stats, so
 * a refusal can be shown to come before the pause and the registration.
 */
static void with_tokens(const char *recv_token, const char *send_token, int *rrc, int *src_rc,
			struct kvmig_migrate_stats *sst)
{
	struct side rs, ss;
	int fds[2];

	side_init(&rs);
	side_init(&ss);
	set_token(&rs, recv_token);
	set_token(&ss, send_token);
	assert_int_equal(pipe(fds), 0);
	ss.stats_fd = fds[1];
	migrate(&rs, &ss, rrc, src_rc);
	close(fds[1]);
	assert_int_equal(read(fds[0], sst, sizeof(*sst)), (ssize_t)sizeof(*sst));
	close(fds[0]);
}

static void test_auth_same_secret(void **state)
{
	struct kvmig_migrate_stats st;
	struct kvmig_manifest *before;
	int rrc, src_rc;

	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	before = snapshot(src);
	with_tokens("correct horse battery staple", "correct horse battery staple", &rrc, &src_rc, &st);
	assert_int_equal(src_rc, 0);
	assert_int_equal(rrc, 0);
	assert_int_equal(st.pages, 18);
	assert_int_equal(kvmig_verify(dst, before, NULL), 0);
	kvmig_manifest_free(&before);
	drop_pagers();
}

/* Wrong secret, or only one side has one: EKEYREJECTED on both sides, and the
 * sender never paused its pager or registered memory. */
static void test_auth_refused(void **state)
{
	static const char *const cases[][2] = {
		{ "correct horse battery staple", "correct horse battery stapler" },
		{ "correct horse battery staple", NULL },
		{ NULL, "correct horse battery staple" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct kvmig_migrate_stats st;
		struct kvmig_digest d0;
		int rrc, src_rc;

		make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
		digest_of(src, &d0);
		with_tokens(cases[i][0], cases[i][1], &rrc, &src_rc, &st);
		assert_int_equal(rrc, EKEYREJECTED);
		assert_int_equal(src_rc, EKEYREJECTED);
		assert_true(st.pause_seconds == 0.0 && st.register_seconds == 0.0);
		check_untouched(&d0, 3, 0);
		drop_pagers();
	}
}

/* ---- the parent plays a misbehaving peer ---- */

static int raw_connect(const char *addr)
{
	struct sockaddr_in sa = { 0 };
	const char *colon = strrchr(addr, ':');
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)atoi(colon + 1));
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void raw_send(int fd, struct kvmig_wbuf *b)
{
	assert_int_equal(send(fd, b->p, b->len, MSG_NOSIGNAL), (ssize_t)b->len);
	b->len = 0;
}

/* Read one frame; returns its type, payload in *p (malloc'd). */
static int raw_recv(int fd, uint8_t **p, uint32_t *len)
{
	uint8_t h[KVMIG_WIRE_HDR_LEN];
	struct kvmig_wire_hdr wh;

	if (recv(fd, h, sizeof(h), MSG_WAITALL) != (ssize_t)sizeof(h))
		return -1;
	assert_int_equal(kvmig_wire_get_hdr(h, &wh), 0);
	*p = malloc(wh.len + 1);
	if (wh.len) /* a zero-length recv would wait for the next segment */
		assert_int_equal(recv(fd, *p, wh.len, MSG_WAITALL), (ssize_t)wh.len);
	*len = wh.len;
	return wh.type;
}

static void hello_of(struct kvmig_pager *p, uint8_t role, struct kvmig_msg_hello *h)
{
	memset(h, 0, sizeof(*h));
	h->role = role;
	enum kvmig_layout layout;

	assert_int_equal(kvmig_pager_meta(p, &h->meta, &layout), 0);
	assert_int_equal(kvmig_pager_format(p, &h->format), 0);
	assert_int_equal(kvmig_meta_half_bytes(&h->meta, &h->half_bytes), 0);
	assert_int_equal(kvmig_pager_identity(p, &h->pager), 0);
	if (role == 0) /* a sender names the migration */
		for (unsigned i = 0; i < sizeof(h->migration.b); i++)
			h->migration.b[i] = (uint8_t)(rand() >> 3);
}

/* After the HELLOs, the four RECORDS messages (sender, receiver, sender,
 * receiver): the raw peer has no records. @sender: it plays the sender. */
static void raw_records(int fd, int sender)
{
	struct kvmig_wbuf b = { 0 };
	uint8_t *p;
	uint32_t len;

	for (int i = 0; i < 4; i++) {
		if ((i % 2 == 0) == !!sender) {
			assert_int_equal(kvmig_wire_put_records(&b, NULL, 0), 0);
			raw_send(fd, &b);
		} else {
			assert_int_equal(raw_recv(fd, &p, &len), KVMIG_MSG_RECORDS);
			free(p);
		}
	}
	kvmig_wbuf_free(&b);
}

/* A real receiver with @timeout_ms (and a SIGALRM every @alarm_ms, if not
 * 0) on a fresh pair of pagers, and the parent connected to it as a sender
 * that has said HELLO; the socket. */
static int raw_sender_start(uint32_t timeout_ms, uint32_t alarm_ms, struct kvmig_listener **l,
			    pid_t *r, struct kvmig_wbuf *b)
{
	struct kvmig_msg_hello h;
	struct side rs;
	int fd;

	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	side_init(&rs);
	rs.o.timeout_ms = timeout_ms;
	rs.alarm_every_ms = alarm_ms;
	assert_int_equal(kvmig_listener_open("127.0.0.1:0", NULL, l), 0);
	*r = fork_receiver(*l, &rs);
	fd = raw_connect(kvmig_listener_addr(*l));
	hello_of(src, 0, &h);
	assert_int_equal(kvmig_wire_put_hello(b, &h), 0);
	raw_send(fd, b);
	return fd;
}

/*
 * Strangers on the receiver's path listener: a silent connection (dropped
 * after JOIN_MS), one with a wrong token, and a second JOIN for a slot
 * already taken are closed; the sender's own JOINs get in whatever their
 * order, and JOINED follows. Then the raw sender aborts: nothing allocated.
 */
static void test_path_intruders(void **state)
{
	struct kvmig_listener *l = NULL;
	struct kvmig_wbuf b = { 0 };
	struct kvmig_msg_hello h;
	struct kvmig_msg_paths pp = { .per_addr = 3 };
	struct side rs;
	int fd, strangers[3], mine[2], type;
	uint8_t *p, c;
	uint32_t len;
	double t0;
	pid_t r;

	if (xport != KVMIG_TRANSPORT_TCP)
		skip(); /* a raw TCP peer */
	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	side_init(&rs);
	rs.o.timeout_ms = 8000;
	assert_int_equal(kvmig_listener_open("127.0.0.1:0", NULL, &l), 0);
	r = fork_receiver(l, &rs);
	fd = raw_connect(kvmig_listener_addr(l));
	hello_of(src, 0, &h);
	h.flags = KVMIG_HELLO_PATHS;
	assert_int_equal(kvmig_wire_put_hello(&b, &h), 0);
	raw_send(fd, &b);
	assert_int_equal(raw_recv(fd, &p, &len), KVMIG_MSG_HELLO);
	free(p);
	raw_records(fd, 1);
	assert_int_equal(kvmig_wire_put_paths(&b, &pp), 0);
	raw_send(fd, &b);
	assert_int_equal(raw_recv(fd, &p, &len), KVMIG_MSG_PATHS);
	assert_int_equal(kvmig_wire_get_paths(p, len, &pp), 0);
	free(p);
	assert_int_equal(pp.per_addr, 3);
	assert_int_equal(pp.n_addrs, 1);
	t0 = kvmig_now();
	strangers[0] = raw_connect(pp.addrs[0]); /* says nothing */
	for (int i = 0; i < 4; i++) {
		/* a wrong token; the sender's slot 2; slot 2 again; slot 1 */
		struct kvmig_msg_join j = { .index = (uint8_t)(i == 3 ? 1 : 2), .total = 3 };
		int sfd = raw_connect(pp.addrs[0]);

		memcpy(j.token, pp.token, sizeof(j.token));
		if (i == 0)
			j.token[5] ^= 0x10;
		assert_int_equal(kvmig_wire_put_join(&b, &j), 0);
		raw_send(sfd, &b);
		if (i == 0 || i == 2)
			strangers[i == 0 ? 1 : 2] = sfd;
		else
			mine[i == 1 ? 1 : 0] = sfd;
	}
	type = raw_recv(fd, &p, &len);
	free(p);
	assert_int_equal(type, KVMIG_MSG_JOINED);
	if (kvmig_now() - t0 > 5.0)
		fail_msg("JOINED came %.2f s after the connections", kvmig_now() - t0);
	for (int i = 0; i < 3; i++) { /* closed by the receiver: end of stream or a reset */
		struct timeval tv = { 5, 0 };

		setsockopt(strangers[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		assert_true(recv(strangers[i], &c, 1, 0) <= 0 && errno != EAGAIN);
		close(strangers[i]);
	}
	assert_int_equal(kvmig_wire_put_abort(&b, ECANCELED, "the test is done"), 0);
	raw_send(fd, &b);
	assert_int_equal(reap(r), ECONNABORTED);
	assert_int_equal(n_occupied(dst), 3);
	close(mine[0]);
	close(mine[1]);
	close(fd);
	kvmig_wbuf_free(&b);
	kvmig_listener_close(&l);
	drop_pagers();
}

/* A sender that says HELLO and then nothing: the receiver times out, also
 * when a timer's signal interrupts its every wait (each must go on with
 * what is left of it, not start again). */
static void test_silent_sender(void **state)
{
	struct kvmig_listener *l = NULL;
	struct kvmig_wbuf b = { 0 };
	double t0 = kvmig_now();
	pid_t r;
	int fd = raw_sender_start(300, 20, &l, &r, &b);

	assert_int_equal(reap(r), ETIMEDOUT);
	if (kvmig_now() - t0 > 2.0)
		fail_msg("the receiver took %.2f s to give up on a silent sender",
			 kvmig_now() - t0);
	assert_int_equal(n_occupied(dst), 3);
	close(fd);
	kvmig_wbuf_free(&b);
	kvmig_listener_close(&l);
	drop_pagers();
}

/*
 * A sender that trickles a frame a byte at a time (150 ms apart), each byte
 * "news" to a per-byte timeout: the receiver must still give up within its
 * timeout, by the handshake's deadline (@after_handshake 0: the RECORDS that
 * should follow the HELLO) or a frame's own (1: an OFFER after a whole
 * handshake and REGIONS).
 */
static void trickle(int after_handshake)
{
	struct kvmig_listener *l = NULL;
	struct kvmig_wbuf b = { 0 };
	struct kvmig_offer_page pg = { 1, 2, 1, NULL };
	struct kvmig_wire_extent ext[2] = { { 0x1000, 32 * 1024 }, { 0x9000, 32 * 1024 } };
	struct kvmig_wire_region one = { 0x1000, 1 << 20, { 1, { 1 } } };
	struct kvmig_msg_offer of = { 0, 1, &pg, NULL };
	uint8_t *p;
	uint32_t len;
	double t0, took;
	int fd, rc = -1, st;
	pid_t r;

	fd = raw_sender_start(500, 0, &l, &r, &b);
	if (after_handshake) {
		assert_int_equal(raw_recv(fd, &p, &len), KVMIG_MSG_HELLO);
		free(p);
		raw_records(fd, 1);
		assert_int_equal(kvmig_wire_put_regions(&b, &(struct kvmig_msg_regions){ 1, &one }),
				 0);
		raw_send(fd, &b);
		pg.ext = ext;
		assert_int_equal(kvmig_wire_put_offer(&b, &of), 0);
	} else {
		assert_int_equal(kvmig_wire_put_records(&b, NULL, 0), 0);
	}
	t0 = kvmig_now();
	for (size_t i = 0; i < b.len && rc < 0; i++) {
		if (send(fd, b.p + i, 1, MSG_NOSIGNAL) != 1)
			break;
		usleep(150 * 1000);
		if (waitpid(r, &st, WNOHANG) == r)
			rc = WIFEXITED(st) ? WEXITSTATUS(st) : 1000;
	}
	if (rc < 0)
		rc = reap(r);
	took = kvmig_now() - t0;
	assert_int_equal(rc, ETIMEDOUT);
	if (took > 2.0) /* 4 x the timeout: bounded, not the peer's pace */
		fail_msg("the receiver took %.2f s to give up on a trickling sender", took);
	assert_int_equal(n_occupied(dst), 3);
	close(fd);
	kvmig_wbuf_free(&b);
	kvmig_listener_close(&l);
	drop_pagers();
}

static void test_trickling_sender(void **state)
{
	trickle(0);
	trickle(1);
}

static int fake_rcvbuf; /* > 0: the fake receiver's socket receive buffer */
static unsigned fake_paths; /* > 1: the fake asks for that many paths */
static int fake_path_fd[KVMIG_WIRE_MAX_PATHS]; /* [0] the first connection */

/* The fake receiver's side of the paths' set-up: listen, answer PATHS,
 * take every JOIN into its slot, say JOINED. */
static void fake_paths_accept(int fd)
{
	struct sockaddr_in sa = { 0 };
	socklen_t sl = sizeof(sa);
	struct kvmig_msg_paths pp = { .per_addr = (uint8_t)fake_paths, .n_addrs = 1,
				      .token = { 4, 2 } };
	struct kvmig_msg_join j;
	struct kvmig_wbuf b = { 0 };
	uint8_t *p;
	uint32_t len;
	int lfd = socket(AF_INET, SOCK_STREAM, 0);

	if (fake_rcvbuf)
		setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &fake_rcvbuf, sizeof(fake_rcvbuf));
	sa.sin_family = AF_INET;
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 8), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	snprintf(pp.addrs[0], sizeof(pp.addrs[0]), "127.0.0.1:%u", ntohs(sa.sin_port));
	assert_int_equal(raw_recv(fd, &p, &len), KVMIG_MSG_PATHS);
	free(p);
	assert_int_equal(kvmig_wire_put_paths(&b, &pp), 0);
	raw_send(fd, &b);
	fake_path_fd[0] = fd;
	for (unsigned i = 1; i < fake_paths; i++) {
		int c = accept(lfd, NULL, NULL);

		assert_true(c >= 0);
		assert_int_equal(raw_recv(c, &p, &len), KVMIG_MSG_JOIN);
		assert_int_equal(kvmig_wire_get_join(p, len, &j), 0);
		free(p);
		fake_path_fd[j.index] = c;
	}
	close(lfd);
	assert_int_equal(kvmig_wire_put_empty(&b, KVMIG_MSG_JOINED), 0);
	raw_send(fd, &b);
	kvmig_wbuf_free(&b);
}

/* Accept a real sender and complete the handshake; returns the socket. */
static int fake_receiver_start(struct kvmig_listener **l, pid_t *s, struct side *ss,
			       struct kvmig_msg_regions *rg, struct kvmig_msg_offer *of)
{
	struct sockaddr_in sa = { 0 };
	socklen_t sl = sizeof(sa);
	struct kvmig_wbuf b = { 0 };
	struct kvmig_msg_hello h;
	char addr[64];
	uint8_t *p;
	uint32_t len;
	int fd, lfd, type;

	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (fake_rcvbuf) /* before listen: the accepted socket's window */
		setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &fake_rcvbuf, sizeof(fake_rcvbuf));
	sa.sin_family = AF_INET;
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(sa.sin_port));
	*l = NULL;
	ss->o.paths = fake_paths > 1 ? fake_paths : 0; /* else one connection */
	*s = fork_sender(addr, ss);
	fd = accept(lfd, NULL, NULL);
	close(lfd);
	assert_true(fd >= 0);
	assert_int_equal(raw_recv(fd, &p, &len), KVMIG_MSG_HELLO);
	free(p);
	hello_of(dst, 1, &h);
	assert_int_equal(kvmig_wire_put_hello(&b, &h), 0);
	raw_send(fd, &b);
	kvmig_wbuf_free(&b);
	raw_records(fd, 0);
	if (fake_paths > 1)
		fake_paths_accept(fd);
	assert_int_equal(raw_recv(fd, &p, &len), KVMIG_MSG_REGIONS);
	assert_int_equal(kvmig_wire_get_regions(p, len, rg), 0);
	free(p);
	type = raw_recv(fd, &p, &len);
	assert_int_equal(type, KVMIG_MSG_OFFER);
	assert_int_equal(kvmig_wire_get_offer(p, len, of), 0);
	free(p);
	return fd;
}

/* A receiver that asks for memory outside the registration: EFAULT. */
static void test_bad_range_request(void **state)
{
	struct kvmig_listener *l;
	struct kvmig_msg_regions rg;
	struct kvmig_msg_offer of;
	struct kvmig_wbuf b = { 0 };
	struct kvmig_digest d0;
	struct side ss;
	pid_t s;
	int fd;

	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	digest_of(src, &d0);
	side_init(&ss);
	fd = fake_receiver_start(&l, &s, &ss, &rg, &of);
	struct kvmig_msg_read_req q = { 0, rg.r[0].addr + rg.r[0].len - 100, 4096, rg.r[0].key };
	assert_int_equal(kvmig_wire_put_read_req(&b, &q), 0);
	raw_send(fd, &b);
	assert_int_equal(reap(s), EFAULT);
	check_untouched(&d0, 3, 0);
	/* A wrong key is refused the same way. */
	close(fd);
	kvmig_msg_offer_free(&of);
	kvmig_msg_regions_free(&rg);
	fd = fake_receiver_start(&l, &s, &ss, &rg, &of);
	q = (struct kvmig_msg_read_req){ 0, of.pages[0].ext[0].addr, 4096, rg.r[0].key };
	q.key.b[q.key.len - 1] ^= 1;
	assert_int_equal(kvmig_wire_put_read_req(&b, &q), 0);
	raw_send(fd, &b);
	assert_int_equal(reap(s), EFAULT);
	check_untouched(&d0, 3, 0);
	close(fd);
	kvmig_msg_offer_free(&of);
	kvmig_msg_regions_free(&rg);
	kvmig_wbuf_free(&b);
	drop_pagers();
}

/*
 * A receiver that asks for every page and then reads a trickle (4 KiB every
 * 50 ms, a 4 KiB window): each of the sender's writes makes a little
 * progress, but the sender must still give up within its timeout and
 * resume its pager, not stay paused for as long as the reader likes.
 */
static void slow_reader(unsigned paths)
{
	struct kvmig_listener *l;
	struct kvmig_msg_regions rg;
	struct kvmig_msg_offer of;
	struct kvmig_wbuf b = { 0 };
	uint32_t ixs[200], id = 0;
	struct kvmig_seq big = { .id = (char *)"big", .page_ixs = ixs, .n_pages = 200 };
	struct side ss;
	char sink[4096];
	double t0;
	int fd, st, rc = -1;
	pid_t s;

	src_capacity = 256;
	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	src_capacity = 64;
	assert_int_equal(kvmig_pager_allocate(src, 200, ixs), 0); /* 12.5 MiB more */
	assert_int_equal(kvmig_pager_install(src, &big, 1), 0);
	side_init(&ss);
	ss.o.timeout_ms = 1000;
	fake_rcvbuf = 4096;
	fake_paths = paths;
	fd = fake_receiver_start(&l, &s, &ss, &rg, &of);
	fake_rcvbuf = 0;
	fake_paths = 0;
	/* Every path asks for every page and reads nothing back. */
	for (unsigned path = 0; path < paths; path++) {
		for (uint32_t i = 0; i < of.n; i++)
			for (uint32_t j = 0; j < of.pages[i].n_ext; j++) {
				const struct kvmig_wire_extent *x = &of.pages[i].ext[j];
				struct kvmig_msg_read_req q = { id++, x->addr, (uint32_t)x->len,
								rg.r[0].key };

				for (uint32_t k = 0; k < rg.n; k++)
					if (x->addr >= rg.r[k].addr &&
					    x->addr - rg.r[k].addr < rg.r[k].len)
						q.key = rg.r[k].key;
				/* this path's own key: its slice of the striped one */
				q.key.len = (uint8_t)(q.key.len / paths);
				memmove(q.key.b, q.key.b + path * q.key.len, q.key.len);
				assert_int_equal(kvmig_wire_put_read_req(&b, &q), 0);
			}
		raw_send(paths > 1 ? fake_path_fd[path] : fd, &b);
	}
	t0 = kvmig_now();
	while (rc < 0 && kvmig_now() - t0 < 10.0) {
		if (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) == 0)
			break;
		usleep(50 * 1000);
		if (waitpid(s, &st, WNOHANG) == s)
			rc = WIFEXITED(st) ? WEXITSTATUS(st) : 1000;
	}
	if (rc < 0)
		rc = reap(s);
	assert_int_equal(rc, ETIMEDOUT);
	/* One timeout, however many paths stall (not one per path). */
	if (kvmig_now() - t0 > 3.0)
		fail_msg("the sender took %.2f s to give up on a reader that takes a trickle "
			 "on %u paths", kvmig_now() - t0, paths);
	assert_int_equal(pause_depth(src), 0);
	assert_int_equal(n_records(src), 0);
	for (unsigned path = 1; path < paths; path++)
		close(fake_path_fd[path]);
	close(fd);
	kvmig_msg_offer_free(&of);
	kvmig_msg_regions_free(&rg);
	kvmig_wbuf_free(&b);
	drop_pagers();
}

static void test_slow_reader(void **state)
{
	slow_reader(1);
}

/* The same over four paths, each asking for every page. */
static void test_slow_reader_paths(void **state)
{
	slow_reader(4);
}

/* A cancel fd that is closed (POLLNVAL) cancels: it never reads as "woken". */
static void test_closed_cancel_fd(void **state)
{
	struct side rs, ss;
	int fds[2], rrc, src_rc;

	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	assert_int_equal(pipe(fds), 0);
	close(fds[0]);
	close(fds[1]);
	side_init(&rs);
	side_init(&ss);
	rs.o.cancel_fd = fds[0]; /* closed */
	migrate(&rs, &ss, &rrc, &src_rc);
	assert_int_equal(rrc, ECANCELED);
	assert_true(src_rc != 0);
	assert_int_equal(n_occupied(dst), 3);
	assert_int_equal(n_seqs(dst), 0);
	assert_int_equal(n_active(src), 4);
	drop_pagers();
}

/* A receiver that accepts and then says nothing: the sender times out and resumes. */
static void test_silent_receiver(void **state)
{
	struct kvmig_listener *l;
	struct kvmig_msg_regions rg;
	struct kvmig_msg_offer of;
	struct kvmig_digest d0;
	struct side ss;
	pid_t s;
	int fd;

	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	digest_of(src, &d0);
	side_init(&ss);
	ss.o.timeout_ms = 300;
	fd = fake_receiver_start(&l, &s, &ss, &rg, &of);
	assert_int_equal(reap(s), ETIMEDOUT);
	check_untouched(&d0, 3, 0);
	close(fd);
	kvmig_msg_offer_free(&of);
	kvmig_msg_regions_free(&rg);
	drop_pagers();
}

/* How fake_sender() misbehaves. */
struct fake {
	int bad_digest;    /* page 9's digest is wrong, so the mismatch persists */
	int corrupt_first; /* the first answer for page 9's first read has a flipped
			    * byte; the re-read gets good bytes */
	int dup;           /* the OFFER lists page 5 twice */
	int drop_late;     /* FINAL, sent once every read was answered (so both pages
			    * are verified by then), names page 5 only */
	int drop_early;    /* FINAL, sent with the OFFER, names page 5 only */
};

/*
 * The parent plays the sender of two pages (source ix 5 and 9) from its own
 * buffer, serving READ_REQs itself, misbehaving as @f says. Returns the
 * receiver's exit code; *page9_reads counts reads of page 9's first extent
 * piece.
 */
static int fake_sender(const struct fake *f, int *page9_reads, char *abort_text)
{
	enum { HALF = 32 * 1024 };
	static uint8_t buf[4 * HALF];
	struct kvmig_listener *l = NULL;
	struct kvmig_wbuf b = { 0 };
	struct kvmig_msg_hello h;
	struct kvmig_msg_regions rg = { 0 };
	struct kvmig_wire_extent ext[4];
	struct kvmig_offer_page pages[2];
	struct kvmig_msg_offer of = { 0, 2, pages, NULL };
	struct kvmig_manifest_page dig[2];
	uint32_t ixs[2] = { 5, 9 };
	struct kvmig_seq seq = { .id = (char *)"s", .page_ixs = ixs, .n_pages = 2,
				 .fill_in_last_page = 3 };
	struct side rs;
	uint8_t *p;
	uint32_t len;
	uint64_t served = 0;
	int fd, type, rc, corrupted = 0;
	pid_t r;

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 131 + 7);
	if (f->dup)
		ixs[1] = ixs[0];
	side_init(&rs);
	assert_int_equal(kvmig_listener_open("127.0.0.1:0", NULL, &l), 0);
	r = fork_receiver(l, &rs);
	fd = raw_connect(kvmig_listener_addr(l));
	kvmig_listener_close(&l);
	hello_of(src, 0, &h);
	assert_int_equal(kvmig_wire_put_hello(&b, &h), 0);
	raw_send(fd, &b);
	assert_int_equal(raw_recv(fd, &p, &len), KVMIG_MSG_HELLO);
	free(p);
	raw_records(fd, 1);
	struct kvmig_wire_region one = { (uint64_t)(uintptr_t)buf, sizeof(buf), { 2, { 4, 2 } } };

	rg.n = 1;
	rg.r = &one;
	for (int i = 0; i < 4; i++)
		ext[i] = (struct kvmig_wire_extent){ (uint64_t)(uintptr_t)(buf + i * HALF), HALF };
	for (int i = 0; i < 2; i++) {
		pages[i] = (struct kvmig_offer_page){ ixs[i], 2, 1, ext + 2 * i };
		dig[i].ix = ixs[i];
		kvmig_digest_compute(buf + 2 * i * HALF, HALF, &dig[i].k);
		kvmig_digest_compute(buf + (2 * i + 1) * HALF, HALF, &dig[i].v);
	}
	if (f->bad_digest)
		dig[1].v.b[0] ^= 1;
	assert_int_equal(kvmig_wire_put_regions(&b, &rg), 0);
	assert_int_equal(kvmig_wire_put_offer(&b, &of), 0);
	assert_int_equal(kvmig_wire_put_digests(&b, dig, 2), 0);
	if (f->drop_late || f->drop_early)
		seq.n_pages = 1;
	if (!f->drop_late)
		assert_int_equal(kvmig_wire_put_final(&b, &seq, 1), 0);
	raw_send(fd, &b);
	*page9_reads = 0;
	abort_text[0] = '\0';
	while ((type = raw_recv(fd, &p, &len)) > 0) {
		if (type == KVMIG_MSG_READ_REQ) {
			struct kvmig_msg_read_req q;
			uint8_t hdr[KVMIG_WIRE_READ_RESP_HDR_LEN];
			uint8_t *data;

			assert_int_equal(kvmig_wire_get_read_req(p, len, &q), 0);
			assert_true(kvmig_rkey_equal(&q.key, &one.key));
			data = (uint8_t *)(uintptr_t)q.addr;
			if (data == buf + 2 * HALF)
				(*page9_reads)++;
			kvmig_wire_read_resp_hdr(hdr, q.id, q.len);
			assert_int_equal(send(fd, hdr, sizeof(hdr), MSG_NOSIGNAL), (ssize_t)sizeof(hdr));
			if (f->corrupt_first && data == buf + 2 * HALF && !corrupted) {
				uint8_t *bad = malloc(q.len);

				memcpy(bad, data, q.len);
				bad[100] ^= 0x40;
				assert_int_equal(send(fd, bad, q.len, MSG_NOSIGNAL), (ssize_t)q.len);
				free(bad);
				corrupted = 1;
			} else {
				assert_int_equal(send(fd, data, q.len, MSG_NOSIGNAL), (ssize_t)q.len);
			}
			/* Behind every answer on the stream: the receiver has
			 * compared both pages when it reads this FINAL. */
			if (f->drop_late && (served += q.len) == sizeof(buf)) {
				assert_int_equal(kvmig_wire_put_final(&b, &seq, 1), 0);
				raw_send(fd, &b);
			}
		} else if (type == KVMIG_MSG_COMMIT) {
			assert_int_equal(kvmig_wire_put_empty(&b, KVMIG_MSG_COMMIT_ACK), 0);
			raw_send(fd, &b);
		} else if (type == KVMIG_MSG_ACTIVATED) {
			assert_int_equal(kvmig_wire_put_empty(&b, KVMIG_MSG_FORGET), 0);
			raw_send(fd, &b);
		} else if (type == KVMIG_MSG_ABORT) {
			struct kvmig_msg_abort ab;

			assert_int_equal(kvmig_wire_get_abort(p, len, &ab), 0);
			strcpy(abort_text, ab.text);
		}
		free(p);
	}
	rc = reap(r);
	close(fd);
	kvmig_wbuf_free(&b);
	return rc;
}

static void test_digest_mismatch_persists(void **state)
{
	char text[KVMIG_WIRE_MAX_TEXT + 1];
	int reads;

	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	assert_int_equal(fake_sender(&(struct fake){ .bad_digest = 1 }, &reads, text), EIO);
	assert_int_equal(reads, 2); /* read, then re-read once */
	assert_non_null(strstr(text, "page 9"));
	assert_non_null(strstr(text, "re-read"));
	assert_int_equal(n_occupied(dst), 3);
	assert_int_equal(n_seqs(dst), 0);
	drop_pagers();
}

/* An OFFER that lists a page twice: refused before any page is allocated. */
static void test_offer_lists_page_twice(void **state)
{
	char text[KVMIG_WIRE_MAX_TEXT + 1];
	int reads;

	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	assert_int_equal(fake_sender(&(struct fake){ .dup = 1 }, &reads, text), EBADMSG);
	assert_int_equal(reads, 0);
	assert_non_null(strstr(text, "page 5 twice"));
	assert_int_equal(n_occupied(dst), 3);
	assert_int_equal(n_seqs(dst), 0);
	drop_pagers();
}

static void test_transient_corruption_reread(void **state)
{
	char text[KVMIG_WIRE_MAX_TEXT + 1];
	struct kvmig_seq_list got;
	struct kvmig_extent e;
	uint32_t n;
	int reads;

	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
	assert_int_equal(fake_sender(&(struct fake){ .corrupt_first = 1 }, &reads, text), 0);
	assert_int_equal(reads, 2);
	assert_int_equal(n_occupied(dst), 5);
	assert_int_equal(kvmig_pager_seqs(dst, &got), 0);
	assert_int_equal(got.n, 1);
	assert_string_equal(got.seqs[0].id, "s");
	assert_int_equal(got.seqs[0].fill_in_last_page, 3);
	/* The second page's K half holds the good bytes, not the flipped ones. */
	assert_int_equal(kvmig_pager_extents(dst, got.seqs[0].page_ixs[1], KVMIG_HALF_K, &e, 1, &n), 0);
	for (size_t i = 0; i < 32 * 1024; i++)
		if (((uint8_t *)e.addr)[i] != (uint8_t)((2 * 32 * 1024 + i) * 131 + 7))
			fail_msg("byte %zu of page 9's K half differs", i);
	kvmig_seq_list_free(&got);
	drop_pagers();
}

/*
 * A page that FINAL leaves out is dropped and freed after the install, also
 * when it was verified already (counted once, so the migration completes
 * instead of waiting for a page that will never be verified) or is still
 * queued (not read at all).
 */
static void test_verified_page_dropped_at_final(void **state)
{
	for (int early = 0; early < 2; early++) {
		char text[KVMIG_WIRE_MAX_TEXT + 1];
		struct kvmig_seq_list got;
		int reads;

		make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
		assert_int_equal(fake_sender(&(struct fake){ .drop_late = !early,
							      .drop_early = early },
					     &reads, text), 0);
		/* Early, FINAL comes with the OFFER: page 9 is dropped before
		 * (or while) it is read. */
		assert_true(early ? reads <= 1 : reads == 1);
		assert_string_equal(text, "");
		assert_int_equal(n_occupied(dst), 4); /* 3 before, page 5; page 9 freed */
		assert_int_equal(kvmig_pager_seqs(dst, &got), 0);
		assert_int_equal(got.n, 1);
		assert_int_equal(got.seqs[0].n_pages, 1);
		kvmig_seq_list_free(&got);
		drop_pagers();
	}
}

/* ---- live migration while a decoding engine writes ---- */

#define LIVE_SEED 4242u

/* The bytes of token slot @slot of one layer of one half of page @ix. */
static const uint8_t *slot_bytes(struct kvmig_pager *p, uint32_t ix, enum kvmig_half half,
				 uint32_t layer, uint32_t slot)
{
	struct kvmig_cache_meta m;
	struct kvmig_extent ext[64];
	uint64_t half_bytes, slab, tb, off;
	uint32_t n = 0;

	assert_int_equal(kvmig_pager_meta(p, &m, NULL), 0);
	assert_int_equal(kvmig_meta_half_bytes(&m, &half_bytes), 0);
	slab = half_bytes / m.n_layers;
	tb = slab / m.page_size_tokens;
	off = layer * slab + slot * tb; /* a half is layer by layer, token by token */
	assert_int_equal(kvmig_pager_extents(p, ix, half, ext, 64, &n), 0);
	for (uint32_t i = 0; i < n; off -= ext[i].len, i++)
		if (off < ext[i].len)
			return (const uint8_t *)ext[i].addr + off;
	fail_msg("slot outside page %u", ix);
	return NULL;
}

static uint64_t seq_tokens(const struct kvmig_seq *q, uint32_t page_tokens)
{
	return q->n_pages ? (uint64_t)(q->n_pages - 1) * page_tokens +
			    (q->fill_in_last_page ? q->fill_in_last_page : page_tokens) : 0;
}

/*
 * Independent of every digest: each token of each sequence of @p holds
 * either what the synthetic pager put there at creation (the same slot of
 * @ref, a fresh pager made with the same options) or, past the sequence's
 * initial length, what the engine writes for that token. Returns the
 * tokens the engine appended, per sequence of @ref (in @ref's order), or
 * UINT64_MAX for a sequence @p does not have.
 */
static void check_decoded(struct kvmig_pager *p, struct kvmig_pager *ref, uint64_t *added)
{
	struct kvmig_seq_list got, init;
	struct kvmig_cache_meta m;
	uint64_t half_bytes;

	assert_int_equal(kvmig_pager_meta(p, &m, NULL), 0);
	assert_int_equal(kvmig_meta_half_bytes(&m, &half_bytes), 0);
	assert_int_equal(kvmig_pager_seqs(p, &got), 0);
	assert_int_equal(kvmig_pager_seqs(ref, &init), 0);
	uint64_t tb = half_bytes / m.n_layers / m.page_size_tokens;
	uint8_t *want = malloc(tb);

	for (uint32_t i = 0; i < init.n; i++) {
		const struct kvmig_seq *r = &init.seqs[i], *q = NULL;
		uint64_t t0 = seq_tokens(r, m.page_size_tokens), t;

		for (uint32_t j = 0; j < got.n; j++)
			if (!strcmp(got.seqs[j].id, r->id))
				q = &got.seqs[j];
		added[i] = UINT64_MAX;
		if (!q)
			continue;
		t = seq_tokens(q, m.page_size_tokens);
		assert_true(t >= t0);
		added[i] = t - t0;
		for (uint64_t k = 0; k < t; k++) {
			uint32_t pg = (uint32_t)(k / m.page_size_tokens);
			uint32_t slot = (uint32_t)(k % m.page_size_tokens);

			for (int half = 0; half < 2; half++) {
				for (uint32_t l = 0; l < m.n_layers; l++) {
					const uint8_t *have = slot_bytes(p, q->page_ixs[pg], half, l, slot);

					if (k < t0)
						memcpy(want, slot_bytes(ref, r->page_ixs[pg], half, l, slot), tb);
					else
						kvmig_synth_token_bytes(LIVE_SEED, r->id, k, half, l, want, tb);
					if (memcmp(have, want, tb))
						fail_msg("%s: token %llu (%s, layer %u) differs", r->id,
							 (unsigned long long)k, k < t0 ? "initial" : "decoded", l);
				}
			}
		}
	}
	free(want);
	kvmig_seq_list_free(&got);
	kvmig_seq_list_free(&init);
}

/* A pager like make_pagers()' initial source, in process memory. */
static struct kvmig_pager *reference_pager(void)
{
	struct kvmig_synth_opts o;
	struct kvmig_pager *p = NULL;

	kvmig_synth_opts_init(&o);
	small_meta(&o.meta);
	o.capacity_pages = src_capacity;
	o.n_seqs = 4;
	o.pages_per_seq = 6;
	o.shared_prefix_pages = 2;
	assert_int_equal(kvmig_synth_create(&o, &p), 0);
	return p;
}

/* Two engines on the source: seq-0 finishes after 5 tokens, the rest grow. */
static void start_engines(struct kvmig_synth_engine *e[2])
{
	static const char *const first[] = { "seq-0" };
	static const char *const rest[] = { "seq-1", "seq-2", "seq-3" };
	struct kvmig_synth_engine_opts eo;

	kvmig_synth_engine_opts_init(&eo);
	eo.seed = LIVE_SEED;
	eo.tokens_per_second = 100;
	eo.max_tokens = 5;
	eo.seq_ids = first;
	eo.n_seq_ids = 1;
	assert_int_equal(kvmig_synth_engine_start(src, &eo, &e[0]), 0);
	eo.tokens_per_second = xport == KVMIG_TRANSPORT_TCP ? 3000 : 600;
	eo.max_tokens = 0;
	eo.seq_ids = rest;
	eo.n_seq_ids = 3;
	assert_int_equal(kvmig_synth_engine_start(src, &eo, &e[1]), 0);
	/* The tests fork next. A thread still starting up may hold an allocator
	 * lock (ASan's is not fork-safe), which the child would inherit locked:
	 * wait until both engines have written a token, i.e. are running. */
	for (int i = 0; i < 2; i++) {
		struct kvmig_synth_engine_stats es = { 0 };

		for (int t = 0; t < 5000 && !es.tokens; t++) {
			kvmig_synth_engine_stats(e[i], &es);
			if (!es.tokens)
				usleep(1000);
		}
		assert_true(es.tokens > 0);
	}
}

/* Roomy pagers for sequences that grow, the engines on the source; returns
 * the reference pager for check_decoded(). */
static struct kvmig_pager *live_pagers(struct kvmig_synth_engine *e[2])
{
	struct kvmig_pager *ref;

	src_capacity = 1024;
	make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 1024, 0);
	ref = reference_pager();
	start_engines(e);
	return ref;
}

/* After the engines stopped: back to the usual pagers. */
static void live_done(struct kvmig_pager **ref)
{
	kvmig_pager_destroy(ref);
	drop_pagers();
	src_capacity = 64;
}

/*
 * Live, move mode, max_downtime 0 so every pre-copy round runs while pages
 * are dirty; each round after round 0 waits 5 ms first (fault point
 * send-round-stall), so the engine has written some, however fast the machine.
 */
#define LIVE_STALL "send-round-stall:5"
static void live_side_init(struct side *ss, int stats_fd)
{
	side_init(ss);
	ss->o.live = 1;
	ss->o.max_rounds = 4;
	ss->o.max_downtime_ms = 0;
	ss->stats_fd = stats_fd;
	ss->fault = LIVE_STALL;
}

static void live(const char *remove_at_round)
{
	static const char *const ids[] = { "seq-0", "seq-1", "seq-2", "seq-3" };
	struct kvmig_synth_engine *e[2];
	struct kvmig_migrate_stats st;
	struct kvmig_pager *ref;
	struct kvmig_synth_engine_stats es;
	uint64_t added[4], moved;
	struct side rs, ss;
	int rrc, src_rc, fds[2];

	ref = live_pagers(e);
	usleep(20000);
	assert_int_equal(pipe(fds), 0);
	side_init(&rs);
	live_side_init(&ss, fds[1]);
	ss.remove_at_round = remove_at_round;
	migrate(&rs, &ss, &rrc, &src_rc);
	assert_int_equal(read(fds[0], &st, sizeof(st)), (ssize_t)sizeof(st));
	close(fds[0]);
	close(fds[1]);
	kvmig_synth_engine_stats(e[1], &es);
	kvmig_synth_engine_stop(&e[0]);
	assert_int_equal(src_rc, 0);
	assert_int_equal(rrc, 0);
	/* Up to four pre-copy rounds while the engine wrote (one that finds
	 * nothing dirty ends them early), then the paused one. */
	assert_true(st.n_rounds >= 3 && st.n_rounds <= 5);
	assert_true(st.round[0].pages >= 18); /* the sequences grew before it began */
	assert_true(st.round[1].pages > 0);
	assert_true(st.bytes_sent > st.bytes);
	assert_true(es.pages_added > 0); /* sequences grew during the rounds */
	/* Moved: the engine found its sequences gone after the pause. */
	assert_int_equal(n_seqs(src), 0);
	assert_int_equal(pause_depth(src), 0);
	check_decoded(dst, ref, added);
	assert_int_equal(added[0], 5); /* seq-0 finished, in its final state */
	for (int i = 1; i < 4; i++) {
		if (remove_at_round && i == 3) {
			assert_true(added[i] == UINT64_MAX); /* ended during the rounds */
			continue;
		}
		/* Exactly the tokens written up to the pause: none was lost. */
		assert_int_equal(kvmig_synth_engine_seq_tokens(e[1], ids[i], &moved), 0);
		assert_int_equal(added[i], moved);
		assert_true(moved > 0);
	}
	kvmig_synth_engine_stop(&e[1]);
	/* Nothing else stayed allocated: the 3 busy pages and the sequences'. */
	{
		struct kvmig_seq_list l;
		uint8_t *seen = calloc(1024, 1);
		uint32_t uniq = 0;

		assert_int_equal(kvmig_pager_seqs(dst, &l), 0);
		assert_int_equal(l.n, remove_at_round ? 3 : 4);
		for (uint32_t i = 0; i < l.n; i++)
			for (uint32_t j = 0; j < l.seqs[i].n_pages; j++)
				uniq += !seen[l.seqs[i].page_ixs[j]]++;
		assert_int_equal(n_occupied(dst), 3 + uniq);
		free(seen);
		kvmig_seq_list_free(&l);
	}
	live_done(&ref);
}

static void test_live_while_decoding(void **state)
{
	live(NULL);
}

/* A sequence the engine ends during the rounds is not migrated; the pages
 * the destination already pulled for it are freed there. */
static void test_live_sequence_ends_during_rounds(void **state)
{
	live("seq-3");
}

/*
 * Abort in a pre-copy round, on either side, or (send-cut) in the paused
 * final round: the source keeps running (the engine goes on decoding into
 * every sequence) and is intact; the destination has nothing. Then the same
 * live migration succeeds.
 */
static void test_live_abort_in_rounds(void **state)
{
	static const struct { char side; const char *fault; } cases[] = {
		{ 's', "send-round:0" }, { 's', "send-round:2" }, { 'r', "recv-round" },
		{ 's', "send-cut" },
	};

#ifndef KVMIG_FAULT_INJECTION
	skip();
#endif
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct kvmig_synth_engine *e[2];
		struct kvmig_synth_engine_stats es0, es1;
		struct kvmig_pager *ref;
		uint64_t added[4];
		struct side rs, ss;
		int rrc, src_rc;

		ref = live_pagers(e);
		char fault[64];

		side_init(&rs);
		live_side_init(&ss, 0);
		rs.o.timeout_ms = ss.o.timeout_ms = 2000;
		snprintf(fault, sizeof(fault), "%s,%s", cases[c].fault, LIVE_STALL);
		if (cases[c].side == 'r')
			rs.fault = cases[c].fault;
		else
			ss.fault = fault;
		migrate(&rs, &ss, &rrc, &src_rc);
		if (rrc == 0 || src_rc == 0 || rrc >= 1000 || src_rc >= 1000)
			fail_msg("%s: receiver exit %d, sender exit %d", cases[c].fault, rrc, src_rc);
		assert_int_equal(n_seqs(dst), 0);
		assert_int_equal(n_occupied(dst), 3);
		assert_int_equal(pause_depth(src), 0);
		/* Still decoding after the abort. */
		kvmig_synth_engine_stats(e[1], &es0);
		usleep(50000);
		kvmig_synth_engine_stats(e[1], &es1);
		assert_true(es1.tokens > es0.tokens);
		/* Retried without the fault, it goes through. */
		side_init(&rs);
		live_side_init(&ss, 0);
		migrate(&rs, &ss, &rrc, &src_rc);
		assert_int_equal(src_rc, 0);
		assert_int_equal(rrc, 0);
		kvmig_synth_engine_stop(&e[0]);
		kvmig_synth_engine_stop(&e[1]);
		check_decoded(dst, ref, added);
		for (int i = 0; i < 4; i++)
			assert_true(added[i] != UINT64_MAX);
		live_done(&ref);
	}
}

int main(void)
{
	/* Every transport. */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_move_page_major),
		cmocka_unit_test(test_full_copy_page_major),
		cmocka_unit_test(test_full_move_layer_major),
		cmocka_unit_test(test_subset_shared_prefix),
		cmocka_unit_test(test_reads_coalesced),
		cmocka_unit_test(test_two_migrations_one_listener),
		cmocka_unit_test(test_bad_options),
		cmocka_unit_test(test_second_migration_refused),
		cmocka_unit_test(test_sequence_replaced_before_reserve),
		cmocka_unit_test(test_longest_id),
		cmocka_unit_test(test_meta_mismatch),
		cmocka_unit_test(test_layout_mismatch),
		cmocka_unit_test(test_destination_out_of_pages),
		cmocka_unit_test(test_unknown_sequence),
		cmocka_unit_test(test_receiver_killed_mid_transfer),
		cmocka_unit_test(test_sender_killed_mid_transfer),
		cmocka_unit_test(test_fault_bad_digest),
		cmocka_unit_test(test_paths_striped),
		cmocka_unit_test(test_path_dies_mid_transfer),
		cmocka_unit_test(test_path_wrong_token),
		cmocka_unit_test(test_path_intruders),
		cmocka_unit_test(test_digests_ahead),
		cmocka_unit_test(test_hash_threads),
		cmocka_unit_test(test_stale_kept_digest_aborts),
		cmocka_unit_test(test_hash_ahead_while_decoding),
		cmocka_unit_test(test_fault_bad_key),
		cmocka_unit_test(test_fault_read_unoffered),
		cmocka_unit_test(test_fault_matrix),
		cmocka_unit_test(test_commit_message_lost),
		cmocka_unit_test(test_resolved_while_running),
		cmocka_unit_test(test_abort_cleanup_fails),
		cmocka_unit_test(test_auth_same_secret),
		cmocka_unit_test(test_auth_refused),
		cmocka_unit_test(test_live_while_decoding),
		cmocka_unit_test(test_live_sequence_ends_during_rounds),
		cmocka_unit_test(test_live_abort_in_rounds),
	};
	/* The parent speaks the wire protocol over a raw socket: tcp only. */
	const struct CMUnitTest tcp_tests[] = {
		cmocka_unit_test(test_silent_sender),
		cmocka_unit_test(test_trickling_sender),
		cmocka_unit_test(test_silent_receiver),
		cmocka_unit_test(test_slow_reader),
		cmocka_unit_test(test_slow_reader_paths),
		cmocka_unit_test(test_closed_cancel_fd),
		cmocka_unit_test(test_bad_range_request),
		cmocka_unit_test(test_digest_mismatch_persists),
		cmocka_unit_test(test_transient_corruption_reread),
		cmocka_unit_test(test_verified_page_dropped_at_final),
		cmocka_unit_test(test_offer_lists_page_twice),
	};

	int failed = harness_init("it");

	if (failed)
		return failed;
	failed = cmocka_run_group_tests_name(xport == KVMIG_TRANSPORT_TCP ? "migrate tcp" :
					     "migrate rdma", tests, NULL, harness_unlink_pagers);
	if (xport == KVMIG_TRANSPORT_TCP)
		failed += cmocka_run_group_tests_name("tcp provider", tcp_tests, NULL, harness_unlink_pagers);
	return failed ? 1 : 0;
}
