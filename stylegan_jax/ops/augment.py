"""Adaptive discriminator augmentation (ADA): the augmentation pipeline of "Training Generative Adversarial
Networks with Limited Data" (Karras et al. 2020), as the official ``training/augment.py`` ``AugmentPipe`` computes
it, as one pure, jit-compatible function.

``augment(images, p, rng, spec)`` takes and returns **NCHW** images (like the official pipeline and the
discriminator's public entry point). Every augmentation of the official set is there with its official knobs and
defaults (:class:`AugmentSpec`), and the official spec names (:data:`SPECS`, ``'bgc'`` is the StyleGAN3 default).
Each enabled augmentation fires for each sample with probability ``multiplier * p``; ``p`` may be a traced scalar
(the ADA heuristic changes it inside the jitted train step), so one compiled program serves every ``p``.

The stages run in the official order:

1. pixel blitting (x-flip, 90-degree rotations, integer translation) and general geometric transformations
   (isotropic scaling, pre-rotation, anisotropic scaling, post-rotation, fractional translation) compose into one
   3x3 inverse matrix per sample, executed once: reflect padding, 2x upsampling with the sym6 wavelet, bilinear
   sampling (``grid_sample`` conventions, ``align_corners=False``, zeros outside), 2x downsampling with the same
   filter;
2. colour transformations (brightness, contrast, luma flip, hue rotation, saturation) compose into one 4x4 matrix
   per sample, applied to the RGB channels;
3. image-space filtering (random gains of four frequency bands of a sym2 filter bank);
4. additive RGB noise and cutout.

Static shapes only. The official pads each batch by a margin computed from where the transformed image corners
land (so the padded size is data-dependent). Here every image is reflect-padded by the largest margin the official
can choose (``size - 1`` per side) into a fixed canvas, and the official per-sample padded window is emulated
inside it: canvas pixels outside that window are zero before upsampling and sampling positions outside the
upsampled window read zero, as the official's zero-padded upsampling and ``grid_sample`` see them. The result is
the official result, sample by sample, for any transform (the official takes the margin over the whole batch, this
takes it per sample; they are the same whenever the batch shares a transform, as in the percentile mode, and the
per-sample margin keeps each sample independent of the batch and of the device count).

Random draws: sample ``i`` draws everything from ``fold_in(rng, sample_index[i])`` (default ``sample_index`` =
``arange(N)``), so a sample's augmentation depends only on ``rng`` and its index, never on the batch size or on
how the batch is split over devices.

``debug_percentile`` (the official deterministic mode): every draw is replaced by its value at that percentile and
every enabled augmentation is applied, whatever ``p`` is (the additive noise image itself is still drawn from
``rng``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from stylegan_jax.ops.upfirdn2d import upfirdn2d

__all__ = ["AugmentSpec", "SPECS", "augment", "draw_params", "filter_bank", "make_spec", "wavelet"]

# ----------------------------------------------------------------------------------------------
# Constants: wavelet low-pass filters (data: the standard coefficients of the sym2 and sym6 wavelets, the ones the
# official pipeline uses) and the image-space filter bank built from sym2.

_WAVELETS = {
    "sym2": (-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025),
    "sym6": (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
             0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
             -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148),
}

# Expected power of the four bands of the filter bank (a 1/f spectrum), used to normalise the band gains.
_EXPECTED_POWER = np.array([10, 1, 1, 1], np.float32) / np.float32(13)


def wavelet(name: str) -> np.ndarray:
    """The low-pass decomposition filter of a wavelet (``'sym2'`` or ``'sym6'``), float64."""
    if name not in _WAVELETS:
        raise ValueError(f"unknown wavelet {name!r}; known: {sorted(_WAVELETS)}")
    return np.asarray(_WAVELETS[name], np.float64)


def filter_bank() -> np.ndarray:
    """``[4, 43]`` float32: the band-pass filters of the image-space filtering, from the sym2 wavelet.

    Row 0 is the low band; each further row doubles the resolution of the bank (zero insertion), smooths it with the
    half-band filter ``H(z) H(1/z) / 2`` and adds the high-pass ``H(-z) H(-1/z) / 2`` to the next band.
    """
    lo = wavelet("sym2")
    hi = lo * ((-1.0) ** np.arange(lo.size))
    lo2 = np.convolve(lo, lo[::-1]) / 2
    hi2 = np.convolve(hi, hi[::-1]) / 2
    bank = np.eye(4, 1)
    for i in range(1, 4):
        up = np.zeros((4, bank.shape[1] * 2 - 1))
        up[:, ::2] = bank
        bank = np.stack([np.convolve(row, lo2) for row in up])
        start = (bank.shape[1] - hi2.size) // 2
        bank[i, start:start + hi2.size] += hi2
    return bank.astype(np.float32)


def _geom_filter() -> np.ndarray:
    f = wavelet("sym6")
    return (f / f.sum()).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Specs.


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
    """The knobs of the official ``AugmentPipe`` constructor, with its defaults (every augmentation off).

    A multiplier of 1 makes an augmentation fire with probability ``p``. Hashable: usable as a static jit argument.
    """

    # Pixel blitting.
    xflip: float = 0.0  # probability multiplier for x-flip
    rotate90: float = 0.0  # probability multiplier for 90-degree rotations
    xint: float = 0.0  # probability multiplier for integer translation
    xint_max: float = 0.125  # range of integer translation, relative to the image size
    # General geometric transformations.
    scale: float = 0.0  # probability multiplier for isotropic scaling
    rotate: float = 0.0  # probability multiplier for arbitrary rotation
    aniso: float = 0.0  # probability multiplier for anisotropic scaling
    xfrac: float = 0.0  # probability multiplier for fractional translation
    scale_std: float = 0.2  # log2 standard deviation of isotropic scaling
    rotate_max: float = 1.0  # range of arbitrary rotation, 1 = full circle
    aniso_std: float = 0.2  # log2 standard deviation of anisotropic scaling
    xfrac_std: float = 0.125  # standard deviation of fractional translation, relative to the image size
    # Colour transformations.
    brightness: float = 0.0  # probability multiplier for brightness
    contrast: float = 0.0  # probability multiplier for contrast
    lumaflip: float = 0.0  # probability multiplier for luma flip
    hue: float = 0.0  # probability multiplier for hue rotation
    saturation: float = 0.0  # probability multiplier for saturation
    brightness_std: float = 0.2  # standard deviation of brightness
    contrast_std: float = 0.5  # log2 standard deviation of contrast
    hue_max: float = 1.0  # range of hue rotation, 1 = full circle
    saturation_std: float = 1.0  # log2 standard deviation of saturation
    # Image-space filtering.
    imgfilter: float = 0.0  # probability multiplier for image-space filtering
    imgfilter_bands: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # multipliers of the 4 bands
    imgfilter_std: float = 1.0  # log2 standard deviation of the band amplification
    # Image-space corruptions.
    noise: float = 0.0  # probability multiplier for additive RGB noise
    cutout: float = 0.0  # probability multiplier for cutout
    noise_std: float = 0.1  # standard deviation of additive RGB noise
    cutout_size: float = 0.5  # size of the cutout rectangle, relative to the image size

    @property
    def geometric(self) -> bool:
        """Whether any blit or geometric augmentation is enabled (then the resampling stage runs)."""
        return any(getattr(self, k) > 0 for k in ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac"))

    @property
    def color(self) -> bool:
        """Whether any colour augmentation is enabled."""
        return any(getattr(self, k) > 0 for k in ("brightness", "contrast", "lumaflip", "hue", "saturation"))

    def enabled(self) -> list[str]:
        """Names of the enabled augmentations, in pipeline order."""
        return [k for k in _AUGMENTATIONS if getattr(self, k) > 0]


_AUGMENTATIONS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast",
                  "lumaflip", "hue", "saturation", "imgfilter", "noise", "cutout")

_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
_FILTER = dict(imgfilter=1)
_NOISE = dict(noise=1)
_CUTOUT = dict(cutout=1)

#: The official spec names (``--augpipe`` of StyleGAN2-ADA; StyleGAN3 trains with ``'bgc'``).
SPECS: dict[str, dict[str, float]] = {
    "blit": _BLIT,
    "geom": _GEOM,
    "color": _COLOR,
    "filter": _FILTER,
    "noise": _NOISE,
    "cutout": _CUTOUT,
    "bg": {**_BLIT, **_GEOM},
    "bgc": {**_BLIT, **_GEOM, **_COLOR},
    "bgcf": {**_BLIT, **_GEOM, **_COLOR, **_FILTER},
    "bgcfn": {**_BLIT, **_GEOM, **_COLOR, **_FILTER, **_NOISE},
    "bgcfnc": {**_BLIT, **_GEOM, **_COLOR, **_FILTER, **_NOISE, **_CUTOUT},
}

_FIELDS = {f.name for f in dataclasses.fields(AugmentSpec)}


def make_spec(spec: str | Mapping[str, Any] | AugmentSpec = "bgc", **kwargs: Any) -> AugmentSpec:
    """An :class:`AugmentSpec` from a spec name, a dict of ``AugmentPipe`` kwargs or a spec, plus overrides.

    ``make_spec('bgc')``, ``make_spec({'xflip': 1, 'xint': 1, 'xint_max': 0.25})``,
    ``make_spec('bgc', hue_max=0.5)``. Unknown names and knobs raise ``ValueError`` naming them.
    """
    if isinstance(spec, AugmentSpec):
        base = dataclasses.asdict(spec)
    elif isinstance(spec, str):
        if spec not in SPECS:
            raise ValueError(f"unknown augmentation spec {spec!r}; known specs: {', '.join(SPECS)}")
        base = dict(SPECS[spec])
    elif isinstance(spec, Mapping):
        base = dict(spec)
    else:
        raise TypeError(f"augmentation spec must be a name, a dict of AugmentPipe kwargs or an AugmentSpec, "
                        f"got {type(spec).__name__}")
    base.update(kwargs)
    unknown = sorted(set(base) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown augmentation knob(s) {unknown}; known: {sorted(_FIELDS)}")
    values = {}
    for k, v in base.items():
        if k == "imgfilter_bands":
            bands = tuple(float(b) for b in v)
            if len(bands) != 4:
                raise ValueError(f"imgfilter_bands must have 4 entries (one per band), got {list(v)}")
            values[k] = bands
        else:
            values[k] = float(v)
            if values[k] < 0:
                raise ValueError(f"augmentation knob {k} must be >= 0, got {v}")
    return AugmentSpec(**values)


# ----------------------------------------------------------------------------------------------
# Matrices (float32, batched over a leading axis of their scalar arguments).


def _matrix(rows) -> jnp.ndarray:
    ref = next(x for row in rows for x in row if isinstance(x, jnp.ndarray))
    elems = [jnp.broadcast_to(jnp.asarray(x, jnp.float32), ref.shape) for row in rows for x in row]
    return jnp.stack(elems, axis=-1).reshape(ref.shape + (len(rows), len(rows[0])))


def _translate2d(tx, ty):
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def _scale2d(sx, sy):
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def _rotate2d(theta):
    return _matrix([[jnp.cos(theta), jnp.sin(-theta), 0], [jnp.sin(theta), jnp.cos(theta), 0], [0, 0, 1]])


def _translate3d(tx, ty, tz):
    return _matrix([[1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]])


def _scale3d(sx, sy, sz):
    return _matrix([[sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1]])


def _rotate3d(v, theta):
    vx, vy, vz = (float(a) for a in v[:3])
    s, c = jnp.sin(theta), jnp.cos(theta)
    cc = 1 - c
    return _matrix([
        [vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
        [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
        [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
        [0, 0, 0, 1],
    ])


def _mm(a, b):
    """Batched product of small matrices, as elementwise products and a sum (fuses into one loop; a dot per
    3x3 product would compile to many tiny matmuls)."""
    return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)


# ----------------------------------------------------------------------------------------------
# Per-sample parameters.


class _Draws:
    """Random draws of one sample: slices of one block of uniforms and one block of normals drawn from the sample
    key (two generator calls per sample, whatever the number of augmentations: it keeps the program small)."""

    _BLOCK = 48  # more than the pipeline draws of either kind (at most 29 uniforms, 11 normals)

    def __init__(self, key: jax.Array):
        self.key = key
        u = jax.random.uniform(key, (2, self._BLOCK), jnp.float32)
        self._u = u[0]
        # Normals by the inverse CDF of the second block (what jax.random.normal computes), in the same draw.
        lo = np.nextafter(np.float32(-1), np.float32(0))
        self._n = np.float32(np.sqrt(2)) * jax.scipy.special.erfinv(jnp.maximum(u[1] * 2 - 1, lo))
        self._iu = self._in = 0

    @staticmethod
    def _take(block, i, shape):
        size = int(np.prod(shape, dtype=int))
        if i + size > block.shape[0]:
            raise AssertionError("augment: more random draws than _Draws._BLOCK")
        return block[i:i + size].reshape(shape), i + size

    def uniform(self, shape=()) -> jnp.ndarray:
        out, self._iu = self._take(self._u, self._iu, shape)
        return out

    def normal(self, shape=()) -> jnp.ndarray:
        out, self._in = self._take(self._n, self._in, shape)
        return out

    def normal_image(self, shape) -> jnp.ndarray:
        """A fresh normal array of any shape (the additive-noise image)."""
        return jax.random.normal(jax.random.fold_in(self.key, 2), shape, jnp.float32)


def _sample_params(spec: AugmentSpec, key: jax.Array, p: jnp.ndarray, pct: jnp.ndarray | None, width: int,
                   height: int, channels: int) -> dict[str, jnp.ndarray]:
    """Every augmentation parameter of one sample, as the official pipeline draws it (scalars, [3, 3], [4, 4])."""
    r = _Draws(key)
    f32 = jnp.float32
    out: dict[str, jnp.ndarray] = {}
    erfinv = jax.scipy.special.erfinv

    def fires(mult: float) -> jnp.ndarray:
        return r.uniform() < f32(mult) * p

    # Inverse homogeneous 2-D transform, output pixel -> input pixel (centred pixel coordinates).
    G = jnp.eye(3, dtype=f32)
    if spec.xflip > 0:
        i = jnp.floor(r.uniform() * 2)
        i = jnp.where(fires(spec.xflip), i, 0.0)
        if pct is not None:
            i = jnp.floor(pct * 2)
        G = _mm(G, _scale2d(1 / (1 - 2 * i), f32(1)))
    if spec.rotate90 > 0:
        i = jnp.floor(r.uniform() * 4)
        i = jnp.where(fires(spec.rotate90), i, 0.0)
        if pct is not None:
            i = jnp.floor(pct * 4)
        G = _mm(G, _rotate2d(-(-np.float32(np.pi / 2) * i)))
    if spec.xint > 0:
        t = (r.uniform((2,)) * 2 - 1) * f32(spec.xint_max)
        t = jnp.where(fires(spec.xint), t, 0.0)
        if pct is not None:
            t = jnp.full((2,), (pct * 2 - 1) * f32(spec.xint_max))
        G = _mm(G, _translate2d(-jnp.round(t[0] * width), -jnp.round(t[1] * height)))
    if spec.scale > 0:
        s = jnp.exp2(r.normal() * f32(spec.scale_std))
        s = jnp.where(fires(spec.scale), s, 1.0)
        if pct is not None:
            s = jnp.exp2(erfinv(pct * 2 - 1) * f32(spec.scale_std))
        G = _mm(G, _scale2d(1 / s, 1 / s))
    p_rot = 1 - jnp.sqrt(jnp.clip(1 - f32(spec.rotate) * p, 0, 1))  # P(pre or post) = rotate * p
    if spec.rotate > 0:
        theta = (r.uniform() * 2 - 1) * np.float32(np.pi) * f32(spec.rotate_max)
        theta = jnp.where(r.uniform() < p_rot, theta, 0.0)
        if pct is not None:
            theta = (pct * 2 - 1) * np.float32(np.pi) * f32(spec.rotate_max)
        G = _mm(G, _rotate2d(theta))  # before anisotropic scaling
    if spec.aniso > 0:
        s = jnp.exp2(r.normal() * f32(spec.aniso_std))
        s = jnp.where(fires(spec.aniso), s, 1.0)
        if pct is not None:
            s = jnp.exp2(erfinv(pct * 2 - 1) * f32(spec.aniso_std))
        G = _mm(G, _scale2d(1 / s, 1 / (1 / s)))
    if spec.rotate > 0:
        theta = (r.uniform() * 2 - 1) * np.float32(np.pi) * f32(spec.rotate_max)
        theta = jnp.where(r.uniform() < p_rot, theta, 0.0)
        if pct is not None:
            theta = jnp.zeros_like(theta)
        G = _mm(G, _rotate2d(theta))  # after anisotropic scaling
    if spec.xfrac > 0:
        t = r.normal((2,)) * f32(spec.xfrac_std)
        t = jnp.where(fires(spec.xfrac), t, 0.0)
        if pct is not None:
            t = jnp.full((2,), erfinv(pct * 2 - 1) * f32(spec.xfrac_std))
        G = _mm(G, _translate2d(-(t[0] * width), -(t[1] * height)))
    out["G_inv"] = G

    # Homogeneous 3-D colour transform, colour in -> colour out.
    C = jnp.eye(4, dtype=f32)
    v = np.array([1, 1, 1, 0], np.float32) / np.float32(np.sqrt(3))  # luma axis
    vv = jnp.asarray(np.outer(v, v))
    eye4 = jnp.eye(4, dtype=f32)
    if spec.brightness > 0:
        b = r.normal() * f32(spec.brightness_std)
        b = jnp.where(fires(spec.brightness), b, 0.0)
        if pct is not None:
            b = erfinv(pct * 2 - 1) * f32(spec.brightness_std)
        C = _mm(_translate3d(b, b, b), C)
    if spec.contrast > 0:
        c = jnp.exp2(r.normal() * f32(spec.contrast_std))
        c = jnp.where(fires(spec.contrast), c, 1.0)
        if pct is not None:
            c = jnp.exp2(erfinv(pct * 2 - 1) * f32(spec.contrast_std))
        C = _mm(_scale3d(c, c, c), C)
    if spec.lumaflip > 0:
        i = jnp.floor(r.uniform() * 2)
        i = jnp.where(fires(spec.lumaflip), i, 0.0)
        if pct is not None:
            i = jnp.floor(pct * 2)
        C = _mm(eye4 - 2 * vv * i, C)  # Householder reflection
    if spec.hue > 0 and channels > 1:
        theta = (r.uniform() * 2 - 1) * np.float32(np.pi) * f32(spec.hue_max)
        theta = jnp.where(fires(spec.hue), theta, 0.0)
        if pct is not None:
            theta = (pct * 2 - 1) * np.float32(np.pi) * f32(spec.hue_max)
        C = _mm(_rotate3d(v, theta), C)  # rotate around the luma axis
    if spec.saturation > 0 and channels > 1:
        s = jnp.exp2(r.normal() * f32(spec.saturation_std))
        s = jnp.where(fires(spec.saturation), s, 1.0)
        if pct is not None:
            s = jnp.exp2(erfinv(pct * 2 - 1) * f32(spec.saturation_std))
        C = _mm(vv + (eye4 - vv) * s, C)
    out["C"] = C

    if spec.imgfilter > 0:
        g = jnp.ones((4,), f32)  # global gain vector
        power = jnp.asarray(_EXPECTED_POWER)
        for i, band in enumerate(spec.imgfilter_bands):
            t_i = jnp.exp2(r.normal() * f32(spec.imgfilter_std))
            t_i = jnp.where(r.uniform() < f32(spec.imgfilter) * p * f32(band), t_i, 1.0)
            if pct is not None:
                t_i = jnp.exp2(erfinv(pct * 2 - 1) * f32(spec.imgfilter_std)) if band > 0 else jnp.ones((), f32)
            t = jnp.ones((4,), f32).at[i].set(t_i)
            t = t / jnp.sqrt(jnp.sum(power * jnp.square(t)))  # normalise power
            g = g * t
        out["band_gains"] = g

    if spec.noise > 0:
        sigma = jnp.abs(r.normal()) * f32(spec.noise_std)
        sigma = jnp.where(fires(spec.noise), sigma, 0.0)
        if pct is not None:
            sigma = erfinv(pct) * f32(spec.noise_std)
        out["noise_sigma"] = sigma
        out["noise"] = r.normal_image((channels, height, width))

    if spec.cutout > 0:
        size = jnp.where(fires(spec.cutout), f32(spec.cutout_size), 0.0)
        center = r.uniform((2,))
        if pct is not None:
            size = jnp.asarray(spec.cutout_size, f32)
            center = jnp.full((2,), pct)
        out["cutout_size"] = size
        out["cutout_center"] = center
    return out


# ----------------------------------------------------------------------------------------------
# Execution.


def _linspace_grid(n: int) -> np.ndarray:
    """``affine_grid``'s base coordinates along one axis (align_corners=False), as float32 computes them."""
    n32 = np.float32(n)
    if n == 1:
        base = np.zeros(1, np.float32)
    else:
        step = (np.float32(1) - np.float32(-1)) / np.float32(n - 1)
        idx = np.arange(n)
        base = np.where(idx < n // 2, np.float32(-1) + step * idx.astype(np.float32),
                        np.float32(1) - step * (n - 1 - idx).astype(np.float32)).astype(np.float32)
    return (base * np.float32(n - 1) / n32).astype(np.float32)


def _geometric(images: jnp.ndarray, G_inv: jnp.ndarray) -> jnp.ndarray:
    """Execute the per-sample inverse transforms ``G_inv [N, 3, 3]`` on NHWC images (official resampling)."""
    n, height, width, _ = images.shape
    f = _geom_filter()
    hz_pad = f.shape[0] // 4  # 3
    f32 = jnp.float32

    # The official margin (per sample): where the transformed corners land, plus the filter support, within
    # [0, size - 1].
    cx, cy = (width - 1) / 2, (height - 1) / 2
    corners = jnp.asarray(np.array([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], np.float32).T)
    cp = _mm(G_inv, corners)  # [N, xyz, corner]
    lo = jnp.max(-cp[:, :2, :], axis=2)  # [N, (x0, y0)]
    hi = jnp.max(cp[:, :2, :], axis=2)  # [N, (x1, y1)]
    margin = jnp.concatenate([lo, hi], axis=1) + jnp.asarray([hz_pad * 2 - cx, hz_pad * 2 - cy] * 2, f32)
    margin = jnp.clip(margin, 0, jnp.asarray([width - 1, height - 1] * 2, f32))
    margin = jnp.ceil(margin).astype(jnp.int32)
    mx0, my0, mx1, my1 = (margin[:, k] for k in range(4))

    # Fixed canvas: the largest official padding on every side; the per-sample official window inside it.
    px, py = width - 1, height - 1
    canvas = jnp.pad(images, ((0, 0), (py, py), (px, px), (0, 0)), mode="reflect")
    xs = jnp.arange(width + 2 * px)[None, :]
    ys = jnp.arange(height + 2 * py)[None, :]
    in_x = (xs >= (px - mx0)[:, None]) & (xs < (px + width + mx1)[:, None])  # [N, Wc]
    in_y = (ys >= (py - my0)[:, None]) & (ys < (py + height + my1)[:, None])  # [N, Hc]
    window = (in_y[:, :, None] & in_x[:, None, :]).astype(images.dtype)
    canvas = canvas * window[..., None]

    # The official matrix chain: padding origin, 2x upsampling, normalised grid coordinates.
    G = _mm(_translate2d(((mx0 - mx1) / 2).astype(f32), ((my0 - my1) / 2).astype(f32)), G_inv)
    up = upfirdn2d(canvas, f, up=2, padding=[6, 5, 6, 5], gain=4)
    two, half = jnp.full((n,), 2.0, f32), jnp.full((n,), 0.5, f32)
    G = _mm(_mm(_scale2d(two, two), G), _scale2d(half, half))
    G = _mm(_mm(_translate2d(-half, -half), G), _translate2d(half, half))
    out_w, out_h = (width + hz_pad * 2) * 2, (height + hz_pad * 2) * 2
    in_w = (2 * (width + mx0 + mx1)).astype(f32)  # the official upsampled image size
    in_h = (2 * (height + my0 + my1)).astype(f32)
    G = _mm(_mm(_scale2d(2 / in_w, 2 / in_h), G), _scale2d(jnp.full((n,), out_w / 2, f32),
                                                             jnp.full((n,), out_h / 2, f32)))

    # affine_grid + grid_sample (bilinear, zeros outside, align_corners=False).
    bx = jnp.asarray(_linspace_grid(out_w))[None, None, :]
    by = jnp.asarray(_linspace_grid(out_h))[None, :, None]
    theta = G[:, :2, :, None, None]  # [N, 2, 3, 1, 1]
    gx = bx * theta[:, 0, 0] + by * theta[:, 0, 1] + theta[:, 0, 2]  # [N, Ho, Wo]
    gy = bx * theta[:, 1, 0] + by * theta[:, 1, 1] + theta[:, 1, 2]
    ix = ((gx + 1) * in_w[:, None, None] - 1) / 2
    iy = ((gy + 1) * in_h[:, None, None] - 1) / 2
    out = _bilinear(up, ix, iy, (2 * (px - mx0)), (2 * (py - my0)), in_w.astype(jnp.int32), in_h.astype(jnp.int32))

    # Downsample and crop.
    return upfirdn2d(out, f, down=2, padding=-hz_pad * 2 + 5, flip_filter=True)


def _bilinear(img: jnp.ndarray, ix: jnp.ndarray, iy: jnp.ndarray, x_off: jnp.ndarray, y_off: jnp.ndarray,
              w: jnp.ndarray, h: jnp.ndarray) -> jnp.ndarray:
    """Bilinear samples of NHWC ``img`` at pixel positions ``(ix, iy) [N, Ho, Wo]`` of a per-sample window
    ``[x_off, x_off + w) x [y_off, y_off + h)`` of it (window coordinates; zero outside the window)."""
    ix = lax.stop_gradient(ix)
    iy = lax.stop_gradient(iy)
    n, hc, wc, ch = img.shape
    x0f, y0f = jnp.floor(ix), jnp.floor(iy)
    x0, y0 = x0f.astype(jnp.int32), y0f.astype(jnp.int32)
    wx1, wy1 = ix - x0f, iy - y0f
    wx0, wy0 = (x0f + 1) - ix, (y0f + 1) - iy
    flat = img.reshape(n, hc * wc, ch)
    ho, wo = ix.shape[1:]

    def tap(xk, yk, weight):
        valid = (xk >= 0) & (xk < w[:, None, None]) & (yk >= 0) & (yk < h[:, None, None])
        cx = jnp.clip(xk + x_off[:, None, None], 0, wc - 1)
        cy = jnp.clip(yk + y_off[:, None, None], 0, hc - 1)
        idx = (cy * wc + cx).reshape(n, ho * wo, 1)
        vals = jnp.take_along_axis(flat, idx, axis=1, mode="clip").reshape(n, ho, wo, ch)
        return vals * jnp.where(valid, weight, 0.0)[..., None]

    return (tap(x0, y0, wx0 * wy0) + tap(x0 + 1, y0, wx1 * wy0)
            + tap(x0, y0 + 1, wx0 * wy1) + tap(x0 + 1, y0 + 1, wx1 * wy1))


def _color(images: jnp.ndarray, C: jnp.ndarray) -> jnp.ndarray:
    """Apply per-sample colour matrices ``C [N, 4, 4]`` to NHWC images with 1, 3 or 4 channels."""
    ch = images.shape[-1]
    if ch in (3, 4):
        m = C[:, None, None, :, :]  # [N, 1, 1, 4, 4]
        r, g, b = images[..., 0], images[..., 1], images[..., 2]
        rgb = jnp.stack([r * m[..., i, 0] + g * m[..., i, 1] + b * m[..., i, 2] + m[..., i, 3] for i in range(3)],
                        axis=-1)
        return rgb if ch == 3 else jnp.concatenate([rgb, images[..., 3:]], axis=-1)
    # ch == 1: the mean of the RGB rows acts on a grey image.
    m = jnp.mean(C[:, :3, :], axis=1)  # [N, 4]
    return images * jnp.sum(m[:, :3], axis=1)[:, None, None, None] + m[:, None, None, 3:]


def _reflect_pad(x: jnp.ndarray, pad: int, axis: int) -> jnp.ndarray:
    """Reflect padding (no edge repeat) of ``pad`` samples on both sides of ``axis``; repeated reflection when
    ``pad`` exceeds the length - 1 (where torch's ``reflect`` refuses)."""
    widths = [(0, 0)] * x.ndim
    widths[axis] = (pad, pad)
    return jnp.pad(x, widths, mode="reflect")


def _imgfilter(images: jnp.ndarray, gains: jnp.ndarray) -> jnp.ndarray:
    """Filter every sample's NHWC image with its band gains ``[N, 4]`` (separable, reflect padding)."""
    bank = jnp.asarray(filter_bank())
    h = _mm(gains, bank)  # [N, taps]
    taps = bank.shape[1]
    pad = taps // 2
    n, height, width, _ = images.shape
    x = _reflect_pad(_reflect_pad(images, pad, 2), pad, 1)
    acc = 0
    for k in range(taps):
        acc = acc + x[:, :, k:k + width, :] * h[:, k, None, None, None]
    acc2 = 0
    for k in range(taps):
        acc2 = acc2 + acc[:, k:k + height, :, :] * h[:, k, None, None, None]
    return acc2


def _cutout(images: jnp.ndarray, size: jnp.ndarray, center: jnp.ndarray) -> jnp.ndarray:
    _, height, width, _ = images.shape
    xs = (jnp.arange(width, dtype=jnp.float32) + 0.5) / width
    ys = (jnp.arange(height, dtype=jnp.float32) + 0.5) / height
    mx = jnp.abs(xs[None, :] - center[:, 0, None]) >= (size / 2)[:, None]  # [N, W]
    my = jnp.abs(ys[None, :] - center[:, 1, None]) >= (size / 2)[:, None]  # [N, H]
    mask = (my[:, :, None] | mx[:, None, :]).astype(images.dtype)
    return images * mask[..., None]


def draw_params(shape: tuple[int, int, int, int], p: float | jnp.ndarray, rng: jax.Array,
                spec: str | Mapping[str, Any] | AugmentSpec = "bgc", *,
                debug_percentile: float | jnp.ndarray | None = None, sample_index: jnp.ndarray | None = None,
                **kwargs: Any) -> dict[str, jnp.ndarray]:
    """The per-sample parameters :func:`augment` draws for images of NCHW ``shape`` (same arguments): ``G_inv``
    ``[N, 3, 3]`` (output pixel -> input pixel, centred coordinates), ``C`` ``[N, 4, 4]`` (colour), and with the
    corresponding augmentations ``band_gains [N, 4]``, ``noise_sigma [N]``, ``noise [N, C, H, W]``,
    ``cutout_size [N]``, ``cutout_center [N, 2]``. For inspecting the draws (tests, rates)."""
    spec = make_spec(spec, **kwargs)
    n, channels, height, width = shape
    p = jnp.asarray(p, jnp.float32)
    pct = None if debug_percentile is None else jnp.asarray(debug_percentile, jnp.float32)
    if sample_index is None:
        sample_index = jnp.arange(n, dtype=jnp.uint32)
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.asarray(sample_index).astype(jnp.uint32))
    return jax.vmap(lambda k: _sample_params(spec, k, p, pct, width, height, channels))(keys)


def augment(images: jnp.ndarray, p: float | jnp.ndarray, rng: jax.Array,
            spec: str | Mapping[str, Any] | AugmentSpec = "bgc", *, debug_percentile: float | jnp.ndarray | None = None,
            sample_index: jnp.ndarray | None = None, **kwargs: Any) -> jnp.ndarray:
    """Augment a batch of NCHW images as the official ``AugmentPipe`` with probability ``p``.

    Args:
      images: ``[N, C, H, W]`` images (any float dtype; computed in float32, returned in the input dtype). Colour
        augmentations need C in (1, 3, 4).
      p: augmentation probability (Python float or traced scalar >= 0). ``p = 0`` returns ``images`` unchanged
        (exactly), unless ``debug_percentile`` is given.
      rng: a JAX PRNG key; sample ``i`` draws from ``fold_in(rng, sample_index[i])``.
      spec: an official spec name (:data:`SPECS`), a dict of ``AugmentPipe`` kwargs or an :class:`AugmentSpec`.
      debug_percentile: the official deterministic mode: every draw at this percentile (in [0, 1]), every enabled
        augmentation applied, ``p`` ignored.
      sample_index: ``[N]`` integer global indices of the samples (default ``arange(N)``), so that a sample's draws
        do not depend on the batch it is in.
      **kwargs: overrides of single knobs of ``spec`` (e.g. ``xint_max=0.25``).

    Returns:
      ``[N, C, H, W]`` augmented images.
    """
    spec = make_spec(spec, **kwargs)
    if not hasattr(images, "ndim") or images.ndim != 4:
        shape = getattr(images, "shape", None)
        raise ValueError(f"augment expects NCHW images of rank 4, got shape {shape}")
    n, channels, height, width = images.shape
    if spec.color and channels not in (1, 3, 4):
        raise ValueError(f"colour augmentations need images with 1, 3 or 4 channels (L, RGB, RGBA), got {channels}")
    if isinstance(p, int | float | np.floating | np.integer) and (not math.isfinite(float(p)) or p < 0):
        raise ValueError(f"augmentation probability p must be a finite number >= 0, got {p}")
    if isinstance(debug_percentile, int | float | np.floating) and not 0 <= debug_percentile <= 1:
        raise ValueError(f"debug_percentile must be in [0, 1], got {debug_percentile}")
    if sample_index is not None and np.shape(sample_index) != (n,):
        raise ValueError(f"sample_index must have shape [{n}] (one index per image), got {np.shape(sample_index)}")

    dtype = images.dtype
    p = jnp.asarray(p, jnp.float32)
    params = draw_params(images.shape, p, rng, spec, debug_percentile=debug_percentile, sample_index=sample_index)

    x = jnp.transpose(images.astype(jnp.float32), (0, 2, 3, 1))  # NHWC inside
    if spec.geometric:
        x = _geometric(x, params["G_inv"])
    if spec.color:
        x = _color(x, params["C"])
    if spec.imgfilter > 0:
        x = _imgfilter(x, params["band_gains"])
    if spec.noise > 0:
        x = x + jnp.transpose(params["noise"], (0, 2, 3, 1)) * params["noise_sigma"][:, None, None, None]
    if spec.cutout > 0:
        x = _cutout(x, params["cutout_size"], params["cutout_center"])
    out = jnp.transpose(x, (0, 3, 1, 2)).astype(dtype)
    if debug_percentile is None:
        out = jnp.where(p > 0, out, images)
    return out
