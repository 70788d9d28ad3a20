"""CIFAR-100 train-step throughput: jaxhw (JAX/Flax) vs the same models in PyTorch, in one run.

    python benchmarks/bench_cifar.py                 # both CNNs + the MLPs, 5 interleaved rounds
    python benchmarks/bench_cifar.py --models cnn cnn_reference --rounds 3 --steps 30

Both sides train the same architecture: ``cnn`` is Q12's CNN as ``make_cnn`` builds it
(channels 16-64-128-256, each block 3×3 conv, 2×2 max-pool, BatchNorm, ReLU; dense 256-128-100),
``cnn_reference`` the issue's PyTorch reference CNN (channels 32-64-128-256, each block 3×3 conv,
BatchNorm, ReLU, 2×2 max-pool), dropout 0.3 in both; the MLPs w=128 d=3/7. All use AdamW, label
smoothing 0.1, batch 128 and random crop + flip inside the step (JAX draws a crop offset per image,
the PyTorch side one per batch, which is cheaper). The PyTorch peer is tuned as a user would:
channels_last, ``torch.set_num_threads(2)``. Every round times every runner once, JAX and PyTorch
interleaved, so machine noise hits all of them; ratios are medians over rounds. The last line
compares the CNN we train (JAX) with the reference CNN in PyTorch, the pair the issue's speed
target is about. The JAX side runs as ``jaxhw run`` trains: the CPU split into ``--cpu-devices``
JAX devices (default as ``jaxhw run``), the CNNs' batches sharded over them (their one-device speed
is printed beside), the MLPs on one device. PyTorch is a benchmark-only dependency
(``pip install torch==2.13.0``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

BATCH = 128
REFERENCE_CHANNELS = (32, 64, 128, 256)  # the reference CNN


def jax_step_fn(model_name: str, all_devices: bool):
    """The train step as ``jaxhw run cifar100`` runs it: the CNN data-parallel over every JAX
    device (``all_devices``), waiting for each step as ``train.fit`` does on several CPU devices."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxhw import data, train
    from jaxhw.models import MLP, make_cnn

    models = {"cnn": lambda: make_cnn(dropout=0.3),
              "cnn_reference": lambda: make_cnn(REFERENCE_CHANNELS, dropout=0.3, pool_before_norm=False),
              "mlp_d3": lambda: MLP(128, 3), "mlp_d7": lambda: MLP(128, 7)}
    model = models[model_name]()  # dropout 0.3 = the PyTorch peer's (dropout does not change the cost)
    mesh = train.data_mesh() if all_devices else train.single_device_mesh()
    state = train.create_train_state(model, optax.adamw(1e-3, weight_decay=5e-4), jnp.zeros((1, 32, 32, 3)), 0)
    state = train.replicate(state, mesh)
    step = train.make_train_step(train.classification_loss(data.cifar_preprocess(True), 0.1))
    rng = np.random.default_rng(0)
    batch = {"x": rng.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8), "y": rng.integers(0, 100, BATCH)}
    holder = {"state": state}
    sync = mesh.devices.size > 1

    def run(n: int) -> float:
        s = holder["state"]
        t0 = time.perf_counter()
        for _ in range(n):
            s, m = step(s, train.shard_batch(batch, mesh))
            if sync:
                jax.block_until_ready(m)
        jax.block_until_ready(m)
        holder["state"] = s
        return n * BATCH / (time.perf_counter() - t0)

    run(2)  # compile + warm-up
    return run


def torch_step_fn(model_name: str, threads: int):
    import torch
    import torch.nn as tnn
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    def cnn(channels, pool_first: bool):
        layers, c_in = [], 3
        for c in channels:
            conv, bn = tnn.Conv2d(c_in, c, 3, padding=1, bias=False), tnn.BatchNorm2d(c)
            layers += [conv, tnn.MaxPool2d(2), bn, tnn.ReLU()] if pool_first else [conv, bn, tnn.ReLU(), tnn.MaxPool2d(2)]
            c_in = c
        return tnn.Sequential(*layers, tnn.Flatten(), tnn.Linear(1024, 256), tnn.ReLU(), tnn.Dropout(0.3),
                              tnn.Linear(256, 128), tnn.ReLU(), tnn.Dropout(0.3), tnn.Linear(128, 100))

    def mlp(depth):
        layers, d = [tnn.Flatten()], 3072
        for _ in range(depth - 1):
            layers += [tnn.Linear(d, 128), tnn.ReLU()]
            d = 128
        return tnn.Sequential(*layers, tnn.Linear(d, 100))

    from jaxhw.models import make_cnn

    ours = make_cnn()
    model = {"cnn": lambda: cnn(ours.channels, ours.pool_before_norm), "cnn_reference": lambda: cnn(REFERENCE_CHANNELS, False),
             "mlp_d3": lambda: mlp(3), "mlp_d7": lambda: mlp(7)}[model_name]()
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-4)
    mean = torch.tensor([0.5071, 0.4865, 0.4409]).view(1, 3, 1, 1)
    std = torch.tensor([0.2673, 0.2564, 0.2762]).view(1, 3, 1, 1)
    rng = np.random.default_rng(0)
    x_u8 = torch.from_numpy(rng.integers(0, 256, (BATCH, 3, 32, 32), dtype=np.uint8))
    y = torch.from_numpy(rng.integers(0, 100, BATCH))

    def augment(x):
        x = F.pad(x, (4, 4, 4, 4))
        i, j = np.random.randint(0, 9, 2)
        x = x[:, :, i:i + 32, j:j + 32]
        flip = torch.rand(x.shape[0]) < 0.5
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)

    def step():
        x = augment((x_u8.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        return n * BATCH / (time.perf_counter() - t0)

    run(2)
    return run


MODELS = ("cnn", "cnn_reference", "mlp_d3", "mlp_d7")


def main() -> None:
    from jaxhw import cli

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--rounds", type=cli.int_at_least(1), default=5)
    parser.add_argument("--steps", type=cli.int_at_least(1), default=20, help="train steps per timed round")
    parser.add_argument("--threads", type=cli.int_at_least(1), default=2, help="PyTorch intra-op threads")
    parser.add_argument("--cpu-devices", type=cli._cpu_device_count,
                        default=os.environ.get("JAXHW_CPU_DEVICES", "").strip() or str(cli.DEFAULT_CPU_DEVICES),
                        help="JAX CPU devices (default: $JAXHW_CPU_DEVICES or what `jaxhw run` uses)")
    args = parser.parse_args()

    from jaxhw import train

    n_dev = args.cpu_devices
    train.set_cpu_devices(n_dev)
    names = list(dict.fromkeys(args.models))
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}  batch={BATCH}  steps/round={args.steps}  "
          f"rounds={args.rounds}  JAX CPU devices={n_dev} (CNNs data-parallel over them, MLPs on one, "
          f"as `jaxhw run` trains)", flush=True)
    runners = {}  # (name, side) -> run(n_steps) -> images/s
    for name in names:
        parallel = name.startswith("cnn") and n_dev > 1
        runners[name, "jax"] = jax_step_fn(name, parallel)
        if parallel:
            runners[name, "jax 1-device"] = jax_step_fn(name, False)
        runners[name, "torch"] = torch_step_fn(name, args.threads)
    speeds = {key: [] for key in runners}
    for _ in range(args.rounds):  # every runner once per round, so noise hits them all alike
        for key, run in runners.items():
            speeds[key].append(run(args.steps))
    med = {key: statistics.median(v) for key, v in speeds.items()}
    print(f"{'model':14s} {'JAX img/s':>10s} {'1-device':>9s} {'PyTorch img/s':>14s} {'ratio JAX/PT':>13s} "
          f"{'JAX s/epoch(45k)':>17s} {'PT s/epoch(45k)':>16s}")
    for name in names:
        j, p = med[name, "jax"], med[name, "torch"]
        one = f"{med[name, 'jax 1-device']:9.0f}" if (name, "jax 1-device") in med else f"{'=':>9s}"
        print(f"{name:14s} {j:10.0f} {one} {p:14.0f} {j / p:13.2f} {45000 / j:17.1f} {45000 / p:16.1f}")
    if "cnn" in names and "cnn_reference" in names:
        j, p = med["cnn", "jax"], med["cnn_reference", "torch"]
        per_round = [a / b for a, b in zip(speeds["cnn", "jax"], speeds["cnn_reference", "torch"])]
        print(f"our CNN (JAX, make_cnn) vs the reference CNN (PyTorch): {j:.0f} vs {p:.0f} img/s -> ratio "
              f"{j / p:.2f} (per round {min(per_round):.2f}–{max(per_round):.2f}; {45000 / j:.1f} vs "
              f"{45000 / p:.1f} s per 45k-image epoch)")


if __name__ == "__main__":
    main()
