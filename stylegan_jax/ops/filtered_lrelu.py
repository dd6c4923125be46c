"""Alias-free filtered leaky ReLU: bias, upsample, leaky ReLU (gain, slope, clamp), downsample.

The nonlinearity is applied at a temporarily higher sampling rate so that the new high frequencies
it creates can be removed by the downsampling low-pass filter before they alias (paper, Sec. 3.2).

Two implementations compute the same thing:
- ``impl="ref"``: :func:`bias_act` and the reference :func:`upfirdn2d`, differentiated by autodiff;
- ``impl="fast"`` (default, separable 1-D or absent filters): the four resampling passes on the fast
  :func:`~stylegan_jax.ops.upfirdn2d.fir_axis` path, with a custom VJP. Like the official CUDA kernel, which keeps
  sign bits, the forward pass keeps one int8 code per sample of the upsampled pre-activation (passed / negative
  slope / clamped) and the backward pass is the transposed resampling (``fir_axis`` with the reversed taps, up
  and down swapped) around that elementwise mask. 2-D filters (StyleGAN3-R's radial downsampling filter) take the
  composition of the ops below, differentiated by autodiff.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stylegan_jax.ops.bias_act import bias_act
from stylegan_jax.ops.upfirdn2d import (
    filter_size,
    fir_axis,
    fir_axis_transpose,
    output_size,
    parse_padding,
    separable_taps,
    upfirdn2d,
)


@dataclasses.dataclass(frozen=True)
class _Pass:
    """One 1-D resampling pass of :func:`fir_axis` (hashable: it is a static argument of the custom VJP)."""

    axis: int
    taps: tuple[float, ...]
    up: int
    down: int
    p0: int
    p1: int
    n: int  # input length along ``axis``

    @property
    def m(self) -> int:
        return output_size(self.n, self.up, self.down, self.p0, self.p1, len(self.taps))

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return fir_axis(x, np.asarray(self.taps, np.float32), self.axis, self.up, self.down, self.p0, self.p1)

    def transpose(self, dy: jnp.ndarray) -> jnp.ndarray:
        g, up, down, q0, q1 = fir_axis_transpose(np.asarray(self.taps, np.float32), self.n, self.m, self.up,
                                                 self.down, self.p0, self.p1)
        return fir_axis(dy, g, self.axis, up, down, q0, q1)


@dataclasses.dataclass(frozen=True)
class _Spec:
    up_passes: tuple[_Pass, ...]    # applied in order to x + b
    down_passes: tuple[_Pass, ...]  # applied in order to the activation
    gain: float
    slope: float
    clamp: float | None


def _activate(spec: _Spec, u: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``clamp(lrelu(u) * gain)`` and the int8 code of each sample: 1 passed, 2 negative slope, 0 clamped."""
    pos = u >= 0
    v = jnp.where(pos, u, u * spec.slope)
    if spec.gain != 1:
        v = v * spec.gain
    code = jnp.where(pos, jnp.int8(1), jnp.int8(2))
    if spec.clamp is not None:
        code = jnp.where(jnp.abs(v) > spec.clamp, jnp.int8(0), code)
        v = jnp.clip(v, -spec.clamp, spec.clamp)
    return v, code


def _forward(spec: _Spec, x: jnp.ndarray, b: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    u = x + b.astype(x.dtype)
    for p in spec.up_passes:
        u = p(u)
    v, code = _activate(spec, u)
    for p in spec.down_passes:
        v = p(v)
    return v, code


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _filtered_lrelu_fast(spec: _Spec, x: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    return _forward(spec, x, b)[0]


def _filtered_lrelu_fwd(spec: _Spec, x: jnp.ndarray, b: jnp.ndarray):
    y, code = _forward(spec, x, b)
    return y, (code, jnp.zeros((0,), b.dtype))


def _filtered_lrelu_bwd(spec: _Spec, res, dy: jnp.ndarray):
    code, b_proto = res
    d = dy
    for p in reversed(spec.down_passes):
        d = p.transpose(d)
    neg = spec.slope * spec.gain
    d = d * jnp.where(code == 1, jnp.asarray(spec.gain, d.dtype),
                      jnp.where(code == 2, jnp.asarray(neg, d.dtype), jnp.zeros((), d.dtype)))
    for p in reversed(spec.up_passes):
        d = p.transpose(d)
    return d, jnp.sum(d, axis=tuple(range(d.ndim - 1))).astype(b_proto.dtype)


_filtered_lrelu_fast.defvjp(_filtered_lrelu_fwd, _filtered_lrelu_bwd)


def _passes(f: np.ndarray | None, shape: tuple[int, ...], up: int, down: int, padding: tuple[int, int, int, int],
            gain: float, flip_filter: bool) -> tuple[tuple[_Pass, ...], tuple[int, ...]]:
    """The W then H passes of ``upfirdn2d(x, f, up, down, padding, gain)`` on an NHWC ``shape``, and the output
    shape. An absent filter with no resampling and no padding is no pass at all."""
    x0, x1, y0, y1 = padding
    if f is None:
        if up == 1 and down == 1 and padding == (0, 0, 0, 0):
            return (), shape
        f = np.ones([1], np.float32)
    g = tuple(float(v) for v in separable_taps(f, flip_filter, gain))
    pw = _Pass(2, g, up, down, x0, x1, shape[2])
    ph = _Pass(1, g, up, down, y0, y1, shape[1])
    return (pw, ph), (shape[0], ph.m, pw.m, shape[3])


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
    if impl not in ("fast", "ref"):
        raise ValueError(f"filtered_lrelu: impl must be 'fast' or 'ref', got {impl!r}")
    if clamp is not None and clamp < 0:
        raise ValueError(f"filtered_lrelu: clamp must be >= 0 or None, got {clamp}")
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[-1]):
        raise ValueError(f"filtered_lrelu: bias shape {b.shape} does not match channel count {x.shape[-1]}")

    def separable(f) -> bool:
        return f is None or (isinstance(f, np.ndarray) and f.ndim == 1)

    if impl == "fast" and separable(fu) and separable(fd):
        pad = parse_padding(padding)
        for name, size, p0, p1, k in (("W", x.shape[2], pad[0], pad[1], filter_size(fu)[0]),
                                      ("H", x.shape[1], pad[2], pad[3], filter_size(fu)[1])):
            mid = output_size(size, up, 1, p0, p1, k)
            if mid < 1 or output_size(mid, 1, down, 0, 0, filter_size(fd)[0]) < 1:
                raise ValueError(f"filtered_lrelu: empty output along {name} (size {size}, up {up}, down {down}, "
                                 f"pad {p0},{p1})")
        up_passes, mid_shape = _passes(fu, tuple(x.shape), up, 1, pad, up**2, flip_filter)
        down_passes, _ = _passes(fd, mid_shape, 1, down, (0, 0, 0, 0), 1.0, flip_filter)
        spec = _Spec(up_passes, down_passes, float(gain), float(slope), None if clamp is None else float(clamp))
        bias = jnp.zeros((x.shape[-1],), x.dtype) if b is None else b
        return _filtered_lrelu_fast(spec, x, bias)

    x = bias_act(x, b)
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=up**2, flip_filter=flip_filter, impl=impl)
    x = bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    return upfirdn2d(x, fd, down=down, flip_filter=flip_filter, impl=impl)
