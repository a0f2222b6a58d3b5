"""Chromium and the access token: /?token= once, then the cookie carries the
page (static files, /api/*, WHEP) with no code of the page's own; and the
server stats panel draws its charts."""

from __future__ import annotations

import socket

import pytest

from chromium import available, chromium
from serving import base_url, camera, serving
from test_chromium import player, wait_playing

pytestmark = [
    pytest.mark.skipif(not available(), reason="Debian's chromium is not installed "
                       "(/usr/bin/chromium): apt install chromium"),
    pytest.mark.timeout(90),
]

TOKEN = "browser-test-token-0123456789"

# Pixels drawn on each chart's canvas (not transparent): a line and a grid.
CANVAS_INK = """() => [...document.querySelectorAll('#server-stats canvas')].map((c) => {
  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let ink = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) ink += 1;
  return [c.closest('figure').dataset.chart, c.width, ink];
})"""


async def test_token_in_the_url_then_the_cookie_plays_the_page(tmp_path):
    async with serving(camera("cam0", "h264"), server={"token": TOKEN}) as server, \
            chromium(tmp_path) as browser:
        page = await browser.new_page()
        response = await page.goto(base_url(server) + "/")
        assert response.status == 401
        assert "this server requires an access token" in await page.text_content("body")

        response = await page.goto(f"{base_url(server)}/?camera=cam0&token={TOKEN}")
        # The redirect took the token out of the address bar and history.
        assert response.status == 200 and page.url == base_url(server) + "/?camera=cam0"
        assert TOKEN not in await page.evaluate(
            "performance.getEntriesByType('navigation')[0].name")
        await wait_playing(page, "cam0")
        (cookie,) = await browser.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
        assert cookie["expires"] > 0 and TOKEN not in cookie["value"]
        assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it

        # A second tab of the same browser: the cookie alone opens the page.
        second = await browser.new_page()
        assert (await second.goto(base_url(server) + "/")).status == 200
        await wait_playing(second, "cam0")
        assert server.sessions.count() == 2
        await second.close()


async def test_server_stats_panel_draws(tmp_path):
    # A forward to an RTP receiver here: the panel has a line for it.
    sfu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sfu.bind(("127.0.0.1", 0))
    port = sfu.getsockname()[1]
    forward = {"type": "rtp", "host": "127.0.0.1", "port": port}
    async with serving(camera("cam0", "h264", forward=[forward]), server={"token": TOKEN}) \
            as server, chromium(tmp_path) as browser:
        page = await browser.new_page()
        await page.goto(f"{base_url(server)}/?token={TOKEN}")
        await wait_playing(page, "cam0")
        assert await page.is_hidden("#server-stats")
        await page.click("#toggle-server-stats")
        # Three polls (4 s): viewers and bitrate have lines; the player's
        # latency is sampled at each.
        await page.wait_for_function(
            "window.rpistream.serverStats.polls >= 3"
            " && window.rpistream.serverStats.history.latency.cam0?.length >= 2"
            " && window.rpistream.serverStats.last?.totals?.bitrate_bps > 0",
            timeout=15_000)
        stats = await page.evaluate("window.rpistream.serverStats")
        assert stats["error"] is None and stats["last"]["totals"]["viewers"] == 1, stats
        summary = await page.text_content("#server-stats .summary")
        assert "RSS" in summary and " MB" in summary and "1 viewers" in summary, summary
        values = dict(zip(
            await page.eval_on_selector_all("#server-stats figure", "fs => fs.map(f => f.dataset.chart)"),
            await page.locator("#server-stats figcaption .value").all_text_contents()))
        assert values["rss"].endswith(" MB") and values["viewers"] == "1", values
        assert values["bitrate"].endswith(" Mbit/s") and float(values["bitrate"].split()[0]) > 0
        assert values["latency"].endswith(" ms"), values
        for name, width, ink in await page.evaluate(CANVAS_INK):
            assert width > 100 and ink > 200, (name, width, ink)
        lines = await page.locator("#server-stats .cameras li").all_text_contents()
        assert any(line.startswith(f"cam0 -> rtp://127.0.0.1:{port}: forwarding")
                   for line in lines), lines
        # Hidden again: polling stops.
        await page.click("#toggle-server-stats")
        polls = stats["polls"]
        await page.wait_for_timeout(2500)
        assert await page.evaluate("window.rpistream.serverStats.polls") <= polls + 1
        assert await page.evaluate(f"{player('cam0')}.state") == "playing"
    sfu.setblocking(False)
    packet = sfu.recv(2048)
    sfu.close()
    assert packet[0] >> 6 == 2 and packet[1] & 0x7F == 96  # RFC 3550 §5.1: version 2, PT 96


async def test_stats_panel_fits_a_phone(tmp_path):
    async with serving(camera("cam0", "h264")) as server, chromium(tmp_path) as browser:
        page = await browser.new_page()
        await page.set_viewport_size({"width": 360, "height": 740})
        await page.goto(base_url(server) + "/")
        await page.click("#toggle-server-stats")
        await page.wait_for_function("window.rpistream.serverStats.polls >= 1")
        widths = await page.evaluate("""() => ({
          page: document.documentElement.scrollWidth,
          charts: [...document.querySelectorAll('#server-stats canvas')]
            .map((c) => c.getBoundingClientRect().width)})""")
        assert widths["page"] <= 360, widths  # nothing wider than the screen
        assert all(300 <= w <= 360 for w in widths["charts"]), widths  # one chart a row
