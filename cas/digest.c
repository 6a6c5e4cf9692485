/* SPDX-License-Identifier: MIT */
/*
 * cas/digest.c - XXH3-128 digests in canonical (big-endian) form and their
 * "xxh128:<hex>" text.
 */
#include <stdlib.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>
/* Route XXH3_128bits and XXH3_128bits_update to libxxhash's runtime-dispatched
 * variants (AVX2 / AVX-512 where the CPU has them; same digests, ~3x faster
 * than the baseline SSE2 build on 1 MiB pages). */
#include <xxh_x86dispatch.h>

#include <kvmig/cas.h>

#include "cas/internal.h"
#include "util/internal.h"

static void from_hash(XXH128_hash_t h, struct kvmig_digest *out)
{
	XXH128_canonical_t c;

	_Static_assert(sizeof(c.digest) == sizeof(out->b), "canonical XXH128 is 16 bytes");
	XXH128_canonicalFromHash(&c, h);
	memcpy(out->b, c.digest, sizeof(out->b));
}

void kvmig_digest_compute(const void *data, size_t len, struct kvmig_digest *out)
{
	from_hash(XXH3_128bits(data, len), out);
}

void kvmig_digest_computev(const struct iovec *iov, int iovcnt, struct kvmig_digest *out)
{
	XXH3_state_t state;

	if (iovcnt == 1) {
		kvmig_digest_compute(iov[0].iov_base, iov[0].iov_len, out);
		return;
	}
	/* A stack state: XXH3_createState would be a malloc per page half. */
	XXH3_128bits_reset(&state);
	for (int i = 0; i < iovcnt; i++)
		XXH3_128bits_update(&state, iov[i].iov_base, iov[i].iov_len);
	from_hash(XXH3_128bits_digest(&state), out);
}

void kvmig_digest_hex(const struct kvmig_digest *d, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < sizeof(d->b); i++) {
		out[2 * i] = hex[d->b[i] >> 4];
		out[2 * i + 1] = hex[d->b[i] & 0xf];
	}
	out[2 * sizeof(d->b)] = '\0';
}

void kvmig_digest_format(const struct kvmig_digest *d, char *out)
{
	memcpy(out, KVMIG_DIGEST_PREFIX, sizeof(KVMIG_DIGEST_PREFIX) - 1);
	kvmig_digest_hex(d, out + sizeof(KVMIG_DIGEST_PREFIX) - 1);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; /* uppercase is refused: the text form is canonical */
}

int kvmig_digest_parse(const char *text, struct kvmig_digest *out)
{
	const size_t plen = sizeof(KVMIG_DIGEST_PREFIX) - 1;

	if (!text || strncmp(text, KVMIG_DIGEST_PREFIX, plen) != 0)
		return kvmig_err(-EINVAL, "digest does not start with \"%s\"", KVMIG_DIGEST_PREFIX);
	text += plen;
	if (strlen(text) != 2 * sizeof(out->b))
		return kvmig_err(-EINVAL, "digest is not 32 hex digits after \"%s\"",
				 KVMIG_DIGEST_PREFIX);
	for (size_t i = 0; i < sizeof(out->b); i++) {
		int hi = hexval(text[2 * i]), lo = hexval(text[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return kvmig_err(-EINVAL, "digest has a character that is not lowercase hex");
		out->b[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int kvmig_digest_equal(const struct kvmig_digest *a, const struct kvmig_digest *b)
{
	return memcmp(a->b, b->b, sizeof(a->b)) == 0;
}

/* ---- streaming (cas/digest_stream.h) ---- */

struct kvmig_digest_stream {
	XXH3_state_t *st;
};

struct kvmig_digest_stream *kvmig_digest_stream_new(void)
{
	struct kvmig_digest_stream *s = malloc(sizeof(*s));

	if (!s)
		return NULL;
	s->st = XXH3_createState(); /* aligned as XXH3 needs */
	if (!s->st) {
		free(s);
		return NULL;
	}
	XXH3_128bits_reset(s->st);
	return s;
}

void kvmig_digest_stream_free(struct kvmig_digest_stream **s)
{
	if (!s || !*s)
		return;
	XXH3_freeState((*s)->st);
	free(*s);
	*s = NULL;
}

void kvmig_digest_stream_reset(struct kvmig_digest_stream *s)
{
	XXH3_128bits_reset(s->st);
}

void kvmig_digest_stream_update(struct kvmig_digest_stream *s, const void *data, size_t len)
{
	XXH3_128bits_update(s->st, data, len);
}

void kvmig_digest_stream_final(struct kvmig_digest_stream *s, struct kvmig_digest *out)
{
	from_hash(XXH3_128bits_digest(s->st), out);
}
