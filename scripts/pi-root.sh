#!/bin/sh
# A Raspberry Pi OS-like root: Debian SUITE (bookworm or trixie) for ARCH
# (amd64 natively, arm64 under qemu-user-static), with the camera stack that
# Raspberry Pi OS adds for picamera2, rebuilt from the closest sources:
#
#   scripts/pi-root.sh SUITE ARCH    prints the path of the root's tarball
#
# The tarball is cached as /var/cache/rpistream-roots/SUITE-ARCH-KEY.tar, KEY a
# hash of everything that went into it (this script, SUITE, ARCH, the stand-ins
# and setup file under tests/pi-root/); later runs with the same KEY reuse it,
# and a build with a new KEY deletes the older ones. Downloads are kept beside
# it (apt's .debs in apt-SUITE-ARCH/, PyPI's files in downloads/), so a rebuild
# fetches only what changed. Needs root, debootstrap, and for arm64
# qemu-user-static (binfmt_misc is mounted and its qemu-aarch64 entry
# registered here when missing). Building happens in a directory under
# /var/tmp, removed on exit (RPISTREAM_KEEP=1 keeps it).
#
# What is in the root, against Raspberry Pi OS's python3-picamera2 (whose
# Depends are python3-libcamera, python3-kms++, python3-v4l2 and, from
# picamera2's own requirements, numpy, PiDNG, piexif, pillow, simplejpeg,
# videodev2, python-prctl, av, libarchive-c, tqdm, jsonschema, OpenEXR):
#   - From Debian SUITE, as Raspberry Pi OS takes them from Debian: python3,
#     python3-numpy (1.24.2 bookworm, 2.2.4 trixie), python3-av (10.0 bookworm,
#     14.2 trixie), python3-pil, python3-prctl, python3-piexif,
#     python3-jsonschema, python3-tqdm, python3-libarchive-c; trixie: Debian's
#     python3-libcamera 0.4.0 (and libcamera0.4).
#   - From PyPI, installed into /usr/lib/python3/dist-packages with their
#     .dist-info, where Raspberry Pi OS's .debs put them: picamera2
#     $PICAMERA2_VERSION, videodev2, v4l2-python3 (pure Python wheels); PiDNG
#     and simplejpeg compiled IN the root from their sdists against the root's
#     own python3-dev and numpy (so bookworm's simplejpeg has numpy 1.24's
#     ABI, as on a real Pi).
#
# What differs from the real Raspberry Pi OS:
#   - Raspberry Pi's archive (archive.raspberrypi.com) is not used: its
#     rebuilt libcamera (the Pi's ISP pipeline handlers and IPA modules),
#     kms++, rpicam-apps, its kernel, firmware and /boot are absent. No camera,
#     no /dev/video*, no V4L2 hardware encoder, no DRM display.
#   - bookworm: no libcamera bindings exist in Debian 12, so
#     tests/pi-root/libcamera is a stand-in: picamera2 imports and finds no
#     camera; nothing can capture. trixie's libcamera is Debian's 0.4.0, not
#     Raspberry Pi's fork (same API, no Pi pipeline handler).
#   - pykms (python3-kms++) is a stand-in on both (tests/pi-root/pykms): it
#     answers the PixelFormat/PlaneType names picamera2's DRM preview reads at
#     import; opening a display fails.
#   - python3-av on bookworm is Debian's 10.0; Raspberry Pi's archive may carry
#     another build. OpenEXR (only picamera2's IMX500 AI camera code imports
#     it) is not installed.
#   - simplejpeg is 1.6.6 linked against Debian's libturbojpeg 2.1.5 (built
#     with tests/pi-root/simplejpeg-setup.py): newer simplejpeg releases need
#     libjpeg-turbo 3 and download it at build time, which cannot be done
#     here. Raspberry Pi OS's python3-simplejpeg version was not checked.
#   - The root keeps the compilers and headers used to build simplejpeg and
#     PiDNG (gcc, python3-dev, cython3, libturbojpeg0-dev, python3-pip); a
#     Pi has python3-pip but usually no compiler. For arm64, python3-pytest
#     and python3-hypothesis (and pytest's asyncio and timeout plugins) are
#     installed too, to run rpistream's ring, RTP and FEC tests there.
#   - A minbase debootstrap: no systemd running, no users but root, no
#     locales, no raspi-config, no NetworkManager.
#   - arm64: Debian's python3 packages are not byte-compiled when installed
#     (py3compile is diverted to a no-op): under qemu that is most of apt's
#     time. Python compiles each module when it first imports it.
set -eu
# All of it in one function, read whole before it runs: editing this file
# while a build runs cannot change what that build does.
main() {
cd "$(dirname "$0")/.."
CHECKOUT=$(pwd)
SUITE=${1:-}
ARCH=${2:-}
CACHE=/var/cache/rpistream-roots
LOCK_TIMEOUT=3600  # seconds to wait for another run building the same root

# Pinned: the newest picamera2 0.3.x on PyPI, and what it imports.
PICAMERA2_VERSION=0.3.38
VIDEODEV2_VERSION=0.0.4
V4L2_VERSION=0.3.5
PIDNG_VERSION=4.0.9
SIMPLEJPEG_VERSION=1.6.6

# Debian's packages Raspberry Pi OS's python3-picamera2 depends on.
CAMERA_PACKAGES="python3 python3-numpy python3-pil python3-prctl python3-av
  python3-piexif python3-jsonschema python3-tqdm python3-libarchive-c"
# What compiles and installs simplejpeg and PiDNG in the root.
BUILD_PACKAGES="ca-certificates gcc libc6-dev python3-dev python3-pip
  python3-setuptools python3-wheel cython3 libturbojpeg0-dev"
# rpistream's tests, for the arm64 proof (scripts/prove-pi.sh).
TEST_PACKAGES="python3-pytest python3-hypothesis python3-pytest-asyncio
  python3-pytest-timeout"

say() { printf 'pi-root: %s\n' "$*" >&2; }
fail() { printf 'pi-root: FAILED: %s\n' "$*" >&2; exit 1; }

case "$SUITE" in bookworm|trixie) ;; *) fail "usage: $0 bookworm|trixie amd64|arm64" ;; esac
case "$ARCH" in amd64|arm64) ;; *) fail "usage: $0 bookworm|trixie amd64|arm64" ;; esac
[ "$(id -u)" -eq 0 ] || fail "run as root: debootstrap and chroot need it"
[ "$(dpkg --print-architecture)" = amd64 ] || fail "this builder expects an amd64 host"

# The key: every input, in a fixed order: this script and the files from
# tests/pi-root/ this SUITE uses.
INPUTS="tests/pi-root/simplejpeg-setup.py tests/pi-root/pykms/__init__.py"
[ "$SUITE" != bookworm ] || INPUTS="$INPUTS tests/pi-root/libcamera/__init__.py"
KEY=$( { printf '%s %s\n' "$SUITE" "$ARCH"; cat "$0"
         for f in $INPUTS; do printf '%s\n' "$f"; cat "$f"; done; } | sha256sum | cut -c1-16)
TARBALL="$CACHE/$SUITE-$ARCH-$KEY.tar"
mkdir -p "$CACHE"

# One builder per SUITE-ARCH at a time; the second waits and reuses the tarball.
exec 9>"$CACHE/$SUITE-$ARCH.lock"
flock -w "$LOCK_TIMEOUT" 9 || fail "another build of $SUITE-$ARCH held the lock for ${LOCK_TIMEOUT}s"
if [ -f "$TARBALL" ]; then
    say "cached: $TARBALL"
    echo "$TARBALL"
    exit 0
fi

# --- arm64: qemu-user-static through binfmt_misc -------------------------------------
if [ "$ARCH" = arm64 ]; then
    [ -x /usr/bin/qemu-aarch64-static ] || fail "install qemu-user-static (scripts/setup.sh --test)"
    mountpoint -q /proc/sys/fs/binfmt_misc \
        || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
        || fail "cannot mount binfmt_misc"
    # Registered with the F flag (qemu-user-static's own entry): the kernel
    # opens the interpreter now, so it need not exist inside the chroot.
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register \
            || fail "cannot register qemu-aarch64 with binfmt_misc"
    fi
    grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 \
        || fail "binfmt_misc's qemu-aarch64 entry is disabled"
fi

WORK=$(mktemp -d /var/tmp/rpistream-pi-root.XXXXXX)
ROOT="$WORK/root"
APT_CACHE="$CACHE/apt-$SUITE-$ARCH"
DOWNLOADS="$CACHE/downloads"
cleanup() {
    status=$?
    for mount in "$ROOT/var/cache/apt/archives" "$ROOT/proc" "$ROOT/dev/pts"; do
        ! mountpoint -q "$mount" 2>/dev/null || umount -l "$mount"
    done
    if [ "${RPISTREAM_KEEP:-}" = 1 ]; then
        say "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM
STARTED=$(date +%s)

# Debian's mirror as this machine's apt knows it (the only network it may use).
MIRROR=$(grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list \
         /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
         | head -n 1 | tr -d ' ') || true
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=$(printf '%s' "$MIRROR" | sed 's|/debian/*$|/debian-security|')

# --- PyPI's files, on this machine (its pip reaches PyPI), while debootstrap runs ----
mkdir -p "$DOWNLOADS" "$APT_CACHE/partial"
say "debootstrap --arch $ARCH $SUITE from $MIRROR (in the background)"
# debootstrap's own downloads go to the shared cache too.
debootstrap --arch "$ARCH" --variant=minbase --cache-dir="$APT_CACHE" \
    "$SUITE" "$ROOT" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 &
DEBOOTSTRAP_PID=$!

download() {  # pip download into $DOWNLOADS unless the file is there
    [ -n "$(find "$DOWNLOADS" -maxdepth 1 -name "$1")" ] && return 0
    shift
    # shellcheck disable=SC2068
    timeout 600 "$@" --no-deps -d "$DOWNLOADS" > "$WORK/download.log" 2>&1 \
        || { cat "$WORK/download.log" >&2; fail "pip download: $*"; }
}
download "picamera2-$PICAMERA2_VERSION-py3-none-any.whl" \
    python3 -m pip download --only-binary=:all: "picamera2==$PICAMERA2_VERSION"
download "videodev2-$VIDEODEV2_VERSION-py3-none-any.whl" \
    python3 -m pip download --only-binary=:all: "videodev2==$VIDEODEV2_VERSION"
download "v4l2_python3-$V4L2_VERSION-py3-none-any.whl" \
    python3 -m pip download --only-binary=:all: "v4l2-python3==$V4L2_VERSION"
download "pidng-$PIDNG_VERSION.tar.gz" \
    python3 -m pip download --no-binary=:all: "pidng==$PIDNG_VERSION"
# pip reads an sdist's metadata before saving it, and simplejpeg's setup.py
# imports PyPI's `cmake` package for that: a shim names Debian's instead, in a
# throwaway virtualenv that has setuptools and wheel.
if [ -z "$(find "$DOWNLOADS" -maxdepth 1 -name "simplejpeg-$SIMPLEJPEG_VERSION.tar.gz")" ]; then
    /usr/bin/python3 -m venv "$WORK/pip-venv"
    "$WORK/pip-venv/bin/pip" install -q setuptools wheel > "$WORK/download.log" 2>&1 \
        || { cat "$WORK/download.log" >&2; fail "pip install setuptools wheel"; }
    mkdir "$WORK/cmake-shim"
    echo "CMAKE_BIN_DIR = '/usr/bin'" > "$WORK/cmake-shim/cmake.py"
    download "simplejpeg-$SIMPLEJPEG_VERSION.tar.gz" env PYTHONPATH="$WORK/cmake-shim" \
        "$WORK/pip-venv/bin/pip" download --no-build-isolation --no-binary=:all: \
        "simplejpeg==$SIMPLEJPEG_VERSION"
fi

wait "$DEBOOTSTRAP_PID" || { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
say "debootstrap done after $(( $(date +%s) - STARTED )) s"

# --- the camera stack from Debian --------------------------------------------------------
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
                DEBIAN_FRONTEND=noninteractive "$@"; }
mount -t proc proc "$ROOT/proc"
mount --bind /dev/pts "$ROOT/dev/pts"
mount --bind "$APT_CACHE" "$ROOT/var/cache/apt/archives"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
{
    printf 'deb %s %s main\n' "$MIRROR" "$SUITE"
    printf 'deb %s %s-updates main\n' "$MIRROR" "$SUITE"
    printf 'deb %s %s-security main\n' "$SECURITY" "$SUITE"
} > "$ROOT/etc/apt/sources.list"
in_root apt-get update -qq > "$WORK/apt.log" 2>&1 \
    || { cat "$WORK/apt.log" >&2; fail "apt-get update in the root"; }
# A throwaway root: dpkg need not fsync every file it unpacks.
echo force-unsafe-io > "$ROOT/etc/dpkg/dpkg.cfg.d/rpistream-unsafe-io"
if [ "$ARCH" = arm64 ]; then
    # Under qemu, byte-compiling what each python3 package installs is most of
    # apt's time (numpy alone takes minutes): py3compile is a no-op here, and
    # Python compiles what it imports when it first imports it.
    in_root dpkg-divert --local --rename --add /usr/bin/py3compile > /dev/null \
        || fail "dpkg-divert py3compile"
    printf '#!/bin/sh\n# rpistream pi-root: no byte-compiling under qemu\nexit 0\n' \
        > "$ROOT/usr/bin/py3compile"
    chmod 755 "$ROOT/usr/bin/py3compile"
fi
PACKAGES="$CAMERA_PACKAGES $BUILD_PACKAGES"
[ "$SUITE" = bookworm ] || PACKAGES="$PACKAGES python3-libcamera"
[ "$ARCH" = amd64 ] || PACKAGES="$PACKAGES $TEST_PACKAGES"
say "apt-get install $(echo $PACKAGES)"
# shellcheck disable=SC2086
in_root apt-get install -y -qq --no-install-recommends $PACKAGES > "$WORK/apt.log" 2>&1 \
    || { tail -n 30 "$WORK/apt.log" >&2; fail "apt-get install in the root"; }
say "Debian's packages installed after $(( $(date +%s) - STARTED )) s"

# --- picamera2 and what Debian lacks, from PyPI, into dist-packages -----------------------
DIST=/usr/lib/python3/dist-packages
mkdir -p "$ROOT/tmp/pypi"
for f in "picamera2-$PICAMERA2_VERSION-py3-none-any.whl" "videodev2-$VIDEODEV2_VERSION-py3-none-any.whl" \
         "v4l2_python3-$V4L2_VERSION-py3-none-any.whl" "pidng-$PIDNG_VERSION.tar.gz"; do
    cp "$DOWNLOADS/$f" "$ROOT/tmp/pypi/"
done
tar -xzf "$DOWNLOADS/simplejpeg-$SIMPLEJPEG_VERSION.tar.gz" -C "$ROOT/tmp/pypi"
SIMPLEJPEG_SRC="/tmp/pypi/simplejpeg-$SIMPLEJPEG_VERSION"
# The sdist's build (cmake, its bundled libjpeg-turbo, pinned Cython and numpy
# from PyPI) is replaced by the distribution-style one.
# Its _jpeg.c, from Cython 0.29, is regenerated by the root's Cython (3.0 on
# trixie refuses to overwrite it, and it predates Python 3.13).
rm -f "$ROOT$SIMPLEJPEG_SRC/pyproject.toml" "$ROOT$SIMPLEJPEG_SRC/simplejpeg/_jpeg.c"
cp tests/pi-root/simplejpeg-setup.py "$ROOT$SIMPLEJPEG_SRC/setup.py"
# --no-build-isolation: built with the root's own setuptools, Cython and numpy.
# --target: into dist-packages, where a .deb puts them, not /usr/local.
say "pip install (in the root, compiling PiDNG and simplejpeg)"
PIP_STARTED=$(date +%s)
in_root python3 -m pip install --no-index --no-deps --no-build-isolation --no-compile \
    --disable-pip-version-check --break-system-packages --target "$DIST" \
    "/tmp/pypi/picamera2-$PICAMERA2_VERSION-py3-none-any.whl" \
    "/tmp/pypi/videodev2-$VIDEODEV2_VERSION-py3-none-any.whl" \
    "/tmp/pypi/v4l2_python3-$V4L2_VERSION-py3-none-any.whl" \
    "/tmp/pypi/pidng-$PIDNG_VERSION.tar.gz" "$SIMPLEJPEG_SRC" > "$WORK/pip.log" 2>&1 \
    || { grep -v '^ *$' "$WORK/pip.log" | tail -n 80 >&2; fail "pip install in the root"; }
say "pip install took $(( $(date +%s) - PIP_STARTED )) s"
rm -rf "$ROOT/tmp/pypi" "$ROOT/root/.cache"

# Stand-ins for what only Raspberry Pi's archive has.
mkdir "$ROOT$DIST/pykms"
cp tests/pi-root/pykms/__init__.py "$ROOT$DIST/pykms/"
if [ "$SUITE" = bookworm ]; then
    [ ! -e "$ROOT$DIST/libcamera" ] || fail "bookworm has libcamera bindings now: drop the stand-in"
    mkdir "$ROOT$DIST/libcamera"
    cp tests/pi-root/libcamera/__init__.py "$ROOT$DIST/libcamera/"
fi
# Byte code, as python3 packages' postinst compile it (not under qemu, above).
[ "$ARCH" = arm64 ] || in_root python3 -m compileall -q "$DIST/picamera2" "$DIST/pidng" "$DIST/simplejpeg" \
    "$DIST/videodev2" "$DIST/v4l2.py" "$DIST/pykms" > /dev/null 2>&1 || true

# --- it works as the OS's picamera2 does ------------------------------------------------
say "the root's picamera2"
in_root python3 -c '
import numpy, simplejpeg, picamera2
from picamera2 import Picamera2
from picamera2.encoders import LibavH264Encoder
import av
for m in (numpy, simplejpeg, picamera2, av):
    print("pi-root:  ", m.__name__, getattr(m, "__version__", "?"), m.__file__)
assert numpy.__file__.startswith("/usr/lib/python3/dist-packages/"), numpy.__file__
jpeg = simplejpeg.encode_jpeg(numpy.zeros((16, 16, 3), dtype=numpy.uint8))
assert simplejpeg.decode_jpeg(jpeg).shape == (16, 16, 3)
cameras = Picamera2.global_camera_info()
print("pi-root:   Picamera2.global_camera_info():", cameras)
assert cameras == [], cameras
' >&2 || fail "picamera2 does not import or finds a camera in the root"

# --- into the cache -----------------------------------------------------------------------
for mount in "$ROOT/var/cache/apt/archives" "$ROOT/proc" "$ROOT/dev/pts"; do
    umount "$mount"
done
rm -f "$ROOT/etc/resolv.conf"
tar --numeric-owner -C "$ROOT" -cf "$TARBALL.part" . || fail "tar of the root"
mv "$TARBALL.part" "$TARBALL"
for old in "$CACHE/$SUITE-$ARCH"-*.tar; do
    [ "$old" = "$TARBALL" ] || rm -f "$old"
done
say "built $TARBALL ($(du -m "$TARBALL" | cut -f1) MB) in $(( $(date +%s) - STARTED )) s"
echo "$TARBALL"
}
main "$@"
