/* SPDX-License-Identifier: MIT */
/*
 * kvmig/pager.h - the pager interface: what kvmig needs from a paged KV
 * cache, the contract an inference engine's pager implements. The synthetic
 * pager that implements it for tests and demos is in kvmig/synth.h.
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

/* 16 random bytes naming a migration or a pager; printed as 32 hex digits. */
struct kvmig_id {
	uint8_t b[16];
};

/* kvmig_id_format() - the 32 lowercase hex digits of @id into @out (33 bytes). */
KVMIG_API void kvmig_id_format(const struct kvmig_id *id, char *out);
/* kvmig_id_parse() - parse 32 hex digits. Return: 0, or -EINVAL. */
KVMIG_API int kvmig_id_parse(const char *text, struct kvmig_id *out);

/*
 * Where an installed sequence stands (docs/PROTOCOL.md, "Crash safety"). Only
 * an ACTIVE sequence may be run by the engine, captured or migrated; the
 * others belong to a migration whose outcome is not applied yet, and their
 * pages stay allocated.
 */
enum kvmig_seq_state {
	KVMIG_SEQ_ACTIVE = 0, /* runnable */
	KVMIG_SEQ_PENDING,    /* destination: received and verified, waiting for the decision */
	KVMIG_SEQ_DEPARTED,   /* source: the migration committed; kept until the destination
			       * confirms it runs them */
};

/* Return: "active", "pending", "departed", or NULL. */
KVMIG_API const char *kvmig_seq_state_name(enum kvmig_seq_state state);

/* Sequence ids beginning with this character are kvmig's: install refuses them. */
#define KVMIG_SEQ_RESERVED_PREFIX '?'

/*
 * A logical sequence: its page table (physical page indices of THIS pager, in
 * token order) and how many tokens the last page holds (0 = full). The last
 * two fields are set by the pager's seqs op and ignored by install.
 */
struct kvmig_seq {
	char *id;
	uint32_t *page_ixs;
	uint32_t n_pages;
	uint32_t fill_in_last_page;
	enum kvmig_seq_state state;
	struct kvmig_id migration; /* PENDING / DEPARTED: the migration holding it */
};

/* An owned array of sequences; free with kvmig_seq_list_free(). */
struct kvmig_seq_list {
	struct kvmig_seq *seqs;
	uint32_t n;
};

/* kvmig_seq_list_free() - free every id and page table and the array; NULL-safe. */
KVMIG_API void kvmig_seq_list_free(struct kvmig_seq_list *list);

/*
 * Migration records: how a migration's outcome outlives the processes that
 * run it. Each side writes one into its own pager (which outlives them: shm
 * here, the engine's memory in an engine) before it acts, and moves it from
 * state to state with single atomic steps; after a death the records, not
 * an exit status, say what happened. docs/PROTOCOL.md has the state table:
 * every state, what a death in it leaves, and how it is resolved.
 */
enum kvmig_record_role {
	KVMIG_ROLE_SOURCE = 1, /* the pager the sequences leave */
	KVMIG_ROLE_DEST = 2,   /* the pager they arrive in */
};

enum kvmig_record_state {
	KVMIG_REC_NONE = 0,    /* no record (a peer's answer; never stored) */
	/* source */
	KVMIG_REC_SENDING,     /* offering; the sequences still run here. No decision yet:
				* a death here aborts (the sequences stay, run on) */
	KVMIG_REC_DEPARTED,    /* move committed (the decision): tagged sequences no longer
				* run here, their pages are kept until the destination
				* confirms it activated them */
	KVMIG_REC_COMMITTED,   /* copy committed (the decision); the sequences run here */
	/* destination */
	KVMIG_REC_RECEIVING,   /* allocating, reading, verifying; sequences installed as
				* pending. A death here aborts (nothing ran) */
	KVMIG_REC_PREPARED,    /* every page verified, sequences pending; told the source.
				* In doubt until the source's decision arrives */
	KVMIG_REC_ACTIVATED,   /* the decision arrived: the sequences run here; kept until
				* the source has released its copy */
	/* either side, inside one pager operation (seen only after a death there) */
	KVMIG_REC_ABORTING,    /* abort being applied */
	KVMIG_REC_FINISHING,   /* commit being applied */
};

/* Return: "sending", "departed", ..., "none" for KVMIG_REC_NONE, or NULL. */
KVMIG_API const char *kvmig_record_state_name(enum kvmig_record_state state);
/* Return: 0 and *out, or -EINVAL if @name is not a state name. */
KVMIG_API int kvmig_record_state_parse(const char *name, enum kvmig_record_state *out);

struct kvmig_record {
	struct kvmig_id id;             /* the migration (the sender draws it) */
	enum kvmig_record_role role;
	enum kvmig_record_state state;
	int move;                       /* source: 1 move mode, 0 copy */
	struct kvmig_id peer_pager;     /* the other side's pager identity */
	char peer_addr[64];             /* the other side's address, for people */
	int32_t owner_pid;              /* the process driving it; 0 once it died */
	uint64_t created;               /* seconds since the epoch */
	uint32_t n_seqs;                /* sequences tagged with it (pending or departed) */
};

/*
 * Digests kept ahead (docs/PROTOCOL.md, "Digests ahead"): a page's XXH3-128
 * digests (K half, V half; kvmig/cas.h's bytes) as of one generation of the
 * page. They stand for the page's bytes only while its generation is that
 * one: a page written since has moved on, and the entry is ignored. A
 * migration uses an entry instead of hashing; the receiver still hashes
 * what it receives, so a wrong entry can only cause a re-read and an abort.
 */
struct kvmig_page_digest {
	uint64_t gen;  /* the page's generation they were computed at; 0: none */
	uint8_t k[16];
	uint8_t v[16];
};

/* What kvmig_pager_gc() reclaimed from processes that died. */
struct kvmig_gc_stats {
	uint32_t pauses;        /* pauses dropped */
	uint32_t pages;         /* pages freed that no sequence uses */
	uint32_t aborted;       /* records of undecided migrations aborted */
	uint32_t completed;     /* records whose applying a death interrupted, completed */
	uint32_t in_doubt;      /* records left for resolution (prepared, departed, ...) */
};

/*
 * The ops table a pager implements (built against this header, optional ops
 * NULL: until 1.0 the table may grow at its end). Every op returns 0 or -errno, may record
 * a message with the library's error reporting, and is called with the
 * pager's impl pointer. Ops must be safe to call while another thread of the
 * owning engine writes pages; page bytes themselves are only stable while
 * the pager is paused.
 */
struct kvmig_pager_ops {
	const char *name;
	int (*meta)(void *impl, struct kvmig_cache_meta *meta, enum kvmig_layout *layout);
	/* Optional: the page format (layout name, order, compatibility string).
	 * NULL: the layout's name from meta, NHD, no compatibility string. */
	int (*format)(void *impl, struct kvmig_page_format *fmt);
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
	/* Allocate @n pages, all or nothing (-ENOSPC); indices into @ixs. They
	 * belong to the calling process until a sequence uses them: if it dies
	 * first, gc frees them. */
	int (*allocate)(void *impl, uint32_t n, uint32_t *ixs);
	/* Free pages; -EINVAL (nothing freed) if one is not allocated or still referenced. */
	int (*free)(void *impl, const uint32_t *ixs, uint32_t n);
	/*
	 * Install sequences, all or nothing: -EEXIST if an id is installed,
	 * -EINVAL if a page is not allocated or fill is out of range.
	 */
	int (*install)(void *impl, const struct kvmig_seq *seqs, uint32_t n);
	/* Remove sequences by id, all or nothing (-ENOENT; -EBUSY for one a
	 * migration holds); pages stay allocated. */
	int (*remove)(void *impl, const char *const *ids, uint32_t n);
	/* This pager's identity: 16 random bytes fixed when it was made. */
	int (*identity)(void *impl, struct kvmig_id *id);
	/*
	 * Migration records (see above). Each op is atomic with respect to the
	 * death of the caller at any instruction: afterwards the record and
	 * the sequences are as before it or as after it.
	 * record_create: a new record (SENDING or RECEIVING), driven by the
	 *   calling process; -EEXIST (same id), -EBUSY (the table is full of
	 *   records waiting for resolution), -EIDRM (the pager was removed).
	 * record_set: move record @id from @from to @to, or -ESTALE (it is not
	 *   in @from), -ENOENT; the caller checked the edge is legal.
	 * record_tag: tag the runnable sequences @ids with source record @id
	 *   (SENDING): reserved for it (another tag or a remove is -EBUSY
	 *   until the record ends); they leave with it once it is DEPARTED.
	 *   All or nothing; -ENOENT (not installed), -EBUSY (tagged already).
	 * record_install: install @seqs as pending sequences of destination
	 *   record @id (RECEIVING); install's contract otherwise.
	 * record_end: if record @id is in state @from (else -ESTALE), apply
	 *   the outcome and delete the record. @commit: a DEPARTED source
	 *   removes its tagged sequences and frees the pages no sequence uses;
	 *   an ACTIVATED destination's become plain sequences. Abort: a
	 *   source's tagged sequences run again; a destination's are removed
	 *   and the pages no sequence uses freed. -EINVAL for an outcome the
	 *   state does not allow (abort an ACTIVATED destination, ...).
	 * record_disown: the calling process stops driving record @id (it
	 *   returns in doubt): the record stays, for resolution by anyone.
	 * records: every record (at most @max; *n gets how many there are,
	 *   -ENOBUFS if more than @max).
	 * gc: reclaim what dead processes left (pauses, pages no sequence uses,
	 *   undecided records) and complete what a death interrupted.
	 */
	int (*record_create)(void *impl, const struct kvmig_record *rec);
	int (*record_set)(void *impl, const struct kvmig_id *id, enum kvmig_record_state from,
			  enum kvmig_record_state to);
	int (*record_tag)(void *impl, const struct kvmig_id *id, const char *const *ids,
			  uint32_t n);
	int (*record_install)(void *impl, const struct kvmig_id *id, const struct kvmig_seq *seqs,
			      uint32_t n);
	int (*record_end)(void *impl, const struct kvmig_id *id, enum kvmig_record_state from,
			  int commit);
	int (*record_disown)(void *impl, const struct kvmig_id *id);
	int (*records)(void *impl, struct kvmig_record *out, uint32_t max, uint32_t *n);
	int (*gc)(void *impl, struct kvmig_gc_stats *st);
	/* Release the implementation; called once from kvmig_pager_destroy. */
	void (*destroy)(void *impl);
	/* Optional: how many pages the pager has in all (allocated or free). */
	int (*capacity)(void *impl, uint32_t *n_pages);
	/* Optional, together: the digests kept for page @ix (gen 0: none), and
	 * keeping them. A reader must never see a torn entry (a gen with the
	 * digests of another); allocating a page must move its generation. */
	int (*digest_get)(void *impl, uint32_t ix, struct kvmig_page_digest *d);
	int (*digest_put)(void *impl, uint32_t ix, const struct kvmig_page_digest *d);
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
/*
 * kvmig_pager_format() - the page format the handshake and the manifest
 * carry: the format op's, checked, or (without one) the meta op's layout
 * name, NHD and no compatibility string. Return: 0, or an op's error.
 */
KVMIG_API int kvmig_pager_format(struct kvmig_pager *p, struct kvmig_page_format *fmt);
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
KVMIG_API int kvmig_pager_identity(struct kvmig_pager *p, struct kvmig_id *id);
/* kvmig_pager_capacity() - pages in all. Return: 0, or -ENOTSUP (no capacity op). */
KVMIG_API int kvmig_pager_capacity(struct kvmig_pager *p, uint32_t *n_pages);
/* The digest_get / digest_put ops. Return: 0, -ENOTSUP (the pager keeps no
 * digests: get then says gen 0), -EINVAL (a page out of range). */
KVMIG_API int kvmig_pager_digest_get(struct kvmig_pager *p, uint32_t ix,
				     struct kvmig_page_digest *d);
KVMIG_API int kvmig_pager_digest_put(struct kvmig_pager *p, uint32_t ix,
				     const struct kvmig_page_digest *d);
KVMIG_API int kvmig_pager_record_create(struct kvmig_pager *p, const struct kvmig_record *rec);
/*
 * kvmig_pager_record_set() - move record @id from @from to @to. Only the
 * protocol's edges are legal: SENDING -> DEPARTED | COMMITTED and
 * RECEIVING -> PREPARED -> ACTIVATED; any other is -EINVAL, checked here for
 * every pager. Return: 0, -EINVAL, -ESTALE (not in @from), -ENOENT.
 */
KVMIG_API int kvmig_pager_record_set(struct kvmig_pager *p, const struct kvmig_id *id,
				     enum kvmig_record_state from, enum kvmig_record_state to);
KVMIG_API int kvmig_pager_record_tag(struct kvmig_pager *p, const struct kvmig_id *id,
				     const char *const *ids, uint32_t n);
KVMIG_API int kvmig_pager_record_install(struct kvmig_pager *p, const struct kvmig_id *id,
					 const struct kvmig_seq *seqs, uint32_t n);
KVMIG_API int kvmig_pager_record_end(struct kvmig_pager *p, const struct kvmig_id *id,
				     enum kvmig_record_state from, int commit);
KVMIG_API int kvmig_pager_record_disown(struct kvmig_pager *p, const struct kvmig_id *id);
/*
 * kvmig_pager_records() - every migration record of @p into a malloc'd
 * array (caller frees; NULL when there are none). Return: 0 and *recs, *n.
 */
KVMIG_API int kvmig_pager_records(struct kvmig_pager *p, struct kvmig_record **recs,
				  uint32_t *n);
/* kvmig_pager_gc() - the gc op; @st may be NULL. */
KVMIG_API int kvmig_pager_gc(struct kvmig_pager *p, struct kvmig_gc_stats *st);

/*
 * kvmig_pager_with_paused() - the pause guard: pause @p, run @fn(@p, @arg),
 * then resume @p whether or not @fn failed.
 * Return: @fn's error if it failed; otherwise resume's error, or @fn's
 * non-negative result. If pause itself fails, @fn is not run.
 */
KVMIG_API int kvmig_pager_with_paused(struct kvmig_pager *p,
				      int (*fn)(struct kvmig_pager *p, void *arg), void *arg);

/*
 * kvmig_pager_open() - open a pager from a spec string: "shm:NAME" attaches
 * to a shared-memory synthetic pager (kvmig/synth.h). Return: as
 * kvmig_synth_attach(), or -EINVAL for an unknown spec.
 */
KVMIG_API int kvmig_pager_open(const char *spec, struct kvmig_pager **ret);

#ifdef __cplusplus
}
#endif
#endif
