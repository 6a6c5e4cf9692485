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

struct iovec;

/*
 * Page @ix's @half as iovecs straight over its memory: its extents into
 * @ext, the same as iovecs into @iov (room for @max each). They must cover
 * @half_bytes. Return: the number of extents, or -errno naming the page
 * (-EPROTO when they cover another size). Capture, restore, verify and the
 * migration receiver's hashing all take a page's bytes this way.
 */
int kvmig_half_iov(struct kvmig_pager *p, uint32_t ix, enum kvmig_half half,
		   uint64_t half_bytes, struct kvmig_extent *ext, struct iovec *iov,
		   uint32_t max);

#endif
