"""Edge-aware message-passing GNN (GIN-E) in jraph + Flax Linen, with sum / mean / max readouts (Q18).

One GIN-E layer (Hu et al., 2020, "Strategies for Pre-training GNNs"), written with jraph's
``GraphNetwork`` so that the message, the aggregation and the update are separate functions:

    m_{u→v} = ReLU(h_u + W_e e_{uv})                       (message: sender state + projected bond)
    a_v     = Σ_{u ∈ N(v)} m_{u→v}                           (AGGREGATE: segment sum over receivers)
    h_v'    = h_v + Dropout(ReLU(LN(MLP((1 + ε) h_v + a_v))))  (UPDATE, residual)

with ``W_e`` a per-layer Dense of the raw bond features, ``ε`` a learned scalar and ``LN`` layer
norm. Layer norm (per node) is used instead of batch norm on purpose: it has no statistics across
the batch, so padding nodes cannot leak into real molecules' activations.

READOUT over the nodes of each graph g: the concatenation of any of

    sum_g = Σ_{v∈g} h_v,   mean_g = sum_g / max(|g|, 1),   max_g = max_{v∈g} h_v (0 if g is empty)

followed by an MLP to one number, rescaled as ``target_mean + target_std · y`` so the network
learns a standardized target while predictions come out in the data's units (log10 mol/L).

Tied inputs (mirror invariance): ``merge_node_columns`` lists groups of node-feature columns that
the network must not tell apart; the input is ``x' = x P`` with ``P (F_atom, F')`` summing each
group into one column (:func:`merge_matrix`). Merging the CIP R and S columns makes the output
*exactly* the same for a molecule and its mirror image, whatever the weights: the mirror image
only swaps those two columns (``jaxhw.molecules.MIRROR_SWAPS``), and ``P`` does not see the swap.

Shapes: ``graph.nodes (N, F_atom)``, ``graph.edges (E, F_bond)``, ``senders/receivers (E,)``,
``n_node/n_edge (G,)``; output ``(G,)``. Padding graphs (``jraph.pad_with_graphs``) get outputs
too; callers mask them (``jaxhw.molecules.Batch.graph_mask``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

READOUTS = ("sum", "mean", "max")


def node_graph_ids(graph: jraph.GraphsTuple) -> jax.Array:
    """``(N,)`` index of the graph each node belongs to (static length, so it jits)."""
    n_graph = graph.n_node.shape[0]
    n_total = graph.nodes.shape[0]
    return jnp.repeat(jnp.arange(n_graph), graph.n_node, total_repeat_length=n_total)


def graph_readout(h: jax.Array, graph: jraph.GraphsTuple, kinds: Sequence[str]) -> jax.Array:
    """``(G, len(kinds)·D)``: the requested per-graph pools of node states ``h (N, D)``, concatenated."""
    ids = node_graph_ids(graph)
    n_graph = graph.n_node.shape[0]
    pools = []
    for kind in kinds:
        if kind == "sum":
            pools.append(jax.ops.segment_sum(h, ids, n_graph))
        elif kind == "mean":
            count = jnp.maximum(graph.n_node, 1).astype(h.dtype)[:, None]
            pools.append(jax.ops.segment_sum(h, ids, n_graph) / count)
        elif kind == "max":
            # jraph.segment_max gives -inf on an empty segment (a padding graph) → NaN gradients;
            # the project's safe version lives in jaxhw.graphs (imported here, not duplicated).
            from jaxhw.graphs import segment_max_safe

            pools.append(segment_max_safe(h, ids, n_graph))
        else:
            raise ValueError(f"unknown readout {kind!r}; choose from {READOUTS}")
    return jnp.concatenate(pools, axis=-1)


def merge_matrix(n_features: int, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """``P (n_features, n_features − Σ(|group| − 1))``: 0/1 matrix; ``x @ P`` keeps every column
    outside ``groups`` (in order) and replaces each group by one column, the sum of its members
    (placed where the group's first member was)."""
    flat = [c for g in groups for c in g]
    if any(len(g) < 2 for g in groups) or len(set(flat)) != len(flat) or any(not 0 <= c < n_features for c in flat):
        raise ValueError(
            f"merge_node_columns must be disjoint groups of >= 2 column indices in [0, {n_features}), got {groups}"
        )
    owner = {c: g[0] for g in groups for c in g}
    kept = [c for c in range(n_features) if owner.get(c, c) == c]
    position = {c: k for k, c in enumerate(kept)}
    P = np.zeros((n_features, len(kept)), np.float32)
    for c in range(n_features):
        P[c, position[owner.get(c, c)]] = 1.0
    return P


def replace_input_rows(params: Any, node_rows: Mapping[int, int | None], edge_rows: Mapping[int, int | None],
                       merge_node_columns: Sequence[Sequence[int]] = ()) -> Any:
    """Parameters of a :class:`MoleculeGNN` in which raw input column ``c`` acts like column
    ``src = rows[c]`` (its weight row is copied from ``src``'s), or not at all (``src=None``: row
    set to 0). Applied to the node embedding and to every layer's edge projection — the only
    places raw features enter. With merged node columns, a merged column changes only if all of
    its members are listed (and all to the same source).

    Used for feature values never seen in training: their rows get no gradient and would keep
    their random initial values, i.e. an unseen value would add noise to predictions.
    """
    n_raw = params["embed"]["kernel"].shape[0] + sum(len(g) - 1 for g in merge_node_columns)
    P = merge_matrix(n_raw, merge_node_columns) if merge_node_columns else np.eye(n_raw, dtype=np.float32)
    merged = P.argmax(1)  # raw column → merged column

    def updated(kernel, plan):
        kernel = jnp.asarray(kernel)
        for dst, src in plan.items():
            kernel = kernel.at[dst].set(0.0 if src is None else kernel[src])
        return kernel

    node_plan = {}
    for j in range(P.shape[1]):
        members = np.flatnonzero(P[:, j]).tolist()
        sources = {node_rows.get(c, -1) for c in members}
        if len(sources) == 1 and -1 not in sources:
            src = sources.pop()
            node_plan[j] = None if src is None else int(merged[src])
    out = dict(params)  # the caller's tree is left alone
    out["embed"] = {**params["embed"], "kernel": updated(params["embed"]["kernel"], node_plan)}
    for name, layer in params.items():
        if name.startswith("layer_"):
            edge = layer["edge"]
            out[name] = {**layer, "edge": {**edge, "kernel": updated(edge["kernel"], dict(edge_rows))}}
    return out


class GINELayer(nn.Module):
    """One residual GIN-E message-passing layer (see module docstring); maps ``(N, D) → (N, D)``."""

    hidden: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, h: jax.Array, graph: jraph.GraphsTuple, *, train: bool) -> jax.Array:
        edge_proj = nn.Dense(self.hidden, name="edge")

        def message(edges, sent, received, globals_):
            del received, globals_
            return nn.relu(sent + edge_proj(edges))

        def update(nodes, sent, received, globals_):
            del sent, globals_
            return (1.0 + eps) * nodes + received

        eps = self.param("eps", nn.initializers.zeros, ())
        net = jraph.GraphNetwork(
            update_edge_fn=message,
            update_node_fn=update,
            update_global_fn=None,
            aggregate_edges_for_nodes_fn=jraph.segment_sum,
        )
        z = net(graph._replace(nodes=h)).nodes
        z = nn.Dense(self.hidden, name="mlp_0")(z)
        z = nn.relu(nn.LayerNorm(name="ln_0")(z))
        z = nn.Dense(self.hidden, name="mlp_1")(z)
        z = nn.relu(nn.LayerNorm(name="ln_1")(z))
        z = nn.Dropout(self.dropout, deterministic=not train)(z)
        return h + z


class MoleculeGNN(nn.Module):
    """GIN-E encoder (``num_layers`` × ``hidden``) + readout MLP → one scalar per graph.

    Attributes:
      hidden: node state width D.
      num_layers: message-passing rounds.
      readout: which pools to concatenate, any of ``("sum", "mean", "max")``.
      dropout: dropout rate inside layers and the head (only when ``train=True``).
      target_mean, target_std: output scale (set from the training targets).
      merge_node_columns: groups of node-feature columns tied together (see the module docstring).
    """

    hidden: int = 128
    num_layers: int = 4
    readout: tuple[str, ...] = ("sum", "mean")
    dropout: float = 0.0
    target_mean: float = 0.0
    target_std: float = 1.0
    merge_node_columns: tuple[tuple[int, ...], ...] = ()

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, *, train: bool = False) -> jax.Array:
        if not self.readout or any(k not in READOUTS for k in self.readout):
            raise ValueError(f"readout must be a non-empty subset of {READOUTS}, got {self.readout}")
        x = graph.nodes
        if self.merge_node_columns:
            x = x @ jnp.asarray(merge_matrix(x.shape[-1], self.merge_node_columns), x.dtype)
        h = nn.Dense(self.hidden, name="embed")(x)
        for i in range(self.num_layers):
            h = GINELayer(self.hidden, self.dropout, name=f"layer_{i}")(h, graph, train=train)
        g = graph_readout(h, graph, self.readout)
        g = nn.relu(nn.Dense(self.hidden, name="head_0")(g))
        g = nn.Dropout(self.dropout, deterministic=not train)(g)
        # zero-initialised output layer: the untrained model predicts the training mean, instead of
        # an O(|g|·D) sum-pool value that would dominate the first epochs' loss
        y = nn.Dense(1, kernel_init=nn.initializers.zeros, name="head_1")(g)[:, 0]
        return self.target_mean + self.target_std * y
