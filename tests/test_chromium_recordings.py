"""Chromium end to end: the viewer page's Recordings panel against a real
Server recording its camera. Chromium plays a recorded segment (fragmented
MP4 for H.264, WebM for VP8) in the page, and the test pattern's block code,
read from the frames it presents with the page's own reader, shows the
frames of that file in order; Delete removes the row and the file; the
Start/Stop button follows the server, and says why a start failed."""

from __future__ import annotations

import asyncio
import re

import av
import pytest

from chromium import available, chromium
from rpistream.record import list_segments
from rpistream.sources import blockcode
from serving import base_url, camera, serving
from waiting import until

pytestmark = [
    pytest.mark.skipif(not available(), reason="Debian's chromium is not installed "
                       "(/usr/bin/chromium): apt install chromium"),
    pytest.mark.timeout(90),
]

KEYFRAME_INTERVAL = 1.0
SEGMENT_SECONDS = 2.0
# Room for the live player and the panel's video below it, both in view:
# headless Chromium presents no frames of a video scrolled out of view.
VIEWPORT = {"width": 1280, "height": 1600}
PLAY_TIMEOUT_MS = 15_000
PANEL = ".recordings"
ROW = f"{PANEL} .segments li"
PLAYBACK = f"{PANEL} video.playback"

# Reads the block code of every frame the panel's <video> presents, with the
# page's blockcode.js, as viewer.js does for the live picture.
WATCH_PLAYBACK = """async (selector) => {
  const { COLUMNS, ROWS, cellSize, readBlockCode } = await import("/static/blockcode.js");
  const video = document.querySelector(selector);
  const canvas = document.createElement("canvas");
  const context = canvas.getContext("2d", { willReadFrequently: true });
  window.playbackCodes = [];
  const onFrame = (now, metadata) => {
    const { width, height } = metadata;
    const cell = cellSize(width, height);
    [canvas.width, canvas.height] = [COLUMNS * cell, ROWS * cell];
    context.drawImage(video, 0, 0, canvas.width, canvas.height,
      0, 0, canvas.width, canvas.height);
    const code = readBlockCode(context.getImageData(0, 0, canvas.width, canvas.height),
      width, height);
    window.playbackCodes.push(code ? code.frame : null);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}"""


def frame_numbers(path) -> list[int]:
    """The test pattern's frame numbers, read from every picture PyAV decodes."""
    with av.open(str(path)) as container:
        return [blockcode.read(frame.to_ndarray(format="gray"))[0]
                for frame in container.decode(video=0)]


def recordings(page):
    return page.evaluate("window.rpistream.players.cam0.recordings")


@pytest.mark.parametrize("codec, suffix", [("h264", ".mp4"), ("vp8", ".webm")])
async def test_a_recording_plays_in_the_page_and_is_deleted_from_it(codec, suffix, tmp_path,
                                                                   monkeypatch):
    directory = tmp_path / "recordings"
    record = {"enabled": True, "directory": str(directory), "segment_seconds": SEGMENT_SECONDS}
    cam = camera("cam0", codec, keyframe_interval=KEYFRAME_INTERVAL, record=record)
    async with serving(cam) as server, chromium(tmp_path / "profile") as browser:
        await until(lambda: directory.exists() and list_segments(directory),
                    "a completed segment", timeout=10)
        page = await browser.new_page()
        await page.set_viewport_size(VIEWPORT)
        await page.goto(base_url(server) + "/")
        # Closed, the panel lists nothing.
        await page.wait_for_function("window.rpistream?.players?.cam0?.state === 'playing'",
                                     timeout=PLAY_TIMEOUT_MS)
        assert await recordings(page) is None
        await page.click(f"{PANEL} summary")
        await page.wait_for_selector(ROW)
        listing = await recordings(page)
        assert listing["recording"] is True
        assert await page.text_content(f"{PANEL} .toggle-recording") == "Stop recording"
        oldest = listing["segments"][0]
        assert oldest["name"].endswith(suffix)
        row = page.locator(f'{ROW}[data-name="{oldest["name"]}"]')
        text = await row.locator("span").text_content()
        assert re.fullmatch(r"\d\d:\d\d:\d\d · \d+ s · \d+ kB", text), text
        assert await row.locator("a").get_attribute("href") == oldest["url"]
        assert await row.locator("a").get_attribute("download") == oldest["name"]

        # Play: the panel's <video> plays the file; the live player goes on.
        await page.evaluate(WATCH_PLAYBACK, PLAYBACK)
        await row.locator("button", has_text="Play").click()
        video = f"document.querySelector({PLAYBACK!r})"
        await page.wait_for_function(f"{video}.readyState >= 2 && {video}.currentTime > 0.5",
                                     timeout=PLAY_TIMEOUT_MS)
        await page.wait_for_function(f"{video}.ended", timeout=PLAY_TIMEOUT_MS)
        assert await page.evaluate(f"{video}.error?.message") is None
        played = await page.evaluate("window.playbackCodes")
        codes = [n for n in played if n is not None]
        recorded = frame_numbers(directory / oldest["name"])
        # Every presented frame carries a code of the file's, in order, from
        # its start to its end (a busy machine presents fewer, never others).
        # A late callback copies the frame after its own, which the next one
        # copies again: a number may repeat, never go back.
        assert len(codes) == len(played) and len(set(codes)) >= 0.3 * len(recorded), played
        assert set(codes) <= set(recorded), (codes, recorded)
        assert all(b >= a for a, b in zip(codes, codes[1:])), codes
        assert codes[0] <= recorded[0] + 3 and codes[-1] >= recorded[-1] - 3, (codes, recorded)
        assert await page.evaluate(
            "window.rpistream.players.cam0.frames.at(-1).presentedMs > Date.now() - 1000")

        # Delete: dismissed, nothing happens; confirmed, the row and the file go.
        page.once("dialog", lambda dialog: dialog.dismiss())
        await row.locator("button", has_text="Delete").click()
        await asyncio.sleep(0.3)
        assert (directory / oldest["name"]).exists()
        page.once("dialog", lambda dialog: dialog.accept())
        await row.locator("button", has_text="Delete").click()
        await row.wait_for(state="detached")
        assert not (directory / oldest["name"]).exists()
        assert oldest["name"] not in [s["name"] for s in (await recordings(page))["segments"]]
        assert await page.locator(PLAYBACK).is_hidden()  # it was playing that one

        # Stop, then a start the server refuses: its reason is shown.
        await page.click(f"{PANEL} .toggle-recording")
        await page.wait_for_function(
            "window.rpistream.players.cam0.recordings?.recording === false")
        assert server.cameras["cam0"].recorder is None
        assert await page.text_content(f"{PANEL} .toggle-recording") == "Start recording"

        async def refused():
            return "the disk is full"

        monkeypatch.setattr(server.cameras["cam0"], "start_recording", refused)
        await page.click(f"{PANEL} .toggle-recording")
        problem = page.locator(f"{PANEL} .recordings-error")
        await problem.wait_for(state="visible")
        assert "503" in await problem.text_content()
        assert "cannot record: the disk is full" in await problem.text_content()
        assert await page.text_content(f"{PANEL} .toggle-recording") == "Start recording"
