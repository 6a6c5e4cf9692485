/* SPDX-License-Identifier: MIT */
/*
 * transport/send.c - the sending half of a migration.
 *
 *   connect, HELLO both ways (meta and layout must match)
 *   pause the pager (everything below runs paused; any failure resumes it)
 *   select pages: all occupied, or the union of --seqs' pages (shared once)
 *   register the page memory once (remote READ only), send REGIONS
 *   send OFFERs: per page its K then V extents (addresses here) and generation
 *   a hasher thread digests the offered pages while the main thread serves
 *     the receiver's reads; DIGESTS go out as they are ready, then FINAL
 *   COMMIT from the receiver: move mode removes the sequences and frees the
 *     pages no remaining sequence uses; deregister; COMMIT_ACK; resume
 *
 * The hasher reads page memory the main thread only sends from, and the
 * pager is paused, so the bytes it hashes are the bytes the receiver reads.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <kvmig/cas.h>

#include "engine.h"
#include "internal.h"

#define MAX_HALF_EXTENTS (KVMIG_WIRE_MAX_EXTENTS / 2)
#define HASH_SIGNAL_EVERY 64u

struct sender {
	struct engine e;
	struct kvmig_pager *p;
	struct kvmig_msg_hello hello;
	uint32_t *ixs;                 /* offered pages, ascending */
	uint32_t n;
	struct kvmig_seq_list seqs;    /* the sequences that move */
	struct kvmig_offer_page *pages;
	struct kvmig_wire_extent *ext; /* every page's extents, K then V */
	struct kvmig_manifest_page *dig;
	struct kvmig_wire_region *runs; /* offered memory, one registration each */
	void **reg;
	uint32_t n_runs;
	/* hasher thread */
	pthread_t hasher;
	int hasher_running;
	int efd;
	atomic_uint hashed;
	atomic_int stop;
	int paused;
	int committed; /* the receiver's COMMIT arrived: never ABORT after it */
	double reg_seconds;
};

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Keep only the sequences named in the options; their pages, each once. */
static int select_pages(struct sender *s)
{
	const struct kvmig_migrate_opts *o = &s->e.o;
	struct kvmig_seq_list all = { 0 };
	uint64_t total = 0;
	uint32_t k = 0;
	int ret;

	if ((ret = kvmig_pager_seqs(s->p, &all)) < 0)
		return ret;
	if (!o->seq_ids) {
		s->seqs = all;
		return kvmig_pager_occupied(s->p, &s->ixs, &s->n);
	}
	s->seqs.seqs = calloc(o->n_seq_ids ? o->n_seq_ids : 1, sizeof(*s->seqs.seqs));
	if (!s->seqs.seqs) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < o->n_seq_ids; i++) {
		uint32_t j;

		for (j = 0; j < all.n && strcmp(all.seqs[j].id, o->seq_ids[i]); j++)
			;
		if (j == all.n) {
			ret = kvmig_err(-ENOENT, "sequence \"%s\" is not in the source pager",
					o->seq_ids[i]);
			goto out;
		}
		for (uint32_t q = 0; q < s->seqs.n; q++) {
			if (!strcmp(s->seqs.seqs[q].id, o->seq_ids[i])) {
				ret = kvmig_err(-EINVAL, "sequence \"%s\" is named twice",
						o->seq_ids[i]);
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
	for (uint32_t i = 0; i < s->seqs.n; i++)
		for (uint32_t j = 0; j < s->seqs.seqs[i].n_pages; j++)
			s->ixs[k++] = s->seqs.seqs[i].page_ixs[j];
	qsort(s->ixs, k, sizeof(*s->ixs), cmp_u32);
	s->n = 0;
	for (uint32_t i = 0; i < k; i++)
		if (s->n == 0 || s->ixs[s->n - 1] != s->ixs[i])
			s->ixs[s->n++] = s->ixs[i];
	ret = 0;
out:
	kvmig_seq_list_free(&all);
	return ret;
}

static int cmp_run(const void *a, const void *b)
{
	const struct kvmig_wire_region *x = a, *y = b;

	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/*
 * The offered pages' extents, sorted and merged where they touch: the
 * memory the receiver may read, and nothing else of the pager.
 */
static int build_runs(struct sender *s)
{
	uint64_t n = 0;

	for (uint32_t i = 0; i < s->n; i++)
		n += s->pages[i].n_ext;
	if (!(s->runs = malloc(sizeof(*s->runs) * (n ? n : 1))))
		return -ENOMEM;
	for (uint64_t i = 0; i < n; i++)
		s->runs[i] = (struct kvmig_wire_region){ s->ext[i].addr, s->ext[i].len, 0 };
	qsort(s->runs, n, sizeof(*s->runs), cmp_run);
	s->n_runs = 0;
	for (uint64_t i = 0; i < n; i++) {
		struct kvmig_wire_region *last = s->n_runs ? &s->runs[s->n_runs - 1] : NULL;

		if (last && last->addr + last->len >= s->runs[i].addr) {
			uint64_t end = KVMIG_MAX(last->addr + last->len, s->runs[i].addr + s->runs[i].len);

			last->len = end - last->addr;
		} else {
			s->runs[s->n_runs++] = s->runs[i];
		}
	}
	if (s->n_runs > KVMIG_WIRE_MAX_REGIONS)
		return kvmig_err(-ENOBUFS, "the offered pages lie in %u separate memory runs; at "
				 "most %u can be registered", s->n_runs, KVMIG_WIRE_MAX_REGIONS);
	return 0;
}

/* Register each run for remote read, for this migration only, and send REGIONS. */
static int register_memory(struct sender *s)
{
	struct kvmig_msg_regions rm;
	double t0 = kvmig_now();
	int ret;

	if ((ret = KVMIG_FAULT_FAIL("send-register")) < 0 || (ret = build_runs(s)) < 0)
		return ret;
	if (!(s->reg = calloc(s->n_runs ? s->n_runs : 1, sizeof(*s->reg))))
		return -ENOMEM;
	for (uint32_t i = 0; i < s->n_runs; i++) {
		ret = s->e.ops->reg_remote(s->e.c, (void *)(uintptr_t)s->runs[i].addr,
					   s->runs[i].len, &s->runs[i].key, &s->reg[i]);
		if (ret < 0)
			return kvmig_err_prefix(ret, "cannot register page memory");
	}
	s->reg_seconds = kvmig_now() - t0;
	rm.n = s->n_runs;
	rm.r = s->runs;
	if ((ret = kvmig_wire_put_regions(&s->e.wb, &rm)) < 0)
		return ret;
	return engine_flush(&s->e);
}

static void deregister_memory(struct sender *s)
{
	for (uint32_t i = 0; s->reg && i < s->n_runs; i++)
		s->e.ops->dereg(s->e.c, &s->reg[i]);
}

/* Collect every offered page's extents and generation. */
static int gather_extents(struct sender *s)
{
	struct kvmig_extent tmp[MAX_HALF_EXTENTS];
	uint64_t used = 0, cap = (uint64_t)s->n * 2 + 2;
	int ret;

	s->pages = calloc(s->n ? s->n : 1, sizeof(*s->pages));
	s->ext = malloc(sizeof(*s->ext) * cap);
	s->dig = calloc(s->n ? s->n : 1, sizeof(*s->dig));
	if (!s->pages || !s->ext || !s->dig)
		return -ENOMEM;
	for (uint32_t i = 0; i < s->n; i++) {
		struct kvmig_offer_page *pg = &s->pages[i];

		pg->ix = s->ixs[i];
		s->dig[i].ix = s->ixs[i];
		if ((ret = kvmig_pager_generation(s->p, pg->ix, &pg->generation)) < 0)
			return ret;
		for (int half = 0; half < 2; half++) {
			uint32_t ne = 0;

			ret = kvmig_pager_extents(s->p, pg->ix, (enum kvmig_half)half, tmp,
						  MAX_HALF_EXTENTS, &ne);
			if (ret < 0)
				return kvmig_err_prefix(ret, "page %u", pg->ix);
			if (used + ne > cap) {
				struct kvmig_wire_extent *ne_ext;

				cap = (used + ne) * 2;
				ne_ext = realloc(s->ext, sizeof(*s->ext) * cap);
				if (!ne_ext)
					return -ENOMEM;
				s->ext = ne_ext;
			}
			for (uint32_t j = 0; j < ne; j++)
				s->ext[used + j] = (struct kvmig_wire_extent){
					(uint64_t)(uintptr_t)tmp[j].addr, tmp[j].len };
			used += ne;
			pg->n_ext += ne;
		}
	}
	/* Pointers only now: the pool may have moved while it grew. */
	used = 0;
	for (uint32_t i = 0; i < s->n; i++) {
		s->pages[i].ext = s->ext + used;
		used += s->pages[i].n_ext;
	}
	return 0;
}

static int send_offers(struct sender *s)
{
	int ret;

	if ((ret = KVMIG_FAULT_FAIL("send-offer")) < 0)
		return ret;
	for (uint32_t at = 0; at < s->n || (at == 0 && s->n == 0); at += KVMIG_OFFER_CHUNK) {
		struct kvmig_msg_offer m = { 0 };

		m.round = 0;
		m.n = KVMIG_MIN(KVMIG_OFFER_CHUNK, s->n - at);
		m.pages = s->pages + at;
		if ((ret = kvmig_wire_put_offer(&s->e.wb, &m)) < 0 || (ret = engine_flush(&s->e)) < 0)
			return ret;
		if (s->n == 0)
			break;
	}
	s->e.ev.pages_total = s->n;
	s->e.ev.bytes_total = (uint64_t)s->n * 2 * s->hello.half_bytes;
	return 0;
}

static void hash_half(const struct kvmig_wire_extent *ext, uint32_t n, struct kvmig_digest *d)
{
	struct iovec iov[MAX_HALF_EXTENTS];

	for (uint32_t i = 0; i < n; i++)
		iov[i] = (struct iovec){ (void *)(uintptr_t)ext[i].addr, ext[i].len };
	kvmig_digest_computev(iov, (int)n, d);
}

static void *hasher_main(void *arg)
{
	struct sender *s = arg;
	uint64_t one = 1;

	for (uint32_t i = 0; i < s->n && !atomic_load(&s->stop); i++) {
		const struct kvmig_offer_page *pg = &s->pages[i];
		uint32_t h = pg->n_ext / 2;

		uint64_t bad;

		hash_half(pg->ext, h, &s->dig[i].k);
		hash_half(pg->ext + h, h, &s->dig[i].v);
		if (kvmig_fault("send-bad-digest", &bad) && bad == pg->ix)
			s->dig[i].v.b[0] ^= 1;
		atomic_store(&s->hashed, i + 1);
		/* An eventfd write only fails if the counter would overflow: the
		 * main thread also re-reads s->hashed every time it wakes. */
		if ((i + 1) % HASH_SIGNAL_EVERY == 0)
			(void)!write(s->efd, &one, sizeof(one));
	}
	(void)!write(s->efd, &one, sizeof(one));
	return NULL;
}

static int start_hasher(struct sender *s)
{
	int ret;

	s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->efd < 0)
		return kvmig_err(-errno, "eventfd: %s", strerror(errno));
	if (!s->e.o.verify) {
		atomic_store(&s->hashed, s->n); /* nothing to hash, nothing to send */
		return 0;
	}
	ret = pthread_create(&s->hasher, NULL, hasher_main, s);
	if (ret)
		return kvmig_err(-ret, "cannot start the hashing thread: %s", strerror(ret));
	s->hasher_running = 1;
	return 0;
}

static void stop_hasher(struct sender *s)
{
	if (s->hasher_running) {
		atomic_store(&s->stop, 1);
		pthread_join(s->hasher, NULL);
		s->hasher_running = 0;
	}
	if (s->efd >= 0)
		close(s->efd);
	s->efd = -1;
}

/* Move mode: drop the migrated sequences and the pages nobody else uses. */
static int release_source(struct sender *s, struct kvmig_migrate_stats *st)
{
	struct kvmig_seq_list left = { 0 };
	const char **ids = NULL;
	uint32_t *unused = NULL, nu = 0;
	int ret = -ENOMEM;

	ids = malloc(sizeof(*ids) * (s->seqs.n ? s->seqs.n : 1));
	unused = malloc(sizeof(*unused) * (s->n ? s->n : 1));
	if (!ids || !unused)
		goto out;
	for (uint32_t i = 0; i < s->seqs.n; i++)
		ids[i] = s->seqs.seqs[i].id;
	if ((ret = kvmig_pager_remove(s->p, ids, s->seqs.n)) < 0)
		goto out;
	if ((ret = kvmig_pager_seqs(s->p, &left)) < 0)
		goto out;
	/* Offered pages are sorted: mark the ones a remaining sequence uses. */
	uint8_t *used = calloc(s->n ? s->n : 1, 1);

	if (!used) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < left.n; i++) {
		for (uint32_t j = 0; j < left.seqs[i].n_pages; j++) {
			uint32_t *hit = bsearch(&left.seqs[i].page_ixs[j], s->ixs, s->n,
						sizeof(*s->ixs), cmp_u32);

			if (hit)
				used[hit - s->ixs] = 1;
		}
	}
	for (uint32_t i = 0; i < s->n; i++)
		if (!used[i])
			unused[nu++] = s->ixs[i];
	free(used);
	if ((ret = kvmig_pager_free(s->p, unused, nu)) < 0)
		goto out;
	st->pages_freed = nu;
out:
	kvmig_seq_list_free(&left);
	free(ids);
	free(unused);
	return ret;
}

static int send_digests_ready(struct sender *s, uint32_t *sent)
{
	uint32_t ready = atomic_load(&s->hashed);
	int ret;

	if (!s->e.o.verify) {
		*sent = s->n;
		return 0;
	}
	while (*sent < ready) {
		uint32_t k = KVMIG_MIN(KVMIG_OFFER_CHUNK, ready - *sent);

		if ((ret = KVMIG_FAULT_FAIL("send-digests")) < 0)
			return ret;
		if ((ret = kvmig_wire_put_digests(&s->e.wb, s->dig + *sent, k)) < 0 ||
		    (ret = engine_flush(&s->e)) < 0)
			return ret;
		*sent += k;
	}
	return 0;
}

/* Pages served so far, for PROGRESS events: bytes read / page size. */
static void refresh_served(struct engine *e)
{
	struct sender *s = kvmig_container_of(e, struct sender, e);
	struct xport_counters cnt;

	e->ops->counters(e->c, &cnt);
	e->ev.bytes_done = cnt.bytes_served;
	e->ev.pages_done = s->hello.half_bytes ?
		(uint32_t)KVMIG_MIN(cnt.bytes_served / (2 * s->hello.half_bytes), s->n) : 0;
}

/* Test-only: fail, cut the connection or go silent while the receiver
 * reads (every page offered, FINAL not yet sent). */
static int transfer_faults(struct sender *s)
{
	uint64_t stall_ms;
	int ret;

	if ((ret = KVMIG_FAULT_FAIL("send-transfer")) < 0)
		return ret;
	if (kvmig_fault("send-cut", NULL)) {
		s->e.ops->close(&s->e.c);
		return kvmig_err(-ECONNRESET, "fault injected at send-cut");
	}
	if (kvmig_fault("send-stall", &stall_ms))
		usleep((useconds_t)(stall_ms * 1000));
	return 0;
}

/* Serve reads and send digests until the receiver commits or gives up. */
static int serve(struct sender *s, struct kvmig_migrate_stats *st)
{
	uint32_t sent = 0;
	int final_sent = 0, ret;

	engine_phase(&s->e, "transfer");
	s->e.refresh = refresh_served;
	for (;;) {
		struct xport_msg *m = NULL;

		if ((ret = send_digests_ready(s, &sent)) < 0)
			return ret;
		if (sent == s->n && !final_sent) {
			if ((ret = transfer_faults(s)) < 0)
				return ret;
			if ((ret = kvmig_wire_put_final(&s->e.wb, s->seqs.seqs, s->seqs.n)) < 0 ||
			    (ret = engine_flush(&s->e)) < 0)
				return ret;
			final_sent = 1;
			engine_phase(&s->e, "verify");
		}
		ret = engine_wait_msg(&s->e, final_sent ? -1 : s->efd, &m);
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
				kvmig_err(-EPROTO, "receiver committed before it had every digest "
					  "and the sequences") :
				m->hdr.type == KVMIG_MSG_COMMIT ?
				kvmig_err(-EPROTO, "COMMIT message carries %u payload bytes",
					  m->hdr.len) :
				engine_unexpected(m, "COMMIT");
			engine_msg_free(&m);
			return ret;
		}
		engine_msg_free(&m);
		/* Test-only: fail on receiving COMMIT, before the commit point. */
		if ((ret = KVMIG_FAULT_FAIL("send-commit-recv")) < 0)
			return ret;
		break;
	}
	/*
	 * The commit point: the receiver has verified and installed everything.
	 * From here the destination owns the sequences (docs/PROTOCOL.md).
	 */
	s->committed = 1;
	engine_phase(&s->e, "commit");
	engine_progress(&s->e, 1);
	ret = 0;
	if (s->e.o.mode == KVMIG_MODE_MOVE && (ret = release_source(s, st)) < 0)
		kvmig_err_prefix(ret, "committed (the destination owns the sequences), but the "
				 "source could not release them");
	deregister_memory(s);
	/* A lost ACK changes nothing here: the receiver owns the sequences. */
	if (kvmig_fault("send-ack-lost", NULL))
		s->e.ops->close(&s->e.c); /* test-only: the ACK and the connection are lost */
	else if (kvmig_wire_put_empty(&s->e.wb, KVMIG_MSG_COMMIT_ACK) == 0)
		s->e.ops->send(s->e.c, s->e.wb.p, s->e.wb.len);
	s->e.wb.len = 0;
	return ret;
}

static int handshake(struct sender *s)
{
	struct kvmig_msg_hello peer;
	struct xport_msg *m = NULL;
	int ret;

	engine_phase(&s->e, "handshake");
	if ((ret = KVMIG_FAULT_FAIL("send-handshake")) < 0)
		return ret;
	ret = engine_hello(s->p, 0, (s->e.o.verify ? 0 : KVMIG_HELLO_NO_VERIFY) |
			   (s->e.auth ? KVMIG_HELLO_AUTH : 0), &s->hello);
	if (ret < 0 || (ret = kvmig_wire_put_hello(&s->e.wb, &s->hello)) < 0 ||
	    (s->e.auth && (ret = engine_auth_challenge(&s->e)) < 0) ||
	    (ret = engine_flush(&s->e)) < 0)
		return ret;
	if ((ret = engine_wait_msg(&s->e, -1, &m)) < 0)
		return ret;
	if (m->hdr.type != KVMIG_MSG_HELLO)
		ret = engine_unexpected(m, "HELLO");
	else if ((ret = kvmig_wire_get_hello(m->payload, m->hdr.len, &peer)) == 0 &&
		 (ret = engine_auth_agree(&s->e, &peer)) == 0)
		ret = engine_hello_match(&s->hello, &peer);
	engine_msg_free(&m);
	if (ret < 0 || !s->e.auth)
		return ret;
	/* The receiver proves the secret before anything here is paused or
	 * registered, then we prove it in turn. */
	if ((ret = engine_auth_take_challenge(&s->e)) < 0 || (ret = engine_auth_check(&s->e, 1)) < 0 ||
	    (ret = engine_auth_prove(&s->e, 0)) < 0)
		return ret;
	return engine_flush(&s->e);
}

int kvmig_migrate_send(struct kvmig_pager *p, const char *addr,
		       const struct kvmig_migrate_opts *opts, struct kvmig_migrate_stats *stats)
{
	struct kvmig_migrate_stats st = { 0 };
	struct sender *s = calloc(1, sizeof(*s));
	double t0 = kvmig_now(), tp = 0, tx = 0;
	int ret, rret;

	if (!s)
		return -ENOMEM;
	s->p = p;
	s->efd = -1;
	if ((ret = engine_init(&s->e, opts)) < 0)
		goto out;
	s->e.ops = engine_pick(s->e.o.transport, addr, 0);
	s->e.ev.transport = s->e.ops->name;
	engine_phase(&s->e, "connect");
	if ((ret = s->e.ops->connect(addr, (int)s->e.o.timeout_ms, &s->e.c)) < 0)
		goto out;
	s->e.ops->set_timeout(s->e.c, (int)s->e.o.timeout_ms);
	if ((ret = handshake(s)) < 0)
		goto fail;

	engine_phase(&s->e, "pause");
	if ((ret = kvmig_pager_pause(p)) < 0) {
		kvmig_err_prefix(ret, "cannot pause the source pager");
		goto fail;
	}
	s->paused = 1;
	tp = kvmig_now();
	if ((ret = select_pages(s)) < 0 || (ret = gather_extents(s)) < 0)
		goto fail;
	engine_phase(&s->e, "register");
	if ((ret = register_memory(s)) < 0)
		goto fail;
	engine_phase(&s->e, "offer");
	tx = kvmig_now();
	if ((ret = start_hasher(s)) < 0 || (ret = send_offers(s)) < 0)
		goto fail;
	if ((ret = serve(s, &st)) < 0)
		goto fail;
	st.transfer_seconds = kvmig_now() - tx;
	st.pages = s->n;
	st.seqs = s->seqs.n;
	st.bytes = (uint64_t)s->n * 2 * s->hello.half_bytes;
	st.pages_verified = s->e.o.verify ? s->n : 0;
	ret = 0;
	goto out;
fail:
	if (!s->committed)
		engine_abort(&s->e, ret);
out:
	stop_hasher(s);
	if (s->e.c)
		deregister_memory(s);
	if (s->paused) {
		engine_phase(&s->e, "resume");
		rret = kvmig_pager_resume(p);
		st.pause_seconds = kvmig_now() - tp;
		if (rret < 0 && ret == 0)
			ret = kvmig_err_prefix(rret, "cannot resume the source pager");
	}
	st.register_seconds = s->reg_seconds;
	snprintf(st.transport, sizeof(st.transport), "%s", s->e.ops->name);
	st.seconds = kvmig_now() - t0;
	if (stats)
		*stats = st;
	engine_fini(&s->e);
	kvmig_seq_list_free(&s->seqs);
	free(s->ixs);
	free(s->pages);
	free(s->ext);
	free(s->dig);
	free(s->runs);
	free(s->reg);
	free(s);
	return ret;
}
