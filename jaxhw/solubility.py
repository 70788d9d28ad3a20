"""Aqueous solubility (log10 mol/L) from SMILES: data set, splits, training, saved models, prediction (Q18).

Pipeline: ESOL rows → :func:`build_dataset` (featurize with ``jaxhw.molecules``, skip and list bad
rows, merge duplicate structures by canonical SMILES, averaging their targets) → a split
(:func:`random_split`, :func:`scaffold_split`, or :func:`load_splits` from a file) → :func:`train`
(``jaxhw.train``'s jitted steps and fit loop, AdamW + warm-up/cosine schedule, the epoch with the
best *validation* RMSE is kept) → :func:`evaluate_rmse_mae` on the test set → :func:`save_model`.

Prediction (:func:`predict_solubility`, ``jaxhw predict-solubility``) loads a saved model — by
default the small one shipped in ``jaxhw/assets/solubility_model`` — and featurizes in packed
batches of one fixed padded shape, so thousands of molecules compile once and run in seconds.

Policies: salts/mixtures keep their largest fragment (``jaxhw.molecules``) and say so; a molecule
with more heavy atoms than ``max_heavy_atoms`` stored with the model (1.5 × the largest training
molecule) is refused rather than extrapolated; unit conversion ``S[mg/L] = 10^{log S} · M · 1000``
with ``M`` the molar mass (g/mol) of the molecule that was featurized.

Saved model format: ``config.json`` (architecture, target scale, feature vocabulary, size limit)
+ ``params.msgpack`` (``flax.serialization``). Not orbax: a shipped model is one small, immutable
file pair that must load on any flax version without orbax's directory layout or async machinery;
orbax stays the format for *training* checkpoints (``jaxhw.train``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from rdkit import Chem
from rdkit.Chem import Descriptors
from rdkit.Chem.Scaffolds import MurckoScaffold

from jaxhw import data as jdata
from jaxhw import molecules as mol
from jaxhw import train as jtrain
from jaxhw.models.gnn import MoleculeGNN

SHIPPED_MODEL = Path(__file__).parent / "assets" / "solubility_model"
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.msgpack"


# --------------------------------------------------------------------------------------------
# Data set
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MoleculeDataset:
    """Unique molecules with targets.

    ``smiles`` are RDKit canonical (isomeric) SMILES of the featurized molecule; ``targets`` the
    mean of the target over the rows that share that structure; ``rows[i]`` the input row numbers
    of molecule ``i``; ``skipped`` = ``(row, smiles, reason)`` for rows that did not parse.
    """

    smiles: tuple[str, ...]
    targets: np.ndarray
    graphs: tuple[Any, ...]
    names: tuple[str, ...]
    rows: tuple[tuple[int, ...], ...]
    heavy_atoms: np.ndarray
    mol_weight: np.ndarray
    skipped: tuple[tuple[int, str, str], ...]
    n_rows: int

    def __len__(self) -> int:
        return len(self.smiles)

    @property
    def n_merged_rows(self) -> int:
        """Rows folded into another row's molecule (duplicates)."""
        return sum(len(r) - 1 for r in self.rows)


def build_dataset(
    smiles: Sequence[str], targets: Sequence[float], names: Sequence[str] | None = None
) -> MoleculeDataset:
    """Featurize rows, skip (and record) the bad ones, merge duplicates by canonical SMILES."""
    targets = np.asarray(targets, np.float64)
    if len(smiles) != len(targets):
        raise ValueError(f"{len(smiles)} SMILES but {len(targets)} targets")
    names = tuple(names) if names is not None else ("",) * len(smiles)
    fs = mol.featurize(smiles, on_error="skip")
    groups: dict[str, list[int]] = {}
    first: dict[str, int] = {}
    for k, (row, m) in enumerate(zip(fs.index, fs.mols)):
        key = Chem.MolToSmiles(m)
        groups.setdefault(key, []).append(int(row))
        first.setdefault(key, k)
    keys = list(groups)
    ks = [first[key] for key in keys]
    return MoleculeDataset(
        smiles=tuple(keys),
        targets=np.asarray([targets[groups[key]].mean() for key in keys], np.float32),
        graphs=tuple(fs.graphs[k] for k in ks),
        names=tuple(names[groups[key][0]] for key in keys),
        rows=tuple(tuple(groups[key]) for key in keys),
        heavy_atoms=np.asarray([fs.mols[k].GetNumHeavyAtoms() for k in ks], np.int32),
        mol_weight=np.asarray([Descriptors.MolWt(fs.mols[k]) for k in ks], np.float64),
        skipped=fs.errors,
        n_rows=len(smiles),
    )


def load_esol_dataset(path_or_dir: str | Path | None = None) -> MoleculeDataset:
    """ESOL (``jaxhw.data.load_esol``) as a deduplicated :class:`MoleculeDataset`; SMILES only."""
    raw = jdata.load_esol(path_or_dir)
    return build_dataset(raw.smiles, raw.targets, raw.names)


# --------------------------------------------------------------------------------------------
# Splits (indices into the *unique molecules* of a MoleculeDataset)
# --------------------------------------------------------------------------------------------


class Split(NamedTuple):
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def random_split(n: int, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    """Seeded random partition of ``range(n)`` (``jaxhw.data.split_indices``)."""
    return Split(*jdata.split_indices(n, fractions, seed))


def murcko_scaffold(smiles: str) -> str:
    """Bemis–Murcko scaffold SMILES (ring systems + linkers, side chains removed; '' if acyclic)."""
    return MurckoScaffold.MurckoScaffoldSmiles(mol=Chem.MolFromSmiles(smiles), includeChirality=False)


def scaffold_split(
    smiles: Sequence[str], seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> Split:
    """Bemis–Murcko scaffold split: molecules sharing a scaffold land in the same part.

    Balanced variant (as in chemprop): scaffold groups larger than half the test size go first
    (in seeded random order), then the rest shuffled; groups fill train, then val, then test. Test
    molecules therefore have scaffolds never seen in training — a harder, more honest estimate.
    """
    n = len(smiles)
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(smiles):
        groups.setdefault(murcko_scaffold(s), []).append(i)
    n_train, n_val = int(round(fractions[0] * n)), int(round(fractions[1] * n))
    n_test = n - n_train - n_val
    sets = list(groups.values())
    rng = np.random.default_rng(seed)
    big = [g for g in sets if len(g) > n_test / 2]
    small = [g for g in sets if len(g) <= n_test / 2]
    big = [big[i] for i in rng.permutation(len(big))]
    small = [small[i] for i in rng.permutation(len(small))]
    train, val, test = [], [], []
    for g in big + small:
        if len(train) + len(g) <= n_train:
            train += g
        elif len(val) + len(g) <= n_val:
            val += g
        else:
            test += g
    return Split(*(np.sort(np.asarray(p, np.int64)) for p in (train, val, test)))


def save_splits(path: str | Path, dataset: MoleculeDataset, splits: Sequence[Split]) -> Path:
    """Write splits as *input row* indices: ``train_k``, ``val_k``, ``test_k`` for seed k."""
    arrays = {}
    for k, sp in enumerate(splits):
        for part, idx in zip(Split._fields, sp):
            arrays[f"{part}_{k}"] = np.sort(np.concatenate([dataset.rows[i] for i in idx] or [[]])).astype(np.int64)
    path = Path(path)
    np.savez(path, **arrays)
    return path if path.suffix == ".npz" else path.with_suffix(path.suffix + ".npz")


def load_splits(path: str | Path, dataset: MoleculeDataset) -> list[Split]:
    """Read ``--splits FILE.npz``: arrays ``train_k/val_k/test_k`` (or ``train/val/test`` for one
    split) of row indices into the input CSV (0-based, header excluded), as other tools use.

    Rows map to unique molecules; a molecule whose rows fall in two different parts is a leak and
    raises. Rows that were skipped as unparsable are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"splits file {str(path)!r} does not exist")
    with np.load(path) as z:
        keys = set(z.files)
        if {"train", "val", "test"} <= keys:
            raw = [tuple(z[p] for p in Split._fields)]
        else:
            seeds = sorted(int(k.split("_", 1)[1]) for k in keys if k.startswith("train_"))
            if not seeds or any(f"{p}_{s}" not in keys for s in seeds for p in Split._fields):
                raise ValueError(
                    f"{str(path)!r} must hold train/val/test or train_k/val_k/test_k arrays; "
                    f"found {sorted(keys)}"
                )
            raw = [tuple(z[f"{p}_{s}"] for p in Split._fields) for s in seeds]
    row_to_mol = {r: i for i, rows in enumerate(dataset.rows) for r in rows}
    out = []
    for k, parts in enumerate(raw):
        mapped = []
        for name, idx in zip(Split._fields, parts):
            idx = np.asarray(idx)
            if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= dataset.n_rows):
                raise ValueError(f"{str(path)!r} split {k} {name}: indices must be rows 0..{dataset.n_rows - 1}")
            mapped.append(np.unique([row_to_mol[int(r)] for r in idx if int(r) in row_to_mol]).astype(np.int64))
        for a, b in ((0, 1), (0, 2), (1, 2)):
            both = np.intersect1d(mapped[a], mapped[b])
            if both.size:
                raise ValueError(
                    f"{str(path)!r} split {k}: molecule {dataset.smiles[both[0]]!r} is in both "
                    f"{Split._fields[a]} and {Split._fields[b]} (duplicate rows split apart)"
                )
        out.append(Split(*mapped))
    return out


# --------------------------------------------------------------------------------------------
# Loss, batches, training
# --------------------------------------------------------------------------------------------


def regression_loss(apply_fn, variables, batch, rng, train):
    """Masked mean squared error (``jaxhw.train`` loss signature).

    ``loss = Σ_g m_g (ŷ_g − y_g)² / Σ_g m_g`` with ``m`` the real-graph mask, so padding graphs
    contribute nothing. Metric sums: ``loss`` (squared errors → epoch MSE), ``abs_err``
    (→ MAE) and ``count``.
    """
    pred = apply_fn(variables, batch["graph"], train=train, rngs={"dropout": rng})
    mask = batch["mask"].astype(pred.dtype)
    err = jnp.where(batch["mask"], pred - batch["y"], 0.0)
    sse = jnp.sum(mask * err**2)
    loss = sse / jnp.maximum(mask.sum(), 1.0)
    metrics = {"loss": sse, "abs_err": jnp.sum(mask * jnp.abs(err)), "count": mask.sum()}
    return loss, (metrics, {})


def as_engine_batch(b: mol.Batch) -> dict[str, Any]:
    """``jaxhw.molecules.Batch`` → the dict batches ``jaxhw.train`` steps take."""
    return {"graph": b.graph, "y": b.targets, "mask": b.graph_mask}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters. Architecture as the issue suggests (4 × 128 GIN-E, residual); the epoch
    budget from seed 0's *validation* curve (best epochs ~100–110 of 150); never from test data."""

    hidden: int = 128
    num_layers: int = 4
    readout: tuple[str, ...] = ("sum", "mean")
    dropout: float = 0.1
    batch_size: int = 32
    epochs: int = 150
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    budget_slack: float = 0.2

    def model(self, target_mean: float = 0.0, target_std: float = 1.0) -> MoleculeGNN:
        return MoleculeGNN(
            hidden=self.hidden,
            num_layers=self.num_layers,
            readout=tuple(self.readout),
            dropout=self.dropout,
            target_mean=float(target_mean),
            target_std=float(target_std),
        )


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """AdamW with linear warm-up then cosine decay to 0 over the run."""
    total = config.epochs * steps_per_epoch
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, min(config.warmup_epochs * steps_per_epoch, total // 2), total
    )
    return optax.adamw(schedule, weight_decay=config.weight_decay)


class TrainResult(NamedTuple):
    model: MoleculeGNN
    params: Any
    history: list[dict]
    best_epoch: int
    budget: mol.Budget


def train(
    dataset: MoleculeDataset,
    split: Split,
    config: TrainConfig = TrainConfig(),
    *,
    seed: int = 0,
    tx: optax.GradientTransformation | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train on ``split.train``; keep the parameters of the epoch with the lowest validation MSE.

    ``seed`` fixes the initialisation, dropout and the data order. One padded shape serves all
    batches (train and evaluation), so the step compiles once.
    """
    graphs = [dataset.graphs[i] for i in split.train]
    y = dataset.targets[split.train]
    budget = mol.budget_for(dataset.graphs, config.batch_size, config.budget_slack)
    n_batches = sum(1 for _ in mol.batches(graphs, None, config.batch_size, budget))
    model = config.model(float(y.mean()), float(y.std()))
    tx = tx or make_optimizer(config, n_batches)
    example = next(mol.batches(graphs[:1], None, config.batch_size, budget)).graph
    state = jtrain.create_train_state(model, tx, example, seed)
    train_step = jtrain.make_train_step(regression_loss)
    eval_step = jtrain.make_eval_step(regression_loss)

    def train_batches(epoch: int) -> Iterator[dict]:
        rng = np.random.default_rng([seed, epoch])
        return map(as_engine_batch, mol.batches(graphs, y, config.batch_size, budget, rng=rng))

    val_batches = eval_batches(dataset, split.val, budget, config.batch_size)
    best = {"mse": math.inf, "epoch": 0, "params": None}

    def keep_best(epoch, state, record):
        if record["val_loss"] < best["mse"]:
            best.update(mse=record["val_loss"], epoch=epoch, params=jax.device_get(state.params))

    _, history = jtrain.fit(
        state,
        train_step=train_step,
        eval_step=eval_step,
        train_batches=train_batches,
        eval_batches={"val": lambda: val_batches},
        epochs=config.epochs,
        steps_per_epoch=n_batches,
        desc=f"solubility seed {seed}",
        progress=progress,
        on_epoch_end=keep_best,
        log_every=max(1, config.epochs // 10),
    )
    return TrainResult(model, best["params"], history, best["epoch"], budget)


def eval_batches(dataset: MoleculeDataset, idx: np.ndarray, budget: mol.Budget, batch_size: int) -> list[dict]:
    """Padded evaluation batches of molecules ``idx`` (built once, reused every epoch)."""
    return [
        as_engine_batch(b)
        for b in mol.batches([dataset.graphs[i] for i in idx], dataset.targets[idx], batch_size, budget)
    ]


def predict_graphs(model: MoleculeGNN, params: Any, graphs: Sequence[Any], budget: mol.Budget) -> np.ndarray:
    """Predictions (log10 mol/L) for ``graphs`` in input order, in packed padded batches."""
    apply = _jitted_apply(model)
    out = []
    for b in mol.batches(list(graphs), None, budget.n_graph - 1, budget):
        pred = np.asarray(apply(params, b.graph))
        out.append(pred[b.graph_mask])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


_APPLY_CACHE: dict[MoleculeGNN, Callable] = {}


def _jitted_apply(model: MoleculeGNN) -> Callable:
    if model not in _APPLY_CACHE:
        _APPLY_CACHE[model] = jax.jit(lambda p, g: model.apply({"params": p}, g, train=False))
    return _APPLY_CACHE[model]


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """RMSE and MAE (same units as the target)."""
    err = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def log_mol_per_l_to_mg_per_l(log_s: np.ndarray, mol_weight: np.ndarray) -> np.ndarray:
    """``S[mg/L] = 10^{log S[mol/L]} · M[g/mol] · 1000 [mg/g]``."""
    return np.power(10.0, np.asarray(log_s, np.float64)) * np.asarray(mol_weight, np.float64) * 1e3


# --------------------------------------------------------------------------------------------
# Saved models
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SolubilityModel:
    """A trained model ready for prediction: network, parameters, and its validity range."""

    model: MoleculeGNN
    params: Any
    max_heavy_atoms: int
    info: dict

    def budget(self, batch_size: int = 128) -> mol.Budget:
        """Prediction padding: room for ``batch_size`` molecules of average ESOL size, and at least
        one of the largest allowed size (packed batches close early when full)."""
        n = batch_size * 16 + self.max_heavy_atoms + 1
        return mol.Budget(n, 2 * n + 8 * self.max_heavy_atoms, batch_size + 1)


_ARCH_FIELDS = ("hidden", "num_layers", "readout", "dropout", "target_mean", "target_std")


def _feature_signature() -> dict[str, list[list[str]]]:
    return {
        "atom": [[f.name, *f.labels()] for f in mol.ATOM_FEATURES],
        "bond": [[f.name, *f.labels()] for f in mol.BOND_FEATURES],
    }


def save_model(directory: str | Path, model: MoleculeGNN, params: Any, *, max_heavy_atoms: int, info: dict | None = None) -> Path:
    """Write ``config.json`` + ``params.msgpack`` to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "format": "jaxhw.solubility/1",
        "model": {f: getattr(model, f) for f in _ARCH_FIELDS},
        "features": _feature_signature(),
        "max_heavy_atoms": int(max_heavy_atoms),
        "info": info or {},
    }
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    (directory / PARAMS_FILE).write_bytes(serialization.to_bytes(jax.device_get(params)))
    return directory


def load_model(directory: str | Path | None = None) -> SolubilityModel:
    """Load a model written by :func:`save_model` (default: the one shipped with the package)."""
    directory = Path(directory) if directory is not None else SHIPPED_MODEL
    cfg_path, par_path = directory / CONFIG_FILE, directory / PARAMS_FILE
    if not cfg_path.is_file() or not par_path.is_file():
        raise FileNotFoundError(
            f"no saved solubility model in {str(directory)!r}: expected {CONFIG_FILE} and {PARAMS_FILE}"
        )
    config = json.loads(cfg_path.read_text())
    if config.get("format") != "jaxhw.solubility/1":
        raise ValueError(f"{str(cfg_path)!r}: unknown model format {config.get('format')!r}")
    if config["features"] != _feature_signature():
        raise ValueError(
            f"model in {str(directory)!r} was trained with a different atom/bond feature vocabulary "
            "than this jaxhw.molecules; retrain it"
        )
    m = config["model"]
    model = MoleculeGNN(**{f: tuple(m[f]) if f == "readout" else m[f] for f in _ARCH_FIELDS})
    example = mol.pad_batch([mol.smiles_to_graph("CO")], mol.Budget(3, 2, 2)).graph
    template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), example))["params"]
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
    params = serialization.from_bytes(template, par_path.read_bytes())
    return SolubilityModel(model, params, int(config["max_heavy_atoms"]), config.get("info", {}))


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------


class Prediction(NamedTuple):
    """One molecule's prediction; ``error`` is None when it succeeded (values NaN otherwise)."""

    smiles: str
    log_mol_per_l: float
    mg_per_l: float
    error: str | None
    note: str


def predict_solubility(
    smiles_list: Sequence[str],
    model_dir: str | Path | None = None,
    *,
    on_error: str = "raise",
    model: SolubilityModel | None = None,
) -> list[Prediction]:
    """Predict log10 solubility (mol/L) and mg/L for each SMILES, batched.

    ``on_error="raise"``: the first invalid SMILES (or a molecule over the size limit) raises
    ``ValueError`` naming it; ``"record"``: it gets a :class:`Prediction` with ``error`` set.
    """
    if isinstance(smiles_list, str):
        smiles_list = [smiles_list]
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    sm = model or load_model(model_dir)
    results: list[Prediction | None] = [None] * len(smiles_list)
    graphs, where, weights, notes = [], [], [], []
    for i, s in enumerate(smiles_list):
        try:
            parsed = mol.parse_smiles(s)
            n_heavy = parsed.mol.GetNumHeavyAtoms()
            if n_heavy > sm.max_heavy_atoms:
                raise ValueError(
                    f"SMILES {parsed.smiles!r} has {n_heavy} heavy atoms, more than this model's "
                    f"limit of {sm.max_heavy_atoms} (1.5 × its largest training molecule); refusing "
                    "to extrapolate"
                )
        except (ValueError, TypeError) as err:
            if on_error == "raise":
                raise
            results[i] = Prediction(str(s), math.nan, math.nan, str(err), "")
            continue
        graphs.append(mol.mol_to_graph(parsed.mol))
        where.append(i)
        weights.append(Descriptors.MolWt(parsed.mol))
        notes.append(
            f"salt/mixture: kept largest fragment, dropped {', '.join(parsed.dropped_fragments)}"
            if parsed.dropped_fragments
            else ""
        )
    if graphs:
        logs = predict_graphs(sm.model, sm.params, graphs, sm.budget())
        mg = log_mol_per_l_to_mg_per_l(logs, np.asarray(weights))
        for k, i in enumerate(where):
            results[i] = Prediction(smiles_list[i].strip(), float(logs[k]), float(mg[k]), None, notes[k])
    return results  # type: ignore[return-value]


def predict_main(args: argparse.Namespace) -> int:
    """``jaxhw predict-solubility SMILES... [--model DIR]``: one line per molecule; exit 1 if any
    input was invalid (the valid ones are still printed)."""
    try:
        preds = predict_solubility(args.smiles, args.model, on_error="record")
    except (FileNotFoundError, ValueError) as err:
        print(f"jaxhw predict-solubility: {err}", file=sys.stderr)
        return 2
    bad = 0
    for p in preds:
        if p.error is not None:
            bad += 1
            print(f"error\t{p.smiles}\t{p.error}", file=sys.stderr)
        else:
            note = f"\t({p.note})" if p.note else ""
            print(f"{p.smiles}\tlogS = {p.log_mol_per_l:.3f} log10(mol/L)\t{p.mg_per_l:.4g} mg/L{note}")
    return 1 if bad else 0


# --------------------------------------------------------------------------------------------
# Comparisons with reference numbers (the report's verdicts are computed, not written)
# --------------------------------------------------------------------------------------------


def compare_rmse(
    ours: Sequence[float], anchor_mean: float, anchor_std: float | None = None, anchor_n: int | None = None
) -> str:
    """Where our per-seed test RMSEs stand against a reference: ``"better"``, ``"worse"`` or
    ``"tie"`` (within noise).

    The difference of means ``d = mean(ours) − anchor_mean`` is compared with twice its standard
    error ``SE = sqrt(s²/n + s_a²/n_a)`` (the anchor's term only when its spread over ``n_a``
    splits is known; published single numbers count as exact). ``d < −2·SE`` → better,
    ``d > 2·SE`` → worse, otherwise a tie: with ~0.1 split-to-split spread, 5 seeds cannot
    resolve differences much below 0.1.
    """
    x = np.asarray(ours, np.float64)
    if x.size < 2:
        raise ValueError(f"need at least 2 seeds to compare, got {x.size}")
    var = x.var(ddof=1) / x.size
    if anchor_std is not None:
        var += anchor_std**2 / (anchor_n or x.size)
    d, se = x.mean() - anchor_mean, math.sqrt(var)
    if d < -2 * se:
        return "better"
    if d > 2 * se:
        return "worse"
    return "tie"
