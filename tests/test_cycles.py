"""A closed session's aiortc objects, held in reference cycles, are freed by the
collection rpistream/webrtc/cycles.py runs soon after it closes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref

import aiohttp

from rpistream.webrtc.cycles import CycleCollector
from serving import base_url, serving
from whep_client import WhepViewer

FREED_TIMEOUT = 10.0  # seconds: the collector's DELAY and the peer's closing, with room


@contextlib.contextmanager
def automatic_collection_off():
    """Only explicit gc.collect() calls free cycles meanwhile: the collector's."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_a_closed_peer_is_freed_soon_after_it_hangs_up():
    with automatic_collection_off():
        async with serving() as server, aiohttp.ClientSession() as http:
            viewer = WhepViewer(base_url(server))
            await viewer.connect(http)
            await viewer.wait_frames(5)
            (session,) = server.sessions.sessions.values()
            peer = weakref.ref(session.pc)
            del session
            assert await viewer.hang_up(http) == 200
            for _ in range(int(FREED_TIMEOUT / 0.1)):
                if peer() is None:
                    break
                await asyncio.sleep(0.1)
            cycles = server.sessions.cycles
            assert peer() is None, f"the closed peer is still alive: {gc.get_referrers(peer())}"
            assert cycles.collections >= 1 and cycles.collected > 0


async def test_a_burst_of_closes_shares_one_collection():
    collector = CycleCollector(delay=0.05)
    for _ in range(5):
        collector.soon()
    await asyncio.sleep(0.3)
    assert collector.collections == 1
    collector.soon()
    collector.stop()  # a pending collection is cancelled with its owner
    await asyncio.sleep(0.3)
    assert collector.collections == 1
