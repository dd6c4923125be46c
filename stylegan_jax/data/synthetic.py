"""Procedural "shapes" dataset: made on the fly from (seed, index), no files, any resolution.

Each image is one anti-aliased coloured shape (circle, square or triangle; the shape is the class label) with a
soft drop shadow on a two-colour linear gradient background. The structure is simple enough that a GAN learns
it in minutes, and a person can tell at a glance whether samples look right (round circles, straight edges,
plausible colours), which makes it the quickstart / smoke-test dataset.

Determinism: all random parameters of image ``i`` come from the raw 64-bit output of ``PCG64(SeedSequence([seed,
i]))``. NumPy guarantees that bit stream across versions (unlike ``Generator`` sampling methods), so an index
renders the same image on every machine and release, which resumable training relies on.
"""

from __future__ import annotations

import functools

import numpy as np

from stylegan_jax.data.base import ImageSource, check_channels, one_hot

CLASS_NAMES = ("circle", "square", "triangle")
_NUM_PARAMS = 16


def _uniforms(seed: int, index: int) -> np.ndarray:
    """``_NUM_PARAMS`` floats in [0, 1) that depend only on (seed, index)."""
    raw = np.random.PCG64(np.random.SeedSequence([seed, index])).random_raw(_NUM_PARAMS)
    return (np.asarray(raw, np.uint64) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    h = (h % 1.0) * 6.0
    i = int(h) % 6
    f = h - int(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32)


@functools.lru_cache(maxsize=8)
def _grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    # Pixel centres in [-1, 1], y pointing down like image rows.
    c = (np.arange(resolution, dtype=np.float32) + 0.5) * (2.0 / resolution) - 1.0
    y, x = np.meshgrid(c, c, indexing="ij")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _pixel_span(lo: float, hi: float, resolution: int) -> tuple[int, int]:
    """Pixel index range whose centres may fall in [lo, hi] (grid units), clipped to the image."""
    a = int(np.floor((lo + 1.0) * resolution / 2.0)) - 1
    b = int(np.ceil((hi + 1.0) * resolution / 2.0)) + 1
    return max(a, 0), min(b, resolution)


def _sdf(kind: int, x: np.ndarray, y: np.ndarray, size: float) -> np.ndarray:
    """Signed distance (negative inside) to a shape centred at the origin in its own rotated frame."""
    if kind == 0:  # circle of radius `size`
        return np.sqrt(x * x + y * y) - size
    if kind == 1:  # square with half-side 0.85 * size (about the circle's area)
        s = 0.85 * size
        qx, qy = np.abs(x) - s, np.abs(y) - s
        outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
        return outside + np.minimum(np.maximum(qx, qy), 0)
    # Equilateral triangle with half-side 1.15 * size (Inigo Quilez's exact distance), apex pointing up.
    r = 1.15 * size
    k = np.float32(np.sqrt(3.0))
    px = np.abs(x) - r
    py = -y + r / k
    fold = px + k * py > 0
    px, py = np.where(fold, (px - k * py) / 2, px), np.where(fold, (-k * px - py) / 2, py)
    px = px - np.clip(px, -2 * r, 0)
    return -np.sqrt(px * px + py * py) * np.sign(py)


def shape_class(index: int | np.ndarray, num_classes: int = 3) -> int | np.ndarray:
    """The class of image ``index`` (or of an array of indices): balanced classes, known without rendering."""
    return index % num_classes


def render_shape(seed: int, index: int, resolution: int, num_classes: int = 3) -> tuple[np.ndarray, int]:
    """Render image ``index``: ``float32 [resolution, resolution, 3]`` in [0, 1] and its class."""
    u = _uniforms(seed, index)
    kind = shape_class(index, num_classes)
    x, y = _grid(resolution)
    px = np.float32(2.0 / resolution)  # one pixel in grid units: the anti-aliasing width

    # Background: gradient between two muted colours of nearby hue, in a random direction.
    hue = u[0]
    c0 = _hsv_to_rgb(hue, 0.25 + 0.25 * u[1], 0.25 + 0.25 * u[2])
    c1 = _hsv_to_rgb(hue + 0.08 + 0.1 * u[3], 0.25 + 0.25 * u[4], 0.55 + 0.3 * u[5])
    ang = 2 * np.pi * u[6]
    t = np.clip((x * np.float32(np.cos(ang)) + y * np.float32(np.sin(ang))) * 0.5 + 0.5, 0, 1)[..., None]
    img = c0 * (1 - t) + c1 * t

    # Shape: saturated colour with a hue away from the background so it always stands out.
    color = _hsv_to_rgb(hue + 0.3 + 0.4 * u[7], 0.65 + 0.35 * u[8], 0.8 + 0.2 * u[9])
    size = 0.25 + 0.3 * u[10]
    reach = 1.35 * size if kind else size  # circumradius, keeps the whole shape inside the frame
    cx = (2 * u[11] - 1) * max(0.0, 0.95 - reach)
    cy = (2 * u[12] - 1) * max(0.0, 0.95 - reach)
    theta = 2 * np.pi * u[13] if kind else 0.0
    ct, st = np.float32(np.cos(theta)), np.float32(np.sin(theta))

    # Shape and shadow only touch a box around the shape; rendering inside it alone is 2-4x faster at high
    # resolution and gives identical pixels (coverage outside the box is exactly 0).
    margin = reach + 0.2
    i0, i1 = _pixel_span(cy - margin, cy + margin, resolution)
    j0, j1 = _pixel_span(cx - margin, cx + margin, resolution)
    xb, yb = x[i0:i1, j0:j1], y[i0:i1, j0:j1]

    def local(dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
        lx, ly = xb - np.float32(cx + dx), yb - np.float32(cy + dy)
        return lx * ct + ly * st, -lx * st + ly * ct

    # Soft shadow: same shape, offset down-right, with a wide smooth edge.
    sx, sy = local(0.05, 0.06)
    shadow = np.clip(0.5 - _sdf(kind, sx, sy, size) / np.float32(0.08), 0, 1)[..., None]
    box = img[i0:i1, j0:j1] * (1 - 0.45 * shadow)

    lx, ly = local(0.0, 0.0)
    cover = np.clip(0.5 - _sdf(kind, lx, ly, size) / px, 0, 1)[..., None]
    # Light from the top-left so the shape is not a flat stencil.
    dx, dy = xb - np.float32(cx), yb - np.float32(cy)
    shade = 1.0 + 0.18 * np.clip(-(dx + dy) / np.float32(2 * size), -1, 1)[..., None]
    img[i0:i1, j0:j1] = box * (1 - cover) + np.clip(color * shade, 0, 1) * cover
    return img.astype(np.float32), kind


class SyntheticShapes(ImageSource):
    """``num_images`` procedural shape images; with ``use_labels`` the label is the one-hot shape class."""

    def __init__(
        self,
        resolution: int,
        channels: int = 3,
        num_images: int = 10_000,
        use_labels: bool = False,
        seed: int = 0,
    ):
        if resolution < 4:
            raise ValueError(f"resolution must be >= 4, got {resolution}")
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.name = f"synthetic_shapes(seed={seed})"
        self.resolution = int(resolution)
        self.channels = check_channels(channels)
        self.num_images = int(num_images)
        self.use_labels = bool(use_labels)
        self.seed = int(seed)
        self.class_names = CLASS_NAMES

    def __len__(self) -> int:
        return self.num_images

    @property
    def c_dim(self) -> int:
        return len(CLASS_NAMES) if self.use_labels else 0

    def _check(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        return index

    def label(self, index: int) -> np.ndarray:
        index = self._check(index)
        if not self.use_labels:
            return np.zeros((0,), np.float32)
        return one_hot(np.array([shape_class(index, len(CLASS_NAMES))]), len(CLASS_NAMES))[0]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._check(index)
        rgb, _ = render_shape(self.seed, index, self.resolution, len(CLASS_NAMES))
        if self.channels == 1:
            rgb = rgb @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]  # ITU-R 601 luma, as Pillow's "L"
        img = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
        if self.channels == 4:
            img = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=-1)
        return img, self.label(index)
