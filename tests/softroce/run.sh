#!/bin/sh
# tests/softroce/run.sh BUILD [suite|bench] - boot one qemu guest with two
# soft-RoCE devices (boot.sh) and run suite.sh (the meson "softroce" suite,
# the default) or bench.sh inside it.
# Exit 77 (skip) only when qemu, the kernel or busybox is missing, and never
# under CI (CI=true): CI installs them (scripts/install-deps.sh).
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$1" && pwd)
what=${2:-suite}
case $what in suite | bench) ;; *) echo "usage: run.sh BUILD [suite|bench]" >&2; exit 2 ;; esac
cmd=$build/softroce-$what.sh
printf 'exec sh %s/%s.sh %s\n' "$here" "$what" "$build" > "$cmd"
"$here/boot.sh" "$build/softroce" "$cmd" 1500
rc=$?
if [ $rc -eq 77 ] && [ "${CI:-}" = true ]; then
	echo "softroce: CI must run this suite; scripts/install-deps.sh installs what it needs" >&2
	exit 1
fi
exit $rc
