/* SPDX-License-Identifier: MIT */
/*
 * transport/session.h - the migration session (struct session): what the
 * sender (send.c) and receiver (recv.c) halves share: the connection, control-message waits with
 * the per-wait timeout, ABORT in both directions, the handshake and progress
 * events. Internal: not installed.
 */
#ifndef KVMIG_SESSION_H
#define KVMIG_SESSION_H

#include <pthread.h>
#include <signal.h>

#include <kvmig/migrate.h>

#include "transport/provider.h"
#include "transport/wire.h"

/* Largest OFFER / DIGESTS chunk the sender builds (well inside the limits). */
#define KVMIG_OFFER_CHUNK 1024u

struct kvmig_listener {
	const struct xport_ops *ops;
	struct xport_listener *impl;
	pthread_mutex_t lock;  /* receivers on several threads: pager_serial, forget */
	uint64_t pager_serial; /* kvmig_pager_serial() of the last one received into */
};

/* An accepted connection before its first message (kvmig_listener_accept). */
struct kvmig_conn {
	const struct xport_ops *ops;
	struct xport_conn *c;
};

/* Which half of a migration this side is: HELLO's role byte. */
enum session_role {
	ROLE_SENDER = 0,
	ROLE_RECEIVER = 1,
};

/* The other half's name, and ours, for messages. */
static inline const char *role_name(enum session_role r)
{
	return r == ROLE_SENDER ? "sender" : "receiver";
}

static inline enum session_role role_other(enum session_role r)
{
	return r == ROLE_SENDER ? ROLE_RECEIVER : ROLE_SENDER;
}

struct session {
	struct kvmig_migrate_opts o;
	enum session_role role;
	double until;             /* > 0: no wait goes past this (the handshake's deadline) */
	const struct xport_ops *ops;
	struct xport_conn *c;
	struct kvmig_wbuf wb;     /* frames being built */
	struct kvmig_event ev;    /* last event, updated in place */
	double last_event;        /* when the last PROGRESS event was sent */
	int peer_aborted;         /* the peer sent ABORT: do not answer with one */
	uint32_t n_paths;         /* connections: 1, or the stripe's (paths.c) */
	/* Refresh ses->ev's counters before a PROGRESS event (may be NULL). */
	void (*refresh)(struct session *ses);
	/* Authentication (opts.token): the MAC key and both sides' nonces. */
	int auth;
	uint8_t key[32], nonce[KVMIG_AUTH_LEN], peer_nonce[KVMIG_AUTH_LEN];
};

/* Copy @opts (or the defaults) into @ses and check the values. Return 0 or -EINVAL. */
int session_init(struct session *ses, const struct kvmig_migrate_opts *opts,
		 enum session_role role);
/* The connection is up (ses->c): give it the timeout and the cancel fd. */
void session_connected(struct session *ses);
/* The handshake must be over within one timeout from now (session_handshake_done ends it). */
void session_handshake_begin(struct session *ses);
void session_handshake_done(struct session *ses);
void session_fini(struct session *ses);

/* A row of the provider table (providers.c). */
struct xport_provider {
	enum kvmig_transport transport;
	const char *name;
	const struct xport_ops *ops;
	/* For `auto`: 1 if this provider serves @addr (@passive: to listen
	 * on it); NULL: any address. */
	int (*serves)(const char *addr, int passive);
};
/* The provider table (transport/providers.c): its rows and their number. */
const struct xport_provider *xport_providers(size_t *n);
/* Whether transport @t has a row in this build (auto always has). */
int session_transport_built(enum kvmig_transport t);

/*
 * The provider for @addr under transport @t, from the table: auto takes the
 * first row whose probe says it serves the address (@passive: to listen).
 */
const struct xport_ops *session_pick(enum kvmig_transport t, const char *addr, int passive);

/* Send what ses->wb holds and empty it. A connection the peer closed is
 * reported with the peer's ABORT reason when one arrived (session_salvage_abort). */
int session_flush(struct session *ses);

/* After @err (peer gone): return the peer's ABORT as -errno if it sent one
 * before going, else @err. Discards other queued messages. */
int session_salvage_abort(struct session *ses, int err);

/*
 * Wait for the next control message, making provider progress meanwhile
 * (the tcp sender serves reads there). Gives up after opts.timeout_ms
 * without hearing from the peer. @wake_fd >= 0: return 0 with *m NULL when it
 * becomes readable. An ABORT from the peer becomes its errno with the peer's
 * text. Return: 1 with *m set (caller frees with session_msg_free), 0 (woken),
 * or -errno.
 */
int session_wait_msg(struct session *ses, int wake_fd, struct xport_msg **m);
void session_msg_free(struct xport_msg **m);

/* Turn a received ABORT into -errno with "peer aborted: TEXT" recorded. */
int session_peer_abort(struct session *ses, const struct xport_msg *m);

/* An unexpected message type: -EPROTO naming it and what was expected. */
int session_unexpected(const struct xport_msg *m, const char *expected);

/*
 * Best effort: tell the peer why we stop (kvmig_last_error() of @err), unless
 * the peer aborted first or the connection is gone. Returns @err.
 */
int session_abort(struct session *ses, int err);

/*
 * Authentication, when ses->auth (docs/SECURITY.md). The sender sends HELLO +
 * CHALLENGE; the receiver answers HELLO + CHALLENGE + PROOF; the sender checks
 * that PROOF before it pauses or registers anything and sends its own; the
 * receiver checks it before it reads anything else.
 *
 * session_auth_agree(): both HELLOs say whether their side has a secret;
 * they must agree, else -EACCES naming the side that lacks one.
 * session_auth_challenge(): a fresh nonce into ses->wb.
 * session_auth_take_challenge(): wait for the peer's CHALLENGE.
 * session_auth_prove(): our PROOF for @role into ses->wb.
 * session_auth_check(): wait for the peer's PROOF and check it (-EACCES).
 */
int session_auth_agree(struct session *ses, const struct kvmig_msg_hello *peer);
int session_auth_challenge(struct session *ses);
int session_auth_take_challenge(struct session *ses);
int session_auth_prove(struct session *ses, enum session_role role);
int session_auth_check(struct session *ses, enum session_role peer_role);

/* Build our HELLO from the pager (@mig: the migration's id, or NULL). */
int session_hello(struct kvmig_pager *p, enum session_role role, uint8_t flags,
		  const struct kvmig_id *mig, struct kvmig_msg_hello *h);
/* Compare the peer's HELLO with ours: -EPROTO naming the difference. */
int session_hello_match(const struct kvmig_msg_hello *mine, const struct kvmig_msg_hello *peer);

/*
 * Resolution (resolve.c): what to do with one of our records (@mine) given
 * the peer's record of the same migration (@peer; KVMIG_REC_NONE: it has
 * none); @peer_newer: the peer's state was read after ours reached its
 * state, so "none" is evidence. docs/PROTOCOL.md has the table.
 */
enum kvmig_resolve_act {
	RESOLVE_NONE,     /* leave it: the other side moves first, or a live process drives it */
	RESOLVE_ACTIVATE, /* destination: prepared -> activated */
	RESOLVE_ABORT,    /* apply abort and drop it */
	RESOLVE_END,      /* apply commit and drop it */
};
enum kvmig_resolve_act resolve_decide(const struct kvmig_record *mine,
				      enum kvmig_record_state peer, int peer_newer);
/* Apply @a to record @r of @p and count it; a step the pager refuses as
 * already taken by someone else is not an error. */
int resolve_apply(struct kvmig_pager *p, const struct kvmig_record *r, enum kvmig_resolve_act a,
		  struct kvmig_resolve_stats *st);
/* The state of migration @id in @recs whose peer is @peer_of_mine, or NONE. */
enum kvmig_record_state resolve_peer_state(const struct kvmig_record *recs, uint32_t n,
					   const struct kvmig_id *id,
					   const struct kvmig_id *peer_of_mine);

/*
 * In the handshake, with the peer authenticated: resolve the records of
 * @p that name the peer's pager @peer_pager with the peer's own (four
 * RECORDS messages, alternating, the sender's first; docs/PROTOCOL.md).
 */
int session_sync_records(struct session *ses, struct kvmig_pager *p,
			 const struct kvmig_id *peer_pager, struct kvmig_resolve_stats *st);

/* The state of migration @id's record in @p (KVMIG_REC_NONE: none, or the
 * records could not be read). A step the pager refused as stale may have
 * been taken by a resolver meanwhile: this says where it stands. */
enum kvmig_record_state session_record_state(struct kvmig_pager *p, const struct kvmig_id *id);

/* Test-only: SIGKILL this process at @point ($KVMIG_FAULT "die-POINT"), or
 * SIGSTOP it there ("stop-POINT"). */
#define SESSION_DIE(point)                                  \
	do {                                                  \
		if (kvmig_fault("die-" point, NULL))          \
			session_die();                         \
		if (kvmig_fault("stop-" point, NULL))         \
			raise(SIGSTOP);                        \
	} while (0)
void session_die(void);

/*
 * paths.c: a migration's extra connections, at the end of the handshake.
 * Sender (opts.paths > 1, its HELLO flagged KVMIG_HELLO_PATHS): ask, connect,
 * JOIN. Receiver (that flag seen): listen, answer, accept the JOINs. Both
 * then run over the stripe of all paths (ses->ops becomes kvmig_xport_stripe;
 * ses->ev.transport keeps the provider's name).
 */
int paths_wanted(const struct session *ses);
int paths_connect(struct session *ses);
int paths_accept(struct session *ses);

void session_phase(struct session *ses, const char *phase);
/* Emit a PROGRESS event if the interval passed (or @force). */
void session_progress(struct session *ses, int force);

#endif
