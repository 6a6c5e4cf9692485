/* SPDX-License-Identifier: MIT */
/*
 * transport/provider.h - what the migration session needs from a transport
 * (tcp.c, and the verbs provider rdma*.c): the provider contract, which
 * tests/integration/test_provider.c checks against every row of the table
 * in providers.c. Internal: not installed.
 *
 * The model is RDMA's: the sender registers page memory for remote READ and
 * hands out (address, key) pairs; the receiver posts reads "local extent <-
 * remote address + key" and reaps their completions; small control messages
 * (complete wire frames) travel beside them. While the session waits in
 * progress() the provider does what a NIC would: it serves the peer's reads
 * from registered memory (tcp) and receives control messages into a queue.
 *
 * Every function returns 0 (or a count) or -errno and records a message.
 * A connection is used by one thread.
 */
#ifndef KVMIG_PROVIDER_H
#define KVMIG_PROVIDER_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <poll.h>
#include <stdlib.h>

#include "transport/wire.h"

struct xport_ops;

/* Providers embed these first and recover their own type with container_of. */
struct xport_conn {
	const struct xport_ops *ops;
};

struct xport_listener {
	const struct xport_ops *ops;
};

/* One posted read. The session owns the struct until it is reaped. */
struct xport_read {
	void *local;       /* destination bytes in this process */
	uint64_t remote;   /* source address in the peer's registered memory */
	uint32_t len;
	struct kvmig_rkey key; /* the peer's registration key (opaque) */
	int status;        /* out: 0, or -errno for this read */
	void *ctx;         /* the session's */
	uint8_t path;      /* the striping layer's: which connection carries it */
	struct xport_read *next; /* provider's queue link */
};

/* A received control message; payload is malloc'd, the session frees it. */
struct xport_msg {
	struct kvmig_wire_hdr hdr;
	uint8_t *payload;
	struct xport_msg *next;
};

/* FIFOs the providers keep: received control messages, posted and completed
 * reads, linked through their next fields. */
struct xport_msgq {
	struct xport_msg *head, *tail;
};

struct xport_readq {
	struct xport_read *head, *tail;
};

static inline void xport_msgq_push(struct xport_msgq *q, struct xport_msg *m)
{
	m->next = NULL;
	if (q->tail)
		q->tail->next = m;
	else
		q->head = m;
	q->tail = m;
}

/* The ctl_pop op: the oldest message, else @broken (sticky -errno) or -EAGAIN. */
static inline int xport_msgq_pop(struct xport_msgq *q, int broken, struct xport_msg **m)
{
	if (!q->head)
		return broken ? broken : -EAGAIN;
	*m = q->head;
	q->head = (*m)->next;
	if (!q->head)
		q->tail = NULL;
	(*m)->next = NULL;
	return 0;
}

static inline void xport_msgq_free(struct xport_msgq *q)
{
	while (q->head) {
		struct xport_msg *m = q->head;

		q->head = m->next;
		free(m->payload);
		free(m);
	}
	q->tail = NULL;
}

static inline void xport_readq_push(struct xport_readq *q, struct xport_read *rd)
{
	rd->next = NULL;
	if (q->tail)
		q->tail->next = rd;
	else
		q->head = rd;
	q->tail = rd;
}

static inline struct xport_read *xport_readq_pop(struct xport_readq *q)
{
	struct xport_read *rd = q->head;

	if (rd) {
		q->head = rd->next;
		if (!q->head)
			q->tail = NULL;
		rd->next = NULL;
	}
	return rd;
}

/* The reap op: up to @max completed reads. */
static inline int xport_readq_reap(struct xport_readq *done, struct xport_read **out, unsigned max)
{
	unsigned n = 0;

	while (n < max && done->head)
		out[n++] = xport_readq_pop(done);
	return (int)n;
}

/* Counters a provider keeps for reports. */
struct xport_counters {
	uint64_t bytes_served;  /* sender: read bytes answered */
	uint64_t reads_served;
};

struct xport_ops {
	const char *name;
	int (*listen)(const char *addr, struct xport_listener **ret);
	const char *(*listener_addr)(const struct xport_listener *l);
	/* Wait at most @timeout_ms (-1 forever) for one peer; -ECANCELED once
	 * @cancel_fd (if >= 0) is readable. */
	int (*accept)(struct xport_listener *l, int timeout_ms, int cancel_fd,
		      struct xport_conn **ret);
	void (*listener_close)(struct xport_listener **l);
	/* Drop what the listener cached for its last pager (NULL: nothing cached). */
	void (*listener_forget)(struct xport_listener *l);
	/* Connect within @timeout_ms; -ECANCELED once @cancel_fd (if >= 0) is readable. */
	int (*connect)(const char *addr, int timeout_ms, int cancel_fd, struct xport_conn **ret);
	/* Every later wait on the peer gives up after @timeout_ms of silence,
	 * and a frame must arrive whole within @timeout_ms of its first byte. */
	void (*set_timeout)(struct xport_conn *c, int timeout_ms);
	/* Waits end with -ECANCELED once @fd (if >= 0) is readable. */
	void (*set_cancel)(struct xport_conn *c, int fd);
	/* The peer's address, "host:port", for messages and records. */
	const char *(*peer_addr)(const struct xport_conn *c);
	/* This side's address of the connection, "host:port" (the receiver
	 * listens for a migration's extra connections on its host). */
	int (*local_addr)(const struct xport_conn *c, char *buf, size_t len);
	void (*close)(struct xport_conn **c);

	/* Send complete frames (one or several), all or an error. */
	int (*send)(struct xport_conn *c, const void *frames, size_t len);
	/* Pop the oldest queued control message: 0, or -EAGAIN when none. */
	int (*ctl_pop)(struct xport_conn *c, struct xport_msg **m);

	/*
	 * Expose [base, base+len) to the peer's reads (sender). *key names the
	 * registration on the wire (its bytes are the provider's own); *handle
	 * is for dereg. Reads outside every live registration, or with a wrong
	 * key, are refused.
	 */
	int (*reg_remote)(struct xport_conn *c, void *base, uint64_t len, struct kvmig_rkey *key,
			  void **handle);
	/*
	 * Register destination memory for local writes by reads (receiver).
	 * Return 0, 1 when a registration kept from an earlier migration on
	 * the same listener was reused, or -errno.
	 */
	int (*reg_local)(struct xport_conn *c, void *base, uint64_t len, void **handle);
	/* Revoke a registration; afterwards its key is refused. NULL-safe. */
	void (*dereg)(struct xport_conn *c, void **handle);

	/* Post reads; they complete in any order (tcp: in order). */
	int (*post_reads)(struct xport_conn *c, struct xport_read **rds, unsigned n);
	/* Completed reads, up to @max; returns the count. */
	int (*reap)(struct xport_conn *c, struct xport_read **out, unsigned max);

	/*
	 * Make progress: receive control messages and read completions, serve
	 * the peer's reads. Blocks until something happened, @wake_fd (if >= 0)
	 * became readable, or @timeout_ms passed. Return: 1 if the peer was
	 * heard from, 0 if woken by @wake_fd, -ETIMEDOUT, -ECONNRESET (peer
	 * gone), -EBADMSG (malformed frame), -EFAULT (peer asked for memory that
	 * is not registered; the connection is then unusable), -ECANCELED (the
	 * cancel fd). With @timeout_ms 0 it handles what is there and never
	 * waits: 1 if the peer was heard from, else 0 (never -ETIMEDOUT), and
	 * the descriptors of wait_fds() then become readable when there is more
	 * (the striping layer waits on several connections at once that way).
	 */
	int (*progress)(struct xport_conn *c, int timeout_ms, int wake_fd);
	/* The descriptors to poll (POLLIN) for this connection's next
	 * progress(); up to @max of them into @out. Return their count. */
	int (*wait_fds)(struct xport_conn *c, struct pollfd *out, int max);
	/* The connection's sticky failure (-errno), or 0: progress() may have
	 * returned 1 for what it handled before the failure. */
	int (*failed)(const struct xport_conn *c);
	void (*counters)(const struct xport_conn *c, struct xport_counters *out);
	/*
	 * After the connection broke: queue the control messages the peer sent
	 * before it went that were not read yet, without waiting (NULL: the
	 * provider queues them as they arrive anyway).
	 */
	void (*drain)(struct xport_conn *c);
};

extern const struct xport_ops kvmig_xport_tcp;
extern const struct xport_ops kvmig_xport_rdma;

/*
 * transport/stripe.c - one connection over @n (2..KVMIG_WIRE_MAX_PATHS)
 * connections of provider @inner to the same peer, paths[0] carrying the
 * control frames: reads are striped over all of them, each path's
 * completions reaped on its own; a registration is made on every path and
 * its key is theirs end to end. Takes the connections (on failure the
 * caller still has them).
 */
int xport_stripe(const struct xport_ops *inner, struct xport_conn **paths, unsigned n,
		 struct xport_conn **ret);
extern const struct xport_ops kvmig_xport_stripe;

/* 1 when an RDMA device serves @addr (bound to it if @passive, else routed to it). */
int kvmig_rdma_serves(const char *addr, int passive);

/* transport/addr.c */
struct addrinfo;
struct sockaddr_storage;
/* Split "host:port" / "[v6]:port" into its parts. Return 0 or -EINVAL. */
int kvmig_addr_split(const char *addr, char *host, size_t hostlen, char *port, size_t portlen);
/* getaddrinfo() for a stream socket (@passive: to bind). Return 0 or -EINVAL. */
int kvmig_addr_resolve(const char *addr, int passive, struct addrinfo **res);
/* Whether @host ("a.b.c.d", "v6" or "[v6]"; IPv4-mapped v6 as its v4) is a
 * numeric address of one interface: 0 (and *loopback), -EINVAL (not
 * numeric: a name), -EADDRNOTAVAIL (a wildcard). Records no message. */
int kvmig_addr_numeric(const char *host, int *loopback);
/* Print @ss as "a.b.c.d:port" or "[v6]:port". */
void kvmig_addr_format(const struct sockaddr_storage *ss, char *buf, size_t len);

#endif
