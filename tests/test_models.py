"""Model shapes, the 2×2 pool against flax's, and make_cnn's contract."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.inductive_bias import count_params, forward_flops
from jaxhw.models import MLP, make_cnn
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
    # ≈31 MFLOP per image forward, the budget of the PyTorch reference (counted by XLA).
    assert 25e6 < forward_flops(model, variables) < 40e6
    convs = sum(3 * 3 * c_in * c_out for c_in, c_out in [(3, 32), (32, 64), (64, 128), (128, 256)])
    batch_norm = 2 * (32 + 64 + 128 + 256)
    dense = (2 * 2 * 256 + 1) * 256 + (256 + 1) * 128 + (128 + 1) * 100
    assert count_params(variables["params"]) == convs + batch_norm + dense
    with pytest.raises(ValueError, match="4 conv"):
        make_cnn(channels=(8, 8, 8))
    with pytest.raises(ValueError, match="NHWC"):
        model.apply(variables, jnp.ones((3, 3072)))
