"""optax transforms for steepest descent under ℓ∞ and spectral geometry (Q3c, Q9–Q11).

Each ``scale_by_*`` is a stateless ``optax.GradientTransformation`` that maps a gradient
pytree to a *descent direction* (the sign convention of ``optax.scale_by_adam``: the
learning-rate step ``optax.scale_by_learning_rate`` supplies the minus sign). The aliases
(``sign_descent``, ``spectral_sign_descent``, ``orthogonal_descent``) chain
``[optax.trace] → scale_by_* → [optax.add_decayed_weights] → optax.scale_by_learning_rate``,
so the update is ``−η (direction + wd · W)`` (decoupled weight decay multiplied by η, as in
``optax.adamw``). Q11: one such step with zero gradient is ``W → (1 − η·wd) W``.

Parameter rules (decided per leaf from its static shape, so everything is jit-safe):

* **matrices** — rank 2 (Flax Dense kernel ``(d_in, d_out)``), rank 3 (1-D conv
  ``(k, c_in, c_out)``) and rank 4 (2-D conv ``(kh, kw, c_in, c_out)``) are viewed as the matrix
  ``G`` of shape ``(d_in, d_out)`` with ``d_in = prod(shape[:-1])``, ``d_out = shape[-1]``, and
  receive the matrix rule with the width factor √(d_out/d_in) of Q9 (the RMS→RMS operator norm
  ‖W‖ = √(d_in/d_out)·‖W‖_* has unit-norm steepest direction √(d_out/d_in)·U Vᵀ);
* **vectors and scalars** (biases, LayerNorm scales) — rank 0/1 — get ℓ∞ steepest descent,
  ``sign(g)`` (times ‖g‖₁ when ``dual_norm_scale``): a bias has no input/output geometry, and
  ``sign`` keeps every coordinate's step size equal to η;
* any other rank raises ``ValueError`` naming the parameter path.

Robustness: a zero gradient gives a zero update in float32/bfloat16/float16 (all divisions are
guarded; half precision is computed in float32 and cast back). **Non-finite gradients**: if a
leaf's gradient contains any NaN or ±Inf, that leaf's whole update is NaN — never a finite
value computed from it (``sign(inf)`` would otherwise hide it) — while the other leaves are
unaffected. Wrap the optimizer in ``optax.apply_if_finite`` to skip such steps.

The aliases work under ``optax.inject_hyperparams`` (learning rate, momentum and weight decay can be
changed between jitted steps; values are checked whenever they are concrete); ``ns_steps`` is an
iteration count and must be listed in ``static_args``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhw import linalg, spectral

Array = jax.Array
NormFn = Callable[[Array], Array]

_MAX_RANK = 4
_HALF = (jnp.float16, jnp.bfloat16)


class _Leaf(NamedTuple):
    path: str
    is_matrix: bool
    d_in: int
    d_out: int


def _classify(path: str, g: Array) -> _Leaf:
    if not jnp.issubdtype(g.dtype, jnp.floating):
        raise TypeError(f"parameter {path}: expected a floating gradient, got dtype {g.dtype}")
    if g.ndim <= 1:
        return _Leaf(path, False, 1, max(g.size, 1))
    if g.ndim > _MAX_RANK:
        raise ValueError(
            f"parameter {path}: unsupported rank {g.ndim} (shape {g.shape}); expected a scalar, "
            "a vector, a Dense kernel (d_in, d_out) or a conv kernel (…, c_in, c_out) of rank ≤ 4. "
            "Route it to another optimizer with optax.partition."
        )
    d_in, d_out = linalg.fan_in_out(g.shape)
    return _Leaf(path, True, d_in, d_out)


def _map_leaves(rule: Callable[[_Leaf, Array], Array], updates: Any) -> Any:
    """Apply ``rule`` per leaf in float32 (for half dtypes), with the non-finite guard."""

    def one(key_path: Any, g: Array) -> Array:
        leaf = _classify(jax.tree_util.keystr(key_path), g)
        dtype = g.dtype
        gc = g.astype(jnp.float32) if dtype in _HALF else g
        finite = jnp.all(jnp.isfinite(gc))
        u = rule(leaf, jnp.where(finite, gc, 0))  # never feed NaN/Inf to SVD / power iteration
        u = jnp.where(finite, u, jnp.nan)
        return u.astype(dtype)

    return jax.tree_util.tree_map_with_path(one, updates)


def _safe_div(x: Array, d: Array) -> Array:
    """x / d, with 0 where d == 0 (a zero gradient must give a zero update, not NaN)."""
    ok = d > 0
    return jnp.where(ok, x / jnp.where(ok, d, 1.0), 0.0)


def _sign_rule(g: Array, dual_norm_scale: bool) -> Array:
    s = jnp.sign(g)
    return jnp.sum(jnp.abs(g)) * s if dual_norm_scale else s


def _stateless(update: Callable[[Any], Any]) -> optax.GradientTransformation:
    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params
        return update(updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


# ----------------------------------------------------------------------------- ℓ∞ / sign


def scale_by_sign(dual_norm_scale: bool = False) -> optax.GradientTransformation:
    """ℓ∞ steepest-descent direction, elementwise on every leaf (any rank).

    argmax_{‖t‖∞=1} ⟨g, t⟩ = sign(g); with ``dual_norm_scale`` the direction is multiplied by the
    dual norm ‖g‖₁ of the leaf, giving the exact Eq. (3) step for λ = 1 (Q3b), −‖g‖₁ sign(g).
    Adam with β1 = β2 = ε = 0 produces the same direction (Q3c).
    """
    return _stateless(lambda updates: _map_leaves(lambda leaf, g: _sign_rule(g, dual_norm_scale), updates))


# ----------------------------------------------------------------------------- spectral sign


_NORM_KEY = jax.random.PRNGKey(0)  # fixed start vector: the transform stays deterministic


def _resolve_norm(norm: str | NormFn, power_iters: int) -> NormFn:
    """‖S‖_* estimators; "power"/"krylov" come from :mod:`jaxhw.spectral` and never over-estimate."""
    if callable(norm):
        return norm
    if norm == "exact":
        return linalg.spectral_norm_exact
    if norm in ("power", "krylov"):
        if isinstance(power_iters, bool) or not isinstance(power_iters, int) or power_iters < 1:
            raise ValueError(f"power_iters must be a positive int; got {power_iters!r}")
        if norm == "power":
            return lambda A: spectral.power_iteration(A, _NORM_KEY, power_iters).estimate
        return lambda A: spectral.golub_kahan(A, _NORM_KEY, min(power_iters, *A.shape), with_history=False).estimate
    raise ValueError(f"norm must be 'exact', 'power', 'krylov' or a callable A -> σ_max(A); got {norm!r}")


def scale_by_spectral_sign(
    norm: Literal["exact", "power", "krylov"] | NormFn = "exact", power_iters: int = 20
) -> optax.GradientTransformation:
    """Q9's update direction √(d_out/d_in) · sign(G) / ‖sign(G)‖_* for every matrix leaf.

    The normalised sign matrix has spectral norm exactly √(d_out/d_in) (with ``norm="exact"``), so
    the RMS→RMS operator norm of each layer's step is η regardless of width. Vectors get sign(g).

    Args:
      norm: how to compute ‖sign(G)‖_*: ``"exact"`` (SVD), ``"power"`` (``power_iters`` steps of
        :func:`jaxhw.spectral.power_iteration`), ``"krylov"`` (``power_iters`` Golub–Kahan steps,
        far more accurate per matrix product) or a callable. Both estimates never exceed the true
        norm, so the step is at most slightly larger than intended.
      power_iters: iterations (or Krylov steps) for ``norm="power"`` / ``"krylov"``.
    """
    norm_fn = _resolve_norm(norm, power_iters)

    def rule(leaf: _Leaf, g: Array) -> Array:
        if not leaf.is_matrix:
            return jnp.sign(g)
        S = jnp.sign(g.reshape(leaf.d_in, leaf.d_out))
        u = _safe_div(math.sqrt(leaf.d_out / leaf.d_in) * S, norm_fn(S))
        return u.reshape(g.shape)

    return _stateless(lambda updates: _map_leaves(rule, updates))


# ----------------------------------------------------------------------------- orthogonalized


def scale_by_orthogonalization(
    method: Literal["svd", "newton_schulz"] = "svd",
    ns_steps: int = 5,
    dual_norm_scale: bool = False,
) -> optax.GradientTransformation:
    """Q10's "steeper" direction √(d_out/d_in) · U Vᵀ for every matrix leaf G = U Σ Vᵀ.

    This is the unit steepest direction under the RMS→RMS operator norm (Q4 with the width
    factor). With ``dual_norm_scale`` it is multiplied by the dual norm ⟨G, √(d_out/d_in)·U Vᵀ⟩ =
    √(d_out/d_in)·tr Σ, which is the full Eq. (5) step for λ = 1 (as optax muon's ``adaptive``).
    Vectors get sign(g) (times ‖g‖₁ with ``dual_norm_scale``).

    Args:
      method: ``"svd"`` (exact polar factor) or ``"newton_schulz"`` (Muon's quintic iteration,
        same coefficients and Frobenius pre-normalisation as ``optax.contrib.muon``).
      ns_steps: Newton–Schulz iterations.
      dual_norm_scale: multiply by the dual norm (tr Σ term of the closed form).
    """
    if method not in ("svd", "newton_schulz"):
        raise ValueError(f"method must be 'svd' or 'newton_schulz'; got {method!r}")
    if isinstance(ns_steps, jax.core.Tracer):
        raise TypeError("ns_steps (the number of Newton–Schulz iterations) shapes the computation and cannot "
                        "be traced: with optax.inject_hyperparams pass static_args=('ns_steps',)")
    if isinstance(ns_steps, (np.ndarray, jax.Array)) and ns_steps.ndim == 0 and jnp.issubdtype(ns_steps.dtype, jnp.integer):
        ns_steps = int(ns_steps)
    if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or ns_steps < 1:
        raise ValueError(f"ns_steps must be a positive int; got {ns_steps!r}")

    def rule(leaf: _Leaf, g: Array) -> Array:
        if not leaf.is_matrix:
            return _sign_rule(g, dual_norm_scale)
        G = g.reshape(leaf.d_in, leaf.d_out)
        O = math.sqrt(leaf.d_out / leaf.d_in) * linalg.orthogonalize(G, method, ns_steps)
        if dual_norm_scale:
            O = jnp.sum(G * O) * O
        return O.reshape(g.shape)

    return _stateless(lambda updates: _map_leaves(rule, updates))


# ----------------------------------------------------------------------------- aliases


def _concrete(value: Any) -> float | None:
    """``value`` as a float, or None while it is traced (``optax.inject_hyperparams`` under ``jit``
    passes hyperparameters as traced arrays: they can only be checked when they are concrete)."""
    try:
        return float(value)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def _check_hparams(learning_rate: Any, momentum: Any, weight_decay: Any) -> None:
    if not (callable(learning_rate) or isinstance(learning_rate, (int, float)) or hasattr(learning_rate, "dtype")):
        raise TypeError(f"learning_rate must be a number or an optax schedule; got {learning_rate!r}")
    if not callable(learning_rate) and np.size(learning_rate) != 1:
        raise ValueError(f"learning_rate must be a scalar; got shape {np.shape(learning_rate)}")
    lr = None if callable(learning_rate) else _concrete(learning_rate)
    if lr is not None and not lr >= 0:
        raise ValueError(f"learning_rate must be ≥ 0 (the minus sign is built in); got {learning_rate!r}")
    mom = None if momentum is None else _concrete(momentum)
    if mom is not None and not 0.0 <= mom < 1.0:
        raise ValueError(f"momentum must be None or in [0, 1); got {momentum!r}")
    wd = _concrete(weight_decay)
    if wd is not None and not wd >= 0:
        raise ValueError(f"weight_decay must be ≥ 0; got {weight_decay!r}")


def _descent(
    core: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    momentum: float | None,
    nesterov: bool,
    weight_decay: float,
    weight_decay_mask: Any,
) -> optax.GradientTransformation:
    _check_hparams(learning_rate, momentum, weight_decay)
    parts = []
    if momentum is not None:
        parts.append(optax.trace(decay=momentum, nesterov=nesterov))
    parts.append(core)
    # Only a plain number 0 drops the term: an array (optax.inject_hyperparams passes one at init and
    # a tracer under jit) keeps it, so init and update build the same chain — as optax.adamw does.
    if not (isinstance(weight_decay, (int, float)) and weight_decay == 0):
        parts.append(optax.add_decayed_weights(weight_decay, weight_decay_mask))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)


def sign_descent(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float | None = None,
    weight_decay: float = 0.0,
    *,
    nesterov: bool = False,
    dual_norm_scale: bool = False,
    weight_decay_mask: Any = None,
) -> optax.GradientTransformation:
    """Sign descent W ← W − η (sign(m) + wd·W), m = gradient or its momentum (signSGD / Signum).

    Pass ``params`` to ``update`` when ``weight_decay > 0`` (optax.add_decayed_weights needs them).
    """
    return _descent(scale_by_sign(dual_norm_scale), learning_rate, momentum, nesterov, weight_decay, weight_decay_mask)


def spectral_sign_descent(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float | None = None,
    weight_decay: float = 0.0,
    *,
    norm: Literal["exact", "power", "krylov"] | NormFn = "exact",
    power_iters: int = 20,
    nesterov: bool = False,
    weight_decay_mask: Any = None,
) -> optax.GradientTransformation:
    """Q9's optimizer: W ← W − η √(d_out/d_in) sign(∇W)/‖sign(∇W)‖_* (sign(g) for vectors)."""
    core = scale_by_spectral_sign(norm, power_iters)
    return _descent(core, learning_rate, momentum, nesterov, weight_decay, weight_decay_mask)


def orthogonal_descent(
    learning_rate: optax.ScalarOrSchedule,
    method: Literal["svd", "newton_schulz"] = "svd",
    momentum: float | None = None,
    weight_decay: float = 0.0,
    *,
    ns_steps: int = 5,
    dual_norm_scale: bool = False,
    nesterov: bool = False,
    weight_decay_mask: Any = None,
) -> optax.GradientTransformation:
    """Q10's optimizer: W ← W − η √(d_out/d_in) U Vᵀ for ∇W = U Σ Vᵀ (sign(g) for vectors).

    With ``method="newton_schulz"`` and momentum this is Muon without its Adam fallback.
    """
    core = scale_by_orthogonalization(method, ns_steps, dual_norm_scale)
    return _descent(core, learning_rate, momentum, nesterov, weight_decay, weight_decay_mask)
