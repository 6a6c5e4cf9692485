/* SPDX-License-Identifier: MIT */
/*
 * transport/recv_msgs.c - the sender's messages as the receiver takes them
 * during the transfer: REGIONS (what it may read), OFFER (allocate, queue),
 * ROUND (live), DIGESTS, FINAL (the sequences; the pages none uses are
 * dropped). Each checks the order and every field against what came before
 * (docs/PROTOCOL.md); a violation is EBADMSG naming it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kvmig/cas.h>

#include "util/internal.h"
#include "transport/recv_internal.h"

/* ---- control messages ---- */

/* The sender's registrations (a live sender adds some each round), sorted
 * by address for find_region(). */
int recv_take_regions(struct receiver *r, const struct xport_msg *m)
{
	struct kvmig_msg_regions add;
	struct rregion *nr = NULL;
	struct kvmig_rkey *nk = NULL;
	uint32_t n;
	int ret;

	if (r->xfer == XFER_FINAL || (!r->live && r->have_regions))
		return kvmig_err(-EBADMSG, "sender sent REGIONS %s",
				 r->xfer == XFER_FINAL ? "after its FINAL" :
				 "twice in a stop-and-copy migration");
	if ((ret = kvmig_wire_get_regions(m->payload, m->hdr.len, &add)) < 0)
		return ret;
	n = r->n_rg + add.n;
	if (n > KVMIG_WIRE_MAX_REGIONS) {
		kvmig_msg_regions_free(&add);
		return kvmig_err(-EBADMSG, "sender registered more than %u regions",
				 KVMIG_WIRE_MAX_REGIONS);
	}
	/* Both grow together: a region's key index is its arrival order. */
	if ((nr = realloc(r->rg, sizeof(*nr) * (n ? n : 1))))
		r->rg = nr;
	if ((nk = realloc(r->keys, sizeof(*nk) * (n ? n : 1))))
		r->keys = nk;
	if (!nr || !nk) {
		kvmig_msg_regions_free(&add);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < add.n; i++) {
		r->keys[r->n_rg] = add.r[i].key;
		r->rg[r->n_rg] = (struct rregion){ add.r[i], r->n_rg };
		r->n_rg++;
	}
	kvmig_msg_regions_free(&add);
	r->have_regions = 1;
	qsort(r->rg, r->n_rg, sizeof(*r->rg), kvmig_wire_region_cmp);
	return 0;
}

/* The registration holding [addr, addr + len): 0 and its key's index, or -1. */
static int find_region(const struct receiver *r, uint64_t addr, uint64_t len, uint32_t *key_ix)
{
	uint32_t lo = 0, hi = r->n_rg;

	while (lo < hi) { /* the last region starting at or before addr */
		uint32_t mid = lo + (hi - lo) / 2;

		if (r->rg[mid].w.addr <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return -1;
	const struct rregion *g = &r->rg[lo - 1];

	if (len <= g->w.len && addr - g->w.addr <= g->w.len - len) {
		*key_ix = g->key_ix;
		return 0;
	}
	return -1;
}

/* -EBADMSG naming a page @m lists twice, else 0. */
static int offer_distinct(const struct kvmig_msg_offer *m)
{
	uint32_t *ixs = malloc(sizeof(*ixs) * (m->n ? m->n : 1));
	int ret = 0;

	if (!ixs)
		return -ENOMEM;
	for (uint32_t i = 0; i < m->n; i++)
		ixs[i] = m->pages[i].ix;
	qsort(ixs, m->n, sizeof(*ixs), kvmig_cmp_u32);
	for (uint32_t i = 1; i < m->n && !ret; i++)
		if (ixs[i] == ixs[i - 1])
			ret = kvmig_err(-EBADMSG, "OFFER lists source page %u twice", ixs[i]);
	free(ixs);
	return ret;
}

static int take_offer(struct receiver *r, const struct xport_msg *msg)
{
	struct kvmig_msg_offer m;
	uint32_t *dst = NULL, n_new = 0, k = 0;
	uint64_t ext_total = 0;
	int ret;

	if (r->xfer == XFER_FINAL)
		return kvmig_err(-EBADMSG, "sender sent an OFFER after FINAL");
	if ((ret = KVMIG_FAULT_FAIL("recv-alloc")) < 0)
		return ret;
	if ((ret = kvmig_wire_get_offer(msg->payload, msg->hdr.len, &m)) < 0)
		return ret;
	if ((m.round != 0 && !r->live) || m.round < r->round.round || r->xfer != XFER_OFFERS) {
		ret = kvmig_err(-EBADMSG, "OFFER of round %u %s", m.round,
				r->xfer == XFER_DIGESTS ? "after DIGESTS" :
				!r->live ? "in a stop-and-copy migration" :
				r->xfer == XFER_ROUND ? "before the last ROUND was answered" :
				"after a later round");
		goto out;
	}
	r->round.round = m.round;
	/* Check everything before allocating a page: no page twice (sorted:
	 * an OFFER may list 65,536), then each page. */
	if ((ret = offer_distinct(&m)) < 0)
		goto out;
	for (uint32_t i = 0; i < m.n; i++) {
		const struct kvmig_offer_page *op = &m.pages[i];
		uint64_t sum[2] = { 0, 0 };
		uint32_t key;
		int known = recv_slot_find(r, op->ix);

		/* A live sender offers a page again once it changed; by then the
		 * last copy must have landed (the round was answered). */
		if (known >= 0 && (r->pg[known].round == m.round || r->pg[known].state != RP_LANDED)) {
			ret = kvmig_err(-EBADMSG, "OFFER lists source page %u twice in round %u",
					op->ix, m.round);
			goto out;
		}
		n_new += known < 0;
		for (uint32_t j = 0; j < op->n_ext; j++) {
			if (find_region(r, op->ext[j].addr, op->ext[j].len, &key) < 0) {
				ret = kvmig_err(-EBADMSG, "OFFER page %u extent %u lies outside the "
						"sender's registered regions", op->ix, j);
				goto out;
			}
			if (kvmig_add_u64(sum[j >= op->n_ext / 2], op->ext[j].len,
					  &sum[j >= op->n_ext / 2]) < 0)
				sum[j >= op->n_ext / 2] = UINT64_MAX; /* refused just below */
		}
		if (sum[0] != r->hello.half_bytes || sum[1] != r->hello.half_bytes) {
			ret = kvmig_err(-EBADMSG, "OFFER page %u has K / V extents of %llu / %llu "
					"bytes; a half is %llu", op->ix, (unsigned long long)sum[0],
					(unsigned long long)sum[1],
					(unsigned long long)r->hello.half_bytes);
			goto out;
		}
		ext_total += op->n_ext;
	}
	if (r->n + n_new > KVMIG_MAX_PAGES) {
		ret = kvmig_err(-EBADMSG, "sender offers more than %u pages", KVMIG_MAX_PAGES);
		goto out;
	}
	ret = -ENOMEM;
	if (r->n + n_new > r->cap) {
		uint32_t cap = KVMIG_MAX(r->cap * 2, r->n + n_new);
		struct rpage *np = realloc(r->pg, sizeof(*np) * cap);

		if (!np)
			goto out;
		r->pg = np;
		r->cap = cap;
	}
	if (r->n_rx + ext_total > r->cap_rx) {
		uint64_t cap = KVMIG_MAX(r->cap_rx * 2, r->n_rx + ext_total);
		struct rext *nx = realloc(r->rx, sizeof(*nx) * cap);

		if (!nx)
			goto out;
		r->rx = nx;
		r->cap_rx = cap;
	}
	if ((ret = recv_slot_grow(r, r->n + n_new)) < 0)
		goto out;
	dst = malloc(sizeof(*dst) * (n_new ? n_new : 1));
	if (!dst) {
		ret = -ENOMEM;
		goto out;
	}
	if (n_new && (ret = kvmig_pager_allocate(r->p, n_new, dst)) < 0) {
		if (ret == -ENOSPC)
			kvmig_err_prefix(ret, "destination pager is out of pages (%u already "
					 "allocated for this migration)", r->n);
		goto out;
	}
	SESSION_DIE("recv-allocated");
	for (uint32_t i = 0; i < m.n; i++) {
		const struct kvmig_offer_page *op = &m.pages[i];
		int idx = recv_slot_find(r, op->ix);
		struct rpage *pg;

		if (idx < 0) {
			pg = &r->pg[r->n];
			memset(pg, 0, sizeof(*pg));
			pg->src_ix = op->ix;
			pg->dst_ix = dst[k++];
			recv_slot_add(r, r->n);
			recv_page_new(r, r->n);
			idx = (int)r->n++;
		} else {
			/* Changed since its last offer: read it again; a digest
			 * sent for the old bytes no longer holds. */
			pg = &r->pg[idx];
			pg->has_digest = 0;
			if ((ret = recv_page_to(r, (uint32_t)idx, RP_QUEUED)) < 0)
				goto out;
		}
		pg->round = m.round;
		pg->ext_off = r->n_rx;
		pg->n_ext = op->n_ext;
		pg->attempts = 1;
		for (uint32_t j = 0; j < op->n_ext; j++) {
			struct rext *x = &r->rx[r->n_rx++];

			x->addr = op->ext[j].addr;
			x->len = op->ext[j].len;
			find_region(r, x->addr, x->len, &x->key_ix);
		}
	}
	/* Every new page is recorded (a failure frees it): now queue them. */
	for (uint32_t i = 0; i < m.n; i++)
		if ((ret = recv_enqueue(r, (uint32_t)recv_slot_find(r, m.pages[i].ix))) < 0)
			goto out;
	r->ses.ev.pages_total += m.n;
	r->ses.ev.bytes_total += (uint64_t)m.n * 2 * r->hello.half_bytes;
	ret = 0;
out:
	free(dst);
	kvmig_msg_offer_free(&m);
	return ret;
}

/* Live: the sender's round ended; answered once its pages landed. */
static int take_round(struct receiver *r, const struct xport_msg *msg)
{
	struct kvmig_msg_round m;
	int ret;

	if ((ret = kvmig_wire_get_round(msg->payload, msg->hdr.len, &m)) < 0)
		return ret;
	if (!r->live || r->xfer != XFER_OFFERS || m.round != r->round.round)
		return kvmig_err(-EBADMSG, "ROUND %u %s", m.round,
				 !r->live ? "in a stop-and-copy migration" :
				 r->xfer == XFER_FINAL ? "after FINAL" :
				 r->xfer == XFER_ROUND ? "before the last one was answered" :
				 "is not the round being offered");
	r->round = m;
	r->xfer = XFER_ROUND;
	return 0;
}

/* Answer a pending ROUND when nothing is left to read. */
int recv_answer_round(struct receiver *r)
{
	int ret;

	if (r->xfer != XFER_ROUND || r->q_len || r->cur.active || r->inflight ||
	    r->n_in[RP_QUEUED])
		return 0;
	if (r->round.round == 0 && (ret = KVMIG_FAULT_FAIL("recv-round")) < 0)
		return ret;
	r->xfer = XFER_OFFERS;
	if ((ret = kvmig_wire_put_round(&r->ses.wb, &r->round)) < 0)
		return ret;
	return session_flush(&r->ses);
}

static int take_digests(struct receiver *r, const struct xport_msg *msg)
{
	struct kvmig_manifest_page *d = NULL;
	uint32_t n = 0;
	int ret;

	if (!r->ses.o.verify || r->xfer == XFER_FINAL)
		return kvmig_err(-EBADMSG, "sender sent DIGESTS %s",
				 r->xfer == XFER_FINAL ? "after FINAL" : "although it said it would not");
	if ((ret = kvmig_wire_get_digests(msg->payload, msg->hdr.len, &d, &n)) < 0)
		return ret;
	if (!r->live)
		r->xfer = XFER_DIGESTS; /* stop-and-copy: every OFFER came before them */
	for (uint32_t i = 0; i < n && !ret; i++) {
		int idx = recv_slot_find(r, d[i].ix);
		struct rpage *pg;

		if (idx < 0) {
			ret = kvmig_err(-EBADMSG, "DIGESTS names page %u, which was not offered",
					d[i].ix);
			break;
		}
		pg = &r->pg[idx];
		if (pg->has_digest) {
			ret = kvmig_err(-EBADMSG, "DIGESTS names page %u twice", d[i].ix);
			break;
		}
		pg->sk = d[i].k;
		pg->sv = d[i].v;
		pg->has_digest = 1;
		if (pg->state == RP_LANDED && pg->hashed && recv_comparing(r))
			ret = recv_check_page(r, (uint32_t)idx);
	}
	free(d);
	return ret;
}

/*
 * FINAL: every page a sequence uses must have been offered. Live, pages
 * offered in an earlier round that no final sequence uses (their sequence
 * ended or moved elsewhere meanwhile) are dropped: their digest, if one came,
 * is ignored and they are freed once the sequences are installed. Every other
 * page needs its digest; live, the digests that came during the rounds are
 * compared now. One pass over the page tables, one over the pages: this runs
 * while the source is paused.
 */
static int take_final(struct receiver *r, const struct xport_msg *msg)
{
	uint8_t *used = NULL;
	int ret;

	if (r->xfer == XFER_FINAL)
		return kvmig_err(-EBADMSG, "sender sent FINAL twice");
	if (r->xfer == XFER_ROUND)
		return kvmig_err(-EBADMSG, "FINAL before the last ROUND was answered");
	if ((ret = kvmig_wire_get_final(msg->payload, msg->hdr.len, &r->final)) < 0)
		return ret;
	r->xfer = XFER_FINAL;
	if (!(used = calloc(r->n ? r->n : 1, 1)))
		return -ENOMEM;
	for (uint32_t i = 0; i < r->final.n && !ret; i++) {
		const struct kvmig_seq *q = &r->final.seqs[i];

		if (q->id[0] == KVMIG_SEQ_RESERVED_PREFIX)
			ret = kvmig_err(-EBADMSG, "FINAL: sequence id \"%s\" begins with '%c', which "
					"kvmig reserves", q->id, KVMIG_SEQ_RESERVED_PREFIX);
		for (uint32_t j = 0; j < q->n_pages && !ret; j++) {
			int idx = recv_slot_find(r, q->page_ixs[j]);

			if (idx < 0)
				ret = kvmig_err(-EBADMSG, "FINAL: sequence \"%s\" uses page %u, which "
						"was not offered", q->id, q->page_ixs[j]);
			else
				used[idx] = 1;
		}
	}
	for (uint32_t i = 0; i < r->n && !ret; i++) {
		struct rpage *pg = &r->pg[i];

		/* Offered but used by no sequence (live: its sequence ended
		 * meanwhile; anything else: a careless sender): freed after the
		 * install, never left behind. */
		if (!used[i]) {
			pg->has_digest = 0;
			ret = recv_page_to(r, i, RP_DROPPED);
		} else if (r->ses.o.verify && !pg->has_digest) {
			ret = kvmig_err(-EBADMSG, "FINAL arrived before the digest of page %u",
					pg->src_ix);
		} else if (r->live && pg->state == RP_LANDED && pg->hashed && pg->has_digest) {
			ret = recv_check_page(r, i);
		}
	}
	free(used);
	if (ret == 0)
		session_phase(&r->ses, "verify");
	return ret;
}

int recv_take_msg(struct receiver *r, struct xport_msg *m)
{
	switch (m->hdr.type) {
	case KVMIG_MSG_OFFER:
		return take_offer(r, m);
	case KVMIG_MSG_DIGESTS:
		return take_digests(r, m);
	case KVMIG_MSG_FINAL:
		return take_final(r, m);
	case KVMIG_MSG_ROUND:
		return take_round(r, m);
	case KVMIG_MSG_REGIONS:
		return recv_take_regions(r, m);
	case KVMIG_MSG_ABORT:
		return session_peer_abort(&r->ses, m);
	default:
		return session_unexpected(m, "OFFER, DIGESTS, FINAL, ROUND or REGIONS");
	}
}
