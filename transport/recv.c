/* SPDX-License-Identifier: MIT */
/*
 * transport/recv.c - the receiving half of a migration.
 *
 *   accept, HELLO both ways (meta and layout must match), REGIONS
 *   per OFFER: check every extent against the sender's regions, allocate
 *     destination pages (all of the offer or nothing: ENOSPC), queue them
 *   keep queue_depth reads in flight: each read copies a piece of a source
 *     extent straight into the destination page; a page's K and V extents are
 *     zipped with the destination's own extents, so the two layouts' extent
 *     boundaries need not agree
 *   when a page's last read lands, hash it; compare with the sender's digest
 *     (whichever arrives last triggers the compare); a mismatch is re-read
 *     once, a second mismatch is EIO naming the page
 *   FINAL: remap every sequence to destination indices, install them as
 *     pending under our migration record, mark it prepared, COMMIT; the
 *     sender's decision (COMMIT_ACK) activates them; ACTIVATED; FORGET from
 *     the sender closes the record
 *
 * Any failure before the record is prepared frees every page allocated
 * here and installs nothing (enum recv_state says what each state allows).
 * With tcp, reads land only inside progress(); with RDMA the NIC writes on
 * its own, so after a failure the connection (its queue pair) is closed
 * before any page is freed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include <kvmig/cas.h>

#include "digest_stream.h"
#include "engine.h"
#include "internal.h"

#define MAX_HALF_EXTENTS (KVMIG_WIRE_MAX_EXTENTS / 2)

struct rpage {
	uint32_t src_ix, dst_ix;
	uint64_t ext_off;   /* first remote extent in the pool: K's then V's */
	uint32_t n_ext;
	uint32_t reads_left;
	uint8_t has_digest, landed, verified, attempts;
	uint8_t dropped;    /* no final sequence uses it (live); freed after install */
	uint32_t round;     /* round it was last offered in */
	uint8_t in_order;   /* every read so far landed at next_off */
	int32_t stream;     /* pair of digest streams hashing reads as they land, or -1 */
	uint64_t next_off;  /* page-relative offset (K then V) the next read must have */
	struct kvmig_digest sk, sv; /* the sender's */
	struct kvmig_digest rk, rv; /* ours, of the bytes that landed */
};

#define MAX_LOCAL_REGIONS 64u /* memory regions of the destination pager */

struct rext {
	uint64_t addr, len;
	uint32_t key;
};

/* A posted read and where its bytes sit in the page (K then V). */
struct rread {
	struct xport_read x;
	uint64_t off;
};

/* Where the next read of the page being posted starts. */
struct cursor {
	int active;
	uint32_t page;
	uint64_t poff;       /* page-relative offset of the next read */
	uint32_t ri, li;     /* remote / local extent */
	uint64_t roff, loff; /* offset inside them */
	uint32_t n_local;
	struct kvmig_extent local[2 * MAX_HALF_EXTENTS];
};

/* Where the receiver is in the commit (docs/PROTOCOL.md, "Crash safety"). */
enum recv_state {
	RECV_HANDSHAKE, /* no record yet: a failure just ends */
	RECV_RECEIVING, /* record RECEIVING: pages allocated, read, verified; a failure
			 * aborts: pages freed, nothing installed */
	RECV_PENDING,   /* the sequences are installed as pending (not runnable) under
			 * the record; a failure still aborts (removes them) */
	RECV_PREPARED,  /* record PREPARED, the sender told: only its decision moves it on;
			 * a failure leaves it in doubt, pages kept */
	RECV_ACTIVATED, /* the decision arrived: the sequences run here */
	RECV_DONE,      /* the sender released its copy; the record is closed */
};

struct receiver {
	struct engine e;
	struct kvmig_pager *p;
	struct kvmig_msg_hello hello;
	enum recv_state state;
	struct kvmig_id mig, peer_pager;
	struct kvmig_resolve_stats resolved;
	int unconfirmed;
	struct kvmig_msg_regions regions;
	struct rpage *pg;
	uint32_t n, cap;
	struct rext *rx;
	uint64_t n_rx, cap_rx;
	uint32_t *slot;     /* open addressing: src ix -> index + 1 */
	uint32_t slot_cap;
	uint32_t *queue;    /* pages waiting to be read, a ring */
	uint32_t q_head, q_len, q_cap;
	struct cursor cur;
	struct rread *reads;
	struct xport_read **free_reads, **batch;
	/* Digest streams, two per page being read: hashing each read while its
	 * bytes are still in cache costs far less than a second pass. */
	struct kvmig_digest_stream **streams;
	int32_t *free_streams;
	uint32_t n_streams, n_free_streams;
	uint32_t n_free, inflight;
	struct kvmig_seq_list final;
	int have_final;
	/* Live (HELLO flag): offers come in rounds; each ROUND is answered once
	 * every page offered so far has landed. */
	int live, round_pending, have_digests, dropped_freed;
	struct kvmig_msg_round round;
	uint32_t n_dropped;
	uint32_t landed, verified, rereads, n_reads;
	struct kvmig_region lregion[MAX_LOCAL_REGIONS]; /* this pager's memory */
	void *lreg[MAX_LOCAL_REGIONS];
	uint32_t n_lreg;
	double reg_seconds;
	uint32_t reg_reused;
};

/* ---- src ix -> page ---- */

static uint32_t hash_ix(uint32_t ix, uint32_t cap)
{
	return (ix * 2654435761u) & (cap - 1);
}

static int slot_find(const struct receiver *r, uint32_t ix)
{
	if (!r->slot_cap)
		return -1;
	for (uint32_t h = hash_ix(ix, r->slot_cap);; h = (h + 1) & (r->slot_cap - 1)) {
		if (!r->slot[h])
			return -1;
		if (r->pg[r->slot[h] - 1].src_ix == ix)
			return (int)(r->slot[h] - 1);
	}
}

static int slot_grow(struct receiver *r, uint32_t need)
{
	uint32_t cap = r->slot_cap ? r->slot_cap : 1024, *ns;

	while (cap < need * 2)
		cap *= 2;
	if (cap == r->slot_cap)
		return 0;
	ns = calloc(cap, sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	for (uint32_t i = 0; i < r->n; i++) {
		uint32_t h = hash_ix(r->pg[i].src_ix, cap);

		while (ns[h])
			h = (h + 1) & (cap - 1);
		ns[h] = i + 1;
	}
	free(r->slot);
	r->slot = ns;
	r->slot_cap = cap;
	return 0;
}

static void slot_add(struct receiver *r, uint32_t idx)
{
	uint32_t h = hash_ix(r->pg[idx].src_ix, r->slot_cap);

	while (r->slot[h])
		h = (h + 1) & (r->slot_cap - 1);
	r->slot[h] = idx + 1;
}

/* ---- read queue ---- */

static int enqueue(struct receiver *r, uint32_t idx)
{
	if (r->q_len == r->q_cap) {
		uint32_t cap = r->q_cap ? r->q_cap * 2 : 1024, *nq = malloc(sizeof(*nq) * cap);

		if (!nq)
			return -ENOMEM;
		for (uint32_t i = 0; i < r->q_len; i++)
			nq[i] = r->queue[(r->q_head + i) % r->q_cap];
		free(r->queue);
		r->queue = nq;
		r->q_head = 0;
		r->q_cap = cap;
	}
	r->queue[(r->q_head + r->q_len++) % r->q_cap] = idx;
	return 0;
}

static int start_page(struct receiver *r)
{
	struct cursor *c = &r->cur;
	uint32_t idx = r->queue[r->q_head], nk = 0, nv = 0;
	int ret;

	r->q_head = (r->q_head + 1) % r->q_cap;
	r->q_len--;
	ret = kvmig_pager_extents(r->p, r->pg[idx].dst_ix, KVMIG_HALF_K, c->local,
				  MAX_HALF_EXTENTS, &nk);
	if (ret == 0)
		ret = kvmig_pager_extents(r->p, r->pg[idx].dst_ix, KVMIG_HALF_V, c->local + nk,
					  MAX_HALF_EXTENTS, &nv);
	if (ret < 0)
		return kvmig_err_prefix(ret, "destination page %u", r->pg[idx].dst_ix);
	c->active = 1;
	c->page = idx;
	c->n_local = nk + nv;
	c->ri = c->li = 0;
	c->roff = c->loff = 0;
	c->poff = 0;
	r->pg[idx].reads_left = 0;
	r->pg[idx].next_off = 0;
	r->pg[idx].in_order = 1;
	r->pg[idx].stream = -1;
	if (r->e.o.verify && r->n_free_streams) {
		int32_t st = r->free_streams[--r->n_free_streams];

		kvmig_digest_stream_reset(r->streams[2 * st]);
		kvmig_digest_stream_reset(r->streams[2 * st + 1]);
		r->pg[idx].stream = st;
	}
	return 0;
}

/*
 * Bytes readable in one piece from remote extent @i at @off on: the rest
 * of it plus the following extents that continue it in memory under the
 * same key, up to @max.
 */
static uint64_t remote_run(const struct rext *x, uint32_t n, uint32_t i, uint64_t off, uint64_t max)
{
	uint64_t run = x[i].len - off;

	while (run < max && i + 1 < n && x[i + 1].addr == x[i].addr + x[i].len &&
	       x[i + 1].key == x[i].key)
		run += x[++i].len;
	return KVMIG_MIN(run, max);
}

/* The same for the destination's extents, never past the end of the
 * destination region the run starts in (one registration per region). */
static uint64_t local_run(const struct receiver *r, const struct kvmig_extent *x, uint32_t n,
			  uint32_t i, uint64_t off, uint64_t max)
{
	const uint8_t *start = (const uint8_t *)x[i].addr + off, *end = NULL;
	uint64_t run = x[i].len - off;

	for (uint32_t k = 0; k < r->n_lreg && !end; k++) {
		const uint8_t *b = r->lregion[k].base;

		if (start >= b && start < b + r->lregion[k].len)
			end = b + r->lregion[k].len;
	}
	while (run < max && i + 1 < n &&
	       (const uint8_t *)x[i + 1].addr == (const uint8_t *)x[i].addr + x[i].len)
		run += x[++i].len;
	run = KVMIG_MIN(run, max);
	return end ? KVMIG_MIN(run, (uint64_t)(end - start)) : run;
}

/* Post reads until the queue depth is reached or nothing is left to read.
 * A read spans extents that are contiguous on both sides (coalescing). */
static int fill_reads(struct receiver *r)
{
	struct cursor *c = &r->cur;
	unsigned nb = 0;
	int ret;

	while (r->n_free) {
		if (!c->active) {
			if (!r->q_len)
				break;
			if ((ret = start_page(r)) < 0)
				return ret;
		}
		struct rpage *pg = &r->pg[c->page];
		const struct rext *rxs = &r->rx[pg->ext_off], *rx = &rxs[c->ri];
		const struct kvmig_extent *lx = &c->local[c->li];
		uint64_t len = remote_run(rxs, pg->n_ext, c->ri, c->roff, r->e.o.max_read_bytes);
		struct xport_read *rd = r->free_reads[--r->n_free];

		len = local_run(r, c->local, c->n_local, c->li, c->loff, len);
		kvmig_container_of(rd, struct rread, x)->off = c->poff;
		c->poff += len;
		rd->local = (uint8_t *)lx->addr + c->loff;
		rd->remote = rx->addr + c->roff;
		rd->len = (uint32_t)len;
		rd->key = rx->key;
		if (kvmig_fault("recv-bad-key", NULL))
			rd->key ^= 0x5a5a;
		if (kvmig_fault("recv-read-unoffered", NULL)) {
			/* Test-only: the bytes right after the last offered run. */
			const struct kvmig_wire_region *g = &r->regions.r[r->regions.n - 1];

			rd->remote = g->addr + g->len;
			rd->key = g->key;
		}
		rd->ctx = (void *)(uintptr_t)c->page;
		r->batch[nb++] = rd;
		pg->reads_left++;
		c->roff += len;
		c->loff += len;
		while (c->ri < pg->n_ext && c->roff >= rxs[c->ri].len) {
			c->roff -= rxs[c->ri].len;
			c->ri++;
		}
		while (c->li < c->n_local && c->loff >= c->local[c->li].len) {
			c->loff -= c->local[c->li].len;
			c->li++;
		}
		if (c->ri == pg->n_ext || c->li == c->n_local)
			c->active = 0; /* equal totals were checked: both end together */
	}
	if (!nb)
		return 0;
	r->inflight += nb;
	r->n_reads += nb;
	return r->e.ops->post_reads(r->e.c, r->batch, nb);
}

/* ---- verification ---- */

static int hash_page(struct receiver *r, struct rpage *pg)
{
	struct kvmig_extent ext[MAX_HALF_EXTENTS];
	struct iovec iov[MAX_HALF_EXTENTS];
	uint32_t n = 0;
	int ret;

	for (int half = 0; half < 2; half++) {
		ret = kvmig_pager_extents(r->p, pg->dst_ix, (enum kvmig_half)half, ext,
					  MAX_HALF_EXTENTS, &n);
		if (ret < 0)
			return ret;
		for (uint32_t i = 0; i < n; i++)
			iov[i] = (struct iovec){ ext[i].addr, ext[i].len };
		kvmig_digest_computev(iov, (int)n, half ? &pg->rv : &pg->rk);
	}
	return 0;
}

/*
 * Whether a page's bytes and digest are compared as soon as both are here.
 * Live: only after FINAL, since a page may still be written at the source
 * during the rounds (it is then offered again, which voids its digest).
 */
static int comparing(const struct receiver *r)
{
	return !r->live || r->have_final;
}

/* Both the bytes and the sender's digest are here: compare. */
static int check_page(struct receiver *r, uint32_t idx)
{
	struct rpage *pg = &r->pg[idx];
	int k_ok = kvmig_digest_equal(&pg->rk, &pg->sk), v_ok = kvmig_digest_equal(&pg->rv, &pg->sv);
	int ret;

	if (!r->verified && (ret = KVMIG_FAULT_FAIL("recv-verify")) < 0)
		return ret; /* test-only, at the first comparison */
	if (k_ok && v_ok) {
		pg->verified = 1;
		r->verified++;
		return 0;
	}
	if (pg->attempts < 2) {
		/* Once more: a transient fault must not fail a migration. */
		pg->attempts++;
		pg->landed = 0;
		r->rereads++;
		return enqueue(r, idx);
	}
	return kvmig_err(-EIO, "page %u (source index) does not match the sender's digest after "
			 "a re-read: %s%s%s differ", pg->src_ix, k_ok ? "" : "K",
			 k_ok || v_ok ? "" : " and ", v_ok ? "" : "V");
}

/* Hash a landed read now if it continues the page's stream in order. */
static void stream_read(struct receiver *r, struct rpage *pg, const struct xport_read *rd)
{
	uint64_t off = kvmig_container_of(rd, const struct rread, x)->off;

	if (pg->stream < 0 || !pg->in_order)
		return;
	if (off != pg->next_off) {
		pg->in_order = 0; /* out of order: hash the whole page when it lands */
		return;
	}
	/* A coalesced read may end the K half and begin the V half. */
	uint64_t half = r->hello.half_bytes;
	uint64_t k = off < half ? KVMIG_MIN((uint64_t)rd->len, half - off) : 0;

	if (k)
		kvmig_digest_stream_update(r->streams[2 * pg->stream], rd->local, k);
	if (rd->len > k)
		kvmig_digest_stream_update(r->streams[2 * pg->stream + 1], (const uint8_t *)rd->local + k,
					   rd->len - k);
	pg->next_off += rd->len;
}

/* The page landed: take the streamed digests, or hash it whole. */
static int finish_hash(struct receiver *r, struct rpage *pg)
{
	int32_t st = pg->stream;

	pg->stream = -1;
	if (st >= 0) {
		r->free_streams[r->n_free_streams++] = st;
		if (pg->in_order && pg->next_off == 2 * r->hello.half_bytes) {
			kvmig_digest_stream_final(r->streams[2 * st], &pg->rk);
			kvmig_digest_stream_final(r->streams[2 * st + 1], &pg->rv);
			return 0;
		}
	}
	return hash_page(r, pg);
}

static int on_read_done(struct receiver *r, struct xport_read *rd)
{
	uint32_t idx = (uint32_t)(uintptr_t)rd->ctx;
	struct rpage *pg = &r->pg[idx];
	int ret;

	r->inflight--;
	r->free_reads[r->n_free++] = rd;
	if (rd->status < 0)
		return kvmig_err(rd->status, "read of source page %u failed", pg->src_ix);
	if (r->e.o.verify)
		stream_read(r, pg, rd);
	if (--pg->reads_left || (r->cur.active && r->cur.page == idx))
		return 0;
	if (r->landed == 1 && (ret = KVMIG_FAULT_FAIL("recv-transfer")) < 0)
		return ret;
	if (r->landed == 1)
		ENGINE_DIE("recv-mid-reads");
	if (pg->attempts == 1) {
		r->landed++;
		r->e.ev.pages_done = r->landed;
		r->e.ev.bytes_done += 2 * r->hello.half_bytes;
	}
	pg->landed = 1;
	if (!r->e.o.verify)
		return 0;
	if ((ret = finish_hash(r, pg)) < 0)
		return ret;
	return pg->has_digest && comparing(r) ? check_page(r, idx) : 0;
}

/* ---- control messages ---- */

static int cmp_region(const void *a, const void *b)
{
	const struct kvmig_wire_region *x = a, *y = b;

	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/* The sender's registrations (a live sender adds some each round), sorted
 * by address for find_region(). */
static int take_regions(struct receiver *r, const struct xport_msg *m)
{
	struct kvmig_msg_regions add;
	struct kvmig_wire_region *nr;
	int ret;

	if (r->have_final || (!r->live && r->regions.r))
		return kvmig_err(-EBADMSG, "sender sent REGIONS %s",
				 r->have_final ? "after its FINAL" : "twice in a stop-and-copy migration");
	if ((ret = kvmig_wire_get_regions(m->payload, m->hdr.len, &add)) < 0)
		return ret;
	if (r->regions.n + add.n > KVMIG_WIRE_MAX_REGIONS) {
		kvmig_msg_regions_free(&add);
		return kvmig_err(-EBADMSG, "sender registered more than %u regions",
				 KVMIG_WIRE_MAX_REGIONS);
	}
	if (!r->regions.n) {
		kvmig_msg_regions_free(&r->regions); /* an empty first REGIONS */
		r->regions = add;
	} else {
		nr = realloc(r->regions.r, sizeof(*nr) * (r->regions.n + add.n + 1));
		if (!nr) {
			kvmig_msg_regions_free(&add);
			return -ENOMEM;
		}
		memcpy(nr + r->regions.n, add.r, sizeof(*nr) * add.n);
		r->regions.r = nr;
		r->regions.n += add.n;
		kvmig_msg_regions_free(&add);
	}
	qsort(r->regions.r, r->regions.n, sizeof(*r->regions.r), cmp_region);
	return 0;
}

/* The registration holding [addr, addr + len): 0 and its key, or -1. */
static int find_region(const struct receiver *r, uint64_t addr, uint64_t len, uint32_t *key)
{
	uint32_t lo = 0, hi = r->regions.n;

	while (lo < hi) { /* the last region starting at or before addr */
		uint32_t mid = lo + (hi - lo) / 2;

		if (r->regions.r[mid].addr <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return -1;
	const struct kvmig_wire_region *g = &r->regions.r[lo - 1];

	if (len <= g->len && addr - g->addr <= g->len - len) {
		*key = g->key;
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

	if (r->have_final)
		return kvmig_err(-EBADMSG, "sender sent an OFFER after FINAL");
	if ((ret = KVMIG_FAULT_FAIL("recv-alloc")) < 0)
		return ret;
	if ((ret = kvmig_wire_get_offer(msg->payload, msg->hdr.len, &m)) < 0)
		return ret;
	if ((m.round != 0 && !r->live) || m.round < r->round.round ||
	    (r->have_digests && !r->live) || r->round_pending) {
		ret = kvmig_err(-EBADMSG, "OFFER of round %u %s", m.round,
				!r->live ? "in a stop-and-copy migration" :
				r->have_digests ? "after DIGESTS" :
				r->round_pending ? "before the last ROUND was answered" :
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
		int known = slot_find(r, op->ix);

		/* A live sender offers a page again once it changed; by then the
		 * last copy must have landed (the round was answered). */
		if (known >= 0 && (r->pg[known].round == m.round || !r->pg[known].landed)) {
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
	if ((ret = slot_grow(r, r->n + n_new)) < 0)
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
	ENGINE_DIE("recv-allocated");
	for (uint32_t i = 0; i < m.n; i++) {
		const struct kvmig_offer_page *op = &m.pages[i];
		int idx = slot_find(r, op->ix);
		struct rpage *pg;

		if (idx < 0) {
			pg = &r->pg[r->n];
			memset(pg, 0, sizeof(*pg));
			pg->src_ix = op->ix;
			pg->dst_ix = dst[k++];
			slot_add(r, r->n);
			idx = (int)r->n++;
		} else {
			/* Changed since its last offer: read it again; a digest
			 * sent for the old bytes no longer holds. */
			pg = &r->pg[idx];
			pg->landed = 0;
			pg->has_digest = 0;
			r->landed--;
		}
		pg->round = m.round;
		pg->ext_off = r->n_rx;
		pg->n_ext = op->n_ext;
		pg->attempts = 1;
		for (uint32_t j = 0; j < op->n_ext; j++) {
			struct rext *x = &r->rx[r->n_rx++];

			x->addr = op->ext[j].addr;
			x->len = op->ext[j].len;
			find_region(r, x->addr, x->len, &x->key);
		}
	}
	/* Every new page is recorded (a failure frees it): now queue them. */
	for (uint32_t i = 0; i < m.n; i++)
		if ((ret = enqueue(r, (uint32_t)slot_find(r, m.pages[i].ix))) < 0)
			goto out;
	r->e.ev.pages_total += m.n;
	r->e.ev.bytes_total += (uint64_t)m.n * 2 * r->hello.half_bytes;
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
	if (!r->live || r->have_final || r->round_pending || m.round != r->round.round)
		return kvmig_err(-EBADMSG, "ROUND %u %s", m.round,
				 !r->live ? "in a stop-and-copy migration" :
				 r->have_final ? "after FINAL" :
				 r->round_pending ? "before the last one was answered" :
				 "is not the round being offered");
	r->round = m;
	r->round_pending = 1;
	return 0;
}

/* Answer a pending ROUND when nothing is left to read. */
static int answer_round(struct receiver *r)
{
	int ret;

	if (!r->round_pending || r->q_len || r->cur.active || r->inflight || r->landed != r->n)
		return 0;
	if (r->round.round == 0 && (ret = KVMIG_FAULT_FAIL("recv-round")) < 0)
		return ret;
	r->round_pending = 0;
	if ((ret = kvmig_wire_put_round(&r->e.wb, &r->round)) < 0)
		return ret;
	return engine_flush(&r->e);
}

static int take_digests(struct receiver *r, const struct xport_msg *msg)
{
	struct kvmig_manifest_page *d = NULL;
	uint32_t n = 0;
	int ret;

	if (!r->e.o.verify || r->have_final)
		return kvmig_err(-EBADMSG, "sender sent DIGESTS %s",
				 r->have_final ? "after FINAL" : "although it said it would not");
	if ((ret = kvmig_wire_get_digests(msg->payload, msg->hdr.len, &d, &n)) < 0)
		return ret;
	r->have_digests = 1;
	for (uint32_t i = 0; i < n && !ret; i++) {
		int idx = slot_find(r, d[i].ix);
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
		if (pg->landed && comparing(r))
			ret = check_page(r, (uint32_t)idx);
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

	if (r->have_final)
		return kvmig_err(-EBADMSG, "sender sent FINAL twice");
	if ((ret = kvmig_wire_get_final(msg->payload, msg->hdr.len, &r->final)) < 0)
		return ret;
	r->have_final = 1;
	if (r->round_pending)
		return kvmig_err(-EBADMSG, "FINAL before the last ROUND was answered");
	if (!(used = calloc(r->n ? r->n : 1, 1)))
		return -ENOMEM;
	for (uint32_t i = 0; i < r->final.n && !ret; i++) {
		const struct kvmig_seq *q = &r->final.seqs[i];

		if (q->id[0] == KVMIG_SEQ_RESERVED_PREFIX)
			ret = kvmig_err(-EBADMSG, "FINAL: sequence id \"%s\" begins with '%c', which "
					"kvmig reserves", q->id, KVMIG_SEQ_RESERVED_PREFIX);
		for (uint32_t j = 0; j < q->n_pages && !ret; j++) {
			int idx = slot_find(r, q->page_ixs[j]);

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
			pg->dropped = 1;
			pg->has_digest = 0;
			r->n_dropped++;
		} else if (r->e.o.verify && !pg->has_digest) {
			ret = kvmig_err(-EBADMSG, "FINAL arrived before the digest of page %u",
					pg->src_ix);
		} else if (r->live && pg->landed && pg->has_digest && !pg->verified) {
			ret = check_page(r, i);
		}
	}
	free(used);
	if (ret == 0)
		engine_phase(&r->e, "verify");
	return ret;
}

static int take_msg(struct receiver *r, struct xport_msg *m)
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
		return take_regions(r, m);
	case KVMIG_MSG_ABORT:
		return engine_peer_abort(&r->e, m);
	default:
		return engine_unexpected(m, "OFFER, DIGESTS, FINAL, ROUND or REGIONS");
	}
}

static int finished(const struct receiver *r)
{
	return r->have_final && !r->q_len && !r->cur.active && !r->inflight &&
	       (r->e.o.verify ? r->verified + r->n_dropped : r->landed) == r->n;
}

/* Pull every page, verify it, until FINAL has come and all is checked. */
static int transfer(struct receiver *r)
{
	struct xport_read *done[64];
	int ret;

	engine_phase(&r->e, "transfer");
	for (int round = 0;; round++) {
		struct xport_msg *m = NULL;
		uint64_t stall_ms;

		if (round == 1 && kvmig_fault("recv-stall", &stall_ms))
			usleep((useconds_t)(stall_ms * 1000)); /* test-only: go silent */

		while ((ret = r->e.ops->ctl_pop(r->e.c, &m)) == 0) {
			ret = take_msg(r, m);
			engine_msg_free(&m);
			if (ret < 0)
				return ret;
		}
		if (ret != -EAGAIN)
			return ret;
		if (finished(r))
			return 0;
		if ((ret = answer_round(r)) < 0 || (ret = fill_reads(r)) < 0)
			return ret;
		if ((ret = r->e.ops->progress(r->e.c, (int)r->e.o.timeout_ms, -1)) < 0)
			return ret;
		while ((ret = r->e.ops->reap(r->e.c, done, KVMIG_ARRAY_SIZE(done))) > 0)
			for (int i = 0; i < ret; i++) {
				int err = on_read_done(r, done[i]);

				if (err < 0)
					return err;
			}
		engine_progress(&r->e, 0);
	}
}

static int handshake(struct receiver *r)
{
	struct kvmig_msg_hello peer;
	struct xport_msg *m = NULL;
	int ret;

	engine_phase(&r->e, "handshake");
	if ((ret = KVMIG_FAULT_FAIL("recv-handshake")) < 0)
		return ret;
	if ((ret = engine_hello(r->p, 1, (r->e.o.verify ? 0 : KVMIG_HELLO_NO_VERIFY) |
				(r->e.auth ? KVMIG_HELLO_AUTH : 0), NULL, &r->hello)) < 0)
		return ret;
	if ((ret = engine_wait_msg(&r->e, -1, &m)) < 0)
		return ret;
	if (m->hdr.type != KVMIG_MSG_HELLO)
		ret = engine_unexpected(m, "HELLO");
	else if ((ret = kvmig_wire_get_hello(m->payload, m->hdr.len, &peer)) == 0 &&
		 (ret = engine_auth_agree(&r->e, &peer)) == 0)
		ret = engine_hello_match(&r->hello, &peer);
	engine_msg_free(&m);
	if (ret < 0)
		return ret;
	r->live = !!(peer.flags & KVMIG_HELLO_LIVE);
	r->mig = peer.migration;
	r->peer_pager = peer.pager;
	if ((peer.flags ^ r->hello.flags) & KVMIG_HELLO_NO_VERIFY)
		return kvmig_err(-EPROTO, "the sender %s digests but this receiver %s: both sides "
				 "need the same --no-verify setting",
				 r->hello.flags & KVMIG_HELLO_NO_VERIFY ? "sends" : "does not send",
				 r->e.o.verify ? "verifies" : "does not verify");
	if (r->e.auth && (ret = engine_auth_take_challenge(&r->e)) < 0)
		return ret;
	if ((ret = kvmig_wire_put_hello(&r->e.wb, &r->hello)) < 0 ||
	    (r->e.auth && ((ret = engine_auth_challenge(&r->e)) < 0 ||
			   (ret = engine_auth_prove(&r->e, 1)) < 0)) ||
	    (ret = engine_flush(&r->e)) < 0)
		return ret;
	/* Nothing from an unproven sender is read beyond this point. */
	if (r->e.auth && (ret = engine_auth_check(&r->e, 0)) < 0)
		return ret;
	return engine_sync_records(&r->e, r->p, &r->peer_pager, &r->resolved);
}

/* RECV_HANDSHAKE -> RECV_RECEIVING: our record, before a page is allocated;
 * then the sender's registrations. */
static int begin_record(struct receiver *r)
{
	struct kvmig_record rec = { .role = KVMIG_ROLE_DEST, .state = KVMIG_REC_RECEIVING };
	struct xport_msg *m = NULL;
	int ret;

	rec.id = r->mig;
	rec.peer_pager = r->peer_pager;
	snprintf(rec.peer_addr, sizeof(rec.peer_addr), "%s", r->e.ops->peer_addr(r->e.c));
	if ((ret = kvmig_pager_record_create(r->p, &rec)) < 0)
		return kvmig_err_prefix(ret, "cannot record the migration in the destination pager");
	r->state = RECV_RECEIVING;
	ENGINE_DIE("recv-record");
	if ((ret = engine_wait_msg(&r->e, -1, &m)) < 0)
		return ret;
	if (m->hdr.type != KVMIG_MSG_REGIONS)
		ret = engine_unexpected(m, "REGIONS");
	else
		ret = take_regions(r, m);
	engine_msg_free(&m);
	return ret;
}

static int setup(struct receiver *r)
{
	uint32_t qd = r->e.o.queue_depth;
	double t0;
	int ret;

	r->reads = calloc(qd, sizeof(*r->reads));
	r->free_reads = malloc(sizeof(*r->free_reads) * qd);
	r->batch = malloc(sizeof(*r->batch) * qd);
	if (!r->reads || !r->free_reads || !r->batch)
		return -ENOMEM;
	for (uint32_t i = 0; i < qd; i++)
		r->free_reads[i] = &r->reads[i].x;
	r->n_free = qd;
	/* A page's reads are posted together, so at most qd + 1 pages are open. */
	r->n_streams = qd + 1;
	r->streams = calloc(2 * r->n_streams, sizeof(*r->streams));
	r->free_streams = malloc(sizeof(*r->free_streams) * r->n_streams);
	if (!r->streams || !r->free_streams)
		return -ENOMEM;
	for (uint32_t i = 0; i < 2 * r->n_streams; i++)
		if (!(r->streams[i] = kvmig_digest_stream_new()))
			return -ENOMEM;
	for (uint32_t i = 0; i < r->n_streams; i++)
		r->free_streams[r->n_free_streams++] = (int32_t)i;
	ret = kvmig_pager_regions(r->p, r->lregion, MAX_LOCAL_REGIONS, &r->n_lreg);
	if (ret == -ENOBUFS)
		return kvmig_err(-ENOBUFS, "destination pager has %u memory regions; at most %u",
				 r->n_lreg, MAX_LOCAL_REGIONS);
	if (ret < 0)
		return ret;
	t0 = kvmig_now();
	for (uint32_t i = 0; i < r->n_lreg; i++) {
		if ((ret = r->e.ops->reg_local(r->e.c, r->lregion[i].base, r->lregion[i].len,
					       &r->lreg[i])) < 0)
			return kvmig_err_prefix(ret, "cannot register destination memory");
		r->reg_reused += ret == 1;
	}
	r->reg_seconds = kvmig_now() - t0;
	return 0;
}

/* The FINAL sequences with our page indices (ids borrowed from r->final). */
static int remap_final(struct receiver *r, struct kvmig_seq *q)
{
	for (uint32_t i = 0; i < r->final.n; i++) {
		const struct kvmig_seq *f = &r->final.seqs[i];

		q[i] = *f;
		q[i].page_ixs = malloc(sizeof(uint32_t) * (f->n_pages ? f->n_pages : 1));
		if (!q[i].page_ixs)
			return -ENOMEM;
		for (uint32_t j = 0; j < f->n_pages; j++)
			q[i].page_ixs[j] = r->pg[slot_find(r, f->page_ixs[j])].dst_ix;
	}
	return 0;
}

static void free_remapped(struct receiver *r, struct kvmig_seq *q)
{
	for (uint32_t i = 0; q && i < r->final.n; i++)
		free(q[i].page_ixs);
	free(q);
}

/* Install the FINAL sequences, remapped to our page indices. */
static int install(struct receiver *r)
{
	struct kvmig_seq *q = calloc(r->final.n ? r->final.n : 1, sizeof(*q));
	int ret;

	engine_phase(&r->e, "install");
	if (!q)
		return -ENOMEM;
	if ((ret = KVMIG_FAULT_FAIL("recv-install")) < 0) {
		free(q);
		return ret;
	}
	if ((ret = remap_final(r, q)) == 0)
		ret = kvmig_pager_record_install(r->p, &r->mig, q, r->final.n);
	if (ret == -EINVAL)
		ret = kvmig_err_prefix(-EBADMSG, "sender's sequences do not fit this pager");
	else if (ret < 0)
		kvmig_err_prefix(ret, "cannot install the sequences");
	else
		r->state = RECV_PENDING;
	free_remapped(r, q);
	ENGINE_DIE("recv-pending");
	return ret;
}

/* Free the offered pages no sequence uses (take_final dropped them). */
static int free_dropped(struct receiver *r)
{
	uint32_t *ixs, k = 0;
	int ret;

	if (!r->n_dropped)
		return 0;
	if (!(ixs = malloc(sizeof(*ixs) * r->n_dropped)))
		return -ENOMEM;
	for (uint32_t i = 0; i < r->n; i++)
		if (r->pg[i].dropped)
			ixs[k++] = r->pg[i].dst_ix;
	ret = kvmig_pager_free(r->p, ixs, k);
	free(ixs);
	if (ret < 0)
		return kvmig_err_prefix(ret, "cannot free the pages no sequence uses");
	r->dropped_freed = 1;
	return 0;
}

/* RECV_PENDING -> RECV_PREPARED: recorded, then the sender is told. */
static int prepare(struct receiver *r)
{
	int ret;

	engine_phase(&r->e, "commit");
	if ((ret = KVMIG_FAULT_FAIL("recv-commit-send")) < 0)
		return ret;
	/* Durable before the sender hears of it: once it has, it may decide. */
	if ((ret = kvmig_pager_record_set(r->p, &r->mig, KVMIG_REC_RECEIVING,
					  KVMIG_REC_PREPARED)) < 0)
		return kvmig_err_prefix(ret, "cannot record that the migration is prepared");
	r->state = RECV_PREPARED;
	ENGINE_DIE("recv-prepared");
	if ((ret = kvmig_wire_put_empty(&r->e.wb, KVMIG_MSG_COMMIT)) < 0)
		return ret;
	if (kvmig_fault("recv-commit-lost", NULL)) {
		/* Test-only: the COMMIT and the connection are lost together. */
		r->e.wb.len = 0;
		r->e.ops->close(&r->e.c);
		return kvmig_err(-ECONNRESET, "fault injected at recv-commit-lost");
	}
	ret = engine_flush(&r->e);
	ENGINE_DIE("recv-commit-sent");
	return ret;
}

/* RECV_PREPARED -> RECV_ACTIVATED -> RECV_DONE on the sender's decision. */
static int await_decision(struct receiver *r)
{
	struct xport_msg *m = NULL;
	int ret = engine_wait_msg(&r->e, -1, &m);

	if (ret > 0 && (m->hdr.type != KVMIG_MSG_COMMIT_ACK || m->hdr.len))
		ret = engine_unexpected(m, "COMMIT_ACK");
	engine_msg_free(&m);
	if (ret < 0)
		return ret;
	ENGINE_DIE("recv-ack-recv");
	ret = kvmig_pager_record_set(r->p, &r->mig, KVMIG_REC_PREPARED, KVMIG_REC_ACTIVATED);
	if (ret == -ESTALE && engine_record_state(r->p, &r->mig) == KVMIG_REC_ACTIVATED)
		ret = 0; /* a resolver activated them meanwhile */
	if (ret < 0)
		return kvmig_err_prefix(ret, "the sender decided to commit, but the sequences "
					"could not be activated here");
	r->state = RECV_ACTIVATED;
	ENGINE_DIE("recv-activated");
	if ((ret = kvmig_wire_put_empty(&r->e.wb, KVMIG_MSG_ACTIVATED)) == 0)
		ret = engine_flush(&r->e);
	ENGINE_DIE("recv-activated-sent");
	/* The sender releases its copy, then says so. Without that word the
	 * record stays (activated: the sequences run) for a later exchange. */
	if (ret == 0 && (ret = engine_wait_msg(&r->e, -1, &m)) > 0 &&
	    (m->hdr.type != KVMIG_MSG_FORGET || m->hdr.len))
		ret = engine_unexpected(m, "FORGET");
	engine_msg_free(&m);
	if (ret < 0) {
		/* Left for the next exchange or a resolution: nobody drives it. */
		r->unconfirmed = 1;
		kvmig_pager_record_disown(r->p, &r->mig);
		return 0;
	}
	ENGINE_DIE("recv-forget-recv");
	if (kvmig_pager_record_end(r->p, &r->mig, KVMIG_REC_ACTIVATED, 1) < 0) {
		r->unconfirmed = 1;
		kvmig_pager_record_disown(r->p, &r->mig);
	} else {
		r->state = RECV_DONE;
	}
	return 0;
}

static int commit(struct receiver *r)
{
	char hex[33], why[1024];
	int ret;

	if ((ret = prepare(r)) == 0 && (ret = await_decision(r)) == 0)
		return 0;
	if (r->state != RECV_PREPARED || r->e.peer_aborted)
		return ret; /* not prepared yet, or the sender aborted before deciding */
	/* In doubt: the record stays, and anyone may resolve it from the
	 * sender's (this process may live on, in an engine). */
	snprintf(why, sizeof(why), "%s", kvmig_last_error());
	kvmig_pager_record_disown(r->p, &r->mig);
	kvmig_err(ret, "%s", why);
	kvmig_id_format(&r->mig, hex);
	return kvmig_err(-ENOTCONN, "commit outcome unknown: %s. The %u sequences stay here as "
			 "pending (not running) under migration %s until the sender's record says "
			 "how it ended: run kvmig send from that pager again, or kvmig pager "
			 "resolve", kvmig_last_error(), r->final.n, hex);
}

/*
 * After a failure before the record was prepared (the connection closed):
 * abort the record, which removes the pending sequences and frees their
 * pages, then free the pages no sequence had. Should that fail, the error
 * (@err's message) says so.
 */
static void cleanup_failed(struct receiver *r, int err)
{
	char why[KVMIG_WIRE_MAX_TEXT + 1], hex[33];
	uint32_t *ixs = NULL, k = 0;
	int installed = r->state == RECV_PENDING || r->state == RECV_PREPARED, ret = 0;

	snprintf(why, sizeof(why), "%s", kvmig_last_error());
	kvmig_id_format(&r->mig, hex);
	if (r->state == RECV_HANDSHAKE)
		return; /* nothing of this migration here yet */
	/* Test-only: the pager refuses to take them out. */
	ret = kvmig_fault("recv-uninstall", NULL) ? -EIO :
		kvmig_pager_record_end(r->p, &r->mig, r->state == RECV_PREPARED ? KVMIG_REC_PREPARED :
				       KVMIG_REC_RECEIVING, 0);
	if (ret < 0 && installed) {
		kvmig_err(err, "%s; and the %u sequences installed here as pending could not be "
			  "removed (%s): they do not run, and gc removes them once this process is "
			  "gone (migration %s)", why, r->final.n, strerror(-ret), hex);
		return;
	}
	r->state = RECV_HANDSHAKE;
	if (!(ixs = malloc(sizeof(*ixs) * (r->n ? r->n : 1))))
		ret = -ENOMEM;
	/* The pending sequences' pages went with them. */
	for (uint32_t i = 0; ixs && i < r->n; i++)
		if (!(installed && !r->pg[i].dropped) && !(r->pg[i].dropped && r->dropped_freed))
			ixs[k++] = r->pg[i].dst_ix;
	if (ixs && k)
		ret = kvmig_pager_free(r->p, ixs, k);
	free(ixs);
	if (ret < 0)
		kvmig_err(err, "%s; and the %u pages allocated here could not be freed (%s); gc "
			  "frees them once this process is gone", why, k ? k : r->n, strerror(-ret));
	else
		kvmig_err(err, "%s", why);
}

int kvmig_migrate_accept(struct kvmig_listener *l, struct kvmig_pager *p,
			 const struct kvmig_migrate_opts *opts, struct kvmig_migrate_stats *stats)
{
	struct kvmig_migrate_stats st = { 0 };
	struct receiver *r = calloc(1, sizeof(*r));
	double t0 = 0, tx = 0;
	int ret;

	if (!r)
		return -ENOMEM;
	r->p = p;
	if ((ret = engine_init(&r->e, opts, 1)) < 0)
		goto out;
	r->e.ops = l->ops;
	/* Registrations the provider kept belong to the last pager. */
	if (l->pager_serial != kvmig_pager_serial(p) && l->ops->listener_forget)
		l->ops->listener_forget(l->impl);
	l->pager_serial = kvmig_pager_serial(p);
	r->e.ev.transport = l->ops->name;
	r->e.ev.type = KVMIG_EVENT_LISTENING;
	r->e.ev.addr = kvmig_listener_addr(l);
	if (r->e.o.on_event)
		r->e.o.on_event(r->e.o.event_arg, &r->e.ev);
	r->e.ev.addr = NULL;
	ret = l->ops->accept(l->impl, r->e.o.accept_timeout_ms ? (int)r->e.o.accept_timeout_ms : -1,
			     r->e.o.cancel_fd, &r->e.c);
	if (ret < 0)
		goto out;
	t0 = kvmig_now();
	engine_connected(&r->e);
	engine_handshake_begin(&r->e);
	if ((ret = handshake(r)) < 0)
		goto fail;
	engine_handshake_done(&r->e);
	if ((ret = begin_record(r)) < 0 || (ret = setup(r)) < 0)
		goto fail;
	tx = kvmig_now();
	if ((ret = transfer(r)) < 0)
		goto fail;
	ENGINE_DIE("recv-verified");
	st.transfer_seconds = kvmig_now() - tx;
	engine_progress(&r->e, 1);
	if ((ret = install(r)) < 0 || (ret = free_dropped(r)) < 0)
		goto fail;
	ret = commit(r);
	/* Prepared, the receiver waits for the sender's decision: only an
	 * ABORT from it (it had not decided) lets this side abort. */
	if (ret < 0 && (r->state != RECV_PREPARED || r->e.peer_aborted))
		goto fail;
	st.pages = r->n - r->n_dropped;
	st.seqs = r->final.n;
	st.bytes = (uint64_t)st.pages * 2 * r->hello.half_bytes;
	st.n_rounds = r->round.round + 1;
	st.pages_verified = r->verified;
	goto out;
fail:
	engine_abort(&r->e, ret);
	/* Deregister and close before any page is freed: an RDMA NIC writes
	 * into the pages on its own while reads are posted; a read that lands
	 * after the deregistration fails on the NIC instead of writing. */
	for (uint32_t i = 0; r->e.c && i < r->n_lreg; i++)
		r->e.ops->dereg(r->e.c, &r->lreg[i]);
	if (r->e.c)
		r->e.ops->close(&r->e.c);
	cleanup_failed(r, ret);
out:
	st.rereads = r->rereads;
	st.reads = r->n_reads;
	st.register_seconds = r->reg_seconds;
	st.regions_reused = r->reg_reused;
	snprintf(st.transport, sizeof(st.transport), "%s", r->e.ops->name);
	st.seconds = t0 ? kvmig_now() - t0 : 0;
	st.migration = r->mig;
	st.resolved = r->resolved;
	st.unconfirmed = r->unconfirmed;
	if (stats)
		*stats = st;
	for (uint32_t i = 0; r->e.c && i < r->n_lreg; i++)
		r->e.ops->dereg(r->e.c, &r->lreg[i]);
	engine_fini(&r->e);
	kvmig_seq_list_free(&r->final);
	free(r->pg);
	free(r->rx);
	kvmig_msg_regions_free(&r->regions);
	free(r->slot);
	free(r->queue);
	for (uint32_t i = 0; r->streams && i < 2 * r->n_streams; i++)
		kvmig_digest_stream_free(&r->streams[i]);
	free(r->streams);
	free(r->free_streams);
	free(r->reads);
	free(r->free_reads);
	free(r->batch);
	free(r);
	return ret;
}
