/* SPDX-License-Identifier: MIT */
/*
 * tests/integration/test_crash.c - the crash matrix (docs/PROTOCOL.md,
 * "Crash safety"). A sender or a receiver SIGKILLs itself at one step of a
 * migration ($KVMIG_FAULT die-POINT, util/fault.c), for move and copy,
 * stop-and-copy and live, over tcp here and over rdma in the soft-RoCE
 * guest. The survivor ends by itself (an error, in doubt, or success). Then
 * the outcome is resolved from the pagers' records, never from an exit
 * status, in one of two ways:
 *   - kvmig_migrate_resolve_pair(): both pagers are on this host;
 *   - a fresh sender and receiver between the same two pagers, whose
 *     handshake exchanges the records and resolves them by itself.
 * The invariant is then read from the pagers alone:
 *   - move: every sequence runnable on exactly one side, all on the same
 *     side; copy: runnable on the source, and at the destination all of
 *     them or none; wherever they run, byte for byte the source's before
 *     (digests of every page);
 *   - the side the protocol says: the source before the decision, the
 *     destination after it;
 *   - no page allocated that no sequence uses, on either side (beyond the
 *     three the test holds at the destination), no record, no pause left.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "harness.h"

/* Where the sequences must end up after a death at that point. */
enum outcome {
	SOURCE, /* the decision was not taken: the source keeps them */
	DEST,   /* it was: the destination runs them */
	EITHER, /* the death races the decision's message (both are right) */
};

struct point {
	char side;         /* 's' the sender dies, 'r' the receiver */
	const char *name;  /* $KVMIG_FAULT die-NAME */
	enum outcome out;
	int move_only;     /* copy mode never reaches it */
};

static const struct point points[] = {
	{ 's', "send-record", SOURCE, 0 },      /* record written, nothing offered */
	{ 's', "send-transfer", SOURCE, 0 },    /* every page offered, reads under way */
	{ 's', "send-commit-recv", SOURCE, 0 }, /* the receiver is prepared; no decision */
	{ 's', "send-tagged", SOURCE, 0 },      /* sequences reserved (tagged), record SENDING */
	{ 's', "send-decided", DEST, 0 },       /* decision recorded, not sent */
	{ 's', "send-ack-sent", DEST, 0 },      /* decision sent */
	{ 's', "send-activated-recv", DEST, 0 },/* the receiver runs them; ours not released */
	{ 's', "die-synth-remove", DEST, 1 },   /* inside the pager, releasing our copy */
	{ 's', "send-released", DEST, 0 },      /* released, record closed, no FORGET sent */
	{ 'r', "recv-record", SOURCE, 0 },      /* record written, nothing allocated */
	{ 'r', "recv-allocated", SOURCE, 0 },   /* pages allocated */
	{ 'r', "recv-mid-reads", SOURCE, 0 },   /* a page landed */
	{ 'r', "recv-verified", SOURCE, 0 },    /* every page verified */
	{ 'r', "die-synth-install", SOURCE, 0 },/* inside the pager, installing as pending */
	{ 'r', "recv-pending", SOURCE, 0 },     /* installed as pending */
	{ 'r', "recv-prepared", SOURCE, 0 },    /* record PREPARED, the sender not told */
	{ 'r', "recv-commit-sent", EITHER, 0 }, /* told: it may decide before it sees the death */
	{ 'r', "recv-ack-recv", DEST, 0 },      /* the decision arrived, not applied */
	{ 'r', "recv-activated", DEST, 0 },     /* activated, the sender not told */
	{ 'r', "recv-activated-sent", DEST, 0 },/* told */
	{ 'r', "recv-forget-recv", DEST, 0 },   /* the sender released its copy */
};

/* The three pages the harness holds at the destination (make_pagers). */
#define DST_BUSY 3u

static uint32_t timeout_ms(void)
{
	return xport == KVMIG_TRANSPORT_TCP ? 1500 : 6000; /* emulated RDMA is slow */
}

/* How many pages @p's sequences use (each once), and check @p has no
 * sequence that is not runnable. */
static uint32_t used_pages(struct kvmig_pager *p)
{
	struct kvmig_seq_list l = { 0 };
	uint8_t seen[256] = { 0 };
	uint32_t n = 0;

	assert_int_equal(kvmig_pager_seqs(p, &l), 0);
	for (uint32_t i = 0; i < l.n; i++) {
		if (l.seqs[i].state != KVMIG_SEQ_ACTIVE)
			fail_msg("sequence %s is %s after resolution", l.seqs[i].id,
				 kvmig_seq_state_name(l.seqs[i].state));
		for (uint32_t j = 0; j < l.seqs[i].n_pages; j++) {
			uint32_t ix = l.seqs[i].page_ixs[j];

			assert_true(ix < sizeof(seen));
			n += !seen[ix];
			seen[ix] = 1;
		}
	}
	kvmig_seq_list_free(&l);
	return n;
}

/* How many of @m's sequences @p runs. */
static uint32_t holds(struct kvmig_pager *p, const struct kvmig_manifest *m)
{
	struct kvmig_seq_list l = { 0 };
	uint32_t n = 0;

	assert_int_equal(kvmig_pager_seqs(p, &l), 0);
	for (uint32_t i = 0; i < m->n_seqs; i++)
		for (uint32_t j = 0; j < l.n; j++)
			n += !strcmp(l.seqs[j].id, m->seqs[i].id) && l.seqs[j].state == KVMIG_SEQ_ACTIVE;
	kvmig_seq_list_free(&l);
	return n;
}

/* The invariant, from the pagers alone; @what names the case. */
static void check_invariant(const struct kvmig_manifest *before, int move, enum outcome want,
			    const char *what)
{
	uint32_t n = before->n_seqs, at_src = holds(src, before), at_dst = holds(dst, before);
	enum outcome got = at_dst ? DEST : SOURCE;

	if (move && !((at_src == n && at_dst == 0) || (at_src == 0 && at_dst == n)))
		fail_msg("%s: %u of %u sequences run at the source and %u at the destination", what,
			 at_src, n, at_dst);
	if (!move && (at_src != n || (at_dst != 0 && at_dst != n)))
		fail_msg("%s (copy): %u of %u run at the source, %u at the destination", what, at_src,
			 n, at_dst);
	if (want != EITHER && got != want)
		fail_msg("%s: the sequences ended at the %s; the protocol says the %s", what,
			 got == DEST ? "destination" : "source",
			 want == DEST ? "destination" : "source");
	if (at_src && kvmig_verify(src, before, NULL) != 0)
		fail_msg("%s: the source's sequences changed: %s", what, kvmig_last_error());
	if (at_dst && kvmig_verify(dst, before, NULL) != 0)
		fail_msg("%s: the destination's copy differs: %s", what, kvmig_last_error());
	if (n_occupied(src) != used_pages(src))
		fail_msg("%s: the source has %u pages allocated, its sequences use %u", what,
			 n_occupied(src), used_pages(src));
	if (n_occupied(dst) != used_pages(dst) + DST_BUSY)
		fail_msg("%s: the destination has %u pages allocated, its sequences use %u (+%u "
			 "held by the test)", what, n_occupied(dst), used_pages(dst), DST_BUSY);
	if (n_records(src) || n_records(dst))
		fail_msg("%s: records left: %u at the source, %u at the destination", what,
			 n_records(src), n_records(dst));
	assert_int_equal(pause_depth(src), 0);
}

/* One migration in which @pt's side dies; returns the survivor's exit. */
static int crash(const struct point *pt, int move, int live)
{
	struct side rs, ss;
	char fault[64];
	int rrc, src_rc, died;

	side_init(&rs);
	side_init(&ss);
	rs.o.timeout_ms = ss.o.timeout_ms = timeout_ms();
	ss.o.mode = move ? KVMIG_MODE_MOVE : KVMIG_MODE_COPY;
	ss.o.live = live;
	snprintf(fault, sizeof(fault), "%s%s", strncmp(pt->name, "die-", 4) ? "die-" : "",
		 pt->name);
	(pt->side == 'r' ? &rs : &ss)->fault = fault;
	migrate(&rs, &ss, &rrc, &src_rc);
	died = pt->side == 'r' ? rrc : src_rc;
	if (died != 1000 + SIGKILL)
		fail_msg("%s: the %s was to die there but exited %d", pt->name,
			 pt->side == 'r' ? "receiver" : "sender", died);
	return pt->side == 'r' ? src_rc : rrc;
}

static void case_name(char *buf, size_t len, const struct point *pt, int move, int live,
		      const char *how)
{
	snprintf(buf, len, "%s dies at %s (%s, %s; %s)", pt->side == 'r' ? "receiver" : "sender",
		 pt->name, move ? "move" : "copy", live ? "live" : "stop-and-copy", how);
}

/* Resolved with both pagers at hand: kvmig_migrate_resolve_pair(). */
static void matrix_pair(int move, int live)
{
	unsigned n = 0;

	for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
		const struct point *pt = &points[i];
		struct kvmig_resolve_stats st;
		struct kvmig_manifest *before;
		char what[160];

		if (pt->move_only && !move)
			continue;
		case_name(what, sizeof(what), pt, move, live, "resolved from both pagers");
		make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
		before = snapshot(src);
		crash(pt, move, live);
		if (kvmig_migrate_resolve_pair(src, dst, &st) != 0)
			fail_msg("%s: resolution failed: %s", what, kvmig_last_error());
		if (st.in_doubt)
			fail_msg("%s: %u records still in doubt", what, st.in_doubt);
		check_invariant(before, move, pt->out, what);
		kvmig_manifest_free(&before);
		drop_pagers();
		n++;
	}
	printf("crash matrix (%s, %s, resolved from both pagers): %u deaths, each resolved, "
	       "invariant held\n", move ? "move" : "copy", live ? "live" : "stop-and-copy", n);
}

/*
 * Resolved by the two sides reconnecting: a fresh sender and receiver
 * between the same pagers (no faults). Their handshake settles the old
 * records first; then the new migration moves whatever the source still
 * runs (nothing, if the first one committed).
 */
static void matrix_reconnect(int live)
{
	unsigned n = 0;

	for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
		const struct point *pt = &points[i];
		struct kvmig_manifest *before;
		struct side rs, ss;
		char what[160];
		int rrc, src_rc;

		case_name(what, sizeof(what), pt, 1, live, "resolved by reconnecting");
		make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
		before = snapshot(src);
		crash(pt, 1, live);
		side_init(&rs);
		side_init(&ss);
		rs.o.timeout_ms = ss.o.timeout_ms = timeout_ms();
		ss.o.live = live;
		migrate(&rs, &ss, &rrc, &src_rc);
		if (rrc || src_rc)
			fail_msg("%s: the second migration ended with receiver %d, sender %d", what,
				 rrc, src_rc);
		/* Either way, everything runs at the destination now. */
		check_invariant(before, 1, DEST, what);
		kvmig_manifest_free(&before);
		drop_pagers();
		n++;
	}
	printf("crash matrix (move, %s, resolved by reconnecting): %u deaths, invariant held\n",
	       live ? "live" : "stop-and-copy", n);
}

/*
 * Resolved by the two sides reconnecting the other way: a migration from
 * the destination's pager to the source's, of a sequence neither has (it
 * fails after its handshake, which resolved the old records). Here the
 * pager that was the destination speaks first in the RECORDS exchange.
 */
static void matrix_reconnect_reverse(int live)
{
	static const char *const none[] = { "no-such-sequence" };
	unsigned n = 0;

	for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
		const struct point *pt = &points[i];
		struct kvmig_manifest *before;
		struct side rs, ss;
		char what[160];
		int rrc, src_rc;

		case_name(what, sizeof(what), pt, 1, live, "resolved by reconnecting the other way");
		make_pagers(KVMIG_LAYOUT_PAGE_MAJOR, 64, 0);
		before = snapshot(src);
		crash(pt, 1, live);
		swap_pagers();
		side_init(&rs);
		side_init(&ss);
		rs.o.timeout_ms = ss.o.timeout_ms = timeout_ms();
		ss.o.seq_ids = none;
		ss.o.n_seq_ids = 1;
		migrate(&rs, &ss, &rrc, &src_rc);
		swap_pagers();
		if (src_rc != ENOENT)
			fail_msg("%s: the reverse migration ended with receiver %d, sender %d", what,
				 rrc, src_rc);
		check_invariant(before, 1, pt->out, what);
		kvmig_manifest_free(&before);
		drop_pagers();
		n++;
	}
	printf("crash matrix (move, %s, resolved by reconnecting the other way): %u deaths, "
	       "invariant held\n", live ? "live" : "stop-and-copy", n);
}

static void test_move_stop_and_copy(void **state)
{
	matrix_pair(1, 0);
}

static void test_copy_stop_and_copy(void **state)
{
	matrix_pair(0, 0);
}

static void test_move_live(void **state)
{
	matrix_pair(1, 1);
}

static void test_copy_live(void **state)
{
	matrix_pair(0, 1);
}

static void test_reconnect_stop_and_copy(void **state)
{
	matrix_reconnect(0);
}

static void test_reconnect_live(void **state)
{
	matrix_reconnect(1);
}

static void test_reconnect_reverse(void **state)
{
	matrix_reconnect_reverse(0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_move_stop_and_copy),
		cmocka_unit_test(test_copy_stop_and_copy),
		cmocka_unit_test(test_move_live),
		cmocka_unit_test(test_copy_live),
		cmocka_unit_test(test_reconnect_stop_and_copy),
		cmocka_unit_test(test_reconnect_live),
		cmocka_unit_test(test_reconnect_reverse),
	};
	int ret = harness_init("crash");

#ifndef KVMIG_FAULT_INJECTION
	fprintf(stderr, "built without fault injection: the crash matrix cannot run\n");
	return 77;
#endif
	if (ret)
		return ret;
	return cmocka_run_group_tests_name(xport == KVMIG_TRANSPORT_TCP ? "crash tcp" :
					   "crash rdma", tests, NULL, harness_unlink_pagers) ? 1 : 0;
}
