"""Run a real rpistream Server in the test's event loop, on loopback only."""

from __future__ import annotations

import contextlib

from rpistream.config import parse_config
from rpistream.server import Server

# Test-pattern cameras small enough to encode quickly on two cores.
SMALL = {"width": 320, "height": 240, "fps": 30, "bitrate": 500_000}


def camera(name: str = "cam0", codec: str = "h264", source: str = "testpattern", **fields):
    return {"name": name, "source": source, "codec": codec, **SMALL, **fields}


@contextlib.asynccontextmanager
async def serving(*cameras: dict, limits: dict | None = None):
    """A started Server with these cameras (default: one small H.264 test
    pattern) listening on 127.0.0.1 at a free port, offering only 127.0.0.1 as
    ICE candidate; stopped on exit whatever happens."""
    config = parse_config({
        "server": {"host": "127.0.0.1", "port": 0, "ice_hosts": ["127.0.0.1"]},
        "camera": list(cameras) or [camera()],
        "limits": limits or {},
    })
    server = Server(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def base_url(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}"
