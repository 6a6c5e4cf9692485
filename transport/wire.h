/* SPDX-License-Identifier: MIT */
/*
 * transport/wire.h - the migration wire protocol's messages and their codec
 * (docs/PROTOCOL.md is the specification). Internal: not installed.
 *
 * Every message is a 12-byte frame header followed by its payload, all
 * integers big-endian. Decoders check every count and length against its
 * limit AND against the bytes actually present before allocating anything;
 * any violation is -EBADMSG with a message naming the field.
 */
#ifndef KVMIG_WIRE_H
#define KVMIG_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <kvmig/cas.h>

#define KVMIG_WIRE_MAGIC 0x4b564d47u /* "KVMG" */
#define KVMIG_WIRE_VERSION 5u
#define KVMIG_WIRE_HDR_LEN 12u
#define KVMIG_WIRE_MAX_PAYLOAD (64u << 20) /* one control message */
#define KVMIG_WIRE_MAX_REGIONS 65536u /* registrations: one per run of offered pages */
#define KVMIG_WIRE_MAX_OFFER_PAGES 65536u  /* pages in one OFFER / DIGESTS message */
#define KVMIG_WIRE_MAX_EXTENTS (2u * KVMIG_MAX_LAYERS) /* per page, K and V */
#define KVMIG_WIRE_MAX_TEXT 512u
#define KVMIG_WIRE_MAX_SMALL 1024u /* HELLO, READ_REQ, COMMIT(_ACK), ABORT, KEEPALIVE,
				    * AUTH_*, ROUND, ACTIVATED, FORGET: this small */
#define KVMIG_WIRE_MAX_RECORDS 4096u /* in one RECORDS message */
#define KVMIG_WIRE_MAX_PATHS 8u /* connections of one migration (transport/stripe.c) */
#define KVMIG_WIRE_MAX_KEY 128u /* bytes of a remote key: a verbs rkey has 4, a tcp
				 * key 16; a striped registration one key per path */
#define KVMIG_WIRE_PATH_TOKEN 16u /* random bytes naming a migration's paths */
#define KVMIG_WIRE_MAX_ADDR 79u   /* "host:port" of a path address */

enum kvmig_msg_type {
	KVMIG_MSG_HELLO = 1,
	KVMIG_MSG_REGIONS = 2,
	KVMIG_MSG_OFFER = 3,
	KVMIG_MSG_READ_REQ = 4,
	KVMIG_MSG_READ_RESP = 5,
	KVMIG_MSG_DIGESTS = 6,
	KVMIG_MSG_FINAL = 7,
	KVMIG_MSG_COMMIT = 8,
	KVMIG_MSG_COMMIT_ACK = 9,
	KVMIG_MSG_ABORT = 10,
	KVMIG_MSG_KEEPALIVE = 11, /* empty; the rdma provider's, never seen by the engine */
	KVMIG_MSG_AUTH_CHALLENGE = 12, /* 32-byte random nonce */
	KVMIG_MSG_AUTH_PROOF = 13,     /* 32-byte HMAC-SHA-256 over the nonces */
	KVMIG_MSG_ROUND = 14,          /* live: a pre-copy round's offers end / its pages landed */
	KVMIG_MSG_ACTIVATED = 15,      /* receiver: the decision is applied, the sequences run */
	KVMIG_MSG_FORGET = 16,         /* sender: released its copy; drop the record */
	KVMIG_MSG_RECORDS = 17,        /* unresolved records naming the peer's pager */
	KVMIG_MSG_PATHS = 18,          /* more connections: asked (sender), where (receiver) */
	KVMIG_MSG_JOIN = 19,           /* the first frame on a migration's extra connection */
	KVMIG_MSG_JOINED = 20,         /* receiver, empty: every extra connection joined */
	KVMIG_MSG_LAST = KVMIG_MSG_JOINED,
};

struct kvmig_wire_hdr {
	uint8_t type;
	uint32_t len; /* payload bytes */
};

#define KVMIG_HELLO_NO_VERIFY 0x01u /* the sender sends no digests (benchmarks only) */
#define KVMIG_HELLO_AUTH 0x02u      /* this side has a shared secret: challenge-response follows */
#define KVMIG_HELLO_LIVE 0x04u      /* the sender pre-copies in rounds (OFFER round > 0, ROUND) */
#define KVMIG_HELLO_PATHS 0x08u     /* the sender asks for more connections (PATHS follows) */
#define KVMIG_HELLO_FLAGS_KNOWN (KVMIG_HELLO_NO_VERIFY | KVMIG_HELLO_AUTH | KVMIG_HELLO_LIVE | \
				 KVMIG_HELLO_PATHS)
#define KVMIG_AUTH_LEN 32u          /* nonce and proof bytes */

struct kvmig_msg_hello {
	uint8_t role; /* 0 sender, 1 receiver */
	uint8_t flags; /* KVMIG_HELLO_* */
	struct kvmig_page_format format; /* layout name, order, compatibility string */
	struct kvmig_cache_meta meta;
	uint64_t half_bytes;
	struct kvmig_id migration; /* sender: the migration's id; receiver: zero */
	struct kvmig_id pager;     /* this side's pager identity */
};

/* One migration record as RECORDS carries it. */
struct kvmig_wire_record {
	struct kvmig_id id;
	uint8_t role;  /* enum kvmig_record_role */
	uint8_t state; /* enum kvmig_record_state */
};

/*
 * A registration's remote key, opaque to everyone but the provider that made
 * it (tcp: 16 random bytes; verbs: the rkey, 4 bytes big-endian). On the
 * wire: a length byte (1..KVMIG_WIRE_MAX_KEY), then the bytes.
 */
struct kvmig_rkey {
	uint8_t len;
	uint8_t b[KVMIG_WIRE_MAX_KEY];
};

/* Whether two keys are the same bytes. */
static inline int kvmig_rkey_equal(const struct kvmig_rkey *a, const struct kvmig_rkey *b)
{
	if (a->len != b->len)
		return 0;
	for (unsigned i = 0; i < a->len; i++)
		if (a->b[i] != b->b[i])
			return 0;
	return 1;
}

struct kvmig_wire_region {
	uint64_t addr, len;
	struct kvmig_rkey key;
};

/* qsort / bsearch order of regions: by address. */
int kvmig_wire_region_cmp(const void *a, const void *b);

struct kvmig_msg_regions {
	uint32_t n;
	struct kvmig_wire_region *r; /* decoded: malloc'd, kvmig_msg_regions_free() */
};

struct kvmig_wire_extent {
	uint64_t addr, len;
};

struct kvmig_offer_page {
	uint32_t ix;
	uint32_t n_ext;       /* K extents then V extents */
	uint64_t generation;
	struct kvmig_wire_extent *ext; /* points into the message's ext pool */
};

/* An OFFER owns its arrays; free with kvmig_msg_offer_free(). */
struct kvmig_msg_offer {
	uint32_t round;
	uint32_t n;
	struct kvmig_offer_page *pages;
	struct kvmig_wire_extent *ext_pool;
};

struct kvmig_msg_read_req {
	uint64_t id, addr;
	uint32_t len;
	struct kvmig_rkey key;
};
/* A READ_REQ payload is id, addr, len, then the key: at most this long. */
#define KVMIG_WIRE_READ_REQ_MAX (8u + 8u + 4u + 1u + KVMIG_WIRE_MAX_KEY)

/* Sender: round @round's OFFERs are all sent, @pages pages in them.
 * Receiver: every page offered so far has landed (echoes both values). */
struct kvmig_msg_round {
	uint32_t round, pages;
};

/*
 * PATHS. Sender: @per_addr connections wanted to each receiver address in
 * all (token zero, no addresses). Receiver: the token each extra connection
 * must JOIN with and the addresses it listens on for them; the migration
 * then has per_addr * n_addrs connections, the first being this one.
 */
struct kvmig_msg_paths {
	uint8_t per_addr;
	uint8_t token[KVMIG_WIRE_PATH_TOKEN];
	uint8_t n_addrs;
	char addrs[KVMIG_WIRE_MAX_PATHS][KVMIG_WIRE_MAX_ADDR + 1];
};

/* JOIN: connection @index (1..total-1) of the migration whose paths @token names. */
struct kvmig_msg_join {
	uint8_t token[KVMIG_WIRE_PATH_TOKEN];
	uint8_t index, total;
};

struct kvmig_msg_abort {
	int32_t err; /* positive errno */
	char text[KVMIG_WIRE_MAX_TEXT + 1];
};

/* Growable output buffer; encoders append one whole frame. */
struct kvmig_wbuf {
	uint8_t *p;
	size_t len, cap;
	int err; /* sticky -ENOMEM */
};

void kvmig_wbuf_free(struct kvmig_wbuf *b);

/* Encoders append a frame to @b; return 0 or -ENOMEM / -EINVAL (over a limit). */
int kvmig_wire_put_hello(struct kvmig_wbuf *b, const struct kvmig_msg_hello *m);
int kvmig_wire_put_regions(struct kvmig_wbuf *b, const struct kvmig_msg_regions *m);
int kvmig_wire_put_offer(struct kvmig_wbuf *b, const struct kvmig_msg_offer *m);
int kvmig_wire_put_read_req(struct kvmig_wbuf *b, const struct kvmig_msg_read_req *m);
int kvmig_wire_put_digests(struct kvmig_wbuf *b, const struct kvmig_manifest_page *pages,
			   uint32_t n);
int kvmig_wire_put_final(struct kvmig_wbuf *b, const struct kvmig_seq *seqs, uint32_t n);
int kvmig_wire_put_empty(struct kvmig_wbuf *b, enum kvmig_msg_type type);
int kvmig_wire_put_abort(struct kvmig_wbuf *b, int err, const char *text);
int kvmig_wire_put_round(struct kvmig_wbuf *b, const struct kvmig_msg_round *m);
int kvmig_wire_put_records(struct kvmig_wbuf *b, const struct kvmig_wire_record *recs,
			   uint32_t n);
int kvmig_wire_put_paths(struct kvmig_wbuf *b, const struct kvmig_msg_paths *m);
int kvmig_wire_put_join(struct kvmig_wbuf *b, const struct kvmig_msg_join *m);
/* AUTH_CHALLENGE or AUTH_PROOF carrying @v. */
int kvmig_wire_put_auth(struct kvmig_wbuf *b, enum kvmig_msg_type type,
			const uint8_t v[KVMIG_AUTH_LEN]);

/*
 * READ_RESP is never built in a wbuf: its bytes are sent straight from page
 * memory after this fixed header (frame header, u64 id, u32 len), and
 * received straight into the destination after it.
 */
#define KVMIG_WIRE_READ_RESP_HDR_LEN (KVMIG_WIRE_HDR_LEN + 12u)
/* Write the header of a READ_RESP carrying @len bytes for read @id. */
void kvmig_wire_read_resp_hdr(uint8_t out[KVMIG_WIRE_READ_RESP_HDR_LEN], uint64_t id,
			      uint32_t len);
/* Decode the 12 bytes after a READ_RESP frame header of @payload_len bytes. */
int kvmig_wire_get_read_resp(const uint8_t *p, uint32_t payload_len, uint64_t *id, uint32_t *len);

/* Decode a frame header (exactly KVMIG_WIRE_HDR_LEN bytes). */
int kvmig_wire_get_hdr(const uint8_t *buf, struct kvmig_wire_hdr *h);

/* Payload decoders: @p / @len is exactly the payload of a frame of that type. */
int kvmig_wire_get_hello(const uint8_t *p, size_t len, struct kvmig_msg_hello *m);
int kvmig_wire_get_regions(const uint8_t *p, size_t len, struct kvmig_msg_regions *m);
int kvmig_wire_get_offer(const uint8_t *p, size_t len, struct kvmig_msg_offer *m);
int kvmig_wire_get_read_req(const uint8_t *p, size_t len, struct kvmig_msg_read_req *m);
/* *pages malloc'd (caller frees). */
int kvmig_wire_get_digests(const uint8_t *p, size_t len, struct kvmig_manifest_page **pages,
			   uint32_t *n);
/* Sequences in a kvmig_seq_list (caller frees with kvmig_seq_list_free). */
int kvmig_wire_get_final(const uint8_t *p, size_t len, struct kvmig_seq_list *out);
int kvmig_wire_get_abort(const uint8_t *p, size_t len, struct kvmig_msg_abort *m);
int kvmig_wire_get_round(const uint8_t *p, size_t len, struct kvmig_msg_round *m);
/* *recs malloc'd (caller frees). */
int kvmig_wire_get_records(const uint8_t *p, size_t len, struct kvmig_wire_record **recs,
			   uint32_t *n);
int kvmig_wire_get_paths(const uint8_t *p, size_t len, struct kvmig_msg_paths *m);
int kvmig_wire_get_join(const uint8_t *p, size_t len, struct kvmig_msg_join *m);
/* The payload of AUTH_CHALLENGE / AUTH_PROOF: exactly KVMIG_AUTH_LEN bytes. */
int kvmig_wire_get_auth(const uint8_t *p, size_t len, uint8_t v[KVMIG_AUTH_LEN]);

void kvmig_msg_offer_free(struct kvmig_msg_offer *m);
void kvmig_msg_regions_free(struct kvmig_msg_regions *m);

#endif
