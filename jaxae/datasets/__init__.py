"""TFDS dataset builders that jaxae ships (registered on import)."""

from jaxae.datasets.cifar10_binary import Cifar10Binary
from jaxae.datasets.mnist_5k import Mnist5k
from jaxae.datasets.shapes import Shapes

__all__ = ["Cifar10Binary", "Mnist5k", "Shapes"]
