#!/bin/sh
# Run every meson suite of BUILD, then (if given) the unit, headers and
# integration suites of the sanitizer build ASAN_BUILD; end with one plain
# summary line per build.
#   run-tests.sh BUILD [ASAN_BUILD]
set -u
build=${1:-build}
asan=${2:-}
summary() {
	/usr/bin/python3 - "$1/meson-logs/testlog.json" "$2" <<'PY'
import json, sys
res = [json.loads(l)["result"] for l in open(sys.argv[1]) if l.strip()]
ok = sum(r == "OK" for r in res)
skip = sum(r == "SKIP" for r in res)
print("%s: %d passed, %d failed, %d skipped" % (sys.argv[2], ok, len(res) - ok - skip, skip))
PY
}
meson test -C "$build" --print-errorlogs
rc=$?
s1=$(summary "$build" tests)
rc2=0
if [ -n "$asan" ]; then
	# halt on the first report, so a sanitizer finding fails its test
	ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=1 \
	UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1 \
		meson test -C "$asan" --print-errorlogs --suite unit --suite headers --suite integration
	rc2=$?
	s2=$(summary "$asan" "tests under ASan+UBSan")
fi
echo "$s1"
[ -n "$asan" ] && echo "$s2"
[ $rc -eq 0 ] && [ $rc2 -eq 0 ]
