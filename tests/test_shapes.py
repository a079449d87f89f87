"""The dSprites-like ``shapes`` dataset (jaxae.datasets.shapes): hand-computed renders, the factors
read back from the images, the fixed splits and determinism. Preparing it through TFDS (25,000
images, about a minute) is left to the first ``--dataset shapes`` run."""

import math

import numpy as np

from jaxae.datasets import shapes


def test_square_pixels_by_hand():
    # Square, scale 1, orientation 0, position (0, 0): centre 0.22, half-side 0.14 of the side, so the
    # pixel centres (i + 0.5) / 64 in [0.08, 0.36], i.e. i + 0.5 in [5.12, 23.04]: rows and columns 5..22.
    image = shapes.render(np.array([[0, 5, 0, 0, 0]]))[0, ..., 0]
    want = np.zeros((64, 64), np.uint8)
    want[5:23, 5:23] = 1
    np.testing.assert_array_equal(image, want)
    # Scale 0.5 at position (31, 0): centre (0.78, 0.22), half-side 0.07: u in [0.71, 0.85] -> columns i
    # with i + 0.5 in [45.44, 54.4], 45..53; v in [0.15, 0.29] -> rows with i + 0.5 in [9.6, 18.56], 10..18.
    image = shapes.render(np.array([[0, 0, 0, 31, 0]]))[0, ..., 0]
    want = np.zeros((64, 64), np.uint8)
    want[10:19, 45:54] = 1
    np.testing.assert_array_equal(image, want)


def test_factors_round_trip_through_the_images():
    grid = np.array([[s, 5, 0, x, y] for s in range(3) for x in range(0, 32, 3) for y in range(0, 32, 5)])
    images = shapes.render(grid)[..., 0].astype(np.float64)
    rows, cols = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    mass = images.sum(axis=(1, 2))
    centre_col = (images * cols).sum(axis=(1, 2)) / mass
    centre_row = (images * rows).sum(axis=(1, 2)) / mass
    square = grid[:, 0] == 0  # Symmetric: its centroid is its centre, (0.22 + 0.56 pos) * 64 - 0.5 pixels.
    np.testing.assert_allclose(centre_col[square], (0.22 + 0.56 * grid[square, 3] / 31) * 64 - 0.5, atol=0.5)
    np.testing.assert_allclose(centre_row[square], (0.22 + 0.56 * grid[square, 4] / 31) * 64 - 0.5, atol=0.5)
    # Every factor value changes the image: positions, shapes, scales and (for the asymmetric heart) angles.
    assert len({im.tobytes() for im in images}) == len(grid)
    heart = shapes.render(np.array([[2, 5, k, 15, 15] for k in range(40)]))
    assert len({im.tobytes() for im in heart}) == 40
    scales = shapes.render(np.array([[1, s, 3, 15, 15] for s in range(6)])).sum(axis=(1, 2, 3))
    assert np.all(np.diff(scales) > 0)
    # A half turn leaves the square and the ellipse unchanged, a quarter turn the square.
    for shape, turn in ((0, 20), (1, 20), (0, 10)):
        a, b = shapes.render(np.array([[shape, 3, 7, 9, 20], [shape, 3, 7 + turn, 9, 20]]))
        assert np.mean(a != b) < 0.002
    # Every shape keeps clear of the border at the extreme positions, largest scale, every angle.
    edge = shapes.render(np.array([[s, 5, k, x, y] for s in range(3) for k in range(40) for x in (0, 31)
                                   for y in (0, 31)]))
    assert edge[:, [0, -1]].max() == 0 and edge[:, :, [0, -1]].max() == 0


def test_splits_are_fixed_disjoint_and_cover_the_grid_uniformly():
    first, again = shapes.split_factors(), shapes.split_factors()
    assert all(np.array_equal(first[k], again[k]) for k in ("train", "test"))
    assert first["train"].shape == (shapes.NUM_TRAIN, 5) and first["test"].shape == (shapes.NUM_TEST, 5)
    flat = {k: np.ravel_multi_index(v.T, shapes.FACTOR_SIZES) for k, v in first.items()}
    assert len(np.unique(np.concatenate(list(flat.values())))) == shapes.NUM_TRAIN + shapes.NUM_TEST
    for k, size in enumerate(shapes.FACTOR_SIZES):  # Each factor value about equally often.
        counts = np.bincount(first["train"][:, k], minlength=size)
        assert counts.min() > 0.7 * shapes.NUM_TRAIN / size
    assert math.prod(shapes.FACTOR_SIZES) == 737_280


def test_render_is_deterministic_and_chunk_free():
    factors = shapes.split_factors()["test"][:300]
    whole = shapes.render(factors)
    assert whole.dtype == np.uint8 and set(np.unique(whole)) == {0, 1}
    np.testing.assert_array_equal(whole, np.concatenate([shapes.render(factors[i:i + 7]) for i in range(0, 300, 7)]))
