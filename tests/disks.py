"""Disks for tests and benchmarks that fill one or slow one down.

- small_tmpfs(): a tmpfs of a few MiB to fill.
- slow_disk(): an ext4 file system on a loop device whose writes, by the
  processes put in its cgroup, are throttled to a rate the test sets (an SD
  card that cannot keep up). cgroup v2's io.max where the io controller is
  in the v2 hierarchy, else cgroup v1's blkio.throttle.write_bps_device
  (this machine's hybrid hierarchy binds io to v1).

Both need root; they raise DiskUnavailable (a test skips) where they cannot
be made, and undo everything they did on the way out.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


class DiskUnavailable(RuntimeError):
    """This machine cannot make the disk (not root, no loop devices, no cgroup)."""


def _run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise DiskUnavailable(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout.strip()


@contextlib.contextmanager
def small_tmpfs(tmp_path, size: str):
    """A tmpfs of `size` (mount's syntax: "1m") at tmp_path/disk; skips the
    test where it cannot be mounted (root needed)."""
    import pytest

    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount))
    except DiskUnavailable as exc:
        pytest.skip(f"cannot mount a small tmpfs to fill (root needed): {exc}")
    try:
        yield mount
    finally:
        # Lazy: a failed test may still hold a file open on it.
        _run("umount", "-l", str(mount))


def _io_v2() -> Path | None:
    """The cgroup v2 hierarchy's root, if its io controller is there."""
    for root in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        with contextlib.suppress(OSError):
            if "io" in (root / "cgroup.controllers").read_text().split():
                return root
    return None


class SlowDisk:
    """What slow_disk() yields: `mount`, the file system's directory;
    `command(argv)`, argv run inside the throttled cgroup; `throttle(rate)`,
    writes limited to `rate` bytes a second, or unlimited with None."""

    def __init__(self, mount: Path, device: str, cgroup: Path, v2: bool):
        self.mount = mount
        self.device = device  # "major:minor"
        self.cgroup = cgroup
        self.v2 = v2

    def command(self, argv: list[str]) -> list[str]:
        """argv, run by a shell that first moves itself into the cgroup
        (the exec'ed program and all its threads stay there)."""
        procs = str(self.cgroup / "cgroup.procs")
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *argv]

    def add(self, pid: int) -> None:
        """Move process `pid`, all its threads, into the cgroup."""
        (self.cgroup / "cgroup.procs").write_text(str(pid))

    def throttle(self, bytes_per_s: int | None) -> None:
        if self.v2:
            limit = "max" if bytes_per_s is None else str(bytes_per_s)
            (self.cgroup / "io.max").write_text(f"{self.device} wbps={limit}")
        else:  # v1: 0 removes the device's rule
            (self.cgroup / "blkio.throttle.write_bps_device").write_text(
                f"{self.device} {bytes_per_s or 0}")


@contextlib.contextmanager
def slow_disk(directory: Path, size_mb: int = 256):
    """An ext4 file system of `size_mb` on a loop device over an image file in
    `directory`, mounted at directory/disk, with a cgroup of its own (see
    SlowDisk). Not throttled until `throttle()` says so.

    Mounted `sync`: every write() is written to the device before it
    returns, by the writing thread. cgroup v1 throttles only I/O a task
    submits itself (the page cache's write-back is the kernel flusher's,
    charged to no one); `sync` puts each write in the writer's cgroup, and
    is what a card that cannot keep up comes to anyway once the page cache's
    dirty limit is reached: write() waits for the card."""
    directory = Path(directory)
    image, mount = directory / "disk.img", directory / "disk"
    with contextlib.ExitStack() as undo:
        with open(image, "wb") as f:
            f.truncate(size_mb * 2**20)
        undo.callback(image.unlink)
        loop = _run("losetup", "--find", "--show", str(image))
        undo.callback(_run, "losetup", "--detach", loop)
        _run("mkfs.ext4", "-q", "-F", loop)
        mount.mkdir()
        _run("mount", "-o", "sync", loop, str(mount))
        undo.callback(_run, "umount", "-l", str(mount))
        stat = os.stat(loop)
        device = f"{os.major(stat.st_rdev)}:{os.minor(stat.st_rdev)}"
        name = f"rpistream-slow-disk-{os.getpid()}-{device.replace(':', '-')}"
        v2_root = _io_v2()
        if v2_root is not None:
            with contextlib.suppress(OSError):  # may be enabled already, or refused
                (v2_root / "cgroup.subtree_control").write_text("+io")
            cgroup = v2_root / name
        else:
            cgroup = CGROUP_ROOT / "blkio" / name
        try:
            cgroup.mkdir()
        except OSError as exc:
            raise DiskUnavailable(f"cannot make the cgroup {cgroup}: {exc}") from exc
        undo.callback(_remove_cgroup, cgroup)
        disk = SlowDisk(mount, device, cgroup, v2=v2_root is not None)
        try:
            disk.throttle(None)
        except OSError as exc:
            raise DiskUnavailable(f"cannot throttle {loop} in {cgroup}: {exc}") from exc
        yield disk


def _remove_cgroup(cgroup: Path) -> None:
    """A cgroup goes once its processes have; the test's have exited or are moved out."""
    parent = cgroup.parent / "cgroup.procs"
    for pid in (cgroup / "cgroup.procs").read_text().split():
        with contextlib.suppress(OSError):  # exited meanwhile
            parent.write_text(pid)
    cgroup.rmdir()
