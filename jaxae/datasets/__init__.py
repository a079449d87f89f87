"""TFDS dataset builders that jaxae ships (registered on import)."""

from jaxae.datasets.mnist_5k import Mnist5k

__all__ = ["Mnist5k"]
