#!/bin/sh
# The shared library must export exactly the functions the public headers
# declare with KVMIG_API: no internal symbol leaks, none is missing.
set -eu
lib=$1
incdir=$2
want=$(grep -h 'KVMIG_API' "$incdir"/*.h | grep -o 'kvmig_[a-z0-9_]*(' | tr -d '(' | sort -u)
have=$(nm -D --defined-only "$lib" | awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' | sort -u)
if [ "$want" != "$have" ]; then
	echo "exported symbols differ from the KVMIG_API declarations:"
	printf '%s\n' "$want" > /tmp/kvmig-want.$$
	printf '%s\n' "$have" > /tmp/kvmig-have.$$
	diff /tmp/kvmig-want.$$ /tmp/kvmig-have.$$ || true
	rm -f /tmp/kvmig-want.$$ /tmp/kvmig-have.$$
	exit 1
fi
echo "$(printf '%s\n' "$have" | wc -l) symbols exported, matching the headers"
