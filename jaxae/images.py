"""Host-side images: decoding any image PIL reads into uint8 arrays, resizing them to a
square once on loading (:func:`fit`), and image grids written as PNG."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from jaxae import io

# Modes PIL decodes as one channel of more than 8 bits (16-bit PNG/TIFF: I;16*, I; float: F).
WIDE_GREY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def as_array(image: Image.Image) -> np.ndarray:
    """A decoded PIL image -> uint8 (H, W, 1) if it is grey, else uint8 (H, W, 3).

    Grey: modes 1 and L as they are, LA with its alpha applied, 16-bit and wider
    (I;16, I, F) scaled from 0..65535 to 0..255 (value / 257, rounded, clipped). Any
    other mode (RGB, RGBA, P, CMYK, YCbCr, ...) becomes RGB; where it has transparency
    the colour is multiplied by alpha, so transparent pixels are black.
    """
    if image.mode in ("1", "L"):
        return np.asarray(image.convert("L"))[..., None]
    if image.mode in WIDE_GREY_MODES:
        wide = np.asarray(image, np.float64)
        return np.round(np.clip(wide, 0, 65535) / 257.0).astype(np.uint8)[..., None]
    if image.mode in ("LA", "La"):
        grey_alpha = np.asarray(image.convert("LA"), np.float64)
        return np.round(grey_alpha[..., :1] * grey_alpha[..., 1:] / 255.0).astype(np.uint8)
    if "A" in image.mode or "transparency" in image.info:  # RGBA, PA, or P/RGB with a transparent colour.
        rgba = np.asarray(image.convert("RGBA"), np.float64)
        return np.round(rgba[..., :3] * rgba[..., 3:] / 255.0).astype(np.uint8)
    return np.asarray(image.convert("RGB"))


def fit(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, C) -> uint8 (size, size, C), C = 1 or 3: the centred square of side
    min(H, W) resized to size x size with PIL's Lanczos filter, i.e. the shorter side
    resized to ``size`` and the longer one centre-cropped (the crop box may fall between
    pixels, so an odd margin is split exactly). PIL widens the filter by the reduction
    factor, so downscaling is antialiased; an image already size x size is returned as is.
    """
    height, width, channels = image.shape
    if (height, width) == (size, size):
        return image
    side = min(height, width)
    left, top = (width - side) / 2, (height - side) / 2
    picture = Image.fromarray(image[..., 0] if channels == 1 else image)
    resized = picture.resize((size, size), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))
    return np.asarray(resized).reshape(size, size, channels)


def fit_all(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, C) -> uint8 (N, size, size, C) by :func:`fit` (the same array when already that size)."""
    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, images.shape[3]), np.uint8)
    for i, image in enumerate(images):
        out[i] = fit(image, size)
    return out


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
