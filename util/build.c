/* SPDX-License-Identifier: MIT */
/*
 * util/build.c - what this build of the library has: the transports and how
 * the filesystem store does its I/O (meson options rdma and uring).
 */
#include <kvmig/common.h>

#include "util/internal.h"

const char *kvmig_build_info(void)
{
	return "transports: tcp"
#ifdef KVMIG_HAVE_RDMA
	       ", rdma"
#else
	       " (built without rdma-core: no rdma)"
#endif
	       "; store I/O: "
#ifdef KVMIG_HAVE_URING
	       "io_uring (synchronous where the kernel refuses it)"
#else
	       "synchronous (built without liburing)"
#endif
#ifdef KVMIG_HAVE_AGENT
	       "; agent: kvmigd"
#else
	       "; agent: none (built without libmicrohttpd)"
#endif
#ifdef KVMIG_FAULT_INJECTION
	       "; fault injection compiled in ($KVMIG_FAULT)"
#endif
	       ;
}
