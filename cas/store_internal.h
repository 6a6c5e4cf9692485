/* SPDX-License-Identifier: MIT */
/* cas/store_internal.h - the blob-store ops table behind struct kvmig_store. */
#ifndef KVMIG_STORE_INTERNAL_H
#define KVMIG_STORE_INTERNAL_H

#include <kvmig/cas.h>

struct kvmig_store_ops {
	int (*put_batch)(struct kvmig_store *s, struct kvmig_blob_io *ios, uint32_t n);
	int (*get_batch)(struct kvmig_store *s, struct kvmig_blob_io *ios, uint32_t n);
	/* Length of a stored blob, or -ENOENT. */
	int (*blob_size)(struct kvmig_store *s, const struct kvmig_digest *d, uint64_t *len);
	int (*totals)(struct kvmig_store *s, uint64_t *bytes, uint64_t *count);
	/* kvmig_store_check(); NULL where a store cannot go bad on its own. */
	int (*check)(struct kvmig_store *s, unsigned flags, kvmig_store_check_fn fn, void *arg,
		     struct kvmig_store_check_stats *st);
	void (*close)(struct kvmig_store *s);
};

struct kvmig_store {
	const struct kvmig_store_ops *ops;
	/* Puts that replaced a bad file in a blob's place (capture's blobs_repaired). */
	uint64_t repaired;
};

/* How filesystem store @s does its I/O ("io_uring" or "synchronous"), or
 * NULL for another kind of store. */
const char *kvmig_store_fs_io(const struct kvmig_store *s);
/* Total length of @iov. */
uint64_t kvmig_iov_total(const struct iovec *iov, int iovcnt);
/* Re-hash @io's bytes; -EIO with a message naming @where if they do not match. */
int kvmig_blob_check(const struct kvmig_blob_io *io, const char *where);

#endif
