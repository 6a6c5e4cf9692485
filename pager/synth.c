/* SPDX-License-Identifier: MIT */
/*
 * pager/synth.c - the synthetic pager: a KV-cache arena with the real shape
 * (both layouts), deterministic SplitMix64 contents, logical sequences with
 * prefix sharing, page generations, and the migration records that make a
 * migration's outcome outlive its processes.
 *
 * This file is the arena: making, attaching and removing it, page extents
 * and contents, and one step of a decoding engine. The bookkeeping (lock,
 * processes, pages, sequences) is in synth_book.c, the records in
 * synth_records.c; synth_internal.h has the mapping and how it stays
 * consistent when a process dies at any instruction.
 *
 * kvmig_synth_decode() writes a token's K and V slots in a sequence's last
 * page (a new page when that one is full) under the lock, so a pause never
 * lands inside a token, and bumps the page generation after the bytes
 * (pager/decode.c runs it in a thread).
 *
 * Mapping layout (each part 64-byte aligned, data 2 MiB aligned):
 *   (digest[capacity], the digests kept ahead, sits between free_chunks and data)
 *   struct synth_hdr | owner[capacity] u32 | gen[capacity] u64 |
 *   refcnt[capacity] u32 | slots[max_seqs] | chunks[n_chunks] |
 *   free_chunks[n_chunks] u32 | page data
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <kvmig/pager.h>

#include "util/internal.h"
#include "pager/pager_internal.h"
#include "pager/synth_internal.h"

#define DATA_ALIGN (2u << 20)

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

static void bind_parts(struct synth *s)
{
	uint8_t *base = (uint8_t *)s->hdr;

	s->owner = (uint32_t *)(void *)(base + s->hdr->off_owner);
	s->gen = (uint64_t *)(void *)(base + s->hdr->off_gen);
	s->dig = (struct synth_digest *)(void *)(base + s->hdr->off_digest);
	s->refcnt = (uint32_t *)(void *)(base + s->hdr->off_refcnt);
	s->slots = (struct synth_slot *)(void *)(base + s->hdr->off_slots);
	s->chunks = (struct synth_chunk *)(void *)(base + s->hdr->off_chunks);
	s->free_chunks = (uint32_t *)(void *)(base + s->hdr->off_free_chunks);
	s->data = base + s->hdr->off_data;
}

static int layout_sizes(const struct kvmig_synth_opts *o, struct synth_hdr *h)
{
	uint64_t data_bytes, off, refs;
	int ret;

	ret = kvmig_meta_half_bytes(&o->meta, &h->half_bytes);
	if (ret < 0)
		return ret;
	if (!kvmig_layout_name(o->layout))
		return kvmig_err(-EINVAL, "unknown layout %d", (int)o->layout);
	if (o->capacity_pages == 0 || o->capacity_pages > KVMIG_MAX_PAGES)
		return kvmig_err(-EINVAL, "capacity is %u pages; it must be between 1 and %u",
				 o->capacity_pages, KVMIG_MAX_PAGES);
	if (o->n_seqs > KVMIG_MAX_SEQS)
		return kvmig_err(-EINVAL, "%u sequences; at most %u", o->n_seqs, KVMIG_MAX_SEQS);
	h->capacity = o->capacity_pages;
	h->max_seqs = KVMIG_MAX(64u, KVMIG_MIN(o->capacity_pages, 4096u));
	h->max_seqs = KVMIG_MAX(h->max_seqs, o->n_seqs);
	/* Page tables: room for every page referenced by several sequences
	 * (prefix sharing), plus one partly used chunk per sequence. */
	refs = (uint64_t)o->capacity_pages * 4u + 1024u;
	h->n_chunks = (uint32_t)(refs / SYNTH_CHUNK_IXS) + h->max_seqs;
	off = align_up(sizeof(struct synth_hdr), 64);
	h->off_owner = off;
	off = align_up(off + (uint64_t)h->capacity * sizeof(uint32_t), 64);
	h->off_gen = off;
	off = align_up(off + (uint64_t)h->capacity * sizeof(uint64_t), 64);
	h->off_refcnt = off;
	off = align_up(off + (uint64_t)h->capacity * sizeof(uint32_t), 64);
	h->off_slots = off;
	off = align_up(off + (uint64_t)h->max_seqs * sizeof(struct synth_slot), 64);
	h->off_chunks = off;
	off = align_up(off + (uint64_t)h->n_chunks * sizeof(struct synth_chunk), 64);
	h->off_free_chunks = off;
	off = align_up(off + (uint64_t)h->n_chunks * sizeof(uint32_t), 64);
	h->off_digest = off;
	off = align_up(off + (uint64_t)h->capacity * sizeof(struct synth_digest), DATA_ALIGN);
	h->off_data = off;
	if (kvmig_mul_u64(h->half_bytes, 2u * (uint64_t)h->capacity, &data_bytes) ||
	    kvmig_add_u64(off, data_bytes, &h->total_bytes) || h->total_bytes > SIZE_MAX ||
	    h->total_bytes > (uint64_t)INT64_MAX)
		return kvmig_err(-EOVERFLOW, "arena of %u pages of %llu bytes overflows",
				 h->capacity, (unsigned long long)(2 * h->half_bytes));
	return 0;
}

static uint8_t *slab_addr(struct synth *s, uint32_t ix, enum kvmig_half half, uint32_t layer)
{
	const struct synth_hdr *h = s->hdr;

	if (h->layout == KVMIG_LAYOUT_PAGE_MAJOR)
		return s->data + ((uint64_t)ix * 2 + half) * h->half_bytes;
	/* Layer-major: per layer a K tensor then a V tensor, each [capacity][slab]. */
	uint64_t slab = h->half_bytes / h->meta.n_layers;

	return s->data + ((uint64_t)layer * 2 + half) * h->capacity * slab + (uint64_t)ix * slab;
}

static int synth_extents(void *impl, uint32_t ix, enum kvmig_half half, struct kvmig_extent *ext,
			 uint32_t max, uint32_t *n)
{
	struct synth *s = impl;
	uint32_t need;

	if (ix >= s->hdr->capacity || (half != KVMIG_HALF_K && half != KVMIG_HALF_V))
		return kvmig_err(-EINVAL, "page %u is outside the pager (capacity %u)", ix,
				 s->hdr->capacity);
	need = s->hdr->layout == KVMIG_LAYOUT_PAGE_MAJOR ? 1 : s->hdr->meta.n_layers;
	*n = need;
	if (need > max)
		return -ENOBUFS;
	if (need == 1) {
		ext[0] = (struct kvmig_extent){ slab_addr(s, ix, half, 0), s->hdr->half_bytes };
		return 0;
	}
	for (uint32_t l = 0; l < need; l++)
		ext[l] = (struct kvmig_extent){ slab_addr(s, ix, half, l),
						s->hdr->half_bytes / need };
	return 0;
}

static int synth_regions(void *impl, struct kvmig_region *r, uint32_t max, uint32_t *n)
{
	struct synth *s = impl;

	*n = 1;
	if (max < 1)
		return -ENOBUFS;
	r[0] = (struct kvmig_region){ s->data, 2 * s->hdr->half_bytes * s->hdr->capacity };
	return 0;
}

/* @len bytes of the SplitMix64 stream starting at state @st. */
static void splitmix_fill(uint8_t *dst, uint64_t len, uint64_t st)
{
	uint64_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		uint64_t v = kvmig_splitmix64(&st);

		memcpy(dst + i, &v, 8);
	}
	if (i < len) {
		uint64_t v = kvmig_splitmix64(&st);

		memcpy(dst + i, &v, len - i);
	}
}

/*
 * Fill one page from SplitMix64. Each (half, layer) slab has its own stream
 * so the logical bytes of a half are the same in both layouts.
 */
static void fill_page(struct synth *s, uint32_t ix, uint64_t seed, uint64_t stream)
{
	const struct synth_hdr *h = s->hdr;
	uint64_t slab = h->half_bytes / h->meta.n_layers;

	for (uint32_t half = 0; half < 2; half++) {
		for (uint32_t l = 0; l < h->meta.n_layers; l++) {
			uint64_t st = seed ^ (stream * 0xd1b54a32d192ed03ull) ^
				      ((uint64_t)half << 62) ^ ((uint64_t)l * 0x8cb92ba72f3d8dd7ull);
			uint8_t *dst;

			if (h->layout == KVMIG_LAYOUT_PAGE_MAJOR)
				dst = slab_addr(s, ix, half, 0) + l * slab;
			else
				dst = slab_addr(s, ix, half, l);
			splitmix_fill(dst, slab, st);
		}
	}
}

static int synth_meta(void *impl, struct kvmig_cache_meta *meta, enum kvmig_layout *layout)
{
	struct synth *s = impl;

	if (meta)
		*meta = s->hdr->meta;
	if (layout)
		*layout = (enum kvmig_layout)s->hdr->layout;
	return 0;
}

static int synth_generation(void *impl, uint32_t ix, uint64_t *gen)
{
	struct synth *s = impl;

	if (ix >= s->hdr->capacity)
		return kvmig_err(-EINVAL, "page %u is outside the pager (capacity %u)", ix,
				 s->hdr->capacity);
	*gen = __atomic_load_n(&s->gen[ix], __ATOMIC_ACQUIRE);
	return 0;
}

static void synth_destroy(void *impl)
{
	struct synth *s = impl;
	int h;

	if (!s)
		return;
	if (s->registered && synth_lock(s) == 0) {
		if ((h = synth_holder_self(s, 0)) >= 0 && s->hdr->holders[h].attached)
			s->hdr->holders[h].attached--;
		synth_unlock(s);
	}
	if (s->hdr)
		munmap(s->hdr, s->map_len);
	free(s);
}

static int synth_capacity(void *impl, uint32_t *n_pages)
{
	*n_pages = ((struct synth *)impl)->hdr->capacity;
	return 0;
}

static int synth_digest_get(void *impl, uint32_t ix, struct kvmig_page_digest *d)
{
	struct synth *s = impl;
	const struct synth_digest *e;
	uint64_t g1, g2;

	memset(d, 0, sizeof(*d));
	if (ix >= s->hdr->capacity)
		return kvmig_err(-EINVAL, "page %u is out of range (capacity %u)", ix,
				 s->hdr->capacity);
	e = &s->dig[ix];
	g1 = __atomic_load_n(&e->gen, __ATOMIC_ACQUIRE);
	memcpy(d->k, e->k, sizeof(d->k));
	memcpy(d->v, e->v, sizeof(d->v));
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	g2 = __atomic_load_n(&e->gen, __ATOMIC_RELAXED);
	d->gen = g1 == g2 ? g1 : 0; /* torn by a writer: no entry */
	return 0;
}

static int synth_digest_put(void *impl, uint32_t ix, const struct kvmig_page_digest *d)
{
	struct synth *s = impl;
	struct synth_digest *e;
	int ret;

	if (ix >= s->hdr->capacity)
		return kvmig_err(-EINVAL, "page %u is out of range (capacity %u)", ix,
				 s->hdr->capacity);
	if ((ret = synth_lock(s)) < 0)
		return ret;
	e = &s->dig[ix];
	__atomic_store_n(&e->gen, 0, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	memcpy(e->k, d->k, sizeof(e->k));
	memcpy(e->v, d->v, sizeof(e->v));
	__atomic_store_n(&e->gen, d->gen, __ATOMIC_RELEASE);
	synth_unlock(s);
	return 0;
}

const struct kvmig_pager_ops synth_ops = {
	.name = "synthetic",
	.meta = synth_meta,
	.pause = synth_pause,
	.resume = synth_resume,
	.occupied = synth_occupied,
	.seqs = synth_seqs,
	.extents = synth_extents,
	.regions = synth_regions,
	.generation = synth_generation,
	.allocate = synth_allocate,
	.free = synth_free,
	.install = synth_install,
	.remove = synth_remove,
	.identity = synth_identity,
	.record_create = synth_record_create,
	.record_set = synth_record_set,
	.record_tag = synth_record_tag,
	.record_install = synth_record_install,
	.record_end = synth_record_end,
	.record_disown = synth_record_disown,
	.records = synth_records,
	.gc = synth_gc,
	.destroy = synth_destroy,
	.capacity = synth_capacity,
	.digest_get = synth_digest_get,
	.digest_put = synth_digest_put,
};

void kvmig_synth_opts_init(struct kvmig_synth_opts *o)
{
	memset(o, 0, sizeof(*o));
	kvmig_meta_preset("llama3-8b", &o->meta);
	o->layout = KVMIG_LAYOUT_PAGE_MAJOR;
	o->capacity_pages = 64;
	o->seed = 1;
	o->pages_per_seq = 4;
}

static int init_mutex(pthread_mutex_t *m)
{
	pthread_mutexattr_t a;
	int ret;

	pthread_mutexattr_init(&a);
	pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	ret = pthread_mutex_init(m, &a);
	pthread_mutexattr_destroy(&a);
	return -ret;
}

static int check_shm_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > 200 || strchr(name, '/'))
		return kvmig_err(-EINVAL, "shared-memory name \"%s\" must be 1-200 characters "
				 "without '/'", name);
	return 0;
}

static int populate(struct synth *s, const struct kvmig_synth_opts *o)
{
	uint32_t own, total, *ixs = NULL;
	struct kvmig_seq *seqs = NULL;
	char (*ids)[32] = NULL;
	int ret;

	if (o->pages_per_seq == 0 || o->shared_prefix_pages > o->pages_per_seq)
		return kvmig_err(-EINVAL, "shared prefix (%u pages) must not exceed pages per "
				 "sequence (%u), which must be at least 1",
				 o->shared_prefix_pages, o->pages_per_seq);
	if (o->n_seqs == 0)
		return 0; /* an empty pager: no prefix either */
	own = o->pages_per_seq - o->shared_prefix_pages;
	if ((uint64_t)o->n_seqs * own + o->shared_prefix_pages > s->hdr->capacity)
		return kvmig_err(-ENOSPC, "%u sequences of %u pages (%u shared) need %llu pages; "
				 "capacity is %u", o->n_seqs, o->pages_per_seq,
				 o->shared_prefix_pages,
				 (unsigned long long)o->n_seqs * own + o->shared_prefix_pages,
				 s->hdr->capacity);
	total = o->n_seqs * own + o->shared_prefix_pages;
	ixs = malloc(sizeof(*ixs) * (total ? total : 1));
	seqs = calloc(o->n_seqs, sizeof(*seqs));
	ids = calloc(o->n_seqs, sizeof(*ids));
	ret = -ENOMEM;
	if (!ixs || !seqs || !ids)
		goto out;
	for (uint32_t i = 0; i < o->n_seqs; i++) {
		seqs[i].page_ixs = malloc(sizeof(uint32_t) * o->pages_per_seq);
		if (!seqs[i].page_ixs)
			goto out;
	}
	ret = synth_allocate(s, total, ixs);
	if (ret < 0)
		goto out;
	for (uint32_t i = 0; i < total; i++)
		fill_page(s, ixs[i], o->seed, i);
	for (uint32_t i = 0; i < o->n_seqs; i++) {
		struct kvmig_seq *q = &seqs[i];

		snprintf(ids[i], sizeof(ids[i]), "seq-%u", i);
		q->id = ids[i];
		q->n_pages = o->pages_per_seq;
		memcpy(q->page_ixs, ixs, sizeof(uint32_t) * o->shared_prefix_pages);
		memcpy(q->page_ixs + o->shared_prefix_pages,
		       ixs + o->shared_prefix_pages + (uint64_t)i * own, sizeof(uint32_t) * own);
		/* Vary how full the last page is; seq-0 ends on a full page. */
		q->fill_in_last_page = (i * 5u) % o->meta.page_size_tokens;
	}
	ret = synth_install(s, seqs, o->n_seqs);
out:
	for (uint32_t i = 0; seqs && i < o->n_seqs; i++)
		free(seqs[i].page_ixs);
	free(seqs);
	free(ids);
	free(ixs);
	return ret;
}

/* Count this process's handle in its holder entry (pager rm looks), and
 * reclaim what dead processes left: attaching is when that is done. */
static int register_handle(struct synth *s)
{
	int h, ret;

	if ((ret = synth_lock(s)) < 0)
		return ret;
	synth_reap(s, NULL);
	if ((h = synth_holder_self(s, 1)) >= 0) {
		s->hdr->holders[h].attached++;
		s->registered = 1;
	}
	synth_unlock(s);
	return h < 0 ? h : 0;
}

/* /dev/shm is a tmpfs: reserve every page now, so a full one is a clear
 * error here instead of a SIGBUS at some later write. */
static int reserve(int fd, const char *name, uint64_t bytes)
{
	struct statvfs vfs;
	int r = posix_fallocate(fd, 0, (off_t)bytes);

	if (r == 0)
		return 0;
	/* Shared memory is memory: ENOMEM, not ENOSPC (a pager out of pages). */
	if (r == ENOSPC)
		r = ENOMEM;
	if (fstatvfs(fd, &vfs) == 0)
		return kvmig_err(-r, "cannot reserve %llu bytes of shared memory for pager shm:%s: "
				 "%s (/dev/shm has %llu bytes free)", (unsigned long long)bytes,
				 name, r == ENOMEM ? "no space left in /dev/shm" : strerror(r),
				 (unsigned long long)vfs.f_bavail * vfs.f_frsize);
	return kvmig_err(-r, "cannot reserve %llu bytes of shared memory for pager shm:%s: %s",
			 (unsigned long long)bytes, name, strerror(r));
}

int kvmig_synth_create(const struct kvmig_synth_opts *o, struct kvmig_pager **ret)
{
	struct synth_hdr h = { 0 };
	struct synth *s;
	int fd = -1, err;
	void *map;

	err = layout_sizes(o, &h);
	if (err < 0)
		return err;
	if (o->shm_name && (err = check_shm_name(o->shm_name)) < 0)
		return err;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	if (o->shm_name) {
		snprintf(s->name, sizeof(s->name), "shm:%s", o->shm_name);
		fd = shm_open(o->shm_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0) {
			err = -errno;
			kvmig_err(err, "cannot create shared-memory pager \"%s\": %s", o->shm_name,
				  strerror(errno));
			goto err;
		}
		if ((err = reserve(fd, o->shm_name, h.total_bytes)) < 0)
			goto err;
		/* Resident from the start, as an engine's KV arena is: page faults
		 * during a migration cost far more than the copy (see README). */
		map = mmap(NULL, h.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
			   fd, 0);
	} else {
		snprintf(s->name, sizeof(s->name), "in-process pager");
		/* Resident too: on a VM, first touches during a migration cost
		 * far more than the copy (a live round's pages hashed at 0.27
		 * GB/s instead of 12 before this). */
		map = mmap(NULL, h.total_bytes, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_POPULATE, -1, 0);
	}
	if (map == MAP_FAILED) {
		err = -errno;
		kvmig_err(err, "cannot map a %llu-byte pager arena: %s",
			  (unsigned long long)h.total_bytes, strerror(errno));
		goto err;
	}
	s->hdr = map;
	s->map_len = h.total_bytes;
	h.version = SYNTH_VERSION;
	h.layout = o->layout;
	h.meta = o->meta;
	if (getrandom(&h.pager_id, sizeof(h.pager_id), 0) != (ssize_t)sizeof(h.pager_id)) {
		err = kvmig_err(-EIO, "cannot draw a pager identity: %s", strerror(errno));
		goto err;
	}
	memcpy(s->hdr, &h, sizeof(h)); /* magic 0: not a pager until it is whole */
	err = init_mutex(&s->hdr->lock);
	if (err < 0)
		goto err;
	bind_parts(s);
	for (uint32_t c = 0; c < h.n_chunks; c++)
		s->free_chunks[c] = h.n_chunks - 1 - c;
	s->hdr->n_free_chunks = h.n_chunks;
	if ((err = populate(s, o)) < 0 || (err = register_handle(s)) < 0)
		goto err;
	__atomic_store_n(&s->hdr->magic, SYNTH_MAGIC, __ATOMIC_RELEASE);
	err = kvmig_pager_create(&synth_ops, s, ret);
	if (err < 0)
		goto err;
	if (fd >= 0)
		close(fd);
	return 0;
err:
	synth_destroy(s);
	if (fd >= 0) {
		close(fd);
		shm_unlink(o->shm_name);
	}
	return err;
}

/* Map shm:@name and check it is a whole pager of this version. */
static int map_pager(const char *name, struct synth **ret)
{
	struct synth_hdr h;
	struct synth *s = NULL;
	struct stat st;
	void *map;
	int fd, err;

	if ((err = check_shm_name(name)) < 0)
		return err;
	fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
	if (fd < 0) {
		err = -errno;
		return kvmig_err(err, "shm_open(\"%s\"): %s", name, strerror(errno));
	}
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size < sizeof(h) ||
	    pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || h.magic != SYNTH_MAGIC) {
		close(fd);
		return kvmig_err(-EPROTO, "shm:%s is not a kvmig synthetic pager (or its creation "
				 "did not finish)", name);
	}
	if (h.version != SYNTH_VERSION || h.total_bytes != (uint64_t)st.st_size) {
		close(fd);
		return kvmig_err(-EPROTO, "shm:%s has version %u and %llu bytes; expected version "
				 "%u and %llu bytes", name, h.version,
				 (unsigned long long)st.st_size, SYNTH_VERSION,
				 (unsigned long long)h.total_bytes);
	}
	/* Map every page now: one populate is ~20x cheaper than faulting 4 KiB
	 * pages one by one while a migration copies into or out of them. */
	map = mmap(NULL, h.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	err = -errno;
	close(fd);
	if (map == MAP_FAILED)
		return kvmig_err(err, "cannot map pager shm:%s: %s", name, strerror(-err));
	s = calloc(1, sizeof(*s));
	if (!s) {
		munmap(map, h.total_bytes);
		return -ENOMEM;
	}
	s->hdr = map;
	s->map_len = h.total_bytes;
	snprintf(s->name, sizeof(s->name), "shm:%s", name);
	bind_parts(s);
	*ret = s;
	return 0;
}

int kvmig_synth_attach(const char *name, struct kvmig_pager **ret)
{
	struct synth *s = NULL;
	int err;

	if ((err = map_pager(name, &s)) < 0)
		return err;
	if ((err = register_handle(s)) < 0 || (err = kvmig_pager_create(&synth_ops, s, ret)) < 0)
		synth_destroy(s);
	return err;
}

int kvmig_synth_unlink(const char *name)
{
	int err = check_shm_name(name);

	if (err < 0)
		return err;
	if (shm_unlink(name) < 0) {
		err = -errno;
		return kvmig_err(err, "cannot remove pager shm:%s: %s", name, strerror(errno));
	}
	return 0;
}

/* Under the lock: what makes @s busy for kvmig_synth_remove(), into @rep;
 * -EBUSY with the reason, or 0. */
static int in_use(struct synth *s, struct kvmig_synth_remove_report *rep)
{
	struct synth_hdr *h = s->hdr;
	int self = synth_holder_self(s, 0);

	for (uint32_t i = 0; i < SYNTH_MAX_RECORDS; i++)
		rep->records += h->recs[i].state != KVMIG_REC_NONE;
	rep->seqs = h->n_seqs;
	rep->pages = h->n_allocated;
	for (uint32_t i = 0; i < SYNTH_MAX_HOLDERS; i++) {
		const struct synth_holder *o = &h->holders[i];

		if (!o->pid)
			continue;
		if (o->pauses && !rep->paused_by)
			rep->paused_by = (uint32_t)o->pid;
		if (o->attached && (int)i != self && !rep->attached_by)
			rep->attached_by = (uint32_t)o->pid;
	}
	if (rep->paused_by)
		return kvmig_err(-EBUSY, "%s is paused by process %u", s->name, rep->paused_by);
	if (rep->attached_by)
		return kvmig_err(-EBUSY, "%s is in use by process %u (a migration, an engine or "
				 "another kvmig command)", s->name, rep->attached_by);
	if (rep->records)
		return kvmig_err(-EBUSY, "%s holds %u migration record%s whose outcome is not "
				 "applied on both sides (kvmig pager status shows them)", s->name,
				 rep->records, rep->records == 1 ? "" : "s");
	return 0;
}

int kvmig_synth_remove(const char *name, int force, struct kvmig_synth_remove_report *rep)
{
	struct kvmig_synth_remove_report local = { 0 };
	struct synth *s = NULL;
	int ret;

	if (!rep)
		rep = &local;
	memset(rep, 0, sizeof(*rep));
	if ((ret = map_pager(name, &s)) < 0) {
		/* Not a pager (or a half-made one): only --force removes it. */
		if (ret == -ENOENT || ret == -EINVAL || !force)
			return ret;
		return kvmig_synth_unlink(name);
	}
	if ((ret = synth_lock(s)) < 0) {
		if (force && ret == -EBUSY) {
			/* Its lock holder is stopped: what it holds cannot be
			 * read. Mark it removed anyway (one word; the holder
			 * reads it under the lock once it runs again, and again
			 * after storing a destination's step, so a migration into
			 * it still fails before its destination prepares or
			 * activates). Then read the records: a step stored before
			 * the holder could see the mark shows here (see
			 * synth_record_set()) and is reported. */
			rep->locked_by = (uint32_t)__atomic_load_n(&s->hdr->lock_pid,
								   __ATOMIC_RELAXED);
			__atomic_store_n(&s->hdr->removed, 1, __ATOMIC_SEQ_CST);
			for (uint32_t i = 0; i < SYNTH_MAX_RECORDS; i++) {
				const struct synth_rec *rec = &s->hdr->recs[i];

				if (__atomic_load_n(&rec->state, __ATOMIC_SEQ_CST) ==
				    KVMIG_REC_ACTIVATED && rec->role == KVMIG_ROLE_DEST) {
					if (!rep->activated)
						rep->activated_id = rec->id;
					rep->activated++;
				}
			}
			synth_destroy(s);
			return kvmig_synth_unlink(name);
		}
		synth_destroy(s);
		return ret;
	}
	synth_reap(s, NULL);
	ret = in_use(s, rep);
	if (ret == 0 || force) {
		/* A migration still running into it fails before it prepares. */
		s->hdr->removed = 1;
		ret = 0;
	}
	synth_unlock(s);
	if (ret == 0 && (ret = kvmig_synth_unlink(name)) < 0 && synth_lock(s) == 0) {
		s->hdr->removed = 0; /* still there: usable as before */
		synth_unlock(s);
	}
	synth_destroy(s);
	return ret;
}

int kvmig_synth_fill_page(struct kvmig_pager *p, uint32_t ix, uint64_t seed, uint64_t stream)
{
	struct synth *s;
	bool ok;
	int ret;

	if (!p || p->ops != &synth_ops)
		return kvmig_err(-EINVAL, "not a synthetic pager");
	s = p->impl;
	if ((ret = synth_lock(s)) < 0)
		return ret;
	if (s->hdr->pause_depth)
		synth_reap(s, NULL);
	if (s->hdr->pause_depth) {
		synth_unlock(s);
		return -EAGAIN; /* as an engine's write waits for the resume */
	}
	ok = ix < s->hdr->capacity && s->owner[ix] != OWNER_FREE;
	if (ok) {
		/* Under the lock, as kvmig_synth_decode() writes: a pause waits. */
		fill_page(s, ix, seed, stream);
		__atomic_add_fetch(&s->gen[ix], 1, __ATOMIC_RELEASE);
	}
	synth_unlock(s);
	return ok ? 0 : kvmig_err(-EINVAL, "page %u is not allocated", ix);
}

void kvmig_synth_token_bytes(uint64_t seed, const char *seq_id, uint64_t token,
			     enum kvmig_half half, uint32_t layer, void *dst, uint64_t len)
{
	uint64_t st = seed ^ 0x9e3779b97f4a7c15ull;

	for (const char *c = seq_id; *c; c++) /* FNV-1a of the id */
		st = (st ^ (uint8_t)*c) * 0x100000001b3ull;
	st ^= token * 0xd1b54a32d192ed03ull ^ ((uint64_t)half << 62) ^
	      ((uint64_t)layer * 0x8cb92ba72f3d8dd7ull);
	splitmix_fill(dst, len, st);
}

int kvmig_synth_decode(struct kvmig_pager *p, const char *seq_id, uint64_t seed,
		       uint64_t *token)
{
	struct synth *s;
	struct synth_slot *sl;
	uint64_t slab, tb, t;
	uint32_t ix, slot, n, fill;
	int ret;

	if (!p || p->ops != &synth_ops)
		return kvmig_err(-EINVAL, "not a synthetic pager");
	s = p->impl;
	slab = s->hdr->half_bytes / s->hdr->meta.n_layers;
	tb = slab / s->hdr->meta.page_size_tokens;
	if ((ret = synth_lock(s)) < 0)
		return ret;
	if (s->hdr->pause_depth) {
		synth_reap(s, NULL);
		if (s->hdr->pause_depth) {
			synth_unlock(s);
			return -EAGAIN;
		}
	}
	if (!(sl = synth_find_slot(s, seq_id)) || synth_slot_state(s, sl) != KVMIG_SEQ_ACTIVE) {
		synth_unlock(s);
		return kvmig_err(-ENOENT, "sequence \"%s\" is not %s", seq_id,
				 sl ? "runnable here (a migration holds it)" : "installed");
	}
	n = synth_slot_pages(sl);
	fill = synth_slot_fill(sl);
	if (n == 0 || fill == 0) {
		if ((ret = synth_append_page(s, sl)) < 0) {
			synth_unlock(s);
			return ret;
		}
		ix = (uint32_t)ret;
		slot = 0;
		n++;
	} else {
		ix = synth_slot_page(s, sl, n - 1);
		slot = fill;
	}
	t = (uint64_t)(n - 1) * s->hdr->meta.page_size_tokens + slot;
	for (uint32_t half = 0; half < 2; half++)
		for (uint32_t l = 0; l < s->hdr->meta.n_layers; l++) {
			uint8_t *dst = s->hdr->layout == KVMIG_LAYOUT_PAGE_MAJOR ?
				slab_addr(s, ix, half, 0) + l * slab : slab_addr(s, ix, half, l);

			kvmig_synth_token_bytes(seed, seq_id, t, (enum kvmig_half)half, l,
						dst + slot * tb, tb);
		}
	__atomic_add_fetch(&s->gen[ix], 1, __ATOMIC_RELEASE);
	/* One store makes the token (and a new page) the sequence's. */
	synth_set_len(sl, n, (slot + 1) % s->hdr->meta.page_size_tokens);
	synth_unlock(s);
	if (token)
		*token = t;
	return 0;
}

int kvmig_synth_pause_depth(struct kvmig_pager *p, uint32_t *depth)
{
	struct synth *s;
	int ret;

	if (!p || p->ops != &synth_ops)
		return kvmig_err(-EINVAL, "not a synthetic pager");
	s = p->impl;
	if ((ret = synth_lock(s)) < 0)
		return ret;
	synth_reap(s, NULL);
	*depth = s->hdr->pause_depth;
	synth_unlock(s);
	return 0;
}
