#!/bin/sh
# tests/fuzz/run.sh FUZZER SEEDS CRASHES SECONDS - run a libFuzzer target
# for a bounded time on a scratch copy of its seed corpus (so the repository
# is never written), print how many inputs it executed, and fail on any
# crash, leak or sanitizer report. A crashing input is left in
# CRASHES/crash-<sha1>; commit it there and it is replayed as a regression
# by every build (tests "replay wire" / "replay manifest").
set -u
fz=$1 seeds=$2 crashes=$3 secs=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$seeds"/* "$work/"
"$fz" -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=1024 \
	-artifact_prefix="$crashes/" "$work" > "$work.log" 2>&1
rc=$?
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work.log")
echo "$(basename "$fz"): ${runs:-?} executions (limit $secs s), exit $rc"
[ $rc -eq 0 ] || tail -n 40 "$work.log"
rm -f "$work.log"
exit $rc
