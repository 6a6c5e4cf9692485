/* SPDX-License-Identifier: MIT */
/* cas/store.c - the public blob-store calls, dispatched to a backend. */
#include <stdlib.h>
#include <string.h>

#include "util/internal.h"
#include "cas/store_internal.h"

uint64_t kvmig_iov_total(const struct iovec *iov, int iovcnt)
{
	uint64_t t = 0;

	for (int i = 0; i < iovcnt; i++)
		t += iov[i].iov_len;
	return t;
}

int kvmig_blob_check(const struct kvmig_blob_io *io, const char *where)
{
	char want[KVMIG_DIGEST_STR_LEN + 1], got[KVMIG_DIGEST_STR_LEN + 1];
	struct kvmig_digest d;

	kvmig_digest_computev(io->iov, io->iovcnt, &d);
	if (kvmig_digest_equal(&d, &io->digest))
		return 0;
	kvmig_digest_format(&io->digest, want);
	kvmig_digest_format(&d, got);
	return kvmig_err(-EIO, "blob %s in %s is corrupt: its bytes hash to %s", want, where, got);
}

void kvmig_store_close(struct kvmig_store **s)
{
	if (s && *s) {
		(*s)->ops->close(*s);
		*s = NULL;
	}
}

int kvmig_store_put_batch(struct kvmig_store *s, struct kvmig_blob_io *ios, uint32_t n)
{
	return s->ops->put_batch(s, ios, n);
}

int kvmig_store_get_batch(struct kvmig_store *s, struct kvmig_blob_io *ios, uint32_t n)
{
	return s->ops->get_batch(s, ios, n);
}

int kvmig_store_put(struct kvmig_store *s, const struct kvmig_digest *d, const void *data,
		    size_t len)
{
	struct iovec iov = { (void *)data, len };
	struct kvmig_blob_io io = { .digest = *d, .iov = &iov, .iovcnt = 1 };

	return kvmig_store_put_batch(s, &io, 1);
}

int kvmig_store_get_alloc(struct kvmig_store *s, const struct kvmig_digest *d, void **data,
			  size_t *len)
{
	struct kvmig_blob_io io = { .digest = *d, .iovcnt = 1 };
	struct iovec iov;
	uint64_t size;
	int ret = s->ops->blob_size(s, d, &size);

	if (ret < 0)
		return ret;
	if (size > SIZE_MAX - 1)
		return kvmig_err(-EFBIG, "blob is too large to load (%llu bytes)",
				 (unsigned long long)size);
	iov.iov_base = malloc(size ? size : 1);
	iov.iov_len = size;
	if (!iov.iov_base)
		return -ENOMEM;
	io.iov = &iov;
	ret = kvmig_store_get_batch(s, &io, 1);
	if (ret < 0) {
		free(iov.iov_base);
		return ret;
	}
	*data = iov.iov_base;
	*len = size;
	return 0;
}

int kvmig_store_has(struct kvmig_store *s, const struct kvmig_digest *d)
{
	uint64_t len;
	int ret = s->ops->blob_size(s, d, &len);

	if (ret == -ENOENT) {
		kvmig_clear_error();
		return 0;
	}
	return ret < 0 ? ret : 1;
}

int kvmig_store_physical_bytes(struct kvmig_store *s, uint64_t *out)
{
	uint64_t count;

	return s->ops->totals(s, out, &count);
}

int kvmig_store_blob_count(struct kvmig_store *s, uint64_t *out)
{
	uint64_t bytes;

	return s->ops->totals(s, &bytes, out);
}

int kvmig_store_check(struct kvmig_store *s, unsigned flags, kvmig_store_check_fn fn, void *arg,
		      struct kvmig_store_check_stats *stats)
{
	struct kvmig_store_check_stats local;
	struct kvmig_store_check_stats *st = stats ? stats : &local;

	memset(st, 0, sizeof(*st));
	if (!s->ops->check)
		return kvmig_err(-EOPNOTSUPP, "only a filesystem store can be checked");
	return s->ops->check(s, flags, fn, arg, st);
}

const char *kvmig_store_issue_name(enum kvmig_store_issue_kind kind)
{
	static const char *const names[] = {
		[KVMIG_STORE_ISSUE_CORRUPT] = "corrupt",
		[KVMIG_STORE_ISSUE_BAD_NAME] = "bad-name",
		[KVMIG_STORE_ISSUE_NOT_REGULAR] = "not-regular",
		[KVMIG_STORE_ISSUE_UNREADABLE] = "unreadable",
		[KVMIG_STORE_ISSUE_TEMP] = "temp",
		[KVMIG_STORE_ISSUE_UNEXPECTED] = "unexpected",
	};

	return (unsigned)kind < KVMIG_ARRAY_SIZE(names) ? names[kind] : "?";
}
