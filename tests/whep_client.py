"""A WHEP viewer built on aiortc, for tests: decodes the video and reads the block codes."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from rpistream.sources import blockcode

# Block codes kept per viewer: a test watches a few seconds at 30 fps.
MAX_CODES = 3000


class WhepViewer:
    """One recvonly peer connection to a camera's WHEP endpoint."""

    def __init__(self, base_url: str, camera: str = "cam0", read_codes: bool = True):
        """`read_codes` False: count decoded frames only (a benchmark's many
        viewers of a stream without block codes)."""
        self.url = f"{base_url}/cameras/{camera}/whep"
        self.read_codes = read_codes
        self.base_url = base_url
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.codes: list[tuple[int, int]] = []
        self.frames = 0
        self.location: str | None = None
        self._reader: asyncio.Task | None = None
        self.pc.on("track", self._on_track)

    def _on_track(self, track) -> None:
        self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self.frames += 1
                if not self.read_codes:
                    continue
                code = blockcode.read(frame.to_ndarray(format="gray"))
                if code is not None and len(self.codes) < MAX_CODES:
                    self.codes.append(code)

    async def connect(self, http: aiohttp.ClientSession) -> None:
        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with http.post(self.url, data=self.pc.localDescription.sdp,
                             headers={"Content-Type": "application/sdp"}) as response:
            body = await response.text()
            assert response.status == 201, f"{response.status}: {body}"
            self.location = response.headers["Location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    async def wait_frames(self, count: int, timeout: float = 10.0) -> None:
        async def enough():
            while len(self.codes) < count:
                await asyncio.sleep(0.05)
        await asyncio.wait_for(enough(), timeout)

    async def hang_up(self, http: aiohttp.ClientSession) -> int:
        async with http.delete(self.base_url + self.location) as response:
            status = response.status
        await self.close()
        return status

    async def close(self) -> None:
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


def frame_numbers(codes: list[tuple[int, int]]) -> list[int]:
    return [frame for frame, _ in codes]


def missing_frames(codes: list[tuple[int, int]]) -> int:
    """Frames skipped between the first and last decoded (the block code counts every frame)."""
    numbers = frame_numbers(codes)
    return (numbers[-1] - numbers[0] + 1) - len(set(numbers)) if numbers else 0


async def watch(url: str, frames: int, token: str | None, timeout: float) -> dict:
    """Connect to `url` (a WHEP endpoint), decode `frames` frames, hang up."""
    base_url, camera = url.split("/cameras/")
    viewer = WhepViewer(base_url, camera.split("/")[0])
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(headers=headers) as http:
        try:
            await viewer.connect(http)
            await viewer.wait_frames(frames, timeout)
        finally:
            status = await viewer.hang_up(http) if viewer.location else None
    return {"frames": viewer.frames, "missing": missing_frames(viewer.codes),
            "hang_up": status}


if __name__ == "__main__":
    # A viewer as a process of its own (in another network namespace):
    #     python whep_client.py URL [--frames N] [--token T] [--timeout S]
    # prints one JSON line: frames decoded, frames missing, the DELETE's status.
    import argparse
    import json

    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--token")
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(watch(args.url, args.frames, args.token, args.timeout))))
