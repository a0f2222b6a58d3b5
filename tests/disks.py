"""Small disks for tests that fill one: a tmpfs mounted under the test's directory."""

from __future__ import annotations

import contextlib
import subprocess

import pytest


@contextlib.contextmanager
def small_tmpfs(tmp_path, size: str):
    """A tmpfs of `size` (mount's syntax: "1m") at tmp_path/disk; skips the
    test where it cannot be mounted (root needed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (root needed): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        # Lazy: a failed test may still hold a file open on it.
        subprocess.run(["umount", "-l", str(mount)], check=True)
