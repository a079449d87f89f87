"""Image-folder datasets (jaxae.folders) and --image_size (jaxae.images.fit): decoding any
mode PIL reads, the exact resize-and-crop, class labels from subfolders, the cache and its
invalidation, unreadable files and bad layouts as one-line errors, and a folder of mixed
PNG/JPEG images trained on by train.py and sampled by sample.py."""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from test_cli import _params, call, one_line

from jaxae import data, folders, images
from jaxae.config import HVAE_PRESETS, Config, ConfigError

RED, BLUE = (200, 40, 40), (40, 40, 200)


def _save(path, array, **options):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **options)


def _colour_folder(root, train_per_class=12, test_per_class=4):
    """Class a: reddish images, class b: bluish; PNG and JPEG, grey and colour, several sizes, none square."""
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name, colour in (("a", RED), ("b", BLUE)):
            for i in range(count):
                height, width = 20 + 3 * i, 26 + 5 * (i % 3)
                if i % 4 == 3:  # Grey: a dark (a) or a bright (b) level, which stays on its side of 128.
                    _save(f"{root}/{split}/{name}/{i}.png", np.full((height, width), 60 if name == "a" else 190,
                                                                   np.uint8))
                    continue
                image = np.empty((height, width, 3), np.uint8)
                image[:] = colour
                ext = ".jpg" if i % 2 else ".png"
                _save(f"{root}/{split}/{name}/{i}{ext}", image, **({"quality": 95} if ext == ".jpg" else {}))


def _source(root, tmp_path, **changes):
    return data.prepared_builder(Config.create(dataset=str(root), data_dir=str(tmp_path / "cache"), **changes).data)


def _one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as error:
        call(*args, **kwargs)
    text = str(error.value)
    assert "\n" not in text, text
    return text


# --- Resizing and decoding, by hand ---

def test_fit_resizes_the_shorter_side_and_crops_the_centre_exactly():
    gradient = (np.arange(8, dtype=np.uint8) * 30)[None, :, None].repeat(4, axis=0)  # 4 x 8, columns 0, 30, ..., 210.
    # The shorter side is already 4: the centred 4 x 4 square is kept, columns 2..5, unchanged.
    np.testing.assert_array_equal(images.fit(gradient, 4)[..., 0], [[60, 90, 120, 150]] * 4)
    tall = gradient.transpose(1, 0, 2)  # 8 x 4: rows 2..5.
    np.testing.assert_array_equal(images.fit(tall, 4)[..., 0], np.array([[60, 90, 120, 150]] * 4).T)
    np.testing.assert_array_equal(images.fit(np.full((5, 9, 3), 77, np.uint8), 3), np.full((3, 3, 3), 77))
    # Antialiased: a one-pixel checkerboard halved becomes mid-grey, not the 0/255 that sampling would pick.
    checkerboard = (np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8)[..., None]
    halved = images.fit(checkerboard, 4).astype(int)
    assert halved.shape == (4, 4, 1) and np.all(np.abs(halved - 127.5) < 6), halved[..., 0]
    # Upscaling a constant image keeps it constant; an image already N x N is returned untouched.
    np.testing.assert_array_equal(images.fit(np.full((2, 3, 1), 9, np.uint8), 6), np.full((6, 6, 1), 9))
    square = gradient[:, :4]
    assert images.fit(square, 4) is square
    batch = np.stack([gradient, gradient[:, ::-1]])
    fitted = images.fit_all(batch, 4)
    assert fitted.shape == (2, 4, 4, 1) and fitted.dtype == np.uint8
    np.testing.assert_array_equal(fitted[1, 0, :, 0], [150, 120, 90, 60])
    assert images.fit_all(fitted, 4) is fitted


def test_as_array_converts_every_mode_to_grey_or_rgb():
    grey = Image.fromarray(np.array([[0, 128], [255, 7]], np.uint8))
    np.testing.assert_array_equal(images.as_array(grey)[..., 0], [[0, 128], [255, 7]])
    assert images.as_array(grey.convert("1", dither=Image.Dither.NONE)).tolist() == [[[0], [255]], [[255], [0]]]
    wide = Image.fromarray(np.array([[0, 257], [65535, 32896]], np.uint16))  # 16-bit grey (I;16).
    assert wide.mode.startswith("I")
    np.testing.assert_array_equal(images.as_array(wide)[..., 0], [[0, 1], [255, 128]])
    la = Image.fromarray(np.array([[[200, 255], [200, 0]]], np.uint8), "LA")
    np.testing.assert_array_equal(images.as_array(la)[..., 0], [[200, 0]])  # Transparent -> black.
    rgba = Image.fromarray(np.array([[[10, 20, 30, 255], [100, 100, 100, 51]]], np.uint8), "RGBA")
    np.testing.assert_array_equal(images.as_array(rgba), [[[10, 20, 30], [20, 20, 20]]])
    rgb = np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)
    np.testing.assert_array_equal(images.as_array(Image.fromarray(rgb).convert("P")), rgb)
    cmyk = images.as_array(Image.fromarray(rgb).convert("CMYK"))
    assert cmyk.shape == (1, 2, 3) and cmyk.dtype == np.uint8
    np.testing.assert_array_equal(cmyk, rgb)


# --- Folder datasets ---

def test_class_folders_give_labels_and_mixed_images_become_rgb(tmp_path, caplog):
    _colour_folder(tmp_path / "shapes")
    with caplog.at_level("WARNING", logger="jaxae.folders"):
        source = _source(tmp_path / "shapes", tmp_path, image_size=16)
    assert "mixes 8 grey and 24 colour images: all are used as RGB" in caplog.text
    assert source.splits == ("test", "train") and source.image_shape == (16, 16, 3) and source.num_classes == 2
    assert source.name == str(tmp_path / "shapes")
    train, test = data.load_split(source, "train"), data.load_split(source, "test")
    assert train.images.shape == (24, 16, 16, 3) and test.images.shape == (8, 16, 16, 3)
    assert np.bincount(train.labels).tolist() == [12, 12] and np.bincount(test.labels).tolist() == [4, 4]
    for split in (train, test):
        x = split.images.astype(int)
        grey = (x[..., 0] == x[..., 2]).all(axis=(1, 2))
        # Each image's own pixels say its class: more blue than red, or (grey ones) brighter than 128.
        bluish = np.where(grey, x[..., 0].mean(axis=(1, 2)) > 128, x[..., 2].mean(axis=(1, 2)) > x[..., 0].mean(
            axis=(1, 2)))
        np.testing.assert_array_equal(bluish.astype(int), split.labels)
        assert grey.sum() == len(split) // 4
    # The PNG colour images are exact after fitting (a constant image stays constant).
    assert {tuple(p) for p in train.images[:, 8, 8]} >= {RED, BLUE}
    # Stored shuffled: a slice holds both classes, and percent slices round to whole images.
    assert set(data.load_split(source, "train[:25%]").labels) == {0, 1}
    np.testing.assert_array_equal(data.load_split(source, "train[75%:]").labels, train.labels[18:])
    assert data.input_spec(Config().data, Config().model, source, train) == data.InputSpec((16, 16, 3), 2, "dynamic")


def test_the_cache_is_reused_and_renewed_when_a_file_changes(tmp_path, monkeypatch):
    root = tmp_path / "digits"
    for split, count in (("train", 6), ("test", 2)):
        for i in range(count):
            _save(f"{root}/{split}/{i}.png", np.full((5, 7), 10 * i, np.uint8))
    decoded = []
    decode = folders.decode
    monkeypatch.setattr(folders, "decode", lambda path: decoded.append(path) or decode(path))
    first = _source(root, tmp_path, image_size=4)
    assert len(decoded) == 8 and first.num_classes == 0 and first.image_shape == (4, 4, 1)
    assert data.load_split(first, "test").labels is None
    again = _source(root, tmp_path, image_size=4)
    assert again == first and len(decoded) == 8  # Nothing decoded the second time.
    assert sorted(os.listdir(tmp_path / "cache" / "folders")) == [os.path.basename(first.path)]
    # Rewrite one file (new content, so a new size or time): the folder is decoded again, the stale cache removed.
    _save(f"{root}/train/3.png", np.full((6, 9), 250, np.uint8))
    os.utime(f"{root}/train/3.png", ns=(1, 1))
    renewed = _source(root, tmp_path, image_size=4)
    assert renewed.path != first.path and len(decoded) == 16
    assert sorted(os.listdir(tmp_path / "cache" / "folders")) == [os.path.basename(renewed.path)]
    assert 250 in data.load_split(renewed, "train").images
    # A new file also counts; another --image_size is another cache, kept beside this one.
    _save(f"{root}/test/new.png", np.full((5, 7), 3, np.uint8))
    assert len(data.load_split(_source(root, tmp_path, image_size=4), "test")) == 3 and len(decoded) == 25
    # Without --image_size every image must have one size: 3.png no longer has.
    text = _one_line_error(_source, root, tmp_path)
    assert text == (f"--dataset '{root}': train/3.png is 6x9 but other images are 5x7; pass --image_size N to "
                    "resize all to N x N"), text
    os.remove(f"{root}/train/3.png")
    native = _source(root, tmp_path)
    assert native.image_shape == (5, 7, 1) and len(data.load_split(native, "train")) == 5


def test_unreadable_files_are_refused_naming_them_and_other_files_are_ignored(tmp_path):
    root = tmp_path / "broken"
    for i in range(4):
        _save(f"{root}/train/{i}.png", np.full((4, 4), i, np.uint8))
    (root / "train" / "notes.txt").write_text("not an image, and not named like one: ignored")
    (root / "train" / ".DS_Store").write_bytes(b"\0hidden")
    _save(f"{root}/test/0.png", np.zeros((4, 4), np.uint8))
    assert len(data.load_split(_source(root, tmp_path), "train")) == 4
    (root / "train" / "bad.jpg").write_bytes(b"this is no JPEG")
    _save(f"{root}/test/cut.jpg", np.zeros((64, 64, 3), np.uint8))
    jpeg = (root / "test" / "cut.jpg").read_bytes()
    (root / "test" / "cut.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    text = _one_line_error(_source, root, tmp_path)
    assert text == (f"--dataset '{root}': 2 of 7 image files cannot be read: train/bad.jpg (UnidentifiedImageError: "
                    "cannot identify image file 'train/bad.jpg'); test/cut.jpg (OSError: Truncated File Read); "
                    "fix or remove them"), text
    for i in range(4):
        (root / "train" / f"bad{i}.png").write_bytes(b"")
    assert re.search(r"6 of 11 image files cannot be read: .* and 3 more; fix or remove them$",
                     _one_line_error(_source, root, tmp_path))


def test_bad_folder_layouts_are_one_line_errors(tmp_path):
    root = tmp_path / "layout"
    (root / "test").mkdir(parents=True)
    assert "has no train/ folder; a folder dataset holds train/ and test/" in _one_line_error(_source, root, tmp_path)
    (root / "train" / "empty").mkdir(parents=True)
    (root / "train" / "readme.md").write_text("no images here")
    assert _one_line_error(_source, root, tmp_path) == (
        f"--dataset '{root}': train/ holds no image files (extensions PIL reads: .png, .jpg, .bmp, ...)")
    _save(f"{root}/train/cat/0.png", np.zeros((3, 3), np.uint8))
    _save(f"{root}/train/loose.png", np.zeros((3, 3), np.uint8))
    assert "train/ mixes images (loose.png) with class folders" in _one_line_error(_source, root, tmp_path)
    os.remove(f"{root}/train/loose.png")
    _save(f"{root}/test/dog/0.png", np.zeros((3, 3), np.uint8))
    assert "the class folders of test/ ['dog'] must be among those of train/ ['cat', 'empty']" in \
        _one_line_error(_source, root, tmp_path)
    os.rename(f"{root}/test/dog", f"{root}/test/empty")  # A split may hold only some classes: labels follow train/.
    source = _source(root, tmp_path)
    assert source.num_classes == 2 and data.load_split(source, "test").labels.tolist() == [1]
    assert "split 'validation' is not in" in _one_line_error(data.load_split, source, "validation")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # An unwritable cache (running as root, permissions would not stop it).
    text = _one_line_error(data.prepared_builder, Config.create(dataset=str(root), data_dir=str(blocker)).data)
    assert text.startswith(f"cannot write the decoded --dataset '{root}' to '{blocker}/folders' (") and \
        text.endswith("choose a writable cache folder with --data_dir"), text
    with pytest.raises(ConfigError, match="not a file"):  # Neither a folder nor an existing .npz.
        data.prepared_builder(Config.create(dataset=str(tmp_path / "missing.npz")).data)


def test_image_size_applies_to_npz_and_tfds_sources(tmp_path, mnist5k, monkeypatch):
    rng = np.random.default_rng(0)
    train = data.Split(images=rng.integers(0, 256, (5, 6, 10, 3), dtype=np.uint8), labels=None)
    path = str(tmp_path / "wide.npz")
    data.save_npz(path, {"train": train}, num_classes=0)
    source = data.prepared_builder(Config.create(dataset=path).data)
    fitted = data.load_split(source, "train", image_size=4)
    assert fitted.images.shape == (5, 4, 4, 3)
    for got, image in zip(fitted.images, train.images):
        np.testing.assert_array_equal(got, images.fit(image, 4))
    config = Config.create(dataset=path, image_size=4)
    assert data.input_spec(config.data, config.model, source, fitted).image_shape == (4, 4, 3)
    builder, _, test = mnist5k
    monkeypatch.setattr(data, "FIT_BATCH", 128)  # Read and fitted in 4 batches, in order.
    digits = data.load_split(builder, "test", image_size=14)
    assert digits.images.shape == (500, 14, 14, 1)
    np.testing.assert_array_equal(digits.labels, test.labels)
    np.testing.assert_array_equal(digits.images, images.fit_all(test.images, 14))


# --- The command line ---

@pytest.mark.slow
def test_train_and_sample_on_a_folder_of_mixed_images(tmp_path):
    """train.py --dataset DIR --image_size 16 (conditional on the class folders, with both augmentations)
    for 2 steps, then sample.py draws each class; resumed to 4 steps (past an epoch) it equals a
    straight 4-step run bitwise; a bad --image_size is one line and exit 2."""
    _colour_folder(tmp_path / "shapes")
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    flags = ["--dataset", tmp_path / "shapes", "--data_dir", cache, "--image_size", 16, "--conditional",
             "--random_crop", "--hflip", "--binarize", "none", "--steps", 2, "--batch_size", 8, "--hidden_dims", 16,
             "--latent_dim", 2, "--no_progress"]
    code, out, err = call("train.py", "--workdir", workdir, *flags)
    assert code == 0, err[-3000:]
    assert "step 2/2" in out
    spec = json.loads((workdir / "input_spec.json").read_text())
    assert spec["image_shape"] == [16, 16, 3] and spec["num_classes"] == 2 and spec["mode"] == "grey", spec
    assert len(os.listdir(cache / "folders")) == 1
    code, out, err = call("sample.py", "--workdir", workdir, "--num_samples", 4, "--output", tmp_path / "s.png",
                          "--save_array", tmp_path / "s.npy")
    assert code == 0, err[-3000:]
    drawn = np.load(tmp_path / "s.npy")
    assert drawn.shape == (4, 16, 16, 3) and np.isfinite(drawn).all()
    with Image.open(tmp_path / "s.png") as grid:
        assert grid.mode == "RGB"
    code, out, err = call("sample.py", "--workdir", workdir, "--reconstruct", 4, "--output", tmp_path / "r.png")
    assert code == 0, err[-3000:]
    for run, steps in ((workdir, 4), (tmp_path / "straight", 4)):
        code, _, err = call("train.py", "--workdir", run, *flags, "--steps", steps)
        assert code == 0, err[-3000:]
    (resumed, step), (straight, _) = _params(workdir), _params(tmp_path / "straight")
    assert step == 4
    for x, y in zip(resumed, straight):
        np.testing.assert_array_equal(x, y)
    for size, shown in (("0", "got 0"), ("-5", "got -5"), ("100000", "got 100000")):
        code, _, err = call("train.py", "--workdir", tmp_path / f"bad{size}", *flags, "--image_size", size)
        assert code == 2 and one_line(err).endswith(
            f"--image_size must be in 1..4096 (or none: keep the native size), {shown}"), err
        assert not (tmp_path / f"bad{size}").exists()


@pytest.mark.slow
def test_hvae_64_trains_and_samples_on_a_folder_with_bfloat16_remat_and_grad_accum(tmp_path, monkeypatch):
    """train.py --dataset DIR --image_size 64 --model hvae --arch hvae_64 on 12 PNGs (70x80, resized
    and cropped to 64x64), in bfloat16 with --remat and --grad_accum 2 (batch 8 over the 4 test
    devices), then sample.py; 4 test images make a reconstruction grid of 4 columns. The
    preset is cut to three stages (64, 8, 1) of one block and group, width 8, for this CPU
    test (patched in this process only); the full preset's train step is compiled by
    benchmarks/memory.py and its shapes checked in tests/families/test_hvae.py."""
    small = dict(HVAE_PRESETS["hvae_64"], width=8, bottleneck=4, zdim=2, stages=((64, 1, 1), (8, 1, 1), (1, 1, 1)))
    monkeypatch.setitem(HVAE_PRESETS, "hvae_64", small)
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 4)):
        for i in range(count):
            ramp = np.linspace(0, 1, 80)[None, :, None] * rng.uniform(0, 255, (1, 1, 3))
            _save(f"{tmp_path}/faces/{split}/{i}.png", np.broadcast_to(ramp, (70, 80, 3)).astype(np.uint8))
    workdir = tmp_path / "run"
    code, out, err = call("train.py", "--workdir", workdir, "--dataset", tmp_path / "faces", "--data_dir",
                          tmp_path / "cache", "--image_size", 64, "--model", "hvae", "--arch", "hvae_64",
                          "--likelihood", "logistic_mixture", "--num_mixtures", 2, "--binarize", "none",
                          "--steps", 2, "--batch_size", 8, "--grad_accum", 2, "--dtype", "bfloat16", "--remat",
                          "--no_progress")
    assert code == 0, err[-3000:]
    assert "step 2/2" in out
    assert json.loads((workdir / "input_spec.json").read_text())["image_shape"] == [64, 64, 3]
    with Image.open(workdir / "reconstructions.png") as grid:   # 4 test images: a row of 4 above their 4, 2x.
        assert grid.size == (2 * (4 * 66 + 2), 2 * (2 * 66 + 2))
    record = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(record["test_nelbo"]) and np.isfinite(record["train_loss"]) and record["step"] == 2, record
    code, out, err = call("sample.py", "--workdir", workdir, "--num_samples", 4, "--output", tmp_path / "s.png",
                          "--save_array", tmp_path / "s.npy")
    assert code == 0, err[-3000:]
    drawn = np.load(tmp_path / "s.npy")
    assert drawn.shape == (4, 64, 64, 3) and np.isfinite(drawn).all()
