"""Aqueous solubility (log10 mol/L) from SMILES: data set, splits, training, saved models, prediction (Q18).

Pipeline: ESOL rows → :func:`build_dataset` (featurize with ``jaxhw.molecules``, skip and list bad
rows, merge duplicate structures by canonical SMILES, averaging their targets) → a split
(:func:`random_split`, :func:`scaffold_split`, or :func:`load_splits` from a file) → :func:`train`
(``jaxhw.train``'s jitted steps and fit loop, AdamW + warm-up/cosine schedule, the epoch with the
best *validation* RMSE is kept) → :func:`evaluate_rmse_mae` on the test set → :func:`save_model`.

Prediction (:func:`predict_solubility`, ``jaxhw predict-solubility``) loads a saved model — by
default the small one shipped in ``jaxhw/assets/solubility_model`` — and featurizes in packed
batches of one fixed padded shape, so thousands of molecules compile once and run in seconds.

Policies:

* Salts/mixtures keep their largest fragment (``jaxhw.molecules``) and say so in the note.
* Mirror images get the same prediction: solubility in water (an achiral solvent) is identical for
  two enantiomers, so the network merges the CIP R and S input columns into one "stereocentre"
  column (``MoleculeGNN.merge_node_columns`` = ``jaxhw.molecules.MIRROR_SWAPS``); the output is
  then invariant under reflection by construction, for any weights. Consequence: diastereomers
  (e.g. L- vs meso-tartaric acid), which do differ physically, are not told apart either; ESOL
  carries no R/S labels at all, so there was nothing to learn about them. E/Z stays an input (E/Z
  isomers are different compounds, not mirror images) and does change predictions.
* Training domain: the saved model records which feature values (atom/bond vocabulary, incl. the
  ``"other"`` buckets) and which net charges occurred in its training molecules
  (:func:`training_domain`). Input columns never seen in training are switched off in the
  parameters (their weights got no gradient and would only add initial noise; see
  :func:`ignore_unseen_inputs`). A molecule using an unseen value — helium, uranium, H₂
  written with explicit H atoms, a bare ion or charged fragment left by salt stripping — gets a
  *warning* with its prediction (``Prediction.warning``, a ``WARNING`` column in the CLI), or is
  refused with ``out_of_domain="error"``. Unseen *stereo* values (R/S here) are only noted: the
  model treats them as "none" and predicts exactly the stereo-unspecified structure, which is in
  its domain.
* Size: a molecule with more heavy atoms than the model's ``max_heavy_atoms`` (1.5 × the largest
  training molecule) is refused rather than extrapolated.
* Units: ``S[mg/L] = 10^{log S} · M · 1000`` with ``M`` the molar mass (g/mol) of the molecule
  that was featurized.

Saved model format (``jaxhw.solubility/2``): ``config.json`` (architecture, target scale, feature
vocabulary, training domain) + ``params.msgpack`` (``flax.serialization``); a damaged file raises
``ValueError("model file X is corrupt: ...")``. Not orbax: a shipped model is one small, immutable
file pair that must load on any flax version without orbax's directory layout or async machinery;
orbax stays the format for *training* checkpoints (``jaxhw.train``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import reprlib
import shutil
import sys
import zipfile
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
from jaxhw.models.gnn import MoleculeGNN, replace_input_rows

SHIPPED_MODEL = Path(__file__).parent / "assets" / "solubility_model"
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.msgpack"
MODEL_FORMAT = "jaxhw.solubility/3"
READABLE_FORMATS = ("jaxhw.solubility/2", MODEL_FORMAT)  # /2: one network, no "members" key


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
    net_charge: np.ndarray
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
        net_charge=np.asarray([Chem.GetFormalCharge(fs.mols[k]) for k in ks], np.int32),
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


_SPLIT_KEY = re.compile(r"^(train|val|test)(?:_(\d+))?$")


def _read_split_arrays(path: Path, expected: str) -> list[tuple[np.ndarray, ...]]:
    """The raw (train, val, test) arrays per split of a splits file, in order of k."""
    where = f"splits file {str(path)!r}"
    if not path.is_file():
        raise FileNotFoundError(f"{where} does not exist; expected {expected}")
    with path.open("rb") as fh:
        magic = fh.read(6)
    if magic == b"\x93NUMPY":
        raise ValueError(f"{where} holds a single .npy array, not an .npz archive of named arrays; expected {expected}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{where} is not an .npz archive (not a zip file: a text or other file?); expected {expected}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{where} is not a readable .npz archive ({err}); expected {expected}") from err
    with archive as z:
        groups: dict[int | None, dict[str, str]] = {}
        bad = []
        for key in z.files:
            m = _SPLIT_KEY.match(key)
            if m is None:
                bad.append(key)
            else:
                groups.setdefault(None if m[2] is None else int(m[2]), {})[m[1]] = key
        if bad or not groups:
            raise ValueError(f"{where}: unexpected array names {sorted(bad) or 'none'} (found {sorted(z.files)}); "
                             f"expected {expected}")
        if None in groups and len(groups) > 1:
            raise ValueError(f"{where} mixes train/val/test with numbered train_k/val_k/test_k arrays; "
                             f"expected {expected}")
        out = []
        for k in sorted(groups, key=lambda k: -1 if k is None else k):
            missing = [p for p in Split._fields if p not in groups[k]]
            if missing:
                raise ValueError(f"{where}: split{'' if k is None else f' {k}'} lacks {missing}; expected {expected}")
            try:
                out.append(tuple(np.asarray(z[groups[k][p]]) for p in Split._fields))
            except (ValueError, OSError, zipfile.BadZipFile) as err:
                raise ValueError(f"{where}: cannot read split {k} ({err}); expected {expected}") from err
    return out


def load_splits(path: str | Path, dataset: MoleculeDataset) -> list[Split]:
    """Read ``--splits FILE.npz``: arrays ``train_k/val_k/test_k`` (or ``train/val/test`` for one
    split) of row indices into the input CSV (0-based, header excluded), as other tools use.

    Each array must be 1-D, integer, non-empty, within ``0..n_rows−1``; the three parts of a split
    must not share a row. Rows map to unique molecules; a molecule whose (duplicate) rows fall in
    two different parts is a leak and raises. Rows that were skipped as unparsable are ignored,
    but every part must keep at least one molecule. Any violation raises ``ValueError``
    (``FileNotFoundError`` if the file is missing) naming the file and what was expected.
    """
    path = Path(path)
    where = f"splits file {str(path)!r}"
    n = dataset.n_rows
    expected = (f"an .npz archive (numpy.savez) of non-empty 1-D integer arrays train_k, val_k, test_k "
                f"(k = 0, 1, …) or train, val, test, holding disjoint row indices 0..{n - 1} of the data CSV")
    raw = _read_split_arrays(path, expected)
    row_to_mol = {r: i for i, rows in enumerate(dataset.rows) for r in rows}
    out = []
    for k, parts in enumerate(raw):
        mapped = []
        for name, idx in zip(Split._fields, parts):
            what = f"{where} split {k} {name!r}"
            if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"{what} is a {idx.ndim}-D {idx.dtype} array; expected {expected}")
            if idx.size == 0:
                raise ValueError(f"{what} is empty; expected {expected}")
            if idx.min() < 0 or idx.max() >= n:
                raise ValueError(f"{what} has row {int(idx.min() if idx.min() < 0 else idx.max())} outside "
                                 f"0..{n - 1}; expected {expected}")
            mols = np.unique([row_to_mol[int(r)] for r in idx if int(r) in row_to_mol]).astype(np.int64)
            if mols.size == 0:
                raise ValueError(f"{what}: all its rows were skipped as unparsable, nothing is left")
            mapped.append(mols)
        for a, b in ((0, 1), (0, 2), (1, 2)):
            rows = np.intersect1d(parts[a], parts[b])
            if rows.size:
                raise ValueError(f"{where} split {k}: row {int(rows[0])} is in both {Split._fields[a]} and "
                                 f"{Split._fields[b]}; expected disjoint parts")
            both = np.intersect1d(mapped[a], mapped[b])
            if both.size:
                raise ValueError(
                    f"{where} split {k}: molecule {dataset.smiles[both[0]]!r} is in both "
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
    # Weight averaging over the last ``swa_fraction`` of the epochs (0 = off). Each seed keeps the
    # best-validation epoch or this average, whichever has the lower *validation* MSE: with only
    # ~110 validation molecules, a single best epoch is a noisy pick.
    swa_fraction: float = 1 / 3
    # Members of the deep ensemble :func:`train_ensemble` trains on one split (independent
    # initialisations and data orders, predictions averaged). 1 = a single network.
    ensemble: int = 4

    def __post_init__(self):
        # a list (e.g. from JSON) would make the config unhashable; it is the same setting
        object.__setattr__(self, "readout", tuple(self.readout))

    def model(self, target_mean: float = 0.0, target_std: float = 1.0) -> MoleculeGNN:
        """The network; always mirror-invariant (R and S columns merged, see the module docstring)."""
        return MoleculeGNN(
            hidden=self.hidden,
            num_layers=self.num_layers,
            readout=tuple(self.readout),
            dropout=self.dropout,
            target_mean=float(target_mean),
            target_std=float(target_std),
            merge_node_columns=mol.MIRROR_SWAPS,
        )


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """AdamW with linear warm-up then cosine decay to 0 over the run."""
    total = config.epochs * steps_per_epoch
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, min(config.warmup_epochs * steps_per_epoch, total // 2), total
    )
    return optax.adamw(schedule, weight_decay=config.weight_decay)


# One model object, optimizer object and pair of jitted steps per configuration: the train state
# holds the model's ``apply`` and the optimizer as static fields, so reusing the same objects lets
# ensemble members (and repeated calls) share one compiled program instead of compiling each time.
@functools.lru_cache(maxsize=64)
def _shared_model(config: TrainConfig, target_mean: float, target_std: float) -> MoleculeGNN:
    return config.model(target_mean, target_std)


@functools.lru_cache(maxsize=64)
def _shared_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    return make_optimizer(config, steps_per_epoch)


@functools.cache
def _steps() -> tuple[Callable, Callable]:
    return jtrain.make_train_step(regression_loss), jtrain.make_eval_step(regression_loss)


class TrainResult(NamedTuple):
    model: MoleculeGNN
    params: Any
    history: list[dict]
    best_epoch: int
    budget: mol.Budget
    domain: dict  # training_domain(...) of the training part; save it with the model
    selected: str = "best epoch"  # which candidate validation chose: "best epoch" or "SWA a-b"


# Stereo descriptors refine a structure that is otherwise fully described: an unseen value is
# treated as "none" by the model (ignore_unseen_inputs), so the prediction is exactly that of the
# stereo-unspecified structure — worth a note, not a warning.
STEREO_FEATURES = (("atom", "chirality"), ("bond", "stereo"))


def training_domain(dataset: MoleculeDataset, idx: np.ndarray, size_factor: float = 1.5) -> dict:
    """What a model trained on molecules ``idx`` has seen (stored in ``config.json``).

    ``atom``/``bond``: per feature, the vocabulary labels that occur (closed under reflection:
    with R and S merged, seeing R covers S); ``net_charge``: the molecules' net formal charges;
    ``max_heavy_atoms``: ``⌈size_factor · largest training molecule⌉``.
    """
    idx = np.asarray(idx)
    graphs = [dataset.graphs[i] for i in idx]
    return {
        **mol.feature_coverage(graphs + [mol.mirror_graph(g) for g in graphs]),
        "net_charge": sorted({int(c) for c in dataset.net_charge[idx]}),
        "max_heavy_atoms": int(np.ceil(size_factor * dataset.heavy_atoms[idx].max())),
    }


def ignore_unseen_inputs(params: Any, model: MoleculeGNN, domain: dict) -> Any:
    """``params`` in which every feature value outside ``domain`` has no learned effect: an unseen
    *stereo* value (:data:`STEREO_FEATURES`) acts exactly like ``"none"`` (so a molecule with
    unseen R/S labels is predicted as its stereo-unspecified structure), any other unseen value
    contributes nothing (its input row is 0) — and is flagged at prediction time."""
    plans = []
    for kind, features, cols in zip(("atom", "bond"), (mol.ATOM_FEATURES, mol.BOND_FEATURES),
                                    mol.uncovered_columns(domain)):
        slices = mol.feature_slices(features)
        plan: dict[int, int | None] = {}
        for c in cols.tolist():
            f = next(f for f in features if slices[f.name].start <= c < slices[f.name].stop)
            none_col = slices[f.name].start + f.choices.index("none") if "none" in f.choices else None
            stereo = (kind, f.name) in STEREO_FEATURES and "none" in domain[kind][f.name]
            plan[c] = none_col if stereo else None
        plans.append(plan)
    return replace_input_rows(params, plans[0], plans[1], model.merge_node_columns)


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
    model = _shared_model(config, float(y.mean()), float(y.std()))
    tx = tx or _shared_optimizer(config, n_batches)
    example = next(mol.batches(graphs[:1], None, config.batch_size, budget)).graph
    state = jtrain.create_train_state(model, tx, example, seed)
    # Unseen input columns get no gradient: switched off from the start (zero rows stay zero under
    # AdamW) and again at the end (stereo rows copy the trained "none" row; other optimizers).
    domain = training_domain(dataset, split.train)
    state = state.replace(params=ignore_unseen_inputs(state.params, model, domain))
    train_step, eval_step = _steps()

    def train_batches(epoch: int) -> Iterator[dict]:
        rng = np.random.default_rng([seed, epoch])
        return map(as_engine_batch, mol.batches(graphs, y, config.batch_size, budget, rng=rng))

    val_batches = eval_batches(dataset, split.val, budget, config.batch_size)
    best = {"mse": math.inf, "epoch": 0, "params": None}

    swa_start = config.epochs - int(round(config.swa_fraction * config.epochs)) + 1
    swa = {"sum": None, "n": 0}

    def keep_best(epoch, state, record):
        if record["val_loss"] < best["mse"]:
            best.update(mse=record["val_loss"], epoch=epoch, params=jax.device_get(state.params))
        if config.swa_fraction > 0 and epoch >= swa_start:
            p = jax.device_get(state.params)
            swa["sum"] = p if swa["sum"] is None else jax.tree.map(np.add, swa["sum"], p)
            swa["n"] += 1

    final_state, history = jtrain.fit(
        state,
        train_step=train_step,
        eval_step=eval_step,
        train_batches=train_batches,
        eval_batches={"val": lambda: val_batches},
        epochs=config.epochs,
        steps_per_epoch=n_batches,
        mesh=jtrain.single_device_mesh(),  # a padded GraphsTuple must not be split along its node axis
        desc=f"solubility seed {seed}",
        progress=progress,
        on_epoch_end=keep_best,
        log_every=max(1, config.epochs // 10),
    )
    chosen, selected = best["params"], "best epoch"
    if swa["n"]:
        averaged = jax.tree.map(lambda x: x / swa["n"], swa["sum"])
        swa_mse = jtrain.evaluate(eval_step, final_state.replace(params=averaged), val_batches)["loss"]
        if swa_mse < best["mse"]:
            chosen, selected = averaged, f"SWA {swa_start}-{config.epochs}"
    params = jax.device_get(ignore_unseen_inputs(chosen, model, domain))
    return TrainResult(model, params, history, best["epoch"], budget, domain, selected)


def member_seed(seed: int, member: int) -> int:
    """Seed of ensemble member ``member`` of split seed ``seed``: member 0 is the single network
    ``train(..., seed=seed)`` would give; the others differ in initialisation, dropout and data order.

    ``seed + 1000·member``: distinct for split seeds below 1000 (with larger seeds two splits can
    share a member's initialisation; their data still differ)."""
    return int(seed) + 1000 * int(member)


class EnsembleResult(NamedTuple):
    """A deep ensemble on one split: ``members[m]`` is member ``m``'s :class:`TrainResult` and
    ``reused[m]`` says whether it was loaded from the cache instead of trained."""

    members: tuple[TrainResult, ...]
    reused: tuple[bool, ...]

    @property
    def model(self) -> MoleculeGNN:
        return self.members[0].model

    @property
    def params(self) -> tuple[Any, ...]:
        """The members' parameters; :func:`predict_graphs` averages their predictions."""
        return tuple(r.params for r in self.members)

    @property
    def budget(self) -> mol.Budget:
        return self.members[0].budget

    @property
    def domain(self) -> dict:
        return self.members[0].domain


def _config_record(config: TrainConfig) -> dict:
    """The hyperparameters that determine one member (JSON-normalised); the ensemble size does not,
    so growing an ensemble reuses the members already trained."""
    record = json.loads(json.dumps(dataclasses.asdict(config)))
    del record["ensemble"]
    return record


def split_fingerprint(dataset: MoleculeDataset, split: Split) -> str:
    """sha256 of the molecules (canonical SMILES) and targets of each part of ``split``: identifies
    the training data of a member, so a cache is never reused for another split or data set."""
    h = hashlib.sha256()
    for part in split:
        for i in np.asarray(part):
            h.update(f"{dataset.smiles[i]}\t{float(dataset.targets[i])!r}\n".encode())
        h.update(b"|")
    return h.hexdigest()


def _cached_member(directory: Path, seed: int, config: TrainConfig, data_key: str,
                   budget: mol.Budget) -> TrainResult | None:
    """Member saved by :func:`train_ensemble` in ``directory`` if it was trained with the same seed,
    hyperparameters and split (and still loads), else None: a stale or damaged cache is retrained."""
    if not directory.is_dir():
        return None
    try:
        sm = load_model(directory)
        info = sm.info
        stored = dict(info.get("config") or {})
        stored.pop("ensemble", None)
        if (info.get("seed") != seed or stored != _config_record(config) or info.get("split_sha256") != data_key
                or len(sm.params) != 1):
            print(f"jaxhw: checkpoint {directory} is from another seed, configuration or split: retraining",
                  file=sys.stderr, flush=True)
            return None
        return TrainResult(sm.model, sm.params[0], list(info["history"]), int(info["best_epoch"]), budget,
                           sm.domain, str(info["selected"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        print(f"jaxhw: checkpoint {directory} is damaged or incomplete ({reason}): retraining",
              file=sys.stderr, flush=True)
        return None


def train_ensemble(
    dataset: MoleculeDataset,
    split: Split,
    config: TrainConfig = TrainConfig(),
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    on_member: Callable[[int, TrainResult, bool], None] | None = None,
) -> EnsembleResult:
    """Train ``config.ensemble`` networks on ``split`` (seeds :func:`member_seed`), each with
    :func:`train`'s validation-based selection; predict with their mean (:func:`predict_graphs`).

    Why an ensemble: with ~900 training molecules a single network's test error depends strongly
    on its initialisation; averaging independently trained networks removes that variance (deep
    ensembles, Lakshminarayanan et al. 2017) — on ESOL's validation splits it lowers the RMSE
    (measured in the report). Checkpointing: with ``cache_dir`` every finished member is saved
    there (``member_<m>/``, :func:`save_model` format plus its history); with ``resume=True``
    members already there — same seed, hyperparameters and split (:func:`split_fingerprint`) — are
    loaded instead of retrained, so an
    interrupted run loses at most the member in progress. ``on_member(m, result, reused)`` is called
    after each member.
    """
    if config.ensemble < 1:
        raise ValueError(f"TrainConfig.ensemble must be >= 1, got {config.ensemble}")
    budget = mol.budget_for(dataset.graphs, config.batch_size, config.budget_slack)
    data_key = split_fingerprint(dataset, split)
    members, reused = [], []
    for m in range(config.ensemble):
        s = member_seed(seed, m)
        directory = None if cache_dir is None else Path(cache_dir) / f"member_{m}"
        res = _cached_member(directory, s, config, data_key, budget) if (resume and directory is not None) else None
        reused.append(res is not None)
        if res is None:
            if directory is not None and directory.exists():
                shutil.rmtree(directory)  # stale: never leave old weights beside a new record
            res = train(dataset, split, config, seed=s, progress=progress)
            if directory is not None:
                save_model(directory, res.model, res.params, domain=res.domain,
                           info={"seed": s, "config": _config_record(config), "split_sha256": data_key,
                                 "history": res.history,
                                 "best_epoch": res.best_epoch, "selected": res.selected})
        members.append(res)
        if on_member is not None:
            on_member(m, res, reused[-1])
    return EnsembleResult(tuple(members), tuple(reused))


def eval_batches(dataset: MoleculeDataset, idx: np.ndarray, budget: mol.Budget, batch_size: int) -> list[dict]:
    """Padded evaluation batches of molecules ``idx`` (built once, reused every epoch)."""
    return [
        as_engine_batch(b)
        for b in mol.batches([dataset.graphs[i] for i in idx], dataset.targets[idx], batch_size, budget)
    ]


def _members(params: Any) -> list[Any]:
    """One network's parameter tree (a dict) or a sequence of them (an ensemble) → list of trees."""
    return list(params) if isinstance(params, (list, tuple)) else [params]


def predict_members(model: MoleculeGNN, params: Any, graphs: Sequence[Any], budget: mol.Budget) -> np.ndarray:
    """``(members, len(graphs))`` predictions (log10 mol/L), one row per network of ``params`` (a
    parameter tree or a sequence of them), in packed padded batches; members are vmapped, so an
    ensemble costs one compiled program and one pass over the batches."""
    members = _members(params)
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *members)
    apply = _jitted_apply(model)
    out = []
    for b in mol.batches(list(graphs), None, budget.n_graph - 1, budget):
        pred = np.asarray(apply(stacked, b.graph))
        out.append(pred[:, b.graph_mask])
    return np.concatenate(out, axis=1) if out else np.zeros((len(members), 0), np.float32)


def predict_graphs(model: MoleculeGNN, params: Any, graphs: Sequence[Any], budget: mol.Budget) -> np.ndarray:
    """Predictions (log10 mol/L) for ``graphs`` in input order: one network's, or for a sequence of
    parameter trees (an ensemble) the mean of the members' predictions."""
    return predict_members(model, params, graphs, budget).mean(axis=0)


_APPLY_CACHE: dict[MoleculeGNN, Callable] = {}


def _jitted_apply(model: MoleculeGNN) -> Callable:
    """``(stacked member params, graph) -> (members, G)``, jitted once per architecture."""
    if model not in _APPLY_CACHE:
        one = lambda p, g: model.apply({"params": p}, g, train=False)  # noqa: E731
        _APPLY_CACHE[model] = jax.jit(jax.vmap(one, in_axes=(0, None)))
    return _APPLY_CACHE[model]


def ensemble_metrics(model: MoleculeGNN, params: Any, dataset: MoleculeDataset, idx: np.ndarray,
                     budget: mol.Budget) -> dict[str, Any]:
    """RMSE/MAE on molecules ``idx`` of every member of ``params`` and of their mean prediction:
    ``{"members": [metrics, ...], "ensemble": metrics, "pred": ensemble predictions}``."""
    idx = np.asarray(idx)
    preds = predict_members(model, params, [dataset.graphs[i] for i in idx], budget)
    y = dataset.targets[idx]
    mean = preds.mean(axis=0)
    return {"members": [regression_metrics(p, y) for p in preds], "ensemble": regression_metrics(mean, y), "pred": mean}


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
    """A trained model ready for prediction: network, parameters, and its training domain.

    ``params`` is a tuple of parameter trees, one per ensemble member (length 1 for a single
    network); predictions are the members' mean."""

    model: MoleculeGNN
    params: tuple[Any, ...]
    domain: dict
    info: dict

    @property
    def max_heavy_atoms(self) -> int:
        return int(self.domain["max_heavy_atoms"])

    def budget(self, batch_size: int = 128) -> mol.Budget:
        """Prediction padding: room for ``batch_size`` molecules of average ESOL size, and at least
        one of the largest allowed size (packed batches close early when full)."""
        n = batch_size * 16 + self.max_heavy_atoms + 1
        return mol.Budget(n, 2 * n + 8 * self.max_heavy_atoms, batch_size + 1)


_ARCH_FIELDS = ("hidden", "num_layers", "readout", "dropout", "target_mean", "target_std", "merge_node_columns")


def _feature_signature() -> dict[str, list[list[str]]]:
    return {
        "atom": [[f.name, *f.labels()] for f in mol.ATOM_FEATURES],
        "bond": [[f.name, *f.labels()] for f in mol.BOND_FEATURES],
    }


def save_model(directory: str | Path, model: MoleculeGNN, params: Any, *, domain: dict, info: dict | None = None) -> Path:
    """Write ``config.json`` + ``params.msgpack`` to ``directory``. ``params``: one network's
    parameter tree or a sequence of them (an ensemble, saved as ``{"members": [...]}``);
    ``domain`` from :func:`training_domain` (``TrainResult.domain``)."""
    _check_domain_record(domain)
    members = [jax.device_get(p) for p in _members(params)]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "format": MODEL_FORMAT,
        "model": {f: getattr(model, f) for f in _ARCH_FIELDS},
        "members": len(members),
        "features": _feature_signature(),
        "domain": domain,
        "info": info or {},
    }
    # Each file is written whole or not at all (temporary file + rename), parameters first and the
    # config last, so an interrupted save never pairs a new config with old parameters.
    _write_atomic(directory / PARAMS_FILE, serialization.to_bytes({"members": members}))
    _write_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2).encode())
    return directory


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _check_domain_record(domain: Any) -> None:
    """Raise ``ValueError`` unless ``domain`` has the fields :func:`training_domain` writes."""
    ok = (
        isinstance(domain, dict)
        and all(isinstance(domain.get(k), dict) for k in ("atom", "bond"))
        and all(isinstance(domain[kind].get(f.name), list)
                for kind, fs in (("atom", mol.ATOM_FEATURES), ("bond", mol.BOND_FEATURES)) for f in fs)
        and isinstance(domain.get("net_charge"), list)
        and isinstance(domain.get("max_heavy_atoms"), int)
    )
    if not ok:
        raise ValueError("domain must come from training_domain(): atom/bond value lists per feature, "
                         f"net_charge, max_heavy_atoms; got {reprlib.repr(domain)}")


class CorruptModelError(ValueError):
    """A saved model file exists but cannot be read back; the message names the file."""

    def __init__(self, path: Path, why: Any):
        super().__init__(f"model file {str(path)!r} is corrupt: {why}")


def load_model(directory: str | Path | None = None) -> SolubilityModel:
    """Load a model written by :func:`save_model` (default: the one shipped with the package).

    Raises ``FileNotFoundError`` if a file is missing, :class:`CorruptModelError` (a
    ``ValueError``) naming the file that cannot be decoded or does not fit the architecture, and
    ``ValueError`` for a model of another format or feature vocabulary.
    """
    directory = Path(directory) if directory is not None else SHIPPED_MODEL
    cfg_path, par_path = directory / CONFIG_FILE, directory / PARAMS_FILE
    if not cfg_path.is_file() or not par_path.is_file():
        raise FileNotFoundError(
            f"no saved solubility model in {str(directory)!r}: expected {CONFIG_FILE} and {PARAMS_FILE}"
        )
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptModelError(cfg_path, err) from err
    if not isinstance(config, dict):
        raise CorruptModelError(cfg_path, f"expected a JSON object, got {type(config).__name__}")
    missing = [k for k in ("format", "model", "features", "domain") if k not in config]
    if missing:
        raise CorruptModelError(cfg_path, f"missing keys {missing}")
    if config.get("format") not in READABLE_FORMATS:
        raise ValueError(f"{str(cfg_path)!r}: model format {config.get('format')!r}, this jaxhw reads "
                         f"{' or '.join(map(repr, READABLE_FORMATS))}; retrain or use a matching jaxhw")
    single = config["format"] != MODEL_FORMAT  # format /2: one network, its tree at the top level
    n_members = 1 if single else config.get("members")
    if not isinstance(n_members, int) or isinstance(n_members, bool) or n_members < 1:
        raise CorruptModelError(cfg_path, f"'members' must be a positive integer, got {reprlib.repr(n_members)}")
    if config.get("features") != _feature_signature():
        raise ValueError(
            f"model in {str(directory)!r} was trained with a different atom/bond feature vocabulary "
            "than this jaxhw.molecules; retrain it"
        )
    try:
        m = config["model"]
        kwargs = {f: m[f] for f in _ARCH_FIELDS}
        kwargs["readout"] = tuple(kwargs["readout"])
        kwargs["merge_node_columns"] = tuple(tuple(int(c) for c in g) for g in kwargs["merge_node_columns"])
        model = MoleculeGNN(**kwargs)
        _check_domain_record(config["domain"])
        example = mol.pad_batch([mol.smiles_to_graph("CO")], mol.Budget(3, 2, 2)).graph
        shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), example))["params"]
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptModelError(cfg_path, f"{type(err).__name__}: {err}") from err
    try:
        state = serialization.msgpack_restore(par_path.read_bytes())
    except Exception as err:  # msgpack raises many types on damaged bytes; all mean "corrupt"
        raise CorruptModelError(par_path, f"{type(err).__name__}: {err}") from err
    stored = None if single else state.get("members") if isinstance(state, dict) else None
    if not single and (not isinstance(stored, dict) or len(stored) != n_members):
        found = len(stored) if isinstance(stored, dict) else "no"
        raise CorruptModelError(par_path, f"holds {found} member(s), {CONFIG_FILE} says {n_members}")
    one = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes)
    template = one if single else {"members": [one] * n_members}
    try:
        params = serialization.from_state_dict(template, state)
    except Exception as err:  # flax raises many types on a mismatching tree; all mean "corrupt"
        raise CorruptModelError(par_path, f"{type(err).__name__}: {err}") from err
    if single:
        members = (params,)
    else:
        stored = params.get("members") if isinstance(params, dict) else None
        members = tuple(stored) if isinstance(stored, (list, tuple)) else ()
    want = jax.tree_util.tree_structure(one)
    if len(members) != n_members or any(
        jax.tree_util.tree_structure(p) != want
        or any(np.shape(a) != b.shape for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(shapes)))
        for p in members
    ):
        raise CorruptModelError(par_path, f"parameters do not fit the architecture in {CONFIG_FILE} "
                                          f"({n_members} member(s))")
    if not all(np.all(np.isfinite(a)) for p in members for a in jax.tree.leaves(p)):
        raise CorruptModelError(par_path, "non-finite parameter values")
    return SolubilityModel(model, members, config["domain"], config.get("info", {}))


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------


class Prediction(NamedTuple):
    """One molecule's prediction; ``error`` is None when it succeeded (values NaN otherwise);
    ``warning`` is set when the molecule lies outside the model's training domain."""

    smiles: str
    log_mol_per_l: float
    mg_per_l: float
    error: str | None
    note: str
    warning: str | None = None


def domain_check(parsed: mol.ParsedMolecule, graph: Any, domain: dict) -> tuple[str | None, list[str]]:
    """``(warning or None, notes)`` for one featurized molecule against a training ``domain``.

    Warning: any atom/bond feature value or net charge never seen in training (except stereo
    values, which the model ignores: a note). The size limit is checked by the caller (refusal).
    """
    problems, notes = [], []
    for kind, feature, label, raw in mol.unseen_features(graph, domain, parsed.mol):
        value = f"{label} ({', '.join(raw)})" if label == mol.OTHER and raw else label
        if (kind, feature) in STEREO_FEATURES:
            notes.append(f"{kind} {feature} {value} never seen in training: treated as none")
        else:
            problems.append(f"{kind} {feature} {value}")
    charge = Chem.GetFormalCharge(parsed.mol)
    if charge not in domain["net_charge"]:
        problems.append(f"net charge {charge:+d} (training: {', '.join(f'{c:+d}' for c in domain['net_charge'])})")
    if not problems:
        return None, notes
    return f"outside the training domain: {'; '.join(problems)} never seen in training; extrapolation", notes


def predict_solubility(
    smiles_list: Sequence[str],
    model_dir: str | Path | None = None,
    *,
    on_error: str = "raise",
    out_of_domain: str = "warn",
    model: SolubilityModel | None = None,
) -> list[Prediction]:
    """Predict log10 solubility (mol/L) and mg/L for each SMILES, batched.

    ``on_error="raise"``: the first invalid SMILES (or a molecule over the size limit) raises
    ``ValueError`` naming it; ``"record"``: it gets a :class:`Prediction` with ``error`` set.
    ``out_of_domain="warn"``: a molecule outside the training domain (see :func:`domain_check`)
    is predicted with ``warning`` set; ``"error"``: it is treated as an invalid input.
    """
    if isinstance(smiles_list, str):
        smiles_list = [smiles_list]
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    if out_of_domain not in ("warn", "error"):
        raise ValueError(f"out_of_domain must be 'warn' or 'error', got {out_of_domain!r}")
    sm = model or load_model(model_dir)
    results: list[Prediction | None] = [None] * len(smiles_list)
    graphs, where, weights, notes, warnings = [], [], [], [], []
    for i, s in enumerate(smiles_list):
        try:
            parsed = mol.parse_smiles(s)
            n_heavy = parsed.mol.GetNumHeavyAtoms()
            if n_heavy > sm.max_heavy_atoms:
                raise ValueError(
                    f"SMILES {mol.shorten(parsed.smiles)} has {n_heavy} heavy atoms, more than this model's "
                    f"limit of {sm.max_heavy_atoms} (1.5 × its largest training molecule); refusing "
                    "to extrapolate"
                )
            graph = mol.mol_to_graph(parsed.mol)
            warning, note = domain_check(parsed, graph, sm.domain)
            if warning and out_of_domain == "error":
                raise ValueError(f"SMILES {mol.shorten(parsed.smiles)} is {warning}")
        except (ValueError, TypeError) as err:
            if on_error == "raise":
                raise
            results[i] = Prediction(str(s), math.nan, math.nan, str(err), "")
            continue
        if parsed.dropped_fragments:
            note.insert(0, f"salt/mixture: kept largest fragment, dropped {', '.join(parsed.dropped_fragments)}")
        graphs.append(graph)
        where.append(i)
        weights.append(Descriptors.MolWt(parsed.mol))
        notes.append("; ".join(note))
        warnings.append(warning)
    if graphs:
        logs = predict_graphs(sm.model, sm.params, graphs, sm.budget())
        mg = log_mol_per_l_to_mg_per_l(logs, np.asarray(weights))
        for k, i in enumerate(where):
            results[i] = Prediction(smiles_list[i].strip(), float(logs[k]), float(mg[k]), None, notes[k], warnings[k])
    return results  # type: ignore[return-value]


def predict_main(args: argparse.Namespace) -> int:
    """``jaxhw predict-solubility SMILES... [--model DIR]``: one line per molecule on stdout
    (``SMILES  logS  mg/L  [WARNING: …]  [(note)]``), errors and domain warnings also on stderr.
    Exit status 1 if any input was invalid (the valid ones are still printed), else 0; a domain
    warning alone does not change it."""
    try:
        preds = predict_solubility(args.smiles, args.model, on_error="record")
    except (FileNotFoundError, ValueError) as err:
        print(f"jaxhw predict-solubility: {err}", file=sys.stderr)
        return 2
    bad = 0
    for p in preds:
        if p.error is not None:
            bad += 1
            print(f"error\t{mol.shorten(p.smiles)}\t{p.error}", file=sys.stderr)
            continue
        extra = (f"\tWARNING: {p.warning}" if p.warning else "") + (f"\t({p.note})" if p.note else "")
        print(f"{p.smiles}\tlogS = {p.log_mol_per_l:.3f} log10(mol/L)\t{p.mg_per_l:.4g} mg/L{extra}")
        if p.warning:
            print(f"warning\t{mol.shorten(p.smiles)}\t{p.warning}", file=sys.stderr)
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
