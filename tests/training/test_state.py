"""The train state, the optimizer's schedules and settings, and the parameter moving average
(jaxae.training.state), checked against hand-computed numbers."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxae import training
from jaxae.config import BURDA_STAGES, Config, OptimizerConfig
from jaxae.data import InputSpec
from jaxae.families import make_model

LR = 0.01


def _lr(schedule, step):
    return float(schedule(step)) if callable(schedule) else float(schedule)


def test_constant_learning_rate_and_linear_warmup():
    assert training.learning_rate(OptimizerConfig(learning_rate=LR), 1000) == LR
    warm = training.learning_rate(OptimizerConfig(learning_rate=LR, warmup_steps=10), 1000)
    for step, expected in [(0, 0.0), (5, LR / 2), (10, LR), (11, LR), (999, LR)]:
        assert _lr(warm, step) == pytest.approx(expected, rel=1e-6, abs=1e-12), step


def test_cosine_schedule_warms_up_then_decays_to_zero_at_the_last_step():
    schedule = training.learning_rate(OptimizerConfig(learning_rate=LR, lr_schedule="cosine", warmup_steps=10), 110)
    # Warm-up 0 -> LR over 10 steps, then LR * (1 + cos(pi * t / 100)) / 2.
    for step, expected in [(0, 0.0), (5, LR / 2), (10, LR), (35, LR * (1 + np.cos(np.pi / 4)) / 2),
                           (60, LR / 2), (110, 0.0)]:
        assert _lr(schedule, step) == pytest.approx(expected, rel=1e-5, abs=1e-9), step


@pytest.mark.parametrize("steps_per_epoch", [1, 5])
def test_burda_schedule_is_lr_times_10_to_the_minus_i_over_7_for_3_to_the_i_epochs(steps_per_epoch):
    """Stage i (i = 0..7) lasts 3^i epochs at LR * 10^(-i/7): epochs [0, 1), [1, 4), [4, 13),
    [13, 40), [40, 121), [121, 364), [364, 1093), [1093, 3280)."""
    schedule = training.learning_rate(OptimizerConfig(learning_rate=LR, lr_schedule="burda"), 0, steps_per_epoch)
    starts = [0, 1, 4, 13, 40, 121, 364, 1093, 3280]  # Epoch each stage starts at (and the end).
    assert BURDA_STAGES == 8 and starts == [(3 ** i - 1) // 2 for i in range(9)]
    for i in range(BURDA_STAGES):
        expected = LR * 10.0 ** (-i / 7)
        first, last = starts[i] * steps_per_epoch, starts[i + 1] * steps_per_epoch - 1
        for step in (first, last):
            assert _lr(schedule, step) == pytest.approx(expected, rel=1e-6), (i, step)
    assert _lr(schedule, 1) == pytest.approx(LR if steps_per_epoch == 5 else LR * 10 ** (-1 / 7), rel=1e-6)
    assert _lr(schedule, 3280 * steps_per_epoch - 1) == pytest.approx(LR / 10, rel=1e-6)  # 10^(-7/7).


def _adam_first_update(opt: OptimizerConfig, grads):
    """The first update Adam makes: -lr * g / (|g| + eps) (its bias-corrected moments are g and g^2)."""
    optimizer = training.make_optimizer(opt, 100)
    params = jnp.zeros_like(grads)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return np.asarray(updates)


def test_adam_eps_reaches_optax():
    g = jnp.array([1e-4, -3e-4])
    for eps in (1e-8, 1e-4):
        expected = -LR * np.asarray(g) / (np.abs(np.asarray(g)) + eps)
        np.testing.assert_allclose(_adam_first_update(OptimizerConfig(learning_rate=LR, adam_eps=eps), g), expected,
                                   rtol=1e-5)
    # With eps = 1e-4 the first step is half (and a quarter of) LR: not Adam's default 1e-8.
    np.testing.assert_allclose(_adam_first_update(OptimizerConfig(learning_rate=LR, adam_eps=1e-4), g),
                               [-LR / 2, LR * 3 / 4], rtol=1e-5)
    assert Config.create(adam_eps=1e-4).optimizer.adam_eps == 1e-4


def test_grad_clip_scales_the_gradient_to_the_global_norm_before_adam():
    g = jnp.array([6.0, 8.0])  # Norm 10.
    # eps = 1 makes Adam's step depend on the gradient's size: -lr * g / (|g| + 1).
    clipped = _adam_first_update(OptimizerConfig(learning_rate=LR, adam_eps=1.0, grad_clip=1.0), g)
    np.testing.assert_allclose(clipped, [-LR * 0.6 / 1.6, -LR * 0.8 / 1.8], rtol=1e-5)
    unclipped = _adam_first_update(OptimizerConfig(learning_rate=LR, adam_eps=1.0), g)
    np.testing.assert_allclose(unclipped, [-LR * 6 / 7, -LR * 8 / 9], rtol=1e-5)


def test_the_schedule_reaches_adam():
    """With a constant gradient Adam's bias-corrected step is lr(t) * g / (|g| + eps) at step t,
    so the burda schedule (1 step per epoch) shows in the updates: stages start at steps 1 and 4."""
    optimizer = training.make_optimizer(OptimizerConfig(learning_rate=LR, lr_schedule="burda"), 3280, 1)
    params = jnp.zeros(1)
    state = optimizer.init(params)
    steps = []
    for _ in range(5):
        updates, state = optimizer.update(jnp.ones(1), state, params)
        steps.append(-float(updates[0]))
    expected = [LR, *[LR * 10 ** (-1 / 7)] * 3, LR * 10 ** (-2 / 7)]
    np.testing.assert_allclose(steps, np.array(expected) / (1 + 1e-8), rtol=1e-4)  # float32 moments.


# --- The train state and the moving average ---

SPEC = InputSpec(image_shape=(28, 28, 1), num_classes=10, mode="binary")
CONFIG = Config.create(hidden_dims=(16,), latent_dim=4, learning_rate=0.05)


@pytest.fixture(scope="module")
def vae():
    """(model, optimizer) of a tiny MLP VAE."""
    model = make_model(CONFIG, SPEC)
    return model, training.make_optimizer(CONFIG.optimizer, 10)


def test_create_train_state_with_and_without_the_moving_average(vae):
    model, optimizer = vae
    plain = training.create_train_state(model, optimizer, jax.random.key(0))
    assert int(plain.step) == 0 and int(plain.skipped) == 0 and plain.ema_params is None
    assert plain.step.dtype == plain.skipped.dtype == jnp.int32
    assert plain.eval_params() is plain.params
    with_ema = training.create_train_state(model, optimizer, jax.random.key(0), ema=True)
    assert with_ema.eval_params() is with_ema.ema_params
    for p, e, q in zip(*map(jax.tree.leaves, (with_ema.params, with_ema.ema_params, plain.params))):
        np.testing.assert_array_equal(p, e)  # The average starts at the params (same seed: same params).
        np.testing.assert_array_equal(p, q)
    assert jax.tree.structure(with_ema.params) == jax.tree.structure(with_ema.ema_params)
    # Adam's state holds the moments of every parameter.
    assert jax.tree.structure(plain.opt_state) == jax.tree.structure(optimizer.init(plain.params))


def test_ema_update_is_decay_times_average_plus_the_rest_times_params():
    ema = {"a": jnp.array([10.0, -10.0]), "b": {"c": jnp.array(2.0)}}
    params = {"a": jnp.array([0.0, 10.0]), "b": {"c": jnp.array(4.0)}}
    out = training.ema_update(ema, params, 0.9)
    np.testing.assert_allclose(out["a"], [9.0, -8.0], rtol=1e-6)
    np.testing.assert_allclose(out["b"]["c"], 2.2, rtol=1e-6)


@dataclasses.dataclass(frozen=True)
class Quadratic:
    """A stand-in family with known params and gradient: loss = sum(w^2) / 2, so d loss / dw = w."""

    spec: InputSpec = InputSpec(image_shape=(1, 1, 1), num_classes=0, mode="binary")

    def loss(self, params, batch, keys, step):
        loss = 0.5 * jnp.sum(jnp.square(params["w"]))
        return loss, {"loss": loss}


def test_an_applied_step_moves_params_by_adam_and_the_average_towards_them():
    """Hand-computed: w = [1, -2], Adam's first step with lr 0.1 moves each by 0.1 against the
    sign of its gradient (w), so w' = [0.9, -1.9]; the average [10, 10] becomes
    0.9 * [10, 10] + 0.1 * w' = [9.09, 8.81] (the wrong way round, 0.1 * ema + 0.9 * w', would be [1.81, -0.71])."""
    model = Quadratic()
    optimizer = training.make_optimizer(OptimizerConfig(learning_rate=0.1), 10)
    state = training.TrainState(step=jnp.zeros((), jnp.int32), params={"w": jnp.array([1.0, -2.0])},
                                opt_state=optimizer.init({"w": jnp.zeros(2)}), skipped=jnp.zeros((), jnp.int32),
                                ema_params={"w": jnp.array([10.0, 10.0])})
    step = jax.jit(training.make_train_step(model, optimizer, ema_decay=0.9))
    batch = {"image": jnp.zeros((2, 1, 1, 1), jnp.uint8)}
    after, metrics = step(state, batch, jax.random.key(0))
    np.testing.assert_allclose(after.params["w"], [0.9, -1.9], rtol=1e-6)
    np.testing.assert_allclose(after.ema_params["w"], [9.09, 8.81], rtol=1e-6)
    assert float(metrics["loss"]) == 2.5 and float(metrics["grad_norm"]) == pytest.approx(5 ** 0.5, rel=1e-6)
    assert after.eval_params() is after.ema_params
    # Without ema_decay the state's average is left alone (and None stays None).
    plain = jax.jit(training.make_train_step(model, optimizer))
    assert plain(state.replace(ema_params=None), batch, jax.random.key(0))[0].ema_params is None


def test_ema_on_a_real_family_is_exactly_decay_old_plus_rest_new_for_every_leaf(vae):
    """One applied step of a VAE (below a large skip threshold) with ema_decay 0.9 from known
    params and a known, different average: ema' = 0.9 * ema + 0.1 * params' for every leaf."""
    model, optimizer = vae
    state = training.create_train_state(model, optimizer, jax.random.key(0), ema=True)
    old_ema = jax.tree.map(lambda p: 0.5 - p, state.params)  # Known and far from the params.
    state = state.replace(ema_params=old_ema)
    step = jax.jit(training.make_train_step(model, optimizer, skip_threshold=1e6, ema_decay=0.9))
    images = (jax.random.uniform(jax.random.key(1), (8, 28, 28, 1)) < 0.3).astype(jnp.uint8)
    after, metrics = step(state, {"image": images}, jax.random.key(2))
    assert float(metrics["skipped"]) == 0.0 and int(after.skipped) == 0 and int(after.step) == 1
    leaves = jax.tree_util.tree_flatten_with_path(after.ema_params)[0]
    assert len(leaves) >= 4
    for (path, ema), old, new, before in zip(leaves, jax.tree.leaves(old_ema), jax.tree.leaves(after.params),
                                             jax.tree.leaves(state.params)):
        assert not np.allclose(new, before), jax.tree_util.keystr(path)  # The step was applied to this leaf.
        np.testing.assert_allclose(ema, 0.9 * np.asarray(old) + 0.1 * np.asarray(new), rtol=1e-5, atol=1e-6,
                                   err_msg=jax.tree_util.keystr(path))
        assert not np.allclose(ema, 0.1 * np.asarray(old) + 0.9 * np.asarray(new), atol=1e-3)

