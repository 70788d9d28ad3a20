"""Training engine: loss goes down on real images, resume is exact, 4 devices equal 1, determinism."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhw import data, train
from jaxhw.models import MLP, make_cnn


@pytest.fixture(scope="module")
def sample():
    d = data.load_cifar100_sample()
    return d.x_train[:384], d.y_train[:384]


def _fit(sample, model, epochs, tmp_path=None, resume=False, on_epoch_end=None, seed=0, lr=1e-3, run_info=None):
    x, y = sample
    loss_fn = train.classification_loss(data.cifar_preprocess(augment=True), label_smoothing=0.1)
    state = train.create_train_state(model, optax.adam(lr), jnp.zeros((1, 32, 32, 3)), seed)
    return train.fit(
        state,
        train_step=train.make_train_step(loss_fn),
        eval_step=train.make_eval_step(loss_fn),
        train_batches=lambda e: data.iterate_batches({"x": x, "y": y}, 64, seed=seed, epoch=e, drop_remainder=True),
        eval_batches={"train_eval": lambda: data.iterate_batches({"x": x, "y": y}, 128)},
        epochs=epochs,
        checkpoint_dir=None if tmp_path is None else tmp_path / "ckpt",
        history_path=None if tmp_path is None else tmp_path / "history",
        resume=resume,
        run_info=run_info,
        progress=False,
        on_epoch_end=on_epoch_end,
    )


class Killed(Exception):
    """Stands in for a crash or Ctrl-C at the end of an epoch."""


def kill_after(n):
    def on_epoch_end(epoch, state, record):
        if epoch == n:
            raise Killed

    return on_epoch_end


def test_training_reduces_loss_on_real_images(sample):
    x, y = sample
    model = make_cnn(channels=(16, 16, 32, 32), dense=(64, 64), dropout=0.0, batch_norm=False)
    loss_fn = train.classification_loss(data.cifar_preprocess(augment=False))
    state = train.create_train_state(model, optax.adam(3e-3), jnp.zeros((1, 32, 32, 3)), 0)
    eval_step = train.make_eval_step(loss_fn)
    batches = lambda: data.iterate_batches({"x": x, "y": y}, 128)
    before = train.evaluate(eval_step, state, batches())["loss"]
    step = train.make_train_step(loss_fn)
    for epoch in range(4):
        for b in data.iterate_batches({"x": x, "y": y}, 64, seed=0, epoch=epoch, drop_remainder=True):
            state, _ = step(state, b)
    after = train.evaluate(eval_step, state, batches())["loss"]
    assert np.isfinite(after) and after < before - 0.1, (before, after)


def test_resume_after_interruption_matches_uninterrupted(sample, tmp_path):
    model = MLP(width=32, depth=2)
    full_state, full_hist = _fit(sample, model, 3)

    with pytest.raises(Killed):
        _fit(sample, model, 3, tmp_path, on_epoch_end=kill_after(2))
    assert (tmp_path / "history.json").is_file() and (tmp_path / "history.csv").is_file()
    resumed_state, resumed_hist = _fit(sample, model, 3, tmp_path, resume=True)
    assert [h["epoch"] for h in resumed_hist] == [1, 2, 3]
    chex_equal = jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                              full_state.params, resumed_state.params)
    assert chex_equal is not None
    np.testing.assert_allclose(full_hist[-1]["train_eval_loss"], resumed_hist[-1]["train_eval_loss"], rtol=1e-6)
    assert int(resumed_state.step) == int(full_state.step)


def test_running_again_without_resume_replaces_a_finished_run_and_refuses_an_unfinished_one(sample, tmp_path, capsys):
    """Re-running a finished job must just work; an interrupted one must not be thrown away silently."""
    model = MLP(width=16, depth=1)
    info = {"data": "sample", "seed": 0}
    first, _ = _fit(sample, model, 2, tmp_path, run_info=info)
    again, _ = _fit(sample, model, 2, tmp_path, run_info=info)  # orbax alone: StepAlreadyExistsError
    assert "replacing the finished run's checkpoints" in capsys.readouterr().err
    jax.tree.map(np.testing.assert_array_equal, first.params, again.params)

    with pytest.raises(Killed):
        _fit(sample, model, 3, tmp_path / "b", on_epoch_end=kill_after(1), run_info=info)
    with pytest.raises(train.UnfinishedRunError, match=r"unfinished run \(epoch 1 of 3\).*--resume"):
        _fit(sample, model, 3, tmp_path / "b", run_info=info)
    assert (tmp_path / "b" / "ckpt" / "1").is_dir()  # kept
    _, hist = _fit(sample, model, 3, tmp_path / "b", resume=True, run_info=info)
    assert [h["epoch"] for h in hist] == [1, 2, 3]


def test_resume_refuses_checkpoints_of_another_run(sample, tmp_path):
    """Same model shapes, other data or settings: continuing would mix two runs in one result."""
    model = MLP(width=16, depth=1)

    with pytest.raises(Killed):
        _fit(sample, model, 3, tmp_path, on_epoch_end=kill_after(1), run_info={"data": {"sha256_x": "aaa"}, "seed": 0})
    with pytest.raises(train.IncompatibleCheckpointError, match=r"data\.sha256_x is 'aaa' there and 'bbb' now"):
        _fit(sample, model, 3, tmp_path, resume=True, run_info={"data": {"sha256_x": "bbb"}, "seed": 0})
    with pytest.raises(train.IncompatibleCheckpointError, match=r"epochs is 3 there and 20 now"):
        _fit(sample, model, 20, tmp_path, resume=True, run_info={"data": {"sha256_x": "aaa"}, "seed": 0})
    assert (tmp_path / "ckpt" / "1").is_dir()
    _, hist = _fit(sample, model, 3, tmp_path, resume=True, run_info={"data": {"sha256_x": "aaa"}, "seed": 0})
    assert len(hist) == 3


# orbax's async readers complain about their closed event loop after a failed read: noise, not a failure
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_damaged_checkpoint_falls_back_to_an_older_one(sample, tmp_path, capsys):
    model = MLP(width=16, depth=1)
    state, hist = _fit(sample, model, 2, tmp_path)
    ckpt = tmp_path / "ckpt"
    target = train.create_train_state(model, optax.adam(1e-3), jnp.zeros((1, 32, 32, 3)), 0)
    assert train.restore_checkpoint(ckpt, target)[0] == 2
    # Damage every array file of epoch 2 (truncate), as a crash mid-write or a bad disk would.
    damaged = [f for f in (ckpt / "2").rglob("*") if f.is_file() and "ocdbt" in str(f)]
    assert damaged
    for f in damaged:
        f.write_bytes(f.read_bytes()[:10])
    epoch, restored, history = train.restore_checkpoint(ckpt, target)
    err = capsys.readouterr().err
    assert epoch == 1 and len(history) == 1 and str(ckpt / "2") in err and "damaged" in err
    assert history[0]["train_loss"] == hist[0]["train_loss"]
    # Resuming fit from there redoes epoch 2 and ends with the uninterrupted run's parameters.
    resumed, resumed_hist = _fit(sample, model, 2, tmp_path, resume=True)
    assert [h["epoch"] for h in resumed_hist] == [1, 2]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), state.params, resumed.params)
    # Nothing readable at all: start from scratch, and say so.
    for f in ckpt.rglob("*"):
        if f.is_file() and "ocdbt" in str(f):
            f.write_bytes(b"garbage")
    assert train.restore_checkpoint(ckpt, target) is None
    assert "training from the start" in capsys.readouterr().err


def test_checkpoints_of_another_model_are_refused_and_kept(sample, tmp_path, capfd):
    """Resuming with a changed model (e.g. new layer widths) must say so plainly and must not treat
    the other model's checkpoints as damaged and delete them."""
    _fit(sample, MLP(width=16, depth=2), 2, tmp_path)
    ckpt = tmp_path / "ckpt"
    before = sorted(p.name for p in ckpt.iterdir())
    target = train.create_train_state(MLP(width=8, depth=2), optax.adam(1e-3), jnp.zeros((1, 32, 32, 3)), 0)
    with pytest.raises(train.IncompatibleCheckpointError, match=r"different model: parameter \['Dense_0'\]\['bias'\] is \(16,\) there and \(8,\) now"):
        train.restore_checkpoint(ckpt, target)
    assert sorted(p.name for p in ckpt.iterdir()) == before == ["1", "2"]
    assert len(capfd.readouterr().err.splitlines()) < 5  # no wall of orbax/asyncio tracebacks
    with pytest.raises(train.IncompatibleCheckpointError):
        _fit(sample, MLP(width=8, depth=2), 2, tmp_path, resume=True)


@pytest.mark.parametrize(
    "model",
    [MLP(width=32, depth=2), make_cnn(channels=(8, 8, 16, 16), dense=(32, 32), dropout=0.1)],
    ids=["mlp", "cnn_batchnorm_dropout"],
)
def test_same_seed_same_numbers(sample, model):
    """Bit-identical on one machine (dropout/augmentation keys, data order, BatchNorm statistics);
    a different CPU may round convolutions differently (see BUILD_NOTES)."""
    s1, h1 = _fit(sample, model, 1, seed=3)
    s2, h2 = _fit(sample, model, 1, seed=3)
    _, h3 = _fit(sample, model, 1, seed=4)
    assert h1[0]["train_loss"] == h2[0]["train_loss"]
    assert h1[0]["train_loss"] != h3[0]["train_loss"]
    jax.tree.map(np.testing.assert_array_equal, (s1.params, s1.batch_stats), (s2.params, s2.batch_stats))


def test_masked_examples_do_not_count():
    model = MLP(width=8, depth=1, num_classes=3)
    loss_fn = train.classification_loss()
    state = train.create_train_state(model, optax.sgd(0.1), jnp.zeros((1, 4)), 0)
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    full = train.make_eval_step(loss_fn)(state, {"x": x[:4], "y": y[:4]})
    garbage = x.copy()
    garbage[4:] = 1e6
    masked = train.make_eval_step(loss_fn)(state, {"x": garbage, "y": y, "mask": np.array([1, 1, 1, 1, 0, 0.0])})
    for k in full:
        np.testing.assert_allclose(masked[k], full[k], rtol=1e-6)
    # A label outside 0..num_classes-1 is loud (NaN loss) where it counts, ignored where masked out.
    bad = y.copy()
    bad[5] = 7
    eval_step = train.make_eval_step(loss_fn)
    assert np.isnan(float(eval_step(state, {"x": x, "y": bad})["loss"]))
    assert np.isfinite(float(eval_step(state, {"x": x, "y": bad, "mask": np.array([1, 1, 1, 1, 1, 0.0])})["loss"]))


FOUR_DEVICES = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    from jaxhw import data, train
    from jaxhw.models import MLP
    assert len(jax.devices()) == 4, jax.devices()
    d = data.load_cifar100_sample()
    x, y = d.x_train[:256], d.y_train[:256]
    loss_fn = train.classification_loss(data.cifar_preprocess(augment=True))
    def run(devices):
        mesh = train.data_mesh(devices)
        state = train.replicate(train.create_train_state(MLP(64, 2), optax.adam(1e-3), jnp.zeros((1, 32, 32, 3)), 0), mesh)
        step = train.make_train_step(loss_fn)
        losses = []
        for b in data.iterate_batches({"x": x, "y": y}, 64, seed=0, epoch=1, drop_remainder=True):
            sb = train.shard_batch(b, mesh)
            state, m = step(state, sb)
            losses.append(float(m["loss"]) / float(m["count"]))
        return np.array(losses), sb["x"].sharding
    one, _ = run(jax.devices()[:1])
    four, sharding = run(jax.devices())
    assert len(sharding.device_set) == 4, sharding
    np.testing.assert_allclose(one, four, rtol=2e-5)
    print("OK", one.tolist())
    """
)


def test_four_device_data_parallel_equals_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", FOUR_DEVICES], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("OK")


MANY_CPU_DEVICES_FIT = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp, numpy as np, optax
    from jaxhw import data, train
    from jaxhw.models import MLP
    train.set_cpu_devices(4)
    assert len(jax.devices()) == 4, jax.devices()
    if sys.argv[1] == "unsynced":  # what fit did before: queue every step asynchronously
        train._needs_step_sync = lambda mesh: False
    x = np.random.default_rng(0).integers(0, 256, (128, 32, 32, 3), dtype=np.uint8)
    y = np.arange(128) % 100
    loss_fn = train.classification_loss(data.cifar_preprocess(augment=True), label_smoothing=0.1)
    state = train.create_train_state(MLP(128, 3), optax.adamw(1e-3), jnp.zeros((1, 32, 32, 3)), 0)
    _, history = train.fit(
        state,
        train_step=train.make_train_step(loss_fn),
        eval_step=train.make_eval_step(loss_fn),
        train_batches=lambda e: iter([{"x": x, "y": y}] * 1000),
        eval_batches={"val": lambda: [{"x": x, "y": y}] * 20},
        epochs=2,
        progress=False,
        log_every=0,
    )
    assert history[-1]["train_count"] == 1000 * 128
    print("OK")
    """
)


def test_fit_on_several_cpu_devices_waits_for_each_step():
    """1,000 fast sharded steps on 4 CPU devices finish. Dispatched without waiting (the script's
    "unsynced" mode), XLA:CPU's all-reduce rendezvous times out and aborts the process here."""
    proc = subprocess.run(
        [sys.executable, "-c", MANY_CPU_DEVICES_FIT, "synced"],
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")


def test_set_cpu_devices_rejects_bad_counts_and_late_calls():
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            train.set_cpu_devices(bad)
    jax.devices()  # this process's JAX is running: the count can no longer change
    with pytest.raises(RuntimeError, match="already started"):
        train.set_cpu_devices(3)


DAMAGED_RESUME = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from jaxhw import train
    train.set_cpu_devices(4)
    import jax.numpy as jnp, optax
    from jaxhw import data
    from jaxhw.models import make_cnn
    d = data.load_cifar100_sample()
    x, y = d.x_train[:256], d.y_train[:256]
    def fit(resume):
        loss_fn = train.classification_loss(data.cifar_preprocess(augment=False))
        state = train.create_train_state(make_cnn(channels=(4, 4, 8, 8), dense=(8, 8)), optax.adam(1e-3),
                                         jnp.zeros((1, 32, 32, 3)), 0)
        return train.fit(state, train_step=train.make_train_step(loss_fn), eval_step=None,
                         train_batches=lambda e: data.iterate_batches({"x": x, "y": y}, 64, seed=0, epoch=e, drop_remainder=True),
                         epochs=2, checkpoint_dir=Path(sys.argv[1]), resume=resume, progress=False)
    fit(False)
    for f in Path(sys.argv[1]).rglob("*"):
        if f.is_file() and "ocdbt" in str(f) and "/d/" in str(f):
            f.write_bytes(f.read_bytes()[:10])
    fit(True)
    print("OK")
    """
)


def test_resuming_from_damaged_checkpoints_says_so_in_a_few_lines(tmp_path):
    """orbax leaves its failed read tasks behind; at exit Python would log each with a TensorStore
    traceback (134 lines for this tiny CNN, thousands for the real one). One line per checkpoint is the promise."""
    proc = subprocess.run([sys.executable, "-c", DAMAGED_RESUME, str(tmp_path / "ckpt")],
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) <= 3, "\n".join(lines[:60])
    assert any("is damaged" in line for line in lines) and "training from the start" in lines[-1], lines


def test_create_train_state_takes_an_int_or_a_prng_key():
    model = MLP(width=4, depth=1)
    states = [train.create_train_state(model, optax.sgd(0.1), jnp.zeros((1, 8)), seed)
              for seed in (0, np.int64(0), jax.random.PRNGKey(0), jax.random.key(0))]
    for s in states[1:]:
        jax.tree.map(np.testing.assert_array_equal, (states[0].params, states[0].rng), (s.params, s.rng))
    with pytest.raises(TypeError, match="seed must be an int or a PRNG key"):
        train.create_train_state(model, optax.sgd(0.1), jnp.zeros((1, 8)), "zero")


def test_resume_on_another_device_count_is_the_same_run_but_says_so(tmp_path, capsys):
    info = {"data": "x", "seed": 0}
    train.prepare_checkpoint_dir(tmp_path, info, 3, resume=False, devices=4)
    (tmp_path / "1").mkdir()  # epoch 1 of 3 done
    train.prepare_checkpoint_dir(tmp_path, info, 3, resume=True, devices=4)
    assert capsys.readouterr().err == ""
    train.prepare_checkpoint_dir(tmp_path, info, 3, resume=True, devices=1)
    assert "resuming on 1 device(s) a run trained on 4" in capsys.readouterr().err
    with pytest.raises(train.IncompatibleCheckpointError, match="seed is 0 there and 1 now"):
        train.prepare_checkpoint_dir(tmp_path, {**info, "seed": 1}, 3, resume=True, devices=1)


def test_a_missing_or_bad_run_record_is_reported_and_never_overwritten_on_resume(tmp_path, capsys):
    info = {"data": "real", "seed": 0}
    train.prepare_checkpoint_dir(tmp_path, info, 3, resume=False)
    (tmp_path / "1").mkdir()
    for bad in ("[1, 2]", "garbage", None):
        if bad is None:
            (tmp_path / train.RUN_INFO_FILE).unlink()
        else:
            (tmp_path / train.RUN_INFO_FILE).write_text(bad)
        train.prepare_checkpoint_dir(tmp_path, {"data": "sample", "seed": 0}, 3, resume=True)
        assert "cannot be checked against this run" in capsys.readouterr().err
        # the record is left as found: a later look still shows it could not be checked
        assert (tmp_path / train.RUN_INFO_FILE).read_text() == bad if bad else not (tmp_path / train.RUN_INFO_FILE).exists()
    train.prepare_checkpoint_dir(tmp_path / "new", info, 3, resume=True)
    assert "nothing to resume" in capsys.readouterr().err
    assert json.loads((tmp_path / "new" / train.RUN_INFO_FILE).read_text())["data"] == "real"
