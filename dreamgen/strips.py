"""Image strips: a dream's frames above the real frames they should match, one PNG per episode.

``strip(dream[T, C, H, W, 3], real[T, C, H, W, 3], frames=8)`` picks ``frames`` evenly spaced steps and
lays them out as two rows per camera (dream on top, real below), upscaled x2 for viewing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def strip(dream: np.ndarray, real: np.ndarray, *, frames: int = 8) -> np.ndarray:
    """``uint8 [rows*H*2, frames*W*2, 3]``: for each camera, the dream's row, then the real row."""
    steps = min(len(dream), len(real))
    if steps == 0:
        raise ValueError("strip: no frames")
    pick = np.unique(np.linspace(0, steps - 1, min(frames, steps)).round().astype(int))
    rows = []
    for camera in range(dream.shape[1]):
        for source in (dream, real):
            rows.append(np.concatenate([source[t, camera] for t in pick], axis=1))
    image = np.concatenate(rows, axis=0)
    return np.kron(image, np.ones((2, 2, 1), np.uint8))


def save_strip(dream: np.ndarray, real: np.ndarray, path: str | Path, *, frames: int = 8) -> Path:
    from PIL import Image

    path = Path(path)
    Image.fromarray(strip(dream, real, frames=frames)).save(path)
    return path
