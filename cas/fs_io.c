/* SPDX-License-Identifier: MIT */
/*
 * cas/fs_io.c - the filesystem store's I/O queue (cas/fs_io.h): io_uring when
 * built with liburing and the kernel lets this process use it, otherwise
 * the same requests one after another. Both give the same results: bytes
 * or -errno per request, a linked fsync cancelled (-ECANCELED) when its
 * write did not write everything.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef KVMIG_HAVE_URING
#include <liburing.h>
#endif

#include "cas/fs_io.h"
#include "util/internal.h"

enum fs_op { OP_READ, OP_READV, OP_WRITEV, OP_FSYNC };

/* A queued request (synchronous mode). */
struct fs_req {
	enum fs_op op;
	int fd;
	int link;
	struct iovec one;          /* OP_READ's buffer */
	const struct iovec *iov;
	unsigned n;
	uint64_t off, data;
};

struct fs_io {
	unsigned depth;
	int broken; /* a submit or wait failed: requests may be left behind */
#ifdef KVMIG_HAVE_URING
	int uring;
	struct io_uring ring;
#endif
	struct fs_req *q;
	unsigned n_q;
};

int fs_io_new(unsigned depth, int sync, struct fs_io **ret)
{
	struct fs_io *q = calloc(1, sizeof(*q));

	if (!q || !(q->q = calloc(depth ? depth : 1, sizeof(*q->q)))) {
		free(q);
		return -ENOMEM;
	}
	q->depth = depth ? depth : 1;
#ifdef KVMIG_HAVE_URING
	/* Refused (no io_uring in this kernel, kernel.io_uring_disabled, a
	 * seccomp filter, a memlock limit): the same, synchronously. */
	if (!sync && io_uring_queue_init(q->depth, &q->ring, 0) == 0)
		q->uring = 1;
#else
	(void)sync;
#endif
	*ret = q;
	return 0;
}

void fs_io_free(struct fs_io **qp)
{
	struct fs_io *q = *qp;

	if (!q)
		return;
#ifdef KVMIG_HAVE_URING
	if (q->uring)
		io_uring_queue_exit(&q->ring);
#endif
	free(q->q);
	free(q);
	*qp = NULL;
}

const char *fs_io_name(const struct fs_io *q)
{
#ifdef KVMIG_HAVE_URING
	if (q->uring)
		return "io_uring";
#endif
	(void)q;
	return "synchronous";
}

/* Queue @r: an io_uring SQE, or a slot for the synchronous run. The caller
 * runs the queue before it holds depth requests. */
static void queue(struct fs_io *q, const struct fs_req *r)
{
#ifdef KVMIG_HAVE_URING
	if (q->uring) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);

		switch (r->op) {
		case OP_READ:
			io_uring_prep_read(sqe, r->fd, r->one.iov_base, (unsigned)r->one.iov_len,
					   r->off);
			break;
		case OP_READV:
			io_uring_prep_readv(sqe, r->fd, r->iov, r->n, r->off);
			break;
		case OP_WRITEV:
			io_uring_prep_writev(sqe, r->fd, r->iov, r->n, r->off);
			break;
		default:
			io_uring_prep_fsync(sqe, r->fd, 0);
			break;
		}
		io_uring_sqe_set_data64(sqe, r->data);
		if (r->link)
			sqe->flags |= IOSQE_IO_LINK;
		return;
	}
#endif
	if (q->n_q < q->depth)
		q->q[q->n_q++] = *r;
}

void fs_io_read(struct fs_io *q, int fd, void *buf, uint32_t len, uint64_t off, uint64_t data)
{
	queue(q, &(struct fs_req){ .op = OP_READ, .fd = fd, .one = { buf, len }, .off = off,
				   .data = data });
}

void fs_io_readv(struct fs_io *q, int fd, const struct iovec *iov, unsigned n, uint64_t off,
		 uint64_t data)
{
	queue(q, &(struct fs_req){ .op = OP_READV, .fd = fd, .iov = iov, .n = n, .off = off,
				   .data = data });
}

void fs_io_writev(struct fs_io *q, int fd, const struct iovec *iov, unsigned n, uint64_t off,
		  uint64_t data, int link)
{
	queue(q, &(struct fs_req){ .op = OP_WRITEV, .fd = fd, .iov = iov, .n = n, .off = off,
				   .data = data, .link = link });
}

void fs_io_fsync(struct fs_io *q, int fd, uint64_t data)
{
	queue(q, &(struct fs_req){ .op = OP_FSYNC, .fd = fd, .data = data });
}

/* One request, synchronously: bytes or -errno. */
static int run_one(const struct fs_req *r)
{
	ssize_t n;

	switch (r->op) {
	case OP_READ:
		n = pread(r->fd, r->one.iov_base, r->one.iov_len, (off_t)r->off);
		break;
	case OP_READV:
		n = preadv(r->fd, r->iov, (int)r->n, (off_t)r->off);
		break;
	case OP_WRITEV:
		n = pwritev(r->fd, r->iov, (int)r->n, (off_t)r->off);
		break;
	default:
		n = fsync(r->fd);
		break;
	}
	return n < 0 ? -errno : (int)n;
}

static uint64_t iov_bytes(const struct iovec *iov, unsigned n)
{
	uint64_t t = 0;

	for (unsigned i = 0; i < n; i++)
		t += iov[i].iov_len;
	return t;
}

static int run_sync(struct fs_io *q, int *res, unsigned max, const char *what)
{
	int first = 0, cut = 0;

	for (unsigned i = 0; i < q->n_q; i++) {
		const struct fs_req *r = &q->q[i];
		int v = cut ? -ECANCELED : run_one(r);

		/* As io_uring does: a link is cut by an error or a short write. */
		cut = r->link && (v < 0 || (uint64_t)v != iov_bytes(r->iov, r->n));
		if (r->data < max)
			res[r->data] = v;
		else if (!first)
			first = kvmig_err(-EIO, "%s: I/O request %llu of %u", what,
					  (unsigned long long)r->data, max);
	}
	q->n_q = 0;
	return first;
}

int fs_io_run(struct fs_io *q, int *res, unsigned max, const char *what)
{
	if (q->broken)
		return kvmig_err(-EIO, "%s: its io_uring failed earlier; open it again", what);
#ifdef KVMIG_HAVE_URING
	if (q->uring) {
		unsigned submitted = 0, reaped = 0, n = io_uring_sq_ready(&q->ring);
		int ret, first = 0;

		/* Every request is reaped before this returns, whatever happens:
		 * one left in flight would land in a caller's buffer after it
		 * moved on. A signal (EINTR) just waits again. */
		while (submitted < n) {
			ret = io_uring_submit(&q->ring);
			if (ret == -EINTR)
				continue;
			if (ret <= 0) {
				q->broken = 1; /* the rest stay queued */
				first = kvmig_err(ret < 0 ? ret : -EIO, "%s: io_uring submit failed: "
						  "%s", what, strerror(ret < 0 ? -ret : EIO));
				break;
			}
			submitted += (unsigned)ret;
		}
		while (reaped < submitted) {
			struct io_uring_cqe *cqe;
			uint64_t at;

			ret = io_uring_wait_cqe(&q->ring, &cqe);
			if (ret == -EINTR)
				continue;
			if (ret < 0) {
				q->broken = 1;
				return kvmig_err(ret, "%s: io_uring wait failed: %s", what,
						 strerror(-ret));
			}
			at = io_uring_cqe_get_data64(cqe);
			if (at < max)
				res[at] = cqe->res;
			else if (!first)
				first = kvmig_err(-EIO, "%s: io_uring completion for request %llu "
						  "of %u", what, (unsigned long long)at, max);
			io_uring_cqe_seen(&q->ring, cqe);
			reaped++;
		}
		return first;
	}
#endif
	return run_sync(q, res, max, what);
}
