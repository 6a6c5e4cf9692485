/* SPDX-License-Identifier: MIT */
/*
 * kvmig/common.h - error reporting, versions and the cache vocabulary
 * (CacheMeta, dtypes, layouts) shared by every other kvmig header.
 */
#ifndef KVMIG_COMMON_H
#define KVMIG_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define KVMIG_API __attribute__((visibility("default")))
#else
#define KVMIG_API
#endif

#define KVMIG_VERSION_STRING "0.1.0"

/* Upper bounds enforced everywhere (manifest parser, pager, wire). */
#define KVMIG_SEQ_ID_MAX 128u          /* bytes in a sequence id, excluding NUL */
#define KVMIG_MAX_SEQS 65536u          /* logical sequences in one manifest */
#define KVMIG_MAX_PAGES (1u << 24)     /* pages in one manifest / pager */
#define KVMIG_MAX_LAYERS 1024u
#define KVMIG_MAX_HEADS 1024u
#define KVMIG_MAX_HEAD_DIM 4096u
#define KVMIG_MAX_PAGE_TOKENS 4096u

/*
 * kvmig_last_error() - the detailed message of the last failure in this thread.
 *
 * Every fallible kvmig function returns 0 (or a count) on success and a
 * negative errno on failure. Where a failure has more to say (which field,
 * which page, which file) the function also records one sentence here.
 *
 * Return: a NUL-terminated string owned by the library, valid until the next
 * kvmig call in the same thread; "" when nothing was recorded. Thread-safe
 * (the buffer is thread-local).
 */
KVMIG_API const char *kvmig_last_error(void);

/* kvmig_clear_error() - reset this thread's last error to "". */
KVMIG_API void kvmig_clear_error(void);

/*
 * kvmig_build_info() - one line saying what this build has: its transports
 * (tcp always; rdma when built with rdma-core) and how the filesystem store
 * does its I/O (io_uring when built with liburing, synchronous otherwise or
 * where the kernel refuses io_uring). A static string.
 */
KVMIG_API const char *kvmig_build_info(void);

enum kvmig_dtype {
	KVMIG_DTYPE_BF16 = 0,
	KVMIG_DTYPE_F16,
	KVMIG_DTYPE_F32,
	KVMIG_DTYPE_FP8_E4M3,
};

/*
 * Page layouts. Page-major: each page's K half then V half are contiguous.
 * Layer-major (vLLM style): per layer one K tensor and one V tensor indexed
 * by page, so a page half is n_layers extents.
 */
enum kvmig_layout {
	KVMIG_LAYOUT_PAGE_MAJOR = 0,
	KVMIG_LAYOUT_LAYER_MAJOR,
};

enum kvmig_half {
	KVMIG_HALF_K = 0,
	KVMIG_HALF_V = 1,
};

/* CacheMeta: the shape of one page. */
struct kvmig_cache_meta {
	uint32_t page_size_tokens;
	uint32_t n_layers;
	uint32_t n_heads;   /* KV heads */
	uint32_t head_dim;
	enum kvmig_dtype dtype;
};

/* Return: bytes per element (1, 2 or 4), or -EINVAL for an unknown dtype. */
KVMIG_API int kvmig_dtype_size(enum kvmig_dtype dtype);
/* Return: "bf16", "f16", "f32", "fp8_e4m3", or NULL for an unknown dtype. */
KVMIG_API const char *kvmig_dtype_name(enum kvmig_dtype dtype);
/* Return: 0 and *out set, or -EINVAL if @name is not a dtype name. */
KVMIG_API int kvmig_dtype_parse(const char *name, enum kvmig_dtype *out);
/* Return: "page_major" / "layer_major", or NULL. */
KVMIG_API const char *kvmig_layout_name(enum kvmig_layout layout);
/* Accepts "page_major"/"page-major" and "layer_major"/"layer-major". */
KVMIG_API int kvmig_layout_parse(const char *name, enum kvmig_layout *out);

/*
 * How the bytes of one layer's piece of a block are ordered: tokens, then
 * heads, then head_dim (NHD: vLLM's default, FlashInfer's "NHD"), or heads
 * first (HND). Two sides that order them differently cannot exchange pages.
 */
enum kvmig_kv_order {
	KVMIG_ORDER_NHD = 0,
	KVMIG_ORDER_HND,
};

/* Return: "NHD" / "HND", or NULL. */
KVMIG_API const char *kvmig_order_name(enum kvmig_kv_order order);
/* Accepts "NHD" / "HND" (any case). Return: 0 and *out, or -EINVAL with a message. */
KVMIG_API int kvmig_order_parse(const char *name, enum kvmig_kv_order *out);

#define KVMIG_LAYOUT_NAME_MAX 31u /* bytes of a layout name, excluding NUL */
#define KVMIG_COMPAT_MAX 63u      /* bytes of a compatibility string, excluding NUL */

/*
 * A page format: what, besides the meta, two sides must agree on before a
 * page moves between them, carried by the handshake and the manifest.
 * layout names how the engine lays its cache out ("page_major" and
 * "layer_major" are the synthetic pager's; an engine pager's is its own,
 * e.g. "vllm", "flashinfer"): letters, digits and "_.-+:", 1..31 bytes.
 * compat is an engine-supplied compatibility string (a hash of the model
 * and its cache config, say): printable ASCII, at most 63 bytes, "" for
 * none. Each of the three is compared exactly.
 */
struct kvmig_page_format {
	char layout[KVMIG_LAYOUT_NAME_MAX + 1];
	enum kvmig_kv_order order;
	char compat[KVMIG_COMPAT_MAX + 1];
};

/*
 * kvmig_format_set() - fill @fmt from its parts (@compat may be NULL).
 * Return: 0, or -EINVAL with a message naming the part that is not allowed.
 */
KVMIG_API int kvmig_format_set(struct kvmig_page_format *fmt, const char *layout,
			       enum kvmig_kv_order order, const char *compat);
/* kvmig_format_check() - whether @fmt is well formed (as kvmig_format_set checks). */
KVMIG_API int kvmig_format_check(const struct kvmig_page_format *fmt);
/*
 * kvmig_format_match() - 0 if @mine and @peer are the same format; else
 * -EPROTO with "<what> mismatch: this side's is X, the peer's is Y" naming
 * the first part that differs, @peer_what naming the other side ("the
 * peer", "the manifest").
 */
KVMIG_API int kvmig_format_match(const struct kvmig_page_format *mine,
				 const struct kvmig_page_format *peer, const char *peer_what);

/*
 * kvmig_meta_half_bytes() - bytes of one half (K or V) of one page:
 * n_layers * page_size_tokens * n_heads * head_dim * dtype size.
 *
 * Return: 0 and *out set; -EINVAL if a field is zero, above its KVMIG_MAX_*
 * bound, or the dtype is unknown; -EOVERFLOW if the product overflows 64 bits
 * or exceeds SIZE_MAX. Records a message naming the field.
 */
KVMIG_API int kvmig_meta_half_bytes(const struct kvmig_cache_meta *meta, uint64_t *out);

/* Return: 1 if every field of @a equals @b, else 0. */
KVMIG_API int kvmig_meta_equal(const struct kvmig_cache_meta *a, const struct kvmig_cache_meta *b);

/*
 * kvmig_meta_describe() - write "32 layers x 8 heads x 128 dim, 16 tokens/page,
 * bf16" into @buf (always NUL-terminated, truncated to @len).
 */
KVMIG_API void kvmig_meta_describe(const struct kvmig_cache_meta *meta, char *buf, size_t len);

/*
 * kvmig_meta_preset() - fill @meta from a named preset.
 * "llama3-8b": 32 layers, 8 KV heads, head_dim 128, bf16, 16 tokens per page
 * (1 MiB per half). "tiny": 2 layers, 2 heads, head_dim 16, f16, 4 tokens
 * (512 bytes per half, for tests).
 * Return: 0, or -EINVAL for an unknown name.
 */
KVMIG_API int kvmig_meta_preset(const char *name, struct kvmig_cache_meta *meta);

#ifdef __cplusplus
}
#endif
#endif
