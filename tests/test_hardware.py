"""Hardware-dependent defaults (jaxae.hardware)."""

import jax

from jaxae import hardware


def test_steps_per_call():
    assert hardware.STEPS_PER_CALL == 50
    assert hardware.steps_per_call(None, convolutional=False, backend="cpu") == 50
    assert hardware.steps_per_call(None, convolutional=True, backend="cpu") == 1  # Convs in a CPU loop are slow.
    assert hardware.steps_per_call(None, convolutional=True, backend="gpu") == 50
    assert hardware.steps_per_call(7, convolutional=True, backend="cpu") == 7  # Asked for: always given.
    assert hardware.steps_per_call(3, convolutional=False, backend="tpu") == 3
    assert hardware.steps_per_call(None, True) == (1 if jax.default_backend() == "cpu" else 50)
