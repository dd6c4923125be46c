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
- ``impl="fast"`` (default): for separable filters, each axis as a polyphase sum of strided shifted slices
  (:func:`fir_axis`): it never multiplies inserted zeros nor computes samples the downsampling drops, and its
  gradient is the transposed pass on the same path. 2-D filters fall back to the reference path.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
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


def _polyphase_terms(k: int, up: int, down: int, p0: int) -> tuple[int, int, tuple[tuple[tuple[int, int], ...], ...]]:
    """How :func:`fir_axis` reads its input: ``(phases, stride, terms)``.

    Output ``m = phases * q + s`` (``s`` the output phase) is ``sum g[t] * x[stride * q + offset]`` over the
    ``(t, offset)`` pairs of ``terms[s]``: only the taps that land on an input sample (never an inserted zero), and
    only the outputs the downsampling keeps. ``phases = up / gcd(up, down)``, ``stride = down / gcd(up, down)``.
    """
    gcd = math.gcd(up, down)
    phases, stride = up // gcd, down // gcd
    terms = tuple(tuple((t, (down * s + t - p0) // up) for t in range(k) if (down * s + t - p0) % up == 0)
                  for s in range(phases))
    return phases, stride, terms


def _fir_axis_impl(x: jnp.ndarray, g: tuple[float, ...], axis: int, up: int, down: int, p0: int,
                   p1: int) -> jnp.ndarray:
    n = x.shape[axis]
    out_len = output_size(n, up, down, p0, p1, len(g))
    if out_len <= 0:
        raise ValueError(f"upfirdn2d: output would be empty (input {n}, taps {len(g)}, up {up}, down {down})")
    phases, stride, terms = _polyphase_terms(len(g), up, down, p0)
    q_len = -(-out_len // phases)
    offsets = [o for ts in terms for _, o in ts] or [0]
    lo = max(0, -min(offsets))
    hi = max(0, max(offsets) + stride * (q_len - 1) + 1 - n)
    if lo or hi:
        pads = [(0, 0)] * x.ndim
        pads[axis] = (lo, hi)
        x = jnp.pad(x, pads)
    outs = []
    for ts in terms:
        acc = None
        for t, o in ts:
            if g[t] == 0:
                continue
            term = lax.slice_in_dim(x, o + lo, o + lo + stride * (q_len - 1) + 1, stride, axis=axis) * g[t]
            acc = term if acc is None else acc + term
        if acc is None:
            acc = jnp.zeros(x.shape[:axis] + (q_len,) + x.shape[axis + 1 :], x.dtype)
        outs.append(acc)
    if phases == 1:
        y = outs[0]
    else:  # interleave the output phases: [.., q, s, ..] -> [.., q * phases + s, ..]
        y = jnp.stack(outs, axis=axis + 1).reshape(x.shape[:axis] + (q_len * phases,) + x.shape[axis + 1 :])
    return lax.slice_in_dim(y, 0, out_len, axis=axis)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5, 6, 7))
def _fir_axis(x: jnp.ndarray, g: tuple[float, ...], axis: int, up: int, down: int, p0: int, p1: int,
              n: int) -> jnp.ndarray:
    return _fir_axis_impl(x, g, axis, up, down, p0, p1)


def _fir_axis_fwd(x, g, axis, up, down, p0, p1, n):
    return _fir_axis_impl(x, g, axis, up, down, p0, p1), None


def _fir_axis_bwd(g, axis, up, down, p0, p1, n, _, dy):
    # The transpose is the same kind of pass (reversed taps, up and down swapped), so the gradient stays on this
    # path instead of autodiff's pad + add per slice.
    gt, ut, dt, q0, q1 = fir_axis_transpose(np.asarray(g, np.float32), n, dy.shape[axis], up, down, p0, p1)
    return (_fir_axis(dy, tuple(float(v) for v in gt), axis, ut, dt, q0, q1, dy.shape[axis]),)


_fir_axis.defvjp(_fir_axis_fwd, _fir_axis_bwd)


def fir_axis(x: jnp.ndarray, g: np.ndarray, axis: int, up: int, down: int, p0: int, p1: int) -> jnp.ndarray:
    """One axis of upfirdn with the correlation kernel ``g`` (NumPy, already flipped and scaled): zero insertion by
    ``up``, padding ``(p0, p1)`` (negative crops), correlation, keeping every ``down``-th sample.

    Polyphase: each output phase is a sum of strided shifted slices of the (padded) input, one per tap that lands
    on an input sample, so inserted zeros are never multiplied and dropped samples never computed; the phases are
    interleaved by one stack + reshape. XLA:CPU fuses each phase into one streaming loop (measured faster than a
    block matrix product per axis: contractions of 12-32 samples are slow there). The gradient is the transposed
    pass on the same path (:func:`fir_axis_transpose`).
    """
    return _fir_axis(x, tuple(float(v) for v in g), axis, up, down, p0, p1, int(x.shape[axis]))


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
