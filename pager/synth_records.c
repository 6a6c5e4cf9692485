/* SPDX-License-Identifier: MIT */
/*
 * pager/synth_records.c - the synthetic pager's migration records and gc.
 *
 * A record is one entry of hdr->recs: its state word is the one store that
 * moves a migration on (docs/PROTOCOL.md, "Crash safety"), and what the
 * state means for the sequences tagged with it is derived from it
 * (synth_slot_state), so a migration's decision takes effect atomically.
 * Applying an outcome (record_end) first stores FINISHING or ABORTING, then
 * removes or untags the sequences, then frees the entry: a death in between
 * is completed by the next process to take the lock (synth_recover).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/internal.h"
#include "pager/pager_internal.h"
#include "pager/synth_internal.h"

static int find_rec(const struct synth *s, const struct kvmig_id *id)
{
	for (uint32_t r = 0; r < SYNTH_MAX_RECORDS; r++)
		if (s->hdr->recs[r].state != KVMIG_REC_NONE &&
		    !memcmp(&s->hdr->recs[r].id, id, sizeof(*id)))
			return (int)r;
	return -1;
}

static int no_such(const struct synth *s, const struct kvmig_id *id)
{
	char hex[33];

	kvmig_id_format(id, hex);
	return kvmig_err(-ENOENT, "pager %s has no record of migration %s", s->name, hex);
}

static void untag(struct synth *s, uint32_t r)
{
	for (uint32_t i = 0; i < s->hdr->max_seqs; i++)
		if (s->slots[i].rec == r + 1)
			s->slots[i].rec = 0;
}

/* Apply the outcome the record's transient state names, then free it.
 * Idempotent: recovery calls it again after a death half way. Pages it
 * frees belong to holder @owner until they are free. */
static void complete_end(struct synth *s, uint32_t r, int owner)
{
	struct synth_rec *rec = &s->hdr->recs[r];
	int finishing = rec->state == KVMIG_REC_FINISHING;

	if ((finishing && rec->role == KVMIG_ROLE_SOURCE && rec->move) ||
	    (!finishing && rec->role == KVMIG_ROLE_DEST))
		synth_remove_tagged(s, r, owner);
	else
		untag(s, r);
	SYNTH_STEP();
	__atomic_store_n(&rec->state, KVMIG_REC_NONE, __ATOMIC_RELEASE);
}

static void apply_end(struct synth *s, uint32_t r, int commit, int owner)
{
	__atomic_store_n(&s->hdr->recs[r].state, commit ? KVMIG_REC_FINISHING : KVMIG_REC_ABORTING,
			 __ATOMIC_RELEASE);
	SYNTH_STEP();
	complete_end(s, r, owner);
}

void synth_records_recover(struct synth *s)
{
	for (uint32_t r = 0; r < SYNTH_MAX_RECORDS; r++) {
		uint32_t st = s->hdr->recs[r].state;

		if (st == KVMIG_REC_ABORTING || st == KVMIG_REC_FINISHING)
			complete_end(s, r, synth_holder_self(s, 1));
		else if (st == KVMIG_REC_ACTIVATED)
			untag(s, r); /* what record_set was doing */
	}
	for (uint32_t i = 0; i < s->hdr->max_seqs; i++) {
		uint32_t rec = s->slots[i].rec;

		if (rec && (rec > SYNTH_MAX_RECORDS || s->hdr->recs[rec - 1].state == KVMIG_REC_NONE))
			s->slots[i].rec = 0;
	}
}

void synth_record_orphaned(struct synth *s, uint32_t r, int dead, struct kvmig_gc_stats *st)
{
	struct synth_rec *rec = &s->hdr->recs[r];

	/* Pages freed here stay the dead holder's until then: if this process
	 * dies half way too, the next gc still finds them. */
	switch (rec->state) {
	case KVMIG_REC_SENDING:
	case KVMIG_REC_RECEIVING:
		/* Undecided: the source never chose commit (a destination is
		 * RECEIVING until it told the source it holds everything). */
		apply_end(s, r, 0, dead);
		if (st)
			st->aborted++;
		break;
	case KVMIG_REC_ABORTING:
	case KVMIG_REC_FINISHING:
		complete_end(s, r, dead);
		if (st)
			st->completed++;
		break;
	default:
		/* Prepared or decided: only the other side's record can say
		 * more. It stays, with nobody driving it. */
		rec->owner = 0;
		break;
	}
}

int synth_identity(void *impl, struct kvmig_id *id)
{
	*id = ((struct synth *)impl)->hdr->pager_id;
	return 0;
}

int synth_record_create(void *impl, const struct kvmig_record *in)
{
	struct synth *s = impl;
	struct synth_hdr *h = s->hdr;
	struct synth_rec *rec = NULL;
	int self, ret;

	if (!((in->role == KVMIG_ROLE_SOURCE && in->state == KVMIG_REC_SENDING) ||
	      (in->role == KVMIG_ROLE_DEST && in->state == KVMIG_REC_RECEIVING)))
		return kvmig_err(-EINVAL, "a new record is a sending source or a receiving "
				 "destination");
	if ((ret = synth_lock(s)) < 0)
		return ret;
	if (h->removed) {
		ret = kvmig_err(-EIDRM, "pager %s was removed", s->name);
		goto out;
	}
	if ((self = ret = synth_holder_self(s, 1)) < 0)
		goto out;
	if (find_rec(s, &in->id) >= 0) {
		char hex[33];

		kvmig_id_format(&in->id, hex);
		ret = kvmig_err(-EEXIST, "pager %s already has a record of migration %s", s->name,
				hex);
		goto out;
	}
	for (int pass = 0; pass < 2 && !rec; pass++) {
		for (uint32_t r = 0; r < SYNTH_MAX_RECORDS && !rec; r++)
			if (h->recs[r].state == KVMIG_REC_NONE)
				rec = &h->recs[r];
		if (!rec && pass == 0)
			synth_reap(s, NULL);
	}
	if (!rec) {
		ret = kvmig_err(-EBUSY, "pager %s holds %u migration records already: resolve the "
				"ones in doubt (kvmig pager status)", s->name, SYNTH_MAX_RECORDS);
		goto out;
	}
	rec->id = in->id;
	rec->role = in->role;
	rec->owner = (uint32_t)self + 1;
	rec->move = !!in->move;
	rec->peer_pager = in->peer_pager;
	memset(rec->peer_addr, 0, sizeof(rec->peer_addr));
	for (size_t i = 0; i + 1 < sizeof(rec->peer_addr) && in->peer_addr[i]; i++)
		rec->peer_addr[i] = in->peer_addr[i] >= 0x20 && in->peer_addr[i] <= 0x7e ?
			in->peer_addr[i] : '?';
	rec->created = (uint64_t)time(NULL);
	__atomic_store_n(&rec->state, in->state, __ATOMIC_RELEASE); /* last: it exists */
	ret = 0;
out:
	synth_unlock(s);
	return ret;
}

int synth_record_set(void *impl, const struct kvmig_id *id, enum kvmig_record_state from,
		     enum kvmig_record_state to)
{
	struct synth *s = impl;
	struct synth_rec *rec;
	uint64_t at;
	char hex[33];
	int r, ret;

	if ((ret = synth_lock(s)) < 0)
		return ret;
	if ((r = find_rec(s, id)) < 0) {
		ret = no_such(s, id);
		goto out;
	}
	rec = &s->hdr->recs[r];
	if (rec->state != (uint32_t)from) {
		kvmig_id_format(id, hex);
		ret = kvmig_err(-ESTALE, "migration %s is %s in pager %s, not %s", hex,
				kvmig_record_state_name(rec->state), s->name,
				kvmig_record_state_name(from));
		goto out;
	}
	/* A removed pager takes no decision and prepares nothing: whatever
	 * it would hold is about to vanish. */
	if (s->hdr->removed) {
		ret = kvmig_err(-EIDRM, "pager %s was removed", s->name);
		goto out;
	}
	if (kvmig_fault("stop-synth-step", &at) && at == (uint64_t)to)
		raise(SIGSTOP); /* test-only: checked, not yet stored, the lock held */
	__atomic_store_n(&rec->state, to, __ATOMIC_SEQ_CST); /* the step */
	/*
	 * A forced remove marks the pager without the lock when its holder
	 * is stopped, so the mark may have come after the check above. The
	 * step stored, the mark is read again (both sequentially consistent,
	 * as in Dekker's algorithm): either this side sees the mark and takes
	 * the step back, or the remover, reading the records after its mark,
	 * sees the step and reports it (kvmig_synth_remove()).
	 */
	if ((to == KVMIG_REC_PREPARED || to == KVMIG_REC_ACTIVATED) &&
	    __atomic_load_n(&s->hdr->removed, __ATOMIC_SEQ_CST)) {
		__atomic_store_n(&rec->state, from, __ATOMIC_SEQ_CST);
		ret = kvmig_err(-EIDRM, "pager %s was removed", s->name);
		goto out;
	}
	if (to == KVMIG_REC_ACTIVATED)
		untag(s, (uint32_t)r); /* they run: plain sequences from now on */
	if (kvmig_fault("stop-synth-stepped", &at) && at == (uint64_t)to)
		raise(SIGSTOP); /* test-only: stored and checked, the lock still held */
	ret = 0;
out:
	synth_unlock(s);
	return ret;
}

/* Under the lock: record @id in @role and @state, or -errno with a message. */
static int find_in(struct synth *s, const struct kvmig_id *id, enum kvmig_record_role role,
		   enum kvmig_record_state state)
{
	int r = find_rec(s, id);
	char hex[33];

	if (r < 0)
		return no_such(s, id);
	if (s->hdr->recs[r].role != (uint32_t)role || s->hdr->recs[r].state != (uint32_t)state) {
		kvmig_id_format(id, hex);
		return kvmig_err(-ESTALE, "migration %s is %s in pager %s, not %s", hex,
				 kvmig_record_state_name(s->hdr->recs[r].state), s->name,
				 kvmig_record_state_name(state));
	}
	return r;
}

int synth_record_tag(void *impl, const struct kvmig_id *id, const char *const *ids, uint32_t n)
{
	struct synth *s = impl;
	struct synth_slot **sl = malloc(sizeof(*sl) * (n ? n : 1));
	int r, ret;

	if (!sl)
		return -ENOMEM;
	if ((ret = synth_lock(s)) < 0) {
		free(sl);
		return ret;
	}
	if ((r = ret = find_in(s, id, KVMIG_ROLE_SOURCE, KVMIG_REC_SENDING)) < 0 ||
	    (ret = synth_lookup(s, ids, n, sl)) < 0)
		goto out;
	for (uint32_t i = 0; i < n; i++) {
		if (sl[i]->rec) {
			ret = kvmig_err(-EBUSY, "sequence \"%s\" belongs to another migration (under "
					"way, or its outcome not applied yet)", sl[i]->id);
			goto out;
		}
	}
	/* Tags change nothing while the record is SENDING: a death half way
	 * leaves runnable sequences, and gc aborts the record. */
	for (uint32_t i = 0; i < n; i++)
		sl[i]->rec = (uint32_t)r + 1;
	ret = 0;
out:
	synth_unlock(s);
	free(sl);
	return ret;
}

int synth_record_install(void *impl, const struct kvmig_id *id, const struct kvmig_seq *seqs,
			 uint32_t n)
{
	struct synth *s = impl;
	int r, ret;

	if ((ret = synth_lock(s)) < 0)
		return ret;
	if ((r = ret = find_in(s, id, KVMIG_ROLE_DEST, KVMIG_REC_RECEIVING)) >= 0)
		ret = synth_install_locked(s, seqs, n, (uint32_t)r + 1);
	synth_unlock(s);
	return ret;
}

int synth_record_end(void *impl, const struct kvmig_id *id, enum kvmig_record_state from,
		     int commit)
{
	struct synth *s = impl;
	uint32_t st;
	char hex[33];
	int r, ret;

	if ((ret = synth_lock(s)) < 0)
		return ret;
	if ((r = find_rec(s, id)) < 0) {
		ret = no_such(s, id);
		goto out;
	}
	st = s->hdr->recs[r].state;
	if (st != (uint32_t)from) {
		kvmig_id_format(id, hex);
		ret = kvmig_err(-ESTALE, "migration %s is %s in pager %s, not %s", hex,
				kvmig_record_state_name(st), s->name,
				kvmig_record_state_name(from));
		goto out;
	}
	if (!kvmig_record_end_legal((enum kvmig_record_role)s->hdr->recs[r].role,
				    (enum kvmig_record_state)st, commit)) {
		kvmig_id_format(id, hex);
		ret = kvmig_err(-EINVAL, "migration %s is %s in pager %s: it cannot be %s there",
				hex, kvmig_record_state_name(st), s->name,
				commit ? "committed" : "aborted");
		goto out;
	}
	apply_end(s, (uint32_t)r, commit, synth_holder_self(s, 1));
	ret = 0;
out:
	synth_unlock(s);
	return ret;
}

int synth_record_disown(void *impl, const struct kvmig_id *id)
{
	struct synth *s = impl;
	int r, ret, self;

	if ((ret = synth_lock(s)) < 0)
		return ret;
	self = synth_holder_self(s, 0);
	if ((r = find_rec(s, id)) < 0)
		ret = no_such(s, id);
	else if (self >= 0 && s->hdr->recs[r].owner == (uint32_t)self + 1)
		s->hdr->recs[r].owner = 0;
	synth_unlock(s);
	return ret;
}

int synth_records(void *impl, struct kvmig_record *out, uint32_t max, uint32_t *n)
{
	struct synth *s = impl;
	struct synth_hdr *h = s->hdr;
	uint32_t k = 0;
	int ret;

	if ((ret = synth_lock(s)) < 0)
		return ret;
	for (uint32_t r = 0; r < SYNTH_MAX_RECORDS; r++) {
		const struct synth_rec *rec = &h->recs[r];
		struct kvmig_record *o;

		if (rec->state == KVMIG_REC_NONE)
			continue;
		if (k++ >= max)
			continue;
		o = &out[k - 1];
		memset(o, 0, sizeof(*o));
		o->id = rec->id;
		o->role = (enum kvmig_record_role)rec->role;
		o->state = (enum kvmig_record_state)rec->state;
		o->move = (int)rec->move;
		o->peer_pager = rec->peer_pager;
		memcpy(o->peer_addr, rec->peer_addr, sizeof(o->peer_addr));
		o->peer_addr[sizeof(o->peer_addr) - 1] = '\0';
		o->owner_pid = rec->owner && rec->owner <= SYNTH_MAX_HOLDERS ?
			h->holders[rec->owner - 1].pid : 0;
		o->created = rec->created;
		for (uint32_t i = 0; i < h->max_seqs; i++)
			o->n_seqs += s->slots[i].state == SLOT_USED && s->slots[i].rec == r + 1;
	}
	synth_unlock(s);
	*n = k;
	return k > max ? -ENOBUFS : 0;
}

int synth_gc(void *impl, struct kvmig_gc_stats *st)
{
	struct synth *s = impl;
	int ret;

	if ((ret = synth_lock(s)) < 0)
		return ret;
	synth_reap(s, st);
	for (uint32_t r = 0; st && r < SYNTH_MAX_RECORDS; r++)
		st->in_doubt += s->hdr->recs[r].state != KVMIG_REC_NONE && !s->hdr->recs[r].owner;
	synth_unlock(s);
	return 0;
}
