#!/bin/sh
# Fetch the npm packages the browser tests load into a page, pinned: Janus's
# own JavaScript library (janus-gateway) and the one package it needs,
# webrtc-adapter (tests/test_janus_chromium.py). Each tarball comes from the
# npm registry by its exact version, is checked against the sha512 the
# registry publishes for it (its dist.integrity), and is unpacked as
# /var/cache/rpistream-npm/NAME-VERSION/ (the tarball's package/). Run by
# `scripts/setup.sh --test`; safe to run again: a package whose tarball is
# there and verifies is not fetched again. No npm CLI: nothing is installed,
# nothing runs from the packages here, and no other version can come in.
set -eu
CACHE=/var/cache/rpistream-npm
REGISTRY=https://registry.npmjs.org

fetch() {  # NAME VERSION INTEGRITY
    name=$1 version=$2 integrity=$3
    tarball="$CACHE/$name-$version.tgz"
    unpacked="$CACHE/$name-$version"
    if [ -d "$unpacked" ] && verified "$tarball" "$integrity"; then
        return
    fi
    echo "fetch-npm: fetching $name $version"
    rm -rf "$tarball" "$unpacked" "$unpacked.new"
    curl -fsSL --retry 3 --max-time 120 -o "$tarball.part" "$REGISTRY/$name/-/$name-$version.tgz"
    if ! verified "$tarball.part" "$integrity"; then
        rm -f "$tarball.part"
        echo "fetch-npm: $name-$version.tgz does not match its integrity $integrity" >&2
        exit 1
    fi
    mv "$tarball.part" "$tarball"
    # Unpacked aside and moved into place, so a half-unpacked copy is never taken.
    mkdir "$unpacked.new"
    tar -xzf "$tarball" -C "$unpacked.new" --no-same-owner --strip-components=1 package/
    mv "$unpacked.new" "$unpacked"
}

verified() {  # FILE INTEGRITY: the file's sha512 is the one in INTEGRITY ("sha512-" base64)
    [ -f "$1" ] || return 1
    expected=$(printf '%s' "${2#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
    [ "$(sha512sum "$1" | cut -d' ' -f1)" = "$expected" ]
}

mkdir -p "$CACHE"
fetch janus-gateway 1.4.2 \
    sha512-W+fPeZ33eX00qTAWs1YQnIgAEF1Nzb7egQ6Lm4TkZBjRad4yHlmn0SNVJ2JPcaB0Neu5rexbepDIGLEMNkXrJQ==
# janus-gateway 1.4.2's one dependency, pinned there to this version.
fetch webrtc-adapter 9.0.3 \
    sha512-5fALBcroIl31OeXAdd1YUntxiZl1eHlZZWzNg3U4Fn+J9/cGL3eT80YlrsWGvj2ojuz1rZr2OXkgCzIxAZ7vRQ==
