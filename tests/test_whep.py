"""WHEP over HTTP: every status a client can cause, with the message it gets."""

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender

from serving import base_url, camera, serving
from waiting import until

SDP = {"Content-Type": "application/sdp"}


async def make_offer(codec_mime: str | None = None, direction: str = "recvonly") -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver("video", direction=direction)
    if codec_mime:
        transceiver.setCodecPreferences([
            c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == codec_mime])
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


@pytest.fixture
async def server():
    async with serving(camera("cam0", "vp8"), limits={"max_viewers": 2,
                                                      "max_body_bytes": 16384}) as server:
        yield server


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http, server, body, headers=SDP, camera_name="cam0"):
    async with http.post(f"{base_url(server)}/cameras/{camera_name}/whep", data=body,
                         headers=headers) as response:
        return response.status, await response.text(), response.headers


async def test_post_answers_201_with_location_and_cors(server, http):
    status, body, headers = await post(http, server, await make_offer())
    assert status == 201, body
    assert body.startswith("v=0") and headers["Content-Type"].startswith("application/sdp")
    assert headers["Location"].startswith("/cameras/cam0/whep/")
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "Location" in headers["Access-Control-Expose-Headers"]
    async with http.delete(base_url(server) + headers["Location"]) as response:
        assert response.status == 200
    async with http.delete(base_url(server) + headers["Location"]) as response:
        assert response.status == 404
        assert "no such WHEP session" in await response.text()
    assert server.sessions.count() == 0


@pytest.mark.parametrize("body, headers, status, message", [
    ("v=0", {"Content-Type": "text/plain"}, 415,
     "Content-Type must be application/sdp, not text/plain"),
    ("v=0", {}, 415, "Content-Type must be application/sdp"),
    # A parameter CPython's email parser (under aiohttp) raises on: still a 415.
    ("v=0", {"Content-Type": "text/plain;x*"}, 415,
     "Content-Type must be application/sdp, not text/plain"),
    ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid\r\n", SDP, 400,
     "the offer has an a=mid line without a value"),
    ("v=0\r\nm=video x UDP/TLS/RTP/SAVPF 96\r\n", SDP, 400,
     "the body is not a valid SDP offer (the parser failed with AssertionError)"),
    ("hello", SDP, 400, "the offer has no video section"),
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", SDP, 400, "the offer has no video section"),
    (b"\xff\xfe", SDP, 400, "the body is not UTF-8 text"),
])
async def test_bad_offers(server, http, body, headers, status, message):
    got, text, response_headers = await post(http, server, body, headers)
    assert (got, message in text) == (status, True), text
    assert response_headers["Access-Control-Allow-Origin"] == "*"
    assert server.sessions.count() == 0


async def test_offer_without_the_cameras_codec(server, http):
    status, text, _ = await post(http, server, await make_offer("video/H264"))
    assert status == 400
    assert "camera 'cam0' sends video/VP8, which the offer does not include" in text
    assert server.sessions.count() == 0


async def test_offer_that_does_not_receive(server, http):
    status, text, _ = await post(http, server, await make_offer(direction="sendonly"))
    assert status == 400 and "the offer's video is sendonly" in text


async def test_unknown_camera(server, http):
    status, text, _ = await post(http, server, await make_offer(), camera_name="garage")
    assert status == 404 and "no camera named 'garage'; cameras: cam0" in text


async def test_body_too_large(server, http):
    status, text, _ = await post(http, server, "v=0\r\n" + "a=x\r\n" * 5000)
    assert status == 413 and "16384" in text


async def test_viewer_limit_is_503_with_retry_after(server, http):
    locations = []
    for _ in range(2):
        status, body, headers = await post(http, server, await make_offer())
        assert status == 201, body
        locations.append(headers["Location"])
    status, text, headers = await post(http, server, await make_offer())
    assert status == 503 and headers["Retry-After"] == "10"
    assert "the server has its maximum of 2 viewers; try again later" in text
    for location in locations:
        async with http.delete(base_url(server) + location) as response:
            assert response.status == 200


async def test_options_and_patch(server, http):
    url = f"{base_url(server)}/cameras/cam0/whep"
    async with http.options(url) as response:
        assert response.status == 204
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
    status, body, headers = await post(http, server, await make_offer())
    resource = base_url(server) + headers["Location"]
    ufrag = next(line for line in (await make_offer()).splitlines() if line.startswith("a=ice-ufrag"))
    trickle = {"Content-Type": "application/trickle-ice-sdpfrag"}
    async with http.patch(resource, data="a=mid:0\r\n", headers=SDP) as response:
        assert response.status == 415
    async with http.patch(resource, data=f"{ufrag}\r\na=ice-pwd:x\r\n", headers=trickle) as response:
        assert response.status == 422 and "ICE restarts are not supported" in await response.text()
    candidate = "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
    async with http.patch(resource, data="a=mid:0\r\n" + candidate, headers=trickle) as response:
        assert response.status == 204
    async with http.patch(resource, data="a=candidate:nonsense\r\n", headers=trickle) as response:
        assert response.status == 400 and "bad candidate" in await response.text()
    async with http.delete(resource) as response:
        assert response.status == 200


async def test_api_and_health(server, http):
    async with http.get(f"{base_url(server)}/api/cameras") as response:
        (info,) = await response.json()
    assert info["name"] == "cam0" and info["codec"] == "vp8" and info["whep"] == "/cameras/cam0/whep"
    async with http.get(f"{base_url(server)}/healthz") as response:
        assert response.status == 200 and (await response.json())["status"] == "ok"
    server.cameras["cam0"].source.stop()  # it restarts a second after this is seen
    await until(lambda: not server.cameras["cam0"].health.live, "the stopped source to be seen")
    async with http.get(f"{base_url(server)}/healthz") as response:
        assert response.status == 503
        assert (await response.json())["failing"] == {
            "cam0": "failed: its source stopped by itself (end of a file played once)"}


async def test_a_test_pattern_in_place_of_the_pi_camera_says_why(caplog):
    async with serving(default_camera=True) as server, aiohttp.ClientSession() as http:
        reason = server.config.cameras[0].fallback_reason
        assert reason.startswith("no camera is configured and picamera2 ")
        async with http.get(f"{base_url(server)}/api/cameras") as response:
            (info,) = await response.json()
        assert (info["source"], info["fallback_reason"]) == ("testpattern", reason)
        async with http.get(f"{base_url(server)}/healthz") as response:
            assert response.status == 200
            assert (await response.json())["test_pattern_because"] == {"cam0": reason}
    assert f"camera cam0: a test pattern, because {reason}" in caplog.text
