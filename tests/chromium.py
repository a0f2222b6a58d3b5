"""Debian's Chromium driven by Playwright, kept on loopback.

Shared by tests/test_chromium.py and bench/bench_latency.py. Playwright's own
browser downloads are never used (no `playwright install`): Debian's package
is the browser under test.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")

# Chromium honours only the *last* --disable-features switch, and ours comes
# after Playwright's, so it repeats Playwright's list (1.65) — several of
# those stop calls to Google — next to the one WebRTC on loopback needs:
# with mDNS hiding on, the page offers *.local names instead of 127.0.0.1.
DISABLED_FEATURES = [
    "WebRtcHideLocalIpsWithMdns",
    "MediaRouter",  # Cast discovery multicasts on the LAN
    "OptimizationHints", "NetworkTimeServiceQuerying", "AimEnabled", "PreconnectToSearch",
    "HttpsUpgrades", "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "PaintHolding",
    "DestroyProfileOnBrowserClose", "AvoidUnnecessaryBeforeUnloadCheckSync",
    "ThirdPartyStoragePartitioning", "AvoidCorsURLLoaderRestartOnRedirect",
]
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-quic",
    "--allow-loopback-in-peer-connection",
    "--use-fake-ui-for-media-stream",
    "--disable-features=" + ",".join(DISABLED_FEATURES),
]
LAUNCH_TIMEOUT_MS = 30_000
ACTION_TIMEOUT_MS = 15_000


def available() -> bool:
    return CHROMIUM.exists()


@contextlib.asynccontextmanager
async def chromium(user_data_dir: Path, executable: Path = CHROMIUM, host: str = "127.0.0.1"):
    """A headless Chromium browser context with a fresh profile in
    `user_data_dir`; closed on exit whatever happens. `executable` may be a
    wrapper that starts Chromium elsewhere (in a network namespace), `host` the
    server's address there."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(user_data_dir), executable_path=str(executable),
            # Any host name fails to resolve: nothing but the server can be reached.
            args=[*FLAGS, f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {host}"], headless=True,
            timeout=LAUNCH_TIMEOUT_MS)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        try:
            yield context
        finally:
            await context.close()


async def block_codes_since(page, label: str, since_ms: float) -> list[dict]:
    """The block codes the viewer page's player `label` read from frames
    presented at or after `since_ms` (Date.now() in the page)."""
    return await page.evaluate(
        "([label, since]) => window.rpistream.players[label].frames"
        ".filter(f => f.presentedMs >= since)", [label, since_ms])
