"""Image grids written as PNG."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from jaxae import io


def image_grid(images: np.ndarray, num_cols: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, H, W, C) floats in [0, 1] -> uint8 grid (rows*(H+pad)+pad, cols*(W+pad)+pad, C).

    C is 1 or 3; the padding is white-ish grey so digits on black stay readable.
    """
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    n, h, w, c = images.shape
    cols = num_cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 0.5, np.float32)
    for i, image in enumerate(images):
        r, q = divmod(i, cols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = image
    return np.round(grid * 255.0).astype(np.uint8)


def save_png(path: str, images: np.ndarray, num_cols: int | None = None, scale: int = 2) -> None:
    """Writes ``images`` (N, H, W, C) in [0, 1] as one PNG grid, upscaled ``scale``x (nearest).

    Written to a temporary file and renamed, so a crash never leaves a partial PNG.
    """
    grid = image_grid(images, num_cols)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    with io.atomic_path(path, suffix=".png") as tmp:
        picture.save(tmp)
