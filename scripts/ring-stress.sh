#!/bin/sh
# Stress the frame ring's C code (ext/rpistream/core/ring.h) on this machine: a
# producer and a consumer thread on one small ring, every record verified
# (tests/ring_stress.c says what is checked). Meant for a Raspberry Pi: its
# cores reorder memory as x86 never does, so there a missing barrier in ring.h
# can show as a torn, stale or lost frame, or a lost wake-up.
#
#  1. cc -O2, as rpistream builds the ring: SECONDS at full speed;
#  2. cc -fsanitize=thread, where this cc has ThreadSanitizer: SECONDS again,
#     and a data race it reports fails the run even if every frame was right.
#
# Usage: scripts/ring-stress.sh [SECONDS [SEED]]
# SECONDS defaults to 60 per build; SEED (the record sizes, keyframes and
# pacing) to the current time, printed so that a failing run can be repeated.
# Needs a C compiler (Raspberry Pi OS / Debian: apt-get install gcc). Builds in
# a temporary directory, removed on exit.
set -eu
cd "$(dirname "$0")/.."
DURATION=${1:-60}
SEED=${2:-$(date +%s)}
case $DURATION in
    '' | *[!0-9.]* | *.*.* | .)
        echo "usage: $0 [SECONDS [SEED]]  (SECONDS a positive number, default 60)" >&2
        exit 2 ;;
esac

say() { printf 'ring-stress: %s\n' "$*"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ring-stress.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# GCC's ThreadSanitizer runtime wants its shadow memory at fixed addresses and
# dies with "unexpected memory mapping" on kernels that randomise mmap with
# more bits than it expects: run it without address randomisation.
NO_ASLR=""
if command -v setarch > /dev/null; then
    NO_ASLR="setarch $(uname -m) -R"
fi

PASSED=""
FAILED=""
# stress NAME RUNNER CFLAGS...: build tests/ring_stress.c with CFLAGS, run it
# through RUNNER (a command prefix, or empty).
stress() {
    name=$1
    runner=$2
    shift 2
    cc "$@" -pthread -I ext/rpistream/core tests/ring_stress.c -o "$WORK/$name"
    say "$name build: $DURATION s, seed $SEED"
    if $runner "$WORK/$name" "$DURATION" "$SEED"; then
        PASSED="$PASSED $name"
    else
        FAILED="$FAILED $name"
    fi
}

stress optimised "" -std=c11 -O2

# -Wno-tsan: GCC warns that ThreadSanitizer does not model the two fences of
# ring.h's wake-up handshake; the harness checks that handshake itself
# (lost_wakeups). The probe runs a sanitized program, so a kernel this
# runtime cannot run on is told apart from a race.
printf 'int main(void) { return 0; }\n' > "$WORK/probe.c"
if ! cc -fsanitize=thread "$WORK/probe.c" -o "$WORK/probe" 2> "$WORK/probe.log"; then
    say "this cc has no ThreadSanitizer (Debian: apt-get install libtsan2): skipped it"
elif ! $NO_ASLR "$WORK/probe" 2> "$WORK/probe.log"; then
    say "ThreadSanitizer cannot run on this kernel, skipped it: $(head -n 1 "$WORK/probe.log")"
else
    stress thread-sanitizer "$NO_ASLR" -std=c11 -O1 -g -fsanitize=thread -Wno-tsan
fi

if [ -n "$FAILED" ]; then
    say "FAIL:$FAILED (repeat with: $0 $DURATION $SEED)"
    exit 1
fi
say "PASS:$PASSED"
