"""Epoch time of the solubility GIN-E: jaxhw (JAX/jraph/Flax, jitted) vs PyTorch Geometric, one run.

Both sides get the same molecules (ESOL, seed-0 random split, the train part), the same features
(``jaxhw.molecules``), the same architecture (embed → 4 residual GIN-E layers of width 128 with
LayerNorm → sum+mean readout → MLP), AdamW, batch 32, MSE, dropout 0.1. We time whole training
epochs (median after warm-up epochs, which include JAX compilation / PyTorch allocator warm-up).

    pip install torch==2.13.0 torch_geometric      # benchmark-only; never imported by jaxhw
    python benchmarks/bench_gnn.py [--epochs 6] [--predict 5000]

It also times batched prediction from SMILES with the shipped model (``--predict N`` molecules).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np


def jax_epoch_seconds(ds, split, epochs: int) -> list[float]:
    from jaxhw import solubility as sol

    res = sol.train(ds, split, sol.TrainConfig(epochs=epochs), seed=0)
    return [h["train_seconds"] for h in res.history]


def pyg_epoch_seconds(ds, split, epochs: int, threads: int = 0) -> list[float]:
    import torch
    from torch import nn
    from torch_geometric.data import Data
    from torch_geometric.loader import DataLoader
    from torch_geometric.nn import GINEConv, global_add_pool, global_mean_pool

    torch.manual_seed(0)
    if threads:
        torch.set_num_threads(threads)
    data = []
    for i in split.train:
        g = ds.graphs[i]
        data.append(Data(
            x=torch.from_numpy(g.nodes), edge_attr=torch.from_numpy(g.edges),
            edge_index=torch.from_numpy(np.stack([g.senders, g.receivers]).astype(np.int64)),
            y=torch.tensor([float(ds.targets[i])]),
        ))
    hidden, layers, dropout = 128, 4, 0.1
    node_dim, edge_dim = data[0].x.shape[1], data[0].edge_attr.shape[1]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(node_dim, hidden)
            self.convs = nn.ModuleList(
                GINEConv(nn.Sequential(nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                                       nn.Linear(hidden, hidden)), train_eps=True, edge_dim=edge_dim)
                for _ in range(layers))
            self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
            self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, 1))
            self.drop = nn.Dropout(dropout)

        def forward(self, b):
            h = self.embed(b.x)
            for conv, norm in zip(self.convs, self.norms):
                h = h + self.drop(torch.relu(norm(conv(h, b.edge_index, b.edge_attr))))
            g = torch.cat([global_add_pool(h, b.batch), global_mean_pool(h, b.batch)], dim=1)
            return self.head(g).squeeze(-1)

    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loader = DataLoader(data, batch_size=32, shuffle=True)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        for b in loader:
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(b), b.y)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def jax_predict_seconds(smiles: list[str]) -> dict:
    """Wall time of ``predict_solubility`` on ``smiles`` with the shipped model (the ensemble),
    split into featurization (RDKit) and the rest (padding, the jitted network); the first call
    (compilation) is excluded."""
    from jaxhw import molecules as mol
    from jaxhw import solubility as sol

    model = sol.load_model()
    sol.predict_solubility(smiles[:50], model=model)  # compile
    t0 = time.perf_counter()
    for s in smiles:
        mol.mol_to_graph(mol.parse_smiles(s).mol)
    featurize = time.perf_counter() - t0
    t0 = time.perf_counter()
    sol.predict_solubility(smiles, model=model)
    total = time.perf_counter() - t0
    return {"n": len(smiles), "members": len(model.params), "total_s": total, "featurize_s": featurize,
            "molecules_per_s": len(smiles) / total}


def main() -> None:
    from jaxhw.cli import int_at_least

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int_at_least(1), default=6)
    parser.add_argument("--warmup", type=int_at_least(0), default=1, help="epochs excluded from the median")
    parser.add_argument("--torch-threads", type=int_at_least(1), default=2, help="torch.set_num_threads for the PyG side (the machine has 2 cores)")
    parser.add_argument("--only", choices=["jaxhw", "pyg"], default=None)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    parser.add_argument("--predict", type=int_at_least(0), default=5000, help="also time predicting this many SMILES (0 = skip)")
    args = parser.parse_args()
    if args.epochs <= args.warmup:
        parser.error(f"--epochs ({args.epochs}) must exceed --warmup ({args.warmup}): the median needs timed epochs")
    from jaxhw import solubility as sol

    ds = sol.load_esol_dataset()
    split = sol.random_split(len(ds), 0)
    n = len(split.train)
    out = {"molecules_per_epoch": n, "cpu_count": os.cpu_count()}
    sides = {"jaxhw": jax_epoch_seconds,
             "pyg": lambda d, s, e: pyg_epoch_seconds(d, s, e, args.torch_threads)}
    for name, fn in sides.items():
        if args.only and name != args.only:
            continue
        try:
            t = fn(ds, split, args.epochs)
        except ImportError as err:
            print(f"{name}: skipped ({err}); pip install torch==2.13.0 torch_geometric")
            continue
        med = statistics.median(t[args.warmup:])
        out[name] = {"epoch_seconds": t, "median_s": med, "molecules_per_s": n / med}
        print(f"{name:6s} median epoch {med:.3f} s  ({n / med:,.0f} molecules/s)   all: "
              + " ".join(f"{x:.2f}" for x in t))
    if "jaxhw" in out and "pyg" in out:
        out["speedup"] = out["pyg"]["median_s"] / out["jaxhw"]["median_s"]
        print(f"jaxhw is {out['speedup']:.2f}× the speed of PyG (>1 = faster)")
    if args.predict and args.only in (None, "jaxhw"):
        smiles = [ds.smiles[i % len(ds)] for i in range(args.predict)]
        p = jax_predict_seconds(smiles)
        out["predict"] = p
        print(f"predict {p['n']:,} SMILES with the shipped {p['members']}-network model: {p['total_s']:.2f} s "
              f"({p['molecules_per_s']:,.0f} molecules/s; RDKit featurization alone {p['featurize_s']:.2f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
