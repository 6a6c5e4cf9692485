/* SPDX-License-Identifier: MIT */
/*
 * cas/store_fs.c - a blob store in a directory:
 *   DIR/objects/<2 hex>/<30 hex>   one file per blob, named by its digest
 *   DIR/tmp/                       blobs being written
 * A put writes a temp file, fsyncs it, renames it into place and fsyncs the
 * shard directory, so a blob under objects/ is always whole. A get re-hashes
 * what it read. Page reads and writes of a batch go through io_uring, a
 * window of blobs at a time. Not thread-safe: one store handle per thread.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

#include "internal.h"
#include "store_internal.h"

/* Blobs per io_uring window; bounds the per-window arrays on the stack. */
#define WINDOW_MAX 128u

struct fs_store {
	struct kvmig_store base;
	struct kvmig_store_fs_opts opts;
	char *dir;
	int objects_fd, tmp_fd;
	struct io_uring ring;
	int ring_ok;
	int ring_broken; /* a submit or wait failed: requests may be left behind */
	uint64_t tmp_counter;
	uint64_t tmp_salt; /* random per handle: names never meet a leftover's */
};

void kvmig_store_fs_opts_init(struct kvmig_store_fs_opts *o)
{
	o->queue_depth = 64;
	o->fsync = 1;
}

/* "ab" and "cdef..." of a digest. */
static void split_name(const struct kvmig_digest *d, char shard[3], char rest[31])
{
	char hex[33];

	kvmig_digest_hex(d, hex);
	memcpy(shard, hex, 2);
	shard[2] = '\0';
	memcpy(rest, hex + 2, 31);
}

static void rel_path(const struct kvmig_digest *d, char *buf, size_t len)
{
	char shard[3], rest[31];

	split_name(d, shard, rest);
	snprintf(buf, len, "%s/%s", shard, rest);
}

static int fs_blob_size(struct kvmig_store *s, const struct kvmig_digest *d, uint64_t *len)
{
	struct fs_store *f = kvmig_container_of(s, struct fs_store, base);
	char rel[40], text[KVMIG_DIGEST_STR_LEN + 1];
	struct stat st;

	rel_path(d, rel, sizeof(rel));
	if (fstatat(f->objects_fd, rel, &st, 0) < 0) {
		int err = -errno;

		kvmig_digest_format(d, text);
		if (err == -ENOENT)
			return kvmig_err(err, "blob %s is not in the store %s", text, f->dir);
		return kvmig_err(err, "cannot stat blob %s in %s: %s", text, f->dir, strerror(-err));
	}
	*len = (uint64_t)st.st_size;
	return 0;
}

/*
 * Submit and reap @n queued requests; results into @res (indexed by
 * user_data, below @max). Every request is reaped before this returns,
 * whatever happens: a request left in flight would land in a caller's
 * buffer after it moved on, or be taken for the next window's. A signal
 * (EINTR: a handler, a stop and continue) just waits again.
 */
static int ring_run(struct fs_store *f, unsigned n, int *res, unsigned max)
{
	unsigned submitted = 0, reaped = 0;
	int ret = 0, first = 0;

	if (f->ring_broken)
		return kvmig_err(-EIO, "the store %s's io_uring failed earlier; open it again",
				 f->dir);
	while (submitted < n) {
		ret = io_uring_submit(&f->ring);
		if (ret == -EINTR)
			continue;
		if (ret <= 0) {
			f->ring_broken = 1; /* the rest stay queued */
			first = kvmig_err(ret < 0 ? ret : -EIO, "io_uring submit failed: %s",
					  strerror(ret < 0 ? -ret : EIO));
			break;
		}
		submitted += (unsigned)ret;
	}
	while (reaped < submitted) {
		struct io_uring_cqe *cqe;
		uint64_t at;

		ret = io_uring_wait_cqe(&f->ring, &cqe);
		if (ret == -EINTR)
			continue;
		if (ret < 0) {
			/* Nothing else can be done with the ring: later calls fail. */
			f->ring_broken = 1;
			return kvmig_err(ret, "io_uring wait failed: %s", strerror(-ret));
		}
		at = io_uring_cqe_get_data64(cqe);
		if (at < max)
			res[at] = cqe->res;
		else if (!first)
			first = kvmig_err(-EIO, "io_uring completion for request %llu of %u",
					  (unsigned long long)at, max);
		io_uring_cqe_seen(&f->ring, cqe);
		reaped++;
	}
	return first;
}

/*
 * A request that did not run to an answer about the file: a signal while
 * it was issued (EINTR, EAGAIN) or a link cut (ECANCELED). Redone
 * synchronously from the start.
 */
static int interrupted(int res)
{
	return res == -EINTR || res == -EAGAIN || res == -ECANCELED;
}

/* Finish a short transfer synchronously: rare, so no ring round trip. */
static int finish_io(int fd, const struct kvmig_blob_io *io, uint64_t done, int write)
{
	uint64_t total = kvmig_iov_total(io->iov, io->iovcnt);

	while (done < total) {
		uint64_t skip = done;
		int j = 0;

		while (skip >= io->iov[j].iov_len) {
			skip -= io->iov[j].iov_len;
			j++;
		}
		char *p = (char *)io->iov[j].iov_base + skip;
		size_t len = io->iov[j].iov_len - skip;
		ssize_t r = write ? pwrite(fd, p, len, (off_t)done) : pread(fd, p, len, (off_t)done);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EMSGSIZE;
		done += (uint64_t)r;
	}
	return 0;
}

static unsigned window(const struct fs_store *f)
{
	/* A put uses two SQEs per blob (write + fsync). */
	return KVMIG_MIN(KVMIG_MAX(1u, f->opts.queue_depth / 2), WINDOW_MAX);
}

static int put_window(struct fs_store *f, struct kvmig_blob_io *ios, uint32_t n, int *written)
{
	int fds[WINDOW_MAX], res[2 * WINDOW_MAX], first = 0;
	char tmpnames[WINDOW_MAX][64];
	unsigned q = 0;

	for (uint32_t i = 0; i < n; i++) {
		char rel[40];
		struct stat st;

		fds[i] = -1;
		ios[i].result = 0;
		rel_path(&ios[i].digest, rel, sizeof(rel));
		/* Dedup: content-addressed, so a blob of the right size is right
		 * (every read re-hashes); one of another size (a crash before its
		 * data reached the disk) is written again over it. */
		if (fstatat(f->objects_fd, rel, &st, 0) == 0 &&
		    (uint64_t)st.st_size == kvmig_iov_total(ios[i].iov, ios[i].iovcnt))
			continue;
		snprintf(tmpnames[i], sizeof(tmpnames[i]), "%d.%016llx.%llu", (int)getpid(),
			 (unsigned long long)f->tmp_salt, (unsigned long long)f->tmp_counter++);
		fds[i] = openat(f->tmp_fd, tmpnames[i], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fds[i] >= 0 && i == n / 2 && kvmig_fault("store-write", NULL)) {
			/* Test-only: a write that fails after its file exists. */
			close(fds[i]);
			unlinkat(f->tmp_fd, tmpnames[i], 0);
			fds[i] = -1;
			errno = EIO;
		}
		if (fds[i] < 0) {
			ios[i].result = -errno;
			continue;
		}
		struct io_uring_sqe *sqe = io_uring_get_sqe(&f->ring);

		io_uring_prep_writev(sqe, fds[i], ios[i].iov, (unsigned)ios[i].iovcnt, 0);
		io_uring_sqe_set_data64(sqe, 2 * i);
		res[2 * i] = 0;
		res[2 * i + 1] = 0;
		q++;
		if (f->opts.fsync) {
			/* A short write breaks the link: the fsync then completes with
			 * -ECANCELED and is redone after the write is finished. */
			sqe->flags |= IOSQE_IO_LINK;
			sqe = io_uring_get_sqe(&f->ring);
			io_uring_prep_fsync(sqe, fds[i], 0);
			io_uring_sqe_set_data64(sqe, 2 * i + 1);
			q++;
		}
	}
	if (q && (first = ring_run(f, q, res, 2 * WINDOW_MAX)) < 0) {
		for (uint32_t i = 0; i < n; i++) {
			if (fds[i] >= 0) {
				ios[i].result = first;
				unlinkat(f->tmp_fd, tmpnames[i], 0);
			}
		}
		goto out;
	}
	for (uint32_t i = 0; i < n; i++) {
		char shard[3], rest[31];
		int ret;

		if (fds[i] < 0)
			continue;
		ret = interrupted(res[2 * i]) ? 0 : res[2 * i];
		if (ret >= 0 && (uint64_t)ret < kvmig_iov_total(ios[i].iov, ios[i].iovcnt)) {
			ret = finish_io(fds[i], &ios[i], (uint64_t)ret, 1);
			if (ret == 0 && f->opts.fsync)
				ret = fsync(fds[i]) < 0 ? -errno : 0;
		} else if (ret >= 0) {
			ret = f->opts.fsync ? res[2 * i + 1] : 0;
			if (interrupted(ret))
				ret = fsync(fds[i]) < 0 ? -errno : 0;
		}
		split_name(&ios[i].digest, shard, rest);
		if (ret == 0 && mkdirat(f->objects_fd, shard, 0755) < 0 && errno != EEXIST)
			ret = -errno;
		if (ret == 0) {
			char rel[40];

			snprintf(rel, sizeof(rel), "%s/%s", shard, rest);
			if (renameat(f->tmp_fd, tmpnames[i], f->objects_fd, rel) < 0)
				ret = -errno;
		}
		if (ret < 0)
			unlinkat(f->tmp_fd, tmpnames[i], 0);
		else
			(*written)++;
		if (ret == 0 && f->opts.fsync) {
			int dfd = openat(f->objects_fd, shard, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

			if (dfd >= 0) {
				fsync(dfd);
				close(dfd);
			}
		}
		ios[i].result = ret;
	}
out:
	for (uint32_t i = 0; i < n; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		if (ios[i].result < 0 && !first) {
			char text[KVMIG_DIGEST_STR_LEN + 1];

			kvmig_digest_format(&ios[i].digest, text);
			first = kvmig_err(ios[i].result, "cannot write blob %s into %s: %s", text,
					  f->dir, strerror(-ios[i].result));
		}
	}
	return first;
}

static int fs_put_batch(struct kvmig_store *s, struct kvmig_blob_io *ios, uint32_t n)
{
	struct fs_store *f = kvmig_container_of(s, struct fs_store, base);
	int written = 0, first = 0;

	for (uint32_t base = 0; base < n; base += window(f)) {
		int ret = put_window(f, ios + base, KVMIG_MIN(window(f), n - base), &written);

		if (ret < 0 && !first)
			first = ret;
	}
	if (!first && f->opts.fsync)
		fsync(f->objects_fd);
	return first ? first : written;
}

static int get_window(struct fs_store *f, struct kvmig_blob_io *ios, uint32_t n)
{
	int fds[WINDOW_MAX], res[WINDOW_MAX], first = 0;
	unsigned q = 0;

	for (uint32_t i = 0; i < n; i++) {
		char rel[40], text[KVMIG_DIGEST_STR_LEN + 1];
		uint64_t want = kvmig_iov_total(ios[i].iov, ios[i].iovcnt);
		struct stat st;

		rel_path(&ios[i].digest, rel, sizeof(rel));
		kvmig_digest_format(&ios[i].digest, text);
		ios[i].result = 0;
		fds[i] = openat(f->objects_fd, rel, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0) {
			ios[i].result = -errno;
			if (errno == ENOENT)
				kvmig_err(-ENOENT, "blob %s is not in the store %s", text, f->dir);
			else
				kvmig_err(-errno, "cannot open blob %s in %s: %s", text, f->dir,
					  strerror(errno));
		} else if (fstat(fds[i], &st) < 0) {
			ios[i].result = kvmig_err(-errno, "cannot stat blob %s", text);
		} else if ((uint64_t)st.st_size != want) {
			ios[i].result = kvmig_err(-EMSGSIZE, "blob %s has %llu bytes in %s/objects/%s "
						  "but %llu were expected (truncated?)", text,
						  (unsigned long long)st.st_size, f->dir, rel,
						  (unsigned long long)want);
		} else {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&f->ring);

			io_uring_prep_readv(sqe, fds[i], ios[i].iov, (unsigned)ios[i].iovcnt, 0);
			io_uring_sqe_set_data64(sqe, i);
			q++;
		}
		if (ios[i].result < 0 && !first)
			first = ios[i].result;
	}
	{
		/* Keep the first message; later ones would overwrite it. */
		char keep[512];

		snprintf(keep, sizeof(keep), "%s", kvmig_last_error());
		int ret = q ? ring_run(f, q, res, WINDOW_MAX) : 0;

		if (ret < 0) {
			for (uint32_t i = 0; i < n; i++)
				if (ios[i].result == 0)
					ios[i].result = ret;
			first = ret;
			goto out;
		}
		for (uint32_t i = 0; i < n; i++) {
			char rel[40], where[600];

			if (ios[i].result < 0)
				continue;
			ret = interrupted(res[i]) ? 0 : res[i];
			if (ret >= 0)
				ret = finish_io(fds[i], &ios[i], (uint64_t)ret, 0);
			rel_path(&ios[i].digest, rel, sizeof(rel));
			snprintf(where, sizeof(where), "%s/objects/%s", f->dir, rel);
			if (ret == 0)
				ret = kvmig_blob_check(&ios[i], where);
			else
				ret = kvmig_err(ret, "cannot read %s: %s", where,
						ret == -EMSGSIZE ? "file shrank (truncated?)" :
								   strerror(-ret));
			ios[i].result = ret;
			if (ret < 0 && !first) {
				first = ret;
				snprintf(keep, sizeof(keep), "%s", kvmig_last_error());
			}
		}
		if (first)
			kvmig_err(first, "%s", keep);
	}
out:
	for (uint32_t i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return first;
}

static int fs_get_batch(struct kvmig_store *s, struct kvmig_blob_io *ios, uint32_t n)
{
	struct fs_store *f = kvmig_container_of(s, struct fs_store, base);
	int first = 0;

	for (uint32_t base = 0; base < n; base += window(f)) {
		int ret = get_window(f, ios + base, KVMIG_MIN(window(f), n - base));

		if (ret < 0 && !first)
			first = ret;
	}
	return first;
}

static int is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[n] == '\0';
}

static int fs_totals(struct kvmig_store *s, uint64_t *bytes, uint64_t *count)
{
	struct fs_store *f = kvmig_container_of(s, struct fs_store, base);
	int dfd = openat(f->objects_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *top = dfd >= 0 ? fdopendir(dfd) : NULL;
	struct dirent *e;

	*bytes = *count = 0;
	if (!top) {
		if (dfd >= 0)
			close(dfd);
		return kvmig_err(-errno, "cannot list %s/objects", f->dir);
	}
	while ((e = readdir(top))) {
		int sfd;
		DIR *sub;
		struct dirent *b;

		if (!is_hex(e->d_name, 2))
			continue;
		sfd = openat(f->objects_fd, e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		sub = sfd >= 0 ? fdopendir(sfd) : NULL;
		if (!sub) {
			if (sfd >= 0)
				close(sfd);
			continue;
		}
		while ((b = readdir(sub))) {
			struct stat st;

			if (is_hex(b->d_name, 30) && fstatat(sfd, b->d_name, &st, 0) == 0 &&
			    S_ISREG(st.st_mode)) {
				*bytes += (uint64_t)st.st_size;
				(*count)++;
			}
		}
		closedir(sub);
	}
	closedir(top);
	return 0;
}

static void fs_close(struct kvmig_store *s)
{
	struct fs_store *f = kvmig_container_of(s, struct fs_store, base);

	if (f->ring_ok)
		io_uring_queue_exit(&f->ring);
	if (f->objects_fd >= 0)
		close(f->objects_fd);
	if (f->tmp_fd >= 0)
		close(f->tmp_fd);
	free(f->dir);
	free(f);
}

static const struct kvmig_store_ops fs_ops = {
	.put_batch = fs_put_batch,
	.get_batch = fs_get_batch,
	.blob_size = fs_blob_size,
	.totals = fs_totals,
	.close = fs_close,
};

static int open_subdir(const char *dir, const char *sub, int *fd)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return kvmig_err(-errno, "cannot create %s: %s", path, strerror(errno));
	*fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (*fd < 0)
		return kvmig_err(-errno, "cannot open %s: %s", path, strerror(errno));
	return 0;
}

int kvmig_store_fs_open(const char *dir, const struct kvmig_store_fs_opts *opts,
			struct kvmig_store **ret)
{
	struct fs_store *f;
	int err;

	if (!dir || !*dir || strlen(dir) > 3000)
		return kvmig_err(-EINVAL, "store directory name is empty or too long");
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->base.ops = &fs_ops;
	f->objects_fd = f->tmp_fd = -1;
	/* A killed writer leaves tmp/PID.SALT.N behind; a later process with the
	 * same pid (in a container: pid 1 every time) or a second handle must
	 * not collide with it. */
	if (getrandom(&f->tmp_salt, sizeof(f->tmp_salt), 0) != (ssize_t)sizeof(f->tmp_salt))
		f->tmp_salt = (uint64_t)(uintptr_t)f ^ (uint64_t)time(NULL) << 20;
	if (opts)
		f->opts = *opts;
	else
		kvmig_store_fs_opts_init(&f->opts);
	if (f->opts.queue_depth < 2)
		f->opts.queue_depth = 2;
	if (f->opts.queue_depth > 2 * WINDOW_MAX)
		f->opts.queue_depth = 2 * WINDOW_MAX;
	f->dir = strdup(dir);
	if (!f->dir) {
		err = -ENOMEM;
		goto err;
	}
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		err = kvmig_err(-errno, "cannot create store %s: %s", dir, strerror(errno));
		goto err;
	}
	if ((err = open_subdir(dir, "objects", &f->objects_fd)) < 0 ||
	    (err = open_subdir(dir, "tmp", &f->tmp_fd)) < 0)
		goto err;
	err = io_uring_queue_init(f->opts.queue_depth, &f->ring, 0);
	if (err < 0) {
		kvmig_err(err, "cannot set up io_uring: %s", strerror(-err));
		goto err;
	}
	f->ring_ok = 1;
	*ret = &f->base;
	return 0;
err:
	fs_close(&f->base);
	return err;
}
