/* SPDX-License-Identifier: MIT */
/* tests/unit/test_wire.c - the wire codec: round trips, truncation, corruption. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "util/internal.h"
#include "transport/wire.h"

/* Decode any payload of @type; 0 or -EBADMSG. Frees what it decoded. */
static int decode(uint8_t type, const uint8_t *p, size_t len)
{
	struct kvmig_msg_hello h;
	struct kvmig_msg_regions rg;
	struct kvmig_msg_offer of;
	struct kvmig_msg_read_req rq;
	struct kvmig_msg_abort ab;
	struct kvmig_msg_round rd;
	struct kvmig_manifest_page *pg = NULL;
	struct kvmig_seq_list l = { 0 };
	uint32_t n;
	int ret;

	switch (type) {
	case KVMIG_MSG_HELLO:
		return kvmig_wire_get_hello(p, len, &h);
	case KVMIG_MSG_REGIONS:
		ret = kvmig_wire_get_regions(p, len, &rg);
		kvmig_msg_regions_free(&rg);
		return ret;
	case KVMIG_MSG_OFFER:
		ret = kvmig_wire_get_offer(p, len, &of);
		kvmig_msg_offer_free(&of);
		return ret;
	case KVMIG_MSG_READ_REQ:
		return kvmig_wire_get_read_req(p, len, &rq);
	case KVMIG_MSG_DIGESTS:
		ret = kvmig_wire_get_digests(p, len, &pg, &n);
		free(pg);
		return ret;
	case KVMIG_MSG_FINAL:
		ret = kvmig_wire_get_final(p, len, &l);
		kvmig_seq_list_free(&l);
		return ret;
	case KVMIG_MSG_ABORT:
		return kvmig_wire_get_abort(p, len, &ab);
	case KVMIG_MSG_ROUND:
		return kvmig_wire_get_round(p, len, &rd);
	case KVMIG_MSG_RECORDS: {
		struct kvmig_wire_record *w = NULL;

		ret = kvmig_wire_get_records(p, len, &w, &n);
		free(w);
		return ret;
	}
	default:
		return len == 0 ? 0 : -EBADMSG;
	}
}

static struct kvmig_wire_extent ext[4] = {
	{ 0x1000, 256 }, { 0x2000, 256 }, { 0x3000, 256 }, { 0x4000, 256 } };

/* One frame of every message type, concatenated in @b; returns the count. */
static int all_messages(struct kvmig_wbuf *b)
{
	struct kvmig_msg_hello h = { .role = 1, .flags = KVMIG_HELLO_NO_VERIFY,
				     .format = { "layer_major", KVMIG_ORDER_HND, "c1" },
				     .meta = { 4, 2, 2, 16, KVMIG_DTYPE_F16 }, .half_bytes = 512,
				     .migration = { { 0xa5, [15] = 0x5a } }, .pager = { { 7 } } };
	struct kvmig_wire_record recs[2] = {
		{ .id = { { 1, 2, 3 } }, .role = KVMIG_ROLE_DEST, .state = KVMIG_REC_PREPARED },
		{ .id = { { 9 } }, .role = KVMIG_ROLE_SOURCE, .state = KVMIG_REC_DEPARTED },
	};
	struct kvmig_wire_region regions[2] = {
		{ 0x1000, 1 << 20, { 4, { 0, 0, 0, 7 } } },
		{ 1ull << 40, 4096, { KVMIG_WIRE_MAX_KEY, { 9, [KVMIG_WIRE_MAX_KEY - 1] = 0xfe } } },
	};
	struct kvmig_msg_regions rg = { 2, regions };
	struct kvmig_offer_page pages[2] = { { 3, 2, 11, ext }, { 9, 2, 12, ext + 2 } };
	struct kvmig_msg_offer of = { 5, 2, pages, NULL };
	struct kvmig_msg_read_req rq = { 77, 0x1000, 256, { 16, { 1, 2, 3, [15] = 16 } } };
	struct kvmig_manifest_page dg[1] = { { 3, { { 1, 2, 3 } }, { { 4, 5, 6 } } } };
	uint32_t ixs[3] = { 3, 9, 3 };
	struct kvmig_seq seqs[2] = {
		{ .id = (char *)"req-\"1\"", .page_ixs = ixs, .n_pages = 3, .fill_in_last_page = 2 },
		{ .id = (char *)"b", .page_ixs = ixs },
	};

	assert_int_equal(kvmig_wire_put_hello(b, &h), 0);
	assert_int_equal(kvmig_wire_put_regions(b, &rg), 0);
	assert_int_equal(kvmig_wire_put_offer(b, &of), 0);
	assert_int_equal(kvmig_wire_put_read_req(b, &rq), 0);
	assert_int_equal(kvmig_wire_put_digests(b, dg, 1), 0);
	assert_int_equal(kvmig_wire_put_final(b, seqs, 2), 0);
	assert_int_equal(kvmig_wire_put_empty(b, KVMIG_MSG_COMMIT), 0);
	assert_int_equal(kvmig_wire_put_abort(b, -ENOSPC, "destination out of pages"), 0);
	assert_int_equal(kvmig_wire_put_round(b, &(struct kvmig_msg_round){ 3, 70000 }), 0);
	assert_int_equal(kvmig_wire_put_empty(b, KVMIG_MSG_ACTIVATED), 0);
	assert_int_equal(kvmig_wire_put_empty(b, KVMIG_MSG_FORGET), 0);
	assert_int_equal(kvmig_wire_put_records(b, recs, 2), 0);
	return 12;
}

static void test_round_trip(void **state)
{
	struct kvmig_wbuf b = { 0 };
	struct kvmig_wire_hdr h;
	size_t off = 0;
	int n = all_messages(&b);

	for (int i = 0; i < n; i++) {
		assert_int_equal(kvmig_wire_get_hdr(b.p + off, &h), 0);
		const uint8_t *p = b.p + off + KVMIG_WIRE_HDR_LEN;

		switch (h.type) {
		case KVMIG_MSG_HELLO: {
			struct kvmig_msg_hello m;
			assert_int_equal(kvmig_wire_get_hello(p, h.len, &m), 0);
			assert_int_equal(m.role, 1);
			assert_int_equal(m.flags, KVMIG_HELLO_NO_VERIFY);
			assert_string_equal(m.format.layout, "layer_major");
			assert_int_equal(m.format.order, KVMIG_ORDER_HND);
			assert_string_equal(m.format.compat, "c1");
			assert_int_equal(m.meta.head_dim, 16);
			assert_int_equal(m.half_bytes, 512);
			assert_int_equal(m.migration.b[0], 0xa5);
			assert_int_equal(m.migration.b[15], 0x5a);
			assert_int_equal(m.pager.b[0], 7);
			break;
		}
		case KVMIG_MSG_REGIONS: {
			struct kvmig_msg_regions m;
			assert_int_equal(kvmig_wire_get_regions(p, h.len, &m), 0);
			assert_int_equal(m.n, 2);
			assert_true(m.r[1].addr == 1ull << 40);
			assert_int_equal(m.r[0].key.len, 4);
			assert_int_equal(m.r[0].key.b[3], 7);
			assert_int_equal(m.r[1].key.len, KVMIG_WIRE_MAX_KEY);
			assert_int_equal(m.r[1].key.b[0], 9);
			assert_int_equal(m.r[1].key.b[KVMIG_WIRE_MAX_KEY - 1], 0xfe);
			kvmig_msg_regions_free(&m);
			break;
		}
		case KVMIG_MSG_OFFER: {
			struct kvmig_msg_offer m;
			assert_int_equal(kvmig_wire_get_offer(p, h.len, &m), 0);
			assert_int_equal(m.round, 5);
			assert_int_equal(m.n, 2);
			assert_int_equal(m.pages[1].ix, 9);
			assert_int_equal(m.pages[1].generation, 12);
			assert_int_equal(m.pages[1].ext[1].addr, 0x4000);
			kvmig_msg_offer_free(&m);
			break;
		}
		case KVMIG_MSG_READ_REQ: {
			struct kvmig_msg_read_req m;
			assert_int_equal(kvmig_wire_get_read_req(p, h.len, &m), 0);
			assert_int_equal(m.id, 77);
			assert_int_equal(m.len, 256);
			assert_int_equal(m.key.len, 16);
			assert_int_equal(m.key.b[15], 16);
			break;
		}
		case KVMIG_MSG_DIGESTS: {
			struct kvmig_manifest_page *pg;
			uint32_t cnt;
			assert_int_equal(kvmig_wire_get_digests(p, h.len, &pg, &cnt), 0);
			assert_int_equal(cnt, 1);
			assert_int_equal(pg[0].v.b[2], 6);
			free(pg);
			break;
		}
		case KVMIG_MSG_FINAL: {
			struct kvmig_seq_list l = { 0 };
			assert_int_equal(kvmig_wire_get_final(p, h.len, &l), 0);
			assert_int_equal(l.n, 2);
			assert_string_equal(l.seqs[0].id, "req-\"1\"");
			assert_int_equal(l.seqs[0].n_pages, 3);
			assert_int_equal(l.seqs[0].page_ixs[2], 3);
			assert_int_equal(l.seqs[0].fill_in_last_page, 2);
			assert_int_equal(l.seqs[1].n_pages, 0);
			kvmig_seq_list_free(&l);
			break;
		}
		case KVMIG_MSG_COMMIT:
		case KVMIG_MSG_ACTIVATED:
		case KVMIG_MSG_FORGET:
			assert_int_equal(h.len, 0);
			break;
		case KVMIG_MSG_RECORDS: {
			struct kvmig_wire_record *w = NULL;
			uint32_t cnt;
			assert_int_equal(kvmig_wire_get_records(p, h.len, &w, &cnt), 0);
			assert_int_equal(cnt, 2);
			assert_int_equal(w[0].id.b[2], 3);
			assert_int_equal(w[0].role, KVMIG_ROLE_DEST);
			assert_int_equal(w[0].state, KVMIG_REC_PREPARED);
			assert_int_equal(w[1].state, KVMIG_REC_DEPARTED);
			free(w);
			break;
		}
		case KVMIG_MSG_ABORT: {
			struct kvmig_msg_abort m;
			assert_int_equal(kvmig_wire_get_abort(p, h.len, &m), 0);
			assert_int_equal(m.err, ENOSPC);
			assert_string_equal(m.text, "destination out of pages");
			break;
		}
		case KVMIG_MSG_ROUND: {
			struct kvmig_msg_round m;
			assert_int_equal(kvmig_wire_get_round(p, h.len, &m), 0);
			assert_int_equal(m.round, 3);
			assert_int_equal(m.pages, 70000);
			break;
		}
		default:
			fail();
		}
		off += KVMIG_WIRE_HDR_LEN + h.len;
	}
	assert_int_equal(off, b.len);
	kvmig_wbuf_free(&b);
}

static void test_every_truncation_and_trailing_byte(void **state)
{
	struct kvmig_wbuf b = { 0 };
	struct kvmig_wire_hdr h;
	size_t off = 0;
	int n = all_messages(&b);

	for (int i = 0; i < n; i++) {
		assert_int_equal(kvmig_wire_get_hdr(b.p + off, &h), 0);
		const uint8_t *p = b.p + off + KVMIG_WIRE_HDR_LEN;

		for (uint32_t len = 0; len < h.len; len++) {
			/* An exact-size copy, so ASan sees any read past the end. */
			uint8_t *cut = malloc(len ? len : 1);

			memcpy(cut, p, len);
			assert_int_equal(decode(h.type, cut, len), -EBADMSG);
			assert_true(kvmig_last_error()[0] != '\0');
			free(cut);
		}
		uint8_t *longer = malloc(h.len + 1);

		memcpy(longer, p, h.len);
		longer[h.len] = 0;
		assert_int_equal(decode(h.type, longer, h.len + 1), -EBADMSG);
		if (h.type != KVMIG_MSG_COMMIT)
			assert_non_null(strstr(kvmig_last_error(), "trailing"));
		free(longer);
		off += KVMIG_WIRE_HDR_LEN + h.len;
	}
	kvmig_wbuf_free(&b);
}

static void test_header_violations(void **state)
{
	struct kvmig_wbuf b = { 0 };
	struct kvmig_wire_hdr h;
	uint8_t f[KVMIG_WIRE_HDR_LEN];

	assert_int_equal(kvmig_wire_put_empty(&b, KVMIG_MSG_COMMIT), 0);
	memcpy(f, b.p, sizeof(f));
	f[0] = 'X';
	assert_int_equal(kvmig_wire_get_hdr(f, &h), -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "magic"));
	memcpy(f, b.p, sizeof(f));
	f[4] = 1;
	assert_int_equal(kvmig_wire_get_hdr(f, &h), -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "version 1"));
	f[4] = 3; /* a version-3 peer (no page format in its HELLO): refused at its first frame, both named */
	assert_int_equal(kvmig_wire_get_hdr(f, &h), -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "version 3; this is version 5"));
	memcpy(f, b.p, sizeof(f));
	f[5] = 0;
	assert_int_equal(kvmig_wire_get_hdr(f, &h), -EBADMSG);
	f[5] = KVMIG_MSG_LAST + 1;
	assert_int_equal(kvmig_wire_get_hdr(f, &h), -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "unknown message type"));
	memcpy(f, b.p, sizeof(f));
	f[7] = 1;
	assert_int_equal(kvmig_wire_get_hdr(f, &h), -EBADMSG);
	memcpy(f, b.p, sizeof(f));
	f[8] = 0xff; /* length 4 GiB - ... */
	assert_int_equal(kvmig_wire_get_hdr(f, &h), -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "exceeds the limit"));
	memcpy(f, b.p, sizeof(f));
	f[10] = 0x04; /* a COMMIT of 1 KiB: small messages stay small */
	assert_int_equal(kvmig_wire_get_hdr(f, &h), 0);
	f[11] = 0x01;
	assert_int_equal(kvmig_wire_get_hdr(f, &h), -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "at most 1024"));
	f[5] = KVMIG_MSG_OFFER; /* an OFFER may be larger */
	assert_int_equal(kvmig_wire_get_hdr(f, &h), 0);
	kvmig_wbuf_free(&b);
}

static void test_huge_counts_refused_before_allocation(void **state)
{
	/* Counts of 2^32-1 with 8 bytes behind them: refused by the limit or by
	 * the bytes present, never by a failed multi-GiB allocation. */
	uint8_t p[12] = { 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0 };
	uint8_t q[12] = { 0, 0, 0, 1, 0, 0, 0xea, 0x60, 0, 0, 0, 0 }; /* 60000 pages */
	uint8_t final_small[8] = { 0, 0, 0, 200, 0, 1, 'a', 0 };

	assert_int_equal(decode(KVMIG_MSG_DIGESTS, p, sizeof(p)), -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "above the limit"));
	assert_int_equal(decode(KVMIG_MSG_FINAL, p, sizeof(p)), -EBADMSG);
	assert_int_equal(decode(KVMIG_MSG_REGIONS, p, sizeof(p)), -EBADMSG);
	assert_int_equal(decode(KVMIG_MSG_OFFER, q, sizeof(q)), -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "only"));
	assert_int_equal(decode(KVMIG_MSG_FINAL, final_small, sizeof(final_small)), -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "only"));
}

static void test_semantic_violations(void **state)
{
	struct kvmig_wbuf b = { 0 };
	struct kvmig_msg_hello h = { .format = { "page_major", KVMIG_ORDER_NHD, "" },
				     .meta = { 4, 2, 2, 16, KVMIG_DTYPE_F16 }, .half_bytes = 999 };
	struct kvmig_offer_page odd = { 1, 3, 0, ext };
	struct kvmig_msg_offer of = { 0, 1, &odd, NULL };

	assert_int_equal(kvmig_wire_put_hello(&b, &h), 0);
	assert_int_equal(decode(KVMIG_MSG_HELLO, b.p + KVMIG_WIRE_HDR_LEN, b.len - KVMIG_WIRE_HDR_LEN),
			 -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "half_bytes"));
	b.len = 0;
	h.half_bytes = 512;
	h.meta.n_layers = 0;
	assert_int_equal(kvmig_wire_put_hello(&b, &h), 0);
	assert_int_equal(decode(KVMIG_MSG_HELLO, b.p + KVMIG_WIRE_HDR_LEN, b.len - KVMIG_WIRE_HDR_LEN),
			 -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "n_layers"));
	b.len = 0;
	h.meta.n_layers = 2;
	h.flags = 0x80; /* a flag this version does not know */
	assert_int_equal(kvmig_wire_put_hello(&b, &h), 0);
	assert_int_equal(decode(KVMIG_MSG_HELLO, b.p + KVMIG_WIRE_HDR_LEN, b.len - KVMIG_WIRE_HDR_LEN),
			 -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "flags 0x80"));
	b.len = 0;
	assert_int_equal(kvmig_wire_put_offer(&b, &of), -EINVAL); /* odd extent count */
	assert_int_equal(kvmig_wire_put_abort(&b, EIO, "bad\x01text"), 0);
	struct kvmig_msg_abort ab;
	assert_int_equal(kvmig_wire_get_abort(b.p + KVMIG_WIRE_HDR_LEN, b.len - KVMIG_WIRE_HDR_LEN,
					      &ab), 0);
	assert_string_equal(ab.text, "bad?text");
	/* Remote keys: 1..KVMIG_WIRE_MAX_KEY bytes, both ways. */
	struct kvmig_wire_region rg1 = { 0x1000, 4096, { 0, { 0 } } };
	struct kvmig_msg_regions rgs = { 1, &rg1 };
	struct kvmig_msg_read_req rq = { 1, 0x1000, 64, { KVMIG_WIRE_MAX_KEY + 1, { 0 } } };

	b.len = 0;
	assert_int_equal(kvmig_wire_put_regions(&b, &rgs), -EINVAL);
	assert_int_equal(b.len, 0); /* nothing half written */
	assert_int_equal(kvmig_wire_put_read_req(&b, &rq), -EINVAL);
	assert_int_equal(b.len, 0);
	rq.key.len = 4;
	assert_int_equal(kvmig_wire_put_read_req(&b, &rq), 0);
	b.p[KVMIG_WIRE_HDR_LEN + 20] = 0; /* the key's length byte */
	assert_int_equal(decode(KVMIG_MSG_READ_REQ, b.p + KVMIG_WIRE_HDR_LEN,
				b.len - KVMIG_WIRE_HDR_LEN), -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "key is 0 bytes long"));
	b.p[KVMIG_WIRE_HDR_LEN + 20] = KVMIG_WIRE_MAX_KEY + 1;
	assert_int_equal(decode(KVMIG_MSG_READ_REQ, b.p + KVMIG_WIRE_HDR_LEN,
				b.len - KVMIG_WIRE_HDR_LEN), -EBADMSG);
	b.p[KVMIG_WIRE_HDR_LEN + 20] = 5; /* longer than the bytes present */
	assert_int_equal(decode(KVMIG_MSG_READ_REQ, b.p + KVMIG_WIRE_HDR_LEN,
				b.len - KVMIG_WIRE_HDR_LEN), -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "truncated"));
	kvmig_wbuf_free(&b);
}

/* READ_RESP's fixed header: encoded, framed and decoded; length must agree. */
static void test_read_resp_header(void **state)
{
	uint8_t h[KVMIG_WIRE_READ_RESP_HDR_LEN];
	struct kvmig_wire_hdr fh;
	uint64_t id = 0;
	uint32_t len = 0;

	kvmig_wire_read_resp_hdr(h, 0x0102030405060708ull, 65536);
	assert_int_equal(kvmig_wire_get_hdr(h, &fh), 0);
	assert_int_equal(fh.type, KVMIG_MSG_READ_RESP);
	assert_int_equal(fh.len, 12 + 65536);
	assert_int_equal(kvmig_wire_get_read_resp(h + KVMIG_WIRE_HDR_LEN, fh.len, &id, &len), 0);
	assert_true(id == 0x0102030405060708ull);
	assert_int_equal(len, 65536);
	assert_int_equal(kvmig_wire_get_read_resp(h + KVMIG_WIRE_HDR_LEN, fh.len - 1, &id, &len),
			 -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "claims 65536"));
	assert_int_equal(kvmig_wire_get_read_resp(h + KVMIG_WIRE_HDR_LEN, 11, &id, &len), -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "truncated"));
}

/* Deterministic corruption: flip bytes of valid frames; the decoder must
 * return 0 or -EBADMSG, never crash (this suite also runs under ASan). */
static void test_byte_flip_fuzz(void **state)
{
	struct kvmig_wbuf b = { 0 };
	uint64_t rng = 42;
	int n = all_messages(&b), accepted = 0, refused = 0;

	for (int it = 0; it < 20000; it++) {
		struct kvmig_wire_hdr h;
		size_t off = 0;
		int pick = (int)(kvmig_splitmix64(&rng) % (uint64_t)n);

		for (int i = 0; i < pick; i++) {
			assert_int_equal(kvmig_wire_get_hdr(b.p + off, &h), 0);
			off += KVMIG_WIRE_HDR_LEN + h.len;
		}
		assert_int_equal(kvmig_wire_get_hdr(b.p + off, &h), 0);
		uint8_t *copy = malloc(h.len ? h.len : 1);

		memcpy(copy, b.p + off + KVMIG_WIRE_HDR_LEN, h.len);
		for (int f = 0; h.len && f < 1 + (int)(kvmig_splitmix64(&rng) % 3); f++)
			copy[kvmig_splitmix64(&rng) % h.len] ^= (uint8_t)(1 + kvmig_splitmix64(&rng) % 255);
		int ret = decode(h.type, copy, h.len);

		assert_true(ret == 0 || ret == -EBADMSG);
		ret == 0 ? accepted++ : refused++;
		free(copy);
	}
	print_message("byte-flip fuzz: %d accepted, %d refused\n", accepted, refused);
	assert_true(refused > 1000);
	kvmig_wbuf_free(&b);
}

/* PATHS and JOIN: round trips, and every limit refused with the field named. */
static void test_paths_and_join(void **state)
{
	struct kvmig_msg_paths pp = { .per_addr = 2, .n_addrs = 3, .token = { 7, [15] = 9 } }, got;
	struct kvmig_msg_join j = { .token = { 1, [15] = 2 }, .index = 5, .total = 6 }, jg;
	struct kvmig_wbuf b = { 0 };
	struct kvmig_wire_hdr h;

	(void)state;
	snprintf(pp.addrs[0], sizeof(pp.addrs[0]), "10.0.0.1:1");
	snprintf(pp.addrs[1], sizeof(pp.addrs[1]), "[fe80::1]:65535");
	memset(pp.addrs[2], 'a', KVMIG_WIRE_MAX_ADDR);
	pp.addrs[2][KVMIG_WIRE_MAX_ADDR] = '\0';
	assert_int_equal(kvmig_wire_put_paths(&b, &pp), 0);
	assert_int_equal(kvmig_wire_get_hdr(b.p, &h), 0);
	assert_int_equal(h.type, KVMIG_MSG_PATHS);
	assert_int_equal(kvmig_wire_get_paths(b.p + KVMIG_WIRE_HDR_LEN, h.len, &got), 0);
	assert_int_equal(got.per_addr, 2);
	assert_int_equal(got.n_addrs, 3);
	assert_memory_equal(got.token, pp.token, sizeof(pp.token));
	for (int i = 0; i < 3; i++)
		assert_string_equal(got.addrs[i], pp.addrs[i]);
	/* More than KVMIG_WIRE_MAX_PATHS connections in all: refused both ways. */
	pp.per_addr = 3;
	b.len = 0;
	assert_int_equal(kvmig_wire_put_paths(&b, &pp), -EINVAL);
	pp.per_addr = 2;
	assert_int_equal(kvmig_wire_put_paths(&b, &pp), 0);
	b.p[KVMIG_WIRE_HDR_LEN] = 3;
	assert_int_equal(kvmig_wire_get_paths(b.p + KVMIG_WIRE_HDR_LEN, h.len, &got), -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "at most 8 in all"));
	b.p[KVMIG_WIRE_HDR_LEN] = 0;
	assert_int_equal(kvmig_wire_get_paths(b.p + KVMIG_WIRE_HDR_LEN, h.len, &got), -EBADMSG);
	/* An address with a space, an empty one, one cut short. */
	b.p[KVMIG_WIRE_HDR_LEN] = 2;
	b.p[KVMIG_WIRE_HDR_LEN + 1 + 16 + 1 + 1 + 2] = ' ';
	assert_int_equal(kvmig_wire_get_paths(b.p + KVMIG_WIRE_HDR_LEN, h.len, &got), -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "not a host:port"));
	b.p[KVMIG_WIRE_HDR_LEN + 1 + 16 + 1 + 1 + 2] = '0';
	b.p[KVMIG_WIRE_HDR_LEN + 1 + 16 + 1] = 0;
	assert_int_equal(kvmig_wire_get_paths(b.p + KVMIG_WIRE_HDR_LEN, h.len, &got), -EBADMSG);
	b.p[KVMIG_WIRE_HDR_LEN + 1 + 16 + 1] = 10;
	assert_int_equal(kvmig_wire_get_paths(b.p + KVMIG_WIRE_HDR_LEN, h.len - 1, &got), -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "truncated"));
	/* JOIN */
	b.len = 0;
	assert_int_equal(kvmig_wire_put_join(&b, &j), 0);
	assert_int_equal(kvmig_wire_get_hdr(b.p, &h), 0);
	assert_int_equal(kvmig_wire_get_join(b.p + KVMIG_WIRE_HDR_LEN, h.len, &jg), 0);
	assert_memory_equal(jg.token, j.token, sizeof(j.token));
	assert_int_equal(jg.index, 5);
	assert_int_equal(jg.total, 6);
	b.p[KVMIG_WIRE_HDR_LEN + 16] = 6; /* index == total */
	assert_int_equal(kvmig_wire_get_join(b.p + KVMIG_WIRE_HDR_LEN, h.len, &jg), -EBADMSG);
	b.p[KVMIG_WIRE_HDR_LEN + 16] = 0; /* index 0 is the first connection itself */
	assert_int_equal(kvmig_wire_get_join(b.p + KVMIG_WIRE_HDR_LEN, h.len, &jg), -EBADMSG);
	b.p[KVMIG_WIRE_HDR_LEN + 16] = 1;
	b.p[KVMIG_WIRE_HDR_LEN + 17] = KVMIG_WIRE_MAX_PATHS + 1;
	assert_int_equal(kvmig_wire_get_join(b.p + KVMIG_WIRE_HDR_LEN, h.len, &jg), -EBADMSG);
	assert_non_null(strstr(kvmig_last_error(), "JOIN message"));
	assert_int_equal(kvmig_wire_get_join(b.p + KVMIG_WIRE_HDR_LEN, h.len + 1, &jg), -EBADMSG);
	kvmig_wbuf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_every_truncation_and_trailing_byte),
		cmocka_unit_test(test_header_violations),
		cmocka_unit_test(test_huge_counts_refused_before_allocation),
		cmocka_unit_test(test_semantic_violations),
		cmocka_unit_test(test_byte_flip_fuzz),
		cmocka_unit_test(test_read_resp_header),
		cmocka_unit_test(test_paths_and_join),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
