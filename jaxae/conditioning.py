"""What a model is conditioned on: nothing, the class label, or a low-resolution version of
the image (super-resolution), behind one object every family, the evaluation and
``sample.py`` use the same way.

- ``none``: an unconditional model.
- ``label`` (``--conditional``, ``--model cvae``): the class label; the networks see it
  one-hot, (B, num_classes).
- ``lowres`` (``--condition lowres --lowres_factor F``): x_low = :func:`box_average` of
  the model's input x over F x F blocks, (B, H/F, W/F, C) floats in [0, 1]. x is what the
  likelihood scores (the clean image, before any denoising corruption of the encoder's
  input): for binarized data the {0, 1} image (so x_low takes the values k / F^2), for
  8-bit data its grey levels k / 255 (or the dequantized (k + u) / 256). x_low is not
  quantized: it is the exact float average. MLP networks see it flattened and
  concatenated with their input; convolutional ones as extra channels, nearest-upsampled
  to the resolution of each place it enters (jaxae.nets).

A condition travels in two forms: the *given* (what a user supplies: labels (B,) int, or
x_low (B, H/F, W/F, C) float), which :meth:`Conditioning.given` computes from a batch,
and the networks' input (:meth:`Conditioning.net_input`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jaxae.errors import ConfigError

CONDITIONS = ("none", "label", "lowres")
DEFAULT_LOWRES_FACTOR = 4
PSNR_FLOOR_MSE = 1e-10  # A perfect match scores 100 dB rather than infinity.


def box_average(x: jax.Array, factor: int) -> jax.Array:
    """(B, H, W, C) -> (B, H/F, W/F, C): the mean of each F x F block (F divides H and W)."""
    b, h, w, c = x.shape
    return jnp.mean(x.reshape(b, h // factor, factor, w // factor, factor, c), axis=(2, 4))


def upsample(x: jax.Array, size: tuple[int, int], method: str = "nearest") -> jax.Array:
    """(B, h, w, C) -> (B, H, W, C) resized by ``method`` (jax.image.resize: nearest, cubic
    (bicubic, Keys a = -0.5), linear), clipped to [0, 1]; nearest repeats each pixel for
    integer factors."""
    out = jax.image.resize(x, (x.shape[0], *size, x.shape[3]), method)
    return jnp.clip(out, 0.0, 1.0)


def psnr(a: jax.Array, b: jax.Array) -> jax.Array:
    """Peak signal-to-noise ratio of images in [0, 1] (peak 1), per image: (B, H, W, C) x2 -> (B,)
    dB = 10 log10(1 / mean squared error over the pixels), the MSE floored at 1e-10."""
    mse = jnp.mean(jnp.square(a - b), axis=(-3, -2, -1))
    return -10.0 * jnp.log10(jnp.maximum(mse, PSNR_FLOOR_MSE))


@dataclasses.dataclass(frozen=True)
class Conditioning:
    """The condition of a model (hashable: part of a jit-static family).

    kind: one of :data:`CONDITIONS`; num_classes: of ``label``; image_shape: (H, W, C) of
    the model's images; factor: F of ``lowres``.
    """

    kind: str = "none"
    num_classes: int = 0
    image_shape: tuple[int, int, int] = (1, 1, 1)
    factor: int = DEFAULT_LOWRES_FACTOR

    @classmethod
    def of(cls, kind: str, spec, factor: int = DEFAULT_LOWRES_FACTOR) -> "Conditioning":
        """For a kind and the data's InputSpec; ConfigError when the images cannot give x_low
        (jaxae.families.make_model checks that a label condition has labels)."""
        height, width, _ = spec.image_shape
        if kind == "lowres" and (height % factor or width % factor):
            raise ConfigError(f"--lowres_factor {factor} must divide the image sides; got {height}x{width}")
        return cls(kind, spec.num_classes, tuple(spec.image_shape), factor)

    @property
    def active(self) -> bool:
        return self.kind != "none"

    @property
    def on_image(self) -> bool:
        """Whether the given is an image the model upsamples (super-resolution)."""
        return self.kind == "lowres"

    @property
    def lowres_shape(self) -> tuple[int, int, int]:
        """(H/F, W/F, C) of the ``lowres`` given."""
        height, width, channels = self.image_shape
        return height // self.factor, width // self.factor, channels

    def describe(self) -> str:
        """What the model is conditioned on, for reports: '' when nothing."""
        if self.kind == "label":
            return "the class label y"
        if self.kind == "lowres":
            f, (h, w, c) = self.factor, self.lowres_shape
            return f"x_low, the {f}x{f} box average of x ({h}x{w}x{c})"
        return ""

    def given(self, x: jax.Array, labels: jax.Array | None) -> jax.Array | None:
        """The given of a batch: x (B, H, W, C) the model's input in [0, 1], labels (B,) or
        None -> labels (label), x_low (lowres) or None (none)."""
        if self.kind == "label":
            return labels
        if self.kind == "lowres":
            return box_average(x, self.factor)
        return None

    def net_input(self, given: jax.Array | None, model_name: str = "model") -> jax.Array | None:
        """The networks' condition: one-hot (B, num_classes) of labels, x_low itself
        (B, H/F, W/F, C), or None for an unconditional model."""
        if not self.active:
            return None
        if given is None:
            needs = "the batch's labels" if self.kind == "label" else "the low-resolution image x_low"
            raise ValueError(f"the conditional {model_name} needs {needs}")
        if self.kind == "label":
            return jax.nn.one_hot(given, self.num_classes)
        return given.astype(jnp.float32)

    def placeholder(self, num: int) -> jax.Array | None:
        """A given of ``num`` zeros (labels 0, black x_low), for shapes and initialisation."""
        if self.kind == "label":
            return jnp.zeros((num,), jnp.int32)
        if self.kind == "lowres":
            return jnp.zeros((num, *self.lowres_shape), jnp.float32)
        return None

    def grid(self, num: int, x: jax.Array, per_row: int) -> jax.Array | None:
        """Givens for a grid of ``num`` samples in rows of ``per_row`` that share one condition:
        the classes in turn (label), or the low-res versions of images x (B, H, W, C) in [0, 1],
        one per row, cycling when B is smaller than the number of rows (lowres)."""
        rows = jnp.arange(num) // per_row
        if self.kind == "label":
            return rows % self.num_classes
        if self.kind == "lowres":
            first = x[:math.ceil(num / per_row)]
            return self.given(first, None)[rows % first.shape[0]]
        return None

    def baselines(self, given: jax.Array) -> dict[str, jax.Array]:
        """Upsampled x_low (B, H, W, C) by a fixed method, the reference a super-resolution
        model is compared with: ``nearest`` and ``bicubic``; {} for other conditions."""
        if not self.on_image:
            return {}
        size = self.image_shape[:2]
        return {"nearest": upsample(given, size, "nearest"), "bicubic": upsample(given, size, "cubic")}
