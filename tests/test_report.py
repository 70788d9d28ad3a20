"""Report assembly order, JSON conversion, the CLI, and the Q14 deciding logic."""

import json

import jax
import numpy as np
import pytest

from jaxhw import cli, inductive_bias as ib, report


def test_sections_assemble_in_question_order(tmp_path):
    b = report.RunContext(tmp_path, "part-b")
    b.add_section("Q14", "Archs", "body 14")
    b.add_section("Q2", "Dual", "body 2")
    a = report.RunContext(tmp_path, "part-a")
    a.add_section("Q10", "Steeper", "body 10")
    a.add_section("Q1", "Norms", "body 1")
    a.add_section("Q1", "More on norms", "body 1b")
    text = report.assemble_report(tmp_path).read_text()
    positions = [text.index(f"body {q}") for q in ("1", "1b", "2", "10", "14")]
    assert positions == sorted(positions)
    assert "## Q1. Norms" in text and "### More on norms" in text and "## Q10. Steeper" in text
    assert "| part-a | full | unfinished |" in text
    a.finish(90.0)
    assert "| part-a | full | 1.5 min |" in report.assemble_report(tmp_path).read_text()


def test_rerunning_a_part_replaces_its_sections(tmp_path):
    ctx = report.RunContext(tmp_path, "p")
    ctx.add_section("Q3", "t", "old")
    ctx2 = report.RunContext(tmp_path, "p")
    ctx2.add_section("Q3", "t", "new")
    text = report.assemble_report(tmp_path).read_text()
    assert "new" in text and "old" not in text


def test_bad_question_id_rejected(tmp_path):
    with pytest.raises(ValueError, match="Q<number>"):
        report.RunContext(tmp_path, "p").add_section("14", "t", "b")


def test_to_jsonable_handles_numpy_and_jax(tmp_path):
    import jax.numpy as jnp

    ctx = report.RunContext(tmp_path, "p")
    path = ctx.save_json("nums", {"a": np.float32(1.5), "b": jnp.arange(3), "c": (np.int64(2),), "d": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": [2], "d": "nan"}


def test_cli_list_and_unknown_part(capsys, tmp_path):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for part in ("steepest-descent", "cifar100", "solubility", "lr-transfer"):
        assert part in out
    with pytest.raises(SystemExit, match="unknown part\\(s\\) 'nope'"):
        cli.main(["run", "nope", "--out", str(tmp_path)])
    # Checked before anything runs: a valid part before a bad one does not start training.
    with pytest.raises(SystemExit, match="'nope'"):
        cli.main(["run", "steepest-descent", "nope", "--out", str(tmp_path)])
    assert not (tmp_path / "steepest-descent").exists()
    with pytest.raises(SystemExit, match="alone"):
        cli.main(["run", "all", "cifar100", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="no finished parts"):
        cli.main(["report", "--out", str(tmp_path / "empty")])


def test_cli_cpu_devices_option(capsys, monkeypatch, tmp_path):
    for bad in ("0", "-1", "two", "257", "99999999999999999999"):
        with pytest.raises(SystemExit):
            cli.main(["run", "steepest-descent", "--cpu-devices", bad, "--out", str(tmp_path)])
        err = capsys.readouterr().err
        assert "--cpu-devices" in err and repr(bad) in err
    monkeypatch.setenv("JAXHW_CPU_DEVICES", "3")
    assert cli.build_parser().parse_args(["run", "all"]).cpu_devices == 3
    for unset in ("", "  ", None):  # an empty variable means "not set"
        if unset is None:
            monkeypatch.delenv("JAXHW_CPU_DEVICES")
        else:
            monkeypatch.setenv("JAXHW_CPU_DEVICES", unset)
        assert cli.build_parser().parse_args(["run", "all"]).cpu_devices == cli.DEFAULT_CPU_DEVICES
    # In a process where JAX already runs, the option cannot apply: say so instead of failing.
    jax.devices()
    cli.configure_devices(7)
    assert "--cpu-devices 7 ignored" in capsys.readouterr().err


def test_failed_parts_are_flagged_in_the_report(tmp_path):
    report.RunContext(tmp_path, "p").add_section("Q1", "t", "old body")
    text = report.assemble_report(tmp_path / "", failed=["p"]).read_text()
    assert "latest run of p failed" in text and "old body" in text
    assert report.assemble_report(tmp_path / "new_dir").is_file()  # creates a missing --out


def test_a_damaged_sections_file_is_named_and_the_other_parts_still_report(tmp_path, capsys):
    report.RunContext(tmp_path, "good").add_section("Q1", "t", "good body")
    for bad in ("{bad", '{"part": "p"}', '{"sections": [{"nope": 1}]}'):
        (tmp_path / "p").mkdir(exist_ok=True)
        (tmp_path / "p" / report.SECTIONS_FILE).write_text(bad)
        assert cli.main(["report", "--out", str(tmp_path)]) == 0
        err = capsys.readouterr().err
        assert f"{tmp_path / 'p' / report.SECTIONS_FILE} is damaged" in err and "jaxhw run p --out" in err
        text = (tmp_path / "REPORT.md").read_text()
        assert "good body" in text and "`p/sections.json` could not be read" in text


def test_cli_seed_must_be_a_non_negative_integer(capsys, tmp_path):
    for bad in ("-5", "abc", str(2**40)):
        with pytest.raises(SystemExit):
            cli.main(["run", "cifar100", "--seed", bad, "--out", str(tmp_path)])
        assert "--seed" in capsys.readouterr().err
    assert cli.build_parser().parse_args(["run", "all", "--seed", "7"]).seed == 7
    with pytest.raises(SystemExit, match="--data-dir is empty"):
        cli.main(["run", "cifar100", "--data-dir", "", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--splits applies to the solubility part only"):
        cli.main(["run", "cifar100", "--splits", "x.npz", "--out", str(tmp_path)])
    assert not (tmp_path / "cifar100").exists()  # refused before anything ran


def test_compare_architectures_decides_from_numbers():
    v = ib.compare_architectures({"cnn": [0.55, 0.56], "mlp_d3": [0.22], "mlp_d7": [0.21]})
    assert v["best"] == "cnn" and v["clear"] and v["margin"] == pytest.approx(0.335)
    close = ib.compare_architectures({"a": [0.30, 0.20], "b": [0.24]})
    assert close["best"] == "a" and not close["clear"]  # lead 0.01 < 2 × std 0.05
    with pytest.raises(ValueError):
        ib.compare_architectures({})


def test_depth_verdict():
    assert not ib.depth_verdict({3: 0.227, 7: 0.218, 15: 0.20})["helps"]
    v = ib.depth_verdict({3: 0.20, 7: 0.25})
    assert v["helps"] and v["best_depth"] == 7 and v["gains"][7] == pytest.approx(0.05)
    with pytest.raises(ValueError):
        ib.depth_verdict({3: 0.2})


def test_meets_target_uses_the_mean_over_seeds():
    assert ib.meets_target([0.5649, 0.5612], 0.55)
    assert not ib.meets_target([0.56, 0.53], 0.55)  # one seed above is not enough
    assert ib.meets_target([0.55], 0.55)
    for bad in ([], [0.5, float("nan")]):
        with pytest.raises(ValueError, match="finite accuracies"):
            ib.meets_target(bad, 0.55)


def test_package_exposes_submodules_lazily():
    import jaxhw

    assert jaxhw.norms.lp(2.0).name and callable(jaxhw.optim.orthogonal_descent)
    with pytest.raises(AttributeError, match="nope"):
        jaxhw.nope  # noqa: B018


def test_quote_sources_quotes_each_object_in_order():
    text = report.quote_sources(report.fmt, report.md_table)
    assert text.count("```python") == 2
    assert text.index("def fmt(") < text.index("def md_table(")


def test_quick_runs_default_to_their_own_folder(monkeypatch, tmp_path):
    """A quick run must never overwrite the committed full-run results/."""
    seen = []
    monkeypatch.setattr(cli, "run_part", lambda name, args: seen.append(args.out) or 0.0)
    monkeypatch.chdir(tmp_path)
    cli.main(["run", "steepest-descent", "--quick"])
    cli.main(["run", "steepest-descent"])
    cli.main(["run", "steepest-descent", "--quick", "--out", "mine"])
    assert seen == ["results_quick", "results", "mine"]


def test_data_dir_from_the_environment_is_named_as_such(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("JAXHW_DATA_DIR", str(tmp_path / "nowhere"))
    assert cli.main(["run", "cifar100", "--quick", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and "from JAXHW_DATA_DIR" in err


def test_cifar_reference_paragraph_decides_accuracy_compute_and_speed():
    """Q14's comparison with the quoted PyTorch reference is decided from the run's own numbers."""
    from types import SimpleNamespace

    from experiments import cifar100 as exp

    def runs(flops, epoch_seconds):
        history = [{"train_seconds": 99.0}] + [{"train_seconds": epoch_seconds}] * 3  # epoch 1 compiles
        cnn = [SimpleNamespace(history=history, flops_per_image=flops)] * 2
        return {"cnn": cnn, "mlp_d3": [SimpleNamespace(history=history, flops_per_image=1e6)]}

    labels = {"cnn": "CNN", "mlp_d3": "MLP d=3"}
    good = exp._reference_paragraph(runs(25e6, 30.0), {"cnn": [0.56, 0.55], "mlp_d3": [0.25]}, labels)
    assert "**met**" in good and "no more compute" in good and "**faster**" in good
    assert f"{exp.REFERENCE['cnn_epoch_seconds'] / 30.0:.2f}×" in good
    assert "against the reference architecture's 25.7" in good  # its FLOPs, counted by XLA at run time
    bad = exp._reference_paragraph(runs(40e6, 40.0), {"cnn": [0.56, 0.53], "mlp_d3": [0.25]}, labels)
    assert "**not met**" in bad and "**more** compute" in bad and "**not faster**" in bad


@pytest.mark.parametrize(
    "script, args, named",
    [
        ("bench_cifar.py", ["--steps", "0"], "--steps"),
        ("bench_cifar.py", ["--models", "foo"], "--models"),
        ("bench_gnn.py", ["--epochs", "0"], "--epochs"),
        ("bench_gnn.py", ["--warmup", "5", "--epochs", "2"], "--warmup"),
        ("bench_orthogonalize.py", ["--reps", "0"], "--reps"),
        ("bench_orthogonalize.py", ["--sizes", "8"], "--sizes"),
        ("bench_orthogonalize.py", ["--ns-steps", "0"], "--ns-steps"),
    ],
)
def test_benchmarks_reject_bad_options_by_name(script, args, named):
    """A benchmark with a bad option stops at once with a usage error naming it (not a traceback
    minutes later, after the other side has been timed)."""
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    proc = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and named in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_ctrl_c_during_a_run_says_how_to_continue(monkeypatch, capsys, tmp_path):
    def interrupted(name, args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_part", interrupted)
    assert cli.main(["run", "cifar100", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "interrupted during part 'cifar100'" in err and "--resume" in err and "Traceback" not in err


def test_checkpoint_conflicts_are_one_line_errors(monkeypatch, capsys, tmp_path):
    from jaxhw import train

    def conflict(name, args):
        raise train.UnfinishedRunError("X holds the checkpoints of an unfinished run (epoch 1 of 3)")

    monkeypatch.setattr(cli, "run_part", conflict)
    assert cli.main(["run", "cifar100", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "part 'cifar100' failed: X holds the checkpoints of an unfinished run" in err and "Traceback" not in err


def test_sigterm_stops_a_run_like_ctrl_c():
    import os
    import signal
    import time

    previous = signal.getsignal(signal.SIGTERM)
    try:
        cli._stop_on_sigterm()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this at once
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_forgotten_resume_is_refused_before_any_model_is_retrained(monkeypatch, capsys, tmp_path):
    """The CNN (trained third) was interrupted: a run without --resume must stop at once, not after
    retraining both MLPs and replacing their checkpoints."""
    monkeypatch.delenv("JAXHW_DATA_DIR", raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds"))
    ckpt = tmp_path / "cifar100" / "checkpoints"
    (ckpt / "mlp_d3_seed0" / "3").mkdir(parents=True)  # finished
    (ckpt / "cnn_seed0" / "1").mkdir(parents=True)  # interrupted after epoch 1 of 3
    (ckpt / "cnn_seed0" / "run_info.json").write_text('{"epochs": 3}')
    assert cli.main(["run", "cifar100", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "cnn_seed0 holds the checkpoints of an unfinished run (epoch 1 of 3)" in err
    assert (ckpt / "mlp_d3_seed0" / "3").is_dir() and not (tmp_path / "cifar100" / "history_mlp_d3_seed0.json").exists()
