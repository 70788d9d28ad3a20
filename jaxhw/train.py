"""The training engine every experiment shares: jitted steps, data-parallel fit loop, checkpoints.

* ``train_step(state, batch) -> (state, metrics)`` and ``eval_step(state, batch) -> metrics`` are
  pure functions built from a *loss function* and compiled once with ``jax.jit``; any optax
  optimizer plugs in through the state's ``tx``.
* Data parallelism uses JAX's own sharding: a 1-D ``Mesh`` over all local devices with axis
  ``"data"``; each batch is sharded along its leading axis, parameters are replicated, and XLA
  (GSPMD) inserts the gradient all-reduce. The same code runs on 1 CPU, 8 GPUs or a TPU slice.
* ``fit`` runs epochs with a progress bar (throughput, ETA), keeps a per-epoch metrics history
  (JSON + CSV), checkpoints every epoch with orbax and resumes bit-for-bit: the data order of
  epoch e depends only on (seed, e), and the PRNG key for step s is ``fold_in(key, s)``.

Metrics convention: a loss function returns per-batch *sums* (``loss``, ``correct``, …) and a
``count``; epoch means are sums / count, so masked (padded) examples never bias a mean.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

Batch = Mapping[str, Any]
Metrics = dict[str, jax.Array]
# loss_fn(apply_fn, variables, batch, rng, train) -> (mean loss, (metric sums, mutated collections))
LossFn = Callable[[Callable[..., Any], dict, Batch, jax.Array, bool], tuple[jax.Array, tuple[Metrics, dict]]]


class TrainState(train_state.TrainState):
    """flax's TrainState plus BatchNorm statistics and a PRNG key (dropout, augmentation)."""

    batch_stats: Any = None
    rng: jax.Array | None = None


def create_train_state(
    model: flax.linen.Module,
    tx: optax.GradientTransformation,
    example_input: Any,
    seed: int | jax.Array,
    **init_kwargs: Any,
) -> TrainState:
    """Initialise ``model`` on ``example_input`` and pair it with the optimizer ``tx``.

    ``seed``: an integer, or a PRNG key (``jax.random.key`` / ``PRNGKey``) to derive everything from.
    """
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        key = jax.random.PRNGKey(seed)
    elif isinstance(seed, jax.Array) and jnp.issubdtype(seed.dtype, jax.dtypes.prng_key) and seed.shape == ():
        key = jax.random.key_data(seed)  # raw uint32 keys: what the state and its checkpoints hold
    elif isinstance(seed, jax.Array) and seed.dtype == jnp.uint32 and seed.shape == (2,):
        key = seed
    else:
        raise TypeError(f"seed must be an int or a PRNG key, got {seed!r}")
    init_key, state_key = jax.random.split(key)
    # Jitted: op-by-op initialisation of a message-passing model is several times slower.
    variables = _jitted_init(model, tuple(sorted(init_kwargs.items())))(init_key, example_input)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats"),
        rng=state_key,
    )


def _jitted_init(model: flax.linen.Module, init_kwargs: tuple) -> Callable:
    """``jax.jit(model.init)``, shared per (model, kwargs), so that initialising an equal model again
    (ensemble members, repeated runs) reuses the compiled program instead of compiling anew."""
    try:
        hash((model, init_kwargs))
    except TypeError:  # an unhashable module field or kwarg: no sharing
        return jax.jit(functools.partial(model.init, **dict(init_kwargs)))
    return _shared_jitted_init(model, init_kwargs)


@functools.lru_cache(maxsize=32)
def _shared_jitted_init(model: flax.linen.Module, init_kwargs: tuple) -> Callable:
    return jax.jit(functools.partial(model.init, **dict(init_kwargs)))


def _variables(state: TrainState, params: Any) -> dict:
    variables = {"params": params}
    if state.batch_stats is not None:
        variables["batch_stats"] = state.batch_stats
    return variables


def make_train_step(loss_fn: LossFn, *, donate: bool = True) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """A jitted ``train_step(state, batch) -> (state, metric sums)`` for any loss and optimizer.

    With ``donate=True`` (default) the input state's buffers are reused for the output, halving
    peak memory; the old state is then deleted — keep only the returned one, or pass ``donate=False``.
    """

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        rng = jax.random.fold_in(state.rng, state.step)

        def objective(params):
            return loss_fn(state.apply_fn, _variables(state, params), batch, rng, True)

        (_, (metrics, mutated)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        new_state = state.apply_gradients(
            grads=grads, batch_stats=mutated.get("batch_stats", state.batch_stats)
        )
        return new_state, metrics

    return jax.jit(train_step, donate_argnums=(0,) if donate else ())


def make_eval_step(loss_fn: LossFn) -> Callable[[TrainState, Batch], Metrics]:
    """A jitted ``eval_step(state, batch) -> metric sums`` (``train=False``: no dropout, running BN stats)."""

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        _, (metrics, _) = loss_fn(state.apply_fn, _variables(state, state.params), batch, state.rng, False)
        return metrics

    return jax.jit(eval_step)


def classification_loss(
    preprocess: Callable[[jax.Array, jax.Array, bool], jax.Array] | None = None,
    label_smoothing: float = 0.0,
) -> LossFn:
    """Softmax cross-entropy for batches ``{"x", "y"[, "mask"]}``.

    ``preprocess(x, rng, train)`` runs inside the jitted step (e.g. uint8 → normalised float and
    random crop/flip), so images travel to the device as bytes. Metric sums: ``loss`` (plain
    cross-entropy, no smoothing), ``correct`` and ``count``; masked-out examples count nowhere.
    A label outside ``[0, num_classes)`` on a counted example makes the loss NaN: one-hot encoding
    would otherwise turn it into a silent zero loss, and a jitted step cannot raise.
    """

    def loss_fn(apply_fn, variables, batch, rng, train):
        aug_key, dropout_key = jax.random.split(rng)
        x = batch["x"] if preprocess is None else preprocess(batch["x"], aug_key, train)
        mutable = ["batch_stats"] if (train and "batch_stats" in variables) else False
        out = apply_fn(variables, x, train=train, rngs={"dropout": dropout_key}, mutable=mutable)
        logits, mutated = out if mutable else (out, {})
        labels = batch["y"]
        mask = batch.get("mask", jnp.ones(labels.shape, jnp.float32)).astype(jnp.float32)
        num_classes = logits.shape[-1]
        onehot = jax.nn.one_hot(labels, num_classes)
        smoothed = optax.smooth_labels(onehot, label_smoothing) if label_smoothing else onehot
        bad_label = ((labels < 0) | (labels >= num_classes)) & (mask > 0)
        per_example = jnp.where(bad_label, jnp.nan, optax.softmax_cross_entropy(logits, smoothed))
        count = jnp.maximum(mask.sum(), 1.0)
        loss = (per_example * mask).sum() / count
        plain = jnp.where(bad_label, jnp.nan, optax.softmax_cross_entropy(logits, onehot)) if label_smoothing else per_example
        metrics = {
            "loss": (plain * mask).sum(),
            "correct": ((jnp.argmax(logits, -1) == labels) * mask).sum(),
            "count": mask.sum(),
        }
        return loss, (metrics, mutated)

    return loss_fn


# ---------------------------------------------------------------------------------------------
# Sharding: a 1-D data mesh
# ---------------------------------------------------------------------------------------------


def set_cpu_devices(n: int) -> None:
    """Expose the host CPU as ``n`` JAX devices; call before JAX runs anything.

    Why: XLA:CPU runs each device's share of a sharded step on its own thread, and its convolutions
    are faster on small batches, so on a 2-core machine the CIFAR CNN's batch of 128 split over
    4 CPU devices (32 each) trains ≈1.5× faster than on one device (the reference CNN ≈1.7×;
    ``benchmarks/bench_cifar.py``).
    The engine then uses them through the ordinary data mesh. GPU/TPU devices are unaffected.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"the number of CPU devices must be a positive integer, got {n!r}")
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError as err:
        raise RuntimeError(
            f"cannot set {n} CPU devices: JAX has already started its backends in this process "
            "(set the count before any JAX computation)"
        ) from err


def data_mesh(devices: Iterable[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``"data"`` over ``devices`` (default: all local devices)."""
    devs = np.asarray(list(devices) if devices is not None else jax.local_devices())
    return Mesh(devs, ("data",))


def single_device_mesh() -> Mesh:
    """A mesh of the first local device: for work whose batches must not be split (padded graphs,
    or steps too small to gain from sharding)."""
    return data_mesh(jax.local_devices()[:1])


def _needs_step_sync(mesh: Mesh | None) -> bool:
    """XLA:CPU collectives across several CPU devices can deadlock when many sharded steps are
    queued by asynchronous dispatch (the all-reduce rendezvous times out and aborts the process;
    reproduced here with a 3 ms MLP step on 2 and 4 CPU devices, cf. jax-ml/jax#25861). Keeping
    at most one step in flight avoids it and costs nothing measurable on the CNN."""
    return mesh is not None and mesh.devices.size > 1 and mesh.devices.flat[0].platform == "cpu"


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf on every device of ``mesh`` (parameters, optimizer state)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(batch: Batch, mesh: Mesh) -> Batch:
    """Split each array's leading axis over the ``"data"`` axis (replicate when it does not divide)."""
    n = mesh.devices.size

    def put(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        spec = P("data") if (x.ndim >= 1 and x.shape[0] % n == 0) else P()
        return jax.device_put(x, NamedSharding(mesh, spec))

    return jax.tree.map(put, batch)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def summarize(sums: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Metric sums → means (``loss`` → mean loss, ``correct`` → ``accuracy``), plus the count."""
    count = float(sums.get("count", 1.0)) or 1.0
    out: dict[str, float] = {}
    for key, value in sums.items():
        if key == "count":
            continue
        name = "accuracy" if key == "correct" else key
        out[prefix + name] = float(value) / count
    out[prefix + "count"] = count
    return out


def accumulate(total: dict[str, Any] | None, metrics: Mapping[str, Any]) -> dict[str, Any]:
    return dict(metrics) if total is None else {k: total[k] + metrics[k] for k in total}


def evaluate(
    eval_step: Callable[[TrainState, Batch], Metrics],
    state: TrainState,
    batches: Iterable[Batch],
    mesh: Mesh | None = None,
) -> dict[str, float]:
    """Run ``eval_step`` over all batches and return mean metrics."""
    total = None
    sync = _needs_step_sync(mesh)
    for batch in batches:
        total = accumulate(total, eval_step(state, shard_batch(batch, mesh) if mesh else batch))
        if sync:
            jax.block_until_ready(total)
    if total is None:
        raise ValueError("evaluate() got no batches")
    return summarize(jax.device_get(total))


# ---------------------------------------------------------------------------------------------
# Checkpoints (orbax)
# ---------------------------------------------------------------------------------------------


def _checkpoint_manager(directory: Path):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(
        Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False),
    )


def save_checkpoint(directory: Path, epoch: int, state: TrainState, history: list[dict]) -> None:
    """Save the whole train state and the metrics history as checkpoint ``epoch``."""
    import orbax.checkpoint as ocp

    with _checkpoint_manager(directory) as mngr:
        mngr.save(
            epoch,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), history=ocp.args.JsonSave(history)),
            force=True,
        )
        mngr.wait_until_finished()


@contextlib.contextmanager
def _absl_errors_muted():
    """orbax logs an ``ERROR:absl`` line for each unreadable metadata file; our own message names
    the damaged checkpoint, so those lines are muted while checkpoints are probed."""
    import logging

    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence file descriptor 2 while orbax reads a checkpoint.

    Why: when a damaged checkpoint fails to load, tensorstore's pending reads call back into
    orbax's already-closed asyncio loop and print hundreds of 'Event loop is closed' tracebacks
    from native threads; our own one-line message says what happened instead. Python-level
    exceptions still propagate; anything written to stderr meanwhile is kept only on success.
    """
    import os
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            time.sleep(0.5 if not ok else 0)  # let failed reads finish complaining into the sink (slow under load)
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if ok:  # a successful restore's warnings are worth seeing
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))


class _DropUnretrievedReadErrors:
    """logging filter: after orbax fails to read a damaged checkpoint, its abandoned asyncio read
    tasks are logged at garbage collection as "exception was never retrieved" with a full
    TensorStore traceback each (thousands of lines for one CNN). ``restore_checkpoint`` has already
    named the damaged checkpoint in one line, so exactly those records are dropped."""

    def filter(self, record) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message += str(record.exc_info[1])
        return not ("never retrieved" in message and _is_orbax_read_error(message))


_UNRETRIEVED_FILTER = _DropUnretrievedReadErrors()


def _is_orbax_read_error(text: str) -> bool:
    """The messages orbax/TensorStore give for an unreadable array (seen: both of these forms)."""
    return "while reading array index" in text or ("OUT_OF_RANGE" in text and "OCDBT" in text) or "TensorStore" in text


def _mute_unretrieved_read_errors() -> None:
    """Install the filter above, and the same rule for the coroutines that Python reports through
    ``sys.unraisablehook`` ("Exception ignored in: <coroutine _read_array_index…>") and for reader
    threads (``threading.excepthook``)."""
    import logging
    import sys

    logger = logging.getLogger("asyncio")
    if _UNRETRIEVED_FILTER in logger.filters:
        return
    logger.addFilter(_UNRETRIEVED_FILTER)
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if not (_is_orbax_read_error(str(unraisable.exc_value)) or "orbax" in repr(unraisable.object)):
            previous(unraisable)

    sys.unraisablehook = hook
    import threading

    previous_thread_hook = threading.excepthook

    def thread_hook(args) -> None:  # a reader thread that dies on the same error
        if not _is_orbax_read_error(str(args.exc_value)):
            previous_thread_hook(args)

    threading.excepthook = thread_hook


class CheckpointConflictError(ValueError):
    """Checkpoints on disk that this run must not silently use or overwrite (the CLI prints these
    as one line; nothing is deleted)."""


class IncompatibleCheckpointError(CheckpointConflictError):
    """The checkpoints were written by a different model or run (parameter shapes, data, recipe or
    seed differ): a resume cannot use them, and they are not damaged, so they are left where they are."""


class UnfinishedRunError(CheckpointConflictError):
    """A fresh run (no resume) found the checkpoints of an unfinished run: starting over would throw
    away the epochs already trained, so the user must choose (``--resume``, or delete / another --out)."""


RUN_INFO_FILE = "run_info.json"


def _first_difference(stored: Any, wanted: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """The first (dotted key, stored value, wanted value) at which two JSON values differ."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        for key in sorted(set(stored) | set(wanted)):
            found = _first_difference(stored.get(key, "absent"), wanted.get(key, "absent"), f"{where}.{key}".lstrip("."))
            if found:
                return found
        return None
    return None if stored == wanted else (where or "value", stored, wanted)


def prepare_checkpoint_dir(directory: Path, run_info: Mapping[str, Any] | None, epochs: int, resume: bool,
                           devices: int | None = None) -> None:
    """Check what ``directory`` already holds before a run uses it, then record this run there.

    ``run_info`` (JSON-able: data fingerprint, recipe, model, seed…) identifies the run; ``fit`` stores
    it with ``epochs`` in ``run_info.json``. A resume into checkpoints of a different run raises
    :class:`IncompatibleCheckpointError` naming the first difference (they would otherwise continue
    silently with other data or another schedule). A fresh run replaces the checkpoints of a
    *finished* run (its results are already written) and refuses those of an unfinished one
    (:class:`UnfinishedRunError`): nothing already trained is lost without the user saying so.
    ``devices`` (the mesh size) is recorded too, but a resume on another count is only warned about:
    it is the same run, just not bit-identical to an uninterrupted one (reduction order).
    """
    import shutil
    import sys

    directory = Path(directory)
    wanted = None if run_info is None else json.loads(json.dumps({"epochs": epochs, **run_info}, sort_keys=True))
    if wanted is not None and devices is not None:
        wanted["devices"] = int(devices)
    stored = _read_run_info(directory)
    steps = _checkpoint_steps(directory)
    if resume:
        if steps and wanted is not None and stored is None:
            print(f"jaxhw: {directory / RUN_INFO_FILE} is missing or unreadable, so these checkpoints cannot be "
                  f"checked against this run; resuming them as they are", file=sys.stderr, flush=True)
        same_run = lambda info: {k: v for k, v in info.items() if k != "devices"}  # noqa: E731
        difference = None if stored is None or wanted is None else _first_difference(same_run(stored), same_run(wanted))
        if difference:
            key, there, now = difference
            raise IncompatibleCheckpointError(
                f"the checkpoints in {directory} belong to a different run: {key} is {there!r} there and "
                f"{now!r} now. Resume with the same data and settings, or train from the start without "
                f"--resume into a fresh --out directory (or delete {directory})."
            )
        if (steps and steps[-1] < epochs and stored is not None and wanted is not None
                and stored.get("devices", wanted.get("devices")) != wanted.get("devices")):
            print(f"jaxhw: resuming on {wanted.get('devices')} device(s) a run trained on {stored['devices']}: the "
                  f"result will be close to, not bit-identical with, an uninterrupted run", file=sys.stderr, flush=True)
        if not steps:
            print(f"jaxhw: nothing to resume in {directory}; training from the start", file=sys.stderr, flush=True)
    elif steps:
        _refuse_if_unfinished(directory, steps, stored, epochs)
        print(f"jaxhw: no --resume: replacing the finished run's checkpoints in {directory}", file=sys.stderr, flush=True)
        shutil.rmtree(directory)
    if wanted is not None and not (resume and steps):  # a resume keeps checkpoints *and* their record
        directory.mkdir(parents=True, exist_ok=True)
        (directory / RUN_INFO_FILE).write_text(json.dumps(wanted, indent=2, sort_keys=True))


def _read_run_info(directory: Path) -> dict[str, Any] | None:
    """The stored run record, or None if absent; unreadable or not a JSON object → None with a notice."""
    import sys

    path = Path(directory) / RUN_INFO_FILE
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = None
    if not isinstance(stored, dict):
        print(f"jaxhw: {path} is unreadable (not a JSON object)", file=sys.stderr, flush=True)
        return None
    return stored


def _checkpoint_steps(directory: Path) -> list[int]:
    directory = Path(directory)
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def refuse_unfinished(directory: Path, epochs: int) -> None:
    """Raise :class:`UnfinishedRunError` if ``directory`` holds an interrupted run (fewer epochs
    checkpointed than it was started for). Experiments call it for every model *before* training
    any, so a forgotten --resume costs nothing."""
    steps = _checkpoint_steps(directory)
    if steps:
        _refuse_if_unfinished(directory, steps, _read_run_info(directory), epochs)


def _refuse_if_unfinished(directory: Path, steps: list[int], stored: dict[str, Any] | None, epochs: int) -> None:
    stored_epochs = (stored or {}).get("epochs", epochs)
    if steps[-1] < stored_epochs:
        raise UnfinishedRunError(
            f"{directory} holds the checkpoints of an unfinished run (epoch {steps[-1]} of {stored_epochs}). "
            f"Continue it with --resume, or delete that folder (or use another --out) to start over."
        )


def _stored_param_shapes(step_dir: Path) -> dict[str, tuple[int, ...]] | None:
    """Parameter shapes recorded in one checkpoint's metadata, or None if it cannot be read."""
    import orbax.checkpoint as ocp

    try:
        with _quiet_native_stderr(), ocp.StandardCheckpointer() as ckptr:
            tree = ckptr.metadata((Path(step_dir) / "state").absolute()).item_metadata
        leaves = jax.tree_util.tree_flatten_with_path(tree["params"])[0]
        return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in leaves}
    except Exception:  # a damaged checkpoint: restore_checkpoint's probing reports it
        return None


def _check_same_model(directory: Path, steps: list[int], target: TrainState) -> None:
    """Refuse (without deleting anything) checkpoints whose parameter shapes differ from ``target``'s."""
    wanted = {jax.tree_util.keystr(path): tuple(np.shape(leaf))
              for path, leaf in jax.tree_util.tree_flatten_with_path(target.params)[0]}
    for step in steps:
        stored = _stored_param_shapes(Path(directory) / str(step))
        if stored is None:
            continue
        if stored == wanted:
            return
        diff = sorted(set(stored) ^ set(wanted)) or [k for k in sorted(wanted) if stored[k] != wanted[k]]
        key = diff[0]
        raise IncompatibleCheckpointError(
            f"the checkpoints in {directory} were written by a different model: parameter {key} is "
            f"{stored.get(key, 'absent')} there and {wanted.get(key, 'absent')} now. Resume with the model "
            f"that wrote them, or train from the start without --resume into a fresh --out directory "
            f"(or delete {directory})."
        )


def restore_checkpoint(directory: Path, target: TrainState) -> tuple[int, TrainState, list[dict]] | None:
    """The latest *readable* checkpoint as ``(epoch, state, history)``, restored into ``target``'s
    structure, or None.

    A damaged checkpoint (truncated file, garbage manifest, wrong structure) is reported on stderr
    by name and the next older one is tried, so a resume loses at most the epochs after the newest
    intact checkpoint instead of the whole run. Damaged checkpoints are deleted (training is about
    to write those epochs again). Checkpoints of a *different model* (parameter shapes differ) raise
    :class:`IncompatibleCheckpointError` and are kept.
    """
    import shutil
    import sys

    import orbax.checkpoint as ocp

    if not Path(directory).is_dir():
        return None
    with _absl_errors_muted(), _checkpoint_manager(directory) as mngr:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        steps = sorted(mngr.all_steps(), reverse=True)
        _check_same_model(directory, steps, target)
        for epoch in steps:
            try:
                with _quiet_native_stderr():
                    restored = mngr.restore(
                        epoch,
                        args=ocp.args.Composite(
                            state=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore()
                        ),
                    )
                history = list(restored.history)
            except Exception as err:  # orbax/tensorstore raise many types for damaged files
                _mute_unretrieved_read_errors()
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
                reason = reason.split(" See full TensorStore details")[0][:200]  # drop a bound-method repr
                print(f"jaxhw: checkpoint {Path(directory) / str(epoch)} is damaged or incompatible "
                      f"({type(err).__name__}: {reason}); trying an older one", file=sys.stderr, flush=True)
                continue
            if len(history) != epoch:
                print(f"jaxhw: checkpoint {Path(directory) / str(epoch)} holds {len(history)} epochs of "
                      f"history, expected {epoch}; trying an older one", file=sys.stderr, flush=True)
                continue
            break
        else:
            epoch = None
    for damaged in (step for step in steps if epoch is None or step > epoch):
        shutil.rmtree(Path(directory) / str(damaged), ignore_errors=True)
    if epoch is None:
        if steps:
            print(f"jaxhw: no readable checkpoint in {directory}; training from the start",
                  file=sys.stderr, flush=True)
        return None
    return epoch, restored.state, history


# ---------------------------------------------------------------------------------------------
# The fit loop
# ---------------------------------------------------------------------------------------------


def write_history(history: list[dict], path_stem: Path) -> None:
    """Per-epoch metrics as ``<stem>.json`` and ``<stem>.csv``."""
    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    path_stem.with_suffix(".json").write_text(json.dumps(history, indent=2))
    if history:
        keys = list(dict.fromkeys(k for row in history for k in row))
        with path_stem.with_suffix(".csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)


def fit(
    state: TrainState,
    *,
    train_step: Callable[[TrainState, Batch], tuple[TrainState, Metrics]],
    eval_step: Callable[[TrainState, Batch], Metrics] | None,
    train_batches: Callable[[int], Iterator[Batch]],
    eval_batches: Mapping[str, Callable[[], Iterable[Batch]]] | None = None,
    epochs: int,
    steps_per_epoch: int | None = None,
    mesh: Mesh | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    run_info: Mapping[str, Any] | None = None,
    history_path: Path | None = None,
    desc: str = "train",
    progress: bool = True,
    on_epoch_end: Callable[[int, TrainState, dict], None] | None = None,
    log_every: int = 1,
) -> tuple[TrainState, list[dict]]:
    """Train for ``epochs`` epochs; evaluate, record, checkpoint after each.

    Args:
      state: the initial state (also the structure a resumed checkpoint is restored into).
      train_step / eval_step: from :func:`make_train_step` / :func:`make_eval_step`.
      train_batches: ``epoch -> iterator of host batches``; must depend only on the epoch (and a
        seed it closes over) so that a resumed run sees the same data as an uninterrupted one.
      eval_batches: name → a function returning that split's batches (e.g. ``{"val": ...}``).
      steps_per_epoch: for the progress bar's ETA (optional).
      mesh: the data mesh; defaults to all local devices.
      checkpoint_dir: save after every epoch here; with ``resume=True`` continue from the latest.
      run_info: what identifies this run (data fingerprint, settings, seed; JSON-able), stored with
        the checkpoints so that a resume refuses another run's (see :func:`prepare_checkpoint_dir`).
      history_path: write ``<path>.json`` / ``.csv`` after every epoch.
      on_epoch_end: called as ``(epoch, state, record)`` after the checkpoint is written.
      log_every: print an epoch's metrics line every this many epochs (and always the last); 0 = never.

    Returns:
      The final state and the per-epoch history (list of dicts, epoch numbers from 1).
    """
    from tqdm.auto import tqdm

    mesh = mesh or data_mesh()
    sync = _needs_step_sync(mesh)
    history: list[dict] = []
    start_epoch = 0
    if checkpoint_dir is not None:
        prepare_checkpoint_dir(checkpoint_dir, run_info, epochs, resume, devices=mesh.size)
    if resume and checkpoint_dir is not None:
        restored = restore_checkpoint(checkpoint_dir, state)
        if restored is not None:
            start_epoch, state, history = restored
            print(f"[{desc}] resumed from epoch {start_epoch} checkpoint in {checkpoint_dir}", flush=True)
    state = replicate(state, mesh)
    bar = tqdm(
        total=(epochs - start_epoch) * steps_per_epoch if steps_per_epoch else None,
        desc=desc,
        unit="step",
        disable=not progress or start_epoch >= epochs,  # a finished run resumed: no empty bar
        mininterval=2.0,
        dynamic_ncols=True,
    )
    for epoch in range(start_epoch + 1, epochs + 1):
        t0 = time.perf_counter()
        total = None
        in_flight = None
        for i, batch in enumerate(train_batches(epoch)):
            batch = shard_batch(batch, mesh)  # host work and transfer overlap the step in flight
            if in_flight is not None:
                jax.block_until_ready(in_flight)  # at most one step at a time, see _needs_step_sync
            state, metrics = train_step(state, batch)
            total = accumulate(total, metrics)
            if sync:
                in_flight = total
            if i == 0:  # throughput excludes the first step (compilation in epoch 1)
                first_count = float(jax.block_until_ready(total["count"]))
                t_first = time.perf_counter()
            bar.update(1)
            if progress and i % 20 == 0 and i > 0:  # (reading the count waits for the step)
                n_seen = float(total["count"]) - first_count
                bar.set_postfix(epoch=epoch, ex_per_s=f"{n_seen / (time.perf_counter() - t_first):.0f}")
        if total is None:
            raise ValueError(f"train_batches({epoch}) yielded no batches")
        train_metrics = summarize(jax.device_get(total), "train_")
        t_end = time.perf_counter()
        train_time = t_end - t0
        steady = train_metrics["train_count"] - first_count
        record: dict[str, Any] = {"epoch": epoch, **train_metrics}
        for name, batches in (eval_batches or {}).items():
            if eval_step is None:
                raise ValueError("eval_batches given but eval_step is None")
            record.update({f"{name}_{k}": v for k, v in evaluate(eval_step, state, batches(), mesh).items()})
        record["train_seconds"] = train_time
        record["examples_per_second"] = (
            steady / (t_end - t_first) if steady > 0 else train_metrics["train_count"] / train_time
        )
        history.append(record)
        if log_every and (epoch % log_every == 0 or epoch == epochs):
            shown = " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch" and not k.endswith("count"))
            bar.write(f"[{desc}] epoch {epoch}/{epochs} {shown}")
        if history_path is not None:
            write_history(history, history_path)
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, epoch, jax.device_get(state), history)
        if on_epoch_end is not None:
            on_epoch_end(epoch, state, record)
    bar.close()
    return state, history
