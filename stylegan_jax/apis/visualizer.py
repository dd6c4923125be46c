"""``stylegan-jax visualize``: a browser visualizer for the checkpoints of a workdir.

A FastAPI app serving one static page (``stylegan_jax/apis/static/visualizer/``: plain HTML/JS/CSS, no build
step) and a small JSON API. It renders with the jit-compiled JAX generator of
:class:`stylegan_jax.apis.sampling.Sampler`, so training checkpoints work as they are, over an SSH port-forward
to a headless training box.

Endpoints (errors are JSON ``{"error": "..."}``, as in ``serve``)::

    GET /                      the page
    GET /api/info[?step=N]     checkpoint steps, model facts of step N (default: the latest), layers, limits
    GET /api/steps             the checkpoint steps present now (the page polls it to follow a training run)
    GET /api/render?...        JSON: the image (PNG data URL), render time, the reproducing command, and
                               optionally one synthesis layer's activations (``layer``, ``channel``)
    GET /api/download?...      the PNG as an attachment (watermarked when the service has a key)
    GET /healthz               {"status": "ok", "in_flight": n, ...}

Render parameters (query string; unknown ones are refused): ``step`` (checkpoint step, default latest),
``seed`` (a number in [0, 2**32 - 1]: an integer is the official seed convention; a fractional seed
``s = k + t`` interpolates linearly in W between the ws of seeds ``k`` and ``k + 1``, like dragging in the
official visualizer), ``psi`` (truncation, [-1, 2]), ``class`` (conditional models), ``tx``, ``ty`` (translate
the input grid, image widths) and ``rotate`` (degrees; StyleGAN3 only), ``noise`` (``const`` / ``random`` /
``none``; StyleGAN2 only), ``mix`` (a second seed whose ws replace the layers ``mix_lo..mix_hi``), ``layer``
and ``channel`` (an integer channel, or ``rms`` for the root mean square over channels).

Pixel parity with ``stylegan-jax generate``: for an integer seed the image is computed by exactly the call
``generate`` makes for the printed command (``Sampler.images([seed], ...)`` for one seed, ``Sampler.style_mix``
for ``--style-mix --rows SEED --cols MIX``, whose ``style_mix.png`` holds the image in its bottom-right cell), in
a batch of one like ``generate`` for one seed, and encoded losslessly; the page shows those bytes. A fractional
seed has no ``generate`` equivalent (generate takes integer seeds): the command shown is then the one for
``floor(seed)``, marked as such. The activations come from a second forward pass with Flax's
``capture_intermediates`` (the networks are not modified), so they never touch the image's computation.

Concurrency as in ``serve`` (:class:`stylegan_jax.apis.server.Limiter`): at most ``max_concurrency`` renders run
at once in worker threads and ``max_queue`` more wait; beyond that 503 with ``Retry-After: 1``. The page itself
keeps one request in flight and sends only the latest settings when it returns.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import logging
import math
import re
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from stylegan_jax.apis.inference import PSI_RANGE, SEED_MAX, payload_bits
from stylegan_jax.apis.sampling import NOISE_MODES, FunctionCache, Sampler
from stylegan_jax.apis.server import (
    Limiter,
    busy_response,
    encode_png,
    error_response,
    install_error_handlers,
    parse_int,
)

__all__ = [
    "STATIC_DIR",
    "CheckpointSet",
    "RenderSettings",
    "VisualizerInputError",
    "activation_image",
    "create_app",
    "generate_command",
    "layer_activation",
    "parse_settings",
    "render_image",
    "synthesis_layers",
]

STATIC_DIR = Path(__file__).parent / "static" / "visualizer"
TRANSLATE_MAX = 4.0  # image widths: beyond a few the Fourier input is faded out entirely
ROTATE_MAX = 3600.0  # degrees
logger = logging.getLogger("stylegan_jax.visualizer")
PARAMS = ("step", "seed", "psi", "class", "tx", "ty", "rotate", "noise", "mix", "mix_lo", "mix_hi", "layer",
          "channel")


class VisualizerInputError(ValueError):
    """A render parameter is malformed or does not fit the model; the message names it (answered 400)."""


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints of one workdir.


def _checkpoint_dir(path: Path) -> tuple[Path, int | None]:
    """The directory holding ``<step>/`` checkpoints and the step ``path`` names, if it is one step directory."""
    path = path.absolute()
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if path.name.isdigit() and (path / "meta").is_dir() and (path / "state").is_dir():
        return path.parent, int(path.name)
    return path, None


class CheckpointSet:
    """The checkpoints of a workdir (``checkpoints/<step>/``), a ``checkpoints`` directory, a ``convert`` output or
    one step directory, with a small cache of loaded :class:`Sampler` s. The directory is rescanned on every
    :meth:`steps` call, so checkpoints written by a running training appear without a restart.

    Args:
      path: what ``generate --ckpt`` accepts (``CheckpointError`` if it holds no checkpoint).
      which: ``'G_ema'`` or ``'G'``, the weights to sample from.
      cache_size: loaded steps kept in memory (the compiled functions are shared by all steps anyway: every
        Sampler loaded here uses this set's :class:`~stylegan_jax.apis.sampling.FunctionCache`, ``self.functions``).
      functions: that cache, if it is to be shared further (default: a new one of 64 entries).
    """

    def __init__(self, path: str | Path, which: str = "G_ema", cache_size: int = 2,
                 functions: FunctionCache | None = None) -> None:
        from stylegan_jax.checkpoint import _resolve

        self.path = Path(path)
        self.which = which
        self.cache_size = max(1, int(cache_size))
        _, latest = _resolve(self.path)  # CheckpointError naming the path if there is nothing to load
        self.directory, self.pinned = _checkpoint_dir(self.path)
        self.default_step = self.pinned if self.pinned is not None else latest
        self._cache: collections.OrderedDict[int, Sampler] = collections.OrderedDict()
        self._lock = threading.Lock()
        # Sampler functions, the layer list and a few dozen per-layer activation functions per architecture.
        self.functions = functions if functions is not None else FunctionCache(max_entries=64)

    def steps(self) -> list[int]:
        """The steps present now (complete orbax checkpoints only: a step being written has a temporary name)."""
        try:
            found = sorted(int(p.name) for p in self.directory.iterdir()
                           if p.is_dir() and p.name.isdigit() and (p / "meta").is_dir())
        except OSError:
            found = []
        return found or [self.default_step]

    def loaded(self, step: int) -> bool:
        """Whether ``step`` is in the cache (using it costs no loading)."""
        with self._lock:
            return step in self._cache

    def sampler(self, step: int) -> Sampler:
        """The Sampler of ``step`` (loaded on first use; ``CheckpointError`` if unreadable)."""
        with self._lock:
            s = self._cache.get(step)
            if s is not None:
                self._cache.move_to_end(step)
                return s
            s = Sampler.from_checkpoint(self.directory, step=step, which=self.which, batch_size=1,
                                        cache=self.functions)
            self._cache[step] = s
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return s


# ---------------------------------------------------------------------------------------------------------------------
# Settings.


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    """One picture's settings (validated against the model by :func:`parse_settings`)."""

    step: int                              # Checkpoint step.
    seed: float                            # Seed; fractional = interpolation in W between floor and floor + 1.
    psi: float = 1.0                       # Truncation psi.
    class_idx: int | None = None           # Class of a conditional model.
    translate: tuple[float, float] = (0.0, 0.0)  # Input translation (image widths), StyleGAN3 only.
    rotate: float = 0.0                    # Input rotation (degrees), StyleGAN3 only.
    noise_mode: str = "const"              # StyleGAN2 noise mode.
    mix_seed: int | None = None            # Style mixing: seed whose ws replace the layers mix_layers.
    mix_layers: tuple[int, int] = (0, 0)   # Inclusive ws range taken from mix_seed.
    layer: str | None = None               # Synthesis layer whose activations are shown.
    channel: int | None = None             # Channel of that layer; None = RMS over channels.

    @property
    def integer_seed(self) -> bool:
        return float(self.seed).is_integer()

    def image_key(self) -> tuple:
        """What determines the image (not the activation view)."""
        return (self.step, self.seed, self.psi, self.class_idx, self.translate, self.rotate, self.noise_mode,
                self.mix_seed, self.mix_layers if self.mix_seed is not None else None)


def _get_float(q: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = q.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise VisualizerInputError(f"{name} must be a number, got {raw[:50]!r}") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise VisualizerInputError(f"{name} must be in [{_num(lo)}, {_num(hi)}], got {raw.strip()[:50]}")
    return value


def _get_int(q: Mapping[str, str], name: str, lo: int, hi: int, default: int | None = None) -> int | None:
    raw = q.get(name)
    if raw is None or raw.strip() == "":
        return default
    return parse_int(name, raw, lo, hi, VisualizerInputError)


def parse_step(q: Mapping[str, str], steps: list[int], default_step: int) -> int:
    """The ``step`` parameter (default ``default_step``), which must be one of ``steps``."""
    step = _get_int(q, "step", 0, 2**63 - 1, default_step)
    if step not in steps:
        raise VisualizerInputError(f"step {step} is not a checkpoint of this workdir (steps {steps})")
    return step


def parse_settings(q: Mapping[str, str], steps: list[int], default_step: int,
                   model: Callable[[int], Sampler]) -> RenderSettings:
    """Query parameters -> :class:`RenderSettings`; raises :class:`VisualizerInputError` naming the parameter.

    ``model(step)`` gives the step's Sampler (for its sizes); it is only called for a valid step.
    """
    unknown = sorted(set(q) - set(PARAMS))
    if unknown:
        raise VisualizerInputError(f"unknown parameter(s) {unknown}; expected some of {list(PARAMS)}")
    step = parse_step(q, steps, default_step)
    s = model(step)
    if q.get("seed") is None or q["seed"].strip() == "":
        raise VisualizerInputError("seed is required")
    seed = _get_float(q, "seed", 0.0, 0.0, float(SEED_MAX))
    if not seed.is_integer() and math.floor(seed) + 1 > SEED_MAX:
        raise VisualizerInputError(f"a fractional seed must be below {SEED_MAX} (it interpolates towards the next)")
    psi = _get_float(q, "psi", 1.0, *PSI_RANGE)
    if s.c_dim > 0:
        class_idx = _get_int(q, "class", 0, s.c_dim - 1)
        if class_idx is None:
            raise VisualizerInputError(f"the model is conditional: class (0..{s.c_dim - 1}) is required")
    else:
        if q.get("class", "").strip():
            raise VisualizerInputError("the model is unconditional: it takes no class")
        class_idx = None
    tx = _get_float(q, "tx", 0.0, -TRANSLATE_MAX, TRANSLATE_MAX)
    ty = _get_float(q, "ty", 0.0, -TRANSLATE_MAX, TRANSLATE_MAX)
    rotate = _get_float(q, "rotate", 0.0, -ROTATE_MAX, ROTATE_MAX)
    if not s.has_input_transform and (tx, ty, rotate) != (0.0, 0.0, 0.0):
        raise VisualizerInputError("translate / rotate need a StyleGAN3 generator: this generator has no input "
                                   "transform")
    noise = (q.get("noise") or "const").strip()
    if noise not in NOISE_MODES:
        raise VisualizerInputError(f"noise must be one of {list(NOISE_MODES)}, got {noise[:50]!r}")
    if not s.has_noise_inputs:
        noise = "const"  # no noise inputs (StyleGAN3): generate ignores --noise-mode too
    mix = _get_int(q, "mix", 0, SEED_MAX)
    lo = _get_int(q, "mix_lo", 0, s.num_ws - 1, 0)
    hi = _get_int(q, "mix_hi", 0, s.num_ws - 1, s.num_ws - 1)
    if lo > hi:
        raise VisualizerInputError(f"mix_lo ({lo}) must not exceed mix_hi ({hi})")
    layer = (q.get("layer") or "").strip() or None
    channel = None
    if layer is not None:
        layers = dict(synthesis_layers(s))
        if layer not in layers:
            raise VisualizerInputError(f"layer {layer[:50]!r} is not a synthesis layer of this model "
                                       f"(layers: {', '.join(layers)})")
        raw = (q.get("channel") or "rms").strip()
        if raw != "rms":
            channel = _get_int(q, "channel", 0, layers[layer][-1] - 1)
    elif q.get("channel", "").strip():
        raise VisualizerInputError("channel needs a layer")
    return RenderSettings(step=step, seed=seed, psi=psi, class_idx=class_idx, translate=(tx, ty), rotate=rotate,
                          noise_mode=noise, mix_seed=mix, mix_layers=(lo, hi), layer=layer, channel=channel)


# ---------------------------------------------------------------------------------------------------------------------
# The reproducing command.


def _num(x: float) -> str:
    """Shortest text that parses back to exactly ``x`` (``12`` for 12.0)."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def generate_command(ckpt: str | Path, settings: RenderSettings, has_input_transform: bool, has_noise_inputs: bool,
                     which: str = "G_ema", outdir: str = "out") -> tuple[str, str]:
    """``(command, note)``: the ``stylegan-jax generate`` command writing this image, and where it lands (or, for
    a fractional seed, that the command is the one for ``floor(seed)``)."""
    seed = int(math.floor(settings.seed))
    args = ["stylegan-jax", "generate", "--ckpt", str(ckpt), "--step", str(settings.step)]
    if which != "G_ema":
        args += ["--network", which]
    if settings.mix_seed is None:
        args += ["--seeds", str(seed)]
    else:
        lo, hi = settings.mix_layers
        args += ["--style-mix", "--rows", str(seed), "--cols", str(settings.mix_seed), "--styles",
                 f"{lo}-{hi}" if hi > lo else str(lo)]
    args += ["--psi", _num(settings.psi)]
    if settings.class_idx is not None:
        args += ["--class", str(settings.class_idx)]
    if has_input_transform:
        tx, ty = settings.translate
        if (tx, ty) != (0.0, 0.0):
            args.append(f"--translate={_num(tx)},{_num(ty)}")
        if settings.rotate != 0.0:
            args += ["--rotate", _num(settings.rotate)]
    if has_noise_inputs:
        args += ["--noise-mode", settings.noise_mode]
    args += ["--outdir", outdir]
    command = shlex.join(args)
    out = f"{outdir}/style_mix.png (bottom-right cell)" if settings.mix_seed is not None else \
        f"{outdir}/seed{seed:04d}.png"
    if settings.integer_seed:
        return command, f"writes this image exactly: {out}"
    return command, (f"seed {_num(settings.seed)} is fractional (W interpolated between seeds {seed} and {seed + 1}); "
                     f"generate takes integer seeds: this command writes seed {seed}'s image ({out})")


# ---------------------------------------------------------------------------------------------------------------------
# Rendering.


def _settings_ws(s: Sampler, st: RenderSettings) -> np.ndarray:
    """``ws [1, num_ws, w_dim]`` of the settings (seed interpolation and style mixing applied)."""
    k = int(math.floor(st.seed))
    t = st.seed - k
    if t == 0.0:
        ws = s.ws_from_seeds([k], st.psi, st.class_idx)
    else:
        # One seed per call: the batch-of-one mapping is the one already compiled for integer seeds.
        a, b = (s.ws_from_seeds([x], st.psi, st.class_idx).astype(np.float64) for x in (k, k + 1))
        ws = ((1.0 - t) * a + t * b).astype(np.float32)
    if st.mix_seed is not None:
        lo, hi = st.mix_layers
        ws = ws.copy()
        ws[:, lo:hi + 1] = s.ws_from_seeds([st.mix_seed], st.psi, st.class_idx)[:, lo:hi + 1]
    return ws


def render_image(s: Sampler, st: RenderSettings) -> np.ndarray:
    """uint8 ``[H, W, C]``: for an integer seed exactly what ``generate`` writes for :func:`generate_command`
    (the same Sampler call, batch of one); for a fractional seed the W interpolation, noise from ``floor(seed)``."""
    common = dict(psi=st.psi, class_idx=st.class_idx, translate=st.translate, rotate=st.rotate,
                  noise_mode=st.noise_mode)
    seed = int(math.floor(st.seed))
    if st.integer_seed:
        if st.mix_seed is None:
            return s.images([seed], **common)[0]
        lo, hi = st.mix_layers
        return s.style_mix([seed], [st.mix_seed], list(range(lo, hi + 1)), **common)[2][0, 0]
    return s.synthesize(_settings_ws(s, st), st.translate, st.rotate, noise_mode=st.noise_mode,
                        noise_seeds=seed)[0]


_SG3_LAYER = re.compile(r"input|L\d+_\d+_\d+")    # synthesis/input, synthesis/L3_52_512 (official names)
_SG2_BLOCK = re.compile(r"b\d+")                   # synthesis/b64/{conv0, conv1, torgb}


def _is_synthesis_layer(module: Any) -> bool:
    """A layer of the synthesis network, by its (official, conversion-stable) module path."""
    path = tuple(module.path)
    if len(path) < 2 or path[0] != "synthesis":
        return False
    if len(path) == 2:
        return bool(_SG3_LAYER.fullmatch(path[1]))
    return len(path) == 3 and bool(_SG2_BLOCK.fullmatch(path[1])) and path[2] in ("conv0", "conv1", "torgb")


def _layer_name(module: Any) -> str:
    path = tuple(module.path)
    return ".".join(path[1:] if path and path[0] == "synthesis" else path)


def synthesis_layers(s: Sampler) -> list[tuple[str, tuple[int, ...]]]:
    """``[(name, (H, W, C)), ...]`` of the synthesis layers of ``s.G`` in computation order: StyleGAN3 ``input``,
    ``L0_...`` ... (sizes include the margins), StyleGAN2 ``b4.conv1``, ``b4.torgb``, ``b8.conv0``, ... (traced with
    ``jax.eval_shape``, nothing is compiled or computed; kept in the Sampler's function cache)."""
    return s.cache.get(s.G, "synthesis_layers", lambda: _trace_synthesis_layers(s.G, s.variables))


def _trace_synthesis_layers(G: Any, variables: Any) -> list[tuple[str, tuple[int, ...]]]:
    import jax
    import jax.numpy as jnp

    order: list[str] = []

    def record(module: Any, method: str) -> bool:
        if method == "__call__" and _is_synthesis_layer(module):
            order.append(_layer_name(module))
            return True
        return False

    ws = jnp.zeros((1, G.num_ws, G.w_dim), jnp.float32)
    t = jnp.eye(3) if G.has_input_transform else None

    def run(v: Any) -> Any:
        return G.apply(v, ws, t, noise_mode="none", method=G.synthesize, capture_intermediates=record,
                       mutable=["intermediates"])[1]

    inter = jax.eval_shape(run, variables)["intermediates"]
    flat = {_flat_name(p): leaf.shape for p, leaf in jax.tree_util.tree_flatten_with_path(inter)[0]}
    return [(name, tuple(int(d) for d in flat[name][1:])) for name in order]


def _flat_name(path: tuple) -> str:
    """Key path of a captured intermediate (``synthesis/b8/conv0/__call__/0``) -> layer name ``b8.conv0``."""
    names = [str(getattr(p, "key", getattr(p, "idx", p))) for p in path]
    names = names[: names.index("__call__")]
    return ".".join(names[1:] if names and names[0] == "synthesis" else names)


def _activation_fn(G: Any, layer: str, noise_mode: str) -> Callable:
    """Jitted ``(variables, ws [1, ...], transform | seed) -> activations [H, W, C]`` of one layer."""
    import jax
    import jax.numpy as jnp

    def only(module: Any, method: str) -> bool:
        return method == "__call__" and _is_synthesis_layer(module) and _layer_name(module) == layer

    def pick(state: Any) -> jnp.ndarray:
        leaves = jax.tree_util.tree_leaves(state["intermediates"])
        return leaves[0][0].astype(jnp.float32)

    random = noise_mode == "random" and G.has_noise_inputs

    def run(v: Any, ws: jnp.ndarray, t: jnp.ndarray | None, seed: jnp.ndarray) -> jnp.ndarray:
        rngs = {"noise": jax.random.key(seed)} if random else None
        return pick(G.apply(v, ws, t, noise_mode=noise_mode if G.has_noise_inputs else "none", rngs=rngs,
                            method=G.synthesize, capture_intermediates=only, mutable=["intermediates"])[1])

    return jax.jit(run)


def layer_activation(s: Sampler, st: RenderSettings) -> np.ndarray:
    """float32 ``[H, W, C]``: the activations of ``st.layer`` for the settings' image (a second forward pass,
    compiled once per layer; the ws, transform and noise are those of the image)."""
    if st.layer is None:
        raise VisualizerInputError("no layer selected")
    ws = _settings_ws(s, st)
    fn = s.cache.get(s.G, ("activation", st.layer, st.noise_mode),
                     lambda: _activation_fn(s.G, st.layer, st.noise_mode))
    t = s.input_transform(st.translate, st.rotate)
    t = None if t is None else np.asarray(t, np.float32)
    return np.asarray(fn(s.variables, ws, t, np.uint32(int(math.floor(st.seed)))))


def activation_image(act: np.ndarray, channel: int | None) -> tuple[np.ndarray, dict[str, float]]:
    """uint8 ``[H, W]`` picture of one channel (0 -> mid grey, +-max|x| -> white / black) or, for ``channel=None``,
    of the RMS over channels (0 -> black, max -> white); and the statistics of the values shown."""
    x = act[..., channel] if channel is not None else np.sqrt(np.mean(np.square(act, dtype=np.float64), axis=-1))
    x = np.asarray(x, np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        x = np.where(finite, x, 0.0)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    scale = 1.0 / peak if peak > 0 else 0.0
    if channel is None:
        img = np.round(np.clip(x * scale, 0, 1) * 255)
    else:
        img = np.round(127.5 + np.clip(x * scale, -1, 1) * 127.5)
    stats = {"min": float(x.min()), "max": float(x.max()), "mean": float(x.mean()), "std": float(x.std())}
    return img.astype(np.uint8), stats


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# ---------------------------------------------------------------------------------------------------------------------
# The app.


def create_app(ckpt: str | Path, *, which: str = "G_ema", watermark_key: str | None = None,
               payload: bytes = b"SG3J", max_concurrency: int = 1, max_queue: int | None = None,
               command_ckpt: str | None = None, functions: FunctionCache | None = None) -> FastAPI:
    """The visualizer app for the checkpoints at ``ckpt`` (see the module docstring).

    ``watermark_key``: downloads carry the keyed provenance mark of ``payload`` (as ``serve``'s images); None =
    downloads are the plain PNG. The page always shows the unmarked image (the one ``generate`` writes).
    ``command_ckpt``: the ``--ckpt`` text of the printed commands (default: ``ckpt`` made absolute).
    ``functions``: the :class:`~stylegan_jax.apis.sampling.FunctionCache` of the app's compiled functions
    (default: one of its own; ``app.state.checkpoints.functions``).
    Raises ``CheckpointError`` if ``ckpt`` holds no readable checkpoint, ``ValueError`` for watermark settings
    that do not fit the model's images.
    """
    from stylegan_jax.apis import watermark
    from stylegan_jax.checkpoint import CheckpointError

    checkpoints = CheckpointSet(ckpt, which=which, functions=functions)
    first = checkpoints.sampler(checkpoints.default_step)  # fail now, not on the first request
    bits = payload_bits(payload)
    if watermark_key is not None:
        res = first.img_resolution
        if first.img_channels != 3:
            raise ValueError(f"the watermark needs RGB images; this generator has {first.img_channels} channel(s)")
        try:
            watermark.embed(np.full((res, res, 3), 128, np.uint8), watermark_key, bits)
        except (TypeError, ValueError) as e:
            raise ValueError(f"watermark settings do not fit this model's {res}x{res} images: {e}") from e
    command_ckpt = command_ckpt or str(Path(ckpt).absolute())
    limiter = Limiter(max_concurrency, max_concurrency if max_queue is None else max_queue)
    images: collections.OrderedDict[tuple, tuple[np.ndarray, bytes]] = collections.OrderedDict()
    images_lock = threading.Lock()

    app = FastAPI(title="stylegan-jax visualizer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.checkpoints = checkpoints
    app.state.limiter = limiter
    install_error_handlers(app)

    def image_of(s: Sampler, st: RenderSettings) -> tuple[np.ndarray, bytes, float]:
        key = st.image_key()
        with images_lock:
            hit = images.get(key)
        if hit is not None:
            return hit[0], hit[1], 0.0
        t0 = time.perf_counter()
        img = render_image(s, st)
        ms = (time.perf_counter() - t0) * 1e3
        png = encode_png(img)
        with images_lock:
            images[key] = (img, png)
            while len(images) > 16:
                images.popitem(last=False)
        return img, png, ms

    def render(st: RenderSettings) -> dict[str, Any]:
        s = checkpoints.sampler(st.step)
        _, png, ms = image_of(s, st)
        command, note = generate_command(command_ckpt, st, s.has_input_transform, s.has_noise_inputs, which)
        out: dict[str, Any] = {"image": _data_url(png), "width": s.img_resolution, "height": s.img_resolution,
                               "render_ms": round(ms, 2), "cached": ms == 0.0, "command": command,
                               "command_note": note, "step": st.step, "seed": st.seed, "activation": None}
        if st.layer is not None:
            t0 = time.perf_counter()
            act = layer_activation(s, st)
            a_ms = (time.perf_counter() - t0) * 1e3
            pic, stats = activation_image(act, st.channel)
            out["activation"] = {"layer": st.layer, "shape": list(act.shape), "channel": st.channel,
                                 "image": _data_url(encode_png(pic[..., None])), "render_ms": round(a_ms, 2),
                                 **stats}
        return out

    def download(st: RenderSettings) -> bytes:
        s = checkpoints.sampler(st.step)
        img, png, _ = image_of(s, st)
        if watermark_key is None:
            return png
        return encode_png(watermark.embed(img, watermark_key, bits))

    async def admitted(fn: Callable[[RenderSettings], Any], request: Request) -> Any:
        """``(settings, fn(settings))`` run under the limiter, or the error response."""
        q = dict(request.query_params)
        steps = checkpoints.steps()
        try:
            # Cheap checks before taking a slot; a step not loaded yet is loaded (and checked) in the slot.
            step = parse_step(q, steps, checkpoints.default_step)
            st = parse_settings(q, steps, checkpoints.default_step, checkpoints.sampler) \
                if checkpoints.loaded(step) else None
        except VisualizerInputError as e:
            return error_response(400, str(e))
        if not limiter.try_admit():
            return busy_response(limiter, "renders")

        def job() -> tuple[RenderSettings, Any]:
            settings = st or parse_settings(q, steps, checkpoints.default_step, checkpoints.sampler)
            return settings, fn(settings)

        try:
            return await limiter.run(job)
        except VisualizerInputError as e:
            return error_response(400, str(e))
        except CheckpointError as e:
            return error_response(404, str(e))
        except (ValueError, RuntimeError) as e:  # e.g. a diverged training checkpoint's non-finite output
            logger.error("render failed for %s: %s", q, e)
            return error_response(500, f"render failed: {e}")

    @app.get("/")
    async def index() -> Any:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/info")
    async def info(request: Request) -> Any:
        steps = checkpoints.steps()
        try:
            step = _get_int(request.query_params, "step", 0, 2**63 - 1, steps[-1])
            if step not in steps:
                raise VisualizerInputError(f"step {step} is not a checkpoint of this workdir (steps {steps})")
        except VisualizerInputError as e:
            return error_response(400, str(e))
        if not limiter.try_admit():  # loading a checkpoint is work too
            return busy_response(limiter, "renders")
        try:
            s = await limiter.run(checkpoints.sampler, step)
        except CheckpointError as e:
            return error_response(404, str(e))
        return {
            "ckpt": command_ckpt, "steps": steps, "step": step, "default_step": checkpoints.default_step,
            "network": which, "generator": s.G.config_class, "input_transform": s.has_input_transform,
            "noise_inputs": s.has_noise_inputs, "z_dim": s.z_dim, "c_dim": s.c_dim, "w_dim": s.w_dim,
            "num_ws": s.num_ws, "img_resolution": s.img_resolution, "img_channels": s.img_channels,
            "layers": [{"name": n, "shape": list(shape)} for n, shape in synthesis_layers(s)],
            "noise_modes": list(NOISE_MODES), "psi_range": list(PSI_RANGE), "seed_range": [0, SEED_MAX],
            "translate_max": TRANSLATE_MAX, "rotate_max": ROTATE_MAX,
            "watermark": {"downloads": watermark_key is not None, "num_bits": int(bits.size)},
            "limits": {"max_concurrency": limiter.slots, "max_queue": limiter.queue},
        }

    @app.get("/api/steps")
    async def steps_route() -> dict[str, Any]:
        return {"steps": checkpoints.steps(), "default_step": checkpoints.default_step}

    @app.get("/api/render")
    async def render_route(request: Request) -> Any:
        result = await admitted(render, request)
        if isinstance(result, Response):
            return result
        return JSONResponse(result[1], headers={"Cache-Control": "no-store"})

    @app.get("/api/download")
    async def download_route(request: Request) -> Any:
        result = await admitted(download, request)
        if isinstance(result, Response):
            return result
        st, png = result
        name = f"seed{int(math.floor(st.seed)):04d}" + ("" if st.integer_seed else f"_{_num(st.seed)}")
        name += f"_mix{st.mix_seed}" if st.mix_seed is not None else ""
        headers = {"Content-Disposition": f'attachment; filename="{name}_step{st.step}.png"',
                   "Cache-Control": "no-store",
                   "X-Watermark-Bits": str(int(bits.size)) if watermark_key is not None else "0"}
        return Response(content=png, media_type="image/png", headers=headers)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "in_flight": limiter.admitted, "running": limiter.running,
                "served": limiter.served, "rejected": limiter.rejected}

    return app
