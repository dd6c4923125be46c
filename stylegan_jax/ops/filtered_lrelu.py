"""Alias-free filtered leaky ReLU: bias, upsample, leaky ReLU (gain, slope, clamp), downsample.

The nonlinearity is applied at a temporarily higher sampling rate so that the new high frequencies
it creates can be removed by the downsampling low-pass filter before they alias (paper, Sec. 3.2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from stylegan_jax.ops.bias_act import bias_act
from stylegan_jax.ops.upfirdn2d import upfirdn2d


def filtered_lrelu(
    x: jnp.ndarray,
    fu: np.ndarray | jnp.ndarray | None = None,
    fd: np.ndarray | jnp.ndarray | None = None,
    b: jnp.ndarray | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
    impl: str = "fast",
) -> jnp.ndarray:
    """``downsample(clamp(lrelu(upsample(x + b)) * gain))`` on NHWC images.

    Args:
      x: ``[N, H, W, C]``.
      fu: upsampling filter (1-D separable or 2-D), ``None`` = identity.
      fd: downsampling filter (1-D separable or 2-D), ``None`` = identity.
      b: bias ``[C]`` added before upsampling.
      up: upsampling factor (the upsampling pass uses gain ``up**2``).
      down: downsampling factor.
      padding: ``[x0, x1, y0, y1]`` applied in the upsampling pass (negative crops).
      gain, slope, clamp: leaky ReLU parameters; the clamp is applied after the gain.
      flip_filter: correlation instead of convolution, for both filters.
      impl: ``"fast"`` or ``"ref"``, passed on to :func:`upfirdn2d`.
    """
    if x.ndim != 4:
        raise ValueError(f"filtered_lrelu expects NHWC input of rank 4, got shape {x.shape}")
    x = bias_act(x, b)
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=up**2, flip_filter=flip_filter, impl=impl)
    x = bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    return upfirdn2d(x, fd, down=down, flip_filter=flip_filter, impl=impl)
