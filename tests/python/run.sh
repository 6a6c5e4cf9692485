#!/bin/sh
# Run the Python package's tests (python/tests) against one build's library.
#   run.sh PYTHON_DIR LIBKVMIG_SO
# Exit 77 (skipped) only when Debian's python3-numpy or python3-pytest is
# not installed; `make check` installs both.
set -u
dir=$1
export KVMIG_LIB="$2"
export PYTHONPATH="$dir:$dir/tests"
export PYTHONDONTWRITEBYTECODE=1
if ! /usr/bin/python3 -c 'import numpy, pytest' 2>/dev/null; then
	echo "python3-numpy or python3-pytest is not installed: skipped" >&2
	exit 77
fi
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider --ignore="$dir/tests/test_agent.py" "$dir/tests"
