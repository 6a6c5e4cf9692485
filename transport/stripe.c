/* SPDX-License-Identifier: MIT */
/*
 * transport/stripe.c - one migration over several connections ("paths") of
 * one provider: TCP streams, verbs queue pairs, devices. It is itself a
 * provider (kvmig_xport_stripe) that the session switches to once the extra
 * paths joined (transport/paths.c), so send.c and recv.c do not know how
 * many paths there are.
 *
 * - Control frames travel on path 0 only; one arriving on another path is a
 *   malformed peer (-EBADMSG).
 * - Reads are striped: each read goes to the path with the fewest bytes in
 *   flight, and each path's completions are reaped on their own.
 * - A registration is made on every path (each may have its own protection
 *   domain or registration table); its key is the paths' keys, all of one
 *   length, in path order, and a read on path k carries only the k-th.
 * - progress() gives every path a turn without waiting (progress with
 *   timeout 0), then polls all their descriptors at once.
 * - A path that fails fails the whole connection when it matters: while it
 *   has reads in flight, while this side serves reads (it has remote
 *   registrations), or when a read is posted on it; path 0 always. A path
 *   the peer closed after the last read (the end of a migration) is not an
 *   error by itself.
 */
#include <stdio.h>
#include <string.h>

#include "transport/provider.h"
#include "util/internal.h"

#define FDS_PER_PATH 4

struct stripe_conn {
	struct xport_conn base;
	const struct xport_ops *in;
	struct xport_conn *p[KVMIG_WIRE_MAX_PATHS];
	unsigned n;
	uint64_t inflight[KVMIG_WIRE_MAX_PATHS]; /* bytes posted, not completed */
	struct xport_readq done;                 /* completed on any path, not reaped */
	int err[KVMIG_WIRE_MAX_PATHS];           /* a path's failure (-errno) */
	unsigned serving;                        /* live remote registrations */
	uint64_t reaped;                         /* reads reaped, for a fault point */
	int timeout_ms, cancel_fd;
	int broken; /* sticky -errno, told after what arrived before it */
	char why[512]; /* ... with this sentence */
	void *last_ctx; /* the last read's page (its session context) ... */
	unsigned last_path; /* ... and its path: a page's reads stay on one */
};

/* The connection broke with @err and the last error's sentence (kept: a
 * later failure of another path must not replace it). Returns it. */
static int set_broken(struct stripe_conn *s, int err)
{
	if (!s->broken) {
		s->broken = err;
		snprintf(s->why, sizeof(s->why), "%s", kvmig_last_error());
	}
	return s->broken;
}

/* The sticky failure, its sentence recorded again. */
static int broken(const struct stripe_conn *s)
{
	return s->why[0] ? kvmig_err(s->broken, "%s", s->why) : s->broken;
}

/* One registration on every path. */
struct stripe_reg {
	void *h[KVMIG_WIRE_MAX_PATHS];
	int remote;
};

static struct stripe_conn *to_stripe(struct xport_conn *c)
{
	return kvmig_container_of(c, struct stripe_conn, base);
}

static const struct stripe_conn *to_cstripe(const struct xport_conn *c)
{
	return kvmig_container_of(c, const struct stripe_conn, base);
}

int xport_stripe(const struct xport_ops *inner, struct xport_conn **paths, unsigned n,
		 struct xport_conn **ret)
{
	struct stripe_conn *s;

	if (n < 2 || n > KVMIG_WIRE_MAX_PATHS || !inner->wait_fds || !inner->local_addr ||
	    !inner->failed)
		return kvmig_err(-EINVAL, "cannot stripe %u %s connections (2..%u)", n, inner->name,
				 KVMIG_WIRE_MAX_PATHS);
	if (!(s = calloc(1, sizeof(*s))))
		return -ENOMEM;
	s->base.ops = &kvmig_xport_stripe;
	s->in = inner;
	s->n = n;
	s->cancel_fd = -1;
	s->timeout_ms = 30000;
	for (unsigned i = 0; i < n; i++) {
		s->p[i] = paths[i];
		paths[i] = NULL;
	}
	*ret = &s->base;
	return 0;
}

static void stripe_set_timeout(struct xport_conn *c, int timeout_ms)
{
	struct stripe_conn *s = to_stripe(c);

	s->timeout_ms = timeout_ms;
	for (unsigned i = 0; i < s->n; i++)
		if (s->p[i])
			s->in->set_timeout(s->p[i], timeout_ms);
}

static void stripe_set_cancel(struct xport_conn *c, int fd)
{
	struct stripe_conn *s = to_stripe(c);

	s->cancel_fd = fd;
	for (unsigned i = 0; i < s->n; i++)
		if (s->p[i])
			s->in->set_cancel(s->p[i], fd);
}

static const char *stripe_peer_addr(const struct xport_conn *c)
{
	const struct stripe_conn *s = to_cstripe(c);

	return s->in->peer_addr(s->p[0]);
}

static int stripe_local_addr(const struct xport_conn *c, char *buf, size_t len)
{
	const struct stripe_conn *s = to_cstripe(c);

	return s->in->local_addr(s->p[0], buf, len);
}

static void stripe_close(struct xport_conn **c)
{
	struct stripe_conn *s;

	if (!c || !*c)
		return;
	s = to_stripe(*c);
	/* Path 0 first: what the peer reads last on it (FORGET, ABORT) was
	 * sent before any other path goes. */
	for (unsigned i = 0; i < s->n; i++)
		if (s->p[i])
			s->in->close(&s->p[i]);
	free(s);
	*c = NULL;
}

static int stripe_send(struct xport_conn *c, const void *frames, size_t len)
{
	struct stripe_conn *s = to_stripe(c);

	return s->in->send(s->p[0], frames, len);
}

/* A path's failure: kept; the connection's when it matters (see the top). */
static int path_failed(struct stripe_conn *s, unsigned k, int err)
{
	if (!s->err[k])
		s->err[k] = err;
	if (k == 0 || s->inflight[k] || s->serving) {
		if (!s->broken && k)
			kvmig_err_prefix(err, "connection %u of %u", k + 1, s->n);
		set_broken(s, err);
		return broken(s);
	}
	kvmig_clear_error();
	return 0;
}

static int stripe_ctl_pop(struct xport_conn *c, struct xport_msg **m)
{
	struct stripe_conn *s = to_stripe(c);
	int ret = s->in->ctl_pop(s->p[0], m);

	if (ret != -EAGAIN)
		return ret; /* a message, or path 0 broke */
	for (unsigned k = 1; k < s->n; k++) {
		if (s->err[k] || s->in->ctl_pop(s->p[k], m) != 0)
			continue;
		set_broken(s, kvmig_err(-EBADMSG, "peer %s sent a control message (type %u) on "
					"connection %u of %u, which carries only reads",
					s->in->peer_addr(s->p[0]), (*m)->hdr.type, k + 1, s->n));
		free((*m)->payload);
		free(*m);
		*m = NULL;
		return broken(s);
	}
	if (s->broken && !s->err[0] && s->in->drain) {
		/* Another path broke: the first may hold the peer's last words
		 * (its ABORT, sent before it closed the rest): what is there is
		 * read, and no read is served any more. */
		s->in->drain(s->p[0]);
		if (s->in->ctl_pop(s->p[0], m) == 0)
			return 0;
	}
	return s->broken ? broken(s) : -EAGAIN;
}

static int stripe_reg_remote(struct xport_conn *c, void *base, uint64_t len,
			     struct kvmig_rkey *key, void **handle)
{
	struct stripe_conn *s = to_stripe(c);
	struct stripe_reg *r = calloc(1, sizeof(*r));
	int ret = 0;

	if (!r)
		return -ENOMEM;
	r->remote = 1;
	key->len = 0;
	for (unsigned k = 0; k < s->n && !ret; k++) {
		struct kvmig_rkey one;

		/* A path that failed before anything was registered (nothing
		 * mattered then) fails the registration: never a key for it. */
		if (s->err[k])
			ret = kvmig_err(s->err[k], "connection %u of %u to %s failed", k + 1, s->n,
					s->in->peer_addr(s->p[0]));
		else if (!s->p[k])
			ret = kvmig_err(-ECONNRESET, "connection %u of %u is gone", k + 1, s->n);
		else if ((ret = s->in->reg_remote(s->p[k], base, len, &one, &r->h[k])) < 0)
			break;
		if (ret < 0)
			break;
		if (k && one.len != key->len / k)
			ret = kvmig_err(-EINVAL, "the %s provider gave keys of %u and %u bytes",
					s->in->name, key->len / k, one.len);
		else if ((unsigned)key->len + one.len > KVMIG_WIRE_MAX_KEY)
			ret = kvmig_err(-EINVAL, "%u %s keys of %u bytes exceed %u bytes", s->n,
					s->in->name, one.len, KVMIG_WIRE_MAX_KEY);
		else {
			memcpy(key->b + key->len, one.b, one.len);
			key->len = (uint8_t)(key->len + one.len);
		}
	}
	if (ret < 0) {
		for (unsigned k = 0; k < s->n; k++)
			if (s->p[k])
				s->in->dereg(s->p[k], &r->h[k]);
		free(r);
		return ret;
	}
	s->serving++;
	*handle = r;
	return 0;
}

static int stripe_reg_local(struct xport_conn *c, void *base, uint64_t len, void **handle)
{
	struct stripe_conn *s = to_stripe(c);
	struct stripe_reg *r = calloc(1, sizeof(*r));
	int ret = 0, reused = 1;

	if (!r)
		return -ENOMEM;
	for (unsigned k = 0; k < s->n; k++) {
		if (!s->p[k])
			ret = kvmig_err(-ECONNRESET, "connection %u of %u is gone", k + 1, s->n);
		else
			ret = s->in->reg_local(s->p[k], base, len, &r->h[k]);
		if (ret < 0)
			break;
		reused &= ret == 1;
	}
	if (ret < 0) {
		for (unsigned k = 0; k < s->n; k++)
			if (s->p[k])
				s->in->dereg(s->p[k], &r->h[k]);
		free(r);
		return ret;
	}
	*handle = r;
	return reused;
}

static void stripe_dereg(struct xport_conn *c, void **handle)
{
	struct stripe_conn *s = to_stripe(c);
	struct stripe_reg *r;

	if (!handle || !*handle)
		return;
	r = *handle;
	for (unsigned k = 0; k < s->n; k++)
		if (s->p[k]) /* a path closed early took its registrations along */
			s->in->dereg(s->p[k], &r->h[k]);
	if (r->remote && s->serving)
		s->serving--;
	free(r);
	*handle = NULL;
}

/* The path with the fewest bytes in flight (the lowest index on a tie). */
static unsigned pick_path(const struct stripe_conn *s)
{
	unsigned best = 0;

	for (unsigned k = 1; k < s->n; k++)
		if (s->inflight[k] < s->inflight[best])
			best = k;
	return best;
}

static int stripe_post_reads(struct xport_conn *c, struct xport_read **rds, unsigned n)
{
	struct stripe_conn *s = to_stripe(c);
	struct xport_read *batch[KVMIG_WIRE_MAX_PATHS][64];
	unsigned nb[KVMIG_WIRE_MAX_PATHS] = { 0 };
	int ret;

	if (s->broken)
		return broken(s);
	for (unsigned i = 0; i <= n; i++) {
		/* Flush a full batch, and every batch at the end. */
		for (unsigned k = 0; k < s->n; k++) {
			if (!nb[k] || (i < n && nb[k] < KVMIG_ARRAY_SIZE(batch[k])))
				continue;
			if (s->err[k])
				return set_broken(s, kvmig_err(s->err[k], "connection %u of %u to %s "
							       "failed earlier: %s", k + 1, s->n,
							       s->in->peer_addr(s->p[0]),
							       strerror(-s->err[k])));
			if ((ret = s->in->post_reads(s->p[k], batch[k], nb[k])) < 0) {
				s->err[k] = ret;
				return set_broken(s, kvmig_err_prefix(ret, "connection %u of %u", k + 1,
								      s->n));
			}
			nb[k] = 0;
		}
		if (i == n)
			break;
		struct xport_read *rd = rds[i];
		/* A page's reads on one path: they land in order, so its hash
		 * streams as they land (recv_pages.c). */
		unsigned k = rd->ctx == s->last_ctx && !s->err[s->last_path] ? s->last_path :
			     pick_path(s), klen = rd->key.len / s->n;

		if (!klen || rd->key.len % s->n)
			return kvmig_err(-EFAULT, "a read with a %u-byte key: not a key of %u %s paths",
					 rd->key.len, s->n, s->in->name);
		/* The k-th path's own key, in place (the session sets the key
		 * again for every read it posts). */
		memmove(rd->key.b, rd->key.b + k * klen, klen);
		rd->key.len = (uint8_t)klen;
		rd->path = (uint8_t)k;
		s->last_ctx = rd->ctx;
		s->last_path = k;
		s->inflight[k] += rd->len;
		batch[k][nb[k]++] = rd;
	}
	return 0;
}

/* Path @k's completed reads onto the stripe's queue: what is in flight is
 * then what has not completed (a path may end once its reads did). */
static void take_done(struct stripe_conn *s, unsigned k)
{
	struct xport_read *rd[64];
	int r;

	while (s->p[k] && (r = s->in->reap(s->p[k], rd, KVMIG_ARRAY_SIZE(rd))) > 0)
		for (int i = 0; i < r; i++) {
			s->inflight[k] -= rd[i]->len;
			xport_readq_push(&s->done, rd[i]);
		}
}

static int stripe_reap(struct xport_conn *c, struct xport_read **out, unsigned max)
{
	struct stripe_conn *s = to_stripe(c);
	unsigned got;
	uint64_t at;

	for (unsigned k = 0; k < s->n; k++)
		take_done(s, k);
	got = (unsigned)xport_readq_reap(&s->done, out, max);
	s->reaped += got;
	if (kvmig_fault("stripe-drop-path", &at) && s->reaped >= at && s->p[s->n - 1]) {
		/* Test-only: the last path goes under its reads. */
		s->in->close(&s->p[s->n - 1]);
		path_failed(s, s->n - 1, kvmig_err(-ECONNRESET, "dropped (fault injected)"));
	}
	return (int)got;
}

/* Every path's turn, without waiting: 1 if the peer was heard on one, 0, or -errno. */
static int turn(struct stripe_conn *s)
{
	int heard = 0;

	if (s->broken)
		return broken(s);
	for (unsigned k = 0; k < s->n; k++) {
		int r;

		if (s->err[k])
			continue;
		r = s->in->progress(s->p[k], 0, -1);
		take_done(s, k);
		if (r > 0) {
			heard = 1;
			/* It handled frames, then failed: the failure is known now
			 * (what came before it is queued and comes first). */
			if ((r = s->in->failed(s->p[k])) == 0)
				continue;
			if (path_failed(s, k, r) < 0)
				return 1;
		} else if (r < 0 && path_failed(s, k, r) < 0)
			/* Broken: no other path gets a turn (each could hold its own
			 * timeout in a frame it began); what arrived comes first. */
			return heard ? 1 : broken(s);
	}
	return heard;
}

static int stripe_progress(struct xport_conn *c, int timeout_ms, int wake_fd)
{
	struct stripe_conn *s = to_stripe(c);
	double start = kvmig_now();
	/* Each path's progress runs at least this often (keepalives). */
	int slice = KVMIG_MAX(10, s->timeout_ms / 8);

	if (s->broken)
		return broken(s);
	for (;;) {
		struct pollfd pfd[KVMIG_WIRE_MAX_PATHS * FDS_PER_PATH + 2];
		int nfd = 0, r, left;

		if ((r = turn(s)) != 0)
			return r;
		for (unsigned k = 0; k < s->n; k++)
			if (!s->err[k])
				nfd += s->in->wait_fds(s->p[k], pfd + nfd, FDS_PER_PATH);
		pfd[nfd++] = (struct pollfd){ s->cancel_fd, POLLIN, 0 };
		pfd[nfd++] = (struct pollfd){ wake_fd, POLLIN, 0 };
		left = timeout_ms < 0 ? slice :
			timeout_ms - (int)((kvmig_now() - start) * 1000.0);
		if (left <= 0) {
			if (timeout_ms == 0)
				return 0;
			return kvmig_err(-ETIMEDOUT, "peer %s was silent for %d ms on all %u "
					 "connections", s->in->peer_addr(s->p[0]), timeout_ms, s->n);
		}
		r = poll(pfd, (nfds_t)nfd, KVMIG_MIN(left, slice)); /* negative fds are skipped */
		if (r < 0 && errno != EINTR)
			return kvmig_err(-errno, "poll: %s", strerror(errno));
		if (wake_fd >= 0 && pfd[nfd - 1].revents)
			return 0;
		if (s->cancel_fd >= 0 && pfd[nfd - 2].revents)
			return kvmig_err(-ECANCELED, "interrupted");
	}
}

static int stripe_failed(const struct xport_conn *c)
{
	return to_cstripe(c)->broken;
}

static int stripe_wait_fds(struct xport_conn *c, struct pollfd *out, int max)
{
	struct stripe_conn *s = to_stripe(c);
	int n = 0;

	for (unsigned k = 0; k < s->n; k++)
		if (!s->err[k])
			n += s->in->wait_fds(s->p[k], out + n, max - n);
	return n;
}

static void stripe_counters(const struct xport_conn *c, struct xport_counters *out)
{
	const struct stripe_conn *s = to_cstripe(c);

	memset(out, 0, sizeof(*out));
	for (unsigned k = 0; k < s->n; k++) {
		struct xport_counters one;

		if (!s->p[k])
			continue;
		s->in->counters(s->p[k], &one);
		out->bytes_served += one.bytes_served;
		out->reads_served += one.reads_served;
	}
}

static void stripe_drain(struct xport_conn *c)
{
	struct stripe_conn *s = to_stripe(c);
	struct kvmig_err_saved keep;

	/* What broke is said already; draining the other paths must not
	 * replace it with their own ends. */
	kvmig_err_save(&keep);
	for (unsigned k = 0; s->in->drain && k < s->n; k++)
		if (s->p[k])
			s->in->drain(s->p[k]);
	kvmig_err_restore(&keep, 0);
}

const struct xport_ops kvmig_xport_stripe = {
	.name = "stripe",
	.set_timeout = stripe_set_timeout,
	.set_cancel = stripe_set_cancel,
	.peer_addr = stripe_peer_addr,
	.local_addr = stripe_local_addr,
	.close = stripe_close,
	.send = stripe_send,
	.ctl_pop = stripe_ctl_pop,
	.reg_remote = stripe_reg_remote,
	.reg_local = stripe_reg_local,
	.dereg = stripe_dereg,
	.post_reads = stripe_post_reads,
	.reap = stripe_reap,
	.progress = stripe_progress,
	.wait_fds = stripe_wait_fds,
	.failed = stripe_failed,
	.counters = stripe_counters,
	.drain = stripe_drain,
};
