"""Frechet Inception Distance and Kernel Inception Distance (``fid50k_full`` / ``kid50k_full`` style).

Protocol (as the official ``metrics/frechet_inception_distance.py``, ``kernel_inception_distance.py`` and
``metric_utils.py`` of StyleGAN3):

* Generated images: ``z ~ N(0, I)``, labels drawn from the dataset for conditional generators, NCHW output
  in [-1, 1] -> ``uint8((x * 127.5 + 128).clip(0, 255))`` (truncation toward zero, like ``.to(torch.uint8)``).
  Exactly ``num_gen`` samples are used: batches are always full (one compilation) and the surplus of the last
  one is dropped, as the official ``FeatureStats(max_items=...)`` does.
* Real images: uint8 NCHW, in dataset order, at most ``max_real`` (None = all; ``*_full`` metrics). Grayscale
  images are repeated to RGB.
* Features: the 2048-d pool features of the FID Inception-v3 (:mod:`stylegan_jax.metrics.inception`).
* FID: ``|mu_g - mu_r|^2 + tr(S_g + S_r - 2 sqrtm(S_g S_r))`` with the *biased* covariance
  ``E[x x^T] - mu mu^T`` accumulated in float64 (official; not ``np.cov``'s N - 1).
* KID: mean over ``num_subsets`` random subsets of size ``m = min(n_real, n_gen, max_subset_size)`` of the
  unbiased MMD^2 with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``. We compute it in float64 with a
  seeded generator (the official uses float32 and NumPy's global RNG).

Metric names: ``fid50k_full`` (50k generated vs. the full dataset), ``kid50k_full`` (50k vs. at most 1M real),
``fid50k`` / ``kid50k`` (50k vs. at most 50k real), and generally ``(fid|kid)<N>k[_full]``.

Real-data statistics are cached (when a cache directory is given) per dataset under a key that hashes the
dataset description, the number of images, a fingerprint of the Inception weights and the resize mode.

Differences from the official code: a single device (no multi-GPU interleaving), ``jax.random`` latents (a
different but fixed stream per seed), and the resize convention of :mod:`~stylegan_jax.metrics.inception`.

Any feature network: the statistics part (:class:`FeatureStats`, :func:`frechet_distance`, :func:`kid`) and the
feature passes (:func:`dataset_stats`, :func:`generator_stats` with :func:`make_sample_fn`) take any
``features_fn``; the Inception functions here and the synthetic-shapes metric
(:mod:`stylegan_jax.metrics.shape_quality`) are both built on them. The command-line options are in
:mod:`stylegan_jax.metrics.cli`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from stylegan_jax.metrics.inception import (
    RESIZE_MODES,
    inception_features,
    weights_fingerprint,
)

__all__ = [
    "FeatureStats",
    "MetricSpec",
    "compute_fid",
    "compute_fid_kid",
    "compute_kid",
    "dataset_feature_stats",
    "dataset_stats",
    "default_cache_dir",
    "describe_source",
    "frechet_distance",
    "generator_feature_stats",
    "generator_stats",
    "image_batches",
    "is_fid_metric",
    "is_image_source",
    "kid",
    "label_sampler",
    "make_sample_fn",
    "parse_metric",
]

_CACHE_VERSION = 1  # bump when anything that changes cached features changes
ProgressFn = Callable[[str, int, int | None], None]


# --------------------------------------------------------------------------------------------------------------
# The math.


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2))``.

    As in TTUR / pytorch-fid: if ``sqrtm`` of the product is not finite (singular product, e.g. fewer samples
    than dimensions), ``eps * I`` is added to both covariances and it is retried. Small imaginary parts from
    numerical error are dropped (the official StyleGAN3 code takes the real part unconditionally); a large
    one means the covariances are not valid and is reported with a warning.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(np.diagonal(covmean).imag))
        if imag > 1e-3:
            warnings.warn(f"frechet_distance: sqrtm has imaginary components up to {imag:.3g}; "
                          "taking the real part", RuntimeWarning, stacklevel=2)
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def kid(features1: np.ndarray, features2: np.ndarray, num_subsets: int = 100, max_subset_size: int = 1000,
        seed: int = 0) -> float:
    """Kernel Inception Distance: the unbiased MMD^2 estimate with kernel ``(x.y / d + 1)^3``, averaged over
    ``num_subsets`` pairs of random subsets (without replacement) of size ``min(n1, n2, max_subset_size)``."""
    x_all, y_all = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if x_all.ndim != 2 or y_all.ndim != 2 or x_all.shape[1] != y_all.shape[1]:
        raise ValueError(f"features must be [N, d] with equal d, got {x_all.shape} and {y_all.shape}")
    d = x_all.shape[1]
    m = min(len(x_all), len(y_all), int(max_subset_size))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(x_all)} and {len(y_all)}")
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(int(num_subsets)):
        x = x_all[rng.choice(len(x_all), m, replace=False)]
        y = y_all[rng.choice(len(y_all), m, replace=False)]
        k_xx = (x @ x.T / d + 1.0) ** 3
        k_yy = (y @ y.T / d + 1.0) ** 3
        k_xy = (x @ y.T / d + 1.0) ** 3
        # Within-set sums leave out the diagonal (k(x_i, x_i)), which is what makes the estimate unbiased.
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        total += within - 2.0 * k_xy.sum() / (m * m)
    return float(total / num_subsets)


class FeatureStats:
    """Streaming feature statistics: running float64 sums for mean / covariance, and/or all features.

    ``max_items`` caps the number of rows taken (later rows are dropped), which is how exactly ``num_gen``
    samples are used when batches overshoot.
    """

    def __init__(self, capture_all: bool = False, capture_mean_cov: bool = True, max_items: int | None = None):
        self.capture_all = bool(capture_all)
        self.capture_mean_cov = bool(capture_mean_cov)
        self.max_items = None if max_items is None else int(max_items)
        self.num_items = 0
        self.num_features: int | None = None
        self._all: list[np.ndarray] = []
        self.raw_mean: np.ndarray | None = None
        self.raw_cov: np.ndarray | None = None

    def is_full(self) -> bool:
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x: Any) -> None:
        x = np.asarray(x, np.float32)
        if x.ndim != 2:
            raise ValueError(f"features must be [N, d], got shape {x.shape}")
        if self.max_items is not None:
            x = x[: max(self.max_items - self.num_items, 0)]
        if self.num_features is None:
            self.num_features = x.shape[1]
            if self.capture_mean_cov:
                self.raw_mean = np.zeros([x.shape[1]], np.float64)
                self.raw_cov = np.zeros([x.shape[1], x.shape[1]], np.float64)
        elif x.shape[1] != self.num_features:
            raise ValueError(f"features have {x.shape[1]} dimensions, earlier ones {self.num_features}")
        if len(x) == 0:
            return
        self.num_items += len(x)
        if self.capture_all:
            self._all.append(x)
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self.raw_mean += x64.sum(axis=0)
            self.raw_cov += x64.T @ x64

    def get_all(self) -> np.ndarray:
        if not self.capture_all:
            raise ValueError("these FeatureStats did not capture all features")
        return np.concatenate(self._all, axis=0) if self._all else np.zeros([0, self.num_features or 0], np.float32)

    def get_mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.capture_mean_cov or self.num_items == 0:
            raise ValueError("no mean/covariance captured")
        mean = self.raw_mean / self.num_items
        return mean, self.raw_cov / self.num_items - np.outer(mean, mean)

    def save(self, path: str | Path, meta: Mapping[str, Any] | None = None) -> None:
        """Write to ``path`` (an .npz) atomically: a temporary file then a rename, so readers never see half."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = dict(
            num_items=np.int64(self.num_items), num_features=np.int64(self.num_features or 0),
            max_items=np.int64(-1 if self.max_items is None else self.max_items),
            capture_all=np.bool_(self.capture_all), capture_mean_cov=np.bool_(self.capture_mean_cov),
            meta=np.str_(json.dumps(dict(meta or {}), sort_keys=True, default=str)))
        if self.capture_mean_cov and self.raw_mean is not None:
            arrays.update(raw_mean=self.raw_mean, raw_cov=self.raw_cov)
        if self.capture_all:
            arrays["features"] = self.get_all()
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        with np.load(path, allow_pickle=False) as z:
            max_items = int(z["max_items"])
            s = cls(bool(z["capture_all"]), bool(z["capture_mean_cov"]), None if max_items < 0 else max_items)
            s.num_items = int(z["num_items"])
            s.num_features = int(z["num_features"]) or None
            if "raw_mean" in z:
                s.raw_mean, s.raw_cov = z["raw_mean"], z["raw_cov"]
            if "features" in z:
                s._all = [z["features"]]
        return s


# --------------------------------------------------------------------------------------------------------------
# Metric names.


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # "fid" | "kid"
    num_gen: int
    max_real: int | None  # None: the whole dataset


_METRIC_RE = re.compile(r"^(fid|kid)(\d+)k(_full)?$")


def parse_metric(name: str) -> MetricSpec:
    """``fid50k_full`` -> FID, 50000 generated, all real images; ``kid50k_full`` -> at most 1M real (official);
    ``fid50k`` / ``kid50k`` -> at most as many real images as generated ones."""
    m = _METRIC_RE.match(name)
    if not m or int(m.group(2)) < 1:
        raise ValueError(f"unknown FID/KID metric {name!r}; expected e.g. fid50k_full, kid50k_full, fid10k")
    kind, num_gen, full = m.group(1), int(m.group(2)) * 1000, bool(m.group(3))
    if not full:
        return MetricSpec(name, kind, num_gen, num_gen)
    return MetricSpec(name, kind, num_gen, None if kind == "fid" else 1_000_000)


def is_fid_metric(name: str) -> bool:
    """Whether ``name`` is a metric of this module (the CLI dispatches on it)."""
    return bool(_METRIC_RE.match(name))


# --------------------------------------------------------------------------------------------------------------
# Feature passes.


def default_cache_dir() -> Path:
    """``$STYLEGAN_JAX_CACHE/gan-metrics`` or ``~/.cache/stylegan_jax/gan-metrics`` (the CLI's default)."""
    root = os.environ.get("STYLEGAN_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "stylegan_jax")
    return Path(root) / "gan-metrics"


def describe_source(source: Any) -> dict[str, Any]:
    """What identifies an ImageSource's images for the cache: type, name (its path for folders), length,
    resolution, channels, and for a file/folder the size and modification time, so a replaced dataset at the
    same path is not served stale statistics (in-place edits of files inside a folder are not detected)."""
    desc: dict[str, Any] = dict(type=type(source).__name__, name=str(getattr(source, "name", "")), len=len(source),
                                resolution=getattr(source, "resolution", None),
                                channels=getattr(source, "channels", None))
    path = Path(desc["name"])
    if desc["name"] and path.exists():
        st = path.stat()
        desc.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
    return desc


def is_image_source(data: Any) -> bool:
    return hasattr(data, "load_batch") and hasattr(data, "__len__") and hasattr(data, "resolution")


def image_batches(data: Any, batch_size: int, max_items: int | None) -> Iterator[np.ndarray]:
    """uint8 NCHW batches from an ImageSource (via ``ordered_batches``) or an iterable of batches
    (arrays, ``Batch`` / ``(images, labels)`` tuples)."""
    if is_image_source(data):
        from stylegan_jax.data import ordered_batches

        for batch in ordered_batches(data, batch_size, max_images=max_items, layout="NCHW"):
            yield batch.images
        return
    for item in data:
        images = item[0] if isinstance(item, tuple) else item
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"real-image batches must be uint8 NCHW with 1 or 3 channels, got {images.dtype} "
                             f"{images.shape} (use stylegan_jax.data.ordered_batches(source, batch_size))")
        yield images


def _pad_batch(images: Any, batch_size: int) -> Any:
    n = images.shape[0]
    if n == batch_size:
        return images
    pad = [(0, batch_size - n)] + [(0, 0)] * (images.ndim - 1)
    return np.pad(images, pad) if isinstance(images, np.ndarray) else jnp.pad(images, pad)


def _feed(stats: list[FeatureStats], batches: Iterable[tuple[Any, int]], features_fn: Callable[[Any], jax.Array],
          progress: ProgressFn | None, tag: str, total: int | None) -> None:
    """Run ``features_fn`` on each (batch, valid rows) and append to all stats, one batch behind the dispatch so
    the device works on batch k while the host prepares batch k + 1."""
    pending: tuple[jax.Array, int] | None = None
    done = 0

    def flush(p: tuple[jax.Array, int]) -> None:
        nonlocal done
        out = p[0]
        if isinstance(out, jax.Array) and not out.is_fully_addressable:  # replicated over processes: local copy
            out = out.addressable_data(0)
        feats = np.asarray(out)[: p[1]]
        for s in stats:
            s.append(feats)
        done += p[1]
        if progress is not None:
            progress(tag, done if total is None else min(done, total), total)

    for batch, valid in batches:
        out = features_fn(batch)
        if pending is not None:
            flush(pending)
        pending = (out, valid)
        if all(s.is_full() for s in stats):
            pending = None  # the batch just dispatched is not needed
            break
    if pending is not None:
        flush(pending)


def _cache_file(cache_dir: Path, key: Mapping[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(key["dataset"].get("name", "data"))).name)[-40:] or "data"
    return cache_dir / f"{label}-inception-{key['capture']}-{digest}.npz"


def _dataset_pass(data: Any, features_fn: Callable[[Any], jax.Array], stats: list[FeatureStats], batch_size: int,
                  max_items: int | None, progress: ProgressFn | None) -> None:
    """Feed ``features_fn`` of the real images to every ``stats`` (whose ``max_items`` are the image count)."""
    source = is_image_source(data)
    num_images = (min(len(data), max_items) if max_items is not None else len(data)) if source else None

    def batches() -> Iterator[tuple[np.ndarray, int]]:
        for images in image_batches(data, batch_size, max_items if source else None):
            # Re-chunk to batch_size and pad the remainder: one input shape, one compilation.
            for lo in range(0, images.shape[0], batch_size):
                chunk = images[lo:lo + batch_size]
                yield _pad_batch(chunk, batch_size), chunk.shape[0]

    _feed(stats, batches(), features_fn, progress, "dataset features", num_images)
    if any(st.num_items == 0 for st in stats):
        raise ValueError("the real data yielded no images (a one-shot iterator that an earlier pass consumed? "
                         "pass an ImageSource or a re-iterable such as a list of batches)")


def _check_real(data: Any, batch_size: int, max_items: int | None) -> int | None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not is_image_source(data):
        return None
    num_images = min(len(data), max_items) if max_items is not None else len(data)
    if num_images < 1:
        raise ValueError("the dataset is empty")
    return num_images


def dataset_stats(data: Any, features_fn: Callable[[Any], jax.Array], *, batch_size: int = 64,
                  max_items: int | None = None, capture_all: bool = False, capture_mean_cov: bool = True,
                  progress: ProgressFn | None = None) -> FeatureStats:
    """Statistics of ``features_fn`` (uint8 NCHW batch -> ``[N, d]``: any feature network) over real images, in
    one pass: the first ``max_items`` of an ImageSource (index order, ``stylegan_jax.data.ordered_batches``) or of
    an iterable of uint8 NCHW batches. Batches are re-chunked to ``batch_size`` and the last one padded, so
    ``features_fn`` sees one input shape (one compilation)."""
    if not (capture_all or capture_mean_cov):
        raise ValueError("nothing to capture: set capture_mean_cov and/or capture_all")
    num_images = _check_real(data, batch_size, max_items)
    stats = FeatureStats(capture_all=capture_all, capture_mean_cov=capture_mean_cov,
                         max_items=max_items if num_images is None else num_images)
    _dataset_pass(data, features_fn, [stats], batch_size, max_items, progress)
    return stats


def dataset_feature_stats(data: Any, inception_vars: Mapping[str, Any], *, batch_size: int = 64,
                          max_items: int | None = None, capture_all: bool = False, capture_mean_cov: bool = True,
                          cache_dir: str | Path | None = None, data_desc: Any = None,
                          resize_mode: str = "pytorch-fid", progress: ProgressFn | None = None,
                          ) -> dict[str, FeatureStats]:
    """Inception statistics of real images (:func:`dataset_stats` with the Inception features), with a cache.

    ``data``: an ImageSource (read in index order with ``stylegan_jax.data.ordered_batches``) or an iterable of
    uint8 NCHW batches. Returns ``{'mean_cov': FeatureStats, 'all': FeatureStats}`` (the requested ones) from one
    pass over the data. With ``cache_dir``, each kind is looked up / stored under a key hashing ``data_desc``
    (default for an ImageSource: :func:`describe_source`; an iterable is cached only when ``data_desc`` is
    given, and it must then identify the images, resolution included), the number of images, the weights'
    :func:`~stylegan_jax.metrics.inception.weights_fingerprint` and ``resize_mode``.
    """
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    kinds = [k for k, on in (("mean_cov", capture_mean_cov), ("all", capture_all)) if on]
    if not kinds:
        raise ValueError("nothing to capture: set capture_mean_cov and/or capture_all")
    num_images = _check_real(data, batch_size, max_items)
    source = num_images is not None
    desc = data_desc if data_desc is not None else (describe_source(data) if source else None)
    cache = Path(cache_dir).expanduser() if cache_dir is not None and desc is not None else None

    out: dict[str, FeatureStats] = {}
    files: dict[str, Path] = {}
    if cache is not None:
        fingerprint = weights_fingerprint(inception_vars)
        for kind in kinds:
            key = dict(version=_CACHE_VERSION, dataset=desc if isinstance(desc, dict) else dict(name=str(desc)),
                       num_images=num_images if source else max_items, weights=fingerprint,
                       resize_mode=resize_mode, capture=kind)
            files[kind] = _cache_file(cache, key)
            if files[kind].is_file():
                try:
                    out[kind] = FeatureStats.load(files[kind])
                except (OSError, ValueError, KeyError) as e:  # a damaged cache entry is recomputed, not fatal
                    warnings.warn(f"ignoring unreadable cache file {files[kind]}: {e}", RuntimeWarning, stacklevel=2)
    missing = [k for k in kinds if k not in out]
    if not missing:
        return out

    limit = num_images if source else max_items
    fresh = {k: FeatureStats(capture_all=k == "all", capture_mean_cov=k == "mean_cov", max_items=limit)
             for k in missing}

    def features(images: np.ndarray) -> jax.Array:
        return inception_features(inception_vars, images, layout="NCHW", resize_mode=resize_mode)

    _dataset_pass(data, features, list(fresh.values()), batch_size, max_items, progress)
    for kind, stats in fresh.items():
        if kind in files:
            stats.save(files[kind], meta=dict(dataset=desc, num_images=stats.num_items))
    out.update(fresh)
    return out


def label_sampler(G: Any, data: Any, gen_labels: Any, seed: int) -> Callable[[int], np.ndarray | None]:
    """Labels for conditional generators, drawn uniformly from the dataset's labels (as the official code)."""
    c_dim = int(getattr(G, "c_dim", 0) or 0)
    if c_dim == 0:
        return lambda n: None
    rng = np.random.default_rng([seed, 1])
    if gen_labels is not None:
        table = np.asarray(gen_labels, np.float32).reshape(-1, c_dim)
        return lambda n: table[rng.integers(len(table), size=n)]
    if is_image_source(data) and getattr(data, "c_dim", 0) == c_dim:
        return lambda n: np.stack([data.label(int(i)) for i in rng.integers(len(data), size=n)]).astype(np.float32)
    raise ValueError(f"the generator is conditional (c_dim={c_dim}): pass gen_labels (an array of dataset labels "
                     "to draw from) or an ImageSource with labels as the data")


def make_sample_fn(G: Any, batch_size: int, psi: float = 1.0,
                   mesh: jax.sharding.Mesh | None = None) -> Callable[[Any, Any, Any, Any], jax.Array]:
    """A jit-compiled ``sample(g_vars, seed, batch_index, c) -> uint8 [batch_size, C, H, W]``: the metrics' samples.

    Latents are ``jax.random.normal(fold_in(key(seed), batch_index), (batch_size, z_dim))`` (pass ``seed`` and
    ``batch_index`` as ``np.int32``: host values, one compilation); noise inputs (StyleGAN2),
    random as in the official metrics, draw from ``fold_in`` of that key by 1; ``G.apply(g_vars, z, c,
    truncation_psi=psi)`` (NCHW in [-1, 1]) -> uint8 as the official. One compilation serves every key, index
    and weights of the same structure. With ``mesh`` (a ``'data'`` axis), the samples of a batch are split over
    its devices and the images come back replicated, so every process of a multi-process run can read them
    (every process must then make the same calls); ``c`` must be a NumPy array (or None) there.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    z_dim = int(G.z_dim)
    split = None
    if mesh is not None:
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        if "data" not in mesh.axis_names or batch_size % mesh.shape["data"]:
            raise ValueError(f"batch_size {batch_size} must be divisible by the mesh's 'data' axis "
                             f"({dict(mesh.shape)})")
        split = NamedSharding(mesh, P("data"))

    def sample(g_vars: Any, seed: jax.Array, index: jax.Array, c: Any) -> jax.Array:
        k = jax.random.fold_in(jax.random.key(seed), index)
        z = jax.random.normal(k, (batch_size, z_dim), jnp.float32)
        if split is not None:
            z = jax.lax.with_sharding_constraint(z, split)
            c = None if c is None else jax.lax.with_sharding_constraint(c, split)
        # Generators with noise inputs (StyleGAN2) use random noise, as the official metrics call G(z, c) with its
        # default noise_mode='random'; the 'noise' stream is ignored by StyleGAN3.
        img = G.apply(g_vars, z, c, truncation_psi=psi, rngs={"noise": jax.random.fold_in(k, 1)})
        # Official: (img * 127.5 + 128).clamp(0, 255).to(torch.uint8): the cast truncates toward zero.
        return jnp.clip(img * 127.5 + 128.0, 0.0, 255.0).astype(jnp.uint8)

    if mesh is None:
        return jax.jit(sample)
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    return jax.jit(sample, out_shardings=NamedSharding(mesh, P()))


def generator_stats(G: Any, variables: Mapping[str, Any], features_fn: Callable[[Any], jax.Array], *,
                    num_gen: int, batch_size: int = 64, psi: float = 1.0, seed: int = 0,
                    capture_all: bool = False, capture_mean_cov: bool = True,
                    label_fn: Callable[[int], np.ndarray | None] | None = None,
                    progress: ProgressFn | None = None, sample_fn: Callable | None = None) -> FeatureStats:
    """Statistics of ``features_fn`` (uint8 NCHW batch -> ``[N, d]``: any feature network) over ``num_gen``
    generated images (:func:`make_sample_fn`'s protocol with ``key(seed)``; exactly ``num_gen``: the surplus of
    the last batch is dropped). ``sample_fn``: a :func:`make_sample_fn` result to reuse (its batch size must be
    ``batch_size``), so that repeated evaluations do not compile the generator again."""
    if num_gen < 1 or batch_size < 1:
        raise ValueError(f"num_gen and batch_size must be >= 1, got {num_gen} and {batch_size}")
    label_fn = label_fn or (lambda n: None)
    sample = sample_fn or make_sample_fn(G, batch_size, psi)

    def batches() -> Iterator[tuple[jax.Array, int]]:
        for index in range(math.ceil(num_gen / batch_size)):
            c = label_fn(batch_size)
            c = None if c is None else np.asarray(c, np.float32)
            yield sample(variables, np.int32(seed), np.int32(index), c), batch_size

    stats = FeatureStats(capture_all=capture_all, capture_mean_cov=capture_mean_cov, max_items=num_gen)
    _feed([stats], batches(), features_fn, progress, "generator features", num_gen)
    return stats


def generator_feature_stats(G: Any, variables: Mapping[str, Any], inception_vars: Mapping[str, Any], *,
                            num_gen: int, batch_size: int = 64, psi: float = 1.0, seed: int = 0,
                            capture_all: bool = False, capture_mean_cov: bool = True,
                            label_fn: Callable[[int], np.ndarray | None] | None = None,
                            resize_mode: str = "pytorch-fid", progress: ProgressFn | None = None) -> FeatureStats:
    """Inception statistics of ``num_gen`` generated images (:func:`generator_stats` with the Inception
    features): ``G.apply(variables, z, c, truncation_psi=psi)`` (NCHW in [-1, 1]) -> uint8 as the official ->
    features. The generator step and the extractor are each jit-compiled once (fixed batch shape); latents are
    ``jax.random.normal(fold_in(key(seed), batch_index))`` and noise inputs (StyleGAN2), random as in the
    official metrics, draw from ``fold_in`` of that key by 1."""

    def features(images: jax.Array) -> jax.Array:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"the generator must return NCHW images with 1 or 3 channels, got {images.shape}")
        return inception_features(inception_vars, images, layout="NCHW", resize_mode=resize_mode)

    return generator_stats(G, variables, features, num_gen=num_gen, batch_size=batch_size, psi=psi, seed=seed,
                           capture_all=capture_all, capture_mean_cov=capture_mean_cov, label_fn=label_fn,
                           progress=progress)


# --------------------------------------------------------------------------------------------------------------
# Metrics.


def compute_fid_kid(G: Any, variables: Mapping[str, Any], data: Any, inception_vars: Mapping[str, Any],
                    metrics: Iterable[str | MetricSpec] = ("fid50k_full", "kid50k_full"), *, batch_size: int = 64,
                    psi: float = 1.0, seed: int = 0, num_subsets: int = 100, max_subset_size: int = 1000,
                    cache_dir: str | Path | None = None, data_desc: Any = None, gen_labels: Any = None,
                    resize_mode: str = "pytorch-fid", progress: ProgressFn | None = None) -> dict[str, float]:
    """Several FID/KID metrics (names as :func:`parse_metric`) from one pass over the data and one over the
    generator: ``{name: value}``. ``metrics`` are names or :class:`MetricSpec` s (any ``num_gen`` / ``max_real``).
    ``data`` as :func:`dataset_feature_stats`; ``gen_labels`` (conditional generators with iterable data) is an
    array of dataset labels to draw from."""
    specs = list({s.name: s for s in (m if isinstance(m, MetricSpec) else parse_metric(m) for m in metrics)}.values())
    if not specs:
        raise ValueError("no metrics requested")
    bad = [s for s in specs if s.kind not in ("fid", "kid") or s.num_gen < 1]
    if bad:
        raise ValueError(f"invalid metric spec {bad[0]} (kind must be 'fid' or 'kid', num_gen >= 1)")
    label_fn = label_sampler(G, data, gen_labels, seed)  # before the data pass: a missing-labels error is cheap
    fid_specs, kid_specs = [s for s in specs if s.kind == "fid"], [s for s in specs if s.kind == "kid"]

    # Real side: one pass serves every metric that uses the same images (fid50k_full and kid50k_full on a dataset
    # of at most 1M images); otherwise one pass per distinct image count, which needs re-iterable data.
    def images_used(max_real: int | None) -> int | None:
        if not is_image_source(data):
            return max_real
        return len(data) if max_real is None else min(len(data), max_real)

    real: dict[tuple[str, int | None], FeatureStats] = {}
    for count in dict.fromkeys(images_used(s.max_real) for s in specs):
        need = {s.kind for s in specs if images_used(s.max_real) == count}
        got = dataset_feature_stats(data, inception_vars, batch_size=batch_size, max_items=count,
                                    capture_all="kid" in need, capture_mean_cov="fid" in need, cache_dir=cache_dir,
                                    data_desc=data_desc, resize_mode=resize_mode, progress=progress)
        for kind, stats in got.items():
            real[(kind, count)] = stats

    # Generator side: the first num_gen samples of one stream serve every metric.
    num_gen = max(s.num_gen for s in specs)
    gen = generator_feature_stats(G, variables, inception_vars, num_gen=num_gen, batch_size=batch_size, psi=psi,
                                  seed=seed, capture_all=bool(kid_specs) or len({s.num_gen for s in fid_specs}) > 1,
                                  capture_mean_cov=bool(fid_specs), label_fn=label_fn,
                                  resize_mode=resize_mode, progress=progress)
    gen_all = gen.get_all() if gen.capture_all else None

    results: dict[str, float] = {}
    for s in specs:
        if s.kind == "fid":
            if s.num_gen == num_gen:
                mu_g, sigma_g = gen.get_mean_cov()
            else:
                sub = FeatureStats()
                sub.append(gen_all[: s.num_gen])
                mu_g, sigma_g = sub.get_mean_cov()
            mu_r, sigma_r = real[("mean_cov", images_used(s.max_real))].get_mean_cov()
            results[s.name] = frechet_distance(mu_g, sigma_g, mu_r, sigma_r)
        else:
            results[s.name] = kid(gen_all[: s.num_gen], real[("all", images_used(s.max_real))].get_all(),
                                  num_subsets, max_subset_size, seed)
    return {s.name: results[s.name] for s in specs}


def compute_fid(G: Any, variables: Mapping[str, Any], data: Any, inception_vars: Mapping[str, Any],
                num_gen: int = 50000, batch_size: int = 64, psi: float = 1.0, seed: int = 0, *,
                max_real: int | None = None, **kwargs: Any) -> float:
    """FID of ``num_gen`` generated images against the real ``data`` (all of it by default: ``fid50k_full``).
    Keyword arguments as :func:`compute_fid_kid` (``cache_dir``, ``data_desc``, ``gen_labels``, ``resize_mode``)."""
    return _single("fid", G, variables, data, inception_vars, num_gen, batch_size, psi, seed, max_real, **kwargs)


def compute_kid(G: Any, variables: Mapping[str, Any], data: Any, inception_vars: Mapping[str, Any],
                num_gen: int = 50000, batch_size: int = 64, psi: float = 1.0, seed: int = 0, *,
                max_real: int | None = 1_000_000, num_subsets: int = 100, max_subset_size: int = 1000,
                **kwargs: Any) -> float:
    """KID of ``num_gen`` generated images against at most ``max_real`` real ones (``kid50k_full`` defaults)."""
    return _single("kid", G, variables, data, inception_vars, num_gen, batch_size, psi, seed, max_real,
                   num_subsets=num_subsets, max_subset_size=max_subset_size, **kwargs)


def _single(kind: str, G: Any, variables: Any, data: Any, inception_vars: Any, num_gen: int, batch_size: int,
            psi: float, seed: int, max_real: int | None, **kwargs: Any) -> float:
    if num_gen < 1:
        raise ValueError(f"num_gen must be >= 1, got {num_gen}")
    spec = MetricSpec(kind, kind, int(num_gen), max_real)
    return compute_fid_kid(G, variables, data, inception_vars, [spec], batch_size=batch_size, psi=psi, seed=seed,
                           **kwargs)[kind]
