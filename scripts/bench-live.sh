#!/usr/bin/env bash
# scripts/bench-live.sh - run `kvmig bench --live --json` (stop-and-copy
# against live migration while a decoding engine writes, for several cache
# sizes) and turn its output into docs/live-bench.svg and a Markdown table
# on stdout (the one in README.md).
#
#   scripts/bench-live.sh [BUILD_DIR] [kvmig bench --live options...]
#   scripts/bench-live.sh --from FILE.jsonl     # re-plot a saved run
#
# Needs python3 (standard library only) for the plot.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/docs/live-bench.svg
if [[ ${1:-} == --from ]]; then
	data=$2
else
	build=${1:-$root/build}
	[[ $# -gt 0 ]] && shift
	data=$root/docs/live-bench.jsonl
	"$build/tools/kvmig" bench --live --json "$@" | tee "$data" >&2
fi
python3 "$root/scripts/plot_live.py" "$data" "$out"
echo "plot: $out" >&2
