/* SPDX-License-Identifier: MIT */
/*
 * transport/reconnect.c - the RECORDS exchange that follows every
 * handshake: the two sides' records of earlier migrations between the same
 * two pagers, resolved with the table in resolve.c (docs/PROTOCOL.md,
 * "Crash safety"). This is how two processes that meet again settle what a
 * death left in doubt, before they move anything new.
 */
#include <stdlib.h>
#include <string.h>

#include "transport/session.h"
#include "util/internal.h"

enum kvmig_record_state session_record_state(struct kvmig_pager *p, const struct kvmig_id *id)
{
	enum kvmig_record_state st = KVMIG_REC_NONE;
	struct kvmig_record *all = NULL;
	uint32_t n = 0;

	if (kvmig_pager_records(p, &all, &n) < 0)
		return KVMIG_REC_NONE;
	for (uint32_t i = 0; i < n; i++)
		if (!memcmp(&all[i].id, id, sizeof(*id)))
			st = all[i].state;
	free(all);
	return st;
}

/* Our records naming @peer_pager: into *out (malloc'd) as the wire carries them. */
static int records_for(struct kvmig_pager *p, const struct kvmig_id *peer_pager,
		       struct kvmig_record **all, uint32_t *n_all, struct kvmig_wire_record **out,
		       uint32_t *n)
{
	struct kvmig_wire_record *w;
	int ret;

	*out = NULL;
	*n = 0;
	if ((ret = kvmig_pager_records(p, all, n_all)) < 0)
		return ret;
	if (!(w = calloc(*n_all ? *n_all : 1, sizeof(*w))))
		return -ENOMEM;
	for (uint32_t i = 0; i < *n_all && *n < KVMIG_WIRE_MAX_RECORDS; i++) {
		if (memcmp(&(*all)[i].peer_pager, peer_pager, sizeof(*peer_pager)))
			continue;
		w[*n].id = (*all)[i].id;
		w[*n].role = (uint8_t)(*all)[i].role;
		w[*n].state = (uint8_t)(*all)[i].state;
		(*n)++;
	}
	*out = w;
	return 0;
}

/* Send our records naming the peer; what was sent into *sent (malloc'd). */
static int send_records(struct session *ses, struct kvmig_pager *p,
			const struct kvmig_id *peer_pager, struct kvmig_wire_record **sent,
			uint32_t *nsent)
{
	struct kvmig_record *all = NULL;
	struct kvmig_wire_record *w = NULL;
	uint32_t n_all = 0, n = 0;
	int ret = records_for(p, peer_pager, &all, &n_all, &w, &n);

	if (ret == 0 && (ret = kvmig_wire_put_records(&ses->wb, w, n)) == 0)
		ret = session_flush(ses);
	free(all);
	if (ret == 0 && sent) {
		*sent = w;
		*nsent = n;
	} else {
		free(w);
	}
	return ret;
}

static int take_records(struct session *ses, struct kvmig_wire_record **w, uint32_t *n)
{
	struct xport_msg *m = NULL;
	int ret = session_wait_msg(ses, -1, &m);

	if (ret < 0)
		return ret;
	if (m->hdr.type != KVMIG_MSG_RECORDS)
		ret = session_unexpected(m, "RECORDS");
	else
		ret = kvmig_wire_get_records(m->payload, m->hdr.len, w, n);
	session_msg_free(&m);
	return ret;
}

/* Whether @r stands in @sent (a list we sent) in the same state. */
static int sent_as_is(const struct kvmig_record *r, const struct kvmig_wire_record *sent,
		      uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (!memcmp(&sent[i].id, &r->id, sizeof(r->id)) && sent[i].state == (uint8_t)r->state)
			return 1;
	return 0;
}

/*
 * Act on our records naming the peer, given the peer's list @w. The peer
 * made @w after it received @sent (our earlier list; NULL: none), so for a
 * record of ours that stood in @sent in the state it has now, "the peer has
 * none" is evidence; for any other (it moved on, or a migration that began
 * since), the peer's list may simply predate it. Undecided records a live
 * process drives are left alone by resolve_decide().
 */
static int act_on(struct kvmig_pager *p, const struct kvmig_id *peer_pager,
		  const struct kvmig_wire_record *w, uint32_t nw,
		  const struct kvmig_wire_record *sent, uint32_t nsent,
		  struct kvmig_resolve_stats *st)
{
	struct kvmig_record *all = NULL;
	uint32_t n = 0;
	int ret;

	if ((ret = kvmig_pager_records(p, &all, &n)) < 0)
		return ret;
	for (uint32_t i = 0; i < n && ret == 0; i++) {
		enum kvmig_record_state peer = KVMIG_REC_NONE;

		if (memcmp(&all[i].peer_pager, peer_pager, sizeof(*peer_pager)))
			continue;
		for (uint32_t j = 0; j < nw; j++)
			if (!memcmp(&w[j].id, &all[i].id, sizeof(w[j].id)) &&
			    w[j].role != (uint8_t)all[i].role)
				peer = (enum kvmig_record_state)w[j].state;
		ret = resolve_apply(p, &all[i],
				    resolve_decide(&all[i], peer, sent_as_is(&all[i], sent, nsent)),
				    st);
	}
	free(all);
	return ret;
}

int session_sync_records(struct session *ses, struct kvmig_pager *p,
			 const struct kvmig_id *peer_pager, struct kvmig_resolve_stats *st)
{
	struct kvmig_wire_record *w = NULL, *sent = NULL;
	uint32_t nw = 0, nsent = 0;
	int ret = 0;

	/*
	 * Four lists, alternating, the sender's first. Each side acts on each
	 * list it receives, then answers with its own (the last list gets no
	 * answer). "The peer has no record" is evidence only in the peer's
	 * answer to a list of ours that showed our record in the state it is
	 * in now (act_on). Four are enough for the longest chain, whichever
	 * side was the source: the destination activates, the source releases
	 * its copy, the destination drops its record.
	 */
	for (int i = 0; i < 4 && ret == 0; i++) {
		int ours = (i % 2 == 0) == (ses->role == ROLE_SENDER);

		if (ours) {
			free(sent);
			sent = NULL;
			ret = send_records(ses, p, peer_pager, &sent, &nsent);
			continue;
		}
		free(w);
		w = NULL;
		if ((ret = take_records(ses, &w, &nw)) == 0)
			ret = act_on(p, peer_pager, w, nw, sent, sent ? nsent : 0, st);
	}
	free(w);
	free(sent);
	return ret;
}
