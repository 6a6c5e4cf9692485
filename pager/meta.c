/* SPDX-License-Identifier: MIT */
/*
 * pager/meta.c - CacheMeta: dtypes, layouts, page size with overflow checks,
 * presets.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <kvmig/common.h>

#include "util/internal.h"

static const struct {
	const char *name;
	int size;
} dtypes[] = {
	[KVMIG_DTYPE_BF16] = { "bf16", 2 },
	[KVMIG_DTYPE_F16] = { "f16", 2 },
	[KVMIG_DTYPE_F32] = { "f32", 4 },
	[KVMIG_DTYPE_FP8_E4M3] = { "fp8_e4m3", 1 },
};

int kvmig_dtype_size(enum kvmig_dtype dtype)
{
	if ((unsigned)dtype >= KVMIG_ARRAY_SIZE(dtypes))
		return -EINVAL;
	return dtypes[dtype].size;
}

const char *kvmig_dtype_name(enum kvmig_dtype dtype)
{
	if ((unsigned)dtype >= KVMIG_ARRAY_SIZE(dtypes))
		return NULL;
	return dtypes[dtype].name;
}

int kvmig_dtype_parse(const char *name, enum kvmig_dtype *out)
{
	for (size_t i = 0; name && i < KVMIG_ARRAY_SIZE(dtypes); i++) {
		if (strcmp(name, dtypes[i].name) == 0) {
			*out = (enum kvmig_dtype)i;
			return 0;
		}
	}
	return kvmig_err(-EINVAL, "unknown dtype \"%s\" (expected bf16, f16, f32 or fp8_e4m3)",
			 name ? name : "(null)");
}

const char *kvmig_layout_name(enum kvmig_layout layout)
{
	switch (layout) {
	case KVMIG_LAYOUT_PAGE_MAJOR:
		return "page_major";
	case KVMIG_LAYOUT_LAYER_MAJOR:
		return "layer_major";
	}
	return NULL;
}

int kvmig_layout_parse(const char *name, enum kvmig_layout *out)
{
	if (name && (!strcmp(name, "page_major") || !strcmp(name, "page-major"))) {
		*out = KVMIG_LAYOUT_PAGE_MAJOR;
		return 0;
	}
	if (name && (!strcmp(name, "layer_major") || !strcmp(name, "layer-major"))) {
		*out = KVMIG_LAYOUT_LAYER_MAJOR;
		return 0;
	}
	return kvmig_err(-EINVAL, "unknown layout \"%s\" (expected page_major or layer_major)",
			 name ? name : "(null)");
}

const char *kvmig_order_name(enum kvmig_kv_order order)
{
	switch (order) {
	case KVMIG_ORDER_NHD:
		return "NHD";
	case KVMIG_ORDER_HND:
		return "HND";
	}
	return NULL;
}

int kvmig_order_parse(const char *name, enum kvmig_kv_order *out)
{
	if (name && !strcasecmp(name, "NHD")) {
		*out = KVMIG_ORDER_NHD;
		return 0;
	}
	if (name && !strcasecmp(name, "HND")) {
		*out = KVMIG_ORDER_HND;
		return 0;
	}
	return kvmig_err(-EINVAL, "unknown order \"%s\" (expected NHD or HND)",
			 name ? name : "(null)");
}

static int check_layout_name(const char *s, size_t len)
{
	if (len == 0 || len > KVMIG_LAYOUT_NAME_MAX)
		return kvmig_err(-EINVAL, "layout name of %zu bytes: it must have 1 to %u", len,
				 KVMIG_LAYOUT_NAME_MAX);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      (c && strchr("_.-+:", c))))
			return kvmig_err(-EINVAL, "layout name: byte %zu (0x%02x) is not a letter, "
					 "a digit or one of _.-+:", i, c);
	}
	return 0;
}

static int check_compat(const char *s, size_t len)
{
	if (len > KVMIG_COMPAT_MAX)
		return kvmig_err(-EINVAL, "compatibility string of %zu bytes: at most %u", len,
				 KVMIG_COMPAT_MAX);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return kvmig_err(-EINVAL, "compatibility string: byte %zu (0x%02x) is not "
					 "printable ASCII", i, (unsigned char)s[i]);
	return 0;
}

int kvmig_format_set(struct kvmig_page_format *fmt, const char *layout,
		     enum kvmig_kv_order order, const char *compat)
{
	int ret;

	if (!layout)
		return kvmig_err(-EINVAL, "no layout name");
	if (!compat)
		compat = "";
	if ((ret = check_layout_name(layout, strnlen(layout, KVMIG_LAYOUT_NAME_MAX + 1))) < 0 ||
	    (ret = check_compat(compat, strnlen(compat, KVMIG_COMPAT_MAX + 1))) < 0)
		return ret;
	if (!kvmig_order_name(order))
		return kvmig_err(-EINVAL, "order %d is not NHD or HND", (int)order);
	memset(fmt, 0, sizeof(*fmt));
	memcpy(fmt->layout, layout, strlen(layout));
	fmt->order = order;
	memcpy(fmt->compat, compat, strlen(compat));
	return 0;
}

int kvmig_format_check(const struct kvmig_page_format *fmt)
{
	int ret;

	if ((ret = check_layout_name(fmt->layout, strnlen(fmt->layout, sizeof(fmt->layout)))) < 0 ||
	    (ret = check_compat(fmt->compat, strnlen(fmt->compat, sizeof(fmt->compat)))) < 0)
		return ret;
	if (fmt->layout[KVMIG_LAYOUT_NAME_MAX] || fmt->compat[KVMIG_COMPAT_MAX])
		return kvmig_err(-EINVAL, "format strings are not NUL-terminated");
	if (!kvmig_order_name(fmt->order))
		return kvmig_err(-EINVAL, "order %d is not NHD or HND", (int)fmt->order);
	return 0;
}

int kvmig_format_match(const struct kvmig_page_format *mine,
		       const struct kvmig_page_format *peer, const char *peer_what)
{
	const char *po = kvmig_order_name(peer->order);

	if (strcmp(mine->layout, peer->layout))
		return kvmig_err(-EPROTO, "layout mismatch: this side's is %s, %s's is %s",
				 mine->layout, peer_what, peer->layout);
	if (mine->order != peer->order)
		return kvmig_err(-EPROTO, "order mismatch: this side's is %s, %s's is %s",
				 kvmig_order_name(mine->order), peer_what, po ? po : "?");
	if (strcmp(mine->compat, peer->compat))
		return kvmig_err(-EPROTO, "compatibility string mismatch: this side's is \"%s\", "
				 "%s's is \"%s\"", mine->compat, peer_what, peer->compat);
	return 0;
}

static int check_dim(const char *field, uint32_t v, uint32_t max)
{
	if (v == 0 || v > max)
		return kvmig_err(-EINVAL, "%s is %u; it must be between 1 and %u", field, v, max);
	return 0;
}

int kvmig_meta_half_bytes(const struct kvmig_cache_meta *m, uint64_t *out)
{
	uint64_t b;
	int ret, dsize = kvmig_dtype_size(m->dtype);

	if (dsize < 0)
		return kvmig_err(-EINVAL, "dtype %d is not a known dtype", (int)m->dtype);
	if ((ret = check_dim("page_size_tokens", m->page_size_tokens, KVMIG_MAX_PAGE_TOKENS)) ||
	    (ret = check_dim("n_layers", m->n_layers, KVMIG_MAX_LAYERS)) ||
	    (ret = check_dim("n_heads", m->n_heads, KVMIG_MAX_HEADS)) ||
	    (ret = check_dim("head_dim", m->head_dim, KVMIG_MAX_HEAD_DIM)))
		return ret;
	/* Bounded fields cannot overflow today; the checks keep it so if bounds grow. */
	if (kvmig_mul_u64(m->n_layers, m->page_size_tokens, &b) ||
	    kvmig_mul_u64(b, m->n_heads, &b) || kvmig_mul_u64(b, m->head_dim, &b) ||
	    kvmig_mul_u64(b, (uint64_t)dsize, &b) || b > SIZE_MAX)
		return kvmig_err(-EOVERFLOW, "page size overflows");
	*out = b;
	return 0;
}

int kvmig_meta_equal(const struct kvmig_cache_meta *a, const struct kvmig_cache_meta *b)
{
	return a->page_size_tokens == b->page_size_tokens && a->n_layers == b->n_layers &&
	       a->n_heads == b->n_heads && a->head_dim == b->head_dim && a->dtype == b->dtype;
}

void kvmig_meta_describe(const struct kvmig_cache_meta *m, char *buf, size_t len)
{
	const char *dt = kvmig_dtype_name(m->dtype);

	snprintf(buf, len, "%u layers x %u heads x %u dim, %u tokens/page, %s", m->n_layers,
		 m->n_heads, m->head_dim, m->page_size_tokens, dt ? dt : "?");
}

int kvmig_meta_preset(const char *name, struct kvmig_cache_meta *m)
{
	if (name && !strcmp(name, "llama3-8b")) {
		*m = (struct kvmig_cache_meta){ .page_size_tokens = 16, .n_layers = 32,
						.n_heads = 8, .head_dim = 128,
						.dtype = KVMIG_DTYPE_BF16 };
		return 0;
	}
	if (name && !strcmp(name, "tiny")) {
		*m = (struct kvmig_cache_meta){ .page_size_tokens = 4, .n_layers = 2,
						.n_heads = 2, .head_dim = 16,
						.dtype = KVMIG_DTYPE_F16 };
		return 0;
	}
	return kvmig_err(-EINVAL, "unknown preset \"%s\" (expected llama3-8b or tiny)",
			 name ? name : "(null)");
}
