"""jaxhw.spectral: Haar sampling, spectral-norm estimators and the power-law fit (Q6–Q8).

References are independent of the code under test: numpy/LAPACK float64 norms, scipy's
linregress, closed-form spectra built from known singular values.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxhw import spectral
from jaxhw.linalg import spectral_norm_exact

RTOL_ROUND = 1e-5  # float32 rounding allowance for "never exceeds the true norm"


def _true_norm(A) -> float:
    return float(np.linalg.norm(np.asarray(A, np.float64), 2))


def _assert_monotone_underestimate(hist, truth):
    """Every estimate ≤ truth (up to rounding), and non-decreasing in the iteration count."""
    assert np.all(hist <= truth * (1 + RTOL_ROUND))
    assert np.all(np.diff(hist) >= -RTOL_ROUND * truth)


def _gaussian_trials(shape, n):
    """(A, ‖A‖_* in float64, start key) for n Gaussian matrices of the given shape."""
    for seed in range(n):
        A = jax.random.normal(jax.random.key(seed), shape)
        yield A, _true_norm(A), jax.random.key(100 + seed)


def _matrix_with_spectrum(key, n, m, s):
    """A = U diag(s) Vᵀ with Haar U, V: a matrix whose singular values we know exactly."""
    ku, kv = jax.random.split(key)
    U = spectral.haar_orthogonal(ku, n)[:, : len(s)]
    V = spectral.haar_orthogonal(kv, m)[:, : len(s)]
    return (U * jnp.asarray(s, jnp.float32)) @ V.T


# ---------------------------------------------------------------------------- Haar / Q7


@pytest.mark.parametrize("d", [1, 7, 64])
def test_haar_orthogonal_is_orthogonal_with_unit_norm(d):
    Q = np.asarray(spectral.haar_orthogonal(jax.random.key(d), d), np.float64)
    np.testing.assert_allclose(Q.T @ Q, np.eye(d), atol=2e-5)
    sv = np.linalg.svd(Q, compute_uv=False)
    np.testing.assert_allclose(sv, 1.0, atol=2e-5)
    np.testing.assert_allclose(float(spectral_norm_exact(jnp.asarray(Q, jnp.float32))), 1.0, atol=2e-5)


def test_haar_sign_fix_makes_entries_symmetric():
    # Haar measure is invariant under Q → -Q column flips, so E[Q_11] = 0 and E[Q_11²] = 1/d.
    # Plain Householder QR fixes the sign of diag(R), which would make Q_11 one-signed.
    d, n = 3, 400
    q11 = np.array([float(spectral.haar_orthogonal(jax.random.key(i), d)[0, 0]) for i in range(n)])
    assert abs(q11.mean()) < 4 * np.sqrt(1 / d / n)
    assert abs((q11**2).mean() - 1 / d) < 0.06
    assert (q11 > 0).mean() == pytest.approx(0.5, abs=0.1)


# ---------------------------------------------------------------------------- power iteration / Q8


@pytest.mark.parametrize("shape", [(120, 120), (80, 150)])
def test_power_iteration_never_overestimates(shape):
    for A, truth, key in _gaussian_trials(shape, 4):
        res = spectral.power_iteration(A, key, num_iters=10)
        hist = np.asarray(res.history)
        assert hist.shape == (11,)
        assert hist[-1] == pytest.approx(float(res.estimate))
        # ‖Bu_k‖/‖u_k‖ = sqrt(m_{2k+2}/m_{2k}) with log-convex moments m_j: non-decreasing in k.
        _assert_monotone_underestimate(hist, truth)


def test_power_iteration_converges_with_a_gap():
    # σ = (2, 1, 0.5, …): error after k products decays like (σ₂/σ₁)^{4k} = 16^{-k}.
    s = [2.0, 1.0] + [0.5] * 30
    A = _matrix_with_spectrum(jax.random.key(0), 100, 90, s)
    res = spectral.power_iteration(A, jax.random.key(1), num_iters=10)
    assert float(res.estimate) == pytest.approx(_true_norm(A), rel=1e-5)
    np.testing.assert_allclose(_true_norm(A), 2.0, rtol=1e-5)


def test_power_iteration_matches_pseudocode_literally():
    # Unnormalised (AAᵀ)^10 v in float64, then sqrt(‖AAᵀu‖/‖u‖): the problem set's three lines.
    A = jax.random.normal(jax.random.key(3), (40, 30)) / 8.0
    key = jax.random.key(4)
    v = np.asarray(jax.random.normal(key, (40,)), np.float64)
    B = np.asarray(A, np.float64) @ np.asarray(A, np.float64).T
    u = np.linalg.matrix_power(B, 10) @ v
    expected = np.sqrt(np.linalg.norm(B @ u) / np.linalg.norm(u))
    assert float(spectral.power_iteration(A, key, 10).estimate) == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------- Krylov


@pytest.mark.parametrize("shape", [(200, 200), (90, 150)])
def test_golub_kahan_never_overestimates_and_reaches_target(shape):
    for A, truth, key in _gaussian_trials(shape, 3):
        res = spectral.golub_kahan(A, key, num_steps=40)
        hist = np.asarray(res.history)
        # Ritz values of nested Krylov spaces interlace: the estimate never decreases.
        _assert_monotone_underestimate(hist, truth)
        assert abs(hist[-1] - truth) / truth < 1e-3
        lean = spectral.golub_kahan(A, key, num_steps=40, with_history=False)
        assert float(lean.estimate) == pytest.approx(hist[-1], rel=1e-6)


def test_golub_kahan_beats_power_iteration_for_equal_products():
    # 22 products with A or Aᵀ each: power iteration (10 iterations) vs 11 Golub–Kahan steps.
    A = jax.random.normal(jax.random.key(7), (120, 120))
    truth = _true_norm(A)
    err_pi = truth - float(spectral.power_iteration(A, jax.random.key(8), 10).estimate)
    err_gk = truth - float(spectral.golub_kahan(A, jax.random.key(8), 11).estimate)
    assert 0 <= err_gk < err_pi / 2


def test_golub_kahan_converges_with_a_gap_and_handles_low_rank():
    A = _matrix_with_spectrum(jax.random.key(9), 100, 90, [3.0, 1.0, 0.9, 0.5])
    res = spectral.golub_kahan(A, jax.random.key(10), num_steps=6)
    assert float(res.estimate) == pytest.approx(3.0, rel=1e-5)
    assert np.all(np.isfinite(np.asarray(res.history)))  # the Krylov space is exhausted at rank 4
    a, b = jnp.arange(1.0, 11.0), jnp.ones(5)
    rank1 = jnp.outer(a, b)
    r1 = spectral.golub_kahan(rank1, jax.random.key(0), num_steps=4)
    assert float(r1.estimate) == pytest.approx(float(jnp.linalg.norm(a) * jnp.linalg.norm(b)), rel=1e-5)


def test_estimators_reject_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        spectral.power_iteration(jnp.ones(5), jax.random.key(0))
    with pytest.raises(TypeError, match="floating"):
        spectral.power_iteration(jnp.ones((3, 3), jnp.int32), jax.random.key(0))
    with pytest.raises(ValueError, match="num_iters"):
        spectral.power_iteration(jnp.ones((3, 3)), jax.random.key(0), num_iters=-1)
    with pytest.raises(ValueError, match="num_steps"):
        spectral.golub_kahan(jnp.ones((3, 4)), jax.random.key(0), num_steps=4)
    with pytest.raises(ValueError, match="d must be"):
        spectral.haar_orthogonal(jax.random.key(0), 0)


# ---------------------------------------------------------------------------- power-law fit / Q6


def test_fit_power_law_matches_scipy_linregress():
    rng = np.random.default_rng(0)
    d = np.repeat(2.0 ** np.arange(3, 11), 4)
    y = 2.0 * d**0.5 * np.exp(0.03 * rng.standard_normal(d.size))
    fit = spectral.fit_power_law(d, y)
    ref = stats.linregress(np.log(d), np.log(y))
    assert fit.beta == pytest.approx(ref.slope, rel=1e-10)
    assert np.log(fit.alpha) == pytest.approx(ref.intercept, rel=1e-10)
    t = stats.t.ppf(0.975, d.size - 2)
    assert fit.beta_ci[1] - fit.beta == pytest.approx(t * ref.stderr, rel=1e-8)
    assert np.log(fit.alpha_ci[1]) - np.log(fit.alpha) == pytest.approx(t * ref.intercept_stderr, rel=1e-8)
    assert fit.beta_ci[0] < 0.5 < fit.beta_ci[1] and fit.alpha_ci[0] < 2.0 < fit.alpha_ci[1]
    lo, hi = fit.band(d)
    assert np.all(lo < fit.predict(d)) and np.all(fit.predict(d) < hi)


def test_fit_power_law_exact_data_and_errors():
    d = np.array([4.0, 16.0, 64.0, 256.0])
    fit = spectral.fit_power_law(d, 3.0 * d**0.25)
    assert fit.alpha == pytest.approx(3.0) and fit.beta == pytest.approx(0.25)
    with pytest.raises(ValueError, match="positive"):
        spectral.fit_power_law(np.array([1.0, 2.0, 3.0]), np.array([1.0, -1.0, 2.0]))
    with pytest.raises(ValueError, match="at least 3"):
        spectral.fit_power_law(np.array([1.0, 2.0]), np.array([1.0, 2.0]))


def test_bias_direction():
    assert spectral.bias_direction([0.9, 0.99, 1.0], 1.0) == "under"
    assert spectral.bias_direction([1.1, 1.0], 1.0) == "over"
    assert spectral.bias_direction([1.0, 1.0 + 1e-7], 1.0) == "exact"
    assert spectral.bias_direction([0.9, 1.1], 1.0) == "mixed"
    with pytest.raises(ValueError):
        spectral.bias_direction([np.nan], 1.0)


def test_time_warm_blocks_and_is_positive():
    t = spectral.time_warm(spectral_norm_exact, jnp.eye(8), repeats=2)
    assert t > 0
