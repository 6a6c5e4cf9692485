/* SPDX-License-Identifier: MIT */
/*
 * transport/send.c - the sending half of a migration.
 *
 *   connect, HELLO both ways (meta and layout must match)
 *   pause the pager (everything below runs paused; any failure resumes it)
 *   select pages: the union of every sequence's (or --seqs') pages, shared once
 *   register the page memory once (remote READ only), send REGIONS
 *   send OFFERs: per page its K then V extents (addresses here) and generation
 *   a hasher thread digests the offered pages while the main thread serves
 *     the receiver's reads; DIGESTS go out as they are ready, then FINAL
 *   COMMIT from the receiver (it holds everything, pending, under its
 *     record): the decision, one store in our record (move: the sequences
 *     depart, copy: committed); COMMIT_ACK; deregister; resume
 *   ACTIVATED from the receiver: release our copy (move: remove the
 *     sequences, free the pages no remaining sequence uses), close the
 *     record; FORGET
 *
 * The hasher reads page memory the main thread only sends from, and the
 * pager is paused, so the bytes it hashes are the bytes the receiver reads.
 *
 * What a failure does depends on where the sender is (enum send_state):
 * before the decision it aborts (the source keeps its sequences running);
 * after it, never: the destination may already run them. docs/PROTOCOL.md
 * has both sides' states and what a death in each leaves.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include <kvmig/cas.h>

#include "pager/internal.h"
#include "transport/session.h"
#include "util/internal.h"

#define MAX_HALF_EXTENTS (KVMIG_WIRE_MAX_EXTENTS / 2)
#define HASH_SIGNAL_EVERY 64u

enum send_state {
	SEND_CONNECTING, /* nothing of this migration exists yet: a failure just ends */
	SEND_OFFERING,   /* record SENDING; the sequences run here (or wait, paused): a
			  * failure aborts, the peer is told, the record dropped */
	SEND_DECIDED,    /* record DEPARTED / COMMITTED: the commit point is passed; a
			  * failure leaves it for resolution, never aborts */
	SEND_RELEASED,   /* the receiver runs them; our copy is released, the record gone */
};

/* A page this migration has offered (or is about to), by source index. */
struct spage {
	uint32_t ix;
	uint32_t n_ext;        /* K extents then V extents, at ext_off in the pool */
	uint64_t ext_off;
	uint64_t offered_gen;  /* generation read before its last offer */
	uint64_t hashed_gen;   /* generation read before k, v were hashed */
	uint64_t plan_gen;     /* generation read when the last round was planned */
	uint8_t offered, hashed;
	uint8_t digest_sent;   /* live: k, v went out after a round (an offer voids it) */
	struct kvmig_digest k, v;
};

struct sender {
	struct session ses;
	struct kvmig_pager *p;
	struct kvmig_msg_hello hello;
	struct kvmig_id mig, peer_pager;
	enum send_state state;
	const char *addr;
	uint64_t page_bytes;
	/* The selection of the current round: sequences and their pages. */
	struct kvmig_seq_list seqs;
	char **tagged;                 /* once reserved: the tagged ids, the only ones */
	uint32_t n_tagged;
	uint32_t *ixs;                 /* ascending */
	uint32_t n;
	/* Every page offered so far, sorted by ix; their extents in one pool. */
	struct spage *pg;
	uint32_t n_pg, cap_pg;
	struct kvmig_wire_extent *ext;
	uint64_t n_ext, cap_ext;
	uint32_t *sel;                 /* the selection's pages as pg indices */
	/* The round being planned / offered: pages (pg indices). */
	uint32_t *r_idx;
	uint32_t r_n;
	/* Registrations, one per run of offered memory. */
	struct kvmig_wire_region *runs;
	void **reg;
	uint32_t n_runs, cap_runs;
	/* Digests taken from the pager (kept ahead) / hashed here. */
	atomic_uint n_ahead, n_hashed;
	/* Hasher threads: digest pg[jobs[i]] for i < n_jobs, each claiming the
	 * next job; job_done[i] once job i is hashed. The main thread sends the
	 * digests of the done prefix (prefix: its own, advanced as it looks). */
	pthread_t hashers[KVMIG_MAX_HASH_THREADS];
	uint32_t n_hashers, n_threads;
	int efd;
	uint32_t *jobs, n_jobs, prefix;
	atomic_uchar *job_done;
	atomic_uint next_job, n_done;
	atomic_int stop;
	/* Final round: the pages whose digests go out, ready ones first. */
	uint32_t *dig_order, n_ready, n_dig;
	int paused;
	double commit_at;
	double reg_seconds;
	struct kvmig_migrate_stats *st;
};

/*
 * The sequences that move (all, or those named in the options) and their
 * pages, each once. Allocated pages no sequence uses stay where they are:
 * nothing at the destination would refer to them.
 */
static int select_pages(struct sender *s)
{
	const struct kvmig_migrate_opts *o = &s->ses.o;
	/* Reserved, exactly the tagged sequences; else those named, or all. */
	const char *const *names = s->tagged ? (const char *const *)s->tagged : o->seq_ids;
	uint32_t n_names = s->tagged ? s->n_tagged : o->n_seq_ids;
	struct kvmig_seq_list all = { 0 };
	uint64_t total = 0, *seen;
	uint32_t max_ix = 0;
	int ret;

	kvmig_seq_list_free(&s->seqs);
	free(s->ixs);
	s->ixs = NULL;
	s->n = 0;
	if ((ret = kvmig_pager_seqs(s->p, &all)) < 0)
		return ret;
	s->seqs.seqs = calloc(all.n ? all.n : 1, sizeof(*s->seqs.seqs));
	if (!s->seqs.seqs) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0, want = names ? n_names : all.n; i < want; i++) {
		uint32_t j = 0; /* every sequence: always the first one left */

		/* A name already taken is no longer in all: look in what was taken. */
		for (uint32_t q = 0; names && q < s->seqs.n; q++) {
			if (!strcmp(s->seqs.seqs[q].id, names[i])) {
				ret = kvmig_err(-EINVAL, "sequence \"%s\" is named twice", names[i]);
				goto out;
			}
		}
		if (names) {
			for (; j < all.n && strcmp(all.seqs[j].id, names[i]); j++)
				;
			if (j == all.n) {
				ret = kvmig_err(-ENOENT, "sequence \"%s\" is not in the source pager",
						names[i]);
				goto out;
			}
		}
		/* Move the entry over; the source list no longer owns it. */
		s->seqs.seqs[s->seqs.n++] = all.seqs[j];
		total += all.seqs[j].n_pages;
		all.seqs[j] = all.seqs[--all.n];
	}
	s->ixs = malloc(sizeof(*s->ixs) * (total ? total : 1));
	if (!s->ixs) {
		ret = -ENOMEM;
		goto out;
	}
	/* Sorted and each once, through a bitmap: this runs paused in every
	 * live migration, and a sort of every page reference costs more. */
	for (uint32_t i = 0; i < s->seqs.n; i++)
		for (uint32_t j = 0; j < s->seqs.seqs[i].n_pages; j++)
			max_ix = KVMIG_MAX(max_ix, s->seqs.seqs[i].page_ixs[j]);
	if (!(seen = calloc((size_t)max_ix / 64 + 1, sizeof(*seen)))) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < s->seqs.n; i++)
		for (uint32_t j = 0; j < s->seqs.seqs[i].n_pages; j++) {
			uint32_t ix = s->seqs.seqs[i].page_ixs[j];

			seen[ix / 64] |= 1ull << (ix % 64);
		}
	for (uint64_t w = 0; w <= max_ix / 64; w++)
		for (uint64_t b = seen[w]; b; b &= b - 1)
			s->ixs[s->n++] = (uint32_t)(w * 64 + (uint64_t)__builtin_ctzll(b));
	free(seen);
	ret = 0;
out:
	kvmig_seq_list_free(&all);
	return ret;
}

static int cmp_spage(const void *a, const void *b)
{
	const struct spage *x = a, *y = b;

	return x->ix < y->ix ? -1 : x->ix > y->ix;
}

/* Append page @ix and its extents (addresses here) to the table. */
static int add_page(struct sender *s, uint32_t ix)
{
	struct kvmig_extent tmp[MAX_HALF_EXTENTS];
	struct spage *pg;
	int ret;

	if (s->n_pg == s->cap_pg) {
		uint32_t cap = s->cap_pg ? s->cap_pg * 2 : 1024;
		struct spage *np = realloc(s->pg, sizeof(*np) * cap);

		if (!np)
			return -ENOMEM;
		s->pg = np;
		s->cap_pg = cap;
	}
	pg = &s->pg[s->n_pg];
	memset(pg, 0, sizeof(*pg));
	pg->ix = ix;
	pg->ext_off = s->n_ext;
	for (int half = 0; half < 2; half++) {
		uint32_t ne = 0;

		ret = kvmig_pager_extents(s->p, ix, (enum kvmig_half)half, tmp, MAX_HALF_EXTENTS, &ne);
		if (ret < 0)
			return kvmig_err_prefix(ret, "page %u", ix);
		if (s->n_ext + ne > s->cap_ext) {
			uint64_t cap = KVMIG_MAX(s->cap_ext * 2, s->n_ext + ne);
			struct kvmig_wire_extent *nx = realloc(s->ext, sizeof(*nx) * cap);

			if (!nx)
				return -ENOMEM;
			s->ext = nx;
			s->cap_ext = cap;
		}
		for (uint32_t j = 0; j < ne; j++)
			s->ext[s->n_ext++] = (struct kvmig_wire_extent){
				(uint64_t)(uintptr_t)tmp[j].addr, tmp[j].len };
		pg->n_ext += ne;
	}
	s->n_pg++;
	return 0;
}

/*
 * Plan the next round from the current selection: pages new to this
 * migration, and pages whose generation moved since their last offer. Each
 * generation is read now, before the offer, so a write after it shows up
 * as a change in the next round.
 */
static int plan_round(struct sender *s)
{
	uint32_t known = s->n_pg, j = 0;
	int ret;

	if ((ret = select_pages(s)) < 0)
		return ret;
	/* Both lists are sorted by ix: one merge pass finds the new pages. */
	for (uint32_t i = 0; i < s->n; i++) {
		while (j < known && s->pg[j].ix < s->ixs[i])
			j++;
		if ((j == known || s->pg[j].ix != s->ixs[i]) && (ret = add_page(s, s->ixs[i])) < 0)
			return ret;
	}
	if (s->n_pg > known) /* new pages were appended */
		qsort(s->pg, s->n_pg, sizeof(*s->pg), cmp_spage);
	free(s->r_idx);
	free(s->sel);
	s->r_idx = malloc(sizeof(*s->r_idx) * (s->n ? s->n : 1));
	s->sel = malloc(sizeof(*s->sel) * (s->n ? s->n : 1));
	if (!s->r_idx || !s->sel)
		return -ENOMEM;
	s->r_n = 0;
	j = 0;
	for (uint32_t i = 0; i < s->n; i++) {
		struct spage *pg;

		while (s->pg[j].ix < s->ixs[i])
			j++;
		pg = &s->pg[j];
		s->sel[i] = j;
		if ((ret = kvmig_pager_generation(s->p, pg->ix, &pg->plan_gen)) < 0)
			return ret;
		if (!pg->offered || pg->plan_gen != pg->offered_gen)
			s->r_idx[s->r_n++] = j;
	}
	return 0;
}

/*
 * Register the memory of the planned round's pages not offered before (the
 * offered pages' extents, sorted and merged where they touch: what the
 * receiver may read, and nothing else of the pager) and send REGIONS. The
 * first round always sends it, even empty.
 */
static int register_memory(struct sender *s, int first)
{
	struct kvmig_msg_regions rm;
	uint32_t base = s->n_runs, k;
	uint64_t n = 0; /* extents to register, then runs */
	double t0 = kvmig_now();
	int ret;

	if ((ret = KVMIG_FAULT_FAIL("send-register")) < 0)
		return ret;
	for (uint32_t i = 0; i < s->r_n; i++)
		if (!s->pg[s->r_idx[i]].offered)
			n += s->pg[s->r_idx[i]].n_ext;
	if (s->n_runs + n > s->cap_runs) {
		uint32_t cap = (uint32_t)KVMIG_MIN(KVMIG_MAX(s->cap_runs * 2, s->n_runs + n),
						  (uint64_t)UINT32_MAX);
		struct kvmig_wire_region *nr = realloc(s->runs, sizeof(*nr) * cap);
		void **ng = nr ? realloc(s->reg, sizeof(*ng) * cap) : NULL;

		if (nr)
			s->runs = nr;
		if (!nr || !ng)
			return -ENOMEM;
		s->reg = ng;
		s->cap_runs = cap;
	}
	k = base;
	for (uint32_t i = 0; i < s->r_n; i++) {
		const struct spage *pg = &s->pg[s->r_idx[i]];

		for (uint32_t j = 0; !pg->offered && j < pg->n_ext; j++)
			s->runs[k++] = (struct kvmig_wire_region){
				.addr = s->ext[pg->ext_off + j].addr,
				.len = s->ext[pg->ext_off + j].len };
	}
	if (k > base) /* s->runs may still be NULL: nothing offered */
		qsort(s->runs + base, k - base, sizeof(*s->runs), kvmig_wire_region_cmp);
	n = base; /* runs so far; s->n_runs moves only as they are registered */
	for (uint32_t i = base; i < k; i++) {
		struct kvmig_wire_region *last = n > base ? &s->runs[n - 1] : NULL;

		if (last && last->addr + last->len >= s->runs[i].addr) {
			uint64_t end = KVMIG_MAX(last->addr + last->len, s->runs[i].addr + s->runs[i].len);

			last->len = end - last->addr;
		} else {
			s->runs[n++] = s->runs[i];
		}
	}
	if (n > KVMIG_WIRE_MAX_REGIONS)
		return kvmig_err(-ENOBUFS, "the offered pages lie in %llu separate memory runs; at "
				 "most %u can be registered", (unsigned long long)n,
				 KVMIG_WIRE_MAX_REGIONS);
	for (uint32_t i = base; i < n; i++) {
		ret = s->ses.ops->reg_remote(s->ses.c, (void *)(uintptr_t)s->runs[i].addr,
					     s->runs[i].len, &s->runs[i].key, &s->reg[i]);
		if (ret < 0) /* deregister_memory() undoes the ones before */
			return kvmig_err_prefix(ret, "cannot register page memory");
		s->n_runs = i + 1;
	}
	s->reg_seconds += kvmig_now() - t0;
	if (!first && s->n_runs == base)
		return 0;
	rm.n = s->n_runs - base;
	rm.r = s->runs + base;
	if ((ret = kvmig_wire_put_regions(&s->ses.wb, &rm)) < 0)
		return ret;
	return session_flush(&s->ses);
}

static void deregister_memory(struct sender *s)
{
	for (uint32_t i = 0; s->reg && i < s->n_runs; i++)
		s->ses.ops->dereg(s->ses.c, &s->reg[i]);
}

/* Send the planned round's OFFERs; the pages' offered generations move on. */
static int send_offers(struct sender *s, uint32_t round)
{
	struct kvmig_offer_page *op;
	struct kvmig_round_stats *rs = &s->st->round[s->st->n_rounds];
	int ret;

	if ((ret = KVMIG_FAULT_FAIL("send-offer")) < 0)
		return ret;
	if (!(op = calloc(KVMIG_OFFER_CHUNK, sizeof(*op))))
		return -ENOMEM;
	for (uint32_t at = 0; at < s->r_n || (at == 0 && s->r_n == 0); at += KVMIG_OFFER_CHUNK) {
		struct kvmig_msg_offer m = { round, KVMIG_MIN(KVMIG_OFFER_CHUNK, s->r_n - at), op, NULL };

		for (uint32_t i = 0; i < m.n; i++) {
			struct spage *pg = &s->pg[s->r_idx[at + i]];

			op[i] = (struct kvmig_offer_page){ pg->ix, pg->n_ext, pg->plan_gen,
							   s->ext + pg->ext_off };
			pg->offered = 1;
			pg->offered_gen = pg->plan_gen;
			pg->digest_sent = 0; /* the receiver drops it: new bytes coming */
		}
		if ((ret = kvmig_wire_put_offer(&s->ses.wb, &m)) < 0 || (ret = session_flush(&s->ses)) < 0)
			break;
		if (s->r_n == 0)
			break;
	}
	free(op);
	if (ret < 0)
		return ret;
	rs->pages = s->r_n;
	rs->bytes = (uint64_t)s->r_n * s->page_bytes;
	s->st->bytes_sent += rs->bytes;
	s->ses.ev.pages_total += s->r_n;
	s->ses.ev.bytes_total += rs->bytes;
	return 0;
}

/*
 * The digests the pager keeps for @pg, if they are of generation @gen: into
 * pg->k / pg->v (the test-only wrong digest applied as to a hashed one).
 * Return: 1 if taken.
 */
static int take_kept(struct sender *s, struct spage *pg, uint64_t gen)
{
	struct kvmig_page_digest d;
	uint64_t bad;

	if (!gen || kvmig_pager_digest_get(s->p, pg->ix, &d) < 0 || d.gen != gen)
		return 0;
	memcpy(pg->k.b, d.k, sizeof(pg->k.b));
	memcpy(pg->v.b, d.v, sizeof(pg->v.b));
	if (kvmig_fault("send-bad-digest", &bad) && bad == pg->ix)
		pg->v.b[0] ^= 1;
	pg->hashed_gen = gen;
	pg->hashed = 1;
	atomic_fetch_add(&s->n_ahead, 1);
	return 1;
}

/* Keep what the hasher computed, for later migrations, when the page's
 * generation did not move while it hashed. */
static void keep_hashed(struct sender *s, const struct spage *pg)
{
	struct kvmig_page_digest d;
	uint64_t now;

	if (!pg->hashed_gen || kvmig_pager_generation(s->p, pg->ix, &now) < 0 ||
	    now != pg->hashed_gen)
		return;
	d.gen = now;
	memcpy(d.k, pg->k.b, sizeof(d.k));
	memcpy(d.v, pg->v.b, sizeof(d.v));
	(void)kvmig_pager_digest_put(s->p, pg->ix, &d); /* -ENOTSUP: it keeps none */
}

static void hash_half(const struct kvmig_wire_extent *ext, uint32_t n, struct kvmig_digest *d)
{
	struct iovec iov[MAX_HALF_EXTENTS];

	for (uint32_t i = 0; i < n; i++)
		iov[i] = (struct iovec){ (void *)(uintptr_t)ext[i].addr, ext[i].len };
	kvmig_digest_computev(iov, (int)n, d);
}

/*
 * Hash the job pages. The generation is read BEFORE the bytes: if it is
 * the same once the pager is paused, no write overlapped the hashing (a
 * write bumps it when done, and pause waits for a write in progress).
 */
static void *hasher_main(void *arg)
{
	struct sender *s = arg;
	uint64_t one = 1;
	uint32_t i;

	while (!atomic_load(&s->stop) && (i = atomic_fetch_add(&s->next_job, 1)) < s->n_jobs) {
		struct spage *pg = &s->pg[s->jobs[i]];
		const struct kvmig_wire_extent *ext = s->ext + pg->ext_off;
		uint32_t h = pg->n_ext / 2;
		uint64_t bad;

		uint64_t gen = 0;

		kvmig_pager_generation(s->p, pg->ix, &gen);
		if (!take_kept(s, pg, gen)) {
			pg->hashed_gen = gen;
			hash_half(ext, h, &pg->k);
			hash_half(ext + h, h, &pg->v);
			atomic_fetch_add(&s->n_hashed, 1);
			keep_hashed(s, pg);
			if (kvmig_fault("send-bad-digest", &bad) && bad == pg->ix)
				pg->v.b[0] ^= 1;
			pg->hashed = 1;
		}
		atomic_store_explicit(&s->job_done[i], 1, memory_order_release);
		/* An eventfd write only fails if the counter would overflow: the
		 * main thread also re-reads the done flags every time it wakes. */
		if ((atomic_fetch_add(&s->n_done, 1) + 1) % HASH_SIGNAL_EVERY == 0)
			(void)!write(s->efd, &one, sizeof(one));
	}
	(void)!write(s->efd, &one, sizeof(one));
	return NULL;
}

/* Main thread: how many jobs from the first on are hashed. */
static uint32_t hashed_prefix(struct sender *s)
{
	while (s->prefix < s->n_jobs &&
	       atomic_load_explicit(&s->job_done[s->prefix], memory_order_acquire))
		s->prefix++;
	return s->prefix;
}

/* Hash @n pages (indices into s->pg) in the background. */
static int start_hasher(struct sender *s, const uint32_t *idx, uint32_t n)
{
	int ret;

	free(s->jobs);
	free((void *)s->job_done);
	s->job_done = calloc(n ? n : 1, sizeof(*s->job_done));
	if (!(s->jobs = malloc(sizeof(*s->jobs) * (n ? n : 1))) || !s->job_done)
		return -ENOMEM;
	memcpy(s->jobs, idx, sizeof(*idx) * n);
	s->n_jobs = n;
	s->prefix = 0;
	atomic_store(&s->next_job, 0);
	atomic_store(&s->n_done, 0);
	atomic_store(&s->stop, 0);
	if (s->efd < 0 && (s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
		return kvmig_err(-errno, "eventfd: %s", strerror(errno));
	if (!s->ses.o.verify || n == 0) {
		/* Nothing to hash (or nothing to send): no thread. */
		s->prefix = n;
		return 0;
	}
	for (uint32_t t = 0; t < KVMIG_MIN(s->n_threads, n); t++) {
		if ((ret = pthread_create(&s->hashers[t], NULL, hasher_main, s)) != 0) {
			if (s->n_hashers)
				break; /* fewer threads: the ones running take every job */
			return kvmig_err(-ret, "cannot start a hashing thread: %s", strerror(ret));
		}
		s->n_hashers++;
	}
	return 0;
}

/* @finish: let it hash every job; else stop it early. */
static void stop_hasher(struct sender *s, int finish)
{
	if (!finish)
		atomic_store(&s->stop, 1);
	for (uint32_t t = 0; t < s->n_hashers; t++)
		pthread_join(s->hashers[t], NULL);
	s->n_hashers = 0;
}

/* The migrated sequences' ids (borrowed from s->seqs). */
static const char **seq_ids(const struct sender *s)
{
	const char **ids = malloc(sizeof(*ids) * (s->seqs.n ? s->seqs.n : 1));

	for (uint32_t i = 0; ids && i < s->seqs.n; i++)
		ids[i] = s->seqs.seqs[i].id;
	return ids;
}

/*
 * The final round's sequences, paused: tag them with our record. From here
 * no other process can move, remove or re-install them (another migration
 * is refused with EBUSY, a remove too), so what was offered, hashed and read
 * is what the decision applies to. While the record is SENDING they still
 * count as runnable; an abort untags them.
 */
static int reserve(struct sender *s)
{
	const char **ids = seq_ids(s);
	int ret;

	if (!ids)
		return -ENOMEM;
	ret = kvmig_pager_record_tag(s->p, &s->mig, ids, s->seqs.n);
	free(ids);
	if (ret < 0)
		return kvmig_err_prefix(ret, "cannot reserve the sequences for this migration");
	SESSION_DIE("send-tagged");
	if (!(s->tagged = calloc(s->seqs.n ? s->seqs.n : 1, sizeof(*s->tagged))))
		return -ENOMEM;
	for (s->n_tagged = 0; s->n_tagged < s->seqs.n; s->n_tagged++)
		if (!(s->tagged[s->n_tagged] = strdup(s->seqs.seqs[s->n_tagged].id)))
			return -ENOMEM;
	return 0;
}

/*
 * The final round's plan: plan, reserve what it names, then plan again from
 * the tagged sequences alone. Between the first plan and the tag another
 * process may have changed one (removed it and installed another under the
 * same id); once tagged none can change, so the second plan is what the
 * decision applies to.
 */
static int plan_final(struct sender *s)
{
	int ret;

	if ((ret = plan_round(s)) < 0)
		return ret;
	if (kvmig_fault("stop-send-planned", NULL))
		raise(SIGSTOP); /* test-only: planned, not yet reserved */
	if ((ret = reserve(s)) < 0)
		return ret;
	return plan_round(s);
}

/*
 * SEND_OFFERING -> SEND_DECIDED: the receiver holds everything, verified,
 * pending under its record. One store in our record is the decision (move:
 * the tagged sequences depart, no longer runnable here; copy: committed).
 */
static int decide(struct sender *s)
{
	int ret;

	if (s->state != SEND_OFFERING)
		return kvmig_err(-EINVAL, "decision taken in the wrong state %d", (int)s->state);
	ret = kvmig_pager_record_set(s->p, &s->mig, KVMIG_REC_SENDING,
				     s->ses.o.mode == KVMIG_MODE_MOVE ? KVMIG_REC_DEPARTED :
				     KVMIG_REC_COMMITTED);
	if (ret < 0)
		return kvmig_err_prefix(ret, "cannot record the decision");
	s->state = SEND_DECIDED;
	SESSION_DIE("send-decided");
	return 0;
}

/*
 * SEND_DECIDED -> SEND_RELEASED: the receiver activated them. Move mode
 * removes the sequences and frees the pages nobody else uses (counted
 * first, for the report); both modes drop the record.
 */
static int release(struct sender *s)
{
	struct kvmig_seq_list all = { 0 };
	const char **ids = seq_ids(s);
	uint32_t *unused = malloc(sizeof(*unused) * (s->n ? s->n : 1)), nu = 0;
	int ret = -ENOMEM;

	if (!ids || !unused)
		goto out;
	if (s->ses.o.mode == KVMIG_MODE_MOVE &&
	    ((ret = kvmig_pager_seqs(s->p, &all)) < 0 ||
	     (ret = kvmig_pages_unused(&all, ids, s->seqs.n, s->ixs, s->n, unused, &nu)) < 0))
		goto out;
	ret = kvmig_pager_record_end(s->p, &s->mig, s->ses.o.mode == KVMIG_MODE_MOVE ?
				     KVMIG_REC_DEPARTED : KVMIG_REC_COMMITTED, 1);
	if (ret == -ENOENT)
		ret = nu = 0; /* a resolver released it meanwhile */
	if (ret < 0)
		goto out;
	s->st->pages_freed = nu;
	s->state = SEND_RELEASED;
out:
	kvmig_seq_list_free(&all);
	free(ids);
	free(unused);
	return ret;
}

/* SEND_OFFERING -> gone: the source keeps its sequences running. */
static void abort_record(struct sender *s)
{
	struct kvmig_err_saved keep;

	if (s->state != SEND_OFFERING)
		return;
	kvmig_err_save(&keep);
	/* Should this fail, the record stays SENDING with this process as its
	 * owner: gc aborts it once the process is gone. */
	kvmig_pager_record_end(s->p, &s->mig, KVMIG_REC_SENDING, 0);
	kvmig_err_restore(&keep, 0);
	s->state = SEND_CONNECTING;
}

/* Send the digests that are ready, in dig_order. */
static int send_digests_ready(struct sender *s, uint32_t *sent)
{
	struct kvmig_manifest_page chunk[64];
	uint32_t ready = s->n_ready + hashed_prefix(s);
	int ret;

	if (!s->ses.o.verify) {
		*sent = s->n_dig;
		return 0;
	}
	while (*sent < ready) {
		uint32_t k = KVMIG_MIN(KVMIG_ARRAY_SIZE(chunk), ready - *sent);

		if ((ret = KVMIG_FAULT_FAIL("send-digests")) < 0)
			return ret;
		for (uint32_t i = 0; i < k; i++) {
			const struct spage *pg = &s->pg[s->dig_order[*sent + i]];

			chunk[i] = (struct kvmig_manifest_page){ pg->ix, pg->k, pg->v };
		}
		if ((ret = kvmig_wire_put_digests(&s->ses.wb, chunk, k)) < 0)
			return ret;
		*sent += k;
		if (s->ses.wb.len >= (256u << 10) && (ret = session_flush(&s->ses)) < 0)
			return ret;
	}
	return s->ses.wb.len ? session_flush(&s->ses) : 0;
}

/*
 * Paused: every selected page needs a digest of its bytes as they are now.
 * One hashed earlier stands if its generation has not moved since (read
 * before the hashing); the others go to the hasher. Digests go out in that
 * order: the ready ones first.
 */
static int plan_digests(struct sender *s)
{
	uint32_t *jobs, nj = 0;
	int ret;

	free(s->dig_order);
	s->dig_order = malloc(sizeof(*s->dig_order) * (s->n ? s->n : 1));
	jobs = malloc(sizeof(*jobs) * (s->n ? s->n : 1));
	if (!s->dig_order || !jobs) {
		free(jobs);
		return -ENOMEM;
	}
	s->n_ready = 0;
	for (uint32_t i = 0; i < s->n; i++) {
		const struct spage *pg = &s->pg[s->sel[i]];

		/* plan_gen was read paused: it is the generation now. */
		if (pg->digest_sent)
			continue; /* the receiver has it, and the page was not offered since */
		if (s->ses.o.verify && ((pg->hashed && pg->hashed_gen == pg->plan_gen) ||
					take_kept(s, &s->pg[s->sel[i]], pg->plan_gen)))
			s->dig_order[s->n_ready++] = s->sel[i];
		else
			jobs[nj++] = s->sel[i];
	}
	memcpy(s->dig_order + s->n_ready, jobs, sizeof(*jobs) * nj);
	s->n_dig = s->n_ready + nj;
	ret = start_hasher(s, jobs, nj);
	free(jobs);
	return ret;
}

/* Pages served so far, for PROGRESS events: bytes read / page size. */
static void refresh_served(struct session *ses)
{
	struct sender *s = kvmig_container_of(ses, struct sender, ses);
	struct xport_counters cnt;

	ses->ops->counters(ses->c, &cnt);
	ses->ev.bytes_done = cnt.bytes_served;
	ses->ev.pages_done = s->page_bytes ?
		(uint32_t)KVMIG_MIN(cnt.bytes_served / s->page_bytes, ses->ev.pages_total) : 0;
}

/* Test-only: fail, cut the connection or go silent while the receiver
 * reads (every page offered, FINAL not yet sent). */
static int transfer_faults(struct sender *s)
{
	uint64_t stall_ms;
	int ret;

	if ((ret = KVMIG_FAULT_FAIL("send-transfer")) < 0)
		return ret;
	SESSION_DIE("send-transfer");
	if (kvmig_fault("send-cut", NULL)) {
		s->ses.ops->close(&s->ses.c);
		return kvmig_err(-ECONNRESET, "fault injected at send-cut");
	}
	if (kvmig_fault("send-stall", &stall_ms))
		usleep((useconds_t)(stall_ms * 1000));
	return 0;
}

/* Serve reads and send digests until the receiver commits or gives up. */
static int serve(struct sender *s)
{
	uint32_t sent = 0;
	int final_sent = 0, ret;

	session_phase(&s->ses, "transfer");
	for (;;) {
		struct xport_msg *m = NULL;

		if ((ret = send_digests_ready(s, &sent)) < 0)
			return ret;
		if (sent == s->n_dig && !final_sent) {
			if ((ret = transfer_faults(s)) < 0)
				return ret;
			if ((ret = kvmig_wire_put_final(&s->ses.wb, s->seqs.seqs, s->seqs.n)) < 0 ||
			    (ret = session_flush(&s->ses)) < 0)
				return ret;
			final_sent = 1;
			session_phase(&s->ses, "verify");
		}
		ret = session_wait_msg(&s->ses, final_sent ? -1 : s->efd, &m);
		if (ret < 0)
			return ret;
		if (ret == 0) {
			uint64_t v;

			if (read(s->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				return kvmig_err(-errno, "eventfd: %s", strerror(errno));
			continue;
		}
		if (m->hdr.type != KVMIG_MSG_COMMIT || !final_sent || m->hdr.len) {
			ret = m->hdr.type == KVMIG_MSG_COMMIT && !final_sent ?
				kvmig_err(-EBADMSG, "receiver committed before it had every digest "
					  "and the sequences") :
				m->hdr.type == KVMIG_MSG_COMMIT ?
				kvmig_err(-EBADMSG, "COMMIT message carries %u payload bytes",
					  m->hdr.len) :
				session_unexpected(m, "COMMIT");
			session_msg_free(&m);
			return ret;
		}
		session_msg_free(&m);
		/* Test-only: fail on receiving COMMIT, before the commit point. */
		if ((ret = KVMIG_FAULT_FAIL("send-commit-recv")) < 0)
			return ret;
		SESSION_DIE("send-commit-recv");
		break;
	}
	/* The commit point (docs/PROTOCOL.md): recorded in our pager before
	 * anyone acts on it. From here the migration commits, whatever dies. */
	if ((ret = decide(s)) < 0)
		return ret;
	s->commit_at = kvmig_now();
	session_phase(&s->ses, "commit");
	session_progress(&s->ses, 1);
	/* A lost decision changes nothing here: the receiver is prepared, and
	 * resolution activates it from our record. */
	if (kvmig_fault("send-ack-lost", NULL))
		s->ses.ops->close(&s->ses.c); /* test-only: the ACK and the connection are lost */
	else if (kvmig_wire_put_empty(&s->ses.wb, KVMIG_MSG_COMMIT_ACK) == 0)
		s->ses.ops->send(s->ses.c, s->ses.wb.p, s->ses.wb.len);
	s->ses.wb.len = 0;
	SESSION_DIE("send-ack-sent");
	return 0;
}

/* In doubt after the decision: the record stays, driven by nobody, so that
 * anyone may resolve it from the receiver's (this process may live on, in
 * an engine). Keeps the last error. */
static void disown(struct sender *s)
{
	struct kvmig_err_saved keep;

	kvmig_err_save(&keep);
	kvmig_pager_record_disown(s->p, &s->mig);
	kvmig_err_restore(&keep, 0);
}

/* After the decision: the receiver says it activated them, then we release
 * our copy and tell it to drop its record. */
static int finish(struct sender *s)
{
	struct xport_msg *m = NULL;
	char hex[33];
	int ret;

	kvmig_id_format(&s->mig, hex);
	ret = s->ses.c ? session_wait_msg(&s->ses, -1, &m) :
		kvmig_err(-ECONNRESET, "the connection is gone");
	if (ret > 0 && (m->hdr.type != KVMIG_MSG_ACTIVATED || m->hdr.len))
		ret = session_unexpected(m, "ACTIVATED");
	session_msg_free(&m);
	if (ret < 0)
		disown(s);
	if (ret < 0)
		return kvmig_err(-ENOTCONN, "migration %s committed, but the receiver did not "
				 "confirm it activated the sequences (%s). They stay here %s until "
				 "resolved from the receiver's record: run kvmig send to it again, "
				 "or kvmig pager resolve", hex, kvmig_last_error(),
				 s->ses.o.mode == KVMIG_MODE_MOVE ? "departed (not running)" :
				 "running, and the record stays");
	SESSION_DIE("send-activated-recv");
	if ((ret = release(s)) < 0 && (disown(s), 1))
		return kvmig_err_prefix(-ENOTCONN, "migration %s committed and the receiver runs "
					"the sequences, but this side could not release its copy; "
					"kvmig pager resolve finishes it", hex);
	SESSION_DIE("send-released");
	if (kvmig_wire_put_empty(&s->ses.wb, KVMIG_MSG_FORGET) == 0)
		s->ses.ops->send(s->ses.c, s->ses.wb.p, s->ses.wb.len);
	s->ses.wb.len = 0;
	return 0;
}

/* Live: wait until the receiver has every page of @round (ROUND back). */
static int wait_round(struct sender *s, uint32_t round)
{
	struct kvmig_msg_round mr;
	struct xport_msg *m = NULL;
	int ret;

	if ((ret = kvmig_wire_put_round(&s->ses.wb, &(struct kvmig_msg_round){ round, s->r_n })) < 0 ||
	    (ret = session_flush(&s->ses)) < 0)
		return ret;
	uint64_t fail_round;

	if (kvmig_fault("send-round", &fail_round) && fail_round == round)
		return kvmig_err(-EIO, "fault injected at send-round:%u", round);
	if ((ret = session_wait_msg(&s->ses, -1, &m)) < 0)
		return ret;
	if (m->hdr.type != KVMIG_MSG_ROUND)
		ret = session_unexpected(m, "ROUND");
	else if ((ret = kvmig_wire_get_round(m->payload, m->hdr.len, &mr)) == 0 &&
		 (mr.round != round || mr.pages != s->r_n))
		ret = kvmig_err(-EBADMSG, "receiver finished round %u of %u pages; this was round "
				"%u of %u", mr.round, mr.pages, round, s->r_n);
	session_msg_free(&m);
	return ret;
}

/*
 * Live, after a round: send the digests of its pages that were hashed as
 * offered (generation unchanged from the offer to the start of the hashing),
 * so the pause carries only the digests of what changed since. A page
 * written later is offered again, which voids the digest on both sides.
 */
static int send_settled_digests(struct sender *s)
{
	struct kvmig_manifest_page chunk[64];
	uint32_t k = 0;
	int ret;

	for (uint32_t i = 0; s->ses.o.verify && i <= s->r_n; i++) {
		struct spage *pg = i < s->r_n ? &s->pg[s->r_idx[i]] : NULL;

		if (pg && pg->hashed && pg->hashed_gen == pg->offered_gen) {
			chunk[k++] = (struct kvmig_manifest_page){ pg->ix, pg->k, pg->v };
			pg->digest_sent = 1;
		}
		if (k && (k == KVMIG_ARRAY_SIZE(chunk) || !pg)) {
			if ((ret = kvmig_wire_put_digests(&s->ses.wb, chunk, k)) < 0)
				return ret;
			k = 0;
		}
	}
	return s->ses.wb.len ? session_flush(&s->ses) : 0;
}

/*
 * Live pre-copy: rounds while the engine runs, until what is dirty would
 * move within the downtime budget at the last round's rate (bytes over the
 * round's whole time, fixed costs included) and stopped shrinking, or
 * max_rounds rounds ran. Returns the number of rounds run.
 */
static int precopy(struct sender *s)
{
	double budget = s->ses.o.max_downtime_ms / 1000.0, bw = 0;
	uint32_t round;
	int ret;

	for (round = 0; round < s->ses.o.max_rounds; round++) {
		struct kvmig_round_stats *rs = &s->st->round[s->st->n_rounds];
		double t0 = kvmig_now();
		uint64_t stall_ms;

		/* Test-only: let the engine write for a while before each round
		 * after round 0, so tests can count on dirty pages. */
		if (round > 0 && kvmig_fault("send-round-stall", &stall_ms))
			usleep((useconds_t)(stall_ms * 1000));
		if ((ret = plan_round(s)) < 0)
			return ret;
		/* The stop rule and why (docs/PROTOCOL.md, "The stop rule"):
		 * nothing dirty, or (from round 2 on, at a small round's rate)
		 * the rest fits the budget and grew since the last round. */
		if (round > 0 && s->r_n == 0)
			break;
		if (round > 1 && (double)s->r_n * s->page_bytes <= bw * budget &&
		    s->r_n > s->st->round[s->st->n_rounds - 1].pages)
			break;
		session_phase(&s->ses, round == 0 ? "offer" : "round");
		if ((ret = register_memory(s, round == 0)) < 0 || (ret = send_offers(s, round)) < 0 ||
		    (ret = start_hasher(s, s->r_idx, s->r_n)) < 0)
			return ret;
		ret = wait_round(s, round);
		stop_hasher(s, ret == 0);
		if (ret < 0 || (ret = send_settled_digests(s)) < 0)
			return ret;
		rs->seconds = kvmig_now() - t0;
		bw = rs->seconds > 0 ? (double)rs->bytes / rs->seconds : 0;
		s->st->n_rounds++;
		session_progress(&s->ses, 1);
	}
	return (int)round;
}

/*
 * Resume the source pager. Its lock may be held by a process that is
 * stopped (EBUSY after the lock's deadline): try again for one timeout, as
 * a pause left behind keeps the engine stopped for as long as this process
 * lives (it is dropped when the process exits).
 */
static int resume(struct sender *s)
{
	double until = kvmig_now() + s->ses.o.timeout_ms / 1000.0;
	int ret;

	while ((ret = kvmig_pager_resume(s->p)) == -EBUSY && kvmig_now() < until)
		;
	if (ret < 0)
		kvmig_err_prefix(ret, "the source pager stays paused by this process until it "
				 "exits");
	return ret;
}

static int handshake(struct sender *s)
{
	struct kvmig_msg_hello peer;
	struct xport_msg *m = NULL;
	int ret;

	session_phase(&s->ses, "handshake");
	if ((ret = KVMIG_FAULT_FAIL("send-handshake")) < 0)
		return ret;
	if (getrandom(&s->mig, sizeof(s->mig), 0) != (ssize_t)sizeof(s->mig))
		return kvmig_err(-EIO, "cannot draw a migration id: %s", strerror(errno));
	ret = session_hello(s->p, ROLE_SENDER, (s->ses.o.verify ? 0 : KVMIG_HELLO_NO_VERIFY) |
			    (s->ses.auth ? KVMIG_HELLO_AUTH : 0) | (s->ses.o.live ? KVMIG_HELLO_LIVE : 0) |
			    (paths_wanted(&s->ses) ? KVMIG_HELLO_PATHS : 0),
			    &s->mig, &s->hello);
	if (ret < 0 || (ret = kvmig_wire_put_hello(&s->ses.wb, &s->hello)) < 0 ||
	    (s->ses.auth && (ret = session_auth_challenge(&s->ses)) < 0) ||
	    (ret = session_flush(&s->ses)) < 0)
		return ret;
	if ((ret = session_wait_msg(&s->ses, -1, &m)) < 0)
		return ret;
	if (m->hdr.type != KVMIG_MSG_HELLO)
		ret = session_unexpected(m, "HELLO");
	else if ((ret = kvmig_wire_get_hello(m->payload, m->hdr.len, &peer)) == 0 &&
		 (ret = session_auth_agree(&s->ses, &peer)) == 0)
		ret = session_hello_match(&s->hello, &peer);
	session_msg_free(&m);
	if (ret < 0)
		return ret;
	s->peer_pager = peer.pager;
	/* The receiver proves the secret before anything here is paused or
	 * registered, then we prove it in turn. */
	if (s->ses.auth &&
	    ((ret = session_auth_take_challenge(&s->ses)) < 0 ||
	     (ret = session_auth_check(&s->ses, ROLE_RECEIVER)) < 0 ||
	     (ret = session_auth_prove(&s->ses, ROLE_SENDER)) < 0 || (ret = session_flush(&s->ses)) < 0))
		return ret;
	/* Earlier migrations between these two pagers that a death left
	 * unresolved, from both sides' records. */
	if ((ret = session_sync_records(&s->ses, s->p, &s->peer_pager, &s->st->resolved)) < 0)
		return ret;
	return paths_wanted(&s->ses) ? paths_connect(&s->ses) : 0;
}

/* SEND_CONNECTING -> SEND_OFFERING: our record, before anything is offered. */
static int begin_record(struct sender *s)
{
	struct kvmig_record rec = { .role = KVMIG_ROLE_SOURCE, .state = KVMIG_REC_SENDING };
	int ret;

	rec.id = s->mig;
	rec.move = s->ses.o.mode == KVMIG_MODE_MOVE;
	rec.peer_pager = s->peer_pager;
	snprintf(rec.peer_addr, sizeof(rec.peer_addr), "%s", s->ses.ops->peer_addr(s->ses.c));
	if ((ret = kvmig_pager_record_create(s->p, &rec)) < 0)
		return kvmig_err_prefix(ret, "cannot record the migration in the source pager");
	s->state = SEND_OFFERING;
	SESSION_DIE("send-record");
	return 0;
}

int kvmig_migrate_send(struct kvmig_pager *p, const char *addr,
		       const struct kvmig_migrate_opts *opts, struct kvmig_migrate_stats *stats)
{
	struct kvmig_migrate_stats st = { 0 };
	struct sender *s = calloc(1, sizeof(*s));
	double t0 = kvmig_now(), tp = 0, tx = 0;
	int ret, rret, round = 0;

	if (!s)
		return -ENOMEM;
	s->p = p;
	s->efd = -1;
	s->st = &st;
	s->addr = addr;
	if ((ret = session_init(&s->ses, opts, ROLE_SENDER)) < 0)
		goto out;
	s->n_threads = s->ses.o.hash_threads;
	if (!s->n_threads) { /* what the machine can spare: the main thread serves */
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);

		s->n_threads = cpus > 2 ? (uint32_t)KVMIG_MIN(cpus - 1, 8) : 1;
	}
	s->ses.ops = session_pick(s->ses.o.transport, addr, 0);
	s->ses.ev.transport = s->ses.ops->name;
	session_phase(&s->ses, "connect");
	if ((ret = s->ses.ops->connect(addr, (int)s->ses.o.timeout_ms, s->ses.o.cancel_fd,
				       &s->ses.c)) < 0)
		goto out;
	session_connected(&s->ses);
	session_handshake_begin(&s->ses);
	if ((ret = handshake(s)) < 0)
		goto fail;
	session_handshake_done(&s->ses);
	if ((ret = begin_record(s)) < 0)
		goto fail;
	s->page_bytes = 2 * s->hello.half_bytes;
	s->ses.refresh = refresh_served;
	tx = kvmig_now();
	if (s->ses.o.live && (round = precopy(s)) < 0) {
		ret = round;
		goto fail;
	}

	session_phase(&s->ses, "pause");
	if ((ret = kvmig_pager_pause(p)) < 0) {
		kvmig_err_prefix(ret, "cannot pause the source pager");
		goto fail;
	}
	s->paused = 1;
	tp = kvmig_now();
	/* The final round: what is still dirty, then digests of the paused state. */
	if ((ret = plan_final(s)) < 0)
		goto fail;
	session_phase(&s->ses, "register");
	if ((ret = register_memory(s, round == 0)) < 0)
		goto fail;
	session_phase(&s->ses, "offer");
	if ((ret = send_offers(s, (uint32_t)round)) < 0 || (ret = plan_digests(s)) < 0 ||
	    (ret = serve(s)) < 0)
		goto fail;
	st.round[st.n_rounds++].seconds = s->commit_at - tp;
	st.transfer_seconds = kvmig_now() - tx;
	st.pages = s->n;
	st.seqs = s->seqs.n;
	st.bytes = (uint64_t)s->n * s->page_bytes;
	st.pages_verified = s->ses.o.verify ? s->n : 0;
	/* Decided: the engine may run again (departed sequences it will not). */
	stop_hasher(s, 0);
	if (s->ses.c)
		deregister_memory(s);
	s->n_runs = 0;
	session_phase(&s->ses, "resume");
	rret = resume(s);
	st.pause_seconds = kvmig_now() - tp;
	s->paused = 0;
	ret = finish(s);
	if (ret == 0 && rret < 0)
		ret = kvmig_err_prefix(rret, "cannot resume the source pager");
	goto out;
fail:
	if (s->state < SEND_DECIDED) {
		session_abort(&s->ses, ret);
		abort_record(s);
	}
	if (s->state == SEND_DECIDED) { /* a failure after the decision: in doubt */
		disown(s);
		ret = kvmig_err_prefix(-ENOTCONN, "migration committed, then");
	}
out:
	stop_hasher(s, 0);
	if (s->efd >= 0)
		close(s->efd);
	if (s->ses.c)
		deregister_memory(s);
	if (s->paused) {
		session_phase(&s->ses, "resume");
		rret = resume(s);
		st.pause_seconds = kvmig_now() - tp;
		if (rret < 0 && ret == 0)
			ret = kvmig_err_prefix(rret, "cannot resume the source pager");
	}
	st.register_seconds = s->reg_seconds;
	st.migration = s->mig;
	stop_hasher(s, 0);
	st.digests_ahead = atomic_load(&s->n_ahead);
	st.pages_hashed = atomic_load(&s->n_hashed);
	st.hash_threads = s->n_threads;
	snprintf(st.transport, sizeof(st.transport), "%s",
		 s->ses.ev.transport ? s->ses.ev.transport : s->ses.ops->name);
	st.paths = s->ses.n_paths;
	st.seconds = kvmig_now() - t0;
	if (stats)
		*stats = st;
	session_fini(&s->ses);
	kvmig_seq_list_free(&s->seqs);
	for (uint32_t i = 0; s->tagged && i < s->n_tagged; i++)
		free(s->tagged[i]);
	free(s->tagged);
	free(s->ixs);
	free(s->pg);
	free(s->ext);
	free(s->r_idx);
	free(s->sel);
	free(s->runs);
	free(s->reg);
	free(s->jobs);
	free((void *)s->job_done);
	free(s->dig_order);
	free(s);
	return ret;
}
