/* SPDX-License-Identifier: MIT */
/*
 * transport/auth.c - proving a shared secret right after the HELLOs
 * (docs/SECURITY.md): each side sends a random nonce and proves it holds
 * the secret with an HMAC-SHA-256 over the role and both nonces, before the
 * sender pauses or registers anything. The secret never travels.
 */
#include <string.h>

#include <sodium.h>

#include "transport/session.h"
#include "util/internal.h"

int session_auth_agree(struct session *ses, const struct kvmig_msg_hello *peer)
{
	int theirs = !!(peer->flags & KVMIG_HELLO_AUTH);

	if (theirs == ses->auth)
		return 0;
	return kvmig_err(-EKEYREJECTED, "the peer %s a shared secret but this side %s: both need the "
			 "same --token-file, or neither", theirs ? "uses" : "does not use",
			 ses->auth ? "has one" : "has none");
}

int session_auth_challenge(struct session *ses)
{
	randombytes_buf(ses->nonce, sizeof(ses->nonce));
	return kvmig_wire_put_auth(&ses->wb, KVMIG_MSG_AUTH_CHALLENGE, ses->nonce);
}

int session_auth_take_challenge(struct session *ses)
{
	struct xport_msg *m = NULL;
	int ret = session_wait_msg(ses, -1, &m);

	if (ret < 0)
		return ret;
	if (m->hdr.type != KVMIG_MSG_AUTH_CHALLENGE)
		ret = session_unexpected(m, "AUTH_CHALLENGE");
	else
		ret = kvmig_wire_get_auth(m->payload, m->hdr.len, ses->peer_nonce);
	session_msg_free(&m);
	return ret;
}

/* HMAC-SHA-256(key, role label || the challenged side's nonce || the other's). */
static void proof_of(const struct session *ses, enum session_role role, const uint8_t *challenged,
		     const uint8_t *other, uint8_t out[KVMIG_AUTH_LEN])
{
	static const char *const label[2] = { "kvmig-v1 sender proof", "kvmig-v1 receiver proof" };
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, ses->key, sizeof(ses->key));
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)label[role], strlen(label[role]) + 1);
	crypto_auth_hmacsha256_update(&st, challenged, KVMIG_AUTH_LEN);
	crypto_auth_hmacsha256_update(&st, other, KVMIG_AUTH_LEN);
	crypto_auth_hmacsha256_final(&st, out);
}

int session_auth_prove(struct session *ses, enum session_role role)
{
	uint8_t p[KVMIG_AUTH_LEN];

	/* Over the nonce the peer chose, so it cannot be replayed elsewhere. */
	proof_of(ses, role, ses->peer_nonce, ses->nonce, p);
	return kvmig_wire_put_auth(&ses->wb, KVMIG_MSG_AUTH_PROOF, p);
}

int session_auth_check(struct session *ses, enum session_role peer_role)
{
	uint8_t want[KVMIG_AUTH_LEN], got[KVMIG_AUTH_LEN];
	struct xport_msg *m = NULL;
	int ret = session_wait_msg(ses, -1, &m);

	if (ret < 0)
		return ret;
	if (m->hdr.type != KVMIG_MSG_AUTH_PROOF)
		ret = session_unexpected(m, "AUTH_PROOF");
	else
		ret = kvmig_wire_get_auth(m->payload, m->hdr.len, got);
	session_msg_free(&m);
	if (ret < 0)
		return ret;
	proof_of(ses, peer_role, ses->nonce, ses->peer_nonce, want);
	if (crypto_verify_32(want, got) != 0)
		return kvmig_err(-EKEYREJECTED, "the %s did not prove it holds the shared secret (wrong "
				 "--token-file)", role_name(peer_role));
	return 0;
}
