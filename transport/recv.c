/* SPDX-License-Identifier: MIT */
/*
 * transport/recv.c - the receiving half of a migration: the session
 * (recv_msgs.c takes the sender's messages, recv_pages.c reads and
 * verifies the pages).
 *
 *   accept, HELLO both ways (meta and layout must match), REGIONS
 *   per OFFER: check every extent against the sender's regions, allocate
 *     destination pages (all of the offer or nothing: ENOSPC), queue them
 *   keep queue_depth reads in flight: each read copies a piece of a source
 *     extent straight into the destination page; a page's K and V extents are
 *     zipped with the destination's own extents, so the two layouts' extent
 *     boundaries need not agree
 *   when a page's last read lands, hash it; compare with the sender's digest
 *     (whichever arrives last triggers the compare); a mismatch is re-read
 *     once, a second mismatch is EIO naming the page
 *   FINAL: remap every sequence to destination indices, install them as
 *     pending under our migration record, mark it prepared, COMMIT; the
 *     sender's decision (COMMIT_ACK) activates them; ACTIVATED; FORGET from
 *     the sender closes the record
 *
 * Any failure before the record is prepared frees every page allocated
 * here and installs nothing (enum recv_state says what each state allows).
 * With tcp, reads land only inside progress(); with RDMA the NIC writes on
 * its own, so after a failure the connection (its queue pair) is closed
 * before any page is freed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kvmig/cas.h>

#include "pager/internal.h"
#include "transport/recv_internal.h"
#include "util/internal.h"

static int finished(const struct receiver *r)
{
	return r->xfer == XFER_FINAL && !r->q_len && !r->cur.active && !r->inflight &&
	       !r->n_in[RP_QUEUED] && !(r->ses.o.verify && r->n_in[RP_LANDED]);
}

/* Pull every page, verify it, until FINAL has come and all is checked. */
static int transfer(struct receiver *r)
{
	struct xport_read *done[64];
	int ret;

	session_phase(&r->ses, "transfer");
	for (int round = 0;; round++) {
		struct xport_msg *m = NULL;
		uint64_t stall_ms;

		if (round == 1 && kvmig_fault("recv-stall", &stall_ms))
			usleep((useconds_t)(stall_ms * 1000)); /* test-only: go silent */

		while ((ret = r->ses.ops->ctl_pop(r->ses.c, &m)) == 0) {
			ret = recv_take_msg(r, m);
			session_msg_free(&m);
			if (ret < 0)
				return ret;
		}
		if (ret != -EAGAIN)
			return ret;
		/* The pool's hashes first: a mismatch queues a re-read to post. */
		if ((ret = recv_pool_drain(r)) < 0 || (ret = recv_answer_round(r)) < 0 ||
		    (ret = recv_fill_reads(r)) < 0)
			return ret;
		if (finished(r))
			return 0;
		/* Woken as well by the hashing pool's finished pages. */
		if ((ret = r->ses.ops->progress(r->ses.c, (int)r->ses.o.timeout_ms,
						recv_pool_fd(r))) < 0)
			return ret;
		while ((ret = r->ses.ops->reap(r->ses.c, done, KVMIG_ARRAY_SIZE(done))) > 0)
			for (int i = 0; i < ret; i++) {
				int err = recv_on_read_done(r, done[i]);

				if (err < 0)
					return err;
			}
		session_progress(&r->ses, 0);
	}
}

static int handshake(struct receiver *r)
{
	struct kvmig_msg_hello peer;
	struct xport_msg *m = NULL;
	int ret;

	session_phase(&r->ses, "handshake");
	if ((ret = KVMIG_FAULT_FAIL("recv-handshake")) < 0)
		return ret;
	if ((ret = session_hello(r->p, ROLE_RECEIVER, (r->ses.o.verify ? 0 : KVMIG_HELLO_NO_VERIFY) |
				 (r->ses.auth ? KVMIG_HELLO_AUTH : 0), NULL, &r->hello)) < 0)
		return ret;
	if ((ret = session_wait_msg(&r->ses, -1, &m)) < 0)
		return ret;
	if (m->hdr.type != KVMIG_MSG_HELLO)
		ret = session_unexpected(m, "HELLO");
	else if ((ret = kvmig_wire_get_hello(m->payload, m->hdr.len, &peer)) == 0 &&
		 (ret = session_auth_agree(&r->ses, &peer)) == 0)
		ret = session_hello_match(&r->hello, &peer);
	session_msg_free(&m);
	if (ret < 0)
		return ret;
	r->live = !!(peer.flags & KVMIG_HELLO_LIVE);
	r->mig = peer.migration;
	r->peer_pager = peer.pager;
	if ((peer.flags ^ r->hello.flags) & KVMIG_HELLO_NO_VERIFY)
		return kvmig_err(-EPROTO, "the sender %s digests but this receiver %s: both sides "
				 "need the same --no-verify setting",
				 r->hello.flags & KVMIG_HELLO_NO_VERIFY ? "sends" : "does not send",
				 r->ses.o.verify ? "verifies" : "does not verify");
	if (r->ses.auth && (ret = session_auth_take_challenge(&r->ses)) < 0)
		return ret;
	if ((ret = kvmig_wire_put_hello(&r->ses.wb, &r->hello)) < 0 ||
	    (r->ses.auth && ((ret = session_auth_challenge(&r->ses)) < 0 ||
			     (ret = session_auth_prove(&r->ses, ROLE_RECEIVER)) < 0)) ||
	    (ret = session_flush(&r->ses)) < 0)
		return ret;
	/* Nothing from an unproven sender is read beyond this point. */
	if (r->ses.auth && (ret = session_auth_check(&r->ses, ROLE_SENDER)) < 0)
		return ret;
	if ((ret = session_sync_records(&r->ses, r->p, &r->peer_pager, &r->resolved)) < 0)
		return ret;
	return peer.flags & KVMIG_HELLO_PATHS ? paths_accept(&r->ses) : 0;
}

/* RECV_HANDSHAKE -> RECV_RECEIVING: our record, before a page is allocated;
 * then the sender's registrations. */
static int begin_record(struct receiver *r)
{
	struct kvmig_record rec = { .role = KVMIG_ROLE_DEST, .state = KVMIG_REC_RECEIVING };
	struct xport_msg *m = NULL;
	int ret;

	rec.id = r->mig;
	rec.peer_pager = r->peer_pager;
	snprintf(rec.peer_addr, sizeof(rec.peer_addr), "%s", r->ses.ops->peer_addr(r->ses.c));
	if ((ret = kvmig_pager_record_create(r->p, &rec)) < 0)
		return kvmig_err_prefix(ret, "cannot record the migration in the destination pager");
	r->state = RECV_RECEIVING;
	SESSION_DIE("recv-record");
	if ((ret = session_wait_msg(&r->ses, -1, &m)) < 0)
		return ret;
	if (m->hdr.type != KVMIG_MSG_REGIONS)
		ret = session_unexpected(m, "REGIONS");
	else
		ret = recv_take_regions(r, m);
	session_msg_free(&m);
	return ret;
}

/* The FINAL sequences with our page indices (ids borrowed from r->final). */
static int remap_final(struct receiver *r, struct kvmig_seq *q)
{
	for (uint32_t i = 0; i < r->final.n; i++) {
		const struct kvmig_seq *f = &r->final.seqs[i];

		q[i] = *f;
		q[i].page_ixs = malloc(sizeof(uint32_t) * (f->n_pages ? f->n_pages : 1));
		if (!q[i].page_ixs)
			return -ENOMEM;
		for (uint32_t j = 0; j < f->n_pages; j++)
			q[i].page_ixs[j] = r->pg[recv_slot_find(r, f->page_ixs[j])].dst_ix;
	}
	return 0;
}

static void free_remapped(struct receiver *r, struct kvmig_seq *q)
{
	for (uint32_t i = 0; q && i < r->final.n; i++)
		free(q[i].page_ixs);
	free(q);
}

/* Install the FINAL sequences, remapped to our page indices. */
static int install(struct receiver *r)
{
	struct kvmig_seq *q = calloc(r->final.n ? r->final.n : 1, sizeof(*q));
	int ret;

	session_phase(&r->ses, "install");
	if (!q)
		return -ENOMEM;
	if ((ret = KVMIG_FAULT_FAIL("recv-install")) < 0) {
		free(q);
		return ret;
	}
	if ((ret = remap_final(r, q)) == 0)
		ret = kvmig_pager_record_install(r->p, &r->mig, q, r->final.n);
	if (ret == -EINVAL)
		ret = kvmig_err_prefix(-EBADMSG, "sender's sequences do not fit this pager");
	else if (ret < 0)
		kvmig_err_prefix(ret, "cannot install the sequences");
	else
		r->state = RECV_PENDING;
	free_remapped(r, q);
	SESSION_DIE("recv-pending");
	return ret;
}

/* Free the offered pages no sequence uses (take_final dropped them). */
static int free_dropped(struct receiver *r)
{
	uint32_t *ixs, k = 0;
	int ret;

	if (!r->n_in[RP_DROPPED])
		return 0;
	if (!(ixs = malloc(sizeof(*ixs) * r->n_in[RP_DROPPED])))
		return -ENOMEM;
	for (uint32_t i = 0; i < r->n; i++)
		if (r->pg[i].state == RP_DROPPED)
			ixs[k++] = r->pg[i].dst_ix;
	ret = kvmig_pager_free(r->p, ixs, k);
	free(ixs);
	if (ret < 0)
		return kvmig_err_prefix(ret, "cannot free the pages no sequence uses");
	r->dropped_freed = 1;
	return 0;
}

/* RECV_PENDING -> RECV_PREPARED: recorded, then the sender is told. */
static int prepare(struct receiver *r)
{
	int ret;

	session_phase(&r->ses, "commit");
	if ((ret = KVMIG_FAULT_FAIL("recv-commit-send")) < 0)
		return ret;
	/* Durable before the sender hears of it: once it has, it may decide. */
	if ((ret = kvmig_pager_record_set(r->p, &r->mig, KVMIG_REC_RECEIVING,
					  KVMIG_REC_PREPARED)) < 0)
		return kvmig_err_prefix(ret, "cannot record that the migration is prepared");
	r->state = RECV_PREPARED;
	SESSION_DIE("recv-prepared");
	if ((ret = kvmig_wire_put_empty(&r->ses.wb, KVMIG_MSG_COMMIT)) < 0)
		return ret;
	if (kvmig_fault("recv-commit-lost", NULL)) {
		/* Test-only: the COMMIT and the connection are lost together. */
		r->ses.wb.len = 0;
		r->ses.ops->close(&r->ses.c);
		return kvmig_err(-ECONNRESET, "fault injected at recv-commit-lost");
	}
	ret = session_flush(&r->ses);
	SESSION_DIE("recv-commit-sent");
	return ret;
}

/* RECV_PREPARED -> RECV_ACTIVATED -> RECV_DONE on the sender's decision. */
/* Whether every sequence of FINAL is installed here and runnable. */
static int finals_run_here(struct receiver *r)
{
	struct kvmig_seq_list l = { 0 };
	uint32_t found = 0;

	if (kvmig_pager_seqs(r->p, &l) < 0)
		return 0;
	for (uint32_t i = 0; i < r->final.n; i++)
		for (uint32_t j = 0; j < l.n; j++)
			if (!strcmp(l.seqs[j].id, r->final.seqs[i].id)) {
				found += l.seqs[j].state == KVMIG_SEQ_ACTIVE;
				break;
			}
	kvmig_seq_list_free(&l);
	return found == r->final.n;
}

static int await_decision(struct receiver *r)
{
	struct xport_msg *m = NULL;
	int ret = session_wait_msg(&r->ses, -1, &m);

	if (ret > 0 && (m->hdr.type != KVMIG_MSG_COMMIT_ACK || m->hdr.len))
		ret = session_unexpected(m, "COMMIT_ACK");
	session_msg_free(&m);
	if (ret < 0)
		return ret;
	SESSION_DIE("recv-ack-recv");
	ret = kvmig_pager_record_set(r->p, &r->mig, KVMIG_REC_PREPARED, KVMIG_REC_ACTIVATED);
	if (ret == -ESTALE) {
		enum kvmig_record_state now = session_record_state(r->p, &r->mig);

		if (now == KVMIG_REC_ACTIVATED)
			ret = 0; /* a resolver activated them meanwhile */
		else if (now == KVMIG_REC_NONE)
			ret = -ENOENT; /* ... and closed it since: see below */
	}
	if (ret == -ENOENT && finals_run_here(r))
		ret = 0; /* ... and closed the record, the sender's released */
	if (ret < 0)
		return kvmig_err_prefix(ret, "the sender decided to commit, but the sequences "
					"could not be activated here");
	r->state = RECV_ACTIVATED;
	SESSION_DIE("recv-activated");
	if ((ret = kvmig_wire_put_empty(&r->ses.wb, KVMIG_MSG_ACTIVATED)) == 0)
		ret = session_flush(&r->ses);
	SESSION_DIE("recv-activated-sent");
	/* The sender releases its copy, then says so. Without that word the
	 * record stays (activated: the sequences run) for a later exchange. */
	if (ret == 0 && (ret = session_wait_msg(&r->ses, -1, &m)) > 0 &&
	    (m->hdr.type != KVMIG_MSG_FORGET || m->hdr.len))
		ret = session_unexpected(m, "FORGET");
	session_msg_free(&m);
	if (ret < 0) {
		/* Left for the next exchange or a resolution: nobody drives it. */
		r->unconfirmed = 1;
		kvmig_pager_record_disown(r->p, &r->mig);
		return 0;
	}
	SESSION_DIE("recv-forget-recv");
	ret = kvmig_pager_record_end(r->p, &r->mig, KVMIG_REC_ACTIVATED, 1);
	if (ret < 0 && ret != -ENOENT) { /* ENOENT: a resolver closed it */
		r->unconfirmed = 1;
		kvmig_pager_record_disown(r->p, &r->mig);
	} else {
		r->state = RECV_DONE;
	}
	return 0;
}

static int commit(struct receiver *r)
{
	struct kvmig_err_saved keep;
	char hex[33];
	int ret;

	if ((ret = prepare(r)) == 0 && (ret = await_decision(r)) == 0)
		return 0;
	if (r->state != RECV_PREPARED || r->ses.peer_aborted)
		return ret; /* not prepared yet, or the sender aborted before deciding */
	/* In doubt: the record stays, and anyone may resolve it from the
	 * sender's (this process may live on, in an engine). */
	kvmig_err_save(&keep);
	kvmig_pager_record_disown(r->p, &r->mig);
	kvmig_err_restore(&keep, ret);
	kvmig_id_format(&r->mig, hex);
	return kvmig_err(-ENOTCONN, "commit outcome unknown: %s. The %u sequences stay here as "
			 "pending (not running) under migration %s until the sender's record says "
			 "how it ended: run kvmig send from that pager again, or kvmig pager "
			 "resolve", kvmig_last_error(), r->final.n, hex);
}

/*
 * After a failure before the record was prepared (the connection closed):
 * abort the record, which removes the pending sequences and frees their
 * pages, then free the pages no sequence had. Should that fail, the error
 * (@err's message) says so.
 */
static void cleanup_failed(struct receiver *r, int err)
{
	char why[KVMIG_WIRE_MAX_TEXT + 1], hex[33];
	uint32_t *ixs = NULL, k = 0;
	int installed = r->state == RECV_PENDING || r->state == RECV_PREPARED, ret = 0;

	snprintf(why, sizeof(why), "%s", kvmig_last_error());
	kvmig_id_format(&r->mig, hex);
	if (r->state == RECV_HANDSHAKE)
		return; /* nothing of this migration here yet */
	/* Test-only: the pager refuses to take them out. */
	ret = kvmig_fault("recv-uninstall", NULL) ? -EIO :
		kvmig_pager_record_end(r->p, &r->mig, r->state == RECV_PREPARED ? KVMIG_REC_PREPARED :
				       KVMIG_REC_RECEIVING, 0);
	if (ret < 0 && installed) {
		kvmig_err(err, "%s; and the %u sequences installed here as pending could not be "
			  "removed (%s): they do not run, and gc removes them once this process is "
			  "gone (migration %s)", why, r->final.n, strerror(-ret), hex);
		return;
	}
	r->state = RECV_HANDSHAKE;
	if (!(ixs = malloc(sizeof(*ixs) * (r->n ? r->n : 1))))
		ret = -ENOMEM;
	/* The pending sequences' pages went with them. */
	for (uint32_t i = 0; ixs && i < r->n; i++)
		if (!(installed && r->pg[i].state != RP_DROPPED) &&
		    !(r->pg[i].state == RP_DROPPED && r->dropped_freed))
			ixs[k++] = r->pg[i].dst_ix;
	if (ixs && k)
		ret = kvmig_pager_free(r->p, ixs, k);
	free(ixs);
	if (ret < 0)
		kvmig_err(err, "%s; and the %u pages allocated here could not be freed (%s); gc "
			  "frees them once this process is gone", why, k ? k : r->n, strerror(-ret));
	else
		kvmig_err(err, "%s", why);
}

/*
 * One migration into @p on a connection: *@conn, taken (the caller's
 * pointer is cleared), or NULL: announce the listener and accept one here.
 */
static int receive(struct kvmig_listener *l, struct xport_conn **conn, struct kvmig_pager *p,
		   const struct kvmig_migrate_opts *opts, struct kvmig_migrate_stats *stats)
{
	struct kvmig_migrate_stats st = { 0 };
	struct receiver *r = calloc(1, sizeof(*r));
	struct xport_conn *taken = conn ? *conn : NULL;
	double t0 = 0, tx = 0;
	int ret;

	if (conn)
		*conn = NULL;
	if (!r) {
		if (taken)
			l->ops->close(&taken);
		return -ENOMEM;
	}
	r->p = p;
	ret = session_init(&r->ses, opts, ROLE_RECEIVER);
	r->ses.c = taken; /* after the init, which clears the session */
	if (ret < 0) {
		r->ses.ops = l->ops; /* to close a connection taken */
		goto out;
	}
	r->ses.ops = l->ops;
	/* Registrations the provider kept belong to the last pager. */
	pthread_mutex_lock(&l->lock);
	if (l->pager_serial != kvmig_pager_serial(p) && l->ops->listener_forget)
		l->ops->listener_forget(l->impl);
	l->pager_serial = kvmig_pager_serial(p);
	pthread_mutex_unlock(&l->lock);
	r->ses.ev.transport = l->ops->name;
	if (!r->ses.c) {
		r->ses.ev.type = KVMIG_EVENT_LISTENING;
		r->ses.ev.addr = kvmig_listener_addr(l);
		if (r->ses.o.on_event)
			r->ses.o.on_event(r->ses.o.event_arg, &r->ses.ev);
		r->ses.ev.addr = NULL;
		ret = l->ops->accept(l->impl, r->ses.o.accept_timeout_ms ?
				     (int)r->ses.o.accept_timeout_ms : -1, r->ses.o.cancel_fd, &r->ses.c);
		if (ret < 0)
			goto out;
	} else {
		l->ops->set_cancel(r->ses.c, r->ses.o.cancel_fd);
	}
	t0 = kvmig_now();
	session_connected(&r->ses);
	session_handshake_begin(&r->ses);
	if ((ret = handshake(r)) < 0)
		goto fail;
	session_handshake_done(&r->ses);
	if ((ret = begin_record(r)) < 0 || (ret = recv_setup(r)) < 0)
		goto fail;
	tx = kvmig_now();
	if ((ret = transfer(r)) < 0)
		goto fail;
	SESSION_DIE("recv-verified");
	st.transfer_seconds = kvmig_now() - tx;
	session_progress(&r->ses, 1);
	if ((ret = install(r)) < 0 || (ret = free_dropped(r)) < 0)
		goto fail;
	ret = commit(r);
	/* Prepared, the receiver waits for the sender's decision: only an
	 * ABORT from it (it had not decided) lets this side abort. */
	if (ret < 0 && (r->state != RECV_PREPARED || r->ses.peer_aborted))
		goto fail;
	st.pages = r->n - r->n_in[RP_DROPPED];
	st.seqs = r->final.n;
	st.bytes = (uint64_t)st.pages * 2 * r->hello.half_bytes;
	st.n_rounds = r->round.round + 1;
	st.pages_verified = r->n_in[RP_VERIFIED];
	goto out;
fail:
	session_abort(&r->ses, ret);
	/* Deregister and close before any page is freed: an RDMA NIC writes
	 * into the pages on its own while reads are posted; a read that lands
	 * after the deregistration fails on the NIC instead of writing. */
	for (uint32_t i = 0; r->ses.c && i < r->n_lreg; i++)
		r->ses.ops->dereg(r->ses.c, &r->lreg[i]);
	if (r->ses.c)
		r->ses.ops->close(&r->ses.c);
	cleanup_failed(r, ret);
out:
	st.rereads = r->rereads;
	st.reads = r->n_reads;
	st.register_seconds = r->reg_seconds;
	st.regions_reused = r->reg_reused;
	snprintf(st.transport, sizeof(st.transport), "%s",
		 r->ses.ev.transport ? r->ses.ev.transport : r->ses.ops->name);
	st.paths = r->ses.n_paths;
	st.seconds = t0 ? kvmig_now() - t0 : 0;
	st.migration = r->mig;
	st.hash_threads = r->hash_threads;
	st.resolved = r->resolved;
	st.unconfirmed = r->unconfirmed;
	if (stats)
		*stats = st;
	for (uint32_t i = 0; r->ses.c && i < r->n_lreg; i++)
		r->ses.ops->dereg(r->ses.c, &r->lreg[i]);
	session_fini(&r->ses);
	kvmig_seq_list_free(&r->final);
	free(r->rg);
	free(r->keys);
	recv_pages_fini(r);
	free(r);
	return ret;
}

int kvmig_migrate_accept(struct kvmig_listener *l, struct kvmig_pager *p,
			 const struct kvmig_migrate_opts *opts, struct kvmig_migrate_stats *stats)
{
	return receive(l, NULL, p, opts, stats);
}

int kvmig_migrate_accept_conn(struct kvmig_listener *l, struct kvmig_conn **c, struct kvmig_pager *p,
			      const struct kvmig_migrate_opts *opts, struct kvmig_migrate_stats *stats)
{
	struct xport_conn *x;

	if (!c || !*c)
		return kvmig_err(-EINVAL, "no connection to receive on");
	x = (*c)->c;
	free(*c);
	*c = NULL;
	return receive(l, &x, p, opts, stats);
}
