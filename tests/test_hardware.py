"""Hardware-dependent defaults (jaxae.hardware)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxae import hardware


def test_steps_per_call():
    assert hardware.STEPS_PER_CALL == 50
    assert hardware.steps_per_call(None, convolutional=False, backend="cpu") == 50
    assert hardware.steps_per_call(None, convolutional=True, backend="cpu") == 1  # Convs in a CPU loop are slow.
    assert hardware.steps_per_call(None, convolutional=True, backend="gpu") == 50
    assert hardware.steps_per_call(7, convolutional=True, backend="cpu") == 7  # Asked for: always given.
    assert hardware.steps_per_call(3, convolutional=False, backend="tpu") == 3
    assert hardware.steps_per_call(None, True) == (1 if jax.default_backend() == "cpu" else 50)


def test_cpu_programs_give_convolutions_to_xla_and_keep_ynnpack_dots(monkeypatch):
    """On CPU jaxae's programs compile with YNNPACK taking dots (and reductions) but not
    convolutions (single-threaded there); a user's own XLA_FLAGS setting wins; other backends
    get no options."""
    if jax.default_backend() != "cpu":
        pytest.skip("CPU-only options")
    assert hardware.compiler_options() == {hardware.YNN_OPTION: hardware.CPU_LIBRARY_FUSIONS}
    assert hardware.compiler_options("gpu") == {}
    monkeypatch.setenv("XLA_FLAGS", f"--{hardware.YNN_OPTION}=")
    assert hardware.compiler_options() == {}
    monkeypatch.delenv("XLA_FLAGS")

    def conv_and_dot(x, w, m):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y.reshape(y.shape[0], -1) @ m
    args = (jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4)), jnp.ones((144, 5)))
    compiled = jax.jit(conv_and_dot, compiler_options=hardware.compiler_options()).lower(*args).compile().as_text()
    fusions = [line for line in compiled.splitlines() if "__ynn_fusion" in line and "ENTRY" not in line]
    assert [line.split(" = ")[1].split(" ")[0] for line in fusions] == ["f32[2,5]{1,0}"], fusions   # The dot only.
    assert "convolution(" in compiled                                              # XLA's own conv.
    wrapped = hardware.jit(conv_and_dot)
    np.testing.assert_allclose(wrapped(*args), conv_and_dot(*args), rtol=1e-6)
    assert wrapped.__name__ == "conv_and_dot"
