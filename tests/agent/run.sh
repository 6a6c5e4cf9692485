#!/bin/sh
# Run the agent's tests (python/tests/test_agent.py): two kvmigd processes
# over two shm pagers, driven with curl and kvmig.Client.
#   run.sh PYTHON_DIR LIBKVMIG_SO KVMIG KVMIGD
# Exit 77 (skipped) only when Debian's python3-pytest, python3-numpy,
# python3-prometheus-client or curl is not installed; `make check` installs them.
set -u
dir=$1
export KVMIG_LIB="$2" KVMIG_BIN="$3" KVMIGD_BIN="$4"
export PYTHONPATH="$dir:$dir/tests"
export PYTHONDONTWRITEBYTECODE=1
if ! /usr/bin/python3 -c 'import pytest, prometheus_client, numpy' 2>/dev/null || ! command -v curl >/dev/null; then
	echo "python3-pytest, python3-numpy, python3-prometheus-client or curl is not installed: skipped" >&2
	[ "${CI:-}" = true ] && exit 1 # CI installs them (scripts/install-deps.sh --tests)
	exit 77
fi
# A sanitizer build: Python loads the instrumented library with the ASan
# runtime preloaded (its own leaks not reported); each kvmigd runs with
# leak detection and halts on the first report (the test fails then).
if ldd "$KVMIG_LIB" | grep -q libasan; then
	export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
	export KVMIGD_ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1"
	export ASAN_OPTIONS="detect_leaks=0"
fi
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider "$dir/tests/test_agent.py"
