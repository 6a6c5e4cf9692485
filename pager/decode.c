/* SPDX-License-Identifier: MIT */
/*
 * pager/decode.c - the synthetic decoding engine: a thread that appends
 * tokens to a synthetic pager's sequences at a fixed rate, round robin, one
 * kvmig_synth_decode() per token, as an inference engine's decode loop does.
 * What live migration (transport/send.c) copies around.
 *
 * Pacing: token k is due at start + k / rate. A paused pager makes the engine
 * wait; afterwards it starts a new schedule instead of catching up, as a real
 * engine loses the time it was stopped for.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kvmig/synth.h>

#include "util/internal.h"

enum seq_state { SEQ_RUNNING, SEQ_FINISHED, SEQ_GONE, SEQ_STOPPED };

struct dseq {
	char id[KVMIG_SEQ_ID_MAX + 1];
	_Atomic uint64_t tokens;
	_Atomic int state;
};

struct kvmig_synth_engine {
	struct kvmig_pager *p;
	struct kvmig_synth_engine_opts o;
	struct dseq *seqs;
	uint32_t n;
	uint32_t page_tokens;
	pthread_t thread;
	atomic_int stop;
	_Atomic uint64_t tokens, pages_added, paused_ns;
};

void kvmig_synth_engine_opts_init(struct kvmig_synth_engine_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->tokens_per_second = 240;
	o->seed = 7;
}

/* Sleep until @t, in slices of at most 10 ms so a stop is seen soon. */
static void sleep_until(const struct kvmig_synth_engine *e, double t)
{
	for (double now = kvmig_now(); now < t && !atomic_load(&e->stop); now = kvmig_now()) {
		double u = KVMIG_MIN(t, now + 0.01);
		struct timespec ts = { (time_t)u, (long)((u - (double)(time_t)u) * 1e9) };

		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
	}
}


/* One token for @q; 0 when written or when the pager is paused. */
static int decode_one(struct kvmig_synth_engine *e, struct dseq *q)
{
	uint64_t t;
	int ret = kvmig_synth_decode(e->p, q->id, e->o.seed, &t);

	if (ret == -EAGAIN || ret == -EBUSY)
		return -EAGAIN; /* paused, or the lock's holder is stopped: later */
	if (ret < 0) {
		atomic_store(&q->state, ret == -ENOENT ? SEQ_GONE : SEQ_STOPPED);
		return 0;
	}
	atomic_fetch_add(&e->tokens, 1);
	if (t % e->page_tokens == 0)
		atomic_fetch_add(&e->pages_added, 1);
	atomic_fetch_add(&q->tokens, 1);
	if (e->o.max_tokens && atomic_load(&q->tokens) >= e->o.max_tokens)
		atomic_store(&q->state, SEQ_FINISHED);
	return 0;
}

static void *engine_main(void *arg)
{
	struct kvmig_synth_engine *e = arg;
	double period = 1.0 / e->o.tokens_per_second, start = kvmig_now();
	uint64_t k = 0;
	uint32_t next = 0;

	while (!atomic_load(&e->stop)) {
		struct dseq *q = NULL;

		for (uint32_t i = 0; i < e->n && !q; i++) {
			struct dseq *c = &e->seqs[(next + i) % e->n];

			if (atomic_load(&c->state) == SEQ_RUNNING) {
				q = c;
				next = (uint32_t)(c - e->seqs + 1) % e->n;
			}
		}
		if (!q) {
			sleep_until(e, kvmig_now() + 0.01); /* every sequence done: idle */
			continue;
		}
		sleep_until(e, start + (double)k * period);
		if (decode_one(e, q) == -EAGAIN) {
			double t0 = kvmig_now();

			/* Paused: look again every 0.5 ms (each look takes the lock). */
			while (!atomic_load(&e->stop) && decode_one(e, q) == -EAGAIN)
				sleep_until(e, kvmig_now() + 0.0005);
			atomic_fetch_add(&e->paused_ns, (uint64_t)((kvmig_now() - t0) * 1e9));
			start = kvmig_now(); /* a new schedule: no catching up */
			k = 0;
		}
		k++;
	}
	return NULL;
}

int kvmig_synth_engine_start(struct kvmig_pager *p, const struct kvmig_synth_engine_opts *o,
			     struct kvmig_synth_engine **ret)
{
	struct kvmig_seq_list all = { 0 };
	struct kvmig_synth_engine *e;
	struct kvmig_cache_meta meta;
	uint32_t depth;
	int err;

	if (!o || !(o->tokens_per_second > 0) || o->tokens_per_second > 1e6)
		return kvmig_err(-EINVAL, "tokens per second must be above 0 and at most 1000000");
	if (kvmig_synth_pause_depth(p, &depth) < 0)
		return kvmig_err(-EINVAL, "the decoding engine needs a synthetic pager");
	if ((err = kvmig_pager_seqs(p, &all)) < 0)
		return err;
	e = calloc(1, sizeof(*e));
	if (!e || !(e->seqs = calloc(all.n ? all.n : 1, sizeof(*e->seqs)))) {
		err = -ENOMEM;
		goto err;
	}
	e->p = p;
	e->o = *o;
	if ((err = kvmig_pager_meta(p, &meta, NULL)) < 0)
		goto err;
	e->page_tokens = meta.page_size_tokens;
	e->o.seq_ids = NULL;
	for (uint32_t i = 0; i < (o->seq_ids ? o->n_seq_ids : all.n); i++) {
		const char *id = o->seq_ids ? o->seq_ids[i] : all.seqs[i].id;
		uint32_t j;

		for (j = 0; j < all.n && strcmp(all.seqs[j].id, id); j++)
			;
		if (j == all.n) {
			err = kvmig_err(-EINVAL, "sequence \"%s\" is not in the pager", id);
			goto err;
		}
		for (j = 0; j < e->n; j++)
			if (!strcmp(e->seqs[j].id, id))
				break;
		if (j < e->n)
			continue; /* named twice: decode it once */
		snprintf(e->seqs[e->n++].id, sizeof(e->seqs[0].id), "%s", id);
	}
	err = -pthread_create(&e->thread, NULL, engine_main, e);
	if (err) {
		kvmig_err(err, "cannot start the decoding thread: %s", strerror(-err));
		goto err;
	}
	kvmig_seq_list_free(&all);
	*ret = e;
	return 0;
err:
	kvmig_seq_list_free(&all);
	if (e)
		free(e->seqs);
	free(e);
	return err;
}

void kvmig_synth_engine_stats(const struct kvmig_synth_engine *e,
			      struct kvmig_synth_engine_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->tokens = atomic_load(&e->tokens);
	st->pages_added = atomic_load(&e->pages_added);
	st->paused_seconds = (double)atomic_load(&e->paused_ns) / 1e9;
	st->n_seqs = e->n;
	for (uint32_t i = 0; i < e->n; i++) {
		int state = atomic_load(&e->seqs[i].state);

		st->finished += state == SEQ_FINISHED;
		st->gone += state == SEQ_GONE;
		st->stopped += state == SEQ_STOPPED;
	}
}

int kvmig_synth_engine_seq_tokens(const struct kvmig_synth_engine *e, const char *seq_id,
				  uint64_t *n)
{
	for (uint32_t i = 0; i < e->n; i++) {
		if (!strcmp(e->seqs[i].id, seq_id)) {
			*n = atomic_load(&e->seqs[i].tokens);
			return 0;
		}
	}
	return kvmig_err(-ENOENT, "the engine does not decode \"%s\"", seq_id);
}

void kvmig_synth_engine_stop(struct kvmig_synth_engine **ep)
{
	struct kvmig_synth_engine *e = ep ? *ep : NULL;

	if (!e)
		return;
	atomic_store(&e->stop, 1);
	pthread_join(e->thread, NULL);
	free(e->seqs);
	free(e);
	*ep = NULL;
}
