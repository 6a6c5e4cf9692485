/* SPDX-License-Identifier: MIT */
/* tests/unit/test_capture.c - capture, restore and verify between pagers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kvmig/cas.h>

#include "pager_helpers.h"
#include "cas/store_internal.h"

static struct kvmig_pager *make(const char *preset, enum kvmig_layout layout, uint64_t seed,
				uint32_t seqs, uint32_t cap)
{
	return synth_pager(preset, layout, seed, seqs, 5, 2, cap);
}

static char *mkstore(struct kvmig_store **s)
{
	char *dir = strdup("/tmp/kvmig-cap-XXXXXX");

	assert_non_null(mkdtemp(dir));
	assert_int_equal(kvmig_store_fs_open(dir, NULL, s), 0);
	return dir;
}

static void rmstore(struct kvmig_store **s, char *dir)
{
	char cmd[128];

	kvmig_store_close(s);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	free(dir);
}

/* Compare every sequence's bytes page by page, without digests. */
static void assert_same_bytes(struct kvmig_pager *a, struct kvmig_pager *b)
{
	struct kvmig_seq_list la = { 0 }, lb = { 0 };
	struct kvmig_extent ea[64], eb[64];
	uint32_t na, nb;

	assert_int_equal(kvmig_pager_seqs(a, &la), 0);
	assert_int_equal(kvmig_pager_seqs(b, &lb), 0);
	assert_int_equal(la.n, lb.n);
	for (uint32_t i = 0; i < la.n; i++) {
		assert_string_equal(la.seqs[i].id, lb.seqs[i].id);
		assert_int_equal(la.seqs[i].n_pages, lb.seqs[i].n_pages);
		assert_int_equal(la.seqs[i].fill_in_last_page, lb.seqs[i].fill_in_last_page);
		for (uint32_t j = 0; j < la.seqs[i].n_pages; j++) {
			for (int h = 0; h < 2; h++) {
				assert_int_equal(kvmig_pager_extents(a, la.seqs[i].page_ixs[j],
								     (enum kvmig_half)h, ea, 64, &na), 0);
				assert_int_equal(kvmig_pager_extents(b, lb.seqs[i].page_ixs[j],
								     (enum kvmig_half)h, eb, 64, &nb), 0);
				assert_int_equal(na, nb);
				for (uint32_t k = 0; k < na; k++)
					assert_memory_equal(ea[k].addr, eb[k].addr, ea[k].len);
			}
		}
	}
	kvmig_seq_list_free(&la);
	kvmig_seq_list_free(&lb);
}

static void round_trip(enum kvmig_layout layout)
{
	struct kvmig_pager *src = make("llama3-8b", layout, 3, 3, 16);
	struct kvmig_pager *dst = make("llama3-8b", layout, 77, 0, 24);
	struct kvmig_restore_stats rst;
	struct kvmig_store *s;
	struct kvmig_digest d;
	struct kvmig_seq_list l = { 0 };
	uint32_t pad[4], orphan;
	char *dir = mkstore(&s);

	/* Occupy destination pages so indices must be remapped. */
	assert_int_equal(kvmig_pager_allocate(dst, 4, pad), 0);
	/* A source page no sequence uses: captured, restored, then handed back. */
	assert_int_equal(kvmig_pager_allocate(src, 1, &orphan), 0);
	assert_int_equal(kvmig_capture(src, s, &d, NULL), 0);
	assert_int_equal(kvmig_restore(dst, s, &d, &rst), 0);
	assert_int_equal(rst.pages, 2 + 3 * 3 + 1);
	assert_int_equal(rst.seqs, 3);
	assert_int_equal(n_occupied(dst), 4 + 2 + 3 * 3);
	assert_same_bytes(src, dst);
	/* Shared prefix stays shared, at new indices. */
	assert_int_equal(kvmig_pager_seqs(dst, &l), 0);
	assert_int_equal(l.seqs[0].page_ixs[0], l.seqs[2].page_ixs[0]);
	assert_int_equal(l.seqs[0].page_ixs[1], l.seqs[1].page_ixs[1]);
	assert_int_equal(l.seqs[0].page_ixs[0], 4); /* first free index after the pad */
	kvmig_seq_list_free(&l);
	/* Independent of restore's checks: the destination verifies against the source. */
	struct kvmig_manifest *m = NULL;
	assert_int_equal(kvmig_manifest_build(src, &m), 0);
	assert_int_equal(kvmig_verify(dst, m, NULL), 0);
	kvmig_manifest_free(&m);
	rmstore(&s, dir);
	kvmig_pager_destroy(&src);
	kvmig_pager_destroy(&dst);
}

static void test_round_trip_page_major(void **state)
{
	round_trip(KVMIG_LAYOUT_PAGE_MAJOR);
}

static void test_round_trip_layer_major(void **state)
{
	round_trip(KVMIG_LAYOUT_LAYER_MAJOR);
}

static void test_meta_mismatch_untouched(void **state)
{
	struct kvmig_pager *src = make("tiny", KVMIG_LAYOUT_PAGE_MAJOR, 1, 2, 16);
	struct kvmig_pager *dst = make("llama3-8b", KVMIG_LAYOUT_PAGE_MAJOR, 1, 1, 16);
	struct kvmig_pager *dst2 = make("tiny", KVMIG_LAYOUT_LAYER_MAJOR, 1, 0, 16);
	struct kvmig_store *s;
	struct kvmig_digest d;
	char *dir = mkstore(&s);
	uint32_t occ = n_occupied(dst);

	assert_int_equal(kvmig_capture(src, s, &d, NULL), 0);
	assert_int_equal(kvmig_restore(dst, s, &d, NULL), -EPROTO);
	assert_non_null(strstr(kvmig_last_error(), "layers"));
	assert_int_equal(n_occupied(dst), occ);
	assert_int_equal(n_seqs(dst), 1);
	/* Layout is part of the check too. */
	assert_int_equal(kvmig_restore(dst2, s, &d, NULL), -EPROTO);
	assert_non_null(strstr(kvmig_last_error(), "layer_major"));
	assert_int_equal(n_occupied(dst2), 0);
	rmstore(&s, dir);
	kvmig_pager_destroy(&src);
	kvmig_pager_destroy(&dst);
	kvmig_pager_destroy(&dst2);
}

static void test_dedup_twelve_identical(void **state)
{
	struct kvmig_store *s;
	struct kvmig_digest d0, d;
	uint64_t one, twelve;
	char *dir = mkstore(&s);

	for (int i = 0; i < 12; i++) {
		struct kvmig_pager *p = make("llama3-8b", KVMIG_LAYOUT_PAGE_MAJOR, 5, 2, 16);

		assert_int_equal(kvmig_capture(p, s, &d, NULL), 0);
		if (i == 0) {
			d0 = d;
			assert_int_equal(kvmig_store_physical_bytes(s, &one), 0);
		}
		assert_true(kvmig_digest_equal(&d, &d0));
		kvmig_pager_destroy(&p);
	}
	assert_int_equal(kvmig_store_physical_bytes(s, &twelve), 0);
	print_message("one capture %llu bytes, twelve %llu bytes\n", (unsigned long long)one,
		      (unsigned long long)twelve);
	assert_true(twelve * 2 <= one * 3); /* at most 1.5x */
	rmstore(&s, dir);
}

/* A blob write fails (fault point store-write): the capture fails with EIO
 * naming the blob, leaves nothing in tmp/, and a retry succeeds. */
static void test_failing_blob_write(void **state)
{
	struct kvmig_pager *p = make("tiny", KVMIG_LAYOUT_PAGE_MAJOR, 3, 2, 16);
	struct kvmig_store *s;
	struct kvmig_digest d;
	char *dir = mkstore(&s), cmd[160];

#ifndef KVMIG_FAULT_INJECTION
	skip();
#endif
	setenv("KVMIG_FAULT", "store-write", 1);
	assert_int_equal(kvmig_capture(p, s, &d, NULL), -EIO);
	unsetenv("KVMIG_FAULT");
	assert_non_null(strstr(kvmig_last_error(), "cannot write blob"));
	snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A %s/tmp)\"", dir);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(kvmig_capture(p, s, &d, NULL), 0);
	kvmig_pager_destroy(&p);
	rmstore(&s, dir);
}

static void test_one_page_differs(void **state)
{
	struct kvmig_pager *a = make("llama3-8b", KVMIG_LAYOUT_PAGE_MAJOR, 5, 2, 16);
	struct kvmig_pager *b = make("llama3-8b", KVMIG_LAYOUT_PAGE_MAJOR, 5, 2, 16);
	struct kvmig_store *s;
	struct kvmig_digest da, db;
	uint64_t before, after, half;
	struct kvmig_cache_meta meta;
	struct kvmig_capture_stats st;
	char *dir = mkstore(&s);

	assert_int_equal(kvmig_synth_fill_page(b, 3, 1234, 1), 0);
	assert_int_equal(kvmig_capture(a, s, &da, NULL), 0);
	assert_int_equal(kvmig_store_physical_bytes(s, &before), 0);
	assert_int_equal(kvmig_capture(b, s, &db, &st), 0);
	assert_int_equal(kvmig_store_physical_bytes(s, &after), 0);
	assert_false(kvmig_digest_equal(&da, &db));
	kvmig_pager_meta(a, &meta, NULL);
	kvmig_meta_half_bytes(&meta, &half);
	/* Two page blobs plus a (small) manifest. */
	assert_true(after - before <= 2 * half + 64 * 1024);
	assert_true(after - before > 2 * half);
	assert_int_equal(st.blobs_written, 3);
	rmstore(&s, dir);
	kvmig_pager_destroy(&a);
	kvmig_pager_destroy(&b);
}

static void test_v_change_shares_k(void **state)
{
	struct kvmig_pager *a = make("tiny", KVMIG_LAYOUT_PAGE_MAJOR, 5, 1, 8);
	struct kvmig_manifest *m1 = NULL, *m2 = NULL;
	struct kvmig_extent e;
	uint32_t n;

	assert_int_equal(kvmig_manifest_build(a, &m1), 0);
	assert_int_equal(kvmig_pager_extents(a, 0, KVMIG_HALF_V, &e, 1, &n), 0);
	((uint8_t *)e.addr)[0] ^= 1;
	assert_int_equal(kvmig_manifest_build(a, &m2), 0);
	assert_true(kvmig_digest_equal(&m1->pages[0].k, &m2->pages[0].k));
	assert_false(kvmig_digest_equal(&m1->pages[0].v, &m2->pages[0].v));
	kvmig_manifest_free(&m1);
	kvmig_manifest_free(&m2);
	kvmig_pager_destroy(&a);
}

static void blob_file(const char *dir, const struct kvmig_digest *d, char *path, size_t len)
{
	char hex[33];

	kvmig_digest_hex(d, hex);
	snprintf(path, len, "%s/objects/%.2s/%s", dir, hex, hex + 2);
}

static void test_corrupt_blob_installs_nothing(void **state)
{
	struct kvmig_pager *src = make("tiny", KVMIG_LAYOUT_LAYER_MAJOR, 9, 3, 16);
	struct kvmig_pager *dst = make("tiny", KVMIG_LAYOUT_LAYER_MAJOR, 1, 0, 16);
	struct kvmig_manifest *m = NULL;
	struct kvmig_store *s;
	struct kvmig_digest d;
	char path[256];
	char *dir = mkstore(&s);
	FILE *fp;

	assert_int_equal(kvmig_capture(src, s, &d, NULL), 0);
	assert_int_equal(kvmig_manifest_build(src, &m), 0);
	blob_file(dir, &m->pages[m->n_pages - 1].v, path, sizeof(path));
	fp = fopen(path, "r+b");
	assert_non_null(fp);
	fputc('!', fp);
	fclose(fp);
	assert_int_equal(kvmig_restore(dst, s, &d, NULL), -EIO);
	assert_non_null(strstr(kvmig_last_error(), "corrupt"));
	assert_int_equal(n_seqs(dst), 0);
	assert_int_equal(n_occupied(dst), 0); /* allocated pages were freed */
	/* Truncated blob. */
	assert_int_equal(truncate(path, 10), 0);
	assert_int_equal(kvmig_restore(dst, s, &d, NULL), -EMSGSIZE);
	assert_int_equal(n_occupied(dst), 0);
	/* Missing blob. */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(kvmig_restore(dst, s, &d, NULL), -ENOENT);
	assert_int_equal(n_occupied(dst), 0);
	assert_int_equal(n_seqs(dst), 0);
	kvmig_manifest_free(&m);
	rmstore(&s, dir);
	kvmig_pager_destroy(&src);
	kvmig_pager_destroy(&dst);
}

/*
 * A store that forwards to another and sets a cancel flag once it has
 * served @after put or get batches: a signal that arrives mid-way, at a
 * known point.
 */
struct cancel_store {
	struct kvmig_store base;
	struct kvmig_store *inner;
	volatile sig_atomic_t flag;
	int gets, puts, after;
};

static int cs_put(struct kvmig_store *s, struct kvmig_blob_io *ios, uint32_t n)
{
	struct cancel_store *c = (struct cancel_store *)s;

	if (++c->puts == c->after)
		c->flag = 1;
	return kvmig_store_put_batch(c->inner, ios, n);
}

static int cs_get(struct kvmig_store *s, struct kvmig_blob_io *ios, uint32_t n)
{
	struct cancel_store *c = (struct cancel_store *)s;

	if (++c->gets == c->after)
		c->flag = 1;
	return kvmig_store_get_batch(c->inner, ios, n);
}

static int cs_size(struct kvmig_store *s, const struct kvmig_digest *d, uint64_t *len)
{
	struct cancel_store *c = (struct cancel_store *)s;

	return c->inner->ops->blob_size(c->inner, d, len);
}

static int cs_totals(struct kvmig_store *s, uint64_t *bytes, uint64_t *count)
{
	struct cancel_store *c = (struct cancel_store *)s;

	return c->inner->ops->totals(c->inner, bytes, count);
}

static void cs_close(struct kvmig_store *s)
{
	(void)s; /* the test closes the inner store */
}

static const struct kvmig_store_ops cancel_ops = {
	.put_batch = cs_put,
	.get_batch = cs_get,
	.blob_size = cs_size,
	.totals = cs_totals,
	.close = cs_close,
};

/* Every sequence of @p (ids, page indices, fills) and its occupied pages. */
struct snapshot {
	struct kvmig_seq_list seqs;
	uint32_t *occ, n_occ;
};

static void take(struct kvmig_pager *p, struct snapshot *s)
{
	memset(s, 0, sizeof(*s));
	assert_int_equal(kvmig_pager_seqs(p, &s->seqs), 0);
	assert_int_equal(kvmig_pager_occupied(p, &s->occ, &s->n_occ), 0);
}

static void assert_unchanged(struct kvmig_pager *p, struct snapshot *was)
{
	struct snapshot now;

	take(p, &now);
	assert_int_equal(now.n_occ, was->n_occ);
	assert_memory_equal(now.occ, was->occ, sizeof(uint32_t) * was->n_occ);
	assert_int_equal(now.seqs.n, was->seqs.n);
	for (uint32_t i = 0; i < was->seqs.n; i++) {
		assert_string_equal(now.seqs.seqs[i].id, was->seqs.seqs[i].id);
		assert_int_equal(now.seqs.seqs[i].n_pages, was->seqs.seqs[i].n_pages);
		assert_memory_equal(now.seqs.seqs[i].page_ixs, was->seqs.seqs[i].page_ixs,
				    sizeof(uint32_t) * was->seqs.seqs[i].n_pages);
	}
	kvmig_seq_list_free(&now.seqs);
	free(now.occ);
}

static void drop(struct snapshot *s)
{
	kvmig_seq_list_free(&s->seqs);
	free(s->occ);
}

/* Restore cancelled after 2 page batches (the manifest is the first get):
 * -ECANCELED, "interrupted", and the destination exactly as before: same
 * occupied pages, same sequences. Cancelled before it starts: the same. */
static void test_restore_cancelled(void **state)
{
	struct kvmig_pager *src = synth_pager("tiny", KVMIG_LAYOUT_PAGE_MAJOR, 3, 8, 16, 2, 256);
	struct kvmig_pager *dst = synth_pager("tiny", KVMIG_LAYOUT_PAGE_MAJOR, 4, 0, 8, 0, 512);
	struct cancel_store cs = { { &cancel_ops, 0 }, NULL, 0, 0, 0, 3 };
	struct kvmig_manifest *m = NULL;
	struct kvmig_cas_opts o;
	struct snapshot before;
	struct kvmig_digest d;
	uint32_t pad[5];
	char *dir = mkstore(&cs.inner);

	/* What the destination holds stays: a sequence of its own, and pages no
	 * sequence uses. */
	assert_int_equal(kvmig_pager_allocate(dst, 5, pad), 0);
	struct kvmig_seq own = { .id = "own", .page_ixs = pad, .n_pages = 3 };
	assert_int_equal(kvmig_pager_install(dst, &own, 1), 0);
	assert_int_equal(kvmig_capture(src, cs.inner, &d, NULL), 0);
	assert_true(n_occupied(src) > 3 * 32); /* more than 3 batches */
	take(dst, &before);
	kvmig_cas_opts_init(&o);
	o.cancel = &cs.flag;
	assert_int_equal(kvmig_restore_ex(dst, &cs.base, &o, &d, NULL), -ECANCELED);
	assert_non_null(strstr(kvmig_last_error(), "interrupted after reading 64 of"));
	assert_int_equal(cs.gets, 3);
	assert_unchanged(dst, &before);
	/* Already set before the first page is read: nothing is allocated. */
	cs.gets = 0;
	assert_int_equal(kvmig_restore_ex(dst, &cs.base, &o, &d, NULL), -ECANCELED);
	assert_int_equal(cs.gets, 1); /* the manifest only */
	assert_unchanged(dst, &before);
	/* Not set: the same restore goes through. */
	cs.flag = 0;
	cs.after = 0;
	assert_int_equal(kvmig_restore_ex(dst, &cs.base, &o, &d, NULL), 0);
	assert_int_equal(kvmig_manifest_build(src, &m), 0);
	assert_int_equal(kvmig_verify(dst, m, NULL), 0); /* "own" is ignored */
	kvmig_manifest_free(&m);
	drop(&before);
	rmstore(&cs.inner, dir);
	kvmig_pager_destroy(&src);
	kvmig_pager_destroy(&dst);
}

/* Capture cancelled after 2 put batches: -ECANCELED, the pager resumed, no
 * temp file and no manifest in the store; a later capture deduplicates
 * what the cancelled one stored. */
static void test_capture_cancelled(void **state)
{
	struct kvmig_pager *p = synth_pager("tiny", KVMIG_LAYOUT_PAGE_MAJOR, 3, 8, 16, 2, 256);
	struct cancel_store cs = { { &cancel_ops, 0 }, NULL, 0, 0, 0, 2 };
	struct kvmig_manifest *m = NULL;
	struct kvmig_capture_stats st;
	struct kvmig_cas_opts o;
	struct kvmig_digest d, want;
	uint32_t depth = 99;
	uint64_t count;
	char *dir = mkstore(&cs.inner), cmd[160];
	char *json;
	size_t len;

	kvmig_cas_opts_init(&o);
	o.cancel = &cs.flag;
	assert_int_equal(kvmig_capture_ex(p, &cs.base, &o, &d, &st), -ECANCELED);
	assert_non_null(strstr(kvmig_last_error(), "interrupted after storing 64 of"));
	assert_int_equal(cs.puts, 2);
	assert_int_equal(kvmig_synth_pause_depth(p, &depth), 0);
	assert_int_equal(depth, 0);
	snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A %s/tmp)\"", dir);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(kvmig_store_blob_count(cs.inner, &count), 0);
	assert_int_equal(count, 2 * 64); /* two batches of 32 pages, K and V */
	assert_int_equal(kvmig_manifest_build(p, &m), 0);
	assert_int_equal(kvmig_manifest_serialize(m, &json, &len), 0);
	kvmig_digest_compute(json, len, &want);
	assert_int_equal(kvmig_store_has(cs.inner, &want), 0);
	cs.flag = 0;
	cs.after = 0;
	assert_int_equal(kvmig_capture_ex(p, &cs.base, &o, &d, &st), 0);
	assert_true(kvmig_digest_equal(&d, &want));
	assert_int_equal(st.blobs_deduped, 2 * 64);
	free(json);
	kvmig_manifest_free(&m);
	rmstore(&cs.inner, dir);
	kvmig_pager_destroy(&p);
}

/* A page blob corrupted in place (same size) is rewritten by the next
 * capture, which says so in blobs_repaired; the file is right afterwards
 * and a restore of the capture works. */
static void test_capture_repairs_blob(void **state)
{
	struct kvmig_pager *p = make("tiny", KVMIG_LAYOUT_PAGE_MAJOR, 9, 3, 16);
	struct kvmig_pager *dst = make("tiny", KVMIG_LAYOUT_PAGE_MAJOR, 1, 0, 16);
	struct kvmig_manifest *m = NULL;
	struct kvmig_capture_stats st;
	struct kvmig_store *s;
	struct kvmig_digest d, got;
	char path[256], cmd[300], line[128], hex[33];
	char *dir = mkstore(&s);
	FILE *fp;

	assert_int_equal(kvmig_capture(p, s, &d, &st), 0);
	assert_int_equal(st.blobs_repaired, 0);
	assert_int_equal(kvmig_manifest_build(p, &m), 0);
	blob_file(dir, &m->pages[1].v, path, sizeof(path));
	fp = fopen(path, "r+b");
	assert_non_null(fp);
	fputc('!', fp);
	fclose(fp);
	assert_int_equal(kvmig_capture(p, s, &d, &st), 0);
	assert_int_equal(st.blobs_repaired, 1);
	assert_int_equal(st.blobs_written, 1);
	assert_int_equal(st.blobs_deduped, 2 * st.pages); /* the manifest and the other halves */
	/* An independent checker: the file hashes to its name again. */
	snprintf(cmd, sizeof(cmd), "xxhsum -H2 %s", path);
	fp = popen(cmd, "r");
	assert_non_null(fp);
	assert_non_null(fgets(line, sizeof(line), fp));
	assert_int_equal(pclose(fp), 0);
	kvmig_digest_hex(&m->pages[1].v, hex);
	assert_memory_equal(line, hex, 32);
	(void)got;
	assert_int_equal(kvmig_capture(p, s, &d, &st), 0);
	assert_int_equal(st.blobs_repaired, 0);
	assert_int_equal(st.blobs_written, 0);
	assert_int_equal(kvmig_restore(dst, s, &d, NULL), 0);
	assert_same_bytes(p, dst);
	kvmig_manifest_free(&m);
	rmstore(&s, dir);
	kvmig_pager_destroy(&p);
	kvmig_pager_destroy(&dst);
}

static void test_malformed_manifest_installs_nothing(void **state)
{
	struct kvmig_pager *dst = make("tiny", KVMIG_LAYOUT_PAGE_MAJOR, 1, 0, 16);
	struct kvmig_store *s;
	struct kvmig_digest d;
	char *dir = mkstore(&s);
	static const char bad[] = "{\"layout\":\"page_major\",\"page_size_tokens\":4";

	kvmig_digest_compute(bad, strlen(bad), &d);
	assert_int_equal(kvmig_store_put(s, &d, bad, strlen(bad)), 1);
	assert_int_equal(kvmig_restore(dst, s, &d, NULL), -EINVAL);
	assert_non_null(strstr(kvmig_last_error(), "malformed"));
	assert_int_equal(n_occupied(dst), 0);
	rmstore(&s, dir);
	kvmig_pager_destroy(&dst);
}

static void test_enospc_and_eexist(void **state)
{
	struct kvmig_pager *src = make("tiny", KVMIG_LAYOUT_PAGE_MAJOR, 9, 3, 16);
	struct kvmig_pager *small = make("tiny", KVMIG_LAYOUT_PAGE_MAJOR, 1, 0, 4);
	struct kvmig_pager *same = make("tiny", KVMIG_LAYOUT_PAGE_MAJOR, 9, 3, 32);
	struct kvmig_store *s;
	struct kvmig_digest d;
	char *dir = mkstore(&s);
	uint32_t occ = n_occupied(same);

	assert_int_equal(kvmig_capture(src, s, &d, NULL), 0);
	assert_int_equal(kvmig_restore(small, s, &d, NULL), -ENOSPC);
	assert_int_equal(n_occupied(small), 0);
	/* Sequence ids already installed: refused, pages handed back. */
	assert_int_equal(kvmig_restore(same, s, &d, NULL), -EEXIST);
	assert_int_equal(n_occupied(same), occ);
	rmstore(&s, dir);
	kvmig_pager_destroy(&src);
	kvmig_pager_destroy(&small);
	kvmig_pager_destroy(&same);
}

static void test_verify_detects_difference(void **state)
{
	struct kvmig_pager *a = make("tiny", KVMIG_LAYOUT_PAGE_MAJOR, 9, 3, 16);
	struct kvmig_manifest *m = NULL;
	struct kvmig_seq_list l = { 0 };
	uint32_t bad = 0;

	assert_int_equal(kvmig_manifest_build(a, &m), 0);
	assert_int_equal(kvmig_verify(a, m, &bad), 0);
	assert_int_equal(bad, 0);
	/* Change a shared prefix page: every sequence sees it. */
	assert_int_equal(kvmig_pager_seqs(a, &l), 0);
	assert_int_equal(kvmig_synth_fill_page(a, l.seqs[0].page_ixs[0], 42, 42), 0);
	assert_int_equal(kvmig_verify(a, m, &bad), -EIO);
	assert_int_equal(bad, 2 * 3); /* K and V, in 3 sequences */
	assert_non_null(strstr(kvmig_last_error(), "seq-0"));
	const char *id[] = { "seq-1" };
	assert_int_equal(kvmig_pager_remove(a, id, 1), 0);
	assert_int_equal(kvmig_verify(a, m, &bad), -ENOENT);
	kvmig_seq_list_free(&l);
	kvmig_manifest_free(&m);
	kvmig_pager_destroy(&a);
}

/*
 * Sequences that are not runnable (pending under a migration whose outcome
 * is not applied) are never captured, nor the pages only they use, and
 * verify refuses to count them as present: a restore of such a capture
 * would make runnable copies of a migration that may never commit.
 */
static void test_pending_not_captured(void **state)
{
	struct kvmig_pager *a = make("tiny", KVMIG_LAYOUT_PAGE_MAJOR, 9, 2, 16);
	struct kvmig_manifest *before = NULL, *m = NULL;
	struct kvmig_record d = { .role = KVMIG_ROLE_DEST, .state = KVMIG_REC_RECEIVING };
	struct kvmig_seq_list l = { 0 };
	uint32_t ix[2];
	struct kvmig_seq q = { .id = (char *)"incoming", .page_ixs = ix, .n_pages = 2 };

	(void)state;
	assert_int_equal(kvmig_manifest_build(a, &before), 0);
	/* A migration into it, pending: two pages of their own, one of them
	 * also used by a runnable sequence (it stays captured). */
	assert_int_equal(kvmig_pager_seqs(a, &l), 0);
	assert_int_equal(kvmig_pager_allocate(a, 1, ix), 0);
	ix[1] = l.seqs[0].page_ixs[0];
	assert_int_equal(kvmig_pager_record_create(a, &d), 0);
	assert_int_equal(kvmig_pager_record_install(a, &d.id, &q, 1), 0);
	assert_int_equal(kvmig_manifest_build(a, &m), 0);
	assert_int_equal(m->n_seqs, before->n_seqs);
	assert_int_equal(m->n_pages, before->n_pages); /* ix[0] left out, ix[1] kept */
	for (uint32_t i = 0; i < m->n_seqs; i++)
		assert_string_not_equal(m->seqs[i].id, "incoming");
	assert_int_equal(kvmig_verify(a, m, NULL), 0);
	/* A manifest that names the pending one: not present as runnable. */
	assert_int_equal(kvmig_manifest_add_seq(m, "incoming", ix, 2, 0), 0);
	/* (digests from the manifest's own array: add_page copies them first) */
	assert_int_equal(kvmig_manifest_add_page(m, ix[0], &m->pages[0].k, &m->pages[0].v), 0);
	assert_int_equal(kvmig_manifest_canonicalize(m), 0);
	assert_int_equal(kvmig_verify(a, m, NULL), -EBUSY);
	assert_non_null(strstr(kvmig_last_error(), "\"incoming\" is pending"));
	kvmig_seq_list_free(&l);
	kvmig_manifest_free(&m);
	kvmig_manifest_free(&before);
	kvmig_pager_destroy(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_page_major),
		cmocka_unit_test(test_round_trip_layer_major),
		cmocka_unit_test(test_meta_mismatch_untouched),
		cmocka_unit_test(test_dedup_twelve_identical),
		cmocka_unit_test(test_one_page_differs),
		cmocka_unit_test(test_v_change_shares_k),
		cmocka_unit_test(test_corrupt_blob_installs_nothing),
		cmocka_unit_test(test_malformed_manifest_installs_nothing),
		cmocka_unit_test(test_enospc_and_eexist),
		cmocka_unit_test(test_verify_detects_difference),
		cmocka_unit_test(test_pending_not_captured),
		cmocka_unit_test(test_failing_blob_write),
		cmocka_unit_test(test_restore_cancelled),
		cmocka_unit_test(test_capture_cancelled),
		cmocka_unit_test(test_capture_repairs_blob),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
