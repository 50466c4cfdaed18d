"""5×7 bitmap glyphs of the letters the testbed draws on its tiles."""

from __future__ import annotations

import numpy as np

# Capital letters with clearly different 5×7 bitmaps; no A or I, which the lower-casing tokenizer would
# confuse with the words "a" and "i".
_BITMAPS: dict[str, tuple[str, ...]] = {
    "E": ("11111", "10000", "10000", "11110", "10000", "10000", "11111"),
    "F": ("11111", "10000", "10000", "11110", "10000", "10000", "10000"),
    "H": ("10001", "10001", "10001", "11111", "10001", "10001", "10001"),
    "K": ("10001", "10010", "10100", "11000", "10100", "10010", "10001"),
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    "P": ("11110", "10001", "10001", "11110", "10000", "10000", "10000"),
    "T": ("11111", "00100", "00100", "00100", "00100", "00100", "00100"),
    "U": ("10001", "10001", "10001", "10001", "10001", "10001", "01110"),
    "X": ("10001", "10001", "01010", "00100", "01010", "10001", "10001"),
    "Z": ("11111", "00001", "00010", "00100", "01000", "10000", "11111"),
}
LETTERS: tuple[str, ...] = tuple(_BITMAPS)


def glyph_mask(letter: str, scale: int) -> np.ndarray:
    """Boolean (7·scale, 5·scale) mask of ``letter`` (upper case), each bitmap cell a ``scale``² block."""
    try:
        rows = _BITMAPS[letter]
    except KeyError:
        raise ValueError(f"no glyph for letter {letter!r}; available: {''.join(LETTERS)}") from None
    if scale < 1:
        raise ValueError(f"glyph scale must be >= 1, got {scale}")
    bits = np.array([[c == "1" for c in row] for row in rows], dtype=bool)
    return np.kron(bits, np.ones((scale, scale), dtype=bool)).astype(bool)
