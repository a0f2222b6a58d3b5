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
async def serving(*cameras: dict, limits: dict | None = None, address: str = "127.0.0.1"):
    """A started Server with these cameras (default: one small H.264 test
    pattern) listening on `address` (loopback, or a test namespace's) at a free
    port, offering only that address as ICE candidate; stopped on exit
    whatever happens."""
    config = parse_config({
        "server": {"host": address, "port": 0, "ice_hosts": [address]},
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
    return f"http://{server.config.server.host}:{server.port}"
