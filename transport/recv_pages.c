/* SPDX-License-Identifier: MIT */
/*
 * transport/recv_pages.c - the receiver's pages: the map from the sender's
 * page indices to ours, the read scheduler (queue_depth reads in flight,
 * extents contiguous on both sides read in one piece), hashing each read as
 * it lands, and the comparison with the sender's digest (one re-read on a
 * mismatch, then EIO naming the page).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <kvmig/cas.h>

#include "util/internal.h"
#include "transport/recv_internal.h"

/* ---- src ix -> page ---- */

static uint32_t hash_ix(uint32_t ix, uint32_t cap)
{
	return (ix * 2654435761u) & (cap - 1);
}

int recv_slot_find(const struct receiver *r, uint32_t ix)
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

int recv_slot_grow(struct receiver *r, uint32_t need)
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

void recv_slot_add(struct receiver *r, uint32_t idx)
{
	uint32_t h = hash_ix(r->pg[idx].src_ix, r->slot_cap);

	while (r->slot[h])
		h = (h + 1) & (r->slot_cap - 1);
	r->slot[h] = idx + 1;
}

/* ---- page states ---- */

static const char *const rp_names[RP_N_STATES] = { "QUEUED", "LANDED", "VERIFIED", "DROPPED" };

/* The moves of the diagram in recv_internal.h, by state: a bit per target. */
static const uint8_t rp_moves[RP_N_STATES] = {
	[RP_QUEUED] = 1u << RP_LANDED | 1u << RP_DROPPED,
	[RP_LANDED] = 1u << RP_QUEUED | 1u << RP_VERIFIED | 1u << RP_DROPPED,
	[RP_VERIFIED] = 1u << RP_DROPPED,
	[RP_DROPPED] = 0,
};

void recv_page_new(struct receiver *r, uint32_t idx)
{
	r->pg[idx].state = RP_QUEUED;
	r->n_in[RP_QUEUED]++;
}

int recv_page_to(struct receiver *r, uint32_t idx, enum rpage_state to)
{
	struct rpage *pg = &r->pg[idx];

	if (!(rp_moves[pg->state] & (1u << to)))
		return kvmig_err(-EPROTO, "internal: source page %u cannot go from %s to %s",
				 pg->src_ix, rp_names[pg->state], rp_names[to]);
	r->n_in[pg->state]--;
	r->n_in[to]++;
	pg->state = (uint8_t)to;
	if (to == RP_QUEUED || to == RP_DROPPED) {
		pg->hashed = 0; /* new bytes coming, or none wanted */
		pg->epoch++;
	}
	return 0;
}

/* ---- read queue ---- */

int recv_enqueue(struct receiver *r, uint32_t idx)
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
	if (r->pg[idx].state == RP_DROPPED)
		return 0; /* FINAL left it out before it was read */
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
	if (r->ses.o.verify && !r->pool && r->n_free_streams) {
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
	       x[i + 1].key_ix == x[i].key_ix)
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
int recv_fill_reads(struct receiver *r)
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
			if (!c->active)
				continue; /* dropped */
		}
		struct rpage *pg = &r->pg[c->page];
		const struct rext *rxs = &r->rx[pg->ext_off], *rx = &rxs[c->ri];
		const struct kvmig_extent *lx = &c->local[c->li];
		uint64_t len = remote_run(rxs, pg->n_ext, c->ri, c->roff, r->ses.o.max_read_bytes);
		struct xport_read *rd = r->free_reads[--r->n_free];

		len = local_run(r, c->local, c->n_local, c->li, c->loff, len);
		kvmig_container_of(rd, struct rread, x)->off = c->poff;
		c->poff += len;
		rd->local = (uint8_t *)lx->addr + c->loff;
		rd->remote = rx->addr + c->roff;
		rd->len = (uint32_t)len;
		rd->key = r->keys[rx->key_ix];
		if (kvmig_fault("recv-bad-key", NULL))
			rd->key.b[0] ^= 0x5a; /* test-only */
		if (kvmig_fault("recv-read-unoffered", NULL)) {
			/* Test-only: the bytes right after the last offered run. */
			const struct rregion *g = &r->rg[r->n_rg - 1];

			rd->remote = g->w.addr + g->w.len;
			rd->key = g->w.key;
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
	return r->ses.ops->post_reads(r->ses.c, r->batch, nb);
}

/* ---- verification ---- */

static int hash_page(struct receiver *r, struct rpage *pg)
{
	struct kvmig_extent ext[MAX_HALF_EXTENTS];
	struct iovec iov[MAX_HALF_EXTENTS];

	for (int half = 0; half < 2; half++) {
		int n = kvmig_half_iov(r->p, pg->dst_ix, (enum kvmig_half)half,
				       r->hello.half_bytes, ext, iov, MAX_HALF_EXTENTS);

		if (n < 0)
			return n;
		kvmig_digest_computev(iov, n, half ? &pg->rv : &pg->rk);
	}
	return 0;
}

/*
 * Whether a page's bytes and digest are compared as soon as both are here.
 * Live: only after FINAL, since a page may still be written at the source
 * during the rounds (it is then offered again, which voids its digest).
 */
int recv_comparing(const struct receiver *r)
{
	return !r->live || r->xfer == XFER_FINAL;
}

/* Both the bytes and the sender's digest are here: compare. */
int recv_check_page(struct receiver *r, uint32_t idx)
{
	struct rpage *pg = &r->pg[idx];
	int k_ok = kvmig_digest_equal(&pg->rk, &pg->sk), v_ok = kvmig_digest_equal(&pg->rv, &pg->sv);
	int ret;

	if (!r->n_in[RP_VERIFIED] && (ret = KVMIG_FAULT_FAIL("recv-verify")) < 0)
		return ret; /* test-only, at the first comparison */
	if (k_ok && v_ok)
		return recv_page_to(r, idx, RP_VERIFIED);
	if (pg->attempts < 2) {
		/* Once more: a transient fault must not fail a migration. */
		pg->attempts++;
		r->rereads++;
		if ((ret = recv_page_to(r, idx, RP_QUEUED)) < 0)
			return ret;
		return recv_enqueue(r, idx);
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

/* ---- hashing on a pool of threads ---- */

/*
 * A landed page to hash, or hashed. Workers never touch r->pg (it grows by
 * realloc as offers come): a job carries what they need, and the epoch
 * tells the transfer loop whether the page still waits for this hash.
 */
struct hash_job {
	uint32_t idx, epoch, dst_ix;
	int err;
	struct kvmig_digest k, v;
};

struct hash_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct hash_job *todo, *done;
	uint32_t todo_head, todo_n, todo_cap, done_n, done_cap;
	int stop;
	int efd;
	pthread_t th[KVMIG_MAX_HASH_THREADS];
	uint32_t n_th;
	struct kvmig_pager *p;
	uint64_t half_bytes;
};

static int push_job(struct hash_job **v, uint32_t *n, uint32_t *cap, const struct hash_job *j)
{
	if (*n == *cap) {
		uint32_t c = *cap ? *cap * 2 : 256;
		struct hash_job *t = realloc(*v, sizeof(*t) * c);

		if (!t)
			return -ENOMEM;
		*v = t;
		*cap = c;
	}
	(*v)[(*n)++] = *j;
	return 0;
}

static void *pool_main(void *arg)
{
	struct hash_pool *hp = arg;
	struct kvmig_extent ext[MAX_HALF_EXTENTS];
	struct iovec iov[MAX_HALF_EXTENTS];
	uint64_t one = 1;

	pthread_mutex_lock(&hp->lock);
	for (;;) {
		struct hash_job j;

		while (!hp->stop && hp->todo_head == hp->todo_n)
			pthread_cond_wait(&hp->cond, &hp->lock);
		if (hp->stop)
			break;
		j = hp->todo[hp->todo_head++];
		pthread_mutex_unlock(&hp->lock);
		j.err = 0;
		for (int half = 0; half < 2 && !j.err; half++) {
			int n = kvmig_half_iov(hp->p, j.dst_ix, (enum kvmig_half)half, hp->half_bytes,
					       ext, iov, MAX_HALF_EXTENTS);

			if (n < 0)
				j.err = n;
			else
				kvmig_digest_computev(iov, n, half ? &j.v : &j.k);
		}
		pthread_mutex_lock(&hp->lock);
		if (push_job(&hp->done, &hp->done_n, &hp->done_cap, &j) < 0)
			j.err = -ENOMEM; /* lost: the page stays LANDED; reported below */
		(void)!write(hp->efd, &one, sizeof(one));
	}
	pthread_mutex_unlock(&hp->lock);
	return NULL;
}

static void pool_stop(struct receiver *r)
{
	struct hash_pool *hp = r->pool;

	if (!hp)
		return;
	pthread_mutex_lock(&hp->lock);
	hp->stop = 1;
	pthread_cond_broadcast(&hp->cond);
	pthread_mutex_unlock(&hp->lock);
	for (uint32_t i = 0; i < hp->n_th; i++)
		pthread_join(hp->th[i], NULL);
	if (hp->efd >= 0)
		close(hp->efd);
	pthread_mutex_destroy(&hp->lock);
	pthread_cond_destroy(&hp->cond);
	free(hp->todo);
	free(hp->done);
	free(hp);
	r->pool = NULL;
}

/* A pool of @n threads (n > 1). */
static int pool_start(struct receiver *r, uint32_t n)
{
	struct hash_pool *hp = calloc(1, sizeof(*hp));
	int err;

	if (!hp)
		return -ENOMEM;
	pthread_mutex_init(&hp->lock, NULL);
	pthread_cond_init(&hp->cond, NULL);
	hp->p = r->p;
	hp->half_bytes = r->hello.half_bytes;
	r->pool = hp;
	if ((hp->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
		return kvmig_err(-errno, "eventfd: %s", strerror(errno));
	for (uint32_t i = 0; i < n; i++) {
		if ((err = pthread_create(&hp->th[i], NULL, pool_main, hp)) != 0) {
			if (hp->n_th)
				break; /* fewer threads: those running take every page */
			return kvmig_err(-err, "cannot start a hashing thread: %s", strerror(err));
		}
		hp->n_th++;
	}
	return 0;
}

int recv_pool_fd(const struct receiver *r)
{
	return r->pool ? r->pool->efd : -1;
}

static int pool_submit(struct receiver *r, uint32_t idx)
{
	struct hash_pool *hp = r->pool;
	struct hash_job j = { .idx = idx, .epoch = r->pg[idx].epoch, .dst_ix = r->pg[idx].dst_ix };
	int ret;

	pthread_mutex_lock(&hp->lock);
	if (hp->todo_head == hp->todo_n)
		hp->todo_head = hp->todo_n = 0; /* drained: start over */
	ret = push_job(&hp->todo, &hp->todo_n, &hp->todo_cap, &j);
	pthread_cond_signal(&hp->cond);
	pthread_mutex_unlock(&hp->lock);
	return ret;
}

int recv_pool_drain(struct receiver *r)
{
	struct hash_pool *hp = r->pool;
	struct hash_job *got;
	uint32_t n;
	uint64_t cnt;
	int ret = 0;

	if (!hp)
		return 0;
	(void)!read(hp->efd, &cnt, sizeof(cnt));
	pthread_mutex_lock(&hp->lock);
	got = hp->done;
	n = hp->done_n;
	hp->done = NULL;
	hp->done_n = hp->done_cap = 0;
	pthread_mutex_unlock(&hp->lock);
	for (uint32_t i = 0; i < n && ret == 0; i++) {
		struct rpage *pg = &r->pg[got[i].idx];

		if (pg->epoch != got[i].epoch || pg->state != RP_LANDED)
			continue; /* read again, or dropped, since: not this hash's page */
		if (got[i].err < 0) {
			ret = kvmig_err(got[i].err, "cannot hash destination page %u", pg->dst_ix);
			break;
		}
		pg->rk = got[i].k;
		pg->rv = got[i].v;
		pg->hashed = 1;
		if (pg->has_digest && recv_comparing(r))
			ret = recv_check_page(r, got[i].idx);
	}
	free(got);
	return ret;
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

int recv_on_read_done(struct receiver *r, struct xport_read *rd)
{
	uint32_t idx = (uint32_t)(uintptr_t)rd->ctx;
	struct rpage *pg = &r->pg[idx];
	int ret;

	r->inflight--;
	r->free_reads[r->n_free++] = rd;
	if (rd->status < 0)
		return kvmig_err(rd->status, "read of source page %u failed", pg->src_ix);
	if (r->ses.o.verify && !r->pool)
		stream_read(r, pg, rd);
	if (--pg->reads_left || (r->cur.active && r->cur.page == idx))
		return 0;
	if (pg->state == RP_DROPPED) { /* FINAL left it out while it was read */
		if (pg->stream >= 0)
			r->free_streams[r->n_free_streams++] = pg->stream;
		pg->stream = -1;
		return 0;
	}
	if (r->pages_done == 1 && (ret = KVMIG_FAULT_FAIL("recv-transfer")) < 0)
		return ret;
	if (r->pages_done == 1)
		SESSION_DIE("recv-mid-reads");
	if (pg->attempts == 1) {
		r->ses.ev.pages_done = ++r->pages_done;
		r->ses.ev.bytes_done += 2 * r->hello.half_bytes;
	}
	if ((ret = recv_page_to(r, idx, RP_LANDED)) < 0 || !r->ses.o.verify)
		return ret;
	if (r->pool)
		return pool_submit(r, idx); /* compared when its hash comes back */
	if ((ret = finish_hash(r, pg)) < 0)
		return ret;
	pg->hashed = 1;
	return pg->has_digest && recv_comparing(r) ? recv_check_page(r, idx) : 0;
}

int recv_setup(struct receiver *r)
{
	uint32_t qd = r->ses.o.queue_depth;
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
	if (r->ses.o.verify) {
		uint32_t n = r->ses.o.hash_threads;

		if (!n) { /* what the machine can spare: the main thread reads */
			long cpus = sysconf(_SC_NPROCESSORS_ONLN);

			n = cpus > 2 ? (uint32_t)KVMIG_MIN(cpus - 1, 8) : 1;
		}
		r->hash_threads = n;
		if (n > 1 && (ret = pool_start(r, n)) < 0)
			return ret;
	}
	ret = kvmig_pager_regions(r->p, r->lregion, MAX_LOCAL_REGIONS, &r->n_lreg);
	if (ret == -ENOBUFS)
		return kvmig_err(-ENOBUFS, "destination pager has %u memory regions; at most %u",
				 r->n_lreg, MAX_LOCAL_REGIONS);
	if (ret < 0)
		return ret;
	t0 = kvmig_now();
	for (uint32_t i = 0; i < r->n_lreg; i++) {
		if ((ret = r->ses.ops->reg_local(r->ses.c, r->lregion[i].base, r->lregion[i].len,
						 &r->lreg[i])) < 0)
			return kvmig_err_prefix(ret, "cannot register destination memory");
		r->reg_reused += ret == 1;
	}
	r->reg_seconds = kvmig_now() - t0;
	return 0;
}

void recv_pages_fini(struct receiver *r)
{
	pool_stop(r);
	free(r->pg);
	free(r->rx);
	free(r->slot);
	free(r->queue);
	for (uint32_t i = 0; r->streams && i < 2 * r->n_streams; i++)
		kvmig_digest_stream_free(&r->streams[i]);
	free(r->streams);
	free(r->free_streams);
	free(r->reads);
	free(r->free_reads);
	free(r->batch);
}
