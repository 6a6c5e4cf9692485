/* SPDX-License-Identifier: MIT */
/*
 * tests/fuzz/fuzz_manifest.c - libFuzzer target for the strict manifest
 * parser (cas/manifest.c). Whatever the bytes, the parser returns a
 * manifest or an error with a message; a manifest it accepts serializes to
 * canonical JSON that parses again to the same canonical bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <kvmig/kvmig.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kvmig_manifest *m = NULL, *m2 = NULL;
	char *j1 = NULL, *j2 = NULL;
	size_t l1 = 0, l2 = 0;
	int ret = kvmig_manifest_parse((const char *)data, size, &m);

	if (ret < 0) {
		if (!kvmig_last_error()[0])
			abort(); /* every refusal says why */
		return 0;
	}
	if (kvmig_manifest_serialize(m, &j1, &l1) != 0 || kvmig_manifest_parse(j1, l1, &m2) != 0 ||
	    kvmig_manifest_serialize(m2, &j2, &l2) != 0 || l1 != l2 || memcmp(j1, j2, l1))
		abort(); /* canonical form must round-trip */
	free(j1);
	free(j2);
	kvmig_manifest_free(&m);
	kvmig_manifest_free(&m2);
	return 0;
}
