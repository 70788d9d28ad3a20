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

Shapes: ``graph.nodes (N, F_atom)``, ``graph.edges (E, F_bond)``, ``senders/receivers (E,)``,
``n_node/n_edge (G,)``; output ``(G,)``. Padding graphs (``jraph.pad_with_graphs``) get outputs
too; callers mask them (``jaxhw.molecules.Batch.graph_mask``).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

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
    """

    hidden: int = 128
    num_layers: int = 4
    readout: tuple[str, ...] = ("sum", "mean")
    dropout: float = 0.0
    target_mean: float = 0.0
    target_std: float = 1.0

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, *, train: bool = False) -> jax.Array:
        if not self.readout or any(k not in READOUTS for k in self.readout):
            raise ValueError(f"readout must be a non-empty subset of {READOUTS}, got {self.readout}")
        h = nn.Dense(self.hidden, name="embed")(graph.nodes)
        for i in range(self.num_layers):
            h = GINELayer(self.hidden, self.dropout, name=f"layer_{i}")(h, graph, train=train)
        g = graph_readout(h, graph, self.readout)
        g = nn.relu(nn.Dense(self.hidden, name="head_0")(g))
        g = nn.Dropout(self.dropout, deterministic=not train)(g)
        # zero-initialised output layer: the untrained model predicts the training mean, instead of
        # an O(|g|·D) sum-pool value that would dominate the first epochs' loss
        y = nn.Dense(1, kernel_init=nn.initializers.zeros, name="head_1")(g)[:, 0]
        return self.target_mean + self.target_std * y
