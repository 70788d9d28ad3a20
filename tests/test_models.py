"""Model shapes, the 2×2 pool against flax's, and make_cnn's contract."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.inductive_bias import count_params, forward_flops
from jaxhw.models import CNN, MLP, make_cnn
from jaxhw.models.cnn import max_pool_2x2


def test_max_pool_matches_flax_values_and_gradient():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 6, 3))
    ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
    np.testing.assert_allclose(max_pool_2x2(x), ref(x))
    w = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 3, 3))
    g1 = jax.grad(lambda x: jnp.sum(max_pool_2x2(x) * w))(x)
    g2 = jax.grad(lambda x: jnp.sum(ref(x) * w))(x)
    np.testing.assert_allclose(g1, g2)
    with pytest.raises(ValueError, match="even"):
        max_pool_2x2(jnp.zeros((1, 3, 4, 1)))


def test_mlp_layers_and_shapes():
    model = MLP(width=128, depth=3)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)))["params"]
    kernels = [v["kernel"].shape for v in params.values()]
    assert kernels == [(3072, 128), (128, 128), (128, 100)]
    assert model.apply({"params": params}, jnp.zeros((5, 32, 32, 3))).shape == (5, 100)
    assert len(MLP(width=128, depth=7).init(jax.random.PRNGKey(0), jnp.zeros((1, 3072)))["params"]) == 7
    with pytest.raises(ValueError, match="depth"):
        MLP(depth=0).init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))


def test_cnn_has_four_convs_and_three_dense_layers():
    model = make_cnn()
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    names = list(variables["params"])
    assert sum(n.startswith("Conv") for n in names) == 4
    assert sum(n.startswith("Dense") for n in names) == 3
    out, mutated = model.apply(variables, jnp.ones((3, 32, 32, 3)), train=True,
                               rngs={"dropout": jax.random.PRNGKey(1)}, mutable=["batch_stats"])
    assert out.shape == (3, 100) and "batch_stats" in mutated
    # No more compute per image than the PyTorch reference CNN (channels 32-64-128-256), both
    # counted by XLA, which skips zero-padded taps (25.7 vs 20.4 MFLOP; the count of the
    # reference, padded taps included, is ≈31): ours trades the first layer's 32 channels for 16.
    reference = make_cnn(channels=(32, 64, 128, 256), pool_before_norm=False)
    reference_flops = forward_flops(reference, reference.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    assert 24e6 < reference_flops < 28e6
    assert 20e6 < forward_flops(model, variables) <= 0.85 * reference_flops
    assert model.channels == (16, 64, 128, 256)
    convs = sum(3 * 3 * c_in * c_out for c_in, c_out in [(3, 16), (16, 64), (64, 128), (128, 256)])
    batch_norm = 2 * (16 + 64 + 128 + 256)
    dense = (2 * 2 * 256 + 1) * 256 + (256 + 1) * 128 + (128 + 1) * 100
    assert count_params(variables["params"]) == convs + batch_norm + dense
    with pytest.raises(ValueError, match="4 conv"):
        make_cnn(channels=(8, 8, 8))
    with pytest.raises(ValueError, match="NHWC"):
        model.apply(variables, jnp.ones((3, 3072)))


@pytest.mark.parametrize("kwargs, named", [
    (dict(channels=(0, 64, 128, 256)), "channels"), (dict(dense=(-1, 8)), "dense"), (dict(num_classes=0), "num_classes"),
    (dict(channels=(1.5, 8, 8, 8)), "channels"), (dict(dropout=1.0), "dropout"), (dict(dropout=-0.1), "dropout"),
    (dict(pool_before_norm="no"), "pool_before_norm"), (dict(batch_norm=1), "batch_norm"),
    (dict(channels=16), "channels"), (dict(dropout=True), "dropout"),
])
def test_make_cnn_rejects_bad_settings_by_name(kwargs, named):
    with pytest.raises(ValueError, match=f"make_cnn: {named}"):
        make_cnn(**kwargs)


def test_cnn_rejects_images_it_cannot_pool_and_spots_nchw():
    model = make_cnn(channels=(4, 4, 4, 4), dense=(8, 8), num_classes=3)
    with pytest.raises(ValueError, match=r"\(2, 28, 28, 3\).*multiples of 16"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((2, 28, 28, 3)))
    with pytest.raises(ValueError, match="looks like NCHW"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((2, 3, 32, 32)))
    assert model.init(jax.random.PRNGKey(0), jnp.zeros((2, 64, 48, 3)))  # any multiple of 16 works
    with pytest.raises(ValueError, match="CNN: channels"):  # the module checks its settings too
        CNN(channels=(0, 4, 4, 4)).init(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)))


@pytest.mark.parametrize("pool_before_norm", [True, False])
def test_cnn_block_order_matches_a_hand_written_forward_pass(pool_before_norm):
    """The conv → pool → BatchNorm → ReLU order (and the reference's conv → BatchNorm → pool → ReLU),
    checked against plain lax convolutions, flax's max_pool and the batch-norm formula."""
    model = make_cnn(channels=(4, 6, 8, 8), dense=(16, 12), num_classes=5, dropout=0.0,
                     pool_before_norm=pool_before_norm)
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 16, 16, 3))
    variables = model.init(jax.random.PRNGKey(1), x[:1])
    # Random BatchNorm scales of both signs: with a negative scale, pooling before or after the
    # normalization gives different results, so the test tells the two orders apart.
    params = jax.tree_util.tree_map(lambda v: v, variables["params"])
    for i in range(4):
        bn = params[f"BatchNorm_{i}"]
        bn["scale"] = jax.random.normal(jax.random.PRNGKey(10 + i), bn["scale"].shape)
        bn["bias"] = jax.random.normal(jax.random.PRNGKey(20 + i), bn["bias"].shape)
    out, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])

    def batch_norm(h, bn):
        mean, var = h.mean((0, 1, 2)), h.var((0, 1, 2))
        return (h - mean) / np.sqrt(var + 1e-5) * bn["scale"] + bn["bias"]

    h = x
    for i in range(4):
        h = jax.lax.conv_general_dilated(h, params[f"Conv_{i}"]["kernel"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        pool = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2))
        h = batch_norm(pool(h), params[f"BatchNorm_{i}"]) if pool_before_norm else pool(batch_norm(h, params[f"BatchNorm_{i}"]))
        h = jnp.maximum(h, 0.0)
    h = h.reshape(h.shape[0], -1)
    for i in range(2):
        h = jnp.maximum(h @ params[f"Dense_{i}"]["kernel"] + params[f"Dense_{i}"]["bias"], 0.0)
    ref = h @ params["Dense_2"]["kernel"] + params["Dense_2"]["bias"]
    np.testing.assert_allclose(out, ref, rtol=2e-4, atol=2e-4)
    other, _ = make_cnn(channels=(4, 6, 8, 8), dense=(16, 12), num_classes=5, dropout=0.0,
                        pool_before_norm=not pool_before_norm).apply(
        {**variables, "params": params}, x, train=True, mutable=["batch_stats"])
    assert np.abs(np.asarray(other) - np.asarray(ref)).max() > 1e-2  # the order matters


def test_run_identity_tells_apart_every_setting_a_resume_must_not_mix():
    """A checkpoint resumed into another model setting (even one with equal shapes, like the block
    order), other data or another seed would silently mix two runs: their identities differ."""
    from jaxhw.inductive_bias import ArchSpec, Recipe, run_identity

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 100, 8)
    splits = {"train": (x, y), "val": (x[:2], y[:2])}
    spec = ArchSpec("cnn", "CNN", make_cnn)
    base = run_identity(spec, make_cnn(), splits, Recipe(), 0)
    assert run_identity(spec, make_cnn(), {k: (a.copy(), b.copy()) for k, (a, b) in splits.items()}, Recipe(), 0) == base
    other_pixels = x.copy()
    other_pixels[0, 0, 0, 0] ^= 1
    for changed in (
        run_identity(spec, make_cnn(pool_before_norm=False), splits, Recipe(), 0),
        run_identity(spec, make_cnn(dropout=0.3), splits, Recipe(), 0),
        run_identity(spec, make_cnn(), {**splits, "train": (other_pixels, y)}, Recipe(), 0),
        run_identity(spec, make_cnn(), splits, Recipe(epochs=3), 0),
        run_identity(spec, make_cnn(), splits, Recipe(), 1),
    ):
        assert changed != base
