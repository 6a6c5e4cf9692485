/* SPDX-License-Identifier: MIT */
/*
 * agent/agent_internal.h - the migration agent's pieces: the table of
 * migrations and its threads (agent.c), the control API over libmicrohttpd
 * (api.c), the metrics (metrics.c). The agent uses the library through its
 * public API only, like any embedder.
 */
#ifndef KVMIG_AGENT_INTERNAL_H
#define KVMIG_AGENT_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>

#include <kvmig/agent.h>

/*
 * A migration's state as the API reports it. Source: QUEUED (thread not
 * yet running) -> CONNECTING (connect, handshake) -> PRECOPY (live rounds
 * while the engine runs) -> FINAL (paused: register, offer, transfer) ->
 * VERIFYING (digests compared, install, commit) -> COMMITTED | ABORTED |
 * IN_DOUBT. Destination: CONNECTING (handshake) -> FINAL (transfer) ->
 * VERIFYING -> the same three ends. IN_DOUBT: the commit's outcome was not
 * confirmed (-ENOTCONN); the records say what happened (GET /v1/records).
 */
enum mig_state {
	MS_QUEUED,
	MS_CONNECTING,
	MS_PRECOPY,
	MS_FINAL,
	MS_VERIFYING,
	MS_COMMITTED,
	MS_ABORTED,
	MS_IN_DOUBT,
};

enum mig_role { MR_SOURCE = 0, MR_DEST = 1 };

/* The bounded label values of the metrics. */
enum mig_result { RES_COMMITTED = 0, RES_ABORTED, RES_IN_DOUBT, N_RESULTS };
enum { N_TRANSPORTS = 2 }; /* tcp, rdma */

#define AGENT_ID_LEN 32
#define AGENT_MAX_SEQS 4096u
#define AGENT_MAX_KEY 128u
#define AGENT_MAX_STREAMS 16u
#define AGENT_MAX_UNESTABLISHED 16u /* ended handshake-less ones remembered */

struct agent;

struct mig {
	struct agent *a;
	struct mig *next;          /* the table, newest first */
	char id[AGENT_ID_LEN + 1]; /* drawn by this agent */
	enum mig_role role;
	enum mig_state state;
	char phase[16];            /* the library's last phase */
	char peer[80];             /* source: the destination's data address; dest: the sender's */
	char **seqs;               /* source */
	uint32_t n_seqs;
	int move, live;
	uint32_t max_downtime_ms, max_rounds, timeout_ms;
	uint32_t paths;            /* source: connections asked per address (0: one) */
	enum kvmig_transport transport;
	char idem[AGENT_MAX_KEY + 1]; /* idempotency key ("" none) */
	double created;            /* seconds since the epoch */
	double t_start, t_end;     /* monotonic */
	uint32_t round;
	uint32_t pages_done, pages_total;
	uint64_t bytes_done, bytes_total;
	struct kvmig_migrate_stats st;
	int err;                   /* 0, or the negative errno it ended with */
	char message[512];
	int abort_requested;
	int cancel[2];             /* a byte in cancel[1] aborts it (DELETE, stop) */
	struct kvmig_conn *conn;   /* dest: accepted, until its thread takes it */
	pthread_t thread;
	int has_thread, done;
	int handshaking;           /* dest: accepted, its handshake not yet done */
	int unestablished;         /* dest: ended before its handshake was done (noise) */
	int committing;            /* past the point of no abort (phase "commit") */
};

struct hist {
	const double *bounds;
	uint32_t n;                /* bounds; counts has n + 1 (the last: +Inf) */
	uint64_t counts[20];
	double sum;
	uint64_t count;
};

struct metrics {
	uint64_t migrations[2][N_RESULTS][N_TRANSPORTS];
	struct hist duration[2];
	struct hist pause;
	uint64_t precopy_rounds;
	double register_seconds[2];
	uint64_t bytes[2], pages[2];
	uint64_t rereads;
	uint64_t digest_failures;
	uint64_t ahead_pages[3];   /* hash ahead: hashed, fresh, raced */
	uint64_t ahead_bytes;
	double ahead_seconds;
	uint64_t refused;          /* incoming connections closed: at the cap */
	uint64_t throttled;        /* starts refused with 429 */
};

struct events {
	char **lines;              /* ring of JSON lines, each with its "seq" */
	uint32_t cap;
	uint64_t next;             /* seq of the next line */
};

struct api;

struct agent {
	struct kvmig_pager *p;
	struct kvmig_agent_opts o;
	char *data_token, *control_token; /* copies */
	char *socket_path;
	char *path_hosts;          /* a copy of o.path_hosts */
	char control_addr[128];
	char tcp_addr[300];
	struct kvmig_listener *l;
	pthread_t acceptor;
	int has_acceptor;
	int stop_pipe[2];
	pthread_mutex_t lock;      /* everything below */
	pthread_cond_t cond;       /* a migration moved, an event was added, stopping */
	struct mig *migs;
	uint32_t n_running, n_done;
	uint32_t n_handshaking;    /* of n_running: incoming ones still in their handshake */
	int stopping;              /* no new migration; the running ones abort */
	int closing;               /* every migration ended: long polls, streams end */
	uint32_t n_requests;       /* HTTP requests being answered (stop waits for them) */
	uint32_t n_streams;        /* event streams open (at most AGENT_MAX_STREAMS) */
	struct events ev;
	struct metrics m;
	struct kvmig_gc_stats gc_at_start;
	struct api *api;
	pthread_mutex_t log_lock;
	pthread_t hasher;          /* digests ahead, every o.hash_ahead_ms */
	int has_hasher;
};

/* agent.c */
/* Replace what is not UTF-8 (and control bytes) in @s with '?': JSON needs it. */
void utf8_clean(char *s);
/* A JSON string of @s cleaned (a copy). */
json_t *json_clean(const char *s);
const char *mig_state_name(enum mig_state s);
int mig_state_final(enum mig_state s);
/* Under a->lock: the migration with @id, or NULL. */
struct mig *agent_find(struct agent *a, const char *id);
struct mig *agent_find_key(struct agent *a, const char *key);
/* Under a->lock: the migration as the API shows it. */
json_t *mig_json(const struct mig *m);
/*
 * Start a migration out of the pager (the caller checked the arguments);
 * takes @m (filled by the caller: seqs, peer, mode, ...). Under a->lock.
 * Return: 0, -EAGAIN (at the cap), -ESHUTDOWN (stopping), or -errno.
 */
int agent_start_source(struct agent *a, struct mig *m);
/* Ask @m to abort (under a->lock). Return: 0, -EALREADY (it has ended), or
 * -EINPROGRESS (it is past its decision / prepared: it completes). */
int agent_abort(struct agent *a, struct mig *m);
/* Append an event line (takes @o) and wake the streams; under a->lock. */
void agent_event(struct agent *a, json_t *o);
void agent_log(struct agent *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mig_free(struct mig *m);
/* A new source migration for the API to fill and start (or free). */
struct mig *agent_mig_new(struct agent *a);

/* api.c */
int api_start(struct agent *a);
/* Let the answers under way finish (the caller set a->closing), then stop. */
void api_stop(struct agent *a);

/* metrics.c */
void metrics_init(struct metrics *m);
/* Under a->lock: count a migration that ended. */
void metrics_count(struct metrics *m, const struct mig *mg);
/* The text exposition format (malloc'd); reads the pager outside a->lock. */
char *metrics_render(struct agent *a, size_t *len);

#endif
