/* SPDX-License-Identifier: MIT */
/*
 * kvmig/migrate.h - move a pager's pages and sequences to another process or
 * host: the receiver allocates destination pages and pulls the bytes straight
 * into them, verifies every page against the sender's XXH3-128 digests,
 * installs the sequences and commits. On any failure the source resumes
 * unchanged and the destination installs nothing. docs/PROTOCOL.md has the
 * wire protocol, docs/ARCHITECTURE.md the data flow.
 */
#ifndef KVMIG_MIGRATE_H
#define KVMIG_MIGRATE_H

#include <kvmig/common.h>
#include <kvmig/pager.h>

#ifdef __cplusplus
extern "C" {
#endif

enum kvmig_transport {
	KVMIG_TRANSPORT_TCP = 0, /* any machine: reads become request / response over TCP */
	KVMIG_TRANSPORT_RDMA,    /* verbs over librdmacm: the receiver RDMA READs the pages */
	KVMIG_TRANSPORT_AUTO,    /* rdma when an RDMA device serves the address, else tcp */
};

/*
 * kvmig_addr_check() - whether @addr is an address kvmig takes: HOST:PORT or
 * [IPV6]:PORT, a port of 0-65535 (the host is not resolved). Return: 0, or
 * -EINVAL with a message saying what is wrong.
 */
KVMIG_API int kvmig_addr_check(const char *addr);

/* Return: "tcp", "rdma", "auto", or NULL for a value that is not a transport. */
KVMIG_API const char *kvmig_transport_name(enum kvmig_transport t);
/* Return: 0 and *out, or -EINVAL (with a message) if @name is not a transport. */
KVMIG_API int kvmig_transport_parse(const char *name, enum kvmig_transport *out);

enum kvmig_migrate_mode {
	KVMIG_MODE_MOVE = 0, /* after commit the source removes the sequences, frees their pages */
	KVMIG_MODE_COPY,     /* the source keeps everything */
};

/* What a progress callback is told. */
enum kvmig_event_type {
	KVMIG_EVENT_LISTENING, /* receiver: bound, waiting for a sender (addr is set) */
	KVMIG_EVENT_PHASE,     /* a protocol phase begins (phase is set) */
	KVMIG_EVENT_PROGRESS,  /* pages / bytes moved so far */
};

struct kvmig_event {
	enum kvmig_event_type type;
	const char *phase;     /* "connect", "handshake", "offer", "round" (live: each
				* pre-copy round after round 0), "pause", "register",
				* "transfer", "verify", "install", "commit", "resume" */
	const char *addr;      /* LISTENING: "host:port" actually bound */
	const char *transport; /* "tcp" or "rdma" once chosen (LISTENING, PHASE connect on) */
	uint32_t pages_done;   /* pages whose bytes arrived (receiver) or were served
				* (sender, approximate: counts bytes / page size) */
	uint32_t pages_total;  /* pages offered so far */
	uint64_t bytes_done;
	uint64_t bytes_total;
};

struct kvmig_migrate_opts {
	enum kvmig_transport transport; /* default tcp */
	enum kvmig_migrate_mode mode;   /* sender only; default move */
	/* Sender only: migrate just these sequences (and their pages, a shared
	 * page once). NULL: every sequence. Allocated pages no sequence uses
	 * are not migrated. */
	const char *const *seq_ids;
	uint32_t n_seq_ids;
	uint32_t queue_depth;      /* receiver: reads in flight; default 32, 1..1024 */
	uint32_t max_read_bytes;   /* receiver: bytes per read; default 1 MiB, 4 KiB..16 MiB */
	uint32_t timeout_ms;       /* every wait on the peer; default 30000 */
	uint32_t accept_timeout_ms; /* receiver: wait for a sender; 0 (default) = forever */
	int verify;                /* hash and compare every page; default 1. 0 only for
				    * benchmarks; both sides must agree */
	/* Progress callback (may be NULL), called from the migrating thread. */
	void (*on_event)(void *arg, const struct kvmig_event *ev);
	void *event_arg;
	uint32_t progress_interval_ms; /* minimum gap between PROGRESS events; default 100 */
	/* Shared secret (kvmig's --token-file), at least 16 bytes, or NULL.
	 * Both sides need the same one, or neither: each proves it has it
	 * (HMAC-SHA-256 challenge-response, docs/SECURITY.md) before the sender
	 * pauses, registers memory or sends a key; else -EACCES. */
	const void *token;
	size_t token_len;
	/*
	 * Sender only: live migration (docs/PROTOCOL.md, "Live"). Pre-copy
	 * rounds run while the engine keeps decoding: round 0 offers every page
	 * of the sequences, each later round the pages whose generation changed
	 * since their last offer and the new ones. Once the dirty bytes would
	 * move within max_downtime_ms at the last round's bandwidth, or after
	 * max_rounds pre-copy rounds, the pager is paused for a final round with
	 * what is still dirty, the digests of the paused state and the
	 * sequences. Only pages of the sequences move (not unreferenced ones).
	 */
	int live;                  /* default 0: stop-and-copy */
	uint32_t max_downtime_ms;  /* default 20 */
	uint32_t max_rounds;       /* pre-copy rounds, 1..KVMIG_MAX_ROUNDS; default 8 */
	/* A file descriptor that becomes readable to stop the migration (a
	 * signal handler writes to a pipe): it aborts as any failure does,
	 * with -ECANCELED, unless the decision was taken. -1 (default): none. */
	int cancel_fd;
	/* Threads hashing. Sender: the pages whose digests were not kept
	 * ahead, while the main thread serves the reads. Receiver: 1 hashes
	 * each read as it lands on the main thread; more hash each landed page
	 * on a pool of that many while the main thread keeps reading. 0
	 * (default): what the machine can spare, its online CPUs less one (at
	 * least 1, at most 8). */
	uint32_t hash_threads;
	/*
	 * Several paths (docs/PROTOCOL.md, "Several paths"). Sender: this many
	 * connections to each address the receiver names for them (TCP
	 * streams, verbs queue pairs); reads are striped over all of them and
	 * a path that fails aborts the migration. 0 or 1 (default): one
	 * connection. At most KVMIG_MAX_PATHS in all; the receiver may grant
	 * fewer per address.
	 */
	uint32_t paths;
	/* Receiver: the hosts (addresses; comma-separated, at most
	 * KVMIG_MAX_PATHS) whose ephemeral ports take the sender's extra
	 * connections, one per device to stripe over several devices. NULL
	 * (default): the host the sender reached. */
	const char *path_hosts;
};

#define KVMIG_MAX_PATHS 8u
#define KVMIG_MAX_ROUNDS 64u
#define KVMIG_MAX_HASH_THREADS 64u

/* What a resolution did with migration records (see kvmig_migrate_resolve_pair). */
struct kvmig_resolve_stats {
	uint32_t activated; /* destination records activated: the sequences run there now */
	uint32_t finished;  /* committed records closed (a source released its copy) */
	uint32_t aborted;   /* aborted: a source's sequences run again, a destination's are gone */
	uint32_t in_doubt;  /* left as they are: the other side must move first, or its record
			     * is needed */
	uint32_t in_progress; /* left as they are: a live process drives them (not in doubt) */
};

/* One round of a migration: what was offered and how long it took. */
struct kvmig_round_stats {
	uint32_t pages;
	uint64_t bytes;
	double seconds; /* planning to the receiver's ROUND; the final round: pause to COMMIT */
};

/* kvmig_migrate_opts_init() - set the defaults documented above. */
KVMIG_API void kvmig_migrate_opts_init(struct kvmig_migrate_opts *opts);

/*
 * kvmig_migrate_opts_check() - whether a migration would take @opts: 0, or
 * what kvmig_migrate_send / _recv would refuse them with (-EINVAL naming the
 * option, -EPROTONOSUPPORT for a transport not built), so a long-running
 * receiver refuses a bad option when it starts, not at every migration.
 */
KVMIG_API int kvmig_migrate_opts_check(const struct kvmig_migrate_opts *opts);

struct kvmig_migrate_stats {
	uint32_t pages;          /* pages moved */
	uint32_t seqs;           /* sequences moved */
	uint64_t bytes;          /* page bytes moved (K + V), re-reads excluded */
	uint32_t pages_verified; /* pages whose digests were compared and matched */
	uint32_t rereads;        /* pages read a second time after a digest mismatch */
	uint32_t reads;          /* receiver: reads posted (extents contiguous on both
				  * sides are read in one piece, up to max_read_bytes) */
	uint32_t pages_freed;    /* sender, move mode: source pages freed after commit */
	double seconds;          /* connect / accept to commit */
	double transfer_seconds; /* first offer to last page verified */
	double pause_seconds;    /* sender: pause to resume */
	double register_seconds; /* time spent registering page memory */
	uint32_t regions_reused; /* receiver, rdma: destination regions still registered
				  * from an earlier migration on the same listener */
	char transport[8];       /* "tcp" or "rdma": the provider used */
	/* Sender: the rounds, the last one the final (paused) round. A
	 * stop-and-copy migration has one. */
	uint32_t n_rounds;
	struct kvmig_round_stats round[KVMIG_MAX_ROUNDS + 1];
	uint64_t bytes_sent;     /* sender: page bytes offered over every round */
	struct kvmig_id migration; /* the migration's id (its records carry it) */
	/* Records of earlier migrations between the same two pagers that the
	 * handshake resolved (docs/PROTOCOL.md, "Crash safety"). */
	struct kvmig_resolve_stats resolved;
	/* Receiver: 1 when the sender did not confirm it released its copy;
	 * the record stays (activated) until a later exchange or resolution. */
	int unconfirmed;
	/* Sender: pages whose digests the pager kept ahead (kvmig_hash_ahead,
	 * or an earlier migration), and pages this migration hashed itself. */
	uint32_t digests_ahead;
	uint32_t pages_hashed;
	uint32_t hash_threads;   /* threads that hashed (receiver: 1 means as reads land,
				  * more: landed pages on a pool of that many) */
	uint32_t paths;          /* connections the reads were striped over (1: one) */
};

/*
 * kvmig_migrate_send() - connect to a receiver at @addr ("host:port"),
 * pause @p, offer its pages (all, or those of opts->seq_ids), serve the
 * receiver's reads from the page memory, send the digests and sequences, and
 * on COMMIT remove the migrated sequences and free the pages no remaining
 * sequence uses (move mode); then resume @p. On any failure @p is resumed
 * with its pages and sequences unchanged, and an ABORT is sent if the peer is
 * still there. @opts may be NULL (defaults); @stats may be NULL.
 *
 * The commit (docs/PROTOCOL.md, "Crash safety"): when the receiver says it
 * holds everything (prepared), the decision is one store in @p's migration
 * record: move mode marks the sequences departed (not runnable, pages kept),
 * copy mode committed. The pager resumes; once the receiver confirms it
 * activated them, the sender releases its copy (move: removes them and frees
 * the pages no remaining sequence uses) and closes the record.
 *
 * Return: 0 on commit; -EPROTO (meta / layout mismatch), -EBADMSG (a
 * malformed or out-of-order peer message, or a peer that is not kvmig),
 * -ENOSPC (destination out of pages), -EIO (a page failed verification at
 * the destination), -ENOENT (an unknown sequence id), -ETIMEDOUT (peer
 * silent), -ECONNRESET / -ECONNREFUSED / -EPIPE (peer gone), -ECONNABORTED
 * (peer aborted for another reason), -EFAULT (the peer asked for memory
 * outside this migration), -ECANCELED (opts->cancel_fd), -ENOTCONN (the
 * migration committed but the receiver did not confirm it activated the
 * sequences: they stay departed here, not running, until resolved).
 * kvmig_last_error() says more.
 * Thread-safety: @p may be used by its engine concurrently; one migration per
 * pager at a time.
 */
KVMIG_API int kvmig_migrate_send(struct kvmig_pager *p, const char *addr,
				 const struct kvmig_migrate_opts *opts,
				 struct kvmig_migrate_stats *stats);

struct kvmig_listener;

/*
 * kvmig_listener_open() - bind and listen on @addr ("host:port"; port 0
 * picks a free one). Return: 0 and *ret, -EINVAL (bad address), or a socket
 * errno (-EADDRINUSE, ...).
 */
KVMIG_API int kvmig_listener_open(const char *addr, const struct kvmig_migrate_opts *opts,
				  struct kvmig_listener **ret);
/* kvmig_listener_addr() - the bound "host:port"; owned by the listener. */
KVMIG_API const char *kvmig_listener_addr(const struct kvmig_listener *l);
/*
 * Resolution: after a process died during a migration, its outcome is in
 * the two pagers' records, never in an exit status (docs/PROTOCOL.md,
 * "Crash safety"). Each side's record is applied from the other's, so that
 * no sequence ends on neither side or runnable on both:
 *   destination prepared, source departed / committed -> activate;
 *   destination prepared, source has no record        -> abort (remove);
 *   source departed / committed, destination activated -> close the source
 *     (move: remove the sequences, free the pages);
 *   destination activated, source has no record       -> close it;
 *   source departed, destination has no record        -> abort (run again).
 * A record whose process is alive is left to it. A restarted kvmig_migrate_send
 * / kvmig_migrate_accept does the same with its peer in the handshake.
 *
 * kvmig_migrate_resolve_pair() - both pagers are reachable here (one host):
 * dead processes' leftovers are reclaimed in both (gc), then every record
 * of one naming the other is resolved. @st may be NULL.
 * Return: 0 (st->in_doubt says what is left), or a pager error.
 */
KVMIG_API int kvmig_migrate_resolve_pair(struct kvmig_pager *a, struct kvmig_pager *b,
					 struct kvmig_resolve_stats *st);
/*
 * kvmig_migrate_resolve_record() - one record of @p, given the state of
 * the other side's record of the same migration as its pager reports it
 * (`kvmig pager status` on the other host; KVMIG_REC_NONE when it has
 * none). The caller vouches for @peer_state: it must be read after this
 * side's record reached its current state.
 * Return: 0 (st says what was done; nothing when the other side must move
 * first), -ENOENT (no such record), -EBUSY (a live process drives it).
 */
KVMIG_API int kvmig_migrate_resolve_record(struct kvmig_pager *p, const struct kvmig_id *migration,
					   enum kvmig_record_state peer_state,
					   struct kvmig_resolve_stats *st);

/* kvmig_listener_transport() - "tcp" or "rdma": what @l listens with. */
KVMIG_API const char *kvmig_listener_transport(const struct kvmig_listener *l);
/* kvmig_listener_close() - close and set *l NULL; NULL-safe. */
KVMIG_API void kvmig_listener_close(struct kvmig_listener **l);

/*
 * kvmig_migrate_accept() - accept one sender on @l and receive its migration
 * into @p: check meta and layout, allocate destination pages, read every
 * offered page straight into them (queue_depth reads in flight), hash each
 * page as its read completes and compare with the sender's digest (one
 * re-read on mismatch), then install the sequences remapped to @p's page
 * indices and commit. On failure every page allocated here is freed and
 * nothing is installed.
 *
 * The commit (docs/PROTOCOL.md, "Crash safety"): the sequences are installed
 * as pending under a migration record, the record is marked prepared, and
 * only the sender's decision activates them.
 *
 * Return: 0 on commit; the errors of kvmig_migrate_send (-EPROTO, -ENOSPC,
 * -EIO naming the page, -ETIMEDOUT, -ECONNRESET, ...), -EEXIST (a sequence id
 * is already installed here), -ECANCELED (opts->cancel_fd), or -ENOTCONN
 * when the sender vanished after this side prepared but before its decision
 * arrived: the sequences then stay here as pending (not running) under the
 * prepared record, "in doubt", until resolved from the sender's record.
 */
KVMIG_API int kvmig_migrate_accept(struct kvmig_listener *l, struct kvmig_pager *p,
				   const struct kvmig_migrate_opts *opts,
				   struct kvmig_migrate_stats *stats);

/*
 * Several migrations into one pager at once (an agent): one thread accepts
 * connections, each is received on a thread of its own.
 *
 * kvmig_listener_accept() - wait at most @timeout_ms (-1: forever) for one
 * sender on @l, before any message. Return: 0 and *ret, -ETIMEDOUT,
 * -ECANCELED once @cancel_fd (if >= 0) is readable, or a socket error.
 */
struct kvmig_conn;
KVMIG_API int kvmig_listener_accept(struct kvmig_listener *l, int timeout_ms, int cancel_fd,
				    struct kvmig_conn **ret);
/* kvmig_conn_peer() - the sender's "host:port"; owned by the connection. */
KVMIG_API const char *kvmig_conn_peer(const struct kvmig_conn *c);
/* kvmig_conn_close() - close a connection not received on; set *c NULL; NULL-safe. */
KVMIG_API void kvmig_conn_close(struct kvmig_conn **c);
/*
 * kvmig_migrate_accept_conn() - kvmig_migrate_accept on a connection from
 * kvmig_listener_accept() on @l: takes it (closed, *c set NULL, whatever the
 * outcome). Receivers on connections from one listener may run on several
 * threads at once, each into its own pages.
 */
KVMIG_API int kvmig_migrate_accept_conn(struct kvmig_listener *l, struct kvmig_conn **c,
					struct kvmig_pager *p, const struct kvmig_migrate_opts *opts,
					struct kvmig_migrate_stats *stats);

/* kvmig_migrate_recv() - kvmig_listener_open + kvmig_migrate_accept + close. */
KVMIG_API int kvmig_migrate_recv(struct kvmig_pager *p, const char *addr,
				 const struct kvmig_migrate_opts *opts,
				 struct kvmig_migrate_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
