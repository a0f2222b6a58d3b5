#!/bin/sh
# Prove the package on a Raspberry Pi OS-like root (scripts/pi-root.sh):
#
#   scripts/prove-pi.sh SUITE ARCH [build]   SUITE bookworm|trixie, ARCH amd64|arm64
#
#  1. rpistream's .deb built in a fresh copy of the cached root, with its own
#     packaging: the checkout's tracked files, apt-get build-dep,
#     dpkg-buildpackage (pip reaches PyPI). The .deb is cached under
#     /var/cache/rpistream-roots/deb-SUITE-ARCH-KEY/, KEY a hash of the root
#     and of every tracked file: a later run with the same KEY installs it
#     without building. With `build`, the script stops here (scripts/test.sh
#     builds the arm64 package beside the amd64 work this way);
#  2. apt installs it in another fresh copy of the root (no build
#     dependencies there); rpistream's environment imports picamera2,
#     simplejpeg and numpy, numpy being the system's;
#  3. `rpistream check` says picamera2 works but finds no camera;
#  4. tests/picamera2_probe.py: picamera2's real LibavH264Encoder feeding
#     rpistream's ring, only the camera faked, under the installed Python;
#  5. the unit's ExecStart as the rpistream user in a network namespace with
#     only loopback serves the test pattern, and tests/package_probe.py (this
#     machine's .venv) decodes frames;
#  6. arm64 only: tests/test_ring.py, test_rtp.py and test_fec.py, [c] and
#     [py], under the installed arm64 build, inside the root.
#
# Needs root, scripts/setup.sh --test, and for arm64 qemu-user-static. The
# root copies, their mounts and the namespace are removed on exit
# (RPISTREAM_KEEP=1 keeps the directory). apt's and pip's downloads are cached
# under /var/cache/rpistream-roots/ between runs.
set -eu
# All of it in one function, read whole before it runs: editing this file
# while a build runs cannot change what that build does.
main() {
cd "$(dirname "$0")/.."
CHECKOUT=$(pwd)
SUITE=${1:-}
ARCH=${2:-}
MODE=${3:-prove}
PYTHON="$CHECKOUT/.venv/bin/python"
PORT=8080  # the conffile's default
SERVER_TIMEOUT=10  # seconds for the server to exit after SIGTERM
CACHE=/var/cache/rpistream-roots
VENV=/usr/lib/rpistream

say() { printf '\nprove-pi %s %s: %s\n' "$SUITE" "$ARCH" "$*"; }
fail() { printf 'prove-pi %s %s: FAILED: %s\n' "$SUITE" "$ARCH" "$*" >&2; exit 1; }

case "$SUITE/$ARCH/$MODE" in bookworm/amd64/*|bookworm/arm64/*|trixie/amd64/*|trixie/arm64/*) ;;
    *) fail "usage: $0 bookworm|trixie amd64|arm64 [build]" ;; esac
case "$MODE" in build|prove) ;; *) fail "usage: $0 bookworm|trixie amd64|arm64 [build]" ;; esac
[ "$(id -u)" -eq 0 ] || fail "run as root: chroot, mount and ip netns need it"

# Under qemu everything runs some 5-20 times slower: the server gets longer to
# start and a smaller picture to encode, the probes longer to finish.
if [ "$ARCH" = arm64 ]; then
    SLOW=1; SERVER_TIMEOUT=60; PROBE_OPTS="--start-timeout 300 --frames 30 --frames-timeout 120"
    PICAMERA2_PROBE_OPTS="--timeout 600 --size 320x240"
else
    SLOW=""; PROBE_OPTS=""; PICAMERA2_PROBE_OPTS=""
fi

STARTED=$(date +%s)
elapsed() { echo "$(( $(date +%s) - STARTED )) s"; }
TARBALL=$(./scripts/pi-root.sh "$SUITE" "$ARCH") || fail "scripts/pi-root.sh $SUITE $ARCH"

WORK=$(mktemp -d /var/tmp/rpistream-pi.XXXXXX)
ROOT=""
NETNS="rpistream-pi-$$"
SERVER_PID=""
MOUNTS="var/cache/apt/archives var/cache/rpistream-pip proc dev/pts"
unmount_root() {
    [ -n "$ROOT" ] || return 0
    for mount in $MOUNTS; do
        ! mountpoint -q "$ROOT/$mount" 2>/dev/null || umount -l "$ROOT/$mount"
    done
}
cleanup() {
    status=$?
    [ -z "$SERVER_PID" ] || kill "$SERVER_PID" 2>/dev/null || true
    ip netns delete "$NETNS" 2>/dev/null || true
    unmount_root
    if [ "${RPISTREAM_KEEP:-}" = 1 ]; then
        echo "prove-pi: kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fresh_root() {  # a new copy of the cached root in $WORK/$1, as $ROOT
    unmount_root
    ROOT="$WORK/$1"
    mkdir "$ROOT"
    tar -xf "$TARBALL" -C "$ROOT" || fail "unpacking $TARBALL"
    mkdir -p "$CACHE/apt-$SUITE-$ARCH/partial" "$CACHE/pip-$SUITE-$ARCH" "$ROOT/var/cache/rpistream-pip"
    mount -t proc proc "$ROOT/proc"
    mount --bind /dev/pts "$ROOT/dev/pts"
    mount --bind "$CACHE/apt-$SUITE-$ARCH" "$ROOT/var/cache/apt/archives"
    mount --bind "$CACHE/pip-$SUITE-$ARCH" "$ROOT/var/cache/rpistream-pip"
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    # pip in the root trusts what this machine's pip trusts.
    cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/rpistream-host-ca.crt"
    in_root apt-get update -qq > "$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log"; fail "apt-get update"; }
    # man-db (debhelper brings it) re-indexes every manual page after each
    # install: minutes under qemu, of no use in a throwaway root.
    echo "man-db man-db/auto-update boolean false" | in_root debconf-set-selections \
        || fail "debconf-set-selections"
}
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
                DEBIAN_FRONTEND=noninteractive HOME=/root \
                PIP_CERT=/etc/ssl/certs/rpistream-host-ca.crt PIP_DEFAULT_TIMEOUT=180 \
                PIP_CACHE_DIR=/var/cache/rpistream-pip PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"; }

# --- 1: the package, built with rpistream's packaging (or cached) -------------------------
DEB_KEY=$( { basename "$TARBALL"; git ls-files -z | xargs -0 sha256sum; } | sha256sum | cut -c1-16)
DEBS="$CACHE/deb-$SUITE-$ARCH-$DEB_KEY"
# One builder per SUITE-ARCH at a time: a second run waits, then takes its .deb.
exec 8>"$CACHE/deb-$SUITE-$ARCH.lock"
flock -w 5400 8 || fail "another build of the $SUITE $ARCH package held the lock for 90 min"
if [ -d "$DEBS" ]; then
    say "built before from the same files: $DEBS"
else
    fresh_root build
    mkdir -p "$ROOT/build/rpistream"
    git ls-files -z | xargs -0 tar -c | tar -x -C "$ROOT/build/rpistream"
    say "apt-get build-dep (Build-Depends of debian/control)"
    in_root apt-get build-dep -y -qq --no-install-recommends /build/rpistream \
        > "$WORK/build-dep.log" 2>&1 || { tail -n 30 "$WORK/build-dep.log"; fail "apt-get build-dep"; }
    say "dpkg-buildpackage in the root (at $(elapsed))"
    # Under qemu, xz-compressing the package takes minutes: gzip there (only the
    # .deb's compression differs; amd64 builds keep dpkg's default).
    COMPRESSOR=""
    [ -z "$SLOW" ] || COMPRESSOR="DPKG_DEB_COMPRESSOR_TYPE=gzip"
    in_root sh -c "cd /build/rpistream && $COMPRESSOR dpkg-buildpackage -us -uc -b" > "$WORK/build.log" 2>&1 \
        || { tail -n 60 "$WORK/build.log"; fail "dpkg-buildpackage in the root"; }
    mkdir "$WORK/debs"
    cp "$ROOT"/build/rpistream_*_"$ARCH".deb "$WORK/debs/" || fail "no rpistream_*_$ARCH.deb built"
    mv "$WORK/debs" "$DEBS"
    for old in "$CACHE/deb-$SUITE-$ARCH"-*; do
        [ "$old" = "$DEBS" ] || [ ! -d "$old" ] || rm -rf "$old"
    done
    say "built (at $(elapsed))"
fi
DEB=$(cd "$DEBS" && ls rpistream_*_"$ARCH".deb)
say "$DEB; Depends: $(dpkg-deb -f "$DEBS/$DEB" Depends)"
exec 8>&-
if [ "$MODE" = build ]; then
    say "package built or cached in $(elapsed)"
    exit 0
fi

# --- 2: install with apt; the environment sees the system's camera stack ------------------
fresh_root install
mkdir -p "$ROOT/build"
cp "$DEBS/$DEB" "$ROOT/build/"
# The checkout's tests/ (for the probes and the arm64 tests), not its rpistream/.
git ls-files -z tests pyproject.toml | xargs -0 tar -c | tar -x -C "$ROOT/build"
say "apt-get install ./$DEB"
in_root apt-get install -y --no-install-recommends "/build/$DEB" > "$WORK/install.log" 2>&1 \
    || { cat "$WORK/install.log"; fail "apt install"; }
TOKEN=$(cat "$ROOT/etc/rpistream/token")
[ -n "$TOKEN" ] || fail "no token generated in /etc/rpistream/token"

say "rpistream's environment: picamera2, simplejpeg, numpy"
in_root "$VENV/bin/python" -c '
import sys
import numpy, simplejpeg, picamera2, av, rpistream
from importlib.metadata import version
print(f"prove-pi: python {sys.version.split()[0]} {sys.executable}")
for name, module in (("numpy", numpy), ("simplejpeg", simplejpeg), ("picamera2", picamera2),
                     ("av", av), ("rpistream", rpistream)):
    print(f"prove-pi:   {name} {version(name)} {module.__file__}")
assert numpy.__file__.startswith("/usr/lib/python3/dist-packages/"), \
    f"numpy is not the system one: {numpy.__file__}"
assert simplejpeg.__file__.startswith("/usr/lib/python3/dist-packages/"), simplejpeg.__file__
assert picamera2.__file__.startswith("/usr/lib/python3/dist-packages/"), picamera2.__file__
jpeg = simplejpeg.encode_jpeg(numpy.zeros((16, 16, 3), dtype=numpy.uint8))
assert simplejpeg.decode_jpeg(jpeg).shape == (16, 16, 3)
' || fail "picamera2, simplejpeg or numpy do not import (or not from the system) in $VENV"

# --- 3: rpistream check -----------------------------------------------------------------
CONFIG="$ROOT/etc/rpistream/config.toml"
sed -i 's|^#ice_hosts = .*|ice_hosts = ["127.0.0.1"]  # edited by prove-pi|' "$CONFIG"
grep -q '^ice_hosts = \["127.0.0.1"\]' "$CONFIG" || fail "could not edit $CONFIG"
if [ -n "$SLOW" ]; then
    # libx264 under qemu cannot encode 1280x720 at 30 fps: the same fallback
    # test pattern, smaller. The default size is proven on amd64.
    printf '\n# edited by prove-pi: qemu is too slow for 720p\n[[camera]]\nsource = "testpattern"\nwidth = 320\nheight = 240\nfps = 15\n' \
        >> "$CONFIG"
fi
say "rpistream check"
in_root runuser -u rpistream -- rpistream check --config /etc/rpistream/config.toml \
    > "$WORK/check.log" 2>&1 || { cat "$WORK/check.log"; fail "rpistream check"; }
cat "$WORK/check.log"
grep -i 'picamera2' "$WORK/check.log" | grep -q 'finds no camera' \
    || fail "rpistream check does not report picamera2 usable with no camera (above)"

# --- 4: picamera2's real encoder into rpistream's ring -----------------------------------
if [ -f tests/picamera2_probe.py ]; then
    say "tests/picamera2_probe.py $PICAMERA2_PROBE_OPTS (at $(elapsed))"
    # shellcheck disable=SC2086
    in_root runuser -u rpistream -- "$VENV/bin/python" /build/tests/picamera2_probe.py \
        $PICAMERA2_PROBE_OPTS || fail "tests/picamera2_probe.py (above)"
else
    say "no tests/picamera2_probe.py in this checkout: skipped"
fi

# --- 5: the service serves; a WHEP client decodes -------------------------------------------
ip netns add "$NETNS"
in_netns() { nsenter --net="/run/netns/$NETNS" "$@"; }
in_netns ip link set lo up
EXEC_START=$(sed -n 's/^ExecStart=//p' "$ROOT/lib/systemd/system/rpistream.service" \
             "$ROOT/usr/lib/systemd/system/rpistream.service" 2>/dev/null | head -n 1)
[ -n "$EXEC_START" ] || fail "no ExecStart= in rpistream.service"
SERVICE_USER="$(in_root id -u rpistream):$(in_root id -g rpistream)"
VIDEO_GID=$(in_root getent group video | cut -d: -f3)
say "ExecStart=$EXEC_START (at $(elapsed))"
in_root install -d -o rpistream -g rpistream /var/lib/rpistream
nsenter --net="/run/netns/$NETNS" \
    chroot --userspec="$SERVICE_USER" --groups="$VIDEO_GID" "$ROOT" \
    env -i PATH=/usr/bin:/bin HOME=/var/lib/rpistream LANG=C.UTF-8 \
    sh -c "cd /var/lib/rpistream && exec $EXEC_START" > "$WORK/serve.log" 2>&1 &
SERVER_PID=$!
# "--": the options first; a token may begin with "-" (older packages made
# URL-safe ones), which argparse would take for an option.
# shellcheck disable=SC2086
in_netns "$PYTHON" tests/package_probe.py $PROBE_OPTS -- "http://127.0.0.1:$PORT" "$TOKEN" \
    || { cat "$WORK/serve.log"; fail "the probe (server log above)"; }
kill -TERM "$SERVER_PID"
waited=0
while kill -0 "$SERVER_PID" 2>/dev/null; do
    [ "$waited" -lt $((SERVER_TIMEOUT * 10)) ] \
        || { cat "$WORK/serve.log"; fail "the server did not exit on SIGTERM"; }
    sleep 0.1
    waited=$((waited + 1))
done
status=0
wait "$SERVER_PID" || status=$?
SERVER_PID=""
[ "$status" -eq 0 ] || { cat "$WORK/serve.log"; fail "the server exited $status"; }
grep -q 'Traceback' "$WORK/serve.log" && { cat "$WORK/serve.log"; fail "a traceback in the server's log"; }
grep -i 'test pattern' "$WORK/serve.log" | head -n 3
echo "prove-pi: served, watched, stopped cleanly on SIGTERM"

# --- 6: arm64: the hot paths' tests on the installed arm64 build -------------------------
if [ "$ARCH" = arm64 ]; then
    # /build holds the checkout's tests/ and pyproject.toml (pytest's
    # settings) but not its rpistream/, so `import rpistream` is the installed
    # package with its arm64 extensions. Debian's pytest and hypothesis (in
    # the root) are seen through the environment's system site-packages.
    # Under emulation the two-thread stress pushes a tenth of its million
    # records and the property tests draw a fifth of their examples: the same
    # checks on a smaller sample, on the compiled modules, the arm64 part
    # (their pure-Python twins ran natively; the tests comparing the two run
    # here too). The twins took half of the 8 minutes these tests took.
    say "pytest tests/test_ring.py tests/test_rtp.py tests/test_fec.py in the root (at $(elapsed))"
    # Bounded: a test that times out may leave a thread that keeps pytest
    # from exiting.
    timeout 2700 chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root \
        RPISTREAM_STRESS_RECORDS=100000 RPISTREAM_EXAMPLES_SCALE=0.2 RPISTREAM_COMPILED_ONLY=1 \
        sh -c "cd /build && $VENV/bin/python -c 'import rpistream.core._ring as r; print(\"prove-pi: testing\", r.__file__)' \
        && exec $VENV/bin/python -m pytest -p no:cacheprovider -q --durations=10 tests/test_ring.py tests/test_rtp.py tests/test_fec.py" \
        || fail "the ring, packetizer and FEC tests on arm64 (above)"
fi
say "all proven in $(elapsed): build, install, camera stack, check, picamera2 probe, serve$([ "$ARCH" = arm64 ] && echo ', arm64 tests')"
}
main "$@"
