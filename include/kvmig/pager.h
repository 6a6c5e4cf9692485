/* SPDX-License-Identifier: MIT */
/*
 * kvmig/pager.h - the pager interface (what kvmig needs from a paged KV
 * cache) and the synthetic pager that implements it for tests and demos.
 */
#ifndef KVMIG_PAGER_H
#define KVMIG_PAGER_H

#include <kvmig/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct kvmig_pager;

/* A contiguous piece of page memory (absolute address in this process). */
struct kvmig_extent {
	void *addr;
	uint64_t len;
};

/* A region covering page memory; what a transport registers once. */
struct kvmig_region {
	void *base;
	uint64_t len;
};

/*
 * A logical sequence: its page table (physical page indices of THIS pager, in
 * token order) and how many tokens the last page holds (0 = full).
 */
struct kvmig_seq {
	char *id;
	uint32_t *page_ixs;
	uint32_t n_pages;
	uint32_t fill_in_last_page;
};

/* An owned array of sequences; free with kvmig_seq_list_free(). */
struct kvmig_seq_list {
	struct kvmig_seq *seqs;
	uint32_t n;
};

/* kvmig_seq_list_free() - free every id and page table and the array; NULL-safe. */
KVMIG_API void kvmig_seq_list_free(struct kvmig_seq_list *list);

/*
 * The ops table a pager implements. Every op returns 0 or -errno, may record
 * a message with the library's error reporting, and is called with the
 * pager's impl pointer. Ops must be safe to call while another thread of the
 * owning engine writes pages; page bytes themselves are only stable while
 * the pager is paused.
 */
struct kvmig_pager_ops {
	const char *name;
	int (*meta)(void *impl, struct kvmig_cache_meta *meta, enum kvmig_layout *layout);
	/* Stop the engine from writing pages or changing sequences. Nests. */
	int (*pause)(void *impl);
	int (*resume)(void *impl);
	/* Allocated pages, ascending; *ixs is malloc'd, caller frees. */
	int (*occupied)(void *impl, uint32_t **ixs, uint32_t *n);
	/* Installed sequences, sorted by id; caller frees with kvmig_seq_list_free. */
	int (*seqs)(void *impl, struct kvmig_seq_list *out);
	/*
	 * Extents of one half of page @ix in logical order (layer by layer).
	 * Writes at most @max extents; *n gets the number needed (-ENOBUFS if
	 * more than @max).
	 */
	int (*extents)(void *impl, uint32_t ix, enum kvmig_half half, struct kvmig_extent *ext,
		       uint32_t max, uint32_t *n);
	/* Regions covering all page memory; same contract as extents. */
	int (*regions)(void *impl, struct kvmig_region *r, uint32_t max, uint32_t *n);
	/* Counter bumped whenever the engine writes the page. */
	int (*generation)(void *impl, uint32_t ix, uint64_t *gen);
	/* Allocate @n pages, all or nothing (-ENOSPC); indices into @ixs. */
	int (*allocate)(void *impl, uint32_t n, uint32_t *ixs);
	/* Free pages; -EINVAL (nothing freed) if one is not allocated or still referenced. */
	int (*free)(void *impl, const uint32_t *ixs, uint32_t n);
	/*
	 * Install sequences, all or nothing: -EEXIST if an id is installed,
	 * -EINVAL if a page is not allocated or fill is out of range.
	 */
	int (*install)(void *impl, const struct kvmig_seq *seqs, uint32_t n);
	/* Remove sequences by id, all or nothing (-ENOENT); pages stay allocated. */
	int (*remove)(void *impl, const char *const *ids, uint32_t n);
	/* Release the implementation; called once from kvmig_pager_destroy. */
	void (*destroy)(void *impl);
};

/*
 * kvmig_pager_create() - wrap an implementation in a pager handle.
 * @ops must outlive the pager; @impl is handed to every op and, through
 * ops->destroy, released by kvmig_pager_destroy().
 * Return: 0 and *ret set, -EINVAL for missing ops, -ENOMEM.
 */
KVMIG_API int kvmig_pager_create(const struct kvmig_pager_ops *ops, void *impl,
				 struct kvmig_pager **ret);
/* kvmig_pager_destroy() - destroy and set *p to NULL; NULL-safe. */
KVMIG_API void kvmig_pager_destroy(struct kvmig_pager **p);

/* Thin wrappers over the ops table; same contracts as the ops above. */
KVMIG_API const char *kvmig_pager_name(const struct kvmig_pager *p);
KVMIG_API int kvmig_pager_meta(struct kvmig_pager *p, struct kvmig_cache_meta *meta,
			       enum kvmig_layout *layout);
KVMIG_API int kvmig_pager_pause(struct kvmig_pager *p);
KVMIG_API int kvmig_pager_resume(struct kvmig_pager *p);
KVMIG_API int kvmig_pager_occupied(struct kvmig_pager *p, uint32_t **ixs, uint32_t *n);
KVMIG_API int kvmig_pager_seqs(struct kvmig_pager *p, struct kvmig_seq_list *out);
KVMIG_API int kvmig_pager_extents(struct kvmig_pager *p, uint32_t ix, enum kvmig_half half,
				  struct kvmig_extent *ext, uint32_t max, uint32_t *n);
KVMIG_API int kvmig_pager_regions(struct kvmig_pager *p, struct kvmig_region *r, uint32_t max,
				  uint32_t *n);
KVMIG_API int kvmig_pager_generation(struct kvmig_pager *p, uint32_t ix, uint64_t *gen);
KVMIG_API int kvmig_pager_allocate(struct kvmig_pager *p, uint32_t n, uint32_t *ixs);
KVMIG_API int kvmig_pager_free(struct kvmig_pager *p, const uint32_t *ixs, uint32_t n);
KVMIG_API int kvmig_pager_install(struct kvmig_pager *p, const struct kvmig_seq *seqs, uint32_t n);
KVMIG_API int kvmig_pager_remove(struct kvmig_pager *p, const char *const *ids, uint32_t n);

/*
 * kvmig_pager_with_paused() - the pause guard: pause @p, run @fn(@p, @arg),
 * then resume @p whether or not @fn failed.
 * Return: @fn's error if it failed; otherwise resume's error, or @fn's
 * non-negative result. If pause itself fails, @fn is not run.
 */
KVMIG_API int kvmig_pager_with_paused(struct kvmig_pager *p,
				      int (*fn)(struct kvmig_pager *p, void *arg), void *arg);

/* ---- synthetic pager ---- */

struct kvmig_synth_opts {
	struct kvmig_cache_meta meta;  /* default: llama3-8b preset */
	enum kvmig_layout layout;      /* default: page-major */
	uint32_t capacity_pages;       /* default 64 */
	uint64_t seed;                 /* fill seed; default 1 */
	uint32_t n_seqs;               /* sequences to create; default 0 (empty pager) */
	uint32_t pages_per_seq;        /* pages of each sequence, shared prefix included; default 4 */
	uint32_t shared_prefix_pages;  /* leading pages every sequence shares; default 0 */
	/* NULL: arena in process memory. Otherwise a POSIX shm name (no slash)
	 * that other processes can kvmig_synth_attach() to. */
	const char *shm_name;
};

/* kvmig_synth_opts_init() - set the defaults documented above. */
KVMIG_API void kvmig_synth_opts_init(struct kvmig_synth_opts *opts);

/*
 * kvmig_synth_create() - create a synthetic pager and, if opts->n_seqs > 0,
 * allocate and fill shared_prefix_pages + n_seqs * (pages_per_seq -
 * shared_prefix_pages) pages and install sequences "seq-0", "seq-1", ...
 * Page contents are a SplitMix64 stream of (seed, allocation order, half,
 * layer): equal seeds give byte-identical pages in both layouts.
 * Return: 0 and *ret; -EINVAL (bad opts), -EOVERFLOW (arena size), -ENOSPC
 * (sequences do not fit capacity), -EEXIST (shm name taken), -ENOMEM, or a
 * shm/mmap errno.
 */
KVMIG_API int kvmig_synth_create(const struct kvmig_synth_opts *opts, struct kvmig_pager **ret);

/*
 * kvmig_synth_attach() - attach to a shared-memory synthetic pager created by
 * another process. Return: 0, -ENOENT (no such pager), -EPROTO (not a kvmig
 * pager or incompatible version), or an mmap errno.
 */
KVMIG_API int kvmig_synth_attach(const char *shm_name, struct kvmig_pager **ret);

/* kvmig_synth_unlink() - remove a shared-memory pager's name. Return: 0 or -errno. */
KVMIG_API int kvmig_synth_unlink(const char *shm_name);

/*
 * kvmig_pager_open() - open a pager from a spec string: "shm:NAME" attaches
 * to a shared-memory synthetic pager. Return: as kvmig_synth_attach, or
 * -EINVAL for an unknown spec.
 */
KVMIG_API int kvmig_pager_open(const char *spec, struct kvmig_pager **ret);

/*
 * kvmig_synth_fill_page() - overwrite both halves of page @ix with the
 * SplitMix64 stream for (@seed, @stream) and bump its generation, under the
 * pager lock like kvmig_synth_decode(). For tests. Return: 0, -EAGAIN (the
 * pager is paused: nothing written), -EINVAL (not a synthetic pager or page
 * not allocated).
 */
KVMIG_API int kvmig_synth_fill_page(struct kvmig_pager *p, uint32_t ix, uint64_t seed,
				    uint64_t stream);

/*
 * kvmig_synth_pause_depth() - how many pauses of a synthetic pager are not
 * yet resumed (0: the engine may run). For tests and `kvmig pager show`.
 * Return: 0 and *depth, or -EINVAL if @p is not a synthetic pager.
 */
KVMIG_API int kvmig_synth_pause_depth(struct kvmig_pager *p, uint32_t *depth);

/*
 * kvmig_synth_decode() - one decoding step of the synthetic engine: append a
 * token to sequence @seq_id, writing its slot of every layer in both halves
 * of the sequence's last page (allocating and appending a new page when the
 * last one is full) with kvmig_synth_token_bytes(@seed, @seq_id, position),
 * then bump that page's generation. Atomic with respect to pause: a pause
 * never sees half a token. *token (may be NULL) gets the token's position.
 * Return: 0; -EAGAIN while the pager is paused (nothing written); -ENOENT
 * (not installed); -ENOSPC (no free page or page-table entry); -EINVAL (not
 * a synthetic pager).
 */
KVMIG_API int kvmig_synth_decode(struct kvmig_pager *p, const char *seq_id, uint64_t seed,
				 uint64_t *token);

/*
 * kvmig_synth_token_bytes() - the bytes the synthetic engine writes for token
 * @token (position in the sequence) of @seq_id in one layer of one half:
 * @len bytes of a SplitMix64 stream of (@seed, id, token, half, layer). Lets a
 * test check a decoded sequence without trusting any digest.
 */
KVMIG_API void kvmig_synth_token_bytes(uint64_t seed, const char *seq_id, uint64_t token,
				       enum kvmig_half half, uint32_t layer, void *dst,
				       uint64_t len);

/* ---- synthetic decoding engine (a thread calling kvmig_synth_decode) ---- */

struct kvmig_synth_engine;

struct kvmig_synth_engine_opts {
	double tokens_per_second;  /* all sequences together, round robin; default 240 */
	uint64_t seed;             /* token contents; default 7 */
	uint64_t max_tokens;       /* a sequence finishes after this many; 0 (default) never */
	/* Decode these sequences; NULL: every sequence installed at start. */
	const char *const *seq_ids;
	uint32_t n_seq_ids;
};

struct kvmig_synth_engine_stats {
	uint64_t tokens;          /* tokens written */
	uint64_t pages_added;     /* pages the sequences grew by */
	double paused_seconds;    /* time the engine waited on a paused pager */
	uint32_t n_seqs;          /* sequences decoded */
	uint32_t finished;        /* reached max_tokens */
	uint32_t gone;            /* removed from the pager (moved away) */
	uint32_t stopped;         /* stopped on an error (no free page, ...) */
};

/* kvmig_synth_engine_opts_init() - set the defaults documented above. */
KVMIG_API void kvmig_synth_engine_opts_init(struct kvmig_synth_engine_opts *o);

/*
 * kvmig_synth_engine_start() - start a thread that decodes the sequences of
 * the synthetic pager @p at the given rate: each token is one
 * kvmig_synth_decode(); while @p is paused the engine waits (and does not
 * catch up afterwards). A sequence stops when it finishes, is removed, or
 * cannot grow. @p must outlive the engine.
 * Return: 0 and *ret; -EINVAL (bad options, not a synthetic pager, unknown
 * sequence), -ENOMEM, or a pthread error.
 */
KVMIG_API int kvmig_synth_engine_start(struct kvmig_pager *p,
				       const struct kvmig_synth_engine_opts *o,
				       struct kvmig_synth_engine **ret);
/* Counters so far; safe while the engine runs. */
KVMIG_API void kvmig_synth_engine_stats(const struct kvmig_synth_engine *e,
					struct kvmig_synth_engine_stats *st);
/* Tokens the engine wrote to @seq_id: 0 and *n, or -ENOENT if it does not decode it. */
KVMIG_API int kvmig_synth_engine_seq_tokens(const struct kvmig_synth_engine *e,
					    const char *seq_id, uint64_t *n);
/* kvmig_synth_engine_stop() - stop and join the thread, free, set *e NULL; NULL-safe. */
KVMIG_API void kvmig_synth_engine_stop(struct kvmig_synth_engine **e);

#ifdef __cplusplus
}
#endif
#endif
