/* SPDX-License-Identifier: MIT */
/*
 * cas/store_fs.c - a blob store in a directory:
 *   DIR/objects/<2 hex>/<30 hex>   one file per blob, named by its digest
 *   DIR/tmp/PID.START.SALT.N       blobs being written
 * A put writes a temp file, fsyncs it, renames it into place and fsyncs the
 * shard directory, so a blob under objects/ is always whole. A get re-hashes
 * what it read. Page reads and writes of a batch go through one I/O queue
 * (cas/fs_io.h: io_uring, or the same requests synchronously where io_uring
 * is not built or not allowed), a window of blobs at a time. Not
 * thread-safe: one store handle per thread.
 *
 * What the directory may hold besides good blobs, and what each path does:
 * - Not a regular file where a blob belongs (a FIFO would block a read for
 *   ever): every blob is opened O_NONBLOCK and fstat'ed; a get refuses it
 *   with -EIO naming the file type, a put writes the blob over it.
 * - A blob corrupted in place, same size: a get's re-hash refuses it; a put
 *   compares a few sampled 4 KiB pieces with the bytes it would write and
 *   rewrites the blob if they differ (dedup_window()).
 * - Temp files of a writer killed mid-put: their names carry the writer's
 *   pid and start time, and opening the store for writing removes those
 *   whose writer is gone (sweep_tmp()).
 * - Anything else: kvmig_store_check() re-hashes every blob and lists it.
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cas/fs_io.h"
#include "cas/internal.h"
#include "util/internal.h"
#include "cas/store_internal.h"

/* Blobs per I/O window; bounds the per-window arrays on the stack. */
#define WINDOW_MAX 128u
/* Bytes of one dedup sample, and samples per blob: the start, the end and
 * two places in between. A blob of up to 4 KiB is compared whole. */
#define SAMPLE_BYTES 4096u
#define SAMPLES 4u
/* kvmig_store_check() reads blobs in pieces of this size. */
#define CHECK_CHUNK (1u << 20)

struct fs_store {
	struct kvmig_store base;
	struct kvmig_store_fs_opts opts;
	char *dir;
	int objects_fd, tmp_fd; /* tmp_fd -1: read-only and no tmp/ */
	struct fs_io *io;
	int pid;
	uint64_t start;   /* this process's start time (/proc/self/stat), 0 if unknown */
	uint64_t tmp_counter;
	uint64_t salt;    /* random per handle: temp names, where dedup samples fall */
	uint8_t *samples; /* window() * SAMPLES * SAMPLE_BYTES: a put window's samples */
};

void kvmig_store_fs_opts_init(struct kvmig_store_fs_opts *o)
{
	o->queue_depth = 64;
	o->fsync = 1;
	o->read_only = 0;
	o->sync_io = 0;
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

/* What a file of mode @m is, for messages: "a FIFO", "a directory", ... */
static const char *type_name(mode_t m)
{
	static const struct {
		mode_t type;
		const char *name;
	} types[] = {
		{ S_IFREG, "a regular file" },
		{ S_IFIFO, "a FIFO" },
		{ S_IFDIR, "a directory" },
		{ S_IFCHR, "a character device" },
		{ S_IFBLK, "a block device" },
		{ S_IFSOCK, "a socket" },
		{ S_IFLNK, "a symbolic link" },
	};

	for (size_t i = 0; i < KVMIG_ARRAY_SIZE(types); i++)
		if ((m & S_IFMT) == types[i].type)
			return types[i].name;
	return "of an unknown file type";
}

/*
 * Open @rel under @dirfd for reading, refusing anything but a regular file
 * (a symbolic link is followed to what it names). O_NONBLOCK, so that a
 * FIFO in a blob's place cannot block the open (nor the reads: they are
 * never issued). Return: the fd, in blocking mode again; -EIO with *type
 * naming what the file is instead ("a FIFO"); or the -errno of open / fstat.
 */
static int open_regular(int dirfd, const char *rel, struct stat *st, const char **type)
{
	int fd = openat(dirfd, rel, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC), err;

	*type = NULL;
	if (fd < 0) {
		err = -errno;
		/* A socket cannot be opened at all (ENXIO): still say what it is. */
		if (err != -ENOENT && fstatat(dirfd, rel, st, 0) == 0 && !S_ISREG(st->st_mode)) {
			*type = type_name(st->st_mode);
			return -EIO;
		}
		return err;
	}
	if (fstat(fd, st) < 0) {
		err = -errno;
	} else if (!S_ISREG(st->st_mode)) {
		*type = type_name(st->st_mode);
		err = -EIO;
	} else if (fcntl(fd, F_SETFL, 0) < 0) {
		/* Blocking again: io_uring answers EAGAIN to reads of an O_NONBLOCK
		 * file whose pages are not in the page cache. */
		err = -errno;
	} else {
		return fd;
	}
	close(fd);
	return err;
}

/* Record why blob @d could not be opened (open_regular()'s @err, @type). */
static int open_error(const struct fs_store *f, const struct kvmig_digest *d, int err,
		      const char *type)
{
	char text[KVMIG_DIGEST_STR_LEN + 1];

	kvmig_digest_format(d, text);
	if (type)
		return kvmig_err(err, "blob %s in %s is %s, not a regular file", text, f->dir, type);
	if (err == -ENOENT)
		return kvmig_err(err, "blob %s is not in the store %s", text, f->dir);
	return kvmig_err(err, "cannot open blob %s in %s: %s", text, f->dir, strerror(-err));
}

static int fs_blob_size(struct kvmig_store *s, const struct kvmig_digest *d, uint64_t *len)
{
	struct fs_store *f = kvmig_container_of(s, struct fs_store, base);
	char rel[40];
	struct stat st;

	rel_path(d, rel, sizeof(rel));
	if (fstatat(f->objects_fd, rel, &st, 0) < 0)
		return open_error(f, d, -errno, NULL);
	if (!S_ISREG(st.st_mode))
		return open_error(f, d, -EIO, type_name(st.st_mode));
	*len = (uint64_t)st.st_size;
	return 0;
}

/* Run the @n queued requests; results into @res (indexed by their data,
 * below @max). Every one is done before this returns (cas/fs_io.h). */
static int io_run(struct fs_store *f, unsigned n, int *res, unsigned max)
{
	char what[64];

	(void)n;
	snprintf(what, sizeof(what), "store %.50s", f->dir);
	return fs_io_run(f->io, res, max, what);
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

/* Finish a short transfer synchronously: rare, so no queue round trip. */
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

/* Where a put finds a blob it is about to store (dedup_window()). */
enum found {
	FOUND_NONE, /* nothing by its name: write it */
	FOUND_SAME, /* a regular file of its size, sampled bytes equal: keep it */
	FOUND_BAD,  /* something else by its name: write the blob over it */
};

/* Samples of a @len-byte blob: 1 (it fits one), 2 (start and end cover it) or SAMPLES. */
static unsigned n_samples(uint64_t len)
{
	return len <= SAMPLE_BYTES ? 1 : len <= 2 * SAMPLE_BYTES ? 2 : SAMPLES;
}

/*
 * Offset of sample @j of a @len-byte blob @d: the start, the end, then
 * 4 KiB-aligned places drawn from the handle's salt and the digest, so that
 * another handle (the next capture) looks at other places.
 */
static uint64_t sample_at(const struct fs_store *f, const struct kvmig_digest *d, uint64_t len,
			  unsigned j)
{
	uint64_t last = len - KVMIG_MIN(len, SAMPLE_BYTES), seed;

	if (j == 0)
		return 0;
	if (j == 1)
		return last;
	memcpy(&seed, d->b, sizeof(seed));
	seed ^= f->salt + j;
	return kvmig_splitmix64(&seed) % (last + 1) & ~(uint64_t)(SAMPLE_BYTES - 1);
}

/* Whether the @n bytes at @buf equal @io's bytes from offset @off on. */
static int iov_equal(const struct kvmig_blob_io *io, uint64_t off, const uint8_t *buf, uint64_t n)
{
	for (int j = 0; j < io->iovcnt && n; j++) {
		uint64_t len = io->iov[j].iov_len, take;

		if (off >= len) {
			off -= len;
			continue;
		}
		take = KVMIG_MIN(len - off, n);
		if (memcmp((const uint8_t *)io->iov[j].iov_base + off, buf, take))
			return 0;
		buf += take;
		n -= take;
		off = 0;
	}
	return n == 0;
}

/*
 * Whether each blob of the window is already stored, into @found. Content
 * addressing alone would trust any file of the right size by the right
 * name, and keep a blob corrupted in place for ever (only a restore would
 * notice). A regular file of the right size is opened and sampled pieces of
 * it, read through the I/O queue, are compared with the bytes to store; a whole
 * blob is never read. Return: 0, or -errno if the queue failed.
 */
static int dedup_window(struct fs_store *f, struct kvmig_blob_io *ios, uint32_t n,
			enum found *found)
{
	int fds[WINDOW_MAX], res[WINDOW_MAX * SAMPLES], ret = 0;
	/* Test-only: every sample through the queue, as for a store out of the cache. */
	int cached = !kvmig_fault("store-sample-ring", NULL);
	unsigned q = 0;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t len = kvmig_iov_total(ios[i].iov, ios[i].iovcnt);
		const char *type;
		struct stat st;
		char rel[40];

		rel_path(&ios[i].digest, rel, sizeof(rel));
		fds[i] = open_regular(f->objects_fd, rel, &st, &type);
		if (fds[i] < 0) {
			found[i] = fds[i] == -ENOENT ? FOUND_NONE : FOUND_BAD;
			continue;
		}
		found[i] = FOUND_SAME;
		if ((uint64_t)st.st_size != len) {
			/* A crash before its data reached the disk. */
			found[i] = FOUND_BAD;
			continue;
		}
		for (unsigned j = 0; j < n_samples(len); j++) {
			unsigned at = i * SAMPLES + j;
			struct iovec piece = { f->samples + (size_t)at * SAMPLE_BYTES,
					       (size_t)KVMIG_MIN(len, SAMPLE_BYTES) };
			uint64_t off = sample_at(f, &ios[i].digest, len, j);

			/* From the page cache when it is there (the blob was
			 * written or read lately), with no queue round trip. If it
			 * is not, RWF_NOWAIT has started readahead of it, and the
			 * queue reads the window's missing pieces in parallel. */
			res[at] = cached ? (int)preadv2(fds[i], &piece, 1, (off_t)off, RWF_NOWAIT) : -1;
			if (res[at] == (int)piece.iov_len)
				continue;
			if (q == f->opts.queue_depth) {
				if ((ret = io_run(f, q, res, KVMIG_ARRAY_SIZE(res))) < 0)
					goto out;
				q = 0;
			}
			fs_io_read(f->io, fds[i], piece.iov_base, (uint32_t)piece.iov_len, off, at);
			res[at] = 0;
			q++;
		}
	}
	if (q && (ret = io_run(f, q, res, KVMIG_ARRAY_SIZE(res))) < 0)
		goto out;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t len = kvmig_iov_total(ios[i].iov, ios[i].iovcnt);

		for (unsigned j = 0; found[i] == FOUND_SAME && j < n_samples(len); j++) {
			unsigned at = i * SAMPLES + j;
			uint64_t off = sample_at(f, &ios[i].digest, len, j);
			uint32_t want = (uint32_t)KVMIG_MIN(len, SAMPLE_BYTES);
			uint8_t *buf = f->samples + (size_t)at * SAMPLE_BYTES;
			ssize_t r = res[at];

			while (interrupted((int)r)) { /* redone here, as elsewhere in this file */
				r = pread(fds[i], buf, want, (off_t)off);
				r = r < 0 ? -errno : r;
			}
			if (r != (ssize_t)want || !iov_equal(&ios[i], off, buf, want))
				found[i] = FOUND_BAD;
		}
	}
out:
	for (uint32_t i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return ret;
}

static int put_window(struct fs_store *f, struct kvmig_blob_io *ios, uint32_t n, int *written)
{
	int fds[WINDOW_MAX], res[2 * WINDOW_MAX], first = 0;
	enum found found[WINDOW_MAX];
	char tmpnames[WINDOW_MAX][80];
	uint64_t stall_ms;
	unsigned q = 0;

	for (uint32_t i = 0; i < n; i++) {
		fds[i] = -1;
		ios[i].result = 0;
	}
	if ((first = dedup_window(f, ios, n, found)) < 0) {
		for (uint32_t i = 0; i < n; i++)
			ios[i].result = first;
		return first;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (found[i] == FOUND_SAME)
			continue;
		snprintf(tmpnames[i], sizeof(tmpnames[i]), "%d.%llu.%016llx.%llu", f->pid,
			 (unsigned long long)f->start, (unsigned long long)f->salt,
			 (unsigned long long)f->tmp_counter++);
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
		/* A short write breaks the link: the fsync then completes with
		 * -ECANCELED and is redone after the write is finished. */
		fs_io_writev(f->io, fds[i], ios[i].iov, (unsigned)ios[i].iovcnt, 0, 2 * i,
			     f->opts.fsync);
		res[2 * i] = 0;
		res[2 * i + 1] = 0;
		q++;
		if (f->opts.fsync) {
			fs_io_fsync(f->io, fds[i], 2 * i + 1);
			q++;
		}
	}
	if (q && kvmig_fault("store-write-stall", &stall_ms)) {
		/* Test-only: a writer caught with its temp files open, deaf to
		 * signals as one stuck on a hung filesystem would be. */
		struct timespec ts = { (time_t)(stall_ms / 1000), (long)(stall_ms % 1000) * 1000000 };

		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	if (q && (first = io_run(f, q, res, 2 * WINDOW_MAX)) < 0) {
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
		if (ret < 0) {
			unlinkat(f->tmp_fd, tmpnames[i], 0);
		} else {
			(*written)++;
			f->base.repaired += found[i] == FOUND_BAD;
		}
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

	if (f->opts.read_only) {
		for (uint32_t i = 0; i < n; i++)
			ios[i].result = -EROFS;
		return n ? kvmig_err(-EROFS, "the store %s is open read-only", f->dir) : 0;
	}
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
	int fds[WINDOW_MAX], res[WINDOW_MAX], first = 0, ret;
	/* The first failure's message; later ones would overwrite it. */
	char keep[512] = "";
	unsigned q = 0;

	for (uint32_t i = 0; i < n; i++) {
		char rel[40], text[KVMIG_DIGEST_STR_LEN + 1];
		uint64_t want = kvmig_iov_total(ios[i].iov, ios[i].iovcnt);
		const char *type;
		struct stat st;

		rel_path(&ios[i].digest, rel, sizeof(rel));
		kvmig_digest_format(&ios[i].digest, text);
		ios[i].result = 0;
		fds[i] = open_regular(f->objects_fd, rel, &st, &type);
		if (fds[i] < 0) {
			ios[i].result = open_error(f, &ios[i].digest, fds[i], type);
		} else if ((uint64_t)st.st_size != want) {
			ios[i].result = kvmig_err(-EMSGSIZE, "blob %s has %llu bytes in %s/objects/%s "
						  "but %llu were expected (truncated?)", text,
						  (unsigned long long)st.st_size, f->dir, rel,
						  (unsigned long long)want);
		} else {
			fs_io_readv(f->io, fds[i], ios[i].iov, (unsigned)ios[i].iovcnt, 0, i);
			q++;
		}
		if (ios[i].result < 0 && !first) {
			first = ios[i].result;
			snprintf(keep, sizeof(keep), "%s", kvmig_last_error());
		}
	}
	ret = q ? io_run(f, q, res, WINDOW_MAX) : 0;
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

/*
 * Start time of process @pid: field 22 of /proc/PID/stat, in clock ticks
 * since boot. With the pid it names one process for good: a pid is reused,
 * a (pid, start time) pair is not. Return: 0 and *start; -ESRCH (no such
 * process); another -errno when it cannot be told (no /proc, a process
 * that just exited, one in another pid namespace).
 */
static int proc_start(int pid, uint64_t *start)
{
	char path[32], buf[1024], *p, *end;
	unsigned long long v;
	ssize_t n;
	int fd;

	if (pid <= 0)
		return -EINVAL;
	if (kill(pid, 0) < 0 && errno == ESRCH)
		return -ESRCH;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -errno;
	do
		n = read(fd, buf, sizeof(buf) - 1);
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n <= 0)
		return n < 0 ? -errno : -EPROTO;
	buf[n] = '\0';
	/* "PID (COMM) STATE ...": COMM may hold spaces and ')', so fields are
	 * counted from the last ')'; STATE is field 3. */
	if (!(p = strrchr(buf, ')')))
		return -EPROTO;
	p++;
	for (int field = 3; field < 22; field++) {
		p += strspn(p, " ");
		p += strcspn(p, " ");
	}
	errno = 0;
	v = strtoull(p, &end, 10);
	if (end == p || errno)
		return -EPROTO;
	*start = v;
	return 0;
}

/* A decimal number at @s: the character after it, or NULL. */
static const char *parse_dec(const char *s, unsigned long long *v)
{
	char *end;

	if (*s < '0' || *s > '9')
		return NULL;
	errno = 0;
	*v = strtoull(s, &end, 10);
	return errno ? NULL : end;
}

/* Who wrote a file in tmp/ (tmp_owner()). */
enum tmp_owner {
	TMP_FOREIGN, /* not named PID.START.SALT.N: not ours to judge */
	TMP_LIVE,    /* its writer runs: a put under way */
	TMP_DEAD,    /* its writer is gone: a put that was killed */
	TMP_UNKNOWN, /* the writer's pid exists but its start time cannot be compared */
};

/* Whose temp file @name is; the writer's pid into *pid. */
static enum tmp_owner tmp_owner(const char *name, int *pid)
{
	unsigned long long p, start, now, n;
	const char *s = parse_dec(name, &p);

	if (!s || *s != '.' || p == 0 || p > INT32_MAX || !(s = parse_dec(s + 1, &start)) ||
	    *s != '.' || strspn(s + 1, "0123456789abcdef") != 16 || s[17] != '.' ||
	    !(s = parse_dec(s + 18, &n)) || *s)
		return TMP_FOREIGN;
	*pid = (int)p;
	switch (proc_start((int)p, (uint64_t *)&now)) {
	case 0:
		/* Start 0: its writer could not read its own start time. */
		return start == 0 ? TMP_UNKNOWN : now == start ? TMP_LIVE : TMP_DEAD;
	case -ESRCH:
		return TMP_DEAD;
	default:
		return TMP_UNKNOWN;
	}
}

/*
 * Remove the temp files of dead writers (a capture killed mid-put): the
 * pid in the name names no process, or one that started at another time.
 * A live writer's files (another capture into this store right now), ones
 * whose writer cannot be told, and names of another form stay. Best
 * effort: a failure only leaves files behind.
 */
static void sweep_tmp(struct fs_store *f)
{
	int dfd = openat(f->tmp_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	struct dirent *e;
	int pid;

	if (!d) {
		if (dfd >= 0)
			close(dfd);
		return;
	}
	while ((e = readdir(d)))
		if (tmp_owner(e->d_name, &pid) == TMP_DEAD)
			unlinkat(f->tmp_fd, e->d_name, 0);
	closedir(d);
}

/* ---- kvmig_store_check() ---- */

struct check {
	struct fs_store *f;
	unsigned flags;
	kvmig_store_check_fn fn;
	void *arg;
	struct kvmig_store_check_stats *st;
	struct kvmig_digest_stream *hash;
	uint8_t *buf; /* CHECK_CHUNK */
};

/* Count and hand one issue to the caller; the callback's value. */
static int report(struct check *c, enum kvmig_store_issue_kind kind, const char *path,
		  const struct kvmig_digest *d, int err, int removed, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));

static int report(struct check *c, enum kvmig_store_issue_kind kind, const char *path,
		  const struct kvmig_digest *d, int err, int removed, const char *fmt, ...)
{
	struct kvmig_store_issue is = { kind, path, d, NULL, err, removed };
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	is.message = msg;
	if (kind == KVMIG_STORE_ISSUE_TEMP)
		c->st->temp++;
	else if (kind == KVMIG_STORE_ISSUE_UNEXPECTED)
		c->st->unexpected++;
	else
		c->st->bad++;
	c->st->removed += (uint64_t)removed;
	return c->fn ? c->fn(&is, c->arg) : 0;
}

/* With KVMIG_STORE_CHECK_REPAIR: remove @name (not a directory); 1 if removed. */
static int repair(struct check *c, int dirfd, const char *name)
{
	return (c->flags & KVMIG_STORE_CHECK_REPAIR) && unlinkat(dirfd, name, 0) == 0;
}

/* Hash @fd to its end into *d; the bytes read into *len. 0 or -errno. */
static int hash_file(struct check *c, int fd, struct kvmig_digest *d, uint64_t *len)
{
	ssize_t r;

	*len = 0;
	kvmig_digest_stream_reset(c->hash);
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	while ((r = read(fd, c->buf, CHECK_CHUNK)) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		kvmig_digest_stream_update(c->hash, c->buf, (size_t)r);
		*len += (uint64_t)r;
	}
	kvmig_digest_stream_final(c->hash, d);
	return 0;
}

/* Check the blob file @name of shard @shard (open as @sfd). */
static int check_blob(struct check *c, int sfd, const char *shard, const char *name)
{
	/* Sized for any two names: the compiler cannot see that the caller checked them. */
	char path[600], text[600], got[KVMIG_DIGEST_STR_LEN + 1];
	struct kvmig_digest want, d;
	const char *type;
	struct stat st;
	uint64_t len;
	int fd, ret;

	snprintf(path, sizeof(path), "objects/%s/%s", shard, name);
	snprintf(text, sizeof(text), KVMIG_DIGEST_PREFIX "%s%s", shard, name);
	if (kvmig_digest_parse(text, &want) < 0) /* the caller checked the name */
		return report(c, KVMIG_STORE_ISSUE_BAD_NAME, path, NULL, 0, 0,
			      "not named by a digest");
	c->st->blobs++;
	fd = open_regular(sfd, name, &st, &type);
	if (fd < 0 && type)
		return report(c, KVMIG_STORE_ISSUE_NOT_REGULAR, path, &want, fd,
			      !S_ISDIR(st.st_mode) && repair(c, sfd, name),
			      "blob %s is %s, not a regular file", text, type);
	if (fd < 0)
		return report(c, KVMIG_STORE_ISSUE_UNREADABLE, path, &want, fd, 0,
			      "cannot open blob %s: %s", text, strerror(-fd));
	ret = hash_file(c, fd, &d, &len);
	close(fd);
	c->st->bytes += len;
	if (ret < 0)
		return report(c, KVMIG_STORE_ISSUE_UNREADABLE, path, &want, ret, 0,
			      "cannot read blob %s: %s", text, strerror(-ret));
	if (kvmig_digest_equal(&d, &want))
		return 0;
	kvmig_digest_format(&d, got);
	return report(c, KVMIG_STORE_ISSUE_CORRUPT, path, &want, -EIO, repair(c, sfd, name),
		      "blob %s is corrupt: its %llu bytes hash to %s", text,
		      (unsigned long long)len, got);
}

/* Directory @name under @dirfd, for each_entry(); NULL and errno if it cannot be listed. */
static DIR *open_dir(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;

	if (!d && fd >= 0) {
		int err = errno;

		close(fd);
		errno = err;
	}
	return d;
}

/*
 * Call @visit(c, fd of @d, entry, @arg) for each entry of @d but "." and
 * "..", then close @d. Return: 0, or the first non-zero @visit value.
 */
static int each_entry(struct check *c, DIR *d,
		      int (*visit)(struct check *c, int fd, const char *entry, const void *arg),
		      const void *arg)
{
	struct dirent *e;
	int ret = 0;

	while (ret == 0 && (e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			ret = visit(c, dirfd(d), e->d_name, arg);
	closedir(d);
	return ret;
}

static int visit_blob(struct check *c, int sfd, const char *name, const void *shard)
{
	char path[600];

	if (is_hex(name, 30))
		return check_blob(c, sfd, shard, name);
	c->st->blobs++;
	snprintf(path, sizeof(path), "objects/%s/%s", (const char *)shard, name);
	return report(c, KVMIG_STORE_ISSUE_BAD_NAME, path, NULL, 0, 0,
		      "not named by a digest (30 lowercase hex digits in a shard)");
}

static int visit_shard(struct check *c, int ofd, const char *name, const void *unused)
{
	char path[300];
	struct stat st;
	DIR *d;

	snprintf(path, sizeof(path), "objects/%s", name);
	if (!is_hex(name, 2) || fstatat(ofd, name, &st, 0) < 0 || !S_ISDIR(st.st_mode)) {
		c->st->blobs++;
		return report(c, KVMIG_STORE_ISSUE_BAD_NAME, path, NULL, 0, 0,
			      "not a shard directory (2 lowercase hex digits)");
	}
	if (!(d = open_dir(ofd, name))) {
		int err = errno;

		return report(c, KVMIG_STORE_ISSUE_UNREADABLE, path, NULL, -err, 0,
			      "cannot list shard %s: %s", name, strerror(err));
	}
	return each_entry(c, d, visit_blob, name);
}

static int visit_tmp(struct check *c, int tfd, const char *name, const void *unused)
{
	char path[300];
	int pid = 0;

	snprintf(path, sizeof(path), "tmp/%s", name);
	switch (tmp_owner(name, &pid)) {
	case TMP_LIVE:
		return report(c, KVMIG_STORE_ISSUE_TEMP, path, NULL, 0, 0,
			      "a blob being written by process %d, still running", pid);
	case TMP_DEAD:
		return report(c, KVMIG_STORE_ISSUE_TEMP, path, NULL, 0, 0,
			      "left by process %d, which is gone; the next capture removes it", pid);
	case TMP_UNKNOWN:
		return report(c, KVMIG_STORE_ISSUE_TEMP, path, NULL, 0, 0,
			      "written by process %d, which cannot be told alive or dead", pid);
	default:
		return report(c, KVMIG_STORE_ISSUE_TEMP, path, NULL, 0, 0,
			      "not a kvmig temp file name (PID.START.SALT.N); left alone");
	}
}

static int visit_top(struct check *c, int dfd, const char *name, const void *unused)
{
	if (!strcmp(name, "tmp") && c->f->tmp_fd < 0)
		return report(c, KVMIG_STORE_ISSUE_UNEXPECTED, name, NULL, 0, 0,
			      "not a directory this process can open");
	if (!strcmp(name, "objects") || !strcmp(name, "tmp"))
		return 0;
	return report(c, KVMIG_STORE_ISSUE_UNEXPECTED, name, NULL, 0, 0,
		      "not part of a kvmig store");
}

static int fs_check(struct kvmig_store *s, unsigned flags, kvmig_store_check_fn fn, void *arg,
		    struct kvmig_store_check_stats *st)
{
	struct fs_store *f = kvmig_container_of(s, struct fs_store, base);
	struct check c = { f, flags, fn, arg, st, NULL, NULL };
	DIR *d;
	int ret;

	if ((flags & KVMIG_STORE_CHECK_REPAIR) && f->opts.read_only)
		return kvmig_err(-EROFS, "cannot repair the store %s: it is open read-only", f->dir);
	c.hash = kvmig_digest_stream_new();
	c.buf = malloc(CHECK_CHUNK);
	if (!c.hash || !c.buf) {
		ret = -ENOMEM;
		goto out;
	}
	if (!(d = open_dir(f->objects_fd, "."))) {
		ret = kvmig_err(-errno, "cannot list %s/objects: %s", f->dir, strerror(errno));
		goto out;
	}
	ret = each_entry(&c, d, visit_shard, NULL);
	if (ret == 0 && f->tmp_fd >= 0) {
		if ((d = open_dir(f->tmp_fd, ".")))
			ret = each_entry(&c, d, visit_tmp, NULL);
		else
			ret = report(&c, KVMIG_STORE_ISSUE_UNEXPECTED, "tmp", NULL, 0, 0,
				     "cannot list tmp/: %s", strerror(errno));
	}
	if (ret == 0 && (d = open_dir(AT_FDCWD, f->dir)))
		ret = each_entry(&c, d, visit_top, NULL);
out:
	kvmig_digest_stream_free(&c.hash);
	free(c.buf);
	return ret;
}

static void fs_close(struct kvmig_store *s)
{
	struct fs_store *f = kvmig_container_of(s, struct fs_store, base);

	fs_io_free(&f->io);
	if (f->objects_fd >= 0)
		close(f->objects_fd);
	if (f->tmp_fd >= 0)
		close(f->tmp_fd);
	free(f->samples);
	free(f->dir);
	free(f);
}

static const struct kvmig_store_ops fs_ops = {
	.put_batch = fs_put_batch,
	.get_batch = fs_get_batch,
	.blob_size = fs_blob_size,
	.totals = fs_totals,
	.check = fs_check,
	.close = fs_close,
};

const char *kvmig_store_fs_io(const struct kvmig_store *s)
{
	if (!s || s->ops != &fs_ops)
		return NULL;
	return fs_io_name(kvmig_container_of(s, const struct fs_store, base)->io);
}

/*
 * Open @dir/@sub as a directory into *fd, creating it unless @read_only.
 * Read-only, a missing objects/ is no store at all; a tmp/ that is missing
 * (nothing was ever written) or cannot be opened leaves *fd -1.
 */
static int open_subdir(const char *dir, const char *sub, int read_only, int *fd)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	if (!read_only && mkdir(path, 0755) < 0 && errno != EEXIST)
		return kvmig_err(-errno, "cannot create %s: %s", path, strerror(errno));
	*fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (*fd >= 0 || (read_only && !strcmp(sub, "tmp")))
		return 0; /* reading needs no tmp/; kvmig_store_check() says what is wrong with it */
	if (read_only && errno == ENOENT)
		return kvmig_err(-ENOENT, "no store at %s (no %s)", dir, path);
	return kvmig_err(-errno, "cannot open %s: %s", path, strerror(errno));
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
	/* Temp names carry the pid and its start time (whether their writer
	 * still runs) and a random salt: a second handle of this process, or
	 * a leftover of a dead one, never has the same name. */
	f->pid = (int)getpid();
	if (proc_start(f->pid, &f->start) < 0)
		f->start = 0; /* others then never take our files for a dead writer's */
	if (getrandom(&f->salt, sizeof(f->salt), 0) != (ssize_t)sizeof(f->salt))
		f->salt = (uint64_t)(uintptr_t)f ^ (uint64_t)time(NULL) << 20;
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
	if (!f->opts.read_only && mkdir(dir, 0755) < 0 && errno != EEXIST) {
		err = kvmig_err(-errno, "cannot create store %s: %s", dir, strerror(errno));
		goto err;
	}
	if ((err = open_subdir(dir, "objects", f->opts.read_only, &f->objects_fd)) < 0 ||
	    (err = open_subdir(dir, "tmp", f->opts.read_only, &f->tmp_fd)) < 0)
		goto err;
	if (!f->opts.read_only) {
		f->samples = malloc((size_t)window(f) * SAMPLES * SAMPLE_BYTES);
		if (!f->samples) {
			err = -ENOMEM;
			goto err;
		}
		sweep_tmp(f);
	}
	if ((err = fs_io_new(f->opts.queue_depth, f->opts.sync_io, &f->io)) < 0)
		goto err;
	*ret = &f->base;
	return 0;
err:
	fs_close(&f->base);
	return err;
}
