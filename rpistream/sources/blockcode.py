"""The block code: frame number and capture time, readable from decoded pixels.

Every test-pattern frame carries this code in its top-left corner so that a
viewer (rpistream/web/static/blockcode.js, in the browser) or a test can read
back, from the *decoded* picture, which frame it is and when it was captured,
and from that measure glass-to-glass latency and spot lost or repeated frames.
It is built to survive H.264 and VP8 at low bitrates: large black and white
cells, read at their centres, with a checksum to reject anything damaged.

Layout (everything needed to reimplement a reader)
--------------------------------------------------

Cell size ``c`` in pixels, from the picture's width ``W`` and height ``H``::

    c = max(8, 4 * floor(W / 320))
    if 32 * c > W or 3 * c > H:
        c = min(floor(W / 32), floor(H / 3))

(8 px up to 639 px wide, 16 px at 1280, 24 px at 1920.) A picture with
``c < 2`` carries no code.

The code is a grid of 3 rows by 32 columns of ``c``×``c`` cells whose top-left
corner is the picture's top-left pixel: cell (row ``r``, column ``k``) covers
``x`` in ``[k*c, k*c + c)`` and ``y`` in ``[r*c, r*c + c)``. A cell is white
(bit 1, luma 235) or black (bit 0, luma 16); the chroma under the whole grid is
neutral (128), so a cell is grey-scale after any colour conversion.

Reading a cell: the mean luma of the ``s``×``s`` square at
``x`` in ``[k*c + floor(c/4), … + s)``, ``y`` in ``[r*c + floor(c/4), … + s)``
with ``s = max(1, floor(c/2))``; the bit is 1 when that mean is at least 128
(mid-grey), i.e. when ``sum >= 128 * s * s``. From RGB pixels take luma as
``(R*77 + G*150 + B*29) >> 8``.

Columns 0 and 1 of every row are the sync pattern, white then black: a reader
that does not find all three ``1, 0`` pairs reports no code. Columns 2..31 of
rows 0, 1, 2 in that order (row-major) are the 90 data bits, numbered 0..89:

- bits 0..25: frame number modulo 2**26, most significant bit first;
- bits 26..73: capture time in milliseconds since the Unix epoch
  (``time.time_ns() // 1_000_000``, comparable with JavaScript's
  ``Date.now()`` on the same machine) modulo 2**48, most significant bit first;
- bits 74..89: CRC-16/CCITT-FALSE of bits 0..73, most significant bit first.

The CRC is computed bit by bit over those 74 bits, in order: start with
``crc = 0xFFFF``; for each bit ``b``: ``top = (crc >> 15) ^ b``,
``crc = (crc << 1) & 0xFFFF``, and if ``top`` is 1, ``crc ^= 0x1021``.
A code whose CRC does not match is reported as absent.
"""

from __future__ import annotations

import numpy as np

COLUMNS = 32
ROWS = 3
SYNC = (1, 0)  # columns 0 and 1 of every row
FRAME_BITS = 26
TIME_BITS = 48
CRC_BITS = 16
PAYLOAD_BITS = FRAME_BITS + TIME_BITS
DATA_BITS = (COLUMNS - len(SYNC)) * ROWS  # 90
WHITE = 235  # ITU-R BT.601 video range: exactly white and black after any
BLACK = 16  # decoder's limited-range conversion to RGB
NEUTRAL_CHROMA = 128
THRESHOLD = 128

assert PAYLOAD_BITS + CRC_BITS == DATA_BITS


def cell_size(width: int, height: int) -> int:
    """Side of one cell in pixels for a `width`×`height` picture (see module doc)."""
    cell = max(8, 4 * (width // 320))
    if COLUMNS * cell > width or ROWS * cell > height:
        cell = min(width // COLUMNS, height // ROWS)
    return cell


def _crc16(bits) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over a sequence of bits."""
    crc = 0xFFFF
    for bit in bits:
        top = (crc >> 15) ^ int(bit)
        crc = (crc << 1) & 0xFFFF
        if top:
            crc ^= 0x1021
    return crc


def _bits(value: int, count: int) -> list[int]:
    return [(value >> (count - 1 - i)) & 1 for i in range(count)]


def _value(bits) -> int:
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def _grid(frame_number: int, capture_ms: int) -> np.ndarray:
    """The ROWS × COLUMNS grid of bits for one frame."""
    payload = _bits(frame_number % (1 << FRAME_BITS), FRAME_BITS)
    payload += _bits(capture_ms % (1 << TIME_BITS), TIME_BITS)
    data = np.array(payload + _bits(_crc16(payload), CRC_BITS), dtype=np.uint8)
    grid = np.empty((ROWS, COLUMNS), dtype=np.uint8)
    grid[:, :len(SYNC)] = SYNC
    grid[:, len(SYNC):] = data.reshape(ROWS, COLUMNS - len(SYNC))
    return grid


def draw(y: np.ndarray, u: np.ndarray, v: np.ndarray, frame_number: int,
         capture_ms: int) -> None:
    """Write the code into the planes of a YUV 4:2:0 picture, in place.

    `y` is the H×W luma plane, `u` and `v` the chroma planes (half size,
    rounded up); all uint8.
    """
    height, width = y.shape
    cell = cell_size(width, height)
    if cell < 2:
        raise ValueError(f"a {width}x{height} picture is too small for the block code "
                         f"(it needs at least {2 * COLUMNS}x{2 * ROWS} pixels)")
    cells = np.repeat(np.repeat(_grid(frame_number, capture_ms), cell, axis=0), cell, axis=1)
    y[:ROWS * cell, :COLUMNS * cell] = np.where(cells, WHITE, BLACK)
    chroma_w, chroma_h = (COLUMNS * cell + 1) // 2, (ROWS * cell + 1) // 2
    u[:chroma_h, :chroma_w] = NEUTRAL_CHROMA
    v[:chroma_h, :chroma_w] = NEUTRAL_CHROMA


def read(y: np.ndarray) -> tuple[int, int] | None:
    """(frame_number, capture_ms) from a luma plane, or None when there is no
    code or it is damaged (sync pattern or CRC wrong)."""
    height, width = y.shape
    cell = cell_size(width, height)
    if cell < 2:
        return None
    side = max(1, cell // 2)
    offset = cell // 4
    grid = y[:ROWS * cell, :COLUMNS * cell].reshape(ROWS, cell, COLUMNS, cell)
    centres = grid[:, offset:offset + side, :, offset:offset + side]
    sums = centres.sum(axis=(1, 3), dtype=np.int64)
    bits = (sums >= THRESHOLD * side * side).astype(np.uint8)
    if not (bits[:, :len(SYNC)] == SYNC).all():
        return None
    data = bits[:, len(SYNC):].reshape(-1)
    payload, crc = data[:PAYLOAD_BITS], data[PAYLOAD_BITS:]
    if _crc16(payload) != _value(crc):
        return None
    return _value(payload[:FRAME_BITS]), _value(payload[FRAME_BITS:])
