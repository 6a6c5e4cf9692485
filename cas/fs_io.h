/* SPDX-License-Identifier: MIT */
/*
 * cas/fs_io.h - the filesystem store's I/O queue: requests are queued, then
 * run together and their results collected. Through io_uring where the
 * build has liburing and the kernel allows it; otherwise (no liburing, a
 * kernel without io_uring, io_uring disabled by sysctl or refused by a
 * seccomp filter, or asked for) the same requests run one after another
 * with preadv / pwritev / fsync, with the same results. Internal to cas/.
 */
#ifndef KVMIG_CAS_FS_IO_H
#define KVMIG_CAS_FS_IO_H

#include <stdint.h>
#include <sys/uio.h>

struct fs_io;

/*
 * A queue for up to @depth requests between runs. @sync: never io_uring.
 * Return 0 and *ret, or -ENOMEM. Never fails for want of io_uring.
 */
int fs_io_new(unsigned depth, int sync, struct fs_io **ret);
void fs_io_free(struct fs_io **q);
/* "io_uring" or "synchronous": what this queue runs its requests with. */
const char *fs_io_name(const struct fs_io *q);

/* Queue a request; @data is its index in fs_io_run()'s @res. At most
 * @depth requests are queued between runs. */
void fs_io_read(struct fs_io *q, int fd, void *buf, uint32_t len, uint64_t off, uint64_t data);
void fs_io_readv(struct fs_io *q, int fd, const struct iovec *iov, unsigned n, uint64_t off,
		 uint64_t data);
/* @link: the next request queued runs only if this one wrote everything;
 * else it completes with -ECANCELED. */
void fs_io_writev(struct fs_io *q, int fd, const struct iovec *iov, unsigned n, uint64_t off,
		  uint64_t data, int link);
void fs_io_fsync(struct fs_io *q, int fd, uint64_t data);

/*
 * Run every queued request and wait for all of them (a signal only makes it
 * wait again): res[data] = bytes or -errno. Return 0, or -errno when the
 * queue itself failed (the requests' results are then unknown and the
 * queue refuses further use); @what names the store in that message.
 */
int fs_io_run(struct fs_io *q, int *res, unsigned max, const char *what);

#endif
