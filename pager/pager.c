/* SPDX-License-Identifier: MIT */
/*
 * pager/pager.c - the pager handle: a thin, checked wrapper over an
 * implementation's ops table, plus the pause guard and spec parsing.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <kvmig/pager.h>

#include "internal.h"
#include "pager_internal.h"

/* Handles get serials that never repeat, unlike addresses after a free. */
static _Atomic uint64_t next_serial = 1;

int kvmig_pager_create(const struct kvmig_pager_ops *ops, void *impl, struct kvmig_pager **ret)
{
	struct kvmig_pager *p;

	if (!ops || !ops->meta || !ops->pause || !ops->resume || !ops->occupied || !ops->seqs ||
	    !ops->extents || !ops->regions || !ops->generation || !ops->allocate || !ops->free ||
	    !ops->install || !ops->remove)
		return kvmig_err(-EINVAL, "pager ops table is missing an operation");
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->ops = ops;
	p->impl = impl;
	p->serial = atomic_fetch_add(&next_serial, 1);
	*ret = p;
	return 0;
}

uint64_t kvmig_pager_serial(const struct kvmig_pager *p)
{
	return p->serial;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int kvmig_pages_unused(const struct kvmig_seq_list *all, const char *const *drop,
		       uint32_t n_drop, const uint32_t *cand, uint32_t n, uint32_t *out,
		       uint32_t *n_out)
{
	uint32_t max = 0, k = 0;
	const char **sorted;
	uint8_t *mark;

	for (uint32_t i = 0; i < n; i++)
		max = cand[i] > max ? cand[i] : max;
	mark = calloc((size_t)max + 1, 1);
	sorted = malloc(sizeof(*sorted) * (n_drop ? n_drop : 1));
	if (!mark || !sorted) {
		free(mark);
		free(sorted);
		return -ENOMEM;
	}
	if (n_drop)
		memcpy(sorted, drop, sizeof(*sorted) * n_drop);
	qsort(sorted, n_drop, sizeof(*sorted), cmp_str);
	for (uint32_t i = 0; i < all->n; i++) {
		const struct kvmig_seq *q = &all->seqs[i];

		if (bsearch(&q->id, sorted, n_drop, sizeof(*sorted), cmp_str))
			continue; /* dropped: its pages count as unused */
		for (uint32_t j = 0; j < q->n_pages; j++)
			if (q->page_ixs[j] <= max)
				mark[q->page_ixs[j]] = 1;
	}
	/* k <= i: writing out[k] never overtakes reading cand[i]. */
	for (uint32_t i = 0; i < n; i++) {
		uint32_t ix = cand[i];

		if (!mark[ix]) {
			mark[ix] = 1;
			out[k++] = ix;
		}
	}
	free(mark);
	free(sorted);
	*n_out = k;
	return 0;
}

void kvmig_pager_destroy(struct kvmig_pager **pp)
{
	struct kvmig_pager *p = pp ? *pp : NULL;

	if (!p)
		return;
	if (p->ops->destroy)
		p->ops->destroy(p->impl);
	free(p);
	*pp = NULL;
}

const char *kvmig_pager_name(const struct kvmig_pager *p)
{
	return p->ops->name ? p->ops->name : "pager";
}

int kvmig_pager_meta(struct kvmig_pager *p, struct kvmig_cache_meta *meta, enum kvmig_layout *layout)
{
	return p->ops->meta(p->impl, meta, layout);
}

int kvmig_pager_pause(struct kvmig_pager *p)
{
	return p->ops->pause(p->impl);
}

int kvmig_pager_resume(struct kvmig_pager *p)
{
	return p->ops->resume(p->impl);
}

int kvmig_pager_occupied(struct kvmig_pager *p, uint32_t **ixs, uint32_t *n)
{
	return p->ops->occupied(p->impl, ixs, n);
}

int kvmig_pager_seqs(struct kvmig_pager *p, struct kvmig_seq_list *out)
{
	return p->ops->seqs(p->impl, out);
}

int kvmig_pager_extents(struct kvmig_pager *p, uint32_t ix, enum kvmig_half half,
			struct kvmig_extent *ext, uint32_t max, uint32_t *n)
{
	return p->ops->extents(p->impl, ix, half, ext, max, n);
}

int kvmig_pager_regions(struct kvmig_pager *p, struct kvmig_region *r, uint32_t max, uint32_t *n)
{
	return p->ops->regions(p->impl, r, max, n);
}

int kvmig_pager_generation(struct kvmig_pager *p, uint32_t ix, uint64_t *gen)
{
	return p->ops->generation(p->impl, ix, gen);
}

int kvmig_pager_allocate(struct kvmig_pager *p, uint32_t n, uint32_t *ixs)
{
	return p->ops->allocate(p->impl, n, ixs);
}

int kvmig_pager_free(struct kvmig_pager *p, const uint32_t *ixs, uint32_t n)
{
	return p->ops->free(p->impl, ixs, n);
}

int kvmig_pager_install(struct kvmig_pager *p, const struct kvmig_seq *seqs, uint32_t n)
{
	return p->ops->install(p->impl, seqs, n);
}

int kvmig_pager_remove(struct kvmig_pager *p, const char *const *ids, uint32_t n)
{
	return p->ops->remove(p->impl, ids, n);
}

int kvmig_pager_with_paused(struct kvmig_pager *p, int (*fn)(struct kvmig_pager *p, void *arg),
			    void *arg)
{
	int ret, rret;

	ret = kvmig_pager_pause(p);
	if (ret < 0)
		return kvmig_err_prefix(ret, "cannot pause pager");
	ret = fn(p, arg);
	/* Resume even when fn failed: a failed capture or migration must leave
	 * the engine running exactly as before. fn's error wins. */
	rret = kvmig_pager_resume(p);
	if (ret < 0)
		return ret;
	if (rret < 0)
		return kvmig_err_prefix(rret, "cannot resume pager");
	return ret;
}

int kvmig_pager_open(const char *spec, struct kvmig_pager **ret)
{
	if (spec && !strncmp(spec, "shm:", 4) && spec[4])
		return kvmig_synth_attach(spec + 4, ret);
	return kvmig_err(-EINVAL, "unknown pager spec \"%s\" (expected shm:NAME)",
			 spec ? spec : "(null)");
}
