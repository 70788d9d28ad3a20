"""Random-matrix facts and spectral-norm estimators (problem set Q6–Q8).

The spectral norm ‖A‖_* = σ₁(A) is the largest singular value, i.e. √λ_max(AAᵀ). An exact
value needs an SVD (O(n m min(n, m)) flops, poorly parallel); the estimators here only multiply
by A and Aᵀ (O(n m) per product), which is why a per-step norm inside an optimizer is affordable.

* :func:`haar_orthogonal` — a uniformly (Haar) distributed orthogonal matrix.
* :func:`power_iteration` — the problem set's pseudocode on AAᵀ; never over-estimates σ₁.
* :func:`golub_kahan` — Krylov (Golub–Kahan–Lanczos bidiagonalization); same matrix products,
  far faster convergence; also never over-estimates σ₁.
* :func:`fit_power_law` — least squares of log σ on log d, with confidence intervals and band.

The exact reference is :func:`jaxhw.linalg.spectral_norm_exact` (one SVD routine for the package).
Shapes: ``A`` is (n, m) with n rows; the power-iteration vector lives in ℝⁿ (the AAᵀ side).
The estimators are jitted and run unchanged on CPU/GPU/TPU; the fit is host-side numpy/scipy.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "haar_orthogonal",
    "PowerIterationResult",
    "power_iteration",
    "KrylovResult",
    "golub_kahan",
    "PowerLawFit",
    "fit_power_law",
    "time_warm",
    "bias_direction",
]


def _check_matrix(A: jax.Array, name: str = "A") -> None:
    if not hasattr(A, "ndim") or A.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix (n, m), got shape {getattr(A, 'shape', type(A))}")
    if not jnp.issubdtype(A.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {A.dtype}")


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("d", "dtype"))
def _haar_orthogonal(key: jax.Array, d: int, dtype=jnp.float32) -> jax.Array:
    Z = jax.random.normal(key, (d, d), dtype)
    Q, R = jnp.linalg.qr(Z)
    # QR is unique only up to the signs of diag(R); LAPACK's choice biases Q. Forcing
    # diag(R) > 0 (Q ← Q·diag(sign r_ii)) makes Q exactly Haar distributed (Mezzadri 2007).
    signs = jnp.where(jnp.diagonal(R) < 0, -1.0, 1.0).astype(dtype)
    return Q * signs[None, :]


def haar_orthogonal(key: jax.Array, d: int, dtype=jnp.float32) -> jax.Array:
    """A d×d orthogonal matrix drawn from the Haar (uniform) distribution on O(d).

    QR of a Gaussian matrix with the sign fix Q·diag(sign(diag R)).

    References: F. Mezzadri, "How to generate random matrices from the classical compact
    groups", Notices of the AMS 54 (2007), https://arxiv.org/abs/math-ph/0609050.
    """
    return _haar_orthogonal(key, _check_positive_int(d, "d"), dtype)


# --------------------------------------------------------------------------------------------
# Power iteration (problem set Q8)
# --------------------------------------------------------------------------------------------


class PowerIterationResult(NamedTuple):
    """``estimate`` = √(‖AAᵀu‖₂/‖u‖₂) with u = (AAᵀ)^num_iters v; ``history[k]`` is the same
    estimate after k amplifying multiplications (k = 0 … num_iters), so ``history[-1] == estimate``."""

    estimate: jax.Array
    history: jax.Array
    vector: jax.Array


@functools.partial(jax.jit, static_argnames=("num_iters",))
def _power_iteration(A: jax.Array, key: jax.Array, num_iters: int) -> PowerIterationResult:
    v = jax.random.normal(key, (A.shape[0],), A.dtype)  # (i) random v ∈ ℝⁿ
    u0 = v / jnp.linalg.norm(v)

    def step(u, _):
        # AAᵀu without forming AAᵀ (two O(nm) products, not O(n²m)). Aᵀu is written u @ A:
        # XLA:CPU materialises the transpose for A.T @ u, which costs 10× the product itself.
        w = A @ (u @ A)
        norm_w = jnp.linalg.norm(w)
        # ‖u‖ = 1, so ‖AAᵀu‖/‖u‖ = ‖w‖. Renormalising keeps (AAᵀ)^k v finite; it changes
        # only the length of u, never its direction, hence not the estimate.
        return w / norm_w, jnp.sqrt(norm_w)

    # (ii) u = (AAᵀ)^num_iters v, then (iii) one more product for the eigenvalue estimate.
    u, history = jax.lax.scan(step, u0, None, length=num_iters + 1)
    return PowerIterationResult(history[-1], history, u)


def power_iteration(A: jax.Array, key: jax.Array, num_iters: int = 10) -> PowerIterationResult:
    """Estimate ‖A‖_* by power iteration on AAᵀ, exactly as the problem set's pseudocode.

    (i) v ~ N(0, Iₙ); (ii) u = (AAᵀ)^num_iters v; (iii) λ̂ = ‖AAᵀu‖₂/‖u‖₂ and ‖A‖_* ≈ √λ̂.

    Never over-estimates: AAᵀ is symmetric PSD with ‖AAᵀ‖₂ = σ₁², so ‖AAᵀu‖₂ ≤ σ₁²‖u‖₂ for
    every u and √λ̂ ≤ σ₁. Writing u in the eigenbasis, u = Σ cᵢeᵢ with weights ∝ σᵢ^{4k}, the
    error decays like (σ₂/σ₁)^{4k} — slowly when the top of the spectrum has no gap.

    Args:
      A: (n, m) matrix.
      key: PRNG key for the starting vector.
      num_iters: number of amplifying multiplications by AAᵀ (10 in the problem set); the
        estimate costs num_iters + 1 products with AAᵀ.
    """
    A = jnp.asarray(A)
    _check_matrix(A)
    if isinstance(num_iters, bool) or not isinstance(num_iters, (int, np.integer)) or num_iters < 0:
        raise ValueError(f"num_iters must be a non-negative integer, got {num_iters!r}")
    return _power_iteration(A, key, int(num_iters))


# --------------------------------------------------------------------------------------------
# Krylov: Golub–Kahan–Lanczos bidiagonalization (beyond the problem set)
# --------------------------------------------------------------------------------------------


class KrylovResult(NamedTuple):
    """``estimate`` = σ₁(B_k) for the k×k bidiagonal B_k = U_kᵀ A V_k; ``history[j]`` is σ₁ of
    its leading (j+1)×(j+1) block (the estimate after j+1 steps)."""

    estimate: jax.Array
    history: jax.Array
    alphas: jax.Array
    betas: jax.Array


@functools.partial(jax.jit, static_argnames=("num_steps",))
def _golub_kahan(A: jax.Array, key: jax.Array, num_steps: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    n, m = A.shape
    k = num_steps
    dtype = A.dtype
    v0 = jax.random.normal(key, (m,), dtype)
    v0 = v0 / jnp.linalg.norm(v0)
    U = jnp.zeros((n, k), dtype)
    V = jnp.zeros((m, k), dtype).at[:, 0].set(v0)

    def reorth(x, Q):
        # Full re-orthogonalisation (twice is enough, Giraud et al. 2005): in float32 the bare
        # three-term recurrence loses orthogonality once a Ritz value converges, producing
        # spurious copies of σ₁ — harmless for σ₁ itself but it would break the bound below.
        x = x - Q @ (x @ Q)
        return x - Q @ (x @ Q)

    def step(carry, j):
        U, V, u_prev, beta = carry
        v = V[:, j]
        u = reorth(A @ v - beta * u_prev, U)
        alpha = jnp.linalg.norm(u)
        u = u / jnp.where(alpha > 0, alpha, 1.0)
        U = U.at[:, j].set(u)
        w = reorth(u @ A - alpha * v, V)  # Aᵀu as u @ A (no transpose copy)
        beta_next = jnp.linalg.norm(w)
        w = w / jnp.where(beta_next > 0, beta_next, 1.0)
        # At the last step this overwrites column k−1, which is no longer read.
        V = V.at[:, jnp.minimum(j + 1, k - 1)].set(w)
        return (U, V, u, beta_next), (alpha, beta_next)

    init = (U, V, jnp.zeros((n,), dtype), jnp.zeros((), dtype))
    _, (alphas, betas) = jax.lax.scan(step, init, jnp.arange(k))
    # B_k: alphas on the diagonal, betas[:-1] on the super-diagonal (A V_k = U_k B_k).
    B = jnp.diag(alphas) + jnp.diag(betas[:-1], 1)
    return jnp.linalg.svd(B, compute_uv=False)[0], alphas, betas


def _leading_block_sigmas(alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """σ₁ of every leading j×j block of the bidiagonal B_k (host-side, float64, k tiny SVDs)."""
    a, b = np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
    B = np.diag(a) + np.diag(b[:-1], 1)
    return np.array([np.linalg.svd(B[:j, :j], compute_uv=False)[0] for j in range(1, a.size + 1)])


def golub_kahan(
    A: jax.Array, key: jax.Array, num_steps: int = 30, *, with_history: bool = True
) -> KrylovResult:
    """Estimate ‖A‖_* with ``num_steps`` steps of Golub–Kahan–Lanczos bidiagonalization.

    Builds orthonormal U_k, V_k with A V_k = U_k B_k, B_k upper bidiagonal, spanning the Krylov
    space 𝒦_k(AᵀA, v). The estimate σ₁(B_k) = σ₁(U_kᵀ A V_k) ≤ σ₁(A), because multiplying by
    matrices with orthonormal columns cannot increase the spectral norm: like power iteration it
    only under-estimates. Unlike power iteration, which keeps one vector (AᵀA)^k v, it takes
    the best vector in the whole space — a Chebyshev polynomial in AᵀA instead of a monomial —
    so the error decays like exp(−4k√gap) rather than (1 − gap)^{2k}. Each step costs one
    product with A and one with Aᵀ (the same as half a power-iteration step) plus O((n+m)k)
    for the re-orthogonalisation.

    References: G. Golub, W. Kahan, "Calculating the singular values and pseudo-inverse of a
    matrix", SIAM J. Numer. Anal. B 2 (1965); J. Kuczyński, H. Woźniakowski, "Estimating the
    largest eigenvalue by the power and Lanczos algorithms with a random start", SIAM J. Matrix
    Anal. Appl. 13 (1992).

    ``with_history=False`` skips the per-step estimates (``history`` then holds only the final
    one) and keeps the function traceable under ``jit``/``vmap`` (the optimizer uses this path);
    with history, the per-step σ₁ of the leading blocks of B_k is computed on the host.
    """
    A = jnp.asarray(A)
    _check_matrix(A)
    k = _check_positive_int(num_steps, "num_steps")
    if k > min(A.shape):
        raise ValueError(f"num_steps must be at most min(n, m) = {min(A.shape)}, got {k}")
    estimate, alphas, betas = _golub_kahan(A, key, k)
    if not with_history:
        return KrylovResult(estimate, estimate[None], alphas, betas)
    history = _leading_block_sigmas(jax.device_get(alphas), jax.device_get(betas))
    return KrylovResult(estimate, jnp.asarray(history, A.dtype), alphas, betas)


# --------------------------------------------------------------------------------------------
# Power-law fit σ ≈ α d^β (problem set Q6)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """log y = log α + β log d fitted by ordinary least squares.

    Attributes:
      alpha, beta: point estimates.
      alpha_ci, beta_ci: two-sided confidence intervals at ``level`` (Student t, n − 2 dof);
        α's interval is exp of the interval for log α, so it is asymmetric.
      cov: 2×2 covariance of (log α, β).
      resid_std: standard deviation of the log-space residuals.
      level: confidence level.
      dof: degrees of freedom (number of points − 2).
    """

    alpha: float
    beta: float
    alpha_ci: tuple[float, float]
    beta_ci: tuple[float, float]
    cov: np.ndarray
    resid_std: float
    level: float
    dof: int

    def predict(self, d: np.ndarray) -> np.ndarray:
        return self.alpha * np.asarray(d, dtype=np.float64) ** self.beta

    def band(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Confidence band of the fitted curve α d^β at ``level`` (not a prediction interval)."""
        from scipy import stats

        x = np.log(np.asarray(d, dtype=np.float64))
        X = np.stack([np.ones_like(x), x], axis=-1)
        se = np.sqrt(np.einsum("...i,ij,...j->...", X, self.cov, X))
        t = stats.t.ppf(0.5 + self.level / 2, self.dof)
        center = np.log(self.alpha) + self.beta * x
        return np.exp(center - t * se), np.exp(center + t * se)


def fit_power_law(d: np.ndarray, y: np.ndarray, level: float = 0.95) -> PowerLawFit:
    """Fit y ≈ α·d^β by least squares in log space, with confidence intervals.

    Log space because the model is linear there and the scatter of a spectral norm is roughly
    multiplicative; repeated d (several seeds) are separate observations.
    """
    from scipy import stats

    d = np.asarray(d, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if d.shape != y.shape:
        raise ValueError(f"d and y must have the same number of points, got {d.size} and {y.size}")
    if d.size < 3 or np.unique(d).size < 2:
        raise ValueError(f"need at least 3 points at 2 or more distinct d, got {d.size} points")
    if np.any(d <= 0) or np.any(y <= 0) or not np.all(np.isfinite(y)):
        raise ValueError("d and y must be finite and strictly positive for a log-space fit")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    X = np.stack([np.ones_like(d), np.log(d)], axis=1)
    coef, *_ = np.linalg.lstsq(X, np.log(y), rcond=None)
    resid = np.log(y) - X @ coef
    dof = d.size - 2
    sigma2 = float(resid @ resid) / dof
    cov = sigma2 * np.linalg.inv(X.T @ X)
    t = stats.t.ppf(0.5 + level / 2, dof)
    se = np.sqrt(np.diag(cov))
    log_alpha, beta = coef
    return PowerLawFit(
        alpha=float(np.exp(log_alpha)),
        beta=float(beta),
        alpha_ci=(float(np.exp(log_alpha - t * se[0])), float(np.exp(log_alpha + t * se[0]))),
        beta_ci=(float(beta - t * se[1]), float(beta + t * se[1])),
        cov=cov,
        resid_std=float(np.sqrt(sigma2)),
        level=level,
        dof=dof,
    )


def time_warm(fn, *args, repeats: int = 5) -> float:
    """Median wall time (s) of ``fn(*args)`` after one warm-up call (compilation excluded).

    Blocks on every output leaf: JAX dispatch is asynchronous, so an unblocked timer would
    measure only the dispatch.
    """
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(_check_positive_int(repeats, "repeats")):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bias_direction(estimates: np.ndarray, truth: float, rtol: float = 1e-5) -> str:
    """How a set of estimates sits against the true value: ``"under"`` when every estimate is
    ≤ truth·(1 + rtol) (rounding allowed) and at least one is clearly below it, ``"over"`` for the
    mirror case, ``"exact"`` when all agree within rtol, ``"mixed"`` otherwise."""
    e = np.asarray(estimates, dtype=np.float64).ravel()
    if e.size == 0 or not np.all(np.isfinite(e)):
        raise ValueError(f"estimates must be a non-empty finite array, got {estimates!r}")
    rel = (e - truth) / abs(truth)
    if np.all(np.abs(rel) <= rtol):
        return "exact"
    if np.all(rel <= rtol):
        return "under"
    if np.all(rel >= -rtol):
        return "over"
    return "mixed"
