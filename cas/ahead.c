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

int kvmig_hash_ahead(struct kvmig_pager *p, const uint32_t *ixs, uint32_t n,
		     struct kvmig_hash_ahead_stats *stats)
{
	struct kvmig_hash_ahead_stats st = { 0 };
	struct kvmig_cache_meta meta;
	enum kvmig_layout layout;
	struct kvmig_page_digest d;
	struct kvmig_extent *ext = NULL;
	struct iovec *iov = NULL;
	uint32_t *pages = NULL, np = 0, max_ext;
	uint64_t half_bytes;
	double t0 = kvmig_now();
	int ret;

	if ((ret = kvmig_pager_digest_get(p, 0, &d)) == -ENOTSUP)
		return kvmig_err(ret, "pager %s keeps no digests", kvmig_pager_name(p));
	if ((ret = kvmig_pager_meta(p, &meta, &layout)) < 0 ||
	    (ret = kvmig_meta_half_bytes(&meta, &half_bytes)) < 0 ||
	    (ret = pages_of(p, ixs, n, &pages, &np)) < 0)
		return ret;
	max_ext = meta.n_layers;
	ext = calloc(max_ext, sizeof(*ext));
	iov = calloc(max_ext, sizeof(*iov));
	if (!ext || !iov) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < np; i++) {
		struct kvmig_digest k, v;
		uint64_t g1, g2;
		int nk, nv;

		st.pages++;
		if ((ret = kvmig_pager_generation(p, pages[i], &g1)) < 0 ||
		    (ret = kvmig_pager_digest_get(p, pages[i], &d)) < 0)
			goto out;
		if (g1 && d.gen == g1) {
			st.fresh++;
			continue;
		}
		if ((nk = kvmig_half_iov(p, pages[i], KVMIG_HALF_K, half_bytes, ext, iov,
					 max_ext)) < 0) {
			ret = nk;
			goto out;
		}
		kvmig_digest_computev(iov, nk, &k);
		if ((nv = kvmig_half_iov(p, pages[i], KVMIG_HALF_V, half_bytes, ext, iov,
					 max_ext)) < 0) {
			ret = nv;
			goto out;
		}
		kvmig_digest_computev(iov, nv, &v);
		st.bytes += 2 * half_bytes;
		if ((ret = kvmig_pager_generation(p, pages[i], &g2)) < 0)
			goto out;
		if (!g1 || g2 != g1) {
			st.raced++;
			continue;
		}
		d.gen = g1;
		memcpy(d.k, k.b, sizeof(d.k));
		memcpy(d.v, v.b, sizeof(d.v));
		if ((ret = kvmig_pager_digest_put(p, pages[i], &d)) < 0)
			goto out;
		st.hashed++;
	}
out:
	st.seconds = kvmig_now() - t0;
	if (stats)
		*stats = st;
	free(pages);
	free(ext);
	free(iov);
	return ret < 0 ? ret : 0;
}
