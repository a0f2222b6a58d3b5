"""The startup self-check names whatever an aiortc release moved."""

import pytest
from aiortc.rtcdtlstransport import RTCDtlsTransport

from rpistream.webrtc import aiortc_internals


def test_self_check_passes_on_the_pinned_aiortc():
    aiortc_internals.self_check()


def test_self_check_names_a_missing_attribute(monkeypatch):
    owner = type("RTCDtlsTransport", (), {})  # as if a release dropped _rtp_router
    required = [(owner if o is RTCDtlsTransport else o, name, why)
                for o, name, why in aiortc_internals._REQUIRED]
    monkeypatch.setattr(aiortc_internals, "_REQUIRED", required)
    with pytest.raises(aiortc_internals.AiortcMismatch,
                       match=r"RTCDtlsTransport\._rtp_router \(used for receiving RTCP for our "
                             r"video SSRC\).*tested with aiortc >=1\.16,<1\.17"):
        aiortc_internals.self_check()
