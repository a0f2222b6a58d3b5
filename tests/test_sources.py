"""Sources: testpattern (H.264, VP8), file (.h264, .ivf) and picamera2 (with the
stand-in in tests/picamera2_standin/) push decodable frames into a real
FrameRing; keyframes, SPS/PPS, profile-level-id, keyframe requests, pacing,
stopping, looping and error messages; the camera a config without cameras gets.

Sources are made from validated camera configs, as the server makes them: bad
values are the config's to report (tests/test_config.py)."""

import importlib.util
import logging
import select
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from av.video.frame import PictureType

from rpistream.config import parse_config
from rpistream.core.ring import FrameRing
from rpistream.core import h264
from rpistream.sources import available_sources, blockcode, choose_default_camera, create_source
from rpistream.sources.picture import MovingPicture
from rpistream.sources.testpattern import open_encoder

STANDIN = Path(__file__).parent / "picamera2_standin"
RING_CAPACITY = 4 << 20  # a few hundred 320x240 frames: never full unless a test wants it
WIDTH, HEIGHT = 320, 240
FPS = 30
# keyframe_interval at its most (60 s): no scheduled keyframe within a test.
PARAMS = dict(width=WIDTH, height=HEIGHT, fps=FPS, bitrate=250_000, keyframe_interval=60)


@pytest.fixture
def sources():
    """Sources made by a test, stopped at its end whatever happens."""
    made = []
    yield made
    for source in made:
        source.stop()
        assert not source.running


def camera(kind, codec="h264", options=None, **overrides):
    """A validated camera config, as create_source is given."""
    (camera,) = parse_config({"camera": [{"source": kind, "codec": codec, **PARAMS, **overrides,
                                          "options": options or {}}]}).cameras
    return camera


def make(sources, kind, ring, codec="h264", options=None, **overrides):
    source = create_source(camera(kind, codec, options, **overrides), ring)
    sources.append(source)
    return source


def collect(ring, count, timeout=4.0, until=None):
    """Pop up to `count` frames, waiting on the ring's eventfd, for at most
    `timeout` s (or until `until(frames)` is true): (bytes, capture_ns, pts,
    keyframe, arrival_ns) each."""
    frames = []
    deadline = time.monotonic() + timeout
    while len(frames) < count and time.monotonic() < deadline:
        if until is not None and frames and until(frames):
            break
        select.select([ring.fileno()], [], [], max(0.0, deadline - time.monotonic()))
        while len(frames) < count and (frame := ring.pop()) is not None:
            frames.append((bytes(frame.data), frame.capture_ns, frame.pts, frame.keyframe,
                           time.monotonic_ns()))
            ring.release()
    return frames


def wait_until(condition, timeout):
    """Poll `condition` every 20 ms for up to `timeout` s; its last value."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def decode_codes(codec, frames, height=HEIGHT):
    """The block code of every decoded frame: [(frame_number, capture_ms) | None]."""
    decoder = av.CodecContext.create("h264" if codec == "h264" else "vp8", "r")
    pictures = []
    for data, *_ in frames:
        pictures += decoder.decode(av.Packet(data))
    pictures += decoder.decode(None)
    assert len(pictures) == len(frames)
    return [blockcode.read(p.to_ndarray(format="yuv420p")[:height]) for p in pictures]


def assert_consecutive(codes, first=None):
    numbers = [code[0] for code in codes]
    start = numbers[0] if first is None else first
    assert numbers == list(range(start, start + len(numbers)))


def assert_h264_keyframes_carry_parameter_sets(frames):
    for data, *_, keyframe, _ in frames:
        types = h264.nal_types(data)
        assert (h264.NAL_IDR in types) == keyframe
        if keyframe:
            assert types.index(h264.NAL_SPS) < types.index(h264.NAL_PPS) < types.index(h264.NAL_IDR)


# --- testpattern -------------------------------------------------------------

@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_testpattern_frames_decode_with_consecutive_codes(sources, codec):
    ring = FrameRing(RING_CAPACITY)
    source = make(sources, "testpattern", ring, codec)
    before_ms = time.time_ns() // 1_000_000
    source.start()
    assert source.wait_ready(3)
    frames = collect(ring, 30)
    assert len(frames) == 30
    assert frames[0][3] and not any(f[3] for f in frames[1:])  # no scheduled keyframes
    codes = decode_codes(codec, frames)
    assert_consecutive(codes, first=0)
    assert before_ms <= codes[0][1] <= codes[-1][1] <= time.time_ns() // 1_000_000
    assert all(a[2] < b[2] for a, b in zip(frames, frames[1:]))  # pts increase
    assert all(f[1] <= f[4] for f in frames)  # captured before it arrived
    assert source.frames >= 30 and source.error is None
    if codec == "h264":
        assert_h264_keyframes_carry_parameter_sets(frames)
        assert source.profile_level_id == h264.profile_level_id_from_sps(
            h264.find_sps(frames[0][0]))
        assert source.profile_level_id.startswith("42c0")  # constrained baseline
    else:
        assert source.profile_level_id is None


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_testpattern_keyframe_on_request(sources, codec):
    ring = FrameRing(RING_CAPACITY)
    source = make(sources, "testpattern", ring, codec)
    source.start()
    assert len(collect(ring, 10)) == 10
    source.request_keyframe()
    frames = collect(ring, 4, until=lambda got: got[-1][3])
    assert frames[-1][3], "no keyframe within 4 frames of the request"
    if codec == "h264":
        assert_h264_keyframes_carry_parameter_sets(frames)


def test_testpattern_paces_at_fps(sources):
    ring = FrameRing(RING_CAPACITY)
    source = make(sources, "testpattern", ring, fps=20)
    source.start()
    frames = collect(ring, 21)
    elapsed_s = (frames[-1][4] - frames[0][4]) / 1e9
    assert 0.7 < elapsed_s < 1.6  # 20 intervals at 20 fps: 1 s
    assert frames[-1][2] - frames[0][2] == 20 * 4500  # 90 kHz / 20 fps per frame


def test_testpattern_thread_and_stop(sources):
    ring = FrameRing(RING_CAPACITY)
    source = make(sources, "testpattern", ring)
    source.start()
    assert collect(ring, 3)
    thread = next(t for t in threading.enumerate() if t.name == "testpattern")
    assert thread.daemon  # one stuck in a camera stack must not hold the process
    assert source.stop()
    assert not thread.is_alive() and not source.running
    pushed = ring.pushed
    time.sleep(3 / FPS)
    assert ring.pushed == pushed
    source.stop()  # idempotent
    with pytest.raises(RuntimeError, match="source testpattern was already started"):
        source.start()


def test_testpattern_asks_its_encoder_for_a_keyframe_after_ring_drops(sources):
    ring = FrameRing(16384)  # a dozen small frames
    source = make(sources, "testpattern", ring)
    source.start()
    deadline = time.monotonic() + 3
    while ring.dropped == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # nobody pops: the ring fills and drops
    assert ring.dropped > 0 and ring.wants_keyframe
    # Nothing more gets in (the ring is full) until the frames queued before
    # the drop are popped; then a keyframe, long before a scheduled one (60 s).
    queued = ring.pushed  # exact: no push can succeed before we pop
    assert len(collect(ring, queued, timeout=1)) == queued
    frames = collect(ring, 3 * FPS, timeout=3, until=lambda got: got[-1][3])
    assert frames[-1][3], "no keyframe after the ring dropped frames"


def test_source_failure_is_recorded_and_logged_not_raised(sources, caplog, monkeypatch):
    hooked = []
    monkeypatch.setattr(threading, "excepthook", hooked.append)
    ring = FrameRing(RING_CAPACITY)
    source = make(sources, "testpattern", ring)
    with caplog.at_level(logging.ERROR, logger="rpistream.sources"):
        source.start()
        assert collect(ring, 2)
        ring.close()
        assert wait_until(lambda: not source.running, 2)
    assert source.error == ("testpattern source failed: ValueError: push to a closed "
                            "FrameRing")
    assert hooked == []
    assert any(r.name == "rpistream.sources" and "push to a closed FrameRing" in r.getMessage()
               for r in caplog.records)


# --- factory -----------------------------------------------------------------

def test_create_source_makes_what_the_camera_config_names(sources, standin, tmp_path):
    path = tmp_path / "clip.ivf"
    made = {kind: make(sources, kind, FrameRing(4096), codec, options)
            for kind, codec, options in [
                ("testpattern", "vp8", {}),
                ("file", "vp8", {"path": write_ivf(path, coded_packets("vp8", 1, {0}))}),
                ("picamera2", "h264", {"camera_num": 0, "hflip": True})]}
    assert {kind: (type(s).__name__, s.codec) for kind, s in made.items()} == {
        "testpattern": ("TestPatternSource", "vp8"), "file": ("FileSource", "vp8"),
        "picamera2": ("Picamera2Source", "h264")}
    assert (made["testpattern"].width, made["testpattern"].height) == (WIDTH, HEIGHT)
    assert made["file"].path == str(path) and made["file"].loop
    assert (made["picamera2"].camera_num, made["picamera2"].hflip) == (0, True)


picamera2_installed = pytest.mark.skipif(
    importlib.util.find_spec("picamera2") is not None,
    reason="picamera2 is installed here: the not-installed messages cannot show")


@picamera2_installed
def test_available_sources_here():
    assert available_sources() == {
        "testpattern": "ok: PyAV has libx264 and libvpx",
        "file": "ok: replays .h264 (Annex-B H.264) and .ivf (VP8) files",
        "picamera2": "unavailable: picamera2 is not installed: install python3-picamera2 "
                     "from Raspberry Pi OS (sudo apt install python3-picamera2); a "
                     "virtualenv needs --system-site-packages to see it",
    }


@picamera2_installed
def test_picamera2_not_installed():
    with pytest.raises(ValueError, match=r"^picamera2 cannot be imported: picamera2 is not "
                                         r"installed: install python3-picamera2 from "
                                         r"Raspberry Pi OS"):
        create_source(camera("picamera2"), FrameRing(4096))


# --- file --------------------------------------------------------------------

def coded_packets(codec, count, keyframes_at, width=WIDTH, height=HEIGHT):
    """Encoded test-pattern frames, frame i carrying block code i; keyframes
    exactly at `keyframes_at` (the GOP is longer than `count`)."""
    encoder = open_encoder(codec, width, height, FPS, 250_000, keyframe_interval=600)
    moving = MovingPicture(width, height)
    buffer = np.empty((height * 3 // 2, width), dtype=np.uint8)
    y, u, v = moving.planes(buffer)
    packets = []
    for i in range(count):
        moving.draw(buffer, i)
        blockcode.draw(y, u, v, i, 1_760_000_000_000 + i)
        frame = av.VideoFrame.from_ndarray(buffer, format="yuv420p")
        frame.pts = i * 3000
        if i in keyframes_at:
            frame.pict_type = PictureType.I
        packets += [(bytes(p), p.is_keyframe) for p in encoder.encode(frame)]
    assert [key for _, key in packets] == [i in keyframes_at for i in range(count)]
    return [data for data, _ in packets]


def write_h264(path, packets):
    path.write_bytes(b"".join(packets))
    return str(path)


def write_ivf(path, packets, fps=FPS):
    """IVF as libvpx writes it: time base 1/fps, pts = frame index."""
    header = b"DKIF" + (0).to_bytes(2, "little") + (32).to_bytes(2, "little") + b"VP80"
    header += WIDTH.to_bytes(2, "little") + HEIGHT.to_bytes(2, "little")
    header += fps.to_bytes(4, "little") + (1).to_bytes(4, "little")
    header += len(packets).to_bytes(4, "little") + bytes(4)
    body = b"".join(len(p).to_bytes(4, "little") + i.to_bytes(8, "little") + p
                    for i, p in enumerate(packets))
    path.write_bytes(header + body)
    return str(path)


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_file_loops_from_its_first_keyframe_with_increasing_pts(sources, tmp_path, codec):
    # The file starts mid-GOP (frames 0..3 lost): every loop must start at frame 4.
    packets = coded_packets(codec, 14, keyframes_at={0, 4, 9})[4:]
    path = (write_h264(tmp_path / "clip.h264", packets) if codec == "h264"
            else write_ivf(tmp_path / "clip.ivf", packets))
    ring = FrameRing(RING_CAPACITY)
    source = make(sources, "file", ring, codec, options={"path": path})
    assert (source.width, source.height, source.fps) == (WIDTH, HEIGHT, FPS)
    source.start()
    frames = collect(ring, 25)  # 10 frames a loop: two and a half loops
    assert len(frames) == 25
    assert [f[3] for f in frames] == [i % 10 in (0, 5) for i in range(25)]
    assert [f[2] for f in frames] == [i * 3000 for i in range(25)]
    assert [code[0] for code in decode_codes(codec, frames)] == [4 + i % 10 for i in range(25)]
    if codec == "h264":
        assert_h264_keyframes_carry_parameter_sets(frames)
        assert source.profile_level_id == h264.profile_level_id_from_sps(h264.find_sps(packets[0]))
    elapsed_s = (frames[-1][4] - frames[0][4]) / 1e9
    assert 0.5 < elapsed_s < 1.4  # 24 intervals at 30 fps: 0.8 s
    source.request_keyframe()  # a file cannot: ignored, no error
    source.stop()
    assert source.error is None


def test_file_without_loop_ends_after_one_pass(sources, tmp_path):
    path = write_h264(tmp_path / "clip.h264", coded_packets("h264", 6, keyframes_at={0}))
    ring = FrameRing(RING_CAPACITY)
    source = make(sources, "file", ring, options={"path": path, "loop": False})
    source.start()
    frames = collect(ring, 7, timeout=1)
    assert [f[2] for f in frames] == [i * 3000 for i in range(6)]
    assert wait_until(lambda: not source.running, 1)
    assert source.error is None


def test_file_ivf_paces_at_its_own_frame_rate(sources, tmp_path):
    path = write_ivf(tmp_path / "clip.ivf", coded_packets("vp8", 5, keyframes_at={0}), fps=25)
    ring = FrameRing(RING_CAPACITY)
    source = make(sources, "file", ring, "vp8", options={"path": path}, fps=60)
    assert source.fps == 25
    source.start()
    frames = collect(ring, 11)
    assert [f[2] for f in frames] == [i * 3600 for i in range(11)]
    assert 0.25 < (frames[-1][4] - frames[0][4]) / 1e9 < 0.6  # 10 intervals at 25 fps


def file_error(tmp_path, name, content, codec="h264"):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError) as raised:
        create_source(camera("file", codec, {"path": str(path)}), FrameRing(4096))
    return str(raised.value).replace(str(tmp_path), "TMP")


def test_file_errors(tmp_path):
    assert file_error(tmp_path, "missing.h264", None) == (
        "cannot read file source path 'TMP/missing.h264': No such file or directory")
    assert file_error(tmp_path, "empty.h264", b"") == (
        "file source path 'TMP/empty.h264' is empty")
    assert file_error(tmp_path, "noise.h264", bytes(range(1, 200))) == (
        "file 'TMP/noise.h264' is not an Annex-B H.264 stream: no start codes found")
    no_keyframe = coded_packets("h264", 3, keyframes_at={0})[1:]
    assert file_error(tmp_path, "deltas.h264", b"".join(no_keyframe)) == (
        "file 'TMP/deltas.h264' has no keyframe, so no viewer could ever decode it: "
        "record it with keyframes (e.g. an encoder GOP)")
    assert file_error(tmp_path, "noise.ivf", b"RIFF" + bytes(60), codec="vp8") == (
        "file 'TMP/noise.ivf': not an IVF file: it does not start with b'DKIF'")
    vp9 = bytearray(Path(write_ivf(tmp_path / "vp8.ivf", [b"\x00abc"])).read_bytes())
    vp9[8:12] = b"VP90"
    assert file_error(tmp_path, "vp9.ivf", bytes(vp9), codec="vp8") == (
        "file 'TMP/vp9.ivf' holds 'VP90', not VP8 (VP80): only VP8 is supported")


# --- picamera2 (stand-in) ----------------------------------------------------

def test_picamera2_streams_the_encoders_access_units(sources, standin):
    ring = FrameRing(RING_CAPACITY)
    source = make(sources, "picamera2", ring, options={"camera_num": 0})
    source.start()
    assert source.wait_ready(3)
    frames = collect(ring, 30)
    assert len(frames) == 30
    assert frames[0][3] and not any(f[3] for f in frames[1:])
    assert_h264_keyframes_carry_parameter_sets(frames)
    assert_consecutive(decode_codes("h264", frames))
    assert source.profile_level_id == h264.profile_level_id_from_sps(h264.find_sps(frames[0][0]))
    assert source.profile_level_id.startswith("42c0")  # constrained baseline, as asked
    steps = [b[2] - a[2] for a, b in zip(frames, frames[1:])]
    assert all(step > 0 for step in steps)  # pts from sensor timestamps
    assert 2400 < sum(steps) / len(steps) < 3600  # ~3000 at 30 fps
    # capture_ns is the sensor's time on the monotonic clock: before arrival, not long before.
    assert all(0 <= f[4] - f[1] < 500_000_000 for f in frames)
    assert source.name == "picamera2:0"


@pytest.mark.parametrize(("hflip", "vflip"), [(True, False), (False, True), (True, True)])
def test_picamera2_flips_reach_the_camera(sources, standin, hflip, vflip):
    ring = FrameRing(RING_CAPACITY)
    source = make(sources, "picamera2", ring, options={"hflip": hflip, "vflip": vflip})
    source.start()
    frames = collect(ring, 2)
    decoder = av.CodecContext.create("h264", "r")
    picture = decoder.decode(av.Packet(frames[0][0]))[0].to_ndarray(format="yuv420p")[:HEIGHT]
    assert blockcode.read(picture) is None  # the scene's code is mirrored
    unflipped = picture[::-1 if vflip else 1, ::-1 if hflip else 1]
    assert blockcode.read(np.ascontiguousarray(unflipped)) is not None


def test_picamera2_keyframe_request_reaches_the_encoder(sources, standin):
    ring = FrameRing(RING_CAPACITY)
    source = make(sources, "picamera2", ring)
    source.start()
    assert len(collect(ring, 10)) == 10
    source.request_keyframe()
    frames = collect(ring, 5, until=lambda got: got[-1][3])
    assert frames[-1][3], "no keyframe within 5 frames of the request"
    assert_h264_keyframes_carry_parameter_sets(frames)


def test_picamera2_stop_releases_the_camera(sources, standin):
    ring = FrameRing(RING_CAPACITY)
    source = make(sources, "picamera2", ring)
    source.start()
    assert collect(ring, 3)
    source.stop()
    assert not source.running and source.error is None
    pushed = ring.pushed
    time.sleep(0.1)
    assert ring.pushed == pushed
    # The camera is free again: a new source can open it.
    again = make(sources, "picamera2", FrameRing(RING_CAPACITY))
    again.start()
    assert again.wait_ready(3)


def picamera2_error(sources, camera_num=0):
    source = make(sources, "picamera2", FrameRing(RING_CAPACITY),
                  options={"camera_num": camera_num})
    source.start()
    assert not source.wait_ready(3)
    source.stop()
    return source.error


def test_picamera2_no_camera(sources, standin):
    standin.STANDIN_CAMERAS.clear()
    assert picamera2_error(sources) == (
        "no camera found: check the ribbon cable and that the camera is enabled "
        "(camera_auto_detect=1 in /boot/firmware/config.txt), then "
        "`rpicam-hello --list-cameras`")


def test_picamera2_camera_number_out_of_range(sources, standin):
    assert picamera2_error(sources, camera_num=1) == (
        "camera 1 not found; picamera2 sees 0: imx219: set camera_num to one of those numbers")


def test_picamera2_camera_in_use(sources, standin):
    first = make(sources, "picamera2", FrameRing(RING_CAPACITY))
    first.start()
    assert first.wait_ready(3)
    assert picamera2_error(sources) == (
        "cannot open camera 0 (imx219): Camera __init__ sequence did not complete. It is "
        "most likely in use by another program (rpicam-vid, libcamera-hello, motion, "
        "another rpistream): stop that program")


def test_picamera2_available_with_standin(standin):
    assert available_sources()["picamera2"] == (
        "ok: cameras 0: imx219; hardware H.264 encoder (V4L2)")


# --- the camera of a config without cameras -----------------------------------

def test_no_cameras_configured_means_the_pi_camera_when_picamera2_finds_one(standin):
    (camera,) = choose_default_camera(parse_config({})).cameras
    assert (camera.name, camera.source, camera.codec) == ("cam0", "picamera2", "h264")
    assert camera.fallback_reason is None and not camera.placeholder
    standin.STANDIN_CAMERAS.clear()
    (camera,) = choose_default_camera(parse_config({})).cameras
    assert camera.source == "testpattern" and not camera.placeholder
    assert camera.fallback_reason.startswith("no camera is configured and picamera2 "
                                             "(version unknown) works, but finds no camera "
                                             "(check the cable")


@picamera2_installed
def test_a_test_pattern_in_place_of_the_pi_camera_says_why():
    config = choose_default_camera(parse_config({}))
    (camera,) = config.cameras
    assert camera.source == "testpattern"
    assert camera.fallback_reason == (
        "no camera is configured and picamera2 is not installed: install python3-picamera2 "
        "from Raspberry Pi OS (sudo apt install python3-picamera2); a virtualenv needs "
        "--system-site-packages to see it")
    assert choose_default_camera(config) is config  # decided once
    named = parse_config({"camera": [{"source": "testpattern"}]})
    assert choose_default_camera(named) is named  # asked for: nothing to decide or explain
    assert named.cameras[0].fallback_reason is None
