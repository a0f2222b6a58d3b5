#!/bin/sh
# Set up everything rpistream needs on Debian 12, from nothing: the Debian
# packages (as root, or through sudo), a virtualenv in .venv, and rpistream
# itself with its compiled extensions. Safe to run again; it only adds what is
# missing.
set -eu
cd "$(dirname "$0")/.."

# Debian packages. ca-certificates lets pip reach PyPI over TLS; python3-venv/-dev and build-essential build the Cython
# extensions; GStreamer is the independent RTP depacketizer/decoder the tests
# check our packetizers against.
APT_PACKAGES="ca-certificates python3 python3-venv python3-dev build-essential
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-libav"

missing=""
for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
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
.venv/bin/python -m pip install -q -e '.[test]'
