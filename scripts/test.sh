#!/bin/sh
# Set up everything (scripts/setup.sh --test), run the whole test suite, then
# prove the Debian package on a clean Debian 12 root (scripts/prove-package.sh)
# and on Raspberry Pi OS-like bookworm and trixie roots with the system's
# picamera2 stack (scripts/prove-pi.sh; the roots are cached under
# /var/cache/rpistream-roots), as root or through sudo. Every test of a hot
# path runs against both the compiled extension and its pure-Python twin.
# Extra arguments go to pytest. The arm64 proof under emulation (scripts/
# prove-pi.sh trixie arm64: ~20 min for the root from cold, ~27 to build and
# serve, ~18 for the ring, RTP and FEC tests) would not fit CI's time with the
# rest: RPISTREAM_ARM64=1 adds it.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh --test
.venv/bin/python -m pytest "$@"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO ./scripts/prove-package.sh
$SUDO ./scripts/prove-pi.sh bookworm amd64
$SUDO ./scripts/prove-pi.sh trixie amd64
if [ "${RPISTREAM_ARM64:-}" = 1 ]; then
    $SUDO ./scripts/prove-pi.sh trixie arm64
fi
