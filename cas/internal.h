/* SPDX-License-Identifier: MIT */
/*
 * cas/internal.h - what cas/ offers transport/ beyond the public kvmig/cas.h:
 * XXH3-128 over bytes that arrive piece by piece (the migration receiver
 * hashes each read as it lands, while it is in cache). Equal bytes give the
 * digest kvmig_digest_compute gives for their concatenation. Internal: not
 * installed.
 */
#ifndef KVMIG_CAS_LIB_INTERNAL_H
#define KVMIG_CAS_LIB_INTERNAL_H

#include <stddef.h>

#include <kvmig/cas.h>

struct kvmig_digest_stream;

/* Return: a new stream, or NULL (out of memory). */
struct kvmig_digest_stream *kvmig_digest_stream_new(void);
void kvmig_digest_stream_free(struct kvmig_digest_stream **s);
void kvmig_digest_stream_reset(struct kvmig_digest_stream *s);
void kvmig_digest_stream_update(struct kvmig_digest_stream *s, const void *data, size_t len);
void kvmig_digest_stream_final(struct kvmig_digest_stream *s, struct kvmig_digest *out);

#endif
