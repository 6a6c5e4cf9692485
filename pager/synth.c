/* SPDX-License-Identifier: MIT */
/*
 * pager/synth.c - the synthetic pager: a KV-cache arena with the real shape
 * (both layouts), deterministic SplitMix64 contents, logical sequences with
 * prefix sharing, and page generations.
 *
 * Everything, bookkeeping included, lives in one mapping: anonymous memory,
 * or a POSIX shared-memory object ("shm:NAME") that other processes attach
 * to. A process-shared robust mutex in the header guards the bookkeeping;
 * page bytes are written only by the owner of the pages (the engine, or a
 * migration into freshly allocated pages).
 *
 * kvmig_synth_decode() is one step of a decoding engine: it writes a
 * token's K and V slots in a sequence's last page (a new page when that one
 * is full) under the lock, so a pause never lands inside a token, and bumps
 * the page generation after the bytes (pager/decode.c runs it in a thread).
 *
 * Mapping layout (each part 64-byte aligned, data 2 MiB aligned):
 *   struct synth_hdr | alloc[capacity] u8 | gen[capacity] u64 |
 *   slots[max_seqs] struct synth_slot | refs[ref_cap] u32 | page data
 */
#include <fcntl.h>
#include <signal.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kvmig/pager.h>

#include "internal.h"
#include "pager_internal.h"

#define SYNTH_MAGIC 0x31595347494d564bull /* "KVMIGSY1" little-endian */
#define SYNTH_VERSION 3u
#define MAX_PAUSERS 32u /* processes holding a pause at the same time */
#define DATA_ALIGN (2u << 20)

struct synth_slot {
	char id[KVMIG_SEQ_ID_MAX + 1];
	uint32_t n_pages;
	uint32_t fill;
	uint32_t ref_off; /* first entry in refs[] */
};

struct synth_hdr {
	uint64_t magic;
	uint32_t version;
	uint32_t layout;
	struct kvmig_cache_meta meta;
	uint32_t capacity;
	uint32_t max_seqs;
	uint32_t ref_cap;
	uint64_t half_bytes;
	uint64_t off_alloc, off_gen, off_slots, off_refs, off_data;
	uint64_t total_bytes;
	pthread_mutex_t lock;
	/* Guarded by lock. */
	uint32_t pause_depth;
	/* Who holds the pauses: a process that dies paused (a SIGKILLed
	 * sender) has its pauses dropped by the next look (reap_pausers). A
	 * process is its pid and its start time (in clock ticks), so a pid the
	 * kernel hands to a new process does not keep a dead holder's pauses. */
	int32_t pauser_pid[MAX_PAUSERS];
	uint64_t pauser_start[MAX_PAUSERS];
	uint32_t pauser_depth[MAX_PAUSERS];
	uint32_t n_seqs;
	uint32_t refs_used;
	uint32_t n_allocated;
};

struct synth {
	struct synth_hdr *hdr;
	uint64_t map_len;
	uint8_t *alloc;
	uint64_t *gen;
	struct synth_slot *slots;
	uint32_t *refs;
	uint8_t *data;
};

static const struct kvmig_pager_ops synth_ops;

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

static void bind_parts(struct synth *s)
{
	uint8_t *base = (uint8_t *)s->hdr;

	s->alloc = base + s->hdr->off_alloc;
	s->gen = (uint64_t *)(void *)(base + s->hdr->off_gen);
	s->slots = (struct synth_slot *)(void *)(base + s->hdr->off_slots);
	s->refs = (uint32_t *)(void *)(base + s->hdr->off_refs);
	s->data = base + s->hdr->off_data;
}

static void lock(struct synth *s)
{
	/* Robust: a process that died holding the lock must not wedge the pager.
	 * It may have died inside an update: the allocation count is recounted
	 * from the flags (the loops below never trust it for bounds); a death
	 * in the middle of moving page tables (install / remove / a decode
	 * that appends a page) can leave them wrong, which is not repaired. */
	if (pthread_mutex_lock(&s->hdr->lock) == EOWNERDEAD) {
		uint32_t n = 0;

		for (uint32_t i = 0; i < s->hdr->capacity; i++)
			n += s->alloc[i] != 0;
		s->hdr->n_allocated = n;
		pthread_mutex_consistent(&s->hdr->lock);
	}
}

static void unlock(struct synth *s)
{
	pthread_mutex_unlock(&s->hdr->lock);
}

static int layout_sizes(const struct kvmig_synth_opts *o, struct synth_hdr *h)
{
	uint64_t data_bytes, off;
	int ret;

	ret = kvmig_meta_half_bytes(&o->meta, &h->half_bytes);
	if (ret < 0)
		return ret;
	if (!kvmig_layout_name(o->layout))
		return kvmig_err(-EINVAL, "unknown layout %d", (int)o->layout);
	if (o->capacity_pages == 0 || o->capacity_pages > KVMIG_MAX_PAGES)
		return kvmig_err(-EINVAL, "capacity is %u pages; it must be between 1 and %u",
				 o->capacity_pages, KVMIG_MAX_PAGES);
	h->capacity = o->capacity_pages;
	h->max_seqs = KVMIG_MAX(64u, KVMIG_MIN(o->capacity_pages, 4096u));
	h->max_seqs = KVMIG_MAX(h->max_seqs, o->n_seqs);
	/* Room for every page referenced by several sequences (prefix sharing). */
	h->ref_cap = o->capacity_pages * 4u + 1024u;
	off = align_up(sizeof(struct synth_hdr), 64);
	h->off_alloc = off;
	off = align_up(off + h->capacity, 64);
	h->off_gen = off;
	off = align_up(off + (uint64_t)h->capacity * sizeof(uint64_t), 64);
	h->off_slots = off;
	off = align_up(off + (uint64_t)h->max_seqs * sizeof(struct synth_slot), 64);
	h->off_refs = off;
	off = align_up(off + (uint64_t)h->ref_cap * sizeof(uint32_t), DATA_ALIGN);
	h->off_data = off;
	if (kvmig_mul_u64(h->half_bytes, 2u * (uint64_t)h->capacity, &data_bytes) ||
	    kvmig_add_u64(off, data_bytes, &h->total_bytes) || h->total_bytes > SIZE_MAX)
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

/*
 * When process @pid started (clock ticks after boot: field 22 of
 * /proc/PID/stat, read after the command name, which may hold spaces or
 * parentheses); 0 when it is gone, 1 when it exists but /proc cannot say
 * when it started. A zombie still holds: a process whose main thread has
 * exited shows as one while its other threads run (a sender, say).
 */
static uint64_t process_start(int32_t pid)
{
	char path[32], buf[1024], *p;
	unsigned long long start;
	ssize_t n;
	int fd;

	if (kill(pid, 0) < 0 && errno == ESRCH)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 1;
	buf[n] = '\0';
	if (!(p = strrchr(buf, ')')))
		return 1;
	/* ") state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
	 * cmajflt utime stime cutime cstime priority nice num_threads
	 * itrealvalue starttime": 19 fields after the state. */
	if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d "
		   "%*d %*d %*d %llu", &start) != 1)
		return 1;
	return start + 2; /* never 0 or 1 */
}

/* Whether start times @a and @b (process_start) can be the same process. */
static bool same_start(uint64_t a, uint64_t b)
{
	return a == 1 || b == 1 || a == b;
}

/*
 * Under the lock: drop the pauses of processes that no longer exist: gone,
 * or their pid now names a process that started since (this one included:
 * a slot with our pid and another start time is a dead predecessor's).
 */
static void reap_pausers(struct synth *s)
{
	struct synth_hdr *h = s->hdr;

	for (uint32_t i = 0; i < MAX_PAUSERS; i++) {
		if (!h->pauser_depth[i])
			continue;
		uint64_t start = process_start(h->pauser_pid[i]);

		if (start == 0 || !same_start(start, h->pauser_start[i])) {
			h->pause_depth -= h->pauser_depth[i];
			h->pauser_depth[i] = 0;
		}
	}
}

/* Under the lock: this process's pause slot (a free one if @make), or NULL. */
static uint32_t *pauser_slot(struct synth *s, int make)
{
	struct synth_hdr *h = s->hdr;
	int32_t me = (int32_t)getpid();
	uint64_t my_start = process_start(me);

	for (uint32_t i = 0; i < MAX_PAUSERS; i++)
		if (h->pauser_depth[i] && h->pauser_pid[i] == me &&
		    same_start(h->pauser_start[i], my_start))
			return &h->pauser_depth[i];
	for (uint32_t i = 0; make && i < MAX_PAUSERS; i++) {
		if (!h->pauser_depth[i]) {
			h->pauser_pid[i] = me;
			h->pauser_start[i] = my_start;
			return &h->pauser_depth[i];
		}
	}
	return NULL;
}

static int synth_pause(void *impl)
{
	struct synth *s = impl;
	uint32_t *mine;
	int ret = 0;

	lock(s);
	reap_pausers(s);
	if (!(mine = pauser_slot(s, 1))) {
		ret = kvmig_err(-EBUSY, "%u processes hold pauses of this pager already",
				MAX_PAUSERS);
	} else {
		(*mine)++;
		s->hdr->pause_depth++;
	}
	unlock(s);
	return ret;
}

static int synth_resume(void *impl)
{
	struct synth *s = impl;
	uint32_t *mine;
	int ret = 0;

	lock(s);
	if (!(mine = pauser_slot(s, 0))) {
		ret = kvmig_err(-EINVAL, "resume of a pager this process has not paused");
	} else {
		(*mine)--;
		s->hdr->pause_depth--;
	}
	unlock(s);
	return ret;
}

static int synth_occupied(void *impl, uint32_t **ixs, uint32_t *n)
{
	struct synth *s = impl;
	uint32_t *out, k = 0;

	lock(s);
	out = malloc(sizeof(*out) * (s->hdr->n_allocated ? s->hdr->n_allocated : 1));
	if (!out) {
		unlock(s);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < s->hdr->capacity && k < s->hdr->n_allocated; i++)
		if (s->alloc[i])
			out[k++] = i;
	unlock(s);
	*ixs = out;
	*n = k;
	return 0;
}

static int cmp_seq_id(const void *a, const void *b)
{
	return strcmp(((const struct kvmig_seq *)a)->id, ((const struct kvmig_seq *)b)->id);
}

static int synth_seqs(void *impl, struct kvmig_seq_list *out)
{
	struct synth *s = impl;
	struct kvmig_seq_list l = { 0 };
	int ret = -ENOMEM;

	lock(s);
	l.seqs = calloc(s->hdr->n_seqs ? s->hdr->n_seqs : 1, sizeof(*l.seqs));
	if (!l.seqs)
		goto out;
	for (uint32_t i = 0; i < s->hdr->n_seqs; i++) {
		const struct synth_slot *sl = &s->slots[i];
		struct kvmig_seq *q = &l.seqs[i];

		q->id = strdup(sl->id);
		q->page_ixs = malloc(sizeof(uint32_t) * (sl->n_pages ? sl->n_pages : 1));
		l.n = i + 1;
		if (!q->id || !q->page_ixs)
			goto out;
		memcpy(q->page_ixs, &s->refs[sl->ref_off], sizeof(uint32_t) * sl->n_pages);
		q->n_pages = sl->n_pages;
		q->fill_in_last_page = sl->fill;
	}
	ret = 0;
out:
	unlock(s);
	if (ret < 0) {
		kvmig_seq_list_free(&l);
		return ret;
	}
	qsort(l.seqs, l.n, sizeof(*l.seqs), cmp_seq_id);
	*out = l;
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

static int synth_allocate(void *impl, uint32_t n, uint32_t *ixs)
{
	struct synth *s = impl;
	uint32_t k = 0;

	lock(s);
	if (n > s->hdr->capacity - s->hdr->n_allocated) {
		uint32_t free_pages = s->hdr->capacity - s->hdr->n_allocated;

		unlock(s);
		return kvmig_err(-ENOSPC, "pager has %u free pages but %u were requested",
				 free_pages, n);
	}
	for (uint32_t i = 0; i < s->hdr->capacity && k < n; i++) {
		if (!s->alloc[i]) {
			s->alloc[i] = 1;
			__atomic_add_fetch(&s->gen[i], 1, __ATOMIC_RELEASE);
			ixs[k++] = i;
		}
	}
	s->hdr->n_allocated += k;
	unlock(s);
	return 0;
}

static bool page_referenced(struct synth *s, uint32_t ix)
{
	for (uint32_t i = 0; i < s->hdr->refs_used; i++)
		if (s->refs[i] == ix)
			return true;
	return false;
}

static int synth_free(void *impl, const uint32_t *ixs, uint32_t n)
{
	struct synth *s = impl;
	int ret = 0;

	lock(s);
	for (uint32_t i = 0; i < n && !ret; i++) {
		if (ixs[i] >= s->hdr->capacity || !s->alloc[ixs[i]])
			ret = kvmig_err(-EINVAL, "cannot free page %u: it is not allocated", ixs[i]);
		else if (page_referenced(s, ixs[i]))
			ret = kvmig_err(-EINVAL, "cannot free page %u: a sequence still uses it",
					ixs[i]);
		for (uint32_t j = 0; j < i && !ret; j++)
			if (ixs[j] == ixs[i])
				ret = kvmig_err(-EINVAL, "page %u is listed twice", ixs[i]);
	}
	if (!ret) {
		for (uint32_t i = 0; i < n; i++)
			s->alloc[ixs[i]] = 0;
		s->hdr->n_allocated -= n;
	}
	unlock(s);
	return ret;
}

static struct synth_slot *find_slot(struct synth *s, const char *id)
{
	for (uint32_t i = 0; i < s->hdr->n_seqs; i++)
		if (!strcmp(s->slots[i].id, id))
			return &s->slots[i];
	return NULL;
}

static int check_id(const char *id)
{
	size_t len = id ? strlen(id) : 0;

	if (len == 0 || len > KVMIG_SEQ_ID_MAX)
		return kvmig_err(-EINVAL, "sequence id must be 1 to %u bytes", KVMIG_SEQ_ID_MAX);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)id[i] < 0x20 || (unsigned char)id[i] > 0x7e)
			return kvmig_err(-EINVAL, "sequence id has a byte that is not printable ASCII");
	return 0;
}

static int synth_install(void *impl, const struct kvmig_seq *seqs, uint32_t n)
{
	struct synth *s = impl;
	uint64_t refs = 0;
	int ret = 0;

	lock(s);
	for (uint32_t i = 0; i < n && !ret; i++) {
		const struct kvmig_seq *q = &seqs[i];

		if ((ret = check_id(q->id)) < 0)
			break;
		if (find_slot(s, q->id)) {
			ret = kvmig_err(-EEXIST, "sequence \"%s\" is already installed", q->id);
			break;
		}
		for (uint32_t j = 0; j < i; j++)
			if (!strcmp(seqs[j].id, q->id))
				ret = kvmig_err(-EEXIST, "sequence \"%s\" is given twice", q->id);
		if (q->fill_in_last_page >= s->hdr->meta.page_size_tokens ||
		    (q->n_pages == 0 && q->fill_in_last_page))
			ret = kvmig_err(-EINVAL, "sequence \"%s\": fill_in_last_page %u is out of range",
					q->id, q->fill_in_last_page);
		for (uint32_t j = 0; j < q->n_pages && !ret; j++)
			if (q->page_ixs[j] >= s->hdr->capacity || !s->alloc[q->page_ixs[j]])
				ret = kvmig_err(-EINVAL, "sequence \"%s\": page %u is not allocated",
						q->id, q->page_ixs[j]);
		refs += q->n_pages;
	}
	if (!ret && n > s->hdr->max_seqs - s->hdr->n_seqs)
		ret = kvmig_err(-ENOSPC, "pager holds at most %u sequences", s->hdr->max_seqs);
	if (!ret && refs > s->hdr->ref_cap - s->hdr->refs_used)
		ret = kvmig_err(-ENOSPC, "pager's page tables are full (%u entries)", s->hdr->ref_cap);
	if (ret) {
		unlock(s);
		return ret;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct synth_slot *sl = &s->slots[s->hdr->n_seqs];

		memset(sl->id, 0, sizeof(sl->id));
		strcpy(sl->id, seqs[i].id);
		sl->n_pages = seqs[i].n_pages;
		sl->fill = seqs[i].fill_in_last_page;
		sl->ref_off = s->hdr->refs_used;
		memcpy(&s->refs[sl->ref_off], seqs[i].page_ixs, sizeof(uint32_t) * sl->n_pages);
		s->hdr->refs_used += sl->n_pages;
		s->hdr->n_seqs++;
	}
	unlock(s);
	return 0;
}

static int synth_remove(void *impl, const char *const *ids, uint32_t n)
{
	struct synth *s = impl;
	int ret = 0;

	lock(s);
	for (uint32_t i = 0; i < n && !ret; i++) {
		if (!ids[i] || !find_slot(s, ids[i]))
			ret = kvmig_err(-ENOENT, "sequence \"%s\" is not installed",
					ids[i] ? ids[i] : "(null)");
		for (uint32_t j = 0; j < i && !ret; j++)
			if (!strcmp(ids[j], ids[i]))
				ret = kvmig_err(-EINVAL, "sequence \"%s\" is listed twice", ids[i]);
	}
	for (uint32_t i = 0; i < n && !ret; i++) {
		struct synth_slot *sl = find_slot(s, ids[i]);
		uint32_t off = sl->ref_off, len = sl->n_pages;
		uint32_t idx = (uint32_t)(sl - s->slots);

		/* Compact the page-table pool and the slot array. */
		memmove(&s->refs[off], &s->refs[off + len],
			sizeof(uint32_t) * (s->hdr->refs_used - off - len));
		s->hdr->refs_used -= len;
		for (uint32_t j = 0; j < s->hdr->n_seqs; j++)
			if (s->slots[j].ref_off > off)
				s->slots[j].ref_off -= len;
		memmove(&s->slots[idx], &s->slots[idx + 1],
			sizeof(*sl) * (s->hdr->n_seqs - idx - 1));
		s->hdr->n_seqs--;
	}
	unlock(s);
	return ret;
}

static void synth_destroy(void *impl)
{
	struct synth *s = impl;

	if (!s)
		return;
	if (s->hdr)
		munmap(s->hdr, s->map_len);
	free(s);
}

static const struct kvmig_pager_ops synth_ops = {
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
	.destroy = synth_destroy,
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
		fd = shm_open(o->shm_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0) {
			err = -errno;
			kvmig_err(err, "cannot create shared-memory pager \"%s\": %s", o->shm_name,
				  strerror(errno));
			goto err;
		}
		if (ftruncate(fd, (off_t)h.total_bytes) < 0) {
			err = -errno;
			kvmig_err(err, "cannot size shared-memory pager \"%s\" to %llu bytes: %s",
				  o->shm_name, (unsigned long long)h.total_bytes, strerror(errno));
			goto err;
		}
		/* Resident from the start, as an engine's KV arena is: page faults
		 * during a migration cost far more than the copy (see README). */
		map = mmap(NULL, h.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
			   fd, 0);
	} else {
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
	h.magic = SYNTH_MAGIC;
	h.version = SYNTH_VERSION;
	h.layout = o->layout;
	h.meta = o->meta;
	memcpy(s->hdr, &h, sizeof(h));
	err = init_mutex(&s->hdr->lock);
	if (err < 0)
		goto err;
	bind_parts(s);
	err = populate(s, o);
	if (err < 0)
		goto err;
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

int kvmig_synth_attach(const char *name, struct kvmig_pager **ret)
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
		return kvmig_err(-EPROTO, "shm:%s is not a kvmig synthetic pager", name);
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
	bind_parts(s);
	err = kvmig_pager_create(&synth_ops, s, ret);
	if (err < 0)
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

int kvmig_synth_fill_page(struct kvmig_pager *p, uint32_t ix, uint64_t seed, uint64_t stream)
{
	struct synth *s;
	bool ok;

	if (!p || p->ops != &synth_ops)
		return kvmig_err(-EINVAL, "not a synthetic pager");
	s = p->impl;
	lock(s);
	if (s->hdr->pause_depth)
		reap_pausers(s);
	if (s->hdr->pause_depth) {
		unlock(s);
		return -EAGAIN; /* as an engine's write waits for the resume */
	}
	ok = ix < s->hdr->capacity && s->alloc[ix];
	if (ok) {
		/* Under the lock, as kvmig_synth_decode() writes: a pause waits. */
		fill_page(s, ix, seed, stream);
		__atomic_add_fetch(&s->gen[ix], 1, __ATOMIC_RELEASE);
	}
	unlock(s);
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

/* Under the lock: give sequence @sl one more page, allocated here. */
static int append_page(struct synth *s, struct synth_slot *sl)
{
	struct synth_hdr *h = s->hdr;
	uint32_t ix, at = sl->ref_off + sl->n_pages, idx = (uint32_t)(sl - s->slots);

	if (h->n_allocated == h->capacity)
		return kvmig_err(-ENOSPC, "sequence \"%s\" needs a page but all %u are allocated",
				 sl->id, h->capacity);
	if (h->refs_used == h->ref_cap)
		return kvmig_err(-ENOSPC, "pager's page tables are full (%u entries)", h->ref_cap);
	for (ix = 0; ix < h->capacity && s->alloc[ix]; ix++)
		;
	if (ix == h->capacity)
		return kvmig_err(-ENOSPC, "sequence \"%s\" needs a page but all %u are allocated",
				 sl->id, h->capacity);
	s->alloc[ix] = 1;
	h->n_allocated++;
	/* Page tables lie in refs[] in slot order: open a hole after this one's. */
	memmove(&s->refs[at + 1], &s->refs[at], sizeof(uint32_t) * (h->refs_used - at));
	s->refs[at] = ix;
	h->refs_used++;
	for (uint32_t j = idx + 1; j < h->n_seqs; j++)
		s->slots[j].ref_off++;
	sl->n_pages++;
	return 0;
}

int kvmig_synth_decode(struct kvmig_pager *p, const char *seq_id, uint64_t seed,
		       uint64_t *token)
{
	struct synth *s;
	struct synth_slot *sl;
	uint64_t slab, tb, t;
	uint32_t ix, slot;
	int ret = 0;

	if (!p || p->ops != &synth_ops)
		return kvmig_err(-EINVAL, "not a synthetic pager");
	s = p->impl;
	slab = s->hdr->half_bytes / s->hdr->meta.n_layers;
	tb = slab / s->hdr->meta.page_size_tokens;
	lock(s);
	if (s->hdr->pause_depth) {
		reap_pausers(s);
		if (s->hdr->pause_depth) {
			unlock(s);
			return -EAGAIN;
		}
	}
	if (!(sl = find_slot(s, seq_id))) {
		unlock(s);
		return kvmig_err(-ENOENT, "sequence \"%s\" is not installed", seq_id);
	}
	if ((sl->n_pages == 0 || sl->fill == 0) && (ret = append_page(s, sl)) < 0) {
		unlock(s);
		return ret;
	}
	slot = sl->fill;
	ix = s->refs[sl->ref_off + sl->n_pages - 1];
	t = (uint64_t)(sl->n_pages - 1) * s->hdr->meta.page_size_tokens + slot;
	for (uint32_t half = 0; half < 2; half++)
		for (uint32_t l = 0; l < s->hdr->meta.n_layers; l++) {
			uint8_t *dst = s->hdr->layout == KVMIG_LAYOUT_PAGE_MAJOR ?
				slab_addr(s, ix, half, 0) + l * slab : slab_addr(s, ix, half, l);

			kvmig_synth_token_bytes(seed, seq_id, t, (enum kvmig_half)half, l,
						dst + slot * tb, tb);
		}
	__atomic_add_fetch(&s->gen[ix], 1, __ATOMIC_RELEASE);
	sl->fill = (slot + 1) % s->hdr->meta.page_size_tokens;
	unlock(s);
	if (token)
		*token = t;
	return 0;
}

int kvmig_synth_pause_depth(struct kvmig_pager *p, uint32_t *depth)
{
	struct synth *s;

	if (!p || p->ops != &synth_ops)
		return kvmig_err(-EINVAL, "not a synthetic pager");
	s = p->impl;
	lock(s);
	reap_pausers(s);
	*depth = s->hdr->pause_depth;
	unlock(s);
	return 0;
}
