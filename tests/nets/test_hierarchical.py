"""The hierarchical network (jaxae.nets.hierarchical): its bookkeeping, and exact values for its
math at parameters where every term matters.

Every expected number is computed independently in numpy (float64) from quantities the
network exposes, away from its initialisation (where every learned prior is N(0, I)
because the prior blocks start as the zero function). The family built on it (loss,
sampling, presets) is tested in tests/families/test_hvae.py.
"""

import functools
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FAST_COMPILE_FLAGS, random_like
from jaxae.nets.hierarchical import Block, HierarchicalNet, HVAEArch, TopDownGroup, group_temperatures

LOG_2PI = math.log(2 * math.pi)


# --- bookkeeping --------------------------------------------------------------------------------

def test_arch_bookkeeping():
    arch = HVAEArch(width=8, bottleneck=4, zdim=3, stages=((8, 1, 2), (4, 1, 1), (1, 1, 2)))
    assert arch.num_groups == 5
    assert arch.group_resolutions() == [1, 1, 4, 8, 8]
    assert arch.group_sizes() == [3, 3, 48, 192, 192]
    assert arch.noise_dim == 438 and arch.top_dim == 3
    arch.check((8, 8, 1))
    with pytest.raises(ValueError, match="8x8"):
        arch.check((28, 28, 1))
    with pytest.raises(ValueError, match="square"):
        arch.check((8, 4, 1))
    with pytest.raises(ValueError, match="integer factors"):
        HVAEArch(8, 4, 2, ((8, 1, 1), (3, 1, 1))).check((8, 8, 1))
    with pytest.raises(ValueError, match="at least one latent group"):
        HVAEArch(8, 4, 2, ((8, 1, 1), (4, 1, 0))).check((8, 8, 1))


def test_group_temperatures():
    arch = HVAEArch(width=8, bottleneck=4, zdim=3, stages=((8, 1, 2), (4, 1, 1), (1, 1, 2)))
    scale = np.asarray(group_temperatures(arch, [1.0, 0.5, 0.5, 0.25, 0.2]))
    expected = np.concatenate([np.full(3, 1.0), np.full(3, 0.5), np.full(48, 0.5), np.full(192, 0.25),
                               np.full(192, 0.2)]).astype(np.float32)
    np.testing.assert_array_equal(scale, expected)
    np.testing.assert_array_equal(group_temperatures(arch, [0.7]), np.full(438, 0.7, np.float32))
    with pytest.raises(ValueError, match="one per latent group"):
        group_temperatures(arch, [1.0, 0.5])


# --- helpers ------------------------------------------------------------------------------------

def np_gaussian_kl(q_mean, q_logstd, p_mean, p_logstd):
    """KL(N(q_mean, e^q_logstd) || N(p_mean, e^p_logstd)) per element, float64."""
    q_mean, q_logstd, p_mean, p_logstd = (np.asarray(a, np.float64) for a in (q_mean, q_logstd, p_mean, p_logstd))
    q_var, p_var = np.exp(2 * q_logstd), np.exp(2 * p_logstd)
    return p_logstd - q_logstd + (q_var + (q_mean - p_mean) ** 2) / (2 * p_var) - 0.5


def np_gaussian_log_density(z, mean, logstd):
    z, mean, logstd = (np.asarray(a, np.float64) for a in (z, mean, logstd))
    return -0.5 * LOG_2PI - logstd - 0.5 * ((z - mean) / np.exp(logstd)) ** 2


def per_example(a):
    """Sum over every axis but the first."""
    return np.sum(a, axis=tuple(range(1, np.ndim(a))))


def random_params(init, *example_args, seed: int, scale: float = 0.5):
    """Parameters with the shapes ``init(key, *example_args)`` gives (traced, not run: fast)
    drawn afresh from a seeded normal, kernels with std scale / sqrt(fan_in), every other
    leaf with std scale. Unlike the initialisation, the prior blocks' last convs and the
    biases are non-zero, so the learned priors are not N(0, I)."""
    shapes = jax.eval_shape(init, jax.random.key(0), *example_args)
    return random_like(shapes.get("params", shapes), seed, scale)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _apply(module, method, params, args):
    return module.apply({"params": params}, *args, method=method)


def call(module, params, *args, method=None):
    """module.apply under jit (one compiled program instead of op-by-op dispatch)."""
    return _apply(module, method, params, args)


def zero_last_conv(block_params):
    """The block's params with its last convolution (highest-numbered Conv_i) set to zero."""
    last = max((name for name in block_params if name.startswith("Conv_")), key=lambda n: int(n.split("_")[1]))
    return dict(block_params, **{last: jax.tree.map(jnp.zeros_like, block_params[last])})


def assert_not_standard(p_mean, p_logstd):
    """The prior is far from N(0, I) in both parameters, so a formula that drops either shows."""
    assert float(np.mean(np.abs(p_mean))) > 0.2 and float(np.mean(np.abs(p_logstd))) > 0.2, (
        np.mean(np.abs(p_mean)), np.mean(np.abs(p_logstd)))


# --- one latent group with a learned (non-standard) prior ---------------------------------------

GROUP_ARCH = HVAEArch(width=8, bottleneck=4, zdim=3, stages=((4, 1, 1),))


def _group_setup():
    group = TopDownGroup(GROUP_ARCH, standard_prior=False, out_scale=0.5)
    rng = np.random.default_rng(11)
    h, enc, eps = (jnp.asarray(rng.standard_normal(shape), jnp.float32)
                   for shape in ((2, 4, 4, 8), (2, 4, 4, 8), (2, 4, 4, 3)))
    params = random_params(group.init, h, enc, eps, seed=19)
    return group, params, h, enc, eps


def test_topdown_group_kl_and_log_ratio_with_a_learned_prior():
    """KL(q || p) and log p(z) - log q(z) of one group against numpy closed forms; the prior
    comes from the generation path (enc=None) of the same group on the same state h."""
    group, params, h, enc, eps = _group_setup()
    _, kl0, ratio0, z0, (p_mean, p_logstd) = call(group, params, h, None, eps)
    np.testing.assert_array_equal(kl0, 0.0)
    np.testing.assert_array_equal(ratio0, 0.0)
    assert_not_standard(p_mean, p_logstd)
    np.testing.assert_allclose(z0, p_mean + np.exp(p_logstd) * eps, rtol=1e-5, atol=1e-6)   # A prior draw.
    _, kl, log_ratio, z, (q_mean, q_logstd) = call(group, params, h, enc, eps)
    # The posterior differs from the prior in both parameters (every KL term is non-zero).
    assert float(np.mean(np.abs(q_mean - p_mean))) > 0.2 and float(np.mean(np.abs(q_logstd - p_logstd))) > 0.2
    np.testing.assert_allclose(z, q_mean + np.exp(q_logstd) * eps, rtol=1e-5, atol=1e-6)
    expected_kl = per_example(np_gaussian_kl(q_mean, q_logstd, p_mean, p_logstd))
    np.testing.assert_allclose(kl, expected_kl, rtol=1e-5)
    expected_ratio = per_example(np_gaussian_log_density(z, p_mean, p_logstd)
                                 - np_gaussian_log_density(z, q_mean, q_logstd))
    np.testing.assert_allclose(log_ratio, expected_ratio, rtol=1e-5, atol=1e-4)


# --- one group with an inverse autoregressive flow posterior ------------------------------------

def test_flow_group_log_ratio_is_exact_by_the_numerical_jacobian_and_its_kl_is_minus_it():
    """With ``flow_steps`` the group's z is a flow of z0 = q_mean + q_std * eps. log q(z) is
    computed here from scratch: log N(eps; 0, I) - log|det dz/deps|, the determinant of the
    whole (4 * 4 * 3)-dimensional map eps -> z of each example by autodiff and numpy (float64),
    so a wrong log-det term of the Gaussian or of either flow step fails. The KL is the
    one-sample estimate log q(z) - log p(z) = -log-ratio; the prior is the generation path's."""
    group = TopDownGroup(GROUP_ARCH, standard_prior=False, out_scale=0.5, flow_steps=2, flow_hidden=6)
    rng = np.random.default_rng(12)
    h, enc, eps = (jnp.asarray(rng.standard_normal(shape), jnp.float32)
                   for shape in ((2, 4, 4, 8), (2, 4, 4, 8), (2, 4, 4, 3)))
    params = random_params(group.init, h, enc, eps, seed=23, scale=0.7)
    assert set(params["flow"]) == {"step_0", "step_1"}
    _, kl, log_ratio, z, (location, q_logstd) = call(group, params, h, enc, eps)
    _, _, _, prior_z, (p_mean, p_logstd) = call(group, params, h, None, eps)
    assert_not_standard(p_mean, p_logstd)
    np.testing.assert_allclose(prior_z, p_mean + np.exp(p_logstd) * eps, rtol=1e-5, atol=1e-6)  # No flow.

    def z_of(e):   # eps (2, 4, 4, 3) -> z (2, 4, 4, 3); the examples do not mix.
        return group.apply({"params": params}, h, enc, e)[3]

    full = np.asarray(jax.jit(jax.jacfwd(z_of))(eps), np.float64).reshape(2, 48, 2, 48)
    np.testing.assert_array_equal(full[0, :, 1], 0.0)
    for b in range(2):
        jac = full[b, :, b]
        sign, log_det = np.linalg.slogdet(jac)
        assert sign != 0
        log_q = np.sum(-0.5 * LOG_2PI - 0.5 * np.asarray(eps[b], np.float64) ** 2) - log_det
        log_p = np.sum(np_gaussian_log_density(z[b], p_mean[b], p_logstd[b]))
        np.testing.assert_allclose(log_ratio[b], log_p - log_q, rtol=1e-5, atol=1e-3)
        # The map is per position (block-diagonal), so the flow is not the identity there either.
        blocks = jac.reshape(16, 3, 16, 3)
        off = blocks.copy()
        off[np.arange(16), :, np.arange(16), :] = 0
        np.testing.assert_array_equal(off, 0.0)
    np.testing.assert_allclose(kl, -np.asarray(log_ratio), rtol=1e-6)
    # The Gaussian alone would give another z and KL: the flow changes both.
    gaussian = TopDownGroup(GROUP_ARCH, standard_prior=False, out_scale=0.5)
    g_params = dict(params, posterior=jax.tree.map(lambda a: a[..., :6] if a.shape[-1] == 12 else a,
                                                   params["posterior"]))
    g_params.pop("flow")
    _, g_kl, _, g_z, (g_mean, _) = call(gaussian, g_params, h, enc, eps)
    assert float(np.max(np.abs(np.asarray(z) - np.asarray(g_z)))) > 0.1
    # The code (location) is the flow's image of q's mean: z at eps = 0.
    _, _, _, z_at_mean, _ = call(group, params, h, enc, jnp.zeros_like(eps))
    np.testing.assert_allclose(location, z_at_mean, rtol=1e-6)
    assert float(np.max(np.abs(np.asarray(location) - np.asarray(g_mean)))) > 0.1


def test_flow_net_kls_sum_to_minus_the_log_ratio_and_encode_is_the_top_flow_image():
    """The whole hierarchy with flows: for the same noise, the sum of the per-group KL
    estimates is exactly -(log p(z) - log q(z)) of the IWAE path, so a one-sample bound equals
    the NELBO; ``encode`` gives the top group's z at eps = 0."""
    net = HierarchicalNet(arch=NET_ARCH, out_channels=1, flow_steps=1, flow_hidden=4)
    rng = np.random.default_rng(9)
    x = jnp.asarray(rng.uniform(size=(2, 4, 4, 1)), jnp.float32)
    eps = jnp.asarray(rng.standard_normal((2, NET_ARCH.noise_dim)), jnp.float32)
    params = random_params(net.init, x, eps, seed=10)
    out, kl, code = call(net, params, x, eps)
    scored, log_ratio = call(net, params, x, eps[:, None], method=HierarchicalNet.sample_and_score)
    np.testing.assert_allclose(scored[:, 0], out, rtol=1e-6)
    np.testing.assert_allclose(np.sum(kl, axis=-1), -np.asarray(log_ratio[:, 0]), rtol=1e-5, atol=1e-4)
    assert np.all(np.abs(np.asarray(kl)) > 1e-3)
    mean, logvar = call(net, params, x, method=HierarchicalNet.encode)
    np.testing.assert_allclose(mean, code, rtol=1e-6)   # The location does not depend on eps.
    assert mean.shape == logvar.shape == (2, NET_ARCH.top_dim)


# --- the whole hierarchy: per-group KL and the IWAE log-ratio -----------------------------------

NET_ARCH = HVAEArch(width=8, bottleneck=4, zdim=2, stages=((4, 1, 3), (1, 1, 1)))   # groups at 1, 4, 4, 4


def _net_setup(seed: int = 6):
    net = HierarchicalNet(arch=NET_ARCH, out_channels=1)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.uniform(size=(2, 4, 4, 1)), jnp.float32)
    eps = jnp.asarray(rng.standard_normal((2, NET_ARCH.noise_dim)), jnp.float32)
    params = random_params(net.init, x, eps, seed=seed + 1)
    return net, params, x, eps


@functools.partial(jax.jit, static_argnums=0)
def _hierarchy(net, params, x, eps):
    """The network's KL per group (B, G) and IWAE log-ratio (B,), and per group
    (q_mean, q_logstd, p_mean, p_logstd, eps_g), the prior from the group's own generation
    path (enc=None) on the top-down state that enters it. One compiled program."""
    _, kl, _ = net.apply({"params": params}, x, eps)
    _, log_ratio = net.apply({"params": params}, x, eps[:, None], method=HierarchicalNet.sample_and_score)
    acts = net.apply({"params": params}, x, method=HierarchicalNet.bottom_up)
    _, _, _, posteriors = net.apply({"params": params}, eps, acts, method=HierarchicalNet.top_down)
    sizes, resolutions = NET_ARCH.group_sizes(), NET_ARCH.group_resolutions()
    offsets = np.cumsum([0, *sizes])
    groups = []
    for g, res in enumerate(resolutions):
        eps_g = eps[:, offsets[g]:offsets[g + 1]].reshape(eps.shape[0], res, res, NET_ARCH.zdim)
        q_mean, q_logstd = posteriors[g]
        if g == 0:   # The top group's prior is N(0, I).
            p_mean = p_logstd = jnp.zeros(q_mean.shape)
        else:
            # The state after groups 0 .. g-1.
            h, _, _, _ = net.apply({"params": params}, eps, acts, g, method=HierarchicalNet.top_down)
            if g == 1:   # The first group at 4x4 sees the upsampled state plus that resolution's bias.
                h = h + params["bias_4"]
            group = TopDownGroup(NET_ARCH, standard_prior=False, out_scale=1 / math.sqrt(NET_ARCH.num_groups))
            _, _, _, _, (p_mean, p_logstd) = group.apply({"params": params[f"groups_{g}"]}, h, None, eps_g)
        groups.append((q_mean, q_logstd, p_mean, p_logstd, eps_g))
    return kl, log_ratio[:, 0], groups


def test_hvae_kl_per_group_and_log_ratio_with_learned_priors():
    net, params, x, eps = _net_setup()
    kl, log_ratio, groups = _hierarchy(net, params, x, eps)
    assert kl.shape == (2, NET_ARCH.num_groups)
    expected_ratio = np.zeros(2)
    for g, (q_mean, q_logstd, p_mean, p_logstd, eps_g) in enumerate(groups):
        if g:
            assert_not_standard(p_mean, p_logstd)
        np.testing.assert_allclose(kl[:, g], per_example(np_gaussian_kl(q_mean, q_logstd, p_mean, p_logstd)),
                                   rtol=1e-5, err_msg=f"group {g}")
        z = np.asarray(q_mean, np.float64) + np.exp(np.asarray(q_logstd, np.float64)) * np.asarray(eps_g)
        expected_ratio += per_example(np_gaussian_log_density(z, p_mean, p_logstd)
                                      - np_gaussian_log_density(z, q_mean, q_logstd))
    assert np.all(np.asarray(kl[:, 1:]) > 1.0)   # Learned priors, and q far from them: every term counts.
    np.testing.assert_allclose(log_ratio, expected_ratio, rtol=1e-5, atol=1e-3)


# --- the posterior is parameterised relative to the prior (NVAE) --------------------------------

def test_posterior_offsets_of_zero_give_q_equal_to_the_learned_prior():
    """With every posterior block's last conv zeroed the offsets (dmu, dlog_sigma) are 0, so
    q = p exactly: every group's KL and the log-ratio are 0 although the priors (drawn away
    from init) are not N(0, I). An absolute posterior (q = N(dmu, e^dlog_sigma)) gives
    q = N(0, I) here and large KLs."""
    net, params, x, eps = _net_setup(seed=4)
    params = dict(params, **{name: dict(sub, posterior=zero_last_conv(sub["posterior"]))
                             for name, sub in params.items() if name.startswith("groups_")})
    kl, log_ratio, groups = _hierarchy(net, params, x, eps)
    for g, (q_mean, q_logstd, p_mean, p_logstd, _) in enumerate(groups):
        if g:
            assert_not_standard(p_mean, p_logstd)
        np.testing.assert_allclose(q_mean, p_mean, atol=1e-6, err_msg=f"group {g}")
        np.testing.assert_allclose(q_logstd, p_logstd, atol=1e-6, err_msg=f"group {g}")
    np.testing.assert_allclose(kl, 0.0, atol=1e-5)
    np.testing.assert_allclose(log_ratio, 0.0, atol=1e-4)


# --- the initialisation, encode and decode ------------------------------------------------------

def test_zero_prior_blocks_give_standard_priors_as_at_init():
    """The prior blocks' last convs start at zero (VDVAE): then every prior is N(0, I) and adds
    nothing to the state, so each group's KL is KL(q || N(0, I)); the top group has no prior
    block at all."""
    block = Block(bottleneck=4, out=12, residual=False, out_scale=0.0)
    block_params = jax.jit(block.init)(jax.random.key(0), jnp.ones((1, 4, 4, 8)))["params"]
    assert set(block_params) == {"Conv_0", "Conv_1", "Conv_2", "Conv_3"}
    np.testing.assert_array_equal(block_params["Conv_3"]["kernel"], 0.0)
    np.testing.assert_array_equal(block_params["Conv_3"]["bias"], 0.0)
    assert float(jnp.std(block_params["Conv_2"]["kernel"])) > 0.01
    net, params, x, eps = _net_setup(seed=5)
    shapes = jax.eval_shape(net.init, jax.random.key(0), x, eps)["params"]
    assert "prior" not in shapes["groups_0"] and all("prior" in shapes[f"groups_{g}"] for g in (1, 2, 3))
    params = dict(params, **{f"groups_{g}": dict(params[f"groups_{g}"],
                                                 prior=zero_last_conv(params[f"groups_{g}"]["prior"]))
                             for g in (1, 2, 3)})
    kl, _, groups = _hierarchy(net, params, x, eps)
    for g, (q_mean, q_logstd, p_mean, p_logstd, _) in enumerate(groups):
        np.testing.assert_array_equal(p_mean, 0.0)
        np.testing.assert_array_equal(p_logstd, 0.0)
        np.testing.assert_allclose(kl[:, g], per_example(np_gaussian_kl(q_mean, q_logstd, 0.0, 0.0)), rtol=1e-5)
    assert np.all(np.asarray(kl) > 0.3)


@functools.partial(jax.jit, static_argnums=0)
def _encode_decode(net, params, x, eps, top):
    acts = net.apply({"params": params}, x, method=HierarchicalNet.bottom_up)
    _, _, _, posteriors = net.apply({"params": params}, eps, acts, method=HierarchicalNet.top_down)
    full = jnp.concatenate([top, jnp.zeros((top.shape[0], NET_ARCH.noise_dim - NET_ARCH.top_dim))], -1)
    return (net.apply({"params": params}, x, method=HierarchicalNet.encode), posteriors[0],
            net.apply({"params": params}, top, method=HierarchicalNet.decode),
            net.apply({"params": params}, full, method=HierarchicalNet.decode))


def test_encode_is_the_top_posterior_and_decoding_a_top_code_takes_the_prior_means_below():
    net, params, x, eps = _net_setup(seed=8)
    top = jnp.asarray(np.random.default_rng(2).standard_normal((2, NET_ARCH.top_dim)), jnp.float32)
    (mean, logvar), (q_mean, q_logstd), from_top, from_full = _encode_decode(net, params, x, eps, top)
    assert mean.shape == logvar.shape == (2, NET_ARCH.top_dim)
    # The top group's posterior does not depend on the noise: (mean, 2 logstd), flattened.
    np.testing.assert_allclose(mean, np.asarray(q_mean).reshape(2, -1), rtol=1e-6)
    np.testing.assert_allclose(logvar, 2 * np.asarray(q_logstd).reshape(2, -1), rtol=1e-6)
    # A top code alone: lower groups get zero noise, i.e. their (learned, non-standard) prior means.
    np.testing.assert_array_equal(from_top, from_full)
    assert from_top.shape == (2, 4, 4, 1)


# --- rematerialization --------------------------------------------------------------------------

REMAT_ARCH = HVAEArch(width=16, bottleneck=8, zdim=2, stages=((8, 2, 2), (4, 1, 2), (1, 1, 1)))


def test_remat_gives_the_same_loss_and_gradients_with_less_memory():
    """nn.remat of the blocks and groups: the same parameter tree, the same outputs, KLs and
    gradients (to float rounding: the recomputation is the same arithmetic); the gradient's
    program recomputes (JAX marks each rematerialized block's inputs with an optimization
    barrier). The memory it saves is measured by benchmarks/memory.py (the README's table):
    XLA:CPU drops those barriers by default, so this process cannot see it."""
    plain, remat = (HierarchicalNet(arch=REMAT_ARCH, out_channels=3, remat=flag) for flag in (False, True))
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.uniform(size=(16, 8, 8, 3)), jnp.float32)
    eps = jnp.asarray(rng.standard_normal((16, REMAT_ARCH.noise_dim)), jnp.float32)
    params = random_params(plain.init, x[:1], eps[:1], seed=4)
    shapes = jax.tree.map(jnp.shape, jax.eval_shape(remat.init, jax.random.key(0), x[:1], eps[:1])["params"])
    assert shapes == jax.tree.map(jnp.shape, params)

    def loss(net):
        def f(p):
            out, kl, _ = net.apply({"params": p}, x, eps)
            return jnp.mean(jnp.sum(jnp.square(out - x.mean(-1, keepdims=True)), (1, 2, 3)) + jnp.sum(kl, -1))
        return jax.jit(jax.value_and_grad(f))

    (l0, g0), (l1, g1) = loss(plain)(params), loss(remat)(params)
    assert float(l0) > 1.0
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * float(np.max(np.abs(a))))
    barriers = [loss(net).lower(params).as_text().count("optimization_barrier") for net in (plain, remat)]
    blocks = sum(b for _, b, _ in REMAT_ARCH.stages)
    assert barriers[0] == 0 and barriers[1] >= blocks + REMAT_ARCH.num_groups, barriers


@pytest.mark.slow
def test_memory_benchmark_plans_less_with_remat_and_with_grad_accum():
    """benchmarks/memory.py's plan (a fresh process: it sets XLA's flags before JAX starts) for a
    small 8x8 preset registered in that process: --remat and --grad_accum 2 each plan less
    temporary memory than neither, and the state is the same in all three."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); import memory\n"
        "memory.HVAE_PRESETS['hvae_t'] = {'width': 16, 'bottleneck': 8, 'zdim': 2, "
        "'stages': ((8, 1, 2), (4, 1, 1), (1, 1, 1))}\n"
        "rows = [memory.planned_memory('hvae_t', 16, 'float32', r, k)\n"
        "        for r, k in ((False, 1), (True, 1), (False, 2))]\n"
        "print(json.dumps(rows))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, XLA_FLAGS=FAST_COMPILE_FLAGS))
    assert result.returncode == 0, result.stderr[-3000:]
    plain, remat, accum = json.loads(result.stdout.splitlines()[-1])
    assert remat["temporaries"] < 0.7 * plain["temporaries"], (plain, remat)
    assert accum["temporaries"] < 0.8 * plain["temporaries"], (plain, accum)
    assert plain["arguments"] == remat["arguments"] == accum["arguments"] and plain["params"] == remat["params"]
