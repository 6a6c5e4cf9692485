/* SPDX-License-Identifier: MIT */
/*
 * transport/engine.h - what the sender (send.c) and receiver (recv.c) halves
 * of the migration engine share: the connection, control-message waits with
 * the per-wait timeout, ABORT in both directions, the handshake and progress
 * events. Internal: not installed.
 */
#ifndef KVMIG_ENGINE_H
#define KVMIG_ENGINE_H

#include <kvmig/migrate.h>

#include "provider.h"
#include "wire.h"

/* Largest OFFER / DIGESTS chunk the sender builds (well inside the limits). */
#define KVMIG_OFFER_CHUNK 1024u

struct kvmig_listener {
	const struct xport_ops *ops;
	struct xport_listener *impl;
	uint64_t pager_serial; /* kvmig_pager_serial() of the last one received into */
};

struct engine {
	struct kvmig_migrate_opts o;
	const struct xport_ops *ops;
	struct xport_conn *c;
	struct kvmig_wbuf wb;     /* frames being built */
	struct kvmig_event ev;    /* last event, updated in place */
	double last_event;        /* when the last PROGRESS event was sent */
	int peer_aborted;         /* the peer sent ABORT: do not answer with one */
	/* Refresh e->ev's counters before a PROGRESS event (may be NULL). */
	void (*refresh)(struct engine *e);
	/* Authentication (opts.token): the MAC key and both sides' nonces. */
	int auth;
	uint8_t key[32], nonce[KVMIG_AUTH_LEN], peer_nonce[KVMIG_AUTH_LEN];
};

/* Copy @opts (or the defaults) into @e and check the values. Return 0 or -EINVAL. */
int engine_init(struct engine *e, const struct kvmig_migrate_opts *opts);
void engine_fini(struct engine *e);

/*
 * The provider for @addr under transport @t: auto asks rdma_cm whether an
 * RDMA device serves the address (@passive: to listen on it).
 */
const struct xport_ops *engine_pick(enum kvmig_transport t, const char *addr, int passive);

/* Send what e->wb holds and empty it. A connection the peer closed is
 * reported with the peer's ABORT reason when one arrived (engine_salvage_abort). */
int engine_flush(struct engine *e);

/* After @err (peer gone): return the peer's ABORT as -errno if it sent one
 * before going, else @err. Discards other queued messages. */
int engine_salvage_abort(struct engine *e, int err);

/*
 * Wait for the next control message, making provider progress meanwhile
 * (the tcp sender serves reads there). Gives up after opts.timeout_ms
 * without hearing from the peer. @wake_fd >= 0: return 0 with *m NULL when it
 * becomes readable. An ABORT from the peer becomes its errno with the peer's
 * text. Return: 1 with *m set (caller frees with engine_msg_free), 0 (woken),
 * or -errno.
 */
int engine_wait_msg(struct engine *e, int wake_fd, struct xport_msg **m);
void engine_msg_free(struct xport_msg **m);

/* Turn a received ABORT into -errno with "peer aborted: TEXT" recorded. */
int engine_peer_abort(struct engine *e, const struct xport_msg *m);

/* An unexpected message type: -EPROTO naming it and what was expected. */
int engine_unexpected(const struct xport_msg *m, const char *expected);

/*
 * Best effort: tell the peer why we stop (kvmig_last_error() of @err), unless
 * the peer aborted first or the connection is gone. Returns @err.
 */
int engine_abort(struct engine *e, int err);

/*
 * Authentication, when e->auth (docs/SECURITY.md). The sender sends HELLO +
 * CHALLENGE; the receiver answers HELLO + CHALLENGE + PROOF; the sender checks
 * that PROOF before it pauses or registers anything and sends its own; the
 * receiver checks it before it reads anything else.
 *
 * engine_auth_agree(): both HELLOs say whether their side has a secret;
 * they must agree, else -EACCES naming the side that lacks one.
 * engine_auth_challenge(): a fresh nonce into e->wb.
 * engine_auth_take_challenge(): wait for the peer's CHALLENGE.
 * engine_auth_prove(): our PROOF for @role (0 sender, 1 receiver) into e->wb.
 * engine_auth_check(): wait for the peer's PROOF and check it (-EACCES).
 */
int engine_auth_agree(struct engine *e, const struct kvmig_msg_hello *peer);
int engine_auth_challenge(struct engine *e);
int engine_auth_take_challenge(struct engine *e);
int engine_auth_prove(struct engine *e, int role);
int engine_auth_check(struct engine *e, int peer_role);

/* Build our HELLO from the pager. */
int engine_hello(struct kvmig_pager *p, uint8_t role, uint8_t flags, struct kvmig_msg_hello *h);
/* Compare the peer's HELLO with ours: -EPROTO naming the difference. */
int engine_hello_match(const struct kvmig_msg_hello *mine, const struct kvmig_msg_hello *peer);

void engine_phase(struct engine *e, const char *phase);
/* Emit a PROGRESS event if the interval passed (or @force). */
void engine_progress(struct engine *e, int force);

#endif
