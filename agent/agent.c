/* SPDX-License-Identifier: MIT */
/*
 * agent/agent.c - the migration agent: a table of migrations, each run by a
 * thread of its own through the public API (kvmig_migrate_send, or
 * kvmig_migrate_accept_conn on a connection the acceptor thread took), its
 * progress folded into the state the API reports, its events into a ring
 * the event streams read. Aborting is a byte into the migration's cancel
 * pipe: the library then aborts as on any failure before the decision, and
 * completes a migration past it.
 *
 * Locking: a->lock guards the table, the events and the metrics; a
 * migration's thread takes it only to record what happened. Nothing waits
 * on the peer or the pager with it held, except the handlers that read
 * the pager for /v1/pager and /metrics, which take it only to copy counters.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <kvmig/cas.h>

#include "agent/agent_internal.h"
#include "util/internal.h"

static const char *const state_names[] = {
	[MS_QUEUED] = "queued",       [MS_CONNECTING] = "connecting", [MS_PRECOPY] = "precopy",
	[MS_FINAL] = "final",         [MS_VERIFYING] = "verifying",   [MS_COMMITTED] = "committed",
	[MS_ABORTED] = "aborted",     [MS_IN_DOUBT] = "in_doubt",
};

const char *mig_state_name(enum mig_state s)
{
	return state_names[s];
}

int mig_state_final(enum mig_state s)
{
	return s == MS_COMMITTED || s == MS_ABORTED || s == MS_IN_DOUBT;
}

static double wall_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void agent_log(struct agent *a, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (!a->o.log)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&a->log_lock);
	a->o.log(a->o.log_arg, line);
	pthread_mutex_unlock(&a->log_lock);
}

void utf8_clean(char *s)
{
	unsigned char *p = (unsigned char *)s;

	while (*p) {
		unsigned n = *p < 0x80 ? 0 : (*p & 0xe0) == 0xc0 ? 1 : (*p & 0xf0) == 0xe0 ? 2 :
			     (*p & 0xf8) == 0xf0 ? 3 : 4;
		unsigned i;

		if (n == 4 || (n == 1 && *p < 0xc2) || (n == 3 && *p > 0xf4)) {
			*p++ = '?';
			continue;
		}
		if (n == 0) {
			if (*p < 0x20 || *p == 0x7f)
				*p = '?';
			p++;
			continue;
		}
		for (i = 1; i <= n && (p[i] & 0xc0) == 0x80; i++)
			;
		/* Truncated, overlong (e0 80.., f0 80..) or a surrogate (ed a0..). */
		if (i <= n || (n == 2 && *p == 0xe0 && p[1] < 0xa0) ||
		    (n == 2 && *p == 0xed && p[1] >= 0xa0) || (n == 3 && *p == 0xf0 && p[1] < 0x90) ||
		    (n == 3 && *p == 0xf4 && p[1] >= 0x90)) {
			*p++ = '?';
			continue;
		}
		p += n + 1;
	}
}

json_t *json_clean(const char *s)
{
	char *c = strdup(s ? s : "");
	json_t *j;

	if (!c)
		return NULL;
	utf8_clean(c);
	j = json_string(c);
	free(c);
	return j;
}

/* ---- events ---- */

void agent_event(struct agent *a, json_t *o)
{
	struct events *e = &a->ev;
	uint32_t slot = (uint32_t)(e->next % e->cap);
	char *line;

	json_object_set_new(o, "seq", json_integer((json_int_t)e->next));
	json_object_set_new(o, "time", json_real(wall_now()));
	line = json_dumps(o, JSON_COMPACT);
	/* A progress line is not worth a log line; the others are. */
	const char *what = json_string_value(json_object_get(o, "event"));

	if (line && (!what || strcmp(what, "progress")))
		agent_log(a, "%s", line);
	json_decref(o);
	if (!line)
		return;
	free(e->lines[slot]);
	e->lines[slot] = line;
	e->next++;
	pthread_cond_broadcast(&a->cond);
}

static json_t *mig_event(const struct mig *m, const char *what)
{
	return json_pack("{s:s,s:s,s:s,s:s}", "event", what, "migration", m->id, "role",
			 m->role == MR_SOURCE ? "source" : "destination", "state",
			 mig_state_name(m->state));
}

/* ---- the table ---- */

struct mig *agent_find(struct agent *a, const char *id)
{
	for (struct mig *m = a->migs; m; m = m->next)
		if (!strcmp(m->id, id))
			return m;
	return NULL;
}

struct mig *agent_find_key(struct agent *a, const char *key)
{
	for (struct mig *m = a->migs; m; m = m->next)
		if (m->idem[0] && !strcmp(m->idem, key))
			return m;
	return NULL;
}

void mig_free(struct mig *m)
{
	if (!m)
		return;
	for (uint32_t i = 0; i < m->n_seqs; i++)
		free(m->seqs[i]);
	free(m->seqs);
	if (m->cancel[0] >= 0)
		close(m->cancel[0]);
	if (m->cancel[1] >= 0)
		close(m->cancel[1]);
	kvmig_conn_close(&m->conn);
	free(m);
}

/* Under a->lock: forget the oldest ended migrations past the history. */
static void trim_history(struct agent *a)
{
	uint32_t kept = 0, noise = 0;

	/* Connections that ended before their handshake (anyone can open them)
	 * have a small budget of their own: they never push real migrations
	 * out of the history. */
	for (struct mig **pp = &a->migs; *pp;) {
		struct mig *m = *pp;

		if (!m->done || (m->unestablished ? ++noise <= AGENT_MAX_UNESTABLISHED :
				 ++kept <= a->o.history)) {
			pp = &m->next;
			continue;
		}
		*pp = m->next;
		if (m->has_thread)
			pthread_join(m->thread, NULL); /* it has ended: only its return is left */
		a->n_done--;
		mig_free(m);
	}
}

static struct mig *mig_new(struct agent *a, enum mig_role role)
{
	struct mig *m = calloc(1, sizeof(*m));
	uint8_t b[16];

	if (!m)
		return NULL;
	m->a = a;
	m->role = role;
	m->cancel[0] = m->cancel[1] = -1;
	if (pipe2(m->cancel, O_CLOEXEC | O_NONBLOCK) < 0) {
		free(m);
		return NULL;
	}
	if (getrandom(b, sizeof(b), 0) != sizeof(b)) {
		mig_free(m);
		return NULL;
	}
	for (int i = 0; i < 16; i++)
		snprintf(m->id + 2 * i, 3, "%02x", b[i]);
	m->created = wall_now();
	m->state = MS_QUEUED;
	return m;
}

json_t *mig_json(const struct mig *m)
{
	char hex[33];
	json_t *o = json_pack("{s:s,s:s,s:s,s:o,s:f,s:i,s:i,s:i,s:I,s:I}", "id", m->id, "role",
			      m->role == MR_SOURCE ? "source" : "destination", "state",
			      mig_state_name(m->state), "peer", json_clean(m->peer), "created",
			      m->created,
			      "round", (int)m->round, "pages_done", (int)m->pages_done, "pages_total",
			      (int)m->pages_total, "bytes_done", (json_int_t)m->bytes_done,
			      "bytes_total", (json_int_t)m->bytes_total);

	if (!o)
		return NULL;
	if (m->phase[0])
		json_object_set_new(o, "phase", json_string(m->phase));
	if (m->role == MR_SOURCE) {
		json_t *s = json_array();

		for (uint32_t i = 0; i < m->n_seqs; i++)
			json_array_append_new(s, json_string(m->seqs[i]));
		json_object_set_new(o, "seqs", s);
		json_object_set_new(o, "mode", json_string(m->move ? "move" : "copy"));
		json_object_set_new(o, "live", json_boolean(m->live));
		json_object_set_new(o, "timeout_ms", json_integer(m->timeout_ms));
		json_object_set_new(o, "paths", json_integer(m->paths ? m->paths : 1));
		if (m->idem[0])
			json_object_set_new(o, "idempotency_key", json_string(m->idem));
	}
	if (m->st.transport[0])
		json_object_set_new(o, "transport", json_string(m->st.transport));
	if (m->done && m->st.paths)
		json_object_set_new(o, "connections", json_integer(m->st.paths));
	if (m->abort_requested)
		json_object_set_new(o, "abort_requested", json_true());
	if (m->done) {
		json_object_set_new(o, "seconds", json_real(m->t_end - m->t_start));
		json_object_set_new(o, "pages", json_integer(m->st.pages));
		json_object_set_new(o, "bytes", json_integer((json_int_t)m->st.bytes));
		json_object_set_new(o, "sequences", json_integer(m->st.seqs));
		if (m->role == MR_SOURCE) {
			json_object_set_new(o, "pause_ms", json_real(m->st.pause_seconds * 1e3));
			json_object_set_new(o, "digests_ahead", json_integer(m->st.digests_ahead));
			json_object_set_new(o, "pages_hashed", json_integer(m->st.pages_hashed));
		}
		json_object_set_new(o, "rereads", json_integer(m->st.rereads));
		kvmig_id_format(&m->st.migration, hex);
		if (strspn(hex, "0") != 32)
			json_object_set_new(o, "record", json_string(hex));
	}
	if (m->err)
		json_object_set_new(o, "error", json_pack("{s:i,s:s,s:s}", "errno", -m->err, "name",
							  strerrorname_np(-m->err) ? strerrorname_np(-m->err) : "unknown", "message",
							  m->message));
	return o;
}

/* ---- a migration's thread ---- */

static void on_event(void *arg, const struct kvmig_event *ev)
{
	struct mig *m = arg;
	struct agent *a = m->a;
	enum mig_state s;
	json_t *o;

	pthread_mutex_lock(&a->lock);
	s = m->state;
	if (ev->type == KVMIG_EVENT_PROGRESS) {
		m->pages_done = ev->pages_done;
		m->pages_total = ev->pages_total;
		m->bytes_done = ev->bytes_done;
		m->bytes_total = ev->bytes_total;
		o = mig_event(m, "progress");
		json_object_update_new(o, json_pack("{s:i,s:i,s:I,s:I}", "pages", (int)ev->pages_done,
						    "pages_total", (int)ev->pages_total, "bytes",
						    (json_int_t)ev->bytes_done, "bytes_total",
						    (json_int_t)ev->bytes_total));
		agent_event(a, o);
		pthread_mutex_unlock(&a->lock);
		return;
	}
	if (ev->type != KVMIG_EVENT_PHASE) {
		pthread_mutex_unlock(&a->lock);
		return;
	}
	snprintf(m->phase, sizeof(m->phase), "%s", ev->phase);
	/* "commit": the source has decided, the destination is about to record
	 * PREPARED. An abort now would only leave the migration in doubt: from
	 * here it completes. A cancel byte already written is taken back. */
	if (!strcmp(ev->phase, "commit") && !m->committing) {
		char sink[64];

		m->committing = 1;
		while (read(m->cancel[0], sink, sizeof(sink)) > 0)
			;
	}
	/* Past its handshake an incoming migration counts as established. */
	if (m->handshaking && strcmp(ev->phase, "handshake")) {
		m->handshaking = 0;
		a->n_handshaking--;
	}
	if (!strcmp(ev->phase, "connect") || !strcmp(ev->phase, "handshake"))
		s = MS_CONNECTING;
	else if (!strcmp(ev->phase, "round"))
		m->round++;
	else if (!strcmp(ev->phase, "offer") && m->live && s < MS_FINAL)
		s = MS_PRECOPY;
	else if (!strcmp(ev->phase, "pause") || !strcmp(ev->phase, "transfer"))
		s = s < MS_FINAL ? MS_FINAL : s;
	else if (!strcmp(ev->phase, "verify") || !strcmp(ev->phase, "install") ||
		 !strcmp(ev->phase, "commit"))
		s = MS_VERIFYING;
	if (!strcmp(ev->phase, "pause") && m->live)
		m->round++; /* the final round follows the pre-copy ones */
	m->state = s > m->state ? s : m->state;
	o = mig_event(m, "phase");
	json_object_set_new(o, "phase", json_string(ev->phase));
	if (ev->transport)
		json_object_set_new(o, "transport", json_string(ev->transport));
	agent_event(a, o);
	pthread_mutex_unlock(&a->lock);
}

static void finish(struct mig *m, int ret, const struct kvmig_migrate_stats *st)
{
	struct agent *a = m->a;
	json_t *o;

	pthread_mutex_lock(&a->lock);
	m->t_end = kvmig_now();
	m->st = *st;
	m->err = ret;
	if (ret < 0) {
		/* The peer's words may be in it (an ABORT's reason): clean them. */
		snprintf(m->message, sizeof(m->message), "%s",
			 kvmig_last_error()[0] ? kvmig_last_error() : strerror(-ret));
		utf8_clean(m->message);
	}
	if (m->handshaking) {
		m->handshaking = 0;
		m->unestablished = 1;
		a->n_handshaking--;
	}
	m->state = ret == 0 ? MS_COMMITTED : ret == -ENOTCONN ? MS_IN_DOUBT : MS_ABORTED;
	if (m->state == MS_COMMITTED) {
		m->pages_done = m->pages_total = st->pages;
		m->bytes_done = m->bytes_total = st->bytes;
	}
	metrics_count(&a->m, m);
	o = mig_event(m, "finished");
	json_object_set_new(o, "seconds", json_real(m->t_end - m->t_start));
	if (ret < 0)
		json_object_set_new(o, "error", json_pack("{s:i,s:s}", "errno", -ret, "message",
							  m->message));
	agent_event(a, o);
	a->n_running--;
	a->n_done++;
	m->done = 1;
	/* Nothing cancels an ended migration: its pipe goes now, not when the
	 * history forgets it (an fd pair per remembered migration adds up). */
	for (int i = 0; i < 2; i++) {
		if (m->cancel[i] >= 0)
			close(m->cancel[i]);
		m->cancel[i] = -1;
	}
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
}

static void base_opts(struct agent *a, struct mig *m, struct kvmig_migrate_opts *o)
{
	kvmig_migrate_opts_init(o);
	o->timeout_ms = m->timeout_ms;
	o->queue_depth = a->o.queue_depth;
	o->max_read_bytes = a->o.max_read_bytes;
	o->token = a->data_token;
	o->token_len = a->o.data_token_len;
	o->on_event = on_event;
	o->event_arg = m;
	o->cancel_fd = m->cancel[0];
}

static void *source_main(void *arg)
{
	struct mig *m = arg;
	struct agent *a = m->a;
	struct kvmig_migrate_stats st = { 0 };
	struct kvmig_migrate_opts o;
	int ret;

	base_opts(a, m, &o);
	o.transport = m->transport;
	o.mode = m->move ? KVMIG_MODE_MOVE : KVMIG_MODE_COPY;
	o.seq_ids = (const char *const *)m->seqs;
	o.n_seq_ids = m->n_seqs;
	o.live = m->live;
	o.paths = m->paths;
	if (m->live) {
		o.max_downtime_ms = m->max_downtime_ms;
		o.max_rounds = m->max_rounds;
	}
	kvmig_clear_error();
	ret = kvmig_migrate_send(a->p, m->peer, &o, &st);
	finish(m, ret, &st);
	return NULL;
}

static void *dest_main(void *arg)
{
	struct mig *m = arg;
	struct agent *a = m->a;
	struct kvmig_migrate_stats st = { 0 };
	struct kvmig_migrate_opts o;
	struct kvmig_conn *c;
	int ret;

	base_opts(a, m, &o);
	o.transport = a->o.transport;
	o.path_hosts = a->o.path_hosts;
	pthread_mutex_lock(&a->lock);
	c = m->conn;
	m->conn = NULL;
	pthread_mutex_unlock(&a->lock);
	kvmig_clear_error();
	ret = kvmig_migrate_accept_conn(a->l, &c, a->p, &o, &st);
	finish(m, ret, &st);
	return NULL;
}

/* Under a->lock: join the threads of migrations that ended (each has only
 * its return left), so ended ones hold no thread while they are remembered. */
static void reap(struct agent *a)
{
	for (struct mig *m = a->migs; m; m = m->next) {
		if (m->done && m->has_thread) {
			pthread_join(m->thread, NULL);
			m->has_thread = 0;
		}
	}
}

/* Under a->lock: add @m to the table and start its thread. */
static int launch(struct agent *a, struct mig *m, void *(*fn)(void *))
{
	int err;

	reap(a);
	m->t_start = kvmig_now();
	m->next = a->migs;
	a->migs = m;
	a->n_running++;
	if ((err = pthread_create(&m->thread, NULL, fn, m)) != 0) {
		a->migs = m->next;
		a->n_running--;
		return kvmig_err(-err, "cannot start a migration thread: %s", strerror(err));
	}
	m->has_thread = 1;
	trim_history(a);
	return 0;
}

int agent_start_source(struct agent *a, struct mig *m)
{
	int ret;

	if (a->stopping)
		return kvmig_err(-ESHUTDOWN, "the agent is stopping");
	if (a->n_running - a->n_handshaking >= a->o.max_migrations) {
		a->m.throttled++;
		return kvmig_err(-EAGAIN, "%u migrations are running, the most this agent runs at "
				 "once (max_migrations); retry when one has ended",
				 a->n_running - a->n_handshaking);
	}
	m->a = a;
	m->role = MR_SOURCE;
	if ((ret = launch(a, m, source_main)) < 0)
		return ret;
	agent_event(a, json_pack("{s:s,s:s,s:s,s:s,s:i}", "event", "started", "migration", m->id,
				 "role", "source", "to", m->peer, "sequences", (int)m->n_seqs));
	return 0;
}

int agent_abort(struct agent *a, struct mig *m)
{
	if (m->done)
		return -EALREADY;
	if (m->committing)
		return -EINPROGRESS;
	if (!m->abort_requested) {
		m->abort_requested = 1;
		(void)!write(m->cancel[1], "x", 1);
		agent_event(a, mig_event(m, "abort_requested"));
	}
	return 0;
}

struct mig *agent_mig_new(struct agent *a)
{
	return mig_new(a, MR_SOURCE);
}

/* ---- the acceptor ---- */

static uint32_t handshake_slots(const struct agent *a)
{
	return a->o.max_migrations > 8 ? a->o.max_migrations : 8;
}

/* Under a->lock: handshakes under way not yet being cut short. */
static uint32_t live_handshakes(const struct agent *a)
{
	uint32_t n = 0;

	for (const struct mig *m = a->migs; m; m = m->next)
		n += !m->done && m->handshaking && !m->abort_requested;
	return n;
}

/* Under a->lock: cut short the oldest incoming migration still in its
 * handshake and not being cut already (the table is newest first). */
static void evict_oldest_handshake(struct agent *a)
{
	struct mig *oldest = NULL;

	for (struct mig *m = a->migs; m; m = m->next)
		if (!m->done && m->handshaking && !m->abort_requested)
			oldest = m;
	if (oldest)
		agent_abort(a, oldest);
}

static void *acceptor_main(void *arg)
{
	struct agent *a = arg;

	for (;;) {
		struct kvmig_conn *c = NULL;
		struct mig *m;
		int ret = kvmig_listener_accept(a->l, -1, a->stop_pipe[0], &c);

		if (ret == -ECANCELED)
			return NULL;
		if (ret < 0) {
			/* EMFILE and the like: the next accept may succeed. */
			agent_log(a, "accept on %s failed: %s", kvmig_listener_addr(a->l),
				  kvmig_last_error());
			usleep(100 * 1000);
			continue;
		}
		pthread_mutex_lock(&a->lock);
		/* At most max_migrations established, and a few more still in
		 * their handshake: connections that never say hello hold only
		 * handshake slots, never a start's. With those full, the oldest
		 * handshake under way is cut short for each newcomer: a real
		 * sender's HELLO follows its connect within milliseconds, so a
		 * flood of silent connections cannot keep one out. Past four
		 * times the slots (those cut short not gone yet: a half-sent frame
		 * takes up to 250 ms to notice), newcomers are refused. */
		if (!a->stopping && live_handshakes(a) >= handshake_slots(a) &&
		    a->n_handshaking < 4 * handshake_slots(a))
			evict_oldest_handshake(a);
		if (a->stopping || a->n_handshaking >= 4 * handshake_slots(a) ||
		    a->n_running - a->n_handshaking >= a->o.max_migrations) {
			a->m.refused++;
			agent_event(a, json_pack("{s:s,s:o,s:s}", "event", "refused", "peer",
						 json_clean(kvmig_conn_peer(c)), "reason",
						 a->stopping ? "stopping" :
						 a->n_handshaking >= 4 * handshake_slots(a) ?
						 "handshakes" : "max_migrations"));
			pthread_mutex_unlock(&a->lock);
			kvmig_conn_close(&c);
			continue;
		}
		if (!(m = mig_new(a, MR_DEST))) {
			pthread_mutex_unlock(&a->lock);
			kvmig_conn_close(&c);
			continue;
		}
		snprintf(m->peer, sizeof(m->peer), "%s", kvmig_conn_peer(c));
		m->timeout_ms = a->o.timeout_ms;
		m->state = MS_CONNECTING;
		m->conn = c;
		if (launch(a, m, dest_main) < 0) {
			pthread_mutex_unlock(&a->lock);
			mig_free(m);
			continue;
		}
		m->handshaking = 1;
		a->n_handshaking++;
		agent_event(a, json_pack("{s:s,s:s,s:s,s:o}", "event", "started", "migration", m->id,
					 "role", "destination", "peer", json_clean(m->peer)));
		pthread_mutex_unlock(&a->lock);
	}
}

/* ---- digests ahead ---- */

/* A pass every hash_ahead_ms until the agent stops; ends at once if the
 * pager keeps no digests. */
static void *hasher_main(void *arg)
{
	struct agent *a = arg;
	struct timespec until;

	for (;;) {
		struct kvmig_hash_ahead_stats st;
		int ret = kvmig_hash_ahead(a->p, NULL, 0, 1, &st);

		pthread_mutex_lock(&a->lock);
		if (ret == -ENOTSUP) {
			pthread_mutex_unlock(&a->lock);
			agent_log(a, "the pager keeps no digests: no hashing ahead");
			return NULL;
		}
		if (ret == 0) {
			a->m.ahead_pages[0] += st.hashed;
			a->m.ahead_pages[1] += st.fresh;
			a->m.ahead_pages[2] += st.raced;
			a->m.ahead_bytes += st.bytes;
			a->m.ahead_seconds += st.seconds;
		}
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += a->o.hash_ahead_ms / 1000;
		until.tv_nsec += (long)(a->o.hash_ahead_ms % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		while (!a->stopping &&
		       pthread_cond_timedwait(&a->cond, &a->lock, &until) != ETIMEDOUT)
			;
		if (a->stopping) {
			pthread_mutex_unlock(&a->lock);
			return NULL;
		}
		pthread_mutex_unlock(&a->lock);
	}
}

/* ---- start / stop ---- */

void kvmig_agent_opts_init(struct kvmig_agent_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->data_addr = "127.0.0.1:7400";
	o->transport = KVMIG_TRANSPORT_TCP;
	o->max_migrations = 4;
	o->history = 256;
	o->timeout_ms = 30000;
	o->queue_depth = 32;
	o->max_read_bytes = 1u << 20;
	o->hash_ahead_ms = 1000;
}

static int check_opts(const struct kvmig_agent_opts *o)
{
	if (!o->control_socket && !o->control_addr)
		return kvmig_err(-EINVAL, "no control endpoint: give a unix socket path, a TCP "
				 "address, or both");
	if (o->control_addr && (!o->control_token || o->control_token_len < 16))
		return kvmig_err(-EINVAL, "the control API on TCP needs a bearer token of at least "
				 "16 bytes");
	if (o->control_token && o->control_token_len > 4096)
		return kvmig_err(-EINVAL, "the control token is longer than 4096 bytes");
	if (o->max_migrations < 1 || o->max_migrations > 256)
		return kvmig_err(-EINVAL, "max_migrations %u is outside 1..256", o->max_migrations);
	if (o->history < 1 || o->history > 65536)
		return kvmig_err(-EINVAL, "history %u is outside 1..65536", o->history);
	if (o->timeout_ms < 1 || o->timeout_ms > 3600u * 1000)
		return kvmig_err(-EINVAL, "timeout %u ms is outside 1 ms..1 h", o->timeout_ms);
	if (o->hash_ahead_ms > 3600u * 1000)
		return kvmig_err(-EINVAL, "hash_ahead_ms %u is more than an hour", o->hash_ahead_ms);
	if (o->path_hosts) { /* refused now, not by every migration that arrives */
		struct kvmig_migrate_opts mo;
		int err;

		kvmig_migrate_opts_init(&mo);
		mo.path_hosts = o->path_hosts;
		if ((err = kvmig_migrate_opts_check(&mo)) < 0)
			return err;
	}
	if (o->control_socket && (!o->control_socket[0] || strlen(o->control_socket) >= 108))
		return kvmig_err(-EINVAL, "control socket path \"%s\" is empty or longer than 107 "
				 "bytes", o->control_socket);
	if (o->control_addr && kvmig_addr_check(o->control_addr) < 0)
		return kvmig_err(-EINVAL, "control address: %s", kvmig_last_error());
	if (o->control_addr && strlen(o->control_addr) >= 280)
		return kvmig_err(-EINVAL, "control address is longer than 279 bytes");
	return kvmig_addr_check(o->data_addr ? o->data_addr : "");
}

static char *dup_bytes(const void *b, size_t n)
{
	char *c = n ? malloc(n) : NULL;

	if (c)
		memcpy(c, b, n);
	return c;
}

static void agent_free(struct agent *a)
{
	for (struct mig *m = a->migs, *n; m; m = n) {
		n = m->next;
		mig_free(m);
	}
	for (uint32_t i = 0; a->ev.lines && i < a->ev.cap; i++)
		free(a->ev.lines[i]);
	free(a->ev.lines);
	if (a->stop_pipe[0] >= 0)
		close(a->stop_pipe[0]);
	if (a->stop_pipe[1] >= 0)
		close(a->stop_pipe[1]);
	kvmig_listener_close(&a->l);
	if (a->data_token)
		explicit_bzero(a->data_token, a->o.data_token_len);
	if (a->control_token)
		explicit_bzero(a->control_token, a->o.control_token_len);
	free(a->data_token);
	free(a->control_token);
	free(a->socket_path);
	free(a->path_hosts);
	pthread_mutex_destroy(&a->lock);
	pthread_mutex_destroy(&a->log_lock);
	pthread_cond_destroy(&a->cond);
	free(a);
}

int kvmig_agent_start(struct kvmig_pager *p, const struct kvmig_agent_opts *opts,
		      struct kvmig_agent **ret)
{
	struct kvmig_migrate_opts lo;
	struct agent *a;
	int err;

	if (!p || !opts || !ret)
		return kvmig_err(-EINVAL, "kvmig_agent_start needs a pager, options and a result");
	if ((err = check_opts(opts)) < 0)
		return err;
	if (!(a = calloc(1, sizeof(*a))))
		return -ENOMEM;
	a->p = p;
	a->o = *opts;
	a->stop_pipe[0] = a->stop_pipe[1] = -1;
	pthread_mutex_init(&a->lock, NULL);
	pthread_mutex_init(&a->log_lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&a->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	metrics_init(&a->m);
	a->ev.cap = 4096;
	a->data_token = dup_bytes(opts->data_token, opts->data_token ? opts->data_token_len : 0);
	a->control_token = dup_bytes(opts->control_token,
				     opts->control_token ? opts->control_token_len : 0);
	a->socket_path = opts->control_socket ? strdup(opts->control_socket) : NULL;
	a->path_hosts = opts->path_hosts ? strdup(opts->path_hosts) : NULL;
	if (!(a->ev.lines = calloc(a->ev.cap, sizeof(char *))) ||
	    (opts->data_token && opts->data_token_len && !a->data_token) ||
	    (opts->control_token && opts->control_token_len && !a->control_token) ||
	    (opts->control_socket && !a->socket_path) || (opts->path_hosts && !a->path_hosts) ||
	    pipe2(a->stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		err = -ENOMEM;
		goto fail;
	}
	a->o.data_token = a->data_token;
	a->o.control_token = a->control_token;
	a->o.control_socket = a->socket_path;
	a->o.path_hosts = a->path_hosts;
	a->o.data_addr = NULL;
	a->o.control_addr = NULL;
	if (opts->control_addr)
		snprintf(a->tcp_addr, sizeof(a->tcp_addr), "%s", opts->control_addr);
	/* What dead processes left: pauses, pages, undecided records. What
	 * waits for the other side (in doubt) stays, and is reported. */
	if ((err = kvmig_pager_gc(p, &a->gc_at_start)) < 0) {
		kvmig_err_prefix(err, "cannot reclaim what dead processes left in the pager");
		goto fail;
	}
	kvmig_migrate_opts_init(&lo);
	lo.transport = opts->transport;
	if ((err = kvmig_listener_open(opts->data_addr, &lo, &a->l)) < 0) {
		kvmig_err_prefix(err, "cannot listen for migrations on %s", opts->data_addr);
		goto fail;
	}
	if ((err = api_start(a)) < 0)
		goto fail;
	if ((err = pthread_create(&a->acceptor, NULL, acceptor_main, a)) != 0) {
		err = kvmig_err(-err, "cannot start the acceptor thread: %s", strerror(err));
		api_stop(a);
		goto fail;
	}
	a->has_acceptor = 1;
	if (a->o.hash_ahead_ms && pthread_create(&a->hasher, NULL, hasher_main, a) == 0)
		a->has_hasher = 1;
	agent_log(a, "data on %s (%s), control on %s; gc at start: %u pauses, %u pages, %u "
		  "undecided records aborted, %u records in doubt", kvmig_listener_addr(a->l),
		  kvmig_listener_transport(a->l), a->control_addr, a->gc_at_start.pauses,
		  a->gc_at_start.pages, a->gc_at_start.aborted, a->gc_at_start.in_doubt);
	*ret = (struct kvmig_agent *)a;
	return 0;
fail:
	agent_free(a);
	return err;
}

const char *kvmig_agent_data_addr(const struct kvmig_agent *ka)
{
	return kvmig_listener_addr(((const struct agent *)ka)->l);
}

const char *kvmig_agent_control_addr(const struct kvmig_agent *ka)
{
	return ((const struct agent *)ka)->control_addr;
}

void kvmig_agent_stop(struct kvmig_agent **ka)
{
	struct agent *a;

	if (!ka || !*ka)
		return;
	a = (struct agent *)*ka;
	*ka = NULL;
	/* No new migration; the running ones abort (those past their decision
	 * complete); the API keeps answering meanwhile, so long polls and
	 * event streams see how each ended. */
	pthread_mutex_lock(&a->lock);
	a->stopping = 1;
	for (struct mig *m = a->migs; m; m = m->next)
		if (!m->done)
			agent_abort(a, m);
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	(void)!write(a->stop_pipe[1], "x", 1);
	if (a->has_acceptor)
		pthread_join(a->acceptor, NULL);
	if (a->has_hasher)
		pthread_join(a->hasher, NULL);
	for (struct mig *m = a->migs; m; m = m->next) {
		if (m->has_thread) {
			pthread_join(m->thread, NULL);
			m->has_thread = 0;
		}
	}
	pthread_mutex_lock(&a->lock);
	a->closing = 1;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	api_stop(a);
	agent_log(a, "stopped");
	agent_free(a);
}
