/* SPDX-License-Identifier: MIT */
/*
 * transport/recv_internal.h - the receiving half of a migration, split in
 * three: recv.c (the session: accept, handshake, the transfer loop, the
 * commit), recv_msgs.c (the sender's messages: REGIONS, OFFER, ROUND,
 * DIGESTS, FINAL) and recv_pages.c (the page map, the read scheduler,
 * streamed hashing and verification). Internal: not installed.
 */
#ifndef KVMIG_RECV_INTERNAL_H
#define KVMIG_RECV_INTERNAL_H

#include "cas/internal.h"
#include "transport/session.h"

#define MAX_HALF_EXTENTS (KVMIG_WIRE_MAX_EXTENTS / 2)

/*
 * Where an offered page is; recv_page_to() takes it from one state to the
 * next and refuses any other move. The sender's digest is apart (has_digest):
 * it may come before or after the bytes.
 *
 *   QUEUED ---> LANDED ---> VERIFIED      any ---> DROPPED
 *      ^          |
 *      +----------+  a mismatch (read once more), or live: offered again
 */
enum rpage_state {
	RP_QUEUED,   /* offered: waiting to be read, or being read */
	RP_LANDED,   /* every read landed (and was hashed, when verifying) */
	RP_VERIFIED, /* the bytes match the sender's digest */
	RP_DROPPED,  /* FINAL left it out: freed after the install (reads of it
		      * already posted still land) */
	RP_N_STATES
};

struct rpage {
	uint32_t src_ix, dst_ix;
	uint64_t ext_off;   /* first remote extent in the pool: K's then V's */
	uint32_t n_ext;
	uint32_t reads_left;
	uint8_t state;      /* enum rpage_state */
	uint8_t has_digest, attempts;
	uint32_t round;     /* round it was last offered in */
	uint8_t in_order;   /* every read so far landed at next_off */
	uint8_t hashed;     /* rk, rv are of the bytes that landed (LANDED only) */
	uint32_t epoch;     /* moves when the page is read again or dropped: a hash
			     * of an earlier landing is then discarded */
	int32_t stream;     /* pair of digest streams hashing reads as they land, or -1 */
	uint64_t next_off;  /* page-relative offset (K then V) the next read must have */
	struct kvmig_digest sk, sv; /* the sender's */
	struct kvmig_digest rk, rv; /* ours, of the bytes that landed */
};

#define MAX_LOCAL_REGIONS 64u /* memory regions of the destination pager */

struct rext {
	uint64_t addr, len;
	uint32_t key_ix; /* its registration's key, in r->keys */
};

/* One of the sender's registrations; the wire region first, so the wire's
 * comparator sorts these by address. */
struct rregion {
	struct kvmig_wire_region w;
	uint32_t key_ix; /* its key in r->keys */
};

/* A posted read and where its bytes sit in the page (K then V). */
struct rread {
	struct xport_read x;
	uint64_t off;
};

/* Where the next read of the page being posted starts. */
struct cursor {
	int active;
	uint32_t page;
	uint64_t poff;       /* page-relative offset of the next read */
	uint32_t ri, li;     /* remote / local extent */
	uint64_t roff, loff; /* offset inside them */
	uint32_t n_local;
	struct kvmig_extent local[2 * MAX_HALF_EXTENTS];
};

/*
 * Where the transfer is, as the sender's messages move it (recv_msgs.c: each
 * message's handler checks it is legal here, then moves it on).
 *
 *   OFFERS --ROUND--> ROUND --answered--> OFFERS     (live)
 *   OFFERS --DIGESTS--> DIGESTS                      (stop-and-copy)
 *   OFFERS, DIGESTS --FINAL--> FINAL
 */
enum recv_xfer {
	XFER_OFFERS,  /* REGIONS, OFFERs (live: round by round) and DIGESTS come */
	XFER_ROUND,   /* live: a ROUND came; answered once every page offered so far
		       * landed; nothing is offered meanwhile */
	XFER_DIGESTS, /* stop-and-copy: DIGESTS came, so every OFFER did: FINAL next */
	XFER_FINAL,   /* FINAL came: what is left is read and verified; nothing more
		       * may come */
};

/* Where the receiver is in the commit (docs/PROTOCOL.md, "Crash safety"). */
enum recv_state {
	RECV_HANDSHAKE, /* no record yet: a failure just ends */
	RECV_RECEIVING, /* record RECEIVING: pages allocated, read, verified; a failure
			 * aborts: pages freed, nothing installed */
	RECV_PENDING,   /* the sequences are installed as pending (not runnable) under
			 * the record; a failure still aborts (removes them) */
	RECV_PREPARED,  /* record PREPARED, the sender told: only its decision moves it on;
			 * a failure leaves it in doubt, pages kept */
	RECV_ACTIVATED, /* the decision arrived: the sequences run here */
	RECV_DONE,      /* the sender released its copy; the record is closed */
};

struct receiver {
	struct session ses;
	struct kvmig_pager *p;
	struct kvmig_msg_hello hello;
	enum recv_state state;
	struct kvmig_id mig, peer_pager;
	struct kvmig_resolve_stats resolved;
	int unconfirmed;
	/* The sender's registrations, sorted by address, and their keys in
	 * the order they came (an extent names its key by index: a key is up
	 * to KVMIG_WIRE_MAX_KEY bytes, an extent one of thousands). */
	struct rregion *rg;
	uint32_t n_rg;
	int have_regions;
	struct kvmig_rkey *keys;
	struct rpage *pg;
	uint32_t n, cap;
	struct rext *rx;
	uint64_t n_rx, cap_rx;
	uint32_t *slot;     /* open addressing: src ix -> index + 1 */
	uint32_t slot_cap;
	uint32_t *queue;    /* pages waiting to be read, a ring */
	uint32_t q_head, q_len, q_cap;
	struct cursor cur;
	struct rread *reads;
	struct xport_read **free_reads, **batch;
	/* Digest streams, two per page being read: hashing each read while its
	 * bytes are still in cache costs far less than a second pass. */
	struct kvmig_digest_stream **streams;
	int32_t *free_streams;
	uint32_t n_streams, n_free_streams;
	uint32_t n_free, inflight;
	struct kvmig_seq_list final;
	enum recv_xfer xfer;
	/* Live (HELLO flag): offers come in rounds; each ROUND is answered once
	 * every page offered so far has landed. */
	int live;
	int dropped_freed; /* the pages FINAL left out are freed already */
	struct kvmig_msg_round round;
	uint32_t n_in[RP_N_STATES]; /* pages in each state */
	uint32_t pages_done;        /* landings of an offer (progress), re-reads not counted */
	uint32_t rereads, n_reads;
	struct kvmig_region lregion[MAX_LOCAL_REGIONS]; /* this pager's memory */
	void *lreg[MAX_LOCAL_REGIONS];
	uint32_t n_lreg;
	double reg_seconds;
	uint32_t reg_reused;
	/* hash_threads > 1: landed pages are hashed whole on a pool of threads
	 * (recv_pages.c), their digests taken back by the transfer loop. */
	struct hash_pool *pool;
	uint32_t hash_threads;
};

/* ---- recv_pages.c ---- */

/* The pool's wake fd (readable when hashes are done), or -1 without a pool. */
int recv_pool_fd(const struct receiver *r);
/* Take the pool's finished hashes: compare each page that still waits for
 * it. 0, or a comparison's error. */
int recv_pool_drain(struct receiver *r);

/* Move page @idx to state @to (-EPROTO for a move the diagram does not have). */
int recv_page_to(struct receiver *r, uint32_t idx, enum rpage_state to);
/* A new page @idx enters the map as QUEUED. */
void recv_page_new(struct receiver *r, uint32_t idx);

/* The page offered as source index @ix: its index in r->pg, or -1. */
int recv_slot_find(const struct receiver *r, uint32_t ix);
/* Room in the map for @need pages. 0 or -ENOMEM. */
int recv_slot_grow(struct receiver *r, uint32_t need);
/* Map r->pg[@idx] by its source index. */
void recv_slot_add(struct receiver *r, uint32_t idx);
/* Queue page @idx for reading. 0 or -ENOMEM. */
int recv_enqueue(struct receiver *r, uint32_t idx);
/* Post reads until the queue depth is reached or nothing is left to read. */
int recv_fill_reads(struct receiver *r);
/* A read completed: count it, hash what landed, compare when both are here. */
int recv_on_read_done(struct receiver *r, struct xport_read *rd);
/* Bytes and digest of page @idx are both here: compare (re-read once). */
int recv_check_page(struct receiver *r, uint32_t idx);
/* Whether pages are compared as soon as bytes and digest are here. */
int recv_comparing(const struct receiver *r);
/* Reads, digest streams, the destination's registrations. */
int recv_setup(struct receiver *r);
/* Free what recv_setup() and the page map hold. */
void recv_pages_fini(struct receiver *r);

/* ---- recv_msgs.c ---- */

/* One control message from the sender, during the transfer. */
int recv_take_msg(struct receiver *r, struct xport_msg *m);
/* The sender's registrations (a live sender adds some each round). */
int recv_take_regions(struct receiver *r, const struct xport_msg *m);
/* Answer a pending ROUND once nothing is left to read. */
int recv_answer_round(struct receiver *r);

#endif
