"""Chromium end to end: the viewer page (rpistream/web/static/) against a real
Server on loopback. Continuity and latency are read from the test pattern's
block code in the frames Chromium presents (window.rpistream)."""

from __future__ import annotations

import asyncio
import time

import pytest

import faults
from chromium import available, block_codes_since, chromium
from serving import base_url, camera, serving
from waiting import until

pytestmark = [
    pytest.mark.skipif(not available(), reason="Debian's chromium is not installed "
                       "(/usr/bin/chromium): apt install chromium"),
    pytest.mark.timeout(60),
]

WATCH_SECONDS = 3.0
FIRST_FRAME_TIMEOUT_MS = 15_000
# Same machine, loopback: encode + send + decode + one refresh is tens of ms;
# a second means something queues.
SANE_LATENCY_MS = 1000
# Frames made but not yet shown when a watch starts or ends (latency / 33 ms).
IN_FLIGHT_FRAMES = 3
ALL_FIVE_SHOWN = {"width": 1600, "height": 1200}  # 3 columns of players, 2 rows


def player(label: str) -> str:
    """The page's window.rpistream record of one player (its camera's name,
    or "<camera> (2)" for a second player of the same camera)."""
    return f"window.rpistream?.players?.[{label!r}]"


async def open_viewer(context, server, query: str = ""):
    page = await context.new_page()
    await page.goto(base_url(server) + "/" + query)
    return page


async def wait_playing(page, label: str) -> None:
    await page.wait_for_function(f"{player(label)}?.frames.length > 5",
                                 timeout=FIRST_FRAME_TIMEOUT_MS)


async def watch(page, server, label: str, seconds: float = WATCH_SECONDS) -> dict:
    """What the player `label` showed over the next `seconds`, next to what
    the source made meanwhile (the machine may be too busy for 30 fps)."""
    await wait_playing(page, label)
    source = server.cameras[label.split(" (")[0]].source
    start, made = await page.evaluate("Date.now()"), source.frames
    await asyncio.sleep(seconds)
    frames = await block_codes_since(page, label, start)
    return {"frames": frames, "made": source.frames - made}


def summary(frames: list[dict]) -> dict:
    numbers = [f["frame"] for f in frames]
    steps = list(zip(numbers, numbers[1:]))
    latencies = sorted(f["presentedMs"] - f["captureMs"] for f in frames)
    return {
        "count": len(frames),
        "advanced": numbers[-1] - numbers[0] if numbers else 0,
        "missing": sum(b - a - 1 for a, b in steps if b > a + 1),
        "longest_gap": max((b - a - 1 for a, b in steps), default=0),
        "backwards": sum(1 for a, b in steps if b < a),
        "latency_min": latencies[0] if latencies else None,
        "latency_max": latencies[-1] if latencies else None,
        "latency_p50": latencies[len(latencies) // 2] if latencies else None,
    }


def assert_advancing(watched: dict, share: float = 0.8) -> dict:
    """Frame numbers advanced by `share` of what the source made (less the
    frames in flight at either end), never backwards, with sane latency."""
    got = summary(watched["frames"])
    got["made"] = watched["made"]
    assert got["advanced"] >= share * watched["made"] - IN_FLIGHT_FRAMES, got
    assert got["backwards"] == 0, got
    assert 0 <= got["latency_min"] and got["latency_max"] < SANE_LATENCY_MS, got
    return got


async def wait_sessions(server, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while server.sessions.count() != count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert server.sessions.count() == count


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_viewer_plays_the_codec(codec, tmp_path):
    async with serving(camera("cam0", codec)) as server, chromium(tmp_path) as browser:
        page = await open_viewer(browser, server)
        got = assert_advancing(await watch(page, server, "cam0"))
        # A gap of a frame or two is the compositor showing the newer of two
        # frames that came within one refresh (60 Hz for 30 fps, with encode
        # jitter): a few per hundred. A frame lost on the way stalls decoding
        # until a repair or keyframe: a long gap, and Chromium's counters show it.
        assert got["missing"] <= 0.1 * got["advanced"] and got["longest_gap"] <= 2, got
        stats = await page.evaluate(f"{player('cam0')}.stats")
        assert stats["codec"] == codec.upper() and stats["size"] == "320x240", stats
        assert stats["fps"] > 0.5 * got["made"] / WATCH_SECONDS and stats["kbps"] > 0, stats
        assert stats["packetsLost"] == 0 and stats["freezes"] == 0, stats
        assert stats["framesDropped"] == 0, stats
        await page.click(".toggle-stats")
        await page.wait_for_function(
            "document.querySelector('.stats').textContent.includes('latency')")
        assert "ms" in await page.text_content(".stats")


async def test_two_cameras_on_one_page(tmp_path):
    async with serving(camera("front", "h264"), camera("back", "vp8")) as server, \
            chromium(tmp_path) as browser:
        page = await open_viewer(browser, server)
        await wait_playing(page, "front")
        # Two encoders and two decoders share two cores with the headless
        # compositor, which then skips some presentations: advancing is the test.
        for name in ("front", "back"):
            assert_advancing(await watch(page, server, name, 1.5), share=0.5)
        assert server.sessions.count() == 2


async def test_five_viewers_then_none(tmp_path):
    # Five players on one page: headless Chromium hardly renders pages other
    # than the last opened, so five pages would not all present frames; and
    # a big window, since a video scrolled out of view presents none either.
    labels = ["cam0"] + [f"cam0 ({n})" for n in range(2, 6)]
    async with serving(camera("cam0", "h264")) as server, chromium(tmp_path) as browser:
        page = await browser.new_page()
        await page.set_viewport_size(ALL_FIVE_SHOWN)
        await page.goto(base_url(server) + "/?" + "&".join(["camera=cam0"] * 5))
        for label in labels:
            await wait_playing(page, label)
        assert server.sessions.count() == 5
        watched = await asyncio.gather(*(watch(page, server, label, 1.5) for label in labels))
        for one in watched:
            assert_advancing(one, share=0.5)
        await page.close()  # pagehide: every player DELETEs its session
        await wait_sessions(server, 0)


async def test_errors_are_shown_and_a_full_server_is_retried(tmp_path):
    async with serving(camera("cam0", "h264"), limits={"max_viewers": 1}) as server, \
            chromium(tmp_path) as browser:
        first = await open_viewer(browser, server)
        await wait_playing(first, "cam0")
        second = await open_viewer(browser, server, "?camera=cam0&camera=nope")
        await second.wait_for_function(f"{player('nope')}?.state === 'failed'")
        await second.wait_for_function(f"{player('cam0')}?.error?.startsWith('503')")
        messages = await second.locator(".message").all_text_contents()
        assert any("no camera named 'nope'; cameras: cam0" in m for m in messages), messages
        assert any("maximum of 1 viewers" in m for m in messages), messages
        await first.close()
        # The backoff is still short (a few tries in): the slot is taken within seconds.
        await wait_playing(second, "cam0")
        assert await second.evaluate(f"{player('cam0')}.state") == "playing"
        await second.close()
        await wait_sessions(server, 0)


async def test_a_stalled_camera_is_shown_and_comes_back_without_reconnecting(tmp_path,
                                                                           monkeypatch):
    """The page says the camera stalled and is restarting; once it is live
    again the same connection shows frames within a keyframe interval."""
    keyframe_interval = 2.0
    cam0 = camera("cam0", "h264", stall_timeout=1.0, keyframe_interval=keyframe_interval)
    fault = faults.FrameFault()
    async with serving(cam0) as server, chromium(tmp_path) as browser:
        cam = server.cameras["cam0"]
        faults.attach(monkeypatch, cam, fault)
        page = await open_viewer(browser, server)
        await wait_playing(page, "cam0")
        fault.mode = "none"  # the source runs on; no frame comes
        await page.wait_for_function(f"{player('cam0')}.health?.state === 'stalled' || "
                                     f"{player('cam0')}.health?.state === 'restarting'",
                                     timeout=8_000)
        badge = page.locator(".health")
        assert await badge.is_visible()
        assert "no usable frame for" in await badge.text_content()
        fault.mode = "ok"
        await until(lambda: cam.health.live, "cam0 live again", timeout=10)
        recovered = await page.evaluate("Date.now()")
        await page.wait_for_function(
            f"{player('cam0')}.frames.some(f => f.presentedMs >= {recovered})",
            timeout=keyframe_interval * 1000)
        await page.wait_for_function(f"{player('cam0')}.health?.state === 'live'", timeout=5_000)
        assert not await badge.is_visible()
        assert await page.evaluate(f"{player('cam0')}.connects") == 1
        assert server.sessions.count() == 1


async def test_a_test_pattern_in_place_of_the_pi_camera_says_why(tmp_path):
    async with serving(default_camera=True) as server, chromium(tmp_path) as browser:
        page = await open_viewer(browser, server)
        await wait_playing(page, "cam0")
        notice = page.locator(".fallback")
        assert await notice.is_visible()
        assert await notice.text_content() == (
            "Test pattern, not a camera: " + server.config.cameras[0].fallback_reason)
