"""Snapshots: GET /cameras/<camera>/snapshot.jpg is a JPEG of the camera's
picture of the moment (its block code says when it was captured), many
callers at once cost one decode, and a camera nobody asks keeps nothing."""

from __future__ import annotations

import asyncio
import io
import time

import aiohttp
import av
import pytest

from rpistream.sources import blockcode
from rpistream.sources.testpattern import open_encoder
from rpistream.stream.snapshot import SnapshotUnavailable, Snapshotter
from serving import SMALL, base_url, camera, serving
from waiting import until

KEYFRAME_INTERVAL = 1.0


def picture(jpeg: bytes) -> av.VideoFrame:
    with av.open(io.BytesIO(jpeg)) as container:
        return next(container.decode(video=0))


async def get(http: aiohttp.ClientSession, url: str) -> bytes:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "image/jpeg"
        assert response.headers["Cache-Control"] == "no-store"
        return await response.read()


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_a_snapshot_is_the_live_picture_and_callers_share_its_decode(codec):
    async with serving(camera("cam0", codec, keyframe_interval=KEYFRAME_INTERVAL)) as server, \
            aiohttp.ClientSession() as http:
        snapshots = server.cameras["cam0"].snapshots
        url = base_url(server) + "/cameras/cam0/snapshot.jpg"
        await get(http, url)  # the first after an idle spell waits for a keyframe
        assert snapshots.held_frames >= 1

        asked_ms = time.time_ns() // 1_000_000
        frame = picture(await get(http, url))
        answered_ms = time.time_ns() // 1_000_000
        assert (frame.width, frame.height) == (SMALL["width"], SMALL["height"])
        code = blockcode.read(frame.to_ndarray(format="gray"))
        assert code is not None, "the block code survives the JPEG"
        _, captured_ms = code
        assert asked_ms - 1000 < captured_ms <= answered_ms, (asked_ms, captured_ms)

        await asyncio.sleep(1.1)  # past the cache: the next callers need a decode
        decodes = snapshots.decodes
        answers = await asyncio.gather(*(get(http, url) for _ in range(20)))
        assert snapshots.decodes == decodes + 1
        assert len(set(answers)) == 1
        assert await get(http, url) == answers[0], "within the cache window: the same JPEG"
        assert snapshots.decodes == decodes + 1


async def test_an_idle_camera_keeps_nothing_for_snapshots():
    async with serving(camera("cam0", "h264", keyframe_interval=KEYFRAME_INTERVAL)) as server:
        cam = server.cameras["cam0"]
        await until(lambda: cam.broadcaster.keyframes + cam.broadcaster.frames > 45,
                    "frames past a keyframe")
        assert (cam.snapshots.held_frames, cam.snapshots.held_bytes) == (0, 0)
        assert cam.snapshots.decodes == 0


async def test_an_unknown_camera_is_404():
    async with serving(camera("cam0")) as server, aiohttp.ClientSession() as http:
        async with http.get(base_url(server) + "/cameras/nope/snapshot.jpg") as response:
            assert response.status == 404
            assert "cam0" in await response.text()


async def test_no_keyframe_in_time_is_a_clear_error():
    asked = []
    snapshots = Snapshotter("cam9", "h264", lambda: asked.append(1), fps=30,
                            keyframe_interval=0.1)
    with pytest.raises(SnapshotUnavailable, match="cam9 sent no keyframe within 1.1 s"):
        await snapshots.snapshot()
    assert asked == [1]


def encoded(codec: str, count: int, width: int = 320, height: int = 240) -> list:
    """(data, keyframe) of `count` test frames, a keyframe first."""
    encoder = open_encoder(codec, width, height, 30, 500_000, 10.0)
    frames = []
    for number in range(count + 5):
        image = av.VideoFrame(width, height, "yuv420p")
        for plane in image.planes:
            plane.update(bytes([number * 7 % 256]) * plane.buffer_size)
        image.pts = number * 3000
        frames += [(bytes(p), p.is_keyframe) for p in encoder.encode(image)]
    return frames[:count]


async def test_past_a_bound_it_keeps_nothing_until_the_next_keyframe():
    frames = encoded("h264", 10)
    assert frames[0][1] and not any(key for _, key in frames[1:])
    keyframe_bytes = len(frames[0][0])
    snapshots = Snapshotter("cam0", "h264", lambda: None, fps=30, keyframe_interval=0.1,
                            max_bytes=keyframe_bytes + len(frames[1][0]))
    assert snapshots.max_frames == 6  # two GOPs of 3
    snapshots._active_until_ns = time.monotonic_ns() + 10**12  # as a request does
    now = time.monotonic_ns()
    for data, key in frames[:3]:
        snapshots.offer(memoryview(data), now, key)
    assert (snapshots.held_frames, snapshots.held_bytes, snapshots.dropped_runs) == (0, 0, 1)
    snapshots.offer(memoryview(frames[0][0]), now, True)
    assert (snapshots.held_frames, snapshots.held_bytes) == (1, keyframe_bytes)
    jpeg = await snapshots.snapshot()
    assert picture(jpeg).width == 320 and snapshots.decodes == 1
