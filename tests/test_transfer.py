"""jaxhw.transfer: the width sweep of Q9–Q10 — initializer and update norms at several widths, the
vmapped η-grid trainer against a plain optax loop, grid extension and the transfer verdict."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhw import transfer
from jaxhw.data import CIFAR_MEAN, CIFAR_STD, load_cifar100_sample

WIDTHS = (16, 64, 256)  # 16× range, as in the experiment
D_IN = 192  # committed CIFAR sample pooled 4×4 → 8×8×3 (the experiment pools 2×2: 768)


def _sigma(M) -> np.ndarray:
    return np.linalg.svd(np.asarray(M, np.float64), compute_uv=False)


def _kernels(params):
    return [p for p in jax.tree.leaves(params)]


@pytest.fixture(scope="module")
def real_grads():
    """Gradients of the sweep's MLP on real CIFAR images, at every width (realistic structure)."""
    sample = load_cifar100_sample()
    x = jnp.asarray(transfer.flatten_images(sample.x_train[:64], pool=4))
    y = jnp.asarray(sample.y_train[:64])
    out = {}
    for w in WIDTHS:
        model = transfer.make_model(w, 3, 100, "spectral_sign")
        params = model.init(jax.random.key(w), x[:1])["params"]
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean()
        out[w] = (params, jax.grad(loss)(params))
    return out


def test_semi_orthogonal_init_has_spectral_norm_sqrt_ratio(real_grads):
    for w in WIDTHS:
        params, _ = real_grads[w]
        kernels = _kernels(params)
        assert [k.shape for k in kernels] == [(D_IN, w), (w, w), (w, 100)]
        for k in kernels:
            d_in, d_out = k.shape
            s = _sigma(k)
            np.testing.assert_allclose(s, math.sqrt(d_out / d_in), rtol=1e-4)  # every σ, not only σ₁


def test_standard_init_is_not_width_normalised():
    # LeCun-normal kernels (entries of variance 1/d_in) have ‖W‖_* ≈ (√d_in + √d_out)/√d_in (Q6's
    # Gaussian law), so their gain relative to √(d_out/d_in) changes with width — unlike above.
    x = jnp.ones((1, D_IN))
    gains = []
    for w in (16, 256):
        params = transfer.make_model(w, 3, 100, "sign").init(jax.random.key(0), x)["params"]
        for k in _kernels(params):
            d_in, d_out = k.shape
            assert _sigma(k)[0] == pytest.approx((math.sqrt(d_in) + math.sqrt(d_out)) / math.sqrt(d_in), rel=0.15)
        gains.append([_sigma(k)[0] / math.sqrt(k.shape[1] / k.shape[0]) for k in _kernels(params)])
    assert max(gains[1][2] / gains[0][2], gains[0][2] / gains[1][2]) > 1.5  # the head's gain drifts


def _update(name, grads, lr=1.0, **kw):
    tx = transfer.make_optimizer(name, lr, **kw)
    return tx.update(grads, tx.init(grads))[0]


def _updates_at_every_width(real_grads, name, eta, **kw):
    """(update, gradient, intended spectral norm η√(d_out/d_in)) for every kernel at every width."""
    for w in WIDTHS:
        _, grads = real_grads[w]
        for u, g in zip(_kernels(_update(name, grads, eta, **kw)), _kernels(grads)):
            d_in, d_out = g.shape
            yield u, g, eta * math.sqrt(d_out / d_in)


def test_spectral_sign_update_has_intended_norm_at_every_width(real_grads):
    # The experiment's setting: ‖sign G‖_* from 8 Golub–Kahan steps. The estimate never exceeds
    # ‖sign G‖_*, so the step is never smaller than intended, and on real gradients it is within 1%.
    for u, g, target in _updates_at_every_width(real_grads, "spectral_sign", 0.25, norm="krylov"):
        assert target * (1 - 1e-5) <= _sigma(u)[0] <= target * 1.01
        np.testing.assert_array_equal(np.sign(np.asarray(u)), -np.sign(np.asarray(g)))


@pytest.mark.parametrize("method", ["svd", "newton_schulz"])
def test_orthogonal_update_has_intended_norm_at_every_width(real_grads, method):
    from jaxhw.linalg import NS_SINGULAR_VALUE_BAND

    for u, g, target in _updates_at_every_width(real_grads, "orthogonal", 0.5, ortho_method=method):
        s = _sigma(u)
        rank = int(np.sum(_sigma(g) > 1e-5 * _sigma(g)[0]))
        if method == "svd":
            np.testing.assert_allclose(s[:rank], target, rtol=1e-4)
        else:
            lo, hi = NS_SINGULAR_VALUE_BAND
            assert lo * target <= s[0] <= hi * target
        assert float(jnp.sum(u * g)) < 0  # a descent direction


def test_sign_update_norm_grows_with_width(real_grads):
    # (a): the RMS→RMS size √(d_in/d_out)·‖η sign(G)‖_* of the hidden layer's step grows with width,
    # which is why its best η drifts.
    sizes = []
    for w in (16, 256):
        _, grads = real_grads[w]
        hidden = _kernels(_update("sign", grads))[1]
        sizes.append(_sigma(hidden)[0])
    assert sizes[1] / sizes[0] > 4


@pytest.mark.parametrize("name", transfer.OPTIMIZERS)
def test_updates_are_linear_in_eta(real_grads, name):
    _, grads = real_grads[16]
    u1 = _update(name, grads, 1.0)
    u3 = _update(name, grads, 0.125)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(0.125 * np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9), u1, u3)


def test_train_lr_grid_matches_plain_optax_loop():
    rng = np.random.default_rng(1)
    n, d, b, steps = 1000, 12, 16, 6
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, 5, n)
    data = dict(x_train=x, y_train=y, x_fit=x[:1000], y_fit=y[:1000], x_val=x[:1000], y_val=y[:1000])
    etas = [0.01, 0.1]
    for name in ("orthogonal",):  # stateless chain + matrix rule: the most involved path
        model = transfer.make_model(8, 2, 5, name)
        run = transfer.train_lr_grid(model, transfer.make_optimizer(name, 1.0, ortho_method="svd"), etas, data,
                                     steps=steps, batch_size=b, seed=3, eval_chunk=500)
        key_init, key_data = jax.random.split(jax.random.PRNGKey(3))
        for j, eta in enumerate(etas):
            params = model.init(key_init, jnp.asarray(x[:1]))["params"]
            tx = transfer.make_optimizer(name, eta, ortho_method="svd")
            state = tx.init(params)
            loss = lambda p, xb, yb: optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, xb), yb).mean()
            curve = []
            for t in range(steps):
                idx = np.asarray(jax.random.randint(jax.random.fold_in(key_data, t), (b,), 0, n))
                val, g = jax.value_and_grad(loss)(params, jnp.asarray(x[idx]), jnp.asarray(y[idx]))
                upd, state = tx.update(g, state, params)
                params = optax.apply_updates(params, upd)
                curve.append(float(val))
            np.testing.assert_allclose(run.train_curve[j], curve, rtol=1e-4)
            assert run.train_loss[j] == pytest.approx(float(loss(params, jnp.asarray(x), jnp.asarray(y))), rel=1e-4)


def _fake_runner(center, calls, nan_above=None):
    def run_grid(ks):
        calls.append(list(ks))
        ks = np.asarray(ks, float)
        loss = 3.0 + 0.1 * (ks - center) ** 2
        if nan_above is not None:
            loss = np.where(ks > nan_above, np.nan, loss)
        z = np.zeros(len(ks))
        return transfer.GridRun(2.0**ks, loss, loss, z, np.zeros((len(ks), 2)), 0.0)

    return run_grid


def test_sweep_extends_until_best_is_interior():
    calls = []
    s = transfer.sweep(_fake_runner(5, calls), [0, 1, 2], extend_by=2)
    assert s.best_log2 == 5 and s.interior
    assert s.log2_etas == list(range(0, 7)) and calls == [[0, 1, 2], [3, 4], [5, 6]]
    assert s.spread() == pytest.approx(0.1 * 25)
    calls = []
    s = transfer.sweep(_fake_runner(-4, calls), [0, 1, 2], extend_by=2, max_extensions=1)
    assert not s.interior and s.log2_etas == [-2, -1, 0, 1, 2]
    # an existing sweep is only topped up with the missing points
    calls = []
    s2 = transfer.sweep(_fake_runner(1, calls), [0, 1, 2, 3], existing=transfer.sweep(_fake_runner(1, []), [0, 1, 2]))
    assert calls == [[3]] and s2.best_log2 == 1


def test_diverged_runs_count_as_worst():
    assert transfer.best_index([np.nan, 3.0, 2.0, np.inf]) == 2
    assert transfer.is_interior([4.0, 2.0, np.nan])
    s = transfer.sweep(_fake_runner(3, [], nan_above=3), [0, 1, 2, 3, 4, 5])
    assert s.best_log2 == 3 and s.interior
    with pytest.raises(ValueError, match="diverged"):
        transfer.best_index([np.nan, np.inf])


def test_transfer_verdict_and_success_rule():
    v = transfer.transfer_verdict(-3, -2, 3.70, 3.60)
    assert v.shift == 1 and v.transfers and v.loss_gap == pytest.approx(0.10) and v.rel_gap == pytest.approx(0.10 / 3.6)
    assert transfer.transfer_verdict(-3, -4, 1.0, 1.0).transfers
    assert not transfer.transfer_verdict(-8, -10, 4.0, 3.6).transfers
    assert not transfer.transfer_verdict(-3, -2, 1, 1, tol_steps=0).transfers
    ok, drift = transfer.transfer_verdict(0, 1, 1, 1), transfer.transfer_verdict(-8, -10, 1, 1)
    assert transfer.experiment_succeeds({"sign": drift, "spectral_sign": ok, "orthogonal": ok})
    assert not transfer.experiment_succeeds({"sign": ok, "spectral_sign": ok, "orthogonal": ok})
    assert not transfer.experiment_succeeds({"sign": drift, "spectral_sign": drift, "orthogonal": ok})
    edge = transfer.transfer_verdict(0, 0, 1, 1, both_interior=False)
    assert not transfer.experiment_succeeds({"sign": drift, "spectral_sign": edge, "orthogonal": ok})
    with pytest.raises(ValueError, match="missing"):
        transfer.experiment_succeeds({"sign": drift})


def test_flatten_images_against_manual_pooling():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    z = (x / 255.0 - CIFAR_MEAN) / CIFAR_STD
    manual = np.array([[z[i, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2, ch].mean() for r in range(2) for c in range(2) for ch in range(3)]
                       for i in range(2)])
    np.testing.assert_allclose(transfer.flatten_images(x, pool=2), manual, rtol=1e-5)
    assert transfer.flatten_images(x).shape == (2, 48)
    with pytest.raises(ValueError, match="uint8"):
        transfer.flatten_images(x.astype(np.float32))
    with pytest.raises(ValueError, match="pool"):
        transfer.flatten_images(x, pool=3)
    with pytest.raises(ValueError, match="optimizer name"):
        transfer.make_optimizer("adam", 0.1)


def test_better_optimizer_and_budget_rules():
    assert transfer.better_optimizer({"sign": 3.6, "spectral_sign": 3.5, "orthogonal": 3.2}) == ("orthogonal", True)
    assert transfer.better_optimizer({"sign": 3.6, "orthogonal": 3.595}, tol=0.01) == ("orthogonal", False)
    assert transfer.better_optimizer({"sign": float("nan"), "orthogonal": 4.0}) == ("orthogonal", True)
    assert transfer.budget_separates([0.5, 0.2]) and not transfer.budget_separates([0.5, 0.05])
    assert not transfer.budget_separates([float("nan")])
    with pytest.raises(ValueError):
        transfer.better_optimizer({})


def test_refine_log2_optimum_recovers_parabola_vertex():
    ks = np.arange(-6, 0)
    loss = 3.0 + 0.2 * (ks + 2.7) ** 2
    assert transfer.refine_log2_optimum(ks, loss) == pytest.approx(-2.7)
    assert transfer.refine_log2_optimum(ks, -ks.astype(float)) == -1  # edge: the grid point itself
    assert transfer.refine_log2_optimum([0, 1, 2], [1.0, 0.5, np.nan]) == 1


def test_orthogonal_step_is_steeper_than_normalised_sign(real_grads):
    # Q10: at equal spectral norm η√(d_out/d_in), −UVᵀ maximises the first-order decrease ⟨G, −ΔW⟩
    # (it equals η√(d_out/d_in)·tr Σ); the normalised sign step decreases the loss less.
    _, grads = real_grads[64]
    ub = _kernels(_update("spectral_sign", grads, 0.1, norm="exact"))
    uc = _kernels(_update("orthogonal", grads, 0.1, ortho_method="svd"))
    for b, c, g in zip(ub, uc, _kernels(grads)):
        d_in, d_out = g.shape
        nuclear = float(np.sum(_sigma(g)))
        dec_b, dec_c = -float(jnp.sum(g * b)), -float(jnp.sum(g * c))
        assert dec_c == pytest.approx(0.1 * math.sqrt(d_out / d_in) * nuclear, rel=1e-3)
        assert 0 < dec_b < dec_c
