/* SPDX-License-Identifier: MIT */
/*
 * agent/api.c - the agent's control API: HTTP/1.1 + JSON over
 * libmicrohttpd, one thread per connection (a long poll or an event stream
 * blocks only its own), on a unix socket (the file's mode is the access
 * control) and / or on TCP behind a bearer token. docs/AGENT.md lists the
 * endpoints; every error is a 4xx / 5xx with one sentence in
 * {"error": {"status", "message"}}, and a refused request starts nothing.
 */
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent_internal.h"
#include "util/internal.h"

#define MAX_BODY (64u * 1024)
#define MAX_WAIT_MS 60000u
#define STREAM_KEEPALIVE_MS 5000

struct endpoint {
	struct agent *a;
	int tcp; /* needs the bearer token */
	struct MHD_Daemon *d;
};

struct api {
	struct endpoint unix_ep, tcp_ep;
	int lock_fd; /* PATH.lock, flock'ed while this agent serves PATH */
};

struct req {
	char *body;
	size_t len;
	int too_big;
};

/* ---- replies ---- */

/* Takes @text (malloc'd). @hdr / @val: one more header, or NULL. */
static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, char *text,
				  size_t len, const char *type, const char *hdr, const char *val)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result ret;

	if (!r) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (status == MHD_HTTP_TOO_MANY_REQUESTS || status == MHD_HTTP_SERVICE_UNAVAILABLE)
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
	if (status == MHD_HTTP_UNAUTHORIZED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
	if (hdr)
		MHD_add_response_header(r, hdr, val);
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* @o as one JSON line (takes @o), with one more header unless @hdr is NULL. */
static enum MHD_Result reply_hdr(struct MHD_Connection *c, unsigned status, json_t *o,
				 const char *hdr, const char *val)
{
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL, *t;
	size_t n;

	json_decref(o);
	if (!s) { /* out of memory, or a string jansson refused: still an answer */
		status = MHD_HTTP_INTERNAL_SERVER_ERROR;
		hdr = NULL;
		s = strdup("{\"error\":{\"status\":500,\"message\":\"the agent could not encode "
			   "its answer\"}}");
		if (!s)
			return MHD_NO;
	}
	n = strlen(s);
	if (!(t = realloc(s, n + 2))) {
		free(s);
		return MHD_NO;
	}
	t[n] = '\n';
	t[n + 1] = 0;
	return reply_text(c, status, t, n + 1, "application/json", hdr, val);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, json_t *o)
{
	return reply_hdr(c, status, o, NULL, NULL);
}

static enum MHD_Result fail(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static enum MHD_Result fail(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
{
	char msg[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* It may quote the request's bytes, cut anywhere: valid UTF-8 first. */
	utf8_clean(msg);
	return reply(c, status, json_pack("{s:{s:i,s:s}}", "error", "status", (int)status,
					  "message", msg));
}

/* A library errno as an HTTP status. */
static unsigned status_of(int err)
{
	switch (-err) {
	case ENOENT:
		return MHD_HTTP_NOT_FOUND;
	case EBUSY:
	case EEXIST:
	case EALREADY:
		return MHD_HTTP_CONFLICT;
	case EINVAL:
		return MHD_HTTP_BAD_REQUEST;
	case EAGAIN:
		return MHD_HTTP_TOO_MANY_REQUESTS;
	case ESHUTDOWN:
		return MHD_HTTP_SERVICE_UNAVAILABLE;
	default:
		return MHD_HTTP_INTERNAL_SERVER_ERROR;
	}
}

/* ---- reading requests ---- */

static const char *arg(struct MHD_Connection *c, const char *name)
{
	return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
}

/* A query argument that must be an integer in [lo, hi] when present. */
static int arg_uint(struct MHD_Connection *c, const char *name, uint64_t lo, uint64_t hi,
		    uint64_t *out, char *why, size_t whylen)
{
	const char *v = arg(c, name);
	char *end;
	unsigned long long x;

	if (!v)
		return 0;
	errno = 0;
	x = strtoull(v, &end, 10);
	if (!*v || *end || errno || x < lo || x > hi || *v == '-') {
		snprintf(why, whylen, "query argument %s=\"%.40s\" is not an integer in %llu..%llu",
			 name, v, (unsigned long long)lo, (unsigned long long)hi);
		return -1;
	}
	*out = x;
	return 1;
}

/* Parse the body as one JSON object. NULL (and *why) if it is not one. */
static json_t *body_object(const struct req *r, char *why, size_t whylen)
{
	json_error_t e;
	json_t *o;

	if (!r->len) {
		snprintf(why, whylen, "the request has no body; it needs a JSON object");
		return NULL;
	}
	o = json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES, &e);
	if (!o) {
		snprintf(why, whylen, "the body is not valid JSON: %s (line %d, column %d)", e.text,
			 e.line, e.column);
		return NULL;
	}
	if (!json_is_object(o)) {
		snprintf(why, whylen, "the body must be a JSON object");
		json_decref(o);
		return NULL;
	}
	return o;
}

/* The first key of @o not in @known (NULL-terminated), or NULL. */
static const char *unknown_key(json_t *o, const char *const *known)
{
	const char *k;
	json_t *v;

	json_object_foreach(o, k, v) {
		int found = 0;

		for (const char *const *q = known; *q; q++)
			found |= !strcmp(*q, k);
		if (!found)
			return k;
	}
	return NULL;
}

/* An integer field in [lo, hi], when present. Return: 0 ok, -1 wrong. */
static int field_uint(json_t *o, const char *name, uint64_t lo, uint64_t hi, uint32_t *out,
		      char *why, size_t whylen)
{
	json_t *v = json_object_get(o, name);

	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)lo ||
	    json_integer_value(v) > (json_int_t)hi) {
		snprintf(why, whylen, "field \"%s\" must be an integer in %llu..%llu", name,
			 (unsigned long long)lo, (unsigned long long)hi);
		return -1;
	}
	*out = (uint32_t)json_integer_value(v);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * The body of POST /v1/migrations into @m. Return: 0, or an HTTP status
 * with *why.
 */
static unsigned parse_start(struct agent *a, json_t *o, struct mig *m, char *why, size_t n)
{
	static const char *const known[] = { "seqs", "to", "mode", "live", "transport",
					     "timeout_ms", "paths", "idempotency_key", NULL };
	static const char *const live_known[] = { "max_downtime_ms", "max_rounds", NULL };
	json_t *seqs = json_object_get(o, "seqs"), *to = json_object_get(o, "to"), *v;
	const char *k;
	size_t i;

	if ((k = unknown_key(o, known))) {
		snprintf(why, n, "unknown field \"%.64s\" (the fields are seqs, to, mode, live, "
			 "transport, timeout_ms, paths, idempotency_key)", k);
		return MHD_HTTP_BAD_REQUEST;
	}
	if (!to || !json_is_string(to)) {
		snprintf(why, n, "field \"to\" (the destination agent's data address, HOST:PORT) "
			 "is required and must be a string");
		return MHD_HTTP_BAD_REQUEST;
	}
	if (json_string_length(to) >= sizeof(m->peer) ||
	    kvmig_addr_check(json_string_value(to)) < 0) {
		snprintf(why, n, "field \"to\": %s", json_string_length(to) >= sizeof(m->peer) ?
			 "the address is too long" : kvmig_last_error());
		return MHD_HTTP_BAD_REQUEST;
	}
	snprintf(m->peer, sizeof(m->peer), "%s", json_string_value(to));
	if (!seqs || !json_is_array(seqs) || !json_array_size(seqs) ||
	    json_array_size(seqs) > AGENT_MAX_SEQS) {
		snprintf(why, n, "field \"seqs\" is required: an array of 1 to %u sequence ids",
			 AGENT_MAX_SEQS);
		return MHD_HTTP_BAD_REQUEST;
	}
	if (!(m->seqs = calloc(json_array_size(seqs), sizeof(char *)))) {
		snprintf(why, n, "out of memory");
		return MHD_HTTP_INTERNAL_SERVER_ERROR;
	}
	json_array_foreach(seqs, i, v) {
		const char *s = json_string_value(v);

		if (!s || !json_string_length(v) || json_string_length(v) > 255 ||
		    strlen(s) != json_string_length(v)) {
			snprintf(why, n, "field \"seqs\": element %zu must be a sequence id, a string "
				 "of 1 to 255 bytes without NUL", i);
			return MHD_HTTP_BAD_REQUEST;
		}
		if (!(m->seqs[m->n_seqs] = strdup(s))) {
			snprintf(why, n, "out of memory");
			return MHD_HTTP_INTERNAL_SERVER_ERROR;
		}
		m->n_seqs++;
	}
	/* Sorted (the order does not matter to a migration): duplicates are
	 * neighbours, and a start is checked against the running ones by bsearch. */
	qsort(m->seqs, m->n_seqs, sizeof(char *), cmp_str);
	for (i = 1; i < m->n_seqs; i++) {
		if (!strcmp(m->seqs[i - 1], m->seqs[i])) {
			snprintf(why, n, "field \"seqs\" names sequence \"%.64s\" twice", m->seqs[i]);
			return MHD_HTTP_BAD_REQUEST;
		}
	}
	m->move = 1;
	if ((v = json_object_get(o, "mode"))) {
		const char *s = json_string_value(v);

		if (!s || (strcmp(s, "move") && strcmp(s, "copy"))) {
			snprintf(why, n, "field \"mode\" must be \"move\" or \"copy\"");
			return MHD_HTTP_BAD_REQUEST;
		}
		m->move = !strcmp(s, "move");
	}
	m->max_downtime_ms = 20;
	m->max_rounds = 8;
	if ((v = json_object_get(o, "live"))) {
		if (json_is_boolean(v)) {
			m->live = json_is_true(v);
		} else if (json_is_object(v)) {
			if ((k = unknown_key(v, live_known))) {
				snprintf(why, n, "unknown field \"live.%.64s\" (live has "
					 "max_downtime_ms and max_rounds)", k);
				return MHD_HTTP_BAD_REQUEST;
			}
			m->live = 1;
			if (field_uint(v, "max_downtime_ms", 1, 60000, &m->max_downtime_ms, why, n) ||
			    field_uint(v, "max_rounds", 1, KVMIG_MAX_ROUNDS, &m->max_rounds, why, n))
				return MHD_HTTP_BAD_REQUEST;
		} else {
			snprintf(why, n, "field \"live\" must be true, false or an object "
				 "{max_downtime_ms, max_rounds}");
			return MHD_HTTP_BAD_REQUEST;
		}
	}
	m->transport = KVMIG_TRANSPORT_TCP;
	if ((v = json_object_get(o, "transport"))) {
		if (!json_is_string(v) ||
		    kvmig_transport_parse(json_string_value(v), &m->transport) < 0) {
			snprintf(why, n, "field \"transport\" must be \"tcp\", \"rdma\" or \"auto\"");
			return MHD_HTTP_BAD_REQUEST;
		}
	}
	m->timeout_ms = a->o.timeout_ms;
	if (field_uint(o, "timeout_ms", 1, 3600000, &m->timeout_ms, why, n) ||
	    field_uint(o, "paths", 1, KVMIG_MAX_PATHS, &m->paths, why, n))
		return MHD_HTTP_BAD_REQUEST;
	if ((v = json_object_get(o, "idempotency_key"))) {
		const char *s = json_string_value(v);

		if (!s || !json_string_length(v) || json_string_length(v) > AGENT_MAX_KEY ||
		    strlen(s) != json_string_length(v)) {
			snprintf(why, n, "field \"idempotency_key\" must be a string of 1 to %u bytes",
				 AGENT_MAX_KEY);
			return MHD_HTTP_BAD_REQUEST;
		}
		snprintf(m->idem, sizeof(m->idem), "%s", s);
	}
	return 0;
}

/*
 * Are the sequences installed and runnable here? A quick answer before
 * anything starts (the migration itself checks again, atomically).
 */
static unsigned check_seqs(struct agent *a, const struct mig *m, char *why, size_t n)
{
	struct kvmig_seq_list l = { 0 };
	int ret = kvmig_pager_seqs(a->p, &l);
	unsigned status = 0;

	if (ret < 0) {
		snprintf(why, n, "cannot read the pager's sequences: %s", kvmig_last_error());
		return MHD_HTTP_INTERNAL_SERVER_ERROR;
	}
	for (uint32_t i = 0; i < m->n_seqs && !status; i++) {
		const struct kvmig_seq *q = NULL;

		for (uint32_t j = 0; j < l.n && !q; j++)
			if (!strcmp(l.seqs[j].id, m->seqs[i]))
				q = &l.seqs[j];
		if (!q) {
			snprintf(why, n, "sequence \"%.64s\" is not installed in this agent's pager",
				 m->seqs[i]);
			status = MHD_HTTP_CONFLICT;
		} else if (q->state != KVMIG_SEQ_ACTIVE) {
			char hex[33];

			kvmig_id_format(&q->migration, hex);
			snprintf(why, n, "sequence \"%.64s\" is %s, held by migration %s: it cannot "
				 "move until that is resolved", m->seqs[i],
				 kvmig_seq_state_name(q->state), hex);
			status = MHD_HTTP_CONFLICT;
		}
	}
	kvmig_seq_list_free(&l);
	return status;
}

/* ---- endpoints ---- */

static enum MHD_Result post_migration(struct agent *a, struct MHD_Connection *c, struct req *r)
{
	char why[600];
	json_t *o = body_object(r, why, sizeof(why)), *out;
	struct mig *m, *prev;
	unsigned status;
	int ret;

	if (!o)
		return fail(c, MHD_HTTP_BAD_REQUEST, "%s", why);
	if (!(m = agent_mig_new(a))) {
		int e = errno;

		json_decref(o);
		return fail(c, e == EMFILE || e == ENFILE ? MHD_HTTP_SERVICE_UNAVAILABLE :
			    MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot set up a migration: %s",
			    strerror(e));
	}
	status = parse_start(a, o, m, why, sizeof(why));
	json_decref(o);
	if (!status && m->idem[0]) {
		pthread_mutex_lock(&a->lock);
		prev = agent_find_key(a, m->idem);
		out = prev ? mig_json(prev) : NULL;
		pthread_mutex_unlock(&a->lock);
		if (prev) {
			mig_free(m);
			return reply(c, MHD_HTTP_OK, out);
		}
	}
	if (!status)
		status = check_seqs(a, m, why, sizeof(why));
	if (status) {
		mig_free(m);
		return fail(c, status, "%s", why);
	}
	pthread_mutex_lock(&a->lock);
	if (m->idem[0] && (prev = agent_find_key(a, m->idem))) {
		out = mig_json(prev);
		pthread_mutex_unlock(&a->lock);
		mig_free(m);
		return reply(c, MHD_HTTP_OK, out);
	}
	for (struct mig *g = a->migs; g; g = g->next) {
		for (uint32_t i = 0; !g->done && g->role == MR_SOURCE && i < g->n_seqs; i++) {
			if (!bsearch(&g->seqs[i], m->seqs, m->n_seqs, sizeof(char *), cmp_str))
				continue;
			snprintf(why, sizeof(why), "sequence \"%.64s\" is being migrated by "
				 "migration %s", g->seqs[i], g->id);
			pthread_mutex_unlock(&a->lock);
			mig_free(m);
			return fail(c, MHD_HTTP_CONFLICT, "%s", why);
		}
	}
	if ((ret = agent_start_source(a, m)) < 0) {
		pthread_mutex_unlock(&a->lock);
		snprintf(why, sizeof(why), "%s", kvmig_last_error());
		mig_free(m);
		return fail(c, status_of(ret), "%s", why);
	}
	out = json_pack("{s:s,s:s}", "id", m->id, "state", mig_state_name(m->state));
	pthread_mutex_unlock(&a->lock);
	return reply(c, MHD_HTTP_ACCEPTED, out);
}

static int valid_id(const char *id)
{
	return strlen(id) == AGENT_ID_LEN && strspn(id, "0123456789abcdef") == AGENT_ID_LEN;
}

static enum MHD_Result get_migration(struct agent *a, struct MHD_Connection *c, const char *id)
{
	char why[200];
	uint64_t wait_ms = 0;
	struct timespec until;
	struct mig *m;
	json_t *out;

	if (arg_uint(c, "wait_ms", 0, MAX_WAIT_MS, &wait_ms, why, sizeof(why)) < 0)
		return fail(c, MHD_HTTP_BAD_REQUEST, "%s", why);
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += (time_t)(wait_ms / 1000);
	until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&a->lock);
	/* Long poll: until it ends, the agent stops, or wait_ms passed. */
	while ((m = agent_find(a, id)) && !m->done && wait_ms && !a->closing &&
	       pthread_cond_timedwait(&a->cond, &a->lock, &until) != ETIMEDOUT)
		;
	m = agent_find(a, id);
	out = m ? mig_json(m) : NULL;
	pthread_mutex_unlock(&a->lock);
	if (!m)
		return fail(c, MHD_HTTP_NOT_FOUND, "no migration %s here (unknown, or forgotten: "
			    "the agent remembers its last %u)", id, a->o.history);
	return reply(c, MHD_HTTP_OK, out);
}

static enum MHD_Result list_migrations(struct agent *a, struct MHD_Connection *c)
{
	json_t *arr = json_array();

	pthread_mutex_lock(&a->lock);
	for (struct mig *m = a->migs; m; m = m->next)
		json_array_append_new(arr, mig_json(m));
	pthread_mutex_unlock(&a->lock);
	return reply(c, MHD_HTTP_OK, json_pack("{s:o}", "migrations", arr));
}

static enum MHD_Result delete_migration(struct agent *a, struct MHD_Connection *c, const char *id)
{
	struct mig *m;
	json_t *out = NULL;
	char state[16] = "";
	int ret = -ENOENT;

	pthread_mutex_lock(&a->lock);
	if ((m = agent_find(a, id))) {
		ret = agent_abort(a, m);
		snprintf(state, sizeof(state), "%s", mig_state_name(m->state));
		out = mig_json(m);
	}
	pthread_mutex_unlock(&a->lock);
	if (ret == -ENOENT)
		return fail(c, MHD_HTTP_NOT_FOUND, "no migration %s here", id);
	if (ret == -EALREADY) {
		json_decref(out);
		return fail(c, MHD_HTTP_CONFLICT, "migration %s has ended (%s): there is nothing "
			    "to abort", id, state);
	}
	if (ret == -EINPROGRESS) {
		json_decref(out);
		return fail(c, MHD_HTTP_CONFLICT, "migration %s is committing (past its decision): "
			    "it completes and can no longer be aborted", id);
	}
	return reply(c, MHD_HTTP_ACCEPTED, out);
}

static json_t *records_json(struct agent *a, uint32_t *in_doubt, uint32_t *seqs_in_doubt, int *err)
{
	struct kvmig_record *recs = NULL;
	uint32_t n = 0;
	json_t *arr;
	int ret;

	*in_doubt = *seqs_in_doubt = 0;
	if ((ret = kvmig_pager_records(a->p, &recs, &n)) < 0) {
		*err = ret;
		return NULL;
	}
	arr = json_array();
	for (uint32_t i = 0; i < n; i++) {
		const struct kvmig_record *r = &recs[i];
		char id[33], peer[33];
		int doubt = r->owner_pid == 0;
		json_t *o;

		kvmig_id_format(&r->id, id);
		kvmig_id_format(&r->peer_pager, peer);
		o = json_pack("{s:s,s:s,s:s,s:s,s:o,s:i,s:b,s:b,s:I,s:i}", "migration", id, "role",
			      r->role == KVMIG_ROLE_SOURCE ? "source" : "destination", "state",
			      kvmig_record_state_name(r->state), "peer_pager", peer, "peer_addr",
			      json_clean(r->peer_addr), "owner_pid", (int)r->owner_pid, "driven_here",
			      r->owner_pid == (int32_t)getpid(), "in_doubt", doubt, "created",
			      (json_int_t)r->created, "sequences", (int)r->n_seqs);
		if (r->role == KVMIG_ROLE_SOURCE)
			json_object_set_new(o, "mode", json_string(r->move ? "move" : "copy"));
		json_array_append_new(arr, o);
		if (doubt) {
			(*in_doubt)++;
			*seqs_in_doubt += r->n_seqs;
		}
	}
	free(recs);
	return arr;
}

static enum MHD_Result get_records(struct agent *a, struct MHD_Connection *c)
{
	struct kvmig_gc_stats gs = { 0 };
	uint32_t doubt, seqs;
	int err = 0;
	json_t *arr;

	/* Records of processes that died since: the undecided ones abort (the
	 * protocol's rule), the others are reported in doubt. */
	if ((err = kvmig_pager_gc(a->p, &gs)) < 0)
		return fail(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "gc: %s", kvmig_last_error());
	if (!(arr = records_json(a, &doubt, &seqs, &err)))
		return fail(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot read the records: %s",
			    kvmig_last_error());
	return reply(c, MHD_HTTP_OK, json_pack("{s:o,s:i,s:i}", "records", arr, "in_doubt",
					       (int)doubt, "sequences_in_doubt", (int)seqs));
}

static enum MHD_Result resolve_record(struct agent *a, struct MHD_Connection *c, const char *id,
				      struct req *r)
{
	static const char *const known[] = { "peer_state", NULL };
	char why[600];
	json_t *o = body_object(r, why, sizeof(why)), *v;
	struct kvmig_resolve_stats st = { 0 };
	enum kvmig_record_state peer;
	struct kvmig_id mid;
	const char *k;
	int ret;

	if (!o)
		return fail(c, MHD_HTTP_BAD_REQUEST, "%s", why);
	if ((k = unknown_key(o, known))) {
		snprintf(why, sizeof(why), "unknown field \"%.64s\" (resolve takes peer_state)", k);
		json_decref(o);
		return fail(c, MHD_HTTP_BAD_REQUEST, "%s", why);
	}
	v = json_object_get(o, "peer_state");
	if (!json_is_string(v) || kvmig_record_state_parse(json_string_value(v), &peer) < 0) {
		json_decref(o);
		return fail(c, MHD_HTTP_BAD_REQUEST, "field \"peer_state\" is required: the state "
			    "of this migration's record on the other side (none, sending, departed, "
			    "committed, receiving, prepared, activated, ...)");
	}
	json_decref(o);
	if (kvmig_id_parse(id, &mid) < 0)
		return fail(c, MHD_HTTP_NOT_FOUND, "no record %.40s here", id);
	ret = kvmig_migrate_resolve_record(a->p, &mid, peer, &st);
	if (ret < 0)
		return fail(c, status_of(ret), "%s", kvmig_last_error());
	return reply(c, MHD_HTTP_OK,
		     json_pack("{s:s,s:i,s:i,s:i,s:i,s:i}", "migration", id, "activated",
			       (int)st.activated, "finished", (int)st.finished, "aborted",
			       (int)st.aborted, "in_doubt", (int)st.in_doubt, "in_progress",
			       (int)st.in_progress));
}

static enum MHD_Result get_pager(struct agent *a, struct MHD_Connection *c)
{
	struct kvmig_cache_meta meta;
	enum kvmig_layout layout;
	struct kvmig_page_format fmt;
	struct kvmig_seq_list l = { 0 };
	uint32_t *ixs = NULL, n = 0, cap = 0, doubt, sdoubt;
	uint64_t half = 0;
	json_t *seqs, *out, *recs;
	int ret, err = 0;

	if ((ret = kvmig_pager_meta(a->p, &meta, &layout)) < 0 ||
	    (ret = kvmig_pager_format(a->p, &fmt)) < 0 ||
	    (ret = kvmig_meta_half_bytes(&meta, &half)) < 0 ||
	    (ret = kvmig_pager_occupied(a->p, &ixs, &n)) < 0 || (ret = kvmig_pager_seqs(a->p, &l)) < 0)
		goto err;
	if (!(recs = records_json(a, &doubt, &sdoubt, &err))) {
		ret = err;
		goto err;
	}
	json_decref(recs);
	seqs = json_array();
	for (uint32_t i = 0; i < l.n; i++) {
		json_t *o = json_pack("{s:o,s:i,s:i,s:s}", "id", json_clean(l.seqs[i].id), "pages",
				      (int)l.seqs[i].n_pages, "fill_in_last_page",
				      (int)l.seqs[i].fill_in_last_page, "state",
				      kvmig_seq_state_name(l.seqs[i].state));

		if (l.seqs[i].state != KVMIG_SEQ_ACTIVE) {
			char hex[33];

			kvmig_id_format(&l.seqs[i].migration, hex);
			json_object_set_new(o, "migration", json_string(hex));
		}
		json_array_append_new(seqs, o);
	}
	out = json_pack("{s:s,s:{s:i,s:i,s:i,s:i,s:s},s:s,s:s,s:s,s:I,s:i,s:o,s:i,s:i}", "name",
			kvmig_pager_name(a->p), "meta", "page_size_tokens",
			(int)meta.page_size_tokens, "n_layers", (int)meta.n_layers, "n_heads",
			(int)meta.n_heads, "head_dim", (int)meta.head_dim, "dtype",
			kvmig_dtype_name(meta.dtype), "layout", fmt.layout, "order",
			kvmig_order_name(fmt.order), "compat", fmt.compat, "page_bytes",
			(json_int_t)(2 * half), "used_pages", (int)n, "sequences", seqs,
			"records_in_doubt", (int)doubt, "sequences_in_doubt", (int)sdoubt);
	if (kvmig_pager_capacity(a->p, &cap) == 0) {
		json_object_set_new(out, "capacity_pages", json_integer(cap));
		json_object_set_new(out, "free_pages", json_integer(cap >= n ? cap - n : 0));
	}
	free(ixs);
	kvmig_seq_list_free(&l);
	return reply(c, MHD_HTTP_OK, out);
err:
	free(ixs);
	kvmig_seq_list_free(&l);
	return fail(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot read the pager: %s",
		    kvmig_last_error());
}

static enum MHD_Result get_health(struct agent *a, struct MHD_Connection *c)
{
	json_t *o;

	pthread_mutex_lock(&a->lock);
	o = json_pack("{s:s,s:s,s:s,s:s,s:i,s:i}", "status", a->stopping ? "stopping" : "ok",
		      "pager", kvmig_pager_name(a->p), "data_addr", kvmig_listener_addr(a->l),
		      "transport", kvmig_listener_transport(a->l), "running", (int)a->n_running,
		      "max_migrations", (int)a->o.max_migrations);
	/* What the agent reclaimed at start (dead processes' leftovers). */
	json_object_set_new(o, "gc_at_start",
			    json_pack("{s:i,s:i,s:i,s:i,s:i}", "pauses", (int)a->gc_at_start.pauses,
				      "pages", (int)a->gc_at_start.pages, "aborted",
				      (int)a->gc_at_start.aborted, "completed",
				      (int)a->gc_at_start.completed, "in_doubt",
				      (int)a->gc_at_start.in_doubt));
	pthread_mutex_unlock(&a->lock);
	return reply(c, MHD_HTTP_OK, o);
}

static enum MHD_Result get_metrics(struct agent *a, struct MHD_Connection *c)
{
	size_t len = 0;
	char *text = metrics_render(a, &len);

	if (!text)
		return fail(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot render the metrics: %s",
			    kvmig_last_error());
	return reply_text(c, MHD_HTTP_OK, text, len, "text/plain; version=0.0.4; charset=utf-8",
			  NULL, NULL);
}

/* ---- the event stream ---- */

struct stream {
	struct agent *a;
	uint64_t next;
	int follow;
};

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct stream *s = cls;
	struct agent *a = s->a;
	struct events *e = &a->ev;
	struct timespec until;
	size_t n = 0;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += STREAM_KEEPALIVE_MS / 1000;
	pthread_mutex_lock(&a->lock);
	while (s->follow && !a->closing && s->next == e->next &&
	       pthread_cond_timedwait(&a->cond, &a->lock, &until) != ETIMEDOUT)
		;
	if (s->next == e->next && (a->closing || !s->follow)) {
		pthread_mutex_unlock(&a->lock);
		return MHD_CONTENT_READER_END_OF_STREAM;
	}
	if (s->next == e->next) { /* a keep-alive: streams skip blank lines */
		pthread_mutex_unlock(&a->lock);
		buf[0] = '\n';
		return 1;
	}
	if (e->next - s->next > e->cap) {
		n = (size_t)snprintf(buf, max, "{\"event\":\"lost\",\"count\":%llu}\n",
				     (unsigned long long)(e->next - e->cap - s->next));
		s->next = e->next - e->cap;
	}
	while (s->next < e->next) {
		const char *line = e->lines[s->next % e->cap];
		size_t len = strlen(line);

		if (n + len + 1 > max)
			break;
		memcpy(buf + n, line, len);
		buf[n + len] = '\n';
		n += len + 1;
		s->next++;
	}
	pthread_mutex_unlock(&a->lock);
	return (ssize_t)n;
}

static void stream_free(void *cls)
{
	struct stream *s = cls;
	struct agent *a = s->a;

	pthread_mutex_lock(&a->lock);
	a->n_streams--;
	pthread_mutex_unlock(&a->lock);
	free(s);
}

static enum MHD_Result get_events(struct agent *a, struct MHD_Connection *c)
{
	struct MHD_Response *r;
	struct stream *s;
	uint64_t since = UINT64_MAX, follow = 1;
	char why[200];
	enum MHD_Result ret;

	if (arg_uint(c, "since", 0, INT64_MAX, &since, why, sizeof(why)) < 0 ||
	    arg_uint(c, "follow", 0, 1, &follow, why, sizeof(why)) < 0)
		return fail(c, MHD_HTTP_BAD_REQUEST, "%s", why);
	if (!(s = calloc(1, sizeof(*s))))
		return MHD_NO;
	s->a = a;
	s->follow = (int)follow;
	pthread_mutex_lock(&a->lock);
	if (a->n_streams >= AGENT_MAX_STREAMS) {
		pthread_mutex_unlock(&a->lock);
		free(s);
		return fail(c, MHD_HTTP_SERVICE_UNAVAILABLE, "%u event streams are open, the most "
			    "the agent serves at once; close one or poll with follow=0",
			    AGENT_MAX_STREAMS);
	}
	a->n_streams++;
	/* Default: from now on; since=N: from event N (what the ring still has). */
	s->next = since == UINT64_MAX ? a->ev.next :
		  since > a->ev.next ? a->ev.next : since;
	pthread_mutex_unlock(&a->lock);
	r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, stream_read, s,
					      stream_free);
	if (!r) {
		stream_free(s);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-ndjson");
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	ret = MHD_queue_response(c, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

/* ---- routing ---- */

static enum MHD_Result not_allowed(struct MHD_Connection *c, const char *method, const char *url,
				   const char *allow)
{
	char msg[300];

	snprintf(msg, sizeof(msg), "%.16s is not allowed on %.100s (allowed: %s)", method, url,
		 allow);
	utf8_clean(msg);
	return reply_hdr(c, MHD_HTTP_METHOD_NOT_ALLOWED,
			 json_pack("{s:{s:i,s:s}}", "error", "status", MHD_HTTP_METHOD_NOT_ALLOWED,
				   "message", msg), MHD_HTTP_HEADER_ALLOW, allow);
}

static enum MHD_Result route(struct agent *a, struct MHD_Connection *c, const char *url,
			     const char *method, struct req *r)
{
	static const char mig_prefix[] = "/v1/migrations/", rec_prefix[] = "/v1/records/";
	int get = !strcmp(method, "GET"), post = !strcmp(method, "POST"),
	    del = !strcmp(method, "DELETE");

	if (!strcmp(url, "/healthz"))
		return get ? get_health(a, c) : not_allowed(c, method, url, "GET");
	if (!strcmp(url, "/metrics"))
		return get ? get_metrics(a, c) : not_allowed(c, method, url, "GET");
	if (!strcmp(url, "/v1/pager"))
		return get ? get_pager(a, c) : not_allowed(c, method, url, "GET");
	if (!strcmp(url, "/v1/events"))
		return get ? get_events(a, c) : not_allowed(c, method, url, "GET");
	if (!strcmp(url, "/v1/records"))
		return get ? get_records(a, c) : not_allowed(c, method, url, "GET");
	if (!strcmp(url, "/v1/migrations")) {
		if (post)
			return post_migration(a, c, r);
		return get ? list_migrations(a, c) : not_allowed(c, method, url, "GET, POST");
	}
	if (!strncmp(url, mig_prefix, sizeof(mig_prefix) - 1)) {
		const char *id = url + sizeof(mig_prefix) - 1;

		if (!valid_id(id))
			return fail(c, MHD_HTTP_NOT_FOUND, "no migration \"%.40s\" here (an id is 32 "
				    "lowercase hex digits)", id);
		if (get)
			return get_migration(a, c, id);
		return del ? delete_migration(a, c, id) :
			     not_allowed(c, method, url, "GET, DELETE");
	}
	if (!strncmp(url, rec_prefix, sizeof(rec_prefix) - 1)) {
		const char *id = url + sizeof(rec_prefix) - 1;
		size_t idlen = strcspn(id, "/");

		if (idlen == AGENT_ID_LEN && !strcmp(id + idlen, "/resolve")) {
			char hex[AGENT_ID_LEN + 1];

			memcpy(hex, id, AGENT_ID_LEN);
			hex[AGENT_ID_LEN] = 0;
			return post ? resolve_record(a, c, hex, r) :
				      not_allowed(c, method, url, "POST");
		}
	}
	return fail(c, MHD_HTTP_NOT_FOUND, "no such endpoint: %.16s %.200s (docs/AGENT.md lists "
		    "them)", method, url);
}

static int authorized(struct agent *a, struct MHD_Connection *c)
{
	const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
						    MHD_HTTP_HEADER_AUTHORIZATION);
	unsigned char want[32], got[32];
	size_t n;

	if (!h || strncasecmp(h, "Bearer ", 7)) /* the scheme is case-insensitive */
		return 0;
	h += 7;
	n = strlen(h);
	/* Equal-length digests compared in constant time: the token's length
	 * and bytes do not leak through timing. */
	crypto_generichash(got, sizeof(got), (const unsigned char *)h, n, NULL, 0);
	crypto_generichash(want, sizeof(want), (const unsigned char *)a->control_token,
			   a->o.control_token_len, NULL, 0);
	return sodium_memcmp(want, got, sizeof(want)) == 0;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
			      const char *method, const char *version, const char *upload,
			      size_t *upload_size, void **con_cls)
{
	struct endpoint *ep = cls;
	struct req *r = *con_cls;

	if (!r) {
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
							     MHD_HTTP_HEADER_CONTENT_LENGTH);

		if (!(r = calloc(1, sizeof(*r))))
			return MHD_NO;
		*con_cls = r;
		pthread_mutex_lock(&ep->a->lock);
		ep->a->n_requests++;
		pthread_mutex_unlock(&ep->a->lock);
		if (ep->tcp && !authorized(ep->a, c))
			return fail(c, MHD_HTTP_UNAUTHORIZED, "this endpoint needs the header "
				    "\"Authorization: Bearer TOKEN\" with the agent's control token");
		if (cl && strtoull(cl, NULL, 10) > MAX_BODY)
			return fail(c, MHD_HTTP_CONTENT_TOO_LARGE, "the body is %.20s bytes; the "
				    "most the API takes is %u", cl, MAX_BODY);
		return MHD_YES;
	}
	if (*upload_size) {
		if (!r->too_big && r->len + *upload_size > MAX_BODY) {
			r->too_big = 1;
			free(r->body);
			r->body = NULL;
			r->len = 0;
		}
		if (!r->too_big) {
			char *b = realloc(r->body, r->len + *upload_size + 1);

			if (!b)
				return MHD_NO;
			memcpy(b + r->len, upload, *upload_size);
			r->len += *upload_size;
			b[r->len] = 0;
			r->body = b;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (r->too_big)
		return fail(c, MHD_HTTP_CONTENT_TOO_LARGE, "the body is larger than %u bytes, the "
			    "most the API takes", MAX_BODY);
	return route(ep->a, c, url, method, r);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
		      enum MHD_RequestTerminationCode toe)
{
	struct endpoint *ep = cls;
	struct req *r = *con_cls;

	if (r) {
		free(r->body);
		free(r);
		*con_cls = NULL;
		pthread_mutex_lock(&ep->a->lock);
		ep->a->n_requests--;
		pthread_cond_broadcast(&ep->a->cond);
		pthread_mutex_unlock(&ep->a->lock);
	}
}

/* ---- sockets ---- */

/*
 * A unix socket at @path, mode 0600 from the start: bound under a temporary
 * name, chmod'ed, then renamed over @path. Who serves @path holds an flock
 * on PATH.lock (*lock_fd) for as long as it runs: a second agent on the same
 * path is refused (-EADDRINUSE) whatever the timing; a socket file left by
 * a dead one is replaced. The lock file stays (removing it would race).
 */
static int unix_listen(const char *path, int *lock_fd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char tmp[sizeof(sa.sun_path)], lock[sizeof(sa.sun_path) + 8];
	struct stat st;
	int fd, err;

	if (snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid()) >= (int)sizeof(tmp))
		return kvmig_err(-ENAMETOOLONG, "control socket path %s is too long", path);
	snprintf(lock, sizeof(lock), "%s.lock", path);
	if ((*lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0)
		return kvmig_err(-errno, "cannot open %s: %s", lock, strerror(errno));
	if (flock(*lock_fd, LOCK_EX | LOCK_NB) < 0) {
		err = errno == EWOULDBLOCK ? kvmig_err(-EADDRINUSE, "an agent already answers on %s "
						       "(it holds %s)", path, lock) :
			kvmig_err(-errno, "cannot lock %s: %s", lock, strerror(errno));
		close(*lock_fd);
		*lock_fd = -1;
		return err;
	}
	if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		err = kvmig_err(-EEXIST, "%s exists and is not a socket", path);
		goto fail_lock;
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
		err = kvmig_err(-errno, "socket: %s", strerror(errno));
		goto fail_lock;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", tmp);
	unlink(tmp);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(tmp, 0600) < 0 ||
	    rename(tmp, path) < 0 || listen(fd, 64) < 0) {
		err = kvmig_err(-errno, "cannot listen on %s: %s", path, strerror(errno));
		unlink(tmp);
		close(fd);
		goto fail_lock;
	}
	return fd;
fail_lock:
	close(*lock_fd);
	*lock_fd = -1;
	return err;
}

/* A TCP listening socket on "host:port"; its bound address into @out. */
static int tcp_listen(const char *addr, char *out, size_t outlen)
{
	char host[80], port[8], h[64], p[8];
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE |
				  AI_NUMERICSERV }, *res = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	const char *colon = strrchr(addr, ':');
	size_t hl = (size_t)(colon - addr);
	int fd, one = 1, err;

	/* kvmig_addr_check() passed: HOST:PORT or [V6]:PORT. */
	if (addr[0] == '[') {
		hl -= 2;
		memcpy(host, addr + 1, hl);
	} else {
		memcpy(host, addr, hl);
	}
	host[hl] = 0;
	snprintf(port, sizeof(port), "%s", colon + 1);
	if ((err = getaddrinfo(host, port, &hints, &res)) != 0)
		return kvmig_err(-EINVAL, "control address %s: %s", addr, gai_strerror(err));
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		err = kvmig_err(-errno, "cannot listen on %s: %s", addr, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return err;
	}
	freeaddrinfo(res);
	getnameinfo((struct sockaddr *)&ss, sl, h, sizeof(h), p, sizeof(p),
		    NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(out, outlen, strchr(h, ':') ? "http://[%s]:%s" : "http://%s:%s", h, p);
	return fd;
}

static int serve(struct endpoint *ep, int fd)
{
	ep->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
				 MHD_USE_POLL, 0, NULL, NULL, handle, ep,
				 MHD_OPTION_LISTEN_SOCKET, fd,
				 MHD_OPTION_NOTIFY_COMPLETED, completed, ep,
				 MHD_OPTION_CONNECTION_LIMIT, 64u,
				 /* TCP: no one address holds every slot. */
				 MHD_OPTION_PER_IP_CONNECTION_LIMIT, ep->tcp ? 16u : 0u,
				 MHD_OPTION_CONNECTION_TIMEOUT, 60u,
				 MHD_OPTION_END);
	if (!ep->d) {
		close(fd);
		return kvmig_err(-EIO, "libmicrohttpd could not start serving");
	}
	return 0;
}

int api_start(struct agent *a)
{
	struct api *api = calloc(1, sizeof(*api));
	char tcp_url[128] = "";
	int fd, err;

	if (!api)
		return -ENOMEM;
	a->api = api;
	api->unix_ep.a = api->tcp_ep.a = a;
	api->tcp_ep.tcp = 1;
	api->lock_fd = -1;
	if (a->socket_path) {
		if ((fd = unix_listen(a->socket_path, &api->lock_fd)) < 0) {
			err = fd;
			goto fail;
		}
		if ((err = serve(&api->unix_ep, fd)) < 0) {
			unlink(a->socket_path);
			goto fail;
		}
		snprintf(a->control_addr, sizeof(a->control_addr), "unix:%s", a->socket_path);
	}
	if (a->tcp_addr[0]) {
		if ((fd = tcp_listen(a->tcp_addr, tcp_url, sizeof(tcp_url))) < 0) {
			err = fd;
			goto fail;
		}
		if ((err = serve(&api->tcp_ep, fd)) < 0)
			goto fail;
		if (!a->control_addr[0])
			snprintf(a->control_addr, sizeof(a->control_addr), "%s", tcp_url);
		snprintf(a->tcp_addr, sizeof(a->tcp_addr), "%s", tcp_url);
	}
	return 0;
fail:
	api_stop(a);
	return err;
}

void api_stop(struct agent *a)
{
	struct api *api = a->api;
	struct timespec until;

	if (!api)
		return;
	/* The answers under way (long polls, event streams, woken by closing)
	 * get up to 2 s to go out before the connections are cut. */
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += 2;
	pthread_mutex_lock(&a->lock);
	while (a->n_requests && pthread_cond_timedwait(&a->cond, &a->lock, &until) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&a->lock);
	if (api->unix_ep.d) {
		MHD_stop_daemon(api->unix_ep.d);
		unlink(a->socket_path);
	}
	if (api->tcp_ep.d)
		MHD_stop_daemon(api->tcp_ep.d);
	if (api->lock_fd >= 0)
		close(api->lock_fd);
	free(api);
	a->api = NULL;
}
