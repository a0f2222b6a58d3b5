"""The header checks that keep garbage, cut-short and mislabelled frames out of
the stream (core/h264.py access_unit_problem, core/vp8.py frame_problem), and
the restart backoff (stream/health.py)."""

import os

import pytest

import media
from rpistream.core import h264, vp8
from rpistream.stream import health
from rpistream.stream.health import Health

CHECKS = {"libx264": h264.access_unit_problem, "libvpx": vp8.frame_problem}


@pytest.mark.parametrize("codec", CHECKS)
def test_every_frame_an_encoder_makes_passes(codec):
    frames = media.encode(codec, 30, 10)
    assert [CHECKS[codec](f.data, f.keyframe) for f in frames] == [None] * 30


@pytest.mark.parametrize("codec", CHECKS)
def test_mislabelled_frames_are_refused(codec):
    key, delta = media.encode(codec, 2, 10)
    assert "flagged a delta frame" in CHECKS[codec](key.data, False)
    assert "flagged a key frame" in CHECKS[codec](delta.data, True)


@pytest.mark.parametrize("codec", CHECKS)
def test_keyframes_cut_short_are_refused(codec):
    key = media.encode(codec, 1, 10)[0].data
    for size in (0, 1, 5, 12, 30):
        assert CHECKS[codec](key[:size], True) is not None, size


def test_h264_problems_are_named():
    key = media.encode("libx264", 1, 10)[0].data
    assert h264.access_unit_problem(b"\x01" * 100, False) == (
        "an H.264 access unit that does not begin with an Annex-B start code")
    assert h264.access_unit_problem(b"\x00\x00\x01\xe7" + key[4:], True) == (
        "an H.264 NAL unit with header byte e7: not H.264")  # forbidden_zero_bit
    sps_pps = key[:key.index(b"\x00\x00\x01\x65")]  # up to the IDR slice's start code
    assert h264.access_unit_problem(sps_pps, True).endswith("without a slice: cut short")
    assert h264.access_unit_problem(sps_pps + b"\x00\x00\x01\x65", True) == (
        "an H.264 slice of 1 bytes: cut short")


def test_vp8_problems_are_named():
    key = media.encode("libvpx", 1, 10)[0].data
    assert vp8.frame_problem(b"\xff" * 100, False).endswith("not VP8")
    assert vp8.frame_problem(key[:3] + b"\x00\x00\x00" + key[6:], True) == (
        "a VP8 key frame without its start code 9d 01 2a")
    first_partition = int.from_bytes(key[:3], "little") >> 5  # RFC 6386 §9.1
    cut = key[:vp8.KEYFRAME_HEADER_BYTES + first_partition - 1]
    assert vp8.frame_problem(cut, True) == (
        f"a VP8 frame of {len(cut)} bytes cut short: its first partition alone is "
        f"{first_partition} bytes")
    assert vp8.frame_problem(cut + key[len(cut):len(cut) + 1], True) is None


def test_random_bytes_almost_never_pass():
    passed = [sum(check(os.urandom(3000), False) is None for _ in range(1000))
              for check in (h264.access_unit_problem, vp8.frame_problem)]
    assert passed[0] == 0 and passed[1] < 20, passed


def test_backoff_doubles_from_a_second_to_a_cap_and_starts_over_once_stable(monkeypatch):
    assert [health.backoff(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert health.backoff(1000) == health.MAX_RETRY
    clock = [100.0]
    monkeypatch.setattr(health.time, "monotonic", lambda: clock[0])
    camera = Health("cam0")
    camera.set_live()
    waits = []
    for _ in range(3):
        camera.set_down(health.FAILED, "busy")
        waits.append(camera.retry_at - clock[0])
        camera.set_restarting()
        camera.set_live()  # live, but dies again at once
    assert waits == [1, 2, 4]
    clock[0] += health.STABLE_AFTER
    camera.set_down(health.STALLED, "no frame")
    assert camera.retry_at - clock[0] == 1
    assert (camera.stalls, camera.failures, camera.restarts) == (1, 3, 3)
    assert camera.not_live_for(clock[0] + 5) == 5
