"""jaxhw.expressiveness: hand-built GNNs vs networkx, counterexamples vs random GNNs, chirality."""

import networkx as nx
import numpy as np
import pytest

from jaxhw import expressiveness as ex
from jaxhw import graphs as gr

N_MAX = 10


@pytest.fixture(scope="module")
def random_batch():
    rng = np.random.default_rng(1)
    graphs = []
    for _ in range(60):
        G = ex.random_connected_graph(rng, 1, N_MAX)
        graphs.append(ex.with_features(G, marked=int(rng.integers(G.number_of_nodes()))))
    return graphs, gr.pad_to([ex.to_graphs_tuple(G) for G in graphs], 512, 2048, 64)


def test_node_count_gnn_equals_number_of_nodes(random_batch):
    graphs, batch = random_batch
    out = np.asarray(ex.node_count_gnn(batch))[: len(graphs)]
    np.testing.assert_array_equal(out, [G.number_of_nodes() for G in graphs])


@pytest.mark.parametrize("kind", ex.KINDS)
@pytest.mark.parametrize("readout", ex.READOUTS)
def test_eccentricity_gnn_matches_networkx_bfs(random_batch, kind, readout):
    graphs, batch = random_batch
    out = np.asarray(ex.eccentricity_gnn(batch, kind=kind, readout=readout, num_layers=N_MAX, bound=N_MAX, max_deg=N_MAX - 1))
    truth = [max(nx.single_source_shortest_path_length(G, ex.marked_node(G)).values()) for G in graphs]
    np.testing.assert_array_equal(out[: len(graphs)], truth)


def test_eccentricity_gnn_with_too_few_layers_sees_only_T_hops(random_batch):
    graphs, batch = random_batch
    out = np.asarray(ex.eccentricity_gnn(batch, kind="max", readout="multiset", num_layers=2, bound=N_MAX, max_deg=N_MAX - 1))
    np.testing.assert_array_equal(out[: len(graphs)], [min(ex.eccentricity_of_marked(G), 2) for G in graphs])


@pytest.mark.parametrize("T", [1, 2, 3])
def test_fixed_depth_pair_same_views_different_answer(T):
    pair = ex.fixed_depth_pair(T)
    assert pair.G1.number_of_nodes() == pair.G2.number_of_nodes()
    assert ex.eccentricity_of_marked(pair.G1) == ex.eccentricity_of_marked(pair.G2) + 1
    for mode in ("multiset", "set", "distribution"):
        assert gr.wl_indistinguishable(pair.G1, pair.G2, mode, "multiset", ex.FEATURE, ex.WEIGHT, rounds=T)
    # one more round reaches the marked end and separates them: the pair is tight for depth T
    assert not gr.wl_indistinguishable(pair.G1, pair.G2, "multiset", "multiset", ex.FEATURE, ex.WEIGHT, rounds=T + 3)


PROBED = [("generic", "multiset"), ("max", "same"), ("mean", "same")]


@pytest.fixture(scope="module")
def probes():
    pairs = ex.counterexample_pairs(1)  # one layer keeps compilation short; the claims hold for any T
    return {(k, r): ex.probe_pairs(pairs, k, r, 1, 24, seed=3) for k, r in PROBED}


@pytest.mark.parametrize("kind,readout", PROBED)
def test_counterexamples_hold_for_random_gnns(probes, kind, readout):
    evs = probes[kind, readout]
    for name in ("b_fixed", "c_cycles", "c_cubic"):
        assert ex.is_counterexample(evs[name]), (name, evs[name])
    assert ex.is_valid_control(evs["control_marked"]), evs["control_marked"]
    # pooling with max / mean cannot count nodes; generic pooling can
    assert ex.is_counterexample(evs["a_pool"]) == (kind != "generic")


def test_generic_control_path_vs_star(probes):
    ev = probes["generic", "multiset"]["control_plain"]
    assert ex.is_valid_control(ev) and not ex.is_counterexample(ev)
    # max/mean GNNs are blind to P4 vs S4 with equal features, like set/distribution refinement
    assert probes["max", "same"]["control_plain"].gnn_identical and probes["max", "same"]["control_plain"].wl_identical


@pytest.mark.parametrize("kind", ex.KINDS)
@pytest.mark.parametrize("readout", ex.READOUTS)
def test_refinement_claims_for_every_kind(kind, readout):
    pairs = ex.counterexample_pairs(2)
    rk = ex.wl_readout_kind(kind, readout)
    mode = {"generic": "multiset", "max": "set", "mean": "distribution"}[kind]
    same = lambda p: gr.wl_indistinguishable(p.G1, p.G2, mode, rk, ex.FEATURE, ex.WEIGHT, p.rounds)  # noqa: E731
    for name in ("b_fixed", "c_cycles", "c_cubic"):
        assert same(pairs[name])
    assert same(pairs["a_pool"]) == (readout == "same" and kind != "generic")
    assert not same(pairs["control_marked"])


def test_decision_functions():
    ev = ex.PairEvidence("p", "max", "same", 2, 3, 4, True, True, False, 0.0, 0.0)
    assert ex.is_counterexample(ev) and not ex.is_valid_control(ev)
    assert not ex.is_counterexample(ev.__class__(**{**ev.__dict__, "true2": 3}))  # same truth: no evidence
    assert not ex.is_counterexample(ev.__class__(**{**ev.__dict__, "gnn_identical": False}))
    assert ex.outputs_identical(np.array([1.0, 2.0]), np.array([1.0 + 1e-7, 2.0]))
    assert not ex.outputs_identical(np.array([1.0]), np.array([1.01]))
    assert ex.outputs_separate(np.array([0.0, 1.0]), np.array([0.1, 1.5]))
    assert ex.decide(True, False) == "yes" and ex.decide(False, True) == "no" and ex.decide(False, False) == "open"
    with pytest.raises(ValueError):
        ex.decide(True, True)


def test_mirror_smiles_and_bad_input():
    assert ex.mirror_smiles("C[C@@H](N)O") == "C[C@H](N)O"
    assert ex.mirror_smiles(ex.mirror_smiles("F[C@H](Cl)[C@@H](Br)I")) == "F[C@H](Cl)[C@@H](Br)I"
    with pytest.raises(ValueError, match="stereo"):
        ex.mirror_smiles("CCO")
    with pytest.raises(ValueError, match="chirality"):
        ex.molecule_graph("CCO", "handedness")


def test_raw_tag_flips_with_atom_order_but_cip_does_not():
    writings = ex.rewritten_smiles(ex.CHIRAL_MOLECULES["alanine"])
    centres = [ex.stereocentres(ex._mol(w)) for w in writings]
    assert {c[0][2] for c in centres} == {"CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW"}
    assert {c[0][1] for c in centres} == {"S"}  # L-alanine is (S)
    assert ex.stereocentres(ex._mol(ex.mirror_smiles(ex.CHIRAL_MOLECULES["alanine"])))[0][1] == "R"


def test_chirality_generic_gnn_blind_without_stereo_and_cip_separates():
    mols = {k: ex.CHIRAL_MOLECULES[k] for k in ("alanine", "thalidomide")}
    for e in ex.chirality_probe(mols, num_draws=12, num_layers=2, seed=0, max_writings=8):
        assert e.cip[0] != e.cip[1] and e.cip_stable
        assert e.mirror_identical["none"]  # isomorphic featured graphs → equal outputs
        assert e.mirror_separate["cip"] and e.rewrite_identical["cip"]
        assert e.rewrite_identical["none"]
        assert e.tag_flips and not e.rewrite_identical["tag"]  # raw tag is not a molecular property
