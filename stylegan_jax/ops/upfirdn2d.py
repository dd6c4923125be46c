"""upfirdn2d: upsample (zero insertion), pad/crop, FIR filter, downsample, on NHWC images.

The semantics follow the definition used throughout StyleGAN2/3:

1. upsample by inserting ``up - 1`` zeros after every input sample (so the length becomes ``n * up``),
2. pad with zeros (positive padding) or crop (negative padding), ``padding = [x0, x1, y0, y1]``,
3. convolve with the filter ``f`` (true convolution; ``flip_filter=True`` turns it into correlation),
   scaled by ``gain`` (spread evenly over both axes for separable filters),
4. keep every ``down``-th sample, starting at the first.

A 1-D filter is applied separably along W then H; a 2-D filter as one depthwise 2-D convolution.

Two implementations compute the same thing:
- ``impl="ref"``: the definition, step by step: zero insertion and padding, then depthwise ``lax.conv``;
- ``impl="fast"`` (default): for separable filters, each axis as one batched matrix product over blocks of
  the axis (:func:`fir_axis`): it never multiplies inserted zeros nor computes samples the downsampling drops,
  and it is a handful of primitives whatever the number of taps, forward and backward. 2-D filters fall back
  to the reference path.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax

IntPair = int | Sequence[int]


def parse_scaling(s: IntPair) -> tuple[int, int]:
    """``int`` or ``[sx, sy]`` -> ``(sx, sy)``, each >= 1."""
    sx, sy = (s, s) if isinstance(s, int | np.integer) else tuple(int(v) for v in s)
    if sx < 1 or sy < 1:
        raise ValueError(f"up/down factors must be >= 1, got {s}")
    return int(sx), int(sy)


def parse_padding(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """``int``, ``[px, py]`` or ``[x0, x1, y0, y1]`` -> ``(x0, x1, y0, y1)``."""
    if isinstance(padding, int | np.integer):
        return (int(padding),) * 4
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) == 4:
        return tuple(padding)  # type: ignore[return-value]
    raise ValueError(f"padding must be an int, [px, py] or [x0, x1, y0, y1]; got {padding}")


def filter_size(f: np.ndarray | jnp.ndarray | None) -> tuple[int, int]:
    """(width, height) of a 1-D, 2-D or absent filter."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    if f.ndim == 2:
        return f.shape[1], f.shape[0]
    raise ValueError(f"filter must be 1-D or 2-D, got shape {f.shape}")


def output_size(in_size: int, up: int, down: int, pad0: int, pad1: int, taps: int) -> int:
    """Length of one axis after upfirdn2d."""
    return (in_size * up + pad0 + pad1 - taps) // down + 1


def _prepare_filter(f, flip_filter: bool, gain: float, dtype) -> jnp.ndarray:
    """Scale by gain (per axis for separable) and turn convolution into correlation by flipping."""
    f = jnp.asarray(f, dtype=jnp.float32)
    f = f * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = jnp.flip(f, axis=tuple(range(f.ndim)))
    return f.astype(dtype)


def _depthwise(x: jnp.ndarray, kernel_hw: jnp.ndarray, stride: tuple[int, int]) -> jnp.ndarray:
    """Correlate every channel of an NHWC image with the same [kh, kw] kernel, 'valid' padding."""
    c = x.shape[-1]
    k = jnp.broadcast_to(kernel_hw[:, :, None, None], kernel_hw.shape + (1, c))
    return lax.conv_general_dilated(
        x, k, window_strides=stride, padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
        precision=lax.Precision.HIGHEST,
    )


def _zero_insert_pad(x: jnp.ndarray, axis: int, up: int, p0: int, p1: int) -> jnp.ndarray:
    """Along ``axis``: ``up - 1`` zeros after every sample, then zero padding (``p > 0``) or cropping (``p < 0``).

    The same values as ``lax.pad(x, 0, (p0, p1 + up - 1, up - 1))`` on that axis, written with stack/reshape,
    slices and non-negative pads: operations every exporter lowers (jax2onnx has no interior padding, and no
    negative padding on a dynamic batch).
    """
    if up > 1:
        x = jnp.stack([x] + [jnp.zeros_like(x)] * (up - 1), axis=axis + 1)
        x = x.reshape(x.shape[:axis] + (x.shape[axis] * up,) + x.shape[axis + 2 :])
    if p0 > 0 or p1 > 0:
        pads = [(0, 0)] * x.ndim
        pads[axis] = (max(p0, 0), max(p1, 0))
        x = jnp.pad(x, pads)
    # Crops count on the padded axis, as in lax.pad.
    idx = [slice(None)] * x.ndim
    idx[axis] = slice(max(-p0, 0), x.shape[axis] - max(-p1, 0))
    return x[tuple(idx)]


def _upfirdn2d_ref(x, f, upx, upy, downx, downy, x0, x1, y0, y1, flip_filter, gain):
    # 1+2. Zero insertion (the trailing up-1 zeros of the last sample included) and padding/cropping.
    x = _zero_insert_pad(_zero_insert_pad(x, 1, upy, y0, y1), 2, upx, x0, x1)
    # 3+4. Filter (valid correlation with the flipped filter) and keep every down-th sample.
    if f is None:
        f = jnp.ones([1, 1], jnp.float32)
    f = _prepare_filter(f, flip_filter, gain, x.dtype)
    if f.ndim == 2:
        return _depthwise(x, f, (downy, downx))
    x = _depthwise(x, f[None, :], (1, downx))
    return _depthwise(x, f[:, None], (downy, 1))


@dataclasses.dataclass(frozen=True)
class _BlockPlan:
    """How :func:`fir_axis` computes one axis: output blocks of ``bo`` samples, each a small matrix product of
    ``nblk`` consecutive input blocks of ``bi`` samples (``bo * down == bi * up``)."""

    out_len: int      # output samples
    bo: int           # outputs per block
    bi: int           # inputs per block (the input advances bi samples per output block)
    c0: int           # input index of the first sample of block 0's window
    nblk: int         # input blocks in one window
    nb: int           # output blocks
    matrix: np.ndarray  # [bo, nblk * bi]: output r of a block = sum_j matrix[r, j] * window[j]


@functools.lru_cache(maxsize=1024)
def _block_plan(n: int, g: tuple[float, ...], up: int, down: int, p0: int, p1: int) -> _BlockPlan:
    k = len(g)
    out_len = output_size(n, up, down, p0, p1, k)
    if out_len <= 0:
        raise ValueError(f"upfirdn2d: output would be empty (input {n}, taps {k}, up {up}, down {down})")
    step = up // math.gcd(up, down)  # bo * down must be a multiple of up
    c0 = (-p0) // up  # output m reads inputs i with 0 <= i * up + p0 - m * down < k

    def layout(bo: int) -> tuple[int, int, int]:
        bi = bo * down // up
        c_last = ((bo - 1) * down - p0 + k - 1) // up
        nblk = -(-(c_last - c0 + 1) // bi)
        return bi, nblk, nblk * bi

    # The smallest block of at least 8 outputs whose window spans two input blocks (else the smallest window):
    # few, cheap matrix products (the window length is the contraction length).
    candidates = [step * i for i in range(max(1, -(-8 // step)), max(2, 64 // step + 1))]
    two = [bo for bo in candidates if layout(bo)[1] <= 2]
    bo = two[0] if two else min(candidates, key=lambda c: (layout(c)[2], c))
    bi, nblk, width = layout(bo)
    nb = -(-out_len // bo)
    j = np.arange(width)[None, :]
    r = np.arange(bo)[:, None]
    t = (j + c0) * up + p0 - r * down
    taps = np.asarray(g, np.float64)
    matrix = np.where((t >= 0) & (t < k), taps[np.clip(t, 0, k - 1)], 0.0).astype(np.float32)
    return _BlockPlan(out_len, bo, bi, c0, nblk, nb, matrix)


def fir_axis(x: jnp.ndarray, g: np.ndarray, axis: int, up: int, down: int, p0: int, p1: int) -> jnp.ndarray:
    """One axis of upfirdn with the correlation kernel ``g`` (NumPy, already flipped and scaled), as one batched
    matrix product: zero insertion by ``up``, padding ``(p0, p1)`` (negative crops), correlation, keeping every
    ``down``-th sample.

    The axis is cut into blocks; each block of ``bo`` outputs is a fixed ``[bo, nblk * bi]`` matrix (the
    polyphase filter taps, inserted zeros and dropped samples never multiplied) times a window of ``nblk``
    consecutive input blocks. The windows are ``nblk`` shifted views of the blocked input, concatenated, so the
    whole pass is a handful of primitives whatever the number of taps, and its gradient (by autodiff: slices,
    pads and the transposed matrix product) is as compact.
    """
    plan = _block_plan(int(x.shape[axis]), tuple(float(v) for v in g), up, down, p0, p1)
    n = x.shape[axis]
    total = (plan.nb + plan.nblk - 1) * plan.bi
    lo, hi = -plan.c0, total - n + plan.c0
    if lo < 0 or hi < 0:  # crops as a slice, padding as a non-negative pad (what exporters lower)
        x = lax.slice_in_dim(x, max(-lo, 0), n - max(-hi, 0), axis=axis)
    if lo > 0 or hi > 0:
        pads = [(0, 0)] * x.ndim
        pads[axis] = (max(lo, 0), max(hi, 0))
        x = jnp.pad(x, pads)
    a = math.prod(x.shape[:axis])
    rest = math.prod(x.shape[axis + 1 :])
    xb = x.reshape(a, plan.nb + plan.nblk - 1, plan.bi, rest)
    win = xb[:, : plan.nb] if plan.nblk == 1 else jnp.concatenate(
        [lax.slice_in_dim(xb, j, j + plan.nb, axis=1) for j in range(plan.nblk)], axis=2)
    win = win.reshape(a * plan.nb, plan.nblk * plan.bi, rest)
    mat = jnp.broadcast_to(jnp.asarray(plan.matrix, x.dtype), (a * plan.nb,) + plan.matrix.shape)
    precision = lax.Precision.HIGHEST if x.dtype == jnp.float32 else None
    y = lax.dot_general(mat, win, (((2,), (1,)), ((0,), (0,))), precision=precision)  # [a * nb, bo, rest]
    y = y.reshape(x.shape[:axis] + (plan.nb * plan.bo,) + x.shape[axis + 1 :])
    return lax.slice_in_dim(y, 0, plan.out_len, axis=axis)


def fir_axis_transpose(g: np.ndarray, n: int, m: int, up: int, down: int, p0: int,
                       p1: int) -> tuple[np.ndarray, int, int, int, int]:
    """Arguments ``(g, up, down, p0, p1)`` of the :func:`fir_axis` that is the transpose of ``fir_axis(., g, up,
    down, p0, p1)`` from ``n`` to ``m`` samples: zero insertion by ``down``, the reversed taps, keeping every
    ``up``-th sample (a ``[m] -> [n]`` pass on the same fast path)."""
    k = len(g)
    q0 = k - 1 - p0
    q1 = (n - 1) * up + k - m * down - q0
    return np.ascontiguousarray(np.asarray(g)[::-1]), down, up, q0, q1


def separable_taps(f: np.ndarray, flip_filter: bool, gain: float) -> np.ndarray:
    """Per-axis correlation taps of a separable 1-D filter: scaled by ``sqrt(gain)``, reversed unless
    ``flip_filter`` (convolution)."""
    g = np.asarray(f, np.float64) * np.sqrt(gain)
    if not flip_filter:
        g = g[::-1]
    return g.astype(np.float32)


def upfirdn2d(
    x: jnp.ndarray,
    f: np.ndarray | jnp.ndarray | None,
    up: IntPair = 1,
    down: IntPair = 1,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
    impl: str = "fast",
) -> jnp.ndarray:
    """Upsample, pad, filter and downsample a batch of NHWC images.

    Args:
      x: ``[N, H, W, C]`` images.
      f: 1-D filter ``[K]`` (separable, applied along W then H), 2-D filter ``[Kh, Kw]``, or ``None``
        (identity).
      up: integer upsampling factor, ``int`` or ``[ux, uy]``.
      down: integer downsampling factor, ``int`` or ``[dx, dy]``.
      padding: ``int``, ``[px, py]`` or ``[x0, x1, y0, y1]``; negative values crop.
      flip_filter: ``False`` = convolution, ``True`` = correlation.
      gain: overall signal gain (``up**2`` keeps the magnitude after 2-D zero insertion).
      impl: ``"fast"`` or ``"ref"``.

    Returns:
      ``[N, H', W', C]`` with ``W' = (W * ux + x0 + x1 - Kw) // dx + 1`` and likewise for H'.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects NHWC input of rank 4, got shape {x.shape}")
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    x0, x1, y0, y1 = parse_padding(padding)
    fw, fh = filter_size(f)
    axes = (("W", x.shape[2], upx, downx, x0, x1, fw), ("H", x.shape[1], upy, downy, y0, y1, fh))
    for name, size, u, d, p0, p1, k in axes:
        if output_size(size, u, d, p0, p1, k) < 1:
            raise ValueError(f"upfirdn2d: empty output along {name} "
                             f"(size {size}, up {u}, down {d}, pad {p0},{p1}, taps {k})")
    if impl not in ("fast", "ref"):
        raise ValueError(f"upfirdn2d: impl must be 'fast' or 'ref', got {impl!r}")

    separable = f is not None and np.ndim(f) == 1
    if impl == "ref" or not separable or not isinstance(f, np.ndarray):
        return _upfirdn2d_ref(x, f, upx, upy, downx, downy, x0, x1, y0, y1, flip_filter, gain)

    g = separable_taps(f, flip_filter, gain)
    x = fir_axis(x, g, axis=2, up=upx, down=downx, p0=x0, p1=x1)
    return fir_axis(x, g, axis=1, up=upy, down=downy, p0=y0, p1=y1)


def upsample2d(x: jnp.ndarray, f: np.ndarray, up: int = 2) -> jnp.ndarray:
    """Zero-insertion upsampling by ``up`` followed by the low-pass ``f``, keeping the signal level.

    The padding centres the filter so that the output is exactly ``up`` times the input size.
    """
    fw, fh = filter_size(f)
    padding = ((fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2)
    return upfirdn2d(x, f, up=up, padding=padding, gain=up * up)
