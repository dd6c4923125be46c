"""Mapping network z (+ label c) -> w, with the moving average of w and truncation."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from stylegan_jax.networks.layers import FullyConnectedLayer


def normalize_2nd_moment(x: jnp.ndarray, eps: float = 1e-8) -> jnp.ndarray:
    """Scale each row to unit root-mean-square."""
    return x * lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


class MappingNetwork(nn.Module):
    """z -> w. The running mean of w (``w_avg``, in the ``ema`` collection) is the truncation
    centre; it only changes when the caller passes ``update_emas=True`` with ``ema`` mutable."""

    z_dim: int                                    # Input latent (Z) dimensionality, 0 = no latent.
    c_dim: int                                    # Conditioning label (C) dimensionality, 0 = no labels.
    w_dim: int                                    # Intermediate latent (W) dimensionality.
    num_ws: int                                   # Number of copies of w to output (one per synthesis layer).
    num_layers: int = 8                           # Number of mapping layers.
    lr_multiplier: float = 0.01                   # Learning-rate multiplier for the mapping layers.
    w_avg_beta: float = 0.998                     # Decay of the moving average of w during training.
    embed_features: int | None = None             # Label embedding width; None = w_dim.
    layer_features: int | None = None             # Hidden layer width; None = w_dim.

    @nn.compact
    def __call__(
        self,
        z: jnp.ndarray,
        c: jnp.ndarray | None = None,
        truncation_psi: float | jnp.ndarray = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> jnp.ndarray:
        """Returns ws ``[N, num_ws, w_dim]``."""
        embed_features = self.w_dim if self.embed_features is None else self.embed_features
        layer_features = self.w_dim if self.layer_features is None else self.layer_features
        x = None
        if self.z_dim > 0:
            if z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"MappingNetwork: z must have shape [N, {self.z_dim}], got {tuple(z.shape)}")
            x = normalize_2nd_moment(z.astype(jnp.float32))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                got = None if c is None else tuple(c.shape)
                raise ValueError(f"MappingNetwork: c must have shape [N, {self.c_dim}], got {got}")
            y = normalize_2nd_moment(FullyConnectedLayer(embed_features, name="embed")(c.astype(jnp.float32)))
            x = jnp.concatenate([x, y], axis=1) if x is not None else y
        if x is None:
            raise ValueError("MappingNetwork needs z_dim > 0 or c_dim > 0")

        for idx in range(self.num_layers):
            features = self.w_dim if idx == self.num_layers - 1 else layer_features
            x = FullyConnectedLayer(features, activation="lrelu", lr_multiplier=self.lr_multiplier, name=f"fc{idx}")(x)

        w_avg = self.variable("ema", "w_avg", jnp.zeros, (self.w_dim,), jnp.float32)
        if update_emas and not self.is_initializing():
            batch_mean = jnp.mean(lax.stop_gradient(x), axis=0)
            # lerp(batch_mean, w_avg, beta): w_avg moves towards the batch mean by (1 - beta).
            w_avg.value = batch_mean + self.w_avg_beta * (w_avg.value - batch_mean)

        ws = jnp.broadcast_to(x[:, None, :], (x.shape[0], self.num_ws, self.w_dim))
        return truncate(ws, w_avg.value, truncation_psi, truncation_cutoff)


def truncate(
    ws: jnp.ndarray, w_avg: jnp.ndarray, psi: float | jnp.ndarray = 1.0, cutoff: int | None = None
) -> jnp.ndarray:
    """Pull the first ``cutoff`` ws (all if None) towards ``w_avg`` by ``1 - psi``.

    ``psi`` may be a traced scalar (e.g. an ONNX input); ``psi = 1`` is the identity.
    """
    num_ws = ws.shape[1]
    cutoff = num_ws if cutoff is None else int(cutoff)
    if isinstance(psi, int | float) and psi == 1:
        return ws
    psi = jnp.asarray(psi, ws.dtype)
    truncated = w_avg + psi * (ws - w_avg)
    mask = (jnp.arange(num_ws) < cutoff)[None, :, None]
    return jnp.where(mask, truncated, ws)


__all__ = ["MappingNetwork", "normalize_2nd_moment", "truncate"]
