"""SMILES → RDKit ``Mol`` → :class:`jraph.GraphsTuple`, padded batches with masks (Q17–Q18).

A molecule is a graph: nodes are heavy atoms (hydrogens are folded into the ``num_hs`` atom
feature), and every chemical bond ``u–v`` becomes **two** directed edges ``u→v`` and ``v→u``
so that message passing is symmetric. Node features are the concatenation of one-hot codes

    element · degree · formal charge · number of H · hybridization · aromatic · in ring · CIP chirality

and edge features are ``bond type · conjugated · in ring · CIP double-bond stereo``. Every
categorical vocabulary ends in an ``"other"`` bucket, so a value a newer RDKit introduces (a new
hybridization, a new stereo flag) is encoded rather than crashing the featurizer.

Chirality is the CIP label (R / S / none), computed by RDKit's new CIP labeler, never the raw
``CHI_TETRAHEDRAL_CW/CCW`` tag: that tag describes the neighbour order *as written in this SMILES*,
so ``C[C@H](N)O`` and ``N[C@@H](C)O`` (the same molecule) carry opposite tags. The CIP label is a
property of the molecule, independent of atom order. Double bonds likewise get E/Z, not the
atom-order dependent cis/trans flags.

Policies (documented here because they change what a prediction means):

* Surrounding whitespace is stripped; an empty or unparsable SMILES, or one with whitespace
  *inside* it, raises :class:`InvalidSmilesError` (a ``ValueError``) that quotes the input
  (RDKit would read ``"CCO CC"`` as ethanol named "CC" and silently drop the rest). Inputs longer
  than 60 characters are shortened in messages (:func:`shorten`).
* Salts and mixtures (``'.'`` in the SMILES): by default the largest fragment is kept (RDKit's
  ``LargestFragmentChooser``: most atoms, then weight) and the rest dropped, as usual for
  counter-ions; ``fragments="error"`` refuses them instead. What was dropped is reported.
* Size: :func:`smiles_to_graph` accepts any size; the *model* refuses molecules far outside its
  training range (see ``jaxhw.solubility``).

Mirror images: reflecting a molecule swaps every R ↔ S label and leaves everything else (E/Z
included: E/Z isomers are different compounds, not mirror images) unchanged, so in feature space
the mirror image is the column swap :data:`MIRROR_SWAPS` (:func:`mirror_graph`). A model that must
give enantiomers the same output merges those columns (``jaxhw.models.gnn.MoleculeGNN``).

Training-domain coverage: :func:`feature_coverage` records which vocabulary values occur in a set
of graphs and :func:`unseen_features` lists the values of a new graph outside it (an element in
the ``"other"`` bucket, an unseen charge, ...), so a model can flag inputs it never learned.

Batching: :func:`pad_batch` concatenates graphs and pads them to a fixed :class:`Budget`
(nodes, edges, graphs) with ``jraph.pad_with_graphs`` so one compiled program serves every batch.
Padding nodes/edges live in one extra padding graph (plus empty graphs); ``Batch.graph_mask``
marks the real graphs, and losses/metrics must weight by it.
"""

from __future__ import annotations

import dataclasses
import reprlib
from typing import Any, Iterator, NamedTuple, Sequence

import jraph
import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdCIPLabeler
from rdkit.Chem.MolStandardize import rdMolStandardize

__all__ = [
    "ATOM_FEATURES",
    "BOND_FEATURES",
    "ATOM_DIM",
    "BOND_DIM",
    "Batch",
    "Budget",
    "Feature",
    "FeaturizedSet",
    "InvalidSmilesError",
    "MIRROR_SWAPS",
    "ParsedMolecule",
    "batches",
    "budget_for",
    "feature_coverage",
    "feature_slices",
    "fits",
    "featurize",
    "uncovered_columns",
    "mirror_graph",
    "mol_to_graph",
    "pad_batch",
    "parse_smiles",
    "shorten",
    "smiles_to_graph",
    "unseen_features",
]

OTHER = "other"


class InvalidSmilesError(ValueError):
    """A SMILES string could not be turned into a molecule; the message quotes it."""


def shorten(text: str, limit: int = 60) -> str:
    """``repr`` of ``text`` for error messages, cut to its first ``limit`` characters + "…" (and
    the full length) when longer, so a 2,000-atom SMILES does not flood the terminal."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"


@dataclasses.dataclass(frozen=True)
class Feature:
    """One categorical feature: its name and vocabulary; the one-hot has ``len(choices) + 1``
    slots, the last being the ``"other"`` bucket for any value not in ``choices``."""

    name: str
    choices: tuple[Any, ...]

    @property
    def size(self) -> int:
        return len(self.choices) + 1

    def one_hot(self, value: Any) -> np.ndarray:
        out = np.zeros(self.size, np.float32)
        try:
            out[self.choices.index(value)] = 1.0
        except ValueError:
            out[-1] = 1.0
        return out

    def labels(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.choices) + (OTHER,)


# Hybridization / bond type are compared by name so that a renamed or new enum member falls
# into "other" instead of raising.
ATOM_FEATURES: tuple[Feature, ...] = (
    Feature("element", ("C", "N", "O", "S", "F", "Cl", "Br", "I", "P", "B", "Si", "Se")),
    Feature("degree", (0, 1, 2, 3, 4, 5)),
    Feature("formal_charge", (-1, 0, 1)),
    Feature("num_hs", (0, 1, 2, 3, 4)),
    Feature("hybridization", ("SP", "SP2", "SP3", "SP3D", "SP3D2")),
    Feature("aromatic", (False, True)),
    Feature("in_ring", (False, True)),
    Feature("chirality", ("none", "R", "S")),
)
BOND_FEATURES: tuple[Feature, ...] = (
    Feature("bond_type", ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")),
    Feature("conjugated", (False, True)),
    Feature("in_ring", (False, True)),
    Feature("stereo", ("none", "E", "Z")),
)
ATOM_DIM = sum(f.size for f in ATOM_FEATURES)
BOND_DIM = sum(f.size for f in BOND_FEATURES)


def feature_slices(features: Sequence[Feature] = ATOM_FEATURES) -> dict[str, slice]:
    """Columns of each feature inside the concatenated one-hot vector (``nodes[:, sl]``)."""
    out, start = {}, 0
    for f in features:
        out[f.name] = slice(start, start + f.size)
        start += f.size
    return out


def _column(features: Sequence[Feature], name: str, value: Any) -> int:
    f = next(f for f in features if f.name == name)
    return feature_slices(features)[name].start + f.choices.index(value)


# Node columns exchanged by a reflection: the R and S slots of the CIP chirality block. Pseudo-
# asymmetric r/s ("other") and E/Z do not change under reflection.
MIRROR_SWAPS: tuple[tuple[int, int], ...] = (
    (_column(ATOM_FEATURES, "chirality", "R"), _column(ATOM_FEATURES, "chirality", "S")),
)


def mirror_graph(graph: jraph.GraphsTuple) -> jraph.GraphsTuple:
    """The featurized mirror image: node columns of each :data:`MIRROR_SWAPS` pair exchanged."""
    nodes = np.array(graph.nodes, copy=True)
    for a, b in MIRROR_SWAPS:
        nodes[:, [a, b]] = nodes[:, [b, a]]
    return graph._replace(nodes=nodes)


def _values_present(block: np.ndarray, feature: Feature) -> set[str]:
    return {feature.labels()[k] for k in np.flatnonzero(np.asarray(block).any(axis=0))}


def feature_coverage(graphs: Sequence[jraph.GraphsTuple]) -> dict[str, dict[str, list[str]]]:
    """Vocabulary values (as :meth:`Feature.labels`) that occur in ``graphs``:
    ``{"atom": {feature: [labels]}, "bond": {...}}`` (JSON-ready, sorted in vocabulary order)."""
    out: dict[str, dict[str, list[str]]] = {}
    for kind, features, attr in (("atom", ATOM_FEATURES, "nodes"), ("bond", BOND_FEATURES, "edges")):
        seen: dict[str, set[str]] = {f.name: set() for f in features}
        slices = feature_slices(features)
        for g in graphs:
            x = np.asarray(getattr(g, attr))
            for f in features:
                seen[f.name] |= _values_present(x[:, slices[f.name]], f)
        out[kind] = {f.name: [lab for lab in f.labels() if lab in seen[f.name]] for f in features}
    return out


def uncovered_columns(coverage: dict[str, dict[str, list[str]]]) -> tuple[np.ndarray, np.ndarray]:
    """Node and edge feature columns whose value is not in ``coverage`` (never seen)."""
    out = []
    for kind, features in (("atom", ATOM_FEATURES), ("bond", BOND_FEATURES)):
        cols, start = [], 0
        for f in features:
            known = set(coverage[kind][f.name])
            cols += [start + k for k, lab in enumerate(f.labels()) if lab not in known]
            start += f.size
        out.append(np.asarray(cols, np.int64))
    return out[0], out[1]


def unseen_features(
    graph: jraph.GraphsTuple, coverage: dict[str, dict[str, list[str]]], mol: Chem.Mol | None = None
) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """``(kind, feature, label, raw values)`` for each value in ``graph`` outside ``coverage``
    (from :func:`feature_coverage`), e.g. ``("atom", "element", "other", ("He",))`` for helium.
    Raw values (what RDKit reported, useful for the ``"other"`` bucket) need ``mol``, the
    molecule ``graph`` was made from; without it they are ``()``."""
    out = []
    for kind, features, attr in (("atom", ATOM_FEATURES, "nodes"), ("bond", BOND_FEATURES, "edges")):
        x = np.asarray(getattr(graph, attr))
        slices = feature_slices(features)
        for fi, f in enumerate(features):
            present = _values_present(x[:, slices[f.name]], f)
            for lab in f.labels():
                if lab in present and lab not in set(coverage[kind][f.name]):
                    out.append((kind, f.name, lab, _raw_values(mol, kind, fi) if lab == OTHER else (lab,)))
    return out


def _raw_values(mol: Chem.Mol | None, kind: str, feature_index: int) -> tuple[str, ...]:
    """The distinct raw values of feature ``feature_index`` that fall in its "other" bucket."""
    if mol is None:
        return ()
    m = Chem.Mol(mol)
    rdCIPLabeler.AssignCIPLabels(m)
    f = (ATOM_FEATURES if kind == "atom" else BOND_FEATURES)[feature_index]
    values = (
        [_atom_values(a) for a in m.GetAtoms()] if kind == "atom" else [_bond_values(b) for b in m.GetBonds()]
    )
    return tuple(sorted({str(v[feature_index]) for v in values if v[feature_index] not in f.choices}))


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


class ParsedMolecule(NamedTuple):
    """A sanitized RDKit molecule plus what the fragment policy dropped (SMILES, may be empty)."""

    mol: Chem.Mol
    smiles: str  # the input, stripped
    dropped_fragments: tuple[str, ...]


_FRAGMENT_POLICIES = ("largest", "error")


def parse_smiles(smiles: str, *, fragments: str = "largest") -> ParsedMolecule:
    """Parse one SMILES (whitespace stripped) with RDKit and apply the salt/mixture policy.

    Raises:
      TypeError: ``smiles`` is not a string.
      InvalidSmilesError: empty, unparsable, whitespace inside it, or a mixture when
        ``fragments="error"``.
    """
    if not isinstance(smiles, str):
        raise TypeError(f"SMILES must be a str, got {type(smiles).__name__}: {reprlib.repr(smiles)}")
    if fragments not in _FRAGMENT_POLICIES:
        raise ValueError(f"fragments must be one of {_FRAGMENT_POLICIES}, got {fragments!r}")
    text = smiles.strip()
    if not text:
        raise InvalidSmilesError(f"empty SMILES: {shorten(smiles)}")
    if any(c.isspace() for c in text):
        raise InvalidSmilesError(
            f"SMILES {shorten(text)} contains whitespace; RDKit would read the part after it as a "
            "name and ignore it. Pass one molecule per string (use '.' for mixtures)"
        )
    with rdBase.BlockLogs():  # RDKit would print its own parse errors to stderr
        mol = Chem.MolFromSmiles(text)
    if mol is None:
        raise InvalidSmilesError(f"RDKit cannot parse SMILES {shorten(text)}")
    if mol.GetNumAtoms() == 0:
        raise InvalidSmilesError(f"SMILES {shorten(text)} has no atoms")
    dropped: tuple[str, ...] = ()
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    if len(frags) > 1:
        if fragments == "error":
            raise InvalidSmilesError(
                f"SMILES {shorten(text)} is a salt or mixture of {len(frags)} fragments; "
                "pass fragments='largest' to keep the largest one"
            )
        keep = rdMolStandardize.LargestFragmentChooser(preferOrganic=True).choose(mol)
        keep_smiles = Chem.MolToSmiles(keep)
        dropped = tuple(
            s for s in (Chem.MolToSmiles(f) for f in frags) if s != keep_smiles
        ) or tuple(Chem.MolToSmiles(f) for f in frags[1:])
        mol = keep
    return ParsedMolecule(mol, text, dropped)


# --------------------------------------------------------------------------------------------
# Featurization
# --------------------------------------------------------------------------------------------


def _atom_values(atom: Chem.Atom) -> tuple[Any, ...]:
    cip = atom.GetProp("_CIPCode") if atom.HasProp("_CIPCode") else "none"
    return (
        atom.GetSymbol(),
        atom.GetDegree(),
        atom.GetFormalCharge(),
        atom.GetTotalNumHs(),
        str(atom.GetHybridization()),
        atom.GetIsAromatic(),
        atom.IsInRing(),
        cip,  # "r"/"s" (pseudo-asymmetric) and anything new go to "other"
    )


def _bond_values(bond: Chem.Bond) -> tuple[Any, ...]:
    cip = bond.GetProp("_CIPCode") if bond.HasProp("_CIPCode") else "none"
    return (str(bond.GetBondType()), bond.GetIsConjugated(), bond.IsInRing(), cip)


def _encode(features: Sequence[Feature], values: Sequence[Any]) -> np.ndarray:
    return np.concatenate([f.one_hot(v) for f, v in zip(features, values)])


def mol_to_graph(mol: Chem.Mol) -> jraph.GraphsTuple:
    """One molecule → a single-graph ``GraphsTuple``.

    Shapes: ``nodes (N, ATOM_DIM)``, ``edges (2B, BOND_DIM)``, ``senders/receivers (2B,)`` int32
    with edge ``2k`` = bond k forward (begin→end) and ``2k+1`` its reverse; ``globals`` is None.
    """
    mol = Chem.Mol(mol)  # the CIP labeler writes properties; leave the caller's object alone
    rdCIPLabeler.AssignCIPLabels(mol)
    nodes = np.stack([_encode(ATOM_FEATURES, _atom_values(a)) for a in mol.GetAtoms()])
    n_bonds = mol.GetNumBonds()
    edges = np.zeros((2 * n_bonds, BOND_DIM), np.float32)
    senders = np.zeros(2 * n_bonds, np.int32)
    receivers = np.zeros(2 * n_bonds, np.int32)
    for k, bond in enumerate(mol.GetBonds()):
        u, v = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        edges[2 * k] = edges[2 * k + 1] = _encode(BOND_FEATURES, _bond_values(bond))
        senders[2 * k], receivers[2 * k] = u, v
        senders[2 * k + 1], receivers[2 * k + 1] = v, u
    return jraph.GraphsTuple(
        nodes=nodes.astype(np.float32),
        edges=edges,
        senders=senders,
        receivers=receivers,
        globals=None,
        n_node=np.array([nodes.shape[0]], np.int32),
        n_edge=np.array([2 * n_bonds], np.int32),
    )


def smiles_to_graph(smiles: str, *, fragments: str = "largest") -> jraph.GraphsTuple:
    """One SMILES → ``GraphsTuple`` (see :func:`mol_to_graph`); bad input raises
    :class:`InvalidSmilesError` naming the SMILES."""
    return mol_to_graph(parse_smiles(smiles, fragments=fragments).mol)


@dataclasses.dataclass(frozen=True)
class FeaturizedSet:
    """Graphs for the SMILES that parsed, and a record of those that did not.

    ``index[i]`` is the position in the input of ``graphs[i]``; ``errors`` lists
    ``(position, smiles, message)`` for each skipped input; ``dropped`` lists
    ``(position, dropped fragment SMILES)`` for salts/mixtures reduced to their largest fragment.
    """

    graphs: tuple[jraph.GraphsTuple, ...]
    index: np.ndarray
    mols: tuple[Chem.Mol, ...]
    errors: tuple[tuple[int, str, str], ...]
    dropped: tuple[tuple[int, tuple[str, ...]], ...]

    def __len__(self) -> int:
        return len(self.graphs)


def featurize(
    smiles: Sequence[str], *, on_error: str = "skip", fragments: str = "largest"
) -> FeaturizedSet:
    """Featurize many SMILES. ``on_error="skip"`` records bad rows in ``errors`` and keeps the
    rest (what a data set loader wants); ``"raise"`` re-raises the first error."""
    if isinstance(smiles, str):
        raise TypeError("featurize expects a sequence of SMILES; use smiles_to_graph for one")
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    graphs, index, mols, errors, dropped = [], [], [], [], []
    for i, s in enumerate(smiles):
        try:
            parsed = parse_smiles(s, fragments=fragments)
        except (InvalidSmilesError, TypeError) as err:
            if on_error == "raise":
                raise
            errors.append((i, str(s), str(err)))
            continue
        graphs.append(mol_to_graph(parsed.mol))
        mols.append(parsed.mol)
        index.append(i)
        if parsed.dropped_fragments:
            dropped.append((i, parsed.dropped_fragments))
    return FeaturizedSet(
        tuple(graphs), np.asarray(index, np.int64), tuple(mols), tuple(errors), tuple(dropped)
    )


# --------------------------------------------------------------------------------------------
# Padding and batching
# --------------------------------------------------------------------------------------------


class Budget(NamedTuple):
    """Static padded sizes of a batch: total nodes, total edges, graphs (incl. padding graphs)."""

    n_node: int
    n_edge: int
    n_graph: int


def budget_for(
    graphs: Sequence[jraph.GraphsTuple], batch_size: int, slack: float | None = None
) -> Budget:
    """A padding budget for batches of up to ``batch_size`` of ``graphs``.

    ``slack=None``: the worst case, the sums of the ``batch_size`` largest node and edge counts,
    so every batch holds exactly ``batch_size`` graphs. ``slack=s``: ``(1 + s)`` times the
    *average* batch (plus the largest graph), far less padding; :func:`batches` then closes a
    batch early when the next graph would not fit. Both add the node and graph that
    ``jraph.pad_with_graphs`` needs for its padding graph.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not graphs:
        raise ValueError("budget_for needs at least one graph")
    n_nodes = np.asarray([int(g.n_node.sum()) for g in graphs])
    n_edges = np.asarray([int(g.n_edge.sum()) for g in graphs])
    if slack is None:
        nodes = int(np.sort(n_nodes)[::-1][:batch_size].sum())
        edges = int(np.sort(n_edges)[::-1][:batch_size].sum())
    else:
        k = min(batch_size, len(graphs))
        nodes = int(np.ceil(k * n_nodes.mean() * (1 + slack))) + int(n_nodes.max())
        edges = int(np.ceil(k * n_edges.mean() * (1 + slack))) + int(n_edges.max())
    return Budget(nodes + 1, edges, batch_size + 1)


def fits(graph: jraph.GraphsTuple, budget: Budget) -> bool:
    """Whether one graph alone fits in ``budget`` (with room for the padding graph)."""
    return int(graph.n_node.sum()) < budget.n_node and int(graph.n_edge.sum()) <= budget.n_edge


class Batch(NamedTuple):
    """A padded batch. ``targets``/``graph_mask`` have shape ``(budget.n_graph,)``;
    ``graph_mask`` is True exactly for the real molecules."""

    graph: jraph.GraphsTuple
    targets: np.ndarray
    graph_mask: np.ndarray


def pad_batch(
    graphs: Sequence[jraph.GraphsTuple], budget: Budget, targets: np.ndarray | None = None
) -> Batch:
    """Concatenate ``graphs`` and pad to ``budget`` (raises if they do not fit)."""
    n = len(graphs)
    if n == 0 or n >= budget.n_graph:
        raise ValueError(f"need 1 <= len(graphs) < budget.n_graph={budget.n_graph}, got {n}")
    padded = jraph.pad_with_graphs(jraph.batch_np(list(graphs)), *budget)
    t = np.zeros(budget.n_graph, np.float32)
    if targets is not None:
        t[:n] = np.asarray(targets, np.float32).reshape(n)
    mask = np.zeros(budget.n_graph, bool)
    mask[:n] = True
    return Batch(padded, t, mask)


def batches(
    graphs: Sequence[jraph.GraphsTuple],
    targets: np.ndarray | None,
    batch_size: int,
    budget: Budget | None = None,
    *,
    rng: np.random.Generator | None = None,
) -> Iterator[Batch]:
    """Padded batches over ``graphs`` (shuffled with ``rng`` if given, else in order).

    Graphs are packed greedily: a batch closes at ``batch_size`` graphs or when the next graph
    would overflow the node/edge budget, so every batch has the same padded shapes (one
    compilation) and every graph is used exactly once per pass.
    """
    budget = budget or budget_for(graphs, batch_size)
    if budget.n_graph < batch_size + 1:
        raise ValueError(f"budget {budget} holds fewer than batch_size={batch_size} graphs")
    n_nodes = np.asarray([int(g.n_node.sum()) for g in graphs])
    n_edges = np.asarray([int(g.n_edge.sum()) for g in graphs])
    too_big = np.flatnonzero((n_nodes >= budget.n_node) | (n_edges > budget.n_edge))
    if too_big.size:
        raise ValueError(
            f"graph(s) at positions {too_big[:5].tolist()} exceed the budget {budget} on their own"
        )
    order = rng.permutation(len(graphs)) if rng is not None else np.arange(len(graphs))
    tgt = None if targets is None else np.asarray(targets)
    idx: list[int] = []
    used_n = used_e = 0
    for i in order:
        if idx and (
            len(idx) == batch_size
            or used_n + n_nodes[i] >= budget.n_node
            or used_e + n_edges[i] > budget.n_edge
        ):
            yield pad_batch([graphs[j] for j in idx], budget, None if tgt is None else tgt[idx])
            idx, used_n, used_e = [], 0, 0
        idx.append(int(i))
        used_n += n_nodes[i]
        used_e += n_edges[i]
    if idx:
        yield pad_batch([graphs[j] for j in idx], budget, None if tgt is None else tgt[idx])
