"""Modulated convolution (StyleGAN2/3): per-sample style scaling of a shared weight, with optional
demodulation and upsampling, computed for the whole batch at once. The one implementation both generators use."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from stylegan_jax.ops.upfirdn2d import filter_size, upfirdn2d


def _conv2d_lax(x: jnp.ndarray, w: jnp.ndarray, padding: int, stride: int) -> jnp.ndarray:
    precision = lax.Precision.HIGHEST if x.dtype == jnp.float32 else None
    # XLA's CPU backend runs convolutions with "same" padding (kernel // 2 per side) several times faster than
    # any other padding: measured 2.5x for "valid" 3x3 at 64px, and ~15x for the weight gradient of StyleGAN3's
    # "full" padding (kernel - 1). So stride-1 convolutions always run "same": the excess is pre-padded, the
    # shortfall cropped from the output (a few per cent of extra border pixels).
    same = min(padding, (min(w.shape[0], w.shape[1]) - 1) // 2)
    crop = 0
    if stride == 1 and w.shape[0] == w.shape[1] and w.shape[0] % 2 == 1:
        same = w.shape[0] // 2
        crop = max(same - padding, 0)
    if padding > same:
        extra = padding - same
        x = jnp.pad(x, [(0, 0), (extra, extra), (extra, extra), (0, 0)])
    y = lax.conv_general_dilated(
        x, w.astype(x.dtype), window_strides=(stride, stride), padding=[(same, same)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision,
    )
    if crop:
        y = y[:, crop:y.shape[1] - crop, crop:y.shape[2] - crop, :]
    return y


def conv2d_weight_grad(x: jnp.ndarray, dy: jnp.ndarray, kh: int, kw: int, padding: int,
                       stride: int = 1) -> jnp.ndarray:
    """Gradient of ``conv2d(x, w, padding, stride)`` with respect to its ``[kh, kw, I, O]`` kernel, as one matrix
    product: the ``kh * kw`` shifted (strided) views of the padded input side by side (``[N*H*W, kh*kw*I]``)
    against the output gradient (``[N*H*W, O]``). XLA:CPU's own weight-gradient convolution (the output gradient
    used as an ``H x W`` kernel) runs at a fraction of the matrix-multiply rate: measured 2.2x slower than this
    for a 3x3 layer at 64px, and far slower again when R1 differentiates a strided convolution twice.
    """
    n, ho, wo, o = dy.shape
    i = x.shape[-1]
    if padding:
        x = jnp.pad(x, [(0, 0), (padding, padding), (padding, padding), (0, 0)])
    views = [lax.slice(x, (0, a, b, 0), (n, a + stride * (ho - 1) + 1, b + stride * (wo - 1) + 1, i),
                       (1, stride, stride, 1)) for a in range(kh) for b in range(kw)]
    patches = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
    precision = lax.Precision.HIGHEST if x.dtype == jnp.float32 else None
    dw = lax.dot_general(patches.reshape(n * ho * wo, kh * kw * i), dy.reshape(n * ho * wo, o),
                         (((0,), (0,)), ((), ())), precision=precision)
    return dw.reshape(kh, kw, i, o)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv2d_fast(x: jnp.ndarray, w: jnp.ndarray, padding: int, stride: int) -> jnp.ndarray:
    return _conv2d_lax(x, w, padding, stride)


def _conv2d_fast_fwd(x, w, padding, stride):
    return _conv2d_lax(x, w, padding, stride), (x, w)


def _conv2d_fast_bwd(padding, stride, res, dy):
    x, w = res
    k = w.shape[0]
    # Input gradient: the full correlation of dy (zero-inserted by the stride) with the kernel rotated by 180
    # degrees and its channels swapped: a stride-1 convolution on this same path, so a second derivative (R1's
    # gradient of a gradient) also stays here.
    w_rot = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2).astype(dy.dtype)
    if stride == 1:
        dx = _conv2d_fast(dy, w_rot, k - 1 - padding, 1)
    else:
        z = lax.pad(dy, jnp.zeros((), dy.dtype), [(0, 0, 0), (0, 0, stride - 1), (0, 0, stride - 1), (0, 0, 0)])
        dxp = _conv2d_fast(z, w_rot, k - 1, 1)  # gradient of the padded input, up to the last row/column read
        hp, wp = x.shape[1] + 2 * padding, x.shape[2] + 2 * padding
        dxp = jnp.pad(dxp, [(0, 0), (0, hp - dxp.shape[1]), (0, wp - dxp.shape[2]), (0, 0)])
        dx = dxp[:, padding:hp - padding, padding:wp - padding, :]
    dw = conv2d_weight_grad(x.astype(dy.dtype), dy, k, k, padding, stride)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_conv2d_fast.defvjp(_conv2d_fast_fwd, _conv2d_fast_bwd)


def conv2d(x: jnp.ndarray, w: jnp.ndarray, padding: int = 0, stride: int = 1) -> jnp.ndarray:
    """Plain NHWC x HWIO convolution (cross-correlation) with symmetric integer padding.

    float32 inputs run at full float32 precision (no TF32 on GPUs), as the official training does:
    parity to 1e-4 depends on it. Lower-precision inputs (bf16) use the backend default. Convolutions with a
    square kernel and ``padding < kernel`` have a custom gradient (:func:`conv2d_weight_grad` for the kernel, a
    stride-1 convolution for the input); others use XLA's.
    """
    w = w.astype(x.dtype)
    if w.shape[0] == w.shape[1] and 0 <= padding < w.shape[0]:
        return _conv2d_fast(x, w, int(padding), int(stride))
    return _conv2d_lax(x, w, padding, stride)


def conv2d_up(x: jnp.ndarray, w: jnp.ndarray, f: np.ndarray, up: int = 2, padding: int = 0) -> jnp.ndarray:
    """Convolution with ``up``-times upsampling, as the official ``conv2d_resample(up=up)`` computes it.

    A stride-``up`` transposed convolution (the kernel scattered onto every input pixel, which is the
    zero-inserted image *convolved* with the kernel) followed by the low-pass filter ``f``.
    ``padding`` is the symmetric padding of the equivalent plain convolution of the upsampled image
    (``kernel // 2`` keeps the output at exactly ``up`` times the input size).

    Args:
      x: ``[N, H, W, I]``.
      w: ``[kh, kw, I, O]`` kernel, in the same orientation as for a stride-1 ``conv2d``.
      f: 1-D (separable) or 2-D low-pass filter with unit DC gain (NumPy constant).
      up: upsampling factor.
      padding: padding with respect to the upsampled image.

    Returns:
      ``[N, H * up + 2 * padding - kh + 1, W * up + 2 * padding - kw + 1, O]``.
    """
    kh, kw = w.shape[:2]
    fw, fh = filter_size(f)
    # Total padding around the upsampled image, split so the filter sits centred (official arithmetic),
    # then expressed relative to the transposed convolution's full output.
    px0 = padding + (fw + up - 1) // 2 - (kw - 1)
    px1 = padding + (fw - up) // 2 - (kw - up)
    py0 = padding + (fh + up - 1) // 2 - (kh - 1)
    py1 = padding + (fh - up) // 2 - (kh - up)
    # Whatever both sides would crop is cropped by the transposed convolution itself.
    pxt = max(min(-px0, -px1), 0)
    pyt = max(min(-py0, -py1), 0)
    # Transposed conv = zero insertion (lhs dilation) + full padding + correlation with the flipped kernel.
    precision = lax.Precision.HIGHEST if x.dtype == jnp.float32 else None
    y = lax.conv_general_dilated(
        x, jnp.flip(w, axis=(0, 1)).astype(x.dtype), window_strides=(1, 1),
        padding=[(kh - 1 - pyt, kh - 1 - pyt), (kw - 1 - pxt, kw - 1 - pxt)], lhs_dilation=(up, up),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision,
    )
    return upfirdn2d(y, f, padding=(px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt), gain=up * up)


def modulated_conv2d(
    x: jnp.ndarray,
    weight: jnp.ndarray,
    styles: jnp.ndarray,
    demodulate: bool = True,
    padding: int = 0,
    input_gain: jnp.ndarray | float | None = None,
    up: int = 1,
    resample_filter: np.ndarray | None = None,
    prenormalize: bool = True,
) -> jnp.ndarray:
    """Convolve each sample with the shared weight modulated by that sample's styles.

    The per-sample kernel is ``w'[n,kh,kw,i,o] = w[kh,kw,i,o] * s[n,i] * g[n,i] * d[n,o]`` with
    ``d[n,o] = 1 / sqrt(sum_{kh,kw,i} (w * s)^2 + 1e-8)`` the demodulation coefficients. Instead of
    materialising a kernel per sample (a grouped convolution), the same result is computed as
    ``conv(x * s * g, w) * d``: the styles scale the input channels and the demodulation scales the output
    channels. One batched convolution with a shared kernel is what CPU and GPU convolution libraries run fastest;
    the official fused (grouped) and unfused paths are this same math.

    Args:
      x: ``[N, H, W, I]`` input.
      weight: ``[kh, kw, I, O]`` shared kernel.
      styles: ``[N, I]`` per-sample input channel scales.
      demodulate: normalise each output channel of each sample's kernel to unit L2 norm.
      padding: symmetric zero padding (of the upsampled image when ``up > 1``).
      input_gain: scale for the input channels applied after demodulation (scalar, ``[I]`` or
        ``[N, I]``), e.g. StyleGAN3's ``1 / sqrt(magnitude_ema)``.
      up: 1, or the upsampling factor (StyleGAN2: a transposed convolution followed by ``resample_filter``).
      resample_filter: low-pass filter for upsampling (required when ``up > 1``).
      prenormalize: with demodulation, first divide the weight (per output channel) and the styles (globally)
        by their RMS, as the official StyleGAN3 code does (it keeps the products in range for low precision;
        demodulation makes the result the same up to rounding). The official StyleGAN2 code does not in float32.

    Returns:
      ``[N, H * up + 2 * padding - kh + 1, W * up + 2 * padding - kw + 1, O]``.
    """
    n, _, _, in_ch = x.shape
    kh, kw, w_in, out_ch = weight.shape
    if w_in != in_ch:
        raise ValueError(f"modulated_conv2d: input {tuple(x.shape)} has {in_ch} channels, weight "
                         f"{tuple(weight.shape)} expects {w_in}")
    if styles.shape != (n, in_ch):
        raise ValueError(f"modulated_conv2d: styles shape {tuple(styles.shape)} != (batch, in_channels) = "
                         f"{(n, in_ch)}")
    if up > 1 and resample_filter is None:
        raise ValueError("modulated_conv2d: up > 1 needs a resample_filter")
    weight = weight.astype(jnp.float32)
    styles = styles.astype(jnp.float32)

    dcoefs = None
    if demodulate:
        if prenormalize:
            weight = weight * lax.rsqrt(jnp.mean(jnp.square(weight), axis=(0, 1, 2), keepdims=True))
            styles = styles * lax.rsqrt(jnp.mean(jnp.square(styles)))
        # sum_{kh,kw,i} (w * s)^2 = sum_i s[n,i]^2 * sum_{kh,kw} w[.,.,i,o]^2
        wsq = jnp.sum(jnp.square(weight), axis=(0, 1))  # [I, O]
        dcoefs = lax.rsqrt(jnp.dot(jnp.square(styles), wsq, precision=lax.Precision.HIGHEST) + 1e-8)  # [N, O]

    scale = styles
    if input_gain is not None:
        scale = scale * jnp.broadcast_to(jnp.asarray(input_gain, jnp.float32), (n, in_ch))
    x = x * scale[:, None, None, :].astype(x.dtype)
    y = conv2d(x, weight, padding=padding) if up == 1 else conv2d_up(x, weight, resample_filter, up=up,
                                                                      padding=padding)
    if dcoefs is not None:
        y = y * dcoefs[:, None, None, :].astype(y.dtype)
    return y
