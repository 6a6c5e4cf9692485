/* SPDX-License-Identifier: MIT */
/* pager/pager_internal.h - the pager handle and record rules, shared by pager.c and the pagers. */
#ifndef KVMIG_PAGER_INTERNAL_H
#define KVMIG_PAGER_INTERNAL_H

#include <kvmig/pager.h>

struct kvmig_pager {
	const struct kvmig_pager_ops *ops;
	void *impl;
	uint64_t serial; /* unique per handle in this process (kvmig_pager_serial) */
};

/* Whether a record of @role in state @st may end with @commit (record_end's
 * contract): every pager implementation asks this one question. */
static inline int kvmig_record_end_legal(enum kvmig_record_role role,
					 enum kvmig_record_state st, int commit)
{
	if (role == KVMIG_ROLE_SOURCE)
		return commit ? st == KVMIG_REC_DEPARTED || st == KVMIG_REC_COMMITTED :
			st == KVMIG_REC_SENDING || st == KVMIG_REC_DEPARTED ||
			st == KVMIG_REC_COMMITTED;
	return commit ? st == KVMIG_REC_ACTIVATED :
		st == KVMIG_REC_RECEIVING || st == KVMIG_REC_PREPARED;
}

#endif
