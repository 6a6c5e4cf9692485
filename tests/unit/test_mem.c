/* SPDX-License-Identifier: MIT */
/*
 * tests/unit/test_mem.c - the engine-memory pager (kvmig/mem.h): its
 * description checks, every engine layout mapped onto the same logical
 * pages, capture / restore across layouts, migrations to and from the
 * synthetic pager in one process (a receiver thread), format mismatches
 * refused before anything moves, and a failing engine callback aborting
 * cleanly.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <kvmig/kvmig.h>

#define NB 24u   /* blocks */
#define MAXQ 8u

/* tiny meta: 2 layers x 2 heads x 16 dim, 4 tokens/page, f16: 256-byte pieces */
static struct kvmig_cache_meta meta(void)
{
	struct kvmig_cache_meta m;

	kvmig_meta_preset("tiny", &m);
	return m;
}

#define PIECE 256u
#define LAYERS 2u

enum kind { VLLM, FLASHINFER, CROSS, SGLANG };

/* A little engine: memory in one of the layouts, a block allocator, sequences. */
struct eng {
	enum kind kind;
	uint8_t *mem[LAYERS * 2];     /* VLLM / FLASHINFER: one per layer; SGLANG: per (layer, half) */
	struct kvmig_mem_region reg[LAYERS * 2];
	uint32_t n_reg;
	struct kvmig_mem_slab slab[LAYERS * 2];
	uint8_t used[NB];
	struct {
		char id[16];
		uint32_t b[NB];
		uint32_t n, fill;
		int on;
	} q[MAXQ];
	int paused;
	int fail; /* which callback fails: 0 none, 1 alloc, 2 seqs, 3 pause */
};

static int e_pause(void *c)
{
	struct eng *e = c;

	if (e->fail == 3)
		return kvmig_mem_error(-EPERM, "the engine is busy");
	e->paused++;
	return 0;
}

static int e_resume(void *c)
{
	((struct eng *)c)->paused--;
	return 0;
}

static int e_seqs(void *c, struct kvmig_mem_seq_sink *s)
{
	struct eng *e = c;
	int ret;

	if (e->fail == 2)
		return kvmig_mem_error(-EIO, "block tables unavailable");
	for (uint32_t i = 0; i < MAXQ; i++)
		if (e->q[i].on && (ret = kvmig_mem_seq_add(s, e->q[i].id, e->q[i].b, e->q[i].n,
							    e->q[i].fill)) < 0)
			return ret;
	return 0;
}

static int e_alloc(void *c, uint32_t n, uint32_t *out)
{
	struct eng *e = c;
	uint32_t k = 0;

	if (e->fail == 1)
		return kvmig_mem_error(-ENOMEM, "ValueError: allocator exploded");
	for (uint32_t b = 0; b < NB && k < n; b++)
		if (!e->used[b])
			out[k++] = b;
	if (k < n)
		return -ENOSPC;
	for (uint32_t i = 0; i < n; i++)
		e->used[out[i]] = 1;
	return 0;
}

static int e_free(void *c, const uint32_t *b, uint32_t n)
{
	struct eng *e = c;

	for (uint32_t i = 0; i < n; i++)
		e->used[b[i]] = 0;
	return 0;
}

static int e_install(void *c, const struct kvmig_seq *q, uint32_t n)
{
	struct eng *e = c;

	for (uint32_t i = 0; i < n; i++) {
		uint32_t j;

		for (j = 0; j < MAXQ && e->q[j].on; j++)
			;
		if (j == MAXQ)
			return -ENOSPC;
		snprintf(e->q[j].id, sizeof(e->q[j].id), "%s", q[i].id);
		memcpy(e->q[j].b, q[i].page_ixs, sizeof(uint32_t) * q[i].n_pages);
		e->q[j].n = q[i].n_pages;
		e->q[j].fill = q[i].fill_in_last_page;
		e->q[j].on = 1;
	}
	return 0;
}

static int e_remove(void *c, const char *const *ids, uint32_t n)
{
	struct eng *e = c;

	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < MAXQ; j++)
			if (e->q[j].on && !strcmp(e->q[j].id, ids[i]))
				e->q[j].on = 0;
	return 0;
}

static int eng_tracks; /* the next eng_make's pager: tracks_writes */

/* Lay out memory of @kind and make a pager of format @layout over it. */
static struct kvmig_pager *eng_make(struct eng *e, enum kind kind, const char *layout,
				    enum kvmig_kv_order order, const char *compat)
{
	struct kvmig_mem_desc d = { .meta = meta(), .n_blocks = NB };
	struct kvmig_pager *p = NULL;

	memset(e, 0, sizeof(*e));
	e->kind = kind;
	switch (kind) {
	case VLLM: /* per layer [2, NB, piece] */
	case FLASHINFER: /* per layer [NB, 2, piece] */
		for (uint32_t l = 0; l < LAYERS; l++) {
			e->mem[l] = calloc(2 * NB, PIECE);
			e->reg[l] = (struct kvmig_mem_region){ e->mem[l], 2ull * NB * PIECE, KVMIG_MEM_HOST, 0 };
			for (uint32_t h = 0; h < 2; h++)
				e->slab[l * 2 + h] = kind == VLLM ?
					(struct kvmig_mem_slab){ l, h * NB * PIECE, PIECE } :
					(struct kvmig_mem_slab){ l, h * PIECE, 2 * PIECE };
		}
		e->n_reg = LAYERS;
		break;
	case CROSS: /* one [NB, LAYERS, 2, piece] */
		e->mem[0] = calloc((size_t)NB * LAYERS * 2, PIECE);
		e->reg[0] = (struct kvmig_mem_region){ e->mem[0], (uint64_t)NB * LAYERS * 2 * PIECE, KVMIG_MEM_HOST, 0 };
		for (uint32_t s = 0; s < LAYERS * 2; s++)
			e->slab[s] = (struct kvmig_mem_slab){ 0, s * PIECE, LAYERS * 2 * PIECE };
		e->n_reg = 1;
		break;
	case SGLANG: /* one buffer per (layer, half), item length = piece */
		for (uint32_t s = 0; s < LAYERS * 2; s++) {
			e->mem[s] = calloc(NB, PIECE);
			e->reg[s] = (struct kvmig_mem_region){ e->mem[s], (uint64_t)NB * PIECE, KVMIG_MEM_HOST, 0 };
			e->slab[s] = (struct kvmig_mem_slab){ s, 0, PIECE };
		}
		e->n_reg = LAYERS * 2;
		break;
	}
	assert_int_equal(kvmig_format_set(&d.format, layout, order, compat), 0);
	d.regions = e->reg;
	d.n_regions = e->n_reg;
	d.slabs = e->slab;
	d.engine = (struct kvmig_mem_engine){ e, e_pause, e_resume, e_seqs, e_alloc, e_free,
					      e_install, e_remove };
	d.tracks_writes = eng_tracks;
	assert_int_equal(kvmig_mem_pager_create(&d, &p), 0);
	return p;
}

static void eng_drop(struct eng *e, struct kvmig_pager **p)
{
	kvmig_pager_destroy(p);
	for (uint32_t i = 0; i < LAYERS * 2; i++)
		free(e->mem[i]);
}

/* The address of (block, layer, half)'s piece, computed from the layout by hand. */
static uint8_t *piece(struct eng *e, uint32_t b, uint32_t l, uint32_t h)
{
	switch (e->kind) {
	case VLLM:
		return e->mem[l] + ((size_t)h * NB + b) * PIECE;
	case FLASHINFER:
		return e->mem[l] + ((size_t)b * 2 + h) * PIECE;
	case CROSS:
		return e->mem[0] + (((size_t)b * LAYERS + l) * 2 + h) * PIECE;
	case SGLANG:
		return e->mem[l * 2 + h] + (size_t)b * PIECE;
	}
	return NULL;
}

static void fill_piece(uint8_t *dst, uint32_t seed, uint32_t l, uint32_t h, uint32_t tok)
{
	for (uint32_t i = 0; i < PIECE; i++)
		dst[i] = (uint8_t)(seed * 131 + l * 31 + h * 7 + tok * 3 + i);
}

/* Sequences "r0".."r(n-1)" of 3 blocks (the last holding 2 tokens), bytes by seed. */
static void eng_seqs(struct eng *e, uint32_t n, uint32_t seed)
{
	uint32_t b = 0;

	for (uint32_t i = 0; i < n; i++) {
		snprintf(e->q[i].id, sizeof(e->q[i].id), "r%u", i);
		e->q[i].n = 3;
		e->q[i].fill = 2;
		e->q[i].on = 1;
		for (uint32_t j = 0; j < 3; j++, b++) {
			e->q[i].b[j] = b;
			e->used[b] = 1;
			for (uint32_t l = 0; l < LAYERS; l++)
				for (uint32_t h = 0; h < 2; h++)
					fill_piece(piece(e, b, l, h), seed + i, l, h, j);
		}
	}
}

/* Whether sequence @id in @e holds what eng_seqs(seed) wrote for it as sequence @i. */
static int eng_holds(struct eng *e, const char *id, uint32_t i, uint32_t seed)
{
	uint8_t want[PIECE];

	for (uint32_t k = 0; k < MAXQ; k++) {
		if (!e->q[k].on || strcmp(e->q[k].id, id))
			continue;
		if (e->q[k].n != 3 || e->q[k].fill != 2)
			return 0;
		for (uint32_t j = 0; j < 3; j++)
			for (uint32_t l = 0; l < LAYERS; l++)
				for (uint32_t h = 0; h < 2; h++) {
					fill_piece(want, seed + i, l, h, j);
					if (memcmp(piece(e, e->q[k].b[j], l, h), want, PIECE))
						return 0;
				}
		return 1;
	}
	return 0;
}

static uint32_t eng_n(const struct eng *e)
{
	uint32_t n = 0;

	for (uint32_t k = 0; k < MAXQ; k++)
		n += e->q[k].on;
	return n;
}

static uint32_t eng_used(const struct eng *e)
{
	uint32_t n = 0;

	for (uint32_t b = 0; b < NB; b++)
		n += e->used[b];
	return n;
}

/* ---- description checks ---- */

static void test_desc_refused(void **state)
{
	struct kvmig_mem_desc d = { .meta = meta(), .n_blocks = NB };
	struct eng e;
	struct kvmig_pager *p = NULL, *q = NULL;
	uint8_t *buf = calloc(2 * NB * LAYERS, PIECE);
	struct kvmig_mem_region r = { buf, 2ull * NB * LAYERS * PIECE, KVMIG_MEM_HOST, 0 };
	struct kvmig_mem_slab s[4];

	(void)state;
	p = eng_make(&e, VLLM, "vllm", KVMIG_ORDER_NHD, NULL);
	kvmig_format_set(&d.format, "x", KVMIG_ORDER_NHD, NULL);
	d.regions = &r;
	d.n_regions = 1;
	d.slabs = s;
	d.engine = (struct kvmig_mem_engine){ &e, e_pause, e_resume, e_seqs, e_alloc, e_free,
					      e_install, e_remove };
	for (uint32_t i = 0; i < 4; i++)
		s[i] = (struct kvmig_mem_slab){ 0, (uint64_t)i * NB * PIECE, PIECE };
	assert_int_equal(kvmig_mem_pager_create(&d, &q), 0);
	kvmig_pager_destroy(&q);

	s[3].offset = s[2].offset + PIECE * 3 + 17; /* inside layer 1 K's block 3 */
	assert_int_equal(kvmig_mem_pager_create(&d, &q), -EINVAL);
	assert_non_null(strstr(kvmig_last_error(), "layer 1 K and layer 1 V overlap"));
	s[3].offset = 3ull * NB * PIECE;

	s[1].stride = PIECE - 1;
	assert_int_equal(kvmig_mem_pager_create(&d, &q), -EINVAL);
	assert_non_null(strstr(kvmig_last_error(), "layer 0 V: block stride 255"));
	s[1].stride = PIECE;

	s[3].offset += 1; /* the last block ends one byte past the region */
	assert_int_equal(kvmig_mem_pager_create(&d, &q), -EINVAL);
	assert_non_null(strstr(kvmig_last_error(), "layer 1 V: block 23 ends past region 0"));
	s[3].offset -= 1;

	s[2].region = 1;
	assert_int_equal(kvmig_mem_pager_create(&d, &q), -EINVAL);
	assert_non_null(strstr(kvmig_last_error(), "region 1 does not exist"));
	s[2].region = 0;

	r.kind = KVMIG_MEM_DEVICE;
	assert_int_equal(kvmig_mem_pager_create(&d, &q), -ENOTSUP);
	assert_non_null(strstr(kvmig_last_error(), "region 0 is device memory"));
	r.kind = KVMIG_MEM_HOST;

	d.engine.install = NULL;
	assert_int_equal(kvmig_mem_pager_create(&d, &q), -EINVAL);
	assert_non_null(strstr(kvmig_last_error(), "engine callbacks"));
	d.engine.install = e_install;

	d.n_blocks = 0;
	assert_int_equal(kvmig_mem_pager_create(&d, &q), -EINVAL);
	d.n_blocks = NB;
	d.meta.head_dim = 0;
	assert_int_equal(kvmig_mem_pager_create(&d, &q), -EINVAL);
	assert_non_null(strstr(kvmig_last_error(), "head_dim"));
	assert_null(q);
	free(buf);
	eng_drop(&e, &p);
}

/* ---- every layout: the same logical pages ---- */

static void page_digests(struct kvmig_pager *p, uint32_t b, struct kvmig_digest *k,
			 struct kvmig_digest *v)
{
	struct kvmig_extent ext[LAYERS];
	struct iovec iov[LAYERS];
	uint32_t n;

	for (int h = 0; h < 2; h++) {
		assert_int_equal(kvmig_pager_extents(p, b, (enum kvmig_half)h, ext, LAYERS, &n), 0);
		for (uint32_t i = 0; i < n; i++)
			iov[i] = (struct iovec){ ext[i].addr, ext[i].len };
		kvmig_digest_computev(iov, (int)n, h ? v : k);
	}
}

static void test_layouts_same_pages(void **state)
{
	struct kvmig_digest ref[3][2];
	enum kind kinds[] = { VLLM, FLASHINFER, CROSS, SGLANG };

	(void)state;
	for (uint32_t i = 0; i < 4; i++) {
		struct eng e;
		struct kvmig_pager *p = eng_make(&e, kinds[i], "same", KVMIG_ORDER_NHD, NULL);
		struct kvmig_extent ext[LAYERS];
		uint32_t n;

		eng_seqs(&e, 1, 5);
		for (uint32_t b = 0; b < 3; b++) {
			struct kvmig_digest k, v;

			page_digests(p, b, &k, &v);
			if (i == 0) {
				ref[b][0] = k;
				ref[b][1] = v;
			}
			assert_true(kvmig_digest_equal(&k, &ref[b][0]));
			assert_true(kvmig_digest_equal(&v, &ref[b][1]));
		}
		/* Contiguous pieces coalesce: none do here but... */
		assert_int_equal(kvmig_pager_extents(p, 1, KVMIG_HALF_K, ext, LAYERS, &n), 0);
		assert_int_equal(n, LAYERS);
		assert_ptr_equal(ext[1].addr, piece(&e, 1, 1, 0));
		assert_int_equal(kvmig_pager_extents(p, NB, KVMIG_HALF_K, ext, LAYERS, &n), -EINVAL);
		eng_drop(&e, &p);
	}
}

/* A page-major description (K of every layer, then V) is one extent a half. */
static void test_extents_coalesce(void **state)
{
	struct kvmig_mem_desc d = { .meta = meta(), .n_blocks = NB };
	uint8_t *buf = calloc((size_t)NB * 2 * LAYERS, PIECE);
	struct kvmig_mem_region r = { buf, (uint64_t)NB * 2 * LAYERS * PIECE, KVMIG_MEM_HOST, 0 };
	struct kvmig_mem_slab s[4];
	struct kvmig_extent ext[LAYERS];
	struct kvmig_pager *p = NULL;
	struct eng e = { 0 };
	uint32_t n;

	(void)state;
	for (uint32_t l = 0; l < LAYERS; l++)
		for (uint32_t h = 0; h < 2; h++)
			s[l * 2 + h] = (struct kvmig_mem_slab){ 0, (h * LAYERS + l) * PIECE,
								2 * LAYERS * PIECE };
	kvmig_format_set(&d.format, "page_major", KVMIG_ORDER_NHD, NULL);
	d.regions = &r;
	d.n_regions = 1;
	d.slabs = s;
	d.engine = (struct kvmig_mem_engine){ &e, e_pause, e_resume, e_seqs, e_alloc, e_free,
					      e_install, e_remove };
	assert_int_equal(kvmig_mem_pager_create(&d, &p), 0);
	assert_int_equal(kvmig_pager_extents(p, 5, KVMIG_HALF_V, ext, LAYERS, &n), 0);
	assert_int_equal(n, 1);
	assert_ptr_equal(ext[0].addr, buf + (5 * 2 * LAYERS + LAYERS) * PIECE);
	assert_int_equal(ext[0].len, LAYERS * PIECE);
	kvmig_pager_destroy(&p);
	free(buf);
}

/* ---- capture and restore across layouts ---- */

static void test_capture_restore_across_layouts(void **state)
{
	struct eng a, b;
	struct kvmig_pager *pa = eng_make(&a, VLLM, "engine", KVMIG_ORDER_HND, "model-x");
	struct kvmig_pager *pb = eng_make(&b, SGLANG, "engine", KVMIG_ORDER_HND, "model-x");
	struct kvmig_store *s = NULL;
	struct kvmig_manifest *m = NULL;
	struct kvmig_capture_stats cs;
	struct kvmig_restore_stats rs;
	struct kvmig_digest md;

	(void)state;
	eng_seqs(&a, 3, 40);
	assert_int_equal(kvmig_store_mem_create(&s), 0);
	assert_int_equal(kvmig_capture(pa, s, &md, &cs), 0);
	assert_int_equal(cs.pages, 9);
	assert_int_equal(a.paused, 0);
	assert_int_equal(kvmig_manifest_build(pa, &m), 0);
	assert_string_equal(m->format.compat, "model-x");
	assert_int_equal(kvmig_restore(pb, s, &md, &rs), 0);
	assert_int_equal(rs.seqs, 3);
	for (uint32_t i = 0; i < 3; i++) {
		char id[8];

		snprintf(id, sizeof(id), "r%u", i);
		assert_true(eng_holds(&b, id, i, 40));
	}
	assert_int_equal(kvmig_verify(pb, m, NULL), 0);
	assert_int_equal(eng_used(&b), 9);

	/* A pager of another format is refused, untouched. */
	struct eng c;
	struct kvmig_pager *pc = eng_make(&c, SGLANG, "engine", KVMIG_ORDER_NHD, "model-x");

	assert_int_equal(kvmig_restore(pc, s, &md, &rs), -EPROTO);
	assert_non_null(strstr(kvmig_last_error(), "order mismatch: this side's is NHD, the "
						   "manifest's is HND"));
	assert_int_equal(eng_n(&c) + eng_used(&c), 0);
	eng_drop(&c, &pc);

	kvmig_manifest_free(&m);
	kvmig_store_close(&s);
	eng_drop(&a, &pa);
	eng_drop(&b, &pb);
}

/* ---- migrations in one process ---- */

struct rx {
	struct kvmig_listener *l;
	struct kvmig_pager *p;
	struct kvmig_migrate_opts o;
	int ret;
	char err[256];
};

static void *rx_main(void *arg)
{
	struct rx *r = arg;

	r->ret = kvmig_migrate_accept(r->l, r->p, &r->o, NULL);
	snprintf(r->err, sizeof(r->err), "%s", kvmig_last_error());
	return NULL;
}

/* Migrate @src to @dst (all sequences, move mode): the sender's return; *rx_ret the receiver's. */
static int migrate(struct kvmig_pager *src, struct kvmig_pager *dst, int live, int *rx_ret,
		   char *rx_err)
{
	struct rx r = { .p = dst };
	struct kvmig_migrate_opts o;
	pthread_t t;
	int ret;

	kvmig_migrate_opts_init(&r.o);
	r.o.timeout_ms = 5000;
	kvmig_migrate_opts_init(&o);
	o.timeout_ms = 5000;
	o.live = live;
	assert_int_equal(kvmig_listener_open("127.0.0.1:0", &r.o, &r.l), 0);
	assert_int_equal(pthread_create(&t, NULL, rx_main, &r), 0);
	ret = kvmig_migrate_send(src, kvmig_listener_addr(r.l), &o, NULL);
	pthread_join(t, NULL);
	kvmig_listener_close(&r.l);
	*rx_ret = r.ret;
	if (rx_err)
		snprintf(rx_err, 256, "%s", r.err);
	return ret;
}

static void test_migrate_to_synth_and_back(void **state)
{
	struct kvmig_synth_opts so;
	struct kvmig_pager *syn = NULL;
	struct eng a, b;
	struct kvmig_pager *pa = eng_make(&a, VLLM, "layer_major", KVMIG_ORDER_NHD, NULL);
	struct kvmig_pager *pb = eng_make(&b, FLASHINFER, "layer_major", KVMIG_ORDER_NHD, NULL);
	struct kvmig_seq_list l;
	int rret;

	(void)state;
	kvmig_synth_opts_init(&so);
	so.meta = meta();
	so.layout = KVMIG_LAYOUT_LAYER_MAJOR;
	so.capacity_pages = 32;
	assert_int_equal(kvmig_synth_create(&so, &syn), 0);
	eng_seqs(&a, 3, 9);

	assert_int_equal(migrate(pa, syn, 0, &rret, NULL), 0);
	assert_int_equal(rret, 0);
	assert_int_equal(eng_n(&a), 0);
	assert_int_equal(eng_used(&a), 0); /* move: the source's blocks went back */
	assert_int_equal(a.paused, 0);
	assert_int_equal(kvmig_pager_seqs(syn, &l), 0);
	assert_int_equal(l.n, 3);
	kvmig_seq_list_free(&l);

	assert_int_equal(migrate(syn, pb, 1, &rret, NULL), 0); /* live, untracked writes */
	assert_int_equal(rret, 0);
	for (uint32_t i = 0; i < 3; i++) {
		char id[8];

		snprintf(id, sizeof(id), "r%u", i);
		assert_true(eng_holds(&b, id, i, 9));
	}
	assert_int_equal(eng_used(&b), 9);
	assert_int_equal(kvmig_pager_seqs(syn, &l), 0);
	assert_int_equal(l.n, 0);
	kvmig_seq_list_free(&l);
	kvmig_pager_destroy(&syn);
	eng_drop(&a, &pa);
	eng_drop(&b, &pb);
}

static void test_format_mismatch_refused(void **state)
{
	static const struct {
		const char *layout, *compat, *want;
		enum kvmig_kv_order order;
	} cases[] = {
		{ "flashinfer", "m1", "layout mismatch: this side's is", KVMIG_ORDER_NHD },
		{ "vllm", "m1", "order mismatch", KVMIG_ORDER_HND },
		{ "vllm", "m2", "compatibility string mismatch", KVMIG_ORDER_NHD },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct eng a, b;
		struct kvmig_pager *pa = eng_make(&a, VLLM, "vllm", KVMIG_ORDER_NHD, "m1");
		struct kvmig_pager *pb = eng_make(&b, VLLM, cases[i].layout, cases[i].order,
						  cases[i].compat);
		char rerr[256];
		int rret;

		eng_seqs(&a, 2, 3);
		assert_int_equal(migrate(pa, pb, 0, &rret, rerr), -EPROTO);
		assert_int_equal(rret, -EPROTO);
		assert_non_null(strstr(kvmig_last_error(), cases[i].want));
		assert_non_null(strstr(rerr, cases[i].want));
		assert_int_equal(eng_n(&a), 2);
		assert_int_equal(a.paused, 0);
		assert_int_equal(eng_n(&b) + eng_used(&b), 0);
		eng_drop(&a, &pa);
		eng_drop(&b, &pb);
	}
}

/* An engine callback that fails aborts the migration: source intact and
 * resumed, destination empty, the callback's words in the error. */
static void test_callback_failure_aborts(void **state)
{
	static const struct {
		int src_fail, dst_fail;
		const char *want;
	} cases[] = {
		{ 0, 1, "engine callback alloc: ValueError: allocator exploded" },
		{ 3, 0, "engine callback pause: the engine is busy" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct eng a, b;
		struct kvmig_pager *pa = eng_make(&a, VLLM, "vllm", KVMIG_ORDER_NHD, NULL);
		struct kvmig_pager *pb = eng_make(&b, CROSS, "vllm", KVMIG_ORDER_NHD, NULL);
		char rerr[256];
		int ret, rret;

		eng_seqs(&a, 2, 3);
		a.fail = cases[i].src_fail;
		b.fail = cases[i].dst_fail;
		ret = migrate(pa, pb, 0, &rret, rerr);
		assert_true(ret < 0);
		assert_true(rret < 0);
		assert_true(strstr(kvmig_last_error(), cases[i].want) || strstr(rerr, cases[i].want));
		a.fail = 0;
		assert_true(eng_holds(&a, "r0", 0, 3) && eng_holds(&a, "r1", 1, 3));
		assert_int_equal(a.paused, 0);
		assert_int_equal(eng_n(&b) + eng_used(&b), 0);
		eng_drop(&a, &pa);
		eng_drop(&b, &pb);
	}
}

/* Blocks: allocate / free / install / remove through the pager keep the book. */
static void test_blocks_book(void **state)
{
	struct eng e;
	struct kvmig_pager *p = eng_make(&e, VLLM, "vllm", KVMIG_ORDER_NHD, NULL);
	uint32_t b[3], *occ, n;
	const char *id = "x";
	struct kvmig_seq q = { .id = "x", .page_ixs = b, .n_pages = 2 };

	(void)state;
	assert_int_equal(kvmig_pager_allocate(p, 3, b), 0);
	assert_int_equal(eng_used(&e), 3);
	assert_int_equal(kvmig_pager_occupied(p, &occ, &n), 0);
	assert_int_equal(n, 3);
	free(occ);
	q.page_ixs = (uint32_t[]){ b[0], 20 };
	assert_int_equal(kvmig_pager_install(p, &q, 1), -EINVAL); /* 20 not allocated here */
	assert_non_null(strstr(kvmig_last_error(), "block 20 was not allocated"));
	q.page_ixs = b;
	assert_int_equal(kvmig_pager_install(p, &q, 1), 0);
	assert_int_equal(kvmig_pager_install(p, &q, 1), -EEXIST);
	assert_int_equal(kvmig_pager_free(p, b, 1), -EINVAL); /* in a sequence */
	assert_int_equal(kvmig_pager_free(p, &b[2], 1), 0);
	assert_int_equal(eng_used(&e), 2);
	assert_int_equal(kvmig_pager_remove(p, &id, 1), 0);
	assert_int_equal(kvmig_pager_remove(p, &id, 1), -ENOENT);
	assert_int_equal(kvmig_mem_written(p, b, 2), 0);
	assert_int_equal(kvmig_mem_written(p, (uint32_t[]){ NB }, 1), -EINVAL);
	eng_drop(&e, &p);
}

/*
 * Digests kept ahead in engine memory. Tracked: kept until the engine says
 * it wrote the block, and a block handed out again (free, allocate) is not
 * covered by what it held before. Untracked: nothing stands outside a
 * pause (any byte may have changed), and a pause's entries only for it.
 */
static void test_digests_ahead(void **state)
{
	struct kvmig_hash_ahead_stats hs;
	struct kvmig_page_digest d;
	struct eng e;
	struct kvmig_pager *p;
	uint32_t b[2], b2;
	uint64_t g;
	const char *id = "x";
	struct kvmig_seq q = { .id = "x", .page_ixs = b, .n_pages = 2 };

	(void)state;
	eng_tracks = 1;
	p = eng_make(&e, VLLM, "vllm", KVMIG_ORDER_NHD, NULL);
	eng_tracks = 0;
	assert_int_equal(kvmig_pager_allocate(p, 2, b), 0);
	assert_int_equal(kvmig_pager_install(p, &q, 1), 0); /* no written(): generation 1+ */
	assert_int_equal(kvmig_hash_ahead(p, NULL, 0, 1, &hs), 0);
	assert_int_equal(hs.pages, 2);
	assert_int_equal(hs.hashed, 2);
	assert_int_equal(kvmig_hash_ahead(p, NULL, 0, 1, &hs), 0);
	assert_int_equal(hs.fresh, 2);
	assert_int_equal(kvmig_pager_digest_get(p, b[0], &d), 0);
	assert_int_equal(kvmig_pager_generation(p, b[0], &g), 0);
	assert_true(d.gen == g && g != 0);
	/* Only the blocks named: one of them. */
	assert_int_equal(kvmig_hash_ahead(p, &b[1], 1, 1, &hs), 0);
	assert_int_equal(hs.pages, 1);
	assert_int_equal(kvmig_mem_written(p, b, 1), 0);
	assert_int_equal(kvmig_hash_ahead(p, NULL, 0, 1, &hs), 0);
	assert_int_equal(hs.hashed, 1);
	assert_int_equal(hs.fresh, 1);
	/* Given back and handed out again: its generation moved. */
	assert_int_equal(kvmig_pager_remove(p, &id, 1), 0);
	assert_int_equal(kvmig_pager_digest_get(p, b[1], &d), 0);
	assert_int_equal(kvmig_pager_allocate(p, 1, &b2), 0);
	assert_int_equal(kvmig_pager_generation(p, b2, &g), 0);
	if (b2 == b[1])
		assert_true(d.gen != g);
	assert_int_equal(kvmig_pager_digest_get(p, NB, &d), -EINVAL);
	eng_drop(&e, &p);

	/* Untracked: no generation outlives a pause, so none is kept at all
	 * (a background hasher would hash everything, every pass, for nothing). */
	p = eng_make(&e, VLLM, "vllm", KVMIG_ORDER_NHD, NULL);
	assert_int_equal(kvmig_pager_allocate(p, 2, b), 0);
	assert_int_equal(kvmig_pager_install(p, &q, 1), 0);
	assert_int_equal(kvmig_hash_ahead(p, NULL, 0, 1, &hs), -ENOTSUP);
	assert_int_equal(kvmig_pager_digest_get(p, b[0], &d), -ENOTSUP);
	assert_true(d.gen == 0);
	eng_drop(&e, &p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_desc_refused),
		cmocka_unit_test(test_layouts_same_pages),
		cmocka_unit_test(test_extents_coalesce),
		cmocka_unit_test(test_capture_restore_across_layouts),
		cmocka_unit_test(test_migrate_to_synth_and_back),
		cmocka_unit_test(test_format_mismatch_refused),
		cmocka_unit_test(test_callback_failure_aborts),
		cmocka_unit_test(test_blocks_book),
		cmocka_unit_test(test_digests_ahead),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
