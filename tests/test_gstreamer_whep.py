"""GStreamer's webrtcbin as a WHEP viewer: a WebRTC stack that shares nothing with
aiortc or browsers, and one that uses an RSA DTLS certificate (docs/DESIGN.md §7).

The client (tests/gst_whep_client.py) runs under Debian's /usr/bin/python3, which
has PyGObject; it writes every decoded frame's luma plane to a file, and the block
code in each is read here with rpistream's own reader.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from aiortc.rtcdtlstransport import RTCCertificate
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from gstreamer import SYSTEM_PYTHON, decoded_codes, unavailable
from rpistream.webrtc import aiortc_internals
from serving import base_url, camera, serving

CLIENT = Path(__file__).with_name("gst_whep_client.py")
SECONDS = 3.0
MIN_FRAMES = 15  # of ~90 at tests/serving.py's 30 fps; see the test
CODECS = ["h264", "vp8"]

@pytest.fixture(autouse=True)
def _needs_gstreamer_webrtc():
    reason = unavailable()
    if reason:
        pytest.skip(reason)


async def run_client(server, codec: str, out: Path) -> tuple[int, dict | None, str]:
    """Run the client against the server's camera; (exit status, report, stderr)."""
    env = {**os.environ, "GST_DEBUG": "dtlsconnection:1", "GST_DEBUG_NO_COLOR": "1"}
    env.pop("PYTHONPATH", None)
    process = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON, str(CLIENT), f"{base_url(server)}/cameras/{codec}/whep",
        "--codec", codec, "--seconds", str(SECONDS), "--out", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        # The client has its own watchdog; this one only guards against it failing.
        stdout, stderr = await asyncio.wait_for(process.communicate(), SECONDS + 45)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail("the GStreamer client hung past its own watchdog")
    lines = stdout.decode().strip().splitlines()
    report = json.loads(lines[-1]) if lines else None
    return process.returncode, report, stderr.decode()


async def wait_for_no_sessions(server, seconds: float = 3.0) -> int:
    deadline = time.monotonic() + seconds
    while server.sessions.count() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return server.sessions.count()


def candidate_addresses(sdp: str) -> list[str]:
    return [line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]


def sha256_fingerprint(sdp: str) -> str:
    for line in sdp.splitlines():
        if line.startswith("a=fingerprint:sha-256 "):
            return line.split()[1].upper()
    raise AssertionError("no sha-256 fingerprint in the SDP")


def assert_rsa_certificate(report: dict) -> None:
    """webrtcbin's DTLS certificate has an RSA key, and it is the one its offer's
    fingerprint (RFC 8122 §5) names, i.e. the one aiortc verified."""
    certificate = x509.load_pem_x509_certificate(report["certificate"].encode())
    assert isinstance(certificate.public_key(), rsa.RSAPublicKey)
    digest = hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest().upper()
    assert sha256_fingerprint(report["offer"]) == ":".join(
        digest[i:i + 2] for i in range(0, len(digest), 2))


@pytest.mark.parametrize("codec", CODECS)
async def test_webrtcbin_decodes_consecutive_frames(codec, tmp_path):
    out = tmp_path / "frames.y"
    async with serving(camera(codec, codec)) as server:
        status, report, stderr = await run_client(server, codec, out)
        assert status == 0, stderr
        # The client DELETEd its session before exiting.
        assert await wait_for_no_sessions(server) == 0

    # Only loopback took part in ICE, on both sides.
    assert set(candidate_addresses(report["offer"])) == {"127.0.0.1"}
    assert set(candidate_addresses(report["answer"])) == {"127.0.0.1"}

    # DTLS was done with webrtcbin's RSA certificate.
    assert_rsa_certificate(report)

    codes = decoded_codes(out)
    assert len(codes) == report["frames"]
    read = [code for code in codes if code is not None]
    assert len(read) >= 0.95 * len(codes), f"{len(codes) - len(read)} frames had no block code"
    numbers = [number for number, _ in read]
    captured_ms = [ms for _, ms in read]
    # ~90 frames unloaded (30 fps for 3 s). The rate is the test camera's and
    # drops when the machine is busy; what the transport owes is every frame the
    # camera made, in order, for the whole run.
    assert len(numbers) >= MIN_FRAMES, f"only {len(numbers)} frames in {SECONDS} s"
    assert captured_ms[-1] - captured_ms[0] >= SECONDS * 1000 / 2, "video stopped early"
    steps = np.diff(numbers)
    assert (steps > 0).all(), f"frame numbers not increasing: {numbers}"
    gaps = int((steps > 1).sum())
    assert gaps <= 3, f"{gaps} gaps in the frame numbers: {numbers}"
    assert numbers[-1] - numbers[0] + 1 - len(numbers) <= 5, f"frames missing: {numbers}"


async def test_rsa_peer_fails_without_accept_rsa_dtls_peers(tmp_path, monkeypatch):
    """Negative control: with aiortc's own ECDSA-only cipher list, webrtcbin's RSA
    certificate leaves no shared cipher, so the point above is the RSA suites."""
    async with serving(camera("h264", "h264")) as server:
        # Server.start() installed the wider list; put aiortc's own back.
        monkeypatch.setattr(RTCCertificate, "_create_ssl_context",
                            aiortc_internals._original_create_ssl_context)
        status, report, stderr = await run_client(server, "h264", tmp_path / "frames.y")
        assert status != 0
        assert report is not None and report["frames"] == 0
        assert_rsa_certificate(report)
        assert "no shared cipher" in stderr, stderr
        assert await wait_for_no_sessions(server, 10) == 0
