/* SPDX-License-Identifier: MIT */
/*
 * cas/ahead.c - digests computed ahead of a migration (kvmig_hash_ahead):
 * the pages of runnable sequences hashed while the engine runs, each kept
 * in the pager with the generation it was read at. KV blocks are
 * append-only, so once a block is full its digests stay current and a
 * migration's paused round hashes only what changed since.
 *
 * Why a kept digest can be trusted as far as it is used: the generation is
 * read before the bytes and again after; a write bumps it when done, so
 * equal reads mean no write completed meanwhile, and a write still under
 * way then bumps it later, leaving the kept entry for an older generation,
 * which nothing matches. Allocating a page moves its generation, so bytes a
 * receiver or a restore writes into it later are never covered by an entry
 * from before; and only pages of runnable sequences are hashed, never ones
 * a receiver may still be filling. Should an engine write a page without
 * bumping its generation, the receiver's own hash of what it read differs,
 * it reads once more and the migration aborts: no wrong byte is installed.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <kvmig/cas.h>

#include "cas/internal.h"
#include "util/internal.h"

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* The sorted, distinct pages of runnable sequences (among @ixs if given). */
static int pages_of(struct kvmig_pager *p, const uint32_t *ixs, uint32_t n, uint32_t **out,
		    uint32_t *n_out)
{
	struct kvmig_seq_list l = { 0 };
	uint32_t *v = NULL, nv = 0, cap = 0, k = 0;
	uint32_t *want = NULL;
	int ret;

	if ((ret = kvmig_pager_seqs(p, &l)) < 0)
		return ret;
	for (uint32_t i = 0; i < l.n; i++) {
		if (l.seqs[i].state != KVMIG_SEQ_ACTIVE)
			continue;
		if (nv + l.seqs[i].n_pages > cap) {
			uint32_t *t;

			cap = (nv + l.seqs[i].n_pages) * 2;
			if (!(t = realloc(v, sizeof(*v) * cap))) {
				ret = -ENOMEM;
				goto out;
			}
			v = t;
		}
		memcpy(v + nv, l.seqs[i].page_ixs, sizeof(*v) * l.seqs[i].n_pages);
		nv += l.seqs[i].n_pages;
	}
	if (nv)
		qsort(v, nv, sizeof(*v), cmp_u32);
	if (ixs && n && !(want = malloc(sizeof(*want) * n))) {
		ret = -ENOMEM;
		goto out;
	}
	if (want) {
		memcpy(want, ixs, sizeof(*want) * n);
		qsort(want, n, sizeof(*want), cmp_u32);
	}
	for (uint32_t i = 0; i < nv; i++) {
		if (k && v[k - 1] == v[i])
			continue;
		if (ixs && !(want && bsearch(&v[i], want, n, sizeof(*want), cmp_u32)))
			continue;
		v[k++] = v[i];
	}
	*out = v;
	*n_out = k;
	v = NULL;
out:
	free(v);
	free(want);
	kvmig_seq_list_free(&l);
	return ret;
}

struct ahead {
	struct kvmig_pager *p;
	const uint32_t *pages;
	uint32_t n_pages, max_ext;
	uint64_t half_bytes;
	_Atomic uint32_t next, fresh, hashed, raced;
	_Atomic uint64_t bytes;
	pthread_mutex_t lock;  /* the first error */
	int err;
	char msg[256];
};

static void ahead_fail(struct ahead *h, int err)
{
	pthread_mutex_lock(&h->lock);
	if (!h->err) {
		h->err = err;
		snprintf(h->msg, sizeof(h->msg), "%s", kvmig_last_error());
	}
	pthread_mutex_unlock(&h->lock);
}

/* One page: current already, hashed and kept, or raced. */
static int ahead_page(struct ahead *h, uint32_t ix, struct kvmig_extent *ext, struct iovec *iov)
{
	struct kvmig_page_digest d;
	struct kvmig_digest k, v;
	uint64_t g1, g2;
	int nk, nv, ret;

	if ((ret = kvmig_pager_generation(h->p, ix, &g1)) < 0 ||
	    (ret = kvmig_pager_digest_get(h->p, ix, &d)) < 0)
		return ret;
	if (g1 && d.gen == g1) {
		atomic_fetch_add(&h->fresh, 1);
		return 0;
	}
	if ((nk = kvmig_half_iov(h->p, ix, KVMIG_HALF_K, h->half_bytes, ext, iov, h->max_ext)) < 0)
		return nk;
	kvmig_digest_computev(iov, nk, &k);
	if ((nv = kvmig_half_iov(h->p, ix, KVMIG_HALF_V, h->half_bytes, ext, iov, h->max_ext)) < 0)
		return nv;
	kvmig_digest_computev(iov, nv, &v);
	atomic_fetch_add(&h->bytes, 2 * h->half_bytes);
	if ((ret = kvmig_pager_generation(h->p, ix, &g2)) < 0)
		return ret;
	if (!g1 || g2 != g1) {
		atomic_fetch_add(&h->raced, 1);
		return 0;
	}
	d.gen = g1;
	memcpy(d.k, k.b, sizeof(d.k));
	memcpy(d.v, v.b, sizeof(d.v));
	if ((ret = kvmig_pager_digest_put(h->p, ix, &d)) < 0)
		return ret;
	atomic_fetch_add(&h->hashed, 1);
	return 0;
}

static void *ahead_worker(void *arg)
{
	struct ahead *h = arg;
	struct kvmig_extent *ext = calloc(h->max_ext, sizeof(*ext));
	struct iovec *iov = calloc(h->max_ext, sizeof(*iov));
	uint32_t i;
	int ret;

	if (!ext || !iov)
		ahead_fail(h, kvmig_err(-ENOMEM, "out of memory hashing ahead"));
	while (ext && iov && !h->err && (i = atomic_fetch_add(&h->next, 1)) < h->n_pages)
		if ((ret = ahead_page(h, h->pages[i], ext, iov)) < 0)
			ahead_fail(h, ret);
	free(ext);
	free(iov);
	return NULL;
}

int kvmig_hash_ahead(struct kvmig_pager *p, const uint32_t *ixs, uint32_t n, uint32_t threads,
		     struct kvmig_hash_ahead_stats *stats)
{
	struct kvmig_hash_ahead_stats st = { 0 };
	struct kvmig_cache_meta meta;
	enum kvmig_layout layout;
	struct kvmig_page_digest d;
	struct ahead h = { .p = p };
	pthread_t tid[64];
	uint32_t started = 0;
	double t0 = kvmig_now();
	int ret;

	if (threads > 64)
		return kvmig_err(-EINVAL, "%u hashing threads; at most 64", threads);
	if ((ret = kvmig_pager_digest_get(p, 0, &d)) == -ENOTSUP)
		return kvmig_err(ret, "pager %s keeps no digests", kvmig_pager_name(p));
	if ((ret = kvmig_pager_meta(p, &meta, &layout)) < 0 ||
	    (ret = kvmig_meta_half_bytes(&meta, &h.half_bytes)) < 0 ||
	    (ret = pages_of(p, ixs, n, (uint32_t **)&h.pages, &h.n_pages)) < 0)
		return ret;
	h.max_ext = meta.n_layers;
	pthread_mutex_init(&h.lock, NULL);
	for (uint32_t t = 1; t < KVMIG_MIN(threads, h.n_pages); t++) {
		if (pthread_create(&tid[started], NULL, ahead_worker, &h) != 0)
			break; /* fewer helpers: the others take their pages */
		started++;
	}
	ahead_worker(&h); /* this thread too */
	for (uint32_t t = 0; t < started; t++)
		pthread_join(tid[t], NULL);
	pthread_mutex_destroy(&h.lock);
	st.pages = h.n_pages;
	st.fresh = atomic_load(&h.fresh);
	st.hashed = atomic_load(&h.hashed);
	st.raced = atomic_load(&h.raced);
	st.bytes = atomic_load(&h.bytes);
	st.threads = started + 1;
	st.seconds = kvmig_now() - t0;
	if (stats)
		*stats = st;
	free((void *)h.pages);
	if (h.err)
		return kvmig_err(h.err, "%s", h.msg);
	return 0;
}
