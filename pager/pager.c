/* SPDX-License-Identifier: MIT */
/*
 * pager/pager.c - the pager handle: a thin, checked wrapper over an
 * implementation's ops table, plus the pause guard and spec parsing.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <kvmig/synth.h>

#include "pager/internal.h"
#include "pager/pager_internal.h"
#include "util/internal.h"

/* Handles get serials that never repeat, unlike addresses after a free. */
static _Atomic uint64_t next_serial = 1;

int kvmig_pager_create(const struct kvmig_pager_ops *ops, void *impl, struct kvmig_pager **ret)
{
	struct kvmig_pager *p;

	if (!ops || !ops->meta || !ops->pause || !ops->resume || !ops->occupied || !ops->seqs ||
	    !ops->extents || !ops->regions || !ops->generation || !ops->allocate || !ops->free ||
	    !ops->install || !ops->remove || !ops->identity || !ops->record_create ||
	    !ops->record_set || !ops->record_tag || !ops->record_install || !ops->record_end ||
	    !ops->record_disown ||
	    !ops->records || !ops->gc)
		return kvmig_err(-EINVAL, "pager ops table is missing an operation");
	if (!ops->digest_get != !ops->digest_put)
		return kvmig_err(-EINVAL, "pager ops table has one of digest_get / digest_put");
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->ops = ops;
	p->impl = impl;
	p->serial = atomic_fetch_add(&next_serial, 1);
	*ret = p;
	return 0;
}

void kvmig_seq_list_free(struct kvmig_seq_list *list)
{
	for (uint32_t i = 0; list && list->seqs && i < list->n; i++) {
		free(list->seqs[i].id);
		free(list->seqs[i].page_ixs);
	}
	if (!list)
		return;
	free(list->seqs);
	list->seqs = NULL;
	list->n = 0;
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

int kvmig_pager_format(struct kvmig_pager *p, struct kvmig_page_format *fmt)
{
	struct kvmig_cache_meta meta;
	enum kvmig_layout layout;
	int ret;

	if (p->ops->format) {
		memset(fmt, 0, sizeof(*fmt));
		if ((ret = p->ops->format(p->impl, fmt)) < 0)
			return ret;
		if ((ret = kvmig_format_check(fmt)) < 0)
			return kvmig_err_prefix(ret, "pager %s format", p->ops->name);
		return 0;
	}
	if ((ret = p->ops->meta(p->impl, &meta, &layout)) < 0)
		return ret;
	if (!kvmig_layout_name(layout))
		return kvmig_err(-EINVAL, "pager %s: unknown layout %d", p->ops->name, (int)layout);
	return kvmig_format_set(fmt, kvmig_layout_name(layout), KVMIG_ORDER_NHD, NULL);
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

int kvmig_pager_identity(struct kvmig_pager *p, struct kvmig_id *id)
{
	return p->ops->identity(p->impl, id);
}

int kvmig_pager_capacity(struct kvmig_pager *p, uint32_t *n_pages)
{
	if (!p->ops->capacity)
		return kvmig_err(-ENOTSUP, "pager %s does not say how many pages it has",
				 p->ops->name);
	return p->ops->capacity(p->impl, n_pages);
}

int kvmig_pager_digest_get(struct kvmig_pager *p, uint32_t ix, struct kvmig_page_digest *d)
{
	if (!p->ops->digest_get) {
		memset(d, 0, sizeof(*d));
		return -ENOTSUP; /* no message: asking is how a caller finds out */
	}
	return p->ops->digest_get(p->impl, ix, d);
}

int kvmig_pager_digest_put(struct kvmig_pager *p, uint32_t ix, const struct kvmig_page_digest *d)
{
	if (!p->ops->digest_put)
		return -ENOTSUP;
	return p->ops->digest_put(p->impl, ix, d);
}

int kvmig_pager_record_create(struct kvmig_pager *p, const struct kvmig_record *rec)
{
	return p->ops->record_create(p->impl, rec);
}

/* The protocol's steps (docs/PROTOCOL.md, "Crash safety"); any other is a bug. */
static int legal_step(enum kvmig_record_state from, enum kvmig_record_state to)
{
	return (from == KVMIG_REC_SENDING && (to == KVMIG_REC_DEPARTED || to == KVMIG_REC_COMMITTED)) ||
	       (from == KVMIG_REC_RECEIVING && to == KVMIG_REC_PREPARED) ||
	       (from == KVMIG_REC_PREPARED && to == KVMIG_REC_ACTIVATED);
}

int kvmig_pager_record_set(struct kvmig_pager *p, const struct kvmig_id *id,
			   enum kvmig_record_state from, enum kvmig_record_state to)
{
	if (!legal_step(from, to))
		return kvmig_err(-EINVAL, "a migration record does not go from %s to %s",
				 kvmig_record_state_name(from) ? kvmig_record_state_name(from) : "?",
				 kvmig_record_state_name(to) ? kvmig_record_state_name(to) : "?");
	return p->ops->record_set(p->impl, id, from, to);
}

int kvmig_pager_record_tag(struct kvmig_pager *p, const struct kvmig_id *id,
			   const char *const *ids, uint32_t n)
{
	return p->ops->record_tag(p->impl, id, ids, n);
}

int kvmig_pager_record_install(struct kvmig_pager *p, const struct kvmig_id *id,
			       const struct kvmig_seq *seqs, uint32_t n)
{
	return p->ops->record_install(p->impl, id, seqs, n);
}

int kvmig_pager_record_end(struct kvmig_pager *p, const struct kvmig_id *id,
			   enum kvmig_record_state from, int commit)
{
	return p->ops->record_end(p->impl, id, from, commit);
}

int kvmig_pager_record_disown(struct kvmig_pager *p, const struct kvmig_id *id)
{
	return p->ops->record_disown(p->impl, id);
}

int kvmig_pager_records(struct kvmig_pager *p, struct kvmig_record **recs, uint32_t *n)
{
	struct kvmig_record *r = NULL;
	uint32_t cap = 0;
	int ret;

	/* The table may grow between the calls: ask again until it fits. */
	for (;;) {
		uint32_t have = 0;

		ret = p->ops->records(p->impl, r, cap, &have);
		if (ret == 0) {
			if (!have) {
				free(r);
				r = NULL;
			}
			*recs = r;
			*n = have;
			return 0;
		}
		if (ret != -ENOBUFS) {
			free(r);
			return ret;
		}
		free(r);
		cap = have + 8;
		if (!(r = calloc(cap, sizeof(*r))))
			return -ENOMEM;
	}
}

int kvmig_pager_gc(struct kvmig_pager *p, struct kvmig_gc_stats *st)
{
	struct kvmig_gc_stats local;

	memset(&local, 0, sizeof(local));
	return p->ops->gc(p->impl, st ? (memset(st, 0, sizeof(*st)), st) : &local);
}

const char *kvmig_seq_state_name(enum kvmig_seq_state state)
{
	static const char *const names[] = { "active", "pending", "departed" };

	return (unsigned)state < KVMIG_ARRAY_SIZE(names) ? names[state] : NULL;
}

static const char *const rec_names[] = {
	[KVMIG_REC_NONE] = "none",
	[KVMIG_REC_SENDING] = "sending",
	[KVMIG_REC_DEPARTED] = "departed",
	[KVMIG_REC_COMMITTED] = "committed",
	[KVMIG_REC_RECEIVING] = "receiving",
	[KVMIG_REC_PREPARED] = "prepared",
	[KVMIG_REC_ACTIVATED] = "activated",
	[KVMIG_REC_ABORTING] = "aborting",
	[KVMIG_REC_FINISHING] = "finishing",
};

const char *kvmig_record_state_name(enum kvmig_record_state state)
{
	return (unsigned)state < KVMIG_ARRAY_SIZE(rec_names) ? rec_names[state] : NULL;
}

int kvmig_record_state_parse(const char *name, enum kvmig_record_state *out)
{
	for (unsigned i = 0; name && i < KVMIG_ARRAY_SIZE(rec_names); i++) {
		if (!strcmp(name, rec_names[i])) {
			*out = (enum kvmig_record_state)i;
			return 0;
		}
	}
	return kvmig_err(-EINVAL, "\"%s\" is not a record state (none, sending, departed, "
			 "committed, receiving, prepared, activated)", name ? name : "(null)");
}

void kvmig_id_format(const struct kvmig_id *id, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (unsigned i = 0; i < sizeof(id->b); i++) {
		out[2 * i] = hex[id->b[i] >> 4];
		out[2 * i + 1] = hex[id->b[i] & 15];
	}
	out[2 * sizeof(id->b)] = '\0';
}

int kvmig_id_parse(const char *text, struct kvmig_id *out)
{
	struct kvmig_id id;

	if (!text || strlen(text) != 2 * sizeof(id.b))
		return kvmig_err(-EINVAL, "\"%s\" is not an id (32 hex digits)", text ? text : "");
	for (unsigned i = 0; i < 2 * sizeof(id.b); i++) {
		char c = text[i];
		int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
			c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;

		if (v < 0)
			return kvmig_err(-EINVAL, "\"%s\" is not an id (32 hex digits)", text);
		if (i % 2 == 0)
			id.b[i / 2] = (uint8_t)(v << 4);
		else
			id.b[i / 2] |= (uint8_t)v;
	}
	*out = id;
	return 0;
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

/* The pager specs kvmig_pager_open() knows: a prefix, and what opens the rest. */
static const struct pager_scheme {
	const char *prefix;
	int (*open)(const char *rest, struct kvmig_pager **ret);
} pager_schemes[] = {
	{ "shm:", kvmig_synth_attach }, /* a shared-memory synthetic pager (kvmig/synth.h) */
};

int kvmig_pager_open(const char *spec, struct kvmig_pager **ret)
{
	for (size_t i = 0; spec && i < KVMIG_ARRAY_SIZE(pager_schemes); i++) {
		size_t n = strlen(pager_schemes[i].prefix);

		if (!strncmp(spec, pager_schemes[i].prefix, n) && spec[n])
			return pager_schemes[i].open(spec + n, ret);
	}
	return kvmig_err(-EINVAL, "unknown pager spec \"%s\" (expected shm:NAME)",
			 spec ? spec : "(null)");
}
