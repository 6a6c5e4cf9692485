/* SPDX-License-Identifier: MIT */
/*
 * transport/wire.c - encode and decode the migration protocol's messages.
 * See docs/PROTOCOL.md. Decoding never trusts a count: each one is checked
 * against its limit and against the bytes left before anything is allocated.
 */
#include <stdlib.h>
#include <string.h>

#include "util/internal.h"
#include "transport/wire.h"

int kvmig_wire_region_cmp(const void *a, const void *b)
{
	const struct kvmig_wire_region *x = a, *y = b;

	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/* ---- output ---- */

void kvmig_wbuf_free(struct kvmig_wbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

static uint8_t *reserve(struct kvmig_wbuf *b, size_t n)
{
	if (b->err)
		return NULL;
	if (n > b->cap - b->len) {
		size_t cap = b->cap ? b->cap : 256;
		uint8_t *np;

		while (cap - b->len < n)
			cap *= 2;
		np = realloc(b->p, cap);
		if (!np) {
			b->err = -ENOMEM;
			return NULL;
		}
		b->p = np;
		b->cap = cap;
	}
	b->len += n;
	return b->p + b->len - n;
}

static void put_be(struct kvmig_wbuf *b, uint64_t v, unsigned bytes)
{
	uint8_t *d = reserve(b, bytes);

	for (unsigned i = 0; d && i < bytes; i++)
		d[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
}

#define put_u8(b, v) put_be(b, v, 1)
#define put_u16(b, v) put_be(b, v, 2)
#define put_u32(b, v) put_be(b, v, 4)
#define put_u64(b, v) put_be(b, v, 8)

static void put_bytes(struct kvmig_wbuf *b, const void *src, size_t n)
{
	uint8_t *d = reserve(b, n);

	if (d && n)
		memcpy(d, src, n);
}

/* A remote key: its length byte, then its bytes. */
static int put_rkey(struct kvmig_wbuf *b, const struct kvmig_rkey *k)
{
	if (k->len < 1 || k->len > KVMIG_WIRE_MAX_KEY)
		return kvmig_err(-EINVAL, "a remote key of %u bytes (1..%u)", k->len,
				 KVMIG_WIRE_MAX_KEY);
	put_u8(b, k->len);
	put_bytes(b, k->b, k->len);
	return 0;
}

/* Start a frame; returns the offset of its header for finish(). */
static size_t begin(struct kvmig_wbuf *b, enum kvmig_msg_type type)
{
	size_t at = b->len;

	put_u32(b, KVMIG_WIRE_MAGIC);
	put_u8(b, KVMIG_WIRE_VERSION);
	put_u8(b, type);
	put_u16(b, 0); /* flags, reserved */
	put_u32(b, 0); /* length, patched by finish() */
	return at;
}

static int finish(struct kvmig_wbuf *b, size_t at)
{
	uint64_t len;

	if (b->err)
		return b->err;
	len = b->len - at - KVMIG_WIRE_HDR_LEN;
	if (len > KVMIG_WIRE_MAX_PAYLOAD) {
		b->len = at;
		return kvmig_err(-EINVAL, "message of %llu bytes exceeds the %u-byte limit",
				 (unsigned long long)len, KVMIG_WIRE_MAX_PAYLOAD);
	}
	for (int i = 0; i < 4; i++)
		b->p[at + 8 + i] = (uint8_t)(len >> (8 * (3 - i)));
	return 0;
}

int kvmig_wire_put_hello(struct kvmig_wbuf *b, const struct kvmig_msg_hello *m)
{
	size_t at = begin(b, KVMIG_MSG_HELLO);

	size_t ll = strnlen(m->format.layout, KVMIG_LAYOUT_NAME_MAX);
	size_t cl = strnlen(m->format.compat, KVMIG_COMPAT_MAX);

	put_u8(b, m->role);
	put_u8(b, (uint8_t)m->format.order);
	put_u8(b, m->meta.dtype);
	put_u8(b, m->flags);
	put_u32(b, m->meta.page_size_tokens);
	put_u32(b, m->meta.n_layers);
	put_u32(b, m->meta.n_heads);
	put_u32(b, m->meta.head_dim);
	put_u64(b, m->half_bytes);
	put_bytes(b, m->migration.b, sizeof(m->migration.b));
	put_bytes(b, m->pager.b, sizeof(m->pager.b));
	put_u8(b, (uint8_t)ll);
	put_bytes(b, m->format.layout, ll);
	put_u8(b, (uint8_t)cl);
	put_bytes(b, m->format.compat, cl);
	return finish(b, at);
}

int kvmig_wire_put_regions(struct kvmig_wbuf *b, const struct kvmig_msg_regions *m)
{
	size_t at;

	if (m->n > KVMIG_WIRE_MAX_REGIONS)
		return kvmig_err(-EINVAL, "%u regions exceed the limit of %u", m->n,
				 KVMIG_WIRE_MAX_REGIONS);
	at = begin(b, KVMIG_MSG_REGIONS);
	put_u32(b, m->n);
	for (uint32_t i = 0; i < m->n; i++) {
		int ret;

		put_u64(b, m->r[i].addr);
		put_u64(b, m->r[i].len);
		if ((ret = put_rkey(b, &m->r[i].key)) < 0) {
			b->len = at;
			return ret;
		}
	}
	return finish(b, at);
}

int kvmig_wire_put_offer(struct kvmig_wbuf *b, const struct kvmig_msg_offer *m)
{
	size_t at;

	if (m->n > KVMIG_WIRE_MAX_OFFER_PAGES)
		return kvmig_err(-EINVAL, "%u pages exceed the limit of %u per OFFER", m->n,
				 KVMIG_WIRE_MAX_OFFER_PAGES);
	at = begin(b, KVMIG_MSG_OFFER);
	put_u32(b, m->round);
	put_u32(b, m->n);
	for (uint32_t i = 0; i < m->n; i++) {
		const struct kvmig_offer_page *pg = &m->pages[i];

		if (pg->n_ext == 0 || pg->n_ext > KVMIG_WIRE_MAX_EXTENTS || pg->n_ext % 2) {
			b->len = at;
			return kvmig_err(-EINVAL, "page %u has %u extents", pg->ix, pg->n_ext);
		}
		put_u32(b, pg->ix);
		put_u32(b, pg->n_ext);
		put_u64(b, pg->generation);
		for (uint32_t j = 0; j < pg->n_ext; j++) {
			put_u64(b, pg->ext[j].addr);
			put_u64(b, pg->ext[j].len);
		}
	}
	return finish(b, at);
}

int kvmig_wire_put_round(struct kvmig_wbuf *b, const struct kvmig_msg_round *m)
{
	size_t at = begin(b, KVMIG_MSG_ROUND);

	put_u32(b, m->round);
	put_u32(b, m->pages);
	return finish(b, at);
}

int kvmig_wire_put_read_req(struct kvmig_wbuf *b, const struct kvmig_msg_read_req *m)
{
	size_t at = begin(b, KVMIG_MSG_READ_REQ);
	int ret;

	put_u64(b, m->id);
	put_u64(b, m->addr);
	put_u32(b, m->len);
	if ((ret = put_rkey(b, &m->key)) < 0) {
		b->len = at;
		return ret;
	}
	return finish(b, at);
}

int kvmig_wire_put_digests(struct kvmig_wbuf *b, const struct kvmig_manifest_page *pages,
			   uint32_t n)
{
	size_t at;

	if (n > KVMIG_WIRE_MAX_OFFER_PAGES)
		return kvmig_err(-EINVAL, "%u digests exceed the limit of %u per message", n,
				 KVMIG_WIRE_MAX_OFFER_PAGES);
	at = begin(b, KVMIG_MSG_DIGESTS);
	put_u32(b, n);
	for (uint32_t i = 0; i < n; i++) {
		put_u32(b, pages[i].ix);
		put_bytes(b, pages[i].k.b, 16);
		put_bytes(b, pages[i].v.b, 16);
	}
	return finish(b, at);
}

int kvmig_wire_put_final(struct kvmig_wbuf *b, const struct kvmig_seq *seqs, uint32_t n)
{
	size_t at;

	if (n > KVMIG_MAX_SEQS)
		return kvmig_err(-EINVAL, "%u sequences exceed the limit of %u", n, KVMIG_MAX_SEQS);
	at = begin(b, KVMIG_MSG_FINAL);
	put_u32(b, n);
	for (uint32_t i = 0; i < n; i++) {
		size_t idlen = strlen(seqs[i].id);

		if (idlen == 0 || idlen > KVMIG_SEQ_ID_MAX) {
			b->len = at;
			return kvmig_err(-EINVAL, "sequence id of %zu bytes", idlen);
		}
		put_u16(b, idlen);
		put_bytes(b, seqs[i].id, idlen);
		put_u32(b, seqs[i].fill_in_last_page);
		put_u32(b, seqs[i].n_pages);
		for (uint32_t j = 0; j < seqs[i].n_pages; j++)
			put_u32(b, seqs[i].page_ixs[j]);
	}
	return finish(b, at);
}

void kvmig_wire_read_resp_hdr(uint8_t out[KVMIG_WIRE_READ_RESP_HDR_LEN], uint64_t id,
			      uint32_t len)
{
	/* A wbuf over exactly this array: reserve() never needs to grow it. */
	struct kvmig_wbuf b = { out, 0, KVMIG_WIRE_READ_RESP_HDR_LEN, 0 };
	uint64_t plen = 12ull + len;

	begin(&b, KVMIG_MSG_READ_RESP);
	put_u64(&b, id);
	put_u32(&b, len);
	for (int i = 0; i < 4; i++) /* the length counts the bytes that follow */
		out[8 + i] = (uint8_t)(plen >> (8 * (3 - i)));
}

int kvmig_wire_put_empty(struct kvmig_wbuf *b, enum kvmig_msg_type type)
{
	return finish(b, begin(b, type));
}

int kvmig_wire_put_auth(struct kvmig_wbuf *b, enum kvmig_msg_type type,
			const uint8_t v[KVMIG_AUTH_LEN])
{
	size_t at = begin(b, type);

	put_bytes(b, v, KVMIG_AUTH_LEN);
	return finish(b, at);
}

int kvmig_wire_put_abort(struct kvmig_wbuf *b, int err, const char *text)
{
	size_t tlen = text ? strlen(text) : 0, at;

	tlen = KVMIG_MIN(tlen, KVMIG_WIRE_MAX_TEXT);
	at = begin(b, KVMIG_MSG_ABORT);
	put_u32(b, (uint32_t)(err < 0 ? -err : err));
	put_u16(b, tlen);
	put_bytes(b, text, tlen);
	return finish(b, at);
}

int kvmig_wire_put_records(struct kvmig_wbuf *b, const struct kvmig_wire_record *recs, uint32_t n)
{
	size_t at;

	if (n > KVMIG_WIRE_MAX_RECORDS)
		return kvmig_err(-EINVAL, "%u records exceed the limit of %u", n,
				 KVMIG_WIRE_MAX_RECORDS);
	at = begin(b, KVMIG_MSG_RECORDS);
	put_u32(b, n);
	for (uint32_t i = 0; i < n; i++) {
		put_bytes(b, recs[i].id.b, sizeof(recs[i].id.b));
		put_u8(b, recs[i].role);
		put_u8(b, recs[i].state);
		put_u16(b, 0);
	}
	return finish(b, at);
}

int kvmig_wire_put_paths(struct kvmig_wbuf *b, const struct kvmig_msg_paths *m)
{
	size_t at;

	if (m->per_addr < 1 || m->n_addrs > KVMIG_WIRE_MAX_PATHS ||
	    (unsigned)m->per_addr * KVMIG_MAX(m->n_addrs, 1u) > KVMIG_WIRE_MAX_PATHS)
		return kvmig_err(-EINVAL, "%u connections to each of %u addresses: at most %u in all",
				 m->per_addr, m->n_addrs, KVMIG_WIRE_MAX_PATHS);
	at = begin(b, KVMIG_MSG_PATHS);
	put_u8(b, m->per_addr);
	put_bytes(b, m->token, sizeof(m->token));
	put_u8(b, m->n_addrs);
	for (unsigned i = 0; i < m->n_addrs; i++) {
		size_t n = strnlen(m->addrs[i], sizeof(m->addrs[i]));

		if (n < 1 || n > KVMIG_WIRE_MAX_ADDR) {
			b->len = at;
			return kvmig_err(-EINVAL, "path address %u is %zu bytes long (1..%u)", i, n,
					 KVMIG_WIRE_MAX_ADDR);
		}
		put_u8(b, (uint8_t)n);
		put_bytes(b, m->addrs[i], n);
	}
	return finish(b, at);
}

int kvmig_wire_put_join(struct kvmig_wbuf *b, const struct kvmig_msg_join *m)
{
	size_t at = begin(b, KVMIG_MSG_JOIN);

	put_bytes(b, m->token, sizeof(m->token));
	put_u8(b, m->index);
	put_u8(b, m->total);
	return finish(b, at);
}

/* ---- input ---- */

struct rd {
	const uint8_t *p;
	size_t left;
	const char *msg; /* message name, for errors */
};

static int short_msg(const struct rd *r, const char *field)
{
	return kvmig_err(-EBADMSG, "%s message is truncated at field %s", r->msg, field);
}

static int get_be(struct rd *r, unsigned bytes, uint64_t *v, const char *field)
{
	if (r->left < bytes)
		return short_msg(r, field);
	*v = 0;
	for (unsigned i = 0; i < bytes; i++)
		*v = *v << 8 | r->p[i];
	r->p += bytes;
	r->left -= bytes;
	return 0;
}

static int get_u32(struct rd *r, uint32_t *v, const char *field)
{
	uint64_t x = 0;
	int ret = get_be(r, 4, &x, field);

	*v = (uint32_t)x;
	return ret;
}

static int get_raw(struct rd *r, void *dst, size_t n, const char *field)
{
	if (r->left < n)
		return short_msg(r, field);
	memcpy(dst, r->p, n);
	r->p += n;
	r->left -= n;
	return 0;
}

static int get_rkey(struct rd *r, struct kvmig_rkey *k, const char *field)
{
	uint64_t n = 0;
	int ret;

	if ((ret = get_be(r, 1, &n, field)))
		return ret;
	if (n < 1 || n > KVMIG_WIRE_MAX_KEY)
		return kvmig_err(-EBADMSG, "%s message: %s is %u bytes long (1..%u)", r->msg, field,
				 (unsigned)n, KVMIG_WIRE_MAX_KEY);
	k->len = (uint8_t)n;
	return get_raw(r, k->b, n, field);
}

/* A string: a length byte (at most @max), then its bytes; into @dst (@max + 1 bytes). */
static int get_str(struct rd *r, char *dst, size_t max, const char *field)
{
	uint64_t n = 0;
	int ret;

	if ((ret = get_be(r, 1, &n, field)))
		return ret;
	if (n > max)
		return kvmig_err(-EBADMSG, "%s message: %s is %u bytes long (at most %zu)", r->msg,
				 field, (unsigned)n, max);
	if ((ret = get_raw(r, dst, n, field)))
		return ret;
	dst[n] = '\0';
	return 0;
}

static int done(const struct rd *r)
{
	if (r->left)
		return kvmig_err(-EBADMSG, "%s message has %zu unexpected trailing bytes", r->msg,
				 r->left);
	return 0;
}

/* A count must be within @max and its items (at least @min_item bytes each) must fit. */
static int check_count(const struct rd *r, uint64_t n, uint64_t max, uint64_t min_item,
		       const char *field)
{
	if (n > max)
		return kvmig_err(-EBADMSG, "%s message: %s is %llu, above the limit of %llu", r->msg,
				 field, (unsigned long long)n, (unsigned long long)max);
	if (n * min_item > r->left)
		return kvmig_err(-EBADMSG, "%s message: %s is %llu but only %zu bytes follow",
				 r->msg, field, (unsigned long long)n, r->left);
	return 0;
}

int kvmig_wire_get_hdr(const uint8_t *buf, struct kvmig_wire_hdr *h)
{
	struct rd r = { buf, KVMIG_WIRE_HDR_LEN, "frame" };
	uint64_t magic = 0, ver = 0, type = 0, flags = 0, len = 0;

	get_be(&r, 4, &magic, "magic");
	get_be(&r, 1, &ver, "version");
	get_be(&r, 1, &type, "type");
	get_be(&r, 2, &flags, "flags");
	get_be(&r, 4, &len, "length");
	if (magic != KVMIG_WIRE_MAGIC)
		return kvmig_err(-EBADMSG, "frame does not start with the kvmig magic (peer is not "
				 "kvmig?)");
	if (ver != KVMIG_WIRE_VERSION)
		return kvmig_err(-EBADMSG, "peer speaks protocol version %u; this is version %u",
				 (unsigned)ver, KVMIG_WIRE_VERSION);
	if (type < KVMIG_MSG_HELLO || type > KVMIG_MSG_LAST)
		return kvmig_err(-EBADMSG, "frame has unknown message type %u", (unsigned)type);
	if (flags)
		return kvmig_err(-EBADMSG, "frame has reserved flags 0x%x set", (unsigned)flags);
	if (len > KVMIG_WIRE_MAX_PAYLOAD)
		return kvmig_err(-EBADMSG, "frame length %u exceeds the limit of %u", (unsigned)len,
				 KVMIG_WIRE_MAX_PAYLOAD);
	/* Only REGIONS, OFFER, READ_RESP, DIGESTS and FINAL grow with the
	 * migration: a peer cannot make this side buffer more for the rest
	 * (before authentication, say). */
	if (len > KVMIG_WIRE_MAX_SMALL && type != KVMIG_MSG_REGIONS && type != KVMIG_MSG_OFFER &&
	    type != KVMIG_MSG_READ_RESP && type != KVMIG_MSG_DIGESTS && type != KVMIG_MSG_FINAL &&
	    type != KVMIG_MSG_RECORDS)
		return kvmig_err(-EBADMSG, "frame of type %u carries %u bytes; that message has at "
				 "most %u", (unsigned)type, (unsigned)len, KVMIG_WIRE_MAX_SMALL);
	h->type = (uint8_t)type;
	h->len = (uint32_t)len;
	return 0;
}

int kvmig_wire_get_hello(const uint8_t *p, size_t len, struct kvmig_msg_hello *m)
{
	struct rd r = { p, len, "HELLO" };
	uint64_t role = 0, order = 0, dtype = 0, flags = 0;
	int ret;

	memset(&m->format, 0, sizeof(m->format));
	if ((ret = get_be(&r, 1, &role, "role")) || (ret = get_be(&r, 1, &order, "order")) ||
	    (ret = get_be(&r, 1, &dtype, "dtype")) || (ret = get_be(&r, 1, &flags, "flags")) ||
	    (ret = get_u32(&r, &m->meta.page_size_tokens, "page_size_tokens")) ||
	    (ret = get_u32(&r, &m->meta.n_layers, "n_layers")) ||
	    (ret = get_u32(&r, &m->meta.n_heads, "n_heads")) ||
	    (ret = get_u32(&r, &m->meta.head_dim, "head_dim")) ||
	    (ret = get_be(&r, 8, &m->half_bytes, "half_bytes")) ||
	    (ret = get_raw(&r, m->migration.b, sizeof(m->migration.b), "migration")) ||
	    (ret = get_raw(&r, m->pager.b, sizeof(m->pager.b), "pager")) ||
	    (ret = get_str(&r, m->format.layout, KVMIG_LAYOUT_NAME_MAX, "layout")) ||
	    (ret = get_str(&r, m->format.compat, KVMIG_COMPAT_MAX, "compat")) || (ret = done(&r)))
		return ret;
	if (role > 1 || (flags & ~(uint64_t)KVMIG_HELLO_FLAGS_KNOWN))
		return kvmig_err(-EBADMSG, "HELLO message: role %u / flags 0x%x invalid",
				 (unsigned)role, (unsigned)flags);
	m->role = (uint8_t)role;
	m->flags = (uint8_t)flags;
	m->format.order = (enum kvmig_kv_order)order;
	m->meta.dtype = (enum kvmig_dtype)dtype;
	if (kvmig_format_check(&m->format) < 0)
		return kvmig_err_prefix(-EBADMSG, "HELLO message");
	uint64_t half;

	if (kvmig_meta_half_bytes(&m->meta, &half) < 0)
		return kvmig_err_prefix(-EBADMSG, "HELLO message");
	if (half != m->half_bytes)
		return kvmig_err(-EBADMSG, "HELLO message: half_bytes %llu does not match the meta "
				 "(%llu)", (unsigned long long)m->half_bytes,
				 (unsigned long long)half);
	return 0;
}

int kvmig_wire_get_regions(const uint8_t *p, size_t len, struct kvmig_msg_regions *m)
{
	struct rd r = { p, len, "REGIONS" };
	int ret;

	m->r = NULL;
	if ((ret = get_u32(&r, &m->n, "count")) ||
	    (ret = check_count(&r, m->n, KVMIG_WIRE_MAX_REGIONS, 18, "count")))
		return ret;
	/* The count was checked against the bytes present: allocate now. */
	if (!(m->r = malloc(sizeof(*m->r) * (m->n ? m->n : 1))))
		return -ENOMEM;
	for (uint32_t i = 0; i < m->n; i++) {
		if ((ret = get_be(&r, 8, &m->r[i].addr, "addr")) ||
		    (ret = get_be(&r, 8, &m->r[i].len, "len")) ||
		    (ret = get_rkey(&r, &m->r[i].key, "key")))
			break;
		if (m->r[i].addr + m->r[i].len < m->r[i].addr) {
			ret = kvmig_err(-EBADMSG, "REGIONS message: region %u wraps the address space",
					i);
			break;
		}
	}
	if (ret == 0)
		ret = done(&r);
	if (ret < 0)
		kvmig_msg_regions_free(m);
	return ret;
}

void kvmig_msg_regions_free(struct kvmig_msg_regions *m)
{
	free(m->r);
	m->r = NULL;
	m->n = 0;
}



void kvmig_msg_offer_free(struct kvmig_msg_offer *m)
{
	free(m->pages);
	free(m->ext_pool);
	m->pages = NULL;
	m->ext_pool = NULL;
	m->n = 0;
}

int kvmig_wire_get_offer(const uint8_t *p, size_t len, struct kvmig_msg_offer *m)
{
	struct rd r = { p, len, "OFFER" };
	uint64_t total_ext = 0;
	int ret;

	memset(m, 0, sizeof(*m));
	if ((ret = get_u32(&r, &m->round, "round")) || (ret = get_u32(&r, &m->n, "count")) ||
	    (ret = check_count(&r, m->n, KVMIG_WIRE_MAX_OFFER_PAGES, 16 + 2 * 16, "count")))
		return ret;
	/* Every extent is 16 bytes on the wire, so the pool is bounded by the payload. */
	m->pages = calloc(m->n ? m->n : 1, sizeof(*m->pages));
	m->ext_pool = malloc(r.left / 16 * sizeof(*m->ext_pool) + sizeof(*m->ext_pool));
	if (!m->pages || !m->ext_pool) {
		kvmig_msg_offer_free(m);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < m->n; i++) {
		struct kvmig_offer_page *pg = &m->pages[i];

		if ((ret = get_u32(&r, &pg->ix, "ix")) || (ret = get_u32(&r, &pg->n_ext, "n_ext")) ||
		    (ret = get_be(&r, 8, &pg->generation, "generation")))
			goto err;
		if (pg->n_ext == 0 || pg->n_ext % 2 ||
		    (ret = check_count(&r, pg->n_ext, KVMIG_WIRE_MAX_EXTENTS, 16, "n_ext"))) {
			if (!ret)
				ret = kvmig_err(-EBADMSG, "OFFER message: page %u has %u extents; "
						"K and V need an equal, non-zero number", pg->ix,
						pg->n_ext);
			goto err;
		}
		pg->ext = m->ext_pool + total_ext;
		for (uint32_t j = 0; j < pg->n_ext; j++) {
			struct kvmig_wire_extent *e = &pg->ext[j];

			if ((ret = get_be(&r, 8, &e->addr, "addr")) ||
			    (ret = get_be(&r, 8, &e->len, "len")))
				goto err;
			if (e->len == 0 || e->addr + e->len < e->addr) {
				ret = kvmig_err(-EBADMSG, "OFFER message: page %u extent %u is empty or "
						"wraps", pg->ix, j);
				goto err;
			}
		}
		total_ext += pg->n_ext;
	}
	if ((ret = done(&r)) < 0)
		goto err;
	return 0;
err:
	kvmig_msg_offer_free(m);
	return ret;
}

int kvmig_wire_get_read_req(const uint8_t *p, size_t len, struct kvmig_msg_read_req *m)
{
	struct rd r = { p, len, "READ_REQ" };
	int ret;

	if ((ret = get_be(&r, 8, &m->id, "id")) || (ret = get_be(&r, 8, &m->addr, "addr")) ||
	    (ret = get_u32(&r, &m->len, "len")) || (ret = get_rkey(&r, &m->key, "key")))
		return ret;
	return done(&r);
}

int kvmig_wire_get_round(const uint8_t *p, size_t len, struct kvmig_msg_round *m)
{
	struct rd r = { p, len, "ROUND" };
	int ret;

	if ((ret = get_u32(&r, &m->round, "round")) || (ret = get_u32(&r, &m->pages, "pages")))
		return ret;
	return done(&r);
}

int kvmig_wire_get_read_resp(const uint8_t *p, uint32_t payload_len, uint64_t *id, uint32_t *len)
{
	struct rd r = { p, 12, "READ_RESP" };
	int ret;

	if (payload_len < 12)
		return kvmig_err(-EBADMSG, "READ_RESP message of %u bytes is truncated", payload_len);
	if ((ret = get_be(&r, 8, id, "id")) || (ret = get_u32(&r, len, "len")))
		return ret;
	if (payload_len != 12ull + *len)
		return kvmig_err(-EBADMSG, "READ_RESP message of %u bytes claims %u data bytes",
				 payload_len, *len);
	return 0;
}

int kvmig_wire_get_digests(const uint8_t *p, size_t len, struct kvmig_manifest_page **pages,
			   uint32_t *n)
{
	struct rd r = { p, len, "DIGESTS" };
	struct kvmig_manifest_page *out;
	int ret;

	if ((ret = get_u32(&r, n, "count")) ||
	    (ret = check_count(&r, *n, KVMIG_WIRE_MAX_OFFER_PAGES, 36, "count")))
		return ret;
	out = malloc(sizeof(*out) * (*n ? *n : 1));
	if (!out)
		return -ENOMEM;
	for (uint32_t i = 0; i < *n; i++) {
		if ((ret = get_u32(&r, &out[i].ix, "ix")) ||
		    (ret = get_raw(&r, out[i].k.b, 16, "k")) ||
		    (ret = get_raw(&r, out[i].v.b, 16, "v"))) {
			free(out);
			return ret;
		}
	}
	if ((ret = done(&r)) < 0) {
		free(out);
		return ret;
	}
	*pages = out;
	return 0;
}

int kvmig_wire_get_final(const uint8_t *p, size_t len, struct kvmig_seq_list *out)
{
	struct rd r = { p, len, "FINAL" };
	struct kvmig_seq_list l = { 0 };
	uint32_t n;
	int ret;

	if ((ret = get_u32(&r, &n, "count")) ||
	    (ret = check_count(&r, n, KVMIG_MAX_SEQS, 2 + 1 + 8, "count")))
		return ret;
	l.seqs = calloc(n ? n : 1, sizeof(*l.seqs));
	if (!l.seqs)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		struct kvmig_seq *q = &l.seqs[i];
		uint64_t idlen = 0;

		l.n = i + 1;
		if ((ret = get_be(&r, 2, &idlen, "id_len")))
			goto err;
		if (idlen == 0 || idlen > KVMIG_SEQ_ID_MAX) {
			ret = kvmig_err(-EBADMSG, "FINAL message: sequence %u has an id of %u bytes "
					"(1 to %u allowed)", i, (unsigned)idlen, KVMIG_SEQ_ID_MAX);
			goto err;
		}
		q->id = calloc(1, idlen + 1);
		if (!q->id) {
			ret = -ENOMEM;
			goto err;
		}
		if ((ret = get_raw(&r, q->id, idlen, "id")))
			goto err;
		for (uint64_t c = 0; c < idlen; c++) {
			if ((unsigned char)q->id[c] < 0x20 || (unsigned char)q->id[c] > 0x7e) {
				ret = kvmig_err(-EBADMSG, "FINAL message: sequence %u id has a byte "
						"that is not printable ASCII", i);
				goto err;
			}
		}
		if ((ret = get_u32(&r, &q->fill_in_last_page, "fill_in_last_page")) ||
		    (ret = get_u32(&r, &q->n_pages, "n_pages")) ||
		    (ret = check_count(&r, q->n_pages, KVMIG_MAX_PAGES, 4, "n_pages")))
			goto err;
		q->page_ixs = malloc(sizeof(uint32_t) * (q->n_pages ? q->n_pages : 1));
		if (!q->page_ixs) {
			ret = -ENOMEM;
			goto err;
		}
		for (uint32_t j = 0; j < q->n_pages; j++)
			if ((ret = get_u32(&r, &q->page_ixs[j], "page_ixs")))
				goto err;
	}
	if ((ret = done(&r)) < 0)
		goto err;
	*out = l;
	return 0;
err:
	kvmig_seq_list_free(&l);
	return ret;
}

int kvmig_wire_get_abort(const uint8_t *p, size_t len, struct kvmig_msg_abort *m)
{
	struct rd r = { p, len, "ABORT" };
	uint64_t tlen = 0;
	uint32_t err = 0;
	int ret;

	if ((ret = get_u32(&r, &err, "errno")) || (ret = get_be(&r, 2, &tlen, "text_len")))
		return ret;
	if (err == 0 || err > 4095)
		return kvmig_err(-EBADMSG, "ABORT message: errno %u is out of range", err);
	if (tlen > KVMIG_WIRE_MAX_TEXT)
		return kvmig_err(-EBADMSG, "ABORT message: text of %u bytes exceeds %u",
				 (unsigned)tlen, KVMIG_WIRE_MAX_TEXT);
	if ((ret = get_raw(&r, m->text, tlen, "text")))
		return ret;
	m->text[tlen] = '\0';
	for (uint64_t i = 0; i < tlen; i++) /* it is printed: keep it printable */
		if ((unsigned char)m->text[i] < 0x20 || (unsigned char)m->text[i] > 0x7e)
			m->text[i] = '?';
	m->err = (int32_t)err;
	return done(&r);
}

int kvmig_wire_get_auth(const uint8_t *p, size_t len, uint8_t v[KVMIG_AUTH_LEN])
{
	struct rd r = { p, len, "AUTH" };
	int ret;

	if ((ret = get_raw(&r, v, KVMIG_AUTH_LEN, "value")))
		return ret;
	return done(&r);
}

int kvmig_wire_get_records(const uint8_t *p, size_t len, struct kvmig_wire_record **out,
			   uint32_t *n)
{
	struct rd r = { p, len, "RECORDS" };
	struct kvmig_wire_record *recs;
	int ret;

	*out = NULL;
	if ((ret = get_u32(&r, n, "count")) ||
	    (ret = check_count(&r, *n, KVMIG_WIRE_MAX_RECORDS, 20, "count")))
		return ret;
	if (!(recs = calloc(*n ? *n : 1, sizeof(*recs))))
		return -ENOMEM;
	for (uint32_t i = 0; i < *n; i++) {
		uint64_t role = 0, state = 0, pad = 0;

		if ((ret = get_raw(&r, recs[i].id.b, sizeof(recs[i].id.b), "id")) ||
		    (ret = get_be(&r, 1, &role, "role")) || (ret = get_be(&r, 1, &state, "state")) ||
		    (ret = get_be(&r, 2, &pad, "reserved")))
			break;
		if ((role != KVMIG_ROLE_SOURCE && role != KVMIG_ROLE_DEST) ||
		    state == KVMIG_REC_NONE || !kvmig_record_state_name((enum kvmig_record_state)state) ||
		    pad) {
			ret = kvmig_err(-EBADMSG, "RECORDS message: record %u has role %u, state %u",
					i, (unsigned)role, (unsigned)state);
			break;
		}
		recs[i].role = (uint8_t)role;
		recs[i].state = (uint8_t)state;
	}
	if (ret == 0)
		ret = done(&r);
	if (ret < 0) {
		free(recs);
		return ret;
	}
	*out = recs;
	return 0;
}

int kvmig_wire_get_paths(const uint8_t *p, size_t len, struct kvmig_msg_paths *m)
{
	struct rd r = { p, len, "PATHS" };
	uint64_t per = 0, n = 0;
	int ret;

	memset(m, 0, sizeof(*m));
	if ((ret = get_be(&r, 1, &per, "per_addr")) ||
	    (ret = get_raw(&r, m->token, sizeof(m->token), "token")) ||
	    (ret = get_be(&r, 1, &n, "n_addrs")))
		return ret;
	if (per < 1 || n > KVMIG_WIRE_MAX_PATHS || per * KVMIG_MAX(n, 1u) > KVMIG_WIRE_MAX_PATHS)
		return kvmig_err(-EBADMSG, "PATHS message: %u connections to each of %u addresses; "
				 "at most %u in all", (unsigned)per, (unsigned)n,
				 KVMIG_WIRE_MAX_PATHS);
	m->per_addr = (uint8_t)per;
	m->n_addrs = (uint8_t)n;
	for (unsigned i = 0; i < m->n_addrs; i++) {
		uint64_t alen = 0;

		if ((ret = get_be(&r, 1, &alen, "address length")))
			return ret;
		if (alen < 1 || alen > KVMIG_WIRE_MAX_ADDR)
			return kvmig_err(-EBADMSG, "PATHS message: address %u is %u bytes long "
					 "(1..%u)", i, (unsigned)alen, KVMIG_WIRE_MAX_ADDR);
		if ((ret = get_raw(&r, m->addrs[i], alen, "address")))
			return ret;
		/* A host and port: printable, no spaces, no NUL. */
		for (uint64_t k = 0; k < alen; k++)
			if (m->addrs[i][k] <= ' ' || m->addrs[i][k] > '~')
				return kvmig_err(-EBADMSG, "PATHS message: address %u has byte 0x%02x "
						 "at %u: not a host:port", i,
						 (unsigned char)m->addrs[i][k], (unsigned)k);
	}
	return done(&r);
}

int kvmig_wire_get_join(const uint8_t *p, size_t len, struct kvmig_msg_join *m)
{
	struct rd r = { p, len, "JOIN" };
	uint64_t ix = 0, total = 0;
	int ret;

	if ((ret = get_raw(&r, m->token, sizeof(m->token), "token")) ||
	    (ret = get_be(&r, 1, &ix, "index")) || (ret = get_be(&r, 1, &total, "total")))
		return ret;
	if (total < 2 || total > KVMIG_WIRE_MAX_PATHS || ix < 1 || ix >= total)
		return kvmig_err(-EBADMSG, "JOIN message: connection %u of %u (1..%u of 2..%u)",
				 (unsigned)ix, (unsigned)total, (unsigned)total - 1,
				 KVMIG_WIRE_MAX_PATHS);
	m->index = (uint8_t)ix;
	m->total = (uint8_t)total;
	return done(&r);
}
