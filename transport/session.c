/* SPDX-License-Identifier: MIT */
/*
 * transport/session.c - what both halves of a migration share: options and
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

#include "transport/session.h"
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

int session_init(struct session *ses, const struct kvmig_migrate_opts *opts, enum session_role role)
{
	memset(ses, 0, sizeof(*ses));
	ses->role = role;
	ses->n_paths = 1;
	ses->ops = &kvmig_xport_tcp; /* until session_pick(); set first: callers report
				    * ses->ops->name even when the options are refused */
	if (opts)
		ses->o = *opts;
	else
		kvmig_migrate_opts_init(&ses->o);
	if (!kvmig_transport_name(ses->o.transport))
		return kvmig_err(-EINVAL, "unknown transport %d", (int)ses->o.transport);
	if (!session_transport_built(ses->o.transport))
		return kvmig_err(-EPROTONOSUPPORT, "this kvmig was built without the %s provider "
				 "(kvmig --version says what it has)",
				 kvmig_transport_name(ses->o.transport));
	if (ses->o.mode != KVMIG_MODE_MOVE && ses->o.mode != KVMIG_MODE_COPY)
		return kvmig_err(-EINVAL, "unknown migration mode %d", (int)ses->o.mode);
	if (ses->o.queue_depth < 1 || ses->o.queue_depth > 1024)
		return kvmig_err(-EINVAL, "queue depth %u is outside 1..1024", ses->o.queue_depth);
	if (ses->o.max_read_bytes < 4096 || ses->o.max_read_bytes > (16u << 20))
		return kvmig_err(-EINVAL, "read size %u is outside 4 KiB..16 MiB",
				 ses->o.max_read_bytes);
	if (ses->o.timeout_ms < 1 || ses->o.timeout_ms > 3600u * 1000)
		return kvmig_err(-EINVAL, "timeout %u ms is outside 1 ms..1 h", ses->o.timeout_ms);
	if (ses->o.live && (ses->o.max_rounds < 1 || ses->o.max_rounds > KVMIG_MAX_ROUNDS))
		return kvmig_err(-EINVAL, "max rounds %u is outside 1..%u", ses->o.max_rounds,
				 KVMIG_MAX_ROUNDS);
	if (ses->o.hash_threads > KVMIG_MAX_HASH_THREADS)
		return kvmig_err(-EINVAL, "%u hash threads; at most %u", ses->o.hash_threads,
				 KVMIG_MAX_HASH_THREADS);
	if (ses->o.paths > KVMIG_MAX_PATHS)
		return kvmig_err(-EINVAL, "%u connections per address; at most %u", ses->o.paths,
				 KVMIG_MAX_PATHS);
	if (ses->o.path_hosts) {
		const char *h = ses->o.path_hosts;
		unsigned n = 0;

		for (;;) {
			size_t len = strcspn(h, ",");
			char one[KVMIG_WIRE_MAX_ADDR];
			int lo, kind;

			/* A host, room for ":port" after it; no spaces, printable. */
			if (!len || len > KVMIG_WIRE_MAX_ADDR - 8 || ++n > KVMIG_MAX_PATHS)
				return kvmig_err(-EINVAL, "path hosts \"%s\": give 1..%u hosts, "
						 "comma-separated, each 1..%u characters",
						 ses->o.path_hosts, KVMIG_MAX_PATHS,
						 KVMIG_WIRE_MAX_ADDR - 8);
			snprintf(one, sizeof(one), "%.*s", (int)len, h);
			if ((kind = kvmig_addr_numeric(one, &lo)) < 0)
				return kvmig_err(-EINVAL, "path hosts \"%s\": \"%s\" is %s; give each "
						 "device's own address (a.b.c.d or v6, no port)",
						 ses->o.path_hosts, one, kind == -EADDRNOTAVAIL ?
						 "a wildcard, which names no device" :
						 "not a numeric address");
			if (!h[len])
				break;
			h += len + 1;
		}
	}
	if (ses->o.n_seq_ids && !ses->o.seq_ids)
		return kvmig_err(-EINVAL, "%u sequence ids but no array", ses->o.n_seq_ids);
	if (ses->o.cancel_fd < -1)
		return kvmig_err(-EINVAL, "cancel fd %d is neither a descriptor nor -1",
				 ses->o.cancel_fd);
	if (ses->o.token) {
		if (ses->o.token_len < 16)
			return kvmig_err(-EINVAL, "the shared secret is %zu bytes; it needs at least 16",
					 ses->o.token_len);
		if (sodium_init() < 0)
			return kvmig_err(-EIO, "libsodium failed to initialise");
		/* The MAC key: a hash of the secret, whatever its length. */
		crypto_generichash(ses->key, sizeof(ses->key), ses->o.token, ses->o.token_len, NULL, 0);
		ses->auth = 1;
	}
	ses->o.token = NULL; /* only the key is kept */
	return 0;
}


int kvmig_migrate_opts_check(const struct kvmig_migrate_opts *opts)
{
	struct session ses;
	int ret = session_init(&ses, opts, ROLE_RECEIVER);

	session_fini(&ses);
	return ret;
}

void session_connected(struct session *ses)
{
	ses->ops->set_timeout(ses->c, (int)ses->o.timeout_ms);
	ses->ops->set_cancel(ses->c, ses->o.cancel_fd);
}

void session_handshake_begin(struct session *ses)
{
	ses->until = kvmig_now() + ses->o.timeout_ms / 1000.0;
}

void session_handshake_done(struct session *ses)
{
	ses->until = 0;
}

void session_die(void)
{
	raise(SIGKILL);
}

void session_fini(struct session *ses)
{
	sodium_memzero(ses->key, sizeof(ses->key));
	if (ses->c)
		ses->ops->close(&ses->c);
	kvmig_wbuf_free(&ses->wb);
}

int session_flush(struct session *ses)
{
	int ret;

	if (ses->wb.err) {
		ret = ses->wb.err;
		ses->wb.err = 0;
		ses->wb.len = 0;
		return ret;
	}
	ret = ses->ops->send(ses->c, ses->wb.p, ses->wb.len);
	ses->wb.len = 0;
	if (ret == -ECONNRESET || ret == -EPIPE)
		ret = session_salvage_abort(ses, ret);
	return ret;
}

int session_salvage_abort(struct session *ses, int err)
{
	struct xport_msg *m = NULL;

	/* The peer may have said why before it went (an ABORT, then close):
	 * that reason beats "connection reset". */
	if (ses->ops->drain)
		ses->ops->drain(ses->c);
	while (ses->ops->ctl_pop(ses->c, &m) == 0) {
		if (m->hdr.type == KVMIG_MSG_ABORT) {
			err = session_peer_abort(ses, m);
			session_msg_free(&m);
			return err;
		}
		session_msg_free(&m);
	}
	return err;
}

void session_msg_free(struct xport_msg **m)
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
					     "ACTIVATED", "FORGET", "RECORDS", "PATHS", "JOIN", "JOINED" };

	return type < KVMIG_ARRAY_SIZE(names) ? names[type] : "?";
}

int session_unexpected(const struct xport_msg *m, const char *expected)
{
	return kvmig_err(-EBADMSG, "peer sent a %s message where %s was expected",
			 msg_name(m->hdr.type), expected);
}

int session_peer_abort(struct session *ses, const struct xport_msg *m)
{
	struct kvmig_msg_abort a;
	int ret = kvmig_wire_get_abort(m->payload, m->hdr.len, &a);

	ses->peer_aborted = 1;
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
	return kvmig_err(ret, "the %s aborted the migration: %s", role_name(role_other(ses->role)),
			 a.text[0] ? a.text : strerror(a.err));
}

/* When the next wait must end: a timeout from now, or the handshake's end. */
static double wait_deadline(const struct session *ses)
{
	double d = kvmig_now() + ses->o.timeout_ms / 1000.0;

	return ses->until > 0 && ses->until < d ? ses->until : d;
}

int session_wait_msg(struct session *ses, int wake_fd, struct xport_msg **m)
{
	double deadline = wait_deadline(ses);

	*m = NULL;
	for (;;) {
		int ret = ses->ops->ctl_pop(ses->c, m), left;

		if (ret == 0) {
			if ((*m)->hdr.type == KVMIG_MSG_ABORT) {
				ret = session_peer_abort(ses, *m);
				session_msg_free(m);
				return ret;
			}
			return 1;
		}
		if (ret != -EAGAIN)
			return ret;
		left = (int)((deadline - kvmig_now()) * 1000.0);
		if (left <= 0 && ses->until > 0 && deadline >= ses->until)
			return kvmig_err(-ETIMEDOUT, "the %s did not finish the handshake within %u ms",
					 role_name(role_other(ses->role)), ses->o.timeout_ms);
		if (left <= 0)
			return kvmig_err(-ETIMEDOUT, "the %s was silent for %u ms",
					 role_name(role_other(ses->role)), ses->o.timeout_ms);
		ret = ses->ops->progress(ses->c, left, wake_fd);
		if (ret == -ECONNRESET || ret == -EPIPE)
			return session_salvage_abort(ses, ret); /* it may have said why first */
		if (ret == -ETIMEDOUT && ses->until > 0 && kvmig_now() >= ses->until - 0.002)
			return kvmig_err(-ETIMEDOUT, "the %s did not finish the handshake within %u ms",
					 role_name(role_other(ses->role)), ses->o.timeout_ms);
		if (ret < 0)
			return ret;
		if (ret == 0 && wake_fd >= 0)
			return 0;
		if (ret == 0)
			continue; /* nothing of the peer's: the same deadline holds */
		deadline = wait_deadline(ses);
		session_progress(ses, 0);
	}
}

int session_abort(struct session *ses, int err)
{
	char text[KVMIG_WIRE_MAX_TEXT + 1], mine[1024];

	/* A connection reset is the peer gone, unless it was one of several
	 * paths: the first may still carry our reason. */
	if (!ses->c || ses->peer_aborted ||
	    ((err == -ECONNRESET || err == -EPIPE) && ses->n_paths < 2))
		return err;
	snprintf(mine, sizeof(mine), "%s", kvmig_last_error());
	/* The peer prints this as "the sender aborted: TEXT": a message that
	 * names "the peer" here would name the reader there. */
	if (err == -ETIMEDOUT && ses->until > 0)
		snprintf(text, sizeof(text), "the %s did not finish the handshake within %u ms",
			 role_name(role_other(ses->role)), ses->o.timeout_ms);
	else if (err == -ETIMEDOUT)
		snprintf(text, sizeof(text), "it heard nothing from the %s for %u ms",
			 role_name(role_other(ses->role)), ses->o.timeout_ms);
	else if (err == -ECANCELED)
		snprintf(text, sizeof(text), "the %s was interrupted (signal)",
			 role_name(ses->role));
	else
		snprintf(text, sizeof(text), "%s", kvmig_last_error()[0] ? kvmig_last_error() :
			 strerror(-err));
	ses->wb.len = 0;
	ses->wb.err = 0;
	if (kvmig_wire_put_abort(&ses->wb, err, text) == 0)
		ses->ops->send(ses->c, ses->wb.p, ses->wb.len);
	ses->wb.len = 0;
	/* Put our message back: sending may have recorded its own. */
	kvmig_err(err, "%s", mine[0] ? mine : text);
	return err;
}

int session_hello(struct kvmig_pager *p, enum session_role role, uint8_t flags,
		  const struct kvmig_id *mig, struct kvmig_msg_hello *h)
{
	int ret;

	memset(h, 0, sizeof(*h));
	h->role = (uint8_t)role;
	h->flags = flags;
	if (mig)
		h->migration = *mig;
	enum kvmig_layout layout;

	if ((ret = kvmig_pager_meta(p, &h->meta, &layout)) < 0 ||
	    (ret = kvmig_pager_format(p, &h->format)) < 0 ||
	    (ret = kvmig_pager_identity(p, &h->pager)) < 0)
		return ret;
	return kvmig_meta_half_bytes(&h->meta, &h->half_bytes);
}

int session_hello_match(const struct kvmig_msg_hello *mine, const struct kvmig_msg_hello *peer)
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
	return kvmig_format_match(&mine->format, &peer->format, "the peer");
}

void session_phase(struct session *ses, const char *phase)
{
	ses->ev.type = KVMIG_EVENT_PHASE;
	ses->ev.phase = phase;
	if (ses->o.on_event)
		ses->o.on_event(ses->o.event_arg, &ses->ev);
}

void session_progress(struct session *ses, int force)
{
	double t = kvmig_now();

	if (!ses->o.on_event)
		return;
	if (!force && (t - ses->last_event) * 1000.0 < ses->o.progress_interval_ms)
		return;
	if (ses->refresh)
		ses->refresh(ses);
	ses->last_event = t;
	ses->ev.type = KVMIG_EVENT_PROGRESS;
	ses->o.on_event(ses->o.event_arg, &ses->ev);
}
