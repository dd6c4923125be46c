"""StyleGAN3 generator ("Alias-Free Generative Adversarial Networks", Karras et al. 2021).

Layout: images are NHWC inside the synthesis network; ``Generator.__call__`` returns NCHW like the
official implementation. Variable collections:

- ``params``: trainable weights;
- ``ema``: running statistics updated only when the caller passes ``update_emas=True`` and makes
  ``ema`` mutable (``mapping/w_avg``, ``synthesis/<layer>/magnitude_ema``);
- ``buffers``: fixed random draws made at initialisation and never trained (the Fourier features'
  frequencies and phases) and the user transform of the input grid (identity by default).

The low-pass filters are not stored at all: they are a deterministic function of the constructor
arguments and are recomputed (in NumPy, at trace time) from the layer schedule.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from stylegan_jax.networks.generator import GeneratorInterface, check_noise_mode
from stylegan_jax.networks.layers import FullyConnectedLayer, normal_init
from stylegan_jax.networks.mapping import MappingNetwork
from stylegan_jax.ops.filtered_lrelu import filtered_lrelu
from stylegan_jax.ops.lowpass import design_lowpass_filter
from stylegan_jax.ops.modulated_conv import modulated_conv2d
from stylegan_jax.utils.shapes import check_shape

# ----------------------------------------------------------------------------------------------
# Layer schedule (pure Python): cutoffs, stopbands, sampling rates, sizes, channels, filters.


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """Everything about one synthesis layer that follows from the network's hyperparameters."""

    name: str                    # Official layer name, e.g. 'L3_52_512'.
    is_torgb: bool               # The final ToRGB layer (1x1 conv, no demodulation, linear)?
    is_critically_sampled: bool  # Cutoff at exactly half the sampling rate (last layers)?
    in_channels: int
    out_channels: int
    in_size: int                 # Spatial size including margins.
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    conv_kernel: int
    up_factor: int
    down_factor: int
    up_taps: int
    down_taps: int
    down_radial: bool
    padding: tuple[int, int, int, int]  # [x0, x1, y0, y1] of the upsampling pass.
    tmp_sampling_rate: int       # Rate at which the nonlinearity runs.
    use_fp16: bool               # Among the highest resolutions (fp16 in the official training).

    def up_filter(self) -> np.ndarray | None:
        return design_lowpass_filter(self.up_taps, self.in_cutoff, self.in_half_width * 2, self.tmp_sampling_rate)

    def down_filter(self) -> np.ndarray | None:
        return design_lowpass_filter(self.down_taps, self.out_cutoff, self.out_half_width * 2, self.tmp_sampling_rate,
                                     radial=self.down_radial)


@dataclasses.dataclass(frozen=True)
class SynthesisSchedule:
    input_channels: int
    input_size: int
    input_sampling_rate: float
    input_bandwidth: float
    layers: tuple[LayerSpec, ...]

    @property
    def num_ws(self) -> int:
        return len(self.layers) + 1


def synthesis_schedule(
    img_resolution: int,
    img_channels: int,
    channel_base: int = 32768,
    channel_max: int = 512,
    num_layers: int = 14,
    num_critical: int = 2,
    first_cutoff: float = 2,
    first_stopband: float = 2**2.1,
    last_stopband_rel: float = 2**0.3,
    margin_size: int = 10,
    num_fp16_res: int = 4,
    conv_kernel: int = 3,
    filter_size: int = 6,
    lrelu_upsampling: int = 2,
    use_radial_filters: bool = False,
) -> SynthesisSchedule:
    """The layer schedule of the paper's Sec. 3 / Appendix F, from the official constructor arguments.

    Cutoffs and minimum stopbands grow geometrically from the first layer to the last non-critical
    one; each layer samples at the smallest power of two above twice its stopband (capped at the
    output resolution), keeps ``margin_size`` pixels on each side, and gets channels inversely
    proportional to its cutoff.
    """
    if num_layers <= num_critical or num_critical < 0:
        raise ValueError(f"synthesis schedule: num_layers ({num_layers}) must exceed num_critical ({num_critical}) "
                         ">= 0: the cutoffs grow over the num_layers - num_critical non-critical layers")
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels

    layers = []
    for idx in range(num_layers + 1):
        prev = max(idx - 1, 0)
        is_torgb = idx == num_layers
        is_critical = idx >= num_layers - num_critical
        in_sr, out_sr = int(sampling_rates[prev]), int(sampling_rates[idx])
        tmp_sr = max(in_sr, out_sr) * (1 if is_torgb else lrelu_upsampling)
        kernel = 1 if is_torgb else conv_kernel
        up = int(np.rint(tmp_sr / in_sr))
        down = int(np.rint(tmp_sr / out_sr))
        if in_sr * up != tmp_sr or out_sr * down != tmp_sr:
            raise ValueError(f"layer {idx}: sampling rates {in_sr} -> {tmp_sr} -> {out_sr} are not integer multiples")
        up_taps = filter_size * up if up > 1 and not is_torgb else 1
        down_taps = filter_size * down if down > 1 and not is_torgb else 1
        in_size, out_size = int(sizes[prev]), int(sizes[idx])
        # Output size before downsampling, minus the input size after upsampling, plus the size the
        # filters eat; split so that samples sit at pixel centres (paper, Appendix C.3).
        pad_total = (out_size - 1) * down + 1 - (in_size + kernel - 1) * up + up_taps + down_taps - 2
        pad_lo = (pad_total + up) // 2
        pad_hi = pad_total - pad_lo
        out_ch = int(channels[idx])
        layers.append(LayerSpec(
            name=f"L{idx}_{out_size}_{out_ch}", is_torgb=is_torgb, is_critically_sampled=is_critical,
            in_channels=int(channels[prev]), out_channels=out_ch, in_size=in_size, out_size=out_size,
            in_sampling_rate=in_sr, out_sampling_rate=out_sr, in_cutoff=float(cutoffs[prev]),
            out_cutoff=float(cutoffs[idx]), in_half_width=float(half_widths[prev]),
            out_half_width=float(half_widths[idx]), conv_kernel=kernel, up_factor=up, down_factor=down,
            up_taps=up_taps, down_taps=down_taps, down_radial=bool(use_radial_filters and not is_critical),
            padding=(int(pad_lo), int(pad_hi), int(pad_lo), int(pad_hi)), tmp_sampling_rate=int(tmp_sr),
            use_fp16=bool(sampling_rates[idx] * (2**num_fp16_res) > img_resolution),
        ))
    return SynthesisSchedule(
        input_channels=int(channels[0]), input_size=int(sizes[0]), input_sampling_rate=float(sampling_rates[0]),
        input_bandwidth=float(cutoffs[0]), layers=tuple(layers),
    )


# ----------------------------------------------------------------------------------------------
# Modules.


def _init_fourier_freqs(key: jax.Array, channels: int, bandwidth: float) -> jnp.ndarray:
    """Random frequencies in the disc of radius ``bandwidth`` (denser towards the centre)."""
    freqs = jax.random.normal(key, (channels, 2))
    radii = jnp.sqrt(jnp.sum(jnp.square(freqs), axis=1, keepdims=True))
    freqs = freqs / (radii * jnp.exp(jnp.square(radii)) ** 0.25)
    return freqs * bandwidth


class SynthesisInput(nn.Module):
    """Fourier features: ``channels`` sinusoids of fixed random frequency and phase, sampled on a
    ``size``-pixel grid, rotated/translated by a learned per-sample transform (from w) and by the
    user transform, then mixed by a learned channel matrix."""

    w_dim: int             # Intermediate latent (W) dimensionality.
    channels: int          # Number of output channels.
    size: int              # Output spatial size (width = height), margins included.
    sampling_rate: float   # Output sampling rate.
    bandwidth: float       # Output bandwidth (radius of the frequency disc).
    transform_init: float = 0.0  # Initial std of the transform affine's weights (official 0: all start untransformed).

    @nn.compact
    def __call__(self, w: jnp.ndarray, transform: jnp.ndarray | None = None) -> jnp.ndarray:
        n = w.shape[0]
        weight = self.param("weight", normal_init(1.0), (self.channels, self.channels))
        freqs = self.variable(
            "buffers", "freqs", lambda: _init_fourier_freqs(self.make_rng("params"), self.channels, self.bandwidth))
        phases = self.variable(
            "buffers", "phases", lambda: jax.random.uniform(self.make_rng("params"), (self.channels,)) - 0.5)
        stored_transform = self.variable("buffers", "transform", lambda: jnp.eye(3, dtype=jnp.float32))
        user = stored_transform.value if transform is None else jnp.asarray(transform, jnp.float32)
        user = jnp.broadcast_to(user, (n, 3, 3))

        # Learned similarity transform from w: t = (cos, sin, tx, ty), rotation part normalised.
        t = FullyConnectedLayer(4, weight_init=self.transform_init, bias_init=(1.0, 0.0, 0.0, 0.0), name="affine")(w)
        t = t / jnp.linalg.norm(t[:, :2], axis=1, keepdims=True)
        zeros, ones = jnp.zeros((n,)), jnp.ones((n,))
        # Inverse rotation and inverse translation with respect to the resulting image.
        m_r = jnp.stack([jnp.stack([t[:, 0], -t[:, 1], zeros], -1),
                         jnp.stack([t[:, 1], t[:, 0], zeros], -1),
                         jnp.stack([zeros, zeros, ones], -1)], axis=1)
        m_t = jnp.stack([jnp.stack([ones, zeros, -t[:, 2]], -1),
                         jnp.stack([zeros, ones, -t[:, 3]], -1),
                         jnp.stack([zeros, zeros, ones], -1)], axis=1)
        hp = lax.Precision.HIGHEST
        transforms = jnp.matmul(jnp.matmul(m_r, m_t, precision=hp), user, precision=hp)  # [N, 3, 3]

        # Transform the frequencies (a translation of the image is a phase shift).
        f = jnp.broadcast_to(freqs.value[None], (n, self.channels, 2))
        ph = phases.value[None] + jnp.einsum("ncj,nj->nc", f, transforms[:, :2, 2], precision=hp)
        f = jnp.einsum("ncj,njk->nck", f, transforms[:, :2, :2], precision=hp)
        # Fade out frequencies the user transform pushed beyond the band limit.
        amplitudes = jnp.clip(
            1 - (jnp.linalg.norm(f, axis=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth), 0, 1)

        # Pixel-centre sample positions in units of the sampling rate, centred on the image.
        grid = (np.arange(self.size, dtype=np.float64) + 0.5 - self.size / 2) / self.sampling_rate
        gx = jnp.asarray(grid, jnp.float32)[None, None, :, None]  # varies along W
        gy = jnp.asarray(grid, jnp.float32)[None, :, None, None]  # varies along H
        x = gx * f[:, None, None, :, 0] + gy * f[:, None, None, :, 1] + ph[:, None, None, :]  # [N, H, W, C]
        x = jnp.sin(x * (2 * np.pi)) * amplitudes[:, None, None, :]
        x = jnp.einsum("nhwc,dc->nhwd", x, weight / math.sqrt(self.channels), precision=hp)
        check_shape(x, (n, self.size, self.size, self.channels), "SynthesisInput output")
        return x


class SynthesisLayer(nn.Module):
    """Modulated convolution followed by the alias-free filtered leaky ReLU (or, for ToRGB, a
    linear 1x1 modulated convolution without demodulation)."""

    spec: LayerSpec                      # Sizes, rates, filters and padding from synthesis_schedule().
    w_dim: int                           # Intermediate latent (W) dimensionality.
    conv_clamp: float | None = 256       # Clamp the output to [-X, +X]; None = no clamping.
    magnitude_ema_beta: float = 0.999    # Decay of the running mean of the input's squared magnitude.
    impl: str = "fast"                   # 'fast' or 'ref' implementation of filtered_lrelu.
    compute_dtype: Any = None            # Dtype of the conv + filtered lrelu (e.g. bfloat16); None = float32.

    @nn.compact
    def __call__(self, x: jnp.ndarray, w: jnp.ndarray, update_emas: bool = False) -> jnp.ndarray:
        s = self.spec
        check_shape(x, (None, s.in_size, s.in_size, s.in_channels), f"{s.name} input")
        check_shape(w, (x.shape[0], self.w_dim), f"{s.name} w")

        magnitude_ema = self.variable("ema", "magnitude_ema", jnp.ones, (), jnp.float32)
        if update_emas and not self.is_initializing():
            current = jnp.mean(jnp.square(lax.stop_gradient(x).astype(jnp.float32)))
            magnitude_ema.value = current + self.magnitude_ema_beta * (magnitude_ema.value - current)
        input_gain = lax.rsqrt(magnitude_ema.value)

        styles = FullyConnectedLayer(s.in_channels, bias_init=1.0, name="affine")(w)
        if s.is_torgb:
            styles = styles * (1 / math.sqrt(s.in_channels * s.conv_kernel**2))
        weight = self.param("weight", normal_init(1.0), (s.conv_kernel, s.conv_kernel, s.in_channels, s.out_channels))
        bias = self.param("bias", nn.initializers.zeros, (s.out_channels,))

        if self.compute_dtype is not None:
            x = x.astype(self.compute_dtype)  # styles, demodulation and gains stay float32
        x = modulated_conv2d(x, weight, styles, demodulate=not s.is_torgb, padding=s.conv_kernel - 1,
                             input_gain=input_gain)
        x = filtered_lrelu(
            x, fu=s.up_filter(), fd=s.down_filter(), b=bias, up=s.up_factor, down=s.down_factor, padding=s.padding,
            gain=1.0 if s.is_torgb else math.sqrt(2), slope=1.0 if s.is_torgb else 0.2, clamp=self.conv_clamp,
            impl=self.impl)
        check_shape(x, (None, s.out_size, s.out_size, s.out_channels), f"{s.name} output")
        return x.astype(jnp.float32)


class SynthesisNetwork(nn.Module):
    """ws -> image: Fourier-feature input, ``num_layers`` synthesis layers and ToRGB."""

    w_dim: int                           # Intermediate latent (W) dimensionality.
    img_resolution: int                  # Output image resolution.
    img_channels: int                    # Number of color channels.
    channel_base: int = 32768            # Overall multiplier for the number of channels.
    channel_max: int = 512               # Maximum number of channels in any layer.
    num_layers: int = 14                 # Number of layers, excluding Fourier features and ToRGB.
    num_critical: int = 2                # Number of critically sampled layers at the end.
    first_cutoff: float = 2              # Cutoff frequency of the first layer (f_{c,0}).
    first_stopband: float = 2**2.1       # Minimum stopband of the first layer (f_{t,0}).
    last_stopband_rel: float = 2**0.3    # Minimum stopband of the last layer, relative to its cutoff.
    margin_size: int = 10                # Number of additional pixels outside the image.
    output_scale: float = 0.25           # Scale factor for the output image.
    num_fp16_res: int = 4                # Highest resolutions marked use_fp16 (bf16 compute, if enabled).
    conv_kernel: int = 3                 # Convolution kernel size (1 for StyleGAN3-R).
    filter_size: int = 6                 # Low-pass filter taps relative to the lower resolution.
    lrelu_upsampling: int = 2            # Relative sampling rate of the leaky ReLU.
    use_radial_filters: bool = False     # Radially symmetric downsampling filters (StyleGAN3-R).
    conv_clamp: float | None = 256       # Clamp conv outputs to [-X, +X]; None = no clamping.
    magnitude_ema_beta: float = 0.999    # Decay of the input magnitude running means.
    input_transform_init: float = 0.0    # Initial std of the input's transform affine weights (official 0); > 0
                                         # starts each w at its own translation and rotation of the features.
    impl: str = "fast"                   # filtered_lrelu implementation: 'fast' or 'ref'.
    fp16_dtype: Any = None               # Dtype of the use_fp16 layers (official: fp16 on the num_fp16_res highest
                                         # resolutions with conv_clamp 256); e.g. 'bfloat16'. None = float32.

    def schedule(self) -> SynthesisSchedule:
        return synthesis_schedule(
            self.img_resolution, self.img_channels, self.channel_base, self.channel_max, self.num_layers,
            self.num_critical, self.first_cutoff, self.first_stopband, self.last_stopband_rel, self.margin_size,
            self.num_fp16_res, self.conv_kernel, self.filter_size, self.lrelu_upsampling, self.use_radial_filters)

    @property
    def num_ws(self) -> int:
        return self.num_layers + 2

    @nn.compact
    def __call__(self, ws: jnp.ndarray, transform: jnp.ndarray | None = None, update_emas: bool = False,
                 return_activations: bool = False) -> jnp.ndarray | tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
        """ws ``[N, num_ws, w_dim]`` -> images ``[N, H, W, C]`` (NHWC)."""
        check_shape(ws, (None, self.num_ws, self.w_dim), "SynthesisNetwork ws")
        sched = self.schedule()
        ws = ws.astype(jnp.float32)
        x = SynthesisInput(self.w_dim, sched.input_channels, sched.input_size, sched.input_sampling_rate,
                           sched.input_bandwidth, self.input_transform_init, name="input")(ws[:, 0], transform)
        acts = {"input": x}
        for i, spec in enumerate(sched.layers):
            dtype = jnp.dtype(self.fp16_dtype) if (self.fp16_dtype is not None and spec.use_fp16) else None
            x = SynthesisLayer(spec, self.w_dim, self.conv_clamp, self.magnitude_ema_beta, self.impl, dtype,
                               name=spec.name)(x, ws[:, i + 1], update_emas=update_emas)
            acts[spec.name] = x
        if self.output_scale != 1:
            x = x * self.output_scale
        check_shape(x, (None, self.img_resolution, self.img_resolution, self.img_channels), "SynthesisNetwork image")
        return (x, acts) if return_activations else x


class Generator(GeneratorInterface):
    """StyleGAN3 generator: z, c -> NCHW image in about [-1, 1].

    Field names and defaults follow the official constructor, except the mapping depth, whose
    default is the design's 8 layers (the official StyleGAN3 default is 2). Build from official
    kwargs with :func:`generator_from_official_kwargs`.
    """

    z_dim: int = 512                     # Input latent (Z) dimensionality.
    c_dim: int = 0                       # Conditioning label (C) dimensionality.
    w_dim: int = 512                     # Intermediate latent (W) dimensionality.
    img_resolution: int = 256            # Output resolution.
    img_channels: int = 3                # Number of output color channels.
    mapping_layers: int = 8              # Number of mapping layers.
    mapping_lr_multiplier: float = 0.01  # Learning-rate multiplier of the mapping layers.
    w_avg_beta: float = 0.998            # Decay of the running mean of w.
    synthesis_kwargs: Any = None         # Extra SynthesisNetwork fields as a dict (channel_base, conv_kernel, ...).

    config_class: ClassVar[str] = "stylegan3.Generator"
    cfg_names: ClassVar[tuple[str, ...]] = ("t", "r")
    has_input_transform: ClassVar[bool] = True
    supports_compute_dtype: ClassVar[bool] = True

    def _synthesis_fields(self) -> dict:
        return dict(w_dim=self.w_dim, img_resolution=self.img_resolution, img_channels=self.img_channels,
                    **dict(self.synthesis_kwargs or {}))

    def schedule(self) -> SynthesisSchedule:
        """The synthesis layer schedule (works on unbound modules)."""
        return SynthesisNetwork(**self._synthesis_fields(), parent=None).schedule()

    @property
    def num_ws(self) -> int:
        kw = dict(self.synthesis_kwargs or {})
        return kw.get("num_layers", 14) + 2

    def setup(self):
        self.synthesis = SynthesisNetwork(**self._synthesis_fields())
        self.mapping = MappingNetwork(z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, num_ws=self.num_ws,
                                      num_layers=self.mapping_layers, lr_multiplier=self.mapping_lr_multiplier,
                                      w_avg_beta=self.w_avg_beta)

    def synthesize(self, ws: jnp.ndarray, transform: jnp.ndarray | None = None, update_emas: bool = False,
                   noise_mode: str = "random") -> jnp.ndarray:
        """ws -> NCHW images. ``noise_mode`` is accepted for the common generator interface (no noise inputs)."""
        check_noise_mode(noise_mode)
        return jnp.transpose(self.synthesis(ws, transform, update_emas), (0, 3, 1, 2))

    # ---- The rest of the generator interface (stylegan_jax.networks.generator).

    def with_impl(self, impl: str) -> Generator:
        return self.clone(synthesis_kwargs={**dict(self.synthesis_kwargs or {}), "impl": impl}, parent=None)

    def with_compute_dtype(self, dtype: Any) -> Generator:
        """The ``use_fp16`` (highest-resolution) layers compute in ``dtype`` (e.g. 'bfloat16'); None = float32."""
        return self.clone(synthesis_kwargs={**dict(self.synthesis_kwargs or {}), "fp16_dtype": dtype}, parent=None)

    def to_config(self) -> dict:
        kwargs = {f: getattr(self, f) for f in GENERATOR_FIELDS}
        kwargs["synthesis_kwargs"] = {k: v for k, v in dict(self.synthesis_kwargs or {}).items()
                                      if k not in ("impl", "fp16_dtype")}
        return {"class": self.config_class, "kwargs": kwargs}

    @classmethod
    def from_config(cls, kwargs: dict, impl: str = "fast") -> Generator:
        kwargs = dict(kwargs)
        unknown = set(kwargs) - set(GENERATOR_FIELDS)
        if unknown:
            raise ValueError(f"generator config has unknown fields {sorted(unknown)}")
        kwargs["synthesis_kwargs"] = {**dict(kwargs.get("synthesis_kwargs") or {}), "impl": impl}
        return cls(**kwargs)

    @classmethod
    def build(cls, cfg: str = "t", z_dim: int = 512, w_dim: int = 512, c_dim: int = 0, img_resolution: int = 256,
              img_channels: int = 3, channel_base: int = 32768, channel_max: int = 512, mapping_layers: int = 8,
              impl: str = "fast", **synthesis_overrides: Any) -> Generator:
        """StyleGAN3-T (``'t'``) or -R (``'r'``); ``synthesis_overrides`` are ``SynthesisNetwork`` fields."""
        kw = stylegan3_synthesis_kwargs(cfg, channel_base, channel_max, impl=impl, **synthesis_overrides)
        return cls(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                   mapping_layers=mapping_layers, synthesis_kwargs=kw)


# Generator fields that describe the architecture (saved with every checkpoint).
GENERATOR_FIELDS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_layers",
                    "mapping_lr_multiplier", "w_avg_beta", "synthesis_kwargs")


def stylegan3_synthesis_kwargs(cfg: str, channel_base: int = 32768, channel_max: int = 512, **overrides) -> dict:
    """Synthesis kwargs of the two StyleGAN3 configurations.

    ``'t'``: translation equivariant, 3x3 convs, separable Kaiser filters.
    ``'r'``: rotation equivariant, 1x1 convs, radially symmetric jinc downsampling filters and
    twice the channels (the official training script doubles channel_base and channel_max).
    """
    if cfg == "t":
        kw = dict(channel_base=channel_base, channel_max=channel_max)
    elif cfg == "r":
        kw = dict(channel_base=channel_base * 2, channel_max=channel_max * 2, conv_kernel=1, use_radial_filters=True)
    else:
        raise ValueError(f"unknown StyleGAN3 config {cfg!r}; expected 't' or 'r'")
    kw.update(overrides)
    return kw



# Official SynthesisNetwork / SynthesisLayer constructor arguments we accept (the rest are errors).
_SYNTHESIS_KWARGS = {f.name for f in dataclasses.fields(SynthesisNetwork)} - {
    "w_dim", "img_resolution", "img_channels", "impl", "fp16_dtype", "parent", "name"}
_MAPPING_KWARGS = {"num_layers", "lr_multiplier", "w_avg_beta", "freeze_layers", "freeze_embed"}


def generator_from_official_kwargs(G_kwargs: dict, mapping_layers_default: int = 2, impl: str = "fast") -> Generator:
    """Build a Generator from the official ``training.networks_stylegan3.Generator`` constructor kwargs.

    ``mapping_layers_default`` is the official default depth used when ``mapping_kwargs`` does not
    say (2 for StyleGAN3). Unknown arguments raise ``ValueError`` naming them.
    """
    kw = dict(G_kwargs)
    required = ["z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"]
    missing = [k for k in required if k not in kw]
    if missing:
        raise ValueError(f"official generator kwargs lack {missing}")
    mapping_kwargs = dict(kw.pop("mapping_kwargs", {}) or {})
    unknown = set(mapping_kwargs) - _MAPPING_KWARGS
    if unknown:
        raise ValueError(f"unsupported mapping_kwargs {sorted(unknown)}")
    kw.pop("use_noise", None)
    kw.pop("use_fp16", None)
    core = {k: kw.pop(k) for k in required}
    synthesis_kwargs = {}
    for key in list(kw):
        if key in _SYNTHESIS_KWARGS:
            synthesis_kwargs[key] = kw.pop(key)
    if kw:
        raise ValueError(f"unsupported official generator kwargs {sorted(kw)}")
    synthesis_kwargs["impl"] = impl
    return Generator(
        **core,
        mapping_layers=int(mapping_kwargs.get("num_layers", mapping_layers_default)),
        mapping_lr_multiplier=float(mapping_kwargs.get("lr_multiplier", 0.01)),
        w_avg_beta=float(mapping_kwargs.get("w_avg_beta", 0.998)),
        synthesis_kwargs=synthesis_kwargs,
    )
