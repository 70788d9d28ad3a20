"""Learning-rate transfer across width (problem set Q9–Q10): sweeps, grid extension, verdict.

The protocol: for each optimizer, sweep the learning rate η on a log₂ grid at a small width,
take the best η, and check whether it is (close to) the best η of a much wider network.

* :func:`make_optimizer` — the three optimizers compared: (a) sign descent with Flax's standard
  (LeCun-normal) init, (b) the problem set's scheme, semi-orthogonal init √(d_out/d_in)·M and
  update −η√(d_out/d_in)·sign(∇)/‖sign(∇)‖_*, (c) the orthogonalized update −η√(d_out/d_in)·UVᵀ.
  All transforms come from :mod:`jaxhw.optim` / :mod:`jaxhw.linalg`.
* :func:`train_lr_grid` — one compiled program trains the same network at every η of a grid at
  once (``jax.vmap`` over η; all runs share the initial weights and the minibatch sequence, so
  the curves differ only through η).
* :func:`sweep` — runs a grid and extends it until the best η lies strictly inside.
* :func:`transfer_verdict` — the pure decision rule (unit-tested) that the report quotes.

Shapes: images are flattened to (N, D); Flax Dense kernels are (d_in, d_out).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhw import linalg, optim, spectral
from jaxhw.data import normalize_images
from jaxhw.models.mlp import MLP

OptimizerName = Literal["sign", "spectral_sign", "orthogonal"]
OPTIMIZERS: tuple[str, ...] = ("sign", "spectral_sign", "orthogonal")
LABELS = {
    "sign": "(a) sign descent, standard init",
    "spectral_sign": "(b) √(d_out/d_in)·sign(∇)/‖sign(∇)‖_*, semi-orthogonal init",
    "orthogonal": "(c) √(d_out/d_in)·UVᵀ (Newton–Schulz), semi-orthogonal init",
}


# --------------------------------------------------------------------------------------------
# Data and models
# --------------------------------------------------------------------------------------------


def flatten_images(x: np.ndarray, pool: int = 1) -> np.ndarray:
    """uint8 (N, H, W, C) images → standardised float32 (N, (H/pool)·(W/pool)·C).

    ``pool`` > 1 averages pool×pool pixel blocks first: a 16×16 CIFAR image keeps the content but
    makes the input layer 4× cheaper, which matters for the orthogonalized update (its cost is
    cubic in the short side of each weight matrix).
    """
    x = np.asarray(x)
    if x.ndim != 4 or x.dtype != np.uint8:
        raise ValueError(f"images must be uint8 of shape (N, H, W, C), got {x.dtype} {x.shape}")
    if pool < 1 or x.shape[1] % pool or x.shape[2] % pool:
        raise ValueError(f"pool must be a positive divisor of H={x.shape[1]} and W={x.shape[2]}, got {pool}")
    z = np.asarray(normalize_images(x), dtype=np.float32)
    n, h, w, c = z.shape
    z = z.reshape(n, h // pool, pool, w // pool, pool, c).mean(axis=(2, 4))
    return z.reshape(n, -1)


def make_model(width: int, depth: int, num_classes: int, name: OptimizerName) -> MLP:
    """The bias-free MLP of the sweep with the initialisation that belongs to optimizer ``name``.

    Bias-free so that every parameter is a matrix and receives the optimizer's matrix rule.
    """
    _check_name(name)
    init = nn.initializers.lecun_normal() if name == "sign" else linalg.semi_orthogonal_init("sqrt_ratio")
    return MLP(width=width, depth=depth, num_classes=num_classes, kernel_init=init, use_bias=False)


KRYLOV_STEPS = 8  # Golub–Kahan steps for (b)'s ‖sign(∇)‖_*: ~1e-3 accurate, far cheaper than an SVD


def make_optimizer(
    name: OptimizerName,
    learning_rate: float,
    *,
    norm: Literal["exact", "power", "krylov"] = "krylov",
    ortho_method: Literal["svd", "newton_schulz"] = "newton_schulz",
) -> optax.GradientTransformation:
    """The optimizer of the comparison, from :mod:`jaxhw.optim` (no momentum, no weight decay).

    Args:
      name: ``"sign"`` (a), ``"spectral_sign"`` (b) or ``"orthogonal"`` (c).
      learning_rate: η.
      norm: how (b) computes ‖sign(∇)‖_*: exact SVD, power iteration, or ``KRYLOV_STEPS``
        Golub–Kahan steps (default: exact to ~1e-3 at a fraction of an SVD's cost).
      ortho_method: how (c) computes UVᵀ; Newton–Schulz by default (an SVD per step would
        dominate the run time at large width).
    """
    _check_name(name)
    if name == "sign":
        return optim.sign_descent(learning_rate)
    if name == "spectral_sign":
        return optim.spectral_sign_descent(learning_rate, norm=norm, power_iters=KRYLOV_STEPS)
    return optim.orthogonal_descent(learning_rate, method=ortho_method)


def _check_name(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {OPTIMIZERS}, got {name!r}")


# --------------------------------------------------------------------------------------------
# Training a whole η grid in one program
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GridRun:
    """Outputs of :func:`train_lr_grid` for K learning rates (arrays have leading axis K).

    ``train_loss`` is the cross-entropy of the final weights on a fixed training subset (the
    quantity compared across η); ``train_curve`` (K, steps) the minibatch loss at every step;
    ``val_loss``/``val_acc`` on the held-out split.
    """

    etas: np.ndarray
    train_loss: np.ndarray
    val_loss: np.ndarray
    val_acc: np.ndarray
    train_curve: np.ndarray
    seconds: float


def _xent(logits: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@functools.partial(jax.jit, static_argnames=("model", "tx", "steps", "batch_size", "eval_chunk"))
def _train_grid(model, tx, params0, etas, x, y, x_fit, y_fit, x_val, y_val, key, steps, batch_size, eval_chunk):
    K = etas.shape[0]
    params = jax.tree.map(lambda p: jnp.broadcast_to(p, (K,) + p.shape), params0)
    opt_state = jax.vmap(tx.init)(params)

    def loss_of(p, xb, yb):
        return _xent(model.apply({"params": p}, xb), yb)

    grad_fn = jax.vmap(jax.value_and_grad(loss_of), in_axes=(0, None, None))

    def step(carry, t):
        params, opt_state = carry
        idx = jax.random.randint(jax.random.fold_in(key, t), (batch_size,), 0, x.shape[0])
        loss, grads = grad_fn(params, x[idx], y[idx])
        # The optimizers are stateless and their update is linear in η: build them with η = 1
        # and scale per run, so one program serves the whole grid.
        updates, opt_state = jax.vmap(tx.update)(grads, opt_state, params)
        params = jax.tree.map(lambda p, u: p + etas.reshape((K,) + (1,) * (u.ndim - 1)) * u, params, updates)
        return (params, opt_state), loss

    (params, _), curve = jax.lax.scan(step, (params, opt_state), jnp.arange(steps))

    def evaluate(xs, ys):
        def chunk_stats(p):
            def body(c, i):
                xb = jax.lax.dynamic_slice_in_dim(xs, i * eval_chunk, eval_chunk)
                yb = jax.lax.dynamic_slice_in_dim(ys, i * eval_chunk, eval_chunk)
                logits = model.apply({"params": p}, xb)
                loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).sum()
                correct = (jnp.argmax(logits, -1) == yb).sum()
                return (c[0] + loss, c[1] + correct), None

            (loss, correct), _ = jax.lax.scan(body, (0.0, 0), jnp.arange(xs.shape[0] // eval_chunk))
            n = (xs.shape[0] // eval_chunk) * eval_chunk
            return loss / n, correct / n

        return jax.lax.map(chunk_stats, params)

    fit_loss, _ = evaluate(x_fit, y_fit)
    val_loss, val_acc = evaluate(x_val, y_val)
    return fit_loss, val_loss, val_acc, curve.T


def train_lr_grid(
    model: nn.Module,
    tx_unit: optax.GradientTransformation,
    etas: Sequence[float],
    data: dict[str, np.ndarray],
    *,
    steps: int,
    batch_size: int,
    seed: int = 0,
    eval_chunk: int = 1000,
) -> GridRun:
    """Train ``model`` with ``η·tx_unit`` for every η in ``etas``, in one jitted, vmapped program.

    Every η starts from the same weights (``seed``) and sees the same minibatches (sampled with
    replacement from ``data["x_train"]``), so differences between runs are due to η alone.
    ``tx_unit`` must be a *stateless* transform built with learning rate 1 whose update is linear
    in η (true for the three optimizers of :func:`make_optimizer`; tested).

    Args:
      data: ``x_train, y_train`` (training), ``x_fit, y_fit`` (fixed subset on which the final
        training loss is measured), ``x_val, y_val``; x arrays are (N, D) float32.
    """
    etas = np.asarray(etas, dtype=np.float32)
    if etas.ndim != 1 or etas.size == 0 or np.any(etas <= 0):
        raise ValueError(f"etas must be a non-empty 1-D array of positive learning rates, got {etas!r}")
    for k in ("x_train", "y_train", "x_fit", "y_fit", "x_val", "y_val"):
        if k not in data:
            raise ValueError(f"data is missing {k!r}; expected keys x_train, y_train, x_fit, y_fit, x_val, y_val")
    for k in ("x_fit", "x_val"):
        if len(data[k]) < eval_chunk:
            raise ValueError(f"{k} has {len(data[k])} rows, fewer than eval_chunk={eval_chunk}")
    key_init, key_data = jax.random.split(jax.random.PRNGKey(seed))
    params0 = model.init(key_init, jnp.asarray(data["x_train"][:1]))["params"]
    args = [jnp.asarray(data[k]) for k in ("x_train", "y_train", "x_fit", "y_fit", "x_val", "y_val")]
    t0 = time.perf_counter()
    out = _train_grid(model, tx_unit, params0, jnp.asarray(etas), *args, key_data, steps, batch_size, eval_chunk)
    fit_loss, val_loss, val_acc, curve = jax.device_get(jax.block_until_ready(out))
    return GridRun(etas, np.asarray(fit_loss), np.asarray(val_loss), np.asarray(val_acc), np.asarray(curve),
                   time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# Sweeps on a log₂ grid with extension
# --------------------------------------------------------------------------------------------


def best_index(losses: Sequence[float]) -> int:
    """Index of the smallest loss; NaN/inf (diverged runs) count as worse than any finite loss."""
    loss = np.asarray(losses, dtype=np.float64)
    if loss.ndim != 1 or loss.size == 0:
        raise ValueError(f"losses must be a non-empty 1-D sequence, got shape {loss.shape}")
    loss = np.where(np.isfinite(loss), loss, np.inf)
    if np.all(np.isinf(loss)):
        raise ValueError("every run diverged (all losses non-finite): lower the learning-rate grid")
    return int(np.argmin(loss))


def is_interior(losses: Sequence[float]) -> bool:
    """True when the best loss is strictly inside the grid (not the first or last point)."""
    i = best_index(losses)
    return 0 < i < len(losses) - 1


@dataclasses.dataclass
class Sweep:
    """Final training loss as a function of log₂ η at one width (points kept sorted)."""

    log2_etas: list[int] = dataclasses.field(default_factory=list)
    losses: list[float] = dataclasses.field(default_factory=list)
    val_losses: list[float] = dataclasses.field(default_factory=list)
    val_accs: list[float] = dataclasses.field(default_factory=list)
    curves: dict[int, list[float]] = dataclasses.field(default_factory=dict)
    extensions: int = 0
    seconds: float = 0.0

    def add(self, log2_etas: Sequence[int], run: GridRun) -> None:
        for j, k in enumerate(log2_etas):
            self.log2_etas.append(int(k))
            self.losses.append(float(run.train_loss[j]))
            self.val_losses.append(float(run.val_loss[j]))
            self.val_accs.append(float(run.val_acc[j]))
            self.curves[int(k)] = run.train_curve[j].tolist()
        order = np.argsort(self.log2_etas)
        for name in ("log2_etas", "losses", "val_losses", "val_accs"):
            setattr(self, name, [getattr(self, name)[i] for i in order])
        self.seconds += run.seconds

    @property
    def best_log2(self) -> int:
        return self.log2_etas[best_index(self.losses)]

    @property
    def best_loss(self) -> float:
        return self.losses[best_index(self.losses)]

    @property
    def interior(self) -> bool:
        return is_interior(self.losses)

    def loss_at(self, log2_eta: int) -> float:
        return self.losses[self.log2_etas.index(int(log2_eta))]

    def spread(self) -> float:
        """max − min of the finite final losses: how strongly η matters within the budget."""
        finite = [v for v in self.losses if math.isfinite(v)]
        return float(max(finite) - min(finite)) if finite else float("nan")


def sweep(
    run_grid: Callable[[Sequence[int]], GridRun],
    log2_grid: Sequence[int],
    *,
    existing: Sweep | None = None,
    extend_by: int = 2,
    max_extensions: int = 4,
) -> Sweep:
    """Evaluate η = 2^k for k in ``log2_grid`` (skipping points already in ``existing``), then
    extend the grid by ``extend_by`` points on the side where the best η sits, until the best is
    strictly inside or ``max_extensions`` is reached (then ``Sweep.interior`` is False and the
    report must say so).

    ``run_grid(list_of_k) -> GridRun`` trains every η = 2^k of the list in one call.
    """
    result = existing if existing is not None else Sweep()
    todo = sorted(set(int(k) for k in log2_grid) - set(result.log2_etas))
    if todo:
        result.add(todo, run_grid(todo))
    while not result.interior and result.extensions < max_extensions:
        i = best_index(result.losses)
        ks = result.log2_etas
        if i == 0:
            new = list(range(ks[0] - extend_by, ks[0]))
        else:
            new = list(range(ks[-1] + 1, ks[-1] + 1 + extend_by))
        result.add(new, run_grid(new))
        result.extensions += 1
    return result


# --------------------------------------------------------------------------------------------
# The verdict
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TransferVerdict:
    """How the best η moves from the smallest to the largest width, in grid steps (factor 2).

    ``shift`` = log₂(η*_large / η*_small); ``transfers`` ⇔ |shift| ≤ ``tol_steps``; ``drifts`` ⇔
    |shift| > ``tol_steps``; ``loss_gap`` = L_large(η*_small) − L_large(η*_large) ≥ 0, the price
    of using the small width's η at large width; ``rel_gap`` the same relative to L_large(η*_large).
    """

    shift: int
    transfers: bool
    loss_gap: float
    rel_gap: float
    both_interior: bool


def transfer_verdict(
    best_log2_small: int,
    best_log2_large: int,
    loss_large_at_small_best: float,
    loss_large_best: float,
    *,
    tol_steps: int = 1,
    both_interior: bool = True,
) -> TransferVerdict:
    """Decide whether the learning rate transfers from small to large width (pure function)."""
    if tol_steps < 0:
        raise ValueError(f"tol_steps must be ≥ 0, got {tol_steps}")
    shift = int(best_log2_large) - int(best_log2_small)
    gap = float(loss_large_at_small_best) - float(loss_large_best)
    rel = gap / abs(float(loss_large_best)) if loss_large_best else float("nan")
    return TransferVerdict(shift, abs(shift) <= tol_steps, gap, rel, bool(both_interior))


def experiment_succeeds(verdicts: dict[str, TransferVerdict]) -> bool:
    """The issue's success criterion: (b) and (c) transfer (≤ 1 grid step, best η interior at
    both widths) while the naive baseline (a) drifts by more than that."""
    missing = [n for n in OPTIMIZERS if n not in verdicts]
    if missing:
        raise ValueError(f"verdicts missing for {missing}")
    good = all(verdicts[n].transfers and verdicts[n].both_interior for n in ("spectral_sign", "orthogonal"))
    return good and not verdicts["sign"].transfers


def better_optimizer(best_losses: dict[str, float], tol: float = 0.0) -> tuple[str, bool]:
    """The optimizer with the lowest best loss, and whether it beats every other by more than
    ``tol`` (Q10: is the orthogonalized update "better" in the same step budget?)."""
    if not best_losses:
        raise ValueError("best_losses is empty")
    finite = {k: float(v) for k, v in best_losses.items() if math.isfinite(float(v))}
    if not finite:
        raise ValueError(f"no finite loss in {best_losses}")
    winner = min(finite, key=finite.get)
    others = [v for k, v in finite.items() if k != winner]
    return winner, all(v - finite[winner] > tol for v in others)


def budget_separates(spreads: Sequence[float], min_spread: float = 0.1) -> bool:
    """True when every sweep's final losses differ across η by at least ``min_spread`` nats — the
    step budget is long enough for η to matter (otherwise "best η" is noise)."""
    s = np.asarray(spreads, dtype=np.float64)
    if s.size == 0:
        raise ValueError("spreads is empty")
    return bool(np.all(np.isfinite(s)) and np.all(s >= min_spread))


def refine_log2_optimum(log2_etas: Sequence[float], losses: Sequence[float]) -> float:
    """Sub-grid estimate of the best log₂ η: vertex of the parabola through the best grid point and
    its two neighbours (the grid point itself when it is on the edge or a neighbour diverged).

    Near-ties between neighbouring grid points make the grid argmin jump by a whole step on
    noise; the vertex moves continuously, so it shows how far the optimum really moved.
    """
    k = np.asarray(log2_etas, dtype=np.float64)
    loss = np.asarray(losses, dtype=np.float64)
    if k.shape != loss.shape:
        raise ValueError(f"log2_etas and losses differ in length: {k.size} vs {loss.size}")
    i = best_index(loss)
    if i == 0 or i == len(k) - 1 or not np.all(np.isfinite(loss[i - 1 : i + 2])):
        return float(k[i])
    a, b, _ = np.polyfit(k[i - 1 : i + 2], loss[i - 1 : i + 2], 2)
    if a <= 0:  # not convex: no interior minimum to refine
        return float(k[i])
    return float(np.clip(-b / (2 * a), k[i - 1], k[i + 1]))
