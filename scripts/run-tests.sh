#!/bin/sh
# Run every meson suite and end with one plain summary line.
set -u
build=${1:-build}
meson test -C "$build" --print-errorlogs
rc=$?
/usr/bin/python3 - "$build/meson-logs/testlog.json" <<'PY'
import json, sys
res = [json.loads(l)["result"] for l in open(sys.argv[1]) if l.strip()]
ok = sum(r == "OK" for r in res)
skip = sum(r == "SKIP" for r in res)
print("tests: %d passed, %d failed, %d skipped" % (ok, len(res) - ok - skip, skip))
PY
exit $rc
