"""Image operators of the StyleGAN3 equivariance metrics (paper, Appendix E).

All functions take and return **NCHW** images (the layout the generator returns and the one the
official metric code uses), are pure and jit-compatible: translations and angles may be traced
scalars, so one compiled function serves every random draw, and they can be ``jax.vmap``-ed over
per-sample parameters. Each operator returns ``(image, mask)``; ``mask`` has the image's shape and
is 1 where the transformed image is fully determined by the input (0 near borders), so that
comparisons ignore pixels that depend on content outside the frame.

Translations ``tx, ty`` are fractions of the image width/height (``0.1`` = a tenth of the image).
Matrices are 3x3 affine maps in normalised image coordinates ([-1, 1] across the image), the same
convention as the generator's user ``transform``.

- :func:`apply_integer_translation`: shift by whole pixels (EQ-T).
- :func:`apply_fractional_translation`: shift by sub-pixel amounts with a Lanczos-windowed sinc
  (EQ-T_frac).
- :func:`apply_fractional_rotation`: band-limited rotation, via 4x upsampling with an oriented
  low-pass filter followed by bilinear resampling (EQ-R reference).
- :func:`apply_fractional_pseudo_rotation`: filter an image with the same oriented low-pass as if it
  had been rotated, without rotating it (applied to the generator's rotated output in EQ-R, so that
  both sides of the comparison carry the same band limit).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from stylegan_jax.ops.upfirdn2d import upfirdn2d

Scalar = float | jnp.ndarray

__all__ = [
    "apply_affine_transformation",
    "apply_fractional_pseudo_rotation",
    "apply_fractional_rotation",
    "apply_fractional_translation",
    "apply_integer_translation",
    "construct_affine_bandlimit_filter",
    "lanczos_window",
    "rotation_matrix",
    "sinc",
    "translation_matrix",
]

_HIGHEST = lax.Precision.HIGHEST


# ----------------------------------------------------------------------------------------------
# Windows and matrices.


def sinc(x: jnp.ndarray) -> jnp.ndarray:
    """Normalised sinc, ``sin(pi x) / (pi x)``, exactly 1 at 0."""
    x = jnp.asarray(x, jnp.float32)
    y = jnp.abs(x * np.float32(np.pi))
    # The clamped denominator keeps the untaken branch of `where` finite (and its gradient NaN-free).
    return jnp.where(y < 1e-30, jnp.ones_like(x), jnp.sin(y) / jnp.maximum(y, 1e-30))


def lanczos_window(x: jnp.ndarray, a: float) -> jnp.ndarray:
    """Lanczos window of half-width ``a``: ``sinc(x / a)`` inside ``|x| < a``, 0 outside."""
    x = jnp.abs(jnp.asarray(x, jnp.float32)) / a
    return jnp.where(x < 1, sinc(x), jnp.zeros_like(x))


def rotation_matrix(angle: Scalar) -> jnp.ndarray:
    """3x3 matrix ``[[cos, sin, 0], [-sin, cos, 0], [0, 0, 1]]`` (float32)."""
    angle = jnp.asarray(angle, jnp.float32)
    c, s = jnp.cos(angle), jnp.sin(angle)
    zero, one = jnp.zeros_like(c), jnp.ones_like(c)
    return jnp.stack([jnp.stack([c, s, zero]), jnp.stack([-s, c, zero]), jnp.stack([zero, zero, one])])


def translation_matrix(tx: Scalar, ty: Scalar) -> jnp.ndarray:
    """3x3 matrix translating by ``(tx, ty)`` (float32)."""
    tx, ty = jnp.asarray(tx, jnp.float32), jnp.asarray(ty, jnp.float32)
    zero, one = jnp.zeros_like(tx), jnp.ones_like(tx)
    return jnp.stack([jnp.stack([one, zero, tx]), jnp.stack([zero, one, ty]), jnp.stack([zero, zero, one])])


# ----------------------------------------------------------------------------------------------
# Helpers.


def _shift_axis(x: jnp.ndarray, offset: jnp.ndarray, out_len: int, axis: int) -> jnp.ndarray:
    """``out[i] = x[i + offset]`` along ``axis`` for ``i < out_len``, zero where that is outside ``x``.

    ``offset`` may be traced; a clipped gather plus a validity mask keeps the shapes static.
    """
    n = x.shape[axis]
    src = jnp.arange(out_len, dtype=jnp.int32) + offset.astype(jnp.int32)
    valid = (src >= 0) & (src < n)
    taken = jnp.take(x, jnp.clip(src, 0, n - 1), axis=axis)
    shape = [1] * x.ndim
    shape[axis] = out_len
    return jnp.where(valid.reshape(shape), taken, jnp.zeros((), x.dtype))


def _range_mask(n: int, lo: jnp.ndarray, hi: jnp.ndarray) -> jnp.ndarray:
    """1.0 for indices ``lo <= i < hi`` of ``range(n)``, else 0.0."""
    i = jnp.arange(n, dtype=jnp.int32)
    return ((i >= lo) & (i < hi)).astype(jnp.float32)


def _nchw(fn, x: jnp.ndarray, *args, **kwargs) -> jnp.ndarray:
    """Run an NHWC op (upfirdn2d) on an NCHW image."""
    return jnp.transpose(fn(jnp.transpose(x, (0, 2, 3, 1)), *args, **kwargs), (0, 3, 1, 2))


def _upsample2d_polyphase(x: jnp.ndarray, f: jnp.ndarray, up: int, pad0: int, pad1: int) -> jnp.ndarray:
    """``upfirdn2d(x, f, up=up, padding=[pad0, pad1, pad0, pad1], gain=up**2)`` on NCHW images, for a
    (possibly traced) square 2-D filter, computed polyphase.

    Zero insertion followed by a K x K convolution wastes ``1 - 1/up**2`` of its work on the inserted
    zeros (15/16 at 4x, with K = 47 here). Instead every output phase ``(ry, rx)`` is a correlation of
    the original image with the sub-filter of taps that land on real samples; the ``up**2`` phases
    run as the output channels of one convolution and are interleaved afterwards.
    """
    n, c, h, w = x.shape
    k = f.shape[0]
    assert f.shape == (k, k) and h == w, (f.shape, x.shape)
    # Correlation kernel (upfirdn2d convolves by default: flip), with the zero-insertion gain.
    g = jnp.flip(f.astype(jnp.float32), (0, 1)) * (up * up)
    out_len = h * up + pad0 + pad1 - k + 1
    q = -(-out_len // up)
    # Output sample up*j + r reads input sample j + s through tap up*s + pad0 - r (when 0 <= tap < k).
    s_lo = -(pad0 // up)
    s_hi = (k - 1 + up - 1 - pad0) // up
    taps = up * (np.arange(s_lo, s_hi + 1)[None, :]) + pad0 - np.arange(up)[:, None]  # [phase, s]
    valid = (taps >= 0) & (taps < k)
    idx = np.clip(taps, 0, k - 1)
    # sub[ry, rx, sy, sx] = g[taps[ry, sy], taps[rx, sx]] (0 for taps outside the filter).
    sub = g[idx[:, None, :, None], idx[None, :, None, :]]
    sub = sub * jnp.asarray(valid[:, None, :, None] & valid[None, :, None, :], jnp.float32)
    kernel = jnp.transpose(sub.reshape(up * up, *sub.shape[2:]), (1, 2, 0))[:, :, None, :]  # HWIO
    # Input samples j + s for j < q and s in [s_lo, s_hi], zero outside the image.
    span = q + s_hi - s_lo
    xs = x.reshape(n * c, h, w)
    xs = _shift_axis(_shift_axis(xs, jnp.asarray(s_lo), span, 1), jnp.asarray(s_lo), span, 2)
    y = lax.conv_general_dilated(xs[..., None], kernel, (1, 1), "VALID",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HIGHEST)
    y = y.reshape(n * c, q, q, up, up).transpose(0, 1, 3, 2, 4).reshape(n, c, q * up, q * up)
    return y[:, :, :out_len, :out_len]


def _grid_sample(img: jnp.ndarray, gx: jnp.ndarray, gy: jnp.ndarray) -> jnp.ndarray:
    """Bilinear sampling of ``img`` [N, C, H, W] at normalised positions ``gx, gy`` [Ho, Wo] (-1 and 1
    are the outer edges of the border pixels), zero outside the image."""
    _, _, h, w = img.shape
    ix = ((gx + 1) * w - 1) / 2
    iy = ((gy + 1) * h - 1) / 2
    x0 = jnp.floor(ix)
    y0 = jnp.floor(iy)
    x1, y1 = x0 + 1, y0 + 1
    out = jnp.zeros(img.shape[:2] + gx.shape, img.dtype)
    for xc, yc, wt in ((x0, y0, (x1 - ix) * (y1 - iy)), (x1, y0, (ix - x0) * (y1 - iy)),
                       (x0, y1, (x1 - ix) * (iy - y0)), (x1, y1, (ix - x0) * (iy - y0))):
        inside = (xc >= 0) & (xc < w) & (yc >= 0) & (yc < h)
        xi = jnp.clip(xc, 0, w - 1).astype(jnp.int32)
        yi = jnp.clip(yc, 0, h - 1).astype(jnp.int32)
        out = out + img[:, :, yi, xi] * jnp.where(inside, wt, 0)
    return out


# ----------------------------------------------------------------------------------------------
# Translations.


def apply_integer_translation(x: jnp.ndarray, tx: Scalar, ty: Scalar) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Translate NCHW images by ``(tx, ty)`` (fractions of W and H), rounded to whole pixels.

    Content moves right/down for positive values; pixels uncovered by the shift are 0 in both the
    image and the mask.
    """
    _, _, h, w = x.shape
    ix = jnp.round(jnp.asarray(tx, jnp.float32) * w).astype(jnp.int32)
    iy = jnp.round(jnp.asarray(ty, jnp.float32) * h).astype(jnp.int32)
    z = _shift_axis(_shift_axis(x, -iy, h, 2), -ix, w, 3)
    m = _range_mask(h, iy, h + iy)[:, None] * _range_mask(w, ix, w + ix)[None, :]
    return z, jnp.broadcast_to(m.astype(x.dtype), x.shape)


def apply_fractional_translation(x: jnp.ndarray, tx: Scalar, ty: Scalar, a: int = 3
                                 ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Translate NCHW images by ``(tx, ty)`` (fractions of W and H), sub-pixel, with a separable
    ``2a``-tap Lanczos-windowed sinc interpolator (normalised to unit DC gain).

    The mask excludes the pixels whose interpolation footprint reaches outside the input.
    """
    _, _, h, w = x.shape
    b = a - 1
    tx = jnp.asarray(tx, jnp.float32) * w
    ty = jnp.asarray(ty, jnp.float32) * h
    ix, iy = jnp.floor(tx), jnp.floor(ty)
    fx, fy = tx - ix, ty - iy
    ix, iy = ix.astype(jnp.int32), iy.astype(jnp.int32)

    taps = jnp.arange(2 * a, dtype=jnp.float32) - b

    def interpolator(frac):
        f = sinc(taps - frac) * sinc((taps - frac) / a)
        return f / jnp.sum(f)

    # Filter along W then H, padded so that each output covers every shift in [-a, b] + the
    # integer part; the padding equals the official filter2d's (size // 2 + b, (size - 1) // 2 + a).
    pad_lo, pad_hi = a + b, (2 * a - 1) // 2 + a
    y = _nchw(upfirdn2d, x, interpolator(fx)[None, :], padding=[pad_lo, pad_hi, 0, 0], impl="ref")
    y = _nchw(upfirdn2d, y, interpolator(fy)[:, None], padding=[0, 0, pad_lo, pad_hi], impl="ref")
    # Output pixel i is filtered sample i + b - i_shift; samples outside the filtered range are 0.
    z = _shift_axis(_shift_axis(y, b - iy, h, 2), b - ix, w, 3)
    m = _range_mask(h, iy + a, h + iy - b)[:, None] * _range_mask(w, ix + a, w + ix - b)[None, :]
    return z, jnp.broadcast_to(m.astype(x.dtype), x.shape)


# ----------------------------------------------------------------------------------------------
# Rotations (general affine maps).


def construct_affine_bandlimit_filter(mat: jnp.ndarray, a: int = 3, amax: int = 16, aflt: int = 64, up: int = 4,
                                      cutoff_in: float = 1, cutoff_out: float = 1) -> jnp.ndarray:
    """Oriented 2-D low-pass for resampling through the affine map ``mat`` at ``up``x.

    The ideal response is the convolution of a sinc band limit in the input's axes with one in the
    output's (rotated) axes; it is windowed by the convolution of two Lanczos windows (half-width
    ``a``) oriented the same ways. Both convolutions are done circularly with FFTs on a
    ``2 * aflt * up - 1`` grid; the result is cropped to ``2 * amax * up - 1`` taps and every one of
    the ``up x up`` polyphase components is normalised to unit DC gain (total gain ``1 / up**2``
    per phase sum, as upsampling with gain ``up**2`` expects).

    Returns a ``[2 * amax * up - 1]^2`` float32 filter (odd size, centred).
    """
    if not a <= amax < aflt:
        raise ValueError(f"need a <= amax < aflt, got a={a}, amax={amax}, aflt={aflt}")
    mat = jnp.asarray(mat, jnp.float32)
    n = aflt * up * 2 - 1
    # Tap positions in input pixels, symmetric about 0 and rotated so that 0 sits at index 0 (the
    # FFT's origin).
    taps = np.roll(((np.arange(n) + 1) / up - aflt).astype(np.float32), 1 - aflt * up)
    yi, xi = (jnp.asarray(t) for t in np.meshgrid(taps, taps, indexing="ij"))
    xo = xi * mat[0, 0] + yi * mat[0, 1]
    yo = xi * mat[1, 0] + yi * mat[1, 1]

    def circular_conv(p, q):
        return jnp.real(jnp.fft.ifft2(jnp.fft.fft2(p) * jnp.fft.fft2(q)))

    f = circular_conv(sinc(xi * cutoff_in) * sinc(yi * cutoff_in), sinc(xo * cutoff_out) * sinc(yo * cutoff_out))
    window = circular_conv(lanczos_window(xi, a) * lanczos_window(yi, a), lanczos_window(xo, a) * lanczos_window(yo, a))
    f = (f * window).astype(jnp.float32)

    # Re-centre, crop to the support of interest, normalise each polyphase component.
    c = (aflt - amax) * up
    f = jnp.roll(f, (aflt * up - 1, aflt * up - 1), axis=(0, 1))[c:-c, c:-c]
    f = jnp.pad(f, ((0, 1), (0, 1))).reshape(amax * 2, up, amax * 2, up)
    f = f / jnp.sum(f, axis=(0, 2), keepdims=True) / (up**2)
    return f.reshape(amax * 2 * up, amax * 2 * up)[:-1, :-1]


def apply_affine_transformation(x: jnp.ndarray, mat: jnp.ndarray, up: int = 4, **filter_kwargs
                                ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Resample NCHW images through the affine map ``mat``: band-limited ``up``x upsampling with
    :func:`construct_affine_bandlimit_filter`, then bilinear sampling of the upsampled image.

    ``filter_kwargs`` go to the filter (``a``, ``amax``, ``aflt``, ``cutoff_in``, ``cutoff_out``).
    The mask is 1 where the nearest upsampled sample is far enough from the border that the filter
    saw only real input.
    """
    _, _, h, w = x.shape
    mat = jnp.asarray(mat, jnp.float32)
    f = construct_affine_bandlimit_filter(mat, up=up, **filter_kwargs)
    k = f.shape[0]
    assert f.ndim == 2 and f.shape[1] == k and k % 2 == 1, f.shape
    p = k // 2

    # Sampling positions: the inverse map in normalised coordinates, adjusted for the upsampled
    # image's half-sample offset and its extra border of p / up input pixels on each side.
    theta = jnp.linalg.inv(mat)
    theta = theta.at[:2, 2].multiply(2)
    theta = theta.at[0, 2].add(1 / up / w).at[1, 2].add(1 / up / h)
    theta = theta.at[0, :].multiply(w / (w + p / up * 2)).at[1, :].multiply(h / (h + p / up * 2))
    xn = jnp.asarray(((2 * np.arange(w) + 1) / w - 1).astype(np.float32))[None, :]
    yn = jnp.asarray(((2 * np.arange(h) + 1) / h - 1).astype(np.float32))[:, None]
    gx = theta[0, 0] * xn + theta[0, 1] * yn + theta[0, 2]
    gy = theta[1, 0] * xn + theta[1, 1] * yn + theta[1, 2]

    # Upsample with the padding the official upsample2d(padding=p) uses.
    y = _upsample2d_polyphase(x, f, up, p + (k + up - 1) // 2, p + (k - up) // 2)
    z = _grid_sample(y, gx, gy)

    # Mask: nearest upsampled sample (round half to even) at least 2p + 1 samples from the border.
    hy, wy = y.shape[2:]
    c = p * 2 + 1
    jx = jnp.round(((gx + 1) * wy - 1) / 2)
    jy = jnp.round(((gy + 1) * hy - 1) / 2)
    m = (jx >= c) & (jx < wy - c) & (jy >= c) & (jy < hy - c)
    return z, jnp.broadcast_to(m.astype(x.dtype), x.shape)


def apply_fractional_rotation(x: jnp.ndarray, angle: Scalar, a: int = 3, **filter_kwargs
                              ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Band-limited rotation of NCHW images by ``angle`` radians (operator R_alpha)."""
    return apply_affine_transformation(x, rotation_matrix(angle), a=a, amax=a * 2, **filter_kwargs)


def apply_fractional_pseudo_rotation(x: jnp.ndarray, angle: Scalar, a: int = 3, **filter_kwargs
                                     ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Give NCHW images the band limit a rotation by ``angle`` would give, without rotating them
    (operator R*_alpha): filter with the oriented low-pass of the inverse rotation at 1x."""
    f = construct_affine_bandlimit_filter(rotation_matrix(-jnp.asarray(angle, jnp.float32)), a=a, amax=a * 2,
                                          up=1, **filter_kwargs)
    k = f.shape[0]
    y = _nchw(upfirdn2d, x, f, padding=[k // 2, (k - 1) // 2, k // 2, (k - 1) // 2], impl="ref")
    _, _, h, w = x.shape
    c = k // 2
    m = _range_mask(h, c, h - c)[:, None] * _range_mask(w, c, w - c)[None, :]
    return y, jnp.broadcast_to(m.astype(x.dtype), x.shape)

