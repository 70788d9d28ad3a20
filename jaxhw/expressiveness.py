"""What message-passing GNNs can and cannot compute (Q16–Q17), shown on concrete graphs.

Three kinds of evidence, all built on :mod:`jaxhw.graphs`:

* **Hand-built MP-GNNs** (weights / functions set by hand, not trained) that solve a problem —
  node counting and the eccentricity ``max_u d(u, v)`` of a marked node — checked against
  networkx on random graphs.
* **Counterexample pairs** for the impossible cases: colour refinement of the matching kind
  (:func:`jaxhw.graphs.wl_refine`: multiset = sum/generic, set = max, distribution = mean)
  gives the two graphs the same READOUT summary, so every MP-GNN of that kind agrees on them;
  a family of **randomly initialised** MP-GNNs (:class:`ProbeGNN`, many weight draws, ``vmap``)
  confirms it numerically while the true answers differ.
* **Controls**: pairs that the same refinement separates, on which the same random GNNs differ —
  so "identical outputs" is not an artefact of a degenerate network.

Conventions the problem set leaves open (answers are given under each):

* READOUT ``"multiset"``: any function of the multiset of final node features, realised as
  ``ρ(Σ_v φ(h_v))`` (DeepSets); READOUT ``"same"``: pooling with the same operation as AGGREGATE
  (``f(Σ g)`` / max / mean) followed by a map.
* Layers fixed in advance (``T`` independent of the graph) versus allowed to grow with it
  (``T ≥`` diameter, e.g. ``T = |V|``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import networkx as nx
import numpy as np

from jaxhw import graphs as gr

Array = jax.Array

KINDS = ("generic", "max", "mean")
READOUTS = ("multiset", "same")
_WL_MODE = {"generic": "multiset", "max": "set", "mean": "distribution"}
FEATURE = "x"  # node attribute holding the initial scalar feature in networkx graphs
WEIGHT = "w"  # edge attribute holding w_e


def _check_kind(kind: str, readout: str | None = None) -> None:
    if kind not in KINDS:
        raise ValueError(f"aggregation must be one of {KINDS}, got {kind!r}")
    if readout is not None and readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")


def wl_readout_kind(kind: str, readout: str) -> str:
    """Which summary of the final colours a READOUT convention can see for this aggregation."""
    _check_kind(kind, readout)
    return "multiset" if readout == "multiset" else _WL_MODE[kind]


# ----------------------------------------------------------------------------- graph problems


def with_features(G: nx.Graph, marked: Any = None, weight: float = 1.0) -> nx.Graph:
    """Copy of ``G`` with the restriction's initial features: ``x = 1`` everywhere, except ``x = 0``
    at the ``marked`` node (Q16(b)); every edge gets weight ``w = weight``."""
    H = nx.Graph(G)
    nx.set_node_attributes(H, 1.0, FEATURE)
    if marked is not None:
        if marked not in H:
            raise ValueError(f"with_features: marked node {marked!r} is not in the graph")
        H.nodes[marked][FEATURE] = 0.0
    nx.set_edge_attributes(H, weight, WEIGHT)
    return H


def marked_node(G: nx.Graph) -> Any:
    zeros = [v for v in G.nodes if G.nodes[v].get(FEATURE, 1.0) == 0.0]
    if len(zeros) != 1:
        raise ValueError(f"expected exactly one marked node (feature 0), found {len(zeros)}")
    return zeros[0]


def num_nodes(G: nx.Graph) -> int:
    return G.number_of_nodes()


def eccentricity_of_marked(G: nx.Graph) -> int:
    """``max_u d(u, v)`` for the marked node ``v`` — networkx BFS, the independent reference."""
    if not nx.is_connected(G):
        raise ValueError("eccentricity_of_marked: the graph must be connected (d(u, v) = ∞ otherwise)")
    return max(nx.single_source_shortest_path_length(G, marked_node(G)).values())


def num_triangles(G: nx.Graph) -> int:
    return sum(nx.triangles(G).values()) // 3


def to_graphs_tuple(G: nx.Graph) -> jraph.GraphsTuple:
    return gr.from_networkx(G, node_features=FEATURE, edge_weight=WEIGHT)


def random_connected_graph(rng: np.random.Generator, n_min: int = 2, n_max: int = 12) -> nx.Graph:
    """A random connected graph: a random spanning tree plus random extra edges (density varies)."""
    n = int(rng.integers(n_min, n_max + 1))
    G = nx.random_labeled_tree(n, seed=int(rng.integers(2**31))) if n > 1 else nx.empty_graph(1)
    p_extra = float(rng.uniform(0.0, 0.4))
    for u in range(n):
        for v in range(u + 1, n):
            if rng.random() < p_extra:
                G.add_edge(u, v)
    return G


# ----------------------------------------------------------------------------- hand-built MP-GNNs


def node_count_gnn(graph: jraph.GraphsTuple) -> Array:
    """Q16(a): zero layers and READOUT ``f(Σ_v g(h_v))`` with ``g ≡ 1``, ``f = id`` → ``|V|``.

    This is a generic pooling (so it fits both READOUT conventions for generic aggregation) and
    a multiset function (so it fits the ``"multiset"`` convention for max and mean as well).
    """
    ones = jnp.ones((graph.nodes.shape[0], 1), graph.nodes.dtype)
    return gr.readout(graph, ones, gr.generic_aggregator(lambda s: s, lambda h: jnp.ones_like(h)))[:, 0]


def integer_max_sharpness(max_neighbours: int) -> float:
    """Sharpness ``p`` making the log-sum-exp max exact on integers after rounding: the error
    ``log(n)/p`` of :func:`jaxhw.graphs.approx_max_fg` must stay below 1/2 for ``n ≤ max_neighbours``."""
    return 2.0 * math.log(max(max_neighbours, 2)) + 1.0


def _flood_integer_max(graph: jraph.GraphsTuple, m: Array, kind: str, num_layers: int, bound: int, max_deg: int) -> Array:
    """``num_layers`` rounds of ``m_v ← max(m_v, max_{u∈N(v)} m_u)`` on integers in ``[0, bound]``,
    with AGGREGATE = generic (Q15(b) log-sum-exp, then round) or mean (mean of ``e^{p m_u}``)."""
    p = integer_max_sharpness(max_deg)
    C = bound / 2.0  # centre [0, bound] → [-C, C] so exp(p(h − C)) neither overflows nor underflows
    if kind == "generic":
        agg = gr.approx_max_aggregator(p, C)

        def step(_: int, m: Array) -> Array:
            x = gr.message_passing(graph, m - C, agg) + C  # ∈ [M, M + log(deg)/p] ⊂ [M, M + 1/2)
            has = gr.message_passing(graph, jnp.ones_like(m), gr.segment_sum) > 0
            return jnp.where(has, jnp.maximum(m, jnp.round(x - 0.25)), m)

    else:

        def step(_: int, m: Array) -> Array:
            mean_exp = gr.message_passing(graph, m, gr.segment_mean, message=lambda s, w: jnp.exp(p * (s - bound)))
            x = bound + jnp.log(jnp.maximum(mean_exp, jnp.finfo(m.dtype).tiny)) / p  # ∈ [M − log(deg)/p, M]
            return jnp.where(mean_exp > 0, jnp.maximum(m, jnp.round(x + 0.25)), m)

    return jax.lax.fori_loop(0, num_layers, step, m)


@functools.partial(jax.jit, static_argnames=("kind", "readout", "num_layers", "bound", "max_deg"))
def eccentricity_gnn(
    graph: jraph.GraphsTuple, kind: str, readout: str, num_layers: int, bound: int, max_deg: int
) -> Array:
    """Q16(b) hand-built MP-GNN: ``max_u d(u, v)`` for the node ``v`` with feature 0.

    State ``(r_u, c_u)``: ``r_u ∈ {0,1}`` "reached from v", ``c_u`` rounds spent unreached.
    ``r^0 = 1 − h``, ``c^0 = 0``; each layer

        m_u = AGGREGATE({r_w : w ∈ N(u)}),    r_u ← [r_u + m_u > 0],    c_u ← c_u + 1 − r_u(old).

    With AGGREGATE = sum (generic, f = g = id), max or mean, ``m_u > 0`` iff a neighbour is
    reached, so after ``T ≥ max_u d(u, v)`` layers ``c_u = d(u, v)`` exactly (``min(d, T)`` if fewer).
    READOUT ``"multiset"``: ``max_u c_u``. READOUT ``"same"``: max pooling for max; for generic and
    mean, ``num_layers`` more rounds flood the integer max (log-sum-exp of Q15(b) with
    ``p > 2 log Δ`` then rounding) so every node holds the answer, and the pool (exact mean as
    ``generic_{f,g}``, or mean) returns it. ``bound ≥ |V|`` and ``max_deg ≥ Δ`` are static.
    """
    _check_kind(kind, readout)
    h = graph.nodes[:, :1]
    agg = gr.AGGREGATORS[kind]

    def layer(_: int, state: tuple[Array, Array]) -> tuple[Array, Array]:
        r, c = state
        m = gr.message_passing(graph, r, agg)
        return (r + m > 0).astype(r.dtype), c + 1.0 - r

    r, c = jax.lax.fori_loop(0, num_layers, layer, (1.0 - h, jnp.zeros_like(h)))
    node_mask = gr.padding_masks(graph)[0][:, None]
    c = jnp.where(node_mask, c, 0.0)
    if readout == "multiset" or kind == "max":
        return gr.readout(graph, c, gr.segment_max_safe)[:, 0]
    m = _flood_integer_max(graph, c, kind, num_layers, bound, max_deg)
    pool = gr.mean_aggregator if kind == "generic" else gr.segment_mean
    return gr.readout(graph, m, pool)[:, 0]


# ----------------------------------------------------------------------------- random MP-GNNs


class ProbeGNN(nn.Module):
    """An MP-GNN of a given kind with random weights — a probe of what the kind can distinguish.

    Layer ``t``:  ``ψ(h_u, w_uv) = tanh(W_ψ [h_u; w_uv])``;  AGGREGATE = ``tanh(W_f Σ ψ)`` (generic:
    ``g = ψ``, learned ``f``), ``max ψ`` or ``mean ψ``;  UPDATE ``h_v' = tanh(W_u [h_v; m_v])``.
    READOUT ``ρ(POOL_v φ(h_v))`` with POOL = Σ for ``"multiset"`` (DeepSets: any multiset
    function) or the aggregation's own operation for ``"same"``. Output: one scalar per graph.
    Dense kernels are ``(d_in, d_out)``.
    """

    aggregation: str
    readout: str
    num_layers: int
    width: int = 16

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple) -> Array:
        _check_kind(self.aggregation, self.readout)
        h = graph.nodes
        w = graph.edges
        for t in range(self.num_layers):
            dense_msg = nn.Dense(self.width, name=f"message_{t}")
            msgs = lambda s, e, d=dense_msg: jnp.tanh(d(jnp.concatenate([s, e], axis=-1)))  # noqa: E731
            m = gr.message_passing(graph, h, gr.AGGREGATORS[self.aggregation], message=msgs)
            if self.aggregation == "generic":
                m = jnp.tanh(nn.Dense(self.width, name=f"f_{t}")(m))
            h = jnp.tanh(nn.Dense(self.width, name=f"update_{t}")(jnp.concatenate([h, m], axis=-1)))
        phi = jnp.tanh(nn.Dense(self.width, name="readout_phi")(h))
        pool = gr.segment_sum if self.readout == "multiset" else gr.AGGREGATORS[self.aggregation]
        pooled = gr.readout(graph, phi, pool)
        if self.aggregation == "generic" or self.readout == "multiset":
            pooled = jnp.tanh(nn.Dense(self.width, name="readout_f")(pooled))
        return nn.Dense(1, name="readout_rho")(pooled)[:, 0]


def _round_up(n: int) -> int:
    return 1 << max(int(n) - 1, 1).bit_length()


def batch_of(graphs: Sequence[nx.Graph] | Sequence[jraph.GraphsTuple]) -> jraph.GraphsTuple:
    """All graphs (networkx or one-graph ``GraphsTuple`` s) in one padded ``GraphsTuple``; sizes
    rounded up to powers of two so that similar collections reuse the compiled program."""
    gts = [g if isinstance(g, jraph.GraphsTuple) else to_graphs_tuple(g) for g in graphs]
    n = sum(int(g.n_node[0]) for g in gts) + 1
    e = sum(int(g.n_edge[0]) for g in gts)
    return gr.pad_to(gts, _round_up(n), _round_up(max(e, 1)), _round_up(len(gts) + 1))


@functools.lru_cache(maxsize=None)
def _probe_fn(kind: str, readout: str, num_layers: int, width: int) -> Callable[[Array, jraph.GraphsTuple], Array]:
    model = ProbeGNN(kind, readout, num_layers, width)

    @jax.jit
    def outputs(keys: Array, graph: jraph.GraphsTuple) -> Array:
        params = jax.vmap(model.init, in_axes=(0, None))(keys, graph)
        return jax.vmap(model.apply, in_axes=(0, None))(params, graph)

    return outputs


def random_gnn_outputs(
    graphs: Sequence[nx.Graph] | Sequence[jraph.GraphsTuple],
    kind: str,
    readout: str,
    num_layers: int,
    num_draws: int,
    seed: int = 0,
    width: int = 16,
) -> np.ndarray:
    """``(num_draws, len(graphs))`` outputs of randomly initialised :class:`ProbeGNN` s: one
    padded batch, ``vmap`` over weight draws, one compiled program per (kind, readout, layers)."""
    _check_kind(kind, readout)
    if num_draws < 1:
        raise ValueError(f"random_gnn_outputs: num_draws must be ≥ 1, got {num_draws}")
    keys = jax.random.split(jax.random.PRNGKey(seed), num_draws)
    out = np.asarray(_probe_fn(kind, readout, num_layers, width)(keys, batch_of(graphs)))
    return out[:, : len(graphs)]


def relative_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a − b| / max(1, |a|, |b|)`` per draw: float32 reordering noise is ~1e-6."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.abs(a - b) / np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))


SAME_TOL = 1e-4


def outputs_identical(a: np.ndarray, b: np.ndarray, tol: float = SAME_TOL) -> bool:
    """Every draw gives the same output on both graphs, up to float32 summation-order noise."""
    return bool(np.all(relative_gap(a, b) <= tol))


def outputs_separate(a: np.ndarray, b: np.ndarray, tol: float = SAME_TOL, fraction: float = 0.9) -> bool:
    """At least ``fraction`` of the draws give clearly different outputs (gap > 10·tol)."""
    return bool(np.mean(relative_gap(a, b) > 10 * tol) >= fraction)


# ----------------------------------------------------------------------------- counterexample pairs


@dataclasses.dataclass(frozen=True)
class GraphPair:
    """Two graphs (features in node attr ``x``, weights in edge attr ``w``) and why they are here."""

    name: str
    G1: nx.Graph
    G2: nx.Graph
    label1: str
    label2: str
    problem: Callable[[nx.Graph], int] | None  # the graph problem whose true answers differ (None: control)
    rounds: int | None = None  # refinement rounds = fixed number of layers; None: until stable


def spider(arm_lengths: Sequence[int], marked_arm: int = 0) -> nx.Graph:
    """A centre node with paths ("arms") of the given lengths; the far end of arm ``marked_arm``
    is the marked node of Q16(b)."""
    G = nx.Graph()
    G.add_node("c")
    marked = None
    for i, length in enumerate(arm_lengths):
        prev = "c"
        for j in range(1, length + 1):
            G.add_edge(prev, (i, j))
            prev = (i, j)
        if i == marked_arm:
            marked = prev
    return with_features(nx.convert_node_labels_to_integers(G, label_attribute="name"), marked=_index_of(G, marked))


def _index_of(G: nx.Graph, node: Any) -> int:
    return list(G.nodes).index(node)


def fixed_depth_pair(num_layers: int) -> GraphPair:
    """Q16(b) with ``T`` fixed layers: spiders with arms ``(L, L, L+2)`` and ``(L, L+1, L+1)``,
    ``L = 2T + 2``, marked at the end of the first arm. Same node count; every node's depth-``T``
    view is the same multiset (near the centre, near an end, or a plain path node), but the
    eccentricity is ``2L + 2`` versus ``2L + 1`` (it is ``total − shortest unmarked arm``)."""
    if num_layers < 0:
        raise ValueError(f"fixed_depth_pair: num_layers must be ≥ 0, got {num_layers}")
    L = 2 * num_layers + 2
    return GraphPair(
        f"spiders, T={num_layers}",
        spider((L, L, L + 2)),
        spider((L, L + 1, L + 1)),
        f"arms ({L},{L},{L + 2})",
        f"arms ({L},{L + 1},{L + 1})",
        eccentricity_of_marked,
        rounds=num_layers,
    )


def counterexample_pairs(num_layers_fixed: int = 2) -> dict[str, GraphPair]:
    """Every pair used in Q16: the "no" answers and the controls."""
    u = with_features
    prism = nx.circular_ladder_graph(3)  # two triangles joined by a matching: 3-regular, 2 triangles
    return {
        "a_pool": GraphPair("K3 vs C4", u(nx.complete_graph(3)), u(nx.cycle_graph(4)), "K3", "C4", num_nodes),
        "b_fixed": fixed_depth_pair(num_layers_fixed),
        "c_cycles": GraphPair(
            "C6 vs 2×C3",
            u(nx.cycle_graph(6)),
            u(nx.disjoint_union(nx.complete_graph(3), nx.complete_graph(3))),
            "C6",
            "2×C3",
            num_triangles,
        ),
        "c_cubic": GraphPair("K3,3 vs prism", u(nx.complete_bipartite_graph(3, 3)), u(prism), "K3,3", "prism", num_triangles),
        "control_plain": GraphPair("P4 vs S4", u(nx.path_graph(4)), u(nx.star_graph(3)), "P4", "S4", None),
        "control_marked": GraphPair(
            "P4 vs S4, node 0 marked",
            u(nx.path_graph(4), marked=0),
            u(nx.star_graph(3), marked=0),
            "P4 (end marked)",
            "S4 (centre marked)",
            None,
        ),
    }


@dataclasses.dataclass(frozen=True)
class PairEvidence:
    """Outcome of probing one pair with one (aggregation, readout, layers) kind of MP-GNN."""

    pair: str
    kind: str
    readout: str
    num_layers: int
    true1: int | None
    true2: int | None
    wl_identical: bool
    gnn_identical: bool
    gnn_separate: bool
    max_gap: float
    median_gap: float


def probe_pairs(
    pairs: dict[str, GraphPair], kind: str, readout: str, num_layers: int, num_draws: int, seed: int = 0
) -> dict[str, PairEvidence]:
    """Refinement of the matching kind (``pair.rounds`` rounds, or until stable) and random GNNs of
    that kind (all pairs in one batch) on every pair."""
    names = list(pairs)
    flat = [G for n in names for G in (pairs[n].G1, pairs[n].G2)]
    out = random_gnn_outputs(flat, kind, readout, num_layers, num_draws, seed)
    result = {}
    for i, name in enumerate(names):
        pair = pairs[name]
        wl_same = gr.wl_indistinguishable(
            pair.G1, pair.G2, mode=_WL_MODE[kind], readout_kind=wl_readout_kind(kind, readout),
            node_attr=FEATURE, edge_attr=WEIGHT, rounds=pair.rounds,
        )
        a, b = out[:, 2 * i], out[:, 2 * i + 1]
        gap = relative_gap(a, b)
        t1 = pair.problem(pair.G1) if pair.problem else None
        t2 = pair.problem(pair.G2) if pair.problem else None
        result[name] = PairEvidence(
            pair.name, kind, readout, num_layers, t1, t2, wl_same, outputs_identical(a, b),
            outputs_separate(a, b), float(gap.max()), float(np.median(gap)),
        )
    return result


def is_counterexample(ev: PairEvidence) -> bool:
    """A "no" is established when the true answers differ, refinement of the GNN's kind cannot
    separate the graphs, and every random GNN of that kind agrees on them."""
    return ev.true1 is not None and ev.true1 != ev.true2 and ev.wl_identical and ev.gnn_identical


def is_valid_control(ev: PairEvidence) -> bool:
    """A control works when refinement separates the pair and the random GNNs do too."""
    return (not ev.wl_identical) and ev.gnn_separate


def decide(solved: bool, refuted: bool) -> str:
    """The answer to "can an MP-GNN of this kind solve the problem?" from the run's evidence:
    ``"yes"`` (a hand-built GNN matched the truth everywhere), ``"no"`` (a counterexample pair
    held), ``"open"`` (neither was shown). Both at once is a contradiction in the evidence."""
    if solved and refuted:
        raise ValueError("decide: a construction and a counterexample for the same cell contradict each other")
    return "yes" if solved else "no" if refuted else "open"


# ----------------------------------------------------------------------------- Q17 chirality

# One enantiomer of each molecule; the other is its mirror image (every @ ↔ @@). Labels (R/S)
# are computed by RDKit's CIP labeler at run time, never typed in.
CHIRAL_MOLECULES: dict[str, str] = {
    "alanine": "C[C@@H](C(=O)O)N",
    "thalidomide": "O=C1CC[C@@H](N2C(=O)c3ccccc3C2=O)C(=O)N1",
    "ibuprofen": "CC(C)Cc1ccc(cc1)[C@@H](C)C(=O)O",
    "naproxen": "COc1ccc2cc(ccc2c1)[C@H](C)C(=O)O",
    "limonene": "CC1=CC[C@@H](CC1)C(=C)C",
}
CHIRALITY_FEATURES = ("none", "cip", "tag")


def mirror_smiles(smiles: str) -> str:
    """The mirror image of a molecule written with tetrahedral ``@`` / ``@@`` marks: swap them."""
    if "@" not in smiles:
        raise ValueError(f"mirror_smiles: {smiles!r} has no tetrahedral stereo mark (@ / @@)")
    return smiles.replace("@@", "\0").replace("@", "@@").replace("\0", "@")


def stereocentres(mol: Any) -> list[tuple[int, str, str]]:
    """``(atom index, CIP label, raw RDKit chiral tag)`` for each labelled stereocentre."""
    from rdkit import Chem
    from rdkit.Chem import rdCIPLabeler

    mol = Chem.Mol(mol)
    rdCIPLabeler.AssignCIPLabels(mol)
    return [
        (a.GetIdx(), a.GetProp("_CIPCode"), str(a.GetChiralTag()))
        for a in mol.GetAtoms()
        if a.HasProp("_CIPCode")
    ]


def rewritten_smiles(smiles: str) -> list[str]:
    """The same molecule written from every possible root atom (non-canonical SMILES): the atom
    order — and so RDKit's raw CW/CCW tag — changes, the molecule does not."""
    from rdkit import Chem

    from jaxhw import molecules

    mol = molecules.parse_smiles(smiles).mol
    return sorted({Chem.MolToSmiles(mol, rootedAtAtom=k, canonical=False) for k in range(mol.GetNumAtoms())})


def molecule_graph(smiles: str, chirality: str) -> jraph.GraphsTuple:
    """``jaxhw.molecules`` graph of a SMILES with the chirality columns set to: ``"none"`` (no
    stereo information: the plain molecular graph), ``"cip"`` (R/S, the featurizer's default) or
    ``"tag"`` (RDKit's raw CW/CCW tag, which depends on the atom order of the SMILES)."""
    from jaxhw import molecules

    if chirality not in CHIRALITY_FEATURES:
        raise ValueError(f"molecule_graph: chirality must be one of {CHIRALITY_FEATURES}, got {chirality!r}")
    mol = molecules.parse_smiles(smiles).mol
    g = molecules.mol_to_graph(mol)
    if chirality == "cip":
        return g
    sl = molecules.feature_slices()["chirality"]
    nodes = np.array(g.nodes)
    nodes[:, sl] = 0.0
    if chirality == "none":
        nodes[:, sl.start] = 1.0
    else:
        codes = {"CHI_TETRAHEDRAL_CW": 1, "CHI_TETRAHEDRAL_CCW": 2}
        for a in mol.GetAtoms():
            nodes[a.GetIdx(), sl.start + codes.get(str(a.GetChiralTag()), 0)] = 1.0
    return g._replace(nodes=nodes)


@dataclasses.dataclass(frozen=True)
class ChiralityEvidence:
    """Random generic-aggregation GNNs on one enantiomer pair, per chirality feature."""

    name: str
    smiles: tuple[str, str]
    cip: tuple[str, str]
    num_writings: int
    tag_flips: bool  # the stereocentre's raw tag takes both values across writings of one molecule
    cip_stable: bool  # its CIP label never changes across writings
    mirror_gap: dict[str, float]  # median over draws of the relative output gap, L vs D
    mirror_identical: dict[str, bool]
    mirror_separate: dict[str, bool]
    rewrite_identical: dict[str, bool]  # same molecule, every writing: same output for every draw


def chirality_probe(
    molecules: dict[str, str], num_draws: int, num_layers: int = 3, seed: int = 0, max_writings: int | None = None
) -> list[ChiralityEvidence]:
    """Q17: for each molecule, do random generic-aggregation MP-GNNs tell it from its mirror image,
    and is their output a property of the molecule (same for every way of writing it)? All
    molecules go into one padded batch per chirality feature (one compiled program)."""
    plan, gts_smiles = [], []
    for name, smiles in molecules.items():
        forms = (smiles, mirror_smiles(smiles))
        writings = rewritten_smiles(smiles)[:max_writings]
        plan.append((name, forms, writings, len(gts_smiles)))
        gts_smiles += list(forms) + writings
    outs = {
        chir: random_gnn_outputs([molecule_graph(s, chir) for s in gts_smiles], "generic", "multiset",
                                 num_layers, num_draws, seed)
        for chir in CHIRALITY_FEATURES
    }
    result = []
    for name, forms, writings, i in plan:
        centres = [stereocentres(_mol(w)) for w in writings]
        tags = {c[0][2] for c in centres if c}
        labels = {c[0][1] for c in centres if c}
        gap, same, sep, rewrite = {}, {}, {}, {}
        for chir, out in outs.items():
            a, b = out[:, i], out[:, i + 1]
            gap[chir] = float(np.median(relative_gap(a, b)))
            same[chir], sep[chir] = outputs_identical(a, b), outputs_separate(a, b)
            rewrite[chir] = all(outputs_identical(out[:, i + 2], out[:, i + 2 + k]) for k in range(len(writings)))
        result.append(ChiralityEvidence(
            name, forms, tuple("/".join(c for _, c, _ in stereocentres(_mol(f))) for f in forms), len(writings),
            tags == {"CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW"}, len(labels) == 1, gap, same, sep, rewrite,
        ))
    return result


def _mol(smiles: str) -> Any:
    from jaxhw import molecules

    return molecules.parse_smiles(smiles).mol
