/* SPDX-License-Identifier: MIT */
/*
 * tests/unit/test_manifest.c - the page manifest: canonical JSON (round trip,
 * insertion-order invariance, a golden string) and the strict parser (one
 * test per malformed input, each checking the message names the field).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kvmig/cas.h>

#include "util/internal.h"

/* ---- helpers ---- */

static void digest_of(const char *what, uint32_t n, struct kvmig_digest *d)
{
	char buf[64];
	int len = snprintf(buf, sizeof(buf), "%s-%u", what, n);

	kvmig_digest_compute(buf, (size_t)len, d);
}

static struct kvmig_manifest *new_manifest(const char *preset, enum kvmig_layout layout)
{
	struct kvmig_cache_meta meta;
	struct kvmig_page_format fmt;
	struct kvmig_manifest *m = NULL;

	assert_int_equal(kvmig_meta_preset(preset, &meta), 0);
	assert_int_equal(kvmig_format_set(&fmt, kvmig_layout_name(layout), KVMIG_ORDER_NHD, NULL),
			 0);
	assert_int_equal(kvmig_manifest_new(&meta, &fmt, &m), 0);
	assert_non_null(m);
	return m;
}

static void add_page(struct kvmig_manifest *m, uint32_t ix)
{
	struct kvmig_digest k, v;

	digest_of("k", ix, &k);
	digest_of("v", ix, &v);
	assert_int_equal(kvmig_manifest_add_page(m, ix, &k, &v), 0);
}

static char *serialize(struct kvmig_manifest *m, size_t *len)
{
	char *json = NULL;
	int ret = kvmig_manifest_serialize(m, &json, len);

	if (ret)
		fail_msg("serialize: %d: %s", ret, kvmig_last_error());
	assert_non_null(json);
	assert_int_equal(strlen(json), *len);
	return json;
}

static struct kvmig_manifest *parse_ok(const char *json, size_t len)
{
	struct kvmig_manifest *m = NULL;
	int ret = kvmig_manifest_parse(json, len, &m);

	if (ret)
		fail_msg("parse: %d: %s", ret, kvmig_last_error());
	assert_non_null(m);
	return m;
}

static void assert_error_has(const char *want)
{
	const char *msg = kvmig_last_error();

	if (want && !strstr(msg, want))
		fail_msg("error message \"%s\" lacks \"%s\"", msg, want);
}

static void assert_manifests_equal(const struct kvmig_manifest *a, const struct kvmig_manifest *b)
{
	assert_int_equal(kvmig_format_match(&a->format, &b->format, "b"), 0);
	assert_true(kvmig_meta_equal(&a->meta, &b->meta));
	assert_int_equal(a->n_pages, b->n_pages);
	for (uint32_t i = 0; i < a->n_pages; i++) {
		assert_int_equal(a->pages[i].ix, b->pages[i].ix);
		assert_true(kvmig_digest_equal(&a->pages[i].k, &b->pages[i].k));
		assert_true(kvmig_digest_equal(&a->pages[i].v, &b->pages[i].v));
	}
	assert_int_equal(a->n_seqs, b->n_seqs);
	for (uint32_t i = 0; i < a->n_seqs; i++) {
		assert_string_equal(a->seqs[i].id, b->seqs[i].id);
		assert_int_equal(a->seqs[i].n_pages, b->seqs[i].n_pages);
		assert_int_equal(a->seqs[i].fill_in_last_page, b->seqs[i].fill_in_last_page);
		if (a->seqs[i].n_pages)
			assert_memory_equal(a->seqs[i].page_ixs, b->seqs[i].page_ixs,
					    a->seqs[i].n_pages * sizeof(uint32_t));
	}
}

/* ---- JSON fixtures ---- */

#define HA "00112233445566778899aabbccddeeff"
#define HB "ffeeddccbbaa99887766554433221100"
#define DA "\"xxh128:" HA "\""
#define DB "\"xxh128:" HB "\""

#define META_F(layout, pst, nl, nh, hd, dt)                                                 \
	"\"layout\":" layout ",\"page_size_tokens\":" pst ",\"n_layers\":" nl                \
	",\"n_heads\":" nh ",\"head_dim\":" hd ",\"dtype\":" dt
#define META META_F("\"page_major\"", "16", "32", "8", "128", "\"bf16\"")

#define PGX(ix, k, v) "{\"ix\":" ix ",\"k\":" k ",\"v\":" v "}"
#define PG(ix) PGX(#ix, DA, DB)
#define PAGES_OF(...) "\"pages\":[" __VA_ARGS__ "]"
#define PAGES PAGES_OF(PG(0) "," PG(1) "," PG(2))

#define SEQX(id, ixs, fill) "{\"id\":" id ",\"page_ixs\":" ixs ",\"fill_in_last_page\":" fill "}"
#define SEQ(id, ixs, fill) SEQX("\"" id "\"", "[" ixs "]", #fill)
#define SEQS_OF(...) "\"logical_seqs\":[" __VA_ARGS__ "]"
#define SEQS SEQS_OF(SEQ("seq-0", "0,1", 3) "," SEQ("seq-1", "0,2", 0))

#define DOC(meta, pages, seqs) "{" meta "," pages "," seqs "}"
#define VALID DOC(META, PAGES, SEQS)

#define X16 "aaaaaaaaaaaaaaaa"
#define X128 X16 X16 X16 X16 X16 X16 X16 X16

/* ---- round trip and canonical form ---- */

static struct kvmig_manifest *build_sample(int order)
{
	static const uint32_t ixs[] = { 5, 2, 9, 7, 11 };
	static const uint32_t seq_b[] = { 2, 5, 9 }, seq_a[] = { 2, 7, 11 };
	struct kvmig_manifest *m = new_manifest("llama3-8b", KVMIG_LAYOUT_PAGE_MAJOR);
	size_t n = KVMIG_ARRAY_SIZE(ixs);

	/* Different orders of the same content: i -> (i * mult + order) mod 5 is a
	 * permutation for every mult coprime with 5. */
	for (size_t i = 0; i < n; i++)
		add_page(m, ixs[(i * (size_t)(order % 4 + 1) + (size_t)order) % n]);
	if (order & 1) {
		assert_int_equal(kvmig_manifest_add_seq(m, "seq-b", seq_b, 3, 3), 0);
		assert_int_equal(kvmig_manifest_add_seq(m, "seq-a", seq_a, 3, 0), 0);
		assert_int_equal(kvmig_manifest_add_seq(m, "empty", NULL, 0, 0), 0);
	} else {
		assert_int_equal(kvmig_manifest_add_seq(m, "empty", NULL, 0, 0), 0);
		assert_int_equal(kvmig_manifest_add_seq(m, "seq-a", seq_a, 3, 0), 0);
		assert_int_equal(kvmig_manifest_add_seq(m, "seq-b", seq_b, 3, 3), 0);
	}
	return m;
}

static void test_roundtrip(void **state)
{
	struct kvmig_manifest *a = build_sample(0), *b;
	size_t la, lb;
	char *ja = serialize(a, &la), *jb;

	/* Canonical shape: one trailing newline, no whitespace elsewhere. */
	assert_true(la > 1);
	assert_int_equal(ja[la - 1], '\n');
	assert_null(memchr(ja, '\n', la - 1));
	assert_null(memchr(ja, ' ', la));
	assert_null(memchr(ja, '\t', la));

	/* Canonicalized in place: sorted pages and sequences. */
	for (uint32_t i = 1; i < a->n_pages; i++)
		assert_true(a->pages[i - 1].ix < a->pages[i].ix);
	assert_string_equal(a->seqs[0].id, "empty");
	assert_string_equal(a->seqs[1].id, "seq-a");
	assert_string_equal(a->seqs[2].id, "seq-b");

	b = parse_ok(ja, la);
	assert_manifests_equal(a, b);
	jb = serialize(b, &lb);
	assert_int_equal(la, lb);
	assert_memory_equal(ja, jb, la);

	/* The two sequences share page 2 and both still reference it. */
	assert_int_equal(b->seqs[1].page_ixs[0], 2);
	assert_int_equal(b->seqs[2].page_ixs[0], 2);
	assert_int_equal(b->seqs[2].fill_in_last_page, 3);
	assert_int_equal(b->seqs[0].n_pages, 0);
	assert_null(b->seqs[0].page_ixs);

	free(ja);
	free(jb);
	kvmig_manifest_free(&a);
	kvmig_manifest_free(&b);
	assert_null(a);
	assert_null(b);
}

static void test_insertion_order_invariance(void **state)
{
	struct kvmig_manifest *ref = build_sample(0);
	struct kvmig_digest dref, d;
	size_t lref, l;
	char *jref = serialize(ref, &lref);

	kvmig_digest_compute(jref, lref, &dref);
	for (int order = 1; order < 6; order++) {
		struct kvmig_manifest *m = build_sample(order);
		char *j;

		/* The insertion order really differs before canonicalization. */
		if (order & 1)
			assert_string_equal(m->seqs[0].id, "seq-b");
		j = serialize(m, &l);
		assert_int_equal(l, lref);
		assert_memory_equal(j, jref, l);
		kvmig_digest_compute(j, l, &d);
		assert_true(kvmig_digest_equal(&d, &dref));
		free(j);
		kvmig_manifest_free(&m);
	}

	/* And a parse of out-of-order, whitespace-laden input gives the same bytes. */
	{
		static const char in[] =
			"{ \"logical_seqs\" : [ {\"fill_in_last_page\":0, \"page_ixs\":[0, 2], "
			"\"id\":\"seq-1\"},\n {\"id\":\"seq-0\",\"page_ixs\":[0,1],"
			"\"fill_in_last_page\":3} ],\n \"pages\": [" PG(2)
			", " PG(0) ",\n" PG(1) "], " META " }\n\n";
		static const char want[] = VALID "\n";
		struct kvmig_manifest *m = parse_ok(in, sizeof(in) - 1);
		char *j = serialize(m, &l);

		assert_string_equal(j, want);
		free(j);
		kvmig_manifest_free(&m);
	}
	free(jref);
	kvmig_manifest_free(&ref);
}

static void test_golden(void **state)
{
	static const char golden[] =
		"{\"layout\":\"layer_major\",\"page_size_tokens\":4,\"n_layers\":2,\"n_heads\":2,"
		"\"head_dim\":16,\"dtype\":\"f16\",\"pages\":["
		"{\"ix\":1,\"k\":\"xxh128:" HA "\",\"v\":\"xxh128:" HB "\"},"
		"{\"ix\":3,\"k\":\"xxh128:" HB "\",\"v\":\"xxh128:" HA "\"}],"
		"\"logical_seqs\":["
		"{\"id\":\"a\",\"page_ixs\":[],\"fill_in_last_page\":0},"
		"{\"id\":\"b\",\"page_ixs\":[3,1],\"fill_in_last_page\":2},"
		"{\"id\":\"q\\\"\\\\/\",\"page_ixs\":[1],\"fill_in_last_page\":0}]}\n";
	static const uint32_t b_ixs[] = { 3, 1 }, q_ixs[] = { 1 };
	struct kvmig_manifest *m = new_manifest("tiny", KVMIG_LAYOUT_LAYER_MAJOR), *p;
	struct kvmig_digest da, db;
	size_t len;
	char *json;

	assert_int_equal(kvmig_digest_parse("xxh128:" HA, &da), 0);
	assert_int_equal(kvmig_digest_parse("xxh128:" HB, &db), 0);
	assert_int_equal(kvmig_manifest_add_page(m, 3, &db, &da), 0);
	assert_int_equal(kvmig_manifest_add_page(m, 1, &da, &db), 0);
	assert_int_equal(kvmig_manifest_add_seq(m, "q\"\\/", q_ixs, 1, 0), 0);
	assert_int_equal(kvmig_manifest_add_seq(m, "b", b_ixs, 2, 2), 0);
	assert_int_equal(kvmig_manifest_add_seq(m, "a", NULL, 0, 0), 0);

	json = serialize(m, &len);
	assert_string_equal(json, golden);
	assert_int_equal(len, sizeof(golden) - 1);
	free(json);

	/* The golden text parses back to itself; the id's escapes decode. */
	p = parse_ok(golden, sizeof(golden) - 1);
	assert_string_equal(p->seqs[2].id, "q\"\\/");
	json = serialize(p, &len);
	assert_string_equal(json, golden);
	free(json);
	kvmig_manifest_free(&p);
	kvmig_manifest_free(&m);
}

static void test_golden_empty(void **state)
{
	static const char golden[] =
		"{\"layout\":\"page_major\",\"page_size_tokens\":16,\"n_layers\":32,\"n_heads\":8,"
		"\"head_dim\":128,\"dtype\":\"bf16\",\"pages\":[],\"logical_seqs\":[]}\n";
	struct kvmig_manifest *m = new_manifest("llama3-8b", KVMIG_LAYOUT_PAGE_MAJOR), *p;
	size_t len;
	char *json = serialize(m, &len);

	assert_string_equal(json, golden);
	p = parse_ok(json, len);
	assert_int_equal(p->n_pages, 0);
	assert_int_equal(p->n_seqs, 0);
	assert_int_equal(kvmig_manifest_find_page(p, 0), -ENOENT);
	free(json);
	kvmig_manifest_free(&p);
	kvmig_manifest_free(&m);
}

/* Values at the edges of every range are accepted. */
static void test_parse_limits_accepted(void **state)
{
	static const char in[] = DOC(META_F("\"layer_major\"", "4096", "1024", "1024", "4096",
					    "\"f32\""),
				     PAGES_OF(PG(16777215) "," PG(0)),
				     SEQS_OF(SEQ(X128, "16777215,0,16777215", 4095) ","
					     SEQ(" ~", "", 0)));
	struct kvmig_manifest *m = parse_ok(in, sizeof(in) - 1);

	assert_string_equal(m->format.layout, "layer_major");
	assert_int_equal(m->format.order, KVMIG_ORDER_NHD);
	assert_string_equal(m->format.compat, "");
	assert_int_equal(m->meta.page_size_tokens, 4096);
	assert_int_equal(m->meta.dtype, KVMIG_DTYPE_F32);
	assert_int_equal(m->pages[1].ix, KVMIG_MAX_PAGES - 1);
	assert_string_equal(m->seqs[0].id, " ~"); /* 0x20 sorts before 'a' */
	assert_int_equal(strlen(m->seqs[1].id), KVMIG_SEQ_ID_MAX);
	assert_int_equal(m->seqs[1].fill_in_last_page, 4095);
	kvmig_manifest_free(&m);

	/* Every dtype name round-trips. */
	for (int d = KVMIG_DTYPE_BF16; d <= KVMIG_DTYPE_FP8_E4M3; d++) {
		struct kvmig_cache_meta meta;
		struct kvmig_page_format fmt;
		struct kvmig_manifest *a = NULL, *b;
		size_t len;
		char *json;

		assert_int_equal(kvmig_format_set(&fmt, "page_major", KVMIG_ORDER_NHD, NULL), 0);

		assert_int_equal(kvmig_meta_preset("tiny", &meta), 0);
		meta.dtype = (enum kvmig_dtype)d;
		assert_int_equal(kvmig_manifest_new(&meta, &fmt, &a), 0);
		json = serialize(a, &len);
		b = parse_ok(json, len);
		assert_int_equal(b->meta.dtype, d);
		free(json);
		kvmig_manifest_free(&a);
		kvmig_manifest_free(&b);
	}
}

/* Every proper prefix of a valid manifest (short of its newline) is rejected. */
static void test_truncated_prefixes(void **state)
{
	struct kvmig_manifest *m = build_sample(0), *p = NULL;
	size_t len;
	char *json = serialize(m, &len);

	for (size_t l = 0; l + 1 < len; l++) {
		/* An exact-size copy, so a read past @l is caught by ASan / valgrind. */
		char *buf = malloc(l ? l : 1);

		assert_non_null(buf);
		memcpy(buf, json, l);
		kvmig_clear_error();
		if (kvmig_manifest_parse(buf, l, &p) != -EINVAL)
			fail_msg("prefix of %zu bytes was not rejected with -EINVAL", l);
		assert_null(p);
		assert_error_has("manifest is not valid JSON (line ");
		free(buf);
	}
	/* Without the newline it is still complete. */
	p = parse_ok(json, len - 1);
	kvmig_manifest_free(&p);
	free(json);
	kvmig_manifest_free(&m);
}

static void test_too_many_seqs(void **state)
{
	static const char head[] = "{" META "," PAGES_OF() ",\"logical_seqs\":[";
	static const char one[] = "{\"id\":\"a\",\"page_ixs\":[],\"fill_in_last_page\":0},";
	const size_t n = KVMIG_MAX_SEQS + 1;
	size_t cap = sizeof(head) + n * (sizeof(one) - 1) + 8, len = 0;
	struct kvmig_manifest *m = NULL;
	char *buf = malloc(cap);

	assert_non_null(buf);
	memcpy(buf, head, sizeof(head) - 1);
	len = sizeof(head) - 1;
	for (size_t i = 0; i < n; i++) {
		memcpy(buf + len, one, sizeof(one) - 1);
		len += sizeof(one) - 1;
	}
	memcpy(buf + len - 1, "]}", 2); /* replace the last comma */
	len += 1;
	assert_int_equal(kvmig_manifest_parse(buf, len, &m), -EINVAL);
	assert_null(m);
	assert_error_has("manifest field logical_seqs: 65537 entries exceed the limit of 65536");
	free(buf);
}

/* ---- building API ---- */

static void test_find_page(void **state)
{
	struct kvmig_manifest *m = new_manifest("tiny", KVMIG_LAYOUT_PAGE_MAJOR);
	size_t len;
	char *json;

	/* Even ix 2..400, added in descending order. */
	for (uint32_t ix = 400; ix >= 2; ix -= 2)
		add_page(m, ix);
	assert_int_equal(kvmig_manifest_canonicalize(m), 0);
	assert_int_equal(m->n_pages, 200);
	for (uint32_t i = 0; i < m->n_pages; i++) {
		assert_int_equal(kvmig_manifest_find_page(m, 2 * (i + 1)), (int)i);
		assert_int_equal(kvmig_manifest_find_page(m, 2 * (i + 1) + 1), -ENOENT);
	}
	assert_int_equal(kvmig_manifest_find_page(m, 0), -ENOENT);
	assert_int_equal(kvmig_manifest_find_page(m, 1), -ENOENT);
	assert_int_equal(kvmig_manifest_find_page(m, 402), -ENOENT);
	assert_int_equal(kvmig_manifest_find_page(m, UINT32_MAX), -ENOENT);
	json = serialize(m, &len);
	free(json);
	kvmig_manifest_free(&m);

	/* One page: both neighbours miss. */
	m = new_manifest("tiny", KVMIG_LAYOUT_PAGE_MAJOR);
	add_page(m, 7);
	assert_int_equal(kvmig_manifest_find_page(m, 7), 0);
	assert_int_equal(kvmig_manifest_find_page(m, 6), -ENOENT);
	assert_int_equal(kvmig_manifest_find_page(m, 8), -ENOENT);
	kvmig_manifest_free(&m);
}

/* Growing a parsed manifest (arrays allocated by the parser, not by add_*). */
static void test_add_after_parse(void **state)
{
	static const char in[] = VALID;
	struct kvmig_manifest *m = parse_ok(in, sizeof(in) - 1);
	static const uint32_t ixs[] = { 100, 0 };
	char id[16];
	size_t len;
	char *json;

	for (uint32_t ix = 100; ix < 150; ix++)
		add_page(m, ix);
	for (int i = 0; i < 40; i++) {
		snprintf(id, sizeof(id), "more-%02d", i);
		assert_int_equal(kvmig_manifest_add_seq(m, id, ixs, 2, 1), 0);
	}
	json = serialize(m, &len);
	assert_int_equal(m->n_pages, 53);
	assert_int_equal(m->n_seqs, 42);
	assert_string_equal(m->seqs[41].id, "seq-1");
	free(json);
	kvmig_manifest_free(&m);
}

static void test_add_rejects(void **state)
{
	struct kvmig_manifest *m = new_manifest("tiny", KVMIG_LAYOUT_PAGE_MAJOR);
	static const uint32_t ok[] = { 1 }, bad[] = { 1, KVMIG_MAX_PAGES };
	char long_id[KVMIG_SEQ_ID_MAX + 2];
	struct kvmig_digest d;

	digest_of("x", 0, &d);
	assert_int_equal(kvmig_manifest_add_page(m, KVMIG_MAX_PAGES, &d, &d), -EINVAL);
	assert_error_has("16777216");
	assert_int_equal(kvmig_manifest_add_page(m, 1, NULL, &d), -EINVAL);
	assert_int_equal(m->n_pages, 0);

	assert_int_equal(kvmig_manifest_add_seq(m, "", ok, 1, 0), -EINVAL);
	assert_error_has("0 bytes");
	assert_int_equal(kvmig_manifest_add_seq(m, NULL, ok, 1, 0), -EINVAL);
	assert_int_equal(kvmig_manifest_add_seq(m, "a\x01", ok, 1, 0), -EINVAL);
	assert_error_has("0x01");
	assert_int_equal(kvmig_manifest_add_seq(m, "caf\xc3\xa9", ok, 1, 0), -EINVAL);
	assert_error_has("0xc3");
	memset(long_id, 'x', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	assert_int_equal(kvmig_manifest_add_seq(m, long_id, ok, 1, 0), -EINVAL);
	assert_error_has("129 bytes");
	long_id[KVMIG_SEQ_ID_MAX] = '\0';
	assert_int_equal(kvmig_manifest_add_seq(m, "f", ok, 1, 4), -EINVAL); /* tiny: 4 tokens */
	assert_error_has("fill_in_last_page");
	assert_int_equal(kvmig_manifest_add_seq(m, "f", NULL, 0, 1), -EINVAL);
	assert_error_has("fill_in_last_page");
	assert_int_equal(kvmig_manifest_add_seq(m, "n", NULL, 1, 0), -EINVAL);
	assert_int_equal(kvmig_manifest_add_seq(m, "r", bad, 2, 0), -EINVAL);
	assert_error_has("page_ixs[1]");
	assert_int_equal(m->n_seqs, 0);

	/* The longest id is accepted. */
	assert_int_equal(kvmig_manifest_add_seq(m, long_id, NULL, 0, 0), 0);
	assert_int_equal(m->n_seqs, 1);
	kvmig_manifest_free(&m);
}

/* Invariants that only canonicalize (and so serialize) can see. */
static void test_canonicalize_rejects(void **state)
{
	static const uint32_t ixs[] = { 1, 2, 99 };
	struct kvmig_manifest *m;
	size_t len = 0;
	char *json = NULL;

	m = new_manifest("tiny", KVMIG_LAYOUT_PAGE_MAJOR);
	add_page(m, 4);
	add_page(m, 1);
	add_page(m, 4);
	assert_int_equal(kvmig_manifest_serialize(m, &json, &len), -EINVAL);
	assert_null(json);
	assert_error_has("duplicate page ix 4");
	kvmig_manifest_free(&m);

	m = new_manifest("tiny", KVMIG_LAYOUT_PAGE_MAJOR);
	add_page(m, 1);
	add_page(m, 2);
	assert_int_equal(kvmig_manifest_add_seq(m, "s", ixs, 3, 0), 0); /* refs checked later */
	assert_int_equal(kvmig_manifest_canonicalize(m), -EINVAL);
	assert_error_has("manifest field logical_seqs[0].page_ixs[2]: page 99 is not in pages");
	add_page(m, 99);
	assert_int_equal(kvmig_manifest_canonicalize(m), 0);
	assert_int_equal(kvmig_manifest_add_seq(m, "s", ixs, 1, 0), 0);
	assert_int_equal(kvmig_manifest_canonicalize(m), -EINVAL);
	assert_error_has("duplicate sequence id \"s\"");
	kvmig_manifest_free(&m);

	m = new_manifest("tiny", KVMIG_LAYOUT_PAGE_MAJOR);
	m->meta.n_layers = 0;
	assert_int_equal(kvmig_manifest_canonicalize(m), -EINVAL);
	assert_error_has("n_layers");
	m->meta.n_layers = 2;
	m->format.order = (enum kvmig_kv_order)7;
	assert_int_equal(kvmig_manifest_canonicalize(m), -EINVAL);
	assert_error_has("order 7");
	m->format.order = KVMIG_ORDER_NHD;
	m->format.layout[0] = ' ';
	assert_int_equal(kvmig_manifest_canonicalize(m), -EINVAL);
	assert_error_has("layout name");
	kvmig_manifest_free(&m);
}

/* An engine's format (any layout name, HND, a compatibility string) round-trips;
 * the defaults are left out of the JSON. */
static void test_format_round_trip(void **state)
{
	struct kvmig_cache_meta meta;
	struct kvmig_page_format fmt;
	struct kvmig_manifest *a = NULL, *b;
	size_t len;
	char *json;

	(void)state;
	assert_int_equal(kvmig_meta_preset("tiny", &meta), 0);
	assert_int_equal(kvmig_format_set(&fmt, "vllm", KVMIG_ORDER_HND, "llama-3 \"8b\" v1"), 0);
	assert_int_equal(kvmig_manifest_new(&meta, &fmt, &a), 0);
	json = serialize(a, &len);
	assert_non_null(strstr(json, "\"order\":\"HND\""));
	assert_non_null(strstr(json, "\"compat\":\"llama-3 \\\"8b\\\" v1\""));
	b = parse_ok(json, len);
	assert_string_equal(b->format.layout, "vllm");
	assert_int_equal(b->format.order, KVMIG_ORDER_HND);
	assert_string_equal(b->format.compat, "llama-3 \"8b\" v1");
	free(json);
	kvmig_manifest_free(&b);
	kvmig_manifest_free(&a);

	assert_int_equal(kvmig_format_set(&fmt, "page_major", KVMIG_ORDER_NHD, ""), 0);
	assert_int_equal(kvmig_manifest_new(&meta, &fmt, &a), 0);
	json = serialize(a, &len);
	assert_null(strstr(json, "order"));
	assert_null(strstr(json, "compat"));
	free(json);
	kvmig_manifest_free(&a);

	/* kvmig_format_set refuses what the manifest could not carry. */
	assert_int_equal(kvmig_format_set(&fmt, "", KVMIG_ORDER_NHD, NULL), -EINVAL);
	assert_int_equal(kvmig_format_set(&fmt, "a/b", KVMIG_ORDER_NHD, NULL), -EINVAL);
	assert_error_has("byte 1 (0x2f)");
	assert_int_equal(kvmig_format_set(&fmt, "x", KVMIG_ORDER_NHD, "\x7f"), -EINVAL);
	assert_int_equal(kvmig_format_set(&fmt, "x", (enum kvmig_kv_order)2, NULL), -EINVAL);
	assert_int_equal(kvmig_format_set(&fmt, "x", KVMIG_ORDER_NHD,
					  "0123456789012345678901234567890123456789012345678901234567890123"),
			 -EINVAL);
	assert_error_has("at most 63");
}

static void test_free_null_and_seq_list(void **state)
{
	struct kvmig_manifest *m = NULL;
	struct kvmig_seq_list list = { 0 };

	kvmig_manifest_free(NULL);
	kvmig_manifest_free(&m);
	kvmig_seq_list_free(NULL);
	kvmig_seq_list_free(&list);

	list.n = 2;
	list.seqs = calloc(2, sizeof(*list.seqs));
	assert_non_null(list.seqs);
	list.seqs[0].id = strdup("x");
	list.seqs[0].page_ixs = calloc(3, sizeof(uint32_t));
	list.seqs[0].n_pages = 3;
	list.seqs[1].id = strdup("y"); /* no page table */
	kvmig_seq_list_free(&list);
	assert_null(list.seqs);
	assert_int_equal(list.n, 0);
	kvmig_seq_list_free(&list); /* twice is fine */
}

/* ---- malformed input: one test each ---- */

struct bad_case {
	const char *name;
	const char *json;
	const char *want;  /* substring of the message (names the field) */
	const char *want2; /* a second substring, or NULL */
};

static const struct bad_case bad_cases[] = {
	/* layout and dtype */
	{ "bad_layout_empty",
	  DOC(META_F("\"\"", "16", "32", "8", "128", "\"bf16\""), PAGES, SEQS),
	  "layout name of 0 bytes", NULL },
	{ "bad_layout_space",
	  DOC(META_F("\"page major\"", "16", "32", "8", "128", "\"bf16\""), PAGES, SEQS),
	  "layout name: byte 4 (0x20)", NULL },
	{ "bad_layout_too_long",
	  DOC(META_F("\"abcdefghijklmnopqrstuvwxyz012345\"", "16", "32", "8", "128", "\"bf16\""),
	      PAGES, SEQS),
	  "is not a layout name", NULL },
	{ "bad_layout_nul",
	  DOC(META_F("\"page\\u0000major\"", "16", "32", "8", "128", "\"bf16\""), PAGES, SEQS),
	  "not allowed", NULL },
	{ "bad_order_unknown",
	  "{\"order\":\"NDH\"," META
	  ",\"pages\":[],\"logical_seqs\":[]}",
	  "manifest field order: unknown order \"NDH\"", NULL },
	{ "bad_order_lowercase",
	  "{\"order\":\"hnd\"," META
	  ",\"pages\":[],\"logical_seqs\":[]}",
	  "manifest field order", NULL },
	{ "bad_compat_control",
	  "{\"compat\":\"a\\tb\"," META
	  ",\"pages\":[],\"logical_seqs\":[]}",
	  "compatibility string: byte 1 (0x09)", NULL },
	{ "bad_compat_not_string",
	  "{\"compat\":1," META
	  ",\"pages\":[],\"logical_seqs\":[]}",
	  "manifest field compat: expected a string", NULL },
	{ "bad_layout_not_string",
	  DOC(META_F("0", "16", "32", "8", "128", "\"bf16\""), PAGES, SEQS),
	  "manifest field layout: expected a string", NULL },
	{ "bad_dtype_unknown",
	  DOC(META_F("\"page_major\"", "16", "32", "8", "128", "\"bf8\""), PAGES, SEQS),
	  "manifest field dtype: unknown dtype \"bf8\"", NULL },
	{ "bad_dtype_control_byte",
	  DOC(META_F("\"page_major\"", "16", "32", "8", "128", "\"bf\\u001b[16\""), PAGES, SEQS),
	  "manifest field dtype", "\\x1b" },
	/* wrong types */
	{ "bad_type_string_for_int",
	  DOC(META_F("\"page_major\"", "16", "\"32\"", "8", "128", "\"bf16\""), PAGES, SEQS),
	  "manifest field n_layers: expected an integer, got a string", NULL },
	{ "bad_type_real_for_int",
	  DOC(META_F("\"page_major\"", "16", "32", "8.0", "128", "\"bf16\""), PAGES, SEQS),
	  "manifest field n_heads: expected an integer, got a real number", NULL },
	{ "bad_type_exponent_for_int",
	  DOC(META_F("\"page_major\"", "1e1", "32", "8", "128", "\"bf16\""), PAGES, SEQS),
	  "manifest field page_size_tokens: expected an integer", NULL },
	{ "bad_type_bool_for_int",
	  DOC(META_F("\"page_major\"", "16", "32", "8", "true", "\"bf16\""), PAGES, SEQS),
	  "manifest field head_dim: expected an integer, got true", NULL },
	{ "bad_type_null_for_int",
	  DOC(META_F("\"page_major\"", "null", "32", "8", "128", "\"bf16\""), PAGES, SEQS),
	  "manifest field page_size_tokens: expected an integer, got null", NULL },
	{ "bad_type_object_for_pages", DOC(META, "\"pages\":{}", SEQS),
	  "manifest field pages: expected an array, got an object", NULL },
	{ "bad_type_object_for_seqs", DOC(META, PAGES, "\"logical_seqs\":{}"),
	  "manifest field logical_seqs: expected an array, got an object", NULL },
	{ "bad_type_page_not_object", DOC(META, PAGES_OF(PG(0) ",[1]"), SEQS_OF()),
	  "manifest field pages[1]: expected an object, got an array", NULL },
	{ "bad_type_seq_not_object", DOC(META, PAGES, SEQS_OF("\"seq-0\"")),
	  "manifest field logical_seqs[0]: expected an object, got a string", NULL },
	{ "bad_type_ix_real", DOC(META, PAGES_OF(PG(0) "," PGX("1.5", DA, DB)), SEQS_OF()),
	  "manifest field pages[1].ix: expected an integer", NULL },
	{ "bad_type_ix_string", DOC(META, PAGES_OF(PGX("\"0\"", DA, DB)), SEQS_OF()),
	  "manifest field pages[0].ix: expected an integer", NULL },
	{ "bad_type_digest_not_string", DOC(META, PAGES_OF(PGX("0", DA, "7")), SEQS_OF()),
	  "manifest field pages[0].v: expected a string, got an integer", NULL },
	{ "bad_type_page_ixs_string",
	  DOC(META, PAGES, SEQS_OF(SEQX("\"s\"", "\"0,1\"", "0"))),
	  "manifest field logical_seqs[0].page_ixs: expected an array, got a string", NULL },
	{ "bad_type_page_ixs_object", DOC(META, PAGES, SEQS_OF(SEQX("\"s\"", "{}", "0"))),
	  "manifest field logical_seqs[0].page_ixs: expected an array", NULL },
	{ "bad_type_page_ix_entry_string",
	  DOC(META, PAGES, SEQS_OF(SEQX("\"s\"", "[0,\"1\"]", "0"))),
	  "manifest field logical_seqs[0].page_ixs[1]: expected an integer", NULL },
	{ "bad_type_fill_string", DOC(META, PAGES, SEQS_OF(SEQX("\"s\"", "[0]", "\"3\""))),
	  "manifest field logical_seqs[0].fill_in_last_page: expected an integer", NULL },
	{ "bad_type_fill_real", DOC(META, PAGES, SEQS_OF(SEQX("\"s\"", "[0]", "3.0"))),
	  "manifest field logical_seqs[0].fill_in_last_page: expected an integer", NULL },
	{ "bad_type_id_integer", DOC(META, PAGES, SEQS_OF(SEQX("5", "[0]", "0"))),
	  "manifest field logical_seqs[0].id: expected a string", NULL },
	/* negative and out-of-range numbers */
	{ "bad_negative_page_size",
	  DOC(META_F("\"page_major\"", "-16", "32", "8", "128", "\"bf16\""), PAGES, SEQS),
	  "manifest field page_size_tokens: -16 is out of range", NULL },
	{ "bad_negative_ix", DOC(META, PAGES_OF(PG(-1)), SEQS_OF()),
	  "manifest field pages[0].ix: -1 is out of range", NULL },
	{ "bad_negative_page_ix_entry", DOC(META, PAGES, SEQS_OF(SEQ("s", "0,-2", 0))),
	  "manifest field logical_seqs[0].page_ixs[1]: -2 is out of range", NULL },
	{ "bad_negative_fill", DOC(META, PAGES, SEQS_OF(SEQ("s", "0", -1))),
	  "manifest field logical_seqs[0].fill_in_last_page: -1 is out of range", NULL },
	{ "bad_n_layers_zero",
	  DOC(META_F("\"page_major\"", "16", "0", "8", "128", "\"bf16\""), PAGES, SEQS),
	  "manifest field n_layers: 0 is out of range (1 to 1024)", NULL },
	{ "bad_n_layers_100000",
	  DOC(META_F("\"page_major\"", "16", "100000", "8", "128", "\"bf16\""), PAGES, SEQS),
	  "manifest field n_layers: 100000 is out of range (1 to 1024)", NULL },
	{ "bad_n_heads_above_u32",
	  DOC(META_F("\"page_major\"", "16", "32", "4294967304", "128", "\"bf16\""), PAGES, SEQS),
	  "manifest field n_heads: 4294967304 is out of range", NULL },
	{ "bad_head_dim_4097",
	  DOC(META_F("\"page_major\"", "16", "32", "8", "4097", "\"bf16\""), PAGES, SEQS),
	  "manifest field head_dim: 4097 is out of range", NULL },
	{ "bad_page_size_4097",
	  DOC(META_F("\"page_major\"", "4097", "32", "8", "128", "\"bf16\""), PAGES, SEQS),
	  "manifest field page_size_tokens: 4097 is out of range", NULL },
	{ "bad_ix_max_pages", DOC(META, PAGES_OF(PG(0) "," PG(1) "," PG(16777216)), SEQS_OF()),
	  "manifest field pages[2].ix: 16777216 is out of range (0 to 16777215)", NULL },
	{ "bad_page_ix_entry_max_pages",
	  DOC(META, PAGES, SEQS_OF(SEQ("a", "0", 0) "," SEQ("b", "16777216", 0))),
	  "manifest field logical_seqs[1].page_ixs[0]: 16777216 is out of range", NULL },
	{ "bad_integer_too_big_for_json",
	  DOC(META_F("\"page_major\"", "16", "99999999999999999999", "8", "128", "\"bf16\""),
	      PAGES, SEQS),
	  "manifest is not valid JSON", NULL },
	/* digests */
	{ "bad_digest_31_hex",
	  DOC(META, PAGES_OF(PGX("0", "\"xxh128:0112233445566778899aabbccddeeff\"", DB)),
	      SEQS_OF()),
	  "manifest field pages[0].k: digest is not 32 hex digits after \"xxh128:\"", NULL },
	{ "bad_digest_33_hex",
	  DOC(META, PAGES_OF(PGX("0", DA, "\"xxh128:" HB "0\"")), SEQS_OF()),
	  "manifest field pages[0].v: digest is not 32 hex digits", NULL },
	{ "bad_digest_uppercase",
	  DOC(META, PAGES_OF(PG(0) "," PGX("1", DA, "\"xxh128:FFEEDDCCBBAA99887766554433221100\"")),
	      SEQS_OF()),
	  "manifest field pages[1].v: digest has a character that is not lowercase hex", NULL },
	{ "bad_digest_wrong_prefix",
	  DOC(META, PAGES_OF(PG(0) "," PG(1) "," PGX("2", "\"xxh64:" HA "\"", DB)), SEQS_OF()),
	  "manifest field pages[2].k: digest does not start with \"xxh128:\"", NULL },
	{ "bad_digest_uppercase_prefix",
	  DOC(META, PAGES_OF(PGX("0", "\"XXH128:" HA "\"", DB)), SEQS_OF()),
	  "manifest field pages[0].k: digest does not start", NULL },
	{ "bad_digest_no_prefix", DOC(META, PAGES_OF(PGX("0", "\"" HA "\"", DB)), SEQS_OF()),
	  "manifest field pages[0].k", NULL },
	{ "bad_digest_empty", DOC(META, PAGES_OF(PGX("0", DA, "\"\"")), SEQS_OF()),
	  "manifest field pages[0].v", NULL },
	/* references and invariants */
	{ "bad_duplicate_ix", DOC(META, PAGES_OF(PG(0) "," PG(7) "," PG(2) "," PG(3) "," PG(7)),
				  SEQS_OF()),
	  "manifest field pages[4].ix: duplicate page ix 7", NULL },
	{ "bad_missing_page_ref",
	  DOC(META, PAGES, SEQS_OF(SEQ("seq-0", "0,1", 3) "," SEQ("seq-1", "0,2,99", 0))),
	  "manifest field logical_seqs[1].page_ixs[2]: page 99 is not in pages", NULL },
	{ "bad_fill_equals_page_size", DOC(META, PAGES, SEQS_OF(SEQ("s", "0", 16))),
	  "manifest field logical_seqs[0].fill_in_last_page: 16 is not below page_size_tokens (16)",
	  NULL },
	{ "bad_fill_huge", DOC(META, PAGES, SEQS_OF(SEQ("s", "0", 4294967296))),
	  "manifest field logical_seqs[0].fill_in_last_page: 4294967296 is out of range", NULL },
	{ "bad_fill_without_pages", DOC(META, PAGES, SEQS_OF(SEQ("s", "", 1))),
	  "manifest field logical_seqs[0].fill_in_last_page: 1, but the sequence has no pages",
	  NULL },
	{ "bad_duplicate_seq_id",
	  DOC(META, PAGES, SEQS_OF(SEQ("seq-0", "0", 0) "," SEQ("seq-0", "1", 0))),
	  "manifest field logical_seqs[1].id: duplicate sequence id \"seq-0\"", NULL },
	{ "bad_duplicate_seq_id_apart",
	  DOC(META, PAGES,
	      SEQS_OF(SEQ("b", "0", 0) "," SEQ("a", "1", 0) "," SEQ("c", "2", 0) ","
		      SEQ("b", "", 0))),
	  "manifest field logical_seqs[3].id: duplicate sequence id \"b\"", NULL },
	/* sequence ids */
	{ "bad_id_empty", DOC(META, PAGES, SEQS_OF(SEQ("", "0", 0))),
	  "manifest field logical_seqs[0].id: sequence id is 0 bytes", NULL },
	{ "bad_id_control_byte",
	  DOC(META, PAGES, SEQS_OF(SEQ("ok", "0", 0) "," SEQ("a\\u0001b", "0", 0))),
	  "manifest field logical_seqs[1].id: byte 1 of the sequence id is 0x01", NULL },
	{ "bad_id_tab", DOC(META, PAGES, SEQS_OF(SEQ("a\\tb", "0", 0))),
	  "manifest field logical_seqs[0].id: byte 1 of the sequence id is 0x09", NULL },
	{ "bad_id_del", DOC(META, PAGES, SEQS_OF(SEQ("\\u007f", "0", 0))),
	  "manifest field logical_seqs[0].id", "0x7f" },
	{ "bad_id_non_ascii", DOC(META, PAGES, SEQS_OF(SEQ("caf\\u00e9", "0", 0))),
	  "manifest field logical_seqs[0].id: byte 3 of the sequence id is 0xc3", NULL },
	{ "bad_id_too_long", DOC(META, PAGES, SEQS_OF(SEQ(X128 "a", "0", 0))),
	  "manifest field logical_seqs[0].id: sequence id is 129 bytes", NULL },
	{ "bad_id_nul", DOC(META, PAGES, SEQS_OF(SEQ("a\\u0000b", "0", 0))),
	  "manifest is not valid JSON", NULL },
	{ "bad_id_reserved_prefix", DOC(META, PAGES, SEQS_OF(SEQ("?seq-1", "0", 0))),
	  "manifest field logical_seqs[0].id: sequence id \"?seq-1\" begins with '?', which "
	  "kvmig reserves", NULL },
	/* duplicate keys */
	{ "bad_duplicate_key_top", "{" META ",\"n_heads\":8," PAGES "," SEQS "}",
	  "manifest is not valid JSON (line 1, column ", "duplicate object key" },
	{ "bad_duplicate_key_page",
	  DOC(META, PAGES_OF("{\"ix\":0,\"ix\":0,\"k\":" DA ",\"v\":" DB "}"), SEQS_OF()),
	  "manifest is not valid JSON", "duplicate object key" },
	{ "bad_duplicate_key_seq",
	  DOC(META, PAGES,
	      SEQS_OF("{\"id\":\"a\",\"id\":\"b\",\"page_ixs\":[],\"fill_in_last_page\":0}")),
	  "manifest is not valid JSON", "duplicate object key" },
	/* unknown fields */
	{ "bad_unknown_field_top", "{" META "," PAGES "," SEQS ",\"extra\":1}",
	  "manifest: unknown field \"extra\"", NULL },
	{ "bad_unknown_field_version", "{\"version\":1," META "," PAGES "," SEQS "}",
	  "manifest: unknown field \"version\"", NULL },
	{ "bad_unknown_field_control", "{" META "," PAGES "," SEQS ",\"\\u0001x\\\"\":1}",
	  "manifest: unknown field \"\\x01x\\\"\"", NULL },
	{ "bad_unknown_field_page",
	  DOC(META, PAGES_OF(PG(0) ",{\"ix\":1,\"k\":" DA ",\"v\":" DB ",\"w\":" DB "}"),
	      SEQS_OF()),
	  "manifest field pages[1]: unknown field \"w\"", NULL },
	{ "bad_unknown_field_seq",
	  DOC(META, PAGES,
	      SEQS_OF("{\"id\":\"a\",\"page_ixs\":[],\"fill_in_last_page\":0,\"fill\":0}")),
	  "manifest field logical_seqs[0]: unknown field \"fill\"", NULL },
	/* missing fields */
	{ "bad_missing_dtype",
	  "{\"layout\":\"page_major\",\"page_size_tokens\":16,\"n_layers\":32,\"n_heads\":8,"
	  "\"head_dim\":128," PAGES "," SEQS "}",
	  "manifest field dtype: missing", NULL },
	{ "bad_missing_layout",
	  "{\"page_size_tokens\":16,\"n_layers\":32,\"n_heads\":8,\"head_dim\":128,"
	  "\"dtype\":\"bf16\"," PAGES "," SEQS "}",
	  "manifest field layout: missing", NULL },
	{ "bad_missing_pages", "{" META "," SEQS_OF() "}", "manifest field pages: missing", NULL },
	{ "bad_missing_seqs", "{" META "," PAGES "}", "manifest field logical_seqs: missing",
	  NULL },
	{ "bad_missing_page_v", DOC(META, PAGES_OF("{\"ix\":0,\"k\":" DA "}"), SEQS_OF()),
	  "manifest field pages[0].v: missing", NULL },
	{ "bad_missing_page_ix",
	  DOC(META, PAGES_OF(PG(0) ",{\"k\":" DA ",\"v\":" DB "}"), SEQS_OF()),
	  "manifest field pages[1].ix: missing", NULL },
	{ "bad_missing_seq_fill", DOC(META, PAGES, SEQS_OF("{\"id\":\"a\",\"page_ixs\":[]}")),
	  "manifest field logical_seqs[0].fill_in_last_page: missing", NULL },
	{ "bad_missing_seq_id",
	  DOC(META, PAGES, SEQS_OF("{\"page_ixs\":[],\"fill_in_last_page\":0}")),
	  "manifest field logical_seqs[0].id: missing", NULL },
	/* not an object / not JSON */
	{ "bad_not_object_array", "[]", "manifest is not a JSON object (it is an array)", NULL },
	{ "bad_not_object_string", "\"manifest\"", "manifest is not a JSON object (it is a string)",
	  NULL },
	{ "bad_not_object_number", "42", "manifest is not a JSON object", NULL },
	{ "bad_not_object_null", "null", "manifest is not a JSON object (it is null)", NULL },
	{ "bad_json_empty", "", "manifest is not valid JSON (line ", NULL },
	{ "bad_json_whitespace", " \n", "manifest is not valid JSON", NULL },
	{ "bad_json_trailing_garbage", VALID "x", "manifest is not valid JSON", NULL },
	{ "bad_json_two_objects", VALID VALID, "manifest is not valid JSON", NULL },
	{ "bad_json_single_quotes", "{'layout':'page_major'}", "manifest is not valid JSON", NULL },
	{ "bad_json_trailing_comma", DOC(META, PAGES, SEQS_OF(SEQ("a", "0", 0) ",")),
	  "manifest is not valid JSON", NULL },
};

static void test_bad_case(void **state)
{
	const struct bad_case *c = *state;
	struct kvmig_manifest *m = NULL;
	const char *msg;
	int ret;

	kvmig_clear_error();
	ret = kvmig_manifest_parse(c->json, strlen(c->json), &m);
	if (ret != -EINVAL)
		fail_msg("%s: parse returned %d (%s), want -EINVAL", c->name, ret,
			 kvmig_last_error());
	assert_null(m);
	msg = kvmig_last_error();
	/* One sentence: non-empty, one line. */
	assert_true(msg[0] != '\0');
	assert_null(strchr(msg, '\n'));
	assert_error_has(c->want);
	assert_error_has(c->want2);
}

/* The fixture every bad case mutates is itself valid. */
static void test_fixture_valid(void **state)
{
	static const char in[] = VALID;
	struct kvmig_manifest *m = parse_ok(in, sizeof(in) - 1);
	size_t len;
	char *json = serialize(m, &len);

	assert_int_equal(len, sizeof(in));
	assert_memory_equal(json, in, sizeof(in) - 1);
	free(json);
	kvmig_manifest_free(&m);
}

static const struct CMUnitTest fixed_tests[] = {
	cmocka_unit_test(test_fixture_valid),
	cmocka_unit_test(test_roundtrip),
	cmocka_unit_test(test_insertion_order_invariance),
	cmocka_unit_test(test_golden),
	cmocka_unit_test(test_golden_empty),
	cmocka_unit_test(test_parse_limits_accepted),
	cmocka_unit_test(test_truncated_prefixes),
	cmocka_unit_test(test_too_many_seqs),
	cmocka_unit_test(test_find_page),
	cmocka_unit_test(test_add_after_parse),
	cmocka_unit_test(test_add_rejects),
	cmocka_unit_test(test_canonicalize_rejects),
	cmocka_unit_test(test_format_round_trip),
	cmocka_unit_test(test_free_null_and_seq_list),
};

int main(void)
{
	struct CMUnitTest tests[KVMIG_ARRAY_SIZE(fixed_tests) + KVMIG_ARRAY_SIZE(bad_cases)];
	size_t n = 0;

	for (size_t i = 0; i < KVMIG_ARRAY_SIZE(fixed_tests); i++)
		tests[n++] = fixed_tests[i];
	/* One named test per malformed input, so a failure says which. */
	for (size_t i = 0; i < KVMIG_ARRAY_SIZE(bad_cases); i++)
		tests[n++] = (struct CMUnitTest){ .name = bad_cases[i].name,
						  .test_func = test_bad_case,
						  .initial_state = (void *)&bad_cases[i] };
	return cmocka_run_group_tests_name("manifest", tests, NULL, NULL);
}
