"""The server end to end with aiortc viewers over loopback: both codecs, several
cameras, NACK answered by RTX, PLI reaching the source, clean hang-ups."""

import asyncio
import struct

import aiohttp
import pytest

from serving import base_url, camera, serving
from whep_client import WhepViewer, frame_numbers, missing_frames


async def watch(server, camera_name="cam0", frames=45):
    async with aiohttp.ClientSession() as http:
        viewer = WhepViewer(base_url(server), camera_name)
        await viewer.connect(http)
        try:
            await viewer.wait_frames(frames)
        finally:
            assert await viewer.hang_up(http) == 200
    return viewer.codes


async def until(condition, timeout=5.0):
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_viewer_receives_every_frame(codec):
    async with serving(camera(codec=codec)) as server:
        codes = await watch(server)
        numbers = frame_numbers(codes)
        assert numbers == sorted(numbers)
        assert missing_frames(codes) <= 2
        await until(lambda: server.sessions.count() == 0)
        assert server.cameras["cam0"].broadcaster.viewers == {}


async def test_two_cameras_side_by_side():
    async with serving(camera("front", "h264"), camera("back", "vp8")) as server:
        front, back = await asyncio.gather(watch(server, "front"), watch(server, "back"))
        assert missing_frames(front) <= 2 and missing_frames(back) <= 2
        stats = {name: cam.broadcaster.stats() for name, cam in server.cameras.items()}
        assert stats["front"]["frames"] > 0 and stats["back"]["frames"] > 0


async def test_answer_carries_the_streams_profile_and_rtx():
    async with serving(camera(codec="h264")) as server, aiohttp.ClientSession() as http:
        viewer = WhepViewer(base_url(server))
        await viewer.connect(http)
        answer = viewer.pc.remoteDescription.sdp
        profile = server.cameras["cam0"].source.profile_level_id
        assert f"profile-level-id={profile}" in answer
        assert "a=rtpmap:" in answer and " rtx/90000" in answer
        assert "a=ssrc-group:FID" in answer
        assert "a=sendonly" in answer
        await viewer.hang_up(http)


def drop_first_sends(viewer, every: int):
    """Lose (as a network would) the first transmission of every `every`-th
    media packet; retransmissions get through."""
    send, dropped = viewer._send, set()
    media_pt = viewer.params.payload_type

    def lossy(packet: bytes) -> int:
        if packet[1] & 0x7F == media_pt and not 192 <= packet[1] <= 223:  # not RTCP
            seq = struct.unpack_from("!H", packet, 2)[0]
            if seq % every == 0 and seq not in dropped:
                dropped.add(seq)
                return len(packet)
        return send(packet)

    viewer._send = lossy
    return dropped


async def test_lost_packets_are_resent_by_rtx():
    async with serving(camera(codec="vp8", bitrate=1_000_000)) as server, \
            aiohttp.ClientSession() as http:
        client = WhepViewer(base_url(server))
        await client.connect(http)
        await until(lambda: server.sessions.count() == 1
                    and next(iter(server.sessions.sessions.values())).viewer is not None)
        viewer = next(iter(server.sessions.sessions.values())).viewer
        dropped = drop_first_sends(viewer, every=10)
        await client.wait_frames(60)
        assert len(dropped) > 5
        assert viewer.nacks_received > 0
        assert viewer.packets_retransmitted > 0 and viewer.params.rtx_payload_type is not None
        codes = client.codes[-40:]
        assert missing_frames(codes) <= 2, "RTX repaired the losses"
        await client.hang_up(http)


async def test_pli_reaches_the_source():
    # A 60 s GOP: any keyframe after the first one is one somebody asked for.
    async with serving(camera(keyframe_interval=60)) as server, aiohttp.ClientSession() as http:
        client = WhepViewer(base_url(server))
        await client.connect(http)
        await client.wait_frames(10)
        broadcaster = server.cameras["cam0"].broadcaster
        await asyncio.sleep(0.6)  # past the keyframe request rate limit
        keyframes = broadcaster.keyframes
        receiver = client.pc.getReceivers()[0]
        media_ssrc = next(iter(server.sessions.sessions.values())).viewer.params.ssrc
        await receiver._send_rtcp_pli(media_ssrc)
        await until(lambda: broadcaster.keyframes > keyframes, timeout=2)
        assert next(iter(server.sessions.sessions.values())).viewer.keyframe_requests >= 2
        await client.hang_up(http)


async def test_file_source_streams(tmp_path):
    import media

    path = tmp_path / "clip.h264"
    path.write_bytes(b"".join(f.data for f in media.encode("libx264", 30, 10)))
    cam = camera(source="file", options={"path": str(path)}, width=media.WIDTH,
                 height=media.HEIGHT)
    async with serving(cam) as server, aiohttp.ClientSession() as http:
        client = WhepViewer(base_url(server))
        await client.connect(http)
        await until(lambda: client.frames >= 30, timeout=10)
        await client.hang_up(http)


async def test_picamera2_source_streams(standin):
    async with serving(camera(source="picamera2")) as server:
        codes = await watch(server, frames=30)
        assert missing_frames(codes) <= 2


async def test_closing_the_peer_without_hanging_up_frees_the_session():
    async with serving(limits={"ice_timeout": 2}) as server, aiohttp.ClientSession() as http:
        client = WhepViewer(base_url(server))
        await client.connect(http)
        await client.wait_frames(5)
        await client.close()  # DTLS close_notify, no DELETE
        await until(lambda: server.sessions.count() == 0, timeout=10)
        assert server.sessions.disconnects


async def test_peer_that_never_connects_is_reaped():
    async with serving(limits={"ice_timeout": 1}) as server, aiohttp.ClientSession() as http:
        client = WhepViewer(base_url(server))
        client.pc.addTransceiver("video", direction="recvonly")
        await client.pc.setLocalDescription(await client.pc.createOffer())
        async with http.post(client.url, data=client.pc.localDescription.sdp,
                             headers={"Content-Type": "application/sdp"}) as response:
            assert response.status == 201
        await client.pc.close()  # never applies the answer: ICE never starts
        await until(lambda: server.sessions.count() == 0, timeout=5)
        assert any("ICE" in reason for reason in server.sessions.disconnects)


async def test_no_task_per_viewer_and_no_aiortc_send_loop():
    async with serving() as server, aiohttp.ClientSession() as http:
        before = len(asyncio.all_tasks())
        clients = [WhepViewer(base_url(server)) for _ in range(3)]
        for client in clients:
            await client.connect(http)
        for client in clients:
            await client.wait_frames(5)
        names = [task.get_coro().__qualname__ for task in asyncio.all_tasks()]
        # The clients' receivers run aiortc's RTCRtpReceiver tasks; no sender's run.
        assert not [n for n in names if n.startswith("RTCRtpSender.")], names
        # Each client brings its own aiortc tasks (receiver, ICE, DTLS); what the
        # server adds per viewer is bounded by aiortc's ICE and DTLS tasks.
        for client in clients:
            await client.hang_up(http)
        await until(lambda: server.sessions.count() == 0)
        # Left: at most the HTTP keep-alive handler of this test's own client.
        await until(lambda: len([t for t in asyncio.all_tasks()
                                 if t.get_coro().__qualname__ != "RequestHandler.start"])
                    <= before, timeout=10)
