/* SPDX-License-Identifier: MIT */
/*
 * pager/mem.c - the engine-memory pager (kvmig/mem.h): the pager ops over
 * memory an engine describes, with the engine's callbacks for what it owns.
 *
 * What kvmig keeps here, under one mutex (held across engine callbacks, so
 * callbacks are never concurrent for one pager):
 *   - the migration records (a small table; they live as long as the pager);
 *   - held sequences: those a migration took from the engine or has not
 *     given it yet. A source's tagged sequence stays the engine's (it runs)
 *     until its record is DEPARTED, when the engine removes it and kvmig
 *     holds its block table until the record ends; a destination's pending
 *     sequences are kvmig's until the record is ACTIVATED, when the engine
 *     installs them;
 *   - loose blocks: allocated through the pager (a receiver's, a restore's)
 *     and not yet in a sequence;
 *   - per-block generations (atomics, outside the mutex).
 * Each record step that hands sequences to or takes them from the engine is
 * undone if the engine's callback fails, so a step is taken or not.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <kvmig/mem.h>

#include "pager/pager_internal.h"
#include "util/internal.h"

#define MEM_MAX_RECORDS 64u

enum held_kind {
	HELD_TAGGED = 1, /* source, record SENDING / COMMITTED: the engine runs it */
	HELD_DEPARTED,   /* source, record DEPARTED: the engine removed it; blocks kept */
	HELD_PENDING,    /* destination, record RECEIVING / PREPARED: kvmig's, not run */
};

struct held {
	struct kvmig_seq q;   /* id, page_ixs (block ids), n_pages, fill */
	enum held_kind kind;
	uint32_t rec;         /* index into recs */
};

struct mem {
	pthread_mutex_t lock;
	struct kvmig_cache_meta meta;
	struct kvmig_page_format format;
	uint64_t block_bytes;            /* one layer's piece of one half */
	uint32_t n_blocks;
	struct kvmig_mem_region *regions;
	uint32_t n_regions;
	struct kvmig_mem_slab *slabs;    /* n_layers * 2 */
	struct kvmig_mem_engine eng;
	int tracks_writes;
	struct kvmig_id identity;

	_Atomic uint64_t *gen;           /* per block */
	_Atomic uint64_t clock;          /* untracked: generations handed out */
	_Atomic uint64_t pause_stamp;    /* untracked: the generation while paused */
	uint32_t pause_depth;

	struct kvmig_record recs[MEM_MAX_RECORDS];
	struct held *held;
	uint32_t n_held, cap_held;
	uint8_t *loose;                  /* per block: allocated here, in no sequence */
	/* Digests kept ahead, per block: written under dig_lock (gen 0, the
	 * digests, gen), read without it (gen, digests, gen: torn if moved). */
	struct mem_digest {
		_Atomic uint64_t gen;
		uint8_t k[16], v[16];
	} *dig;
	pthread_mutex_t dig_lock;
};

struct kvmig_mem_seq_sink {
	const struct mem *m;
	struct kvmig_seq_list list;
	uint32_t cap;
};

static const struct kvmig_pager_ops mem_ops;

/* ---- small helpers ---- */

static int check_id(const char *id, const char *what)
{
	size_t len = id ? strnlen(id, KVMIG_SEQ_ID_MAX + 1) : 0;

	if (len == 0 || len > KVMIG_SEQ_ID_MAX)
		return kvmig_err(-EINVAL, "%s: a sequence id must be 1 to %u bytes", what,
				 KVMIG_SEQ_ID_MAX);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)id[i] < 0x20 || (unsigned char)id[i] > 0x7e)
			return kvmig_err(-EINVAL, "%s: sequence id has a byte that is not printable "
					 "ASCII", what);
	return 0;
}

static int check_seq(const struct mem *m, const char *id, const uint32_t *blocks, uint32_t n,
		     uint32_t fill, const char *what)
{
	int ret;

	if ((ret = check_id(id, what)) < 0)
		return ret;
	if (fill >= m->meta.page_size_tokens || (n == 0 && fill))
		return kvmig_err(-EINVAL, "%s: sequence \"%s\": fill_in_last_page %u is out of range "
				 "(0..%u)", what, id, fill, m->meta.page_size_tokens - 1);
	for (uint32_t j = 0; j < n; j++)
		if (blocks[j] >= m->n_blocks)
			return kvmig_err(-EINVAL, "%s: sequence \"%s\": block %u is out of range "
					 "(the cache has %u)", what, id, blocks[j], m->n_blocks);
	return 0;
}

static int seq_copy(struct kvmig_seq *dst, const char *id, const uint32_t *blocks, uint32_t n,
		    uint32_t fill)
{
	memset(dst, 0, sizeof(*dst));
	dst->id = strdup(id);
	dst->page_ixs = malloc(sizeof(uint32_t) * (n ? n : 1));
	if (!dst->id || !dst->page_ixs) {
		free(dst->id);
		free(dst->page_ixs);
		return -ENOMEM;
	}
	if (n)
		memcpy(dst->page_ixs, blocks, sizeof(uint32_t) * n);
	dst->n_pages = n;
	dst->fill_in_last_page = fill;
	return 0;
}

static void seq_clear(struct kvmig_seq *q)
{
	free(q->id);
	free(q->page_ixs);
	memset(q, 0, sizeof(*q));
}

int kvmig_mem_seq_add(struct kvmig_mem_seq_sink *sink, const char *id, const uint32_t *blocks,
		      uint32_t n_blocks, uint32_t fill_in_last)
{
	int ret;

	if (!sink || (!blocks && n_blocks))
		return kvmig_err(-EINVAL, "kvmig_mem_seq_add: no sink or no blocks");
	if ((ret = check_seq(sink->m, id, blocks, n_blocks, fill_in_last, "engine seqs")) < 0)
		return ret;
	if (sink->list.n == sink->cap) {
		uint32_t cap = sink->cap ? sink->cap * 2 : 16;
		struct kvmig_seq *q;

		if (cap > KVMIG_MAX_SEQS)
			return kvmig_err(-EINVAL, "engine seqs: more than %u sequences",
					 KVMIG_MAX_SEQS);
		if (!(q = realloc(sink->list.seqs, sizeof(*q) * cap)))
			return -ENOMEM;
		sink->list.seqs = q;
		sink->cap = cap;
	}
	if ((ret = seq_copy(&sink->list.seqs[sink->list.n], id, blocks, n_blocks, fill_in_last)))
		return ret;
	sink->list.n++;
	return 0;
}

int kvmig_mem_error(int code, const char *message)
{
	if (code >= 0)
		code = -EIO;
	return kvmig_err(code, "%s", message ? message : "failed");
}

/* A callback's failure, named; a callback that said nothing gets a sentence. */
static int cb_failed(int ret, const char *cb)
{
	const char *msg = kvmig_last_error();

	if (ret >= 0)
		ret = -EIO;
	if (!msg[0])
		return kvmig_err(ret, "engine callback %s failed (%s)", cb, strerror(-ret));
	return kvmig_err_prefix(ret, "engine callback %s", cb);
}

static int cb_result(int ret, const char *cb)
{
	return ret < 0 ? cb_failed(ret, cb) : 0;
}

/* Call engine callback @cb: 0, or its error with its name and message. */
#define CALL(m, cb, ...) \
	(kvmig_clear_error(), cb_result((m)->eng.cb((m)->eng.ctx, __VA_ARGS__), #cb))
#define CALL0(m, cb) (kvmig_clear_error(), cb_result((m)->eng.cb((m)->eng.ctx), #cb))

/* The engine's runnable sequences, checked. */
static int engine_seqs(struct mem *m, struct kvmig_seq_list *out)
{
	struct kvmig_mem_seq_sink sink = { .m = m };
	int ret;

	kvmig_clear_error();
	ret = m->eng.seqs(m->eng.ctx, &sink);
	if (ret < 0) {
		ret = cb_failed(ret, "seqs");
		kvmig_seq_list_free(&sink.list);
		return ret;
	}
	*out = sink.list;
	return 0;
}

static struct held *find_held(struct mem *m, const char *id)
{
	for (uint32_t i = 0; i < m->n_held; i++)
		if (!strcmp(m->held[i].q.id, id))
			return &m->held[i];
	return NULL;
}

static int held_add(struct mem *m, const struct kvmig_seq *q, enum held_kind kind, uint32_t rec)
{
	int ret;

	if (m->n_held == m->cap_held) {
		uint32_t cap = m->cap_held ? m->cap_held * 2 : 16;
		struct held *h = realloc(m->held, sizeof(*h) * cap);

		if (!h)
			return -ENOMEM;
		m->held = h;
		m->cap_held = cap;
	}
	if ((ret = seq_copy(&m->held[m->n_held].q, q->id, q->page_ixs, q->n_pages,
			    q->fill_in_last_page)))
		return ret;
	m->held[m->n_held].kind = kind;
	m->held[m->n_held].rec = rec;
	m->n_held++;
	return 0;
}

/* Drop every held sequence of record @r. */
static void held_drop(struct mem *m, uint32_t r)
{
	uint32_t k = 0;

	for (uint32_t i = 0; i < m->n_held; i++) {
		if (m->held[i].rec == r)
			seq_clear(&m->held[i].q);
		else
			m->held[k++] = m->held[i];
	}
	m->n_held = k;
}

/* Held sequences of record @r as a plain array (borrowed); *n their number. */
static struct kvmig_seq *held_of(struct mem *m, uint32_t r, uint32_t *n)
{
	struct kvmig_seq *out = malloc(sizeof(*out) * (m->n_held ? m->n_held : 1));
	uint32_t k = 0;

	if (!out)
		return NULL;
	for (uint32_t i = 0; i < m->n_held; i++)
		if (m->held[i].rec == r)
			out[k++] = m->held[i].q;
	*n = k;
	return out;
}

/* Every sequence: the engine's, then the held ones that are not the engine's. */
static int all_seqs(struct mem *m, struct kvmig_seq_list *out)
{
	struct kvmig_seq_list l;
	struct kvmig_seq *q;
	int ret;

	if ((ret = engine_seqs(m, &l)) < 0)
		return ret;
	if (!(q = realloc(l.seqs, sizeof(*q) * ((size_t)l.n + m->n_held + 1)))) {
		kvmig_seq_list_free(&l);
		return -ENOMEM;
	}
	l.seqs = q;
	/* The engine's run, tagged or not: active, as in every pager. */
	for (uint32_t i = 0; i < l.n; i++) {
		l.seqs[i].state = KVMIG_SEQ_ACTIVE;
		memset(&l.seqs[i].migration, 0, sizeof(l.seqs[i].migration));
	}
	for (uint32_t i = 0; i < m->n_held; i++) {
		struct held *h = &m->held[i];
		struct kvmig_seq *d = &l.seqs[l.n];

		if (h->kind == HELD_TAGGED)
			continue;
		if ((ret = seq_copy(d, h->q.id, h->q.page_ixs, h->q.n_pages,
				    h->q.fill_in_last_page))) {
			kvmig_seq_list_free(&l);
			return ret;
		}
		d->state = h->kind == HELD_DEPARTED ? KVMIG_SEQ_DEPARTED : KVMIG_SEQ_PENDING;
		d->migration = m->recs[h->rec].id;
		l.n++;
	}
	*out = l;
	return 0;
}

static int cmp_seq_id(const void *a, const void *b)
{
	return strcmp(((const struct kvmig_seq *)a)->id, ((const struct kvmig_seq *)b)->id);
}

/* ---- ops: shape and memory ---- */

static int mem_meta(void *impl, struct kvmig_cache_meta *meta, enum kvmig_layout *layout)
{
	struct mem *m = impl;

	*meta = m->meta;
	*layout = KVMIG_LAYOUT_LAYER_MAJOR; /* not meaningful here: see mem_format */
	return 0;
}

static int mem_format(void *impl, struct kvmig_page_format *fmt)
{
	*fmt = ((struct mem *)impl)->format;
	return 0;
}

static int mem_extents(void *impl, uint32_t ix, enum kvmig_half half, struct kvmig_extent *ext,
		       uint32_t max, uint32_t *n)
{
	struct mem *m = impl;
	uint32_t k = 0;

	if (ix >= m->n_blocks || (half != KVMIG_HALF_K && half != KVMIG_HALF_V))
		return kvmig_err(-EINVAL, "block %u is out of range (the cache has %u)", ix,
				 m->n_blocks);
	for (uint32_t l = 0; l < m->meta.n_layers; l++) {
		const struct kvmig_mem_slab *s = &m->slabs[l * 2 + half];
		uint8_t *a = (uint8_t *)m->regions[s->region].base + s->offset +
			     (uint64_t)ix * s->stride;

		/* Pieces that follow each other in memory are one extent. */
		if (k && k <= max && (uint8_t *)ext[k - 1].addr + ext[k - 1].len == a) {
			ext[k - 1].len += m->block_bytes;
			continue;
		}
		if (k < max)
			ext[k] = (struct kvmig_extent){ a, m->block_bytes };
		k++;
	}
	*n = k;
	return k > max ? -ENOBUFS : 0;
}

static int mem_regions(void *impl, struct kvmig_region *r, uint32_t max, uint32_t *n)
{
	struct mem *m = impl;

	*n = m->n_regions;
	if (m->n_regions > max)
		return -ENOBUFS;
	for (uint32_t i = 0; i < m->n_regions; i++)
		r[i] = (struct kvmig_region){ m->regions[i].base, m->regions[i].len };
	return 0;
}

static int mem_generation(void *impl, uint32_t ix, uint64_t *gen)
{
	struct mem *m = impl;

	if (ix >= m->n_blocks)
		return kvmig_err(-EINVAL, "block %u is out of range (the cache has %u)", ix,
				 m->n_blocks);
	if (m->tracks_writes) {
		*gen = atomic_load_explicit(&m->gen[ix], memory_order_acquire);
		return 0;
	}
	/* Untracked: while paused nothing changes; otherwise anything may have. */
	uint64_t st = atomic_load_explicit(&m->pause_stamp, memory_order_acquire);

	*gen = st ? st : atomic_fetch_add(&m->clock, 1) + 1;
	return 0;
}

int kvmig_mem_written(struct kvmig_pager *p, const uint32_t *blocks, uint32_t n)
{
	struct mem *m;

	if (!p || p->ops != &mem_ops)
		return kvmig_err(-EINVAL, "kvmig_mem_written: not an engine-memory pager");
	m = p->impl;
	for (uint32_t i = 0; i < n; i++)
		if (blocks[i] >= m->n_blocks)
			return kvmig_err(-EINVAL, "kvmig_mem_written: block %u is out of range (the "
					 "cache has %u)", blocks[i], m->n_blocks);
	for (uint32_t i = 0; i < n; i++)
		atomic_fetch_add_explicit(&m->gen[blocks[i]], 1, memory_order_release);
	return 0;
}

/* ---- ops: pause, sequences, blocks ---- */

static int mem_pause(void *impl)
{
	struct mem *m = impl;
	int ret = 0;

	pthread_mutex_lock(&m->lock);
	if (m->pause_depth == 0 && (ret = CALL0(m, pause)) == 0 && !m->tracks_writes)
		atomic_store(&m->pause_stamp, atomic_fetch_add(&m->clock, 1) + 1);
	if (!ret)
		m->pause_depth++;
	pthread_mutex_unlock(&m->lock);
	return ret;
}

static int mem_resume(void *impl)
{
	struct mem *m = impl;
	int ret = 0;

	pthread_mutex_lock(&m->lock);
	if (m->pause_depth == 0) {
		ret = kvmig_err(-EINVAL, "resume without a pause");
	} else if (m->pause_depth == 1) {
		atomic_store(&m->pause_stamp, 0);
		if ((ret = CALL0(m, resume)) < 0 && !m->tracks_writes) /* still paused */
			atomic_store(&m->pause_stamp, atomic_fetch_add(&m->clock, 1) + 1);
	}
	if (!ret)
		m->pause_depth--;
	pthread_mutex_unlock(&m->lock);
	return ret;
}

static int mem_seqs(void *impl, struct kvmig_seq_list *out)
{
	struct mem *m = impl;
	int ret;

	pthread_mutex_lock(&m->lock);
	ret = all_seqs(m, out);
	pthread_mutex_unlock(&m->lock);
	if (!ret && out->n > 1)
		qsort(out->seqs, out->n, sizeof(*out->seqs), cmp_seq_id);
	return ret;
}

/* Per block, whether a sequence (engine's or held) uses it: a calloc'd map. */
static int used_map(struct mem *m, uint8_t **out)
{
	struct kvmig_seq_list l;
	uint8_t *map = calloc(m->n_blocks, 1);
	int ret;

	if (!map)
		return -ENOMEM;
	if ((ret = engine_seqs(m, &l)) < 0) {
		free(map);
		return ret;
	}
	for (uint32_t i = 0; i < l.n; i++)
		for (uint32_t j = 0; j < l.seqs[i].n_pages; j++)
			map[l.seqs[i].page_ixs[j]] = 1;
	kvmig_seq_list_free(&l);
	for (uint32_t i = 0; i < m->n_held; i++)
		for (uint32_t j = 0; j < m->held[i].q.n_pages; j++)
			map[m->held[i].q.page_ixs[j]] = 1;
	*out = map;
	return 0;
}

static int mem_occupied(void *impl, uint32_t **ixs, uint32_t *n)
{
	struct mem *m = impl;
	uint8_t *map = NULL;
	uint32_t k = 0, *out;
	int ret;

	pthread_mutex_lock(&m->lock);
	if ((ret = used_map(m, &map)) < 0)
		goto out;
	for (uint32_t b = 0; b < m->n_blocks; b++)
		k += map[b] || m->loose[b];
	if (!(out = malloc(sizeof(*out) * (k ? k : 1)))) {
		ret = -ENOMEM;
		goto out;
	}
	k = 0;
	for (uint32_t b = 0; b < m->n_blocks; b++)
		if (map[b] || m->loose[b])
			out[k++] = b;
	*ixs = out;
	*n = k;
out:
	pthread_mutex_unlock(&m->lock);
	free(map);
	return ret;
}

static int mem_allocate(void *impl, uint32_t n, uint32_t *ixs)
{
	struct mem *m = impl;
	uint8_t *map = NULL;
	int ret;

	if (n == 0)
		return 0;
	pthread_mutex_lock(&m->lock);
	if ((ret = CALL(m, alloc, n, ixs)) < 0)
		goto out;
	/* An engine handing out a block twice, or one in use, would have two
	 * owners write it: refuse (giving them all back) rather than trust. */
	if ((ret = used_map(m, &map)) < 0)
		goto give_back;
	for (uint32_t i = 0; i < n; i++) {
		if (ixs[i] >= m->n_blocks || map[ixs[i]] || m->loose[ixs[i]]) {
			ret = kvmig_err(-EINVAL, "engine callback alloc returned block %u, which is "
					"%s", ixs[i], ixs[i] >= m->n_blocks ? "out of range" :
					"in use");
			for (uint32_t j = 0; j < i; j++)
				m->loose[ixs[j]] = 0;
			goto give_back;
		}
		m->loose[ixs[i]] = 1;
		/* New contents will come (a receiver's, a restore's): a digest
		 * kept for what the block held before no longer stands. */
		atomic_fetch_add_explicit(&m->gen[ixs[i]], 1, memory_order_release);
	}
	goto out;
give_back:
	{
		struct kvmig_err_saved e;
		uint32_t k = 0;

		kvmig_err_save(&e);
		for (uint32_t i = 0; i < n; i++)
			if (ixs[i] < m->n_blocks && !(map && map[ixs[i]]))
				ixs[k++] = ixs[i];
		(void)CALL(m, free, ixs, k);
		kvmig_err_restore(&e, ret);
	}
out:
	pthread_mutex_unlock(&m->lock);
	free(map);
	return ret;
}

static int mem_free(void *impl, const uint32_t *ixs, uint32_t n)
{
	struct mem *m = impl;
	int ret = 0;

	pthread_mutex_lock(&m->lock);
	for (uint32_t i = 0; i < n; i++)
		if (ixs[i] >= m->n_blocks || !m->loose[ixs[i]]) {
			ret = kvmig_err(-EINVAL, "block %u was not allocated through this pager, or "
					"a sequence uses it", ixs[i]);
			goto out;
		}
	for (uint32_t i = 0; i + 1 < n; i++)
		for (uint32_t j = i + 1; j < n && n <= 4096; j++)
			if (ixs[i] == ixs[j]) {
				ret = kvmig_err(-EINVAL, "block %u is given twice", ixs[i]);
				goto out;
			}
	if (n && (ret = CALL(m, free, ixs, n)) == 0)
		for (uint32_t i = 0; i < n; i++)
			m->loose[ixs[i]] = 0;
out:
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/* Sequences about to become the engine's or held: ids new, blocks loose or
 * (shared between them) given by an earlier one of @seqs. */
static int install_check(struct mem *m, const struct kvmig_seq *seqs, uint32_t n)
{
	struct kvmig_seq_list l = { 0 };
	uint8_t *mine = calloc(m->n_blocks, 1);
	int ret = 0;

	if (!mine)
		return -ENOMEM;
	if ((ret = engine_seqs(m, &l)) < 0)
		goto out;
	for (uint32_t i = 0; i < n && !ret; i++) {
		const struct kvmig_seq *q = &seqs[i];

		if ((ret = check_seq(m, q->id, q->page_ixs, q->n_pages, q->fill_in_last_page,
				     "install")) < 0)
			break;
		if (q->id[0] == KVMIG_SEQ_RESERVED_PREFIX) {
			ret = kvmig_err(-EINVAL, "sequence id \"%s\" begins with '%c', which kvmig "
					"reserves", q->id, KVMIG_SEQ_RESERVED_PREFIX);
			break;
		}
		for (uint32_t j = 0; j < i && !ret; j++)
			if (!strcmp(seqs[j].id, q->id))
				ret = kvmig_err(-EEXIST, "sequence \"%s\" is given twice", q->id);
		for (uint32_t j = 0; j < l.n && !ret; j++)
			if (!strcmp(l.seqs[j].id, q->id))
				ret = kvmig_err(-EEXIST, "sequence \"%s\" is already installed", q->id);
		if (!ret && find_held(m, q->id))
			ret = kvmig_err(-EEXIST, "sequence \"%s\" is already installed (held by a "
					"migration)", q->id);
		for (uint32_t j = 0; j < q->n_pages && !ret; j++) {
			uint32_t b = q->page_ixs[j];

			if (!m->loose[b] && !mine[b])
				ret = kvmig_err(-EINVAL, "sequence \"%s\": block %u was not allocated "
						"through this pager", q->id, b);
		}
		for (uint32_t j = 0; j < q->n_pages && !ret; j++)
			mine[q->page_ixs[j]] = 1;
	}
out:
	kvmig_seq_list_free(&l);
	free(mine);
	return ret;
}

static void unloose(struct mem *m, const struct kvmig_seq *seqs, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < seqs[i].n_pages; j++)
			m->loose[seqs[i].page_ixs[j]] = 0;
}

/* Blocks about to be installed were filled without the engine writing
 * them (a receiver, a restore): their generations move, so no digest kept
 * while they were filled matches them. */
static void bump_seqs(struct mem *m, const struct kvmig_seq *seqs, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < seqs[i].n_pages; j++)
			atomic_fetch_add_explicit(&m->gen[seqs[i].page_ixs[j]], 1,
						  memory_order_release);
}

static int mem_install(void *impl, const struct kvmig_seq *seqs, uint32_t n)
{
	struct mem *m = impl;
	int ret;

	pthread_mutex_lock(&m->lock);
	if ((ret = install_check(m, seqs, n)) == 0 && n) {
		bump_seqs(m, seqs, n);
		if ((ret = CALL(m, install, seqs, n)) == 0)
			unloose(m, seqs, n);
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/*
 * Under m->lock: @id is one of the engine's sequences (@l), at *at, and no
 * migration holds it (@whose: "a" or "another", for the message).
 */
static int runnable_at(struct mem *m, const struct kvmig_seq_list *l, const char *id,
		       const char *whose, uint32_t *at)
{
	uint32_t j;

	if (find_held(m, id))
		return kvmig_err(-EBUSY, "sequence \"%s\" belongs to %s migration (under way, or "
				 "its outcome not applied yet)", id, whose);
	for (j = 0; j < l->n && strcmp(l->seqs[j].id, id); j++)
		;
	if (j == l->n)
		return kvmig_err(-ENOENT, "sequence \"%s\" is not installed", id);
	*at = j;
	return 0;
}

static int mem_remove(void *impl, const char *const *ids, uint32_t n)
{
	struct mem *m = impl;
	struct kvmig_seq_list l = { 0 };
	int ret;

	pthread_mutex_lock(&m->lock);
	if ((ret = engine_seqs(m, &l)) < 0)
		goto out;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t j;

		if ((ret = runnable_at(m, &l, ids[i], "a", &j)) < 0)
			goto out;
	}
	if (n)
		ret = CALL(m, remove, ids, n);
out:
	kvmig_seq_list_free(&l);
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/* Give the engine back the blocks of @seqs that no other sequence uses. Called
 * once @seqs are no longer held (or the engine's). */
static int free_unused(struct mem *m, const struct kvmig_seq *seqs, uint32_t n)
{
	uint8_t *map = NULL;
	uint32_t *out, k = 0, tot = 0;
	int ret;

	for (uint32_t i = 0; i < n; i++)
		tot += seqs[i].n_pages;
	if (!tot)
		return 0;
	if ((ret = used_map(m, &map)) < 0)
		return ret;
	if (!(out = malloc(sizeof(*out) * tot))) {
		free(map);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < seqs[i].n_pages; j++) {
			uint32_t b = seqs[i].page_ixs[j];

			if (!map[b] && !m->loose[b]) {
				map[b] = 1; /* once */
				out[k++] = b;
			}
		}
	ret = k ? CALL(m, free, out, k) : 0;
	/* The engine refused them back: they stay allocated here, loose, so
	 * they show as occupied and a later free can return them. */
	for (uint32_t i = 0; ret < 0 && i < k; i++)
		m->loose[out[i]] = 1;
	free(out);
	free(map);
	return ret;
}

/* ---- ops: records ---- */

static int find_rec(const struct mem *m, const struct kvmig_id *id)
{
	for (uint32_t r = 0; r < MEM_MAX_RECORDS; r++)
		if (m->recs[r].state != KVMIG_REC_NONE && !memcmp(&m->recs[r].id, id, sizeof(*id)))
			return (int)r;
	return -1;
}

static int no_such(const struct kvmig_id *id)
{
	char hex[33];

	kvmig_id_format(id, hex);
	return kvmig_err(-ENOENT, "this pager has no record of migration %s", hex);
}

static int stale(const struct kvmig_id *id, enum kvmig_record_state is,
		 enum kvmig_record_state want)
{
	char hex[33];

	kvmig_id_format(id, hex);
	return kvmig_err(-ESTALE, "migration %s is %s in this pager, not %s", hex,
			 kvmig_record_state_name(is), kvmig_record_state_name(want));
}

static int mem_identity(void *impl, struct kvmig_id *id)
{
	*id = ((struct mem *)impl)->identity;
	return 0;
}

static int mem_record_create(void *impl, const struct kvmig_record *in)
{
	struct mem *m = impl;
	int ret = 0, slot = -1;

	if ((in->role == KVMIG_ROLE_SOURCE && in->state != KVMIG_REC_SENDING) ||
	    (in->role == KVMIG_ROLE_DEST && in->state != KVMIG_REC_RECEIVING) ||
	    (in->role != KVMIG_ROLE_SOURCE && in->role != KVMIG_ROLE_DEST))
		return kvmig_err(-EINVAL, "a new record is sending (source) or receiving "
				 "(destination)");
	pthread_mutex_lock(&m->lock);
	if (find_rec(m, &in->id) >= 0) {
		ret = kvmig_err(-EEXIST, "this pager has a record of that migration already");
		goto out;
	}
	for (uint32_t r = 0; r < MEM_MAX_RECORDS && slot < 0; r++)
		if (m->recs[r].state == KVMIG_REC_NONE)
			slot = (int)r;
	if (slot < 0) {
		ret = kvmig_err(-EBUSY, "this pager holds %u migration records, waiting for "
				"resolution", MEM_MAX_RECORDS);
		goto out;
	}
	m->recs[slot] = *in;
	m->recs[slot].peer_addr[sizeof(m->recs[slot].peer_addr) - 1] = '\0';
	m->recs[slot].owner_pid = (int32_t)getpid();
	m->recs[slot].created = (uint64_t)time(NULL);
	m->recs[slot].n_seqs = 0;
out:
	pthread_mutex_unlock(&m->lock);
	return ret;
}

static uint32_t held_count(const struct mem *m, uint32_t r)
{
	uint32_t k = 0;

	for (uint32_t i = 0; i < m->n_held; i++)
		k += m->held[i].rec == r;
	return k;
}

static int mem_record_set(void *impl, const struct kvmig_id *id, enum kvmig_record_state from,
			  enum kvmig_record_state to)
{
	struct mem *m = impl;
	struct kvmig_seq *qs = NULL;
	const char **ids = NULL;
	uint32_t n = 0;
	int r, ret = 0;

	pthread_mutex_lock(&m->lock);
	if ((r = find_rec(m, id)) < 0) {
		ret = no_such(id);
		goto out;
	}
	if (m->recs[r].state != from) {
		ret = stale(id, m->recs[r].state, from);
		goto out;
	}
	if (to == KVMIG_REC_DEPARTED || to == KVMIG_REC_ACTIVATED) {
		if (!(qs = held_of(m, (uint32_t)r, &n)) ||
		    !(ids = malloc(sizeof(*ids) * (n ? n : 1)))) {
			ret = -ENOMEM;
			goto out;
		}
		for (uint32_t i = 0; i < n; i++)
			ids[i] = qs[i].id;
	}
	/* The step hands the sequences over: the engine stops running a
	 * departed source's, starts running an activated destination's. If
	 * it refuses, the step is not taken. */
	if (to == KVMIG_REC_DEPARTED && n && (ret = CALL(m, remove, ids, n)) < 0)
		goto out;
	if (to == KVMIG_REC_ACTIVATED && n && (ret = CALL(m, install, qs, n)) < 0)
		goto out;
	m->recs[r].state = to;
	for (uint32_t i = 0; i < m->n_held; i++)
		if (m->held[i].rec == (uint32_t)r && to == KVMIG_REC_DEPARTED)
			m->held[i].kind = HELD_DEPARTED;
	if (to == KVMIG_REC_ACTIVATED)
		held_drop(m, (uint32_t)r); /* the engine's now */
out:
	pthread_mutex_unlock(&m->lock);
	free(qs);
	free(ids);
	return ret;
}

static int mem_record_tag(void *impl, const struct kvmig_id *id, const char *const *ids,
			  uint32_t n)
{
	struct mem *m = impl;
	struct kvmig_seq_list l = { 0 };
	uint32_t *at = malloc(sizeof(*at) * (n ? n : 1));
	uint32_t before;
	int r, ret = 0;

	if (!at)
		return -ENOMEM;
	pthread_mutex_lock(&m->lock);
	before = m->n_held;
	if ((r = find_rec(m, id)) < 0) {
		ret = no_such(id);
		goto out;
	}
	if (m->recs[r].role != KVMIG_ROLE_SOURCE || m->recs[r].state != KVMIG_REC_SENDING) {
		ret = stale(id, m->recs[r].state, KVMIG_REC_SENDING);
		goto out;
	}
	if ((ret = engine_seqs(m, &l)) < 0)
		goto out;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t j;

		if ((ret = runnable_at(m, &l, ids[i], "another", &j)) < 0)
			goto out;
		for (uint32_t k = 0; k < i; k++)
			if (at[k] == j) {
				ret = kvmig_err(-EINVAL, "sequence \"%s\" is named twice", ids[i]);
				goto out;
			}
		at[i] = j;
	}
	/* The block tables as they are now (the engine is paused): what a
	 * departed sequence keeps, and frees once released. */
	for (uint32_t i = 0; i < n; i++)
		if ((ret = held_add(m, &l.seqs[at[i]], HELD_TAGGED, (uint32_t)r)) < 0)
			goto out;
out:
	if (ret < 0)
		while (m->n_held > before)
			seq_clear(&m->held[--m->n_held].q);
	pthread_mutex_unlock(&m->lock);
	kvmig_seq_list_free(&l);
	free(at);
	return ret;
}

static int mem_record_install(void *impl, const struct kvmig_id *id, const struct kvmig_seq *seqs,
			      uint32_t n)
{
	struct mem *m = impl;
	uint32_t before;
	int r, ret;

	pthread_mutex_lock(&m->lock);
	before = m->n_held;
	if ((r = find_rec(m, id)) < 0) {
		ret = no_such(id);
		goto out;
	}
	if (m->recs[r].role != KVMIG_ROLE_DEST || m->recs[r].state != KVMIG_REC_RECEIVING) {
		ret = stale(id, m->recs[r].state, KVMIG_REC_RECEIVING);
		goto out;
	}
	if ((ret = install_check(m, seqs, n)) < 0)
		goto out;
	bump_seqs(m, seqs, n);
	for (uint32_t i = 0; i < n; i++)
		if ((ret = held_add(m, &seqs[i], HELD_PENDING, (uint32_t)r)) < 0)
			goto out;
	unloose(m, seqs, n);
out:
	if (ret < 0)
		while (m->n_held > before)
			seq_clear(&m->held[--m->n_held].q);
	pthread_mutex_unlock(&m->lock);
	return ret;
}

static int mem_record_end(void *impl, const struct kvmig_id *id, enum kvmig_record_state from,
			  int commit)
{
	struct mem *m = impl;
	struct kvmig_seq *qs = NULL;
	uint32_t n = 0;
	int r, ret = 0, src;
	enum kvmig_record_state st;

	pthread_mutex_lock(&m->lock);
	if ((r = find_rec(m, id)) < 0) {
		ret = no_such(id);
		goto out;
	}
	st = m->recs[r].state;
	if (st != from) {
		ret = stale(id, st, from);
		goto out;
	}
	src = m->recs[r].role == KVMIG_ROLE_SOURCE;
	if (!kvmig_record_end_legal(m->recs[r].role, st, commit)) {
		char hex[33];

		kvmig_id_format(id, hex);
		ret = kvmig_err(-EINVAL, "migration %s is %s in this pager: it cannot be %s there",
				hex, kvmig_record_state_name(st), commit ? "committed" : "aborted");
		goto out;
	}
	if (!(qs = held_of(m, (uint32_t)r, &n))) {
		ret = -ENOMEM;
		goto out;
	}
	if (src && st == KVMIG_REC_DEPARTED && !commit) {
		/* Resolution found the destination without them: they run here again. */
		if (n && (ret = CALL(m, install, qs, n)) < 0)
			goto out;
		held_drop(m, (uint32_t)r);
	} else if ((src && st == KVMIG_REC_DEPARTED) || (!src && !commit)) {
		/* Released (a departed source) or abandoned (a destination): the
		 * sequences are gone; their blocks go back unless still used. */
		struct kvmig_seq *copy = malloc(sizeof(*copy) * (n ? n : 1));

		if (!copy) {
			ret = -ENOMEM;
			goto out;
		}
		/* Take them out of the book first, keeping the tables to free. */
		for (uint32_t i = 0; i < n; i++)
			copy[i] = qs[i];
		{
			uint32_t k = 0;

			for (uint32_t i = 0; i < m->n_held; i++)
				if (m->held[i].rec != (uint32_t)r)
					m->held[k++] = m->held[i];
			m->n_held = k;
		}
		/* The outcome is applied whether or not the engine takes the
		 * blocks back (those it refuses stay allocated, loose). */
		(void)free_unused(m, copy, n);
		for (uint32_t i = 0; i < n; i++)
			seq_clear(&copy[i]);
		free(copy);
	} else {
		held_drop(m, (uint32_t)r); /* untag: they run (or ran) in the engine */
	}
	memset(&m->recs[r], 0, sizeof(m->recs[r]));
out:
	pthread_mutex_unlock(&m->lock);
	free(qs);
	return ret;
}

static int mem_record_disown(void *impl, const struct kvmig_id *id)
{
	struct mem *m = impl;
	int r, ret = 0;

	pthread_mutex_lock(&m->lock);
	if ((r = find_rec(m, id)) < 0)
		ret = no_such(id);
	else
		m->recs[r].owner_pid = 0;
	pthread_mutex_unlock(&m->lock);
	return ret;
}

static int mem_records(void *impl, struct kvmig_record *out, uint32_t max, uint32_t *n)
{
	struct mem *m = impl;
	uint32_t k = 0;

	pthread_mutex_lock(&m->lock);
	for (uint32_t r = 0; r < MEM_MAX_RECORDS; r++) {
		if (m->recs[r].state == KVMIG_REC_NONE)
			continue;
		if (k++ < max) {
			out[k - 1] = m->recs[r];
			out[k - 1].n_seqs = held_count(m, r);
		}
	}
	pthread_mutex_unlock(&m->lock);
	*n = k;
	return k > max ? -ENOBUFS : 0;
}

static int mem_gc(void *impl, struct kvmig_gc_stats *st)
{
	struct mem *m = impl;

	/* Everything here lives and dies with this process: nothing of a dead
	 * one to reclaim. Records nobody drives are reported. */
	pthread_mutex_lock(&m->lock);
	for (uint32_t r = 0; st && r < MEM_MAX_RECORDS; r++)
		st->in_doubt += m->recs[r].state != KVMIG_REC_NONE && !m->recs[r].owner_pid;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

static int mem_digest_get(void *impl, uint32_t ix, struct kvmig_page_digest *d)
{
	struct mem *m = impl;
	const struct mem_digest *e;
	uint64_t g1, g2;

	memset(d, 0, sizeof(*d));
	/* Untracked: a generation means something only within one pause, so
	 * nothing kept ahead could ever be used: keep none. */
	if (!m->tracks_writes)
		return -ENOTSUP;
	if (ix >= m->n_blocks)
		return kvmig_err(-EINVAL, "block %u is out of range (the cache has %u)", ix,
				 m->n_blocks);
	e = &m->dig[ix];
	g1 = atomic_load_explicit(&e->gen, memory_order_acquire);
	memcpy(d->k, e->k, sizeof(d->k));
	memcpy(d->v, e->v, sizeof(d->v));
	atomic_thread_fence(memory_order_acquire);
	g2 = atomic_load_explicit(&e->gen, memory_order_relaxed);
	d->gen = g1 == g2 ? g1 : 0;
	return 0;
}

static int mem_digest_put(void *impl, uint32_t ix, const struct kvmig_page_digest *d)
{
	struct mem *m = impl;
	struct mem_digest *e;

	if (!m->tracks_writes)
		return -ENOTSUP;
	if (ix >= m->n_blocks)
		return kvmig_err(-EINVAL, "block %u is out of range (the cache has %u)", ix,
				 m->n_blocks);
	e = &m->dig[ix];
	pthread_mutex_lock(&m->dig_lock);
	atomic_store_explicit(&e->gen, 0, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	memcpy(e->k, d->k, sizeof(e->k));
	memcpy(e->v, d->v, sizeof(e->v));
	atomic_store_explicit(&e->gen, d->gen, memory_order_release);
	pthread_mutex_unlock(&m->dig_lock);
	return 0;
}

static void mem_destroy(void *impl)
{
	struct mem *m = impl;

	for (uint32_t i = 0; i < m->n_held; i++)
		seq_clear(&m->held[i].q);
	free(m->held);
	free(m->regions);
	free(m->slabs);
	free((void *)m->gen);
	free(m->loose);
	free(m->dig);
	pthread_mutex_destroy(&m->dig_lock);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static int mem_capacity(void *impl, uint32_t *n_pages)
{
	*n_pages = ((struct mem *)impl)->n_blocks;
	return 0;
}

static const struct kvmig_pager_ops mem_ops = {
	.name = "mem",
	.meta = mem_meta,
	.format = mem_format,
	.pause = mem_pause,
	.resume = mem_resume,
	.occupied = mem_occupied,
	.seqs = mem_seqs,
	.extents = mem_extents,
	.regions = mem_regions,
	.generation = mem_generation,
	.allocate = mem_allocate,
	.free = mem_free,
	.install = mem_install,
	.remove = mem_remove,
	.identity = mem_identity,
	.record_create = mem_record_create,
	.record_set = mem_record_set,
	.record_tag = mem_record_tag,
	.record_install = mem_record_install,
	.record_end = mem_record_end,
	.record_disown = mem_record_disown,
	.records = mem_records,
	.gc = mem_gc,
	.destroy = mem_destroy,
	.capacity = mem_capacity,
	.digest_get = mem_digest_get,
	.digest_put = mem_digest_put,
};

/* ---- creation: the description checked ---- */

struct piece_run {
	uint64_t start, stride;
	uint32_t slab;
};

/* Whether two slabs' pieces (@n blocks of @len bytes each) overlap anywhere. */
static int runs_overlap(const struct piece_run *a, const struct piece_run *b, uint32_t n,
			uint64_t len)
{
	if (a->stride == b->stride) {
		/* Block i of a vs block j of b: starts differ by d + k * s, k = j - i.
		 * They overlap if that is within (-len, len) for some |k| < n. */
		int64_t d = (int64_t)(b->start - a->start), s = (int64_t)a->stride;
		int64_t lo = -(int64_t)(n - 1), hi = (int64_t)(n - 1);

		if (s == 0 || n == 1)
			return d > -(int64_t)len && d < (int64_t)len;
		/* The k closest to -d / s, and its neighbour. */
		int64_t k0 = -d / s;

		for (int64_t k = k0 - 1; k <= k0 + 1; k++) {
			if (k < lo || k > hi)
				continue;
			int64_t x = d + k * s;

			if (x > -(int64_t)len && x < (int64_t)len)
				return 1;
		}
		return 0;
	}
	/* Different strides: compare every pair of pieces that could meet,
	 * walking both in address order. */
	uint32_t i = 0, j = 0;

	while (i < n && j < n) {
		uint64_t x = a->start + (uint64_t)i * a->stride;
		uint64_t y = b->start + (uint64_t)j * b->stride;

		if (x < y + len && y < x + len)
			return 1;
		if (x < y)
			i++;
		else
			j++;
	}
	return 0;
}

static int check_desc(const struct kvmig_mem_desc *d, uint64_t *block_bytes)
{
	uint64_t half, last;
	int ret;

	if (!d->engine.pause || !d->engine.resume || !d->engine.seqs || !d->engine.alloc ||
	    !d->engine.free || !d->engine.install || !d->engine.remove)
		return kvmig_err(-EINVAL, "engine callbacks: pause, resume, seqs, alloc, free, "
				 "install and remove are all needed");
	if ((ret = kvmig_meta_half_bytes(&d->meta, &half)) < 0)
		return kvmig_err_prefix(ret, "engine memory meta");
	if ((ret = kvmig_format_check(&d->format)) < 0)
		return kvmig_err_prefix(ret, "engine memory format");
	*block_bytes = half / d->meta.n_layers;
	if (d->n_blocks == 0 || d->n_blocks > KVMIG_MAX_PAGES)
		return kvmig_err(-EINVAL, "n_blocks is %u; it must be 1 to %u", d->n_blocks,
				 KVMIG_MAX_PAGES);
	if (!d->regions || d->n_regions == 0 || d->n_regions > KVMIG_MEM_MAX_REGIONS)
		return kvmig_err(-EINVAL, "%u regions; there must be 1 to %u", d->n_regions,
				 KVMIG_MEM_MAX_REGIONS);
	if (!d->slabs)
		return kvmig_err(-EINVAL, "no slabs (n_layers x 2 are needed)");
	for (uint32_t i = 0; i < d->n_regions; i++) {
		const struct kvmig_mem_region *r = &d->regions[i];

		if (r->kind != KVMIG_MEM_HOST)
			return kvmig_err(-ENOTSUP, "region %u is %s memory (kind %d): only host "
					 "memory is supported", i,
					 r->kind == KVMIG_MEM_DEVICE ? "device" : "unknown",
					 (int)r->kind);
		if (!r->base || !r->len || (uintptr_t)r->base + r->len < (uintptr_t)r->base)
			return kvmig_err(-EINVAL, "region %u: base %p, %llu bytes is not memory", i,
					 r->base, (unsigned long long)r->len);
	}
	for (uint32_t s = 0; s < d->meta.n_layers * 2; s++) {
		const struct kvmig_mem_slab *sl = &d->slabs[s];
		const char *hn = s % 2 ? "V" : "K";

		if (sl->region >= d->n_regions)
			return kvmig_err(-EINVAL, "layer %u %s: region %u does not exist (%u regions)",
					 s / 2, hn, sl->region, d->n_regions);
		if (d->n_blocks > 1 && sl->stride < *block_bytes)
			return kvmig_err(-EINVAL, "layer %u %s: block stride %llu is less than a "
					 "block's %llu bytes", s / 2, hn,
					 (unsigned long long)sl->stride,
					 (unsigned long long)*block_bytes);
		if (kvmig_mul_u64(d->n_blocks - 1, sl->stride, &last) ||
		    last + sl->offset < last || last + sl->offset + *block_bytes < *block_bytes ||
		    last + sl->offset + *block_bytes > d->regions[sl->region].len)
			return kvmig_err(-EINVAL, "layer %u %s: block %u ends past region %u's %llu "
					 "bytes (offset %llu, stride %llu, %llu bytes a block)",
					 s / 2, hn, d->n_blocks - 1, sl->region,
					 (unsigned long long)d->regions[sl->region].len,
					 (unsigned long long)sl->offset,
					 (unsigned long long)sl->stride,
					 (unsigned long long)*block_bytes);
	}
	/* No byte may belong to two pieces: a block's write would land in
	 * another block or half. Regions may alias, so compare by address. */
	for (uint32_t a = 0; a < d->meta.n_layers * 2; a++) {
		struct piece_run ra = { (uintptr_t)d->regions[d->slabs[a].region].base +
					d->slabs[a].offset, d->slabs[a].stride, a };

		for (uint32_t b = a + 1; b < d->meta.n_layers * 2; b++) {
			struct piece_run rb = { (uintptr_t)d->regions[d->slabs[b].region].base +
						d->slabs[b].offset, d->slabs[b].stride, b };

			if (runs_overlap(&ra, &rb, d->n_blocks, *block_bytes))
				return kvmig_err(-EINVAL, "layer %u %s and layer %u %s overlap: "
						 "blocks would share bytes", a / 2,
						 a % 2 ? "V" : "K", b / 2, b % 2 ? "V" : "K");
		}
	}
	return 0;
}

int kvmig_mem_pager_create(const struct kvmig_mem_desc *d, struct kvmig_pager **ret)
{
	struct mem *m;
	uint64_t bb = 0;
	size_t ns;
	int err;

	if (!d || !ret)
		return kvmig_err(-EINVAL, "kvmig_mem_pager_create: no description");
	if ((err = check_desc(d, &bb)) < 0)
		return err;
	if (!(m = calloc(1, sizeof(*m))))
		return -ENOMEM;
	ns = (size_t)d->meta.n_layers * 2;
	m->meta = d->meta;
	m->format = d->format;
	m->block_bytes = bb;
	m->n_blocks = d->n_blocks;
	m->n_regions = d->n_regions;
	m->eng = d->engine;
	m->tracks_writes = !!d->tracks_writes;
	m->regions = malloc(sizeof(*m->regions) * d->n_regions);
	m->slabs = malloc(sizeof(*m->slabs) * ns);
	m->gen = calloc(d->n_blocks, sizeof(*m->gen));
	m->loose = calloc(d->n_blocks, 1);
	m->dig = calloc(d->n_blocks, sizeof(*m->dig));
	if (!m->regions || !m->slabs || !m->gen || !m->loose || !m->dig ||
	    pthread_mutex_init(&m->lock, NULL)) {
		free(m->regions);
		free(m->slabs);
		free((void *)m->gen);
		free(m->loose);
		free(m->dig);
		free(m);
		return -ENOMEM;
	}
	pthread_mutex_init(&m->dig_lock, NULL);
	/* Tracked: the blocks hold what they hold as of generation 1 (0 means
	 * no digest kept); the engine's writes move them on (written()). */
	for (uint32_t i = 0; i < d->n_blocks; i++)
		atomic_store(&m->gen[i], 1);
	memcpy(m->regions, d->regions, sizeof(*m->regions) * d->n_regions);
	memcpy(m->slabs, d->slabs, sizeof(*m->slabs) * ns);
	if (getrandom(&m->identity, sizeof(m->identity), 0) != (ssize_t)sizeof(m->identity)) {
		mem_destroy(m);
		return kvmig_err(-EIO, "no random bytes for the pager's identity");
	}
	if ((err = kvmig_pager_create(&mem_ops, m, ret)) < 0)
		mem_destroy(m);
	return err;
}
