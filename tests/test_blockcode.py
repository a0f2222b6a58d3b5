"""Block code: exact round trips, survival through real H.264/VP8 encodes at low
bitrates, rejection of damaged codes, and the JavaScript reader agreeing with
the Python one."""

import json
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpistream.sources import blockcode
from rpistream.sources.picture import MovingPicture
from rpistream.sources.testpattern import open_encoder

JS_READER = Path(__file__).parent.parent / "rpistream" / "web" / "static" / "blockcode.js"
NOW_MS = 1_760_000_000_000  # an October 2025 Date.now(): beyond 2**40


def picture(width, height, n=0, frame_number=0, capture_ms=NOW_MS):
    """A yuv420p test-pattern buffer with its Y, U, V views, code drawn."""
    moving = MovingPicture(width, height)
    buffer = np.empty((height * 3 // 2, width), dtype=np.uint8)
    y, u, v = moving.planes(buffer)
    moving.draw(buffer, n)
    blockcode.draw(y, u, v, frame_number, capture_ms)
    return buffer, y, u, v


@settings(max_examples=60, deadline=None)
@given(frame_number=st.integers(0, 2**26 - 1), capture_ms=st.integers(0, 2**48 - 1),
       size=st.sampled_from([(320, 240), (640, 360), (1280, 720), (1920, 1080), (64, 48)]))
def test_round_trip(frame_number, capture_ms, size):
    _, y, _, _ = picture(*size, n=frame_number, frame_number=frame_number,
                         capture_ms=capture_ms)
    assert blockcode.read(y) == (frame_number, capture_ms)


def test_values_wrap_at_their_bit_widths():
    _, y, _, _ = picture(320, 240, frame_number=2**26 + 5, capture_ms=2**48 + 7)
    assert blockcode.read(y) == (5, 7)


@pytest.mark.parametrize(("width", "height", "cell"), [
    (320, 240, 8), (640, 480, 8), (1280, 720, 16), (1920, 1080, 24), (200, 150, 6),
    (64, 6, 2), (62, 60, 1),
])
def test_cell_size(width, height, cell):
    assert blockcode.cell_size(width, height) == cell


def test_chroma_is_neutral_under_the_code():
    _, _, u, v = picture(1280, 720)
    assert (u[:24, :256] == 128).all() and (v[:24, :256] == 128).all()
    assert not (u[24:, 256:] == 128).all()  # the bars elsewhere are coloured


def test_picture_too_small_for_a_code():
    y = np.zeros((60, 62), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"a 62x60 picture is too small for the block "
                                         r"code \(it needs at least 64x6 pixels\)"):
        blockcode.draw(y, y[:30, :31], y[:30, :31], 1, 2)
    assert blockcode.read(y) is None


def invert_cell(y, row, column):
    cell = blockcode.cell_size(y.shape[1], y.shape[0])
    area = y[row * cell:(row + 1) * cell, column * cell:(column + 1) * cell]
    area[:] = 255 - area


@pytest.mark.parametrize(("row", "column"), [(0, 2), (1, 17), (2, 31), (2, 20)])
def test_a_flipped_data_cell_fails_the_crc(row, column):
    _, y, _, _ = picture(640, 360, frame_number=12345)
    invert_cell(y, row, column)
    assert blockcode.read(y) is None


@pytest.mark.parametrize(("row", "column"), [(0, 0), (1, 1), (2, 0)])
def test_a_broken_sync_pattern_means_no_code(row, column):
    _, y, _, _ = picture(640, 360, frame_number=12345)
    invert_cell(y, row, column)
    assert blockcode.read(y) is None


def test_pictures_without_a_code():
    rng = np.random.default_rng(1)
    assert blockcode.read(np.zeros((240, 320), dtype=np.uint8)) is None
    assert blockcode.read(np.full((240, 320), 235, dtype=np.uint8)) is None
    assert blockcode.read(rng.integers(0, 256, (240, 320), dtype=np.uint8)) is None
    buffer, y, _, _ = picture(320, 240)
    MovingPicture(320, 240).draw(buffer, 3)  # the picture alone, code overwritten
    assert blockcode.read(y) is None


def encode_decode(codec, width, height, bitrate, first_frame, first_ms, count):
    """Frames drawn as the test pattern draws them, through the test pattern's
    own encoder settings and back: [(expected, decoded luma plane, decoded RGBA)]."""
    encoder = open_encoder(codec, width, height, 30, bitrate, keyframe_interval=60)
    decoder = av.CodecContext.create("h264" if codec == "h264" else "vp8", "r")
    moving = MovingPicture(width, height)
    buffer = np.empty((height * 3 // 2, width), dtype=np.uint8)
    y, u, v = moving.planes(buffer)
    expected, decoded = [], []
    for i in range(count):
        moving.draw(buffer, first_frame + i)
        code = (first_frame + i, first_ms + 33 * i)
        blockcode.draw(y, u, v, *code)
        expected.append(code)
        frame = av.VideoFrame.from_ndarray(buffer, format="yuv420p")
        frame.pts = i * 3000
        for packet in encoder.encode(frame):
            decoded += decoder.decode(packet)
    for packet in encoder.encode(None):
        decoded += decoder.decode(packet)
    decoded += decoder.decode(None)
    assert len(decoded) == count
    return [(code, frame.to_ndarray(format="yuv420p")[:height], frame.to_ndarray(format="rgba"))
            for code, frame in zip(expected, decoded)]


@pytest.mark.parametrize("codec", ["h264", "vp8"])
@pytest.mark.parametrize(("width", "height", "bitrate", "count"), [
    (320, 240, 250_000, 60), (1280, 720, 2_000_000, 20),
], ids=["320x240@250k", "1280x720@2M"])
def test_every_frame_reads_back_after_a_real_encode(codec, width, height, bitrate, count):
    frames = encode_decode(codec, width, height, bitrate, 1000, NOW_MS, count)
    assert [blockcode.read(y) for _, y, _ in frames] == [code for code, _, _ in frames]


@settings(max_examples=3, deadline=None)
@given(first_frame=st.integers(0, 2**26 - 1), first_ms=st.integers(2**40, 2**48 - 1000),
       codec=st.sampled_from(["h264", "vp8"]))
def test_random_codes_survive_a_low_bitrate_encode(first_frame, first_ms, codec):
    frames = encode_decode(codec, 320, 240, 250_000, first_frame, first_ms, 10)
    assert [blockcode.read(y) for _, y, _ in frames] == [
        (n % 2**26, ms) for (n, ms), _, _ in frames]


@pytest.mark.skipif(shutil.which("node") is None,
                    reason="node is not on PATH: the JavaScript reader cannot run here")
def test_javascript_reader_agrees_with_python(tmp_path):
    cases = []  # (luma plane for Python, RGBA for JavaScript)
    for frame_number, capture_ms in [(0, 0), (1, NOW_MS), (2**26 - 1, 2**48 - 1),
                                     (77, NOW_MS + 1)]:
        for size in [(320, 240), (1280, 720), (200, 150)]:
            _, y, _, _ = picture(*size, n=frame_number % 1000, frame_number=frame_number,
                                 capture_ms=capture_ms)
            cases.append(y.copy())
    damaged = cases[1].copy()
    invert_cell(damaged, 1, 9)
    cases.append(damaged)
    cases.append(np.zeros((240, 320), dtype=np.uint8))
    rgba = [np.dstack([y, y, y, np.full_like(y, 255)]) for y in cases]
    # Decoded frames converted to RGB by FFmpeg, as a browser's canvas sees them.
    for _, y, decoded_rgba in encode_decode("vp8", 320, 240, 250_000, 500, NOW_MS, 5):
        cases.append(y)
        rgba.append(decoded_rgba)
    manifest = []
    for i, image in enumerate(rgba):
        path = tmp_path / f"frame{i}.rgba"
        path.write_bytes(np.ascontiguousarray(image).tobytes())
        manifest.append({"path": str(path), "width": image.shape[1], "height": image.shape[0]})
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(JS_READER, tmp_path / "blockcode.mjs")
    (tmp_path / "read.mjs").write_text(
        'import { readFileSync } from "node:fs";\n'
        'import { readBlockCode } from "./blockcode.mjs";\n'
        'const manifest = JSON.parse(readFileSync(process.argv[2], "utf8"));\n'
        'console.log(JSON.stringify(manifest.map(({path, width, height}) =>\n'
        '  readBlockCode({data: new Uint8ClampedArray(readFileSync(path)), width, height}))));\n')
    result = subprocess.run(["node", str(tmp_path / "read.mjs"), str(tmp_path / "manifest.json")],
                            capture_output=True, text=True, timeout=30, check=True)
    from_js = [None if r is None else (r["frame"], r["captureMs"])
               for r in json.loads(result.stdout)]
    from_python = [blockcode.read(y) for y in cases]
    assert from_js == from_python
    assert from_python.count(None) == 2  # the damaged code and the black frame
