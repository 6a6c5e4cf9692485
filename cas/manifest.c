/* SPDX-License-Identifier: MIT */
/*
 * cas/manifest.c - the page manifest: building, canonical form, canonical
 * JSON and the strict parser.
 *
 * The canonical JSON is written by hand rather than through json_dumps: the
 * only strings it holds are fixed names, digests and printable-ASCII ids, so
 * the bytes depend on nothing but the manifest (not on a jansson version),
 * and a manifest of millions of pages needs no JSON tree in memory.
 *
 * Array capacity: struct kvmig_manifest has no capacity fields, so the
 * capacity of pages[] and seqs[] is implied by the count (array_cap()). Every
 * function here that allocates those arrays allocates at least
 * array_cap(count) entries; code elsewhere must grow them only through
 * kvmig_manifest_add_page / add_seq.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <kvmig/cas.h>

#include "util/internal.h"

#define ARRAY_MIN_CAP 8u
/* Longest field path: "logical_seqs[65535].page_ixs[16777215]" and friends. */
#define PATH_MAX_LEN 96

/* ---- helpers ---- */

/* Capacity implied by @n entries: 0, or the next power of two >= max(n, 8). */
static uint32_t array_cap(uint32_t n)
{
	uint32_t cap = ARRAY_MIN_CAP;

	if (n == 0)
		return 0;
	while (cap < n)
		cap <<= 1;
	return cap;
}

/* Make room for one more entry after @n; *arr is reallocated when full. */
static int array_grow(void **arr, uint32_t n, size_t elem)
{
	uint32_t cap = array_cap(n), new_cap = array_cap(n + 1);
	void *p;

	if (*arr && n < cap)
		return 0;
	/* new_cap <= 2^31 and elem is a small struct: no size_t overflow on 64-bit. */
	if ((size_t)new_cap > SIZE_MAX / elem)
		return kvmig_err(-ENOMEM, "manifest: array of %u entries is too large", new_cap);
	p = realloc(*arr, (size_t)new_cap * elem);
	if (!p)
		return kvmig_err(-ENOMEM, "manifest: out of memory growing an array to %u entries",
				 new_cap);
	*arr = p;
	return 0;
}

/*
 * Copy @len bytes of @src into @dst (size @size) as a quotable snippet:
 * printable ASCII kept (with " and \ escaped), other bytes as \xNN, long
 * text cut with "...". Keeps messages one readable line whatever the input.
 */
static void snippet(char *dst, size_t size, const char *src, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];
		char tmp[5];
		size_t n;

		if (c == '"' || c == '\\') {
			tmp[0] = '\\';
			tmp[1] = (char)c;
			n = 2;
		} else if (c >= 0x20 && c <= 0x7e) {
			tmp[0] = (char)c;
			n = 1;
		} else {
			snprintf(tmp, sizeof(tmp), "\\x%02x", c);
			n = 4;
		}
		if (o + n + 4 > size) { /* room for "..." and NUL */
			memcpy(dst + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(dst + o, tmp, n);
		o += n;
	}
	dst[o] = '\0';
}

static const char *json_kind(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
		return "an integer";
	case JSON_REAL:
		return "a real number";
	case JSON_TRUE:
		return "true";
	case JSON_FALSE:
		return "false";
	case JSON_NULL:
		return "null";
	}
	return "an unknown JSON value";
}

/* Sequence ids: 1..KVMIG_SEQ_ID_MAX bytes of printable ASCII, not beginning
 * with the prefix kvmig reserves (no pager installs such an id). */
static int check_seq_id(const char *path, const char *id, size_t len)
{
	if (!id)
		return kvmig_err(-EINVAL, "manifest field %s: sequence id is missing", path);
	if (len && id[0] == KVMIG_SEQ_RESERVED_PREFIX)
		return kvmig_err(-EINVAL, "manifest field %s: sequence id \"%.*s\" begins with "
				 "'%c', which kvmig reserves", path, (int)KVMIG_MIN(len, 64), id,
				 KVMIG_SEQ_RESERVED_PREFIX);
	if (len == 0 || len > KVMIG_SEQ_ID_MAX)
		return kvmig_err(-EINVAL,
				 "manifest field %s: sequence id is %zu bytes; it must be 1 to %u",
				 path, len, KVMIG_SEQ_ID_MAX);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)id[i];

		if (c < 0x20 || c > 0x7e)
			return kvmig_err(-EINVAL, "manifest field %s: byte %zu of the "
						  "sequence id is 0x%02x, not printable ASCII",
					 path, i, c);
	}
	return 0;
}

/* Checks of one sequence that need no other part of the manifest. */
static int check_seq_shape(const char *path, uint32_t n_pages, uint32_t fill,
			   uint32_t page_size_tokens)
{
	if (n_pages > KVMIG_MAX_PAGES)
		return kvmig_err(-EINVAL,
				 "manifest field %s.page_ixs: %u pages exceed the limit of %u",
				 path, n_pages, KVMIG_MAX_PAGES);
	if (fill >= page_size_tokens)
		return kvmig_err(-EINVAL,
				 "manifest field %s.fill_in_last_page: %u is not below "
				 "page_size_tokens (%u)",
				 path, fill, page_size_tokens);
	if (n_pages == 0 && fill != 0)
		return kvmig_err(-EINVAL,
				 "manifest field %s.fill_in_last_page: %u, but the sequence has no "
				 "pages (it must be 0)",
				 path, fill);
	return 0;
}

static int page_cmp(const void *a, const void *b)
{
	const struct kvmig_manifest_page *x = a, *y = b;

	return (x->ix > y->ix) - (x->ix < y->ix);
}

static int seq_cmp(const void *a, const void *b)
{
	const struct kvmig_seq *x = a, *y = b;

	return strcmp(x->id, y->id);
}

/* Sort pages by ix. Return: the sorted index of a repeated ix, or -1. */
static int64_t sort_pages(struct kvmig_manifest *m)
{
	if (m->n_pages > 1)
		qsort(m->pages, m->n_pages, sizeof(*m->pages), page_cmp);
	for (uint32_t i = 1; i < m->n_pages; i++)
		if (m->pages[i].ix == m->pages[i - 1].ix)
			return i;
	return -1;
}

/* Sort sequences by id (bytewise). Return: the sorted index of a repeated id, or -1. */
static int64_t sort_seqs(struct kvmig_manifest *m)
{
	if (m->n_seqs > 1)
		qsort(m->seqs, m->n_seqs, sizeof(*m->seqs), seq_cmp);
	for (uint32_t i = 1; i < m->n_seqs; i++)
		if (strcmp(m->seqs[i].id, m->seqs[i - 1].id) == 0)
			return i;
	return -1;
}

/* ---- building ---- */

void kvmig_manifest_free(struct kvmig_manifest **m)
{
	if (!m || !*m)
		return;
	free((*m)->pages);
	kvmig_seq_list_free(&(struct kvmig_seq_list){ (*m)->seqs, (*m)->n_seqs });
	free(*m);
	*m = NULL;
}

int kvmig_manifest_new(const struct kvmig_cache_meta *meta, const struct kvmig_page_format *fmt,
		       struct kvmig_manifest **ret)
{
	struct kvmig_manifest *m;
	int err;

	if (!meta || !fmt || !ret)
		return kvmig_err(-EINVAL, "manifest: meta, format and ret must not be NULL");
	if ((err = kvmig_format_check(fmt)) < 0)
		return kvmig_err_prefix(err, "manifest");
	m = calloc(1, sizeof(*m));
	if (!m)
		return kvmig_err(-ENOMEM, "manifest: out of memory");
	m->meta = *meta;
	m->format = *fmt;
	*ret = m;
	return 0;
}

int kvmig_manifest_add_page(struct kvmig_manifest *m, uint32_t ix, const struct kvmig_digest *k,
			    const struct kvmig_digest *v)
{
	int ret;

	if (!m || !k || !v)
		return kvmig_err(-EINVAL, "manifest: add_page needs a manifest and both digests");
	if (ix >= KVMIG_MAX_PAGES)
		return kvmig_err(-EINVAL, "manifest: page ix %u is out of range (0 to %u)", ix,
				 KVMIG_MAX_PAGES - 1);
	if (m->n_pages >= KVMIG_MAX_PAGES)
		return kvmig_err(-EINVAL, "manifest: already %u pages, the limit", m->n_pages);
	/* Copied first: @k and @v may point into m->pages, which may move. */
	struct kvmig_manifest_page pg = { .ix = ix, .k = *k, .v = *v };

	ret = array_grow((void **)&m->pages, m->n_pages, sizeof(*m->pages));
	if (ret)
		return ret;
	m->pages[m->n_pages++] = pg;
	return 0;
}

int kvmig_manifest_add_seq(struct kvmig_manifest *m, const char *id, const uint32_t *page_ixs,
			   uint32_t n_pages, uint32_t fill_in_last_page)
{
	char path[PATH_MAX_LEN];
	struct kvmig_seq s = { 0 };
	int ret;

	if (!m)
		return kvmig_err(-EINVAL, "manifest: add_seq needs a manifest");
	snprintf(path, sizeof(path), "logical_seqs[%u]", m->n_seqs);
	if (m->n_seqs >= KVMIG_MAX_SEQS)
		return kvmig_err(-EINVAL, "manifest: already %u sequences, the limit", m->n_seqs);
	ret = check_seq_id(path, id, id ? strlen(id) : 0);
	if (ret)
		return ret;
	if (n_pages && !page_ixs)
		return kvmig_err(-EINVAL, "manifest field %s.page_ixs: NULL with %u pages", path,
				 n_pages);
	ret = check_seq_shape(path, n_pages, fill_in_last_page, m->meta.page_size_tokens);
	if (ret)
		return ret;
	for (uint32_t i = 0; i < n_pages; i++)
		if (page_ixs[i] >= KVMIG_MAX_PAGES)
			return kvmig_err(-EINVAL,
					 "manifest field %s.page_ixs[%u]: page %u is out of range "
					 "(0 to %u)",
					 path, i, page_ixs[i], KVMIG_MAX_PAGES - 1);

	ret = array_grow((void **)&m->seqs, m->n_seqs, sizeof(*m->seqs));
	if (ret)
		return ret;
	s.id = strdup(id);
	if (!s.id)
		return kvmig_err(-ENOMEM, "manifest: out of memory copying sequence id");
	if (n_pages) {
		s.page_ixs = malloc((size_t)n_pages * sizeof(*s.page_ixs));
		if (!s.page_ixs) {
			free(s.id);
			return kvmig_err(-ENOMEM, "manifest: out of memory copying %u page indices",
					 n_pages);
		}
		memcpy(s.page_ixs, page_ixs, (size_t)n_pages * sizeof(*s.page_ixs));
	}
	s.n_pages = n_pages;
	s.fill_in_last_page = fill_in_last_page;
	m->seqs[m->n_seqs++] = s;
	return 0;
}

int kvmig_manifest_find_page(const struct kvmig_manifest *m, uint32_t ix)
{
	uint32_t lo = 0, hi;

	if (!m)
		return -EINVAL;
	hi = m->n_pages;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (m->pages[mid].ix == ix)
			return (int)mid;
		if (m->pages[mid].ix < ix)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -ENOENT;
}

/* Every page a sequence names is in pages[] (which must be sorted). */
static int check_seq_refs(const struct kvmig_manifest *m, const char *path,
			  const struct kvmig_seq *s)
{
	for (uint32_t j = 0; j < s->n_pages; j++)
		if (kvmig_manifest_find_page(m, s->page_ixs[j]) < 0)
			return kvmig_err(-EINVAL,
					 "manifest field %s.page_ixs[%u]: page %u is not in pages",
					 path, j, s->page_ixs[j]);
	return 0;
}

static int check_meta(const struct kvmig_manifest *m)
{
	uint64_t half;
	int ret;

	if ((ret = kvmig_format_check(&m->format)) < 0)
		return kvmig_err_prefix(ret, "manifest");
	ret = kvmig_meta_half_bytes(&m->meta, &half);
	if (ret)
		return kvmig_err_prefix(ret == -EOVERFLOW ? -EINVAL : ret, "manifest");
	return 0;
}

int kvmig_manifest_canonicalize(struct kvmig_manifest *m)
{
	char path[PATH_MAX_LEN];
	int64_t dup;
	int ret;

	if (!m)
		return kvmig_err(-EINVAL, "manifest: NULL manifest");
	ret = check_meta(m);
	if (ret)
		return ret;
	if (m->n_pages > KVMIG_MAX_PAGES)
		return kvmig_err(-EINVAL, "manifest field pages: %u pages exceed the limit of %u",
				 m->n_pages, KVMIG_MAX_PAGES);
	if (m->n_seqs > KVMIG_MAX_SEQS)
		return kvmig_err(-EINVAL,
				 "manifest field logical_seqs: %u sequences exceed the limit of %u",
				 m->n_seqs, KVMIG_MAX_SEQS);
	if ((m->n_pages && !m->pages) || (m->n_seqs && !m->seqs))
		return kvmig_err(-EINVAL, "manifest: a non-empty array is NULL");
	for (uint32_t i = 0; i < m->n_pages; i++)
		if (m->pages[i].ix >= KVMIG_MAX_PAGES)
			return kvmig_err(-EINVAL, "manifest field pages[%u].ix: %u is out of "
						  "range (0 to %u)",
					 i, m->pages[i].ix, KVMIG_MAX_PAGES - 1);
	/* Ids are checked before sorting: the comparator needs non-NULL strings. */
	for (uint32_t i = 0; i < m->n_seqs; i++) {
		const struct kvmig_seq *s = &m->seqs[i];

		snprintf(path, sizeof(path), "logical_seqs[%u].id", i);
		ret = check_seq_id(path, s->id, s->id ? strlen(s->id) : 0);
		if (ret)
			return ret;
	}

	dup = sort_pages(m);
	if (dup >= 0)
		return kvmig_err(-EINVAL, "manifest field pages[%u].ix: duplicate page ix %u",
				 (uint32_t)dup, m->pages[dup].ix);
	dup = sort_seqs(m);
	if (dup >= 0) {
		char id[64];

		snippet(id, sizeof(id), m->seqs[dup].id, strlen(m->seqs[dup].id));
		return kvmig_err(-EINVAL,
				 "manifest field logical_seqs[%u].id: duplicate sequence id \"%s\"",
				 (uint32_t)dup, id);
	}

	for (uint32_t i = 0; i < m->n_seqs; i++) {
		const struct kvmig_seq *s = &m->seqs[i];

		snprintf(path, sizeof(path), "logical_seqs[%u]", i);
		if (s->n_pages && !s->page_ixs)
			return kvmig_err(-EINVAL, "manifest field %s.page_ixs: NULL with %u pages",
					 path, s->n_pages);
		ret = check_seq_shape(path, s->n_pages, s->fill_in_last_page,
				      m->meta.page_size_tokens);
		if (ret)
			return ret;
		ret = check_seq_refs(m, path, s);
		if (ret)
			return ret;
	}
	return 0;
}

/* ---- serialization ---- */

/*
 * Output in two passes over the same code: with buf NULL only the length is
 * counted, then the exact buffer is filled. No reallocations, and the two
 * passes cannot disagree about the format.
 */
struct out {
	char *buf;
	size_t len;
	bool overflow;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->overflow || n > SIZE_MAX - 1 - o->len) {
		o->overflow = true;
		return;
	}
	if (o->buf)
		memcpy(o->buf + o->len, s, n);
	o->len += n;
}

static void put_str(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

static void put_u32(struct out *o, uint32_t v)
{
	char tmp[16];
	int n = snprintf(tmp, sizeof(tmp), "%u", v);

	put(o, tmp, (size_t)n);
}

/* A JSON string of printable ASCII (checked before): only " and \ need escapes. */
static void put_json_str(struct out *o, const char *s)
{
	put(o, "\"", 1);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			put(o, "\\", 1);
		put(o, s, 1);
	}
	put(o, "\"", 1);
}

static void put_digest(struct out *o, const struct kvmig_digest *d)
{
	char text[KVMIG_DIGEST_STR_LEN + 1];

	kvmig_digest_format(d, text);
	put(o, "\"", 1);
	put(o, text, KVMIG_DIGEST_STR_LEN);
	put(o, "\"", 1);
}

static void emit(struct out *o, const struct kvmig_manifest *m)
{
	put_str(o, "{\"layout\":");
	put_json_str(o, m->format.layout);
	/* The defaults are left out: a synthetic pager's manifest reads as before. */
	if (m->format.order != KVMIG_ORDER_NHD) {
		put_str(o, ",\"order\":");
		put_json_str(o, kvmig_order_name(m->format.order));
	}
	if (m->format.compat[0]) {
		put_str(o, ",\"compat\":");
		put_json_str(o, m->format.compat);
	}
	put_str(o, ",\"page_size_tokens\":");
	put_u32(o, m->meta.page_size_tokens);
	put_str(o, ",\"n_layers\":");
	put_u32(o, m->meta.n_layers);
	put_str(o, ",\"n_heads\":");
	put_u32(o, m->meta.n_heads);
	put_str(o, ",\"head_dim\":");
	put_u32(o, m->meta.head_dim);
	put_str(o, ",\"dtype\":");
	put_json_str(o, kvmig_dtype_name(m->meta.dtype));
	put_str(o, ",\"pages\":[");
	for (uint32_t i = 0; i < m->n_pages; i++) {
		put_str(o, i ? ",{\"ix\":" : "{\"ix\":");
		put_u32(o, m->pages[i].ix);
		put_str(o, ",\"k\":");
		put_digest(o, &m->pages[i].k);
		put_str(o, ",\"v\":");
		put_digest(o, &m->pages[i].v);
		put_str(o, "}");
	}
	put_str(o, "],\"logical_seqs\":[");
	for (uint32_t i = 0; i < m->n_seqs; i++) {
		const struct kvmig_seq *s = &m->seqs[i];

		put_str(o, i ? ",{\"id\":" : "{\"id\":");
		put_json_str(o, s->id);
		put_str(o, ",\"page_ixs\":[");
		for (uint32_t j = 0; j < s->n_pages; j++) {
			if (j)
				put(o, ",", 1);
			put_u32(o, s->page_ixs[j]);
		}
		put_str(o, "],\"fill_in_last_page\":");
		put_u32(o, s->fill_in_last_page);
		put_str(o, "}");
	}
	put_str(o, "]}\n");
}

int kvmig_manifest_serialize(struct kvmig_manifest *m, char **json, size_t *len)
{
	struct out o = { 0 };
	int ret;

	if (!json || !len)
		return kvmig_err(-EINVAL, "manifest: json and len must not be NULL");
	ret = kvmig_manifest_canonicalize(m);
	if (ret)
		return ret;
	emit(&o, m);
	if (o.overflow)
		return kvmig_err(-ENOMEM, "manifest: serialized form does not fit in memory");
	o.buf = malloc(o.len + 1);
	if (!o.buf)
		return kvmig_err(-ENOMEM, "manifest: out of memory for %zu bytes of JSON", o.len);
	o.len = 0;
	emit(&o, m);
	o.buf[o.len] = '\0';
	*json = o.buf;
	*len = o.len;
	return 0;
}

/* ---- parsing ---- */

/* Field tables: the only keys each object may have. */
static const char *const top_keys[] = {
	"layout", "order", "compat", "page_size_tokens", "n_layers", "n_heads",
	"head_dim", "dtype", "pages", "logical_seqs",
};
static const char *const page_keys[] = { "ix", "k", "v" };
static const char *const seq_keys[] = { "id", "page_ixs", "fill_in_last_page" };

/* @obj must be an object with no keys outside @keys; @path names it (NULL: top level). */
static int check_object(const json_t *obj, const char *path, const char *const *keys, size_t n)
{
	const char *key;
	json_t *val;

	if (!json_is_object(obj)) {
		if (!path)
			return kvmig_err(-EINVAL, "manifest is not a JSON object (it is %s)",
					 json_kind(obj));
		return kvmig_err(-EINVAL, "manifest field %s: expected an object, got %s", path,
				 json_kind(obj));
	}
	/* Casting away const is safe: json_object_foreach only reads. */
	json_object_foreach((json_t *)obj, key, val) {
		size_t i;
		char quoted[64];

		for (i = 0; i < n; i++)
			if (!strcmp(key, keys[i]))
				break;
		if (i < n)
			continue;
		snippet(quoted, sizeof(quoted), key, strlen(key));
		if (!path)
			return kvmig_err(-EINVAL, "manifest: unknown field \"%s\"", quoted);
		return kvmig_err(-EINVAL, "manifest field %s: unknown field \"%s\"", path, quoted);
	}
	return 0;
}

/* The value of @key in @obj; @path is the field's full path for the message. */
static int get_field(const json_t *obj, const char *key, const char *path, json_t **out)
{
	*out = json_object_get(obj, key);
	if (!*out)
		return kvmig_err(-EINVAL, "manifest field %s: missing", path);
	return 0;
}

static int get_u32(const json_t *j, const char *path, uint32_t min, uint32_t max, uint32_t *out)
{
	json_int_t v;

	if (!json_is_integer(j))
		return kvmig_err(-EINVAL, "manifest field %s: expected an integer, got %s", path,
				 json_kind(j));
	v = json_integer_value(j);
	if (v < (json_int_t)min || v > (json_int_t)max)
		return kvmig_err(-EINVAL, "manifest field %s: %lld is out of range (%u to %u)",
				 path, (long long)v, min, max);
	*out = (uint32_t)v;
	return 0;
}

static int get_str(const json_t *j, const char *path, const char **out, size_t *len)
{
	if (!json_is_string(j))
		return kvmig_err(-EINVAL, "manifest field %s: expected a string, got %s", path,
				 json_kind(j));
	*out = json_string_value(j);
	*len = json_string_length(j);
	return 0;
}

static int get_array(const json_t *j, const char *path, size_t max, size_t *n)
{
	if (!json_is_array(j))
		return kvmig_err(-EINVAL, "manifest field %s: expected an array, got %s", path,
				 json_kind(j));
	*n = json_array_size(j);
	if (*n > max)
		return kvmig_err(-EINVAL, "manifest field %s: %zu entries exceed the limit of %zu",
				 path, *n, max);
	return 0;
}

static int get_u32_field(const json_t *obj, const char *key, uint32_t min, uint32_t max,
			 uint32_t *out)
{
	json_t *j;
	int ret = get_field(obj, key, key, &j);

	return ret ? ret : get_u32(j, key, min, max, out);
}

static int parse_meta(const json_t *root, struct kvmig_manifest *m)
{
	const char *s = NULL;
	char quoted[64];
	size_t len = 0;
	json_t *j;
	int ret;

	if ((ret = get_field(root, "layout", "layout", &j)) ||
	    (ret = get_str(j, "layout", &s, &len)))
		return ret;
	snippet(quoted, sizeof(quoted), s, len);
	if (len != strlen(s) || len > KVMIG_LAYOUT_NAME_MAX)
		return kvmig_err(-EINVAL, "manifest field layout: \"%s\" is not a layout name "
				 "(1..%u letters, digits, _.-+:)", quoted, KVMIG_LAYOUT_NAME_MAX);
	memcpy(m->format.layout, s, len);
	m->format.order = KVMIG_ORDER_NHD;
	j = json_object_get(root, "order");
	if (j) {
		if ((ret = get_str(j, "order", &s, &len)))
			return ret;
		snippet(quoted, sizeof(quoted), s, len);
		if (len != strlen(s) || kvmig_order_parse(s, &m->format.order) < 0 ||
		    strcmp(s, kvmig_order_name(m->format.order)))
			return kvmig_err(-EINVAL, "manifest field order: unknown order \"%s\" "
					 "(expected NHD or HND)", quoted);
	}
	j = json_object_get(root, "compat");
	if (j) {
		if ((ret = get_str(j, "compat", &s, &len)))
			return ret;
		snippet(quoted, sizeof(quoted), s, len);
		if (len != strlen(s) || len > KVMIG_COMPAT_MAX)
			return kvmig_err(-EINVAL, "manifest field compat: \"%s\" is not a "
					 "compatibility string (at most %u printable ASCII bytes)",
					 quoted, KVMIG_COMPAT_MAX);
		memcpy(m->format.compat, s, len);
	}
	if ((ret = kvmig_format_check(&m->format)) < 0)
		return kvmig_err_prefix(ret, "manifest");

	if ((ret = get_u32_field(root, "page_size_tokens", 1, KVMIG_MAX_PAGE_TOKENS,
				 &m->meta.page_size_tokens)) ||
	    (ret = get_u32_field(root, "n_layers", 1, KVMIG_MAX_LAYERS, &m->meta.n_layers)) ||
	    (ret = get_u32_field(root, "n_heads", 1, KVMIG_MAX_HEADS, &m->meta.n_heads)) ||
	    (ret = get_u32_field(root, "head_dim", 1, KVMIG_MAX_HEAD_DIM, &m->meta.head_dim)))
		return ret;

	if ((ret = get_field(root, "dtype", "dtype", &j)) || (ret = get_str(j, "dtype", &s, &len)))
		return ret;
	for (int d = 0;; d++) {
		const char *name = kvmig_dtype_name((enum kvmig_dtype)d);

		if (!name) {
			snippet(quoted, sizeof(quoted), s, len);
			return kvmig_err(-EINVAL, "manifest field dtype: unknown dtype "
						  "\"%s\" (expected bf16, f16, f32 or fp8_e4m3)",
					 quoted);
		}
		if (len == strlen(name) && !strcmp(s, name)) {
			m->meta.dtype = (enum kvmig_dtype)d;
			break;
		}
	}
	/* The fields are in range, so this only catches a product that overflows. */
	return check_meta(m);
}

static int parse_digest(const json_t *page, const char *key, size_t i, struct kvmig_digest *out)
{
	char path[PATH_MAX_LEN];
	const char *s = NULL;
	size_t len = 0;
	json_t *j;
	int ret;

	snprintf(path, sizeof(path), "pages[%zu].%s", i, key);
	if ((ret = get_field(page, key, path, &j)) || (ret = get_str(j, path, &s, &len)))
		return ret;
	if (strlen(s) != len) /* an embedded NUL would hide trailing bytes */
		return kvmig_err(-EINVAL, "manifest field %s: digest contains a NUL byte", path);
	ret = kvmig_digest_parse(s, out);
	if (ret)
		return kvmig_err_prefix(ret, "manifest field %s", path);
	return 0;
}

static int parse_pages(const json_t *root, struct kvmig_manifest *m)
{
	char path[PATH_MAX_LEN];
	json_t *arr, *page, *j;
	size_t n = 0, i;
	int64_t dup;
	int ret;

	if ((ret = get_field(root, "pages", "pages", &arr)) ||
	    (ret = get_array(arr, "pages", KVMIG_MAX_PAGES, &n)))
		return ret;
	if (n == 0)
		return 0;
	m->pages = calloc(array_cap((uint32_t)n), sizeof(*m->pages));
	if (!m->pages)
		return kvmig_err(-ENOMEM, "manifest: out of memory for %zu pages", n);

	json_array_foreach(arr, i, page) {
		struct kvmig_manifest_page *p = &m->pages[i];

		snprintf(path, sizeof(path), "pages[%zu]", i);
		if ((ret = check_object(page, path, page_keys, KVMIG_ARRAY_SIZE(page_keys))))
			return ret;
		snprintf(path, sizeof(path), "pages[%zu].ix", i);
		if ((ret = get_field(page, "ix", path, &j)) ||
		    (ret = get_u32(j, path, 0, KVMIG_MAX_PAGES - 1, &p->ix)) ||
		    (ret = parse_digest(page, "k", i, &p->k)) ||
		    (ret = parse_digest(page, "v", i, &p->v)))
			return ret;
		m->n_pages = (uint32_t)i + 1;
	}

	dup = sort_pages(m);
	if (dup >= 0) {
		uint32_t ix = m->pages[dup].ix;
		bool seen = false;

		/* Name the second occurrence by its place in the input. */
		json_array_foreach(arr, i, page) {
			if ((uint32_t)json_integer_value(json_object_get(page, "ix")) != ix)
				continue;
			if (seen)
				break;
			seen = true;
		}
		return kvmig_err(-EINVAL, "manifest field pages[%zu].ix: duplicate page ix %u", i,
				 ix);
	}
	return 0;
}

static int parse_seq(const json_t *seq, size_t i, struct kvmig_manifest *m, struct kvmig_seq *s)
{
	char path[PATH_MAX_LEN], epath[PATH_MAX_LEN];
	json_t *j, *ixs, *e;
	const char *id = NULL;
	size_t len = 0, n = 0, k;
	int ret;

	snprintf(path, sizeof(path), "logical_seqs[%zu]", i);
	if ((ret = check_object(seq, path, seq_keys, KVMIG_ARRAY_SIZE(seq_keys))))
		return ret;

	snprintf(epath, sizeof(epath), "logical_seqs[%zu].id", i);
	if ((ret = get_field(seq, "id", epath, &j)) || (ret = get_str(j, epath, &id, &len)) ||
	    (ret = check_seq_id(epath, id, len)))
		return ret;
	/* A NUL inside would have failed check_seq_id, so len == strlen(id). */
	s->id = strdup(id);
	if (!s->id)
		return kvmig_err(-ENOMEM, "manifest: out of memory copying sequence id");

	snprintf(epath, sizeof(epath), "logical_seqs[%zu].page_ixs", i);
	if ((ret = get_field(seq, "page_ixs", epath, &ixs)) ||
	    (ret = get_array(ixs, epath, KVMIG_MAX_PAGES, &n)))
		return ret;
	if (n) {
		s->page_ixs = malloc(n * sizeof(*s->page_ixs));
		if (!s->page_ixs)
			return kvmig_err(-ENOMEM, "manifest: out of memory for %zu page indices",
					 n);
	}
	json_array_foreach(ixs, k, e) {
		snprintf(epath, sizeof(epath), "logical_seqs[%zu].page_ixs[%zu]", i, k);
		if ((ret = get_u32(e, epath, 0, KVMIG_MAX_PAGES - 1, &s->page_ixs[k])))
			return ret;
		if (kvmig_manifest_find_page(m, s->page_ixs[k]) < 0)
			return kvmig_err(-EINVAL, "manifest field %s: page %u is not in pages",
					 epath, s->page_ixs[k]);
	}
	s->n_pages = (uint32_t)n;

	snprintf(epath, sizeof(epath), "logical_seqs[%zu].fill_in_last_page", i);
	if ((ret = get_field(seq, "fill_in_last_page", epath, &j)) ||
	    (ret = get_u32(j, epath, 0, UINT32_MAX, &s->fill_in_last_page)))
		return ret;
	return check_seq_shape(path, s->n_pages, s->fill_in_last_page, m->meta.page_size_tokens);
}

static int parse_seqs(const json_t *root, struct kvmig_manifest *m)
{
	json_t *arr, *seq;
	size_t n = 0, i;
	int64_t dup;
	int ret;

	if ((ret = get_field(root, "logical_seqs", "logical_seqs", &arr)) ||
	    (ret = get_array(arr, "logical_seqs", KVMIG_MAX_SEQS, &n)))
		return ret;
	if (n == 0)
		return 0;
	/* calloc: a half-parsed entry holds NULLs that kvmig_manifest_free can free. */
	m->seqs = calloc(array_cap((uint32_t)n), sizeof(*m->seqs));
	if (!m->seqs)
		return kvmig_err(-ENOMEM, "manifest: out of memory for %zu sequences", n);

	json_array_foreach(arr, i, seq) {
		m->n_seqs = (uint32_t)i + 1; /* before parsing, so an error path frees it */
		if ((ret = parse_seq(seq, i, m, &m->seqs[i])))
			return ret;
	}

	dup = sort_seqs(m);
	if (dup >= 0) {
		const char *id = m->seqs[dup].id;
		char quoted[64];
		bool seen = false;

		json_array_foreach(arr, i, seq) {
			if (strcmp(json_string_value(json_object_get(seq, "id")), id) != 0)
				continue;
			if (seen)
				break;
			seen = true;
		}
		snippet(quoted, sizeof(quoted), id, strlen(id));
		return kvmig_err(-EINVAL, "manifest field logical_seqs[%zu].id: duplicate "
					  "sequence id \"%s\"",
				 i, quoted);
	}
	return 0;
}

int kvmig_manifest_parse(const char *json, size_t len, struct kvmig_manifest **ret)
{
	struct kvmig_manifest *m = NULL;
	json_error_t jerr;
	json_t *root;
	int err;

	if (!json || !ret)
		return kvmig_err(-EINVAL, "manifest: json and ret must not be NULL");
	/* DECODE_ANY: a valid non-object gets the clearer "not an object" message. */
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!root)
		return kvmig_err(-EINVAL, "manifest is not valid JSON (line %d, column %d): %s",
				 jerr.line, jerr.column, jerr.text);
	err = check_object(root, NULL, top_keys, KVMIG_ARRAY_SIZE(top_keys));
	if (err)
		goto err;
	m = calloc(1, sizeof(*m));
	if (!m) {
		err = kvmig_err(-ENOMEM, "manifest: out of memory");
		goto err;
	}
	if ((err = parse_meta(root, m)) || (err = parse_pages(root, m)) ||
	    (err = parse_seqs(root, m)))
		goto err;
	json_decref(root);
	*ret = m;
	return 0;

err:
	kvmig_manifest_free(&m);
	json_decref(root);
	return err;
}
