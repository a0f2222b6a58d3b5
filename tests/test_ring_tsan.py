"""ring.h's memory ordering, judged by ThreadSanitizer.

tests/ring_stress.c drives one ring from a producer and a consumer thread and
verifies every record. x86 (and qemu on x86) runs code with a missing barrier
as if it were there; ThreadSanitizer reasons from the C11 orders themselves,
so a race it reports is one aarch64 may turn into a torn frame. Each seeded bug
is built too, to show that the check meant to catch it does.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "ring_stress.c"
RING_H_DIR = ROOT / "ext" / "rpistream" / "core"

# -Wno-tsan: GCC warns that ThreadSanitizer does not model atomic_thread_fence.
# ring.h's two fences order only consumer_waiting against head (the wake-up
# handshake): without them a wake-up is lost, no data race happens, and it is
# the harness that counts lost wake-ups (lost_wakeups), not ThreadSanitizer.
TSAN_FLAGS = ["-std=c11", "-O1", "-g", "-fsanitize=thread", "-pthread", "-Wno-tsan"]
# The build scripts/ring-stress.sh makes on a Pi.
OPTIMISED_FLAGS = ["-std=c11", "-O2", "-pthread"]
WARNING_FLAGS = ["-Wall", "-Wextra", "-Werror"]
SECONDS = "2"
# The harness closes the ring after SECONDS and its own alarm ends a stuck run
# 20 s later: this only catches a harness that ignores both.
RUN_TIMEOUT = 60


def tsan_missing():
    if shutil.which("gcc") is None:
        return "gcc is not installed (Debian: apt-get install gcc)"
    runtime = subprocess.run(["gcc", "-print-file-name=libtsan.so"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if not os.path.isabs(runtime):
        return ("gcc has no ThreadSanitizer runtime (Debian 12: apt-get install libtsan2, "
                "which gcc-12's libgcc-12-dev depends on)")
    return None


needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None,
                               reason="gcc is not installed (Debian: apt-get install gcc)")
TSAN_MISSING = tsan_missing()
needs_tsan = pytest.mark.skipif(TSAN_MISSING is not None, reason=str(TSAN_MISSING))


def build(tmp_path, flags, defines=()):
    executable = tmp_path / "ring_stress"
    result = subprocess.run(
        ["gcc", *flags, *WARNING_FLAGS, *(f"-D{define}" for define in defines),
         "-I", str(RING_H_DIR), str(HARNESS), "-o", str(executable)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, result.stderr
    return executable


def run(executable, seed, *, tsan=False, halt_on_error=False):
    command = [str(executable), SECONDS, str(seed)]
    env = dict(os.environ)
    if tsan:
        # GCC 12's ThreadSanitizer runtime puts its shadow memory at fixed
        # addresses and dies with "FATAL: ThreadSanitizer: unexpected memory
        # mapping" on kernels that randomise mmap with more than 28 bits
        # (vm.mmap_rnd_bits=32, as Ubuntu's kernels since 6.5 set it). Not hit
        # on this machine (28 bits); without randomisation it runs on any kernel.
        command = ["setarch", os.uname().machine, "-R", *command]
        # The first report is proof enough, and stops a seeded race in ~0.2 s.
        env["TSAN_OPTIONS"] = f"halt_on_error={int(halt_on_error)}"
    return subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env)


def summary(stdout):
    """The counters of the harness's summary line, and its verdict."""
    line = stdout.strip().splitlines()[-1]
    assert line.startswith("ring_stress: "), stdout
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)\b", line)}, line


FAILURE_COUNTERS = ("corrupt", "out_of_order", "policy", "metrics", "lost_records",
                    "lost_wakeups", "counters")
EXERCISED_COUNTERS = ("pushed", "dropped", "skipped", "consumed", "wraps", "wakeups")


def assert_passed(result):
    counts, line = summary(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert line.endswith(" PASS")
    assert all(counts[name] == 0 for name in FAILURE_COUNTERS), line
    assert all(counts[name] > 0 for name in EXERCISED_COUNTERS), line


@needs_tsan
@pytest.mark.parametrize("seed", [1, 2])
def test_ring_has_no_data_race_under_thread_sanitizer(tmp_path, seed):
    result = run(build(tmp_path, TSAN_FLAGS), seed, tsan=True)
    assert "ThreadSanitizer" not in result.stderr, result.stderr
    assert_passed(result)


# Each release/acquire pair of ring.h relaxed at once, then each order alone:
# ring.h's hooks for exactly this (RING_HEAD_RELEASE and the others).
SEEDED_MISSING_BARRIERS = {
    "all-relaxed": ["RING_STRESS_WEAKEN"],
    **{name.lower().replace("_", "-"): [f"{name}=__ATOMIC_RELAXED"]
       for name in ("RING_HEAD_RELEASE", "RING_HEAD_ACQUIRE",
                    "RING_TAIL_RELEASE", "RING_TAIL_ACQUIRE")},
}


@needs_tsan
@pytest.mark.parametrize("defines", SEEDED_MISSING_BARRIERS.values(),
                         ids=SEEDED_MISSING_BARRIERS.keys())
def test_thread_sanitizer_reports_a_missing_barrier(tmp_path, defines):
    result = run(build(tmp_path, TSAN_FLAGS, defines), 1, tsan=True, halt_on_error=True)
    assert "WARNING: ThreadSanitizer: data race" in result.stderr, result.stdout + result.stderr
    # On a record's bytes: one side is always the producer's copy into the ring.
    assert "ring_push" in result.stderr, result.stderr
    assert result.returncode != 0


@needs_gcc
def test_ring_passes_optimised_without_sanitizer(tmp_path):
    """The build a Pi owner runs (scripts/ring-stress.sh), where the hardware
    itself reorders: x86 here, so this proves the harness, not the ordering."""
    assert_passed(run(build(tmp_path, OPTIMISED_FLAGS), 3))


@needs_gcc
def test_a_lost_wake_up_is_counted(tmp_path):
    result = run(build(tmp_path, OPTIMISED_FLAGS, ["RING_STRESS_LOSE_WAKEUPS"]), 1)
    counts, line = summary(result.stdout)
    assert result.returncode == 1
    assert counts["lost_wakeups"] > 0, line
    assert all(counts[name] == 0 for name in FAILURE_COUNTERS if name != "lost_wakeups"), line
