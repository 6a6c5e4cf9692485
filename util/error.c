/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <kvmig/common.h>

#include "util/internal.h"

static _Thread_local char last_error[1024];

const char *kvmig_last_error(void)
{
	return last_error;
}

void kvmig_clear_error(void)
{
	last_error[0] = '\0';
}

int kvmig_err(int code, const char *fmt, ...)
{
	char msg[sizeof(last_error)];
	va_list ap;

	/* Into a copy first: the arguments may quote the last error itself. */
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	memcpy(last_error, msg, sizeof(msg));
	return code;
}

int kvmig_err_prefix(int code, const char *fmt, ...)
{
	char prev[sizeof(last_error)];
	char prefix[256];
	va_list ap;

	memcpy(prev, last_error, sizeof(prev));
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	/* Truncation of an over-long message is acceptable; join by hand so the
	 * compiler need not prove it cannot happen. */
	const char *tail = prev[0] ? prev : strerror(-code);
	size_t n = strlen(prefix);

	memcpy(last_error, prefix, n);
	if (n + 2 < sizeof(last_error)) {
		memcpy(last_error + n, ": ", 2);
		n += 2;
	}
	size_t t = KVMIG_MIN(strlen(tail), sizeof(last_error) - 1 - n);
	memcpy(last_error + n, tail, t);
	last_error[n + t] = '\0';
	return code;
}

void kvmig_err_save(struct kvmig_err_saved *k)
{
	snprintf(k->msg, sizeof(k->msg), "%s", last_error);
}

int kvmig_err_restore(const struct kvmig_err_saved *k, int code)
{
	snprintf(last_error, sizeof(last_error), "%s", k->msg);
	return code;
}
