/* SPDX-License-Identifier: MIT */
/*
 * agent/metrics.c - the agent's metrics in Prometheus' text exposition
 * format: base units (seconds, bytes), _total counters, histograms with
 * fixed buckets, labels only from small fixed sets (role, result,
 * transport, state). docs/AGENT.md lists every series.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent_internal.h"
#include "util/internal.h"

static const double duration_bounds[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
					  0.5, 1, 2.5, 5, 10, 30, 60, 300 };
static const double pause_bounds[] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
				       0.025, 0.05, 0.1, 0.25, 0.5, 1, 5 };
static const char *const role_names[2] = { "source", "destination" };
static const char *const result_names[N_RESULTS] = { "committed", "aborted", "in_doubt" };
static const char *const transport_names[N_TRANSPORTS] = { "tcp", "rdma" };

/* @h was zeroed with its struct metrics. */
static void hist_init(struct hist *h, const double *b, uint32_t n)
{
	h->bounds = b;
	h->n = n;
}

static void hist_add(struct hist *h, double v)
{
	uint32_t i = 0;

	while (i < h->n && v > h->bounds[i])
		i++;
	h->counts[i]++;
	h->sum += v;
	h->count++;
}

void metrics_init(struct metrics *m)
{
	memset(m, 0, sizeof(*m));
	for (int r = 0; r < 2; r++)
		hist_init(&m->duration[r], duration_bounds, KVMIG_ARRAY_SIZE(duration_bounds));
	hist_init(&m->pause, pause_bounds, KVMIG_ARRAY_SIZE(pause_bounds));
}

void metrics_count(struct metrics *m, const struct mig *mg)
{
	const struct kvmig_migrate_stats *st = &mg->st;
	int role = mg->role, t = !strcmp(st->transport, "rdma");
	enum mig_result res = mg->state == MS_COMMITTED ? RES_COMMITTED :
			      mg->state == MS_IN_DOUBT ? RES_IN_DOUBT : RES_ABORTED;

	m->migrations[role][res][t]++;
	hist_add(&m->duration[role], mg->t_end - mg->t_start);
	if (role == MR_SOURCE && st->pause_seconds > 0)
		hist_add(&m->pause, st->pause_seconds);
	if (role == MR_SOURCE && st->n_rounds > 1)
		m->precopy_rounds += st->n_rounds - 1;
	m->register_seconds[role] += st->register_seconds;
	if (res == RES_COMMITTED) {
		m->bytes[role] += st->bytes;
		m->pages[role] += st->pages;
	}
	if (role == MR_DEST) {
		m->rereads += st->rereads;
		/* A page that failed twice: EIO after a re-read (an ABORT or a
		 * failed step is EIO too, with nothing re-read). */
		if (mg->err == -EIO && st->rereads > 0)
			m->digest_failures++;
	}
}

/* ---- rendering ---- */

struct buf {
	char *p;
	size_t len, cap;
	int err;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->err)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->err = 1;
			return;
		}
		if ((size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		char *q = realloc(b->p, b->cap * 2 + (size_t)n);

		if (!q) {
			b->err = 1;
			return;
		}
		b->p = q;
		b->cap = b->cap * 2 + (size_t)n;
	}
}

static void head(struct buf *b, const char *name, const char *type, const char *help)
{
	put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void scalar(struct buf *b, const char *name, const char *type, const char *help,
		   uint64_t v)
{
	head(b, name, type, help);
	put(b, "%s %llu\n", name, (unsigned long long)v);
}

static void by_role(struct buf *b, const char *name, const char *type, const char *help,
		    const uint64_t v[2])
{
	head(b, name, type, help);
	for (int r = 0; r < 2; r++)
		put(b, "%s{role=\"%s\"} %llu\n", name, role_names[r], (unsigned long long)v[r]);
}

static void hist_put(struct buf *b, const char *name, const char *labels, const struct hist *h)
{
	uint64_t cum = 0;

	for (uint32_t i = 0; i <= h->n; i++) {
		cum += h->counts[i];
		if (i < h->n)
			put(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, *labels ? "," : "",
			    h->bounds[i], (unsigned long long)cum);
		else
			put(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, *labels ? "," : "",
			    (unsigned long long)cum);
	}
	put(b, "%s_sum%s%s%s %.9g\n", name, *labels ? "{" : "", labels, *labels ? "}" : "", h->sum);
	put(b, "%s_count%s%s%s %llu\n", name, *labels ? "{" : "", labels, *labels ? "}" : "",
	    (unsigned long long)h->count);
}

char *metrics_render(struct agent *a, size_t *len)
{
	struct buf b = { .cap = 16384 };
	struct metrics m;
	struct kvmig_record *recs = NULL;
	uint32_t *ixs = NULL, n_used = 0, cap = 0, n_recs = 0;
	uint64_t doubt = 0, sdoubt = 0;
	uint64_t running[2] = { 0, 0 };
	int have_cap;

	/* The pager first, outside the agent's lock. */
	if (kvmig_pager_occupied(a->p, &ixs, &n_used) < 0 ||
	    kvmig_pager_records(a->p, &recs, &n_recs) < 0) {
		free(ixs);
		return NULL;
	}
	free(ixs);
	have_cap = kvmig_pager_capacity(a->p, &cap) == 0;
	for (uint32_t i = 0; i < n_recs; i++) {
		if (recs[i].owner_pid == 0) {
			doubt++;
			sdoubt += recs[i].n_seqs;
		}
	}
	free(recs);
	pthread_mutex_lock(&a->lock);
	m = a->m;
	for (struct mig *g = a->migs; g; g = g->next)
		if (!g->done)
			running[g->role]++;
	pthread_mutex_unlock(&a->lock);
	if (!(b.p = malloc(b.cap)))
		return NULL;

	head(&b, "kvmig_migrations_total", "counter",
	     "Migrations that ended, by this agent's role, result and transport.");
	for (int r = 0; r < 2; r++)
		for (int s = 0; s < N_RESULTS; s++)
			for (int t = 0; t < N_TRANSPORTS; t++)
				put(&b, "kvmig_migrations_total{role=\"%s\",result=\"%s\","
				    "transport=\"%s\"} %llu\n", role_names[r], result_names[s],
				    transport_names[t], (unsigned long long)m.migrations[r][s][t]);
	head(&b, "kvmig_migration_duration_seconds", "histogram",
	     "Migrations from start (connect or accept) to their end, by role.");
	for (int r = 0; r < 2; r++) {
		char lab[32];

		snprintf(lab, sizeof(lab), "role=\"%s\"", role_names[r]);
		hist_put(&b, "kvmig_migration_duration_seconds", lab, &m.duration[r]);
	}
	head(&b, "kvmig_migration_pause_seconds", "histogram",
	     "How long the source pager was paused, per migration out of it.");
	hist_put(&b, "kvmig_migration_pause_seconds", "", &m.pause);
	scalar(&b, "kvmig_precopy_rounds_total", "counter",
	       "Live pre-copy rounds run before the final, paused one (source).", m.precopy_rounds);
	head(&b, "kvmig_registration_seconds_total", "counter",
	     "Time spent registering page memory with the transport, by role.");
	for (int r = 0; r < 2; r++)
		put(&b, "kvmig_registration_seconds_total{role=\"%s\"} %.9g\n", role_names[r],
		    m.register_seconds[r]);
	by_role(&b, "kvmig_migrated_bytes_total", "counter",
		"Page bytes (K and V) of committed migrations, by role.", m.bytes);
	by_role(&b, "kvmig_migrated_pages_total", "counter",
		"Pages of committed migrations, by role.", m.pages);
	scalar(&b, "kvmig_page_rereads_total", "counter",
	       "Pages read a second time after their digest did not match (destination).",
	       m.rereads);
	scalar(&b, "kvmig_digest_failures_total", "counter",
	       "Migrations aborted because a page failed verification twice (destination).",
	       m.digest_failures);
	by_role(&b, "kvmig_migrations_in_flight", "gauge", "Migrations running now, by role.",
		running);
	head(&b, "kvmig_hash_ahead_pages_total", "counter",
	     "Pages the background hasher looked at, by result: hashed and kept, already "
	     "current, written while hashed.");
	for (int r = 0; r < 3; r++)
		put(&b, "kvmig_hash_ahead_pages_total{result=\"%s\"} %llu\n",
		    (const char *const[]){ "hashed", "fresh", "raced" }[r],
		    (unsigned long long)m.ahead_pages[r]);
	scalar(&b, "kvmig_hash_ahead_bytes_total", "counter",
	       "Bytes the background hasher hashed.", m.ahead_bytes);
	head(&b, "kvmig_hash_ahead_seconds_total", "counter",
	     "Time the background hasher spent in its passes.");
	put(&b, "kvmig_hash_ahead_seconds_total %.9g\n", m.ahead_seconds);
	scalar(&b, "kvmig_incoming_refused_total", "counter",
	       "Incoming migrations refused at the max_migrations cap or while stopping.",
	       m.refused);
	scalar(&b, "kvmig_starts_throttled_total", "counter",
	       "Starts refused with HTTP 429 at the max_migrations cap.", m.throttled);
	scalar(&b, "kvmig_in_doubt_records", "gauge",
	       "Migration records in the pager that no live process drives: in doubt.", doubt);
	scalar(&b, "kvmig_in_doubt_sequences", "gauge",
	       "Sequences held by in-doubt records (pending or departed).", sdoubt);
	head(&b, "kvmig_pager_pages", "gauge", "The pager's pages, by state (free, used).");
	if (have_cap)
		put(&b, "kvmig_pager_pages{state=\"free\"} %u\n", cap >= n_used ? cap - n_used : 0);
	put(&b, "kvmig_pager_pages{state=\"used\"} %u\n", n_used);
	if (b.err) {
		free(b.p);
		return NULL;
	}
	*len = b.len;
	return b.p;
}
