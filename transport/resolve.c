/* SPDX-License-Identifier: MIT */
/*
 * transport/resolve.c - resolving migration records after a death: the
 * table that says what a record becomes given the other side's record of
 * the same migration (docs/PROTOCOL.md, "Crash safety"), and its two
 * local uses, both pagers on this host (kvmig_migrate_resolve_pair) and
 * one record with the peer's state given by hand (kvmig_migrate_resolve_
 * record). The handshake uses the same table with the peer's records over
 * the wire (the RECORDS exchange in reconnect.c). Nothing here touches the network.
 *
 * Why the table is safe. The sender decides; the receiver only prepares:
 *   - the source's record exists from before the first offer until it has
 *     released its copy, which it does only after the destination confirmed
 *     activation; so a destination that is prepared while the source has no
 *     record was never decided for: abort;
 *   - the source decides (departed / committed) only after the destination
 *     said it is prepared, and a prepared destination never aborts unless
 *     the source has no record or aborted; so a departed source means
 *     commit: activate;
 *   - a destination drops an activated record only once the source has
 *     none, and a departed source with no destination record means the
 *     destination never held it (its pager was removed): run it again.
 * "Has no record" is only evidence when the peer's records were read
 * after this side's record reached its state (a migration started since
 * would not show yet): @peer_newer says so. An undecided record driven by
 * a live process is left to it; every step is taken only from the state
 * it was read in (the pager checks), so a resolver beside a live process
 * cannot undo what that process did meanwhile.
 */
#include <stdlib.h>
#include <string.h>

#include <kvmig/migrate.h>

#include "transport/session.h"
#include "util/internal.h"

enum kvmig_resolve_act resolve_decide(const struct kvmig_record *mine,
				      enum kvmig_record_state peer, int peer_newer)
{
	/* An undecided record whose process is alive is that process's to
	 * decide. Every other step below is taken only if the record is still
	 * in the state it was read in (the pager refuses a stale one), so it
	 * is safe beside a live process that drives the commit. */
	if (mine->owner_pid && (mine->state == KVMIG_REC_SENDING ||
				mine->state == KVMIG_REC_RECEIVING))
		return RESOLVE_NONE;
	if (mine->role == KVMIG_ROLE_DEST) {
		switch (mine->state) {
		case KVMIG_REC_RECEIVING:
			return RESOLVE_ABORT; /* undecided, nobody drives it (gc does this) */
		case KVMIG_REC_PREPARED:
			if (peer == KVMIG_REC_DEPARTED || peer == KVMIG_REC_COMMITTED)
				return RESOLVE_ACTIVATE;
			if ((peer == KVMIG_REC_NONE && peer_newer) || peer == KVMIG_REC_ABORTING)
				return RESOLVE_ABORT;
			return RESOLVE_NONE; /* the source has not decided: it moves first */
		case KVMIG_REC_ACTIVATED:
			return peer == KVMIG_REC_NONE && peer_newer ? RESOLVE_END : RESOLVE_NONE;
		default:
			return RESOLVE_NONE;
		}
	}
	switch (mine->state) {
	case KVMIG_REC_SENDING:
		return RESOLVE_ABORT; /* never decided (gc does this) */
	case KVMIG_REC_DEPARTED:
	case KVMIG_REC_COMMITTED:
		if (peer == KVMIG_REC_ACTIVATED)
			return RESOLVE_END;
		if (peer == KVMIG_REC_NONE && peer_newer)
			return RESOLVE_ABORT;
		return RESOLVE_NONE; /* the destination acts first */
	default:
		return RESOLVE_NONE;
	}
}

int resolve_apply(struct kvmig_pager *p, const struct kvmig_record *r, enum kvmig_resolve_act a,
		  struct kvmig_resolve_stats *st)
{
	int ret = 0;

	switch (a) {
	case RESOLVE_NONE:
		return 0;
	case RESOLVE_ACTIVATE:
		ret = kvmig_pager_record_set(p, &r->id, KVMIG_REC_PREPARED, KVMIG_REC_ACTIVATED);
		if (ret == 0)
			st->activated++;
		break;
	case RESOLVE_ABORT:
		if ((ret = kvmig_pager_record_end(p, &r->id, r->state, 0)) == 0)
			st->aborted++;
		break;
	case RESOLVE_END:
		if ((ret = kvmig_pager_record_end(p, &r->id, r->state, 1)) == 0)
			st->finished++;
		break;
	}
	/* Someone else moved it meanwhile (another resolver, its process): the
	 * pager refused the step, which is all the safety needed. */
	return ret == -ESTALE || ret == -ENOENT || ret == -EINVAL ? 0 : ret;
}

enum kvmig_record_state resolve_peer_state(const struct kvmig_record *recs, uint32_t n,
					   const struct kvmig_id *id,
					   const struct kvmig_id *peer_of_mine)
{
	for (uint32_t i = 0; i < n; i++)
		if (!memcmp(&recs[i].id, id, sizeof(*id)) &&
		    !memcmp(&recs[i].peer_pager, peer_of_mine, sizeof(*peer_of_mine)))
			return recs[i].state;
	return KVMIG_REC_NONE;
}

/* Resolve @me's records naming @other from a snapshot of @other's taken
 * after @me's: returns how many changed, or -errno. */
static int resolve_side(struct kvmig_pager *me, struct kvmig_pager *other,
			struct kvmig_resolve_stats *st)
{
	struct kvmig_record *mine = NULL, *theirs = NULL;
	struct kvmig_id me_id, other_id;
	struct kvmig_resolve_stats before = *st;
	uint32_t nm = 0, nt = 0;
	int ret;

	if ((ret = kvmig_pager_identity(me, &me_id)) < 0 ||
	    (ret = kvmig_pager_identity(other, &other_id)) < 0 ||
	    (ret = kvmig_pager_records(me, &mine, &nm)) < 0 ||
	    (ret = kvmig_pager_records(other, &theirs, &nt)) < 0)
		goto out;
	for (uint32_t i = 0; i < nm && ret == 0; i++) {
		enum kvmig_record_state peer;

		if (memcmp(&mine[i].peer_pager, &other_id, sizeof(other_id)))
			continue;
		peer = resolve_peer_state(theirs, nt, &mine[i].id, &me_id);
		ret = resolve_apply(me, &mine[i], resolve_decide(&mine[i], peer, 1), st);
	}
	if (ret == 0)
		ret = (int)(st->activated + st->finished + st->aborted - before.activated -
			    before.finished - before.aborted);
out:
	free(mine);
	free(theirs);
	return ret;
}

/* Records of @me naming @other that are still there: driven by a live
 * process (@busy), or not (@left). */
static int count_left(struct kvmig_pager *me, struct kvmig_pager *other, uint32_t *left,
		      uint32_t *busy)
{
	struct kvmig_record *mine = NULL;
	struct kvmig_id other_id;
	uint32_t n = 0;
	int ret;

	if ((ret = kvmig_pager_identity(other, &other_id)) < 0 ||
	    (ret = kvmig_pager_records(me, &mine, &n)) < 0)
		return ret;
	for (uint32_t i = 0; i < n; i++)
		if (!memcmp(&mine[i].peer_pager, &other_id, sizeof(other_id)))
			*(mine[i].owner_pid ? busy : left) += 1;
	free(mine);
	return 0;
}

int kvmig_migrate_resolve_pair(struct kvmig_pager *a, struct kvmig_pager *b,
			       struct kvmig_resolve_stats *stats)
{
	struct kvmig_resolve_stats st = { 0 };
	int ret, changed;

	if ((ret = kvmig_pager_gc(a, NULL)) < 0 || (ret = kvmig_pager_gc(b, NULL)) < 0)
		return ret;
	/* A step on one side can enable one on the other (activate, then close
	 * the source, then close the destination): until nothing moves. */
	for (int round = 0; round < 8; round++) {
		if ((ret = changed = resolve_side(a, b, &st)) < 0 ||
		    (ret = resolve_side(b, a, &st)) < 0)
			break;
		if (!(changed += ret))
			break;
	}
	if (ret >= 0) {
		uint32_t left = 0, busy = 0;

		if ((ret = count_left(a, b, &left, &busy)) == 0 &&
		    (ret = count_left(b, a, &left, &busy)) == 0) {
			st.in_doubt = left;
			st.in_progress = busy;
		}
	}
	if (stats)
		*stats = st;
	return ret < 0 ? ret : 0;
}

int kvmig_migrate_resolve_record(struct kvmig_pager *p, const struct kvmig_id *migration,
				 enum kvmig_record_state peer_state,
				 struct kvmig_resolve_stats *stats)
{
	struct kvmig_resolve_stats st = { 0 };
	struct kvmig_record *recs = NULL, *r = NULL;
	uint32_t n = 0;
	char hex[33];
	int ret;

	kvmig_id_format(migration, hex);
	if ((ret = kvmig_pager_gc(p, NULL)) < 0 || (ret = kvmig_pager_records(p, &recs, &n)) < 0)
		return ret;
	for (uint32_t i = 0; i < n && !r; i++)
		if (!memcmp(&recs[i].id, migration, sizeof(*migration)))
			r = &recs[i];
	if (!r)
		ret = kvmig_err(-ENOENT, "this pager has no record of migration %s", hex);
	else if (r->owner_pid && (r->state == KVMIG_REC_SENDING || r->state == KVMIG_REC_RECEIVING))
		ret = kvmig_err(-EBUSY, "migration %s is under way in process %d, which is alive: "
				"it decides it", hex, (int)r->owner_pid);
	else if ((ret = resolve_apply(p, r, resolve_decide(r, peer_state, 1), &st)) == 0)
		st.in_doubt = !(st.activated + st.finished + st.aborted);
	free(recs);
	if (stats)
		*stats = st;
	return ret;
}
