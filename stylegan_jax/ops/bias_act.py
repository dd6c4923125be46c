"""Bias + activation + gain + clamp, fused into one elementwise expression."""

from __future__ import annotations

import math

import jax.numpy as jnp

# Default gain per activation: keeps the output variance of a unit-variance input roughly at 1.
ACTIVATION_GAINS = {"linear": 1.0, "relu": math.sqrt(2.0), "lrelu": math.sqrt(2.0)}


def bias_act(
    x: jnp.ndarray,
    b: jnp.ndarray | None = None,
    act: str = "linear",
    alpha: float = 0.2,
    gain: float | None = None,
    clamp: float | None = None,
) -> jnp.ndarray:
    """``clamp(act(x + b) * gain)``, with ``b`` broadcast along the last (channel) axis.

    Args:
      x: input, channels last (``[..., C]``).
      b: optional bias of shape ``[C]``.
      act: ``"linear"``, ``"relu"`` or ``"lrelu"``.
      alpha: negative slope of ``"lrelu"``.
      gain: output scale; ``None`` takes the activation's default (sqrt(2) for (l)relu, 1 for linear).
      clamp: clamp the output to ``[-clamp, clamp]``; ``None`` disables clamping.
    """
    if act not in ACTIVATION_GAINS:
        raise ValueError(f"bias_act: unknown activation {act!r}; expected one of {sorted(ACTIVATION_GAINS)}")
    if clamp is not None and clamp < 0:
        raise ValueError(f"bias_act: clamp must be >= 0 or None, got {clamp}")
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[-1]:
            raise ValueError(f"bias_act: bias shape {b.shape} does not match channel count {x.shape[-1]}")
        x = x + b.astype(x.dtype)
    if act == "relu":
        x = jnp.maximum(x, 0)
    elif act == "lrelu":
        x = jnp.where(x >= 0, x, x * alpha)
    gain = ACTIVATION_GAINS[act] if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = jnp.clip(x, -clamp, clamp)
    return x
