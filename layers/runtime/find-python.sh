#!/bin/sh
# Prints the path of a CPython VERSION interpreter (a final release) that can compile the layer's bytecode,
# or prints nothing and exits 1.
#
#   sh find-python.sh VERSION EXPLICIT [CANDIDATE...]
#
# EXPLICIT (LAYER_PYTHON=...) wins: when it is not empty it is the only interpreter tried, so a wrong choice
# fails the build instead of being replaced quietly. Otherwise the first that qualifies of: the CANDIDATEs (the
# Makefile passes $(PYTHON): in `sam build --use-container` that is the python3.13 build image's own), then
# pythonVERSION on PATH, pyenv's VERSION.* builds (newest first), and uv's managed VERSION (`uv python find`
# only looks, it never downloads).
#
# Why the minor version must match: a .pyc file carries its interpreter's magic number, and the runtime ignores
# one with another number and compiles the source again, in memory, at every cold start (/opt is read-only).
# The number is fixed for all final releases of a minor version, so any 3.13.x compiles for any other.
set -u

version=${1:?usage: find-python.sh VERSION EXPLICIT [CANDIDATE...]}
explicit=${2-}
if [ $# -ge 2 ]; then shift 2; else shift $#; fi

qualifies() {
    [ -n "$1" ] || return 1
    "$1" -c "import sys; sys.exit(not (sys.implementation.name == 'cpython' and sys.version_info.releaselevel == 'final' and '%d.%d' % sys.version_info[:2] == '$version'))" 2>/dev/null
}

found() {
    "$1" -c 'import sys; print(sys.executable)'
    exit 0
}

if [ -n "$explicit" ]; then
    qualifies "$explicit" && found "$explicit"
    exit 1
fi

for candidate in "$@" "python$version"; do
    qualifies "$candidate" && found "$candidate"
done

pyenv_root=${PYENV_ROOT:-${HOME:-/root}/.pyenv}
for candidate in $(ls -d "$pyenv_root/versions/$version".* 2>/dev/null | sort -rV); do
    qualifies "$candidate/bin/python$version" && found "$candidate/bin/python$version"
done

if command -v uv >/dev/null 2>&1; then
    candidate=$(uv python find --no-python-downloads "$version" 2>/dev/null) && qualifies "$candidate" && found "$candidate"
fi
exit 1
