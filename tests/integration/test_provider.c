/* SPDX-License-Identifier: MIT */
/*
 * tests/integration/test_provider.c - the provider contract (transport/
 * provider.h), run against every row of the provider table that serves the
 * test address: tcp on the host, tcp and rdma in the soft-RoCE guest
 * ($KVMIG_TEST_LISTEN=10.77.0.1:0). A new provider is proven by adding its
 * row, not by rereading test_migrate.c.
 *
 * The parent plays the receiver: it listens, accepts and posts reads. Each
 * session's sender is a child forked before the parent touched any provider
 * (so no registered memory is ever shared across a fork); it waits on a
 * pipe until told which provider and address to connect to, registers a
 * patterned buffer for remote reads, sends REGIONS (8,192 entries: one frame
 * of ~160 KiB, more than one rdma control buffer) and then obeys the ABORT
 * frames the parent sends as commands: "ping" (answer "pong"), "dereg"
 * (revoke the registration, answer "dereged"), "vanish" (SIGKILL itself),
 * "stop" (SIGSTOP itself).
 *
 * The contract checked, per provider: accept gives up after its timeout and
 * on the cancel fd; control frames both ways, a large one reassembled; reads
 * of the whole registration, unaligned and 1-byte reads, land the right
 * bytes; a read past the end of the registration, one with a wrong key and
 * one with a key revoked by dereg are refused (an error, never bytes); a
 * peer that dies is noticed, and one that goes silent times out, each within
 * the timeout; the cancel fd ends a wait; progress with timeout 0 never waits
 * and the wait_fds wake for the peer's next message; local_addr names the
 * listener's host.
 */
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "transport/session.h"
#include "util/internal.h"

#define BUF_BYTES (1u << 20)
#define N_REGIONS 8192u
#define MAX_PEERS 64

enum session_kind {
	S_READS,      /* reads in bounds, control both ways, then a revoked key */
	S_PAST_END,   /* a read past the end of the registration */
	S_WRONG_KEY,  /* a read with a key the peer never gave */
	S_VANISH,     /* the peer dies */
	S_SILENT,     /* the peer stops */
	S_CANCEL,     /* the cancel fd ends a wait */
	N_KINDS
};

static const char *listen_addr = "127.0.0.1:0";
static const struct xport_provider *rows;
static size_t n_rows;
static int row_runs[16];

/* Children forked at the start, waiting for their session. */
static struct peer {
	pid_t pid;
	int cmd_fd; /* write "row addr\n" here */
} peers[MAX_PEERS];
static int n_peers, next_peer;

static uint8_t pattern_at(uint64_t i)
{
	return (uint8_t)(i * 2654435761u >> 13);
}

static int timeout_for(const struct xport_ops *ops)
{
	return strcmp(ops->name, "tcp") ? 15000 : 3000; /* emulated RDMA is slow */
}

/* The key of filler region @i: i's bytes, as many as i needs (1..2). */
static struct kvmig_rkey filler_key(uint32_t i)
{
	struct kvmig_rkey k = { .len = i < 256 ? 1 : 2 };

	k.b[0] = (uint8_t)i;
	k.b[1] = (uint8_t)(i >> 8);
	return k;
}

/* ---- the sender child ---- */

static int child_send_abort(const struct xport_ops *ops, struct xport_conn *c, const char *text)
{
	struct kvmig_wbuf b = { 0 };
	int ret = kvmig_wire_put_abort(&b, ECANCELED, text);

	if (ret == 0)
		ret = ops->send(c, b.p, b.len);
	kvmig_wbuf_free(&b);
	return ret;
}

static void child_session(const struct xport_ops *ops, const char *addr)
{
	static uint8_t buf[BUF_BYTES] __attribute__((aligned(4096)));
	struct kvmig_wire_region *rg = calloc(N_REGIONS, sizeof(*rg));
	struct kvmig_msg_regions m = { N_REGIONS, rg };
	struct kvmig_wbuf b = { 0 };
	struct xport_conn *c = NULL;
	void *handle = NULL;
	struct kvmig_rkey key;

	for (uint64_t i = 0; i < BUF_BYTES; i++)
		buf[i] = pattern_at(i);
	if (!rg || ops->connect(addr, timeout_for(ops), -1, &c) < 0)
		_exit(2);
	ops->set_timeout(c, timeout_for(ops));
	if (ops->reg_remote(c, buf, BUF_BYTES, &key, &handle) < 0)
		_exit(3);
	/* Entry 0 is the registration; the rest only make the frame large. */
	rg[0] = (struct kvmig_wire_region){ .addr = (uint64_t)(uintptr_t)buf, .len = BUF_BYTES,
					    .key = key };
	for (uint32_t i = 1; i < N_REGIONS; i++)
		rg[i] = (struct kvmig_wire_region){ .addr = (1ull << 46) + (uint64_t)i * 8192,
						    .len = 4096, .key = filler_key(i) };
	if (kvmig_wire_put_regions(&b, &m) < 0 || ops->send(c, b.p, b.len) < 0)
		_exit(4);
	kvmig_wbuf_free(&b);
	free(rg);
	for (;;) {
		struct xport_msg *msg = NULL;
		struct kvmig_msg_abort ab;
		int ret = ops->ctl_pop(c, &msg);

		if (ret == -EAGAIN) {
			if (ops->progress(c, timeout_for(ops), -1) < 0)
				break; /* the parent closed, or refused reads broke it */
			continue;
		}
		if (ret < 0)
			break;
		if (msg->hdr.type != KVMIG_MSG_ABORT ||
		    kvmig_wire_get_abort(msg->payload, msg->hdr.len, &ab) < 0)
			_exit(5);
		free(msg->payload);
		free(msg);
		if (!strcmp(ab.text, "ping")) {
			if (child_send_abort(ops, c, "pong") < 0)
				_exit(6);
		} else if (!strcmp(ab.text, "dereg")) {
			ops->dereg(c, &handle);
			if (handle || child_send_abort(ops, c, "dereged") < 0)
				_exit(7);
		} else if (!strcmp(ab.text, "vanish")) {
			raise(SIGKILL);
		} else if (!strcmp(ab.text, "stop")) {
			raise(SIGSTOP);
		}
	}
	ops->dereg(c, &handle);
	ops->close(&c);
	_exit(0);
}

/* Wait for "row addr\n" on @fd, then be that session's sender. */
static void child_main(int fd)
{
	char line[256];
	size_t n = 0;
	unsigned row;

	while (n + 1 < sizeof(line)) {
		ssize_t r = read(fd, line + n, 1);

		if (r <= 0)
			_exit(0); /* the parent did not need this one */
		if (line[n++] == '\n')
			break;
	}
	line[n] = '\0';
	char *sp = strchr(line, ' ');

	if (!sp || sscanf(line, "%u", &row) != 1 || row >= n_rows)
		_exit(8);
	sp[1 + strcspn(sp + 1, "\n")] = '\0';
	child_session(rows[row].ops, sp + 1);
}

static void fork_peers(int n)
{
	for (int i = 0; i < n && n_peers < MAX_PEERS; i++) {
		int fds[2];
		pid_t pid;

		assert_int_equal(pipe(fds), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(fds[1]);
			for (int k = 0; k < n_peers; k++)
				close(peers[k].cmd_fd);
			child_main(fds[0]);
		}
		close(fds[0]);
		peers[n_peers++] = (struct peer){ pid, fds[1] };
	}
}

/* ---- the parent: the receiving side ---- */

struct sess {
	const struct xport_ops *ops;
	struct xport_conn *c;
	pid_t pid;
	struct kvmig_wire_region reg; /* the child's registration */
};

/* Wait for the next control message; a negative errno if none came. */
static int wait_msg(struct sess *s, int timeout_ms, struct xport_msg **m)
{
	double until = kvmig_now() + timeout_ms / 1000.0;

	for (;;) {
		int ret = s->ops->ctl_pop(s->c, m);

		if (ret != -EAGAIN)
			return ret;
		if (kvmig_now() > until)
			return -ETIMEDOUT;
		if ((ret = s->ops->progress(s->c, timeout_ms, -1)) < 0)
			return ret;
	}
}

static void send_cmd(struct sess *s, const char *text)
{
	struct kvmig_wbuf b = { 0 };

	assert_int_equal(kvmig_wire_put_abort(&b, ECANCELED, text), 0);
	assert_int_equal(s->ops->send(s->c, b.p, b.len), 0);
	kvmig_wbuf_free(&b);
}

static void expect_reply(struct sess *s, const char *text)
{
	struct xport_msg *m = NULL;
	struct kvmig_msg_abort ab;

	assert_int_equal(wait_msg(s, timeout_for(s->ops), &m), 0);
	assert_int_equal(m->hdr.type, KVMIG_MSG_ABORT);
	assert_int_equal(kvmig_wire_get_abort(m->payload, m->hdr.len, &ab), 0);
	assert_string_equal(ab.text, text);
	free(m->payload);
	free(m);
}

/* Accept the next child's connection and take its REGIONS. */
static void sess_open(struct sess *s, size_t row, struct xport_listener *l)
{
	struct xport_msg *m = NULL;
	struct kvmig_msg_regions rg = { 0 };
	char line[160];
	int n;

	assert_true(next_peer < n_peers);
	memset(s, 0, sizeof(*s));
	s->ops = rows[row].ops;
	s->pid = peers[next_peer].pid;
	n = snprintf(line, sizeof(line), "%zu %s\n", row, s->ops->listener_addr(l));
	assert_int_equal(write(peers[next_peer].cmd_fd, line, (size_t)n), n);
	close(peers[next_peer++].cmd_fd);
	assert_int_equal(s->ops->accept(l, timeout_for(s->ops), -1, &s->c), 0);
	s->ops->set_timeout(s->c, timeout_for(s->ops));
	assert_int_equal(wait_msg(s, timeout_for(s->ops), &m), 0);
	assert_int_equal(m->hdr.type, KVMIG_MSG_REGIONS);
	assert_true(m->hdr.len > 64u * 1024); /* more than one rdma control buffer */
	assert_int_equal(kvmig_wire_get_regions(m->payload, m->hdr.len, &rg), 0);
	assert_int_equal(rg.n, N_REGIONS);
	for (uint32_t i = 1; i < N_REGIONS; i++) {
		assert_int_equal(rg.r[i].addr, (1ull << 46) + (uint64_t)i * 8192);
		assert_int_equal(rg.r[i].len, 4096);
		struct kvmig_rkey k = filler_key(i);

		assert_true(kvmig_rkey_equal(&rg.r[i].key, &k));
	}
	assert_int_equal(rg.r[0].len, BUF_BYTES);
	s->reg = rg.r[0];
	kvmig_msg_regions_free(&rg);
	free(m->payload);
	free(m);
}

static void sess_close(struct sess *s)
{
	int st;

	s->ops->close(&s->c);
	kill(s->pid, SIGKILL); /* a stopped or stuck child too */
	assert_int_equal(waitpid(s->pid, &st, 0), s->pid);
}

/*
 * Post @n reads and wait for all of them. Return 0 when all completed with
 * status 0, else the first error: from post_reads, progress, or a read's
 * status.
 */
static int do_reads(struct sess *s, struct xport_read *rds, unsigned n)
{
	struct xport_read *p[64], *done[64];
	double until = kvmig_now() + 2.0 * timeout_for(s->ops) / 1000.0;
	unsigned left = n;
	int ret;

	assert_true(n <= 64);
	for (unsigned i = 0; i < n; i++)
		p[i] = &rds[i];
	if ((ret = s->ops->post_reads(s->c, p, n)) < 0)
		return ret;
	while (left) {
		assert_true(kvmig_now() < until); /* a refused read must not hang */
		while ((ret = s->ops->reap(s->c, done, 64)) > 0) {
			for (int i = 0; i < ret; i++)
				if (done[i]->status < 0)
					return done[i]->status;
			left -= (unsigned)ret;
		}
		if (left && (ret = s->ops->progress(s->c, timeout_for(s->ops), -1)) < 0)
			return ret;
	}
	return 0;
}

static struct xport_read rd_of(void *local, uint64_t remote, uint32_t len,
			       struct kvmig_rkey key)
{
	return (struct xport_read){ .local = local, .remote = remote, .len = len, .key = key };
}

static uint8_t *dst_buf(void)
{
	static uint8_t dst[BUF_BYTES] __attribute__((aligned(4096)));

	memset(dst, 0xee, sizeof(dst));
	return dst;
}

/* One read of @len bytes at @off in the child's buffer (with @key) into
 * dst + @off; expect it refused and nothing written. */
static void expect_refused(struct sess *s, uint64_t remote, uint32_t len,
			   struct kvmig_rkey key, uint8_t *dst)
{
	struct xport_read rd = rd_of(dst, remote, len, key);
	double t0 = kvmig_now();
	int ret = do_reads(s, &rd, 1);

	assert_true(ret < 0);
	assert_true(kvmig_now() - t0 < 2.0 * timeout_for(s->ops) / 1000.0);
	for (uint32_t i = 0; i < len; i++)
		if (dst[i] != 0xee)
			fail_msg("%s: a refused read wrote byte %u", s->ops->name, i);
}

static void run_row(size_t row)
{
	const struct xport_ops *ops = rows[row].ops;
	struct xport_listener *l = NULL;
	struct sess s;
	uint8_t *dst = dst_buf();
	void *lh = NULL;
	int fds[2], ret;
	double t0;

	printf("# provider %s on %s\n", ops->name, listen_addr);
	assert_int_equal(ops->listen(listen_addr, &l), 0);

	/* accept: its timeout, then the cancel fd. */
	t0 = kvmig_now();
	assert_int_equal(ops->accept(l, 200, -1, &s.c), -ETIMEDOUT);
	assert_true(kvmig_now() - t0 >= 0.15 && kvmig_now() - t0 < 3.0);
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(write(fds[1], "x", 1), 1);
	t0 = kvmig_now();
	assert_int_equal(ops->accept(l, -1, fds[0], &s.c), -ECANCELED);
	assert_true(kvmig_now() - t0 < 3.0);
	close(fds[0]);
	close(fds[1]);

	for (int kind = 0; kind < N_KINDS; kind++) {
		dst = dst_buf();
		sess_open(&s, row, l);
		ret = ops->reg_local(s.c, dst, BUF_BYTES, &lh);
		assert_true(ret == 0 || ret == 1);
		switch (kind) {
		case S_READS: {
			struct xport_read rds[20];
			struct pollfd pf[4];
			struct xport_msg *m = NULL;
			char local[96], host[80], port[16];
			unsigned n = 0;
			int nf, heard = 0;

			/* progress with timeout 0 never waits nor times out; then the
			 * wait_fds become readable when the peer sends (stripe.c
			 * waits on several connections so). */
			t0 = kvmig_now();
			assert_true(ops->progress(s.c, 0, -1) >= 0);
			assert_true(kvmig_now() - t0 < 0.5);
			nf = ops->wait_fds(s.c, pf, 4);
			assert_true(nf >= 1 && nf <= 4);
			send_cmd(&s, "ping");
			t0 = kvmig_now();
			while (!heard && kvmig_now() - t0 < timeout_for(ops) / 1000.0) {
				assert_true(poll(pf, (nfds_t)nf, timeout_for(ops)) > 0);
				if ((ret = ops->progress(s.c, 0, -1)) < 0)
					fail_msg("%s: progress(0): %s", ops->name, kvmig_last_error());
				while (ops->ctl_pop(s.c, &m) == 0) {
					heard = m->hdr.type == KVMIG_MSG_ABORT;
					free(m->payload);
					free(m);
				}
			}
			assert_true(heard);
			/* This side's address: the listener's host. */
			assert_int_equal(ops->local_addr(s.c, local, sizeof(local)), 0);
			assert_int_equal(kvmig_addr_split(local, host, sizeof(host), port, sizeof(port)), 0);
			assert_int_equal(strncmp(listen_addr, host, strlen(host)), 0);

			/* The whole registration in 64 KiB reads. */
			for (uint32_t off = 0; off < BUF_BYTES; off += 65536)
				rds[n++] = rd_of(dst + off, s.reg.addr + off, 65536, s.reg.key);
			assert_int_equal(do_reads(&s, rds, n), 0);
			for (uint32_t i = 0; i < BUF_BYTES; i++)
				if (dst[i] != pattern_at(i))
					fail_msg("%s: byte %u read wrong", ops->name, i);
			/* Unaligned, straddling, one byte; the last byte. */
			memset(dst, 0xee, BUF_BYTES);
			n = 0;
			rds[n++] = rd_of(dst + 1, s.reg.addr + 1, 4093, s.reg.key);
			rds[n++] = rd_of(dst + 65535, s.reg.addr + 65535, 2, s.reg.key);
			rds[n++] = rd_of(dst + 7, s.reg.addr + 7, 1, s.reg.key);
			rds[n++] = rd_of(dst + BUF_BYTES - 1, s.reg.addr + BUF_BYTES - 1, 1, s.reg.key);
			assert_int_equal(do_reads(&s, rds, n), 0);
			for (unsigned k = 0; k < n; k++)
				for (uint32_t i = 0; i < rds[k].len; i++) {
					uint64_t at = rds[k].remote - s.reg.addr + i;

					if (dst[at] != pattern_at(at))
						fail_msg("%s: byte %llu read wrong", ops->name,
							 (unsigned long long)at);
				}
			assert_int_equal(dst[0], 0xee); /* nothing around them */
			assert_int_equal(dst[4094], 0xee);
			/* Control frames both ways. */
			send_cmd(&s, "ping");
			expect_reply(&s, "pong");
			/* A key revoked by dereg is refused. */
			send_cmd(&s, "dereg");
			expect_reply(&s, "dereged");
			memset(dst, 0xee, BUF_BYTES);
			expect_refused(&s, s.reg.addr, 4096, s.reg.key, dst);
			break;
		}
		case S_PAST_END:
			expect_refused(&s, s.reg.addr + BUF_BYTES - 8, 16, s.reg.key, dst);
			break;
		case S_WRONG_KEY: {
			struct kvmig_rkey wrong = s.reg.key;

			wrong.b[wrong.len - 1] ^= 0x5a;
			expect_refused(&s, s.reg.addr, 4096, wrong, dst);
			break;
		}
		case S_VANISH:
			send_cmd(&s, "vanish");
			t0 = kvmig_now();
			do
				ret = ops->progress(s.c, timeout_for(ops), -1);
			while (ret >= 0 && kvmig_now() - t0 < 3.0 * timeout_for(ops) / 1000.0);
			assert_true(ret == -ECONNRESET || ret == -ETIMEDOUT);
			assert_true(kvmig_now() - t0 <= 1.5 * timeout_for(ops) / 1000.0);
			break;
		case S_SILENT: {
			int st;

			send_cmd(&s, "stop");
			assert_int_equal(waitpid(s.pid, &st, WUNTRACED), s.pid);
			assert_true(WIFSTOPPED(st));
			ops->set_timeout(s.c, 1000);
			t0 = kvmig_now();
			do
				ret = ops->progress(s.c, 1000, -1);
			while (ret >= 0 && kvmig_now() - t0 < 10.0);
			assert_int_equal(ret, -ETIMEDOUT);
			assert_true(kvmig_now() - t0 >= 0.9 && kvmig_now() - t0 < 4.0);
			break;
		}
		case S_CANCEL:
			assert_int_equal(pipe(fds), 0);
			ops->set_cancel(s.c, fds[0]);
			assert_int_equal(write(fds[1], "x", 1), 1);
			t0 = kvmig_now();
			assert_int_equal(ops->progress(s.c, timeout_for(ops), -1), -ECANCELED);
			assert_true(kvmig_now() - t0 < 2.0);
			ops->set_cancel(s.c, -1);
			close(fds[0]);
			close(fds[1]);
			break;
		}
		ops->dereg(s.c, &lh);
		assert_null(lh);
		sess_close(&s);
	}
	ops->listener_close(&l);
	assert_null(l);
	row_runs[row]++;
}

static void test_every_provider(void **state)
{
	int ran = 0;

	for (size_t i = 0; i < n_rows; i++) {
		/* A row runs where its probe says it serves the address. */
		if (rows[i].serves && !rows[i].serves(listen_addr, 1)) {
			printf("# provider %s: does not serve %s here, not run\n", rows[i].name,
			       listen_addr);
			continue;
		}
		run_row(i);
		ran++;
	}
	assert_true(ran > 0);
	/* Under the soft-RoCE suite every row must have run. */
	if (getenv("KVMIG_TEST_EVERY_PROVIDER"))
		for (size_t i = 0; i < n_rows; i++)
			if (!row_runs[i])
				fail_msg("provider %s did not run on %s", rows[i].name, listen_addr);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_provider),
	};
	int ret;

	signal(SIGPIPE, SIG_IGN);
	if (getenv("KVMIG_TEST_LISTEN"))
		listen_addr = getenv("KVMIG_TEST_LISTEN");
	rows = xport_providers(&n_rows);
	assert_true(n_rows <= KVMIG_ARRAY_SIZE(row_runs));
	/* Every session's sender, forked before any provider is touched. */
	fork_peers((int)(n_rows * N_KINDS));
	ret = cmocka_run_group_tests_name("provider contract", tests, NULL, NULL);
	for (int i = next_peer; i < n_peers; i++)
		close(peers[i].cmd_fd); /* unused ones exit */
	while (wait(NULL) > 0)
		;
	return ret ? 1 : 0;
}
