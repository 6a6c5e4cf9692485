#!/bin/sh
# Run every meson suite of BUILD, then (if given) the unit, headers and
# integration and agent suites of the sanitizer build ASAN_BUILD, the fuzz suite of
# FUZZ_BUILD and the unit, headers and integration suites of MIN_BUILD (a
# build without rdma-core and liburing); end with one plain summary line per
# build.
#   run-tests.sh BUILD [ASAN_BUILD [FUZZ_BUILD [MIN_BUILD]]]
set -u
build=${1:-build}
asan=${2:-}
fuzz=${3:-}
min=${4:-}
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
		meson test -C "$asan" --print-errorlogs --suite unit --suite headers --suite integration --suite agent
	rc2=$?
	s2=$(summary "$asan" "tests under ASan+UBSan")
fi
rc3=0
if [ -n "$fuzz" ]; then
	meson test -C "$fuzz" --print-errorlogs --suite fuzz
	rc3=$?
	s3=$(summary "$fuzz" "fuzz targets (libFuzzer, ASan+UBSan)")
	execs=$(grep -ho 'fuzz_[a-z]*: [0-9?]* executions' "$fuzz/meson-logs/testlog.txt" | tr '\n' ';')
fi
rc4=0
if [ -n "$min" ]; then
	meson test -C "$min" --print-errorlogs --suite unit --suite headers --suite integration
	rc4=$?
	s4=$(summary "$min" "tests without rdma-core and liburing")
fi
echo "$s1"
[ -n "$asan" ] && echo "$s2"
[ -n "$fuzz" ] && echo "$s3: $execs"
[ -n "$min" ] && echo "$s4 ($("$min/tools/kvmig" --version | tail -1))"
[ $rc -eq 0 ] && [ $rc2 -eq 0 ] && [ $rc3 -eq 0 ] && [ $rc4 -eq 0 ]
