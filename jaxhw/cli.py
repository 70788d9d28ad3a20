"""The ``jaxhw`` command: run parts of the problem set and assemble the report.

    jaxhw list
    jaxhw run all --quick            # minutes on a laptop CPU (writes results_quick/)
    jaxhw run cifar100 --resume      # full protocol, continue from checkpoints
    jaxhw report --out results       # re-assemble REPORT.md from what has run

Experiments are looked up by name in ``experiments.PARTS`` and imported lazily, so the library
never imports experiment code and a broken part does not stop ``jaxhw list``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from jaxhw import report

# JAX CPU devices for data-parallel training: on a 2-core CPU the CNN's batch of 128 trains fastest
# split 4 ways (32 per device; 2 and 8 devices measured slower), see jaxhw.train.set_cpu_devices.
DEFAULT_CPU_DEVICES = 4
MAX_CPU_DEVICES = 256  # XLA's CPU client fails or stalls far beyond this (tried: 100,000 hangs)


def _cpu_device_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_CPU_DEVICES:
        raise argparse.ArgumentTypeError(
            f"--cpu-devices / $JAXHW_CPU_DEVICES must be an integer from 1 to {MAX_CPU_DEVICES}, got {text!r}"
        )
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer ≥ ``minimum`` (a clean usage error otherwise, never a traceback)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer ≥ {minimum}, got {text!r}")
        return value

    return parse


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**31 - 16:  # numpy and jax.random take non-negative seeds; parts add small offsets
        raise argparse.ArgumentTypeError(f"--seed must be a non-negative integer below 2**31 - 16, got {text!r}")
    return value


def configure_devices(cpu_devices: int) -> None:
    """Apply ``--cpu-devices`` before any JAX work; in a process where JAX already runs
    (e.g. ``main()`` called from a notebook), keep its devices and say so."""
    from jaxhw import train

    try:
        train.set_cpu_devices(cpu_devices)
    except RuntimeError:
        import jax

        print(f"jaxhw: JAX is already running in this process; --cpu-devices {cpu_devices} ignored "
              f"({jax.device_count()} device(s) in use)", file=sys.stderr)


def _parts() -> dict[str, str]:
    from experiments import PARTS

    return PARTS


def run_part(name: str, args: argparse.Namespace) -> float:
    """Run one part; returns its wall time in seconds."""
    parts = _parts()
    if name not in parts:
        raise SystemExit(f"jaxhw: unknown part {name!r}; choose from: {', '.join(parts)} or 'all'")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"jaxhw: --out {str(out)!r} exists and is not a directory")
    module = importlib.import_module(parts[name])
    ctx = report.RunContext(
        out_dir=Path(args.out),
        part=name,
        quick=args.quick,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        seed=args.seed,
        resume=args.resume,
        splits=Path(args.splits) if args.splits else None,
    )
    t0 = time.perf_counter()
    ctx.log(f"starting ({'quick' if args.quick else 'full'} profile)")
    module.run(ctx)
    elapsed = time.perf_counter() - t0
    ctx.finish(elapsed)
    ctx.log(f"done in {elapsed:.1f} s")
    return elapsed


def resolve_parts(requested: list[str]) -> list[str]:
    """Check every requested part name up front (before any training starts)."""
    parts = _parts()
    if "all" in requested:
        if len(requested) > 1:
            raise SystemExit("jaxhw: 'all' runs every part; give it alone, not with other part names")
        return list(parts)
    unknown = [n for n in requested if n not in parts]
    if unknown:
        raise SystemExit(f"jaxhw: unknown part(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(parts)} or 'all'")
    return list(dict.fromkeys(requested))


def _stop_on_sigterm() -> None:
    """Treat SIGTERM (``kill``, ``timeout``, a batch scheduler) like Ctrl-C: stop with the one-line
    "continue with --resume" message instead of dying silently."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def cmd_run(args: argparse.Namespace) -> int:
    from jaxhw.data import DataNotFoundError
    from jaxhw.train import CheckpointConflictError

    names = resolve_parts(args.part)
    if args.splits is not None and "solubility" not in names:
        raise SystemExit(f"jaxhw: --splits applies to the solubility part only, which is not among the parts run ({', '.join(names)})")
    if args.data_dir is not None and not args.data_dir.strip():
        raise SystemExit("jaxhw: --data-dir is empty; name the directory that holds cifar100/ and esol/, or leave it out")
    if args.out is None:
        args.out = "results_quick" if args.quick else "results"
    configure_devices(args.cpu_devices)
    _stop_on_sigterm()
    failures: list[str] = []
    timings: dict[str, float] = {}
    for name in names:
        try:
            timings[name] = run_part(name, args)
        except SystemExit:
            raise
        except KeyboardInterrupt:
            print(f"\njaxhw: interrupted during part {name!r}; the checkpoints written so far are kept in "
                  f"{Path(args.out) / name / 'checkpoints'} — continue with the same command plus --resume",
                  file=sys.stderr)
            return 130
        except (DataNotFoundError, CheckpointConflictError) as err:  # user-facing: say it plainly
            print(f"jaxhw: part {name!r} failed: {err}", file=sys.stderr)
            failures.append(name)
        except Exception:  # keep going: one failing part must not lose the others' results
            traceback.print_exc()
            failures.append(name)
    if len(failures) == len(names) and not report.load_sections(Path(args.out))[0]:
        print(f"jaxhw: every part failed ({', '.join(failures)}); no report written", file=sys.stderr)
        return 1
    path = report.assemble_report(Path(args.out), failed=failures)
    print(f"report written to {path}")
    for name, t in timings.items():
        print(f"  {name:20s} {t:8.1f} s")
    if failures:
        print(f"jaxhw: these parts failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    del args
    for name, module in _parts().items():
        print(f"{name:20s} {module}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not report.load_sections(out)[0]:
        raise SystemExit(f"jaxhw: no finished parts under {str(out)!r}; run e.g. 'jaxhw run all --quick --out {out}' first")
    print(f"report written to {report.assemble_report(out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxhw", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="list the parts of the problem set")
    p_list.set_defaults(func=cmd_list)

    p_run = sub.add_parser("run", help="run one or more parts ('all' for every part)")
    p_run.add_argument("part", nargs="+", help="part name(s) from 'jaxhw list', or 'all'")
    p_run.add_argument("--quick", action="store_true", help="reduced settings (minutes on a CPU)")
    p_run.add_argument(
        "--out",
        default=None,
        help="output directory (default: results/, or results_quick/ with --quick so that a quick "
        "run never overwrites a full one)",
    )
    p_run.add_argument(
        "--data-dir",
        default=None,  # jaxhw.data falls back to $JAXHW_DATA_DIR itself, and says which one it used
        help="directory holding cifar100/ and esol/ (default: $JAXHW_DATA_DIR)",
    )
    p_run.add_argument("--seed", type=_seed, default=0, help="base random seed (non-negative)")
    p_run.add_argument("--resume", action="store_true", help="continue from checkpoints")
    p_run.add_argument(
        "--splits", default=None, help="solubility: .npz with explicit train/val/test index arrays per seed"
    )
    p_run.add_argument(
        "--cpu-devices",
        type=_cpu_device_count,
        default=os.environ.get("JAXHW_CPU_DEVICES", "").strip() or str(DEFAULT_CPU_DEVICES),  # empty = unset
        help=f"split the CPU into this many JAX devices for data-parallel training (default: "
        f"$JAXHW_CPU_DEVICES or {DEFAULT_CPU_DEVICES}; 1 = off; no effect on GPU/TPU)",
    )
    p_run.set_defaults(func=cmd_run)

    p_report = sub.add_parser("report", help="re-assemble REPORT.md from finished parts")
    p_report.add_argument("--out", default="results")
    p_report.set_defaults(func=cmd_report)

    p_pred = sub.add_parser(
        "predict-solubility", help="predict log10 aqueous solubility (mol/L) from SMILES"
    )
    p_pred.add_argument("smiles", nargs="+", help="one or more SMILES strings")
    p_pred.add_argument("--model", default=None, help="saved model directory (default: shipped)")
    p_pred.set_defaults(func=_lazy("jaxhw.solubility", "predict_main"))
    return parser


def _lazy(module: str, function: str):
    """Import a command's implementation only when it runs (keeps `jaxhw list` instant)."""

    def call(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), function)(args)

    return call


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
