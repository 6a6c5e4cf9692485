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
 *   JOIN (token, i, total) on it ───────────►  accept, read its JOIN (a wrong
 *                                              token: not ours, closed)
 *   both sides: the session goes on over the stripe of all paths (stripe.c)
 *
 * Every wait ends by the handshake's deadline. The receiver's listeners live
 * only while the paths join.
 */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "transport/session.h"
#include "util/internal.h"

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

static int switch_to_stripe(struct session *ses, struct xport_conn **paths, unsigned n)
{
	int ret;

	paths[0] = ses->c;
	ses->c = NULL;
	if ((ret = xport_stripe(ses->ops, paths, n, &ses->c)) < 0)
		return ret;
	ses->ops = &kvmig_xport_stripe;
	ses->n_paths = n;
	session_connected(ses);
	return 0;
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
	    (ret = session_wait_msg(ses, -1, &m)) < 0)
		return ret;
	if (m->hdr.type != KVMIG_MSG_PATHS)
		ret = session_unexpected(m, "PATHS");
	else
		ret = kvmig_wire_get_paths(m->payload, m->hdr.len, &got);
	session_msg_free(&m);
	if (ret < 0)
		return ret;
	if (!got.n_addrs || got.per_addr > ask.per_addr)
		return kvmig_err(-EPROTO, "the receiver answered %u connections to each of %u "
				 "addresses; %u were asked for", got.per_addr, got.n_addrs,
				 ask.per_addr);
	total = (unsigned)got.per_addr * got.n_addrs;
	if (total < 2)
		return 0; /* one connection after all: this one */
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
	return switch_to_stripe(ses, paths, total);
fail:
	ses->wb.len = 0;
	for (unsigned i = 1; i < total; i++)
		if (paths[i])
			ops->close(&paths[i]);
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

		/* session_init checked the list: 1..KVMIG_WIRE_MAX_PATHS hosts that fit */
		snprintf(hosts[*n], sizeof(hosts[0]), "%.*s", (int)len, s);
		(*n)++;
		s += len + (s[len] == ',');
	}
	return 0;
}

/* Connection @i's JOIN within the deadline: 0, 1 (not one of ours: drop it), -errno. */
static int take_join(struct session *ses, struct xport_conn *c, const struct kvmig_msg_paths *pp,
		     unsigned i, unsigned total)
{
	const struct xport_ops *ops = ses->ops;
	struct kvmig_msg_join j;
	struct xport_msg *m = NULL;
	int ret;

	ops->set_timeout(c, ms_to_deadline(ses));
	ops->set_cancel(c, ses->o.cancel_fd);
	while ((ret = ops->ctl_pop(c, &m)) == -EAGAIN) {
		if ((ret = ops->progress(c, ms_to_deadline(ses), -1)) < 0)
			break;
		if (ses->until > 0 && kvmig_now() >= ses->until) {
			ret = -ETIMEDOUT;
			break;
		}
	}
	if (ret == -ECANCELED)
		return ret;
	if (ret < 0)
		return 1; /* silent or gone before a JOIN: whoever it was, not our sender */
	if (m->hdr.type != KVMIG_MSG_JOIN || kvmig_wire_get_join(m->payload, m->hdr.len, &j) < 0 ||
	    memcmp(j.token, pp->token, sizeof(j.token))) {
		session_msg_free(&m);
		kvmig_clear_error();
		return 1;
	}
	session_msg_free(&m);
	if (j.index != i || j.total != total)
		return kvmig_err(-EPROTO, "the sender joined connection %u of %u; connection %u of "
				 "%u was due", j.index + 1, j.total, i + 1, total);
	ops->set_timeout(c, (int)ses->o.timeout_ms);
	return 0;
}

int paths_accept(struct session *ses)
{
	struct kvmig_msg_paths pp = { 0 };
	struct xport_listener *ls[KVMIG_WIRE_MAX_PATHS] = { 0 };
	struct xport_conn *paths[KVMIG_WIRE_MAX_PATHS] = { 0 };
	char hosts[KVMIG_WIRE_MAX_PATHS][KVMIG_WIRE_MAX_ADDR + 1];
	const struct xport_ops *ops = ses->ops;
	struct xport_msg *m = NULL;
	unsigned n_hosts = 0, total = 0;
	int ret;

	if ((ret = session_wait_msg(ses, -1, &m)) < 0)
		return ret;
	if (m->hdr.type != KVMIG_MSG_PATHS)
		ret = session_unexpected(m, "PATHS");
	else
		ret = kvmig_wire_get_paths(m->payload, m->hdr.len, &pp);
	session_msg_free(&m);
	if (ret < 0)
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
	for (unsigned h = 0; total > 1 && h < n_hosts; h++) {
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
	/* The sender connects them in order; anyone else's connection is dropped. */
	for (unsigned i = 1; i < total;) {
		if (ses->until > 0 && kvmig_now() >= ses->until) {
			ret = kvmig_err(-ETIMEDOUT, "the sender made %u of its %u connections within "
					"%u ms", i, total, ses->o.timeout_ms);
			goto out;
		}
		/* In slices, looking at the first connection in between: a sender
		 * that gave up (its ABORT, or gone) ends the wait. */
		ret = ops->accept(ls[i % n_hosts], KVMIG_MIN(ms_to_deadline(ses), 200),
				  ses->o.cancel_fd, &paths[i]);
		if (ret == -ETIMEDOUT) {
			int r = 1;

			/* What it sent meanwhile is queued (a bounded number of
			 * messages, one per call), up to its ABORT or its end. */
			for (int k = 0; k < 64 && r > 0; k++)
				r = ops->progress(ses->c, 0, -1);

			if (r < 0) {
				ret = session_salvage_abort(ses, r);
				goto out;
			}
			kvmig_clear_error();
			continue;
		}
		if (ret < 0)
			goto out;
		if ((ret = take_join(ses, paths[i], &pp, i, total)) < 0)
			goto out;
		if (ret == 1) {
			ops->close(&paths[i]);
			continue;
		}
		i++;
	}
	if (total > 1 && (ret = switch_to_stripe(ses, paths, total)) < 0)
		goto out;
	ret = 0;
out:
	for (unsigned i = 1; ret < 0 && i < total; i++)
		if (paths[i])
			ops->close(&paths[i]);
	for (unsigned h = 0; h < n_hosts; h++)
		if (ls[h])
			ops->listener_close(&ls[h]);
	return ret;
}
