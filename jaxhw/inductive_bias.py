"""Part 3 (Q12–Q14): train MLPs and a CNN on CIFAR-100 with one recipe, and decide what the numbers say.

The experiment script only chooses settings; everything it reports is computed here:
``ArchSpec`` names a model and its factory, ``train_classifier`` runs the shared training
engine on one architecture (with checkpoints and resume), and ``compare_architectures`` /
``depth_verdict`` turn final accuracies into the sentences the report prints, so those
conclusions are tested functions of the run's numbers, never prose typed in advance.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhw import data, train
from jaxhw.models import MLP, make_cnn


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """An architecture to compare: a short name, a label for plots and a model factory.

    ``data_parallel``: shard each batch over all local devices. True for the CNN (on a 2-core CPU
    split into 4 JAX CPU devices it trains ≈1.5× faster); False keeps a model on one device — the
    MLPs' steps take a few milliseconds, and splitting them only adds collective overhead.
    """

    name: str
    label: str
    make: Callable[[], nn.Module]
    data_parallel: bool = False


def default_architectures(deeper_mlp_depths: Sequence[int] = ()) -> list[ArchSpec]:
    """Q14's three models (MLP w=128 d=3, MLP w=128 d=7, the 4-conv + 3-dense CNN) plus deeper MLPs."""
    specs = [
        ArchSpec("mlp_d3", "MLP (w=128, d=3)", lambda: MLP(width=128, depth=3)),
        ArchSpec("mlp_d7", "MLP (w=128, d=7)", lambda: MLP(width=128, depth=7)),
        ArchSpec("cnn", "CNN (4 conv + 3 dense)", make_cnn, data_parallel=True),
    ]
    for depth in deeper_mlp_depths:
        specs.append(ArchSpec(f"mlp_d{depth}", f"MLP (w=128, d={depth})", lambda d=depth: MLP(width=128, depth=d)))
    return specs


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One training recipe for every architecture (so differences come from the architecture).

    AdamW with a one-cycle schedule, label smoothing, random crop + flip: the recipe of the
    PyTorch reference run in the issue, so our numbers can be set beside it.
    """

    epochs: int = 20
    batch_size: int = 128
    peak_lr: float = 2e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    augment: bool = True
    eval_batch_size: int = 500


def make_optimizer(recipe: Recipe, steps_per_epoch: int) -> optax.GradientTransformation:
    schedule = optax.cosine_onecycle_schedule(
        transition_steps=recipe.epochs * steps_per_epoch, peak_value=recipe.peak_lr, pct_start=0.25
    )
    # Decay matrices and conv kernels only; biases and BatchNorm scales are left alone.
    return optax.adamw(schedule, weight_decay=recipe.weight_decay, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p))


def count_params(params: Any) -> int:
    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


def forward_flops(model: nn.Module, variables: Any, image_shape=(32, 32, 3)) -> float:
    """XLA's FLOP count of one image's forward pass (inference mode)."""
    x = jnp.zeros((1, *image_shape), jnp.float32)
    compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


@dataclasses.dataclass
class ClassifierRun:
    """What training one architecture produced."""

    name: str
    seed: int
    history: list[dict]
    test_accuracy: float
    test_loss: float
    params: int
    flops_per_image: float
    seconds: float  # training time summed over epochs (survives --resume)


def run_identity(spec: ArchSpec, model: nn.Module, splits, recipe: Recipe, seed: int) -> dict[str, Any]:
    """What makes two training runs the same run (stored with the checkpoints, checked on resume):
    the model with all its settings, the recipe, the seed and each split's size and content hash."""
    import hashlib

    def digest(a: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]

    return {
        "model": f"{spec.name}: {' '.join(repr(model).split())}",
        "recipe": dataclasses.asdict(recipe),
        "seed": seed,
        "data": {name: {"n": len(x), "sha256_x": digest(x), "sha256_y": digest(y)} for name, (x, y) in splits.items()},
    }


def train_classifier(
    spec: ArchSpec,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    recipe: Recipe,
    *,
    seed: int,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    history_path: Path | None = None,
    progress: bool = True,
) -> ClassifierRun:
    """Train ``spec`` on ``splits["train"]``, validate every epoch on ``splits["val"]``, then test once."""
    x_tr, y_tr = splits["train"]
    steps = len(x_tr) // recipe.batch_size
    if steps < 1:
        raise ValueError(f"{len(x_tr)} training images is fewer than one batch of {recipe.batch_size}")
    model = spec.make()
    loss_fn = train.classification_loss(data.cifar_preprocess(recipe.augment), recipe.label_smoothing)
    state = train.create_train_state(model, make_optimizer(recipe, steps), jnp.zeros((1, *x_tr.shape[1:])), seed)
    variables = {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}
    flops = forward_flops(model, variables, x_tr.shape[1:])

    def eval_batches(split: str):
        x, y = splits[split]
        return lambda: data.iterate_batches({"x": x, "y": y}, recipe.eval_batch_size)

    state, history = train.fit(
        state,
        train_step=train.make_train_step(loss_fn),
        eval_step=(eval_step := train.make_eval_step(loss_fn)),
        train_batches=lambda epoch: data.iterate_batches(
            {"x": x_tr, "y": y_tr}, recipe.batch_size, seed=seed, epoch=epoch, drop_remainder=True
        ),
        eval_batches={"val": eval_batches("val")},
        epochs=recipe.epochs,
        steps_per_epoch=steps,
        mesh=train.data_mesh() if spec.data_parallel else train.single_device_mesh(),
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        run_info=run_identity(spec, model, splits, recipe, seed),
        history_path=history_path,
        desc=f"{spec.name} seed {seed}",
        progress=progress,
    )
    test = train.evaluate(eval_step, state, eval_batches("test")())
    return ClassifierRun(
        name=spec.name,
        seed=seed,
        history=history,
        test_accuracy=test["accuracy"],
        test_loss=test["loss"],
        params=count_params(state.params),
        flops_per_image=flops,
        seconds=float(sum(h["train_seconds"] for h in history)),
    )


# ---------------------------------------------------------------------------------------------
# Conclusions, decided from numbers
# ---------------------------------------------------------------------------------------------


def compare_architectures(accuracy: dict[str, Sequence[float]], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Rank architectures by mean accuracy; say whether the winner's lead exceeds the seed spread.

    Args:
      accuracy: name → accuracies (one per seed).
    Returns:
      ``{"ranking": [(name, mean), ...], "best": name, "margin": best − runner-up,
      "clear": margin > 2·(largest std, or 0.5 percentage points if one seed)}``.
    """
    if not accuracy:
        raise ValueError("compare_architectures needs at least one architecture")
    means = {k: float(np.mean(v)) for k, v in accuracy.items()}
    stds = [float(np.std(v)) for v in accuracy.values() if len(v) > 1]
    noise = max(stds) if stds else 0.005
    ranking = sorted(means.items(), key=lambda kv: -kv[1])
    margin = ranking[0][1] - ranking[1][1] if len(ranking) > 1 else float("inf")
    return {"ranking": ranking, "best": ranking[0][0], "margin": margin, "clear": margin > 2 * noise}


def depth_verdict(acc_by_depth: dict[int, float], tolerance: float = 0.01) -> dict[str, Any]:
    """Does making the MLP deeper help? Compare each depth with the shallowest one.

    ``helps`` is True only when some deeper MLP beats the shallowest by more than
    ``tolerance`` (absolute accuracy); ``best_depth`` is the depth with the highest accuracy.
    """
    if len(acc_by_depth) < 2:
        raise ValueError("depth_verdict needs at least two depths")
    depths = sorted(acc_by_depth)
    base = acc_by_depth[depths[0]]
    gains = {d: acc_by_depth[d] - base for d in depths[1:]}
    best_depth = max(depths, key=lambda d: acc_by_depth[d])
    return {"base_depth": depths[0], "gains": gains, "best_depth": best_depth,
            "helps": any(g > tolerance for g in gains.values())}


def meets_target(accuracies: Sequence[float], target: float) -> bool:
    """Does the *mean* accuracy over seeds reach ``target``? (One lucky seed is not enough.)"""
    acc = np.asarray(accuracies, dtype=float)
    if acc.size == 0 or not np.all(np.isfinite(acc)):
        raise ValueError(f"meets_target needs finite accuracies, got {list(accuracies)!r}")
    return bool(acc.mean() >= target)
