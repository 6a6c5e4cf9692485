/* SPDX-License-Identifier: MIT */
/*
 * transport/rdma_conn.c - the verbs provider's connection setup: connection
 * manager events, the listener, accepting and connecting (an RC queue pair
 * with its completion queue and control buffers per connection), closing
 * (after our last SENDs are acknowledged), and the probe `auto` uses.
 */
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport/rdma_internal.h"

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

/* -ECANCELED with a message once @fd (if >= 0) is readable, else 0. */
int verbs_cancelled(int fd)
{
	struct pollfd pfd = { fd, POLLIN, 0 };

	/* Readable, or no longer a pipe we can read (closed: POLLNVAL): stop. */
	if (fd >= 0 && poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)))
		return kvmig_err(-ECANCELED, "interrupted");
	return 0;
}

/*
 * Wait up to @timeout_ms for the next event on @ch. Events other than
 * @want are errors named after @what. On success *out is the event
 * (caller acks).
 */
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
		while (r < 0 && errno == EINTR && !verbs_cancelled(cancel_fd));
		if ((err = verbs_cancelled(cancel_fd)) < 0)
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

/* ---- connection resources ---- */

/*
 * CQ with its channel, RC QP on @id, control buffers with RECVs posted, in
 * @dom's protection domain when it is on @id's device (a reference is
 * taken), else in a new one of its own.
 */
static int conn_setup(struct verbs_conn *c, struct rdma_cm_id *id, struct verbs_domain *dom)
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
		verbs_domain_get(dom);
		c->dom = dom;
	} else if (!(c->dom = verbs_domain_new(id->verbs, 0))) {
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
		if ((ret = verbs_post_recv(c, i)) < 0)
			return ret;
	if ((ret = ibv_req_notify_cq(c->cq, 0)))
		return kvmig_err(-ret, "ibv_req_notify_cq: %s", strerror(ret));
	return 0;
}

static void conn_param(const struct verbs_conn *c, struct rdma_conn_param *p)
{
	memset(p, 0, sizeof(*p));
	p->initiator_depth = c->init_depth;
	p->responder_resources = c->resp_res;
	p->retry_count = 7;
	p->rnr_retry_count = 7; /* infinite: the peer reposts its buffers promptly */
}

static struct verbs_conn *conn_alloc(void)
{
	struct verbs_conn *c = calloc(1, sizeof(*c));

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

void verbs_close(struct xport_conn **xc)
{
	struct verbs_conn *c;

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
			if (verbs_wait_events(c, LINGER_MS, -1, &woken) < 0)
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
		verbs_domain_put(&c->dom);
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

static void peer_name(struct verbs_conn *c)
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

int verbs_listen(const char *addr, struct xport_listener **ret)
{
	struct verbs_listener *l = calloc(1, sizeof(*l));
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
	if (rdma_bind_addr(l->id, res->ai_addr) || rdma_listen(l->id, 16)) {
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

const char *verbs_listener_addr(const struct xport_listener *xl)
{
	return kvmig_container_of(xl, const struct verbs_listener, base)->addr;
}

void verbs_listener_close(struct xport_listener **xl)
{
	struct verbs_listener *l;

	if (!xl || !*xl)
		return;
	l = kvmig_container_of(*xl, struct verbs_listener, base);
	verbs_domain_put(&l->dom);
	rdma_destroy_id(l->id);
	rdma_destroy_event_channel(l->ch);
	free(l);
	*xl = NULL;
}

int verbs_accept_conn(struct xport_listener *xl, int timeout_ms, int cancel_fd,
		      struct xport_conn **ret)
{
	struct verbs_listener *l = kvmig_container_of(xl, struct verbs_listener, base);
	struct verbs_conn *c = conn_alloc();
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
		verbs_close(&(struct xport_conn *){ &c->base });
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
	/* Set once, by the one accepting thread; receivers read it (forget). */
	if (!__atomic_load_n(&l->dom, __ATOMIC_ACQUIRE))
		__atomic_store_n(&l->dom, verbs_domain_new(id->verbs, 1), __ATOMIC_RELEASE);
	/* (NULL: this connection goes uncached) */
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
	/* A peer came: its set-up gets at least RESOLVE_MS, however short the
	 * wait for one was (paths.c accepts in slices of 200 ms). */
	if ((err = cm_wait_cancel(c->ch, RDMA_CM_EVENT_ESTABLISHED,
				  timeout_ms < 0 ? 30000 : KVMIG_MAX(timeout_ms, RESOLVE_MS),
				  cancel_fd, what, &ev)) < 0)
		goto fail;
	rdma_ack_cm_event(ev);
	*ret = &c->base;
	return 0;
fail:
	verbs_close(&(struct xport_conn *){ &c->base });
	return err;
}

int verbs_connect_conn(const char *addr, int timeout_ms, int cancel_fd, struct xport_conn **ret)
{
	struct verbs_conn *c = conn_alloc();
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
	if ((err = cm_wait_cancel(c->ch, RDMA_CM_EVENT_ADDR_RESOLVED, RESOLVE_MS + 1000, cancel_fd,
				  what, &ev)) < 0)
		goto fail;
	rdma_ack_cm_event(ev);
	if (rdma_resolve_route(c->id, RESOLVE_MS)) {
		err = kvmig_err(-errno, "%s: no RDMA route (%s): no RDMA device serves this "
				"address", what, strerror(errno));
		goto fail;
	}
	if ((err = cm_wait_cancel(c->ch, RDMA_CM_EVENT_ROUTE_RESOLVED, RESOLVE_MS + 1000, cancel_fd,
				  what, &ev)) < 0)
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
	if ((err = cm_wait_cancel(c->ch, RDMA_CM_EVENT_ESTABLISHED, timeout_ms, cancel_fd, what,
				  &ev)) < 0)
		goto fail;
	rdma_ack_cm_event(ev);
	freeaddrinfo(res);
	*ret = &c->base;
	return 0;
fail:
	if (res)
		freeaddrinfo(res);
	verbs_close(&(struct xport_conn *){ &c->base });
	return err;
}

void verbs_set_cancel(struct xport_conn *xc, int fd)
{
	to_conn(xc)->cancel_fd = fd;
}

const char *verbs_peer_addr(const struct xport_conn *xc)
{
	return kvmig_container_of(xc, const struct verbs_conn, base)->peer;
}

int verbs_local_addr(const struct xport_conn *xc, char *buf, size_t len)
{
	const struct verbs_conn *c = kvmig_container_of(xc, const struct verbs_conn, base);
	struct sockaddr *sa = rdma_get_local_addr(c->id);
	struct sockaddr_storage ss = { 0 };

	memcpy(&ss, sa, sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
	       sizeof(struct sockaddr_in));
	kvmig_addr_format(&ss, buf, len);
	return 0;
}

void verbs_set_timeout(struct xport_conn *xc, int timeout_ms)
{
	to_conn(xc)->timeout_ms = timeout_ms;
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
