/* SPDX-License-Identifier: MIT */
/*
 * util/fault.c - test-only fault injection. Built only with
 * -Dfault_injection=true in a non-release build (see meson_options.txt);
 * otherwise kvmig_fault() is an inline 0 and this file is empty.
 *
 * $KVMIG_FAULT is a comma-separated list of "point" or "point:N". The
 * points are listed in docs/TESTING.md.
 */
#include <stdlib.h>
#include <string.h>

#include "util/internal.h"

#ifdef KVMIG_FAULT_INJECTION
int kvmig_fault(const char *point, uint64_t *arg)
{
	const char *s = getenv("KVMIG_FAULT");
	size_t pl = strlen(point);

	while (s && *s) {
		size_t n = strcspn(s, ",");

		if (n >= pl && !strncmp(s, point, pl) && (n == pl || s[pl] == ':')) {
			if (arg)
				*arg = n > pl ? strtoull(s + pl + 1, NULL, 10) : 0;
			return 1;
		}
		s += n + (s[n] == ',');
	}
	return 0;
}
#endif
