/* SPDX-License-Identifier: MIT */
/*
 * tests/fuzz/wire_seeds.c - the wire fuzzer's seed corpus, made with the
 * encoders so it always speaks the current protocol version.
 *
 *   wire_seeds --write DIR   write every seed into DIR
 *   wire_seeds --check DIR   exit 1 naming each seed in DIR that differs
 *                            from what the encoders make now, or that they
 *                            do not make
 *
 * The check runs in the unit suite: a change to the wire format fails it
 * until the corpus is written again (the command is in docs/TESTING.md), so
 * the fuzzer never starts from frames its decoder refuses at the header.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kvmig/kvmig.h>

#include "transport/wire.h"

struct seed {
	const char *name;
	struct kvmig_wbuf b;
};

static struct seed seeds[32];
static unsigned n_seeds;
static int failed;

static struct kvmig_wbuf *seed(const char *name)
{
	if (n_seeds == sizeof(seeds) / sizeof(seeds[0])) {
		fprintf(stderr, "wire_seeds: too many seeds\n");
		exit(2);
	}
	seeds[n_seeds].name = name;
	return &seeds[n_seeds++].b;
}

static void ok(int ret, const char *what)
{
	if (ret < 0) {
		fprintf(stderr, "wire_seeds: encoding %s failed: %s\n", what, kvmig_last_error());
		failed = 1;
	}
}

static struct kvmig_msg_hello hello(uint8_t role, uint8_t flags)
{
	struct kvmig_msg_hello h = { .role = role, .flags = flags,
				     .format = { "page_major", KVMIG_ORDER_NHD, "" },
				     .meta = { 16, 2, 2, 64, KVMIG_DTYPE_BF16 } };

	h.half_bytes = 16ull * 2 * 2 * 64 * 2;
	for (int i = 0; i < 16; i++) {
		h.migration.b[i] = role ? 0 : (uint8_t)(i + 1);
		h.pager.b[i] = (uint8_t)(0xa0 + i + role);
	}
	return h;
}

static void make(void)
{
	static struct kvmig_wire_extent ext[4] = {
		{ 0x100000, 4096 }, { 0x200000, 4096 }, { 0x101000, 4096 }, { 0x201000, 4096 },
	};
	struct kvmig_wire_region rg[2] = {
		{ .addr = 0x100000, .len = 0x2000, .key = { 4, { 0, 0, 0, 42 } } },
		{ .addr = 0x200000, .len = 0x2000, .key = { 16, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
								  11, 12, 13, 14, 15, 16 } } },
	};
	struct kvmig_msg_regions regions = { 2, rg };
	struct kvmig_offer_page pages[2] = { { 0, 2, 1, ext }, { 5, 2, 3, ext + 2 } };
	struct kvmig_msg_offer offer = { 0, 2, pages, NULL };
	struct kvmig_msg_read_req rq = { 7, 0x100000, 4096, { 4, { 0, 0, 0, 42 } } };
	struct kvmig_manifest_page dg[2] = { { .ix = 0 }, { .ix = 5 } };
	uint32_t ixs[2] = { 0, 5 };
	struct kvmig_seq seqs[1] = { { .id = (char *)"seq-0", .page_ixs = ixs, .n_pages = 2,
				       .fill_in_last_page = 9 } };
	struct kvmig_wire_record recs[1] = { { .id = { { 1, 2, 3, 4 } }, .role = 1, .state = 3 } };
	struct kvmig_msg_round round = { 1, 2 };
	uint8_t nonce[KVMIG_AUTH_LEN], resp[KVMIG_WIRE_READ_RESP_HDR_LEN + 16];
	struct kvmig_msg_hello hs = hello(0, 0), hr = hello(1, 0);
	struct kvmig_wbuf *b;

	for (unsigned i = 0; i < KVMIG_AUTH_LEN; i++)
		nonce[i] = (uint8_t)(i + 1);
	for (int i = 0; i < 16; i++) {
		dg[0].k.b[i] = (uint8_t)i;
		dg[0].v.b[i] = (uint8_t)(i * 3);
		dg[1].k.b[i] = (uint8_t)(i * 5);
		dg[1].v.b[i] = (uint8_t)(i * 7);
	}
	ok(kvmig_wire_put_hello(seed("hello"), &hs), "HELLO");
	hs.flags = KVMIG_HELLO_NO_VERIFY | KVMIG_HELLO_LIVE;
	ok(kvmig_wire_put_hello(seed("hello-noverify"), &hs), "HELLO");
	hs.flags = 0;
	ok(kvmig_wire_put_regions(seed("regions"), &regions), "REGIONS");
	ok(kvmig_wire_put_offer(seed("offer"), &offer), "OFFER");
	ok(kvmig_wire_put_read_req(seed("read-req"), &rq), "READ_REQ");
	kvmig_wire_read_resp_hdr(resp, 7, 16);
	memset(resp + KVMIG_WIRE_READ_RESP_HDR_LEN, 0x5a, 16);
	b = seed("read-resp");
	b->p = malloc(sizeof(resp));
	if (!b->p)
		exit(2);
	memcpy(b->p, resp, sizeof(resp));
	b->len = b->cap = sizeof(resp);
	ok(kvmig_wire_put_digests(seed("digests"), dg, 2), "DIGESTS");
	ok(kvmig_wire_put_final(seed("final"), seqs, 1), "FINAL");
	ok(kvmig_wire_put_empty(seed("commit"), KVMIG_MSG_COMMIT), "COMMIT");
	ok(kvmig_wire_put_empty(seed("commit-ack"), KVMIG_MSG_COMMIT_ACK), "COMMIT_ACK");
	ok(kvmig_wire_put_abort(seed("abort"), EIO, "page 5 does not match"), "ABORT");
	ok(kvmig_wire_put_empty(seed("keepalive"), KVMIG_MSG_KEEPALIVE), "KEEPALIVE");
	ok(kvmig_wire_put_auth(seed("auth-challenge"), KVMIG_MSG_AUTH_CHALLENGE, nonce), "AUTH");
	ok(kvmig_wire_put_auth(seed("auth-proof"), KVMIG_MSG_AUTH_PROOF, nonce), "AUTH");
	ok(kvmig_wire_put_round(seed("round"), &round), "ROUND");
	ok(kvmig_wire_put_empty(seed("activated"), KVMIG_MSG_ACTIVATED), "ACTIVATED");
	ok(kvmig_wire_put_empty(seed("forget"), KVMIG_MSG_FORGET), "FORGET");
	ok(kvmig_wire_put_records(seed("records"), recs, 1), "RECORDS");
	ok(kvmig_wire_put_paths(seed("paths-ask"), &(struct kvmig_msg_paths){ .per_addr = 4 }),
	   "PATHS");
	{
		struct kvmig_msg_paths pp = { .per_addr = 2, .n_addrs = 2,
					      .token = { 1, 2, 3, 4, 5, 6, 7, 8, 9 } };
		struct kvmig_msg_join j = { .token = { 1, 2, 3 }, .index = 3, .total = 4 };

		snprintf(pp.addrs[0], sizeof(pp.addrs[0]), "10.77.0.2:40001");
		snprintf(pp.addrs[1], sizeof(pp.addrs[1]), "[fd00::2]:40002");
		ok(kvmig_wire_put_paths(seed("paths"), &pp), "PATHS");
		ok(kvmig_wire_put_join(seed("join"), &j), "JOIN");
		ok(kvmig_wire_put_empty(seed("joined"), KVMIG_MSG_JOINED), "JOINED");
	}
	/* Whole conversations, one side's frames each. */
	b = seed("sender-stream");
	ok(kvmig_wire_put_hello(b, &hs), "HELLO");
	ok(kvmig_wire_put_records(b, NULL, 0), "RECORDS");
	ok(kvmig_wire_put_regions(b, &regions), "REGIONS");
	ok(kvmig_wire_put_offer(b, &offer), "OFFER");
	ok(kvmig_wire_put_digests(b, dg, 2), "DIGESTS");
	ok(kvmig_wire_put_final(b, seqs, 1), "FINAL");
	ok(kvmig_wire_put_empty(b, KVMIG_MSG_COMMIT_ACK), "COMMIT_ACK");
	ok(kvmig_wire_put_empty(b, KVMIG_MSG_FORGET), "FORGET");
	b = seed("receiver-stream");
	ok(kvmig_wire_put_hello(b, &hr), "HELLO");
	ok(kvmig_wire_put_records(b, recs, 1), "RECORDS");
	ok(kvmig_wire_put_read_req(b, &rq), "READ_REQ");
	ok(kvmig_wire_put_round(b, &round), "ROUND");
	ok(kvmig_wire_put_empty(b, KVMIG_MSG_COMMIT), "COMMIT");
	ok(kvmig_wire_put_empty(b, KVMIG_MSG_ACTIVATED), "ACTIVATED");
	b = seed("auth-stream");
	hs.flags = KVMIG_HELLO_AUTH;
	ok(kvmig_wire_put_hello(b, &hs), "HELLO");
	ok(kvmig_wire_put_auth(b, KVMIG_MSG_AUTH_CHALLENGE, nonce), "AUTH");
	ok(kvmig_wire_put_auth(b, KVMIG_MSG_AUTH_PROOF, nonce), "AUTH");
}

static int write_all(const char *dir)
{
	for (unsigned i = 0; i < n_seeds; i++) {
		char path[4096];
		FILE *f;

		snprintf(path, sizeof(path), "%s/%s", dir, seeds[i].name);
		if (!(f = fopen(path, "wb")) ||
		    fwrite(seeds[i].b.p, 1, seeds[i].b.len, f) != seeds[i].b.len || fclose(f)) {
			fprintf(stderr, "wire_seeds: cannot write %s\n", path);
			return 1;
		}
	}
	printf("wire_seeds: wrote %u seeds into %s\n", n_seeds, dir);
	return 0;
}

static int check_all(const char *dir, const char *self)
{
	int stale = 0;

	for (unsigned i = 0; i < n_seeds; i++) {
		char path[4096];
		uint8_t *have = malloc(seeds[i].b.len + 1);
		size_t n = 0;
		FILE *f;

		snprintf(path, sizeof(path), "%s/%s", dir, seeds[i].name);
		if (have && (f = fopen(path, "rb"))) {
			n = fread(have, 1, seeds[i].b.len + 1, f);
			fclose(f);
		}
		if (!have || n != seeds[i].b.len || memcmp(have, seeds[i].b.p, n)) {
			fprintf(stderr, "wire_seeds: %s is not what the encoders make now\n", path);
			stale++;
		}
		free(have);
	}
	/* A file the encoders do not make is a seed nobody keeps current. */
	DIR *d = opendir(dir);
	struct dirent *e;

	while (d && (e = readdir(d))) {
		unsigned i = 0;

		if (e->d_name[0] == '.')
			continue;
		while (i < n_seeds && strcmp(seeds[i].name, e->d_name))
			i++;
		if (i == n_seeds) {
			fprintf(stderr, "wire_seeds: %s/%s is not one of the seeds made here\n", dir,
				e->d_name);
			stale++;
		}
	}
	if (d)
		closedir(d);
	if (stale)
		fprintf(stderr, "wire_seeds: %d stale seed(s); after a wire change run\n"
			"  %s --write %s\n", stale, self, dir);
	else
		printf("wire_seeds: the %u seeds in %s are current (protocol version %u)\n",
		       n_seeds, dir, KVMIG_WIRE_VERSION);
	return stale ? 1 : 0;
}

int main(int argc, char **argv)
{
	int ret;

	if (argc != 3 || (strcmp(argv[1], "--write") && strcmp(argv[1], "--check"))) {
		fprintf(stderr, "usage: wire_seeds --write|--check DIR\n");
		return 2;
	}
	make();
	if (failed)
		return 2;
	ret = !strcmp(argv[1], "--write") ? write_all(argv[2]) : check_all(argv[2], argv[0]);
	for (unsigned i = 0; i < n_seeds; i++)
		kvmig_wbuf_free(&seeds[i].b);
	return ret;
}
