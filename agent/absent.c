/* SPDX-License-Identifier: MIT */
/*
 * agent/absent.c - the agent's API in a build without libmicrohttpd (meson
 * option agent=disabled, or the package missing): kvmig_agent_start() says
 * so; the rest of the library is whole.
 */
#include <errno.h>
#include <string.h>

#include <kvmig/agent.h>

#include "util/internal.h"

void kvmig_agent_opts_init(struct kvmig_agent_opts *o)
{
	memset(o, 0, sizeof(*o));
}

int kvmig_agent_start(struct kvmig_pager *p, const struct kvmig_agent_opts *opts,
		      struct kvmig_agent **ret)
{
	return kvmig_err(-EPROTONOSUPPORT, "this kvmig was built without the agent "
			 "(libmicrohttpd was missing; kvmig --version says what it has)");
}

const char *kvmig_agent_data_addr(const struct kvmig_agent *a)
{
	return "";
}

const char *kvmig_agent_control_addr(const struct kvmig_agent *a)
{
	return "";
}

void kvmig_agent_stop(struct kvmig_agent **a)
{
	if (a)
		*a = NULL;
}
