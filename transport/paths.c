/* SPDX-License-Identifier: MIT */
/*
 * transport/paths.c - a migration's extra connections (docs/PROTOCOL.md,
 * "Several paths"), set up at the end of the handshake, authenticated by
 * then when a secret is used:
 *
 *   sender                                     receiver
 *   HELLO (flag PATHS) ...                     ... HELLO
 *   PATHS (per_addr) ───────────────────────►  listen on each path host, port 0
 *                    ◄───────────────────────  PATHS (per_addr, token, addresses)
 *   connect path i to address i % n_addrs
 *   JOIN (token, i, total) on it ───────────►  accept, read its JOIN into slot i
 *                                              (no token within JOIN_MS, a taken
 *                                              slot: not ours, closed)
 *                    ◄───────────────────────  JOINED, once every slot is filled
 *   both sides: the session goes on over the stripe of all paths (stripe.c)
 *
 * Every wait ends by the handshake's deadline. The receiver's listeners live
 * only while the paths join.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "transport/session.h"
#include "util/internal.h"

#define JOIN_MS 1000 /* a new connection's JOIN must come within this */

/* Whether paths_connect() has anything to do: the HELLO flag says so. */
int paths_wanted(const struct session *ses)
{
	return ses->o.paths > 1;
}

/* ms until the handshake's deadline (at least 1). */
static int ms_to_deadline(const struct session *ses)
{
	double left = ses->until > 0 ? (ses->until - kvmig_now()) * 1000.0 : ses->o.timeout_ms;

	return left < 1 ? 1 : left > INT32_MAX ? INT32_MAX : (int)left;
}

/* Run the session over @paths (paths[0] := the session's connection). */
static int switch_to_stripe(struct session *ses, struct xport_conn **paths, unsigned n)
{
	struct xport_conn *striped = NULL;
	int ret;

	paths[0] = ses->c;
	if ((ret = xport_stripe(ses->ops, paths, n, &striped)) < 0)
		return ret; /* the caller closes paths 1.., the session path 0 */
	ses->c = striped;
	ses->ops = &kvmig_xport_stripe;
	ses->n_paths = n;
	session_connected(ses);
	return 0;
}

/*
 * An address the receiver named for a path: numeric (no name to resolve:
 * no lookup a hostile receiver chooses), not a wildcard (IPv4-mapped ones
 * included), a port 1..65535, and loopback only when the first connection
 * is. Return 0 or -EPROTO naming it.
 */
static int check_path_addr(struct session *ses, const char *addr)
{
	char host[KVMIG_WIRE_MAX_ADDR + 1], port[16], peer[KVMIG_WIRE_MAX_ADDR + 1], pport[16];
	int lo = 0, peer_lo = 0;
	char *end;
	unsigned long pn;

	if (kvmig_addr_split(addr, host, sizeof(host), port, sizeof(port)) < 0 ||
	    kvmig_addr_numeric(host, &lo) < 0 || (pn = strtoul(port, &end, 10)) < 1 ||
	    pn > 65535 || *end || port[0] == '+' || port[0] == '-') {
		kvmig_clear_error();
		return kvmig_err(-EPROTO, "the receiver named path address \"%s\": not a numeric "
				 "host:port of one of its interfaces", addr);
	}
	if (kvmig_addr_split(ses->ops->peer_addr(ses->c), peer, sizeof(peer), pport,
			     sizeof(pport)) < 0 || kvmig_addr_numeric(peer, &peer_lo) < 0)
		peer_lo = 0;
	if (lo && !peer_lo)
		return kvmig_err(-EPROTO, "the receiver named path address %s, a loopback address, "
				 "but it is not on this host", addr);
	return 0;
}

/* The peer's PATHS, whichever side sent it. */
static int wait_paths(struct session *ses, struct kvmig_msg_paths *pp)
{
	struct xport_msg *m = NULL;
	int ret = session_wait_msg(ses, -1, &m);

	if (ret < 0)
		return ret;
	if (m->hdr.type != KVMIG_MSG_PATHS)
		ret = session_unexpected(m, "PATHS");
	else
		ret = kvmig_wire_get_paths(m->payload, m->hdr.len, pp);
	session_msg_free(&m);
	return ret;
}

int paths_connect(struct session *ses)
{
	struct kvmig_msg_paths ask = { .per_addr = (uint8_t)ses->o.paths }, got;
	struct xport_conn *paths[KVMIG_WIRE_MAX_PATHS] = { 0 };
	const struct xport_ops *ops = ses->ops;
	struct xport_msg *m = NULL;
	unsigned total;
	int ret;

	if ((ret = kvmig_wire_put_paths(&ses->wb, &ask)) < 0 || (ret = session_flush(ses)) < 0 ||
	    (ret = wait_paths(ses, &got)) < 0)
		return ret;
	if (!got.n_addrs || got.per_addr > ask.per_addr)
		return kvmig_err(-EPROTO, "the receiver answered %u connections to each of %u "
				 "addresses; %u were asked for", got.per_addr, got.n_addrs,
				 ask.per_addr);
	total = (unsigned)got.per_addr * got.n_addrs;
	if (total < 2)
		return 0; /* one connection after all: this one */
	for (unsigned h = 0; h < got.n_addrs; h++)
		if ((ret = check_path_addr(ses, got.addrs[h])) < 0)
			return ret;
	for (unsigned i = 1; i < total; i++) {
		const char *addr = got.addrs[i % got.n_addrs];
		struct kvmig_msg_join j = { .index = (uint8_t)i, .total = (uint8_t)total };

		memcpy(j.token, got.token, sizeof(j.token));
		if (kvmig_fault("paths-bad-token", NULL))
			j.token[0] ^= 1; /* test-only */
		if ((ret = ops->connect(addr, ms_to_deadline(ses), ses->o.cancel_fd, &paths[i])) < 0) {
			kvmig_err_prefix(ret, "connection %u of %u", i + 1, total);
			goto fail;
		}
		ops->set_timeout(paths[i], (int)ses->o.timeout_ms);
		ops->set_cancel(paths[i], ses->o.cancel_fd);
		ses->wb.len = 0;
		if ((ret = kvmig_wire_put_join(&ses->wb, &j)) < 0 ||
		    (ret = ops->send(paths[i], ses->wb.p, ses->wb.len)) < 0) {
			kvmig_err_prefix(ret, "connection %u of %u", i + 1, total);
			goto fail;
		}
		ses->wb.len = 0;
	}
	/* Nothing is paused or registered before the receiver has them all. */
	if ((ret = session_wait_msg(ses, -1, &m)) < 0)
		goto fail;
	ret = m->hdr.type == KVMIG_MSG_JOINED ? 0 : session_unexpected(m, "JOINED");
	session_msg_free(&m);
	if (ret == 0 && (ret = switch_to_stripe(ses, paths, total)) == 0)
		return 0;
fail:
	ses->wb.len = 0;
	for (unsigned i = 1; i < total; i++)
		if (paths[i])
			ops->close(&paths[i]);
	/* The receiver may have said why (it gave up first): its reason wins. */
	if (ret != -ECANCELED && !ses->peer_aborted)
		ret = session_salvage_abort(ses, ret);
	return ret;
}

/* Our hosts for extra connections: o.path_hosts, else this connection's. */
static int path_hosts(struct session *ses, char hosts[][KVMIG_WIRE_MAX_ADDR + 1], unsigned *n)
{
	char local[KVMIG_WIRE_MAX_ADDR + 1], port[16];
	const char *s = ses->o.path_hosts;

	*n = 0;
	if (!s || !*s) {
		int ret = ses->ops->local_addr(ses->c, local, sizeof(local));

		if (ret < 0 || (ret = kvmig_addr_split(local, hosts[0], sizeof(hosts[0]), port,
						       sizeof(port))) < 0)
			return kvmig_err_prefix(ret, "this side's address of the connection");
		*n = 1;
		return 0;
	}
	while (*s) {
		size_t len = strcspn(s, ",");

		/* session_init checked the list: 1..KVMIG_WIRE_MAX_PATHS hosts that
		 * fit; "[v6]" loses its brackets, put back with a port. */
		if (len > 2 && s[0] == '[' && s[len - 1] == ']')
			snprintf(hosts[*n], sizeof(hosts[0]), "%.*s", (int)len - 2, s + 1);
		else
			snprintf(hosts[*n], sizeof(hosts[0]), "%.*s", (int)len, s);
		(*n)++;
		s += len + (s[len] == ',');
	}
	return 0;
}

/*
 * A new connection's JOIN, within JOIN_MS (and the deadline): 0 with *ix its
 * index, 1 (not one of ours, or silent: drop it), or -errno.
 */
static int take_join(struct session *ses, struct xport_conn *c, const struct kvmig_msg_paths *pp,
		     unsigned total, unsigned *ix)
{
	const struct xport_ops *ops = ses->ops;
	double until = kvmig_now() + JOIN_MS / 1000.0;
	struct kvmig_msg_join j;
	struct xport_msg *m = NULL;
	int ret;

	if (ses->until > 0 && ses->until < until)
		until = ses->until;
	/* Its frame's own deadline too: a JOIN trickled in cannot pass ours. */
	ops->set_timeout(c, KVMIG_MAX(1, (int)((until - kvmig_now()) * 1000.0)));
	ops->set_cancel(c, ses->o.cancel_fd);
	while ((ret = ops->ctl_pop(c, &m)) == -EAGAIN) {
		int left = (int)((until - kvmig_now()) * 1000.0);

		if (left <= 0 || (ret = ops->progress(c, left, -1)) < 0) {
			ret = ret < 0 ? ret : -ETIMEDOUT;
			break;
		}
	}
	if (ret == -ECANCELED)
		return ret;
	if (ret < 0) {
		kvmig_clear_error();
		return 1; /* silent or gone before a JOIN: whoever it was, not our sender */
	}
	if (m->hdr.type != KVMIG_MSG_JOIN || kvmig_wire_get_join(m->payload, m->hdr.len, &j) < 0 ||
	    memcmp(j.token, pp->token, sizeof(j.token))) {
		session_msg_free(&m);
		kvmig_clear_error();
		return 1;
	}
	session_msg_free(&m);
	if (j.total != total)
		return kvmig_err(-EPROTO, "the sender joined connection %u of %u; there are %u",
				 j.index + 1, j.total, total);
	ops->set_timeout(c, (int)ses->o.timeout_ms);
	*ix = j.index;
	return 0;
}

/* Between accepts: a message on the first connection can only be the
 * sender's ABORT (it sends nothing else before JOINED); a sender gone ends
 * the wait too. */
static int first_still_there(struct session *ses)
{
	struct xport_msg *m = NULL;
	int r = ses->ops->progress(ses->c, 0, -1);

	if (r < 0)
		return session_salvage_abort(ses, r);
	if (ses->ops->ctl_pop(ses->c, &m) == 0) {
		r = m->hdr.type == KVMIG_MSG_ABORT ? session_peer_abort(ses, m) :
			session_unexpected(m, "nothing until JOINED");
		session_msg_free(&m);
		return r;
	}
	return 0;
}

int paths_accept(struct session *ses)
{
	struct kvmig_msg_paths pp = { 0 };
	struct xport_listener *ls[KVMIG_WIRE_MAX_PATHS] = { 0 };
	struct xport_conn *paths[KVMIG_WIRE_MAX_PATHS] = { 0 };
	char hosts[KVMIG_WIRE_MAX_PATHS][KVMIG_WIRE_MAX_ADDR + 1];
	const struct xport_ops *ops = ses->ops;
	unsigned n_hosts = 0, total = 0, joined = 1, h = 0, strangers = 0;
	int ret;

	if ((ret = wait_paths(ses, &pp)) < 0)
		return ret;
	if (pp.n_addrs)
		return kvmig_err(-EPROTO, "the sender's PATHS names addresses; only the receiver's does");
	if ((ret = path_hosts(ses, hosts, &n_hosts)) < 0)
		return ret;
	pp.per_addr = (uint8_t)KVMIG_MIN(pp.per_addr, KVMIG_WIRE_MAX_PATHS / n_hosts);
	total = (unsigned)pp.per_addr * n_hosts;
	pp.n_addrs = (uint8_t)n_hosts;
	if (getrandom(pp.token, sizeof(pp.token), 0) != (ssize_t)sizeof(pp.token))
		return kvmig_err(-EIO, "no random bytes for the paths' token: %s", strerror(errno));
	for (h = 0; total > 1 && h < n_hosts; h++) {
		char at[KVMIG_WIRE_MAX_ADDR + 16];

		snprintf(at, sizeof(at), strchr(hosts[h], ':') ? "[%s]:0" : "%s:0", hosts[h]);
		if ((ret = ops->listen(at, &ls[h])) < 0) {
			kvmig_err_prefix(ret, "listening for the sender's extra connections");
			goto out;
		}
		snprintf(pp.addrs[h], sizeof(pp.addrs[h]), "%s", ops->listener_addr(ls[h]));
	}
	if (total < 2)
		snprintf(pp.addrs[0], sizeof(pp.addrs[0]), "%.70s:0", hosts[0]);
	if ((ret = kvmig_wire_put_paths(&ses->wb, &pp)) < 0 || (ret = session_flush(ses)) < 0)
		goto out;
	/*
	 * Each listener in turn, in short slices, with a look at the first
	 * connection in between. A connection goes in the slot its JOIN names
	 * (connections may queue out of order); one without the token, silent
	 * for JOIN_MS, or for a slot taken, is someone else's and is closed.
	 */
	for (h = 0; joined < total; h = (h + 1) % n_hosts) {
		struct xport_conn *c = NULL;
		unsigned ix = 0;

		if (ses->until > 0 && kvmig_now() >= ses->until) {
			ret = kvmig_err(-ETIMEDOUT, "%u of the sender's %u connections joined within "
					"%u ms (%u other connections to the path ports were closed: "
					"silent, or without the token)", joined, total,
					ses->o.timeout_ms, strangers);
			goto out;
		}
		ret = ops->accept(ls[h], KVMIG_MIN(ms_to_deadline(ses), n_hosts > 1 ? 50 : 200),
				  ses->o.cancel_fd, &c);
		if (ret == -ETIMEDOUT) {
			kvmig_clear_error();
			if ((ret = first_still_there(ses)) < 0)
				goto out;
			continue;
		}
		if (ret < 0)
			goto out;
		if ((ret = take_join(ses, c, &pp, total, &ix)) < 0) {
			ops->close(&c);
			goto out;
		}
		if (ret == 1 || ix % n_hosts != h || paths[ix]) {
			ops->close(&c); /* not ours, at the wrong address, or a second of a slot */
			strangers++;
			continue;
		}
		paths[ix] = c;
		joined++;
	}
	if (total > 1 && ((ret = kvmig_wire_put_empty(&ses->wb, KVMIG_MSG_JOINED)) < 0 ||
			  (ret = session_flush(ses)) < 0 ||
			  (ret = switch_to_stripe(ses, paths, total)) < 0))
		goto out;
	ret = 0;
out:
	for (unsigned i = 1; ret < 0 && i < total; i++)
		if (paths[i])
			ops->close(&paths[i]);
	for (h = 0; h < n_hosts; h++)
		if (ls[h])
			ops->listener_close(&ls[h]);
	return ret;
}
