/* SPDX-License-Identifier: MIT */
/*
 * transport/rdma_mr.c - the verbs provider's protection domains and memory
 * registrations: the sender's REMOTE_READ registrations (one per offered
 * run, gone at commit or abort) and the receiver's LOCAL_WRITE ones, cached
 * in the listener's domain for the next migration into the same pager.
 */
#include <stdlib.h>

#include "transport/rdma_internal.h"

/* ---- protection domains ---- */

struct verbs_domain *verbs_domain_new(struct ibv_context *ctx, int cache)
{
	struct verbs_domain *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	if (!(d->pd = ibv_alloc_pd(ctx))) {
		free(d);
		return NULL;
	}
	pthread_mutex_init(&d->lock, NULL);
	d->refs = 1;
	d->cache = cache;
	return d;
}

void verbs_domain_get(struct verbs_domain *d)
{
	pthread_mutex_lock(&d->lock);
	d->refs++;
	pthread_mutex_unlock(&d->lock);
}

/* Deregister what no connection uses (@all: everything, the domain goes);
 * under d->lock (or the last reference). */
static void domain_trim(struct verbs_domain *d, int all)
{
	for (struct verbs_reg **pp = &d->local; *pp;) {
		struct verbs_reg *r = *pp;

		if (r->users && !all) {
			pp = &r->next;
			continue;
		}
		*pp = r->next;
		ibv_dereg_mr(r->mr);
		free(r);
	}
}

void verbs_domain_put(struct verbs_domain **dp)
{
	struct verbs_domain *d = *dp;

	unsigned left;

	*dp = NULL;
	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	left = --d->refs;
	pthread_mutex_unlock(&d->lock);
	if (left)
		return;
	/* No connection is left: registrations a closed connection never
	 * returned (it broke first) go too, or the PD could not be freed. */
	domain_trim(d, 1);
	ibv_dealloc_pd(d->pd);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

/* ---- registration ---- */

int verbs_reg_remote(struct xport_conn *xc, void *base, uint64_t len, struct kvmig_rkey *key,
		     void **handle)
{
	struct verbs_conn *c = to_conn(xc);
	struct verbs_reg *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	/* Remote READ only: the peer can never write here. */
	r->mr = ibv_reg_mr(c->dom->pd, base, len, IBV_ACCESS_REMOTE_READ);
	if (!r->mr) {
		int err = -errno;

		free(r);
		return kvmig_err(err, "cannot register %llu bytes of page memory on %s for "
				 "remote read: %s%s", (unsigned long long)len, c->dev,
				 strerror(-err), err == -ENOMEM ? " (ulimit -l?)" : "");
	}
	r->remote = 1;
	r->users = 1;
	pthread_mutex_lock(&c->dom->lock);
	r->next = c->dom->local;
	c->dom->local = r;
	pthread_mutex_unlock(&c->dom->lock);
	/* The key on the wire: the rkey, big-endian. */
	key->len = 4;
	for (int i = 0; i < 4; i++)
		key->b[i] = (uint8_t)(r->mr->rkey >> (24 - 8 * i));
	*handle = r;
	return 0;
}

int verbs_reg_local(struct xport_conn *xc, void *base, uint64_t len, void **handle)
{
	struct verbs_conn *c = to_conn(xc);
	struct verbs_domain *d = c->dom;
	struct verbs_reg *r;

	pthread_mutex_lock(&d->lock);
	for (r = d->local; r; r = r->next) {
		if (!r->remote && r->mr->addr == base && r->mr->length == len) {
			r->users++;
			*handle = r;
			pthread_mutex_unlock(&d->lock);
			return 1; /* registered by an earlier migration on this listener */
		}
	}
	pthread_mutex_unlock(&d->lock);
	if (!(r = calloc(1, sizeof(*r))))
		return -ENOMEM;
	r->mr = ibv_reg_mr(d->pd, base, len, IBV_ACCESS_LOCAL_WRITE);
	if (!r->mr) {
		int err = -errno;

		free(r);
		return kvmig_err(err, "cannot register %llu bytes of destination memory on %s: %s%s",
				 (unsigned long long)len, c->dev, strerror(-err),
				 err == -ENOMEM ? " (ulimit -l?)" : "");
	}
	r->users = 1;
	pthread_mutex_lock(&d->lock);
	/* Another receiver may have registered the same memory meanwhile: one
	 * registration each, or the cache would pin it twice. */
	for (struct verbs_reg *o = d->local; o; o = o->next) {
		if (!o->remote && o->mr->addr == base && o->mr->length == len) {
			o->users++;
			*handle = o;
			pthread_mutex_unlock(&d->lock);
			ibv_dereg_mr(r->mr);
			free(r);
			return 1;
		}
	}
	r->next = d->local;
	d->local = r;
	pthread_mutex_unlock(&d->lock);
	*handle = r;
	return 0;
}

void verbs_dereg(struct xport_conn *xc, void **handle)
{
	struct verbs_domain *d = to_conn(xc)->dom;

	if (!handle || !*handle)
		return;
	pthread_mutex_lock(&d->lock);
	for (struct verbs_reg *r = d->local; r; r = r->next) {
		if (r == *handle) {
			r->users--;
			if (!d->cache || r->remote)
				domain_trim(d, 0);
			break;
		}
	}
	pthread_mutex_unlock(&d->lock);
	*handle = NULL; /* or not ours: already gone with its domain */
}

void verbs_listener_forget(struct xport_listener *xl)
{
	struct verbs_listener *l = kvmig_container_of(xl, struct verbs_listener, base);
	struct verbs_domain *d = __atomic_load_n(&l->dom, __ATOMIC_ACQUIRE);

	if (d) {
		pthread_mutex_lock(&d->lock);
		domain_trim(d, 0);
		pthread_mutex_unlock(&d->lock);
	}
}

/* ---- reads ---- */

uint32_t verbs_local_key(const struct verbs_conn *c, const void *p, uint32_t len)
{
	const uint8_t *b = p;
	uint32_t key = 0;

	pthread_mutex_lock(&c->dom->lock);
	for (const struct verbs_reg *r = c->dom->local; r; r = r->next) {
		const uint8_t *base = r->mr->addr;

		if (r->remote)
			continue;
		if (b >= base && b + len <= base + r->mr->length) {
			key = r->mr->lkey;
			break;
		}
	}
	pthread_mutex_unlock(&c->dom->lock);
	return key;
}
