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
 * the key is the MR's rkey (4 bytes, big-endian, in the opaque key on the
 * wire) and dies with ibv_dereg_mr() at commit or abort.
 * Receiver: IBV_ACCESS_LOCAL_WRITE only, and cached: a listener bound to a
 * device keeps one protection domain for the connections it accepts, and
 * the destination regions registered in it stay registered until the
 * listener closes or the session says the pager changed (listener_forget),
 * so a receiver serving one pager registers it once. Nothing remote can
 * use a local registration.
 *
 * Files: this one (reads, progress, the ops table), rdma_conn.c (connection
 * setup), rdma_mr.c (domains, registrations), rdma_ctl.c (completions,
 * control stream), sharing rdma_internal.h.
 */
#include <string.h>

#include "transport/rdma_internal.h"

/* ---- reads ---- */

static int verbs_post_reads(struct xport_conn *xc, struct xport_read **rds, unsigned n)
{
	struct verbs_conn *c = to_conn(xc);
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
			uint32_t lkey = verbs_local_key(c, rd->local, rd->len), rkey = 0;

			/* A verbs key is an rkey: 4 bytes; anything else is not ours. */
			if (rd->key.len != 4)
				return verbs_broke(c, kvmig_err(-EFAULT, "a read with a %u-byte key: "
								"not an rkey of this provider",
								rd->key.len));
			for (int b = 0; b < 4; b++)
				rkey = rkey << 8 | rd->key.b[b];
			if (!lkey)
				return verbs_broke(c, kvmig_err(-EFAULT, "read destination %p+%u is not in "
								"registered memory", rd->local, rd->len));
			sge[j] = (struct ibv_sge){ (uintptr_t)rd->local, rd->len, lkey };
			wr[j] = (struct ibv_send_wr){ .wr_id = (uintptr_t)rd, .sg_list = &sge[j],
						      .num_sge = 1, .opcode = IBV_WR_RDMA_READ,
						      .next = j + 1 < k ? &wr[j + 1] : NULL };
			wr[j].wr.rdma.remote_addr = rd->remote;
			wr[j].wr.rdma.rkey = rkey;
			if (++c->unsignaled >= SIGNAL_EVERY || i + j + 1 == n) {
				wr[j].send_flags = IBV_SEND_SIGNALED;
				c->unsignaled = 0;
			}
			rd->status = 0;
			xport_readq_push(&c->pend, rd);
			c->outstanding++;
		}
		if ((ret = ibv_post_send(c->id->qp, wr, &bad)))
			return verbs_broke(c, kvmig_err(-ret, "ibv_post_send (RDMA READ) to %s: %s",
							c->peer, strerror(ret)));
		i += k;
	}
	return 0;
}

static int verbs_reap(struct xport_conn *xc, struct xport_read **out, unsigned max)
{
	return xport_readq_reap(&to_conn(xc)->done, out, max);
}

static int verbs_progress(struct xport_conn *xc, int timeout_ms, int wake_fd)
{
	struct verbs_conn *c = to_conn(xc);
	double start = kvmig_now(), ka = c->timeout_ms / 1000.0 / KEEPALIVE_DIV;

	if (c->broken)
		return c->broken;
	if (timeout_ms == 0) { /* what is there, with no wait and no silence timeout */
		int woken, ret;

		if (kvmig_now() - c->last_sent >= ka && (ret = verbs_send_keepalive(c)) < 0)
			return ret;
		if (c->partial_since && kvmig_now() - c->partial_since > c->timeout_ms / 1000.0)
			return verbs_broke(c, kvmig_err(-ETIMEDOUT, "peer %s did not send a whole message "
							"within %d ms (it sends too slowly or stalls)",
							c->peer, c->timeout_ms));
		c->heard = 0;
		if ((ret = verbs_wait_events(c, 0, -1, &woken)) < 0)
			return ret;
		return c->heard;
	}
	for (;;) {
		double now = kvmig_now();
		int left = timeout_ms < 0 ? c->timeout_ms : timeout_ms - (int)((now - start) * 1000.0);
		int woken, ret, slice;

		if (now - c->last_sent >= ka && (ret = verbs_send_keepalive(c)) < 0)
			return ret;
		if (left <= 0)
			return verbs_broke(c, kvmig_err(-ETIMEDOUT, "peer %s was silent for %d ms", c->peer,
							c->timeout_ms));
		if (c->partial_since && now - c->partial_since > c->timeout_ms / 1000.0)
			return verbs_broke(c, kvmig_err(-ETIMEDOUT, "peer %s did not send a whole message "
							"within %d ms (it sends too slowly or stalls)",
							c->peer, c->timeout_ms));
		/* Wake for the next keepalive, unless the send ring is full (its
		 * completions wake us, and the peer hears those sends). */
		slice = !c->send_free ? left :
			(int)KVMIG_MIN((double)left, (c->last_sent + ka - now) * 1000.0 + 1);
		c->heard = 0;
		if ((ret = verbs_wait_events(c, KVMIG_MAX(slice, 1), wake_fd, &woken)) < 0)
			return ret;
		if (c->heard)
			return 1;
		if (woken)
			return 0;
	}
}

static int verbs_wait_fds(struct xport_conn *xc, struct pollfd *out, int max)
{
	struct verbs_conn *c = to_conn(xc);

	if (max < 2)
		return 0;
	/* The completion channel is armed whenever it has no event pending. */
	out[0] = (struct pollfd){ c->cc->fd, POLLIN, 0 };
	out[1] = (struct pollfd){ c->ch->fd, POLLIN, 0 };
	return 2;
}

static int verbs_failed(const struct xport_conn *xc)
{
	return kvmig_container_of(xc, const struct verbs_conn, base)->broken;
}

static void verbs_counters(const struct xport_conn *xc, struct xport_counters *out)
{
	/* One-sided reads: the sender's CPU never sees them. */
	memset(out, 0, sizeof(*out));
}

const struct xport_ops kvmig_xport_rdma = {
	.name = "rdma",
	.listen = verbs_listen,
	.listener_addr = verbs_listener_addr,
	.accept = verbs_accept_conn,
	.listener_close = verbs_listener_close,
	.listener_forget = verbs_listener_forget,
	.connect = verbs_connect_conn,
	.set_timeout = verbs_set_timeout,
	.set_cancel = verbs_set_cancel,
	.peer_addr = verbs_peer_addr,
	.local_addr = verbs_local_addr,
	.close = verbs_close,
	.send = verbs_send,
	.ctl_pop = verbs_ctl_pop,
	.reg_remote = verbs_reg_remote,
	.reg_local = verbs_reg_local,
	.dereg = verbs_dereg,
	.post_reads = verbs_post_reads,
	.reap = verbs_reap,
	.progress = verbs_progress,
	.wait_fds = verbs_wait_fds,
	.failed = verbs_failed,
	.counters = verbs_counters,
};
