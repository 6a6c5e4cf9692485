/* SPDX-License-Identifier: MIT */
/*
 * pager/internal.h - what pager/ offers the library folders above it (cas/,
 * transport/) beyond the public kvmig/pager.h. Internal: not installed.
 */
#ifndef KVMIG_PAGER_LIB_INTERNAL_H
#define KVMIG_PAGER_LIB_INTERNAL_H

#include <stdint.h>

#include <kvmig/pager.h>

/* A number unique to this pager handle in this process, never reused (a
 * handle's address can be, after it is freed). */
uint64_t kvmig_pager_serial(const struct kvmig_pager *p);

/* The pages of @cand (repeats allowed) that no sequence of @all uses but
 * those named in @drop, each once, into @out (room for @n; may be @cand
 * itself), their number in @n_out. 0 or -ENOMEM. Worked out before the
 * sequences are removed, so a failure leaves nothing half done. */
int kvmig_pages_unused(const struct kvmig_seq_list *all, const char *const *drop,
		       uint32_t n_drop, const uint32_t *cand, uint32_t n, uint32_t *out,
		       uint32_t *n_out);

#endif
