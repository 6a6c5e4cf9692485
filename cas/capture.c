/* SPDX-License-Identifier: MIT */
/*
 * cas/capture.c - pager <-> store: build a manifest from a pager, capture it
 * into a blob store, restore it into another pager, verify a pager against a
 * manifest.
 *
 * Page halves go to and from the store straight from page memory (iovecs over
 * the pager's extents): no staging copy.
 *
 * Capture and restore can be cancelled (kvmig_cas_opts.cancel, set by a
 * signal handler) between store batches, never inside one: a put batch
 * leaves no temp file behind, and restore's one error path frees what it
 * allocated.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kvmig/cas.h>

#include "cas/internal.h"
#include "cas/store_internal.h"
#include "pager/internal.h"
#include "util/internal.h"

/* Pages per store batch: bounds the iovec arrays, keeps the ring busy. */
#define BATCH_PAGES 32u

struct page_shape {
	struct kvmig_cache_meta meta;
	struct kvmig_page_format format;
	uint64_t half_bytes;
	uint32_t max_ext; /* extents per half */
};

static int get_shape(struct kvmig_pager *p, struct page_shape *sh)
{
	enum kvmig_layout layout;
	int ret = kvmig_pager_meta(p, &sh->meta, &layout);

	if (ret < 0 || (ret = kvmig_pager_format(p, &sh->format)) < 0)
		return ret;
	ret = kvmig_meta_half_bytes(&sh->meta, &sh->half_bytes);
	if (ret < 0)
		return ret;
	sh->max_ext = sh->meta.n_layers;
	return 0;
}

/* Fill @iov with the extents of one page half; returns the iovec count or -errno. */
int kvmig_half_iov(struct kvmig_pager *p, uint32_t ix, enum kvmig_half half,
		   uint64_t half_bytes, struct kvmig_extent *ext, struct iovec *iov,
		   uint32_t max)
{
	uint32_t n;
	uint64_t total = 0;
	int ret = kvmig_pager_extents(p, ix, half, ext, max, &n);

	if (ret < 0)
		return kvmig_err_prefix(ret, "page %u", ix);
	for (uint32_t i = 0; i < n; i++) {
		iov[i].iov_base = ext[i].addr;
		iov[i].iov_len = ext[i].len;
		total += ext[i].len;
	}
	if (total != half_bytes)
		return kvmig_err(-EPROTO, "page %u: extents cover %llu bytes, expected %llu", ix,
				 (unsigned long long)total, (unsigned long long)half_bytes);
	return (int)n;
}

static int half_iov(struct kvmig_pager *p, const struct page_shape *sh, uint32_t ix,
		    enum kvmig_half half, struct kvmig_extent *ext, struct iovec *iov)
{
	return kvmig_half_iov(p, ix, half, sh->half_bytes, ext, iov, sh->max_ext);
}

struct page_io {
	struct kvmig_extent *ext;
	struct iovec *iov;       /* BATCH_PAGES * 2 * max_ext */
	struct kvmig_blob_io *ios; /* BATCH_PAGES * 2 */
};

static int page_io_init(struct page_io *io, const struct page_shape *sh)
{
	io->ext = calloc(sh->max_ext, sizeof(*io->ext));
	io->iov = calloc((size_t)BATCH_PAGES * 2 * sh->max_ext, sizeof(*io->iov));
	io->ios = calloc((size_t)BATCH_PAGES * 2, sizeof(*io->ios));
	return io->ext && io->iov && io->ios ? 0 : -ENOMEM;
}

static void page_io_fini(struct page_io *io)
{
	free(io->ext);
	free(io->iov);
	free(io->ios);
}

/* Point blob @slot of the batch at page @ix half @half; also hash it if @hash. */
static int bind_half(struct kvmig_pager *p, const struct page_shape *sh, struct page_io *io,
		     uint32_t slot, uint32_t ix, enum kvmig_half half, int hash)
{
	struct iovec *iov = io->iov + (size_t)slot * sh->max_ext;
	int n = half_iov(p, sh, ix, half, io->ext, iov);

	if (n < 0)
		return n;
	io->ios[slot].iov = iov;
	io->ios[slot].iovcnt = n;
	io->ios[slot].result = 0;
	if (hash)
		kvmig_digest_computev(iov, n, &io->ios[slot].digest);
	return 0;
}

void kvmig_cas_opts_init(struct kvmig_cas_opts *o)
{
	o->cancel = NULL;
}

/*
 * Between two store batches: -ECANCELED once the caller's flag is set,
 * saying how far @verb ("storing", "reading") got. Test-only fault point
 * cas-stall:MS sleeps first (a signal cuts the sleep short), so that a
 * test can interrupt a run of any size.
 */
static int cancel_point(const struct kvmig_cas_opts *o, const char *verb, uint32_t done,
			uint32_t total)
{
	uint64_t ms;

	if (kvmig_fault("cas-stall", &ms)) {
		struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 };

		nanosleep(&ts, NULL);
	}
	if (o && o->cancel && *o->cancel)
		return kvmig_err(-ECANCELED, "interrupted after %s %u of %u pages", verb, done,
				 total);
	return 0;
}

/* The runnable sequences of @l into @m (pending and departed ones belong to
 * a migration whose outcome is not applied: never captured). */
static int add_seqs(const struct kvmig_seq_list *l, struct kvmig_manifest *m)
{
	int ret = 0;

	for (uint32_t i = 0; ret == 0 && i < l->n; i++)
		if (l->seqs[i].state == KVMIG_SEQ_ACTIVE)
			ret = kvmig_manifest_add_seq(m, l->seqs[i].id, l->seqs[i].page_ixs,
						     l->seqs[i].n_pages,
						     l->seqs[i].fill_in_last_page);
	return ret;
}

/*
 * Drop from the occupied pages @ixs (*n of them) those that only
 * sequences not runnable use: they belong to a migration in flight or in
 * doubt. Pages outside every sequence stay (an engine's own).
 */
static int drop_unrunnable_pages(const struct kvmig_seq_list *l, uint32_t *ixs, uint32_t *n)
{
	const char **ids = malloc(sizeof(*ids) * (l->n ? l->n : 1));
	uint32_t *cand = NULL, n_ids = 0, n_cand = 0, k = 0;
	uint64_t refs = 0;
	int ret = -ENOMEM;

	for (uint32_t i = 0; ids && i < l->n; i++)
		if (l->seqs[i].state != KVMIG_SEQ_ACTIVE) {
			ids[n_ids++] = l->seqs[i].id;
			refs += l->seqs[i].n_pages;
		}
	if (!ids || !n_ids) {
		ret = ids ? 0 : -ENOMEM;
		goto out;
	}
	if (!(cand = malloc(sizeof(*cand) * (refs ? refs : 1))))
		goto out;
	for (uint32_t i = 0; i < l->n; i++)
		if (l->seqs[i].state != KVMIG_SEQ_ACTIVE)
			for (uint32_t j = 0; j < l->seqs[i].n_pages; j++)
				cand[n_cand++] = l->seqs[i].page_ixs[j];
	if ((ret = kvmig_pages_unused(l, ids, n_ids, cand, n_cand, cand, &n_cand)) < 0)
		goto out;
	qsort(cand, n_cand, sizeof(*cand), kvmig_cmp_u32);
	for (uint32_t i = 0; i < *n; i++)
		if (!bsearch(&ixs[i], cand, n_cand, sizeof(*cand), kvmig_cmp_u32))
			ixs[k++] = ixs[i];
	*n = k;
	ret = 0;
out:
	free(ids);
	free(cand);
	return ret;
}

/*
 * Walk every occupied page, hash both halves and, with @s, put them in
 * batches (@o: when to stop). Builds the manifest as it goes.
 */
static int hash_pages(struct kvmig_pager *p, struct kvmig_store *s,
		      const struct kvmig_cas_opts *o, struct kvmig_manifest **ret,
		      struct kvmig_capture_stats *st)
{
	struct kvmig_manifest *m = NULL;
	struct kvmig_seq_list l = { 0 };
	struct page_io io = { 0 };
	struct page_shape sh;
	uint32_t *ixs = NULL, n = 0;
	int err;

	if ((err = get_shape(p, &sh)) < 0 || (err = page_io_init(&io, &sh)) < 0 ||
	    (err = kvmig_pager_seqs(p, &l)) < 0 || (err = kvmig_pager_occupied(p, &ixs, &n)) < 0 ||
	    (err = drop_unrunnable_pages(&l, ixs, &n)) < 0 ||
	    (err = kvmig_manifest_new(&sh.meta, &sh.format, &m)) < 0)
		goto out;
	for (uint32_t base = 0; base < n; base += BATCH_PAGES) {
		uint32_t cnt = KVMIG_MIN(BATCH_PAGES, n - base);

		for (uint32_t i = 0; i < cnt; i++) {
			uint32_t ix = ixs[base + i];

			if ((err = bind_half(p, &sh, &io, 2 * i, ix, KVMIG_HALF_K, 1)) < 0 ||
			    (err = bind_half(p, &sh, &io, 2 * i + 1, ix, KVMIG_HALF_V, 1)) < 0 ||
			    (err = kvmig_manifest_add_page(m, ix, &io.ios[2 * i].digest,
							   &io.ios[2 * i + 1].digest)) < 0)
				goto out;
		}
		if (s) {
			err = kvmig_store_put_batch(s, io.ios, 2 * cnt);
			if (err < 0)
				goto out;
			st->blobs_written += (uint32_t)err;
			st->blobs_deduped += 2 * cnt - (uint32_t)err;
			if ((err = cancel_point(o, "storing", base + cnt, n)) < 0)
				goto out;
		}
	}
	if ((err = add_seqs(&l, m)) < 0 || (err = kvmig_manifest_canonicalize(m)) < 0)
		goto out;
	if (st) {
		st->pages = n;
		st->logical_bytes = 2 * sh.half_bytes * n;
	}
	*ret = m;
	m = NULL;
	err = 0;
out:
	kvmig_manifest_free(&m);
	kvmig_seq_list_free(&l);
	free(ixs);
	page_io_fini(&io);
	return err;
}

int kvmig_manifest_build(struct kvmig_pager *p, struct kvmig_manifest **ret)
{
	return hash_pages(p, NULL, NULL, ret, NULL);
}

struct capture_ctx {
	struct kvmig_store *s;
	const struct kvmig_cas_opts *o;
	struct kvmig_digest *out;
	struct kvmig_capture_stats *st;
};

static int capture_paused(struct kvmig_pager *p, void *arg)
{
	struct capture_ctx *c = arg;
	struct kvmig_manifest *m = NULL;
	uint64_t before = 0, after = 0, repaired = c->s->repaired;
	char *json = NULL;
	size_t len;
	int ret;

	if ((ret = kvmig_store_physical_bytes(c->s, &before)) < 0 ||
	    (ret = hash_pages(p, c->s, c->o, &m, c->st)) < 0 ||
	    (ret = kvmig_manifest_serialize(m, &json, &len)) < 0)
		goto out;
	kvmig_digest_compute(json, len, c->out);
	ret = kvmig_store_put(c->s, c->out, json, len);
	if (ret < 0)
		goto out;
	c->st->blobs_written += (uint32_t)ret;
	c->st->blobs_deduped += 1 - (uint32_t)ret;
	if ((ret = kvmig_store_physical_bytes(c->s, &after)) < 0)
		goto out;
	c->st->written_bytes = after - before;
	c->st->blobs_repaired = (uint32_t)(c->s->repaired - repaired);
	ret = 0;
out:
	free(json);
	kvmig_manifest_free(&m);
	return ret;
}

int kvmig_capture_ex(struct kvmig_pager *p, struct kvmig_store *s, const struct kvmig_cas_opts *o,
		     struct kvmig_digest *digest, struct kvmig_capture_stats *stats)
{
	struct kvmig_capture_stats local;
	struct capture_ctx c = { s, o, digest, stats ? stats : &local };

	memset(c.st, 0, sizeof(*c.st));
	return kvmig_pager_with_paused(p, capture_paused, &c);
}

int kvmig_capture(struct kvmig_pager *p, struct kvmig_store *s, struct kvmig_digest *digest,
		  struct kvmig_capture_stats *stats)
{
	return kvmig_capture_ex(p, s, NULL, digest, stats);
}

static int load_manifest(struct kvmig_store *s, const struct kvmig_digest *d,
			 struct kvmig_manifest **m)
{
	char text[KVMIG_DIGEST_STR_LEN + 1];
	void *json = NULL;
	size_t len;
	int ret;

	kvmig_digest_format(d, text);
	ret = kvmig_store_get_alloc(s, d, &json, &len);
	if (ret < 0)
		return kvmig_err_prefix(ret, "cannot read manifest %s", text);
	ret = kvmig_manifest_parse(json, len, m);
	free(json);
	if (ret < 0)
		return kvmig_err_prefix(ret, "manifest %s is malformed", text);
	return 0;
}

static int check_shape(const struct page_shape *sh, const struct kvmig_manifest *m)
{
	char want[128], have[128];

	if (!kvmig_meta_equal(&sh->meta, &m->meta)) {
		kvmig_meta_describe(&m->meta, want, sizeof(want));
		kvmig_meta_describe(&sh->meta, have, sizeof(have));
		return kvmig_err(-EPROTO, "manifest is %s but the pager is %s", want, have);
	}
	return kvmig_format_match(&sh->format, &m->format, "the manifest");
}

/* Read every page of @m from @s into destination pages @dst (parallel to m->pages). */
static int read_pages(struct kvmig_pager *p, struct kvmig_store *s, const struct kvmig_cas_opts *o,
		      const struct page_shape *sh, const struct kvmig_manifest *m,
		      const uint32_t *dst)
{
	struct page_io io = { 0 };
	int ret = page_io_init(&io, sh);

	for (uint32_t base = 0; ret == 0 && base < m->n_pages; base += BATCH_PAGES) {
		uint32_t cnt = KVMIG_MIN(BATCH_PAGES, m->n_pages - base);

		for (uint32_t i = 0; ret == 0 && i < cnt; i++) {
			const struct kvmig_manifest_page *mp = &m->pages[base + i];

			ret = bind_half(p, sh, &io, 2 * i, dst[base + i], KVMIG_HALF_K, 0);
			if (ret == 0)
				ret = bind_half(p, sh, &io, 2 * i + 1, dst[base + i], KVMIG_HALF_V, 0);
			io.ios[2 * i].digest = mp->k;
			io.ios[2 * i + 1].digest = mp->v;
		}
		if (ret == 0)
			ret = kvmig_store_get_batch(s, io.ios, 2 * cnt);
		if (ret == 0)
			ret = cancel_point(o, "reading", base + cnt, m->n_pages);
	}
	page_io_fini(&io);
	return ret;
}

/* Rewrite @m's sequences from manifest page indices to @dst indices. */
static int remap_seqs(const struct kvmig_manifest *m, const uint32_t *dst, struct kvmig_seq *out)
{
	for (uint32_t i = 0; i < m->n_seqs; i++) {
		const struct kvmig_seq *q = &m->seqs[i];

		out[i] = *q;
		out[i].page_ixs = malloc(sizeof(uint32_t) * (q->n_pages ? q->n_pages : 1));
		if (!out[i].page_ixs)
			return -ENOMEM;
		for (uint32_t j = 0; j < q->n_pages; j++) {
			int at = kvmig_manifest_find_page(m, q->page_ixs[j]);

			if (at < 0) /* the parser already refused this; keep the guard */
				return kvmig_err(-EINVAL, "sequence \"%s\" references page %u "
						 "missing from the manifest", q->id, q->page_ixs[j]);
			out[i].page_ixs[j] = dst[at];
		}
	}
	return 0;
}

/*
 * After the install: hand back the restored pages no sequence uses (a
 * manifest of a pager whose engine had pages allocated outside any
 * sequence), as a migration leaves them behind. Best effort: they were
 * only read, and a failure leaves them allocated, as before.
 */
static void free_orphans(struct kvmig_pager *p, const struct kvmig_manifest *m,
			 const struct kvmig_seq *seqs, uint32_t *dst)
{
	struct kvmig_seq_list installed = { (struct kvmig_seq *)seqs, m->n_seqs };
	uint32_t n = 0;

	if (kvmig_pages_unused(&installed, NULL, 0, dst, m->n_pages, dst, &n) == 0 && n)
		kvmig_pager_free(p, dst, n);
}

int kvmig_restore_ex(struct kvmig_pager *p, struct kvmig_store *s, const struct kvmig_cas_opts *o,
		     const struct kvmig_digest *digest, struct kvmig_restore_stats *stats)
{
	struct kvmig_manifest *m = NULL;
	struct kvmig_seq *seqs = NULL;
	struct page_shape sh;
	uint32_t *dst = NULL;
	int ret, allocated = 0;

	if ((ret = load_manifest(s, digest, &m)) < 0 || (ret = get_shape(p, &sh)) < 0 ||
	    (ret = check_shape(&sh, m)) < 0 || (ret = cancel_point(o, "reading", 0, m->n_pages)) < 0)
		goto out;
	dst = malloc(sizeof(*dst) * (m->n_pages ? m->n_pages : 1));
	seqs = calloc(m->n_seqs ? m->n_seqs : 1, sizeof(*seqs));
	if (!dst || !seqs) {
		ret = -ENOMEM;
		goto out;
	}
	ret = kvmig_pager_allocate(p, m->n_pages, dst);
	if (ret < 0) {
		kvmig_err_prefix(ret, "cannot allocate %u pages to restore into", m->n_pages);
		goto out;
	}
	allocated = 1;
	if ((ret = read_pages(p, s, o, &sh, m, dst)) < 0 || (ret = remap_seqs(m, dst, seqs)) < 0)
		goto out;
	ret = kvmig_pager_install(p, seqs, m->n_seqs);
	if (ret < 0)
		goto out;
	allocated = 0; /* installed: the pages belong to the sequences now */
	free_orphans(p, m, seqs, dst);
	if (stats) {
		stats->pages = m->n_pages;
		stats->seqs = m->n_seqs;
		stats->bytes = 2 * sh.half_bytes * m->n_pages;
	}
out:
	if (allocated && m->n_pages) {
		/* Nothing was installed: hand every page back, keep the first error. */
		struct kvmig_err_saved keep;

		kvmig_err_save(&keep);
		kvmig_pager_free(p, dst, m->n_pages);
		kvmig_err_restore(&keep, ret);
	}
	for (uint32_t i = 0; seqs && m && i < m->n_seqs; i++)
		free(seqs[i].page_ixs);
	free(seqs);
	free(dst);
	kvmig_manifest_free(&m);
	return ret;
}

int kvmig_restore(struct kvmig_pager *p, struct kvmig_store *s, const struct kvmig_digest *digest,
		  struct kvmig_restore_stats *stats)
{
	return kvmig_restore_ex(p, s, NULL, digest, stats);
}

static int cmp_seq_id(const void *key, const void *elem)
{
	return strcmp(key, ((const struct kvmig_seq *)elem)->id);
}

int kvmig_verify(struct kvmig_pager *p, const struct kvmig_manifest *m, uint32_t *mismatches)
{
	struct kvmig_seq_list have = { 0 };
	struct kvmig_digest *dk = NULL, *dv = NULL;
	struct kvmig_extent *ext = NULL;
	struct iovec *iov = NULL;
	uint32_t *uniq = NULL, n_uniq = 0, bad = 0;
	struct page_shape sh;
	uint64_t refs = 0;
	int ret;

	if ((ret = get_shape(p, &sh)) < 0 || (ret = check_shape(&sh, m)) < 0 ||
	    (ret = kvmig_pager_seqs(p, &have)) < 0)
		goto out;
	/* Every sequence present with the same shape; collect the pages they use. */
	for (uint32_t i = 0; i < m->n_seqs; i++) {
		const struct kvmig_seq *want = &m->seqs[i];
		const struct kvmig_seq *got = bsearch(want->id, have.seqs, have.n,
						      sizeof(*have.seqs), cmp_seq_id);

		if (!got) {
			ret = kvmig_err(-ENOENT, "sequence \"%s\" is not in the pager", want->id);
			goto out;
		}
		if (got->state != KVMIG_SEQ_ACTIVE) {
			char hex[33];

			kvmig_id_format(&got->migration, hex);
			ret = kvmig_err(-EBUSY, "sequence \"%s\" is %s in the pager, not runnable: "
					"migration %s has not applied its outcome", want->id,
					kvmig_seq_state_name(got->state), hex);
			goto out;
		}
		if (got->n_pages != want->n_pages || got->fill_in_last_page !=
		    want->fill_in_last_page) {
			ret = kvmig_err(-EPROTO, "sequence \"%s\" has %u pages (fill %u) in the pager "
					"but %u (fill %u) in the manifest", want->id, got->n_pages,
					got->fill_in_last_page, want->n_pages,
					want->fill_in_last_page);
			goto out;
		}
		refs += got->n_pages;
	}
	uniq = malloc(sizeof(*uniq) * (refs ? refs : 1));
	ext = calloc(sh.max_ext, sizeof(*ext));
	iov = calloc(sh.max_ext, sizeof(*iov));
	if (!uniq || !ext || !iov) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < m->n_seqs; i++) {
		const struct kvmig_seq *got = bsearch(m->seqs[i].id, have.seqs, have.n,
						      sizeof(*have.seqs), cmp_seq_id);

		memcpy(uniq + n_uniq, got->page_ixs, sizeof(uint32_t) * got->n_pages);
		n_uniq += got->n_pages;
	}
	/* Hash each pager page once, however many sequences share it. */
	qsort(uniq, n_uniq, sizeof(*uniq), kvmig_cmp_u32);
	uint32_t w = 0;

	for (uint32_t i = 0; i < n_uniq; i++)
		if (w == 0 || uniq[w - 1] != uniq[i])
			uniq[w++] = uniq[i];
	n_uniq = w;
	dk = malloc(sizeof(*dk) * (n_uniq ? n_uniq : 1));
	dv = malloc(sizeof(*dv) * (n_uniq ? n_uniq : 1));
	if (!dk || !dv) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < n_uniq; i++) {
		int n = half_iov(p, &sh, uniq[i], KVMIG_HALF_K, ext, iov);

		if (n < 0) {
			ret = n;
			goto out;
		}
		kvmig_digest_computev(iov, n, &dk[i]);
		n = half_iov(p, &sh, uniq[i], KVMIG_HALF_V, ext, iov);
		if (n < 0) {
			ret = n;
			goto out;
		}
		kvmig_digest_computev(iov, n, &dv[i]);
	}
	for (uint32_t i = 0; i < m->n_seqs; i++) {
		const struct kvmig_seq *want = &m->seqs[i];
		const struct kvmig_seq *got = bsearch(want->id, have.seqs, have.n,
						      sizeof(*have.seqs), cmp_seq_id);

		for (uint32_t j = 0; j < want->n_pages; j++) {
			const struct kvmig_manifest_page *mp =
				&m->pages[kvmig_manifest_find_page(m, want->page_ixs[j])];
			const uint32_t *at = bsearch(&got->page_ixs[j], uniq, n_uniq,
						     sizeof(*uniq), kvmig_cmp_u32);
			size_t u = (size_t)(at - uniq);
			int kbad = !kvmig_digest_equal(&dk[u], &mp->k);
			int vbad = !kvmig_digest_equal(&dv[u], &mp->v);

			if ((kbad || vbad) && bad == 0)
				kvmig_err(-EIO, "sequence \"%s\" page %u (pager page %u): %s half "
					  "differs from the manifest", want->id, j, got->page_ixs[j],
					  kbad ? "K" : "V");
			bad += (uint32_t)(kbad + vbad);
		}
	}
	ret = bad ? -EIO : 0;
out:
	if (mismatches)
		*mismatches = bad;
	kvmig_seq_list_free(&have);
	free(uniq);
	free(ext);
	free(iov);
	free(dk);
	free(dv);
	return ret;
}
