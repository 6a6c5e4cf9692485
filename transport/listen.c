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
	struct kvmig_listener *l = calloc(1, sizeof(*l));
	int err;

	if (!l)
		return -ENOMEM;
	l->ops = session_pick(opts ? opts->transport : KVMIG_TRANSPORT_TCP, addr, 1);
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
