#!/bin/sh
# Prove the Debian package on a Debian 12 root nobody set up by hand:
#
#  1. build the .deb from this checkout (dpkg-buildpackage); lintian: no errors;
#  2. rebuild it with a bumped version, to upgrade to;
#  3. debootstrap a minimal Debian 12 root; apt installs the dependencies the
#     .deb declares, then the .deb itself;
#  4. `rpistream check`, then the unit's ExecStart as the rpistream user, in a
#     network namespace holding only loopback: /healthz, a WHEP answer and
#     decoded frames (tests/package_probe.py, with the generated token);
#  5. edit the config, upgrade: the edit and the token stay, the new version
#     serves again;
#  6. purge: nothing is left under /etc, /var/lib or /usr that was not there
#     before the package was installed.
#
# Needs root (debootstrap, chroot, ip netns) and scripts/setup.sh --test.
# Everything it makes lives in one directory under /var/tmp and one network
# namespace, both removed on exit. Set RPISTREAM_KEEP=1 to keep the directory.
set -eu
cd "$(dirname "$0")/.."
CHECKOUT=$(pwd)
PYTHON="$CHECKOUT/.venv/bin/python"
PORT=8080  # the conffile's default, which is what is being proven
SERVER_TIMEOUT=10  # seconds for the server to exit after SIGTERM

say() { printf '\nprove-package: %s\n' "$*"; }
fail() { printf 'prove-package: FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root: debootstrap, chroot and ip netns need it"

WORK=$(mktemp -d /var/tmp/rpistream-package.XXXXXX)
ROOT="$WORK/root"
NETNS="rpistream-package-$$"
SERVER_PID=""
cleanup() {
    status=$?
    [ -z "$SERVER_PID" ] || kill "$SERVER_PID" 2>/dev/null || true
    ip netns delete "$NETNS" 2>/dev/null || true
    for mount in "$ROOT/proc" "$ROOT/dev/pts"; do
        ! mountpoint -q "$mount" || umount -l "$mount"
    done
    if [ "${RPISTREAM_KEEP:-}" = 1 ]; then
        echo "prove-package: kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Debian's mirror as this machine's apt knows it (the only network it may use).
MIRROR=$(grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list \
         /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
         | head -n 1 | tr -d ' ') || true
MIRROR=${MIRROR:-http://deb.debian.org/debian}

# The root is made while the packages build: both mostly wait on the network.
say "debootstrap bookworm from $MIRROR (in the background)"
debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 &
DEBOOTSTRAP_PID=$!

# --- 1, 2: build, lint, rebuild with a bumped version -------------------------------
mkdir "$WORK/src"
git ls-files -z | xargs -0 tar -c | tar -x -C "$WORK/src"
# Both builds share one pip cache: the second downloads nothing.
export PIP_CACHE_DIR="$WORK/pip-cache"
build() {
    (cd "$WORK/src" && dpkg-buildpackage -us -uc -b) > "$WORK/build-$1.log" 2>&1 \
        || { tail -n 40 "$WORK/build-$1.log"; fail "dpkg-buildpackage ($1); log above"; }
}
VERSION=$(cd "$WORK/src" && dpkg-parsechangelog -S Version)
ARCH=$(dpkg --print-architecture)
UPGRADE="$VERSION+upgrade1"
DEB="$WORK/rpistream_${VERSION}_$ARCH.deb"
DEB_UPGRADE="$WORK/rpistream_${UPGRADE}_$ARCH.deb"
if [ -n "${RPISTREAM_PREBUILT:-}" ]; then
    # To iterate on the install steps: both .debs from an earlier run's kept
    # directory (RPISTREAM_KEEP=1), no build and no lintian.
    cp "$RPISTREAM_PREBUILT/$(basename "$DEB")" "$RPISTREAM_PREBUILT/$(basename "$DEB_UPGRADE")" \
        "$WORK/"
else
    say "building rpistream $VERSION"
    build first
    say "lintian $(basename "$DEB")"
    lintian --fail-on error --tag-display-limit 0 "$DEB" \
        || fail "lintian reports errors (above)"

    {
        printf 'rpistream (%s) bookworm; urgency=medium\n\n' "$UPGRADE"
        printf '  * Rebuilt by scripts/prove-package.sh, to upgrade to.\n\n'
        printf ' -- rpistream developers <dev@rpistream.invalid>  %s\n\n' "$(date -R)"
        cat "$WORK/src/debian/changelog"
    } > "$WORK/changelog" && mv "$WORK/changelog" "$WORK/src/debian/changelog"
    say "building rpistream $UPGRADE"
    build upgrade
fi

wait "$DEBOOTSTRAP_PID" || { tail -n 20 "$WORK/debootstrap.log"; fail "debootstrap"; }

# --- 3: install with apt -------------------------------------------------------------
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
                DEBIAN_FRONTEND=noninteractive "$@"; }
mount -t proc proc "$ROOT/proc"
mount --bind /dev/pts "$ROOT/dev/pts"  # apt's terminal log
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp "$DEB" "$DEB_UPGRADE" "$ROOT/tmp/"
in_root apt-get update -qq
# The dependencies first, resolved by apt from the .deb's own Depends, so the
# snapshot below holds them and the purge is compared with it.
DEPENDS=$(dpkg-deb -f "$DEB" Depends)
say "apt-get satisfy '$DEPENDS'"
in_root apt-get satisfy -y -qq --no-install-recommends "$DEPENDS" > "$WORK/depends.log" \
    || { tail -n 20 "$WORK/depends.log"; fail "apt-get satisfy"; }

# What a purge must restore: every path under /etc, /var/lib and /usr with its
# size, mode and owner, and the checksum of every file under /etc. Left out:
# dpkg's and apt's own records (they log the install), and the user and group
# sysusers made: Debian leaves system users behind on purge (files they own
# may remain elsewhere, and a reused uid would inherit them), so /etc/passwd
# and friends are checked separately below.
snapshot() {
    (cd "$ROOT" && find etc var/lib usr \( -path var/lib/dpkg -o -path var/lib/apt \
         -o -path 'etc/passwd*' -o -path 'etc/group*' -o -path 'etc/shadow*' \
         -o -path 'etc/gshadow*' \) -prune -o -printf '%p %s %m %u:%g\n' | sort
     find etc -xdev -type f ! -name 'passwd*' ! -name 'group*' ! -name 'shadow*' \
         ! -name 'gshadow*' -exec md5sum {} + | sort -k 2) > "$1"
}
snapshot "$WORK/before.txt"
cp "$ROOT/etc/passwd" "$WORK/passwd.before"

say "apt install ./$(basename "$DEB")"
in_root apt-get install -y --no-install-recommends "/tmp/$(basename "$DEB")" \
    > "$WORK/install.log" 2>&1 || { cat "$WORK/install.log"; fail "apt install"; }
cat "$WORK/install.log"
grep -q 'watch at http://.*/?token=' "$WORK/install.log" \
    || fail "the first install did not print the viewer URL with a token"
TOKEN=$(cat "$ROOT/etc/rpistream/token")
[ -n "$TOKEN" ] || fail "no token generated in /etc/rpistream/token"
TOKEN_MODE=$(in_root stat -c '%U:%G %a' /etc/rpistream/token)  # the root's users
[ "$TOKEN_MODE" = "root:rpistream 640" ] || fail "/etc/rpistream/token is $TOKEN_MODE"
in_root id rpistream | grep -q '(video)' || fail "user rpistream is not in group video"
in_root systemctl is-enabled rpistream.service | grep -qx enabled \
    || fail "rpistream.service is not enabled"
in_root sh -c 'command -v rpistream' | grep -qx /usr/bin/rpistream \
    || fail "rpistream is not on the PATH"
[ -f "$ROOT/usr/share/man/man1/rpistream.1.gz" ] || fail "no man page: man rpistream"

say "systemd-analyze verify, security"
UNIT=/lib/systemd/system/rpistream.service
in_root systemd-analyze verify "$UNIT" || fail "systemd-analyze verify $UNIT"
# Exposure on systemd's 0-10 scale, 10 times over: at most 2.5.
in_root systemd-analyze security --offline=true --threshold=25 "$UNIT" \
    > "$WORK/security.log" || { cat "$WORK/security.log"; fail "exposure above 2.5"; }
tail -n 1 "$WORK/security.log"

# --- 4: check, serve, watch ------------------------------------------------------------
# ICE in the namespace can only use loopback, so the config offers 127.0.0.1;
# this is also the admin's edit the upgrade must keep.
CONFIG="$ROOT/etc/rpistream/config.toml"
sed -i 's|^#ice_hosts = .*|ice_hosts = ["127.0.0.1"]  # edited by prove-package|' "$CONFIG"
grep -q '^ice_hosts = \["127.0.0.1"\]' "$CONFIG" || fail "could not edit $CONFIG"

say "rpistream check"
in_root runuser -u rpistream -- rpistream check --config /etc/rpistream/config.toml \
    || fail "rpistream check (as user rpistream)"

ip netns add "$NETNS"
in_netns() { nsenter --net="/run/netns/$NETNS" "$@"; }
in_netns ip link set lo up
EXEC_START=$(sed -n 's/^ExecStart=//p' "$ROOT/lib/systemd/system/rpistream.service")
[ -n "$EXEC_START" ] || fail "no ExecStart= in rpistream.service"
# Numbers, not names: chroot would look the names up in this machine's files.
SERVICE_USER="$(in_root id -u rpistream):$(in_root id -g rpistream)"
VIDEO_GID=$(in_root getent group video | cut -d: -f3)

# The service's command as systemd runs it: its user, group and supplementary
# group video, from its working directory; stopped by SIGTERM like systemctl stop.
serve_and_probe() {
    say "$1: ExecStart=$EXEC_START"
    in_root install -d -o rpistream -g rpistream /var/lib/rpistream
    # Not through in_netns: $! must be the server itself, not a subshell.
    nsenter --net="/run/netns/$NETNS" \
        chroot --userspec="$SERVICE_USER" --groups="$VIDEO_GID" "$ROOT" \
        env -i PATH=/usr/bin:/bin HOME=/var/lib/rpistream LANG=C.UTF-8 \
        sh -c "cd /var/lib/rpistream && exec $EXEC_START" > "$WORK/serve-$1.log" 2>&1 &
    SERVER_PID=$!
    in_netns "$PYTHON" tests/package_probe.py -- "http://127.0.0.1:$PORT" "$TOKEN" \
        || { cat "$WORK/serve-$1.log"; fail "$1: the probe (server log above)"; }
    kill -TERM "$SERVER_PID"
    waited=0
    while kill -0 "$SERVER_PID" 2>/dev/null; do
        [ "$waited" -lt $((SERVER_TIMEOUT * 10)) ] \
            || { cat "$WORK/serve-$1.log"; fail "$1: the server did not exit on SIGTERM"; }
        sleep 0.1
        waited=$((waited + 1))
    done
    status=0
    wait "$SERVER_PID" || status=$?
    [ "$status" -eq 0 ] || { cat "$WORK/serve-$1.log"; fail "$1: the server exited $status"; }
    SERVER_PID=""
    grep -q 'Traceback' "$WORK/serve-$1.log" \
        && { cat "$WORK/serve-$1.log"; fail "$1: a traceback in the server's log"; }
    echo "prove-package: $1: served, watched, stopped cleanly on SIGTERM"
}
serve_and_probe "$VERSION"

# --- 5: upgrade keeps the edited config --------------------------------------------------
say "apt install ./$(basename "$DEB_UPGRADE") (the upgrade)"
in_root apt-get install -y --no-install-recommends "/tmp/$(basename "$DEB_UPGRADE")" \
    > "$WORK/upgrade.log" || { cat "$WORK/upgrade.log"; fail "the upgrade"; }
[ "$(in_root dpkg-query -W -f '${Version}' rpistream)" = "$UPGRADE" ] \
    || fail "the installed version is not $UPGRADE after the upgrade"
grep -q '^ice_hosts = \["127.0.0.1"\]  # edited by prove-package' "$CONFIG" \
    || fail "the upgrade lost the edit to /etc/rpistream/config.toml"
[ "$(cat "$ROOT/etc/rpistream/token")" = "$TOKEN" ] || fail "the upgrade changed the token"
echo "prove-package: upgraded to $UPGRADE; the edited config and the token are kept"
serve_and_probe "$UPGRADE"

# --- 6: purge leaves nothing behind ------------------------------------------------------
say "apt-get purge rpistream"
in_root apt-get purge -y rpistream > "$WORK/purge.log" \
    || { cat "$WORK/purge.log"; fail "the purge"; }
snapshot "$WORK/after.txt"
diff -u "$WORK/before.txt" "$WORK/after.txt" \
    || fail "the purge left the differences above under /etc, /var/lib or /usr"
diff "$WORK/passwd.before" "$ROOT/etc/passwd" | grep '^>' | grep -qv '^> rpistream:' \
    && fail "/etc/passwd changed beyond the rpistream system user"
echo "prove-package: purged; /etc, /var/lib and /usr are as before the install"
say "all proven: build, lintian, install, check, serve, upgrade, purge"
