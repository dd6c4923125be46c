"""StyleGAN2 generator ("Analyzing and Improving the Image Quality of StyleGAN", Karras et al. 2020),
the baseline of the StyleGAN3 paper, matching the official ``training.networks_stylegan2.Generator``.

Structure: a mapping network z (+ c) -> ws, then one synthesis block per resolution 4, 8, ..., R.
The 4x4 block starts from a learned constant; every later block doubles the resolution with a
modulated 3x3 convolution whose upsampling is a stride-2 transposed convolution followed by the
[1, 3, 3, 1] low-pass filter, then runs a second modulated 3x3 convolution. Each convolution adds
per-pixel noise scaled by a learned strength. With the 'skip' architecture each block turns its
features into RGB and adds them to the upsampled image of the previous block.

Layout: NHWC inside; ``StyleGAN2Generator.__call__`` and ``synthesize`` return NCHW, as the official
code and our StyleGAN3 ``Generator`` do. Variable collections (official names, ``.`` -> ``/``):

- ``params``: trainable weights, including ``synthesis/b4/const`` and every layer's ``noise_strength``;
- ``ema``: ``mapping/w_avg``, updated only with ``update_emas=True`` and ``ema`` mutable;
- ``buffers``: each synthesis layer's ``noise_const`` (a fixed N(0, 1) image drawn at initialisation,
  used by ``noise_mode='const'``).

Random noise (``noise_mode='random'``, the official default) draws from the ``'noise'`` rng stream:
pass ``rngs={'noise': key}`` to ``apply``. ``fused_modconv`` / ``fp16_channels_last`` only change the official
code's speed, not its math, and are accepted and ignored here.

Mixed precision: the official code runs the ``num_fp16_res`` highest-resolution blocks in float16 with
``conv_clamp=256``. Here ``fp16_dtype`` (``with_compute_dtype('bfloat16')``, the training switch ``model.bf16``)
makes those blocks compute their convolutions, bias, activation and clamp in that dtype; the styles, the
demodulation coefficients, the noise images and strengths, the mapping network and the accumulated ToRGB image
stay float32, and so does the output. (The official fp16 path also rescales weights and styles before modulating
to stay within float16's range; bfloat16 has float32's range, so the float32 formula is kept.) ``None`` (the
default) computes everything in float32.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from stylegan_jax.networks.discriminator import (
    DEFAULT_RESAMPLE_FILTER,
    FilterSpec,
    as_filter_spec,
    resample_filter_array,
)
from stylegan_jax.networks.generator import NOISE_MODES, GeneratorInterface
from stylegan_jax.networks.layers import FullyConnectedLayer, normal_init
from stylegan_jax.networks.mapping import MappingNetwork
from stylegan_jax.ops.bias_act import ACTIVATION_GAINS, bias_act
from stylegan_jax.ops.modulated_conv import conv2d, modulated_conv2d
from stylegan_jax.ops.upfirdn2d import upsample2d
from stylegan_jax.utils.shapes import check_shape

ARCHITECTURES = ("orig", "skip", "resnet")


# ----------------------------------------------------------------------------------------------------
# Layers and blocks.


class SynthesisLayer(nn.Module):
    """Modulated conv (optionally 2x upsampling) + noise + bias + activation + clamp."""

    in_channels: int                              # Number of input channels.
    out_channels: int                             # Number of output channels.
    w_dim: int                                    # Intermediate latent (W) dimensionality.
    resolution: int                               # Output resolution of this layer.
    kernel_size: int = 3                          # Convolution kernel size.
    up: int = 1                                   # Integer upsampling factor (1 or 2).
    use_noise: bool = True                        # Add per-pixel noise (scaled by the learned noise_strength)?
    activation: str = "lrelu"                     # 'linear', 'relu' or 'lrelu'.
    resample_filter: FilterSpec = DEFAULT_RESAMPLE_FILTER  # Low-pass taps used when upsampling.
    conv_clamp: float | None = None               # Clamp the output to +-conv_clamp (times gain); None = off.
    dtype: Any = jnp.float32                      # Compute dtype of the conv, noise addition, bias and activation.

    @nn.compact
    def __call__(self, x: jnp.ndarray, w: jnp.ndarray, noise_mode: str = "random", gain: float = 1.0) -> jnp.ndarray:
        res = self.resolution
        check_shape(x, (None, res // self.up, res // self.up, self.in_channels), f"{self.name} input")
        styles = FullyConnectedLayer(self.in_channels, bias_init=1.0, name="affine")(w)
        k = self.kernel_size
        weight = self.param("weight", normal_init(1.0), (k, k, self.in_channels, self.out_channels))
        bias = self.param("bias", nn.initializers.zeros, (self.out_channels,))

        noise = None
        if self.use_noise:
            strength = self.param("noise_strength", nn.initializers.zeros, ())
            noise_const = self.variable(
                "buffers", "noise_const", lambda: jax.random.normal(self.make_rng("params"), (res, res), jnp.float32))
            if noise_mode == "random" and self.has_rng("noise"):
                noise = jax.random.normal(self.make_rng("noise"), (x.shape[0], res, res, 1), jnp.float32) * strength
            elif noise_mode == "random" and not self.is_initializing():
                raise ValueError(f"{self.name}: noise_mode='random' needs an rng: apply(..., rngs={{'noise': key}}), "
                                 "or use noise_mode='const' / 'none'")
            elif noise_mode in ("random", "const"):
                # During init without a noise rng the const image stands in: the strength is 0 there anyway.
                noise = (noise_const.value * strength)[None, :, :, None]

        # Styles and demodulation coefficients are computed in float32 and cast for the product.
        x = modulated_conv2d(x.astype(self.dtype), weight, styles, demodulate=True, up=self.up, padding=k // 2,
                             prenormalize=False, resample_filter=resample_filter_array(self.resample_filter))
        if noise is not None:
            x = x + noise.astype(x.dtype)
        act_gain = ACTIVATION_GAINS[self.activation] * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        x = bias_act(x, bias, act=self.activation, gain=act_gain, clamp=clamp)
        check_shape(x, (None, res, res, self.out_channels), f"{self.name} output")
        return x


class ToRGBLayer(nn.Module):
    """Modulated (not demodulated) 1x1 convolution to image channels, bias, clamp."""

    out_channels: int                             # Number of image channels.
    w_dim: int                                    # Intermediate latent (W) dimensionality.
    kernel_size: int = 1                          # Convolution kernel size.
    conv_clamp: float | None = None               # Clamp the output to +-conv_clamp; None = off.
    dtype: Any = jnp.float32                      # Compute dtype of the conv, bias and clamp (the block's).

    @nn.compact
    def __call__(self, x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
        x = x.astype(self.dtype)
        in_channels = x.shape[-1]
        k = self.kernel_size
        # Without demodulation the equalized-lr weight gain must be applied; folding it into the
        # styles (as the official code does) gives the same rounding.
        styles = FullyConnectedLayer(in_channels, bias_init=1.0, name="affine")(w)
        styles = styles * (1 / math.sqrt(in_channels * k * k))
        weight = self.param("weight", normal_init(1.0), (k, k, in_channels, self.out_channels))
        bias = self.param("bias", nn.initializers.zeros, (self.out_channels,))
        x = modulated_conv2d(x, weight, styles, demodulate=False, padding=k // 2)
        return bias_act(x, bias, clamp=self.conv_clamp)


class SkipLayer(nn.Module):
    """Official ``Conv2dLayer(kernel_size=1, bias=False, up=2)`` with gain sqrt(1/2), linear, no clamp."""

    out_channels: int                             # Number of output channels.
    resample_filter: FilterSpec = DEFAULT_RESAMPLE_FILTER  # Low-pass taps for the upsampling.
    dtype: Any = jnp.float32                      # Compute dtype (the block's).

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = x.astype(self.dtype)
        in_ch = x.shape[-1]
        weight = self.param("weight", normal_init(1.0), (1, 1, in_ch, self.out_channels))
        w = weight * (1 / math.sqrt(in_ch))
        # A 1x1 conv commutes with upsampling: convolve at low resolution, then upsample.
        y = conv2d(x, w)
        y = upsample2d(y, resample_filter_array(self.resample_filter))
        return y * jnp.asarray(math.sqrt(0.5), y.dtype)


class SynthesisBlock(nn.Module):
    """One resolution: (constant input | 2x upsampling conv0), conv1, and ToRGB / image skip."""

    in_channels: int                              # Number of input channels, 0 = first block (learned constant).
    out_channels: int                             # Number of output channels.
    w_dim: int                                    # Intermediate latent (W) dimensionality.
    resolution: int                               # Resolution of this block.
    img_channels: int                             # Number of output color channels.
    is_last: bool                                 # Is this the last block?
    architecture: str = "skip"                    # 'orig', 'skip' or 'resnet'.
    resample_filter: FilterSpec = DEFAULT_RESAMPLE_FILTER  # Low-pass taps for upsampling features and images.
    conv_clamp: float | None = 256                # Clamp conv outputs to +-X; None = off.
    kernel_size: int = 3                          # Kernel size of conv0 / conv1.
    use_noise: bool = True                        # Noise inputs in conv0 / conv1?
    activation: str = "lrelu"                     # Activation of conv0 / conv1.
    dtype: Any = jnp.float32                      # Compute dtype of the block (bfloat16 = the official "use_fp16").

    @property
    def num_conv(self) -> int:
        return 1 if self.in_channels == 0 else 2

    @property
    def num_torgb(self) -> int:
        return 1 if self.is_last or self.architecture == "skip" else 0

    @nn.compact
    def __call__(self, x: jnp.ndarray | None, img: jnp.ndarray | None, ws: jnp.ndarray,
                 noise_mode: str = "random") -> tuple[jnp.ndarray, jnp.ndarray | None]:
        res = self.resolution
        check_shape(ws, (None, self.num_conv + self.num_torgb, self.w_dim), f"b{res} ws")
        n = ws.shape[0]
        layer = dict(w_dim=self.w_dim, resolution=res, kernel_size=self.kernel_size, use_noise=self.use_noise,
                     activation=self.activation, resample_filter=self.resample_filter, conv_clamp=self.conv_clamp,
                     dtype=self.dtype)

        if self.in_channels == 0:
            const = self.param("const", normal_init(1.0), (res, res, self.out_channels))
            x = jnp.broadcast_to(const[None], (n, res, res, self.out_channels))
            x = SynthesisLayer(self.out_channels, self.out_channels, name="conv1", **layer)(x, ws[:, 0], noise_mode)
        else:
            check_shape(x, (n, res // 2, res // 2, self.in_channels), f"b{res} input")
            conv0 = SynthesisLayer(self.in_channels, self.out_channels, up=2, name="conv0", **layer)
            conv1 = SynthesisLayer(self.out_channels, self.out_channels, name="conv1", **layer)
            if self.architecture == "resnet":
                y = SkipLayer(self.out_channels, self.resample_filter, dtype=self.dtype, name="skip")(x)
                x = conv0(x, ws[:, 0], noise_mode)
                x = conv1(x, ws[:, 1], noise_mode, gain=math.sqrt(0.5))
                x = y + x
            else:
                x = conv0(x, ws[:, 0], noise_mode)
                x = conv1(x, ws[:, 1], noise_mode)
        check_shape(x, (n, res, res, self.out_channels), f"b{res} features")

        if img is not None:
            check_shape(img, (n, res // 2, res // 2, self.img_channels), f"b{res} image input")
            img = upsample2d(img, resample_filter_array(self.resample_filter))
        if self.num_torgb:
            y = ToRGBLayer(self.img_channels, self.w_dim, conv_clamp=self.conv_clamp, dtype=self.dtype,
                           name="torgb")(x, ws[:, self.num_conv])
            y = y.astype(jnp.float32)  # the image is accumulated in float32 whatever the block computes in
            img = y if img is None else img + y
        if img is not None:
            check_shape(img, (n, res, res, self.img_channels), f"b{res} image")
        return x, img


# ----------------------------------------------------------------------------------------------------
# Networks.


def block_resolutions(img_resolution: int) -> list[int]:
    """4, 8, ..., img_resolution (a power of two >= 4)."""
    if img_resolution < 4 or img_resolution & (img_resolution - 1):
        raise ValueError(f"StyleGAN2: img_resolution must be a power of two >= 4, got {img_resolution}")
    return [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]


def block_channels(res: int, channel_base: int, channel_max: int) -> int:
    """Feature channels at resolution ``res``: inversely proportional to it, capped."""
    return min(channel_base // res, channel_max)


class SynthesisNetwork(nn.Module):
    """ws -> NHWC image through one SynthesisBlock per resolution."""

    w_dim: int                                    # Intermediate latent (W) dimensionality.
    img_resolution: int                           # Output image resolution.
    img_channels: int                             # Number of color channels.
    channel_base: int = 32768                     # Overall multiplier for the number of channels.
    channel_max: int = 512                        # Maximum number of channels in any layer.
    num_fp16_res: int = 4                         # Highest resolutions computed in fp16_dtype (when it is set).
    architecture: str = "skip"                    # 'orig', 'skip' or 'resnet'.
    resample_filter: FilterSpec = DEFAULT_RESAMPLE_FILTER  # Low-pass taps for all upsampling.
    conv_clamp: float | None = 256                # Clamp conv outputs to +-X; None = off.
    kernel_size: int = 3                          # Kernel size of the synthesis convolutions.
    use_noise: bool = True                        # Per-pixel noise inputs?
    activation: str = "lrelu"                     # Activation of the synthesis convolutions.
    fp16_dtype: Any = None                        # Dtype of the num_fp16_res highest-resolution blocks (e.g.
                                                  # 'bfloat16'); None = float32 everywhere.

    @property
    def fp16_resolution(self) -> int:
        """Blocks at this resolution and above compute in ``fp16_dtype`` (when set); the official rule."""
        return max(2 ** (int(math.log2(self.img_resolution)) + 1 - self.num_fp16_res), 8)

    def block_dtype(self, res: int) -> Any:
        """The compute dtype of the block at resolution ``res``."""
        if self.fp16_dtype is not None and res >= self.fp16_resolution:
            return jnp.dtype(self.fp16_dtype)
        return jnp.float32

    @property
    def num_ws(self) -> int:
        # One w per conv; the ToRGB of block b shares its w with conv0 of block b+1, so only the last
        # block's ToRGB adds one.
        return 2 * len(block_resolutions(self.img_resolution))

    def block_ws_ranges(self) -> list[tuple[int, int, int]]:
        """``(resolution, first w index, number of ws)`` of every block."""
        out, idx = [], 0
        for res in block_resolutions(self.img_resolution):
            num_conv = 1 if res == 4 else 2
            num_torgb = 1 if res == self.img_resolution or self.architecture == "skip" else 0
            out.append((res, idx, num_conv + num_torgb))
            idx += num_conv
        return out

    @nn.compact
    def __call__(self, ws: jnp.ndarray, noise_mode: str = "random") -> jnp.ndarray:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"StyleGAN2 SynthesisNetwork: architecture {self.architecture!r} not in {ARCHITECTURES}")
        if self.activation not in ACTIVATION_GAINS:
            raise ValueError(f"StyleGAN2 SynthesisNetwork: activation {self.activation!r} is not supported")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"StyleGAN2: noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        check_shape(ws, (None, self.num_ws, self.w_dim), "StyleGAN2 SynthesisNetwork ws")
        ws = ws.astype(jnp.float32)
        x = img = None
        for res, start, count in self.block_ws_ranges():
            in_ch = block_channels(res // 2, self.channel_base, self.channel_max) if res > 4 else 0
            block = SynthesisBlock(
                in_ch, block_channels(res, self.channel_base, self.channel_max), self.w_dim, res, self.img_channels,
                is_last=res == self.img_resolution, architecture=self.architecture,
                resample_filter=self.resample_filter, conv_clamp=self.conv_clamp, kernel_size=self.kernel_size,
                use_noise=self.use_noise, activation=self.activation, dtype=self.block_dtype(res), name=f"b{res}")
            x, img = block(x, img, ws[:, start:start + count], noise_mode)
        check_shape(img, (ws.shape[0], self.img_resolution, self.img_resolution, self.img_channels),
                      "StyleGAN2 image")
        return img


class StyleGAN2Generator(GeneratorInterface):
    """StyleGAN2 generator: z, c -> NCHW image in about [-1, 1].

    Fields follow the official ``training.networks_stylegan2.Generator`` constructor, with
    ``mapping_kwargs`` and ``**synthesis_kwargs`` flattened into named fields. Build from official
    kwargs with :func:`stylegan2_generator_from_official_kwargs`.
    """

    z_dim: int = 512                              # Input latent (Z) dimensionality.
    c_dim: int = 0                                # Conditioning label (C) dimensionality.
    w_dim: int = 512                              # Intermediate latent (W) dimensionality.
    img_resolution: int = 256                     # Output resolution.
    img_channels: int = 3                         # Number of output color channels.
    mapping_layers: int = 8                       # mapping_kwargs.num_layers: number of mapping layers.
    mapping_lr_multiplier: float = 0.01           # mapping_kwargs.lr_multiplier of the mapping layers.
    w_avg_beta: float = 0.998                     # mapping_kwargs.w_avg_beta: decay of the running mean of w.
    embed_features: int | None = None             # mapping_kwargs.embed_features: label embedding width (w_dim).
    layer_features: int | None = None             # mapping_kwargs.layer_features: hidden mapping width (w_dim).
    channel_base: int = 32768                     # Overall multiplier for the number of channels.
    channel_max: int = 512                        # Maximum number of channels in any layer.
    num_fp16_res: int = 4                         # Highest resolutions computed in fp16_dtype (when it is set).
    architecture: str = "skip"                    # 'orig', 'skip' or 'resnet'.
    resample_filter: FilterSpec = DEFAULT_RESAMPLE_FILTER  # Low-pass taps for all upsampling.
    conv_clamp: float | None = 256                # Clamp conv outputs to +-X; None = off.
    kernel_size: int = 3                          # Kernel size of the synthesis convolutions.
    use_noise: bool = True                        # Per-pixel noise inputs?
    activation: str = "lrelu"                     # Activation of the synthesis convolutions.
    fp16_dtype: Any = None                        # Compute dtype of the num_fp16_res highest-resolution blocks
                                                  # (e.g. 'bfloat16'; a run-time choice, not saved); None = float32.

    config_class: ClassVar[str] = "stylegan2.Generator"
    cfg_names: ClassVar[tuple[str, ...]] = ("stylegan2",)
    has_input_transform: ClassVar[bool] = False
    supports_compute_dtype: ClassVar[bool] = True

    @property
    def has_noise_inputs(self) -> bool:
        return self.use_noise

    @property
    def variable_collections(self) -> tuple[str, ...]:
        # The noise_const images are the only buffers: without noise inputs there is no 'buffers' collection.
        return ("params", "ema", "buffers") if self.use_noise else ("params", "ema")

    def _synthesis(self, **kw: Any) -> SynthesisNetwork:
        return SynthesisNetwork(
            w_dim=self.w_dim, img_resolution=self.img_resolution, img_channels=self.img_channels,
            channel_base=self.channel_base, channel_max=self.channel_max, num_fp16_res=self.num_fp16_res,
            architecture=self.architecture, resample_filter=self.resample_filter, conv_clamp=self.conv_clamp,
            kernel_size=self.kernel_size, use_noise=self.use_noise, activation=self.activation,
            fp16_dtype=self.fp16_dtype, **kw)

    @property
    def num_ws(self) -> int:
        return 2 * len(block_resolutions(self.img_resolution))

    def setup(self):
        self.synthesis = self._synthesis()
        # The official StyleGAN2 mapping stores its bias unscaled by lr_multiplier, ours stores it divided;
        # every mapping bias starts at 0 and the run-time bias is the same, so conversion copies as is.
        self.mapping = MappingNetwork(z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, num_ws=self.num_ws,
                                      num_layers=self.mapping_layers, lr_multiplier=self.mapping_lr_multiplier,
                                      w_avg_beta=self.w_avg_beta, embed_features=self.embed_features,
                                      layer_features=self.layer_features)

    def synthesize(self, ws: jnp.ndarray, transform: jnp.ndarray | None = None, update_emas: bool = False,
                   noise_mode: str = "random") -> jnp.ndarray:
        """ws -> NCHW images. ``transform`` exists for the common generator interface and must be None;
        ``update_emas`` is accepted and unused (the synthesis network has no running statistics)."""
        del update_emas
        self.check_transform(transform)
        return jnp.transpose(self.synthesis(ws, noise_mode), (0, 3, 1, 2))

    # ---- The rest of the generator interface (stylegan_jax.networks.generator).

    def with_compute_dtype(self, dtype: Any) -> StyleGAN2Generator:
        """The ``num_fp16_res`` highest-resolution blocks compute in ``dtype`` (e.g. 'bfloat16'); None = float32.
        Same variables."""
        return self.clone(fp16_dtype=dtype, parent=None)

    def to_config(self) -> dict:
        return {"class": self.config_class, "kwargs": {f: getattr(self, f) for f in STYLEGAN2_FIELDS}}

    @classmethod
    def from_config(cls, kwargs: dict, impl: str = "fast") -> StyleGAN2Generator:
        del impl  # One implementation of every op here.
        kwargs = dict(kwargs)
        unknown = set(kwargs) - set(STYLEGAN2_FIELDS)
        if unknown:
            raise ValueError(f"generator config has unknown fields {sorted(unknown)}")
        kwargs["resample_filter"] = filter_field(kwargs.get("resample_filter", DEFAULT_RESAMPLE_FILTER))
        return cls(**kwargs)

    @classmethod
    def build(cls, cfg: str = "stylegan2", z_dim: int = 512, w_dim: int = 512, c_dim: int = 0,
              img_resolution: int = 256, img_channels: int = 3, channel_base: int = 32768, channel_max: int = 512,
              mapping_layers: int = 8, impl: str = "fast", **overrides: Any) -> StyleGAN2Generator:
        """``overrides`` are ``StyleGAN2Generator`` fields (``conv_clamp``, ``architecture``, ``use_noise``,
        ``fp16_dtype``, ...); the StyleGAN3-only fields (``STYLEGAN3_ONLY_FIELDS``) are ignored so one config
        describes both."""
        del cfg, impl
        overrides = {k: v for k, v in overrides.items() if k not in STYLEGAN3_ONLY_FIELDS}
        unknown = sorted(set(overrides) - set(STYLEGAN2_FIELDS) - {"fp16_dtype"})
        if unknown:
            raise ValueError(f"build_generator: {unknown} are not StyleGAN2 generator fields")
        return cls(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                   mapping_layers=mapping_layers, channel_base=channel_base, channel_max=channel_max, **overrides)


# Architecture fields (everything a checkpoint config must record to rebuild the module; the compute dtype is a
# run-time choice, like StyleGAN3's).
STYLEGAN2_FIELDS = tuple(f.name for f in dataclasses.fields(StyleGAN2Generator)
                         if f.name not in ("parent", "name", "fp16_dtype"))


def filter_field(f: Any) -> FilterSpec:
    """``resample_filter`` as a module field: :func:`as_filter_spec` (nested tuples, validated) with integral taps
    kept as ints, so that a generator rebuilt from its JSON config equals the one saved (same repr, so the same
    compiled functions: ``[1, 3, 3, 1]`` stays ``(1, 3, 3, 1)``)."""
    spec = as_filter_spec(f)

    def tap(v: float) -> float | int:
        return int(v) if float(v).is_integer() else v

    if isinstance(spec[0], tuple):
        return tuple(tuple(tap(v) for v in row) for row in spec)
    return tuple(tap(v) for v in spec)


# Official constructor arguments: where each lands, and the ones that only affect speed/precision.
_SYNTHESIS_FIELDS = {"channel_base", "channel_max", "num_fp16_res", "architecture", "resample_filter",
                     "conv_clamp", "kernel_size", "use_noise", "activation"}
_IGNORED_SYNTHESIS = {"use_fp16", "fp16_channels_last", "fused_modconv_default"}
# Synthesis fields of StyleGAN3 that a shared config may set and the StyleGAN2 generator has no use for.
STYLEGAN3_ONLY_FIELDS = ("magnitude_ema_beta", "num_layers", "margin_size", "input_transform_init")

_MAPPING_FIELDS = {"num_layers": "mapping_layers", "lr_multiplier": "mapping_lr_multiplier",
                   "w_avg_beta": "w_avg_beta", "embed_features": "embed_features",
                   "layer_features": "layer_features"}
_IGNORED_MAPPING = {"freeze_layers", "freeze_embed"}  # Training-time freezing only.


def stylegan2_generator_from_official_kwargs(G_kwargs: dict) -> StyleGAN2Generator:
    """Build a StyleGAN2Generator from the official ``training.networks_stylegan2.Generator`` kwargs.

    Accepts the top-level arguments, ``mapping_kwargs`` and the synthesis / block / layer kwargs the
    official constructor forwards; ``class_name`` is allowed when it names the official class.
    Unknown or unsupported arguments raise ``ValueError`` naming them.
    """
    kw = dict(G_kwargs)
    cls = kw.pop("class_name", None)
    if cls is not None and cls != "training.networks_stylegan2.Generator":
        raise ValueError(f"G_kwargs class_name {cls!r} is not training.networks_stylegan2.Generator")
    required = ["z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"]
    missing = [k for k in required if k not in kw]
    if missing:
        raise ValueError(f"official StyleGAN2 generator kwargs lack {missing}")
    fields: dict[str, Any] = {k: int(kw.pop(k)) for k in required}

    mapping_kwargs = dict(kw.pop("mapping_kwargs", None) or {})
    for key in list(mapping_kwargs):
        if key in _IGNORED_MAPPING:
            mapping_kwargs.pop(key)
    if mapping_kwargs.get("activation", "lrelu") != "lrelu":
        raise ValueError(f"mapping_kwargs.activation {mapping_kwargs['activation']!r} is not supported (only 'lrelu')")
    mapping_kwargs.pop("activation", None)
    if "w_avg_beta" in mapping_kwargs and mapping_kwargs["w_avg_beta"] is None:
        raise ValueError("mapping_kwargs.w_avg_beta=None (no w_avg tracking) is not supported")
    unknown = sorted(set(mapping_kwargs) - set(_MAPPING_FIELDS))
    if unknown:
        raise ValueError(f"unsupported mapping_kwargs {unknown}")
    for key, value in mapping_kwargs.items():
        fields[_MAPPING_FIELDS[key]] = value

    for key in list(kw):
        if key in _IGNORED_SYNTHESIS:
            kw.pop(key)
        elif key in _SYNTHESIS_FIELDS:
            fields[key] = kw.pop(key)
    if kw:
        raise ValueError(f"unsupported official StyleGAN2 generator kwargs {sorted(kw)}")
    if "resample_filter" in fields:
        fields["resample_filter"] = filter_field(fields["resample_filter"])
    if fields.get("architecture", "skip") not in ARCHITECTURES:
        raise ValueError(f"architecture {fields['architecture']!r} not in {ARCHITECTURES}")
    if fields.get("activation", "lrelu") not in ACTIVATION_GAINS:
        raise ValueError(f"activation {fields['activation']!r} is not supported")
    if fields.get("conv_clamp") is not None:
        fields["conv_clamp"] = float(fields["conv_clamp"])
    block_resolutions(fields["img_resolution"])  # Validates the resolution early.
    return StyleGAN2Generator(**fields)


__all__ = [
    "STYLEGAN2_FIELDS",
    "SkipLayer",
    "StyleGAN2Generator",
    "SynthesisBlock",
    "SynthesisLayer",
    "SynthesisNetwork",
    "ToRGBLayer",
    "stylegan2_generator_from_official_kwargs",
]
