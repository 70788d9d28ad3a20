"""jaxhw.optim: transforms vs optax (adam, muon) and closed forms; robustness cases."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhw import linalg, norms, optim

KEY = jax.random.PRNGKey(0)
PARAMS = {
    "dense": {"kernel": jax.random.normal(KEY, (8, 32)), "bias": jnp.ones(32)},
    "conv": {"kernel": jax.random.normal(jax.random.PRNGKey(1), (3, 3, 4, 6))},
    "scale": jnp.array(1.5),
}
GRADS = jax.tree.map(lambda x: jax.random.normal(jax.random.PRNGKey(2), x.shape), PARAMS)


def _step(tx, grads=GRADS, params=PARAMS):
    u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    return u


def test_q3c_adam_with_zero_betas_is_sign_descent():
    adam, sign = optax.adam(0.1, b1=0.0, b2=0.0, eps=0.0), optim.sign_descent(0.1)
    sa, ss = adam.init(PARAMS), sign.init(PARAMS)
    for i in range(4):
        g = jax.tree.map(lambda x: jax.random.normal(jax.random.PRNGKey(10 + i), x.shape), PARAMS)
        ua, sa = adam.update(g, sa)
        us, ss = sign.update(g, ss)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), ua, us)


def test_sign_dual_norm_scale_is_linf_step():
    u = _step(optim.scale_by_sign(dual_norm_scale=True))
    g = GRADS["dense"]["kernel"]
    np.testing.assert_allclose(-u["dense"]["kernel"], norms.linf_step(g, 1.0), rtol=1e-6)


def test_orthogonalization_matches_closed_form_and_shape_rules():
    u = _step(optim.scale_by_orthogonalization("svd"))
    G = GRADS["dense"]["kernel"]
    U, s, Vt = np.linalg.svd(np.asarray(G, np.float64), full_matrices=False)
    np.testing.assert_allclose(u["dense"]["kernel"], np.sqrt(32 / 8) * U @ Vt, atol=1e-5)
    C = np.asarray(GRADS["conv"]["kernel"]).reshape(36, 6)
    U, s, Vt = np.linalg.svd(C, full_matrices=False)
    np.testing.assert_allclose(np.asarray(u["conv"]["kernel"]).reshape(36, 6), np.sqrt(6 / 36) * U @ Vt, atol=1e-5)
    np.testing.assert_allclose(u["dense"]["bias"], jnp.sign(GRADS["dense"]["bias"]))
    np.testing.assert_allclose(u["scale"], jnp.sign(GRADS["scale"]))
    # dual-norm scaling: the exact Eq. (5) step (λ = 1) under ‖W‖ = √(d_in/d_out)‖W‖_*
    ud = _step(optim.scale_by_orthogonalization("svd", dual_norm_scale=True))
    scaled = norms.Norm("rms", lambda W: np.sqrt(8 / 32) * norms.SPECTRAL.norm(W),
                        lambda G: np.sqrt(32 / 8) * norms.SPECTRAL.dual(G), lambda G: np.sqrt(32 / 8) * norms.SPECTRAL.dual_argmax(G))
    np.testing.assert_allclose(-ud["dense"]["kernel"], norms.steepest_descent_step(G, 1.0, scaled), rtol=1e-4)


def test_newton_schulz_transform_matches_optax_muon():
    params = {"a": PARAMS["dense"]["kernel"], "b": jnp.zeros((20, 6))}
    grads = {"a": GRADS["dense"]["kernel"], "b": jax.random.normal(KEY, (20, 6))}
    muon = optax.contrib.scale_by_muon(beta=0.0, nesterov=False, weight_dimension_numbers=jax.tree.map(
        lambda _: optax.contrib.MuonDimensionNumbers(), params))
    ref, _ = muon.update(grads, muon.init(params))
    ours = _step(optim.scale_by_orthogonalization("newton_schulz", ns_steps=5), grads, params)
    for k, (d_in, d_out) in {"a": (8, 32), "b": (20, 6)}.items():
        np.testing.assert_allclose(ours[k], np.sqrt(d_out / d_in) * ref[k], atol=1e-5)


@pytest.mark.parametrize("norm", ["exact", "power", "krylov"])
def test_spectral_sign_update_has_target_spectral_norm(norm):
    u = _step(optim.scale_by_spectral_sign(norm=norm, power_iters=50 if norm == "power" else 8))
    S = np.sign(np.asarray(GRADS["dense"]["kernel"]))
    expected = np.sqrt(32 / 8) * S / np.linalg.norm(S, 2)
    np.testing.assert_allclose(u["dense"]["kernel"], expected, rtol=1e-5 if norm == "exact" else 1e-3)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(u["conv"]["kernel"]).reshape(36, 6), 2), np.sqrt(6 / 36), rtol=1e-3)
    # a user callable works too
    u2 = _step(optim.scale_by_spectral_sign(norm=lambda A: 2.0 * linalg.spectral_norm_exact(A)))
    np.testing.assert_allclose(u2["dense"]["kernel"], expected / 2, rtol=1e-5)


ALIASES = [
    lambda lr: optim.sign_descent(lr, momentum=0.9, weight_decay=0.01),
    lambda lr: optim.spectral_sign_descent(lr, norm="power"),
    lambda lr: optim.orthogonal_descent(lr, "svd", momentum=0.9, weight_decay=0.01),
    lambda lr: optim.orthogonal_descent(lr, "newton_schulz", momentum=0.5),
]


@pytest.mark.parametrize("make", ALIASES)
def test_alias_jit_schedule_and_chain(make):
    sched = optax.linear_schedule(0.1, 0.0, 2)
    tx = optax.chain(optax.clip_by_global_norm(10.0), make(sched))
    state = tx.init(PARAMS)
    update = jax.jit(tx.update)
    p = PARAMS
    sizes = []
    for _ in range(3):
        u, state = update(GRADS, state, p)
        p = optax.apply_updates(p, u)
        sizes.append(float(jnp.max(jnp.abs(u["dense"]["bias"]))))
    assert sizes[0] > sizes[1] > 0 and sizes[2] == 0.0  # schedule 0.1 → 0.05 → 0
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(p))


ZERO_MIXED = {  # one tree holding every dtype, so each transform compiles once
    f"{jnp.dtype(dt).name}_{k}": jnp.zeros(shape, dt)
    for dt in (jnp.float32, jnp.bfloat16, jnp.float16)
    for k, shape in {"kernel": (8, 32), "conv": (3, 3, 4, 6), "bias": (32,), "scalar": ()}.items()
}


@pytest.mark.parametrize("make", [optim.scale_by_sign, optim.scale_by_spectral_sign, optim.scale_by_orthogonalization,
                                  lambda: optim.scale_by_orthogonalization("newton_schulz", dual_norm_scale=True),
                                  lambda: optim.scale_by_spectral_sign("power")])
def test_zero_gradient_gives_zero_update(make):
    u = _step(make(), ZERO_MIXED, ZERO_MIXED)
    for name, leaf in u.items():
        assert leaf.dtype == ZERO_MIXED[name].dtype
        assert np.all(np.asarray(leaf, np.float32) == 0), name


def test_low_precision_nonzero_is_finite_and_close():
    g16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), GRADS)
    u16 = _step(optim.scale_by_orthogonalization(), g16, g16)
    u32 = _step(optim.scale_by_orthogonalization())
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=0.05), u16, u32)


@pytest.mark.parametrize("make", [optim.scale_by_sign, optim.scale_by_spectral_sign, optim.scale_by_orthogonalization])
@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_nonfinite_gradient_marks_only_its_leaf(make, bad):
    """A NaN/Inf gradient entry makes that leaf's update all-NaN (never a finite value such as
    sign(inf) = 1), leaves the other leaves untouched, and optax.apply_if_finite skips the step."""
    grads = jax.tree.map(lambda x: x, GRADS)
    grads["dense"]["kernel"] = grads["dense"]["kernel"].at[0, 0].set(bad)
    tx = make()
    u_bad, u_ok = _step(tx, grads), _step(tx)
    assert np.all(np.isnan(u_bad["dense"]["kernel"]))
    for path in (("dense", "bias"), ("conv", "kernel")):
        np.testing.assert_array_equal(u_bad[path[0]][path[1]], u_ok[path[0]][path[1]])
    safe = optax.apply_if_finite(optax.chain(tx, optax.scale(-0.1)), max_consecutive_errors=3)
    u, state = safe.update(grads, safe.init(PARAMS), PARAMS)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(u))
    assert int(state.notfinite_count) == 1


def test_rank_deficient_and_very_rectangular():
    params = {"tall": jnp.zeros((300, 2)), "wide": jnp.zeros((2, 300)), "low": jnp.zeros((6, 5))}
    rng = np.random.default_rng(0)
    grads = {"tall": jnp.asarray(rng.standard_normal((300, 2)), jnp.float32), "wide": jnp.asarray(rng.standard_normal((2, 300)), jnp.float32),
             "low": jnp.asarray(rng.standard_normal((6, 1)) @ rng.standard_normal((1, 5)), jnp.float32)}
    for tx in (optim.scale_by_orthogonalization(), optim.scale_by_orthogonalization("newton_schulz"), optim.scale_by_spectral_sign()):
        u = _step(tx, grads, params)
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(u))
    u = _step(optim.scale_by_orthogonalization(), grads, params)
    s = np.linalg.svd(u["low"], compute_uv=False)
    np.testing.assert_allclose(s, [np.sqrt(5 / 6), 0, 0, 0, 0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.svd(u["tall"], compute_uv=False), np.sqrt(2 / 300), rtol=1e-5)


def test_unsupported_rank_and_bad_hparams_raise():
    params = {"encoder": {"weird": jnp.zeros((2, 2, 2, 2, 2))}}
    for tx in (optim.scale_by_orthogonalization(), optim.scale_by_spectral_sign()):
        with pytest.raises(ValueError, match=r"\['encoder'\]\['weird'\].*rank 5"):
            tx.update(params, tx.init(params))
    with pytest.raises(TypeError, match=r"\['i'\].*floating"):
        optim.scale_by_orthogonalization().update({"i": jnp.zeros((2, 2), jnp.int32)}, optax.EmptyState())
    with pytest.raises(ValueError, match="method"):
        optim.orthogonal_descent(0.1, method="qr")
    with pytest.raises(ValueError, match="norm"):
        optim.spectral_sign_descent(0.1, norm="lanczos")
    with pytest.raises(ValueError, match="momentum"):
        optim.sign_descent(0.1, momentum=1.5)
    with pytest.raises(ValueError, match="weight_decay"):
        optim.sign_descent(0.1, weight_decay=-1.0)
    with pytest.raises(TypeError, match="learning_rate"):
        optim.sign_descent("fast")
    with pytest.raises(ValueError, match="learning_rate must be ≥ 0"):
        optim.sign_descent(jnp.array(-0.1))  # an array is checked like a float
    with pytest.raises(ValueError, match="ns_steps"):
        optim.orthogonal_descent(0.1, "newton_schulz", ns_steps=0)  # at construction, not at the first update


@pytest.mark.parametrize("name", ["sign_descent", "spectral_sign_descent", "orthogonal_descent"])
def test_inject_hyperparams_under_jit_matches_fixed_hyperparameters(name):
    """optax.inject_hyperparams passes every numeric hyperparameter as a traced array under jit:
    the aliases must accept that (checks only concrete values) and give the same updates."""
    make = getattr(optim, name)
    fixed = make(0.05, momentum=0.9, weight_decay=0.01)
    static = ("ns_steps",) if name == "orthogonal_descent" else ()  # an iteration count shapes the program
    injected = optax.inject_hyperparams(make, static_args=static)(learning_rate=0.05, momentum=0.9, weight_decay=0.01)
    state_f, state_i = fixed.init(PARAMS), injected.init(PARAMS)
    update_f, update_i = jax.jit(fixed.update), jax.jit(injected.update)
    for _ in range(2):
        u_f, state_f = update_f(GRADS, state_f, PARAMS)
        u_i, state_i = update_i(GRADS, state_i, PARAMS)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), u_f, u_i)
    state_i.hyperparams["learning_rate"] = jnp.asarray(0.0)  # the point of injecting: change it live
    u0, _ = update_i(GRADS, state_i, PARAMS)
    assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree.leaves(u0))
    defaults = optax.inject_hyperparams(make, static_args=static)(learning_rate=0.05)  # weight decay left at 0
    u_d, _ = jax.jit(defaults.update)(GRADS, defaults.init(PARAMS), PARAMS)
    u_plain, _ = jax.jit(make(0.05).update)(GRADS, make(0.05).init(PARAMS), PARAMS)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), u_d, u_plain)
    if static:  # forgetting static_args gets a message that says what to do
        bad = optax.inject_hyperparams(make)(learning_rate=0.05)
        with pytest.raises(TypeError, match=r"static_args=\('ns_steps',\)"):
            jax.jit(bad.update)(GRADS, bad.init(PARAMS), PARAMS)


def test_weight_decay_step_is_0999_scaling():
    """Q11 through the optimizer: zero gradient, η·wd = 0.001 gives W → 0.999 W."""
    W = {"w": PARAMS["dense"]["kernel"], "b": PARAMS["dense"]["bias"]}
    tx = optim.orthogonal_descent(0.1, weight_decay=0.01)
    u, _ = tx.update(jax.tree.map(jnp.zeros_like, W), tx.init(W), W)
    new = optax.apply_updates(W, u)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, 0.999 * b, rtol=1e-6), new, W)
