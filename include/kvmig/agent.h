/* SPDX-License-Identifier: MIT */
/*
 * kvmig/agent.h - the migration agent: one per engine, it stays up, keeps a
 * data listener that accepts incoming migrations into its pager (several at
 * once, each into its own pages), starts outgoing ones on request, tracks
 * each by id, aborts them on request and reports in Prometheus' conventions.
 * Its control API is HTTP/1.1 + JSON (docs/AGENT.md), on a unix socket, and
 * on TCP only with a bearer token. kvmigd is this agent over a shm pager; an
 * engine embeds it over its own pager (kvmig/mem.h) with kvmig_agent_start().
 */
#ifndef KVMIG_AGENT_H
#define KVMIG_AGENT_H

#include <kvmig/migrate.h>

#ifdef __cplusplus
extern "C" {
#endif

struct kvmig_agent;

struct kvmig_agent_opts {
	/* The data listener: "host:port" (port 0: any free one); default
	 * 127.0.0.1:7400. Its transport (tcp, rdma or auto); default tcp. */
	const char *data_addr;
	enum kvmig_transport transport;
	/* The control API on a unix socket at this path (created mode 0600,
	 * removed at stop; a stale socket nobody answers on is replaced), and
	 * / or on TCP at "host:port", which needs control_token. At least one. */
	const char *control_socket;
	const char *control_addr;
	const void *control_token;   /* the bearer token TCP clients send, >= 16 bytes */
	size_t control_token_len;
	/* The migrations' shared secret (kvmig's --token-file), or NULL: both
	 * agents need the same one (docs/SECURITY.md). */
	const void *data_token;
	size_t data_token_len;
	uint32_t max_migrations;     /* running at once, both directions; default 4, 1..256.
				      * Past it a start is refused (HTTP 429) and an
				      * incoming connection closed */
	uint32_t history;            /* finished migrations remembered; default 256, 1..65536 */
	uint32_t timeout_ms;         /* silence before a migration gives up (the lease);
				      * default 30000; a start may give its own */
	uint32_t queue_depth;        /* receiver: reads in flight; default 32 */
	uint32_t max_read_bytes;     /* receiver: bytes per read; default 1 MiB */
	/* One line per migration event and per start / stop (NULL: silent);
	 * called from the agent's threads, one at a time, with the agent's
	 * lock held: it must return quickly and not call kvmig_agent_*(). */
	void (*log)(void *arg, const char *line);
	void *log_arg;
	/* Digests computed ahead (kvmig_hash_ahead, docs/PROTOCOL.md): a pass
	 * over the pages of runnable sequences this often, on a thread of its
	 * own, so a migration hashes only what was written since; default 1000,
	 * 0: none (a pager that keeps no digests: none either). */
	uint32_t hash_ahead_ms;
	/* Receiver: where a sender's extra connections go (kvmig_migrate_opts
	 * .path_hosts: one address per RDMA device or NIC, comma-separated);
	 * NULL (default): the host the sender reached. Copied. */
	const char *path_hosts;
};

/* kvmig_agent_opts_init() - the defaults above (no control endpoint set). */
KVMIG_API void kvmig_agent_opts_init(struct kvmig_agent_opts *opts);

/*
 * kvmig_agent_start() - reclaim what dead processes left in @p (gc: the
 * records in doubt stay, reported by the API until resolved), open the data
 * listener and the control endpoints, and serve until kvmig_agent_stop().
 * @p must outlive the agent; other threads may use it meanwhile.
 * Return: 0 and *ret; -EINVAL (options), -EADDRINUSE (an endpoint is taken,
 * a unix socket by a running agent), -EPROTONOSUPPORT (this build has no
 * agent: libmicrohttpd was missing), or a socket / pager error.
 */
KVMIG_API int kvmig_agent_start(struct kvmig_pager *p, const struct kvmig_agent_opts *opts,
				struct kvmig_agent **ret);
/* The data listener's bound "host:port"; owned by the agent. */
KVMIG_API const char *kvmig_agent_data_addr(const struct kvmig_agent *a);
/* The control endpoint: "unix:PATH" if there is a socket, else "http://host:port". */
KVMIG_API const char *kvmig_agent_control_addr(const struct kvmig_agent *a);
/*
 * kvmig_agent_stop() - stop accepting, abort the running migrations (each
 * with the usual guarantees: one past its decision completes), wait for
 * them, close everything; set *a NULL; NULL-safe.
 */
KVMIG_API void kvmig_agent_stop(struct kvmig_agent **a);

#ifdef __cplusplus
}
#endif
#endif
