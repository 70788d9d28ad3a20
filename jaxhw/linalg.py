"""Linear-algebra helpers for steepest descent under the spectral norm (Q4, Q9–Q11).

One ``orthogonalize`` serves the closed-form spectral step (Q4), the orthogonalized optimizer
(Q10) and the checks of the semi-orthogonal initializer (Q9). Conventions:

* A matrix ``G`` of shape ``(..., m, n)``; leading axes are batch axes. Its thin SVD is
  ``G = U Σ Vᵀ`` with ``U: (m, r)``, ``Σ = diag(σ_1 ≥ … ≥ σ_r)``, ``V: (n, r)``, ``r = min(m, n)``.
* Flax ``Dense`` kernels are ``(d_in, d_out)`` (the transpose of the problem set's
  ``W ∈ R^{d_out × d_in}``); singular values, and hence every norm here, are unchanged by the
  transpose, so the same code serves both conventions.

Written by hand because neither JAX nor optax exposes them publicly: the polar factor ``U Vᵀ``
with a rank cut-off (so zero/rank-deficient matrices give no NaN or arbitrary directions) and a
Newton–Schulz iteration (optax has one only inside ``optax.contrib.muon``).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Literal, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

#: Quintic Newton–Schulz coefficients (a, b, c) of Muon, identical to optax.contrib.muon's
#: default ``(3.4445, -4.7750, 2.0315)``: X ← a X + b (X Xᵀ) X + c (X Xᵀ)² X.
NS_COEFFS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
#: optax's stabiliser in the Frobenius pre-normalisation X / (‖X‖_F + eps).
NS_EPS = 1e-8
#: After 5 quintic steps the singular values of the output lie roughly in this band (Muon's
#: iteration trades exact convergence for speed; it does not converge to exactly 1).
NS_SINGULAR_VALUE_BAND: tuple[float, float] = (0.3, 1.3)

_HALF = (jnp.float16, jnp.bfloat16)


def _check_matrix(G: Any, name: str) -> Array:
    G = jnp.asarray(G)
    if G.ndim < 2:
        raise ValueError(f"{name} must be a matrix of shape (..., m, n); got shape {G.shape}")
    if not jnp.issubdtype(G.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype; got {G.dtype}")
    return G


def _compute_dtype(dtype: Any) -> Any:
    """Half precision is computed in float32 (SVD has no bf16/f16 kernels; NS in f16 overflows)."""
    return jnp.float32 if dtype in _HALF else dtype


def _mT(x: Array) -> Array:
    return jnp.swapaxes(x, -1, -2)


def rank_tolerance(s: Array, shape: Sequence[int], dtype: Any) -> Array:
    """Singular values ≤ this are treated as zero: ``max(m, n) · eps · σ_max`` (numpy's rule)."""
    eps = jnp.finfo(dtype).eps
    return max(shape[-2], shape[-1]) * eps * s[..., :1]


def _svd_guarded(G: Array, compute_uv: bool = True) -> Any:
    """SVD that returns NaN for matrices with NaN/Inf entries instead of calling LAPACK on them
    (the CPU solver can fail to terminate on non-finite input)."""
    ok = jnp.all(jnp.isfinite(G), axis=(-2, -1))
    out = jnp.linalg.svd(jnp.where(ok[..., None, None], G, 0), full_matrices=False, compute_uv=compute_uv)
    if not compute_uv:
        return jnp.where(ok[..., None], out, jnp.nan)
    U, s, Vt = out
    return jnp.where(ok[..., None, None], U, jnp.nan), jnp.where(ok[..., None], s, jnp.nan), Vt


def _orthogonalize_svd(G: Array) -> Array:
    U, s, Vt = _svd_guarded(G)
    keep = (s > rank_tolerance(s, G.shape, G.dtype)).astype(G.dtype)
    return (U * keep[..., None, :]) @ Vt


def newton_schulz(
    G: Array,
    ns_steps: int = 5,
    coeffs: tuple[float, float, float] = NS_COEFFS,
    eps: float = NS_EPS,
) -> Array:
    """Approximate ``U Vᵀ`` by Muon's quintic Newton–Schulz iteration (batched over leading axes).

    X₀ = G / (‖G‖_F + eps) has σ ≤ 1; each step maps every singular value through
    p(σ) = a σ + b σ³ + c σ⁵ while keeping U, V, so σ is pushed into ``NS_SINGULAR_VALUE_BAND``.
    The iteration works on the short side (X Xᵀ is min(m, n)²), exactly as optax.contrib.muon.
    A zero matrix stays zero (0 / (0 + eps) = 0).
    """
    a, b, c = coeffs
    transpose = G.shape[-2] > G.shape[-1]
    X = _mT(G) if transpose else G
    norm = jnp.sqrt(jnp.sum(X * X, axis=(-2, -1), keepdims=True))
    X = X / (norm + eps)
    for _ in range(ns_steps):  # unrolled: ns_steps is static and small
        A = X @ _mT(X)
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return _mT(X) if transpose else X


@functools.partial(jax.jit, static_argnames=("method", "ns_steps"))
def orthogonalize(
    G: Array,
    method: Literal["svd", "newton_schulz"] = "svd",
    ns_steps: int = 5,
) -> Array:
    """The polar factor ``U Vᵀ`` of the thin SVD ``G = U Σ Vᵀ`` (the spectral-norm argmax, Q4).

    ``U Vᵀ`` is argmax_{‖T‖_* = 1} tr(Gᵀ T) and has every non-zero singular value equal to 1.

    Args:
      G: array of shape ``(..., m, n)``; any rectangular shape, leading axes are a batch.
      method: ``"svd"`` (exact; singular directions with σ ≤ ``rank_tolerance`` are dropped, so a
        rank-deficient ``G`` gives ``U_r V_rᵀ`` and a zero ``G`` gives zeros) or
        ``"newton_schulz"`` (Muon's quintic iteration, matmuls only; output singular values lie
        in ``NS_SINGULAR_VALUE_BAND`` rather than at exactly 1).
      ns_steps: Newton–Schulz steps (ignored by ``"svd"``).

    Returns:
      An array of the shape and dtype of ``G``. float16/bfloat16 inputs are computed in float32.
      A matrix containing NaN/Inf gives an all-NaN result (the SVD is not run on it).
    """
    G = _check_matrix(G, "G")
    dtype = G.dtype
    Gc = G.astype(_compute_dtype(dtype))
    if method == "svd":
        out = _orthogonalize_svd(Gc)
    elif method == "newton_schulz":
        if not isinstance(ns_steps, int) or ns_steps < 1:
            raise ValueError(f"ns_steps must be a positive int; got {ns_steps!r}")
        out = newton_schulz(Gc, ns_steps)
    else:
        raise ValueError(f"method must be 'svd' or 'newton_schulz'; got {method!r}")
    return out.astype(dtype)


@jax.jit
def singular_values(A: Array) -> Array:
    """σ_1 ≥ … ≥ σ_r of ``A`` (batched), computed in at least float32."""
    A = _check_matrix(A, "A")
    return _svd_guarded(A.astype(_compute_dtype(A.dtype)), compute_uv=False)


def spectral_norm_exact(A: Array) -> Array:
    """‖A‖_* = σ_max(A), the largest singular value, from a full SVD (batched over leading axes)."""
    return singular_values(A)[..., 0]


def nuclear_norm(A: Array) -> Array:
    """‖A‖_nuc = tr Σ = Σ_i σ_i, the dual of the spectral norm (batched)."""
    return jnp.sum(singular_values(A), axis=-1)


def semi_orthogonal(key: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    """A random semi-orthogonal matrix M: all min(m, n) singular values equal 1.

    For ``shape = (..., m, n)`` with more than two axes the leading axes are flattened into the
    rows (a conv kernel ``(kh, kw, c_in, c_out)`` is a ``(kh·kw·c_in, c_out)`` matrix). Drawn from
    the Haar measure via ``jax.nn.initializers.orthogonal`` (QR of a Gaussian matrix).
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise ValueError(f"semi_orthogonal needs a shape with at least 2 axes; got {shape}")
    return jax.nn.initializers.orthogonal(scale=1.0, column_axis=-1)(key, shape, dtype)


def fan_in_out(shape: Sequence[int]) -> tuple[int, int]:
    """(d_in, d_out) of a Flax kernel: d_out is the last axis, d_in the product of the others."""
    return math.prod(shape[:-1]), shape[-1]


def semi_orthogonal_init(scale: float | Literal["sqrt_ratio"] = "sqrt_ratio") -> Callable[..., Array]:
    """Flax initializer ``W = s · M`` with M semi-orthogonal (Q9's initialisation).

    With ``scale="sqrt_ratio"``, s = √(d_out / d_in) for a kernel of shape (d_in, d_out), so
    ‖W‖_* = √(d_out/d_in): the layer maps inputs of RMS 1 to outputs of RMS ≈ 1 whatever the
    width. A float ``scale`` is used as is. Usage: ``nn.Dense(128, kernel_init=semi_orthogonal_init())``.
    """
    if not (scale == "sqrt_ratio" or isinstance(scale, (int, float))):
        raise ValueError(f"scale must be 'sqrt_ratio' or a number; got {scale!r}")

    def init(key: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
        d_in, d_out = fan_in_out(tuple(shape))
        s = math.sqrt(d_out / d_in) if scale == "sqrt_ratio" else float(scale)
        return (s * semi_orthogonal(key, shape, jnp.float32)).astype(dtype)

    return init


@jax.jit
def compare_singular_systems(W: Array, W_new: Array) -> dict[str, Array]:
    """How ``W_new`` relates to ``W`` in SVD terms (Q11: what weight decay does).

    Returns ``sigma_ratio`` = σ_i(W_new)/σ_i(W) and the alignments ``u_align`` = |⟨u_i, u'_i⟩|,
    ``v_align`` = |⟨v_i, v'_i⟩| of corresponding singular vectors (1 = same vector up to sign).
    Assumes distinct singular values (true almost surely for random W).
    """
    W = _check_matrix(W, "W")
    W_new = _check_matrix(W_new, "W_new")
    if W.shape != W_new.shape:
        raise ValueError(f"W and W_new must have the same shape; got {W.shape} and {W_new.shape}")
    U, s, Vt = jnp.linalg.svd(W, full_matrices=False)
    U2, s2, Vt2 = jnp.linalg.svd(W_new, full_matrices=False)
    return {
        "sigma_ratio": s2 / s,
        "u_align": jnp.abs(jnp.sum(U * U2, axis=-2)),
        "v_align": jnp.abs(jnp.sum(Vt * Vt2, axis=-1)),
    }


def weight_decay_verdict(comparison: dict[str, Array], factor: float, tol: float = 1e-5) -> dict[str, bool]:
    """Q11's conclusion from ``compare_singular_systems(W, factor * W)``: are all singular values
    multiplied by ``factor`` and all singular vectors unchanged up to sign (within ``tol``)?"""
    ratio_err = float(jnp.max(jnp.abs(comparison["sigma_ratio"] - factor)))
    align_err = float(jnp.max(1.0 - jnp.minimum(comparison["u_align"], comparison["v_align"])))
    return {"singular_values_scaled": ratio_err <= tol, "singular_vectors_kept": align_err <= tol}
