"""Message passing on :class:`jraph.GraphsTuple`: aggregators, padding and masks, 1-WL (Q15–Q17).

An MP-GNN layer maps node features ``h`` (shape ``(N, d)``) to

    m_v = AGGREGATE({ψ(h_u, w_uv) : u ∈ N(v)}),        h_v' = UPDATE(h_v, m_v),

and READOUT pools the final features of each graph. Undirected graphs are stored with **both**
directions ``u→v`` and ``v→u`` as edges (edge weights ``w_e`` in ``graph.edges``, shape
``(E, 1)``), so ``N(v)`` is the set of senders of the edges received by ``v``.

Aggregators share jraph's signature ``(data, segment_ids, num_segments) -> (num_segments, ...)``
(``data`` holds one message per edge, ``segment_ids`` the receiving node), so each one drops into
``jraph.GraphNetwork(aggregate_edges_for_nodes_fn=...)`` and into :func:`message_passing`.

Empty neighbourhoods (isolated nodes, the padding nodes added by ``jraph.pad_with_graphs``) are
defined, not accidental: every aggregator here returns **0** on an empty segment, with finite
gradients. ``jraph.segment_max`` returns ``-inf`` there, which turns into NaN in gradients.

What we write by hand and why: ``segment_max_safe`` (jraph's max is ``-inf`` on empty segments),
``zero_out_padding`` (jraph's calls the removed ``jax.tree_map``), the generic ``f(Σ g)``
aggregator with its mean / approximate-max instances (the problem set's constructions) and
colour refinement (networkx only exposes a hash; we need the colours and the set/mean variants).
"""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction
from typing import Any, Callable, Hashable, Sequence

import jax
import jax.numpy as jnp
import jraph
import networkx as nx
import numpy as np

Array = jax.Array
Aggregator = Callable[[Array, Array, int], Array]

__all__ = [
    "Aggregator",
    "AGGREGATORS",
    "segment_max_safe",
    "segment_mean",
    "segment_sum",
    "generic_aggregator",
    "mean_f",
    "mean_g",
    "mean_aggregator",
    "approx_max_fg",
    "approx_max_aggregator",
    "approx_max_error_bound",
    "from_networkx",
    "pad_to",
    "padding_masks",
    "zero_out_padding",
    "node_graph_index",
    "message_passing",
    "readout",
    "wl_refine",
    "wl_summary",
    "wl_indistinguishable",
]


# ----------------------------------------------------------------------------- aggregators


def _check_segments(data: Any, segment_ids: Any, num_segments: Any, name: str) -> tuple[Array, Array]:
    data = jnp.asarray(data)
    segment_ids = jnp.asarray(segment_ids)
    if not isinstance(num_segments, (int, np.integer)):
        raise TypeError(f"{name}: num_segments must be a static Python int, got {type(num_segments).__name__}")
    if segment_ids.ndim != 1 or data.ndim < 1 or data.shape[0] != segment_ids.shape[0]:
        raise ValueError(
            f"{name}: expected data of shape (E, ...) and segment_ids of shape (E,), got "
            f"data {data.shape} and segment_ids {segment_ids.shape}"
        )
    if not jnp.issubdtype(segment_ids.dtype, jnp.integer):
        raise TypeError(f"{name}: segment_ids must be integers, got {segment_ids.dtype}")
    return data, segment_ids


def _segment_counts(segment_ids: Array, num_segments: int, dtype: Any) -> Array:
    return jax.ops.segment_sum(jnp.ones(segment_ids.shape, dtype), segment_ids, num_segments)


def segment_max_safe(data: Array, segment_ids: Array, num_segments: int, fill: float = 0.0) -> Array:
    """Coordinate-wise max per segment; an **empty segment gives ``fill`` (default 0)**.

    ``jraph.segment_max`` / ``jax.ops.segment_max`` return the dtype's lowest value (``-inf`` for
    floats) on an empty segment — an isolated node or a padding graph — which poisons sums and
    makes gradients NaN. Here the empty rows are replaced by ``fill`` with ``jnp.where``, so the
    value is finite and the gradient to ``data`` is exactly the max's (one-hot on the arg-max
    rows; zero for empty segments).

    Args:
      data: ``(E, ...)`` messages.
      segment_ids: ``(E,)`` int receiving segment of each row (values in ``[0, num_segments)``).
      num_segments: static number of segments ``N``.
      fill: value of an empty segment.
    Returns:
      ``(N, ...)`` array.
    """
    data, segment_ids = _check_segments(data, segment_ids, num_segments, "segment_max_safe")
    m = jax.ops.segment_max(data, segment_ids, num_segments)
    nonempty = _segment_counts(segment_ids, num_segments, jnp.int32) > 0
    nonempty = nonempty.reshape(nonempty.shape + (1,) * (data.ndim - 1))
    return jnp.where(nonempty, m, jnp.asarray(fill, data.dtype))


def segment_sum(data: Array, segment_ids: Array, num_segments: int) -> Array:
    """Σ per segment (0 on an empty segment) — ``jax.ops.segment_sum`` with input checks."""
    data, segment_ids = _check_segments(data, segment_ids, num_segments, "segment_sum")
    return jax.ops.segment_sum(data, segment_ids, num_segments)


def generic_aggregator(f: Callable[[Array], Array], g: Callable[[Array], Array]) -> Aggregator:
    """The problem set's generic aggregator ``generic_{f,g}(h_N(v)) = f(Σ_{u∈N(v)} g(h_u))``.

    ``g`` is applied row-wise to the messages ``(E, n) -> (E, m)``, summed per receiving node
    (``jax.ops.segment_sum``), then ``f`` maps ``(N, m) -> (N, n')``. ``f`` sees only the sum — it
    does not know which node (or how many neighbours) it is applied to, unless ``g`` carries it.
    An empty neighbourhood gives ``f(0)``.
    """
    if not (callable(f) and callable(g)):
        raise TypeError(f"generic_aggregator: f and g must be callables, got {type(f)} and {type(g)}")

    def aggregate(data: Array, segment_ids: Array, num_segments: int) -> Array:
        data, segment_ids = _check_segments(data, segment_ids, num_segments, "generic_aggregator")
        return f(jax.ops.segment_sum(g(data), segment_ids, num_segments))

    return aggregate


def _check_feature_matrix(h: Array, name: str) -> Array:
    h = jnp.asarray(h)
    if h.ndim < 2:
        raise ValueError(f"{name}: expected features of shape (..., d) with a feature axis, got shape {h.shape}")
    return h


def mean_g(h: Array) -> Array:
    """Q15(a) ``g(h) = (h, 1)``: append a count channel so the sum carries ``|N(v)|``."""
    h = _check_feature_matrix(h, "mean_g")
    return jnp.concatenate([h, jnp.ones(h.shape[:-1] + (1,), h.dtype)], axis=-1)


def mean_f(s: Array) -> Array:
    """Q15(a) ``f(s, c) = s / c`` (and 0 when ``c = 0``): divides by the carried count."""
    s = _check_feature_matrix(s, "mean_f")
    total, count = s[..., :-1], s[..., -1:]
    return total / jnp.maximum(count, 1)  # count is an integer ≥ 0: max(·, 1) only acts on c = 0


mean_aggregator: Aggregator = generic_aggregator(mean_f, mean_g)
mean_aggregator.__doc__ = "Exact mean ``(1/|N(v)|) Σ h_u`` as ``generic_{f,g}`` (0 on an empty neighbourhood)."


def segment_mean(data: Array, segment_ids: Array, num_segments: int) -> Array:
    """Mean per segment (0 on an empty segment); jraph-compatible alias of :data:`mean_aggregator`."""
    return mean_aggregator(data, segment_ids, num_segments)


def approx_max_fg(p: float, C: float) -> tuple[Callable[[Array], Array], Callable[[Array], Array]]:
    """Q15(b) ``(f, g)`` with ``f(Σ g(h_u)) ≈ max_u h_u`` coordinate-wise, for ``h ∈ [-C, C]``.

    Log-sum-exp with sharpness ``p`` — the ℓp norm of the positive vector ``e^{h}``, so no
    absolute value ever meets a negative feature — shifted by ``C`` so that every exponent is ≤ 0
    (no overflow) and a count channel marks empty neighbourhoods:

        g(h) = (exp(p (h − C)), 1),        f(s, c) = C + log(s) / p   if c > 0,   0 if c = 0.

    With ``n = |N(v)|`` and ``M = max_u h_u``:  ``Σ_u e^{p(h_u − C)} ∈ [e^{p(M−C)}, n e^{p(M−C)}]``,
    hence  **M ≤ f(Σ g) ≤ M + log(n) / p**  (equality on the right when all ``h_u`` are equal), so the
    error → 0 as ``p → ∞`` for every fixed ``n``. Floating point: ``exp(p(h − C)) ≥ exp(−2pC)`` must not
    underflow, i.e. ``2pC < −log(tiny)`` (≈ 87 for float32); the aggregator checks this at trace time.
    """
    if not (p > 0 and math.isfinite(p)):
        raise ValueError(f"approx_max_fg: sharpness p must be a positive finite number, got {p!r}")
    if not (C > 0 and math.isfinite(C)):
        raise ValueError(f"approx_max_fg: feature bound C must be a positive finite number, got {C!r}")

    def g(h: Array) -> Array:
        h = _check_feature_matrix(h, "approx_max g")
        limit = -math.log(float(jnp.finfo(h.dtype).tiny))
        if 2 * p * C >= limit:
            raise ValueError(
                f"approx_max: 2·p·C = {2 * p * C:g} would underflow exp(p(h − C)) in {h.dtype} "
                f"(needs < {limit:.1f}); lower p or use a wider dtype"
            )
        return jnp.concatenate([jnp.exp(p * (h - C)), jnp.ones(h.shape[:-1] + (1,), h.dtype)], axis=-1)

    def f(s: Array) -> Array:
        s = _check_feature_matrix(s, "approx_max f")
        total, count = s[..., :-1], s[..., -1:]
        safe = jnp.maximum(total, jnp.finfo(s.dtype).tiny)  # total ≥ e^{-2pC} > 0 whenever count > 0
        return jnp.where(count > 0, C + jnp.log(safe) / p, 0.0)

    return f, g


def approx_max_aggregator(p: float, C: float) -> Aggregator:
    """``generic_{f,g}`` with the log-sum-exp ``(f, g)`` of :func:`approx_max_fg`."""
    return generic_aggregator(*approx_max_fg(p, C))


def approx_max_error_bound(p: Any, n: Any) -> Any:
    """``log(n) / p``: the worst-case over-estimate of :func:`approx_max_fg` with ``n`` neighbours."""
    return np.log(np.maximum(n, 1)) / np.asarray(p, float)


AGGREGATORS: dict[str, Aggregator] = {
    "generic": segment_sum,  # f = g = id; the random GNNs wrap MLPs around it (g before, f after)
    "max": segment_max_safe,
    "mean": segment_mean,
}


# ----------------------------------------------------------------------------- graphs, padding, masks


def from_networkx(
    G: nx.Graph,
    node_features: Any = None,
    edge_weight: float | str = 1.0,
    globals_: Any = None,
) -> jraph.GraphsTuple:
    """An undirected networkx graph → a one-graph ``GraphsTuple`` (each edge in both directions).

    Nodes are numbered in ``list(G.nodes)`` order. ``node_features``: ``(N, m)`` array, a node
    attribute name, or None (all ones, shape ``(N, 1)``). ``edge_weight``: a constant or an edge
    attribute name; stored as ``edges`` of shape ``(2|E|, 1)``.
    """
    if not isinstance(G, nx.Graph) or G.is_directed():
        raise TypeError(f"from_networkx: expected an undirected networkx.Graph, got {type(G).__name__}")
    nodes = list(G.nodes)
    index = {v: i for i, v in enumerate(nodes)}
    if node_features is None:
        x = np.ones((len(nodes), 1), np.float32)
    elif isinstance(node_features, str):
        x = np.asarray([G.nodes[v][node_features] for v in nodes], np.float32).reshape(len(nodes), -1)
    else:
        x = np.asarray(node_features, np.float32)
        if x.ndim == 1:
            x = x[:, None]
        if x.shape[0] != len(nodes):
            raise ValueError(f"from_networkx: node_features has {x.shape[0]} rows for {len(nodes)} nodes")
    senders, receivers, weights = [], [], []
    for u, v, data in G.edges(data=True):
        w = data[edge_weight] if isinstance(edge_weight, str) else edge_weight
        senders += [index[u], index[v]]
        receivers += [index[v], index[u]]
        weights += [w, w]
    return jraph.GraphsTuple(  # numpy leaves: batching and padding stay on the host, cheap
        nodes=x,
        edges=np.asarray(weights, np.float32).reshape(-1, 1),
        senders=np.asarray(senders, np.int32),
        receivers=np.asarray(receivers, np.int32),
        globals=globals_,
        n_node=np.asarray([len(nodes)], np.int32),
        n_edge=np.asarray([len(senders)], np.int32),
    )


def pad_to(graphs: Sequence[jraph.GraphsTuple] | jraph.GraphsTuple, n_node: int, n_edge: int, n_graph: int) -> jraph.GraphsTuple:
    """Batch (``jraph.batch_np``, on the host) and pad to fixed sizes (``jraph.pad_with_graphs``).

    One compiled function then serves every batch of at most ``n_node - 1`` nodes, ``n_edge``
    edges and ``n_graph - 1`` graphs: padding adds one graph holding all padding nodes and edges
    (padding edges connect padding nodes only) plus empty graphs.
    """
    g = jraph.batch_np(list(graphs)) if not isinstance(graphs, jraph.GraphsTuple) else graphs
    nodes, edges, ngraphs = int(np.sum(g.n_node)), int(np.sum(g.n_edge)), int(len(g.n_node))
    if nodes + 1 > n_node or edges > n_edge or ngraphs + 1 > n_graph:
        raise ValueError(
            f"pad_to: batch has {nodes} nodes, {edges} edges, {ngraphs} graphs; the budget "
            f"(n_node={n_node}, n_edge={n_edge}, n_graph={n_graph}) needs room for one padding "
            "node and one padding graph"
        )
    return jraph.pad_with_graphs(g, n_node, n_edge, n_graph)


def padding_masks(graph: jraph.GraphsTuple) -> tuple[Array, Array, Array]:
    """``(node_mask, edge_mask, graph_mask)``, True for real entries of a ``pad_to`` batch.

    Uses jraph's mask functions, which work on current JAX (only ``zero_out_padding`` does not).
    """
    return (
        jraph.get_node_padding_mask(graph),
        jraph.get_edge_padding_mask(graph),
        jraph.get_graph_padding_mask(graph),
    )


def zero_out_padding(graph: jraph.GraphsTuple) -> jraph.GraphsTuple:
    """Replacement for ``jraph.zero_out_padding`` (which calls the removed ``jax.tree_map``).

    Sets every node / edge / global leaf of padding entries to zero so padding cannot leak into
    losses or statistics.
    """
    node_mask, edge_mask, graph_mask = padding_masks(graph)

    def zero(mask: Array) -> Callable[[Array], Array]:
        return lambda x: jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 1)), x, jnp.zeros_like(x))

    return graph._replace(
        nodes=jax.tree.map(zero(node_mask), graph.nodes),
        edges=jax.tree.map(zero(edge_mask), graph.edges),
        globals=jax.tree.map(zero(graph_mask), graph.globals),
    )


def node_graph_index(graph: jraph.GraphsTuple) -> Array:
    """``(N,)`` index of the graph each node belongs to (jit-safe: static total length)."""
    n_total = jax.tree.leaves(graph.nodes)[0].shape[0]
    return jnp.repeat(jnp.arange(graph.n_node.shape[0]), graph.n_node, total_repeat_length=n_total)


def message_passing(
    graph: jraph.GraphsTuple,
    h: Array,
    aggregate: Aggregator,
    message: Callable[[Array, Array], Array] | None = None,
) -> Array:
    """``m_v = AGGREGATE({ψ(h_u, w_uv) : u → v})``; ``ψ(h_u, w) = h_u`` when ``message`` is None.

    Returns the ``(N, ·)`` aggregated messages; the caller applies UPDATE. (The same computation as
    a ``jraph.GraphNetwork`` with ``aggregate_edges_for_nodes_fn=aggregate``, without replacing the
    edge weights by messages, so layers can be stacked.)
    """
    sent = h[graph.senders]
    msgs = sent if message is None else message(sent, graph.edges)
    return aggregate(msgs, graph.receivers, h.shape[0])


def readout(graph: jraph.GraphsTuple, h: Array, pool: Aggregator) -> Array:
    """Pool node features per graph: ``(N, d) -> (G, d)`` with an aggregator (sum / max / mean / generic)."""
    return pool(h, node_graph_index(graph), int(graph.n_node.shape[0]))


# ----------------------------------------------------------------------------- colour refinement

_WL_MODES = ("multiset", "set", "distribution")


def _neighbour_summary(items: list[Hashable], mode: str) -> Hashable:
    if mode == "multiset":  # what a sum (generic) aggregator can see
        return tuple(sorted(Counter(items).items(), key=repr))
    if mode == "set":  # what max can see
        return tuple(sorted(set(items), key=repr))
    n = len(items)  # what mean can see: the empirical distribution (and whether it is empty)
    return tuple(sorted(((c, Fraction(k, n)) for c, k in Counter(items).items()), key=repr))


def wl_refine(
    graphs: Sequence[nx.Graph],
    node_attr: str | None = None,
    edge_attr: str | None = None,
    mode: str = "multiset",
    rounds: int | None = None,
) -> list[list[int]]:
    """Colour refinement run **jointly** on several graphs, so colours are comparable across them.

    ``c_v^{t+1} = HASH(c_v^t, S({(c_u^t, w_uv) : u ∈ N(v)}))`` where ``S`` keeps the multiset
    (``mode="multiset"``: 1-WL, the power of sum / generic aggregation), only the set (``"set"``:
    max aggregation) or the normalised histogram (``"distribution"``: mean aggregation). Runs
    ``rounds`` rounds, or until the joint partition stops refining when ``rounds`` is None.

    Returns, per graph, the final colour (a small int) of each node in ``list(G.nodes)`` order.
    """
    if mode not in _WL_MODES:
        raise ValueError(f"wl_refine: mode must be one of {_WL_MODES}, got {mode!r}")
    if rounds is not None and rounds < 0:
        raise ValueError(f"wl_refine: rounds must be ≥ 0 or None, got {rounds}")
    nodes = [list(G.nodes) for G in graphs]
    colours: list[dict[Any, Hashable]] = [
        {v: (G.nodes[v].get(node_attr) if node_attr else 0) for v in vs} for G, vs in zip(graphs, nodes)
    ]

    def relabel(cols: list[dict[Any, Hashable]]) -> list[dict[Any, int]]:
        palette = {c: i for i, c in enumerate(sorted({c for d in cols for c in d.values()}, key=repr))}
        return [{v: palette[c] for v, c in d.items()} for d in cols]

    current = relabel(colours)
    n_classes = len({c for d in current for c in d.values()})
    t = 0
    while rounds is None or t < rounds:
        new = []
        for G, d in zip(graphs, current):
            new.append(
                {
                    v: (
                        d[v],
                        _neighbour_summary(
                            [(d[u], G.edges[v, u].get(edge_attr) if edge_attr else None) for u in G.neighbors(v)],
                            mode,
                        ),
                    )
                    for v in G.nodes
                }
            )
        new = relabel(new)
        t += 1
        n_new = len({c for d in new for c in d.values()})
        stable = n_new == n_classes
        current, n_classes = new, n_new
        if rounds is None and stable:
            break
    return [[d[v] for v in vs] for d, vs in zip(current, nodes)]


def wl_summary(colours: Sequence[int], readout_kind: str) -> Hashable:
    """What a READOUT can see of the final colours: ``"multiset"`` (sum / any multiset function),
    ``"set"`` (max pooling) or ``"distribution"`` (mean pooling)."""
    if readout_kind not in _WL_MODES:
        raise ValueError(f"wl_summary: readout_kind must be one of {_WL_MODES}, got {readout_kind!r}")
    return _neighbour_summary(list(colours), readout_kind)


def wl_indistinguishable(
    G1: nx.Graph,
    G2: nx.Graph,
    mode: str = "multiset",
    readout_kind: str = "multiset",
    node_attr: str | None = None,
    edge_attr: str | None = None,
    rounds: int | None = None,
) -> bool:
    """True when refinement of kind ``mode`` followed by a READOUT of kind ``readout_kind`` gives
    the same summary on both graphs — then no MP-GNN of that kind can tell them apart."""
    c1, c2 = wl_refine([G1, G2], node_attr, edge_attr, mode, rounds)
    return wl_summary(c1, readout_kind) == wl_summary(c2, readout_kind)
