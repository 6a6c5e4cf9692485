/* SPDX-License-Identifier: MIT */
/*
 * kvmig/synth.h - the synthetic pager (a pager over shared memory that
 * implements kvmig/pager.h for tests, demos and benchmarks) and the
 * synthetic decoding engine that writes into it.
 */
#ifndef KVMIG_SYNTH_H
#define KVMIG_SYNTH_H

#include <kvmig/common.h>
#include <kvmig/pager.h>

#ifdef __cplusplus
extern "C" {
#endif

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

/*
 * kvmig_synth_unlink() - remove a shared-memory pager's name, whatever it
 * holds (tests clean up with it; `kvmig pager rm` uses kvmig_synth_remove).
 * Return: 0 or -errno.
 */
KVMIG_API int kvmig_synth_unlink(const char *shm_name);

/* What kvmig_synth_remove() found (and, with @force, destroyed). */
struct kvmig_synth_remove_report {
	uint32_t seqs;          /* sequences installed (any state) */
	uint32_t pages;         /* pages allocated */
	uint32_t records;       /* migration records (any state) */
	uint32_t paused_by;     /* pid of a live process holding a pause, or 0 */
	uint32_t attached_by;   /* pid of another live process attached to it, or 0 */
	uint32_t locked_by;     /* forced while this process held its lock (stopped):
				 * the fields above are unknown */
	uint32_t activated;     /* forced while locked: destination records found
				 * activated just as it was marked removed (their
				 * migrations committed: the sequences go with the
				 * pager); the first one's id below */
	struct kvmig_id activated_id;
};

/*
 * kvmig_synth_remove() - remove a shared-memory pager, unless it is in use:
 * paused by a live process, attached by another live process (a migration,
 * an engine), or holding migration records (a migration's outcome that
 * is not applied on both sides). Dead processes' leftovers are reclaimed
 * first (gc). With @force it is removed anyway: the pager is marked removed
 * first, so a migration into it still running fails before its destination
 * prepares or activates there (its source keeps its sequences, or gets them
 * back on resolution), and everything it held is gone. Forced past a lock
 * holder that is stopped, a migration that activated there just as the
 * mark was made is reported in @rep->activated. @rep (may be NULL) says
 * what it held.
 * Return: 0; -EBUSY (in use; the message names the process or the records);
 * -ENOENT; -EPROTO (not a kvmig pager: only @force removes it).
 */
KVMIG_API int kvmig_synth_remove(const char *shm_name, int force,
				 struct kvmig_synth_remove_report *rep);


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
