"""Orthogonalization speed and accuracy: jaxhw (SVD, Newton–Schulz) vs optax.contrib.muon's
Newton–Schulz and numpy's exact SVD.

    python benchmarks/bench_orthogonalize.py                  # 1024×1024 and 4096×1024, float32
    python benchmarks/bench_orthogonalize.py --reps 5 --sizes 512x512

Prints, per matrix size, the median wall time of each method, its ratio to optax's Newton–Schulz
(ns_steps equal), and the orthogonality error max_i |σ_i(O) − 1| (float64 SVD of the output).
A script, not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhw import linalg


def _timed(fn, x, reps: int) -> tuple[float, np.ndarray]:
    out = jax.block_until_ready(fn(x))  # compile / warm up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), np.asarray(out)


def _optax_ns(ns_steps: int):
    tx = optax.contrib.scale_by_muon(ns_steps=ns_steps, beta=0.0, nesterov=False,
                                     weight_dimension_numbers={"w": optax.contrib.MuonDimensionNumbers()})

    @jax.jit
    def run(G):
        u, _ = tx.update({"w": G}, tx.init({"w": G}))
        return u["w"]

    return run


def _numpy_svd(G):
    U, _, Vt = np.linalg.svd(np.asarray(G), full_matrices=False)
    return U @ Vt


def orth_error(O: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.svd(O.astype(np.float64), compute_uv=False) - 1.0)))


def _matrix_size(text: str) -> tuple[int, int]:
    """``"MxN"`` with positive M and N."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"sizes are MxN with positive integers, e.g. 1024x512; got {text!r}")
    return int(parts[0]), int(parts[1])


def main() -> None:
    from jaxhw.cli import int_at_least

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=_matrix_size, default=[(1024, 1024), (4096, 1024)])
    ap.add_argument("--reps", type=int_at_least(1), default=3)
    ap.add_argument("--ns-steps", type=int_at_least(1), default=5)
    args = ap.parse_args()
    print(f"backend={jax.default_backend()} devices={jax.devices()} reps={args.reps} ns_steps={args.ns_steps}")
    methods = {
        "optax muon NS": _optax_ns(args.ns_steps),
        "jaxhw NS": jax.jit(lambda G: linalg.orthogonalize(G, "newton_schulz", args.ns_steps)),
        "jaxhw SVD": jax.jit(lambda G: linalg.orthogonalize(G, "svd")),
        "numpy SVD": _numpy_svd,
    }
    for m, n in args.sizes:
        G = jax.random.normal(jax.random.PRNGKey(0), (m, n), jnp.float32)
        rows = {name: _timed(fn, G, args.reps) for name, fn in methods.items()}
        base = rows["optax muon NS"][0]
        print(f"\n{m}×{n} float32")
        print(f"{'method':16s} {'time [s]':>10s} {'÷ optax NS':>11s} {'max|σ−1|':>10s}")
        for name, (t, out) in rows.items():
            print(f"{name:16s} {t:10.4f} {t / base:11.2f} {orth_error(out):10.2e}")
        diff = float(np.max(np.abs(rows["jaxhw NS"][1] - rows["optax muon NS"][1])))
        print(f"max |jaxhw NS − optax NS| = {diff:.2e}")


if __name__ == "__main__":
    main()
