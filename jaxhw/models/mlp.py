"""Multi-layer perceptron on flattened images (Q14's MLP baselines, Q9's width sweep)."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """``depth`` Dense layers in all: ``depth − 1`` hidden layers of ``width`` units, then the head.

    The problem set's "MLP (w=128, d=3)" is two hidden layers of 128 and a 100-way output layer,
    i.e. three weight matrices. Inputs of any shape are flattened (images need no reshaping).

    Attributes:
      width: hidden units per layer.
      depth: number of Dense layers (≥ 1), output layer included.
      num_classes: output dimension.
      kernel_init: initializer for every kernel (e.g. ``jaxhw.linalg.semi_orthogonal_init()``).
      use_bias: biases on/off (Q9's width sweep uses bias-free layers so every parameter is a matrix).
      activation: nonlinearity between layers.
    """

    width: int = 128
    depth: int = 3
    num_classes: int = 100
    kernel_init: Callable = nn.initializers.lecun_normal()
    use_bias: bool = True
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout / batch norm: the MLP baselines are plain
        if self.depth < 1:
            raise ValueError(f"MLP depth must be >= 1, got {self.depth}")
        x = jnp.reshape(x, (x.shape[0], -1))
        for _ in range(self.depth - 1):
            x = self.activation(nn.Dense(self.width, kernel_init=self.kernel_init, use_bias=self.use_bias)(x))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, use_bias=self.use_bias)(x)
