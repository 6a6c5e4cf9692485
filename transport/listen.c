/* SPDX-License-Identifier: MIT */
/*
 * transport/listen.c - the receiver's listener (a provider's, picked by
 * transport and address) and kvmig_migrate_recv(), one accept on a
 * listener of its own.
 */
#include <stdlib.h>

#include "transport/session.h"
#include "util/internal.h"

int kvmig_listener_open(const char *addr, const struct kvmig_migrate_opts *opts,
			struct kvmig_listener **ret)
{
	enum kvmig_transport t = opts ? opts->transport : KVMIG_TRANSPORT_TCP;
	struct kvmig_listener *l;
	int err;

	if (!kvmig_transport_name(t))
		return kvmig_err(-EINVAL, "unknown transport %d", (int)t);
	if (!session_transport_built(t))
		return kvmig_err(-EPROTONOSUPPORT, "this kvmig was built without the %s provider "
				 "(kvmig --version says what it has)", kvmig_transport_name(t));
	if (!(l = calloc(1, sizeof(*l))))
		return -ENOMEM;
	l->ops = session_pick(t, addr, 1);
	err = l->ops->listen(addr, &l->impl);
	if (err < 0) {
		free(l);
		return err;
	}
	pthread_mutex_init(&l->lock, NULL);
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
	pthread_mutex_destroy(&(*l)->lock);
	free(*l);
	*l = NULL;
}

int kvmig_listener_accept(struct kvmig_listener *l, int timeout_ms, int cancel_fd,
			  struct kvmig_conn **ret)
{
	struct kvmig_conn *c = calloc(1, sizeof(*c));
	int err;

	if (!c)
		return kvmig_err(-ENOMEM, "out of memory accepting a connection");
	c->ops = l->ops;
	if ((err = l->ops->accept(l->impl, timeout_ms < 0 ? -1 : timeout_ms, cancel_fd,
				  &c->c)) < 0) {
		free(c);
		return err;
	}
	*ret = c;
	return 0;
}

const char *kvmig_conn_peer(const struct kvmig_conn *c)
{
	return c->ops->peer_addr(c->c);
}

void kvmig_conn_close(struct kvmig_conn **c)
{
	if (!c || !*c)
		return;
	(*c)->ops->close(&(*c)->c);
	free(*c);
	*c = NULL;
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
