#!/bin/sh
# Set up everything (scripts/setup.sh --test), run the whole test suite, then
# prove the Debian package on a clean Debian 12 root (scripts/prove-package.sh,
# as root or through sudo). Every test of a hot path runs against both the
# compiled extension and its pure-Python twin. Extra arguments go to pytest.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh --test
.venv/bin/python -m pytest "$@"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
exec $SUDO ./scripts/prove-package.sh
