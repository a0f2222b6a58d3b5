"""The moving picture under the test pattern's block code, made cheaply with numpy.

Colour bars scroll sideways and a grey box slides across them, so that every
frame differs (a frozen stream shows) and motion is visible at a glance. All
the work per frame is slicing precomputed planes: at 1280x720 that is about
1.4 MB of memcpy, a small fraction of what the encoder costs.
"""

from __future__ import annotations

import numpy as np

# ITU-R BT.601 video-range YUV of 75% colour bars: white, yellow, cyan, green,
# magenta, red, blue, black.
_BARS_YUV = (
    (180, 128, 128), (162, 44, 142), (131, 156, 44), (112, 72, 58),
    (84, 184, 198), (65, 100, 212), (35, 212, 114), (16, 128, 128),
)
_BOX_Y = 128
_BOX_CHROMA = 128
# Pixels the picture moves per frame, relative to its width: one bar width
# every ~2 s at 30 fps, slow enough to follow, fast enough to see.
_SCROLL_PER_WIDTH = 1 / 480


class MovingPicture:
    """Writes frame n of the moving picture into a YUV 4:2:0 buffer."""

    def __init__(self, width: int, height: int):
        if width % 2 or height % 2:
            raise ValueError(f"picture size {width}x{height} must be even in both "
                             f"dimensions for YUV 4:2:0")
        self.width, self.height = width, height
        # Bars twice the frame width, so any window of `width` columns is a
        # plain slice: no wrap-around copy.
        x = np.arange(2 * width)
        bar = (x * len(_BARS_YUV) // width) % len(_BARS_YUV)
        table = np.array(_BARS_YUV, dtype=np.uint8)
        self._bars_y = np.broadcast_to(table[bar, 0], (height, 2 * width))
        self._bars_u = np.broadcast_to(table[bar[::2], 1], (height // 2, width))
        self._bars_v = np.broadcast_to(table[bar[::2], 2], (height // 2, width))
        self._step = max(2, round(width * _SCROLL_PER_WIDTH) // 2 * 2)
        self._box = max(16, height // 4) // 2 * 2

    def planes(self, buffer: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Y, U and V views of a (height * 3 // 2, width) yuv420p buffer."""
        w, h = self.width, self.height
        y = buffer[:h]
        chroma = buffer[h:].reshape(2, h // 2, w // 2)
        return y, chroma[0], chroma[1]

    def draw(self, buffer: np.ndarray, n: int) -> None:
        """Frame `n` into `buffer`, a (height * 3 // 2, width) uint8 array."""
        w, h = self.width, self.height
        y, u, v = self.planes(buffer)
        shift = (n * self._step) % w
        y[:] = self._bars_y[:, shift:shift + w]
        u[:] = self._bars_u[:, shift // 2:shift // 2 + w // 2]
        v[:] = self._bars_v[:, shift // 2:shift // 2 + w // 2]
        box = self._box
        span = w - box
        x = (n * self._step) % (2 * span)
        x = (x if x <= span else 2 * span - x) // 2 * 2
        top = (h - box) // 2 // 2 * 2
        y[top:top + box, x:x + box] = _BOX_Y
        u[top // 2:(top + box) // 2, x // 2:(x + box) // 2] = _BOX_CHROMA
        v[top // 2:(top + box) // 2, x // 2:(x + box) // 2] = _BOX_CHROMA
