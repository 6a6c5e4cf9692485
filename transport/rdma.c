/* SPDX-License-Identifier: MIT */
/*
 * transport/rdma.c - the verbs provider: librdmacm connection setup, one RC
 * queue pair per connection, control frames as SEND / RECV, page bytes as
 * IBV_WR_RDMA_READ straight from the sender's registered page memory into
 * the receiver's registered destination pages. The sender's CPU takes no
 * part in moving page bytes.
 *
 * Control channel. The session's frames are a byte stream cut into SENDs of
 * at most CTL_BUF bytes from a ring of N_SEND registered buffers; the peer
 * has N_RECV buffers of CTL_BUF posted and reassembles the stream, so a frame
 * may be any size the wire codec allows. A SEND that finds no posted RECV is
 * retried by the NIC (rnr_retry 7); receive buffers are reposted as soon as
 * their bytes are copied out.
 *
 * Reads. post_reads() chains one RDMA READ work request per read and asks
 * for a completion only on every SIGNAL_EVERY-th and on the last of a batch
 * (selective signaling). An RC send queue completes in order, so a signaled
 * read's completion completes every read posted before it: the posted reads
 * are a FIFO popped up to the signaled one.
 *
 * Liveness. The sender hears nothing while the receiver reads (one-sided),
 * so each side sends an empty KEEPALIVE frame after KEEPALIVE_DIV-th of the
 * timeout without sending anything; a peer unheard for the whole timeout is
 * -ETIMEDOUT. A CM DISCONNECTED event is -ECONNRESET, DEVICE_REMOVAL -ENODEV,
 * a failed completion the errno of wc_errno() (the table in docs/PROTOCOL.md).
 *
 * Registration. Sender: IBV_ACCESS_REMOTE_READ only, never remote write;
 * the key is the MR's rkey and dies with ibv_dereg_mr() at commit or abort.
 * Receiver: IBV_ACCESS_LOCAL_WRITE only, and cached: a listener bound to a
 * device keeps one protection domain for the connections it accepts, and
 * the destination regions registered in it stay registered until the
 * listener closes or the session says the pager changed (listener_forget),
 * so a receiver serving one pager registers it once. Nothing remote can
 * use a local registration.
 */
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

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

struct rdma_reg {
	struct ibv_mr *mr;
	unsigned users;             /* connections using it now */
	int remote;                 /* the sender's REMOTE_READ registration */
	struct rdma_reg *next;
};

/*
 * A protection domain and its destination registrations. Reference-counted:
 * a listener's is shared by the connections it accepts (@cache: keep unused
 * registrations for the next one); a sender's connection has its own.
 */
struct vb_domain {
	unsigned refs;
	int cache;
	struct ibv_pd *pd;
	struct rdma_reg *local;
};

struct rdma_conn {
	struct xport_conn base;
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct vb_domain *dom;
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

struct rdma_listener {
	struct xport_listener base;
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct vb_domain *dom;      /* made at the first accept */
	char addr[80];
};

static struct rdma_conn *to_conn(struct xport_conn *c)
{
	return kvmig_container_of(c, struct rdma_conn, base);
}

/*
 * Completion status -> errno: the one table (docs/PROTOCOL.md repeats it).
 * Anything not listed is -EIO.
 */
static int wc_errno(enum ibv_wc_status s)
{
	switch (s) {
	case IBV_WC_SUCCESS:
		return 0;
	case IBV_WC_REM_ACCESS_ERR:     /* peer refused the address or key */
	case IBV_WC_LOC_PROT_ERR:       /* our buffer is not registered */
	case IBV_WC_LOC_ACCESS_ERR:
		return -EFAULT;
	case IBV_WC_RETRY_EXC_ERR:      /* peer does not answer: gone or unreachable */
	case IBV_WC_RNR_RETRY_EXC_ERR:  /* peer posts no receive buffers */
	case IBV_WC_RESP_TIMEOUT_ERR:
		return -ETIMEDOUT;
	case IBV_WC_REM_INV_REQ_ERR:    /* peer found our request malformed */
	case IBV_WC_BAD_RESP_ERR:
		return -EBADMSG;
	case IBV_WC_LOC_LEN_ERR:        /* message larger than the posted buffer */
	case IBV_WC_REM_INV_RD_REQ_ERR:
		return -EMSGSIZE;
	case IBV_WC_WR_FLUSH_ERR:       /* our queue pair went to error without a failure of
					 * ours: the peer's went first (it made an invalid
					 * request, or it is gone) */
		return -ECONNRESET;
	case IBV_WC_REM_OP_ERR:         /* the peer's queue pair failed our request: a
					 * peer process that died leaves it so */
		return -ECONNRESET;
	case IBV_WC_REM_ABORT_ERR:
		return -ECONNABORTED;
	default:                        /* LOC_QP_OP, FATAL, GENERAL, ... */
		return -EIO;
	}
}

static int cm_check(struct rdma_conn *c);
static int wait_events(struct rdma_conn *c, int timeout_ms, int wake_fd, int *woken);

static int broke(struct rdma_conn *c, int err)
{
	if (!c->broken)
		c->broken = err;
	return c->broken;
}

/* ---- CM events ---- */

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}

static int cm_event_errno(const struct rdma_cm_event *ev)
{
	switch (ev->event) {
	case RDMA_CM_EVENT_ADDR_ERROR:
	case RDMA_CM_EVENT_UNREACHABLE:
		return -EHOSTUNREACH;
	case RDMA_CM_EVENT_ROUTE_ERROR:
		return -ENETUNREACH;
	case RDMA_CM_EVENT_REJECTED:
		return -ECONNREFUSED;
	case RDMA_CM_EVENT_DISCONNECTED:
		return -ECONNRESET;
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
		return -ENODEV;
	default:
		return -ECONNABORTED;
	}
}

/*
 * Wait up to @timeout_ms for the next event on @ch. Events other than
 * @want are errors named after @what. On success *out is the event
 * (caller acks).
 */
/* -ECANCELED with a message once @fd (if >= 0) is readable, else 0. */
static int cancelled(int fd)
{
	struct pollfd pfd = { fd, POLLIN, 0 };

	/* Readable, or no longer a pipe we can read (closed: POLLNVAL): stop. */
	if (fd >= 0 && poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)))
		return kvmig_err(-ECANCELED, "interrupted");
	return 0;
}

static int cm_wait_cancel(struct rdma_event_channel *ch, enum rdma_cm_event_type want,
			  int timeout_ms, int cancel_fd, const char *what,
			  struct rdma_cm_event **out)
{
	struct pollfd pfd[2] = { { ch->fd, POLLIN, 0 }, { cancel_fd, POLLIN, 0 } };
	double until = kvmig_now() + (timeout_ms < 0 ? 0 : timeout_ms) / 1000.0;
	struct rdma_cm_event *ev;
	int r, err;

	for (;;) {
		if (rdma_get_cm_event(ch, &ev) == 0)
			break;
		if (errno != EAGAIN && errno != EINTR)
			return kvmig_err(-errno, "%s: rdma_get_cm_event: %s", what, strerror(errno));
		/* After a signal, only what is left of the wait. */
		do
			r = poll(pfd, cancel_fd >= 0 ? 2 : 1, timeout_ms < 0 ? -1 :
				 (int)KVMIG_MAX(0.0, (until - kvmig_now()) * 1000.0));
		while (r < 0 && errno == EINTR && !cancelled(cancel_fd));
		if ((err = cancelled(cancel_fd)) < 0)
			return err;
		if (r == 0)
			return kvmig_err(-ETIMEDOUT, "%s: no answer within %d ms", what, timeout_ms);
		if (r < 0)
			return kvmig_err(-errno, "%s: poll: %s", what, strerror(errno));
	}
	if (ev->event == want) {
		*out = ev;
		return 0;
	}
	err = cm_event_errno(ev);
	if (ev->event == RDMA_CM_EVENT_ADDR_ERROR)
		kvmig_err(err, "%s: no RDMA device serves this address (%s)", what,
			  rdma_event_str(ev->event));
	else
		kvmig_err(err, "%s: %s (status %d)", what, rdma_event_str(ev->event), ev->status);
	rdma_ack_cm_event(ev);
	return err;
}

static int cm_wait(struct rdma_event_channel *ch, enum rdma_cm_event_type want, int timeout_ms,
		   const char *what, struct rdma_cm_event **out)
{
	return cm_wait_cancel(ch, want, timeout_ms, -1, what, out);
}

/* ---- protection domains ---- */

static struct vb_domain *domain_new(struct ibv_context *ctx, int cache)
{
	struct vb_domain *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	if (!(d->pd = ibv_alloc_pd(ctx))) {
		free(d);
		return NULL;
	}
	d->refs = 1;
	d->cache = cache;
	return d;
}

/* Deregister what no connection uses (@all: everything, the domain goes). */
static void domain_trim(struct vb_domain *d, int all)
{
	for (struct rdma_reg **pp = &d->local; *pp;) {
		struct rdma_reg *r = *pp;

		if (r->users && !all) {
			pp = &r->next;
			continue;
		}
		*pp = r->next;
		ibv_dereg_mr(r->mr);
		free(r);
	}
}

static void domain_put(struct vb_domain **dp)
{
	struct vb_domain *d = *dp;

	*dp = NULL;
	if (!d || --d->refs)
		return;
	/* No connection is left: registrations a closed connection never
	 * returned (it broke first) go too, or the PD could not be freed. */
	domain_trim(d, 1);
	ibv_dealloc_pd(d->pd);
	free(d);
}

/* ---- connection resources ---- */

static int post_recv(struct rdma_conn *c, unsigned i)
{
	struct ibv_sge sge = { (uintptr_t)(c->ctl + (size_t)i * CTL_BUF), CTL_BUF,
			       c->ctl_mr->lkey };
	struct ibv_recv_wr wr = { .wr_id = WRID_RECV(i), .sg_list = &sge, .num_sge = 1 }, *bad;
	int ret = ibv_post_recv(c->id->qp, &wr, &bad);

	return ret ? kvmig_err(-ret, "ibv_post_recv: %s", strerror(ret)) : 0;
}

/*
 * CQ with its channel, RC QP on @id, control buffers with RECVs posted, in
 * @dom's protection domain when it is on @id's device (a reference is
 * taken), else in a new one of its own.
 */
static int conn_setup(struct rdma_conn *c, struct rdma_cm_id *id, struct vb_domain *dom)
{
	struct ibv_qp_init_attr qa = { 0 };
	struct ibv_device_attr da;
	unsigned cqe = N_RECV + N_SEND + MAX_READS + 8;
	int ret;

	c->id = id;
	id->context = c;
	snprintf(c->dev, sizeof(c->dev), "%s", ibv_get_device_name(id->verbs->device));
	if ((ret = ibv_query_device(id->verbs, &da)))
		return kvmig_err(-ret, "cannot query RDMA device %s: %s", c->dev, strerror(ret));
	c->init_depth = (uint8_t)KVMIG_MIN(da.max_qp_init_rd_atom, 255);
	c->resp_res = (uint8_t)KVMIG_MIN(da.max_qp_rd_atom, 255);
	if (dom && dom->pd->context == id->verbs) {
		dom->refs++;
		c->dom = dom;
	} else if (!(c->dom = domain_new(id->verbs, 0))) {
		return kvmig_err(-ENOMEM, "cannot allocate a protection domain on %s", c->dev);
	}
	if (!(c->cc = ibv_create_comp_channel(id->verbs)))
		return kvmig_err(-errno, "cannot create a completion channel on %s", c->dev);
	if ((ret = set_nonblock(c->cc->fd)) < 0)
		return kvmig_err(ret, "completion channel: %s", strerror(-ret));
	if (!(c->cq = ibv_create_cq(id->verbs, (int)KVMIG_MIN(cqe, (unsigned)da.max_cqe), NULL, c->cc, 0)))
		return kvmig_err(-errno, "cannot create a completion queue on %s", c->dev);
	qa.send_cq = c->cq;
	qa.recv_cq = c->cq;
	qa.qp_type = IBV_QPT_RC;
	qa.cap.max_send_wr = KVMIG_MIN(N_SEND + MAX_READS + 4, (unsigned)da.max_qp_wr);
	qa.cap.max_recv_wr = N_RECV;
	qa.cap.max_send_sge = 1;
	qa.cap.max_recv_sge = 1;
	if (rdma_create_qp(id, c->dom->pd, &qa))
		return kvmig_err(-errno, "cannot create a queue pair on %s: %s", c->dev,
				 strerror(errno));
	c->qp_made = 1;
	if (qa.cap.max_send_wr < N_SEND + MAX_READS)
		return kvmig_err(-ENOMEM, "%s gives send queues of %u entries; kvmig needs %u",
				 c->dev, qa.cap.max_send_wr, N_SEND + MAX_READS);
	if (posix_memalign((void **)&c->ctl, 4096, (size_t)(N_RECV + N_SEND) * CTL_BUF))
		return -ENOMEM;
	c->ctl_mr = ibv_reg_mr(c->dom->pd, c->ctl, (size_t)(N_RECV + N_SEND) * CTL_BUF,
			       IBV_ACCESS_LOCAL_WRITE);
	if (!c->ctl_mr)
		return kvmig_err(-errno, "cannot register control buffers on %s: %s", c->dev,
				 strerror(errno));
	for (unsigned i = 0; i < N_RECV; i++)
		if ((ret = post_recv(c, i)) < 0)
			return ret;
	if ((ret = ibv_req_notify_cq(c->cq, 0)))
		return kvmig_err(-ret, "ibv_req_notify_cq: %s", strerror(ret));
	return 0;
}

static void conn_param(const struct rdma_conn *c, struct rdma_conn_param *p)
{
	memset(p, 0, sizeof(*p));
	p->initiator_depth = c->init_depth;
	p->responder_resources = c->resp_res;
	p->retry_count = 7;
	p->rnr_retry_count = 7; /* infinite: the peer reposts its buffers promptly */
}

static struct rdma_conn *conn_alloc(void)
{
	struct rdma_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->base.ops = &kvmig_xport_rdma;
	c->timeout_ms = 30000;
	c->cancel_fd = -1;
	c->send_free = N_SEND; /* nothing in flight: close need not linger */
	c->last_sent = kvmig_now();
	strcpy(c->peer, "peer");
	return c;
}

static void vb_close(struct xport_conn **xc)
{
	struct rdma_conn *c;

	if (!xc || !*xc)
		return;
	c = to_conn(*xc);
	if (c->id && c->qp_made) {
		/* Linger until our last SENDs (an ABORT, a COMMIT_ACK) are
		 * acknowledged: disconnecting flushes them otherwise. */
		double until = kvmig_now() + LINGER_MS / 1000.0;
		int woken;

		c->cancel_fd = -1; /* even when interrupted: the ABORT must get out */
		while ((!c->broken || c->broken == -ETIMEDOUT) && c->send_free < N_SEND &&
		       kvmig_now() < until)
			if (wait_events(c, LINGER_MS, -1, &woken) < 0)
				break;
	}
	if (c->id) {
		if (c->qp_made)
			rdma_disconnect(c->id);
		if (c->qp_made)
			rdma_destroy_qp(c->id);
		if (c->ctl_mr)
			ibv_dereg_mr(c->ctl_mr);
		if (c->cq)
			ibv_destroy_cq(c->cq);
		if (c->cc)
			ibv_destroy_comp_channel(c->cc);
		domain_put(&c->dom);
		rdma_destroy_id(c->id);
	}
	if (c->ch)
		rdma_destroy_event_channel(c->ch);
	free(c->ctl);
	free(c->stream);
	xport_msgq_free(&c->msgs);
	free(c);
	*xc = NULL;
}

static void peer_name(struct rdma_conn *c)
{
	struct sockaddr *sa = rdma_get_peer_addr(c->id);
	struct sockaddr_storage ss = { 0 };

	if (!sa)
		return;
	memcpy(&ss, sa, sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
		   sizeof(struct sockaddr_in));
	kvmig_addr_format(&ss, c->peer, sizeof(c->peer));
}

/* ---- listener ---- */

static int vb_listen(const char *addr, struct xport_listener **ret)
{
	struct rdma_listener *l = calloc(1, sizeof(*l));
	struct addrinfo *res = NULL;
	struct sockaddr_storage ss = { 0 };
	struct sockaddr *sa;
	int err;

	if (!l)
		return -ENOMEM;
	l->base.ops = &kvmig_xport_rdma;
	if ((err = kvmig_addr_resolve(addr, 1, &res)) < 0)
		goto fail;
	if (!(l->ch = rdma_create_event_channel())) {
		err = kvmig_err(-errno, "cannot open the RDMA connection manager (is rdma_ucm "
				"loaded?): %s", strerror(errno));
		goto fail;
	}
	if ((err = set_nonblock(l->ch->fd)) < 0 ||
	    rdma_create_id(l->ch, &l->id, l, RDMA_PS_TCP)) {
		err = kvmig_err(err < 0 ? err : -errno, "rdma_create_id: %s", strerror(errno));
		goto fail;
	}
	if (rdma_bind_addr(l->id, res->ai_addr) || rdma_listen(l->id, 4)) {
		err = kvmig_err(-errno, "cannot listen for RDMA on %s: %s", addr, strerror(errno));
		goto fail;
	}
	sa = rdma_get_local_addr(l->id);
	memcpy(&ss, sa, sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
		   sizeof(struct sockaddr_in));
	kvmig_addr_format(&ss, l->addr, sizeof(l->addr));
	freeaddrinfo(res);
	*ret = &l->base;
	return 0;
fail:
	if (res)
		freeaddrinfo(res);
	if (l->id)
		rdma_destroy_id(l->id);
	if (l->ch)
		rdma_destroy_event_channel(l->ch);
	free(l);
	return err;
}

static const char *vb_listener_addr(const struct xport_listener *xl)
{
	return kvmig_container_of(xl, const struct rdma_listener, base)->addr;
}

static void vb_listener_close(struct xport_listener **xl)
{
	struct rdma_listener *l;

	if (!xl || !*xl)
		return;
	l = kvmig_container_of(*xl, struct rdma_listener, base);
	domain_put(&l->dom);
	rdma_destroy_id(l->id);
	rdma_destroy_event_channel(l->ch);
	free(l);
	*xl = NULL;
}

static int vb_accept_conn(struct xport_listener *xl, int timeout_ms, int cancel_fd,
			  struct xport_conn **ret)
{
	struct rdma_listener *l = kvmig_container_of(xl, struct rdma_listener, base);
	struct rdma_conn *c = conn_alloc();
	struct rdma_cm_event *ev;
	struct rdma_cm_id *id;
	struct rdma_conn_param p, req;
	char what[128];
	int err;

	if (!c)
		return -ENOMEM;
	snprintf(what, sizeof(what), "waiting for a sender on %s", l->addr);
	if ((err = cm_wait_cancel(l->ch, RDMA_CM_EVENT_CONNECT_REQUEST, timeout_ms, cancel_fd, what,
				  &ev)) < 0) {
		if (err == -ETIMEDOUT)
			kvmig_err(err, "no sender connected to %s within %d ms", l->addr, timeout_ms);
		vb_close(&(struct xport_conn *){ &c->base });
		return err;
	}
	id = ev->id;
	req = ev->param.conn; /* the sender's limits, before the ack frees them */
	rdma_ack_cm_event(ev);
	/* The connection gets its own event channel: its events are its own. */
	if (!(c->ch = rdma_create_event_channel()) || set_nonblock(c->ch->fd) < 0 ||
	    rdma_migrate_id(id, c->ch)) {
		err = kvmig_err(-errno, "cannot set up the accepted connection: %s", strerror(errno));
		rdma_reject(id, NULL, 0);
		rdma_destroy_id(id);
		goto fail;
	}
	if (!l->dom)
		l->dom = domain_new(id->verbs, 1); /* NULL: this connection goes uncached */
	if ((err = conn_setup(c, id, l->dom)) < 0) {
		rdma_reject(id, NULL, 0);
		goto fail;
	}
	peer_name(c);
	conn_param(c, &p);
	/* Never more reads in flight than the peer can answer, and the reverse. */
	p.initiator_depth = (uint8_t)KVMIG_MIN(p.initiator_depth, req.responder_resources);
	p.responder_resources = (uint8_t)KVMIG_MIN(p.responder_resources, req.initiator_depth);
	if (rdma_accept(id, &p)) {
		err = kvmig_err(-errno, "rdma_accept from %s: %s", c->peer, strerror(errno));
		goto fail;
	}
	snprintf(what, sizeof(what), "accepting %s", c->peer);
	if ((err = cm_wait(c->ch, RDMA_CM_EVENT_ESTABLISHED, timeout_ms < 0 ? 30000 : timeout_ms,
			   what, &ev)) < 0)
		goto fail;
	rdma_ack_cm_event(ev);
	*ret = &c->base;
	return 0;
fail:
	vb_close(&(struct xport_conn *){ &c->base });
	return err;
}

static int vb_connect_conn(const char *addr, int timeout_ms, struct xport_conn **ret)
{
	struct rdma_conn *c = conn_alloc();
	struct addrinfo *res = NULL;
	struct rdma_cm_event *ev;
	struct rdma_conn_param p;
	char what[160];
	int err;

	if (!c)
		return -ENOMEM;
	if ((err = kvmig_addr_resolve(addr, 0, &res)) < 0)
		goto fail;
	if (!(c->ch = rdma_create_event_channel())) {
		err = kvmig_err(-errno, "cannot open the RDMA connection manager (is rdma_ucm "
				"loaded?): %s", strerror(errno));
		goto fail;
	}
	if ((err = set_nonblock(c->ch->fd)) < 0 || rdma_create_id(c->ch, &c->id, c, RDMA_PS_TCP)) {
		err = kvmig_err(err < 0 ? err : -errno, "rdma_create_id: %s", strerror(errno));
		goto fail;
	}
	snprintf(what, sizeof(what), "resolving %s", addr);
	if (rdma_resolve_addr(c->id, NULL, res->ai_addr, RESOLVE_MS)) {
		err = kvmig_err(-errno, "%s: %s", what, strerror(errno));
		goto fail;
	}
	if ((err = cm_wait(c->ch, RDMA_CM_EVENT_ADDR_RESOLVED, RESOLVE_MS + 1000, what, &ev)) < 0)
		goto fail;
	rdma_ack_cm_event(ev);
	if (rdma_resolve_route(c->id, RESOLVE_MS)) {
		err = kvmig_err(-errno, "%s: no RDMA route (%s): no RDMA device serves this "
				"address", what, strerror(errno));
		goto fail;
	}
	if ((err = cm_wait(c->ch, RDMA_CM_EVENT_ROUTE_RESOLVED, RESOLVE_MS + 1000, what, &ev)) < 0)
		goto fail;
	rdma_ack_cm_event(ev);
	if ((err = conn_setup(c, c->id, NULL)) < 0)
		goto fail;
	snprintf(c->peer, sizeof(c->peer), "%s", addr);
	conn_param(c, &p);
	if (rdma_connect(c->id, &p)) {
		err = kvmig_err(-errno, "rdma_connect to %s: %s", addr, strerror(errno));
		goto fail;
	}
	snprintf(what, sizeof(what), "cannot connect to %s", addr);
	if ((err = cm_wait(c->ch, RDMA_CM_EVENT_ESTABLISHED, timeout_ms, what, &ev)) < 0)
		goto fail;
	rdma_ack_cm_event(ev);
	freeaddrinfo(res);
	*ret = &c->base;
	return 0;
fail:
	if (res)
		freeaddrinfo(res);
	vb_close(&(struct xport_conn *){ &c->base });
	return err;
}

static void vb_set_cancel(struct xport_conn *xc, int fd)
{
	to_conn(xc)->cancel_fd = fd;
}

static const char *vb_peer_addr(const struct xport_conn *xc)
{
	return kvmig_container_of(xc, const struct rdma_conn, base)->peer;
}

static void vb_set_timeout(struct xport_conn *xc, int timeout_ms)
{
	to_conn(xc)->timeout_ms = timeout_ms;
}

/* ---- completions ---- */

/* Cut complete frames out of the received stream into the control queue. */
static int frame_stream(struct rdma_conn *c)
{
	size_t off = 0;
	int ret = 0;

	while (c->stream_len - off >= KVMIG_WIRE_HDR_LEN) {
		struct kvmig_wire_hdr h;
		struct xport_msg *m;

		if ((ret = kvmig_wire_get_hdr(c->stream + off, &h)) < 0) {
			ret = broke(c, kvmig_err_prefix(ret, "from %s", c->peer));
			break;
		}
		if (c->stream_len - off - KVMIG_WIRE_HDR_LEN < h.len)
			break; /* the rest of this frame is in later SENDs */
		off += KVMIG_WIRE_HDR_LEN;
		if (h.type == KVMIG_MSG_KEEPALIVE && !h.len)
			continue;
		if (!(m = calloc(1, sizeof(*m))) || !(m->payload = malloc(h.len ? h.len : 1))) {
			free(m);
			ret = broke(c, -ENOMEM);
			break;
		}
		m->hdr = h;
		memcpy(m->payload, c->stream + off, h.len);
		off += h.len;
		xport_msgq_push(&c->msgs, m);
	}
	memmove(c->stream, c->stream + off, c->stream_len - off);
	c->stream_len -= off;
	/* Part of a frame is waiting for the rest: it must come within the
	 * timeout (vb_progress), however often keepalives arrive. */
	if (!c->stream_len)
		c->partial_since = 0;
	else if (off || !c->partial_since)
		c->partial_since = kvmig_now();
	return ret;
}

static int take_recv(struct rdma_conn *c, unsigned slot, uint32_t len)
{
	int ret;

	if (c->stream_len + len > c->stream_cap) {
		size_t cap = KVMIG_MAX(c->stream_cap * 2, (size_t)4 * CTL_BUF);
		uint8_t *p;

		while (cap < c->stream_len + len)
			cap *= 2;
		/* A frame is at most KVMIG_WIRE_MAX_PAYLOAD: the header check
		 * in frame_stream() bounds what can pile up here. */
		if (!(p = realloc(c->stream, cap)))
			return broke(c, -ENOMEM);
		c->stream = p;
		c->stream_cap = cap;
	}
	memcpy(c->stream + c->stream_len, c->ctl + (size_t)slot * CTL_BUF, len);
	c->stream_len += len;
	if ((ret = post_recv(c, slot)) < 0)
		return broke(c, ret);
	return frame_stream(c);
}

/* Every read up to and including @last is done. */
static void complete_reads(struct rdma_conn *c, struct xport_read *last)
{
	struct xport_read *rd;

	do {
		if (!(rd = xport_readq_pop(&c->pend)))
			return;
		rd->status = 0;
		c->outstanding--;
		xport_readq_push(&c->done, rd);
	} while (rd != last);
}

static int wc_failed(struct rdma_conn *c, const struct ibv_wc *wc)
{
	const char *what = wc->wr_id == WRID_SEND ? "a control SEND" :
			   WRID_IS_CTL(wc->wr_id) ? "a control RECV" : "an RDMA READ";
	int err = wc_errno(wc->status);

	if (c->broken)
		return c->broken; /* flushes after the first failure say nothing new */
	if ((wc->status == IBV_WC_WR_FLUSH_ERR || wc->status == IBV_WC_REM_OP_ERR) &&
	    cm_check(c) < 0)
		return c->broken; /* a disconnect explains it better */
	if (wc->status == IBV_WC_WR_FLUSH_ERR)
		return broke(c, kvmig_err(err, "connection to %s broke: %s flushed (the peer's side "
					  "failed first, or the peer is gone)", c->peer, what));
	if (err == -EFAULT && !WRID_IS_CTL(wc->wr_id))
		return broke(c, kvmig_err(err, "%s from %s was refused: %s (the peer does not "
					  "expose that range, or the key is stale)", what,
					  c->peer, ibv_wc_status_str(wc->status)));
	return broke(c, kvmig_err(err, "%s on %s with %s failed: %s (vendor error 0x%x)", what,
				  c->dev, c->peer, ibv_wc_status_str(wc->status), wc->vendor_err));
}

/* Poll the CQ dry. Return the number of completions handled, or -errno. */
static int drain_cq(struct rdma_conn *c)
{
	struct ibv_wc wc[32];
	int n, total = 0, ret;

	while ((n = ibv_poll_cq(c->cq, (int)KVMIG_ARRAY_SIZE(wc), wc)) > 0) {
		for (int i = 0; i < n; i++) {
			if (wc[i].status != IBV_WC_SUCCESS) {
				wc_failed(c, &wc[i]);
				continue;
			}
			if (wc[i].wr_id == WRID_SEND) {
				c->send_free++;
			} else if (WRID_IS_CTL(wc[i].wr_id)) {
				c->heard = 1;
				if ((ret = take_recv(c, (unsigned)(wc[i].wr_id - 1), wc[i].byte_len)) < 0)
					return ret;
			} else {
				c->heard = 1;
				complete_reads(c, (struct xport_read *)(uintptr_t)wc[i].wr_id);
			}
		}
		total += n;
	}
	if (n < 0)
		return broke(c, kvmig_err(-EIO, "ibv_poll_cq failed on %s", c->dev));
	/* What arrived before a failure is handled first: the session pops
	 * queued messages before it calls progress() again. */
	return total ? total : c->broken;
}

/* Handle what the connection manager says: a disconnect or device removal breaks us. */
static int cm_check(struct rdma_conn *c)
{
	struct rdma_cm_event *ev;

	while (rdma_get_cm_event(c->ch, &ev) == 0) {
		enum rdma_cm_event_type t = ev->event;

		rdma_ack_cm_event(ev);
		if (t == RDMA_CM_EVENT_DISCONNECTED)
			broke(c, kvmig_err(-ECONNRESET, "peer %s disconnected", c->peer));
		else if (t == RDMA_CM_EVENT_DEVICE_REMOVAL)
			broke(c, kvmig_err(-ENODEV, "RDMA device %s was removed", c->dev));
	}
	return c->broken;
}

/*
 * Wait for completions or CM events for at most @timeout_ms (and @wake_fd).
 * Return completions handled (> 0), 0 if none arrived (time up or woken;
 * *woken says which), or -errno.
 */
static int wait_events(struct rdma_conn *c, int timeout_ms, int wake_fd, int *woken)
{
	struct pollfd pfd[4] = { { c->cc->fd, POLLIN, 0 }, { c->ch->fd, POLLIN, 0 },
				 { wake_fd, POLLIN, 0 }, { c->cancel_fd, POLLIN, 0 } };
	struct ibv_cq *cq;
	void *ctx;
	int n, r;

	*woken = 0;
	if ((n = drain_cq(c)) != 0)
		return n;
	if ((r = cancelled(c->cancel_fd)) < 0)
		return r;
	/* A signal ends the wait: the caller counts what is left of it. */
	r = poll(pfd, 4, timeout_ms); /* negative fds are skipped */
	if (cancelled(c->cancel_fd) < 0)
		return -ECANCELED;
	if (r < 0 && errno == EINTR)
		return 0;
	if (r < 0)
		return kvmig_err(-errno, "poll: %s", strerror(errno));
	if (pfd[0].revents && ibv_get_cq_event(c->cc, &cq, &ctx) == 0) {
		ibv_ack_cq_events(cq, 1);
		if ((r = ibv_req_notify_cq(c->cq, 0)))
			return broke(c, kvmig_err(-r, "ibv_req_notify_cq: %s", strerror(r)));
	}
	if (wake_fd >= 0 && pfd[2].revents)
		*woken = 1;
	/* Armed again: completions from before the arming are polled here,
	 * before a disconnect, so a peer's last message (ABORT) is not lost. */
	n = drain_cq(c);
	if (pfd[1].revents)
		cm_check(c);
	return n != 0 ? n : c->broken;
}

/* ---- control messages ---- */

static int post_send(struct rdma_conn *c, const uint8_t *p, uint32_t len)
{
	uint8_t *buf = c->ctl + (size_t)(N_RECV + c->send_next) * CTL_BUF;
	struct ibv_sge sge = { (uintptr_t)buf, len, c->ctl_mr->lkey };
	struct ibv_send_wr wr = { .wr_id = WRID_SEND, .sg_list = &sge, .num_sge = 1,
				  .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED }, *bad;
	int ret;

	memcpy(buf, p, len);
	if ((ret = ibv_post_send(c->id->qp, &wr, &bad)))
		return broke(c, kvmig_err(-ret, "ibv_post_send (control) to %s: %s", c->peer,
					  strerror(ret)));
	c->send_next = (c->send_next + 1) % N_SEND;
	c->send_free--;
	c->last_sent = kvmig_now();
	return 0;
}

static int vb_send(struct xport_conn *xc, const void *frames, size_t len)
{
	struct rdma_conn *c = to_conn(xc);
	const uint8_t *p = frames;
	double deadline = kvmig_now() + c->timeout_ms / 1000.0;
	int ret, woken;

	/* A silent peer (ETIMEDOUT) leaves the queue pair working: the session
	 * still tells it why it gives up (ABORT). */
	if (c->broken && c->broken != -ETIMEDOUT)
		return c->broken;
	while (len) {
		uint32_t n = (uint32_t)KVMIG_MIN(len, (size_t)CTL_BUF);

		while (!c->send_free) { /* the ring is full: wait for a SEND to complete */
			int left = (int)((deadline - kvmig_now()) * 1000.0);

			if (left <= 0)
				return broke(c, kvmig_err(-ETIMEDOUT, "peer %s took no control message "
							  "for %d ms", c->peer, c->timeout_ms));
			if ((ret = wait_events(c, left, -1, &woken)) < 0)
				return ret;
		}
		if ((ret = post_send(c, p, n)) < 0)
			return ret;
		p += n;
		len -= n;
	}
	return 0;
}

static int send_keepalive(struct rdma_conn *c)
{
	uint8_t f[KVMIG_WIRE_HDR_LEN];
	struct kvmig_wbuf b = { 0 };
	int ret;

	if (!c->send_free)
		return 0; /* sends are in flight: the peer hears those */
	if ((ret = kvmig_wire_put_empty(&b, KVMIG_MSG_KEEPALIVE)) < 0)
		return ret;
	memcpy(f, b.p, sizeof(f));
	kvmig_wbuf_free(&b);
	return post_send(c, f, sizeof(f));
}

static int vb_ctl_pop(struct xport_conn *xc, struct xport_msg **m)
{
	struct rdma_conn *c = to_conn(xc);

	return xport_msgq_pop(&c->msgs, c->broken, m);
}

/* ---- registration ---- */

static int vb_reg_remote(struct xport_conn *xc, void *base, uint64_t len, uint32_t *key,
			   void **handle)
{
	struct rdma_conn *c = to_conn(xc);
	struct rdma_reg *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	/* Remote READ only: the peer can never write here. */
	r->mr = ibv_reg_mr(c->dom->pd, base, len, IBV_ACCESS_REMOTE_READ);
	if (!r->mr) {
		int err = -errno;

		free(r);
		return kvmig_err(err, "cannot register %llu bytes of page memory on %s for "
				 "remote read: %s%s", (unsigned long long)len, c->dev,
				 strerror(-err), err == -ENOMEM ? " (ulimit -l?)" : "");
	}
	r->remote = 1;
	r->users = 1;
	r->next = c->dom->local;
	c->dom->local = r;
	*key = r->mr->rkey;
	*handle = r;
	return 0;
}

static int vb_reg_local(struct xport_conn *xc, void *base, uint64_t len, void **handle)
{
	struct rdma_conn *c = to_conn(xc);
	struct vb_domain *d = c->dom;
	struct rdma_reg *r;

	for (r = d->local; r; r = r->next) {
		if (!r->remote && r->mr->addr == base && r->mr->length == len) {
			r->users++;
			*handle = r;
			return 1; /* registered by an earlier migration on this listener */
		}
	}
	if (!(r = calloc(1, sizeof(*r))))
		return -ENOMEM;
	r->mr = ibv_reg_mr(d->pd, base, len, IBV_ACCESS_LOCAL_WRITE);
	if (!r->mr) {
		int err = -errno;

		free(r);
		return kvmig_err(err, "cannot register %llu bytes of destination memory on %s: %s%s",
				 (unsigned long long)len, c->dev, strerror(-err),
				 err == -ENOMEM ? " (ulimit -l?)" : "");
	}
	r->users = 1;
	r->next = d->local;
	d->local = r;
	*handle = r;
	return 0;
}

static void vb_dereg(struct xport_conn *xc, void **handle)
{
	struct vb_domain *d = to_conn(xc)->dom;

	if (!handle || !*handle)
		return;
	for (struct rdma_reg *r = d->local; r; r = r->next) {
		if (r == *handle) {
			r->users--;
			if (!d->cache || r->remote)
				domain_trim(d, 0);
			*handle = NULL;
			return;
		}
	}
	*handle = NULL; /* not ours: already gone with its domain */
}

static void vb_listener_forget(struct xport_listener *xl)
{
	struct rdma_listener *l = kvmig_container_of(xl, struct rdma_listener, base);

	if (l->dom)
		domain_trim(l->dom, 0);
}

/* ---- reads ---- */

static uint32_t local_key(const struct rdma_conn *c, const void *p, uint32_t len)
{
	const uint8_t *b = p;

	for (const struct rdma_reg *r = c->dom->local; r; r = r->next) {
		const uint8_t *base = r->mr->addr;

		if (r->remote)
			continue;
		if (b >= base && b + len <= base + r->mr->length)
			return r->mr->lkey;
	}
	return 0;
}

static int vb_post_reads(struct xport_conn *xc, struct xport_read **rds, unsigned n)
{
	struct rdma_conn *c = to_conn(xc);
	struct ibv_send_wr wr[32], *bad;
	struct ibv_sge sge[32];

	if (c->broken)
		return c->broken;
	if (c->outstanding + n > MAX_READS)
		return kvmig_err(-EINVAL, "%u reads outstanding; the rdma provider takes at most %u",
				 c->outstanding + n, MAX_READS);
	for (unsigned i = 0; i < n;) {
		unsigned k = KVMIG_MIN(n - i, (unsigned)KVMIG_ARRAY_SIZE(wr));
		int ret;

		for (unsigned j = 0; j < k; j++) {
			struct xport_read *rd = rds[i + j];
			uint32_t lkey = local_key(c, rd->local, rd->len);

			if (!lkey)
				return broke(c, kvmig_err(-EFAULT, "read destination %p+%u is not in "
							  "registered memory", rd->local, rd->len));
			sge[j] = (struct ibv_sge){ (uintptr_t)rd->local, rd->len, lkey };
			wr[j] = (struct ibv_send_wr){ .wr_id = (uintptr_t)rd, .sg_list = &sge[j],
						      .num_sge = 1, .opcode = IBV_WR_RDMA_READ,
						      .next = j + 1 < k ? &wr[j + 1] : NULL };
			wr[j].wr.rdma.remote_addr = rd->remote;
			wr[j].wr.rdma.rkey = rd->key;
			if (++c->unsignaled >= SIGNAL_EVERY || i + j + 1 == n) {
				wr[j].send_flags = IBV_SEND_SIGNALED;
				c->unsignaled = 0;
			}
			rd->status = 0;
			xport_readq_push(&c->pend, rd);
			c->outstanding++;
		}
		if ((ret = ibv_post_send(c->id->qp, wr, &bad)))
			return broke(c, kvmig_err(-ret, "ibv_post_send (RDMA READ) to %s: %s",
						  c->peer, strerror(ret)));
		i += k;
	}
	return 0;
}

static int vb_reap(struct xport_conn *xc, struct xport_read **out, unsigned max)
{
	return xport_readq_reap(&to_conn(xc)->done, out, max);
}

static int vb_progress(struct xport_conn *xc, int timeout_ms, int wake_fd)
{
	struct rdma_conn *c = to_conn(xc);
	double start = kvmig_now(), ka = c->timeout_ms / 1000.0 / KEEPALIVE_DIV;

	if (c->broken)
		return c->broken;
	for (;;) {
		double now = kvmig_now();
		int left = timeout_ms < 0 ? c->timeout_ms : timeout_ms - (int)((now - start) * 1000.0);
		int woken, ret, slice;

		if (now - c->last_sent >= ka && (ret = send_keepalive(c)) < 0)
			return ret;
		if (left <= 0)
			return broke(c, kvmig_err(-ETIMEDOUT, "peer %s was silent for %d ms", c->peer,
						  c->timeout_ms));
		if (c->partial_since && now - c->partial_since > c->timeout_ms / 1000.0)
			return broke(c, kvmig_err(-ETIMEDOUT, "peer %s did not send a whole message "
						  "within %d ms (it sends too slowly or stalls)",
						  c->peer, c->timeout_ms));
		/* Wake for the next keepalive, unless the send ring is full (its
		 * completions wake us, and the peer hears those sends). */
		slice = !c->send_free ? left :
			(int)KVMIG_MIN((double)left, (c->last_sent + ka - now) * 1000.0 + 1);
		c->heard = 0;
		if ((ret = wait_events(c, KVMIG_MAX(slice, 1), wake_fd, &woken)) < 0)
			return ret;
		if (c->heard)
			return 1;
		if (woken)
			return 0;
	}
}

static void vb_counters(const struct xport_conn *xc, struct xport_counters *out)
{
	/* One-sided reads: the sender's CPU never sees them. */
	memset(out, 0, sizeof(*out));
}

int kvmig_rdma_serves(const char *addr, int passive)
{
	struct rdma_event_channel *ch = rdma_create_event_channel();
	struct addrinfo *res = NULL;
	struct rdma_cm_id *id = NULL;
	struct rdma_cm_event *ev;
	int serves = 0;

	if (!ch)
		return 0; /* no rdma_cm: no RDMA here */
	if (set_nonblock(ch->fd) < 0 || kvmig_addr_resolve(addr, passive, &res) < 0 ||
	    rdma_create_id(ch, &id, NULL, RDMA_PS_TCP))
		goto out;
	if (passive) {
		/* Port 0: only asking which device owns the address. */
		struct sockaddr_storage ss = { 0 };

		memcpy(&ss, res->ai_addr, res->ai_addrlen);
		if (ss.ss_family == AF_INET)
			((struct sockaddr_in *)&ss)->sin_port = 0;
		else
			((struct sockaddr_in6 *)&ss)->sin6_port = 0;
		serves = rdma_bind_addr(id, (struct sockaddr *)&ss) == 0 && id->verbs;
	} else if (rdma_resolve_addr(id, NULL, res->ai_addr, 2000) == 0 &&
		   cm_wait(ch, RDMA_CM_EVENT_ADDR_RESOLVED, 3000, "probing", &ev) == 0) {
		rdma_ack_cm_event(ev);
		/* An address can resolve to a device yet have no RDMA route
		 * (127.0.0.1 with rxe on another netdev): ask for the route too. */
		if (id->verbs && rdma_resolve_route(id, 2000) == 0 &&
		    cm_wait(ch, RDMA_CM_EVENT_ROUTE_RESOLVED, 3000, "probing", &ev) == 0) {
			serves = 1;
			rdma_ack_cm_event(ev);
		}
	}
out:
	kvmig_clear_error();
	if (res)
		freeaddrinfo(res);
	if (id)
		rdma_destroy_id(id);
	rdma_destroy_event_channel(ch);
	return serves;
}

const struct xport_ops kvmig_xport_rdma = {
	.name = "rdma",
	.listen = vb_listen,
	.listener_addr = vb_listener_addr,
	.accept = vb_accept_conn,
	.listener_close = vb_listener_close,
	.listener_forget = vb_listener_forget,
	.connect = vb_connect_conn,
	.set_timeout = vb_set_timeout,
	.set_cancel = vb_set_cancel,
	.peer_addr = vb_peer_addr,
	.close = vb_close,
	.send = vb_send,
	.ctl_pop = vb_ctl_pop,
	.reg_remote = vb_reg_remote,
	.reg_local = vb_reg_local,
	.dereg = vb_dereg,
	.post_reads = vb_post_reads,
	.reap = vb_reap,
	.progress = vb_progress,
	.counters = vb_counters,
};
