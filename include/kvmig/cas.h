/* SPDX-License-Identifier: MIT */
/*
 * kvmig/cas.h - content addressing: XXH3-128 digests, the page manifest,
 * blob stores (memory, filesystem) and capture / restore / verify.
 */
#ifndef KVMIG_CAS_H
#define KVMIG_CAS_H

#include <signal.h>
#include <sys/uio.h>

#include <kvmig/common.h>
#include <kvmig/pager.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- digests ---- */

/* XXH3-128 in canonical (big-endian) byte order: the bytes xxhsum -H2 prints. */
struct kvmig_digest {
	uint8_t b[16];
};

/* Text form "xxh128:" + 32 lowercase hex: 39 characters plus NUL. */
#define KVMIG_DIGEST_STR_LEN 39
#define KVMIG_DIGEST_PREFIX "xxh128:"

/* kvmig_digest_compute() - digest of @len bytes at @data. Thread-safe. */
KVMIG_API void kvmig_digest_compute(const void *data, size_t len, struct kvmig_digest *out);
/* kvmig_digest_computev() - digest of the concatenation of @iov[0..@iovcnt). */
KVMIG_API void kvmig_digest_computev(const struct iovec *iov, int iovcnt, struct kvmig_digest *out);
/* kvmig_digest_format() - write the text form into @out (KVMIG_DIGEST_STR_LEN + 1 bytes). */
KVMIG_API void kvmig_digest_format(const struct kvmig_digest *d, char *out);
/* kvmig_digest_hex() - write only the 32 hex characters plus NUL into @out (33 bytes). */
KVMIG_API void kvmig_digest_hex(const struct kvmig_digest *d, char *out);
/*
 * kvmig_digest_parse() - parse "xxh128:<32 lowercase hex>".
 * Return: 0, or -EINVAL (wrong prefix, length, or a non-hex / uppercase digit).
 */
KVMIG_API int kvmig_digest_parse(const char *text, struct kvmig_digest *out);
/* Return: 1 if equal, else 0. */
KVMIG_API int kvmig_digest_equal(const struct kvmig_digest *a, const struct kvmig_digest *b);

/* ---- page manifest ---- */

struct kvmig_manifest_page {
	uint32_t ix;
	struct kvmig_digest k;
	struct kvmig_digest v;
};

/*
 * A page manifest. Owned by whoever built or parsed it; free with
 * kvmig_manifest_free(). Fields may be read directly.
 */
struct kvmig_manifest {
	struct kvmig_page_format format; /* "layout", "order", "compat" in the JSON */
	struct kvmig_cache_meta meta;
	struct kvmig_manifest_page *pages;
	uint32_t n_pages;
	struct kvmig_seq *seqs;
	uint32_t n_seqs;
};

/* kvmig_manifest_free() - free the manifest's arrays and the struct; sets *m NULL. */
KVMIG_API void kvmig_manifest_free(struct kvmig_manifest **m);

/*
 * kvmig_manifest_new() - an empty manifest for @meta / @fmt that
 * kvmig_manifest_add_page / add_seq fill. Return: 0, -EINVAL (a malformed
 * format), or -ENOMEM.
 */
KVMIG_API int kvmig_manifest_new(const struct kvmig_cache_meta *meta,
				 const struct kvmig_page_format *fmt,
				 struct kvmig_manifest **ret);
KVMIG_API int kvmig_manifest_add_page(struct kvmig_manifest *m, uint32_t ix,
				      const struct kvmig_digest *k, const struct kvmig_digest *v);
/* Copies @id and @page_ixs. */
KVMIG_API int kvmig_manifest_add_seq(struct kvmig_manifest *m, const char *id,
				     const uint32_t *page_ixs, uint32_t n_pages,
				     uint32_t fill_in_last_page);

/*
 * kvmig_manifest_canonicalize() - sort pages by ix and sequences by id
 * (bytewise), then check the invariants the parser checks (unique ix, unique
 * id, every referenced page present, fill < page_size_tokens).
 * Return: 0 or -EINVAL with a message naming the problem.
 */
KVMIG_API int kvmig_manifest_canonicalize(struct kvmig_manifest *m);

/*
 * kvmig_manifest_serialize() - canonicalize and write the canonical JSON:
 * keys in fixed order, no whitespace, one trailing newline. Equal manifests
 * give equal bytes, so the digest of this text names the snapshot.
 * Return: 0 with *json (malloc'd, NUL-terminated, caller frees) and *len;
 * -EINVAL (invariants), -ENOMEM.
 */
KVMIG_API int kvmig_manifest_serialize(struct kvmig_manifest *m, char **json, size_t *len);

/*
 * kvmig_manifest_parse() - parse @len bytes strictly: every field present
 * with the right type and range, no unknown fields, the invariants above.
 * Return: 0 and *ret; -EINVAL (invalid JSON, truncated input or a bad field,
 * with a message naming it), -ENOMEM.
 */
KVMIG_API int kvmig_manifest_parse(const char *json, size_t len, struct kvmig_manifest **ret);

/* kvmig_manifest_find_page() - binary search a canonical manifest. Return: index or -ENOENT. */
KVMIG_API int kvmig_manifest_find_page(const struct kvmig_manifest *m, uint32_t ix);

/* ---- blob stores ---- */

struct kvmig_store;

/* One blob of a batch: its digest and the memory it is read into / written from. */
struct kvmig_blob_io {
	struct kvmig_digest digest;
	const struct iovec *iov;
	int iovcnt;
	int result; /* out: 0 or -errno for this blob */
};

/* kvmig_store_mem_create() - a store in process memory. Return: 0 or -ENOMEM. */
KVMIG_API int kvmig_store_mem_create(struct kvmig_store **ret);

struct kvmig_store_fs_opts {
	uint32_t queue_depth; /* I/O requests in flight (io_uring entries); default 64 */
	int fsync;            /* fsync blobs and directories before rename; default 1 */
	int read_only;        /* open an existing store only to read it; default 0 */
	int sync_io;          /* 1: never io_uring, plain synchronous reads and writes
			       * (what a build without liburing, or a kernel that
			       * refuses io_uring, gets anyway); default 0 */
};
KVMIG_API void kvmig_store_fs_opts_init(struct kvmig_store_fs_opts *opts);

/*
 * kvmig_store_fs_open() - open (creating if needed) a filesystem store at
 * @dir: blobs at objects/<first 2 hex>/<remaining 30 hex>, written to
 * tmp/PID.START.SALT.N (the writer's pid, its start time from
 * /proc/PID/stat, a random per-handle salt, a counter) then fsync'ed and
 * renamed. Opening for writing removes the temp files of writers that are
 * dead (no process has that pid, or the one that has it started at another
 * time); a live writer's files and names of another form are left alone.
 * With opts->read_only nothing is created or removed, @dir/objects must
 * exist, and puts fail with -EROFS. @opts may be NULL for defaults.
 * Reads open every blob non-blocking and refuse anything but a regular file.
 * I/O goes through io_uring when the build has liburing and the kernel
 * lets this process use it (not disabled by sysctl or a seccomp filter),
 * else through the same requests run synchronously, with the same results.
 * Return: 0 and *ret; -errno from mkdir/open (-ENOENT: read-only and no
 * objects/); -ENOMEM.
 */
KVMIG_API int kvmig_store_fs_open(const char *dir, const struct kvmig_store_fs_opts *opts,
				  struct kvmig_store **ret);

/* kvmig_store_close() - close and set *s NULL; NULL-safe. */
KVMIG_API void kvmig_store_close(struct kvmig_store **s);

/*
 * kvmig_store_put_batch() - store each blob under its digest. A blob already
 * present is not written again (dedup). The caller vouches that each digest
 * is the digest of its bytes. In a filesystem store a blob counts as present
 * only if its file is a regular file of the right size whose sampled bytes
 * (its first and last 4 KiB and two 4 KiB pieces in between, placed at
 * random per handle) equal the bytes being stored; any other file in its
 * place is replaced, atomically, by a fresh copy.
 * Return: number of blobs newly written (replacements included), or the
 * first -errno (each ios[i].result says which failed; blobs that succeeded
 * stay stored); -EROFS for a store opened read-only.
 */
KVMIG_API int kvmig_store_put_batch(struct kvmig_store *s, struct kvmig_blob_io *ios, uint32_t n);

/*
 * kvmig_store_get_batch() - read each blob into its iovecs, whose total length
 * must equal the blob's, and re-hash it.
 * Return: 0, or the first -errno: -ENOENT (absent), -EMSGSIZE (stored size
 * differs: truncated or wrong blob), -EIO (bytes do not hash to the digest:
 * corrupt; or the blob's file is a FIFO, device, directory or socket, not a
 * regular file). ios[i].result is set for every blob; a message names the
 * first failing digest.
 */
KVMIG_API int kvmig_store_get_batch(struct kvmig_store *s, struct kvmig_blob_io *ios, uint32_t n);

/* Single-blob conveniences over the batch calls. */
KVMIG_API int kvmig_store_put(struct kvmig_store *s, const struct kvmig_digest *d,
			      const void *data, size_t len);
/* Reads a blob of unknown size into a malloc'd buffer (caller frees), verified. */
KVMIG_API int kvmig_store_get_alloc(struct kvmig_store *s, const struct kvmig_digest *d,
				    void **data, size_t *len);
/* Return: 1 if present, 0 if absent, or -errno. */
KVMIG_API int kvmig_store_has(struct kvmig_store *s, const struct kvmig_digest *d);
/* Bytes the store holds (each distinct blob counted once), into *out. */
KVMIG_API int kvmig_store_physical_bytes(struct kvmig_store *s, uint64_t *out);
/* Number of distinct blobs, into *out. */
KVMIG_API int kvmig_store_blob_count(struct kvmig_store *s, uint64_t *out);

/* What kvmig_store_check() found wrong with one entry of a store. */
enum kvmig_store_issue_kind {
	KVMIG_STORE_ISSUE_CORRUPT,     /* a blob whose bytes do not hash to its name */
	KVMIG_STORE_ISSUE_BAD_NAME,    /* an entry under objects/ not named <2 hex>/<30 hex> */
	KVMIG_STORE_ISSUE_NOT_REGULAR, /* a blob that is a FIFO, device, directory or socket */
	KVMIG_STORE_ISSUE_UNREADABLE,  /* a blob that cannot be opened or read */
	KVMIG_STORE_ISSUE_TEMP,        /* a file in tmp/: a write under way, or a dead writer's */
	KVMIG_STORE_ISSUE_UNEXPECTED,  /* anything else at the top of the store directory */
};

/* One entry kvmig_store_check() reports. Valid only during the callback. */
struct kvmig_store_issue {
	enum kvmig_store_issue_kind kind;
	const char *path;                 /* relative to the store: "objects/ab/cd...", "tmp/X" */
	const struct kvmig_digest *digest; /* the blob the entry is named for, or NULL */
	const char *message;              /* one sentence: what is wrong */
	int err;      /* what a read of it fails with (-EIO, -errno of open / read); 0 if not a blob */
	int removed;  /* 1: KVMIG_STORE_CHECK_REPAIR removed it */
};

/* Return 0 to go on; anything else stops the walk and is returned. */
typedef int (*kvmig_store_check_fn)(const struct kvmig_store_issue *issue, void *arg);

struct kvmig_store_check_stats {
	uint64_t blobs;      /* entries under objects/ looked at (blob files and misnamed ones) */
	uint64_t bytes;      /* bytes re-hashed */
	uint64_t bad;        /* entries under objects/ that are not a good blob */
	uint64_t temp;       /* files in tmp/ */
	uint64_t unexpected; /* other entries at the top of the store */
	uint64_t removed;    /* bad blobs removed (KVMIG_STORE_CHECK_REPAIR) */
};

/* Remove each corrupt or non-regular blob file, so that a later capture writes it again. */
#define KVMIG_STORE_CHECK_REPAIR 1u

/*
 * kvmig_store_check() - re-hash every blob of a filesystem store, reading
 * each file in 1 MiB pieces (memory does not grow with the blobs or the
 * store), and call @fn for each entry that is not a good blob: a digest
 * mismatch, a misnamed entry under objects/, a file that is not regular, one
 * that cannot be read; also for each file in tmp/ (message: a live writer's,
 * a dead writer's, or not a kvmig temp name) and each unexpected entry at
 * the top of the store. With KVMIG_STORE_CHECK_REPAIR in @flags corrupt and
 * non-regular blob files (not directories) are removed. @fn may be NULL;
 * @stats (may be NULL) is filled even when the walk stops early.
 * Not thread-safe on one handle; other processes may use the store meanwhile
 * (a blob renamed into place as the walk passes may be missed).
 * Return: 0 when the walk finished, whatever it found (stats->bad says);
 * -EOPNOTSUPP (not a filesystem store), -EROFS (repair on a read-only
 * handle), -errno if objects/ cannot be listed, -ENOMEM, or @fn's value.
 */
KVMIG_API int kvmig_store_check(struct kvmig_store *s, unsigned flags, kvmig_store_check_fn fn,
				void *arg, struct kvmig_store_check_stats *stats);

/* kvmig_store_issue_name() - "corrupt", "bad-name", "not-regular", "unreadable", "temp",
 * "unexpected"; "?" for another value. Thread-safe. */
KVMIG_API const char *kvmig_store_issue_name(enum kvmig_store_issue_kind kind);

/* ---- capture / restore / verify ---- */

/*
 * kvmig_manifest_build() - hash every occupied page of @p (K and V halves)
 * and record its sequences. The caller pauses @p (the bytes must not move).
 * Return: 0 and *ret, or -errno from the pager.
 */
KVMIG_API int kvmig_manifest_build(struct kvmig_pager *p, struct kvmig_manifest **ret);

struct kvmig_capture_stats {
	uint32_t pages;
	uint64_t logical_bytes;  /* page bytes captured (K + V) */
	uint64_t written_bytes;  /* bytes newly written (after dedup), manifest included */
	uint32_t blobs_written;
	uint32_t blobs_deduped;
	uint32_t blobs_repaired; /* of blobs_written: replaced a bad file in the blob's place */
};

/* Options of kvmig_capture_ex() and kvmig_restore_ex(). */
struct kvmig_cas_opts {
	/*
	 * Read between store batches; once nonzero the call stops with
	 * -ECANCELED. Meant to be set from a SIGINT / SIGTERM handler (install
	 * it without SA_RESTART so that waits return early). NULL: never.
	 */
	const volatile sig_atomic_t *cancel;
};

/* kvmig_cas_opts_init() - defaults: no cancel flag. */
KVMIG_API void kvmig_cas_opts_init(struct kvmig_cas_opts *opts);

/*
 * kvmig_capture() - under the pause guard, hash every occupied page, put the
 * K and V halves as separate blobs, put the canonical manifest as a blob, and
 * resume @p (also on failure).
 * @stats may be NULL.
 * Return: 0 and *manifest_digest; -errno from the pager or store.
 */
KVMIG_API int kvmig_capture(struct kvmig_pager *p, struct kvmig_store *s,
			    struct kvmig_digest *manifest_digest, struct kvmig_capture_stats *stats);

/*
 * kvmig_capture_ex() - kvmig_capture() with options (@opts may be NULL).
 * *opts->cancel is read after each batch of 32 pages is stored; once set
 * the capture stops: the pager is resumed, no manifest is written, no temp
 * file is left in the store (the blobs already stored stay: a later
 * capture deduplicates them).
 * Not thread-safe on one store handle.
 * Return: as kvmig_capture(), and -ECANCELED ("interrupted after storing N
 * of M pages").
 */
KVMIG_API int kvmig_capture_ex(struct kvmig_pager *p, struct kvmig_store *s,
			       const struct kvmig_cas_opts *opts, struct kvmig_digest *manifest_digest,
			       struct kvmig_capture_stats *stats);

struct kvmig_restore_stats {
	uint32_t pages;
	uint32_t seqs;
	uint64_t bytes;
};

/*
 * kvmig_restore() - read manifest @manifest_digest from @s, check meta and
 * layout against @p, allocate pages in @p, read and verify every blob into
 * them, remap every sequence to the new indices (shared pages stay shared)
 * and install. Nothing is installed unless every blob was read and verified;
 * on failure every page allocated here is freed again.
 * Return: 0; -ENOENT (manifest or blob absent), -EINVAL (malformed manifest),
 * -EMSGSIZE / -EIO (truncated / corrupt blob), -EPROTO (meta or layout
 * mismatch), -ENOSPC, -EEXIST (a sequence id already installed).
 */
KVMIG_API int kvmig_restore(struct kvmig_pager *p, struct kvmig_store *s,
			    const struct kvmig_digest *manifest_digest,
			    struct kvmig_restore_stats *stats);

/*
 * kvmig_restore_ex() - kvmig_restore() with options (@opts may be NULL).
 * *opts->cancel is read before the pages are allocated and after each
 * batch of 32 pages is read; once set the restore stops as any failure
 * does: nothing is installed and every page allocated here is freed.
 * A cancel that comes after the last batch is read is not seen: the
 * install goes ahead.
 * Not thread-safe on one store handle.
 * Return: as kvmig_restore(), and -ECANCELED ("interrupted after reading N
 * of M pages").
 */
KVMIG_API int kvmig_restore_ex(struct kvmig_pager *p, struct kvmig_store *s,
			       const struct kvmig_cas_opts *opts,
			       const struct kvmig_digest *manifest_digest,
			       struct kvmig_restore_stats *stats);

/* What kvmig_hash_ahead() did. */
struct kvmig_hash_ahead_stats {
	uint32_t pages;   /* pages looked at: those of runnable sequences (and of @ixs) */
	uint32_t fresh;   /* their kept digests were current: nothing to do */
	uint32_t hashed;  /* hashed and kept */
	uint32_t raced;   /* written while hashed: not kept (the next pass retries) */
	uint64_t bytes;   /* bytes hashed */
	uint32_t threads; /* threads that hashed */
	double seconds;
};

/*
 * kvmig_hash_ahead() - digests computed ahead (docs/PROTOCOL.md, "Digests
 * ahead"): for each page of @p's runnable sequences (only those of them in
 * @ixs[0..@n) when @ixs is not NULL: an engine calls this when a block
 * fills), unless the digests @p keeps for it are current, hash its K and V
 * halves and keep the digests with the generation read before hashing, if
 * the generation did not move meanwhile. A migration then hashes only the
 * pages written since. Runs alongside the engine (no pause): a page written
 * during its hashing is left for the next pass. Pages of pending or departed
 * sequences, and pages no sequence uses, are left alone (a receiver may be
 * writing them). @threads hash at once (0 or 1: this thread only; at most
 * 64). @st may be NULL.
 * Return: 0; -ENOTSUP (@p keeps no digests), -EINVAL (threads), or a pager
 * error.
 */
KVMIG_API int kvmig_hash_ahead(struct kvmig_pager *p, const uint32_t *ixs, uint32_t n,
			       uint32_t threads, struct kvmig_hash_ahead_stats *st);

/*
 * kvmig_verify() - check that @p holds every sequence of @m with the same
 * length, fill and page contents (compared by digest, through @p's own page
 * indices). @p should be paused by the caller if an engine is running.
 * Return: 0 when everything matches; -ENOENT (a sequence is missing),
 * -EPROTO (meta / layout / length / fill differs), -EIO (a page's bytes
 * differ), with a message naming the first difference; *mismatches (may be
 * NULL) counts every differing page half.
 */
KVMIG_API int kvmig_verify(struct kvmig_pager *p, const struct kvmig_manifest *m,
			   uint32_t *mismatches);

#ifdef __cplusplus
}
#endif
#endif
