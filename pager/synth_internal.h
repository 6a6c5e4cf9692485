/* SPDX-License-Identifier: MIT */
/*
 * pager/synth_internal.h - the synthetic pager's mapping and the functions
 * its three files share: synth.c (the arena: create / attach / remove,
 * extents, page contents, decode), synth_book.c (the lock, processes,
 * pages, sequences) and synth_records.c (migration records, gc).
 *
 * Everything lives in one mapping (anonymous memory, or a POSIX shm object
 * other processes attach to), guarded by one process-shared robust mutex.
 *
 * Crash consistency. A process may die at any instruction, the lock held
 * or not. The state is split in two:
 *   primary:  slot states and contents, page-table chunks, page owners,
 *             holders (processes), records, the txn word;
 *   derived:  refcnt[], the free-chunk stack, n_seqs, n_allocated,
 *             pause_depth: rebuilt from the primary state by recover()
 *             whenever the lock comes back EOWNERDEAD.
 * Every operation changes the primary state so that each single store
 * leaves it meaning "before" or "after":
 *   - a new sequence is written into a FREE slot and made visible by one
 *     store of its state; a multi-sequence install or remove marks slots
 *     NEW / DEAD under hdr->txn and commits with one store of txn = 0
 *     (recover() rolls an open txn back);
 *   - a sequence's length and fill are one 64-bit store, so appending a
 *     page or a token is one store after the bytes and the chunk entry;
 *   - pages belong to the process that allocated them (or that removed
 *     their last sequence) until a sequence uses them, so a page a dead
 *     process left behind is found and freed (gc);
 *   - a migration record changes state with one store, and what a state
 *     means for its tagged sequences (pending, departed) is derived from
 *     it, so a migration's decision is atomic whatever else was done.
 */
#ifndef KVMIG_SYNTH_INTERNAL_H
#define KVMIG_SYNTH_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <kvmig/pager.h>
#include <kvmig/synth.h>

#define SYNTH_MAGIC 0x31595347494d564bull /* "KVMIGSY1" little-endian */
#define SYNTH_VERSION 5u
#define SYNTH_MAX_HOLDERS 64u /* processes attached, pausing or owning pages at once */
#define SYNTH_MAX_RECORDS 64u /* migration records */
#define SYNTH_CHUNK_IXS 15u   /* page-table entries per chunk (64-byte chunks) */
#define SYNTH_LOCK_MS 2000    /* a lock held longer than this: its holder is stuck */
#define SYNTH_NONE UINT32_MAX

/*
 * Between two stores whose order a death must see (the txn word, then the
 * slots it covers): the compiler may not move one across it. A death is an
 * asynchronous stop of this thread, which is exactly what a signal fence
 * orders for; x86 and arm64 keep a thread's own stores in program order
 * for what another process reads after it died.
 */
#define SYNTH_STEP() __atomic_signal_fence(__ATOMIC_SEQ_CST)

enum slot_state {
	SLOT_FREE = 0,
	SLOT_USED,  /* an installed sequence */
	SLOT_NEW,   /* written by the open txn: FREE if it rolls back */
	SLOT_DEAD,  /* removed by the open txn: USED if it rolls back */
};

/* Page owners (owner[ix]). A page is allocated iff its owner is not FREE. */
#define OWNER_FREE 0u
#define OWNER_PAGER 1u /* sequences use it; no process answers for it */
#define OWNER_HOLDER(h) (2u + (uint32_t)(h))

struct synth_slot {
	uint32_t state;  /* enum slot_state */
	uint32_t rec;    /* 0, or the index + 1 of the record it is tagged with */
	uint64_t len;    /* n_pages << 32 | fill_in_last_page: one store */
	uint32_t head;   /* first chunk of the page table (when n_pages > 0) */
	char id[KVMIG_SEQ_ID_MAX + 1];
};

struct synth_chunk {
	uint32_t next;
	uint32_t ix[SYNTH_CHUNK_IXS];
};

/* A process using the pager: attached handles, pauses, pages it owns. */
struct synth_holder {
	int32_t pid;     /* 0: free entry */
	uint64_t start;  /* start time (clock ticks after boot, + 2), see proc_start() */
	uint32_t pauses;
	uint32_t attached;
};

struct synth_rec {
	uint32_t state;  /* enum kvmig_record_state; KVMIG_REC_NONE: free entry */
	uint32_t role;
	uint32_t owner;  /* holder index + 1 of the process driving it, or 0 */
	uint32_t move;
	struct kvmig_id id, peer_pager;
	char peer_addr[64];
	uint64_t created;
};

struct synth_hdr {
	uint64_t magic;  /* written last when the pager is made */
	uint32_t version;
	uint32_t layout;
	struct kvmig_cache_meta meta;
	uint32_t capacity, max_seqs, n_chunks;
	uint64_t half_bytes;
	uint64_t off_owner, off_gen, off_refcnt, off_slots, off_chunks, off_free_chunks, off_data;
	uint64_t off_digest;
	uint64_t total_bytes;
	struct kvmig_id pager_id;
	pthread_mutex_t lock;
	/* Guarded by lock; primary state. */
	int32_t lock_pid;  /* who holds the lock now (read unlocked for messages) */
	uint32_t txn;      /* 1: an install / remove is under way */
	uint32_t removed;  /* kvmig_synth_remove(force) marked it */
	struct synth_holder holders[SYNTH_MAX_HOLDERS];
	struct synth_rec recs[SYNTH_MAX_RECORDS];
	/* Guarded by lock; derived (recover() rebuilds them). */
	uint32_t pause_depth, n_seqs, n_allocated, n_free_chunks;
};

/*
 * A page's digests kept ahead (kvmig_page_digest). Written under the lock:
 * gen = 0, the digests, then gen (release); read without it: gen (acquire),
 * the digests, gen again; torn when the two differ. A death mid-write
 * leaves gen 0: no entry.
 */
struct synth_digest {
	uint64_t gen;
	uint8_t k[16], v[16];
};

struct synth {
	struct synth_hdr *hdr;
	uint64_t map_len;
	uint32_t *owner;
	uint64_t *gen;
	struct synth_digest *dig;
	uint32_t *refcnt;
	struct synth_slot *slots;
	struct synth_chunk *chunks;
	uint32_t *free_chunks;
	uint8_t *data;
	int registered;  /* counted in this process's holder entry (attached) */
	int reaping;     /* inside synth_reap / synth_recover: do not reap again */
	char name[208];  /* "shm:NAME" or "in-process pager", for messages */
};

extern const struct kvmig_pager_ops synth_ops;

/* ---- synth_book.c ---- */

/* Take the lock within SYNTH_LOCK_MS (recovering after a dead holder): 0,
 * or -EBUSY naming the process that holds it. */
int synth_lock(struct synth *s);
void synth_unlock(struct synth *s);
/* Rebuild the derived state and finish or undo what a dead lock holder left. */
void synth_recover(struct synth *s);

/* When process @pid started (proc_start), 0 when it is gone, 1 when unknown. */
uint64_t synth_proc_start(int32_t pid);
/* Under the lock: this process's holder entry, made if @make; -1 if none
 * (or -EUSERS with a message when the table is full). */
int synth_holder_self(struct synth *s, int make);
/* Under the lock: reclaim what dead processes left (gc). */
void synth_reap(struct synth *s, struct kvmig_gc_stats *st);

/* Under the lock: the slot of installed sequence @id, or NULL. */
struct synth_slot *synth_find_slot(struct synth *s, const char *id);
uint32_t synth_slot_pages(const struct synth_slot *sl);
uint32_t synth_slot_fill(const struct synth_slot *sl);
/* Under the lock: entry @j of @sl's page table. */
uint32_t synth_slot_page(const struct synth *s, const struct synth_slot *sl, uint32_t j);
/* Under the lock: whether the engine may run @sl (see enum kvmig_seq_state). */
enum kvmig_seq_state synth_slot_state(const struct synth *s, const struct synth_slot *sl);
/* Under the lock: install @seqs (tagged with record index @rec + 1, or 0). */
int synth_install_locked(struct synth *s, const struct kvmig_seq *seqs, uint32_t n, uint32_t rec);
/* Under the lock: remove every sequence tagged with record @rec and free
 * the pages no sequence uses any more; until they are free they belong to
 * holder @owner (a death half way leaves them to gc), or -1. */
void synth_remove_tagged(struct synth *s, uint32_t rec, int owner);
/* Under the lock: the slots of installed sequences @ids into @out, all or
 * -ENOENT / -EINVAL (listed twice). */
int synth_lookup(struct synth *s, const char *const *ids, uint32_t n, struct synth_slot **out);
/*
 * Under the lock: allocate a page for sequence @sl and write it into the
 * page table after its last entry, not yet counted: the caller makes it the
 * sequence's with one synth_set_len(). Return: the page index, or -errno.
 */
int synth_append_page(struct synth *s, struct synth_slot *sl);
/* One store of a sequence's length and fill. */
void synth_set_len(struct synth_slot *sl, uint32_t n_pages, uint32_t fill);

/* ---- synth_records.c ---- */

/* Under the lock: finish applying the records a death left ABORTING /
 * FINISHING, and clear tags of records that are gone. */
void synth_records_recover(struct synth *s);
/* Under the lock: a record whose driving process (holder @dead) died. */
void synth_record_orphaned(struct synth *s, uint32_t r, int dead, struct kvmig_gc_stats *st);

int synth_identity(void *impl, struct kvmig_id *id);
int synth_record_create(void *impl, const struct kvmig_record *rec);
int synth_record_set(void *impl, const struct kvmig_id *id, enum kvmig_record_state from,
		     enum kvmig_record_state to);
int synth_record_tag(void *impl, const struct kvmig_id *id, const char *const *ids, uint32_t n);
int synth_record_install(void *impl, const struct kvmig_id *id, const struct kvmig_seq *seqs,
			 uint32_t n);
int synth_record_end(void *impl, const struct kvmig_id *id, enum kvmig_record_state from,
		     int commit);
int synth_record_disown(void *impl, const struct kvmig_id *id);
int synth_records(void *impl, struct kvmig_record *out, uint32_t max, uint32_t *n);
int synth_gc(void *impl, struct kvmig_gc_stats *st);

/* The ops of synth_book.c the table in synth.c names. */
int synth_pause(void *impl);
int synth_resume(void *impl);
int synth_occupied(void *impl, uint32_t **ixs, uint32_t *n);
int synth_seqs(void *impl, struct kvmig_seq_list *out);
int synth_allocate(void *impl, uint32_t n, uint32_t *ixs);
int synth_free(void *impl, const uint32_t *ixs, uint32_t n);
int synth_install(void *impl, const struct kvmig_seq *seqs, uint32_t n);
int synth_remove(void *impl, const char *const *ids, uint32_t n);

#endif
