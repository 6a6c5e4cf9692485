/* SPDX-License-Identifier: MIT */
/* pager/pager_internal.h - the pager handle, shared by pager.c and synth.c. */
#ifndef KVMIG_PAGER_INTERNAL_H
#define KVMIG_PAGER_INTERNAL_H

#include <kvmig/pager.h>

struct kvmig_pager {
	const struct kvmig_pager_ops *ops;
	void *impl;
	uint64_t serial; /* unique per handle in this process (kvmig_pager_serial) */
};

#endif
