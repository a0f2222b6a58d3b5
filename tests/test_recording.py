"""Recording in the server: a camera with [camera.record] writes playable
segments of exactly the frames it streamed, while a viewer watches, across a
restart of its source, and stops cleanly with the server."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import av

from rpistream.record import list_segments
from rpistream.sources import blockcode
from serving import base_url, camera, server_process, serving
from waiting import until
from whep_client import WhepViewer

KEYFRAME_INTERVAL = 1.0
SEGMENT_SECONDS = 2.0


def frame_numbers(path) -> list[int]:
    """The test pattern's frame numbers, read from every decoded picture."""
    with av.open(str(path)) as container:
        return [blockcode.read(frame.to_ndarray(format="gray"))[0]
                for frame in container.decode(video=0)]


async def test_a_recording_camera_writes_what_it_streams(tmp_path):
    record = {"enabled": True, "directory": str(tmp_path), "segment_seconds": SEGMENT_SECONDS}
    cam = camera("cam0", "h264", keyframe_interval=KEYFRAME_INTERVAL, record=record)
    async with serving(cam) as server, aiohttp.ClientSession() as http:
        viewer = WhepViewer(base_url(server))
        await viewer.connect(http)
        camera_ = server.cameras["cam0"]
        await until(lambda: len(list_segments(tmp_path)) >= 2, "two completed segments",
                    timeout=10)
        await camera_.restart()  # a new source: recording goes on, in a new segment
        done = len(list_segments(tmp_path))
        await until(lambda: len(list_segments(tmp_path)) > done, "a segment after the restart",
                    timeout=10)
        assert viewer.frames > 60
        async with http.get(base_url(server) + "/api/cameras") as response:
            (info,) = await response.json()
        recording = info["recording"]
        assert recording["state"] == "recording" and recording["segments"] >= 3
        assert recording["frames_dropped"] == 0
        async with http.get(base_url(server) + "/metrics") as response:
            metrics = await response.text()
        assert 'rpistream_recording{camera="cam0"} 1.0' in metrics
        assert 'rpistream_recording_segments_total{camera="cam0"}' in metrics
        assert 'rpistream_recording_frames_dropped_total{camera="cam0"} 0.0' in metrics
        await viewer.hang_up(http)
    assert not any(tmp_path.glob("*.partial")), "stop completes the last segment"
    segments = list_segments(tmp_path)
    assert len(segments) >= 4
    restarts = 0
    for segment in segments:
        numbers = frame_numbers(segment.path)
        assert numbers, segment
        # Each source numbers its frames from 0: a restart shows as one step back.
        steps = [b - a for a, b in zip(numbers, numbers[1:])]
        assert all(step == 1 or step < 0 for step in steps), (segment, numbers)
        restarts += sum(step < 0 for step in steps)
        assert abs(segment.duration - len(numbers) / 30) < 0.2 + SEGMENT_SECONDS * 0.1, segment
    starts = [frame_numbers(s.path)[0] for s in segments]
    assert restarts + sum(n == 0 for n in starts[1:]) == 1, starts  # one restart, seen once


async def test_a_recording_that_cannot_start_leaves_streaming_alone(tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    record = {"enabled": True, "directory": str(blocked / "cam0")}
    async with serving(camera("cam0", "h264", record=record)) as server:
        assert server.cameras["cam0"].recorder is None
        assert server.cameras["cam0"].health.live
        await asyncio.sleep(0)
    assert "cannot create the recording directory" in caplog.text
    assert "streaming goes on without recording" in caplog.text


TOKEN = "a-recording-test-token-of-length"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def test_recordings_are_listed_downloaded_in_ranges_and_deleted_through_the_api(tmp_path):
    record = {"directory": str(tmp_path), "segment_seconds": SEGMENT_SECONDS}
    cam = camera("cam0", "vp8", keyframe_interval=KEYFRAME_INTERVAL, record=record)
    async with serving(cam, server={"token": TOKEN}) as server, \
            aiohttp.ClientSession(headers=BEARER) as http:
        url = base_url(server)
        async with aiohttp.ClientSession() as stranger:
            async with stranger.post(url + "/cameras/cam0/recording") as response:
                assert response.status == 401
            async with stranger.get(url + "/api/cameras/cam0/recordings") as response:
                assert response.status == 401
        async with http.post(url + "/cameras/cam0/recording") as response:
            assert response.status == 201 and (await response.json())["state"] == "recording"
        await until(lambda: len(list_segments(tmp_path)) >= 2, "two segments", timeout=10)
        async with http.delete(url + "/cameras/cam0/recording") as response:
            assert response.status == 204
        assert not any(tmp_path.glob("*.partial"))
        async with http.get(url + "/api/cameras/cam0/recordings") as response:
            listing = await response.json()
        assert listing["recording"] is False
        first, *others = listing["segments"]
        assert len(others) >= 2 and first["name"].endswith(".webm")
        assert first["size"] == (tmp_path / first["name"]).stat().st_size
        # Segments end at the first keyframe past their length.
        assert SEGMENT_SECONDS <= first["duration"] < SEGMENT_SECONDS + 2 * KEYFRAME_INTERVAL
        async with http.get(url + first["url"]) as response:
            assert response.status == 200 and response.content_type == "video/webm"
            whole = await response.read()
        assert whole == (tmp_path / first["name"]).read_bytes()
        async with http.get(url + first["url"], headers={"Range": "bytes=100-199"}) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
            assert await response.read() == whole[100:200]
        for name in ("../../etc/passwd", "%2e%2e%2fconfig.toml", first["name"] + ".partial"):
            async with http.get(f"{url}/cameras/cam0/recordings/{name}") as response:
                assert response.status == 404, name
        async with http.delete(url + first["url"]) as response:
            assert response.status == 204
        assert not (tmp_path / first["name"]).exists()
        async with http.get(url + first["url"]) as response:
            assert response.status == 404
            assert "GET /api/cameras/cam0/recordings lists them" in await response.text()


def test_kill_9_while_recording_loses_at_most_about_a_second(tmp_path):
    """kill -9 of the server mid-segment, three times: every completed segment
    plays whole, and each cut one is recovered at the next start, playing to
    within about a keyframe interval of the kill (its last complete fragment)."""
    config = tmp_path / "config.toml"
    recordings = tmp_path / "recordings"
    config.write_text(
        '[server]\nhost = "127.0.0.1"\nport = 0\nice_hosts = ["127.0.0.1"]\n'
        '[[camera]]\nsource = "testpattern"\nwidth = 320\nheight = 240\nbitrate = "500k"\n'
        f'keyframe_interval = {KEYFRAME_INTERVAL}\n'
        f'[camera.record]\nenabled = true\ndirectory = "{recordings}"\n'
        'segment_seconds = 60\n')
    log = tmp_path / "server.log"
    kills = []
    for _ in range(3):
        with server_process(config, log) as (server, _):
            time.sleep(3.3)  # mid-fragment: keyframes every second
            kills.append(time.time())
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=10)
        assert "Traceback" not in log.read_text(), log.read_text()
    assert len(list(recordings.glob("*.partial"))) == 1  # the last kill's, not yet recovered
    with server_process(config, log):
        pass  # a last start recovers it; then a clean stop
    assert not any(recordings.glob("*.partial"))
    segments = list_segments(recordings)
    # Three recovered, and the last start's if it got to its first keyframe.
    assert len(segments) in (3, 4), segments
    for segment, killed in zip(segments, kills):
        with av.open(str(segment.path)) as container:
            codes = [blockcode.read(frame.to_ndarray(format="gray"))
                     for frame in container.decode(video=0)]
        numbers = [number for number, _ in codes]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
        last_capture_s = codes[-1][1] / 1000
        assert 0 <= killed - last_capture_s < KEYFRAME_INTERVAL + 0.7, (segment, killed)
        assert abs(segment.duration - len(numbers) / 30) < 0.1
