#!/bin/sh
# Set up everything (scripts/setup.sh --test), run the whole test suite, then
# prove the Debian package on a clean Debian 12 root (scripts/prove-package.sh)
# and on Raspberry Pi OS-like roots with the system's picamera2 stack
# (scripts/prove-pi.sh): bookworm and trixie on amd64, and trixie on arm64
# under qemu. As root or through sudo. Every test of a hot path runs against
# both the compiled extension and its pure-Python twin. Extra arguments go to
# pytest.
#
# The arm64 root and package take most of their time in emulation on one CPU:
# they are built from the start, at the lowest CPU and I/O priority, beside the
# rest (which gets the CPUs first), and proven at the end. Roots and packages
# are cached under /var/cache/rpistream-roots, keyed by what went into them.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh --test
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

ARM64_LOG=$(mktemp /tmp/rpistream-arm64-build.XXXXXX)
# In a process group of its own, so that a failure here stops all of it.
# setsid puts it in an autogroup of its own (sched_autogroup_enabled, Debian's
# default), which the scheduler shares the CPUs with fairly whatever its
# processes' nice: only the group's own nice lowers it (sched(7)), set from
# inside, once setsid has made the group. Without it the build took a CPU from
# the browser tests (VP8 streams fell to 5 fps in CI).
$SUDO setsid sh -c '{ echo 19 > /proc/self/autogroup; } 2>/dev/null
    exec nice -n 19 ionice -c 3 ./scripts/prove-pi.sh trixie arm64 build' > "$ARM64_LOG" 2>&1 &
ARM64_BUILD=$!
# procps' kill: dash's own takes no process group ("Illegal number: -").
trap '$SUDO /bin/kill -TERM -- "-$ARM64_BUILD" 2>/dev/null || true' EXIT

.venv/bin/python -m pytest "$@"
$SUDO ./scripts/prove-package.sh
$SUDO ./scripts/prove-pi.sh bookworm amd64
$SUDO ./scripts/prove-pi.sh trixie amd64
echo "test: waiting for the arm64 build (log: $ARM64_LOG)"
wait "$ARM64_BUILD" || { cat "$ARM64_LOG"; echo "test: the arm64 build failed" >&2; exit 1; }
cat "$ARM64_LOG"
rm -f "$ARM64_LOG"
$SUDO ./scripts/prove-pi.sh trixie arm64
