"""``shapes``: dSprites-like images (Matthey et al. 2017) generated in-project, with their factors.

Every image is a white filled shape on black, binary {0, 1}, 64 x 64 x 1, rendered with numpy
by evaluating the shape's implicit function at the pixel centres (deterministic, no
antialiasing). Five factors of variation, as in dSprites, each on a grid (``FACTOR_SIZES``):

- shape (3): square, ellipse, heart;
- scale (6): linspace(0.5, 1, 6);
- orientation (40): 2 pi k / 40, k = 0..39 (over [0, 2 pi));
- position x (32), position y (32): linspace(0, 1, 32) each.

Geometry in image coordinates u = (column + 0.5) / 64 (rightwards), v = (row + 0.5) / 64
(downwards): the shape's centre is (0.22 + 0.56 pos_x, 0.22 + 0.56 pos_y); a pixel is set when
its centre, rotated by -orientation about the centre and divided by ``UNIT`` * scale, lies
in the canonical shape: the square max(|a|, |b|) <= 1 (half-side 0.14 of the side at scale 1), the
ellipse (a / 1.35)^2 + (b / 0.65)^2 <= 1, the heart (a^2 + b^2 - 1)^3 - a^2 b^3 <= 0 with b
pointing up. Every shape stays inside the frame at every factor value.

The 737,280 combinations are not all stored: a fixed permutation of the grid (numpy
seed ``SEED``) gives ``test`` (its first ``NUM_TEST``) and ``train`` (the next
``NUM_TRAIN``), so both are uniform samples of the factors. Each example holds
``image`` and ``factors`` int64 (5,), the grid indices in the order above, which
evaluation uses (``mig``, jaxae.disentanglement). Nothing is downloaded.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow_datasets as tfds

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
SIZE = 64
UNIT = 0.14  # Half-side of the square at scale 1, in units of the image side.
MARGIN = 0.22  # Centres lie in [MARGIN, 1 - MARGIN]: every shape stays clear of the border.
SEED = 0
NUM_TRAIN, NUM_TEST = 20_000, 5_000
CHUNK = 2048


def factor_values(factors: np.ndarray) -> tuple[np.ndarray, ...]:
    """Grid indices int (N, 5) -> (shape index, scale, angle in radians, centre u, centre v), each (N,)."""
    f = np.asarray(factors)
    scale = np.linspace(0.5, 1.0, FACTOR_SIZES[1])[f[:, 1]]
    angle = 2.0 * math.pi * f[:, 2] / FACTOR_SIZES[2]
    pos = np.linspace(0.0, 1.0, FACTOR_SIZES[3])
    return f[:, 0], scale, angle, MARGIN + (1 - 2 * MARGIN) * pos[f[:, 3]], MARGIN + (1 - 2 * MARGIN) * pos[f[:, 4]]


def render(factors: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Grid indices int (N, 5) -> binary images uint8 (N, size, size, 1), vectorized in chunks."""
    factors = np.asarray(factors).reshape(-1, len(FACTOR_SIZES))
    centres = ((np.arange(size) + 0.5) / size).astype(np.float32)
    out = np.empty((len(factors), size, size, 1), np.uint8)
    for start in range(0, len(factors), CHUNK):
        values = factor_values(factors[start:start + CHUNK])
        shape, scale, angle, cu, cv = (a[:, None, None].astype(np.float32) for a in values)
        du, dv = centres[None, None, :] - cu, centres[None, :, None] - cv   # (n, 1, W), (n, H, 1)
        cos, sin = np.cos(angle), np.sin(angle)
        # Rotate by -angle (counter-clockwise on screen is positive), flip v so that b points up.
        a = (cos * du - sin * dv) / (UNIT * scale)
        b = -(sin * du + cos * dv) / (UNIT * scale)
        inside = np.where(shape == 0.0, np.maximum(np.abs(a), np.abs(b)) <= 1.0,
                          np.where(shape == 1.0, (a / 1.35) ** 2 + (b / 0.65) ** 2 <= 1.0,
                                   (a * a + b * b - 1.0) ** 3 - a * a * b ** 3 <= 0.0))
        out[start:start + CHUNK, ..., 0] = inside
    return out


def split_factors() -> dict[str, np.ndarray]:
    """The fixed splits as grid indices int64 (N, 5): {"train": (NUM_TRAIN, 5), "test": (NUM_TEST, 5)}."""
    flat = np.random.default_rng(SEED).permutation(math.prod(FACTOR_SIZES))[:NUM_TEST + NUM_TRAIN]
    grid = np.stack(np.unravel_index(flat, FACTOR_SIZES), axis=1).astype(np.int64)
    return {"test": grid[:NUM_TEST], "train": grid[NUM_TEST:]}


class Shapes(tfds.core.GeneratorBasedBuilder):
    """dSprites-like binary shapes with their five factors of variation, generated offline."""

    name = "shapes"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 20,000 train / 5,000 test, 64 x 64, fixed split."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(SIZE, SIZE, 1)),
                "factors": tfds.features.Tensor(shape=(len(FACTOR_SIZES),), dtype=np.int64),
            }),
            homepage="https://github.com/deepmind/dsprites-dataset",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: the images are rendered here.
        return {split: self._generate_examples(factors) for split, factors in split_factors().items()}

    def _generate_examples(self, factors):
        for start in range(0, len(factors), CHUNK):
            chunk = factors[start:start + CHUNK]
            for i, (image, f) in enumerate(zip(render(chunk), chunk)):
                yield start + i, {"image": image, "factors": f}
