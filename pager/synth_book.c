/* SPDX-License-Identifier: MIT */
/*
 * pager/synth_book.c - the synthetic pager's bookkeeping: the lock (with a
 * deadline, and recovery after a holder died), the processes using the
 * pager, page allocation and ownership, sequences and their page tables.
 * synth_internal.h says how each change stays consistent when the process
 * making it dies at any instruction.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/internal.h"
#include "pager/synth_internal.h"

/* ---- processes ---- */

uint64_t synth_proc_start(int32_t pid)
{
	char path[32], buf[1024], *p;
	unsigned long long start;
	ssize_t n;
	int fd;

	if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH))
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 1;
	buf[n] = '\0';
	/* The command name may hold spaces or parentheses: parse after the last ')'. */
	if (!(p = strrchr(buf, ')')))
		return 1;
	/* ") state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
	 * cmajflt utime stime cutime cstime priority nice num_threads
	 * itrealvalue starttime": 19 fields after the state. A zombie still
	 * counts: a process whose main thread exited shows as one while its
	 * other threads run. */
	if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d "
		   "%*d %*d %*d %llu", &start) != 1)
		return 1;
	return start + 2; /* never 0 or 1 */
}

/* Whether start times @a and @b (synth_proc_start) can be the same process. */
static bool same_start(uint64_t a, uint64_t b)
{
	return a == 1 || b == 1 || a == b;
}

/* This process, cached per thread (a forked child sees a new pid). */
static void self_id(int32_t *pid, uint64_t *start)
{
	static _Thread_local int32_t c_pid;
	static _Thread_local uint64_t c_start;
	int32_t me = (int32_t)getpid();

	if (me != c_pid) {
		c_start = synth_proc_start(me);
		/* "Unknown" (1) matches any start time: never keep it. */
		c_pid = c_start > 1 ? me : 0;
	}
	*pid = me;
	*start = c_start;
}

int synth_holder_self(struct synth *s, int make)
{
	struct synth_holder *hs = s->hdr->holders;
	uint64_t start;
	int32_t me;

	self_id(&me, &start);
	for (uint32_t h = 0; h < SYNTH_MAX_HOLDERS; h++)
		if (hs[h].pid == me && same_start(hs[h].start, start))
			return (int)h;
	if (!make)
		return -1;
	for (int pass = 0; pass < 2; pass++) {
		for (uint32_t h = 0; h < SYNTH_MAX_HOLDERS; h++) {
			if (hs[h].pid)
				continue;
			hs[h].start = start;
			hs[h].pauses = 0;
			hs[h].attached = 0;
			hs[h].pid = me; /* last: an entry with a pid is whole */
			return (int)h;
		}
		if (pass == 0 && !s->reaping)
			synth_reap(s, NULL); /* dead processes' entries */
	}
	return kvmig_err(-EUSERS, "%u processes use pager %s already", SYNTH_MAX_HOLDERS, s->name);
}

void synth_reap(struct synth *s, struct kvmig_gc_stats *st)
{
	struct synth_hdr *h = s->hdr;
	bool dead[SYNTH_MAX_HOLDERS] = { false }, any = false;

	if (s->reaping)
		return; /* called back from inside: the outer one does it */
	for (uint32_t i = 0; i < SYNTH_MAX_HOLDERS; i++) {
		uint64_t start;

		if (!h->holders[i].pid)
			continue;
		start = synth_proc_start(h->holders[i].pid);
		if (start == 0 || !same_start(start, h->holders[i].start))
			dead[i] = any = true;
	}
	if (!any)
		return;
	s->reaping = 1;
	for (uint32_t i = 0; i < SYNTH_MAX_HOLDERS; i++) {
		if (!dead[i])
			continue;
		h->pause_depth -= h->holders[i].pauses;
		if (st)
			st->pauses += h->holders[i].pauses;
		h->holders[i].pauses = 0;
	}
	/* Their migrations first: an undecided one is aborted, which removes
	 * pending sequences and so may leave more of their pages unused. */
	for (uint32_t r = 0; r < SYNTH_MAX_RECORDS; r++) {
		uint32_t o = h->recs[r].owner;

		if (h->recs[r].state != KVMIG_REC_NONE && o && o <= SYNTH_MAX_HOLDERS && dead[o - 1])
			synth_record_orphaned(s, r, (int)o - 1, st);
	}
	SYNTH_STEP();
	for (uint32_t ix = 0; ix < h->capacity; ix++) {
		uint32_t o = s->owner[ix];

		if (o < OWNER_HOLDER(0) || o >= OWNER_HOLDER(SYNTH_MAX_HOLDERS) ||
		    !dead[o - OWNER_HOLDER(0)])
			continue;
		if (s->refcnt[ix]) {
			s->owner[ix] = OWNER_PAGER;
		} else {
			s->owner[ix] = OWNER_FREE;
			h->n_allocated--;
			if (st)
				st->pages++;
		}
	}
	/* Last: an entry is reused only once nothing refers to it. */
	SYNTH_STEP();
	for (uint32_t i = 0; i < SYNTH_MAX_HOLDERS; i++)
		if (dead[i])
			h->holders[i].pid = 0;
	s->reaping = 0;
}

/* ---- the lock ---- */

static void proc_comm(int32_t pid, char *buf, size_t len)
{
	char path[40];
	ssize_t n = -1;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
		n = read(fd, buf, len - 1);
		close(fd);
	}
	if (n <= 0) {
		snprintf(buf, len, "?");
		return;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
}

int synth_lock(struct synth *s)
{
	struct synth_hdr *h = s->hdr;
	struct timespec ts;
	char comm[32];
	int32_t pid;
	int r;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += SYNTH_LOCK_MS / 1000;
	ts.tv_nsec += (long)(SYNTH_LOCK_MS % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	/* A robust mutex covers a holder that died, not one that is stopped
	 * (SIGSTOP, a debugger) or stuck: wait a bounded time only. */
	r = pthread_mutex_clocklock(&h->lock, CLOCK_MONOTONIC, &ts);
	if (r == EOWNERDEAD) {
		synth_recover(s);
		pthread_mutex_consistent(&h->lock);
		r = 0;
	}
	if (r == 0) {
		__atomic_store_n(&h->lock_pid, (int32_t)getpid(), __ATOMIC_RELAXED);
		return 0;
	}
	if (r != ETIMEDOUT)
		return kvmig_err(-r, "cannot lock pager %s: %s", s->name, strerror(r));
	pid = __atomic_load_n(&h->lock_pid, __ATOMIC_RELAXED);
	proc_comm(pid, comm, sizeof(comm));
	return kvmig_err(-EBUSY, "pager %s has been locked by process %d (%s) for more than %d ms: "
			 "it is stopped or stuck; nothing was done", s->name, (int)pid, comm,
			 SYNTH_LOCK_MS);
}

void synth_unlock(struct synth *s)
{
	pthread_mutex_unlock(&s->hdr->lock);
}

/* ---- sequences and their page tables ---- */

uint32_t synth_slot_pages(const struct synth_slot *sl)
{
	return (uint32_t)(sl->len >> 32);
}

uint32_t synth_slot_fill(const struct synth_slot *sl)
{
	return (uint32_t)sl->len;
}

static uint64_t slot_len(uint32_t n_pages, uint32_t fill)
{
	return (uint64_t)n_pages << 32 | fill;
}

/* The chunk holding entry @j of @sl's page table. */
static struct synth_chunk *slot_chunk(const struct synth *s, const struct synth_slot *sl,
				      uint32_t j)
{
	uint32_t c = sl->head;

	for (uint32_t k = j / SYNTH_CHUNK_IXS; k; k--)
		c = s->chunks[c].next;
	return &s->chunks[c];
}

uint32_t synth_slot_page(const struct synth *s, const struct synth_slot *sl, uint32_t j)
{
	return slot_chunk(s, sl, j)->ix[j % SYNTH_CHUNK_IXS];
}

/* Copy @sl's page table into @out (n_pages entries), walking the chunks once. */
static void slot_pages_copy(const struct synth *s, const struct synth_slot *sl, uint32_t *out)
{
	uint32_t n = synth_slot_pages(sl), c = sl->head;

	for (uint32_t j = 0; j < n; j++) {
		if (j && j % SYNTH_CHUNK_IXS == 0)
			c = s->chunks[c].next;
		out[j] = s->chunks[c].ix[j % SYNTH_CHUNK_IXS];
	}
}

enum kvmig_seq_state synth_slot_state(const struct synth *s, const struct synth_slot *sl)
{
	const struct synth_rec *r;

	if (!sl->rec || sl->rec > SYNTH_MAX_RECORDS)
		return KVMIG_SEQ_ACTIVE;
	r = &s->hdr->recs[sl->rec - 1];
	if (r->role == KVMIG_ROLE_SOURCE)
		return r->state == KVMIG_REC_DEPARTED || r->state == KVMIG_REC_FINISHING ?
			KVMIG_SEQ_DEPARTED : KVMIG_SEQ_ACTIVE;
	if (r->role == KVMIG_ROLE_DEST)
		return r->state == KVMIG_REC_ACTIVATED || r->state == KVMIG_REC_FINISHING ||
			r->state == KVMIG_REC_NONE ? KVMIG_SEQ_ACTIVE : KVMIG_SEQ_PENDING;
	return KVMIG_SEQ_ACTIVE;
}

struct synth_slot *synth_find_slot(struct synth *s, const char *id)
{
	for (uint32_t i = 0; i < s->hdr->max_seqs; i++)
		if (s->slots[i].state == SLOT_USED && !strcmp(s->slots[i].id, id))
			return &s->slots[i];
	return NULL;
}

static int cmp_slot_id(const void *a, const void *b)
{
	return strcmp((*(const struct synth_slot *const *)a)->id,
		      (*(const struct synth_slot *const *)b)->id);
}

static int cmp_str_ptr(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Under the lock: the installed sequences sorted by id, for bsearch (an
 * install or remove may name 65,536). Caller frees. */
static int slot_index(struct synth *s, struct synth_slot ***out, uint32_t *n)
{
	struct synth_slot **ix = malloc(sizeof(*ix) * (s->hdr->n_seqs ? s->hdr->n_seqs : 1));
	uint32_t k = 0;

	if (!ix)
		return -ENOMEM;
	for (uint32_t i = 0; i < s->hdr->max_seqs && k < s->hdr->n_seqs; i++)
		if (s->slots[i].state == SLOT_USED)
			ix[k++] = &s->slots[i];
	qsort(ix, k, sizeof(*ix), cmp_slot_id);
	*out = ix;
	*n = k;
	return 0;
}

static struct synth_slot *index_find(struct synth_slot **ix, uint32_t n, const char *id)
{
	struct synth_slot key, *kp = &key, **at;

	snprintf(key.id, sizeof(key.id), "%s", id);
	at = bsearch(&kp, ix, n, sizeof(*ix), cmp_slot_id);
	return at ? *at : NULL;
}

/* -EINVAL naming an id @ids lists twice (sorted copy), else 0. */
static int ids_distinct(const char *const *ids, uint32_t n, const char *what)
{
	const char **c = malloc(sizeof(*c) * (n ? n : 1));
	int ret = 0;

	if (!c)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++)
		c[i] = ids[i];
	qsort(c, n, sizeof(*c), cmp_str_ptr);
	for (uint32_t i = 1; i < n && !ret; i++)
		if (!strcmp(c[i], c[i - 1]))
			ret = kvmig_err(-EINVAL, "sequence \"%s\" is %s twice", c[i], what);
	free(c);
	return ret;
}

int synth_lookup(struct synth *s, const char *const *ids, uint32_t n, struct synth_slot **out)
{
	struct synth_slot **ix = NULL;
	uint32_t ni = 0;
	int ret;

	for (uint32_t i = 0; i < n; i++)
		if (!ids[i])
			return kvmig_err(-EINVAL, "sequence id %u is NULL", i);
	if ((ret = ids_distinct(ids, n, "listed")) < 0 || (ret = slot_index(s, &ix, &ni)) < 0)
		return ret;
	for (uint32_t i = 0; i < n && !ret; i++)
		if (!(out[i] = index_find(ix, ni, ids[i])))
			ret = kvmig_err(-ENOENT, "sequence \"%s\" is not installed", ids[i]);
	free(ix);
	return ret;
}

static int check_id(const char *id)
{
	size_t len = id ? strlen(id) : 0;

	if (len == 0 || len > KVMIG_SEQ_ID_MAX)
		return kvmig_err(-EINVAL, "sequence id must be 1 to %u bytes", KVMIG_SEQ_ID_MAX);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)id[i] < 0x20 || (unsigned char)id[i] > 0x7e)
			return kvmig_err(-EINVAL, "sequence id has a byte that is not printable ASCII");
	if (id[0] == KVMIG_SEQ_RESERVED_PREFIX)
		return kvmig_err(-EINVAL, "sequence id \"%s\" begins with '%c', which kvmig reserves",
				 id, KVMIG_SEQ_RESERVED_PREFIX);
	return 0;
}

static uint32_t chunks_for(uint32_t n_pages)
{
	return (n_pages + SYNTH_CHUNK_IXS - 1) / SYNTH_CHUNK_IXS;
}

/* Under the lock: a chunk off the free stack (the caller checked there is one). */
static uint32_t pop_chunk(struct synth *s)
{
	uint32_t c = s->free_chunks[--s->hdr->n_free_chunks];

	s->chunks[c].next = SYNTH_NONE;
	return c;
}

/* Check @seqs against the pager before anything is written. */
static int install_check(struct synth *s, const struct kvmig_seq *seqs, uint32_t n)
{
	struct synth_slot **ix = NULL;
	const char **ids = NULL;
	uint64_t chunks = 0;
	uint32_t ni = 0;
	int ret;

	if (!(ids = malloc(sizeof(*ids) * (n ? n : 1))))
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++)
		ids[i] = seqs[i].id;
	for (uint32_t i = 0; i < n; i++)
		if ((ret = check_id(ids[i])) < 0)
			goto out;
	if ((ret = ids_distinct(ids, n, "given")) < 0) {
		ret = -EEXIST;
		goto out;
	}
	if ((ret = slot_index(s, &ix, &ni)) < 0)
		goto out;
	for (uint32_t i = 0; i < n && !ret; i++) {
		const struct kvmig_seq *q = &seqs[i];

		if (index_find(ix, ni, q->id))
			ret = kvmig_err(-EEXIST, "sequence \"%s\" is already installed", q->id);
		else if (q->fill_in_last_page >= s->hdr->meta.page_size_tokens ||
			 (q->n_pages == 0 && q->fill_in_last_page))
			ret = kvmig_err(-EINVAL, "sequence \"%s\": fill_in_last_page %u is out of range",
					q->id, q->fill_in_last_page);
		for (uint32_t j = 0; j < q->n_pages && !ret; j++)
			if (q->page_ixs[j] >= s->hdr->capacity ||
			    s->owner[q->page_ixs[j]] == OWNER_FREE)
				ret = kvmig_err(-EINVAL, "sequence \"%s\": page %u is not allocated",
						q->id, q->page_ixs[j]);
		chunks += chunks_for(q->n_pages);
	}
	if (!ret && n > s->hdr->max_seqs - s->hdr->n_seqs)
		ret = kvmig_err(-ENOSPC, "pager holds at most %u sequences", s->hdr->max_seqs);
	if (!ret && chunks > s->hdr->n_free_chunks)
		ret = kvmig_err(-ENOSPC, "pager's page tables are full (%u chunks of %u entries)",
				s->hdr->n_chunks, SYNTH_CHUNK_IXS);
out:
	free(ix);
	free(ids);
	return ret;
}

/* Write @q into free slot @sl (tagged @rec), chunks included; state last. */
static void slot_write(struct synth *s, struct synth_slot *sl, const struct kvmig_seq *q,
		       uint32_t rec, uint32_t state)
{
	uint32_t prev = SYNTH_NONE;

	memset(sl->id, 0, sizeof(sl->id));
	snprintf(sl->id, sizeof(sl->id), "%s", q->id);
	sl->rec = rec;
	sl->head = SYNTH_NONE;
	for (uint32_t j = 0; j < q->n_pages; j++) {
		if (j % SYNTH_CHUNK_IXS == 0) {
			uint32_t c = pop_chunk(s);

			if (prev == SYNTH_NONE)
				sl->head = c;
			else
				s->chunks[prev].next = c;
			prev = c;
		}
		s->chunks[prev].ix[j % SYNTH_CHUNK_IXS] = q->page_ixs[j];
	}
	sl->len = slot_len(q->n_pages, q->fill_in_last_page);
	__atomic_store_n(&sl->state, state, __ATOMIC_RELEASE);
}

int synth_install_locked(struct synth *s, const struct kvmig_seq *seqs, uint32_t n, uint32_t rec)
{
	struct synth_hdr *h = s->hdr;
	struct synth_slot **made;
	uint32_t k = 0;
	int ret;

	if ((ret = install_check(s, seqs, n)) < 0)
		return ret;
	if (!(made = malloc(sizeof(*made) * (n ? n : 1))))
		return -ENOMEM;
	/* Whoever filled these pages (a receiver, a restore) wrote them without
	 * the pager seeing it: their generations move now, before the install
	 * becomes visible, so no digest kept while they were filled (a hasher
	 * that listed the page under an earlier sequence) can match them. */
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < seqs[i].n_pages; j++)
			__atomic_add_fetch(&s->gen[seqs[i].page_ixs[j]], 1, __ATOMIC_RELEASE);
	SYNTH_STEP();
	/* All or nothing even if this process dies in the middle: the slots
	 * are NEW until the txn word is cleared (recover() drops them). */
	h->txn = 1;
	SYNTH_STEP();
	for (uint32_t i = 0; i < h->max_seqs && k < n; i++)
		if (s->slots[i].state == SLOT_FREE)
			slot_write(s, made[k] = &s->slots[i], &seqs[k], rec, SLOT_NEW), k++;
	if (kvmig_fault("die-synth-install", NULL))
		raise(SIGKILL); /* test-only: a death inside the txn */
	__atomic_store_n(&h->txn, 0, __ATOMIC_RELEASE); /* the commit */
	SYNTH_STEP();
	for (uint32_t i = 0; i < n; i++) {
		made[i]->state = SLOT_USED;
		for (uint32_t j = 0; j < seqs[i].n_pages; j++)
			s->refcnt[seqs[i].page_ixs[j]]++;
	}
	h->n_seqs += n;
	free(made);
	return 0;
}

/*
 * Under the lock: remove the slots @sl (USED), all or nothing. Pages no
 * sequence uses afterwards belong to holder @self (so a death before they
 * are freed leaves them to gc), or are freed when @free_pages.
 */
static void remove_slots(struct synth *s, struct synth_slot **sl, uint32_t n, int self,
			 int free_pages)
{
	struct synth_hdr *h = s->hdr;

	if (!n)
		return;
	h->txn = 1;
	SYNTH_STEP();
	for (uint32_t i = 0; i < n; i++) {
		uint32_t np = synth_slot_pages(sl[i]), c = sl[i]->head;

		for (uint32_t j = 0; j < np; j++) {
			uint32_t ix;

			if (j && j % SYNTH_CHUNK_IXS == 0)
				c = s->chunks[c].next;
			ix = s->chunks[c].ix[j % SYNTH_CHUNK_IXS];
			if (s->refcnt[ix] && --s->refcnt[ix] == 0 && self >= 0)
				s->owner[ix] = OWNER_HOLDER(self);
		}
		SYNTH_STEP(); /* the pages' new owner before the slot dies */
		sl[i]->state = SLOT_DEAD;
	}
	if (kvmig_fault("die-synth-remove", NULL))
		raise(SIGKILL); /* test-only: a death inside the txn */
	__atomic_store_n(&h->txn, 0, __ATOMIC_RELEASE); /* the commit */
	SYNTH_STEP();
	for (uint32_t i = 0; i < n; i++) {
		uint32_t np = synth_slot_pages(sl[i]), c = sl[i]->head;

		for (uint32_t j = 0; j < np; j++) {
			uint32_t ix;

			if (j && j % SYNTH_CHUNK_IXS == 0) {
				s->free_chunks[h->n_free_chunks++] = c;
				c = s->chunks[c].next;
			}
			ix = s->chunks[c].ix[j % SYNTH_CHUNK_IXS];
			if (free_pages && !s->refcnt[ix] && s->owner[ix] != OWNER_FREE) {
				s->owner[ix] = OWNER_FREE;
				h->n_allocated--;
			}
		}
		if (np)
			s->free_chunks[h->n_free_chunks++] = c;
		sl[i]->state = SLOT_FREE;
		h->n_seqs--;
	}
}

void synth_remove_tagged(struct synth *s, uint32_t rec, int owner)
{
	struct synth_slot **sl = malloc(sizeof(*sl) * (s->hdr->n_seqs ? s->hdr->n_seqs : 1));
	uint32_t n = 0;

	/* Without memory, take them one by one: each removal is whole anyway. */
	for (uint32_t i = 0; i < s->hdr->max_seqs; i++) {
		struct synth_slot *one = &s->slots[i];

		if (one->state != SLOT_USED || one->rec != rec + 1)
			continue;
		if (sl)
			sl[n++] = one;
		else
			remove_slots(s, &one, 1, owner, 1);
	}
	remove_slots(s, sl, n, owner, 1);
	free(sl);
}

int synth_append_page(struct synth *s, struct synth_slot *sl)
{
	struct synth_hdr *h = s->hdr;
	uint32_t ix, n = synth_slot_pages(sl);
	int self = synth_holder_self(s, 1);

	if (self < 0)
		return self;
	if (h->n_allocated == h->capacity)
		synth_reap(s, NULL);
	for (ix = 0; ix < h->capacity && s->owner[ix] != OWNER_FREE; ix++)
		;
	if (ix == h->capacity)
		return kvmig_err(-ENOSPC, "sequence \"%s\" needs a page but all %u are allocated",
				 sl->id, h->capacity);
	if (n % SYNTH_CHUNK_IXS == 0 && !h->n_free_chunks)
		return kvmig_err(-ENOSPC, "pager's page tables are full (%u chunks of %u entries)",
				 h->n_chunks, SYNTH_CHUNK_IXS);
	/* Ours until the caller's one store of the length makes it the
	 * sequence's: a death before that leaves an unused page to gc. */
	s->owner[ix] = OWNER_HOLDER(self);
	h->n_allocated++;
	SYNTH_STEP();
	if (n % SYNTH_CHUNK_IXS == 0) {
		uint32_t c = pop_chunk(s);

		s->chunks[c].ix[0] = ix;
		if (n == 0)
			sl->head = c;
		else
			slot_chunk(s, sl, n - 1)->next = c;
	} else {
		slot_chunk(s, sl, n - 1)->ix[n % SYNTH_CHUNK_IXS] = ix;
	}
	s->refcnt[ix]++;
	return (int)ix;
}

void synth_set_len(struct synth_slot *sl, uint32_t n_pages, uint32_t fill)
{
	__atomic_store_n(&sl->len, slot_len(n_pages, fill), __ATOMIC_RELEASE);
}

/* ---- recovery ---- */

void synth_recover(struct synth *s)
{
	struct synth_hdr *h = s->hdr;
	uint32_t *used = s->free_chunks; /* scratch: marks, then the stack, in place */
	uint32_t k = 0;

	/* The dead holder may have been writing a page (a token, a fill) and
	 * died before bumping its generation: every page's moves, so no digest
	 * kept for the bytes before (or during) that write still matches. */
	for (uint32_t i = 0; i < h->capacity; i++)
		__atomic_add_fetch(&s->gen[i], 1, __ATOMIC_RELEASE);

	/* An install or remove that did not commit is undone; one that did is
	 * finished. */
	for (uint32_t i = 0; i < h->max_seqs; i++) {
		struct synth_slot *sl = &s->slots[i];

		if (sl->state == SLOT_NEW)
			sl->state = h->txn ? SLOT_FREE : SLOT_USED;
		else if (sl->state == SLOT_DEAD)
			sl->state = h->txn ? SLOT_USED : SLOT_FREE;
	}
	h->txn = 0;
	memset(s->refcnt, 0, sizeof(*s->refcnt) * h->capacity);
	memset(used, 0, sizeof(*used) * h->n_chunks);
	h->n_seqs = 0;
	for (uint32_t i = 0; i < h->max_seqs; i++) {
		struct synth_slot *sl = &s->slots[i];
		uint32_t np = synth_slot_pages(sl), c = sl->head, j;

		if (sl->state != SLOT_USED)
			continue;
		h->n_seqs++;
		for (j = 0; j < np; j++) {
			uint32_t ix;

			if (j && j % SYNTH_CHUNK_IXS == 0)
				c = s->chunks[c].next;
			if (c >= h->n_chunks || (j % SYNTH_CHUNK_IXS == 0 && used[c]))
				break; /* cannot happen if every store landed in order */
			used[c] = 1;
			ix = s->chunks[c].ix[j % SYNTH_CHUNK_IXS];
			if (ix >= h->capacity)
				break;
			s->refcnt[ix]++;
			if (s->owner[ix] == OWNER_FREE)
				s->owner[ix] = OWNER_PAGER;
		}
		if (j < np) /* keep what is whole */
			sl->len = slot_len(j, j ? synth_slot_fill(sl) : 0);
	}
	/* used[c] is read at c and the stack written at k <= c: in place. */
	for (uint32_t c = 0; c < h->n_chunks; c++)
		if (!used[c])
			s->free_chunks[k++] = c;
	h->n_free_chunks = k;
	h->n_allocated = 0;
	for (uint32_t ix = 0; ix < h->capacity; ix++)
		h->n_allocated += s->owner[ix] != OWNER_FREE;
	h->pause_depth = 0;
	for (uint32_t i = 0; i < SYNTH_MAX_HOLDERS; i++)
		if (h->holders[i].pid)
			h->pause_depth += h->holders[i].pauses;
	s->reaping = 1; /* completing a record must not start a reap */
	synth_records_recover(s);
	s->reaping = 0;
	synth_reap(s, NULL); /* the holder that died, at least, is gone */
}

/* ---- ops ---- */

int synth_pause(void *impl)
{
	struct synth *s = impl;
	int self, ret;

	if ((ret = synth_lock(s)) < 0)
		return ret;
	if (kvmig_fault("stop-synth-locked", NULL))
		raise(SIGSTOP); /* test-only: a holder stopped with the lock held */
	synth_reap(s, NULL);
	if ((self = synth_holder_self(s, 1)) >= 0) {
		s->hdr->holders[self].pauses++;
		s->hdr->pause_depth++;
	}
	synth_unlock(s);
	return self < 0 ? self : 0;
}

int synth_resume(void *impl)
{
	struct synth *s = impl;
	int self, ret;

	if ((ret = synth_lock(s)) < 0)
		return ret;
	self = synth_holder_self(s, 0);
	if (self < 0 || !s->hdr->holders[self].pauses) {
		ret = kvmig_err(-EINVAL, "resume of a pager this process has not paused");
	} else {
		s->hdr->holders[self].pauses--;
		s->hdr->pause_depth--;
	}
	synth_unlock(s);
	return ret;
}

int synth_occupied(void *impl, uint32_t **ixs, uint32_t *n)
{
	struct synth *s = impl;
	uint32_t *out, k = 0;
	int ret;

	if ((ret = synth_lock(s)) < 0)
		return ret;
	out = malloc(sizeof(*out) * (s->hdr->n_allocated ? s->hdr->n_allocated : 1));
	if (!out) {
		synth_unlock(s);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < s->hdr->capacity && k < s->hdr->n_allocated; i++)
		if (s->owner[i] != OWNER_FREE)
			out[k++] = i;
	synth_unlock(s);
	*ixs = out;
	*n = k;
	return 0;
}

static int cmp_seq_id(const void *a, const void *b)
{
	return strcmp(((const struct kvmig_seq *)a)->id, ((const struct kvmig_seq *)b)->id);
}

int synth_seqs(void *impl, struct kvmig_seq_list *out)
{
	struct synth *s = impl;
	struct kvmig_seq_list l = { 0 };
	int ret;

	if ((ret = synth_lock(s)) < 0)
		return ret;
	ret = -ENOMEM;
	l.seqs = calloc(s->hdr->n_seqs ? s->hdr->n_seqs : 1, sizeof(*l.seqs));
	if (!l.seqs)
		goto out;
	for (uint32_t i = 0; i < s->hdr->max_seqs && l.n < s->hdr->n_seqs; i++) {
		const struct synth_slot *sl = &s->slots[i];
		struct kvmig_seq *q = &l.seqs[l.n];
		uint32_t np = synth_slot_pages(sl);

		if (sl->state != SLOT_USED)
			continue;
		q->id = strdup(sl->id);
		q->page_ixs = malloc(sizeof(uint32_t) * (np ? np : 1));
		l.n++;
		if (!q->id || !q->page_ixs)
			goto out;
		slot_pages_copy(s, sl, q->page_ixs);
		q->n_pages = np;
		q->fill_in_last_page = synth_slot_fill(sl);
		q->state = synth_slot_state(s, sl);
		if (sl->rec && sl->rec <= SYNTH_MAX_RECORDS)
			q->migration = s->hdr->recs[sl->rec - 1].id;
	}
	ret = 0;
out:
	synth_unlock(s);
	if (ret < 0) {
		kvmig_seq_list_free(&l);
		return ret;
	}
	qsort(l.seqs, l.n, sizeof(*l.seqs), cmp_seq_id);
	*out = l;
	return 0;
}

int synth_allocate(void *impl, uint32_t n, uint32_t *ixs)
{
	struct synth *s = impl;
	struct synth_hdr *h = s->hdr;
	uint32_t k = 0;
	int self, ret;

	if ((ret = synth_lock(s)) < 0)
		return ret;
	if ((self = synth_holder_self(s, 1)) < 0) {
		synth_unlock(s);
		return self;
	}
	if (n > h->capacity - h->n_allocated)
		synth_reap(s, NULL); /* pages dead processes left */
	if (n > h->capacity - h->n_allocated) {
		uint32_t free_pages = h->capacity - h->n_allocated;

		synth_unlock(s);
		return kvmig_err(-ENOSPC, "pager has %u free pages but %u were requested",
				 free_pages, n);
	}
	/* Each page is ours from its one store: a death half way leaves
	 * pages owned by a dead process, which gc frees. */
	for (uint32_t i = 0; i < h->capacity && k < n; i++) {
		if (s->owner[i] == OWNER_FREE) {
			s->owner[i] = OWNER_HOLDER(self);
			h->n_allocated++;
			__atomic_add_fetch(&s->gen[i], 1, __ATOMIC_RELEASE);
			ixs[k++] = i;
		}
	}
	synth_unlock(s);
	return 0;
}

int synth_free(void *impl, const uint32_t *ixs, uint32_t n)
{
	struct synth *s = impl;
	uint32_t *sorted = malloc(sizeof(*sorted) * (n ? n : 1));
	int self, ret;

	if (!sorted)
		return -ENOMEM;
	memcpy(sorted, ixs, sizeof(*ixs) * n);
	qsort(sorted, n, sizeof(*sorted), kvmig_cmp_u32);
	if ((ret = synth_lock(s)) < 0) {
		free(sorted);
		return ret;
	}
	if ((self = synth_holder_self(s, 1)) < 0)
		ret = self;
	for (uint32_t i = 0; i < n && !ret; i++) {
		uint32_t ix = sorted[i];

		if (ix >= s->hdr->capacity || s->owner[ix] == OWNER_FREE)
			ret = kvmig_err(-EINVAL, "cannot free page %u: it is not allocated", ix);
		else if (s->refcnt[ix])
			ret = kvmig_err(-EINVAL, "cannot free page %u: a sequence still uses it", ix);
		else if (i && sorted[i - 1] == ix)
			ret = kvmig_err(-EINVAL, "page %u is listed twice", ix);
	}
	if (!ret) {
		/* Ours first, then free: a death between leaves them to gc. */
		for (uint32_t i = 0; i < n; i++)
			s->owner[sorted[i]] = OWNER_HOLDER(self);
		SYNTH_STEP();
		for (uint32_t i = 0; i < n; i++)
			s->owner[sorted[i]] = OWNER_FREE;
		s->hdr->n_allocated -= n;
	}
	synth_unlock(s);
	free(sorted);
	return ret;
}

int synth_install(void *impl, const struct kvmig_seq *seqs, uint32_t n)
{
	struct synth *s = impl;
	int ret;

	if ((ret = synth_lock(s)) < 0)
		return ret;
	ret = synth_install_locked(s, seqs, n, 0);
	synth_unlock(s);
	return ret;
}

int synth_remove(void *impl, const char *const *ids, uint32_t n)
{
	struct synth *s = impl;
	struct synth_slot **sl = malloc(sizeof(*sl) * (n ? n : 1));
	int self, ret;

	if (!sl)
		return -ENOMEM;
	if ((ret = synth_lock(s)) < 0) {
		free(sl);
		return ret;
	}
	if ((self = synth_holder_self(s, 1)) < 0)
		ret = self;
	if (!ret && (ret = synth_lookup(s, ids, n, sl)) == 0) {
		for (uint32_t i = 0; i < n && !ret; i++)
			if (sl[i]->rec)
				ret = kvmig_err(-EBUSY, "sequence \"%s\" belongs to a migration (%s): "
						"under way, or its outcome not applied yet (kvmig "
						"pager status)", sl[i]->id,
						kvmig_seq_state_name(synth_slot_state(s, sl[i])));
		if (!ret)
			remove_slots(s, sl, n, self, 0);
	}
	synth_unlock(s);
	free(sl);
	return ret;
}
