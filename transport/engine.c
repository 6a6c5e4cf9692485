/* SPDX-License-Identifier: MIT */
/*
 * transport/engine.c - the parts of the migration engine both sides share.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "engine.h"
#include "internal.h"

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

int engine_init(struct engine *e, const struct kvmig_migrate_opts *opts, int role)
{
	memset(e, 0, sizeof(*e));
	e->role = role;
	e->ops = &kvmig_xport_tcp; /* until engine_pick(); set first: callers report
				    * e->ops->name even when the options are refused */
	if (opts)
		e->o = *opts;
	else
		kvmig_migrate_opts_init(&e->o);
	if (e->o.transport != KVMIG_TRANSPORT_TCP && e->o.transport != KVMIG_TRANSPORT_RDMA &&
	    e->o.transport != KVMIG_TRANSPORT_AUTO)
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

const struct xport_ops *engine_pick(enum kvmig_transport t, const char *addr, int passive)
{
	if (t == KVMIG_TRANSPORT_RDMA)
		return &kvmig_xport_rdma;
	if (t == KVMIG_TRANSPORT_AUTO && kvmig_rdma_serves(addr, passive))
		return &kvmig_xport_rdma;
	return &kvmig_xport_tcp;
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
	return kvmig_err(ret, "the %s aborted the migration: %s", e->role ? "sender" : "receiver",
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
					 e->role ? "sender" : "receiver", e->o.timeout_ms);
		if (left <= 0)
			return kvmig_err(-ETIMEDOUT, "the %s was silent for %u ms",
					 e->role ? "sender" : "receiver", e->o.timeout_ms);
		ret = e->ops->progress(e->c, left, wake_fd);
		if (ret == -ECONNRESET || ret == -EPIPE)
			return engine_salvage_abort(e, ret); /* it may have said why first */
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
			 e->role ? "sender" : "receiver", e->o.timeout_ms);
	else if (err == -ETIMEDOUT)
		snprintf(text, sizeof(text), "it heard nothing from the %s for %u ms",
			 e->role ? "sender" : "receiver", e->o.timeout_ms);
	else if (err == -ECANCELED)
		snprintf(text, sizeof(text), "the %s was interrupted (signal)",
			 e->role ? "receiver" : "sender");
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

/* ---- authentication ---- */

int engine_auth_agree(struct engine *e, const struct kvmig_msg_hello *peer)
{
	int theirs = !!(peer->flags & KVMIG_HELLO_AUTH);

	if (theirs == e->auth)
		return 0;
	return kvmig_err(-EKEYREJECTED, "the peer %s a shared secret but this side %s: both need the "
			 "same --token-file, or neither", theirs ? "uses" : "does not use",
			 e->auth ? "has one" : "has none");
}

int engine_auth_challenge(struct engine *e)
{
	randombytes_buf(e->nonce, sizeof(e->nonce));
	return kvmig_wire_put_auth(&e->wb, KVMIG_MSG_AUTH_CHALLENGE, e->nonce);
}

int engine_auth_take_challenge(struct engine *e)
{
	struct xport_msg *m = NULL;
	int ret = engine_wait_msg(e, -1, &m);

	if (ret < 0)
		return ret;
	if (m->hdr.type != KVMIG_MSG_AUTH_CHALLENGE)
		ret = engine_unexpected(m, "AUTH_CHALLENGE");
	else
		ret = kvmig_wire_get_auth(m->payload, m->hdr.len, e->peer_nonce);
	engine_msg_free(&m);
	return ret;
}

/* HMAC-SHA-256(key, role label || the challenged side's nonce || the other's). */
static void proof_of(const struct engine *e, int role, const uint8_t *challenged,
		     const uint8_t *other, uint8_t out[KVMIG_AUTH_LEN])
{
	static const char *const label[2] = { "kvmig-v1 sender proof", "kvmig-v1 receiver proof" };
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, e->key, sizeof(e->key));
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)label[role], strlen(label[role]) + 1);
	crypto_auth_hmacsha256_update(&st, challenged, KVMIG_AUTH_LEN);
	crypto_auth_hmacsha256_update(&st, other, KVMIG_AUTH_LEN);
	crypto_auth_hmacsha256_final(&st, out);
}

int engine_auth_prove(struct engine *e, int role)
{
	uint8_t p[KVMIG_AUTH_LEN];

	/* Over the nonce the peer chose, so it cannot be replayed elsewhere. */
	proof_of(e, role, e->peer_nonce, e->nonce, p);
	return kvmig_wire_put_auth(&e->wb, KVMIG_MSG_AUTH_PROOF, p);
}

int engine_auth_check(struct engine *e, int peer_role)
{
	uint8_t want[KVMIG_AUTH_LEN], got[KVMIG_AUTH_LEN];
	struct xport_msg *m = NULL;
	int ret = engine_wait_msg(e, -1, &m);

	if (ret < 0)
		return ret;
	if (m->hdr.type != KVMIG_MSG_AUTH_PROOF)
		ret = engine_unexpected(m, "AUTH_PROOF");
	else
		ret = kvmig_wire_get_auth(m->payload, m->hdr.len, got);
	engine_msg_free(&m);
	if (ret < 0)
		return ret;
	proof_of(e, peer_role, e->nonce, e->peer_nonce, want);
	if (crypto_verify_32(want, got) != 0)
		return kvmig_err(-EKEYREJECTED, "the %s did not prove it holds the shared secret (wrong "
				 "--token-file)", peer_role ? "receiver" : "sender");
	return 0;
}

int engine_hello(struct kvmig_pager *p, uint8_t role, uint8_t flags, const struct kvmig_id *mig,
		 struct kvmig_msg_hello *h)
{
	int ret;

	memset(h, 0, sizeof(*h));
	h->role = role;
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
		return kvmig_err(-EBADMSG, "peer is also a %s", mine->role ? "receiver" : "sender");
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

/* ---- records of earlier migrations ---- */

enum kvmig_record_state engine_record_state(struct kvmig_pager *p, const struct kvmig_id *id)
{
	enum kvmig_record_state st = KVMIG_REC_NONE;
	struct kvmig_record *all = NULL;
	uint32_t n = 0;

	if (kvmig_pager_records(p, &all, &n) < 0)
		return KVMIG_REC_NONE;
	for (uint32_t i = 0; i < n; i++)
		if (!memcmp(&all[i].id, id, sizeof(*id)))
			st = all[i].state;
	free(all);
	return st;
}

/* Our records naming @peer_pager: into *out (malloc'd) as the wire carries them. */
static int records_for(struct kvmig_pager *p, const struct kvmig_id *peer_pager,
		       struct kvmig_record **all, uint32_t *n_all, struct kvmig_wire_record **out,
		       uint32_t *n)
{
	struct kvmig_wire_record *w;
	int ret;

	*out = NULL;
	*n = 0;
	if ((ret = kvmig_pager_records(p, all, n_all)) < 0)
		return ret;
	if (!(w = calloc(*n_all ? *n_all : 1, sizeof(*w))))
		return -ENOMEM;
	for (uint32_t i = 0; i < *n_all && *n < KVMIG_WIRE_MAX_RECORDS; i++) {
		if (memcmp(&(*all)[i].peer_pager, peer_pager, sizeof(*peer_pager)))
			continue;
		w[*n].id = (*all)[i].id;
		w[*n].role = (uint8_t)(*all)[i].role;
		w[*n].state = (uint8_t)(*all)[i].state;
		(*n)++;
	}
	*out = w;
	return 0;
}

/* Send our records naming the peer; what was sent into *sent (malloc'd). */
static int send_records(struct engine *e, struct kvmig_pager *p, const struct kvmig_id *peer_pager,
			struct kvmig_wire_record **sent, uint32_t *nsent)
{
	struct kvmig_record *all = NULL;
	struct kvmig_wire_record *w = NULL;
	uint32_t n_all = 0, n = 0;
	int ret = records_for(p, peer_pager, &all, &n_all, &w, &n);

	if (ret == 0 && (ret = kvmig_wire_put_records(&e->wb, w, n)) == 0)
		ret = engine_flush(e);
	free(all);
	if (ret == 0 && sent) {
		*sent = w;
		*nsent = n;
	} else {
		free(w);
	}
	return ret;
}

static int take_records(struct engine *e, struct kvmig_wire_record **w, uint32_t *n)
{
	struct xport_msg *m = NULL;
	int ret = engine_wait_msg(e, -1, &m);

	if (ret < 0)
		return ret;
	if (m->hdr.type != KVMIG_MSG_RECORDS)
		ret = engine_unexpected(m, "RECORDS");
	else
		ret = kvmig_wire_get_records(m->payload, m->hdr.len, w, n);
	engine_msg_free(&m);
	return ret;
}

/* Whether @r stands in @sent (a list we sent) in the same state. */
static int sent_as_is(const struct kvmig_record *r, const struct kvmig_wire_record *sent,
		      uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (!memcmp(&sent[i].id, &r->id, sizeof(r->id)) && sent[i].state == (uint8_t)r->state)
			return 1;
	return 0;
}

/*
 * Act on our records naming the peer, given the peer's list @w. The peer
 * made @w after it received @sent (our earlier list; NULL: none), so for a
 * record of ours that stood in @sent in the state it has now, "the peer has
 * none" is evidence; for any other (it moved on, or a migration that began
 * since), the peer's list may simply predate it. Undecided records a live
 * process drives are left alone by resolve_decide().
 */
static int act_on(struct kvmig_pager *p, const struct kvmig_id *peer_pager,
		  const struct kvmig_wire_record *w, uint32_t nw,
		  const struct kvmig_wire_record *sent, uint32_t nsent,
		  struct kvmig_resolve_stats *st)
{
	struct kvmig_record *all = NULL;
	uint32_t n = 0;
	int ret;

	if ((ret = kvmig_pager_records(p, &all, &n)) < 0)
		return ret;
	for (uint32_t i = 0; i < n && ret == 0; i++) {
		enum kvmig_record_state peer = KVMIG_REC_NONE;

		if (memcmp(&all[i].peer_pager, peer_pager, sizeof(*peer_pager)))
			continue;
		for (uint32_t j = 0; j < nw; j++)
			if (!memcmp(&w[j].id, &all[i].id, sizeof(w[j].id)) &&
			    w[j].role != (uint8_t)all[i].role)
				peer = (enum kvmig_record_state)w[j].state;
		ret = resolve_apply(p, &all[i],
				    resolve_decide(&all[i], peer, sent_as_is(&all[i], sent, nsent)),
				    st);
	}
	free(all);
	return ret;
}

int engine_sync_records(struct engine *e, struct kvmig_pager *p, const struct kvmig_id *peer_pager,
			struct kvmig_resolve_stats *st)
{
	struct kvmig_wire_record *w = NULL, *sent = NULL;
	uint32_t nw = 0, nsent = 0;
	int ret;

	/*
	 * "The peer has no record" is evidence only in a list the peer made
	 * after our record reached its state: the peer's answer to a list of
	 * ours that showed it so. Sender: #1 ours, #2 theirs (an answer to
	 * #1), act, #3 ours. Receiver: act on #1 (no list of ours before it:
	 * only what the sender's records say outright), #2 ours, act on #3
	 * (an answer to #2).
	 */
	if (e->role == 0) {
		if ((ret = send_records(e, p, peer_pager, &sent, &nsent)) < 0 ||
		    (ret = take_records(e, &w, &nw)) < 0 ||
		    (ret = act_on(p, peer_pager, w, nw, sent, nsent, st)) < 0)
			goto out;
		ret = send_records(e, p, peer_pager, NULL, NULL);
		goto out;
	}
	if ((ret = take_records(e, &w, &nw)) < 0 ||
	    (ret = act_on(p, peer_pager, w, nw, NULL, 0, st)) < 0 ||
	    (ret = send_records(e, p, peer_pager, &sent, &nsent)) < 0)
		goto out;
	free(w);
	w = NULL;
	if ((ret = take_records(e, &w, &nw)) == 0)
		ret = act_on(p, peer_pager, w, nw, sent, nsent, st);
out:
	free(w);
	free(sent);
	return ret;
}

/* ---- listener ---- */

int kvmig_listener_open(const char *addr, const struct kvmig_migrate_opts *opts,
			struct kvmig_listener **ret)
{
	struct kvmig_listener *l = calloc(1, sizeof(*l));
	int err;

	if (!l)
		return -ENOMEM;
	l->ops = engine_pick(opts ? opts->transport : KVMIG_TRANSPORT_TCP, addr, 1);
	err = l->ops->listen(addr, &l->impl);
	if (err < 0) {
		free(l);
		return err;
	}
	*ret = l;
	return 0;
}

const char *kvmig_listener_addr(const struct kvmig_listener *l)
{
	return l->ops->listener_addr(l->impl);
}

const char *kvmig_listener_transport(const struct kvmig_listener *l)
{
	return l->ops->name;
}

void kvmig_listener_close(struct kvmig_listener **l)
{
	if (!l || !*l)
		return;
	(*l)->ops->listener_close(&(*l)->impl);
	free(*l);
	*l = NULL;
}

int kvmig_migrate_recv(struct kvmig_pager *p, const char *addr,
		       const struct kvmig_migrate_opts *opts, struct kvmig_migrate_stats *stats)
{
	struct kvmig_listener *l = NULL;
	int ret = kvmig_listener_open(addr, opts, &l);

	if (ret < 0)
		return ret;
	ret = kvmig_migrate_accept(l, p, opts, stats);
	kvmig_listener_close(&l);
	return ret;
}
