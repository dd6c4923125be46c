"""Sampling from a trained (or converted) generator: seeds -> images, grids, style mixing, interpolation videos.

The notebook path is three lines::

    from stylegan_jax.apis.sampling import Sampler
    s = Sampler.from_checkpoint("runs/quickstart")      # or Sampler(G, variables)
    s.show(s.images(seeds=[0, 1, 2], psi=0.7))           # uint8 [N, H, W, C]; s.grid(imgs, cols=4) -> PIL.Image

Conventions follow the official StyleGAN3 scripts so that a seed names the same image here and there:

* seed -> ``z = np.random.RandomState(seed).randn(1, z_dim)`` (float64 normal draws, cast to float32 by the
  mapping network);
* ``translate`` / ``rotate`` build the forward similarity transform of ``gen_images.py`` and hand its *inverse*
  to the synthesis input (``synthesis.input.transform`` semantics);
* ``class_idx`` -> one-hot label; ``psi`` truncates towards ``w_avg`` like ``G(z, c, truncation_psi=psi)``;
* images are converted to uint8 exactly like the official scripts
  (:func:`stylegan_jax.apis.postprocessing.denormalize`).

StyleGAN3 and StyleGAN2 generators (:class:`stylegan_jax.networks.stylegan3.Generator`,
:class:`stylegan_jax.networks.stylegan2.StyleGAN2Generator`) are both supported; they differ in two places:

* ``noise_mode``: StyleGAN3 has no noise inputs, so the official ``noise_mode`` argument is accepted and ignored.
  StyleGAN2 adds per-pixel noise to every synthesis layer: ``'const'`` (the default, like ``gen_images.py``)
  uses the noise images stored with the weights, ``'none'`` adds no noise, and ``'random'`` draws fresh noise,
  reproducibly: the noise of an image is drawn from its *noise seed* ``s``, i.e. the image of a row is exactly
  ``G.apply(variables, ws_row[None], noise_mode='random', rngs={'noise': jax.random.key(s)},
  method=G.synthesize)`` whatever batch or chunk it is computed in. The noise seed of a per-seed image is its
  seed (``images``), of a style-mixing cell the seed of its row (the image whose layers are replaced), of every
  interpolation frame the first seed (so the noise does not flicker); :meth:`Sampler.synthesize` takes them as
  ``noise_seeds`` (default: the row numbers 0..N-1). The keys are JAX's default (threefry) PRNG: the same on
  every backend, but a JAX release that changes its PRNG defaults would change the random-noise pictures.
* ``translate`` / ``rotate``: StyleGAN2 has no input transform; anything but the identity raises ``ValueError``.

Every call goes through jit-compiled functions (mapping and synthesis; for StyleGAN2 one synthesis function per
noise mode) kept in the Sampler's :class:`FunctionCache`: its own, or one handed to several Samplers so that those
of one architecture (checkpoints of one run, a reloaded notebook model) compile once. Inputs are processed in
chunks of ``batch_size`` with the last chunk padded, so a Sampler compiles once per chunk size rather than once per
request size.
"""

from __future__ import annotations

import collections
import math
import re
import threading
import warnings
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image

from stylegan_jax.apis.postprocessing import denormalize

__all__ = [
    "FunctionCache",
    "Sampler",
    "architecture_key",
    "image_grid",
    "is_stylegan2",
    "make_transform",
    "parse_range",
    "parse_vec2",
    "save_video",
    "show",
    "slerp",
    "z_from_seeds",
]

Seeds = int | str | Iterable[int]
T = TypeVar("T")
NOISE_MODES = ("const", "random", "none")
SEED_LIMIT = 2**32  # np.random.RandomState (z) and the uint32 noise seeds both take [0, 2**32)

# ----------------------------------------------------------------------------------------------------------------
# Seeds, ranges, transforms.


def parse_range(spec: Seeds) -> list[int]:
    """``"0-7,10"`` -> ``[0, 1, ..., 7, 10]`` (inclusive ranges, the official scripts' syntax).

    Integers and iterables of integers are passed through as a list, so APIs can take either form.
    """
    if isinstance(spec, bool):
        raise TypeError("parse_range: expected a range string or integers, got a bool")
    if isinstance(spec, int | np.integer):
        return [int(spec)]
    if not isinstance(spec, str):
        out = []
        for x in spec:
            if isinstance(x, bool) or not isinstance(x, int | np.integer):
                raise TypeError(f"parse_range: expected integers, got {x!r}")
            out.append(int(x))
        return out
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"parse_range: empty element in {spec!r}")
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f"parse_range: descending range {part!r} in {spec!r}")
            out.extend(range(lo, hi + 1))
        elif re.fullmatch(r"\d+", part):
            out.append(int(part))
        else:
            raise ValueError(f"parse_range: cannot parse {part!r} in {spec!r} (expected e.g. '0-7,10')")
    return out


def parse_vec2(spec: str | Sequence[float]) -> tuple[float, float]:
    """``"0.1,-0.05"`` -> ``(0.1, -0.05)``; a pair is passed through."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    if len(parts) != 2:
        raise ValueError(f"expected two numbers 'X,Y', got {spec!r}")
    try:
        return float(parts[0]), float(parts[1])
    except (TypeError, ValueError):
        raise ValueError(f"expected two numbers 'X,Y', got {spec!r}") from None


def z_from_seeds(seeds: Seeds, z_dim: int) -> np.ndarray:
    """Latents ``[N, z_dim]`` (float64), row ``i`` = ``np.random.RandomState(seeds[i]).randn(1, z_dim)``."""
    seeds = parse_range(seeds)
    for s in seeds:
        # RandomState accepts exactly the 32-bit unsigned range; say so instead of numpy's terse message.
        if not 0 <= s < SEED_LIMIT:
            raise ValueError(f"seed {s} is out of range: seeds must be integers in [0, 2**32)")
    if not seeds:
        return np.zeros((0, z_dim), np.float64)
    return np.concatenate([np.random.RandomState(s).randn(1, z_dim) for s in seeds], axis=0)


def make_transform(translate: Sequence[float] = (0.0, 0.0), angle_deg: float = 0.0) -> np.ndarray:
    """The matrix for the synthesis input's ``transform``: the *inverse* of the image-space similarity that
    rotates by ``angle_deg`` and translates by ``translate`` (in units of the image size: 1 = full width).

    The forward matrix is the one ``gen_images.py`` builds, ``[[c, s, tx], [-s, c, ty], [0, 0, 1]]``; the
    network expects its inverse (so that it never inverts a matrix itself). float64 ``[3, 3]``.
    """
    tx, ty = parse_vec2(translate)
    a = math.radians(float(angle_deg))
    c, s = math.cos(a), math.sin(a)
    forward = np.array([[c, s, tx], [-s, c, ty], [0.0, 0.0, 1.0]], np.float64)
    return np.linalg.inv(forward)


def slerp(a: np.ndarray, b: np.ndarray, t: float, axis: int = -1, eps: float = 1e-7) -> np.ndarray:
    """Spherical interpolation between vectors ``a`` and ``b`` along ``axis`` (not normalised: the result's
    norm moves from ``|a|`` to ``|b|``); falls back to linear interpolation where they are (anti)parallel or zero."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    na = np.linalg.norm(a, axis=axis, keepdims=True)
    nb = np.linalg.norm(b, axis=axis, keepdims=True)
    cos = np.sum(a * b, axis=axis, keepdims=True) / np.maximum(na * nb, eps)
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    sin = np.sin(omega)
    degenerate = (sin < eps) | (na < eps) | (nb < eps)
    safe = np.where(degenerate, 1.0, sin)
    wa = np.where(degenerate, 1.0 - t, np.sin((1.0 - t) * omega) / safe)
    wb = np.where(degenerate, t, np.sin(t * omega) / safe)
    return wa * a + wb * b


# ----------------------------------------------------------------------------------------------------------------
# Images: grids, display, video.


def _as_uint8_nhwc(images: Any) -> np.ndarray:
    if isinstance(images, PIL.Image.Image):
        images = np.asarray(images)
    if isinstance(images, list | tuple):
        images = np.stack([np.asarray(x) for x in images])
    x = np.asarray(images)
    if x.dtype != np.uint8:
        raise TypeError(f"expected uint8 images [N, H, W, C] (e.g. from Sampler.images), got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[None, :, :, None]
    elif x.ndim == 3:
        x = x[None] if x.shape[-1] in (1, 3, 4) else x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected images [N, H, W, C] with C in (1, 3, 4), got shape {x.shape}")
    return x


def _to_pil(img: np.ndarray) -> PIL.Image.Image:
    """One uint8 HWC image -> PIL, grey images as mode 'L'."""
    if img.shape[-1] == 1:
        return PIL.Image.fromarray(img[..., 0], "L")
    return PIL.Image.fromarray(img, "RGB" if img.shape[-1] == 3 else "RGBA")


def image_grid(images: Any, cols: int | None = None, pad: int = 0) -> PIL.Image.Image:
    """Lay uint8 images ``[N, H, W, C]`` out row-major in ``cols`` columns (default ``ceil(sqrt(N))``), with
    ``pad`` black pixels between cells; empty trailing cells are black."""
    x = _as_uint8_nhwc(images)
    n, h, w, c = x.shape
    if n == 0:
        raise ValueError("image_grid: no images")
    cols = int(cols) if cols else math.ceil(math.sqrt(n))
    if cols < 1:
        raise ValueError(f"image_grid: cols must be >= 1, got {cols}")
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    canvas = np.zeros((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, c), np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        canvas[r * (h + pad): r * (h + pad) + h, k * (w + pad): k * (w + pad) + w] = x[i]
    return _to_pil(canvas)


def show(images: Any, cols: int | None = None) -> PIL.Image.Image | None:
    """Show a grid of uint8 images. In IPython / Jupyter the grid is displayed inline and ``None`` is returned
    (so the cell does not render it twice); elsewhere the grid is returned as a PIL image, nothing is opened."""
    grid = images if isinstance(images, PIL.Image.Image) else image_grid(images, cols)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return grid
    if get_ipython() is None:
        return grid
    display(grid)
    return None


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


def save_video(frames: Any, path: str | Path, fps: float = 30.0) -> Path:
    """Write uint8 frames ``[F, H, W, C]`` to ``path``: ``.gif`` with Pillow (looping), ``.mp4`` / ``.mov`` /
    ``.mkv`` / ``.webm`` / ``.avi`` with imageio's ffmpeg plugin (``pip install imageio imageio-ffmpeg``).

    Raises ``RuntimeError`` saying what to install when a video format is asked for without ffmpeg support, and
    ``ValueError`` for other suffixes.
    """
    path = Path(path)
    x = _as_uint8_nhwc(frames)
    if x.shape[0] == 0:
        raise ValueError("save_video: no frames")
    if fps <= 0:
        raise ValueError(f"save_video: fps must be positive, got {fps}")
    suffix = path.suffix.lower()
    if suffix == ".gif":
        path.parent.mkdir(parents=True, exist_ok=True)
        pil = [_to_pil(f) for f in x]
        # GIF stores delays in centiseconds; Pillow takes milliseconds and rounds down to 10 ms.
        pil[0].save(path, save_all=True, append_images=pil[1:], duration=max(int(round(1000 / fps)), 10), loop=0,
                    optimize=False)
        return path
    if suffix in VIDEO_SUFFIXES:
        try:
            import imageio.v2 as imageio
            import imageio_ffmpeg  # noqa: F401  (imageio's ffmpeg plugin needs it; fail here with a clear message)
        except ImportError as e:
            raise RuntimeError(
                f"writing {suffix} videos needs imageio with its ffmpeg plugin ({e.name} is not installed): "
                "pip install imageio imageio-ffmpeg  -- or write a .gif, which only needs Pillow") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        if x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        # macro_block_size=1: do not let imageio resize frames; StyleGAN resolutions are even, which yuv420p needs.
        with imageio.get_writer(path, fps=fps, macro_block_size=1) as writer:
            for f in x:
                writer.append_data(f[..., :3])
        return path
    raise ValueError(f"save_video: unsupported file type {path.suffix!r}; use .gif or one of {VIDEO_SUFFIXES}")


# ----------------------------------------------------------------------------------------------------------------
# Compiled forward passes, kept by whoever owns the cache.


def architecture_key(G: Any) -> str:
    """What identifies ``G``'s computation for :class:`FunctionCache`: the module's repr, which lists every field
    (flax modules with dict fields are not hashable). A generator rebuilt from its checkpoint config has the same
    key as the one that was saved."""
    return repr(G)


class FunctionCache:
    """Functions built once per generator architecture and reused: the Sampler's jitted mapping and synthesis, the
    visualizer's layer list and per-layer activation functions. ``jax.jit`` caches compilations per function
    object, so handing the same object to every Sampler of one architecture is what lets a reloaded checkpoint (a
    later step, a notebook re-run) skip the compile.

    Whoever owns the cache decides how widely it is shared: a :class:`Sampler` makes its own unless given one;
    the visualizer holds one for all the checkpoints it loads; a notebook or a test can hand one to several
    Samplers (``Sampler(..., cache=c)``, ``stylegan_jax.cli.main(argv, function_cache=c)``). Entries are keyed by
    ``(architecture_key(G), name)``; at most ``max_entries`` are kept, the least recently used dropped first.
    Safe to use from several threads (a value may be built twice by a race; one of them is kept).
    """

    def __init__(self, max_entries: int = 32) -> None:
        if max_entries < 1:
            raise ValueError(f"FunctionCache: max_entries must be >= 1, got {max_entries}")
        self.max_entries = int(max_entries)
        self._entries: collections.OrderedDict[tuple[str, Hashable], Any] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, G: Any, name: Hashable, build: Callable[[], T]) -> T:
        """The entry ``name`` of ``G``'s architecture, made by ``build()`` if absent."""
        key = (architecture_key(G), name)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        value = build()  # outside the lock: building may trace the model (seconds)
        with self._lock:
            value = self._entries.setdefault(key, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)


def is_stylegan2(G: Any) -> bool:
    """True for a generator without an input transform (the StyleGAN2 baseline). Prefer the generator's own
    capability flags (``G.has_input_transform``, ``G.has_noise_inputs``; see ``stylegan_jax.networks.generator``)."""
    return not G.has_input_transform


def _random_noise_synthesis(G: Any) -> Callable:
    """``(variables, ws [N, ...], seeds uint32 [N]) -> images``: row i with noise drawn from ``key(seeds[i])``."""
    def one(v: Any, w: jnp.ndarray, seed: jnp.ndarray) -> jnp.ndarray:
        return G.apply(v, w[None], noise_mode="random", rngs={"noise": jax.random.key(seed)},
                       method=G.synthesize)[0]

    # One key per row (vmap) rather than one per batch: a row's noise must not depend on its batch neighbours,
    # its position, or the chunk padding.
    return lambda v, ws, seeds: jax.vmap(one, in_axes=(None, 0, 0))(v, ws, seeds)


def _sampler_fns(G: Any) -> dict[str, Callable]:
    """The jitted functions of a Sampler of ``G`` (compiled on first use of each shape)."""
    fns = {
        # psi == 1 takes the exact no-truncation path (ws untouched), like the official mapping.
        "map": jax.jit(lambda v, z, c: G.apply(v, z, c, 1.0, None, method=G.map)),
        # psi traced (one compile for every psi value), cutoff static.
        "map_trunc": jax.jit(lambda v, z, c, psi, cutoff: G.apply(v, z, c, psi, cutoff, method=G.map),
                             static_argnums=4),
        # noise_mode static: 'const' and 'none' are different graphs for generators with noise inputs (compiled
        # on first use of each); t is None for generators without an input transform.
        "synthesize": jax.jit(lambda v, ws, t, mode: G.apply(v, ws, t, noise_mode=mode, method=G.synthesize),
                              static_argnums=3),
    }
    if G.has_noise_inputs:
        fns["synthesize_random"] = jax.jit(_random_noise_synthesis(G))
    return fns


def _chunked(fn: Callable[..., Any], batch_size: int, *arrays: np.ndarray | None) -> np.ndarray:
    """``fn(*chunk)`` over chunks of ``batch_size`` rows (axis 0) of the arrays (``None`` passed through),
    concatenated. The last chunk is padded by repeating its last row, so only one batch shape is ever compiled
    for a given ``min(batch_size, N)``."""
    n = next(a.shape[0] for a in arrays if a is not None)
    if n == 0:
        raise ValueError("nothing to generate: empty batch")
    b = max(1, min(batch_size, n))
    outs = []
    for start in range(0, n, b):
        stop = min(start + b, n)
        chunk = []
        for a in arrays:
            if a is None:
                chunk.append(None)
                continue
            part = a[start:stop]
            if stop - start < b:
                part = np.concatenate([part, np.repeat(part[-1:], b - (stop - start), axis=0)], axis=0)
            chunk.append(part)
        outs.append(np.asarray(fn(*chunk))[: stop - start])
    return np.concatenate(outs, axis=0)


# ----------------------------------------------------------------------------------------------------------------
# The sampler.


def _generator_fact(name: str, kind: type, doc: str) -> property:
    """A read-only Sampler property: ``kind(self.G.<name>)``."""
    return property(lambda self: kind(getattr(self.G, name)), doc=doc)


class Sampler:
    """Generate images from a StyleGAN3 generator ``G`` (``stylegan_jax.networks.stylegan3.Generator``) or a
    StyleGAN2 one (``stylegan_jax.networks.stylegan2.StyleGAN2Generator``) and its variables
    ``{'params', 'ema', 'buffers'}``. See the module docstring for ``noise_mode`` and the noise seeds.

    Args:
      G: the generator module (unbound).
      variables: its variables (NumPy or JAX arrays); placed on the default device once.
      batch_size: rows per compiled forward pass; larger requests are processed in chunks.
      cache: where the compiled functions are kept (:class:`FunctionCache`); Samplers of one architecture given
        the same cache compile once. Default: a cache of this Sampler's own.
    """

    def __init__(self, G: Any, variables: dict, batch_size: int = 8, cache: FunctionCache | None = None):
        for collection in G.variable_collections:
            if collection not in variables:
                raise ValueError(f"Sampler: variables lack the {collection!r} collection (have {sorted(variables)})")
        if batch_size < 1:
            raise ValueError(f"Sampler: batch_size must be >= 1, got {batch_size}")
        self.G = G
        self.variables = jax.device_put({k: variables.get(k, {}) for k in ("params", "ema", "buffers")})
        self.batch_size = int(batch_size)
        self.cache = cache if cache is not None else FunctionCache()
        self._fns = self.cache.get(G, "sampler", lambda: _sampler_fns(G))

    @classmethod
    def from_checkpoint(cls, path: str | Path, step: int | None = None, which: str = "G_ema", impl: str = "fast",
                        batch_size: int = 8, cache: FunctionCache | None = None) -> Sampler:
        """Load the generator of a checkpoint written by ``stylegan-jax train`` or ``stylegan-jax convert``
        (a workdir, its ``checkpoints`` directory, or one step directory). Raises ``CheckpointError``."""
        from stylegan_jax.checkpoint import load_generator

        G, variables = load_generator(path, step=step, impl=impl, which=which)
        return cls(G, variables, batch_size=batch_size, cache=cache)

    # --- model facts ---------------------------------------------------------------------------------------

    z_dim = _generator_fact("z_dim", int, "Input latent (Z) dimensionality.")
    c_dim = _generator_fact("c_dim", int, "Label dimensionality (0 = unconditional).")
    w_dim = _generator_fact("w_dim", int, "Intermediate latent (W) dimensionality.")
    num_ws = _generator_fact("num_ws", int, "Number of ws the synthesis network takes.")
    img_resolution = _generator_fact("img_resolution", int, "Output image size.")
    img_channels = _generator_fact("img_channels", int, "Output image channels.")
    has_input_transform = _generator_fact("has_input_transform", bool,
                                          "Does the generator take translate / rotate (StyleGAN3's Fourier-feature "
                                          "input)?")
    has_noise_inputs = _generator_fact("has_noise_inputs", bool, "Does ``noise_mode`` matter (StyleGAN2's per-pixel "
                                                                 "noise)?")

    @property
    def stylegan2(self) -> bool:
        """Older spelling of ``not has_input_transform``; use the capability flags instead."""
        return not self.G.has_input_transform

    @property
    def w_avg(self) -> np.ndarray:
        """The truncation centre ``[w_dim]``."""
        return np.asarray(self.variables["ema"]["mapping"]["w_avg"])

    # --- labels --------------------------------------------------------------------------------------------

    def labels(self, n: int, class_idx: int | None = None) -> np.ndarray | None:
        """One-hot labels ``[n, c_dim]`` for ``class_idx`` (``None`` for an unconditional generator).

        Raises ``ValueError`` for a conditional generator without ``class_idx`` or an index out of range;
        warns (like ``gen_images.py``) and ignores ``class_idx`` for an unconditional one.
        """
        if self.c_dim == 0:
            if class_idx is not None:
                warnings.warn(f"class_idx={class_idx} ignored: the generator is unconditional (c_dim=0)", stacklevel=3)
            return None
        if class_idx is None:
            raise ValueError(f"the generator is conditional (c_dim={self.c_dim}): a class label is required "
                             f"(class_idx / --class, 0..{self.c_dim - 1})")
        if isinstance(class_idx, bool) or not isinstance(class_idx, int | np.integer):
            raise TypeError(f"class_idx must be an integer, got {class_idx!r}")
        if not 0 <= class_idx < self.c_dim:
            raise ValueError(f"class_idx={class_idx} is out of range for c_dim={self.c_dim} (0..{self.c_dim - 1})")
        c = np.zeros((n, self.c_dim), np.float32)
        c[:, int(class_idx)] = 1
        return c

    def _resolve_c(self, n: int, c: Any, class_idx: int | None) -> np.ndarray | None:
        if c is None:
            return self.labels(n, class_idx)
        if class_idx is not None:
            raise ValueError("pass either c or class_idx, not both")
        if self.c_dim == 0:
            return None
        c = np.asarray(c, np.float32)
        if c.ndim == 1:
            c = np.broadcast_to(c, (n, c.shape[0]))
        if c.shape != (n, self.c_dim):
            raise ValueError(f"c must have shape [{n}, {self.c_dim}] (or [{self.c_dim}]), got {c.shape}")
        return c

    # --- latents -------------------------------------------------------------------------------------------

    def z_from_seeds(self, seeds: Seeds) -> np.ndarray:
        """``[N, z_dim]`` latents of the official seed convention."""
        return z_from_seeds(seeds, self.z_dim)

    def ws_from_z(self, z: Any, c: Any = None, psi: float = 1.0, truncation_cutoff: int | None = None,
                  class_idx: int | None = None) -> np.ndarray:
        """Mapping: ``z [N, z_dim]`` (+ labels) -> ``ws [N, num_ws, w_dim]`` (float32), truncated by ``psi``."""
        z = np.asarray(z, np.float32)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [N, {self.z_dim}], got {z.shape}")
        c = self._resolve_c(z.shape[0], c, class_idx)
        if truncation_cutoff is not None:
            truncation_cutoff = int(truncation_cutoff)
        if float(psi) == 1.0:
            return _chunked(lambda z_, c_: self._fns["map"](self.variables, z_, c_), self.batch_size, z, c)
        psi_arr = jnp.float32(psi)
        return _chunked(lambda z_, c_: self._fns["map_trunc"](self.variables, z_, c_, psi_arr, truncation_cutoff),
                        self.batch_size, z, c)

    def ws_from_seeds(self, seeds: Seeds, psi: float = 1.0, class_idx: int | None = None,
                      truncation_cutoff: int | None = None) -> np.ndarray:
        """``ws [N, num_ws, w_dim]`` of the seeds (official z convention), truncated by ``psi``."""
        return self.ws_from_z(self.z_from_seeds(seeds), psi=psi, truncation_cutoff=truncation_cutoff,
                              class_idx=class_idx)

    # --- synthesis -----------------------------------------------------------------------------------------

    def _check_noise_mode(self, noise_mode: str | None) -> str:
        if noise_mode is not None and noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        return noise_mode or "const"

    def input_transform(self, translate: Sequence[float] = (0.0, 0.0), rotate: float = 0.0, transform: Any = None,
                        ) -> np.ndarray | None:
        """The 3x3 matrix handed to a StyleGAN3 synthesis input (:func:`make_transform` ``(translate, rotate)``, or
        ``transform`` if given). StyleGAN2 has no input transform: None for the identity, else ``ValueError``."""
        if self.G.has_input_transform:
            t = make_transform(translate, rotate) if transform is None else np.asarray(transform, np.float64)
            if t.shape != (3, 3):
                raise ValueError(f"transform must be a 3x3 matrix, got shape {t.shape}")
            return t
        moved = parse_vec2(translate) != (0.0, 0.0) or float(rotate) != 0.0
        if moved or (transform is not None and not np.array_equal(np.asarray(transform), np.eye(3))):
            raise ValueError("translate / rotate need a StyleGAN3 generator: this is a StyleGAN2 generator, which "
                             "has no input transform (use translate=(0, 0), rotate=0)")
        return None

    def _noise_seeds(self, noise_seeds: Seeds | None, n: int) -> np.ndarray:
        """uint32 ``[n]``: one noise seed per row (None = the row numbers; a single seed = every row)."""
        seeds = list(range(n)) if noise_seeds is None else parse_range(noise_seeds)
        if len(seeds) == 1:
            seeds = seeds * n
        if len(seeds) != n:
            raise ValueError(f"noise_seeds: expected one seed per image ({n}) or a single seed, got {len(seeds)}")
        bad = [x for x in seeds if not 0 <= x < SEED_LIMIT]
        if bad:
            raise ValueError(f"noise seed {bad[0]} is out of range: noise seeds must be integers in [0, 2**32)")
        return np.asarray(seeds, np.uint32)

    def synthesize(self, ws: Any, translate: Sequence[float] = (0.0, 0.0), rotate: float = 0.0,
                   to_uint8: bool = True, transform: Any = None, noise_mode: str | None = None,
                   noise_seeds: Seeds | None = None) -> np.ndarray:
        """``ws [N, num_ws, w_dim]`` -> uint8 images ``[N, H, W, C]`` (or, with ``to_uint8=False``, the
        generator's float32 NCHW output).

        StyleGAN3: the input transform is :func:`make_transform` ``(translate, rotate)`` unless an explicit
        ``transform`` (the 3x3 inverse matrix) is given. It is always passed explicitly, as ``gen_images.py``
        always writes it, so a matrix left in the checkpoint's buffers does not leak into the images.
        ``noise_mode`` and ``noise_seeds`` are ignored.

        StyleGAN2: ``noise_mode`` ``'const'`` (default, also for None), ``'random'`` or ``'none'``; with
        ``'random'`` row ``i`` draws its noise from ``jax.random.key(noise_seeds[i])`` (``noise_seeds``: one
        seed per row, or a single seed for all rows; default the row numbers ``0..N-1``). A non-identity
        transform raises ``ValueError``.
        """
        mode = self._check_noise_mode(noise_mode)
        ws = np.asarray(ws, np.float32)
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {ws.shape}")
        t = self.input_transform(translate, rotate, transform)
        t = None if t is None else jnp.asarray(t, jnp.float32)
        if mode == "random" and self.G.has_noise_inputs:
            seeds = self._noise_seeds(noise_seeds, ws.shape[0])
            imgs = _chunked(lambda w_, s_: self._fns["synthesize_random"](self.variables, w_, s_), self.batch_size,
                            ws, seeds)
        else:
            mode = mode if self.G.has_noise_inputs else "const"  # one compiled graph when noise does not matter
            imgs = _chunked(lambda w_: self._fns["synthesize"](self.variables, w_, t, mode), self.batch_size, ws)
        return denormalize(imgs) if to_uint8 else imgs

    def synthesis_fn(self, translate: Sequence[float] = (0.0, 0.0), rotate: float = 0.0, transform: Any = None,
                     noise_mode: str | None = None) -> Callable[[Any, jnp.ndarray], jnp.ndarray]:
        """A pure, traceable ``(variables, ws [N, num_ws, w_dim]) -> float32 NCHW images`` for use inside
        ``jax.jit`` / ``jax.grad`` (e.g. optimising ws, or StyleGAN2's ``noise_const`` buffers, which it reads
        from ``variables['buffers']``). Same transform rules as :meth:`synthesize`; ``noise_mode`` ``'const'``
        (default) or ``'none'`` (``'random'`` needs per-row seeds: use :meth:`synthesize`)."""
        mode = self._check_noise_mode(noise_mode)
        if mode == "random":
            raise ValueError("synthesis_fn: noise_mode='random' is not supported here; use 'const' or 'none'")
        t = self.input_transform(translate, rotate, transform)
        t = None if t is None else jnp.asarray(t, jnp.float32)
        G = self.G
        return lambda v, ws: G.apply(v, ws, t, noise_mode=mode, method=G.synthesize)

    def images_from_z(self, z: Any, c: Any = None, psi: float = 1.0, translate: Sequence[float] = (0.0, 0.0),
                      rotate: float = 0.0, noise_mode: str | None = None, truncation_cutoff: int | None = None,
                      class_idx: int | None = None, to_uint8: bool = True, noise_seeds: Seeds | None = None,
                      ) -> np.ndarray:
        """``G(z, c, psi)`` with the input transform of ``(translate, rotate)``: uint8 ``[N, H, W, C]``, or the
        float32 NCHW generator output with ``to_uint8=False``. ``noise_mode`` / ``noise_seeds``: see
        :meth:`synthesize` (ignored by StyleGAN3, which has no noise inputs)."""
        self._check_noise_mode(noise_mode)
        self.input_transform(translate, rotate)  # a StyleGAN2 refusal before any work
        ws = self.ws_from_z(z, c, psi, truncation_cutoff, class_idx)
        return self.synthesize(ws, translate, rotate, to_uint8=to_uint8, noise_mode=noise_mode,
                               noise_seeds=noise_seeds)

    def images(self, seeds: Seeds, psi: float = 1.0, class_idx: int | None = None,
               translate: Sequence[float] = (0.0, 0.0), rotate: float = 0.0, truncation_cutoff: int | None = None,
               noise_mode: str | None = None) -> np.ndarray:
        """uint8 images ``[N, H, W, C]`` of the seeds (a list, a range or a string like ``"0-7,10"``), exactly
        as ``gen_images.py --seeds ... --trunc psi --class K --translate X,Y --rotate DEG --noise-mode M`` would
        write them (``noise_mode='random'``: each image's noise is drawn from its own seed, so a seed always gives
        the same picture)."""
        seeds = parse_range(seeds)
        return self.images_from_z(self.z_from_seeds(seeds), psi=psi, translate=translate, rotate=rotate,
                                  noise_mode=noise_mode, truncation_cutoff=truncation_cutoff, class_idx=class_idx,
                                  noise_seeds=seeds if seeds else None)

    # --- style mixing --------------------------------------------------------------------------------------

    def _check_styles(self, col_styles: Seeds) -> list[int]:
        styles = sorted(set(parse_range(col_styles)))
        bad = [s for s in styles if not 0 <= s < self.num_ws]
        if not styles or bad:
            raise ValueError(f"col_styles must be a non-empty set of layer indices in 0..{self.num_ws - 1} "
                             f"(this generator has {self.num_ws} ws), got {list(parse_range(col_styles))}")
        return styles

    def style_mix(self, row_seeds: Seeds, col_seeds: Seeds, col_styles: Seeds = range(0, 7), psi: float = 1.0,
                  class_idx: int | None = None, translate: Sequence[float] = (0.0, 0.0), rotate: float = 0.0,
                  noise_mode: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Style mixing: for each (row, column) pair, the row seed's ws with the layers ``col_styles`` replaced by
        the column seed's. With StyleGAN2 ``noise_mode='random'``, row and column images use their own seed's
        noise and each mixed image its row seed's (so a row's mixed images differ only in the mixed layers).

        Returns uint8 ``(row_images [R, H, W, C], col_images [K, H, W, C], mixed [R, K, H, W, C])``.
        """
        rows, cols = parse_range(row_seeds), parse_range(col_seeds)
        if not rows or not cols:
            raise ValueError("style mixing needs at least one row seed and one column seed")
        styles = self._check_styles(col_styles)
        self._check_noise_mode(noise_mode)
        self.input_transform(translate, rotate)
        ws_rows = self.ws_from_seeds(rows, psi, class_idx)
        ws_cols = self.ws_from_seeds(cols, psi, class_idx)
        mixed = np.repeat(ws_rows[:, None], len(cols), axis=1)  # [R, K, num_ws, w_dim]
        mixed[:, :, styles] = ws_cols[None, :, styles]
        all_ws = np.concatenate([ws_rows, ws_cols, mixed.reshape(-1, self.num_ws, self.w_dim)])
        noise_seeds = rows + cols + np.repeat(rows, len(cols)).tolist()  # same order as all_ws
        imgs = self.synthesize(all_ws, translate, rotate, noise_mode=noise_mode, noise_seeds=noise_seeds)
        r, k = len(rows), len(cols)
        return imgs[:r], imgs[r:r + k], imgs[r + k:].reshape(r, k, *imgs.shape[1:])

    def style_mixing_grid(self, row_seeds: Seeds, col_seeds: Seeds, col_styles: Seeds = range(0, 7),
                          psi: float = 1.0, class_idx: int | None = None, translate: Sequence[float] = (0.0, 0.0),
                          rotate: float = 0.0, noise_mode: str | None = None) -> PIL.Image.Image:
        """The official style-mixing figure: a ``(R + 1) x (K + 1)`` grid whose first row shows the column
        sources, first column the row sources (top-left cell black), and cell (i, j) the row seed ``i`` with the
        layers ``col_styles`` taken from column seed ``j``."""
        row_imgs, col_imgs, mixed = self.style_mix(row_seeds, col_seeds, col_styles, psi, class_idx, translate,
                                                   rotate, noise_mode)
        r, k, h, w, c = mixed.shape
        cells = np.zeros((r + 1, k + 1, h, w, c), np.uint8)
        cells[0, 1:] = col_imgs
        cells[1:, 0] = row_imgs
        cells[1:, 1:] = mixed
        return image_grid(cells.reshape(-1, h, w, c), cols=k + 1)

    # --- interpolation -------------------------------------------------------------------------------------

    def interpolate(self, seeds: Seeds, frames_per_transition: int = 30, kind: str = "linear", psi: float = 1.0,
                    class_idx: int | None = None, loop: bool = False, translate: Sequence[float] = (0.0, 0.0),
                    rotate: float = 0.0, noise_mode: str | None = None) -> np.ndarray:
        """uint8 frames ``[F, H, W, C]`` moving through the seeds' ws (after truncation) in W space.

        ``kind='linear'`` interpolates linearly; ``'slerp'`` spherically around ``w_avg`` (the truncation
        centre), which keeps the distance from the average roughly constant between keyframes. Frame
        ``i * frames_per_transition`` is exactly keyframe ``i``; without ``loop`` the last frame is the last
        seed (``F = (K - 1) * frames_per_transition + 1``), with ``loop`` the path returns towards the first
        seed (``F = K * frames_per_transition``, ready to repeat). With StyleGAN2 ``noise_mode='random'`` every
        frame uses the first seed's noise, so the noise does not flicker from frame to frame.
        """
        keys = parse_range(seeds)
        if len(keys) < 2:
            raise ValueError(f"interpolation needs at least two seeds, got {keys}")
        self._check_noise_mode(noise_mode)
        self.input_transform(translate, rotate)
        return self.interpolate_ws(self.ws_from_seeds(keys, psi, class_idx), frames_per_transition, kind, loop,
                                   translate, rotate, noise_mode, noise_seed=keys[0])

    def interpolate_ws(self, key_ws: Any, frames_per_transition: int = 30, kind: str = "linear", loop: bool = False,
                       translate: Sequence[float] = (0.0, 0.0), rotate: float = 0.0, noise_mode: str | None = None,
                       noise_seed: int = 0) -> np.ndarray:
        """:meth:`interpolate` between given keyframe latents ``key_ws [K, num_ws, w_dim]`` (e.g. projected ones,
        or a mix of those and seeds' ws); with StyleGAN2 ``noise_mode='random'`` every frame draws its noise from
        ``noise_seed``."""
        key_ws = np.asarray(key_ws, np.float64)
        if key_ws.ndim != 3 or key_ws.shape[1:] != (self.num_ws, self.w_dim) or key_ws.shape[0] < 2:
            raise ValueError(f"interpolation needs at least two keyframes of shape [{self.num_ws}, {self.w_dim}], "
                             f"got key_ws of shape {key_ws.shape}")
        if frames_per_transition < 1:
            raise ValueError(f"frames_per_transition must be >= 1, got {frames_per_transition}")
        if kind not in ("linear", "slerp"):
            raise ValueError(f"kind must be 'linear' or 'slerp', got {kind!r}")
        self._check_noise_mode(noise_mode)
        self.input_transform(translate, rotate)
        w_avg = self.w_avg.astype(np.float64)
        pairs = list(zip(key_ws[:-1], key_ws[1:], strict=True))
        if loop:
            pairs.append((key_ws[-1], key_ws[0]))
        frames = []
        for a, b in pairs:
            frames.append(a)  # exact keyframe, not a float round trip through the interpolation formula
            for i in range(1, frames_per_transition):
                t = i / frames_per_transition
                if kind == "linear":
                    frames.append((1 - t) * a + t * b)
                else:
                    frames.append(w_avg + slerp(a - w_avg, b - w_avg, t))
        if not loop:
            frames.append(key_ws[-1])
        return self.synthesize(np.stack(frames).astype(np.float32), translate, rotate, noise_mode=noise_mode,
                               noise_seeds=noise_seed)

    # --- display -------------------------------------------------------------------------------------------

    @staticmethod
    def grid(images: Any, cols: int | None = None, pad: int = 0) -> PIL.Image.Image:
        """See :func:`image_grid`."""
        return image_grid(images, cols, pad)

    @staticmethod
    def show(images: Any, cols: int | None = None) -> PIL.Image.Image | None:
        """See :func:`show`."""
        return show(images, cols)

    @staticmethod
    def save_video(frames: Any, path: str | Path, fps: float = 30.0) -> Path:
        """See :func:`save_video`."""
        return save_video(frames, path, fps)

    def __repr__(self) -> str:
        return (f"Sampler({self.img_resolution}x{self.img_resolution}x{self.img_channels}, z_dim={self.z_dim}, "
                f"c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, batch_size={self.batch_size})")
