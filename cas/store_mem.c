/* SPDX-License-Identifier: MIT */
/*
 * cas/store_mem.c - a blob store in process memory: open addressing keyed by
 * the digest, blobs copied in on put and out on get. Not thread-safe.
 */
#include <stdlib.h>
#include <string.h>

#include "util/internal.h"
#include "cas/store_internal.h"

struct mem_blob {
	struct kvmig_digest d;
	uint8_t *data; /* NULL: empty slot */
	uint64_t len;
};

struct mem_store {
	struct kvmig_store base;
	struct mem_blob *tab;
	uint64_t cap, count, bytes;
};

static uint64_t slot_of(const struct kvmig_digest *d, uint64_t cap)
{
	uint64_t h;

	memcpy(&h, d->b, sizeof(h));
	return h & (cap - 1);
}

static struct mem_blob *lookup(struct mem_store *m, const struct kvmig_digest *d)
{
	for (uint64_t i = slot_of(d, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (!m->tab[i].data || kvmig_digest_equal(&m->tab[i].d, d))
			return &m->tab[i];
	}
}

static int grow(struct mem_store *m)
{
	struct mem_blob *old = m->tab;
	uint64_t oldcap = m->cap;

	m->tab = calloc(oldcap * 2, sizeof(*m->tab));
	if (!m->tab) {
		m->tab = old;
		return -ENOMEM;
	}
	m->cap = oldcap * 2;
	for (uint64_t i = 0; i < oldcap; i++)
		if (old[i].data)
			*lookup(m, &old[i].d) = old[i];
	free(old);
	return 0;
}

static int mem_put_batch(struct kvmig_store *s, struct kvmig_blob_io *ios, uint32_t n)
{
	struct mem_store *m = kvmig_container_of(s, struct mem_store, base);
	int written = 0, first = 0;

	for (uint32_t i = 0; i < n; i++) {
		struct mem_blob *b;
		uint64_t len = kvmig_iov_total(ios[i].iov, ios[i].iovcnt), off = 0;

		ios[i].result = 0;
		if ((m->count + 1) * 2 > m->cap && grow(m) < 0) {
			ios[i].result = -ENOMEM;
			first = first ? first : -ENOMEM;
			continue;
		}
		b = lookup(m, &ios[i].digest);
		if (b->data)
			continue; /* dedup */
		b->data = malloc(len ? len : 1);
		if (!b->data) {
			ios[i].result = -ENOMEM;
			first = first ? first : -ENOMEM;
			continue;
		}
		for (int j = 0; j < ios[i].iovcnt; j++) {
			memcpy(b->data + off, ios[i].iov[j].iov_base, ios[i].iov[j].iov_len);
			off += ios[i].iov[j].iov_len;
		}
		b->d = ios[i].digest;
		b->len = len;
		m->count++;
		m->bytes += len;
		written++;
	}
	return first ? first : written;
}

static int mem_blob_size(struct kvmig_store *s, const struct kvmig_digest *d, uint64_t *len)
{
	struct mem_store *m = kvmig_container_of(s, struct mem_store, base);
	struct mem_blob *b = lookup(m, d);
	char text[KVMIG_DIGEST_STR_LEN + 1];

	if (!b->data) {
		kvmig_digest_format(d, text);
		return kvmig_err(-ENOENT, "blob %s is not in the memory store", text);
	}
	*len = b->len;
	return 0;
}

static int mem_get_batch(struct kvmig_store *s, struct kvmig_blob_io *ios, uint32_t n)
{
	struct mem_store *m = kvmig_container_of(s, struct mem_store, base);
	int first = 0;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t len = 0, off = 0;
		int ret = mem_blob_size(s, &ios[i].digest, &len);

		if (ret == 0 && len != kvmig_iov_total(ios[i].iov, ios[i].iovcnt))
			ret = kvmig_err(-EMSGSIZE, "blob has %llu bytes but %llu were expected",
					(unsigned long long)len,
					(unsigned long long)kvmig_iov_total(ios[i].iov, ios[i].iovcnt));
		if (ret == 0) {
			const uint8_t *src = lookup(m, &ios[i].digest)->data;

			for (int j = 0; j < ios[i].iovcnt; j++) {
				memcpy(ios[i].iov[j].iov_base, src + off, ios[i].iov[j].iov_len);
				off += ios[i].iov[j].iov_len;
			}
			ret = kvmig_blob_check(&ios[i], "the memory store");
		}
		ios[i].result = ret;
		if (ret < 0 && !first)
			first = ret;
	}
	return first;
}

static int mem_totals(struct kvmig_store *s, uint64_t *bytes, uint64_t *count)
{
	struct mem_store *m = kvmig_container_of(s, struct mem_store, base);

	*bytes = m->bytes;
	*count = m->count;
	return 0;
}

static void mem_close(struct kvmig_store *s)
{
	struct mem_store *m = kvmig_container_of(s, struct mem_store, base);

	for (uint64_t i = 0; m->tab && i < m->cap; i++)
		free(m->tab[i].data);
	free(m->tab);
	free(m);
}

static const struct kvmig_store_ops mem_ops = {
	.put_batch = mem_put_batch,
	.get_batch = mem_get_batch,
	.blob_size = mem_blob_size,
	.totals = mem_totals,
	.close = mem_close,
};

int kvmig_store_mem_create(struct kvmig_store **ret)
{
	struct mem_store *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->base.ops = &mem_ops;
	m->cap = 64;
	m->tab = calloc(m->cap, sizeof(*m->tab));
	if (!m->tab) {
		free(m);
		return -ENOMEM;
	}
	*ret = &m->base;
	return 0;
}
