#!/usr/bin/env bash
# Recipe for the test suite of more-itertools==11.2.1 (its sdist): 765 tests and 21,194
# subtests, many short results (issue 13). Same contract as ../../../shared/bench/realsuites:
# Usage: more-itertools.sh EMPTY_DIR VENV_PATH; prints the unpacked source directory, then
# the pytest command to run from there (everything else goes to stderr).
set -euo pipefail
W=$(cd "$1" && pwd)
V=$2
[ -x "$V/bin/python" ] || python3 -m venv "$V" >&2
V=$(cd "$V" && pwd)
cd "$W"
"$V/bin/python" -m pip download --no-binary :all: --no-deps -q -d "$W" "more-itertools==11.2.1" >&2
tar xzf "$W"/more_itertools-11.2.1.tar.gz
"$V/bin/python" -m pip install -q "$W/more_itertools-11.2.1" "pytest==9.2.0" "pytest-xdist==3.8.0" >&2
echo "$W/more_itertools-11.2.1"
echo "pytest -p no:cacheprovider tests"
