"""Norms, dual norms and steepest-descent steps (Q1–Q5).

The problem set's steepest descent (Eq. 1/4) is

    argmin_Δ ⟨g, Δ⟩ + λ/2 ‖Δ‖²  =  −(‖g‖† / λ) · argmax_{‖t‖=1} ⟨g, t⟩          (Eq. 3/5)

with the dual norm ‖a‖† = max_{‖b‖=1} ⟨a, b⟩ (Eq. 2; ⟨A, B⟩ = tr(AᵀB) for matrices). A norm is
therefore described by three functions, bundled in :class:`Norm`; ``steepest_descent_step``
solves Eq. (3)/(5) for any such bundle, including one a user writes for a new norm.

Built in: vector ℓp norms (1 ≤ p ≤ ∞, applied to all entries of the array; dual ℓq with
1/p + 1/q = 1) and matrix Schatten-p norms (ℓp of the singular values; spectral = Schatten-∞,
Frobenius = Schatten-2, nuclear = Schatten-1; dual Schatten-q). ``dual_argmax(0)`` returns 0
(any unit vector is a maximiser; the step is 0 anyway because ‖0‖† = 0).

The last part holds scipy-based numerical references (dual norms by direct maximisation,
steepest steps by a generic solver) used by the tests and the report as independent checks.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxhw import linalg

Array = jax.Array
INF = math.inf


class Norm(NamedTuple):
    """A norm as the three maps steepest descent needs.

    Attributes:
      name: for messages and reports.
      norm: t ↦ ‖t‖.
      dual: g ↦ ‖g‖† = max_{‖t‖=1} ⟨g, t⟩.
      dual_argmax: g ↦ a t with ‖t‖ = 1 and ⟨g, t⟩ = ‖g‖† (0 for g = 0).
    """

    name: str
    norm: Callable[[Array], Array]
    dual: Callable[[Array], Array]
    dual_argmax: Callable[[Array], Array]


def inner(a: Array, b: Array) -> Array:
    """⟨a, b⟩ = Σ a_i b_i (= tr(aᵀb) for matrices, the Frobenius inner product)."""
    return jnp.sum(a * b)


def _check_p(p: float) -> float:
    p = float(p)
    if not p >= 1:
        raise ValueError(f"p must satisfy 1 ≤ p ≤ ∞ for an ℓp/Schatten-p norm; got {p}")
    return p


def dual_exponent(p: float) -> float:
    """q with 1/p + 1/q = 1 (1 ↔ ∞)."""
    p = _check_p(p)
    if p == 1:
        return INF
    if p == INF:
        return 1.0
    return p / (p - 1)


def _safe_div(x: Array, d: Array) -> Array:
    ok = d > 0
    return jnp.where(ok, x / jnp.where(ok, d, 1.0), 0.0)


def lp_norm(x: Array, p: float) -> Array:
    """‖x‖_p = (Σ |x_i|^p)^{1/p} over all entries (max |x_i| for p = ∞); overflow-safe."""
    p = _check_p(p)
    a = jnp.abs(jnp.asarray(x)).ravel()
    if p == INF:
        return jnp.max(a)
    if p == 1:
        return jnp.sum(a)
    m = jnp.max(a)
    return m * jnp.sum(_safe_div(a, m) ** p) ** (1 / p)


def lp_dual_argmax(g: Array, p: float) -> Array:
    """argmax_{‖t‖_p = 1} ⟨g, t⟩ (Hölder's equality case).

    p = ∞: sign(g).  p = 1: all mass on the largest |g_i| (split evenly among ties), with its sign.
    1 < p < ∞: t = sign(g) (|g| / ‖g‖_q)^{q−1}, since then ‖t‖_p = 1 and ⟨g, t⟩ = ‖g‖_q.
    """
    p = _check_p(p)
    g = jnp.asarray(g)
    if p == INF:
        return jnp.sign(g)
    a = jnp.abs(g)
    if p == 1:
        top = (a == jnp.max(a)) & (a > 0)
        return jnp.sign(g) * _safe_div(top.astype(g.dtype), jnp.sum(top))
    q = dual_exponent(p)
    return jnp.sign(g) * _safe_div(a, lp_norm(g, q)) ** (q - 1)


def lp(p: float) -> Norm:
    """The vector ℓp norm and its dual ℓq (Q1: ‖·‖₂† = ‖·‖₂, ‖·‖∞† = ‖·‖₁)."""
    p = _check_p(p)
    q = dual_exponent(p)
    name = "ℓ∞" if p == INF else f"ℓ{p:g}"
    return Norm(name, lambda x: lp_norm(x, p), lambda g: lp_norm(g, q), lambda g: lp_dual_argmax(g, p))


L1, L2, LINF = lp(1), lp(2), lp(INF)


def _check_2d(A: Array, name: str) -> Array:
    A = jnp.asarray(A)
    if A.ndim != 2:
        raise ValueError(f"{name} must be a matrix (m, n); got shape {A.shape}")
    return A


def schatten_norm(A: Array, p: float) -> Array:
    """‖A‖_{S_p} = ‖σ(A)‖_p (spectral for p = ∞, Frobenius for 2, nuclear for 1)."""
    return lp_norm(linalg.singular_values(_check_2d(A, "A")), p)


def schatten_dual_argmax(G: Array, p: float) -> Array:
    """argmax_{‖T‖_{S_p} = 1} tr(Gᵀ T) = U diag(argmax_{ℓp}(σ)) Vᵀ for G = U Σ Vᵀ (von Neumann).

    p = ∞ (spectral) gives U Vᵀ (Q4), via ``linalg.orthogonalize``; p = 2 gives G / ‖G‖_F.
    """
    p = _check_p(p)
    G = _check_2d(G, "G")
    if p == INF:
        return linalg.orthogonalize(G, "svd")
    if p == 2:
        return _safe_div(G, lp_norm(G, 2))
    U, s, Vt = jnp.linalg.svd(G, full_matrices=False)
    return (U * lp_dual_argmax(s, p)) @ Vt


def schatten(p: float) -> Norm:
    """The Schatten-p matrix norm and its dual Schatten-q."""
    p = _check_p(p)
    q = dual_exponent(p)
    name = {INF: "spectral", 2.0: "Frobenius", 1.0: "nuclear"}.get(p, f"Schatten-{p:g}")
    return Norm(name, lambda A: schatten_norm(A, p), lambda G: schatten_norm(G, q), lambda G: schatten_dual_argmax(G, p))


SPECTRAL, FROBENIUS, NUCLEAR = schatten(INF), schatten(2), schatten(1)


# ----------------------------------------------------------------------------- steepest descent


def _check_lam(lam: float) -> None:
    if isinstance(lam, (int, float)) and not lam > 0:
        raise ValueError(f"the sharpness λ must be > 0; got {lam}")


def steepest_descent_objective(g: Array, delta: Array, lam: float, norm: Norm) -> Array:
    """⟨g, Δ⟩ + λ/2 ‖Δ‖² (Eq. 1/4)."""
    return inner(g, delta) + 0.5 * lam * norm.norm(delta) ** 2


def steepest_descent_step(g: Array, lam: float, norm: Norm) -> Array:
    """Eq. (3)/(5): Δ* = −(‖g‖† / λ) · argmax_{‖t‖=1} ⟨g, t⟩, for any :class:`Norm`.

    Why: write Δ = c t with ‖t‖ = 1, c ≥ 0; the objective c⟨g,t⟩ + λc²/2 is minimised over t by
    the t maximising −⟨g, t⟩ … i.e. t = −argmax ⟨g, t⟩, giving −c‖g‖† + λc²/2, minimised at
    c = ‖g‖†/λ. The minimum value is −(‖g‖†)² / (2λ).
    """
    _check_lam(lam)
    return -(norm.dual(g) / lam) * norm.dual_argmax(g)


def l2_step(g: Array, lam: float) -> Array:
    """Q3(a): −g / λ."""
    _check_lam(lam)
    return -jnp.asarray(g) / lam


def linf_step(g: Array, lam: float) -> Array:
    """Q3(b): −(‖g‖₁ / λ) · sign(g)."""
    _check_lam(lam)
    g = jnp.asarray(g)
    return -(jnp.sum(jnp.abs(g)) / lam) * jnp.sign(g)


def spectral_step(G: Array, lam: float) -> Array:
    """Q4(b): −(tr Σ / λ) · U Vᵀ for the thin SVD G = U Σ Vᵀ (rectangular/rank-deficient ok)."""
    _check_lam(lam)
    G = _check_2d(G, "G")
    return -(linalg.nuclear_norm(G) / lam) * linalg.orthogonalize(G, "svd")


# ----------------------------------------------------------------------------- Q5 square loss


def square_loss(W: Array, X: Array, Y: Array) -> Array:
    """Eq. (7): L(W) = 1/(2n) Σ_i (1/d_out) ‖y_i − W x_i‖², W: (d_out, d_in), X: (n, d_in), Y: (n, d_out)."""
    n, d_out = Y.shape
    R = Y - X @ W.T
    return jnp.sum(R * R) / (2 * n * d_out)


def square_loss_bound(W: Array, X: Array, Y: Array) -> tuple[Array, float]:
    """Q5: G and λ with L(W + ΔW) ≤ L(W) + tr(Gᵀ ΔW) + λ/2 ‖ΔW‖²_* when every ‖x_i‖₂ = √d_in.

    Expanding the square, L(W+Δ) = L(W) − 1/(n d_out) Σ (y−Wx)ᵀ Δx + 1/(2 n d_out) Σ ‖Δx‖².
    The linear term is tr(GᵀΔ) with G = −1/(n d_out) Σ_i (y_i − W x_i) x_iᵀ (= ∇L(W)); the
    quadratic term is ≤ 1/(2 n d_out) Σ ‖Δ‖²_* ‖x‖² = (d_in/d_out)/2 ‖Δ‖²_*, so λ = d_in/d_out.
    """
    n, d_out = Y.shape
    d_in = X.shape[1]
    if W.shape != (d_out, d_in):
        raise ValueError(f"W must have shape (d_out, d_in) = {(d_out, d_in)}; got {W.shape}")
    G = -(Y - X @ W.T).T @ X / (n * d_out)
    return G, d_in / d_out


def normalized_inputs(key: Array, n: int, d_in: int) -> Array:
    """n Gaussian inputs rescaled to ‖x_i‖₂ = √d_in (Q5's assumption)."""
    X = jax.random.normal(key, (n, d_in))
    return X * (math.sqrt(d_in) / jnp.linalg.norm(X, axis=1, keepdims=True))


def check_passed(max_error: float, tol: float) -> bool:
    """The report's verdict for a numerical check: the worst error over all trials is ≤ tol."""
    return bool(np.isfinite(max_error) and max_error <= tol)


# ----------------------------------------------------------------------------- numerical references
# Independent of the closed forms above: each solves Eq. (2) or Eq. (1)/(4) by direct numerical
# optimisation (scipy), using only the *primal* norm. Small sizes only (n ≲ 10).


def reference_dual_norm(a: np.ndarray, kind: str, p: float = 2.0, seed: int = 0) -> float:
    """max_{‖b‖ ≤ 1} ⟨a, b⟩ found numerically.

    kind = "l1" / "linf": a linear programme (scipy.optimize.linprog) over the ℓ1 / ℓ∞ ball;
    "lp": SLSQP with the constraint Σ|b_i|^p ≤ 1 (1 < p < ∞), best of 3 random starts;
    "spectral": the maximum over the spectral ball is attained at a semi-orthogonal matrix
    (an extreme point), parametrised as the first columns of expm(S), S skew, maximised by BFGS
    from one random start per component of O(m) (det ±1); "nuclear": extreme points are u vᵀ with unit u, v, maximised by BFGS.
    """
    from scipy import linalg as sla
    from scipy import optimize

    a = np.asarray(a, np.float64)
    rng = np.random.default_rng(seed)
    if kind == "linf":
        res = optimize.linprog(-a.ravel(), bounds=[(-1, 1)] * a.size, method="highs")
        return float(-res.fun)
    if kind == "l1":
        c = np.concatenate([-a.ravel(), a.ravel()])  # b = b⁺ − b⁻
        res = optimize.linprog(c, A_ub=np.ones((1, 2 * a.size)), b_ub=[1.0], bounds=[(0, None)] * (2 * a.size), method="highs")
        return float(-res.fun)
    if kind == "lp":
        v = a.ravel()
        cons = {"type": "ineq", "fun": lambda b: 1.0 - np.sum(np.abs(b) ** p), "jac": lambda b: -p * np.sign(b) * np.abs(b) ** (p - 1)}
        best = -np.inf
        for _ in range(3):
            x0 = rng.standard_normal(v.size) * 0.1
            res = optimize.minimize(lambda b: -v @ b, x0, jac=lambda b: -v, constraints=[cons], method="SLSQP", options={"ftol": 1e-14, "maxiter": 1000})
            best = max(best, -res.fun)
        return float(best)
    if kind == "spectral":
        A = a if a.shape[0] >= a.shape[1] else a.T
        m, n = A.shape
        iu = np.triu_indices(m, 1)

        def neg(x: np.ndarray, flip: np.ndarray) -> float:
            S = np.zeros((m, m))
            S[iu] = x
            Q = sla.expm(S - S.T) @ flip
            return -float(np.sum(A * Q[:, :n]))

        best = -np.inf
        for sign in (1.0, -1.0):
            flip = np.diag([sign] + [1.0] * (m - 1))
            res = optimize.minimize(neg, rng.standard_normal(len(iu[0])), args=(flip,), method="BFGS", options={"gtol": 1e-10})
            best = max(best, -res.fun)
        return float(best)
    if kind == "nuclear":
        m, n = a.shape

        def neg(x: np.ndarray) -> float:
            u, v = x[:m], x[m:]
            return -float(u @ a @ v) / (np.linalg.norm(u) * np.linalg.norm(v))

        return float(max(-optimize.minimize(neg, rng.standard_normal(m + n), method="BFGS", options={"gtol": 1e-10}).fun for _ in range(3)))
    raise ValueError(f"kind must be one of 'l1', 'linf', 'lp', 'spectral', 'nuclear'; got {kind!r}")


def reference_steepest_step(g: np.ndarray, lam: float, kind: str, p: float = 2.0) -> np.ndarray:
    """argmin_Δ ⟨g, Δ⟩ + λ/2 ‖Δ‖² found numerically (SLSQP on the epigraph form).

    Minimises ⟨g, Δ⟩ + λ s²/2 over (Δ, s) subject to ‖Δ‖ ≤ s, written smoothly: kind = "l2"
    (BFGS, no constraint needed), "linf" (2n linear constraints s ± Δ_i ≥ 0), "l1" (Δ = Δ⁺ − Δ⁻,
    Σ(Δ⁺ + Δ⁻) ≤ s), "lp" (s − ‖Δ‖_p ≥ 0), "spectral" (eigenvalues of s²I − ΔᵀΔ ≥ 0).
    """
    from scipy import optimize

    g = np.asarray(g, np.float64)
    shape, v, n = g.shape, g.ravel(), g.size
    opts = {"ftol": 1e-15, "maxiter": 2000}
    if kind == "l2":
        res = optimize.minimize(lambda d: v @ d + 0.5 * lam * d @ d, np.zeros(n), jac=lambda d: v + lam * d, method="BFGS", options={"gtol": 1e-12})
        return res.x.reshape(shape)
    if kind == "l1":
        x0 = np.zeros(2 * n + 1)
        fun = lambda x: v @ (x[:n] - x[n:2 * n]) + 0.5 * lam * x[-1] ** 2
        cons = {"type": "ineq", "fun": lambda x: np.array([x[-1] - np.sum(x[:2 * n])])}
        res = optimize.minimize(fun, x0, constraints=[cons], bounds=[(0, None)] * (2 * n + 1), method="SLSQP", options=opts)
        return (res.x[:n] - res.x[n:2 * n]).reshape(shape)
    fun = lambda x: v @ x[:-1] + 0.5 * lam * x[-1] ** 2
    if kind == "linf":
        cons = {"type": "ineq", "fun": lambda x: np.concatenate([x[-1] - x[:-1], x[-1] + x[:-1]])}
    elif kind == "lp":
        cons = {"type": "ineq", "fun": lambda x: np.array([x[-1] - np.sum(np.abs(x[:-1]) ** p) ** (1 / p)])}
    elif kind == "spectral":
        if g.ndim != 2:
            raise ValueError(f"kind='spectral' needs a matrix g; got shape {shape}")
        k = shape[1]
        cons = {"type": "ineq", "fun": lambda x: np.linalg.eigvalsh(x[-1] ** 2 * np.eye(k) - x[:-1].reshape(shape).T @ x[:-1].reshape(shape))}
    else:
        raise ValueError(f"kind must be one of 'l2', 'l1', 'linf', 'lp', 'spectral'; got {kind!r}")
    x0 = np.concatenate([-v / (lam * np.linalg.norm(v) + 1e-12), [1.0 / lam]]) * 0.1
    res = optimize.minimize(fun, x0, constraints=[cons], method="SLSQP", options=opts)
    return res.x[:-1].reshape(shape)
