/* SPDX-License-Identifier: MIT */
/*
 * transport/providers.c - the one table of transports. The parser
 * (kvmig_transport_parse), the names in reports (kvmig_transport_name),
 * option checking (session_init) and the `auto` choice (session_pick) all read
 * it: a new provider is its ops table (its own files) and a row here, and
 * tests/integration/test_provider.c then checks it keeps the contract.
 */
#include <string.h>

#include <kvmig/migrate.h>

#include "transport/session.h"
#include "util/internal.h"

/* In the order `auto` tries them: the first whose probe says it serves
 * the address; a row without a probe serves any address. */
static const struct xport_provider providers[] = {
#ifdef KVMIG_HAVE_RDMA
	{ KVMIG_TRANSPORT_RDMA, "rdma", &kvmig_xport_rdma, kvmig_rdma_serves },
#endif
	{ KVMIG_TRANSPORT_TCP, "tcp", &kvmig_xport_tcp, NULL },
};

const struct xport_provider *xport_providers(size_t *n)
{
	*n = KVMIG_ARRAY_SIZE(providers);
	return providers;
}

/* Every value of enum kvmig_transport, built or not. */
static const char *const names[] = {
	[KVMIG_TRANSPORT_TCP] = "tcp",
	[KVMIG_TRANSPORT_RDMA] = "rdma",
	[KVMIG_TRANSPORT_AUTO] = "auto",
};

const char *kvmig_transport_name(enum kvmig_transport t)
{
	return (unsigned)t < KVMIG_ARRAY_SIZE(names) ? names[t] : NULL;
}

int kvmig_transport_parse(const char *name, enum kvmig_transport *out)
{
	for (size_t i = 0; name && i < KVMIG_ARRAY_SIZE(names); i++) {
		if (!strcmp(name, names[i])) {
			*out = (enum kvmig_transport)i;
			return 0;
		}
	}
	return kvmig_err(-EINVAL, "\"%s\" is not a transport (tcp, rdma or auto)",
			 name ? name : "(null)");
}

int session_transport_built(enum kvmig_transport t)
{
	if (t == KVMIG_TRANSPORT_AUTO)
		return 1;
	for (size_t i = 0; i < KVMIG_ARRAY_SIZE(providers); i++)
		if (providers[i].transport == t)
			return 1;
	return 0;
}

const struct xport_ops *session_pick(enum kvmig_transport t, const char *addr, int passive)
{
	for (size_t i = 0; i < KVMIG_ARRAY_SIZE(providers); i++) {
		const struct xport_provider *pv = &providers[i];

		if (pv->transport == t ||
		    (t == KVMIG_TRANSPORT_AUTO && (!pv->serves || pv->serves(addr, passive))))
			return pv->ops;
	}
	return &kvmig_xport_tcp; /* session_init refused any other value */
}
