/* SPDX-License-Identifier: MIT */
/*
 * tests/fuzz/fuzz_wire.c - libFuzzer target for the wire-protocol decoder
 * (transport/wire.c): the input is a byte stream of frames, as a peer would
 * send it. Each frame header is decoded; each payload goes to its type's
 * decoder, exactly as the engine does. Whatever the bytes, a decoder must
 * return 0 or -EBADMSG with a message, never read outside the input, and
 * leak nothing; a decoded OFFER / DIGESTS / FINAL must re-encode.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <kvmig/kvmig.h>

#include "util/internal.h"
#include "transport/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ret)
{
	if (ret != 0 && ret != -EBADMSG)
		abort(); /* decoders report malformed input as EBADMSG only */
	if (ret == -EBADMSG && !kvmig_last_error()[0])
		abort(); /* ... and always say why */
}

static void payload(uint8_t type, const uint8_t *p, size_t len)
{
	struct kvmig_wbuf b = { 0 };

	switch (type) {
	case KVMIG_MSG_HELLO: {
		struct kvmig_msg_hello h;

		check(kvmig_wire_get_hello(p, len, &h));
		break;
	}
	case KVMIG_MSG_REGIONS: {
		struct kvmig_msg_regions r;

		int ret = kvmig_wire_get_regions(p, len, &r);

		check(ret);
		if (ret == 0 && kvmig_wire_put_regions(&b, &r) != 0)
			abort(); /* what decodes must encode again */
		kvmig_msg_regions_free(&r);
		break;
	}
	case KVMIG_MSG_ROUND: {
		struct kvmig_msg_round m;

		check(kvmig_wire_get_round(p, len, &m));
		break;
	}
	case KVMIG_MSG_RECORDS: {
		struct kvmig_wire_record *w = NULL;
		uint32_t n = 0;
		int ret = kvmig_wire_get_records(p, len, &w, &n);

		check(ret);
		if (ret == 0 && kvmig_wire_put_records(&b, w, n) != 0)
			abort();
		free(w);
		break;
	}
	case KVMIG_MSG_AUTH_CHALLENGE:
	case KVMIG_MSG_AUTH_PROOF: {
		uint8_t v[KVMIG_AUTH_LEN];

		check(kvmig_wire_get_auth(p, len, v));
		break;
	}
	case KVMIG_MSG_OFFER: {
		struct kvmig_msg_offer o = { 0 };
		int ret = kvmig_wire_get_offer(p, len, &o);

		check(ret);
		if (ret == 0 && kvmig_wire_put_offer(&b, &o) != 0)
			abort();
		kvmig_msg_offer_free(&o);
		break;
	}
	case KVMIG_MSG_READ_REQ: {
		struct kvmig_msg_read_req q;

		int ret = kvmig_wire_get_read_req(p, len, &q);

		check(ret);
		if (ret == 0 && kvmig_wire_put_read_req(&b, &q) != 0)
			abort();
		break;
	}
	case KVMIG_MSG_READ_RESP: {
		uint64_t id;
		uint32_t n;

		if (len >= 12)
			check(kvmig_wire_get_read_resp(p, (uint32_t)len, &id, &n));
		break;
	}
	case KVMIG_MSG_DIGESTS: {
		struct kvmig_manifest_page *pages = NULL;
		uint32_t n = 0;
		int ret = kvmig_wire_get_digests(p, len, &pages, &n);

		check(ret);
		if (ret == 0 && kvmig_wire_put_digests(&b, pages, n) != 0)
			abort();
		free(pages);
		break;
	}
	case KVMIG_MSG_FINAL: {
		struct kvmig_seq_list l = { 0 };
		int ret = kvmig_wire_get_final(p, len, &l);

		check(ret);
		if (ret == 0) {
			if (kvmig_wire_put_final(&b, l.seqs, l.n) != 0)
				abort();
			kvmig_seq_list_free(&l);
		}
		break;
	}
	case KVMIG_MSG_ABORT: {
		struct kvmig_msg_abort a;

		check(kvmig_wire_get_abort(p, len, &a));
		break;
	}
	case KVMIG_MSG_PATHS: {
		struct kvmig_msg_paths m;
		int ret = kvmig_wire_get_paths(p, len, &m);

		check(ret);
		if (ret == 0 && kvmig_wire_put_paths(&b, &m) != 0)
			abort();
		break;
	}
	case KVMIG_MSG_JOIN: {
		struct kvmig_msg_join m;
		int ret = kvmig_wire_get_join(p, len, &m);

		check(ret);
		if (ret == 0 && kvmig_wire_put_join(&b, &m) != 0)
			abort();
		break;
	}
	default:
		break;
	}
	kvmig_wbuf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	while (size >= KVMIG_WIRE_HDR_LEN) {
		struct kvmig_wire_hdr h;
		int ret = kvmig_wire_get_hdr(data, &h);

		check(ret);
		if (ret < 0)
			break;
		data += KVMIG_WIRE_HDR_LEN;
		size -= KVMIG_WIRE_HDR_LEN;
		/* A frame longer than what is left: the decoder sees what is
		 * there, as a peer that closed mid-frame would leave it. */
		payload(h.type, data, KVMIG_MIN((size_t)h.len, size));
		if (h.len >= size)
			break;
		data += h.len;
		size -= h.len;
	}
	return 0;
}
