/* SPDX-License-Identifier: MIT */
/* tools/token.h - secrets from files, for kvmig and kvmigd. */
#ifndef KVMIG_TOOLS_TOKEN_H
#define KVMIG_TOOLS_TOKEN_H

#include <stddef.h>

/*
 * The secret in @path: owner-only (no group / other bits), 16 bytes to
 * @cap - 1, trailing newlines dropped. Return: 0 and *len, or -1 with one
 * sentence in @why.
 */
int token_read(const char *path, char *buf, size_t cap, size_t *len, char *why, size_t whylen);

#endif
