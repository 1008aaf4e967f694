"""A synthetic camera whose pictures carry their own frame index.

Every picture is YUV 4:2:0. The top two thirds are a grid of 8 x 4 large cells
that spell a 16-bit word (12-bit frame index + 4-bit check) as 16 pairs of
cells: a bright/dark pair is a 1, a dark/bright pair is a 0. Reading a bit only
compares the two cells of its pair, so the code survives codec error, blur and
colour shifts (style transfer) as long as relative brightness is kept. The
bottom third is a colour gradient under a fine checkerboard (high-frequency
detail that a blur removes) with a bar that moves every frame. Optional sensor
noise on the luma makes the picture as costly to encode as a real camera's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID_COLUMNS = 8
GRID_ROWS = 4
INDEX_BITS = 12
INDEX_MODULUS = 1 << INDEX_BITS
BRIGHT = 220
DARK = 40
# Smallest brightness difference between the two cells of a pair that still
# counts as a readable bit.
MIN_PAIR_CONTRAST = 24
CHECKER_SIZE = 8
# Distinct noise fields cycled through when sensor noise is on.
NOISE_FIELDS = 17


def check_nibble(index: int) -> int:
    """Four check bits derived from a 12-bit index."""
    return ((index ^ (index >> 4) ^ (index >> 8)) & 0xF) ^ 0xA


def encode_word(index: int) -> int:
    index %= INDEX_MODULUS
    return (index << 4) | check_nibble(index)


def decode_word(word: int) -> int | None:
    index = word >> 4
    if word & 0xF != check_nibble(index):
        return None
    return index


@dataclass(frozen=True)
class Layout:
    width: int
    height: int

    @property
    def grid_height(self) -> int:
        return (self.height * 2 // 3) // (GRID_ROWS * 2) * (GRID_ROWS * 2)

    @property
    def cell_width(self) -> int:
        return self.width // GRID_COLUMNS

    @property
    def cell_height(self) -> int:
        return self.grid_height // GRID_ROWS

    def cell(self, n: int) -> tuple[slice, slice]:
        """Rows and columns of cell n (row-major) in the luma plane."""
        row, col = divmod(n, GRID_COLUMNS)
        y0, x0 = row * self.cell_height, col * self.cell_width
        return slice(y0, y0 + self.cell_height), slice(x0, x0 + self.cell_width)

    def cell_core(self, n: int) -> tuple[slice, slice]:
        """The central half of cell n, away from edges that codecs and blur smear."""
        rows, cols = self.cell(n)
        dy, dx = self.cell_height // 4, self.cell_width // 4
        return slice(rows.start + dy, rows.stop - dy), slice(cols.start + dx, cols.stop - dx)

    @property
    def texture_rows(self) -> slice:
        """Luma rows of the textured bottom region."""
        return slice(self.grid_height, self.height)


class PictureSource:
    """Builds the picture for any frame index at one size."""

    def __init__(self, width: int, height: int, noise: float = 0.0) -> None:
        # Multiples of 8: whole chroma samples and checker squares (1920x1080 included).
        if width % 8 or height % 8:
            raise ValueError(f"size {width}x{height} must be a multiple of 8")
        self.layout = Layout(width, height)
        lay = self.layout
        tex_h = height - lay.grid_height
        ys, xs = np.mgrid[0:tex_h, 0:width]
        checker = ((ys // CHECKER_SIZE + xs // CHECKER_SIZE) % 2).astype(np.int16)
        self._texture_y = (70 + 110 * checker + (xs * 40 // width)).astype(np.uint8)
        cys, cxs = np.mgrid[0 : tex_h // 2, 0 : width // 2]
        self._texture_u = (60 + cxs * 136 // (width // 2)).astype(np.uint8)
        self._texture_v = (196 - cys * 136 // max(1, tex_h // 2)).astype(np.uint8)
        self._bar_width = max(CHECKER_SIZE * 2, width // 20)
        self._noise: list[np.ndarray] = []
        if noise > 0:
            rng = np.random.default_rng(0)
            self._noise = [
                np.round(rng.normal(0.0, noise, (height, width))).astype(np.int16)
                for _ in range(NOISE_FIELDS)
            ]

    def planes(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The Y, U and V planes of picture `index`."""
        lay = self.layout
        y = np.empty((lay.height, lay.width), np.uint8)
        u = np.full((lay.height // 2, lay.width // 2), 128, np.uint8)
        v = np.full((lay.height // 2, lay.width // 2), 128, np.uint8)
        word = encode_word(index)
        for bit in range(16):
            one = (word >> (15 - bit)) & 1
            first, second = (BRIGHT, DARK) if one else (DARK, BRIGHT)
            y[lay.cell(2 * bit)] = first
            y[lay.cell(2 * bit + 1)] = second
        tex = lay.texture_rows
        y[tex] = self._texture_y
        u[tex.start // 2 :] = self._texture_u
        v[tex.start // 2 :] = self._texture_v
        bar_x = (index * 8) % (lay.width - self._bar_width)
        y[tex, bar_x : bar_x + self._bar_width] = 235
        if self._noise:
            noisy = y + self._noise[index % NOISE_FIELDS]
            y = np.clip(noisy, 16, 235).astype(np.uint8)
        return y, u, v

    def packed(self, index: int) -> np.ndarray:
        """Picture `index` as the (height * 3 / 2, width) array PyAV takes for yuv420p."""
        y, u, v = self.planes(index)
        lay = self.layout
        return np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(
            lay.height * 3 // 2, lay.width
        )


def split_packed(packed: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U, V planes of a packed yuv420p array."""
    flat = packed.reshape(-1)
    luma = width * height
    chroma = luma // 4
    y = flat[:luma].reshape(height, width)
    u = flat[luma : luma + chroma].reshape(height // 2, width // 2)
    v = flat[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2)
    return y, u, v


def read_index(y: np.ndarray) -> int | None:
    """The 12-bit frame index stamped in a luma plane, or None when unreadable."""
    height, width = y.shape
    if width < GRID_COLUMNS * 4 or height < GRID_ROWS * 8:
        return None
    lay = Layout(width, height)
    word = 0
    for bit in range(16):
        first = float(y[lay.cell_core(2 * bit)].mean())
        second = float(y[lay.cell_core(2 * bit + 1)].mean())
        if abs(first - second) < MIN_PAIR_CONTRAST:
            return None
        word = (word << 1) | (1 if first > second else 0)
    return decode_word(word)


def unwrap_index(index12: int, newest_sent: int) -> int:
    """The full frame index that ends in `index12`, at or before the newest sent frame."""
    return newest_sent - ((newest_sent - index12) % INDEX_MODULUS)
