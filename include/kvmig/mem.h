/* SPDX-License-Identifier: MIT */
/*
 * kvmig/mem.h - the engine-memory pager: a pager (kvmig/pager.h) over KV
 * memory an inference engine owns, described rather than allocated by kvmig.
 *
 * The engine describes where each block's bytes are (per layer and per half
 * a region, an offset and a block stride), the page meta and format, and
 * supplies callbacks for what only it knows: pausing its writers, its
 * sequences with their block tables, allocating and freeing blocks, and
 * installing and removing sequences. kvmig keeps the rest (page extents,
 * migration records, sequences held by a migration, block generations) in
 * memory the library owns. capture, restore, verify, send, recv and live
 * pre-copy then work on the engine's memory unchanged.
 *
 * Every layout engines use maps onto a slab per (layer, half), block b's
 * piece of it being `block_bytes` (tokens x heads x head_dim x dtype size)
 * at regions[region].base + offset + b * stride:
 *   vLLM (FlashAttention), per layer [2, num_blocks, ...]: region = the
 *     layer's tensor, offset = half * num_blocks * block_bytes, stride =
 *     block_bytes (NHD: [block_size, heads, dim]; HND: [heads, block_size,
 *     dim], the order field says which);
 *   FlashInfer, per layer [num_blocks, 2, ...]: offset = half * block_bytes,
 *     stride = 2 * block_bytes;
 *   cross-layer, one tensor [num_blocks, layers, 2, ...]: offset =
 *     (layer * 2 + half) * block_bytes, stride = layers * 2 * block_bytes;
 *   SGLang, one data pointer per layer and half with an item length of
 *     block_bytes: region = that buffer, offset 0, stride = item length.
 * A page's K half is the layers' K pieces in layer order (its V half the
 * same), so two pagers with equal meta and format exchange pages whatever
 * their strides. MLA (one latent per layer, one half per page) is not
 * expressible yet: a page has two halves of equal size.
 *
 * Records live as long as the pager, i.e. as the engine's memory: a crashed
 * engine loses its cache, and the records with it (docs/ENGINE.md says what
 * that means for a migration in flight).
 */
#ifndef KVMIG_MEM_H
#define KVMIG_MEM_H

#include <kvmig/common.h>
#include <kvmig/pager.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What memory a region is. Only host memory is taken today; the field is
 * here so accelerator memory can come without an ABI break. */
enum kvmig_mem_kind {
	KVMIG_MEM_HOST = 0,   /* ordinary process memory */
	KVMIG_MEM_DEVICE = 1, /* accelerator memory: refused with -ENOTSUP for now */
};

struct kvmig_mem_region {
	void *base;
	uint64_t len;
	enum kvmig_mem_kind kind;
	int32_t device;       /* KVMIG_MEM_DEVICE: which device; ignored for host memory */
};

/* Where one (layer, half) of every block lives: block b's piece is at
 * regions[region].base + offset + b * stride. */
struct kvmig_mem_slab {
	uint32_t region;
	uint64_t offset;
	uint64_t stride;
};

/* Handed to the engine's seqs callback; each sequence goes in with kvmig_mem_seq_add(). */
struct kvmig_mem_seq_sink;

/*
 * kvmig_mem_seq_add() - report one runnable sequence: its id (1..128
 * printable ASCII bytes), its block table in token order and how many tokens
 * its last block holds (0 = full). Copies everything.
 * Return: 0, -EINVAL (a bad id, a block out of range, fill out of range;
 * the message names it), -ENOMEM.
 */
KVMIG_API int kvmig_mem_seq_add(struct kvmig_mem_seq_sink *sink, const char *id,
				const uint32_t *blocks, uint32_t n_blocks, uint32_t fill_in_last);

/*
 * kvmig_mem_error() - for a callback: record @message as the reason it
 * fails (kvmig_last_error() then carries it, prefixed with the callback's
 * name) and return @code, a negative errno.
 */
KVMIG_API int kvmig_mem_error(int code, const char *message);

/*
 * The engine's side. Each callback returns 0 or a negative errno (with
 * kvmig_mem_error() for a message), is called with @ctx from the thread
 * running a kvmig operation (a migration's, a capture's), never two at a
 * time for one pager, and must not call this pager's ops itself.
 */
struct kvmig_mem_engine {
	void *ctx;
	/* Stop writing blocks and changing sequences (nested pauses are
	 * counted by kvmig: called on the first), and start again. */
	int (*pause)(void *ctx);
	int (*resume)(void *ctx);
	/* The runnable sequences, each through kvmig_mem_seq_add(). */
	int (*seqs)(void *ctx, struct kvmig_mem_seq_sink *sink);
	/* @n free blocks into @blocks, all or nothing (-ENOSPC). */
	int (*alloc)(void *ctx, uint32_t n, uint32_t *blocks);
	/* Give blocks back to the free list. */
	int (*free)(void *ctx, const uint32_t *blocks, uint32_t n);
	/* Make these sequences runnable over their blocks (all or nothing). */
	int (*install)(void *ctx, const struct kvmig_seq *seqs, uint32_t n);
	/* Stop running these sequences and forget them, keeping their blocks
	 * (kvmig frees those it no longer needs). */
	int (*remove)(void *ctx, const char *const *ids, uint32_t n);
};

struct kvmig_mem_desc {
	struct kvmig_cache_meta meta;     /* one block's shape */
	struct kvmig_page_format format;  /* what the handshake and manifests compare */
	uint32_t n_blocks;                /* blocks 0 .. n_blocks - 1 */
	const struct kvmig_mem_region *regions;
	uint32_t n_regions;               /* 1 .. KVMIG_MEM_MAX_REGIONS */
	/* meta.n_layers * 2 slabs: slabs[layer * 2 + half] (K = 0, V = 1). */
	const struct kvmig_mem_slab *slabs;
	struct kvmig_mem_engine engine;
	/*
	 * 1: the engine calls kvmig_mem_written() after it writes blocks, so
	 * a live migration re-sends only those. 0: a block counts as changed
	 * whenever the pager is not paused (live pre-copy stays correct but
	 * re-sends every page in its final, paused, round).
	 */
	int tracks_writes;
};

#define KVMIG_MEM_MAX_REGIONS 4096u

/*
 * kvmig_mem_pager_create() - a pager over the memory @d describes. @d is
 * copied (the regions' memory is not: it must outlive the pager). Checked:
 * the meta and format; every callback present; every region host memory;
 * every slab's blocks inside its region; no two pieces of any blocks
 * overlapping.
 * Return: 0 and *ret; -EINVAL naming what is wrong, -ENOTSUP (a region
 * that is not host memory), -ENOMEM.
 */
KVMIG_API int kvmig_mem_pager_create(const struct kvmig_mem_desc *d, struct kvmig_pager **ret);

/*
 * kvmig_mem_written() - the engine wrote @blocks (after the write, before
 * it next honours a pause): their generations move on. Lock-free, safe from
 * any thread. Return: 0, or -EINVAL (not a memory pager, a block out of range).
 */
KVMIG_API int kvmig_mem_written(struct kvmig_pager *p, const uint32_t *blocks, uint32_t n);

#ifdef __cplusplus
}
#endif
#endif
