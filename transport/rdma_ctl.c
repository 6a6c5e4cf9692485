/* SPDX-License-Identifier: MIT */
/*
 * transport/rdma_ctl.c - the verbs provider's completions and control
 * stream: failed completions to errno (the one table), polling the
 * completion queue (control RECVs framed into messages, SENDs returned to
 * the ring, reads completed up to each signaled one), waiting for
 * completions and connection manager events, SENDs of control frames,
 * keepalives.
 */
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "transport/rdma_internal.h"

static int cm_check(struct verbs_conn *c);

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

int verbs_broke(struct verbs_conn *c, int err)
{
	if (!c->broken)
		c->broken = err;
	return c->broken;
}

int verbs_post_recv(struct verbs_conn *c, unsigned i)
{
	struct ibv_sge sge = { (uintptr_t)(c->ctl + (size_t)i * CTL_BUF), CTL_BUF,
			       c->ctl_mr->lkey };
	struct ibv_recv_wr wr = { .wr_id = WRID_RECV(i), .sg_list = &sge, .num_sge = 1 }, *bad;
	int ret = ibv_post_recv(c->id->qp, &wr, &bad);

	return ret ? kvmig_err(-ret, "ibv_post_recv: %s", strerror(ret)) : 0;
}

/* ---- completions ---- */

/* Cut complete frames out of the received stream into the control queue. */
static int frame_stream(struct verbs_conn *c)
{
	size_t off = 0;
	int ret = 0;

	while (c->stream_len - off >= KVMIG_WIRE_HDR_LEN) {
		struct kvmig_wire_hdr h;
		struct xport_msg *m;

		if ((ret = kvmig_wire_get_hdr(c->stream + off, &h)) < 0) {
			ret = verbs_broke(c, kvmig_err_prefix(ret, "from %s", c->peer));
			break;
		}
		if (c->stream_len - off - KVMIG_WIRE_HDR_LEN < h.len)
			break; /* the rest of this frame is in later SENDs */
		off += KVMIG_WIRE_HDR_LEN;
		if (h.type == KVMIG_MSG_KEEPALIVE && !h.len)
			continue;
		if (!(m = calloc(1, sizeof(*m))) || !(m->payload = malloc(h.len ? h.len : 1))) {
			free(m);
			ret = verbs_broke(c, -ENOMEM);
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
	 * timeout (verbs_progress), however often keepalives arrive. */
	if (!c->stream_len)
		c->partial_since = 0;
	else if (off || !c->partial_since)
		c->partial_since = kvmig_now();
	return ret;
}

static int take_recv(struct verbs_conn *c, unsigned slot, uint32_t len)
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
			return verbs_broke(c, -ENOMEM);
		c->stream = p;
		c->stream_cap = cap;
	}
	memcpy(c->stream + c->stream_len, c->ctl + (size_t)slot * CTL_BUF, len);
	c->stream_len += len;
	if ((ret = verbs_post_recv(c, slot)) < 0)
		return verbs_broke(c, ret);
	return frame_stream(c);
}

/* Every read up to and including @last is done. */
static void complete_reads(struct verbs_conn *c, struct xport_read *last)
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

static int wc_failed(struct verbs_conn *c, const struct ibv_wc *wc)
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
		return verbs_broke(c, kvmig_err(err, "connection to %s broke: %s flushed (the peer's side "
						"failed first, or the peer is gone)", c->peer, what));
	if (err == -EFAULT && !WRID_IS_CTL(wc->wr_id))
		return verbs_broke(c, kvmig_err(err, "%s from %s was refused: %s (the peer does not "
						"expose that range, or the key is stale)", what,
						c->peer, ibv_wc_status_str(wc->status)));
	return verbs_broke(c, kvmig_err(err, "%s on %s with %s failed: %s (vendor error 0x%x)", what,
					c->dev, c->peer, ibv_wc_status_str(wc->status), wc->vendor_err));
}

/* Poll the CQ dry. Return the number of completions handled, or -errno. */
static int drain_cq(struct verbs_conn *c)
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
		return verbs_broke(c, kvmig_err(-EIO, "ibv_poll_cq failed on %s", c->dev));
	/* What arrived before a failure is handled first: the session pops
	 * queued messages before it calls progress() again. */
	return total ? total : c->broken;
}

/* Handle what the connection manager says: a disconnect or device removal breaks us. */
static int cm_check(struct verbs_conn *c)
{
	struct rdma_cm_event *ev;

	while (rdma_get_cm_event(c->ch, &ev) == 0) {
		enum rdma_cm_event_type t = ev->event;

		rdma_ack_cm_event(ev);
		if (t == RDMA_CM_EVENT_DISCONNECTED)
			verbs_broke(c, kvmig_err(-ECONNRESET, "peer %s disconnected", c->peer));
		else if (t == RDMA_CM_EVENT_DEVICE_REMOVAL)
			verbs_broke(c, kvmig_err(-ENODEV, "RDMA device %s was removed", c->dev));
	}
	return c->broken;
}

/*
 * Wait for completions or CM events for at most @timeout_ms (and @wake_fd).
 * Return completions handled (> 0), 0 if none arrived (time up or woken;
 * *woken says which), or -errno.
 */
int verbs_wait_events(struct verbs_conn *c, int timeout_ms, int wake_fd, int *woken)
{
	struct pollfd pfd[4] = { { c->cc->fd, POLLIN, 0 }, { c->ch->fd, POLLIN, 0 },
				 { wake_fd, POLLIN, 0 }, { c->cancel_fd, POLLIN, 0 } };
	struct ibv_cq *cq;
	void *ctx;
	int n, r;

	*woken = 0;
	if ((n = drain_cq(c)) != 0)
		return n;
	if ((r = verbs_cancelled(c->cancel_fd)) < 0)
		return r;
	/* A signal ends the wait: the caller counts what is left of it. */
	r = poll(pfd, 4, timeout_ms); /* negative fds are skipped */
	if (verbs_cancelled(c->cancel_fd) < 0)
		return -ECANCELED;
	if (r < 0 && errno == EINTR)
		return 0;
	if (r < 0)
		return kvmig_err(-errno, "poll: %s", strerror(errno));
	if (pfd[0].revents && ibv_get_cq_event(c->cc, &cq, &ctx) == 0) {
		ibv_ack_cq_events(cq, 1);
		if ((r = ibv_req_notify_cq(c->cq, 0)))
			return verbs_broke(c, kvmig_err(-r, "ibv_req_notify_cq: %s", strerror(r)));
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

static int post_send(struct verbs_conn *c, const uint8_t *p, uint32_t len)
{
	uint8_t *buf = c->ctl + (size_t)(N_RECV + c->send_next) * CTL_BUF;
	struct ibv_sge sge = { (uintptr_t)buf, len, c->ctl_mr->lkey };
	struct ibv_send_wr wr = { .wr_id = WRID_SEND, .sg_list = &sge, .num_sge = 1,
				  .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED }, *bad;
	int ret;

	memcpy(buf, p, len);
	if ((ret = ibv_post_send(c->id->qp, &wr, &bad)))
		return verbs_broke(c, kvmig_err(-ret, "ibv_post_send (control) to %s: %s", c->peer,
						strerror(ret)));
	c->send_next = (c->send_next + 1) % N_SEND;
	c->send_free--;
	c->last_sent = kvmig_now();
	return 0;
}

int verbs_send(struct xport_conn *xc, const void *frames, size_t len)
{
	struct verbs_conn *c = to_conn(xc);
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
				return verbs_broke(c, kvmig_err(-ETIMEDOUT, "peer %s took no control message "
								"for %d ms", c->peer, c->timeout_ms));
			if ((ret = verbs_wait_events(c, left, -1, &woken)) < 0)
				return ret;
		}
		if ((ret = post_send(c, p, n)) < 0)
			return ret;
		p += n;
		len -= n;
	}
	return 0;
}

int verbs_send_keepalive(struct verbs_conn *c)
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

int verbs_ctl_pop(struct xport_conn *xc, struct xport_msg **m)
{
	struct verbs_conn *c = to_conn(xc);

	return xport_msgq_pop(&c->msgs, c->broken, m);
}
