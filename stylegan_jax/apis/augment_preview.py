"""Pictures of what the discriminator sees under ADA: each augmentation of a spec at several percentiles, and
training images through the whole pipeline at a given ``p``.

- :func:`preview_grid`: one row per augmentation of the spec (alone, in the official percentile mode: every draw
  at that percentile) plus a last row with the whole spec, one column per percentile; a PIL image with labels.
- :func:`augment_images`: images through :func:`stylegan_jax.ops.augment.augment` at probability ``p`` (what the
  training loop writes to ``images/reals_augmented.png``), in chunks so that large images fit in memory.
- :func:`real_grid_images`: a fixed random choice of training images (``images/reals.png``).

``stylegan-jax augment-preview`` (:mod:`stylegan_jax.apis.augment_preview_cli`) writes :func:`preview_grid` to a
PNG. Nothing here reads or writes files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import PIL.ImageDraw

from stylegan_jax.apis.sampling import FunctionCache
from stylegan_jax.ops.augment import AugmentSpec, augment, make_spec

DEFAULT_PERCENTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _jitted(spec: AugmentSpec, percentile_mode: bool, cache: FunctionCache | None) -> Callable:
    """The jitted augmentation of ``spec`` (``(x, key, p)``, or ``(x, key, percentile)`` in percentile mode), kept
    in ``cache`` under the spec (a caller that augments again, e.g. the training loop at every grid, holds one so
    that it compiles once; None: a new function, compiled on its first call)."""
    def build() -> Callable:
        if percentile_mode:
            return jax.jit(lambda x, key, pct: augment(x, 1.0, key, spec, debug_percentile=pct))
        return jax.jit(lambda x, key, p: augment(x, p, key, spec))

    if cache is None:
        return build()
    return cache.get(spec, ("augment", percentile_mode), build)


def _single(spec: AugmentSpec, name: str) -> AugmentSpec:
    """``spec`` with only augmentation ``name`` enabled (its knobs kept)."""
    off = {k: 0.0 for k in spec.enabled() if k != name}
    return dataclasses.replace(spec, **off)


def augment_images(images: np.ndarray, p: float, spec: str | AugmentSpec = "bgc", seed: int = 0,
                   chunk: int = 8, cache: FunctionCache | None = None) -> np.ndarray:
    """NCHW float images in [-1, 1] through the augmentation pipeline at probability ``p`` (draws from ``seed``;
    sample ``i`` keeps its draws whatever ``chunk`` is). ``cache``: where the compiled augmentation is kept between
    calls (a :class:`~stylegan_jax.apis.sampling.FunctionCache` the caller holds); None compiles it for this call."""
    spec = make_spec(spec)
    images = np.asarray(images, np.float32)
    fn = _jitted(spec, False, cache)
    key = jax.random.PRNGKey(seed)
    out = []
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk]
        k = jax.random.fold_in(key, start // chunk)
        out.append(np.asarray(fn(jnp.asarray(x), k, jnp.float32(p))))
    return np.concatenate(out)


def real_grid_images(data: Any, n: int, seed: int = 0) -> np.ndarray:
    """``n`` training images (NCHW float32 in [-1, 1]) of a ``DataPipeline``, a fixed random choice of its
    examples (without reading from its iterator, so the training order is untouched)."""
    from stylegan_jax.data.input_pipeline import to_model_images

    raw = np.asarray(data.raw)
    idx = np.random.RandomState(seed % (1 << 31)).choice(len(raw), size=min(n, len(raw)), replace=False)
    images, _ = data.source.load_batch([int(raw[i]) for i in np.sort(idx)])
    return to_model_images(images, "NCHW")


def preview_rows(spec: str | AugmentSpec = "bgc") -> list[tuple[str, AugmentSpec]]:
    """The rows of :func:`preview_grid`: ``(label, spec)`` for each enabled augmentation alone, then the whole
    spec."""
    spec = make_spec(spec)
    names = spec.enabled()
    if not names:
        raise ValueError("the augmentation spec enables nothing to preview")
    rows = [(name, _single(spec, name)) for name in names]
    if len(names) > 1:
        rows.append(("all", spec))
    return rows


def preview_images(image: np.ndarray, spec: str | AugmentSpec = "bgc",
                   percentiles: Sequence[float] = DEFAULT_PERCENTILES, seed: int = 0,
                   cache: FunctionCache | None = None) -> tuple[list[str], np.ndarray]:
    """``(row labels, images [rows, 1 + len(percentiles), C, H, W])``: the input image, then each row's spec at
    each percentile (official percentile mode). ``cache`` as in :func:`augment_images`."""
    image = np.asarray(image, np.float32)
    if image.ndim != 3:
        raise ValueError(f"preview_images expects one CHW image, got shape {image.shape}")
    for pct in percentiles:
        if not 0 < pct < 1:
            raise ValueError(f"percentiles must be strictly between 0 and 1 (0 and 1 are infinite draws), got {pct}")
    key = jax.random.PRNGKey(seed)
    labels, rows = [], []
    x = jnp.asarray(image[None])
    for label, single in preview_rows(spec):
        fn = _jitted(single, True, cache)
        cells = [image] + [np.asarray(fn(x, key, jnp.float32(pct)))[0] for pct in percentiles]
        labels.append(label)
        rows.append(np.stack(cells))
    return labels, np.stack(rows)


def preview_grid(image: np.ndarray, spec: str | AugmentSpec = "bgc",
                 percentiles: Sequence[float] = DEFAULT_PERCENTILES, seed: int = 0, scale: int = 1,
                 cache: FunctionCache | None = None) -> PIL.Image.Image:
    """A labelled grid: one row per augmentation (and one for the whole spec), the input image in the first column
    and one column per percentile. ``image`` is CHW float in [-1, 1] with 1 or 3 channels. ``cache`` as in
    :func:`augment_images`."""
    from stylegan_jax.apis.postprocessing import denormalize

    labels, cells = preview_images(image, spec, percentiles, seed, cache)
    rows, cols, _, h, w = cells.shape
    pix = denormalize(np.clip(cells.reshape((rows * cols,) + cells.shape[2:]), -1, 1))  # uint8 NHWC
    if pix.shape[-1] == 1:
        pix = np.repeat(pix, 3, axis=-1)
    if scale > 1:
        pix = pix.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    pad, left, top = 2, 70, 14
    canvas = PIL.Image.new("RGB", (left + cols * (w + pad), top + rows * (h + pad)), (255, 255, 255))
    draw = PIL.ImageDraw.Draw(canvas)
    draw.text((left, 1), "input", fill=(0, 0, 0))
    for j, pct in enumerate(percentiles, start=1):
        draw.text((left + j * (w + pad), 1), f"{pct:g}", fill=(0, 0, 0))
    for i, label in enumerate(labels):
        y = top + i * (h + pad)
        draw.text((2, y + h // 2 - 5), label, fill=(0, 0, 0))
        for j in range(cols):
            canvas.paste(PIL.Image.fromarray(pix[i * cols + j]), (left + j * (w + pad), y))
    return canvas


__all__ = ["DEFAULT_PERCENTILES", "augment_images", "preview_grid", "preview_images", "preview_rows",
           "real_grid_images"]
