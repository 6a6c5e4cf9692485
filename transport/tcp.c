/* SPDX-License-Identifier: MIT */
/*
 * transport/tcp.c - the tcp provider: RDMA READ semantics over one TCP
 * connection, for machines without RDMA.
 *
 * A read is a READ_REQ frame (id, address, length, key); the sender's
 * progress() answers it with a READ_RESP header followed by the bytes sent
 * straight from its registered page memory (sendmsg over the page), and the
 * receiver's progress() receives them straight into the destination page
 * (recv into the posted read's buffer). No page byte is staged on either
 * side. Control frames share the connection and are queued for the session.
 *
 * TCP keeps order and the sender answers requests one by one, so responses
 * arrive in request order: the pending reads are a FIFO and each response
 * must match its head.
 *
 * The socket is blocking with SO_RCVTIMEO / SO_SNDTIMEO set to the
 * connection's timeout, so a peer that goes silent in the middle of a frame
 * is a -ETIMEDOUT, never a hang; waits between frames use poll().
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util/internal.h"
#include "transport/provider.h"

#define TCP_MAX_READ (16u << 20)  /* largest single read a peer may ask for */
#define FRAMES_PER_PROGRESS 256   /* then return, so the session can act */
#define TCP_KEY_BYTES 16u         /* random bytes of a registration's key */

struct tcp_reg {
	void *base;
	uint64_t len;
	struct kvmig_rkey key;
	struct tcp_reg *next;
};

struct tcp_conn {
	struct xport_conn base;
	int fd;
	int cancel_fd;
	int timeout_ms;
	double frame_until; /* the frame being received must be whole by then */
	int broken; /* sticky -errno once the byte stream cannot be trusted */
	int draining; /* the connection broke: read what is left, answer nothing */
	int tx_broken; /* sticky -errno once a send failed: ours may end mid-frame */
	char peer[64];
	uint64_t next_id;  /* id of the next read posted */
	uint64_t head_id;  /* id of pend's head: responses come in request order */
	struct xport_readq pend; /* posted, awaiting READ_RESP */
	struct xport_readq done; /* completed, not yet reaped */
	struct xport_msgq ctl;
	struct tcp_reg *regs;
	struct kvmig_wbuf wb;
	struct xport_counters cnt;
};

struct tcp_listener {
	struct xport_listener base;
	int fd;
	char addr[80];
};

static struct tcp_conn *to_conn(struct xport_conn *c)
{
	return kvmig_container_of(c, struct tcp_conn, base);
}

static struct tcp_listener *to_listener(struct xport_listener *l)
{
	return kvmig_container_of(l, struct tcp_listener, base);
}

static void set_sock_timeouts(int fd, int timeout_ms)
{
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* @ss: the peer's address (from accept or connect). */
static int conn_new(int fd, int timeout_ms, const struct sockaddr_storage *ss,
		    struct xport_conn **ret)
{
	struct tcp_conn *c = calloc(1, sizeof(*c));
	int one = 1;

	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	c->base.ops = &kvmig_xport_tcp;
	c->fd = fd;
	c->cancel_fd = -1;
	c->timeout_ms = timeout_ms;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	set_sock_timeouts(fd, timeout_ms);
	kvmig_addr_format(ss, c->peer, sizeof(c->peer));
	*ret = &c->base;
	return 0;
}

/* -ECANCELED with a message once @fd (if >= 0) is readable, else 0. */
static int cancelled(int fd)
{
	struct pollfd pfd = { fd, POLLIN, 0 };

	/* Readable, or no longer a pipe we can read (closed: POLLNVAL): stop. */
	if (fd >= 0 && poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)))
		return kvmig_err(-ECANCELED, "interrupted");
	return 0;
}

/* Milliseconds left until @until (>= 0), for a poll. */
static int ms_left(double until)
{
	double left = (until - kvmig_now()) * 1000.0;

	return left <= 0 ? 0 : left >= INT32_MAX ? INT32_MAX : (int)left + 1;
}

static int tcp_listen(const char *addr, struct xport_listener **ret)
{
	struct addrinfo *res = NULL;
	struct tcp_listener *l;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd, err, one = 1;

	if ((err = kvmig_addr_resolve(addr, 1, &res)) < 0)
		return err;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err = -errno;
		freeaddrinfo(res);
		return kvmig_err(err, "cannot create a socket for %s: %s", addr, strerror(-err));
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 16) < 0) {
		err = -errno;
		freeaddrinfo(res);
		close(fd);
		return kvmig_err(err, "cannot listen on %s: %s", addr, strerror(-err));
	}
	freeaddrinfo(res);
	l = calloc(1, sizeof(*l));
	if (!l) {
		close(fd);
		return -ENOMEM;
	}
	l->base.ops = &kvmig_xport_tcp;
	l->fd = fd;
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	kvmig_addr_format(&ss, l->addr, sizeof(l->addr));
	*ret = &l->base;
	return 0;
}

static const char *tcp_listener_addr(const struct xport_listener *xl)
{
	return kvmig_container_of(xl, const struct tcp_listener, base)->addr;
}

static int tcp_accept(struct xport_listener *xl, int timeout_ms, int cancel_fd,
		      struct xport_conn **ret)
{
	struct tcp_listener *l = to_listener(xl);
	struct pollfd pfd[2] = { { l->fd, POLLIN, 0 }, { cancel_fd, POLLIN, 0 } };
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd, r;

	for (;;) {
		r = poll(pfd, cancel_fd >= 0 ? 2 : 1, timeout_ms);
		if (r >= 0 || errno != EINTR)
			break;
		if ((r = cancelled(cancel_fd)) < 0) /* a signal: maybe the one to stop */
			return r;
	}
	if (r > 0 && cancelled(cancel_fd) < 0)
		return -ECANCELED;
	if (r == 0)
		return kvmig_err(-ETIMEDOUT, "no sender connected to %s within %d ms", l->addr,
				 timeout_ms);
	if (r < 0)
		return kvmig_err(-errno, "waiting for a sender on %s: %s", l->addr, strerror(errno));
	fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
	if (fd < 0)
		return kvmig_err(-errno, "accept on %s: %s", l->addr, strerror(errno));
	/* The connection's own timeout is set by the session right after. */
	return conn_new(fd, 30000, &ss, ret);
}

static void tcp_listener_close(struct xport_listener **xl)
{
	struct tcp_listener *l;

	if (!xl || !*xl)
		return;
	l = to_listener(*xl);
	close(l->fd);
	free(l);
	*xl = NULL;
}

static int tcp_connect(const char *addr, int timeout_ms, int cancel_fd, struct xport_conn **ret)
{
	struct addrinfo *res = NULL, *ai;
	int fd = -1, err = -ECONNREFUSED;

	if ((err = kvmig_addr_resolve(addr, 0, &res)) < 0)
		return err;
	err = -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		struct pollfd pfd[2];
		socklen_t sl = sizeof(int);
		int soerr = 0, r, r2;

		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
			err = -errno;
			goto next;
		}
		pfd[0] = (struct pollfd){ fd, POLLOUT, 0 };
		pfd[1] = (struct pollfd){ cancel_fd, POLLIN, 0 };
		do
			r = poll(pfd, cancel_fd >= 0 ? 2 : 1, timeout_ms);
		while (r < 0 && errno == EINTR && !cancelled(cancel_fd));
		if ((r2 = cancelled(cancel_fd)) < 0) {
			close(fd);
			freeaddrinfo(res);
			return r2;
		}
		if (r == 0) {
			err = -ETIMEDOUT;
			goto next;
		}
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr) {
			err = -soerr;
			goto next;
		}
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		struct sockaddr_storage ss = { 0 };

		memcpy(&ss, ai->ai_addr, KVMIG_MIN((size_t)ai->ai_addrlen, sizeof(ss)));
		freeaddrinfo(res);
		return conn_new(fd, timeout_ms, &ss, ret);
next:
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return kvmig_err(err, "cannot connect to %s: %s", addr, strerror(-err));
}

static void tcp_set_timeout(struct xport_conn *xc, int timeout_ms)
{
	struct tcp_conn *c = to_conn(xc);

	c->timeout_ms = timeout_ms;
	set_sock_timeouts(c->fd, timeout_ms);
}

static void tcp_set_cancel(struct xport_conn *xc, int fd)
{
	to_conn(xc)->cancel_fd = fd;
}

static const char *tcp_peer_addr(const struct xport_conn *xc)
{
	return kvmig_container_of(xc, const struct tcp_conn, base)->peer;
}

/*
 * Before close: send FIN after what is queued (our last message, e.g. an
 * ABORT) and read what the peer still sends, briefly. Closing with unread
 * bytes makes the kernel reset the connection and drop data not yet sent,
 * and the peer would see "reset" instead of our reason.
 */
static void linger_close(int fd)
{
	struct pollfd pfd = { fd, POLLIN, 0 };
	double until = kvmig_now() + 0.2;
	char sink[65536];

	if (shutdown(fd, SHUT_WR) < 0)
		return;
	while (kvmig_now() < until && poll(&pfd, 1, 20) > 0) {
		ssize_t r = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);

		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
			break; /* the peer closed too */
	}
}

static void tcp_close(struct xport_conn **xc)
{
	struct tcp_conn *c;

	if (!xc || !*xc)
		return;
	c = to_conn(*xc);
	xport_msgq_free(&c->ctl);
	while (c->regs) {
		struct tcp_reg *r = c->regs;

		c->regs = r->next;
		free(r);
	}
	kvmig_wbuf_free(&c->wb);
	if (!c->broken)
		linger_close(c->fd);
	close(c->fd);
	free(c);
	*xc = NULL;
}

/* Map a socket errno to the migration's vocabulary, once, and remember it. */
static int broke(struct tcp_conn *c, int err, const char *what)
{
	if (err == -EAGAIN || err == -EWOULDBLOCK)
		err = kvmig_err(-ETIMEDOUT, "peer %s was silent for %d ms while %s", c->peer,
				c->timeout_ms, what);
	else if (err == -ECONNRESET || err == -EPIPE)
		err = kvmig_err(-ECONNRESET, "peer %s closed the connection while %s", c->peer,
				what);
	else if (err != -EBADMSG && err != -EFAULT && err != -ETIMEDOUT && err != -ECANCELED)
		err = kvmig_err(err, "connection to %s failed while %s: %s", c->peer, what,
				strerror(-err));
	c->broken = err;
	return err;
}

/*
 * Receive @len bytes of the frame being read. SO_RCVTIMEO bounds each wait
 * for a byte; the frame as a whole must also arrive by c->frame_until, or a
 * peer sending a byte now and then would hold this side forever.
 */
static int recv_full(struct tcp_conn *c, void *buf, size_t len, const char *what)
{
	uint8_t *p = buf;
	int shortened = 0, sliced = 0, ret = 0;
	double quiet_until = kvmig_now() + c->timeout_ms / 1000.0;

	/* With a cancel fd, waits come in slices of 250 ms, each ending with a
	 * look at it: a peer stopping mid-frame cannot hold off an abort (an
	 * agent cancels through a pipe, not a signal) until the frame's
	 * deadline. The silence timeout is then counted here. */
	if (c->cancel_fd >= 0 && c->timeout_ms > 250) {
		struct timeval tv = { 0, 250 * 1000 };

		setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		sliced = 1;
	}
	while (len) {
		ssize_t r = recv(c->fd, p, len, MSG_WAITALL);
		double left = c->frame_until - kvmig_now();

		if (r > 0) {
			p += r;
			len -= (size_t)r;
			quiet_until = kvmig_now() + c->timeout_ms / 1000.0;
		} else if (r == 0) {
			ret = broke(c, -ECONNRESET, what);
			break;
		} else if (sliced && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if ((ret = cancelled(c->cancel_fd)) < 0) {
				c->broken = ret; /* mid-frame: the stream is out of step */
				break;
			}
			if (kvmig_now() >= quiet_until) {
				ret = broke(c, -EAGAIN, what);
				break;
			}
		} else if (errno != EINTR) {
			ret = broke(c, -errno, what);
			break;
		} else if ((ret = cancelled(c->cancel_fd)) < 0) {
			c->broken = ret; /* mid-frame: the stream is out of step */
			break;
		}
		if (len && left <= 0) {
			ret = broke(c, kvmig_err(-ETIMEDOUT, "peer %s did not send a whole message "
						 "within %d ms (it sends too slowly or stalls) while %s",
						 c->peer, c->timeout_ms, what), "");
			break;
		}
		if (len && !sliced) { /* wait no longer than the frame has left */
			set_sock_timeouts(c->fd, KVMIG_MAX(1, (int)(left * 1000.0)));
			shortened = 1;
		}
	}
	if (shortened || sliced)
		set_sock_timeouts(c->fd, c->timeout_ms);
	return ret;
}

/*
 * Send all of @iov. SO_SNDTIMEO bounds each wait for room; the whole send
 * must also be done within the timeout, or a peer reading a trickle would
 * keep this side (and a paused source pager) waiting as long as it likes.
 */
static int send_iov(struct tcp_conn *c, struct iovec *iov, int n, const char *what)
{
	double until = kvmig_now() + c->timeout_ms / 1000.0;
	struct msghdr mh = { 0 };
	int ret;

	mh.msg_iov = iov;
	mh.msg_iovlen = (size_t)n;
	while (mh.msg_iovlen) {
		if (kvmig_now() > until)
			return c->tx_broken = broke(c, kvmig_err(-ETIMEDOUT, "peer %s did not take "
								 "our message within %d ms (it reads "
								 "too slowly or stalls) while %s",
								 c->peer, c->timeout_ms, what), "");
		/* Test-only: at most 1000 bytes per call, as a full socket would. */
		size_t keep = mh.msg_iov->iov_len, cap = kvmig_fault("tcp-short-write", NULL) ? 1000 : 0;
		size_t keep_n = mh.msg_iovlen;

		if (cap && keep > cap) {
			mh.msg_iov->iov_len = cap;
			mh.msg_iovlen = 1;
		}
		ssize_t r = sendmsg(c->fd, &mh, MSG_NOSIGNAL);

		mh.msg_iov->iov_len = keep;
		mh.msg_iovlen = keep_n;

		if (r < 0) {
			if (errno == EINTR && (ret = cancelled(c->cancel_fd)) < 0)
				return ret; /* mid-frame: the connection is done for */
			if (errno == EINTR)
				continue;
			return c->tx_broken = broke(c, -errno, what);
		}
		while (mh.msg_iovlen && (size_t)r >= mh.msg_iov->iov_len) {
			r -= (ssize_t)mh.msg_iov->iov_len;
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
		if (mh.msg_iovlen) {
			mh.msg_iov->iov_base = (uint8_t *)mh.msg_iov->iov_base + r;
			mh.msg_iov->iov_len -= (size_t)r;
		}
	}
	return 0;
}

static int tcp_send(struct xport_conn *xc, const void *frames, size_t len)
{
	struct tcp_conn *c = to_conn(xc);
	struct iovec iov = { (void *)frames, len };

	/* What broke the incoming stream (a silent peer, a malformed frame, a
	 * refused read) leaves ours at a frame boundary: the session can still
	 * say why it gives up (ABORT). */
	if (c->tx_broken)
		return c->tx_broken;
	return send_iov(c, &iov, 1, "sending a control message");
}

static int tcp_ctl_pop(struct xport_conn *xc, struct xport_msg **m)
{
	struct tcp_conn *c = to_conn(xc);

	return xport_msgq_pop(&c->ctl, c->broken, m);
}

static int tcp_reg_remote(struct xport_conn *xc, void *base, uint64_t len,
			  struct kvmig_rkey *key, void **handle)
{
	struct tcp_conn *c = to_conn(xc);
	struct tcp_reg *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	/* A fresh random key per registration: a stale or guessed key fails
	 * like a bad rkey on a NIC. */
	r->key.len = TCP_KEY_BYTES;
	if (getrandom(r->key.b, TCP_KEY_BYTES, 0) != (ssize_t)TCP_KEY_BYTES) {
		int err = errno ? -errno : -EIO;

		free(r);
		return kvmig_err(err, "no random bytes for a registration key: %s",
				 strerror(-err));
	}
	r->base = base;
	r->len = len;
	r->next = c->regs;
	c->regs = r;
	*key = r->key;
	*handle = r;
	return 0;
}

static int tcp_reg_local(struct xport_conn *xc, void *base, uint64_t len, void **handle)
{
	/* TCP writes into any memory of ours; nothing to pin. */
	*handle = base;
	return 0;
}

static void tcp_dereg(struct xport_conn *xc, void **handle)
{
	struct tcp_conn *c = to_conn(xc);

	if (!handle || !*handle)
		return;
	for (struct tcp_reg **pp = &c->regs; *pp; pp = &(*pp)->next) {
		if (*pp == *handle) {
			struct tcp_reg *r = *pp;

			*pp = r->next;
			free(r);
			break;
		}
	}
	*handle = NULL;
}

static int tcp_post_reads(struct xport_conn *xc, struct xport_read **rds, unsigned n)
{
	struct tcp_conn *c = to_conn(xc);
	int ret = 0;

	if (c->broken)
		return c->broken;
	c->wb.len = 0;
	for (unsigned i = 0; i < n && !ret; i++) {
		struct kvmig_msg_read_req q = { c->next_id++, rds[i]->remote, rds[i]->len,
						rds[i]->key };

		ret = kvmig_wire_put_read_req(&c->wb, &q);
	}
	if (ret < 0)
		return ret;
	/* Queue before sending: a response can only follow its request. */
	for (unsigned i = 0; i < n; i++) {
		rds[i]->status = 0;
		xport_readq_push(&c->pend, rds[i]);
	}
	struct iovec iov = { c->wb.p, c->wb.len };

	return send_iov(c, &iov, 1, "sending read requests");
}

static int tcp_reap(struct xport_conn *xc, struct xport_read **out, unsigned max)
{
	return xport_readq_reap(&to_conn(xc)->done, out, max);
}

/* Sender side: answer one READ_REQ from registered memory, or refuse it. */
static int serve_read(struct tcp_conn *c, const struct kvmig_msg_read_req *q)
{
	const struct tcp_reg *r;
	uint8_t hdr[KVMIG_WIRE_READ_RESP_HDR_LEN];
	struct iovec iov[2];

	for (r = c->regs; r; r = r->next) {
		uint64_t lo = (uint64_t)(uintptr_t)r->base;

		if (kvmig_rkey_equal(&r->key, &q->key) && q->addr >= lo && q->len <= r->len &&
		    q->addr - lo <= r->len - q->len)
			break;
	}
	if (!r || q->len == 0 || q->len > TCP_MAX_READ) {
		c->broken = kvmig_err(-EFAULT, "peer %s asked to read %u bytes at 0x%llx with a "
				      "%u-byte key: outside the memory registered for this "
				      "migration, or a key it was not given", c->peer, q->len,
				      (unsigned long long)q->addr, q->key.len);
		return c->broken;
	}
	if (c->draining)
		return 0; /* only looking for the peer's last word (its ABORT) */
	kvmig_wire_read_resp_hdr(hdr, q->id, q->len);
	iov[0] = (struct iovec){ hdr, sizeof(hdr) };
	iov[1] = (struct iovec){ (void *)(uintptr_t)q->addr, q->len };
	c->cnt.bytes_served += q->len;
	c->cnt.reads_served++;
	return send_iov(c, iov, 2, "answering a read");
}

/* Receiver side: the head read's bytes go straight into its destination. */
static int take_response(struct tcp_conn *c, uint32_t plen)
{
	struct xport_read *rd = c->pend.head;
	uint8_t sub[12] = { 0 };
	uint64_t id;
	uint32_t len;
	int ret;

	if (plen < 12)
		return broke(c, kvmig_wire_get_read_resp(sub, plen, &id, &len), "");
	if ((ret = recv_full(c, sub, sizeof(sub), "receiving a read response")) < 0)
		return ret;
	if ((ret = kvmig_wire_get_read_resp(sub, plen, &id, &len)) < 0)
		return broke(c, kvmig_err_prefix(ret, "from %s", c->peer), "");
	if (!rd)
		return broke(c, kvmig_err(-EBADMSG, "peer %s sent a read response (id %llu) that "
					  "nothing asked for", c->peer, (unsigned long long)id), "");
	if (id != c->head_id || len != rd->len)
		return broke(c, kvmig_err(-EBADMSG, "peer %s answered read %llu with %u bytes; "
					  "expected read %llu of %u bytes", c->peer,
					  (unsigned long long)id, len,
					  (unsigned long long)c->head_id, rd->len), "");
	if ((ret = recv_full(c, rd->local, len, "receiving page bytes")) < 0)
		return ret;
	c->head_id++;
	xport_readq_push(&c->done, xport_readq_pop(&c->pend));
	return 0;
}

static int queue_ctl(struct tcp_conn *c, const struct kvmig_wire_hdr *h)
{
	struct xport_msg *m = calloc(1, sizeof(*m));
	int ret;

	/* Out of memory with the payload unread: the stream is out of step. */
	if (!m)
		return broke(c, -ENOMEM, "receiving a control message");
	m->hdr = *h;
	/* h->len was checked against KVMIG_WIRE_MAX_PAYLOAD by the header decoder. */
	m->payload = malloc(h->len ? h->len : 1);
	if (!m->payload) {
		free(m);
		return broke(c, -ENOMEM, "receiving a control message");
	}
	if ((ret = recv_full(c, m->payload, h->len, "receiving a control message")) < 0) {
		free(m->payload);
		free(m);
		return ret;
	}
	xport_msgq_push(&c->ctl, m);
	return 0;
}

/* One frame: a read served or a response taken (0), a control message
 * queued for the session (1), or -errno. */
static int handle_frame(struct tcp_conn *c)
{
	uint8_t raw[KVMIG_WIRE_HDR_LEN];
	struct kvmig_wire_hdr h;
	int ret;

	c->frame_until = kvmig_now() + c->timeout_ms / 1000.0;
	if ((ret = recv_full(c, raw, sizeof(raw), "waiting for a message")) < 0)
		return ret;
	if ((ret = kvmig_wire_get_hdr(raw, &h)) < 0)
		return broke(c, kvmig_err_prefix(ret, "from %s", c->peer), "");
	if (h.type == KVMIG_MSG_READ_REQ) {
		uint8_t p[KVMIG_WIRE_READ_REQ_MAX];
		struct kvmig_msg_read_req q;

		if (h.len > sizeof(p))
			return broke(c, kvmig_err(-EBADMSG, "READ_REQ message of %u bytes from %s; "
						  "it has at most %zu", h.len, c->peer, sizeof(p)),
				     "");
		if ((ret = recv_full(c, p, h.len, "receiving a read request")) < 0)
			return ret;
		if ((ret = kvmig_wire_get_read_req(p, h.len, &q)) < 0)
			return broke(c, ret, "");
		return serve_read(c, &q);
	}
	if (h.type == KVMIG_MSG_READ_RESP)
		return take_response(c, h.len);
	return (ret = queue_ctl(c, &h)) < 0 ? ret : 1;
}

static int tcp_progress(struct xport_conn *xc, int timeout_ms, int wake_fd)
{
	struct tcp_conn *c = to_conn(xc);
	struct pollfd pfd[3] = { { c->fd, POLLIN, 0 }, { c->cancel_fd, POLLIN, 0 },
				 { wake_fd, POLLIN, 0 } };
	double until = kvmig_now() + (timeout_ms < 0 ? 0 : timeout_ms) / 1000.0;
	int r, ret;

	if (c->broken)
		return c->broken;
	for (;;) {
		if ((ret = cancelled(c->cancel_fd)) < 0)
			return ret;
		/* A signal (a profiler's, an engine's timer) must not restart
		 * the wait from scratch: only what is left of it. */
		r = poll(pfd, wake_fd >= 0 ? 3 : 2, timeout_ms < 0 ? -1 : ms_left(until));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return kvmig_err(-errno, "poll: %s", strerror(errno));
		if (r == 0 && timeout_ms == 0)
			return 0; /* only what was there: nothing */
		if (r == 0)
			return broke(c, -EAGAIN, "waiting for a message");
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))
			break;
		if (wake_fd >= 0 && pfd[2].revents)
			return 0; /* woken */
		/* else the cancel fd: the check at the top says so */
	}
	/* Drain what is there, but return now and then so the session can act,
	 * and after each control message: one at a time is queued, so a peer
	 * cannot make this side hold more than one (unauthenticated, say). */
	for (int i = 0; i < FRAMES_PER_PROGRESS; i++) {
		/* An error after a handled frame waits (c->broken is sticky) so the
		 * session first sees what arrived before it, e.g. a final COMMIT_ACK. */
		if ((ret = handle_frame(c)) < 0)
			return i ? 1 : ret;
		if (ret == 1)
			break;
		pfd[0].revents = 0;
		if (poll(pfd, 1, 0) <= 0 || !(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
			break;
	}
	return 1;
}

static int tcp_wait_fds(struct xport_conn *xc, struct pollfd *out, int max)
{
	if (max < 1)
		return 0;
	out[0] = (struct pollfd){ to_conn(xc)->fd, POLLIN, 0 };
	return 1;
}

static int tcp_failed(const struct xport_conn *xc)
{
	return kvmig_container_of(xc, const struct tcp_conn, base)->broken;
}

static int tcp_local_addr(const struct xport_conn *xc, char *buf, size_t len)
{
	const struct tcp_conn *c = kvmig_container_of(xc, const struct tcp_conn, base);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getsockname(c->fd, (struct sockaddr *)&ss, &sl) < 0)
		return kvmig_err(-errno, "getsockname: %s", strerror(errno));
	kvmig_addr_format(&ss, buf, len);
	return 0;
}

static void tcp_drain(struct xport_conn *xc)
{
	struct tcp_conn *c = to_conn(xc);
	struct pollfd pfd = { c->fd, POLLIN, 0 };
	int broken = c->broken;

	/* Bytes received before a reset stay readable: frame them, past the
	 * read requests queued before the peer's ABORT (not answered). */
	c->draining = 1;
	for (int i = 0; i < 4 * FRAMES_PER_PROGRESS; i++) {
		pfd.revents = 0;
		if (poll(&pfd, 1, 0) <= 0 || !(pfd.revents & POLLIN))
			break;
		c->broken = 0;
		if (handle_frame(c) < 0)
			break;
	}
	c->draining = 0;
	c->broken = broken;
}

static void tcp_counters(const struct xport_conn *xc, struct xport_counters *out)
{
	*out = kvmig_container_of(xc, const struct tcp_conn, base)->cnt;
}

const struct xport_ops kvmig_xport_tcp = {
	.name = "tcp",
	.listen = tcp_listen,
	.listener_addr = tcp_listener_addr,
	.accept = tcp_accept,
	.listener_close = tcp_listener_close,
	.connect = tcp_connect,
	.set_timeout = tcp_set_timeout,
	.set_cancel = tcp_set_cancel,
	.peer_addr = tcp_peer_addr,
	.local_addr = tcp_local_addr,
	.close = tcp_close,
	.send = tcp_send,
	.ctl_pop = tcp_ctl_pop,
	.reg_remote = tcp_reg_remote,
	.reg_local = tcp_reg_local,
	.dereg = tcp_dereg,
	.post_reads = tcp_post_reads,
	.reap = tcp_reap,
	.progress = tcp_progress,
	.wait_fds = tcp_wait_fds,
	.failed = tcp_failed,
	.counters = tcp_counters,
	.drain = tcp_drain,
};
