#!/bin/sh
# Set up everything rpistream needs on Debian 12, from nothing: the Debian
# packages (as root, or through sudo), a virtualenv in .venv, and rpistream
# itself with its compiled extensions. `--test` adds what the test suite
# needs. Safe to run again; it only adds what is missing.
set -eu
cd "$(dirname "$0")/.."

# To build and run: ca-certificates lets pip reach PyPI over TLS;
# python3-venv/-dev and build-essential build the Cython extensions.
APT_PACKAGES="ca-certificates python3 python3-venv python3-dev build-essential"
# To test: GStreamer is an independent RTP depacketizer and decoder (-good,
# -libav) and an independent WebRTC client (webrtcbin in -bad, libnice ICE,
# driven from Debian's python3 through gi); Chromium is the real browser the
# end-to-end tests drive with Playwright; node runs the block-code reader;
# iproute2 and nftables make the lossy links the FEC tests run over;
# debhelper, dh-virtualenv, lintian and debootstrap build the .deb, lint it
# and make the clean root scripts/prove-package.sh installs it in;
# python3-numpy and python3-av are the system copies the .deb's build
# decides about (debian/camera_stack.py); qemu-user-static runs the arm64
# root of scripts/prove-pi.sh; python3-pywt is a Debian extension built
# against Debian's numpy, for the test of a numpy ABI break; coturn is the
# TURN server viewers outside the network relay through, and libnss3-tools'
# certutil makes Chromium trust its test certificate for TURN over TLS;
# firefox-esr is the second browser engine, driven through Marionette, and
# webkit2gtk-driver the third (WebKit, Safari's), on an Xvfb display; janus
# is the SFU a camera is forwarded to; curl fetches Janus's JavaScript library
# from the npm registry (scripts/fetch-npm.sh).
TEST_PACKAGES="gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-libav gstreamer1.0-nice python3-gi
  gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0
  chromium fonts-dejavu-core nodejs iproute2 nftables
  dpkg-dev debhelper dh-virtualenv lintian debootstrap git python3-numpy python3-av
  qemu-user-static python3-pywt coturn libnss3-tools firefox-esr
  webkit2gtk-driver xvfb janus curl"
EXTRAS=""
if [ "${1:-}" = "--test" ]; then
    APT_PACKAGES="$APT_PACKAGES $TEST_PACKAGES"
    EXTRAS="[test,bench]"
fi

missing=""
for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $pkg"
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

# Debian's own interpreter, so the virtualenv matches what the .deb runs on.
if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# Editable install: builds the extensions into rpistream/ so the tests and the
# server run the checkout as it is. A failed compile stops here.
.venv/bin/python -m pip install -q -e ".$EXTRAS"

# The npm packages a browser test loads into its page, pinned and verified,
# cached under /var/cache/rpistream-npm (as root, like the Debian packages).
if [ "${1:-}" = "--test" ]; then
    $SUDO ./scripts/fetch-npm.sh
fi
