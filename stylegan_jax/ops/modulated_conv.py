"""Modulated convolution (StyleGAN2/3): per-sample style scaling of a shared weight, with optional
demodulation, computed for the whole batch at once."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def conv2d(x: jnp.ndarray, w: jnp.ndarray, padding: int = 0, stride: int = 1) -> jnp.ndarray:
    """Plain NHWC x HWIO convolution (cross-correlation) with symmetric integer padding.

    float32 inputs run at full float32 precision (no TF32 on GPUs), as the official training does:
    parity to 1e-4 depends on it. Lower-precision inputs (bf16) use the backend default.
    """
    precision = lax.Precision.HIGHEST if x.dtype == jnp.float32 else None
    # XLA's CPU backend computes the weight gradient of a convolution whose padding exceeds
    # kernel // 2 (StyleGAN3's "full" padding = kernel - 1) on a slow generic path, ~15x slower
    # than with "same" padding. Pre-padding the excess keeps every convolution on the fast path.
    same = min(padding, (min(w.shape[0], w.shape[1]) - 1) // 2)
    if padding > same:
        extra = padding - same
        x = jnp.pad(x, [(0, 0), (extra, extra), (extra, extra), (0, 0)])
    return lax.conv_general_dilated(
        x, w.astype(x.dtype), window_strides=(stride, stride), padding=[(same, same)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision,
    )


def modulated_conv2d(
    x: jnp.ndarray,
    weight: jnp.ndarray,
    styles: jnp.ndarray,
    demodulate: bool = True,
    padding: int = 0,
    input_gain: jnp.ndarray | float | None = None,
) -> jnp.ndarray:
    """Convolve each sample with the shared weight modulated by that sample's styles.

    The per-sample kernel is ``w'[n,kh,kw,i,o] = w[kh,kw,i,o] * s[n,i] * g[n,i] * d[n,o]`` with
    ``d`` the demodulation coefficients. Instead of materialising a kernel per sample (a grouped
    convolution), the same result is computed as ``conv(x * s * g, w) * d``: the styles scale the
    input channels and the demodulation scales the output channels. One batched convolution with
    a shared kernel is what CPU and GPU convolution libraries run fastest.

    Args:
      x: ``[N, H, W, I]`` input.
      weight: ``[kh, kw, I, O]`` shared kernel.
      styles: ``[N, I]`` per-sample input channel scales.
      demodulate: normalise each output channel of each sample's kernel to unit L2 norm. Before
        that, the weight (per output channel) and the styles (globally) are pre-normalised by their
        RMS, which keeps the intermediate products in a safe range for low precision.
      padding: symmetric zero padding.
      input_gain: scale for the input channels applied after demodulation (scalar, ``[I]`` or
        ``[N, I]``), e.g. StyleGAN3's ``1 / sqrt(magnitude_ema)``.

    Returns:
      ``[N, H + 2 * padding - kh + 1, W + 2 * padding - kw + 1, O]``.
    """
    n, _, _, in_ch = x.shape
    kh, kw, w_in, out_ch = weight.shape
    if w_in != in_ch:
        raise ValueError(f"modulated_conv2d: input has {in_ch} channels, weight expects {w_in}")
    if styles.shape != (n, in_ch):
        raise ValueError(f"modulated_conv2d: styles shape {styles.shape} != (batch, in_channels) = {(n, in_ch)}")
    weight = weight.astype(jnp.float32)
    styles = styles.astype(jnp.float32)

    dcoefs = None
    if demodulate:
        weight = weight * lax.rsqrt(jnp.mean(jnp.square(weight), axis=(0, 1, 2), keepdims=True))
        styles = styles * lax.rsqrt(jnp.mean(jnp.square(styles)))
        # sum_{kh,kw,i} (w * s)^2 = sum_i s[n,i]^2 * sum_{kh,kw} w[.,.,i,o]^2
        wsq = jnp.sum(jnp.square(weight), axis=(0, 1))  # [I, O]
        dcoefs = lax.rsqrt(jnp.dot(jnp.square(styles), wsq, precision=lax.Precision.HIGHEST) + 1e-8)  # [N, O]

    scale = styles
    if input_gain is not None:
        scale = scale * jnp.broadcast_to(jnp.asarray(input_gain, jnp.float32), (n, in_ch))
    y = conv2d(x * scale[:, None, None, :].astype(x.dtype), weight, padding=padding)
    if dcoefs is not None:
        y = y * dcoefs[:, None, None, :].astype(y.dtype)
    return y
