"""jaxhw.linalg: orthogonalize vs numpy SVD and optax.contrib.muon, semi-orthogonal init, Q11."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhw import linalg

SHAPES = [(6, 4), (4, 6), (5, 5), (40, 3), (3, 40)]


def _numpy_polar(G):
    U, s, Vt = np.linalg.svd(np.asarray(G, np.float64), full_matrices=False)
    return U @ Vt


@pytest.mark.parametrize("shape", SHAPES)
def test_svd_orthogonalize_matches_numpy_polar_factor(shape):
    G = jax.random.normal(jax.random.PRNGKey(sum(shape)), shape)
    O = linalg.orthogonalize(G, "svd")
    np.testing.assert_allclose(O, _numpy_polar(G), atol=2e-5)
    np.testing.assert_allclose(np.linalg.svd(O, compute_uv=False), 1.0, atol=2e-5)


def test_rank_deficient_drops_null_directions_and_zero_gives_zero():
    rng = np.random.default_rng(0)
    G = jnp.asarray(rng.standard_normal((7, 2)) @ rng.standard_normal((2, 5)), jnp.float32)
    s = np.linalg.svd(linalg.orthogonalize(G), compute_uv=False)
    np.testing.assert_allclose(s[:2], 1.0, atol=1e-5)
    np.testing.assert_allclose(s[2:], 0.0, atol=1e-5)
    # U_r V_rᵀ still attains tr Σ, the spectral-norm dual (Q4).
    np.testing.assert_allclose(jnp.sum(G * linalg.orthogonalize(G)), np.linalg.svd(G, compute_uv=False).sum(), rtol=1e-5)
    for method in ("svd", "newton_schulz"):
        for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
            out = linalg.orthogonalize(jnp.zeros((4, 3), dtype), method)
            assert out.dtype == dtype
            assert not np.any(np.isnan(np.asarray(out, np.float32)))
            assert np.all(np.asarray(out, np.float32) == 0)


def test_batched_leading_dims():
    G = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 6, 4))
    for method in ("svd", "newton_schulz"):
        out = linalg.orthogonalize(G, method)
        assert out.shape == G.shape
        np.testing.assert_allclose(out[1, 2], linalg.orthogonalize(G[1, 2], method), atol=1e-5)
    np.testing.assert_allclose(linalg.spectral_norm_exact(G), np.linalg.norm(np.asarray(G), 2, axis=(-2, -1)), rtol=1e-5)


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (32, 8)])
def test_newton_schulz_matches_optax_muon_and_band(shape):
    G = jax.random.normal(jax.random.PRNGKey(2), shape)
    tx = optax.contrib.scale_by_muon(beta=0.0, nesterov=False, ns_steps=5,
                                     weight_dimension_numbers={"w": optax.contrib.MuonDimensionNumbers()})
    ref, _ = tx.update({"w": G}, tx.init({"w": G}))
    ours = linalg.orthogonalize(G, "newton_schulz", ns_steps=5)
    np.testing.assert_allclose(ours, ref["w"], atol=5e-6)
    s = np.linalg.svd(ours, compute_uv=False)
    lo, hi = linalg.NS_SINGULAR_VALUE_BAND
    assert lo <= s.min() and s.max() <= hi
    # Same singular vectors as the exact polar factor: NS only changes σ.
    assert np.linalg.norm(ours - _numpy_polar(G)) / np.linalg.norm(_numpy_polar(G)) < 0.35


def test_nonfinite_input_gives_nan_without_calling_lapack():
    """LAPACK's SVD can fail to terminate on Inf; we return NaN instead (and quickly)."""
    for bad in (jnp.inf, jnp.nan):
        G = jnp.eye(3).at[0, 1].set(bad)
        assert np.all(np.isnan(linalg.orthogonalize(G)))
        assert np.isnan(linalg.spectral_norm_exact(G))
        assert np.all(np.isnan(linalg.orthogonalize(G, "newton_schulz")))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="G must be a matrix"):
        linalg.orthogonalize(jnp.ones(3))
    with pytest.raises(ValueError, match="method"):
        linalg.orthogonalize(jnp.ones((2, 2)), "qr")
    with pytest.raises(TypeError, match="floating"):
        linalg.orthogonalize(jnp.ones((2, 2), jnp.int32))


@pytest.mark.parametrize("shape", [(16, 64), (64, 16), (3, 3, 8, 4)])
def test_semi_orthogonal_and_flax_init(shape):
    M = linalg.semi_orthogonal(jax.random.PRNGKey(0), shape)
    mat = np.asarray(M).reshape(-1, shape[-1])
    np.testing.assert_allclose(np.linalg.svd(mat, compute_uv=False), 1.0, atol=1e-5)
    d_in, d_out = int(np.prod(shape[:-1])), shape[-1]
    W = linalg.semi_orthogonal_init()(jax.random.PRNGKey(1), shape)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(W).reshape(d_in, d_out), 2), np.sqrt(d_out / d_in), rtol=1e-5)


def test_semi_orthogonal_init_in_dense_layer():
    layer = nn.Dense(64, kernel_init=linalg.semi_orthogonal_init())
    params = layer.init(jax.random.PRNGKey(0), jnp.ones((1, 16)))
    kernel = params["params"]["kernel"]
    assert kernel.shape == (16, 64)
    np.testing.assert_allclose(np.linalg.svd(kernel, compute_uv=False), 2.0, rtol=1e-5)
    W = linalg.semi_orthogonal_init(scale=0.5)(jax.random.PRNGKey(0), (8, 8))
    np.testing.assert_allclose(np.linalg.svd(W, compute_uv=False), 0.5, rtol=1e-5)
    with pytest.raises(ValueError, match="scale"):
        linalg.semi_orthogonal_init(scale="fan_in")


def test_weight_decay_scales_singular_values_and_keeps_vectors():
    """Q11, on random rectangular matrices; the verdict must flip when the claim is false."""
    for i, shape in enumerate([(8, 5), (5, 8), (12, 3)]):
        W = jax.random.normal(jax.random.PRNGKey(10 + i), shape)
        cmp = linalg.compare_singular_systems(W, 0.999 * W)
        np.testing.assert_allclose(cmp["sigma_ratio"], 0.999, atol=1e-5)
        np.testing.assert_allclose(cmp["u_align"], 1.0, atol=1e-5)
        np.testing.assert_allclose(cmp["v_align"], 1.0, atol=1e-5)
        assert linalg.weight_decay_verdict(cmp, 0.999) == {"singular_values_scaled": True, "singular_vectors_kept": True}
    # A perturbation that rotates singular vectors, and a wrong factor, are detected.
    W = jax.random.normal(jax.random.PRNGKey(3), (8, 5))
    noisy = linalg.compare_singular_systems(W, 0.999 * W + 0.3 * jax.random.normal(jax.random.PRNGKey(4), (8, 5)))
    assert linalg.weight_decay_verdict(noisy, 0.999) == {"singular_values_scaled": False, "singular_vectors_kept": False}
    assert not linalg.weight_decay_verdict(linalg.compare_singular_systems(W, 0.99 * W), 0.999)["singular_values_scaled"]
