"""Watch an installed rpistream the way a viewer would, for scripts/prove-package.sh.

Waits for /healthz, checks that the API refuses a request without the token
(the package generates one on first install), then opens a WHEP session with
the token, decodes frames until their block codes show the test pattern
advancing, and hangs up. Prints what it saw; exits non-zero, naming the step,
on anything else.

    python tests/package_probe.py http://127.0.0.1:8080 TOKEN [--frames N]
        [--frames-timeout S] [--start-timeout S]

The defaults suit a native build; scripts/prove-pi.sh gives an emulated
(qemu) server longer.

ICE uses 127.0.0.1 only: the script runs it in a network namespace that has
nothing but loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rpistream.webrtc import aiortc_internals  # noqa: E402
from tests.whep_client import WhepViewer, frame_numbers  # noqa: E402

# Defaults; the options above change them.
START_TIMEOUT = 60.0  # seconds for the server to answer /healthz (imports, camera start)
FRAMES = 30  # one second of the test pattern
FRAMES_TIMEOUT = 20.0


async def wait_healthy(http: aiohttp.ClientSession, base: str) -> dict:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            async with http.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return await response.json()
        except aiohttp.ClientConnectionError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"probe: {base}/healthz did not answer 200 within "
                             f"{START_TIMEOUT:g} s")
        await asyncio.sleep(0.5)


async def probe(base: str, token: str) -> None:
    aiortc_internals.restrict_host_addresses(["127.0.0.1"])
    async with aiohttp.ClientSession() as anonymous:
        health = await wait_healthy(anonymous, base)
        print(f"probe: /healthz: {health}")
        async with anonymous.get(f"{base}/api/stats") as response:
            if response.status != 401:
                raise SystemExit(f"probe: /api/stats without the token answered "
                                 f"{response.status}, not 401")
        print("probe: /api/stats without the token: 401")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        viewer = WhepViewer(base)
        try:
            await viewer.connect(http)
            print(f"probe: WHEP answer: 201, session {viewer.location}")
            await viewer.wait_frames(FRAMES, FRAMES_TIMEOUT)
            numbers = frame_numbers(viewer.codes)
            if numbers[-1] <= numbers[0]:
                raise SystemExit(f"probe: the picture does not advance: frames {numbers}")
            print(f"probe: decoded {viewer.frames} frames, test pattern frames "
                  f"{numbers[0]}..{numbers[-1]}")
            status = await viewer.hang_up(http)
            if status != 200:
                raise SystemExit(f"probe: DELETE {viewer.location} answered {status}")
            print("probe: hung up: 200")
        finally:
            await viewer.close()


def main() -> None:
    global START_TIMEOUT, FRAMES, FRAMES_TIMEOUT
    parser = argparse.ArgumentParser(usage=__doc__)
    parser.add_argument("base")
    parser.add_argument("token")
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--frames-timeout", type=float, default=FRAMES_TIMEOUT)
    parser.add_argument("--start-timeout", type=float, default=START_TIMEOUT)
    args = parser.parse_args()
    START_TIMEOUT, FRAMES, FRAMES_TIMEOUT = args.start_timeout, args.frames, args.frames_timeout
    try:
        asyncio.run(probe(args.base.rstrip("/"), args.token))
    except asyncio.TimeoutError:
        raise SystemExit(f"probe: fewer than {FRAMES} frames decoded within "
                         f"{FRAMES_TIMEOUT:g} s") from None


if __name__ == "__main__":
    main()
