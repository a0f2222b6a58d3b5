"""The server end to end with aiortc viewers over loopback: both codecs, several
cameras, NACK answered by RTX, PLI reaching the source, clean hang-ups."""

import asyncio
import collections
import struct

import aiohttp
import pytest
from aiortc import rtcrtpreceiver

from serving import base_url, camera, serving
from waiting import until
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


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_viewer_receives_every_frame(codec):
    async with serving(camera(codec=codec)) as server:
        codes = await watch(server)
        numbers = frame_numbers(codes)
        assert numbers == sorted(numbers)
        assert missing_frames(codes) <= 2
        await until(lambda: server.sessions.count() == 0,
                    lambda: f"the hung-up session to close ({server.sessions.count()} left)")
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
                    and next(iter(server.sessions.sessions.values())).viewer is not None,
                    "the session's viewer to start (DTLS up)")
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
        await until(lambda: broadcaster.keyframes > keyframes,
                    f"a keyframe after the PLI (the source had made {keyframes})", timeout=2)
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
        await until(lambda: client.frames >= 30,
                    lambda: f"30 decoded frames of the file (got {client.frames})", timeout=10)
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
        await until(lambda: server.sessions.count() == 0,
                    "the session of the closed peer to close", timeout=10)
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
        await until(lambda: server.sessions.count() == 0,
                    "the session that never connected to be reaped", timeout=5)
        assert any("ICE" in reason for reason in server.sessions.disconnects)


# What aiortc 1.16 (with aioice) runs as tasks for one connected peer
# connection, whichever end it is: the ICE transport's state monitor
# (rtcicetransport.py), aioice's RFC 7675 consent checks (ice.py) and the DTLS
# transport's receive loop (rtcdtlstransport.py). Its other tasks end once
# connected (connecting, ICE checks) or belong to what rpistream does not use
# (the RTP sender's send and RTCP loops, the receiver's RTCP loop, SCTP).
AIORTC_PEER_TASKS = collections.Counter({"RTCIceTransport._monitor": 1,
                                         "Connection.query_consent": 1,
                                         "RTCDtlsTransport.__run": 1})
# A test client is a plain recvonly aiortc peer: those, its receiver's RTCP
# loop, and WhepViewer's track reader.
CLIENT_PEER_TASKS = AIORTC_PEER_TASKS + collections.Counter({"RTCRtpReceiver._run_rtcp": 1,
                                                             "WhepViewer._read": 1})
# Any HTTP keep-alive connection of the test's session: one per connection, not per viewer.
HTTP_HANDLER = "RequestHandler.start"


class UndecodedFrames:
    """The clients' decoder, which decodes nothing: 8 libavcodec decoders would
    load the machine and tell nothing about the server's tasks."""

    def decode(self, encoded_frame):
        return []


def client_objects(clients: list[WhepViewer]) -> set[int]:
    """ids of the objects whose coroutines the test's clients run as tasks."""
    ids = set()
    for client in clients:
        ids |= {id(client), id(client.pc)}
        for transceiver in client.pc.getTransceivers():
            dtls = transceiver.receiver.transport
            ids |= {id(transceiver), id(transceiver.sender), id(transceiver.receiver), id(dtls),
                    id(dtls.transport), id(dtls.transport._connection)}
    return ids


def task_census(clients: list[WhepViewer]) -> tuple[collections.Counter, collections.Counter]:
    """(server's, clients') running tasks by coroutine name: a task is the
    clients' if its coroutine is a method of one of their objects, else the
    server's. Leaves out the test's own task and the HTTP connection handlers."""
    theirs = client_objects(clients)
    server, client = collections.Counter(), collections.Counter()
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        if task is asyncio.current_task() or coro.__qualname__ == HTTP_HANDLER:
            continue
        frame = getattr(coro, "cr_frame", None)
        owner = frame.f_locals.get("self") if frame is not None else None
        (client if id(owner) in theirs else server)[coro.__qualname__] += 1
    return server, client


def times(tasks: collections.Counter, count: int) -> collections.Counter:
    return collections.Counter({name: n * count for name, n in tasks.items()})


def difference(found: collections.Counter, expected: collections.Counter) -> str:
    extra, missing = found - expected, expected - found
    return f"extra {dict(extra)}, missing {dict(missing)}"


async def test_no_task_per_viewer_and_no_aiortc_send_loop(monkeypatch):
    """The broadcaster delivers to every viewer from the event loop's reader
    and timer callbacks: each viewer adds only the tasks aiortc runs for any
    connected peer, none of rpistream's, and no aiortc send loop."""
    monkeypatch.setattr(rtcrtpreceiver, "get_decoder", lambda codec: UndecodedFrames())
    async with serving() as server, aiohttp.ClientSession() as http:
        clients: list[WhepViewer] = []
        baseline, _ = task_census(clients)
        sessions = server.sessions.sessions
        for count in (1, 8):
            while len(clients) < count:
                client = WhepViewer(base_url(server))
                await client.connect(http)
                clients.append(client)
            await until(lambda: len(sessions) == count and all(
                s.viewer is not None and s.viewer.frames_sent > 0 for s in sessions.values())
                        and all(c.pc.connectionState == "connected" for c in clients),
                        f"{count} viewers streaming", timeout=20)
            # Exactly baseline + count x aiortc's per-peer tasks on the server's
            # side (so tasks(8) - tasks(1) == 7 x them): an rpistream task per
            # viewer, or aiortc's RTCRtpSender loops, would be extra. And the
            # clients' side exactly what each client runs, which shows the
            # split between the two is sound. Waited for: ICE checks and
            # connecting tasks end shortly after connecting.
            expected = (baseline + times(AIORTC_PEER_TASKS, count), times(CLIENT_PEER_TASKS, count))
            await until(lambda: task_census(clients) == expected,
                        lambda: f"only aiortc's per-peer tasks with {count} viewer(s); server: "
                                f"{difference(task_census(clients)[0], expected[0])}; clients: "
                                f"{difference(task_census(clients)[1], expected[1])}",
                        timeout=10)

        # Nor a task per frame: while 8 viewers stream, the server creates no
        # task at all (every task made meanwhile is recorded at its creation,
        # when its coroutine's frame still tells whose method it is).
        loop = asyncio.get_running_loop()
        previous_factory = loop.get_task_factory()
        theirs = client_objects(clients)
        by_server: collections.Counter = collections.Counter()

        def recording_factory(loop, coro, **kwargs):
            frame = getattr(coro, "cr_frame", None)
            if frame is None or id(frame.f_locals.get("self")) not in theirs:
                by_server[coro.__qualname__] += 1
            if previous_factory is not None:
                return previous_factory(loop, coro, **kwargs)
            return asyncio.Task(coro, loop=loop, **kwargs)

        viewers = [s.viewer for s in sessions.values()]
        sent = [viewer.frames_sent for viewer in viewers]
        loop.set_task_factory(recording_factory)
        try:
            await until(lambda: all(v.frames_sent >= n + 30 for v, n in zip(viewers, sent)),
                        "30 more frames sent to every viewer", timeout=20)
        finally:
            loop.set_task_factory(previous_factory)
        assert not by_server, f"tasks the server created while streaming: {dict(by_server)}"

        for client in clients:
            assert await client.hang_up(http) == 200
        await until(lambda: server.sessions.count() == 0, "every session closed")
        # aiortc's closing tasks finish shortly after.
        await until(lambda: task_census(clients) == (baseline, collections.Counter()),
                    lambda: f"the server's tasks back to {dict(baseline)}: "
                            f"{difference(task_census(clients)[0], baseline)}", timeout=10)
