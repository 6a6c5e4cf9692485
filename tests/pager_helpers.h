/* SPDX-License-Identifier: MIT */
/*
 * tests/pager_helpers.h - synthetic-pager helpers the cmocka tests share.
 * Include after <cmocka.h>: a failed call fails the test.
 */
#ifndef KVMIG_TESTS_PAGER_HELPERS_H
#define KVMIG_TESTS_PAGER_HELPERS_H

#include <stdlib.h>

#include <kvmig/pager.h>
#include <kvmig/synth.h>

/* An in-process synthetic pager of preset @preset. */
static inline struct kvmig_pager *synth_pager(const char *preset, enum kvmig_layout layout,
					      uint64_t seed, uint32_t seqs, uint32_t per,
					      uint32_t prefix, uint32_t cap)
{
	struct kvmig_synth_opts o;
	struct kvmig_pager *p = NULL;

	kvmig_synth_opts_init(&o);
	kvmig_meta_preset(preset, &o.meta);
	o.layout = layout;
	o.seed = seed;
	o.n_seqs = seqs;
	o.pages_per_seq = per;
	o.shared_prefix_pages = prefix;
	o.capacity_pages = cap;
	assert_int_equal(kvmig_synth_create(&o, &p), 0);
	return p;
}

static inline uint32_t n_occupied(struct kvmig_pager *p)
{
	uint32_t *ixs, n;

	assert_int_equal(kvmig_pager_occupied(p, &ixs, &n), 0);
	free(ixs);
	return n;
}

static inline uint32_t n_seqs(struct kvmig_pager *p)
{
	struct kvmig_seq_list l = { 0 };
	uint32_t n;

	assert_int_equal(kvmig_pager_seqs(p, &l), 0);
	n = l.n;
	kvmig_seq_list_free(&l);
	return n;
}

#endif
