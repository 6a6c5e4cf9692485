/* SPDX-License-Identifier: MIT */
/*
 * transport/engine.c - what both halves of a migration share: options and
 * the provider, the connection's timeouts and cancel fd, waits for control
 * messages with their deadlines, ABORT both ways, HELLO, progress events.
 * The authentication is in auth.c, the records exchange in reconnect.c,
 * the listener in listen.c.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "transport/engine.h"
#include "util/internal.h"

void kvmig_migrate_opts_init(struct kvmig_migrate_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->transport = KVMIG_TRANSPORT_TCP;
	o->mode = KVMIG_MODE_MOVE;
	o->queue_depth = 32;
	o->max_read_bytes = 1u << 20;
	o->timeout_ms = 30000;
	o->verify = 1;
	o->progress_interval_ms = 100;
	o->max_downtime_ms = 20;
	o->max_rounds = 8;
	o->cancel_fd = -1;
}

int engine_init(struct engine *e, const struct kvmig_migrate_opts *opts, enum engine_role role)
{
	memset(e, 0, sizeof(*e));
	e->role = role;
	e->ops = &kvmig_xport_tcp; /* until engine_pick(); set first: callers report
				    * e->ops->name even when the options are refused */
	if (opts)
		e->o = *opts;
	else
		kvmig_migrate_opts_init(&e->o);
	if (!kvmig_transport_name(e->o.transport))
		return kvmig_err(-EINVAL, "unknown transport %d", (int)e->o.transport);
	if (e->o.mode != KVMIG_MODE_MOVE && e->o.mode != KVMIG_MODE_COPY)
		return kvmig_err(-EINVAL, "unknown migration mode %d", (int)e->o.mode);
	if (e->o.queue_depth < 1 || e->o.queue_depth > 1024)
		return kvmig_err(-EINVAL, "queue depth %u is outside 1..1024", e->o.queue_depth);
	if (e->o.max_read_bytes < 4096 || e->o.max_read_bytes > (16u << 20))
		return kvmig_err(-EINVAL, "read size %u is outside 4 KiB..16 MiB",
				 e->o.max_read_bytes);
	if (e->o.timeout_ms < 1 || e->o.timeout_ms > 3600u * 1000)
		return kvmig_err(-EINVAL, "timeout %u ms is outside 1 ms..1 h", e->o.timeout_ms);
	if (e->o.live && (e->o.max_rounds < 1 || e->o.max_rounds > KVMIG_MAX_ROUNDS))
		return kvmig_err(-EINVAL, "max rounds %u is outside 1..%u", e->o.max_rounds,
				 KVMIG_MAX_ROUNDS);
	if (e->o.n_seq_ids && !e->o.seq_ids)
		return kvmig_err(-EINVAL, "%u sequence ids but no array", e->o.n_seq_ids);
	if (e->o.cancel_fd < -1)
		return kvmig_err(-EINVAL, "cancel fd %d is neither a descriptor nor -1",
				 e->o.cancel_fd);
	if (e->o.token) {
		if (e->o.token_len < 16)
			return kvmig_err(-EINVAL, "the shared secret is %zu bytes; it needs at least 16",
					 e->o.token_len);
		if (sodium_init() < 0)
			return kvmig_err(-EIO, "libsodium failed to initialise");
		/* The MAC key: a hash of the secret, whatever its length. */
		crypto_generichash(e->key, sizeof(e->key), e->o.token, e->o.token_len, NULL, 0);
		e->auth = 1;
	}
	e->o.token = NULL; /* only the key is kept */
	return 0;
}


void engine_connected(struct engine *e)
{
	e->ops->set_timeout(e->c, (int)e->o.timeout_ms);
	e->ops->set_cancel(e->c, e->o.cancel_fd);
}

void engine_handshake_begin(struct engine *e)
{
	e->until = kvmig_now() + e->o.timeout_ms / 1000.0;
}

void engine_handshake_done(struct engine *e)
{
	e->until = 0;
}

void engine_die(void)
{
	raise(SIGKILL);
}

void engine_fini(struct engine *e)
{
	sodium_memzero(e->key, sizeof(e->key));
	if (e->c)
		e->ops->close(&e->c);
	kvmig_wbuf_free(&e->wb);
}

int engine_flush(struct engine *e)
{
	int ret;

	if (e->wb.err) {
		ret = e->wb.err;
		e->wb.err = 0;
		e->wb.len = 0;
		return ret;
	}
	ret = e->ops->send(e->c, e->wb.p, e->wb.len);
	e->wb.len = 0;
	if (ret == -ECONNRESET || ret == -EPIPE)
		ret = engine_salvage_abort(e, ret);
	return ret;
}

int engine_salvage_abort(struct engine *e, int err)
{
	struct xport_msg *m = NULL;

	/* The peer may have said why before it went (an ABORT, then close):
	 * that reason beats "connection reset". */
	if (e->ops->drain)
		e->ops->drain(e->c);
	while (e->ops->ctl_pop(e->c, &m) == 0) {
		if (m->hdr.type == KVMIG_MSG_ABORT) {
			err = engine_peer_abort(e, m);
			engine_msg_free(&m);
			return err;
		}
		engine_msg_free(&m);
	}
	return err;
}

void engine_msg_free(struct xport_msg **m)
{
	if (!m || !*m)
		return;
	free((*m)->payload);
	free(*m);
	*m = NULL;
}

static const char *msg_name(uint8_t type)
{
	static const char *const names[] = { "?", "HELLO", "REGIONS", "OFFER", "READ_REQ",
					     "READ_RESP", "DIGESTS", "FINAL", "COMMIT",
					     "COMMIT_ACK", "ABORT", "KEEPALIVE",
					     "AUTH_CHALLENGE", "AUTH_PROOF", "ROUND",
					     "ACTIVATED", "FORGET", "RECORDS" };

	return type < KVMIG_ARRAY_SIZE(names) ? names[type] : "?";
}

int engine_unexpected(const struct xport_msg *m, const char *expected)
{
	return kvmig_err(-EBADMSG, "peer sent a %s message where %s was expected",
			 msg_name(m->hdr.type), expected);
}

int engine_peer_abort(struct engine *e, const struct xport_msg *m)
{
	struct kvmig_msg_abort a;
	int ret = kvmig_wire_get_abort(m->payload, m->hdr.len, &a);

	e->peer_aborted = 1;
	if (ret < 0)
		return ret;
	switch (a.err) {
	case EPROTO:
	case EBADMSG:
	case ENOSPC:
	case EIO:
	case EEXIST:
	case ENOENT:
	case ETIMEDOUT:
	case EFAULT:
	case EINVAL:
	case ECONNRESET:
	case EACCES:
	case EKEYREJECTED:
		ret = -a.err;
		break;
	default:
		ret = -ECONNABORTED;
	}
	return kvmig_err(ret, "the %s aborted the migration: %s", role_name(role_other(e->role)),
			 a.text[0] ? a.text : strerror(a.err));
}

/* When the next wait must end: a timeout from now, or the handshake's end. */
static double wait_deadline(const struct engine *e)
{
	double d = kvmig_now() + e->o.timeout_ms / 1000.0;

	return e->until > 0 && e->until < d ? e->until : d;
}

int engine_wait_msg(struct engine *e, int wake_fd, struct xport_msg **m)
{
	double deadline = wait_deadline(e);

	*m = NULL;
	for (;;) {
		int ret = e->ops->ctl_pop(e->c, m), left;

		if (ret == 0) {
			if ((*m)->hdr.type == KVMIG_MSG_ABORT) {
				ret = engine_peer_abort(e, *m);
				engine_msg_free(m);
				return ret;
			}
			return 1;
		}
		if (ret != -EAGAIN)
			return ret;
		left = (int)((deadline - kvmig_now()) * 1000.0);
		if (left <= 0 && e->until > 0 && deadline >= e->until)
			return kvmig_err(-ETIMEDOUT, "the %s did not finish the handshake within %u ms",
					 role_name(role_other(e->role)), e->o.timeout_ms);
		if (left <= 0)
			return kvmig_err(-ETIMEDOUT, "the %s was silent for %u ms",
					 role_name(role_other(e->role)), e->o.timeout_ms);
		ret = e->ops->progress(e->c, left, wake_fd);
		if (ret == -ECONNRESET || ret == -EPIPE)
			return engine_salvage_abort(e, ret); /* it may have said why first */
		if (ret == -ETIMEDOUT && e->until > 0 && kvmig_now() >= e->until - 0.002)
			return kvmig_err(-ETIMEDOUT, "the %s did not finish the handshake within %u ms",
					 role_name(role_other(e->role)), e->o.timeout_ms);
		if (ret < 0)
			return ret;
		if (ret == 0 && wake_fd >= 0)
			return 0;
		if (ret == 0)
			continue; /* nothing of the peer's: the same deadline holds */
		deadline = wait_deadline(e);
		engine_progress(e, 0);
	}
}

int engine_abort(struct engine *e, int err)
{
	char text[KVMIG_WIRE_MAX_TEXT + 1], mine[1024];

	if (!e->c || e->peer_aborted || err == -ECONNRESET || err == -EPIPE)
		return err;
	snprintf(mine, sizeof(mine), "%s", kvmig_last_error());
	/* The peer prints this as "the sender aborted: TEXT": a message that
	 * names "the peer" here would name the reader there. */
	if (err == -ETIMEDOUT && e->until > 0)
		snprintf(text, sizeof(text), "the %s did not finish the handshake within %u ms",
			 role_name(role_other(e->role)), e->o.timeout_ms);
	else if (err == -ETIMEDOUT)
		snprintf(text, sizeof(text), "it heard nothing from the %s for %u ms",
			 role_name(role_other(e->role)), e->o.timeout_ms);
	else if (err == -ECANCELED)
		snprintf(text, sizeof(text), "the %s was interrupted (signal)",
			 role_name(e->role));
	else
		snprintf(text, sizeof(text), "%s", kvmig_last_error()[0] ? kvmig_last_error() :
			 strerror(-err));
	e->wb.len = 0;
	e->wb.err = 0;
	if (kvmig_wire_put_abort(&e->wb, err, text) == 0)
		e->ops->send(e->c, e->wb.p, e->wb.len);
	e->wb.len = 0;
	/* Put our message back: sending may have recorded its own. */
	kvmig_err(err, "%s", mine[0] ? mine : text);
	return err;
}

int engine_hello(struct kvmig_pager *p, enum engine_role role, uint8_t flags, const struct kvmig_id *mig,
		 struct kvmig_msg_hello *h)
{
	int ret;

	memset(h, 0, sizeof(*h));
	h->role = (uint8_t)role;
	h->flags = flags;
	if (mig)
		h->migration = *mig;
	if ((ret = kvmig_pager_meta(p, &h->meta, &h->layout)) < 0 ||
	    (ret = kvmig_pager_identity(p, &h->pager)) < 0)
		return ret;
	return kvmig_meta_half_bytes(&h->meta, &h->half_bytes);
}

int engine_hello_match(const struct kvmig_msg_hello *mine, const struct kvmig_msg_hello *peer)
{
	char a[128], b[128];

	if (peer->role == mine->role)
		return kvmig_err(-EBADMSG, "peer is also a %s",
				 role_name(mine->role ? ROLE_RECEIVER : ROLE_SENDER));
	if (!memcmp(&peer->pager, &mine->pager, sizeof(mine->pager)))
		return kvmig_err(-EINVAL, "both sides use the same pager: a pager cannot migrate "
				 "into itself");
	if (!kvmig_meta_equal(&mine->meta, &peer->meta)) {
		kvmig_meta_describe(&mine->meta, a, sizeof(a));
		kvmig_meta_describe(&peer->meta, b, sizeof(b));
		return kvmig_err(-EPROTO, "meta mismatch: this pager is %s, the peer's is %s", a, b);
	}
	if (mine->layout != peer->layout)
		return kvmig_err(-EPROTO, "layout mismatch: this pager is %s, the peer's is %s",
				 kvmig_layout_name(mine->layout), kvmig_layout_name(peer->layout));
	return 0;
}

void engine_phase(struct engine *e, const char *phase)
{
	e->ev.type = KVMIG_EVENT_PHASE;
	e->ev.phase = phase;
	if (e->o.on_event)
		e->o.on_event(e->o.event_arg, &e->ev);
}

void engine_progress(struct engine *e, int force)
{
	double t = kvmig_now();

	if (!e->o.on_event)
		return;
	if (!force && (t - e->last_event) * 1000.0 < e->o.progress_interval_ms)
		return;
	if (e->refresh)
		e->refresh(e);
	e->last_event = t;
	e->ev.type = KVMIG_EVENT_PROGRESS;
	e->o.on_event(e->o.event_arg, &e->ev);
}
