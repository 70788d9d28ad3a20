"""jaxhw.norms: dual norms and steepest steps vs scipy references, Hölder, Q4(a), Q5."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw import linalg, norms

RNG = np.random.default_rng(0)
f32 = lambda a: jnp.asarray(a, jnp.float32)


@pytest.mark.parametrize(
    "norm, kind, p",
    [(norms.L2, "lp", 2.0), (norms.LINF, "linf", 2.0), (norms.L1, "l1", 2.0), (norms.lp(3), "lp", 3.0), (norms.lp(1.5), "lp", 1.5)],
)
def test_vector_dual_norm_equals_numerical_maximum(norm, kind, p):
    for a in RNG.standard_normal((3, 5)):
        np.testing.assert_allclose(float(norm.dual(f32(a))), norms.reference_dual_norm(a, kind, p), rtol=1e-5)


@pytest.mark.parametrize("norm, kind", [(norms.SPECTRAL, "spectral"), (norms.NUCLEAR, "nuclear")])
def test_matrix_dual_norm_equals_numerical_maximum(norm, kind):
    for shape in [(3, 2), (2, 3)]:
        a = RNG.standard_normal(shape)
        np.testing.assert_allclose(float(norm.dual(f32(a))), norms.reference_dual_norm(a, kind), rtol=1e-5)


ALL_NORMS = [norms.L1, norms.L2, norms.LINF, norms.lp(3), norms.lp(1.3), norms.SPECTRAL, norms.NUCLEAR, norms.FROBENIUS, norms.schatten(3)]


@pytest.mark.parametrize("norm", ALL_NORMS, ids=lambda n: n.name)
def test_holder_and_argmax_attains_dual(norm):
    """⟨a,b⟩ ≤ ‖a‖†‖b‖ on random pairs; dual_argmax has norm 1 and attains ‖a‖†."""
    A, B = f32(RNG.standard_normal((2, 200, 4, 3)))
    inner = jnp.sum(A * B, axis=(1, 2))
    bound = jax.vmap(norm.dual)(A) * jax.vmap(norm.norm)(B)
    assert float(jnp.max(inner - bound)) <= 1e-5
    for a in A[:5]:
        t = norm.dual_argmax(a)
        np.testing.assert_allclose(float(norm.norm(t)), 1.0, rtol=1e-5)
        np.testing.assert_allclose(float(norms.inner(a, t)), float(norm.dual(a)), rtol=1e-5)
    # The dual of the dual is the norm again (ℓp↔ℓq, Schatten-p↔Schatten-q).
    assert np.isclose(1 / norms.dual_exponent(3.0) + 1 / 3.0, 1.0)


@pytest.mark.parametrize(
    "norm, kind, p, shape",
    [(norms.L2, "l2", 2.0, (5,)), (norms.LINF, "linf", 2.0, (5,)), (norms.L1, "l1", 2.0, (5,)),
     (norms.lp(3), "lp", 3.0, (5,)), (norms.SPECTRAL, "spectral", 2.0, (3, 2))],
    ids=["l2", "linf", "l1", "l3", "spectral"],
)
def test_step_attains_numerical_minimum_and_beats_perturbations(norm, kind, p, shape):
    for _ in range(2):
        g, lam = RNG.standard_normal(shape), float(RNG.uniform(0.3, 3.0))
        step = norms.steepest_descent_step(f32(g), lam, norm)
        ref = norms.reference_steepest_step(g, lam, kind, p)
        obj = jax.jit(jax.vmap(lambda d: norms.steepest_descent_objective(f32(g), d, lam, norm)))
        f_step, f_ref = obj(jnp.stack([step, f32(ref)]))
        assert abs(float(f_step - f_ref)) <= 1e-5 * max(1.0, abs(float(f_ref)))
        np.testing.assert_allclose(f_step, -float(norm.dual(f32(g))) ** 2 / (2 * lam), rtol=1e-5)
        pert = obj(step + f32(1e-2 * RNG.standard_normal((200,) + shape)))
        assert float(jnp.min(pert)) >= float(f_step) - 1e-6
        tol = 2e-2 if kind == "spectral" else 1e-3  # the spectral SLSQP solution is less accurate
        np.testing.assert_allclose(step, ref, atol=tol)


def test_closed_forms_equal_generic_solver():
    for shape in [(4, 3), (3, 5)]:
        g, lam = f32(RNG.standard_normal(shape)), 0.7
        np.testing.assert_allclose(norms.l2_step(g, lam), norms.steepest_descent_step(g, lam, norms.L2), atol=1e-6)
        np.testing.assert_allclose(norms.linf_step(g, lam), norms.steepest_descent_step(g, lam, norms.LINF), atol=1e-5)
        np.testing.assert_allclose(norms.spectral_step(g, lam), norms.steepest_descent_step(g, lam, norms.SPECTRAL), atol=1e-5)
        # spectral closed form against numpy's SVD: −(tr Σ/λ) U Vᵀ
        U, s, Vt = np.linalg.svd(np.asarray(g, np.float64), full_matrices=False)
        np.testing.assert_allclose(norms.spectral_step(g, lam), -(s.sum() / lam) * U @ Vt, atol=1e-5)
    # ℓ2 is −g/λ exactly; ℓ∞ moves every coordinate by ‖g‖₁/λ
    g = f32([3.0, -1.0, 0.5])
    np.testing.assert_allclose(norms.linf_step(g, 2.0), [-2.25, 2.25, -2.25])
    np.testing.assert_allclose(norms.l2_step(g, 2.0), [-1.5, 0.5, -0.25])


def _weighted_l1(w):
    """A user-defined norm outside the library: ‖x‖ = Σ w_i |x_i|, dual max |g_i|/w_i."""
    w = f32(w)

    def argmax(g):
        r = jnp.abs(g) / w
        i = jnp.argmax(r)
        return jnp.zeros_like(g).at[i].set(jnp.sign(g[i]) / w[i])

    return norms.Norm("weighted ℓ1", lambda x: jnp.sum(w * jnp.abs(x)), lambda g: jnp.max(jnp.abs(g) / w), argmax)


def test_generic_step_on_user_defined_norm():
    from scipy import optimize

    w = np.array([0.5, 1.0, 2.0, 3.0])
    norm = _weighted_l1(w)
    for _ in range(3):
        g, lam = RNG.standard_normal(4), float(RNG.uniform(0.5, 2.0))
        step = np.asarray(norms.steepest_descent_step(f32(g), lam, norm))
        # independent: Δ = Δ⁺ − Δ⁻ ≥ 0 parts, epigraph Σ w (Δ⁺ + Δ⁻) ≤ s, SLSQP
        n = 4
        fun = lambda x: g @ (x[:n] - x[n:2 * n]) + 0.5 * lam * x[-1] ** 2
        cons = {"type": "ineq", "fun": lambda x: np.array([x[-1] - np.sum(np.tile(w, 2) * x[:2 * n])])}
        res = optimize.minimize(fun, np.zeros(2 * n + 1), constraints=[cons], bounds=[(0, None)] * (2 * n + 1),
                                method="SLSQP", options={"ftol": 1e-15, "maxiter": 1000})
        np.testing.assert_allclose(step, res.x[:n] - res.x[n:2 * n], atol=1e-4)
        np.testing.assert_allclose(float(norms.steepest_descent_objective(f32(g), f32(step), lam, norm)), res.fun, rtol=1e-5)


def test_q4a_inequality_and_equality_at_polar_factor():
    G = f32(RNG.standard_normal((4, 3)))
    trace_sigma = float(linalg.nuclear_norm(G))
    T = jax.random.normal(jax.random.PRNGKey(0), (5000, 4, 3))
    T = T / jax.vmap(linalg.spectral_norm_exact)(T)[:, None, None]
    assert float(jnp.max(jnp.einsum("ij,kij->k", G, T))) <= trace_sigma + 1e-5
    # random semi-orthogonal T are extreme points; still never above tr Σ
    Q = jax.vmap(lambda k: linalg.semi_orthogonal(k, (4, 3)))(jax.random.split(jax.random.PRNGKey(1), 2000))
    assert float(jnp.max(jnp.einsum("ij,kij->k", G, Q))) <= trace_sigma + 1e-5
    np.testing.assert_allclose(float(norms.inner(G, linalg.orthogonalize(G))), trace_sigma, rtol=1e-6)


def test_zero_gradient_and_rank_deficient_steps_are_finite():
    for norm in ALL_NORMS:
        z = jnp.zeros((3, 2))
        assert np.all(np.asarray(norms.steepest_descent_step(z, 1.0, norm)) == 0), norm.name
    G = f32(RNG.standard_normal((5, 1)) @ RNG.standard_normal((1, 4)))
    s = np.linalg.svd(norms.spectral_step(G, 2.0), compute_uv=False)
    np.testing.assert_allclose(s[0], np.linalg.svd(G, compute_uv=False).sum() / 2.0, rtol=1e-5)
    np.testing.assert_allclose(s[1:], 0.0, atol=1e-5)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="λ"):
        norms.l2_step(jnp.ones(3), 0.0)
    with pytest.raises(ValueError, match="p must"):
        norms.lp(0.5)
    with pytest.raises(ValueError, match="matrix"):
        norms.SPECTRAL.norm(jnp.ones(3))
    with pytest.raises(ValueError, match="kind"):
        norms.reference_dual_norm(np.ones(3), "l7")


def test_q5_gradient_and_bound():
    d_in, d_out, n = 6, 3, 8
    grad = jax.jit(jax.grad(norms.square_loss))
    for i in range(200):
        k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(i), 4)
        X = norms.normalized_inputs(k1, n, d_in)
        Y, W = jax.random.normal(k2, (n, d_out)), jax.random.normal(k3, (d_out, d_in))
        D = jax.random.normal(k4, (d_out, d_in)) * 10.0 ** (i % 5 - 3)
        G, lam = norms.square_loss_bound(W, X, Y)
        assert lam == d_in / d_out
        if i < 5:
            np.testing.assert_allclose(G, grad(W, X, Y), atol=1e-6)
        bound = norms.square_loss(W, X, Y) + norms.inner(G, D) + lam / 2 * linalg.spectral_norm_exact(D) ** 2
        assert float(norms.square_loss(W + D, X, Y)) <= float(bound) * (1 + 1e-5) + 1e-7


def test_q5_lambda_is_tight():
    """All inputs along the top right-singular vector of ΔW: the bound holds with equality,
    so any smaller λ would fail."""
    d_in, d_out, n = 5, 4, 3
    rng = np.random.default_rng(1)
    v = rng.standard_normal(d_in); v /= np.linalg.norm(v)
    u = rng.standard_normal(d_out); u /= np.linalg.norm(u)
    X = f32(np.outer(rng.choice([-1.0, 1.0], n), v) * math.sqrt(d_in))
    Y, W = f32(rng.standard_normal((n, d_out))), f32(rng.standard_normal((d_out, d_in)))
    D = f32(0.7 * np.outer(u, v))
    G, lam = norms.square_loss_bound(W, X, Y)
    bound = norms.square_loss(W, X, Y) + norms.inner(G, D) + lam / 2 * linalg.spectral_norm_exact(D) ** 2
    np.testing.assert_allclose(float(norms.square_loss(W + D, X, Y)), float(bound), rtol=1e-5)
    with pytest.raises(ValueError, match="W must have shape"):
        norms.square_loss_bound(W.T, X, Y)


def test_check_passed_verdict():
    assert norms.check_passed(1e-7, 1e-5)
    assert not norms.check_passed(1e-3, 1e-5)
    assert not norms.check_passed(float("nan"), 1e-5)
