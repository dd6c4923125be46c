"""Equalized-learning-rate building blocks shared by the networks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from stylegan_jax.ops.bias_act import bias_act


def normal_init(stddev: float):
    """N(0, stddev^2) initializer (stddev 0 gives zeros)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.normal(key, shape, dtype) * stddev

    return init


def constant_init(value: float | Sequence[float]):
    """Initializer broadcasting a constant (or a per-unit vector) to the shape."""

    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.broadcast_to(jnp.asarray(np.asarray(value, np.float32), dtype), shape)

    return init


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalized learning rate: weights are stored as N(0, 1) / lr_multiplier and
    scaled by ``lr_multiplier / sqrt(in_features)`` at run time, so that Adam's per-parameter step
    sizes are the same for every layer whatever its fan-in."""

    features: int                                 # Number of output features.
    activation: str = "linear"                    # 'linear', 'relu' or 'lrelu'.
    use_bias: bool = True                         # Add a bias before the activation?
    lr_multiplier: float = 1.0                    # Learning-rate multiplier (0.01 in the mapping network).
    weight_init: float = 1.0                      # Initial standard deviation of the effective weight.
    bias_init: float | Sequence[float] = 0.0      # Initial value of the effective bias.

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        in_features = x.shape[-1]
        weight = self.param("weight", normal_init(self.weight_init / self.lr_multiplier), (in_features, self.features))
        w = weight.astype(x.dtype) * (self.lr_multiplier / math.sqrt(in_features))
        y = jnp.dot(x, w, precision=lax.Precision.HIGHEST)
        b = None
        if self.use_bias:
            bias_init = np.broadcast_to(np.asarray(self.bias_init, np.float32), [self.features]) / self.lr_multiplier
            b = self.param("bias", constant_init(bias_init), (self.features,))
            b = b.astype(x.dtype) * self.lr_multiplier
        return bias_act(y, b, act=self.activation)
