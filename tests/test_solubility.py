"""jaxhw.models.gnn + jaxhw.solubility: GIN-E vs a Python loop, masking, invariances, training,
data set / splits, save-load-predict round trip, the CLI, and the report's verdict function."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold

from jaxhw import cli
from jaxhw import molecules as M
from jaxhw import solubility as S
from jaxhw.models.gnn import MoleculeGNN

SMILES = ["CCO", "c1ccccc1O", "C[C@H](N)C(=O)O", "C", "CC(=O)Oc1ccccc1C(=O)O"]


FIXED = M.Budget(n_node=64, n_edge=128, n_graph=8)  # one shape → one compilation across tests


def padded(smiles, budget=FIXED, targets=None):
    graphs = [M.smiles_to_graph(s) for s in smiles]
    return M.pad_batch(graphs, budget, targets)


# ---------------------------------------------------------------------------------- the model


def np_layer_norm(x, p):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def dense(x, p):
    return x @ np.asarray(p["kernel"]) + np.asarray(p["bias"])


def reference_forward(params, graphs, model):
    """The GIN-E of the docstring, molecule by molecule, with explicit Python loops over edges."""
    relu = lambda x: np.maximum(x, 0)  # noqa: E731
    out = []
    for g in graphs:
        h = dense(g.nodes, params["embed"])
        for k in range(model.num_layers):
            p = jax.tree.map(np.asarray, params[f"layer_{k}"])
            agg = np.zeros_like(h)
            for e, (s, r) in enumerate(zip(g.senders, g.receivers)):
                agg[r] += relu(h[s] + dense(g.edges[e], p["edge"]))
            z = (1 + p["eps"]) * h + agg
            z = relu(np_layer_norm(dense(z, p["mlp_0"]), p["ln_0"]))
            z = relu(np_layer_norm(dense(z, p["mlp_1"]), p["ln_1"]))
            h = h + z
        pools = {"sum": h.sum(0), "mean": h.mean(0), "max": h.max(0)}
        v = np.concatenate([pools[r] for r in model.readout])
        y = dense(relu(dense(v, params["head_0"])), params["head_1"])[0]
        out.append(model.target_mean + model.target_std * y)
    return np.array(out)


def randomized(params, key):
    """Non-trivial parameters (the output layer is zero-initialised, ε is 0 at init)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [l + 0.3 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def small_model():
    model = MoleculeGNN(hidden=8, num_layers=2, readout=("sum", "mean", "max"), target_mean=-2.0, target_std=1.5)
    batch = padded(SMILES)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), batch.graph)["params"]
    params = randomized(params, jax.random.PRNGKey(1))
    return model, params, jax.jit(lambda p, g: model.apply({"params": p}, g))


def test_gine_matches_python_loop_reference(small_model):
    model, params, apply = small_model
    graphs = [M.smiles_to_graph(s) for s in SMILES]
    batch = padded(SMILES)
    ours = np.asarray(apply(params, batch.graph))[batch.graph_mask]
    np.testing.assert_allclose(ours, reference_forward(params, graphs, model), rtol=2e-4, atol=2e-4)


def test_padding_never_leaks_into_outputs_loss_or_gradients(small_model):
    model, params, apply = small_model
    y = np.array([0.1, -1.0, 0.5, 2.0, -3.0], np.float32)
    graphs = [M.smiles_to_graph(s) for s in SMILES]
    tight, roomy = padded(SMILES, M.budget_for(graphs, 5), y), padded(SMILES, FIXED, y)
    assert tight.graph.nodes.shape != roomy.graph.nodes.shape
    np.testing.assert_allclose(
        np.asarray(apply(params, tight.graph))[:5], np.asarray(apply(params, roomy.graph))[:5], rtol=1e-5, atol=1e-5
    )

    def loss(p, b):
        return S.regression_loss(model.apply, {"params": p}, S.as_engine_batch(b), jax.random.PRNGKey(0), False)

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (l1, (m1, _)), g1 = grad(params, tight)
    (l2, (m2, _)), g2 = grad(params, roomy)
    pred = reference_forward(params, [M.smiles_to_graph(s) for s in SMILES], model)
    np.testing.assert_allclose(l1, np.mean((pred - y) ** 2), rtol=1e-4)
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
    assert float(m1["count"]) == float(m2["count"]) == 5
    np.testing.assert_allclose(m1["abs_err"], np.abs(pred - y).sum(), rtol=1e-4)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        assert np.all(np.isfinite(b))  # max readout on empty padding graphs gives no NaN
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_prediction_is_invariant_to_atom_order(small_model):
    model, params, apply = small_model
    rng = np.random.default_rng(0)
    for smi in ["CC(=O)Oc1ccccc1C(=O)O", "C[C@H](N)C(=O)O", "C/C=C/CBr"]:
        m = Chem.MolFromSmiles(smi)
        shuffled = Chem.MolToSmiles(Chem.RenumberAtoms(m, rng.permutation(m.GetNumAtoms()).tolist()), canonical=False)
        b = padded([smi, shuffled])
        out = np.asarray(apply(params, b.graph))
        np.testing.assert_allclose(out[0], out[1], rtol=1e-4, atol=1e-4)
    # mirror images are distinguished (the CIP feature differs)
    out = np.asarray(apply(params, padded(["C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O"]).graph))
    assert abs(out[0] - out[1]) > 1e-4


def test_bad_readout_is_rejected(small_model):
    with pytest.raises(ValueError, match="readout"):
        MoleculeGNN(readout=("median",)).init(jax.random.PRNGKey(0), padded(["CCO"]).graph)


# ---------------------------------------------------------------------------------- data set and splits


def test_build_dataset_merges_duplicates_and_lists_bad_rows():
    ds = S.build_dataset(["CCO", "OCC", " CCO ", "bad(", "c1ccccc1"], [1.0, 2.0, 3.0, 9.0, -2.0], list("abcde"))
    assert len(ds) == 2 and ds.n_rows == 5 and ds.n_merged_rows == 2
    assert ds.rows == ((0, 1, 2), (4,)) and ds.targets[0] == pytest.approx(2.0)
    assert [s[0] for s in ds.skipped] == [3] and "bad(" in ds.skipped[0][2]


@pytest.fixture(scope="module")
def esol():
    return S.load_esol_dataset()


def test_esol_has_1117_distinct_structures_and_uses_smiles_only(esol):
    ds = esol
    assert ds.n_rows == 1128 and len(ds) == 1117 and not ds.skipped
    assert len(set(ds.smiles)) == len(ds)


def test_random_and_scaffold_splits_partition_without_leaks(esol):
    ds = esol
    for split in (S.random_split(len(ds), 3), S.scaffold_split(ds.smiles, 3)):
        allidx = np.concatenate(split)
        np.testing.assert_array_equal(np.sort(allidx), np.arange(len(ds)))
        assert abs(len(split.train) - 0.8 * len(ds)) < 0.05 * len(ds)
    sc = S.scaffold_split(ds.smiles, 3)
    scaffold = lambda i: Chem.MolToSmiles(MurckoScaffold.GetScaffoldForMol(Chem.MolFromSmiles(ds.smiles[i])))  # noqa: E731
    parts = [{scaffold(i) for i in p} for p in sc]
    assert not (parts[0] & parts[2]) and not (parts[0] & parts[1]) and not (parts[1] & parts[2])
    assert S.scaffold_split(ds.smiles, 3).test.tolist() == sc.test.tolist()  # seeded, deterministic


def test_split_file_round_trip_and_leak_detection(tmp_path):
    ds = S.build_dataset(["CCO", "OCC", "c1ccccc1", "CCN", "CCCl", "CO"], np.arange(6.0))
    splits = [S.Split(np.array([0, 1]), np.array([2]), np.array([3, 4])), S.Split(np.array([4, 3]), np.array([0]), np.array([1, 2]))]
    path = S.save_splits(tmp_path / "s.npz", ds, splits)
    back = S.load_splits(path, ds)
    for a, b in zip(splits, back):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(np.sort(x), y)
    np.savez(tmp_path / "leak.npz", train=np.array([0, 2]), val=np.array([3]), test=np.array([1]))  # rows 0,1 = ethanol
    with pytest.raises(ValueError, match="both train and test"):
        S.load_splits(tmp_path / "leak.npz", ds)
    np.savez(tmp_path / "bad.npz", a=np.arange(3))
    with pytest.raises(ValueError, match="train"):
        S.load_splits(tmp_path / "bad.npz", ds)


# ---------------------------------------------------------------------------------- training and saved models


@pytest.fixture(scope="module")
def trained(esol):
    ds = esol
    idx = np.random.default_rng(0).permutation(len(ds))
    split = S.Split(np.sort(idx[:128]), np.sort(idx[128:192]), np.sort(idx[192:256]))
    cfg = S.TrainConfig(hidden=32, num_layers=2, epochs=10, batch_size=16, dropout=0.0, learning_rate=3e-3, warmup_epochs=1)
    return ds, split, S.train(ds, split, cfg, seed=0)


def test_short_training_reduces_validation_loss_and_selects_on_validation(trained):
    ds, split, res = trained
    val = [h["val_loss"] for h in res.history]
    assert len(val) == 10 and min(val) < 0.5 * val[0]
    assert res.best_epoch == int(np.argmin(val)) + 1
    # the kept parameters are the best epoch's: recompute their validation MSE independently
    pred = S.predict_graphs(res.model, res.params, [ds.graphs[i] for i in split.val], res.budget)
    np.testing.assert_allclose(np.mean((pred - ds.targets[split.val]) ** 2), min(val), rtol=1e-4)


def test_save_load_predict_round_trip_and_cli(trained, tmp_path, capsys):
    ds, split, res = trained
    S.save_model(tmp_path / "m", res.model, res.params, max_heavy_atoms=60)
    loaded = S.load_model(tmp_path / "m")
    smiles = [ds.smiles[i] for i in split.test[:20]]
    want = S.predict_graphs(res.model, res.params, [ds.graphs[i] for i in split.test[:20]], res.budget)
    got = S.predict_solubility(smiles, tmp_path / "m")
    np.testing.assert_allclose([p.log_mol_per_l for p in got], want, rtol=1e-5, atol=1e-5)

    # CLI: one line per molecule, invalid ones named on stderr, exit 1 if any invalid
    assert cli.main(["predict-solubility", "CCO", " c1ccccc1 ", "--model", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and out[0].startswith("CCO\t") and out[1].startswith("c1ccccc1\t")
    assert cli.main(["predict-solubility", "CCO", "C1CC", "--model", str(tmp_path / "m")]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 1 and "C1CC" in captured.err

    # size policy: refuse far outside the training range
    with pytest.raises(ValueError, match="heavy atoms"):
        S.predict_solubility(["C" * 80], model=loaded)
    rec = S.predict_solubility(["C" * 80, "CCO"], model=loaded, on_error="record")
    assert rec[0].error and np.isnan(rec[0].log_mol_per_l) and rec[1].error is None

    # a model trained with another feature vocabulary is refused, not silently mis-used
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["features"]["atom"][0].append("Xx")
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="vocabulary"):
        S.load_model(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="no saved solubility model"):
        S.load_model(tmp_path / "nowhere")


def test_shipped_model_predicts_esol_without_training(esol):
    ds = esol
    idx = np.arange(0, len(ds), 25)
    preds = S.predict_solubility([ds.smiles[i] for i in idx])
    rmse = np.sqrt(np.mean((np.array([p.log_mol_per_l for p in preds]) - ds.targets[idx]) ** 2))
    assert rmse < 1.0  # vs ~2.1 for predicting the mean
    salt = S.predict_solubility(["[Na+].[O-]C(=O)c1ccccc1"])[0]
    assert "largest fragment" in salt.note and np.isfinite(salt.log_mol_per_l)


# ---------------------------------------------------------------------------------- units and verdicts


def test_mg_per_litre_conversion():
    # 0.01 mol/L of glucose (180.16 g/mol) = 1.8016 g/L
    np.testing.assert_allclose(S.log_mol_per_l_to_mg_per_l(np.array([-2.0]), np.array([180.16])), [1801.6])


def test_compare_rmse_verdicts():
    ours = [0.50, 0.52, 0.48, 0.51, 0.49]  # mean 0.50, standard error ≈ 0.007
    assert S.compare_rmse(ours, 0.70) == "better"
    assert S.compare_rmse(ours, 0.30) == "worse"
    assert S.compare_rmse(ours, 0.505) == "tie"
    assert S.compare_rmse(ours, 0.60, anchor_std=0.2, anchor_n=5) == "tie"  # their spread hides it
    assert S.compare_rmse(ours, 0.60, anchor_std=0.01, anchor_n=50) == "better"
    with pytest.raises(ValueError):
        S.compare_rmse([0.5], 0.6)
