"""jaxhw.molecules: featurization of known molecules, odd/invalid SMILES, padding and batching."""

import jraph
import networkx as nx
import numpy as np
import pytest

from jaxhw import molecules as M

ATOM = M.feature_slices(M.ATOM_FEATURES)
BOND = M.feature_slices(M.BOND_FEATURES)


def decode(rows: np.ndarray, features, name: str) -> list:
    """The vocabulary value each row's one-hot block names (``"other"`` for the last slot)."""
    f = next(f for f in features if f.name == name)
    block = rows[:, M.feature_slices(features)[name]]
    np.testing.assert_array_equal(block.sum(1), 1.0)  # exactly one slot on
    labels = list(f.choices) + [M.OTHER]
    return [labels[k] for k in block.argmax(1)]


def test_ethanol_atoms_bonds_and_both_edge_directions():
    g = M.smiles_to_graph("CCO")
    assert g.nodes.shape == (3, M.ATOM_DIM) and g.edges.shape == (4, M.BOND_DIM)
    assert decode(g.nodes, M.ATOM_FEATURES, "element") == ["C", "C", "O"]
    assert decode(g.nodes, M.ATOM_FEATURES, "num_hs") == [3, 2, 1]
    assert decode(g.nodes, M.ATOM_FEATURES, "degree") == [1, 2, 1]
    assert decode(g.nodes, M.ATOM_FEATURES, "hybridization") == ["SP3"] * 3
    assert decode(g.nodes, M.ATOM_FEATURES, "chirality") == ["none"] * 3
    assert set(zip(g.senders.tolist(), g.receivers.tolist())) == {(0, 1), (1, 0), (1, 2), (2, 1)}
    assert decode(g.edges, M.BOND_FEATURES, "bond_type") == ["SINGLE"] * 4
    np.testing.assert_array_equal(g.n_node, [3])
    np.testing.assert_array_equal(g.n_edge, [4])


def test_benzene_and_aspirin_counts_and_aromatic_ring_features():
    benzene = M.smiles_to_graph("c1ccccc1")
    assert benzene.nodes.shape[0] == 6 and benzene.edges.shape[0] == 12
    assert decode(benzene.nodes, M.ATOM_FEATURES, "aromatic") == [True] * 6
    assert decode(benzene.nodes, M.ATOM_FEATURES, "in_ring") == [True] * 6
    assert decode(benzene.nodes, M.ATOM_FEATURES, "hybridization") == ["SP2"] * 6
    assert decode(benzene.edges, M.BOND_FEATURES, "bond_type") == ["AROMATIC"] * 12
    assert decode(benzene.edges, M.BOND_FEATURES, "conjugated") == [True] * 12
    # aspirin C9H8O4: 13 heavy atoms, 13 bonds (one ring closure), one carboxylic acid H
    aspirin = M.smiles_to_graph("CC(=O)Oc1ccccc1C(=O)O")
    assert aspirin.nodes.shape[0] == 13 and aspirin.edges.shape[0] == 26
    els = decode(aspirin.nodes, M.ATOM_FEATURES, "element")
    assert els.count("C") == 9 and els.count("O") == 4
    assert sum(decode(aspirin.nodes, M.ATOM_FEATURES, "num_hs")) == 8
    assert decode(aspirin.edges, M.BOND_FEATURES, "bond_type").count("DOUBLE") == 4  # 2 C=O × 2 dirs
    # the edge list is the molecular graph: connected, a tree plus one ring (cyclomatic number 1)
    G = nx.Graph(list(zip(aspirin.senders.tolist(), aspirin.receivers.tolist())))
    assert nx.is_connected(G) and G.number_of_edges() - G.number_of_nodes() + 1 == 1


def test_charges_triple_bond_and_single_atom():
    g = M.smiles_to_graph("CC#N")
    assert decode(g.nodes, M.ATOM_FEATURES, "hybridization") == ["SP3", "SP", "SP"]
    assert decode(g.edges, M.BOND_FEATURES, "bond_type") == ["SINGLE"] * 2 + ["TRIPLE"] * 2
    nitro = M.smiles_to_graph("C[N+](=O)[O-]")
    assert decode(nitro.nodes, M.ATOM_FEATURES, "formal_charge") == [0, 1, 0, -1]
    methane = M.smiles_to_graph("C")  # a graph with no edges is valid
    assert methane.nodes.shape[0] == 1 and methane.edges.shape == (0, M.BOND_DIM)
    assert decode(methane.nodes, M.ATOM_FEATURES, "num_hs") == [4]


def test_chirality_is_cip_label_not_atom_order_tag():
    # L-alanine written with opposite raw tags (@ vs @@) because the neighbour order differs
    a = M.smiles_to_graph("C[C@H](N)C(=O)O")
    b = M.smiles_to_graph("N[C@@H](C)C(=O)O")
    d = M.smiles_to_graph("C[C@@H](N)C(=O)O")  # D-alanine
    racemic = M.smiles_to_graph("CC(N)C(=O)O")
    assert decode(a.nodes, M.ATOM_FEATURES, "chirality")[1] == "S"
    assert decode(b.nodes, M.ATOM_FEATURES, "chirality")[1] == "S"
    assert decode(d.nodes, M.ATOM_FEATURES, "chirality")[1] == "R"
    assert decode(racemic.nodes, M.ATOM_FEATURES, "chirality") == ["none"] * 6
    # mirror images differ only in the chirality block
    diff = np.flatnonzero(np.any(a.nodes != d.nodes, axis=0))
    assert set(diff) <= set(range(*ATOM["chirality"].indices(M.ATOM_DIM)))


def test_double_bond_stereo_is_e_z():
    e = M.smiles_to_graph("C/C=C/C")
    z = M.smiles_to_graph("C/C=C\\C")
    e2 = M.smiles_to_graph("C\\C=C\\C")  # the same trans isomer written the other way
    stereo = lambda g: decode(g.edges, M.BOND_FEATURES, "stereo")[2]  # noqa: E731  (bond 1 = C=C)
    assert (stereo(e), stereo(z), stereo(e2)) == ("E", "Z", "E")
    assert decode(M.smiles_to_graph("CC=CC").edges, M.BOND_FEATURES, "stereo") == ["none"] * 6


def test_unknown_values_fall_into_other_bucket():
    f = M.Feature("hybridization", ("SP", "SP2"))
    np.testing.assert_array_equal(f.one_hot("SP9_FROM_A_FUTURE_RDKIT"), [0, 0, 1])
    np.testing.assert_array_equal(f.one_hot("SP2"), [0, 1, 0])
    g = M.smiles_to_graph("C[Ge](C)(C)C")  # germanium: not in the element vocabulary
    assert decode(g.nodes, M.ATOM_FEATURES, "element")[1] == M.OTHER
    g = M.smiles_to_graph("C[C@H]1CC[C@@H](C)CC1")  # ring pseudo-asymmetry: no R/S → none/other
    assert set(decode(g.nodes, M.ATOM_FEATURES, "chirality")) <= {"none", M.OTHER}


@pytest.mark.parametrize("bad", ["", "   ", "C1CC", "not a smiles", "C(C"])
def test_invalid_smiles_raise_naming_the_input(bad):
    with pytest.raises(M.InvalidSmilesError) as err:
        M.smiles_to_graph(bad)
    assert repr(bad.strip()) in str(err.value) or repr(bad) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_non_string_is_a_type_error_and_whitespace_is_stripped():
    with pytest.raises(TypeError, match="str"):
        M.smiles_to_graph(None)
    a, b = M.smiles_to_graph("  CCO\n"), M.smiles_to_graph("CCO")
    for x, y in zip(a, b):
        if x is not None:
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("bad", ["CCO CC", "CCO\tC", " C C ", "c1ccccc1 benzene"])
def test_internal_whitespace_is_an_error_naming_the_input(bad):
    # RDKit alone would read "CCO CC" as ethanol (the rest is a "name") and drop "CC" silently
    from rdkit import Chem

    assert Chem.MolFromSmiles("CCO CC").GetNumAtoms() == 3
    with pytest.raises(M.InvalidSmilesError, match="whitespace") as err:
        M.parse_smiles(bad)
    assert repr(bad.strip()) in str(err.value)


def test_long_inputs_are_shortened_in_messages():
    long_bad = "C" * 2000 + "("
    with pytest.raises(M.InvalidSmilesError) as err:
        M.smiles_to_graph(long_bad)
    msg = str(err.value)
    assert len(msg) < 150 and "C" * 61 not in msg and "2001 characters" in msg
    assert M.shorten("CCO") == repr("CCO")  # short inputs are quoted whole


MIRROR_CASES = {
    "L-alanine": "C[C@H](N)C(=O)O",
    "(S)-ibuprofen": "CC(C)Cc1ccc(cc1)[C@H](C)C(=O)O",
    "L-threonine (2 centres)": "C[C@@H](O)[C@H](N)C(=O)O",
    "E double bond + centre": "C/C=C/[C@H](O)CC",
}


@pytest.mark.parametrize("smiles", MIRROR_CASES.values(), ids=MIRROR_CASES.keys())
def test_mirror_graph_is_the_featurized_rdkit_mirror_image(smiles):
    # independent reference: RDKit inverts every tetrahedral centre, then we featurize that molecule
    from rdkit import Chem

    m = Chem.MolFromSmiles(smiles)
    for atom in m.GetAtoms():
        atom.InvertChirality()
    mirror = M.mol_to_graph(m)
    g = M.smiles_to_graph(smiles)
    np.testing.assert_array_equal(M.mirror_graph(g).nodes, mirror.nodes)
    np.testing.assert_array_equal(g.edges, mirror.edges)  # E/Z is unchanged by a reflection
    assert not np.array_equal(g.nodes, mirror.nodes)  # the mirror image is a different input


def test_feature_coverage_and_unseen_values():
    graphs = [M.smiles_to_graph(s) for s in ("CCO", "c1ccccc1", "C/C=C/C")]
    cov = M.feature_coverage(graphs)
    assert cov["atom"]["element"] == ["C", "O"] and cov["bond"]["stereo"] == ["none", "E"]
    # uncovered columns = those never active in any graph (direct column check)
    nodes = np.concatenate([g.nodes for g in graphs])
    edges = np.concatenate([g.edges for g in graphs])
    node_cols, edge_cols = M.uncovered_columns(cov)
    np.testing.assert_array_equal(node_cols, np.flatnonzero(~nodes.any(0)))
    np.testing.assert_array_equal(edge_cols, np.flatnonzero(~edges.any(0)))
    he = M.parse_smiles("[He]").mol
    found = M.unseen_features(M.mol_to_graph(he), cov, he)
    assert ("atom", "element", M.OTHER, ("He",)) in found
    z = M.unseen_features(M.smiles_to_graph("C/C=C\\C"), cov)
    assert z == [("bond", "stereo", "Z", ("Z",))]
    assert M.unseen_features(M.smiles_to_graph("OCCO"), cov) == []


def test_salts_keep_largest_fragment_or_refuse():
    p = M.parse_smiles("CC(=O)[O-].[Na+]")
    assert p.mol.GetNumAtoms() == 4 and p.dropped_fragments == ("[Na+]",)
    assert M.smiles_to_graph("[Na+].CC(=O)[O-]").nodes.shape[0] == 4  # order does not matter
    with pytest.raises(M.InvalidSmilesError, match="salt or mixture"):
        M.parse_smiles("CC(=O)[O-].[Na+]", fragments="error")


def test_featurize_skips_and_lists_bad_rows():
    fs = M.featurize(["CCO", "bad(", "c1ccccc1", "", "CC(=O)O.[K]"])
    np.testing.assert_array_equal(fs.index, [0, 2, 4])
    assert [e[0] for e in fs.errors] == [1, 3] and fs.errors[0][1] == "bad("
    assert [d[0] for d in fs.dropped] == [4]
    with pytest.raises(M.InvalidSmilesError, match="bad"):
        M.featurize(["CCO", "bad("], on_error="raise")
    with pytest.raises(TypeError):
        M.featurize("CCO")


SMALL = ["CCO", "c1ccccc1", "CC(=O)O", "C", "CC(C)(C)Cl", "OCC(O)CO", "c1ccncc1", "CCN"]


def test_padding_masks_and_budget():
    graphs = [M.smiles_to_graph(s) for s in SMALL]
    budget = M.budget_for(graphs, batch_size=3)
    sizes = sorted((int(g.n_node[0]) for g in graphs), reverse=True)
    assert budget.n_node == sum(sizes[:3]) + 1 and budget.n_graph == 4
    b = M.pad_batch(graphs[:2], budget, targets=np.array([1.0, 2.0]))
    assert b.graph.nodes.shape == (budget.n_node, M.ATOM_DIM)
    assert b.graph.edges.shape == (budget.n_edge, M.BOND_DIM)
    np.testing.assert_array_equal(b.graph_mask, [True, True, False, False])
    np.testing.assert_array_equal(b.targets, [1.0, 2.0, 0.0, 0.0])
    node_mask = np.asarray(jraph.get_node_padding_mask(b.graph))
    assert node_mask.sum() == 3 + 6 and not node_mask[9:].any()
    # padding nodes carry zero features and padding edges only touch padding nodes
    assert not b.graph.nodes[~node_mask].any()
    edge_mask = np.asarray(jraph.get_edge_padding_mask(b.graph))
    assert (b.graph.senders[~edge_mask] >= 9).all() and (b.graph.receivers[~edge_mask] >= 9).all()
    with pytest.raises(ValueError):
        M.pad_batch(graphs[:4], budget)  # 4 graphs do not fit a 3-graph budget


def test_batches_cover_every_graph_once_with_one_shape():
    graphs = [M.smiles_to_graph(s) for s in SMALL]
    y = np.arange(len(graphs), dtype=np.float32)
    for budget in (M.budget_for(graphs, 3), M.budget_for(graphs, 3, slack=0.0)):
        out = list(M.batches(graphs, y, 3, budget, rng=np.random.default_rng(0)))
        shapes = {tuple(x.shape for x in jraph.GraphsTuple(*b.graph)._asdict().values() if x is not None) for b in out}
        assert len(shapes) == 1  # one padded shape → one compilation
        seen = np.concatenate([b.targets[b.graph_mask] for b in out])
        np.testing.assert_array_equal(np.sort(seen), y)  # each molecule exactly once
    # a budget tight enough to close batches early still covers everything
    tight = M.Budget(n_node=8, n_edge=14, n_graph=4)
    out = list(M.batches(graphs, y, 3, tight))
    assert len(out) > 3 and sum(b.graph_mask.sum() for b in out) == len(graphs)
    with pytest.raises(ValueError, match="exceed"):
        list(M.batches([M.smiles_to_graph("CCCCCCCCCC")], None, 1, M.Budget(5, 30, 2)))
