"""Run a real rpistream Server, on loopback only: in the test's event loop, or as a process."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from rpistream.config import parse_config, read_secrets
from rpistream.server import Server

# Test-pattern cameras small enough to encode quickly on two cores.
SMALL = {"width": 320, "height": 240, "fps": 30, "bitrate": 500_000}


def camera(name: str = "cam0", codec: str = "h264", source: str = "testpattern", **fields):
    return {"name": name, "source": source, "codec": codec, **SMALL, **fields}


@contextlib.asynccontextmanager
async def serving(*cameras: dict, limits: dict | None = None, address: str = "127.0.0.1",
                  server: dict | None = None, monitor: dict | None = None,
                  default_camera: bool = False):
    """A started Server with these cameras (default: one small H.264 test
    pattern) listening on `address` (loopback, or a test namespace's) at a free
    port, offering only that address as ICE candidate; stopped on exit
    whatever happens. `server` adds keys to the [server] table (e.g. a token),
    `monitor` is the [monitor] table. `default_camera`: no [[camera]] table,
    so the server picks its camera (made SMALL) as a fresh install does."""
    data = {
        "server": {"host": address, "port": 0, "ice_hosts": [address], **(server or {})},
        "limits": limits or {},
        # The whole test suite runs in one process whose RSS is the tests' as
        # much as the server's: thresholds out of its reach, unless a test of
        # the memory watch sets its own.
        "monitor": {"warn_rss_mb": 16000, "critical_rss_mb": 16384, **(monitor or {})},
    }
    if not default_camera:
        data["camera"] = list(cameras) or [camera()]
    config = read_secrets(parse_config(data), "the test's config")
    if default_camera:
        config = dataclasses.replace(config, cameras=tuple(
            dataclasses.replace(c, **SMALL) for c in config.cameras))
    server = Server(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def base_url(server: Server) -> str:
    return f"http://{server.config.server.host}:{server.port}"


SERVE_TIMEOUT = 30.0  # seconds for a server process to start serving, or to stop


@contextlib.contextmanager
def server_process(config: Path, log: Path, wrap=lambda argv: argv):
    """`rpistream serve --config config` as a process of its own, its output
    to the file `log` (a pipe nobody reads would fill and block it); `wrap`
    may put its command line in another (e.g. a cgroup's). Yields (process,
    base URL) once it serves. On the way out: SIGTERM, and it must exit 0
    within SERVE_TIMEOUT, unless the test has already ended it. The config's
    [server] host must be 127.0.0.1 (the URL it prints may say localhost,
    which may be ::1 first)."""
    with open(log, "w") as out:
        process = subprocess.Popen(wrap([sys.executable, "-m", "rpistream", "serve",
                                         "--config", str(config)]),
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT
        while not (match := re.search(r"is serving; open the viewer at http://[^/]+:(\d+)/",
                                      log.read_text())):
            assert process.poll() is None, f"the server ended:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"not serving yet:\n{log.read_text()}"
            time.sleep(0.1)
        yield process, f"http://127.0.0.1:{match.group(1)}"
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            assert process.wait(SERVE_TIMEOUT) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
