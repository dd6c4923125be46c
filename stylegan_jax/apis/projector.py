"""Projection of an image into a generator's latent space (GAN inversion), as the StyleGAN2-ADA projector does it.

The optimisation (:func:`project`)
----------------------------------
* Start: ``w_avg`` and the spread ``w_std = sqrt(sum |w - w_avg|^2 / N)``, both from the mapping of
  ``w_avg_samples`` latents ``z = RandomState(123).randn(N, z_dim)`` (with the one-hot label of ``class_idx`` for a
  conditional model: the class's own average, not the all-class ``w_avg`` stored with the weights).
* Variables: one ``w [w_dim]`` broadcast to all ``num_ws`` layers (``space='w'``, the official projector), or one
  w per layer (``space='w+'``, more freedom: closer reconstructions, less editable). StyleGAN2 generators also have
  per-layer noise images (the ``noise_const`` buffers, used with ``noise_mode='const'``): they start as fresh
  N(0, 1) draws and are optimised too, with the multi-scale noise regulariser (squared autocorrelation at a shift
  of one pixel in x and y, at every 2x-downsampled scale down to 8x8, weight ``regularize_noise_weight``) and
  re-normalised to zero mean / unit variance after every step. StyleGAN3 has no noise inputs (nothing to do).
* Adam (betas 0.9 / 0.999, eps 1e-8) with learning rate ``lr * ramp(t)``, ``t = step / num_steps``: linear
  ramp-up over the first ``lr_rampup_length`` of the run, cosine ramp-down over the last ``lr_rampdown_length``.
* Latent noise: every step w gets Gaussian noise of std ``w_std * initial_noise_factor *
  max(0, 1 - t / noise_ramp_length)^2``, decaying to zero by ``noise_ramp_length`` of the run.
* Distance between the synthesised image and the target (both as [0, 255] pixels; larger than 256x256 is
  area-downsampled to 256x256 first, as the official projector does for VGG):

  - ``"vgg16"``: the LPIPS-style VGG16 distance of :mod:`stylegan_jax.metrics.vgg16` (weights supplied by the
    user: torchvision's ``vgg16`` state dict or the StyleGAN2 projector's ``vgg16.pt``);
  - ``"pixel"`` (no weights needed): pixel + multi-scale distance. The images are scaled to [0, 1] and
    area-downsampled by 2 repeatedly down to 8x8 (or their size if smaller); the distance is the sum over these
    scales of the mean squared difference: ``sum_s mean((down_s(a) - down_s(b))^2)``. The full-resolution term is
    the plain MSE (what PSNR measures); the coarse terms weigh low frequencies (colour, layout) more, which keeps
    the early, noisy steps moving towards the right overall picture.

  Both are squared Euclidean distances between *embeddings* (:class:`Distance`), so the target is embedded once.

One jit-compiled, pure step function does a whole iteration (latent noise draw from ``fold_in(key, step)``,
synthesis, distance, regulariser, gradients, Adam, noise re-normalisation; the schedules are computed from the
traced step number), so a run compiles once whatever its length.

Outputs of :func:`project` are a :class:`ProjectionResult`: ``w`` ``[num_ws, w_dim]`` (float32; in ``'w'`` space
every row is the same), the final image, the distance of every step, the optimised noise images (StyleGAN2), and
optionally frames for a video. :func:`save_projected_w` / :func:`load_projected_w` read and write
``projected_w.npz`` (``w``, and ``noise/<layer path>`` for StyleGAN2), which ``stylegan-jax generate --ws`` renders.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import PIL.Image
from flax import traverse_util

from stylegan_jax.apis.postprocessing import denormalize
from stylegan_jax.apis.sampling import Sampler

__all__ = [
    "SPACES",
    "Distance",
    "ProjectionConfig",
    "ProjectionResult",
    "load_projected_w",
    "load_target",
    "noise_buffers",
    "noise_regularizer",
    "pixel_distance",
    "project",
    "psnr",
    "sampler_with_noise",
    "save_projected_w",
    "schedules",
    "vgg16_distance",
]

SPACES = ("w", "w+")
MAX_DISTANCE_SIZE = 256  # images larger than this are area-downsampled before the distance (VGG's scale)
NOISE_REG_MIN_SIZE = 8


# --------------------------------------------------------------------------------------------------------------
# Configuration and results.


@dataclasses.dataclass(frozen=True)
class ProjectionConfig:
    """Settings of :func:`project` (defaults: the StyleGAN2-ADA projector's)."""

    num_steps: int = 1000                  # Optimisation steps.
    space: str = "w"                       # 'w' (one w for all layers) or 'w+' (one w per layer).
    w_avg_samples: int = 10000             # Mapped latents used for the starting point w_avg and w_std.
    initial_learning_rate: float = 0.1     # Peak Adam learning rate.
    initial_noise_factor: float = 0.05     # Latent noise std at step 0, in units of w_std.
    lr_rampdown_length: float = 0.25       # Fraction of the run over which the learning rate ramps down (cosine).
    lr_rampup_length: float = 0.05         # Fraction of the run over which the learning rate ramps up (linear).
    noise_ramp_length: float = 0.75        # Fraction of the run after which the latent noise is zero.
    regularize_noise_weight: float = 1e5   # Weight of the noise regulariser (StyleGAN2 noise images).
    optimize_noise: bool = True            # Optimise StyleGAN2's noise images (else keep the stored ones).

    def validate(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.w_avg_samples < 2:
            raise ValueError(f"w_avg_samples must be >= 2, got {self.w_avg_samples}")
        if self.initial_learning_rate <= 0:
            raise ValueError(f"initial_learning_rate must be positive, got {self.initial_learning_rate}")
        for name in ("lr_rampdown_length", "lr_rampup_length", "noise_ramp_length"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.initial_noise_factor < 0 or self.regularize_noise_weight < 0:
            raise ValueError("initial_noise_factor and regularize_noise_weight must be >= 0")


@dataclasses.dataclass
class ProjectionResult:
    """What :func:`project` returns."""

    w: np.ndarray                          # [num_ws, w_dim] float32: the projected latent.
    image: np.ndarray                      # [H, W, C] uint8: its image (with the optimised noise, StyleGAN2).
    target: np.ndarray                     # [H, W, C] uint8: the target, as compared.
    distances: np.ndarray                  # [num_steps] float32: the distance at every step (before its update).
    final_distance: float                  # Distance of the final image (no latent noise).
    noise: dict[str, np.ndarray]           # StyleGAN2: optimised noise images by buffer path; StyleGAN3: {}.
    distance_name: str                     # 'vgg16' or 'pixel'.
    space: str                             # 'w' or 'w+'.
    frames: np.ndarray | None = None       # [F, H, 2W, C] uint8 (target | projection) when frames were recorded.
    compiles: int = 1                      # Compilations of the step function during the run (1).


@dataclasses.dataclass(frozen=True)
class Distance:
    """A distance ``|embed(params, a) - embed(params, b)|^2`` between [0, 255] NCHW image batches.

    ``embed`` is pure and traceable; ``params`` is passed to the compiled step as an argument (not baked into the
    program), so large weights are not constants of the compiled function.
    """

    name: str                              # Short name ('vgg16', 'pixel').
    description: str                       # One line for the user.
    embed: Callable[[Any, jnp.ndarray], jnp.ndarray]  # (params, images [N, C, H, W] in [0, 255]) -> [N, D].
    params: Any = None                     # Weights for embed (None for the pixel distance).


def _area_downsample(x: jnp.ndarray, factor: int) -> jnp.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // factor, factor, w // factor, factor).mean(axis=(3, 5))


def _cap_size(x: jnp.ndarray) -> jnp.ndarray:
    """Area-downsample NCHW images larger than 256x256 to 256x256 (as the official projector feeds VGG)."""
    h, w = x.shape[2:]
    if max(h, w) <= MAX_DISTANCE_SIZE:
        return x
    if h == w and h % MAX_DISTANCE_SIZE == 0:
        return _area_downsample(x, h // MAX_DISTANCE_SIZE)
    return jax.image.resize(x, (*x.shape[:2], MAX_DISTANCE_SIZE, MAX_DISTANCE_SIZE), "linear", antialias=True)


def _pixel_embed(_params: Any, images: jnp.ndarray) -> jnp.ndarray:
    x = images.astype(jnp.float32) / 255.0
    parts = []
    while True:
        parts.append(x.reshape(x.shape[0], -1) * (1.0 / math.sqrt(x[0].size)))
        h, w = x.shape[2:]
        if min(h, w) <= NOISE_REG_MIN_SIZE or h % 2 or w % 2:
            break
        x = _area_downsample(x, 2)
    return jnp.concatenate(parts, axis=1)


def pixel_distance() -> Distance:
    """The weight-free pixel + multi-scale distance (see the module docstring)."""
    return Distance("pixel", "pixel + multi-scale distance (sum over 2x pyramid levels down to 8x8 of the mean "
                    "squared difference of [0, 1] pixels); pass --vgg16 PATH for the perceptual VGG16 distance",
                    _pixel_embed)


def vgg16_distance(weights: str | Path | Mapping[str, Any]) -> Distance:
    """The LPIPS-style VGG16 distance, from a weights file (see :func:`stylegan_jax.metrics.vgg16.load_vgg16_weights`)
    or already loaded variables."""
    from stylegan_jax.metrics import vgg16

    variables = weights if isinstance(weights, Mapping) else vgg16.load_vgg16_weights(weights)
    source = "" if isinstance(weights, Mapping) else f" from {Path(weights).name}"
    learned = not all(bool(jnp.all(v == 1)) for v in variables["lpips"].values())
    kind = "learned LPIPS weights" if learned else "unit channel weights"
    return Distance("vgg16", f"VGG16 perceptual distance (LPIPS-style, {kind}){source}", vgg16.lpips_embedding,
                    variables)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of two uint8 images."""
    mse = np.mean(np.square(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


# --------------------------------------------------------------------------------------------------------------
# Targets.


def load_target(path: str | Path, resolution: int, channels: int = 3) -> tuple[np.ndarray, str | None]:
    """Read an image file as a target: uint8 ``[resolution, resolution, channels]`` and a message saying how it was
    adapted (None if it already had the model's size). A non-square image is centre-cropped to a square and any
    other size resized with Lanczos, as the official projector does. Raises ``ValueError`` for a missing,
    unreadable or non-image file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"target image '{path}' not found")
    try:
        with PIL.Image.open(path) as im:
            im.load()
            img = im.convert("RGB" if channels == 3 else "L")
    except (PIL.UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"cannot read '{path}' as an image ({type(e).__name__}: {e})") from None
    w, h = img.size
    notes = []
    if w != h:
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2))
        notes.append(f"centre-cropped to {s}x{s}")
    if img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), PIL.Image.LANCZOS)
        notes.append(f"resized to {resolution}x{resolution} (Lanczos)")
    arr = np.asarray(img, np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    message = None
    if notes:
        message = f"target {path.name} is {w}x{h}, the model outputs {resolution}x{resolution}: " + ", ".join(notes)
    return arr, message


def _as_target(target: Any, resolution: int, channels: int) -> np.ndarray:
    x = np.asarray(target)
    if x.dtype != np.uint8:
        raise TypeError(f"target must be a uint8 image [H, W, C], got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[..., None]
    if x.shape != (resolution, resolution, channels):
        raise ValueError(f"target must have shape ({resolution}, {resolution}, {channels}) (the model's output; "
                         f"load_target resizes files), got {x.shape}")
    return x


# --------------------------------------------------------------------------------------------------------------
# Pure pieces of the step.


def schedules(step: jnp.ndarray | float, cfg: ProjectionConfig) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(learning-rate factor, latent-noise factor)`` at ``step`` (traceable): lr ramp-up / cosine ramp-down, and
    the squared linear decay of the latent noise, both as fractions of their peak."""
    t = jnp.asarray(step, jnp.float32) / cfg.num_steps
    ramp = jnp.minimum(1.0, (1.0 - t) / cfg.lr_rampdown_length)
    ramp = 0.5 - 0.5 * jnp.cos(ramp * jnp.pi)
    ramp = ramp * jnp.minimum(1.0, t / cfg.lr_rampup_length)
    noise = jnp.square(jnp.maximum(0.0, 1.0 - t / cfg.noise_ramp_length))
    return ramp, noise


def noise_regularizer(noise: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
    """Sum over noise images and their 2x average-pooled pyramids (down to 8x8) of the squared mean products with
    the image shifted by one pixel in x and in y (penalises spatially correlated noise that would encode the
    image). Traceable."""
    total = jnp.float32(0.0)
    for v in noise.values():
        x = v.astype(jnp.float32)
        while True:
            total = total + jnp.square(jnp.mean(x * jnp.roll(x, 1, axis=1)))
            total = total + jnp.square(jnp.mean(x * jnp.roll(x, 1, axis=0)))
            if x.shape[0] <= NOISE_REG_MIN_SIZE or x.shape[0] % 2 or x.shape[1] % 2:
                break
            x = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2).mean(axis=(1, 3))
    return total


def _normalize_noise(noise: dict[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
    out = {}
    for k, v in noise.items():
        v = v - jnp.mean(v)
        out[k] = v * jax.lax.rsqrt(jnp.mean(jnp.square(v)))
    return out


def _path_key(path: tuple[str, ...]) -> str:
    return "/".join(path)


def noise_buffers(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The generator's noise images (``noise_const`` buffers; StyleGAN2 only, empty for StyleGAN3) by path."""
    flat = traverse_util.flatten_dict(dict(variables.get("buffers", {}) or {}))
    return {_path_key(k): np.asarray(v) for k, v in flat.items() if k[-1] == "noise_const"}


def _with_noise(variables: Mapping[str, Any], noise: Mapping[str, Any]) -> dict:
    if not noise:
        return dict(variables)
    flat = traverse_util.flatten_dict(dict(variables["buffers"]))
    for key, value in noise.items():
        path = tuple(key.split("/"))
        if path not in flat:
            raise ValueError(f"noise image {key!r} is not a buffer of this generator")
        if tuple(np.shape(value)) != tuple(np.shape(flat[path])):
            raise ValueError(f"noise image {key!r} has shape {np.shape(value)}, expected {np.shape(flat[path])}")
        flat[path] = value
    return {**variables, "buffers": traverse_util.unflatten_dict(flat)}


def sampler_with_noise(sampler: Sampler, noise: Mapping[str, Any]) -> Sampler:
    """A Sampler of the same generator whose noise images (``noise_mode='const'``) are ``noise``
    (e.g. a projection's optimised noise)."""
    if not noise:
        return sampler
    return Sampler(sampler.G, _with_noise(sampler.variables, {k: jnp.asarray(v, jnp.float32)
                                                              for k, v in noise.items()}),
                   batch_size=sampler.batch_size, cache=sampler.cache)


def _make_step(synth: Callable, distance: Distance, cfg: ProjectionConfig, num_ws: int) -> Callable:
    """The jit-compiled iteration ``(params, opt_state, variables, dist_params, target_emb, w_std, key, step) ->
    (params, opt_state, distance, image)``; ``params = {'w': [1 or num_ws, w_dim], 'noise': {path: [H, W]}}``."""
    adam = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)

    def loss_fn(params, variables, dist_params, target_emb, latent_noise):
        ws = jnp.broadcast_to(params["w"] + latent_noise, (num_ws, params["w"].shape[-1]))[None]
        img = synth(_with_noise(variables, params["noise"]), ws)
        pixels = _cap_size((img.astype(jnp.float32) + 1.0) * (255.0 / 2.0))
        dist = jnp.sum(jnp.square(distance.embed(dist_params, pixels) - target_emb))
        loss = dist + cfg.regularize_noise_weight * noise_regularizer(params["noise"])
        return loss, (dist, img)

    def step(params, opt_state, variables, dist_params, target_emb, w_std, key, i):
        lr_ramp, noise_ramp = schedules(i, cfg)
        sigma = w_std * cfg.initial_noise_factor * noise_ramp
        latent_noise = sigma * jax.random.normal(jax.random.fold_in(key, i), params["w"].shape)
        grads, (dist, img) = jax.grad(loss_fn, has_aux=True)(params, variables, dist_params, target_emb,
                                                              latent_noise)
        updates, opt_state = adam.update(grads, opt_state, params)
        lr = cfg.initial_learning_rate * lr_ramp
        params = jax.tree_util.tree_map(lambda p, u: p - lr * u, params, updates)
        params = {"w": params["w"], "noise": _normalize_noise(params["noise"])}
        return params, opt_state, dist, img

    return jax.jit(step), adam


def _frame(target: np.ndarray, img: np.ndarray) -> np.ndarray:
    return np.concatenate([target, denormalize(np.asarray(img)[None])[0]], axis=1)


def w_stats(sampler: Sampler, num_samples: int, class_idx: int | None = None) -> tuple[np.ndarray, float]:
    """``(w_avg [w_dim], w_std)`` from the mapping of ``num_samples`` latents ``RandomState(123).randn``."""
    z = np.random.RandomState(123).randn(num_samples, sampler.z_dim)
    # Big chunks (the compiled mapping is shared with the Samplers of the same cache).
    mapper = Sampler(sampler.G, sampler.variables, batch_size=min(num_samples, 1000), cache=sampler.cache)
    w = mapper.ws_from_z(z, class_idx=class_idx)[:, 0, :].astype(np.float64)
    w_avg = w.mean(axis=0)
    w_std = float(np.sqrt(np.sum(np.square(w - w_avg)) / num_samples))
    return w_avg.astype(np.float32), w_std


def project(sampler: Sampler, target: np.ndarray, distance: Distance | None = None,
            config: ProjectionConfig | None = None, seed: int = 0, class_idx: int | None = None,
            video_every: int | None = None, progress: Callable[[int, float], None] | None = None,
            ) -> ProjectionResult:
    """Project ``target`` (uint8 ``[H, W, C]`` at the model's resolution; see :func:`load_target`) into the latent
    space of ``sampler``'s generator. See the module docstring for the method.

    Args:
      sampler: the generator (StyleGAN3-T/-R or StyleGAN2, from :class:`Sampler`).
      target: uint8 image ``[resolution, resolution, img_channels]``.
      distance: :func:`pixel_distance` (default) or :func:`vgg16_distance`.
      config: :class:`ProjectionConfig` (defaults: the official projector's).
      seed: seeds the latent-noise draws and StyleGAN2's initial noise images.
      class_idx: class of a conditional model (required for those).
      video_every: record a frame (target | current image) every this many steps (and the last).
      progress: called after every step as ``progress(step, distance)``.
    """
    cfg = config or ProjectionConfig()
    cfg.validate()
    distance = distance or pixel_distance()
    target = _as_target(target, sampler.img_resolution, sampler.img_channels)
    sampler.labels(1, class_idx)  # a conditional model without a class fails here, before any work
    if video_every is not None and video_every < 1:
        raise ValueError(f"video_every must be >= 1, got {video_every}")

    w_avg, w_std = w_stats(sampler, cfg.w_avg_samples, class_idx)
    num_ws, w_dim = sampler.num_ws, sampler.w_dim
    rows = 1 if cfg.space == "w" else num_ws
    key = jax.random.key(seed)
    noise_key, latent_key = jax.random.split(key)
    noise0 = noise_buffers(sampler.variables) if cfg.optimize_noise else {}
    noise_init = {}
    for i, (k, v) in enumerate(sorted(noise0.items())):
        noise_init[k] = jax.random.normal(jax.random.fold_in(noise_key, i), v.shape, jnp.float32)
    params = {"w": jnp.asarray(np.broadcast_to(w_avg, (rows, w_dim)), jnp.float32), "noise": noise_init}

    synth = sampler.synthesis_fn(noise_mode="const")
    step, adam = _make_step(synth, distance, cfg, num_ws)
    opt_state = adam.init(params)
    target_pixels = jnp.asarray(target.transpose(2, 0, 1)[None], jnp.float32)
    target_emb = jax.jit(distance.embed)(distance.params, _cap_size(target_pixels))
    variables = sampler.variables
    w_std_arr = jnp.float32(w_std)

    distances = np.zeros(cfg.num_steps, np.float32)
    frames = []
    for i in range(cfg.num_steps):
        params, opt_state, dist, img = step(params, opt_state, variables, distance.params, target_emb, w_std_arr,
                                            latent_key, jnp.int32(i))
        distances[i] = float(dist)
        if video_every is not None and (i % video_every == 0 or i == cfg.num_steps - 1):
            frames.append(_frame(target, img[0]))
        if progress is not None:
            progress(i, float(distances[i]))

    w = np.broadcast_to(np.asarray(params["w"]), (num_ws, w_dim)).astype(np.float32).copy()
    noise = {k: np.asarray(v) for k, v in params["noise"].items()}
    final_vars = _with_noise(variables, params["noise"])
    final = jax.jit(synth)(final_vars, jnp.asarray(w[None]))
    image = denormalize(np.asarray(final))[0]
    final_emb = distance.embed(distance.params, _cap_size((final.astype(jnp.float32) + 1.0) * 127.5))
    final_distance = float(jnp.sum(jnp.square(final_emb - target_emb)))
    return ProjectionResult(w=w, image=image, target=target, distances=distances, final_distance=final_distance,
                            noise=noise, distance_name=distance.name, space=cfg.space,
                            frames=np.stack(frames) if frames else None, compiles=int(step._cache_size()))


# --------------------------------------------------------------------------------------------------------------
# projected_w.npz


def save_projected_w(path: str | Path, w: np.ndarray, noise: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write ``projected_w.npz``: ``w`` ``[num_ws, w_dim]`` float32, and ``noise/<path>`` per noise image."""
    path = Path(path)
    w = np.asarray(w, np.float32)
    if w.ndim != 2:
        raise ValueError(f"w must have shape [num_ws, w_dim], got {w.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, w=w, **{f"noise/{k}": np.asarray(v, np.float32) for k, v in (noise or {}).items()})
    return path


def load_projected_w(path: str | Path, num_ws: int | None = None, w_dim: int | None = None,
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read a ``projected_w.npz`` -> ``(w [num_ws, w_dim], noise {path: [H, W]})``. Also accepts the official
    projector's ``w`` of shape ``[1, num_ws, w_dim]``. With ``num_ws`` / ``w_dim`` the shape is checked.
    Raises ``ValueError`` naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"latent file '{path}' not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            files = list(f.files)
            if "w" not in files:
                raise ValueError(f"'{path}' has no 'w' array (has {files}); expected the projected_w.npz written by "
                                 "'stylegan-jax project'")
            w = np.asarray(f["w"], np.float32)
            noise = {k[len("noise/"):]: np.asarray(f[k], np.float32) for k in files if k.startswith("noise/")}
    except ValueError:
        raise
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read '{path}' as an .npz file ({type(e).__name__}: {e})") from None
    if w.ndim == 3 and w.shape[0] == 1:
        w = w[0]
    if w.ndim != 2:
        raise ValueError(f"'{path}': w must have shape [num_ws, w_dim], got {w.shape}")
    if num_ws is not None and w_dim is not None and w.shape != (num_ws, w_dim):
        raise ValueError(f"'{path}': w has shape {w.shape}, but this generator takes [{num_ws}, {w_dim}] "
                         "(projected with another model?)")
    return w, noise
