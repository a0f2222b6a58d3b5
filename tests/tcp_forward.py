"""A TCP forwarder, the reverse proxy in front of a camera in tests: run in a
relay namespace (tests/netns.py Relayed), it passes HTTP between a viewer
and a camera that cannot reach each other.

    python tcp_forward.py LISTEN_IP LISTEN_PORT TARGET_IP TARGET_PORT

Prints "ready" once it listens; runs until killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

CHUNK = 65536


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


async def main(listen_ip: str, listen_port: str, target_ip: str, target_port: str) -> None:
    async def forward(reader, writer):
        try:
            target_reader, target_writer = await asyncio.open_connection(target_ip,
                                                                         int(target_port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, target_writer), pipe(target_reader, writer))
        for w in (writer, target_writer):
            w.close()

    server = await asyncio.start_server(forward, listen_ip, int(listen_port))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
