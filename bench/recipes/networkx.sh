#!/usr/bin/env bash
# Recipe for the test suite of networkx==3.6.1 (its sdist, with numpy and scipy): 6,848 tests
# in 266 files over nested packages, some of several seconds (issue 13). Same contract as
# ../../../shared/bench/realsuites: Usage: networkx.sh EMPTY_DIR VENV_PATH; prints the unpacked
# source directory, then the pytest command to run from there (everything else to stderr).
set -euo pipefail
W=$(cd "$1" && pwd)
V=$2
[ -x "$V/bin/python" ] || python3 -m venv "$V" >&2
V=$(cd "$V" && pwd)
cd "$W"
"$V/bin/python" -m pip download --no-binary :all: --no-deps -q -d "$W" "networkx==3.6.1" >&2
tar xzf "$W"/networkx-3.6.1.tar.gz
"$V/bin/python" -m pip install -q "$W/networkx-3.6.1" numpy scipy "pytest==9.2.0" "pytest-xdist==3.8.0" >&2
echo "$W/networkx-3.6.1"
echo "pytest -p no:cacheprovider networkx"
