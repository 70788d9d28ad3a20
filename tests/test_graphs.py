"""jaxhw.graphs: aggregators vs jraph / brute-force loops, padding, masks, colour refinement."""

import jax
import jax.numpy as jnp
import jraph
import networkx as nx
import numpy as np
import pytest

from jaxhw import graphs as gr


def _random_messages(seed=0, n_nodes=12, n_edges=40, dim=3, C=1.0):
    rng = np.random.default_rng(seed)
    data = rng.uniform(-C, C, (n_edges, dim)).astype(np.float32)
    ids = rng.integers(0, n_nodes - 3, n_edges).astype(np.int32)  # last 3 segments stay empty
    return jnp.asarray(data), jnp.asarray(ids), n_nodes


def _loop(data, ids, n, reduce, empty=0.0):
    data, ids = np.asarray(data), np.asarray(ids)
    return np.stack([reduce(data[ids == v]) if np.any(ids == v) else np.full(data.shape[1:], empty) for v in range(n)])


def test_segment_max_safe_matches_loop_and_fills_empty():
    data, ids, n = _random_messages()
    np.testing.assert_allclose(gr.segment_max_safe(data, ids, n), _loop(data, ids, n, lambda x: x.max(0)))
    assert np.all(np.asarray(gr.segment_max_safe(data, ids, n, fill=-7.0))[-3:] == -7.0)
    assert np.all(np.isneginf(np.asarray(jraph.segment_max(data, ids, n))[-3:]))  # why we need it


def test_segment_max_safe_gradient_finite_and_onehot():
    data, ids, n = _random_messages()
    grad = jax.grad(lambda x: jnp.sum(gr.segment_max_safe(x, ids, n)))(data)
    assert np.all(np.isfinite(grad))
    # each non-empty segment sends gradient 1 per coordinate to its arg-max row
    np.testing.assert_allclose(np.asarray(grad).sum(0), np.full(3, len(np.unique(ids))))


def test_generic_aggregator_is_f_of_sum_of_g_and_plugs_into_graphnetwork():
    G = nx.gnm_random_graph(7, 12, seed=1)
    g = gr.from_networkx(G, node_features=np.arange(14, dtype=np.float32).reshape(7, 2))
    agg = gr.generic_aggregator(lambda s: 2 * s, lambda h: h**2)
    net = jraph.GraphNetwork(update_edge_fn=lambda e, s, r, glob: s, update_node_fn=lambda n, s, r, glob: r,
                             aggregate_edges_for_nodes_fn=agg)
    out = np.asarray(net(g).nodes)
    h = np.asarray(g.nodes)
    expected = np.stack([2 * sum(h[u] ** 2 for u in G.neighbors(v)) if G.degree(v) else np.zeros(2) for v in G.nodes])
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_mean_aggregator_matches_jraph_and_loop():
    data, ids, n = _random_messages(seed=3)
    ours = gr.mean_aggregator(data, ids, n)
    np.testing.assert_allclose(ours, jraph.segment_mean(data, ids, n), atol=1e-6)
    np.testing.assert_allclose(ours, _loop(data, ids, n, lambda x: x.mean(0)), atol=1e-6)


@pytest.mark.parametrize("p", [0.5, 2.0, 8.0, 40.0])
def test_approx_max_within_bound_log_n_over_p(p):
    C = 1.0
    data, ids, n = _random_messages(seed=4, C=C)
    approx = np.asarray(gr.approx_max_aggregator(p, C)(data, ids, n))
    true = _loop(data, ids, n, lambda x: x.max(0))
    counts = np.bincount(np.asarray(ids), minlength=n)
    err = (approx - true)[counts > 0]
    bound = gr.approx_max_error_bound(p, counts[counts > 0])[:, None]
    assert np.all(err >= -1e-5) and np.all(err <= bound + 1e-5)
    assert np.all(approx[counts == 0] == 0.0)


def test_approx_max_bound_is_tight_and_error_shrinks():
    vals = jnp.full((6, 1), -0.4)
    ids = jnp.zeros(6, jnp.int32)
    errs = [float(gr.approx_max_aggregator(p, 1.0)(vals, ids, 1)[0, 0]) + 0.4 for p in (1.0, 4.0, 16.0)]
    np.testing.assert_allclose(errs, gr.approx_max_error_bound(np.array([1.0, 4.0, 16.0]), 6), rtol=1e-4)
    assert errs[0] > errs[1] > errs[2]


def test_empty_segments_finite_gradients_for_every_aggregator():
    data, ids, n = _random_messages(seed=5)
    for agg in (gr.segment_max_safe, gr.mean_aggregator, gr.approx_max_aggregator(8.0, 1.0), gr.segment_sum):
        val = agg(data, ids, n)
        grad = jax.grad(lambda x, a=agg: jnp.sum(a(x, ids, n)))(data)
        assert np.all(np.isfinite(val)) and np.all(np.isfinite(grad)), agg
        assert np.all(np.asarray(val)[-3:] == 0.0)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="sharpness"):
        gr.approx_max_fg(0.0, 1.0)
    with pytest.raises(ValueError, match="underflow"):
        gr.approx_max_aggregator(100.0, 1.0)(jnp.zeros((2, 1)), jnp.zeros(2, jnp.int32), 1)
    with pytest.raises(ValueError, match="segment_ids"):
        gr.segment_max_safe(jnp.zeros((3, 1)), jnp.zeros(2, jnp.int32), 1)
    with pytest.raises(ValueError, match="budget"):
        gr.pad_to([gr.from_networkx(nx.path_graph(5))], 4, 100, 3)


def test_padding_masks_zero_out_and_one_compilation():
    gts = [gr.from_networkx(nx.path_graph(k), node_features=np.full((k, 2), 3.0)) for k in (2, 3, 4)]
    batch = gr.pad_to(gts, 16, 32, 5)
    node_mask, edge_mask, graph_mask = gr.padding_masks(batch)
    assert int(node_mask.sum()) == 9 and int(edge_mask.sum()) == 2 * (1 + 2 + 3) and int(graph_mask.sum()) == 3
    z = gr.zero_out_padding(batch._replace(nodes=batch.nodes + 1.0))
    assert np.all(np.asarray(z.nodes)[~np.asarray(node_mask)] == 0) and np.all(np.asarray(z.nodes)[np.asarray(node_mask)] == 4)
    f = jax.jit(lambda g: gr.readout(g, gr.message_passing(g, g.nodes, gr.segment_max_safe), gr.segment_sum))
    out = [np.asarray(f(gr.pad_to(gts[:k], 16, 32, 5))) for k in (1, 2, 3)]
    assert f._cache_size() == 1
    # readout vs a brute-force per-graph sum of neighbour maxima (path: every node has a neighbour)
    np.testing.assert_allclose(out[-1][:3, 0], [3.0 * k for k in (2, 3, 4)])


def test_wl_multiset_agrees_with_networkx_hash():
    rng = np.random.default_rng(0)
    agree = 0
    for _ in range(30):
        n = int(rng.integers(3, 8))
        G1, G2 = (nx.gnm_random_graph(n, int(rng.integers(n - 1, 2 * n)), seed=int(rng.integers(1 << 30))) for _ in range(2))
        ours = gr.wl_indistinguishable(G1, G2, rounds=3)
        ref = nx.weisfeiler_lehman_graph_hash(G1, iterations=3) == nx.weisfeiler_lehman_graph_hash(G2, iterations=3)
        agree += ours == ref
    assert agree == 30


def test_wl_modes_on_known_pairs():
    C6 = nx.cycle_graph(6)
    two_triangles = nx.disjoint_union(nx.complete_graph(3), nx.complete_graph(3))
    assert gr.wl_indistinguishable(C6, two_triangles)
    assert not gr.wl_indistinguishable(nx.path_graph(4), nx.star_graph(3))
    # max sees sets, mean sees distributions: both blind to degree when features are equal
    for mode in ("set", "distribution"):
        assert gr.wl_indistinguishable(nx.path_graph(4), nx.star_graph(3), mode=mode, readout_kind=mode)
    # a mean READOUT sees proportions only, a multiset READOUT also the node count
    assert gr.wl_indistinguishable(nx.complete_graph(3), nx.cycle_graph(4), "distribution", "distribution")
    assert not gr.wl_indistinguishable(nx.complete_graph(3), nx.cycle_graph(4), "distribution", "multiset")
