"""Training quality without downloads: a small shape classifier for the built-in synthetic shapes set.

FID needs the Inception weights, which a user must bring; the synthetic shapes set (``stylegan_jax.data.synthetic``)
has known classes, so a small network trained on it measures what a person looks for in a grid of fakes: is
this a circle, a square or a triangle? The network (:class:`ShapeClassifier`: six 3x3 convolutions of 8-32 channels,
32 -> 4 pixels, a 64-d feature layer) has four outputs: the three shapes and ``other``, trained on images that are *not*
a clean shape (:data:`NEGATIVE_KINDS`): noise, smooth colour noise, blurred shapes, soft blobs on a gradient, blends
of two shapes, block-shuffled shapes, and (:data:`SHAPE_NEGATIVE_KINDS`) outlines in the set's own style that lie
between or beside its classes, each at least 1 px (at 32 px) from every clean shape: rounded squares,
superellipses, squares with bulging or pinched sides, rounded triangles, stretched shapes (ellipses, rectangles,
rhombi, non-equilateral triangles), wobbly discs, shapes cut by a line. (The first classifier, fingerprint
eccda5b8a926ca4d, had only the first six kinds and counted soft or slightly oval discs as squares: 0.22 of a
24-kimg quickstart's samples, which show discs only; this one calls 0.004 of them squares.) From it:

* ``precision``: the share of images it classifies as one of the three shapes with probability >= 0.9 (held out,
  1500 images of the training runs' set: 0.987, circles 1.0, squares 0.984, triangles 0.978; 17 of the 19 misses
  are squares and triangles in the smaller third of the set's sizes; per negative kind, 300 each: blends 0.017,
  wobbly discs 0.010, rounded triangles, stretched and cut shapes 0.003, the other kinds 0; the first classifier
  called 70-76% of each shape-negative kind a shape);
* ``fid`` / ``kid``: Frechet / kernel distance of its 64-d features of fakes and reals (the math of
  :mod:`stylegan_jax.metrics.fid`, the same code that computes FID/KID with the Inception weights);
* ``hist``: the share of images per class (circle, square, triangle, other = below the confidence), fakes and
  reals (reals: ~1/3 each, the set's classes are balanced).

The weights are trained once, deterministically, by ``stylegan-jax shapes-classifier`` and shipped in the
package (``stylegan_jax/metrics/weights/shapes_classifier_32.npz``, ~190 KB): every run, test and machine then
measures in the same feature space, so numbers are comparable between runs and with the figures in
BENCHMARKS.md, and no run pays a few minutes of classifier training. Images of any resolution are resized to 32x32
first (box filter for multiples of 32, antialiased linear otherwise; smaller generators are refused: upsampled
shapes are blurry); grayscale is repeated to RGB, alpha dropped.

Generated images follow the FID protocol (``z ~ N(0, I)`` from ``fold_in(key(seed), batch)``, NCHW [-1, 1] ->
uint8 as the official metrics), so a checkpoint scores the same here, in the training loop and in
``stylegan-jax metrics --metrics shapes``.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import hashlib
import io
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from stylegan_jax.data.synthetic import CLASS_NAMES as SHAPE_NAMES
from stylegan_jax.metrics import fid as _fid

CLASS_NAMES = (*SHAPE_NAMES, "other")  # classifier outputs; "other" = not a clean shape
RESOLUTION = 32  # classifier input size
CONFIDENCE = 0.9  # a fake counts as a shape when its top shape probability is at least this
FEATURE_DIM = 64
WEIGHTS_FILE = f"shapes_classifier_{RESOLUTION}.npz"
# Shapes that are not a clean member of a class: what a generator draws between the classes (see _shape_negative).
SHAPE_NEGATIVE_KINDS = ("rounded_square", "superellipse", "bulge", "rounded_triangle", "stretch", "wobble", "partial")
NEGATIVE_KINDS = ("noise", "smooth_noise", "blur", "blob", "blend", "shuffle", *SHAPE_NEGATIVE_KINDS)
_MARGIN = 2 / 32  # the least a shape negative's outline departs from every clean shape: 1 px at 32 px

__all__ = [
    "CLASS_NAMES",
    "CONFIDENCE",
    "NEGATIVE_KINDS",
    "SHAPE_NEGATIVE_KINDS",
    "ShapeClassifier",
    "ShapeQuality",
    "ShapeQualityEvaluator",
    "classifier_outputs",
    "compute_shape_quality",
    "default_weights_path",
    "load_shape_classifier",
    "negative_examples",
    "save_shape_classifier",
    "shape_quality_from_outputs",
    "train_shape_classifier",
]


# --------------------------------------------------------------------------------------------------------------
# The network.


class ShapeClassifier(nn.Module):
    """Conv net on ``[N, 32, 32, 3]`` float images in [-1, 1]: ``(features [N, feature_dim], logits [N, 4])``."""

    widths: tuple[int, ...] = (8, 16, 32)  # channels of the three stages (two 3x3 convs each, then 2x2 average pool)
    feature_dim: int = FEATURE_DIM  # width of the feature layer (FID/KID are computed on it)
    num_classes: int = len(CLASS_NAMES)  # circle, square, triangle, other

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = lambda y: nn.leaky_relu(y, 0.2)
        init = nn.initializers.he_normal()
        for i, w in enumerate(self.widths):
            x = act(nn.Conv(w, (3, 3), kernel_init=init, name=f"conv{i}a")(x))
            x = act(nn.Conv(w, (3, 3), kernel_init=init, name=f"conv{i}b")(x))
            x = nn.avg_pool(x, (2, 2), (2, 2))
        features = act(nn.Dense(self.feature_dim, kernel_init=init, name="features")(x.reshape(x.shape[0], -1)))
        return features, nn.Dense(self.num_classes, name="logits")(features)


def _to_input(images: jax.Array, layout: str) -> jax.Array:
    """uint8 (or [0, 255] float) images -> float32 NHWC [-1, 1] at 32x32 with 3 channels."""
    x = images.astype(jnp.float32) * (1 / 127.5) - 1.0
    if layout == "NCHW":
        x = jnp.transpose(x, (0, 2, 3, 1))
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    elif x.shape[-1] == 4:
        x = x[..., :3]
    n, h, w = x.shape[:3]
    if (h, w) != (RESOLUTION, RESOLUTION):
        if h == w and h % RESOLUTION == 0:
            f = h // RESOLUTION
            x = x.reshape(n, RESOLUTION, f, RESOLUTION, f, 3).mean(axis=(2, 4))
        else:
            x = jax.image.resize(x, (n, RESOLUTION, RESOLUTION, 3), "linear", antialias=True)
    return x


@functools.partial(jax.jit, static_argnames=("layout",))
def _outputs_jit(variables: Mapping[str, Any], images: jax.Array, layout: str) -> jax.Array:
    features, logits = ShapeClassifier().apply(variables, _to_input(images, layout))
    return jnp.concatenate([features, jax.nn.softmax(logits, axis=-1)], axis=-1)


def classifier_outputs(variables: Mapping[str, Any], images: Any, *, layout: str = "NCHW") -> jax.Array:
    """``[N, 64 + 4]``: the features, then the class probabilities (:data:`CLASS_NAMES` order), of uint8 (or
    [0, 255] float) images ``[N, C, H, W]`` (``layout='NCHW'``, the generator's and the data pipeline's) or
    ``[N, H, W, C]``; C is 1, 3 or 4; any square resolution (resized to 32). Jit-compiled per input shape."""
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    shape = tuple(np.shape(images))
    channels = (shape[1] if layout == "NCHW" else shape[-1]) if len(shape) == 4 else None
    if channels not in (1, 3, 4):
        raise ValueError(f"the shape classifier needs 4-d {layout} images with 1, 3 or 4 channels, got {shape}")
    return _outputs_jit(variables, images, layout)


# --------------------------------------------------------------------------------------------------------------
# Weights: shipped with the package, written by the training command.


def default_weights_path() -> Path:
    """The weights shipped in the package: ``stylegan_jax/metrics/weights/shapes_classifier_32.npz``."""
    return Path(__file__).with_name("weights") / WEIGHTS_FILE


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v, np.float32)
    return out


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes = jax.eval_shape(ShapeClassifier().init, jax.random.key(0), jnp.zeros((1, RESOLUTION, RESOLUTION, 3)))
    return {k: tuple(v.shape) for k, v in _flatten(jax.tree.map(lambda s: np.zeros(s.shape), shapes)).items()}


def fingerprint(variables: Mapping[str, Any]) -> str:
    """sha256 (first 16 hex digits) of the weights: names, shapes and float32 bytes."""
    h = hashlib.sha256()
    for k, v in sorted(_flatten(variables).items()):
        h.update(k.encode())
        h.update(str(v.shape).encode())
        h.update(np.ascontiguousarray(v, np.float32).tobytes())
    return h.hexdigest()[:16]


def save_shape_classifier(variables: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> bytes:
    """The ``.npz`` bytes of ``variables`` (+ JSON ``meta``): write them where you like."""
    arrays = _flatten(variables)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays, __meta__=np.str_(json.dumps(dict(meta or {}), sort_keys=True)))
    return buf.getvalue()


def load_shape_classifier(path: str | Path | None = None) -> tuple[dict, dict]:
    """``(variables, meta)`` of a classifier file (default: the shipped weights). Errors name the problem."""
    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"shape classifier weights {path} not found (the package ships them; "
                                "'stylegan-jax shapes-classifier --out PATH' trains them again)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable shape classifier .npz ({e})") from e
    meta = json.loads(str(arrays.pop("__meta__", "{}")))
    want = _expected_shapes()
    got = {k: tuple(v.shape) for k, v in arrays.items()}
    if got != want:
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        raise ValueError(f"{path}: not weights of this ShapeClassifier (missing {missing}, unexpected {extra}, "
                         f"wrong shapes {wrong})")
    variables: dict = {}
    for k, v in arrays.items():
        node = variables
        *parents, leaf = k.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = jnp.asarray(v, jnp.float32)
    return variables, meta


# --------------------------------------------------------------------------------------------------------------
# Training data: real shapes (lightly augmented) and what is not a clean shape.


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of one float HWC image (edge padding)."""
    if sigma <= 0:
        return img
    r = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    pad = np.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    tmp = sum(k[i] * pad[i:i + h] for i in range(2 * r + 1))
    return sum(k[i] * tmp[:, i:i + w] for i in range(2 * r + 1))


def _gradient(rng: np.random.Generator, res: int) -> np.ndarray:
    """A two-colour linear gradient in a random direction (like the set's backgrounds, any hue)."""
    c0, c1 = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    ang = rng.uniform(0, 2 * np.pi)
    c = (np.arange(res) + 0.5) / res * 2 - 1
    y, x = np.meshgrid(c, c, indexing="ij")
    t = np.clip((x * np.cos(ang) + y * np.sin(ang)) * 0.5 + 0.5, 0, 1)[..., None]
    return (c0 * (1 - t) + c1 * t).astype(np.float32)


def _set_sdf(kind: int, x: np.ndarray, y: np.ndarray, size: float) -> np.ndarray:
    """The synthetic set's own shapes (0 circle, 1 square, 2 triangle): signed distance in their frame."""
    from stylegan_jax.data.synthetic import _sdf

    return _sdf(kind, x, y, size)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def _scene(rng: np.random.Generator, res: int, shape: Callable[[np.ndarray, np.ndarray], np.ndarray],
           reach: float, size: float) -> np.ndarray:
    """A float ``[res, res, 3]`` image in the synthetic set's style (its palette, placement, rotation, drop shadow
    and shading, as :func:`stylegan_jax.data.synthetic.render_shape`) of the shape ``shape(x, y) < 0`` (``x, y``
    in the shape's own frame, grid units: the image spans [-1, 1]; any implicit function: it is divided by its
    gradient norm, so the edges are anti-aliased over one pixel as the set's), whose farthest point is about
    ``reach`` from its centre (placement) and whose size is about ``size`` (the set's size parameter: shading).
    Only the outline differs from the set's images: a classifier can tell them apart by the shape alone."""
    u = rng.random(14)
    c = ((np.arange(res) + 0.5) * (2.0 / res) - 1.0).astype(np.float32)
    y, x = np.meshgrid(c, c, indexing="ij")
    px = 2.0 / res
    hue = u[0]
    c0 = _hsv(hue, 0.25 + 0.25 * u[1], 0.25 + 0.25 * u[2])
    c1 = _hsv(hue + 0.08 + 0.1 * u[3], 0.25 + 0.25 * u[4], 0.55 + 0.3 * u[5])
    ang = 2 * np.pi * u[6]
    t = np.clip((x * np.cos(ang) + y * np.sin(ang)) * 0.5 + 0.5, 0, 1)[..., None]
    img = c0 * (1 - t) + c1 * t
    color = _hsv(hue + 0.3 + 0.4 * u[7], 0.65 + 0.35 * u[8], 0.8 + 0.2 * u[9])
    cx = (2 * u[10] - 1) * max(0.0, 0.95 - reach)
    cy = (2 * u[11] - 1) * max(0.0, 0.95 - reach)
    theta = 2 * np.pi * u[12]
    ct, st = np.cos(theta), np.sin(theta)

    def dist(ox: float, oy: float) -> np.ndarray:  # the shape centred at (cx + ox, cy + oy), / its gradient norm
        h = px / 4

        def f(dx: float, dy: float) -> np.ndarray:
            lx, ly = x - (cx + ox) + dx, y - (cy + oy) + dy
            return shape(lx * ct + ly * st, -lx * st + ly * ct)

        grad = np.hypot(f(h, 0) - f(-h, 0), f(0, h) - f(0, -h)) / (2 * h)
        return f(0, 0) / np.maximum(grad, 0.5)

    shadow = np.clip(0.5 - dist(0.05, 0.06) / 0.08, 0, 1)[..., None]
    cover = np.clip(0.5 - dist(0.0, 0.0) / px, 0, 1)[..., None]
    shade = 1.0 + 0.18 * np.clip(-((x - cx) + (y - cy)) / (2 * size), -1, 1)[..., None]
    img = img * (1 - 0.45 * shadow)
    return (img * (1 - cover) + np.clip(color * shade, 0, 1) * cover).astype(np.float32)


def _rounded_box(x: np.ndarray, y: np.ndarray, half: float, r: float) -> np.ndarray:
    qx, qy = np.abs(x) - (half - r), np.abs(y) - (half - r)
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - r


Outline = tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], float, float]


def _outline(rng: np.random.Generator, kind: str) -> Outline | None:
    """One draw of :func:`_shape_negative`'s parameters: ``(shape, reach, size)`` for :func:`_scene`, or None
    where the drawn size leaves no room for the margin."""
    m = _MARGIN
    root2 = math.sqrt(2.0)
    size = rng.uniform(0.25, 0.55)
    reach = 1.35 * size
    if kind == "rounded_square":
        half = 0.85 * size
        lo, hi = m / (root2 - 1), half - m / (root2 - 1)
        if lo > hi:
            return None
        r = rng.uniform(lo, hi)
        return (lambda x, y: _rounded_box(x, y, half, r), reach, size)
    if kind == "superellipse":
        a, p = size * rng.uniform(0.85, 1.0), rng.uniform(2.6, 8.0)
        off_round = a * (2 ** (0.5 - 1 / p) - 1)  # diagonal radius minus side radius
        off_square = a * root2 * (1 - 2 ** (-1 / p))  # how far the corner is in from the square's
        if min(off_round, off_square) < m:
            return None
        return (lambda x, y: (np.abs(x) ** p + np.abs(y) ** p) ** (1 / p) - a, reach, size)
    if kind == "bulge":
        half = 0.85 * size
        # Out by up to 0.2 half (more would be near round), in by up to 0.3 half.
        b = rng.uniform(m, 0.3 * half) * -1.0 if rng.random() < 0.5 else rng.uniform(m, max(m, 0.2 * half))
        if b > 0.2 * half:
            return None

        def bulge(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            big, small = np.maximum(np.abs(x), np.abs(y)), np.minimum(np.abs(x), np.abs(y))
            return big - half - b * (1 - np.minimum(small / half, 1) ** 2)

        return (bulge, reach + max(b, 0), size)
    if kind == "rounded_triangle":
        inradius = 1.15 * size / math.sqrt(3)
        if inradius < 3.5 * m:
            return None
        # The corners move in by r (1.5 px at least: the set's small sharp corners look rounded at 32 px);
        # r = inradius would be a disc.
        r = rng.uniform(1.5 * m, inradius - 2 * m)
        inner = size - r * math.sqrt(3) / 1.15
        return (lambda x, y: _set_sdf(2, x, y, inner) - r, reach, size)
    if kind == "stretch":
        cls, k, phi = int(rng.integers(3)), math.sqrt(rng.uniform(1.35, 1.9)), rng.uniform(0, np.pi)
        cp, sp = math.cos(phi), math.sin(phi)

        def stretched(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            a, b = (x * cp + y * sp) / k, (-x * sp + y * cp) * k
            return _set_sdf(cls, a * cp - b * sp, a * sp + b * cp, size)

        return (stretched, (reach if cls else size) * k, size)
    if kind == "wobble":
        radius = size * rng.uniform(0.9, 1.1)
        amp, phase = rng.uniform(-1, 1, 4) * rng.uniform(0.03, 0.12), rng.uniform(0, 2 * np.pi, 4)
        ang = np.linspace(0, 2 * np.pi, 360, endpoint=False)
        prof = 1 + sum(amp[j] * np.cos((j + 2) * ang + phase[j]) for j in range(4))
        if radius * (prof.max() - prof.min()) < 2.5 * m or prof.min() < 0.6:
            return None

        def wobble(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            t = np.arctan2(y, x)
            return np.hypot(x, y) - radius * (1 + sum(amp[j] * np.cos((j + 2) * t + phase[j]) for j in range(4)))

        return (wobble, radius * prof.max(), radius)
    if kind != "partial":
        raise ValueError(f"unknown shape negative kind {kind!r}; choose from {SHAPE_NEGATIVE_KINDS}")
    cls, phi = int(rng.integers(3)), rng.uniform(0, 2 * np.pi)
    nx, ny = math.cos(phi), math.sin(phi)
    g = np.linspace(-reach, reach, 96)
    gy, gx = np.meshgrid(g, g, indexing="ij")
    inside = _set_sdf(cls, gx, gy, size) < 0
    proj = np.sort((gx * nx + gy * ny)[inside])
    d = proj[int(len(proj) * (1 - rng.uniform(0.2, 0.45)))]  # keep the part with n.p < d: 55-80%
    if cls == 2:  # a triangle cut parallel to a side leaves a smaller triangle: keep two corners at least
        r = 1.15 * size
        corners = np.array([[-r, r / math.sqrt(3)], [r, r / math.sqrt(3)], [0, -2 * r / math.sqrt(3)]])
        if np.sum(corners @ np.array([nx, ny]) < d) < 2:
            return None
    return (lambda x, y: np.maximum(_set_sdf(cls, x, y, size), x * nx + y * ny - d), reach if cls else size,
            size)


def _shape_negative(rng: np.random.Generator, kind: str, res: int) -> np.ndarray:
    """A shape between or beside the set's classes, in the set's style (:func:`_scene`); sizes as the set's
    (``size`` 0.25-0.55: circle radius, 0.85x the square's half side, 1/1.15x the triangle's). Every outline
    departs from the nearest clean shape (any position, size, rotation) by at least :data:`_MARGIN` (1 px at
    32 px) somewhere; parameters that cannot are drawn again.

    ``rounded_square``: a square with corners rounded by r (the corner moves in by r(sqrt2 - 1), the outline is
    (s - r)(sqrt2 - 1) from round); ``superellipse``: |x|^p + |y|^p = a^p, p 2.6-8 (between circle, p = 2, and
    square); ``bulge``: a square whose sides bow out (pillow) or in (star) by b at their middles, corners kept;
    ``rounded_triangle``: a triangle with corners rounded by r; ``stretch``: a set shape stretched 1.35-1.9x
    along a random axis (ellipses, rectangles, rhombi, non-equilateral triangles); ``wobble``: a disc whose radius
    varies with the angle (harmonics 2-5), by 2 px or more; ``partial``: a set shape cut by a straight line
    that removes 20-45% of it."""
    while (outline := _outline(rng, kind)) is None:
        pass
    return _scene(rng, res, *outline)


def negative_examples(rng: np.random.Generator, reals: np.ndarray, labels: np.ndarray, n: int,
                      kinds: tuple[str, ...] = NEGATIVE_KINDS) -> np.ndarray:
    """``n`` uint8 ``[H, W, 3]`` images that are not a clean shape, built from ``reals`` (uint8 NHWC, classes
    ``labels``): the kinds of :data:`NEGATIVE_KINDS` in turn. ``noise``: per-pixel Gaussian noise around a
    colour; ``smooth_noise``: 2x2-8x8 noise upsampled (colour fields); ``blur``: a real image blurred with sigma
    1.5-5 px (at 32 px); ``blob``: a soft Gaussian colour blob on a gradient; ``blend``: two reals of different
    classes mixed 35-65%; ``shuffle``: a real image with its 4x4 grid of blocks permuted; the
    :data:`SHAPE_NEGATIVE_KINDS`: a shape in the set's style that is not a clean member of a class
    (:func:`_shape_negative`)."""
    unknown = [k for k in kinds if k not in NEGATIVE_KINDS]
    if unknown:
        raise ValueError(f"unknown negative kinds {unknown}; choose from {NEGATIVE_KINDS}")
    res = reals.shape[1]
    s = res / 32  # sizes below are in pixels at 32 px
    out = np.empty((n, res, res, 3), np.uint8)
    for i in range(n):
        kind = kinds[i % len(kinds)]
        real = reals[rng.integers(len(reals))].astype(np.float32) / 255
        if kind == "noise":
            img = rng.uniform(0.1, 0.9, 3) + rng.normal(0, rng.uniform(0.05, 0.5), (res, res, 3))
        elif kind == "smooth_noise":
            g = int(rng.choice([2, 3, 4, 6, 8]))
            low = Image.fromarray(rng.integers(0, 256, (g, g, 3), dtype=np.uint8))
            img = np.asarray(low.resize((res, res), Image.Resampling.BILINEAR), np.float32) / 255
        elif kind == "blur":
            img = _blur(real, rng.uniform(1.5, 5.0) * s)
        elif kind == "blob":
            img = _gradient(rng, res)
            c = (np.arange(res) + 0.5)
            cy, cx = rng.uniform(0.2, 0.8, 2) * res
            sig = rng.uniform(2.0, 6.0) * s
            a = np.exp(-0.5 * (((c[:, None] - cy) ** 2 + (c[None, :] - cx) ** 2) / sig**2))[..., None]
            a = a * rng.uniform(0.6, 1.0)
            img = img * (1 - a) + rng.uniform(0, 1, 3) * a
        elif kind == "blend":
            j = rng.integers(len(reals))
            while labels[j] == labels[i % len(labels)] and len(np.unique(labels)) > 1:
                j = rng.integers(len(reals))
            real = reals[i % len(reals)].astype(np.float32) / 255
            t = rng.uniform(0.35, 0.65)
            img = real * t + reals[j].astype(np.float32) / 255 * (1 - t)
        elif kind in SHAPE_NEGATIVE_KINDS:
            img = _shape_negative(rng, kind, res)
        else:  # shuffle
            b = res // 4
            blocks = real.reshape(4, b, 4, b, 3).transpose(0, 2, 1, 3, 4).reshape(16, b, b, 3)
            perm = rng.permutation(16)
            while np.array_equal(perm, np.arange(16)):
                perm = rng.permutation(16)
            img = blocks[perm].reshape(4, 4, b, b, 3).transpose(0, 2, 1, 3, 4).reshape(res, res, 3)
        out[i] = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return out


def _augment_positive(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """A real image, sometimes slightly blurred (sigma <= 0.6 px) and/or with faint noise: what a good
    generator's shapes look like."""
    x = img.astype(np.float32) / 255
    if rng.random() < 0.5:
        x = _blur(x, rng.uniform(0.2, 0.6) * img.shape[0] / 32)
    if rng.random() < 0.5:
        x = x + rng.normal(0, rng.uniform(0.0, 0.03), x.shape)
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def _real_pool(num: int, seed: int, resolution: int = RESOLUTION) -> tuple[np.ndarray, np.ndarray]:
    from stylegan_jax.data.synthetic import SyntheticShapes

    src = SyntheticShapes(resolution, 3, num_images=num, seed=seed)
    images = np.stack([src.load(i)[0] for i in range(num)])
    return images, np.arange(num) % len(SHAPE_NAMES)


def _training_batch(rng: np.random.Generator, reals: np.ndarray, labels: np.ndarray, batch: int,
                    negative_share: float) -> tuple[np.ndarray, np.ndarray]:
    n_neg = int(round(batch * negative_share))
    idx = rng.integers(len(reals), size=batch - n_neg)
    pos = np.stack([_augment_positive(rng, reals[i]) for i in idx])
    neg = negative_examples(rng, reals, labels, n_neg, tuple(rng.permutation(NEGATIVE_KINDS)))
    images = np.concatenate([pos, neg])
    y = np.concatenate([labels[idx], np.full(n_neg, len(SHAPE_NAMES))]).astype(np.int32)
    return images, y


def train_shape_classifier(*, steps: int = 6000, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                           data_seed: int = 1, pool_size: int = 9000, negative_share: float = 0.3,
                           evaluate: bool = True, log: Callable[[str], None] | None = None) -> tuple[dict, dict]:
    """Train :class:`ShapeClassifier` from scratch; ``(variables, meta)``.

    Deterministic: the initialization draws from ``seed``, the images are the synthetic set with content seed
    ``data_seed`` (not the seed 0 that training runs use, so the evaluation is on images it never saw), the
    augmentations and negatives from ``np.random.default_rng(seed)``; on one machine and software version the
    result is bitwise the same. Adam with cosine-decayed ``lr``; ``negative_share`` of each batch is
    :func:`negative_examples`. ``meta`` records the settings, the mean loss of the first and last 10% of the
    steps and (``evaluate``) the held-out scores of :func:`evaluate_classifier`.
    """
    import optax

    if steps < 1 or batch_size < 2 or not 0 < negative_share < 1 or pool_size < 3:
        raise ValueError(f"need steps >= 1, batch_size >= 2, 0 < negative_share < 1, pool_size >= 3; got {steps}, "
                         f"{batch_size}, {negative_share}, {pool_size}")
    say = log or (lambda s: None)
    reals, labels = _real_pool(pool_size, data_seed)
    net = ShapeClassifier()
    variables = net.init(jax.random.key(seed), jnp.zeros((1, RESOLUTION, RESOLUTION, 3)))
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
    opt_state = tx.init(variables)

    @jax.jit
    def step(v, o, images, y):
        def loss_fn(v):
            _, logits = net.apply(v, _to_input(images, "NHWC"))
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, jnp.mean(jnp.argmax(logits, -1) == y)

        (loss, acc), g = jax.value_and_grad(loss_fn, has_aux=True)(v)
        u, o = tx.update(g, o, v)
        return optax.apply_updates(v, u), o, loss, acc

    rng = np.random.default_rng(seed)
    losses = []
    for i in range(steps):
        images, y = _training_batch(rng, reals, labels, batch_size, negative_share)
        variables, opt_state, loss, acc = step(variables, opt_state, images, y)
        losses.append(loss)
        if (i + 1) % 250 == 0 or i + 1 == steps:
            say(f"step {i + 1}/{steps}  loss {float(loss):.4f}  batch accuracy {float(acc):.3f}")
    variables = jax.tree.map(np.asarray, variables)
    losses = np.asarray(jax.device_get(losses), np.float64)
    tenth = max(1, steps // 10)
    meta = dict(steps=steps, batch_size=batch_size, lr=lr, seed=seed, data_seed=data_seed, pool_size=pool_size,
                negative_share=negative_share, resolution=RESOLUTION, classes=list(CLASS_NAMES),
                confidence=CONFIDENCE, jax=jax.__version__, numpy=np.__version__,
                first_loss=float(losses[:tenth].mean()), final_loss=float(losses[-tenth:].mean()))
    if evaluate:
        meta["heldout"] = evaluate_classifier(variables)
    meta["fingerprint"] = fingerprint(variables)
    return variables, meta


def evaluate_classifier(variables: Mapping[str, Any], num: int = 1500, seed: int = 0) -> dict[str, float]:
    """Held-out scores: shape precision and class accuracy on ``num`` images of the synthetic set with content
    seed ``seed`` (the training runs' set), and the precision (share wrongly called a shape) of each negative
    kind on fresh negatives made from them."""
    reals, labels = _real_pool(num, seed)
    out = _outputs_np(variables, reals, "NHWC")
    q = shape_quality_from_outputs(out, out)
    probs = out[:, FEATURE_DIM:]
    scores = {"real_precision": q.precision,
              "real_accuracy": float(np.mean(np.argmax(probs[:, :len(SHAPE_NAMES)], -1) == labels))}
    rng = np.random.default_rng([seed, 1])
    for kind in NEGATIVE_KINDS:
        neg = negative_examples(rng, reals, labels, 300, (kind,))
        scores[f"{kind}_precision"] = shape_quality_from_outputs(_outputs_np(variables, neg, "NHWC"), out).precision
    return scores


def _outputs_np(variables: Mapping[str, Any], images: np.ndarray, layout: str, batch: int = 250) -> np.ndarray:
    return np.concatenate([np.asarray(classifier_outputs(variables, images[i:i + batch], layout=layout))
                           for i in range(0, len(images), batch)])


# --------------------------------------------------------------------------------------------------------------
# The metric.


@dataclasses.dataclass(frozen=True)
class ShapeQuality:
    """Shape-classifier quality of a set of images against real ones."""

    precision: float  # share classified as some shape with probability >= CONFIDENCE
    fid: float  # Frechet distance of the 64-d features
    kid: float  # kernel distance (unbiased MMD^2, cubic kernel) of the features
    hist: tuple[float, ...]  # share per class (circle, square, triangle, other = not confident), fakes
    real_hist: tuple[float, ...]  # the same for the real images
    real_precision: float  # precision of the real images (the ceiling, ~0.99)
    num: int  # number of images evaluated
    num_real: int  # number of real images

    def as_dict(self, prefix: str = "shapes_") -> dict[str, float]:
        """Flat ``{name: value}`` (for logs): ``shapes_precision``, ``shapes_fid``, ``shapes_kid``,
        ``shapes_real_precision``, ``shapes_<class>`` (fakes) and ``shapes_real_<class>``."""
        d = {f"{prefix}precision": self.precision, f"{prefix}fid": self.fid, f"{prefix}kid": self.kid,
             f"{prefix}real_precision": self.real_precision}
        d.update({f"{prefix}{c}": v for c, v in zip(CLASS_NAMES, self.hist, strict=True)})
        d.update({f"{prefix}real_{c}": v for c, v in zip(CLASS_NAMES, self.real_hist, strict=True)})
        return d


def _precision_hist(probs: np.ndarray, confidence: float) -> tuple[float, tuple[float, ...]]:
    shape_p = probs[:, :len(SHAPE_NAMES)]
    confident = shape_p.max(axis=1) >= confidence
    cls = np.where(confident, shape_p.argmax(axis=1), len(SHAPE_NAMES))
    hist = np.bincount(cls, minlength=len(CLASS_NAMES)) / max(len(cls), 1)
    return float(confident.mean()), tuple(float(h) for h in hist)


def shape_quality_from_outputs(fake: np.ndarray, real: np.ndarray, *, confidence: float = CONFIDENCE,
                               kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0) -> ShapeQuality:
    """:class:`ShapeQuality` from :func:`classifier_outputs` rows of fakes and reals (``[N, 68]`` each). FID and
    KID use :mod:`stylegan_jax.metrics.fid` (``FeatureStats``, ``frechet_distance``, ``kid``)."""
    fake, real = np.asarray(fake, np.float32), np.asarray(real, np.float32)
    width = FEATURE_DIM + len(CLASS_NAMES)
    if fake.ndim != 2 or real.ndim != 2 or fake.shape[1] != width or real.shape[1] != width:
        raise ValueError(f"classifier outputs must be [N, {width}], got {fake.shape} and {real.shape}")
    if len(fake) < 2 or len(real) < 2:
        raise ValueError(f"need at least 2 fake and 2 real images, got {len(fake)} and {len(real)}")
    if not 0 < confidence <= 1:
        raise ValueError(f"confidence must be in (0, 1], got {confidence}")
    stats = []
    for x in (fake, real):
        s = _fid.FeatureStats()
        s.append(x[:, :FEATURE_DIM])
        stats.append(s.get_mean_cov())
    fid = _fid.frechet_distance(*stats[0], *stats[1])
    kid = _fid.kid(fake[:, :FEATURE_DIM], real[:, :FEATURE_DIM], kid_subsets, kid_subset_size, seed)
    precision, hist = _precision_hist(fake[:, FEATURE_DIM:], confidence)
    real_precision, real_hist = _precision_hist(real[:, FEATURE_DIM:], confidence)
    return ShapeQuality(precision=precision, fid=fid, kid=kid, hist=hist, real_hist=real_hist,
                        real_precision=real_precision, num=len(fake), num_real=len(real))


class ShapeQualityEvaluator:
    """Shape quality of a generator's samples, repeatedly: the generator is compiled once and the real side
    computed once, so each call only generates and classifies.

    Args:
      G: the generator (``z_dim``, ``c_dim``; ``G.apply(variables, z, c, truncation_psi=...)`` -> NCHW [-1, 1]).
      real: the real images: an ImageSource (its first ``num_real`` images, e.g. the training set), an iterable
        of uint8 NCHW batches, or an array of :func:`classifier_outputs` rows computed before.
      num_real: how many real images to use from an ImageSource or iterable.
      classifier: variables (or ``(variables, meta)``) of the classifier; default the shipped weights.
      psi: truncation psi of the samples (the metric, as FID, uses 1).
      mesh: if given (a Mesh with a ``'data'`` axis), each generated batch is split over its devices and the
        images come back replicated: every process of a multi-process run must make the same calls.
      labels: for a conditional G, an array of dataset labels to draw from (default: the ImageSource's).
      batch_size: generated samples per compiled call (divisible by the mesh's size).
    """

    def __init__(self, G: Any, real: Any, *, num_real: int = 2000, classifier: Any = None, psi: float = 1.0,
                 mesh: jax.sharding.Mesh | None = None, labels: Any = None, batch_size: int = 64):
        if classifier is None:
            classifier = load_shape_classifier()
        self.variables = classifier[0] if isinstance(classifier, tuple) else classifier
        if num_real < 2:
            raise ValueError(f"num_real must be >= 2, got {num_real}")
        res = int(getattr(G, "img_resolution", RESOLUTION))
        if res < RESOLUTION:
            raise ValueError(f"the shape classifier works on images of {RESOLUTION}x{RESOLUTION} and larger; this "
                             f"generator makes {res}x{res} (upsampled shapes are too blurry to count)")
        self.G, self.batch_size = G, int(batch_size)
        self._sample = _fid.make_sample_fn(G, self.batch_size, psi, mesh)
        if isinstance(real, np.ndarray | jax.Array):
            self.real = np.asarray(real, np.float32)
            source = None
        else:
            source = real
            self.real = _fid.dataset_stats(real, self._features, batch_size=250, max_items=int(num_real),
                                           capture_all=True, capture_mean_cov=False).get_all()
        self._labels, self._source = labels, source

    def _features(self, images: Any) -> jax.Array:
        return classifier_outputs(self.variables, images)

    def outputs(self, g_vars: Any, num: int, seed: int = 0) -> np.ndarray:
        """:func:`classifier_outputs` of ``num`` samples (the latents of the FID protocol for ``seed``)."""
        if num < 2:
            raise ValueError(f"num must be >= 2, got {num}")
        label_fn = _fid.label_sampler(self.G, self._source, self._labels, seed)
        return _fid.generator_stats(self.G, g_vars, self._features, num_gen=int(num), batch_size=self.batch_size,
                                    seed=seed, capture_all=True, capture_mean_cov=False, label_fn=label_fn,
                                    sample_fn=self._sample).get_all()

    def __call__(self, g_vars: Any, num: int, seed: int = 0, **kwargs: Any) -> ShapeQuality:
        """:class:`ShapeQuality` of ``num`` samples; ``kwargs`` as :func:`shape_quality_from_outputs`."""
        return shape_quality_from_outputs(self.outputs(g_vars, num, seed), self.real, **kwargs)


def compute_shape_quality(G: Any, variables: Any, real: Any, num: int = 1000, *, seed: int = 0,
                          num_real: int = 2000, batch_size: int = 64, **kwargs: Any) -> ShapeQuality:
    """:class:`ShapeQuality` of ``num`` samples of ``G`` against ``real`` (see :class:`ShapeQualityEvaluator`,
    whose keyword arguments ``kwargs`` are). Compiles the generator afresh: evaluate repeatedly with the class."""
    return ShapeQualityEvaluator(G, real, num_real=num_real, batch_size=batch_size, **kwargs)(variables, num, seed)
