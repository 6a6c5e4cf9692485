/* SPDX-License-Identifier: MIT */
/*
 * transport/rdma_internal.h - what the verbs provider's files share: its
 * limits, the connection, listener, protection domain and registration
 * structures, and the calls one file makes into another. rdma.c says how
 * the provider works; rdma_conn.c sets connections up, rdma_mr.c keeps
 * protection domains and registrations, rdma_ctl.c polls completions and
 * carries control frames. Our names are verbs_*: rdma_* is librdmacm's.
 * Internal: not installed.
 */
#ifndef KVMIG_RDMA_INTERNAL_H
#define KVMIG_RDMA_INTERNAL_H

#include <infiniband/verbs.h>
#include <pthread.h>
#include <rdma/rdma_cma.h>

#include "transport/provider.h"
#include "util/internal.h"

#include "transport/provider.h"

#define CTL_BUF (64u << 10)     /* one control SEND / RECV buffer */
#define N_RECV 32u              /* receive buffers posted */
#define N_SEND 16u              /* send buffers in the ring */
#define MAX_READS 1024u         /* reads outstanding (the session's queue_depth limit) */
#define SIGNAL_EVERY 16u        /* one signaled read per this many */
#define KEEPALIVE_DIV 4         /* keepalive after timeout / this of our own silence */
#define RESOLVE_MS 5000         /* address and route resolution */
#define LINGER_MS 2000          /* close: wait this long for our last SENDs */

/* wr_id of control work requests; reads carry their xport_read pointer. */
#define WRID_RECV(i) ((uint64_t)(i) + 1)
#define WRID_SEND ((uint64_t)N_RECV + 1)
#define WRID_IS_CTL(w) ((w) <= WRID_SEND)

struct verbs_reg {
	struct ibv_mr *mr;
	unsigned users;             /* connections using it now */
	int remote;                 /* the sender's REMOTE_READ registration */
	struct verbs_reg *next;
};

/*
 * A protection domain and its destination registrations. Reference-counted:
 * a listener's is shared by the connections it accepts (@cache: keep unused
 * registrations for the next one); a sender's connection has its own.
 */
struct verbs_domain {
	pthread_mutex_t lock; /* connections of one listener on several threads */
	unsigned refs;
	int cache;
	struct ibv_pd *pd;
	struct verbs_reg *local;
};

struct verbs_conn {
	struct xport_conn base;
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct verbs_domain *dom;
	struct ibv_comp_channel *cc;
	struct ibv_cq *cq;
	int qp_made;
	uint8_t *ctl;               /* N_RECV receive then N_SEND send buffers */
	struct ibv_mr *ctl_mr;
	unsigned send_free, send_next;
	uint8_t *stream;            /* control bytes received, not yet framed */
	size_t stream_len, stream_cap;
	struct xport_msgq msgs;    /* control messages received */
	struct xport_readq pend; /* posted, in order */
	struct xport_readq done;
	unsigned outstanding, unsignaled;
	int timeout_ms;
	int cancel_fd;              /* readable: waits end with -ECANCELED */
	double partial_since;       /* a frame began arriving then (0: none pending) */
	int broken;                 /* sticky -errno */
	int heard;                  /* something came from the peer in this progress() */
	double last_sent;
	uint8_t init_depth, resp_res;
	char peer[64];
	char dev[32];
};

struct verbs_listener {
	struct xport_listener base;
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct verbs_domain *dom;      /* made at the first accept */
	char addr[80];
};

static inline struct verbs_conn *to_conn(struct xport_conn *c)
{
	return kvmig_container_of(c, struct verbs_conn, base);
}

/* ---- rdma_conn.c: connection setup, the listener, the probe ---- */

int verbs_listen(const char *addr, struct xport_listener **ret);
const char *verbs_listener_addr(const struct xport_listener *xl);
void verbs_listener_close(struct xport_listener **xl);
int verbs_accept_conn(struct xport_listener *xl, int timeout_ms, int cancel_fd,
		      struct xport_conn **ret);
int verbs_connect_conn(const char *addr, int timeout_ms, int cancel_fd, struct xport_conn **ret);
void verbs_set_cancel(struct xport_conn *xc, int fd);
const char *verbs_peer_addr(const struct xport_conn *xc);
int verbs_local_addr(const struct xport_conn *xc, char *buf, size_t len);
void verbs_set_timeout(struct xport_conn *xc, int timeout_ms);
/* Linger for our last SENDs, then free everything; sets *xc NULL. */
void verbs_close(struct xport_conn **xc);
/* -ECANCELED with a message once @fd (if >= 0) is readable, else 0. */
int verbs_cancelled(int fd);

/* ---- rdma_mr.c: protection domains and registrations ---- */

/* A new domain on @ctx (@cache: keep unused local registrations), or NULL. */
struct verbs_domain *verbs_domain_new(struct ibv_context *ctx, int cache);
/* Drop a reference; the last one deregisters everything and frees it. */
void verbs_domain_get(struct verbs_domain *d);
void verbs_domain_put(struct verbs_domain **dp);
int verbs_reg_remote(struct xport_conn *xc, void *base, uint64_t len, struct kvmig_rkey *key,
		     void **handle);
int verbs_reg_local(struct xport_conn *xc, void *base, uint64_t len, void **handle);
void verbs_dereg(struct xport_conn *xc, void **handle);
void verbs_listener_forget(struct xport_listener *xl);
/* The lkey of the local registration holding @p..@p+@len, or 0. */
uint32_t verbs_local_key(const struct verbs_conn *c, const void *p, uint32_t len);

/* ---- rdma_ctl.c: completions and the control stream ---- */

/* Keep the first failure (sticky); returns it. */
int verbs_broke(struct verbs_conn *c, int err);
/* Post receive buffer @i. */
int verbs_post_recv(struct verbs_conn *c, unsigned i);
/*
 * Wait for completions or CM events for at most @timeout_ms (and @wake_fd).
 * Return completions handled (> 0), 0 if none arrived (time up or woken;
 * *woken says which), or -errno.
 */
int verbs_wait_events(struct verbs_conn *c, int timeout_ms, int wake_fd, int *woken);
/* An empty KEEPALIVE frame, unless SENDs are in flight already. */
int verbs_send_keepalive(struct verbs_conn *c);
int verbs_send(struct xport_conn *xc, const void *frames, size_t len);
int verbs_ctl_pop(struct xport_conn *xc, struct xport_msg **m);

#endif
