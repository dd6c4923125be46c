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
pass ``rngs={'noise': key}`` to ``apply``. ``use_fp16`` / ``num_fp16_res`` / ``fused_modconv`` only
change the official code's speed or precision, not its math, and are accepted and ignored here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from stylegan_jax.networks.discriminator import (
    DEFAULT_RESAMPLE_FILTER,
    FilterSpec,
    as_filter_spec,
    resample_filter_array,
)
from stylegan_jax.networks.layers import FullyConnectedLayer, normal_init
from stylegan_jax.networks.mapping import MappingNetwork
from stylegan_jax.ops.bias_act import ACTIVATION_GAINS, bias_act
from stylegan_jax.ops.modulated_conv import conv2d
from stylegan_jax.ops.upfirdn2d import upfirdn2d

NOISE_MODES = ("random", "const", "none")
ARCHITECTURES = ("orig", "skip", "resnet")


# ----------------------------------------------------------------------------------------------------
# Resampling convolution.


def _filter_taps(f: np.ndarray) -> tuple[int, int]:
    """(width, height) of a 1-D (separable) or 2-D filter."""
    return (f.shape[0], f.shape[0]) if f.ndim == 1 else (f.shape[1], f.shape[0])


def upsample2d(x: jnp.ndarray, f: np.ndarray, up: int = 2) -> jnp.ndarray:
    """Zero-insertion upsampling by ``up`` followed by the low-pass ``f``, keeping the signal level.

    The padding centres the filter so that the output is exactly ``up`` times the input size.
    """
    fw, fh = _filter_taps(f)
    padding = ((fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2)
    return upfirdn2d(x, f, up=up, padding=padding, gain=up * up)


def conv2d_up(x: jnp.ndarray, w: jnp.ndarray, f: np.ndarray, up: int = 2, padding: int = 0) -> jnp.ndarray:
    """Convolution with ``up``-times upsampling, as the official ``conv2d_resample(up=up)`` computes it.

    A stride-``up`` transposed convolution (the kernel scattered onto every input pixel, which is the
    zero-inserted image *convolved* with the kernel) followed by the low-pass filter ``f``.
    ``padding`` is the symmetric padding of the equivalent plain convolution of the upsampled image
    (``kernel // 2`` keeps the output at exactly ``up`` times the input size).

    Args:
      x: ``[N, H, W, I]``.
      w: ``[kh, kw, I, O]`` kernel, in the same orientation as for a stride-1 ``conv2d``.
      f: 1-D (separable) or 2-D low-pass filter with unit DC gain (NumPy constant).
      up: upsampling factor.
      padding: padding with respect to the upsampled image.

    Returns:
      ``[N, H * up + 2 * padding - kh + 1, W * up + 2 * padding - kw + 1, O]``.
    """
    kh, kw = w.shape[:2]
    fw, fh = _filter_taps(f)
    # Total padding around the upsampled image, split so the filter sits centred (official arithmetic),
    # then expressed relative to the transposed convolution's full output.
    px0 = padding + (fw + up - 1) // 2 - (kw - 1)
    px1 = padding + (fw - up) // 2 - (kw - up)
    py0 = padding + (fh + up - 1) // 2 - (kh - 1)
    py1 = padding + (fh - up) // 2 - (kh - up)
    # Whatever both sides would crop is cropped by the transposed convolution itself.
    pxt = max(min(-px0, -px1), 0)
    pyt = max(min(-py0, -py1), 0)
    # Transposed conv = zero insertion (lhs dilation) + full padding + correlation with the flipped kernel.
    precision = lax.Precision.HIGHEST if x.dtype == jnp.float32 else None
    y = lax.conv_general_dilated(
        x, jnp.flip(w, axis=(0, 1)).astype(x.dtype), window_strides=(1, 1),
        padding=[(kh - 1 - pyt, kh - 1 - pyt), (kw - 1 - pxt, kw - 1 - pxt)], lhs_dilation=(up, up),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision,
    )
    return upfirdn2d(y, f, padding=(px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt), gain=up * up)


def modulated_conv2d_resample(
    x: jnp.ndarray,
    weight: jnp.ndarray,
    styles: jnp.ndarray,
    demodulate: bool = True,
    up: int = 1,
    padding: int = 0,
    resample_filter: np.ndarray | None = None,
) -> jnp.ndarray:
    """StyleGAN2 modulated convolution with optional upsampling, computed as ``conv(x * s) * d``.

    Equal to convolving each sample with its own kernel ``w[kh,kw,i,o] * s[n,i] * d[n,o]``, where
    ``d[n,o] = 1 / sqrt(sum_{kh,kw,i} (w * s)^2 + 1e-8)`` when demodulating. Scaling activations
    instead of kernels lets one convolution with the shared kernel serve the whole batch; the
    official code's fused (grouped) and unfused paths are this same math.

    Args:
      x: ``[N, H, W, I]``.
      weight: ``[kh, kw, I, O]`` raw kernel (demodulation makes any constant gain irrelevant).
      styles: ``[N, I]``.
      demodulate: normalise every output channel of every sample's kernel to unit norm.
      up: 1 or the upsampling factor (then ``resample_filter`` is required).
      padding: symmetric padding (of the upsampled image when ``up > 1``).
      resample_filter: low-pass filter for upsampling.
    """
    n, _, _, in_ch = x.shape
    if weight.shape[2] != in_ch or styles.shape != (n, in_ch):
        raise ValueError(f"modulated_conv2d_resample: x {x.shape}, weight {weight.shape}, styles {styles.shape} "
                         "do not agree on the batch size / input channels")
    weight = weight.astype(jnp.float32)
    styles = styles.astype(jnp.float32)
    y = x * styles[:, None, None, :].astype(x.dtype)
    if up == 1:
        y = conv2d(y, weight, padding=padding)
    else:
        if resample_filter is None:
            raise ValueError("modulated_conv2d_resample: up > 1 needs a resample_filter")
        y = conv2d_up(y, weight, resample_filter, up=up, padding=padding)
    if demodulate:
        # sum_{kh,kw,i} (w[.,.,i,o] s[n,i])^2 = sum_i s[n,i]^2 sum_{kh,kw} w[.,.,i,o]^2
        wsq = jnp.sum(jnp.square(weight), axis=(0, 1))  # [I, O]
        dcoefs = lax.rsqrt(jnp.dot(jnp.square(styles), wsq, precision=lax.Precision.HIGHEST) + 1e-8)
        y = y * dcoefs[:, None, None, :].astype(y.dtype)
    return y


def _assert_shape(x: jnp.ndarray, shape: tuple[int | None, ...], what: str) -> None:
    """Static shape check (None = any size); raises at trace time naming both shapes."""
    if x.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape, strict=True)):
        want = tuple("N" if s is None else s for s in shape)
        raise ValueError(f"{what}: expected shape {want}, got {tuple(x.shape)}")


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

    @nn.compact
    def __call__(self, x: jnp.ndarray, w: jnp.ndarray, noise_mode: str = "random", gain: float = 1.0) -> jnp.ndarray:
        res = self.resolution
        _assert_shape(x, (None, res // self.up, res // self.up, self.in_channels), f"{self.name} input")
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

        x = modulated_conv2d_resample(x, weight, styles, demodulate=True, up=self.up, padding=k // 2,
                                      resample_filter=resample_filter_array(self.resample_filter))
        if noise is not None:
            x = x + noise.astype(x.dtype)
        act_gain = ACTIVATION_GAINS[self.activation] * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        x = bias_act(x, bias, act=self.activation, gain=act_gain, clamp=clamp)
        _assert_shape(x, (None, res, res, self.out_channels), f"{self.name} output")
        return x


class ToRGBLayer(nn.Module):
    """Modulated (not demodulated) 1x1 convolution to image channels, bias, clamp."""

    out_channels: int                             # Number of image channels.
    w_dim: int                                    # Intermediate latent (W) dimensionality.
    kernel_size: int = 1                          # Convolution kernel size.
    conv_clamp: float | None = None               # Clamp the output to +-conv_clamp; None = off.

    @nn.compact
    def __call__(self, x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
        in_channels = x.shape[-1]
        k = self.kernel_size
        # Without demodulation the equalized-lr weight gain must be applied; folding it into the
        # styles (as the official code does) gives the same rounding.
        styles = FullyConnectedLayer(in_channels, bias_init=1.0, name="affine")(w)
        styles = styles * (1 / math.sqrt(in_channels * k * k))
        weight = self.param("weight", normal_init(1.0), (k, k, in_channels, self.out_channels))
        bias = self.param("bias", nn.initializers.zeros, (self.out_channels,))
        x = modulated_conv2d_resample(x, weight, styles, demodulate=False, padding=k // 2)
        return bias_act(x, bias, clamp=self.conv_clamp)


class SkipLayer(nn.Module):
    """Official ``Conv2dLayer(kernel_size=1, bias=False, up=2)`` with gain sqrt(1/2), linear, no clamp."""

    out_channels: int                             # Number of output channels.
    resample_filter: FilterSpec = DEFAULT_RESAMPLE_FILTER  # Low-pass taps for the upsampling.

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        in_ch = x.shape[-1]
        weight = self.param("weight", normal_init(1.0), (1, 1, in_ch, self.out_channels))
        w = weight * (1 / math.sqrt(in_ch))
        # A 1x1 conv commutes with upsampling: convolve at low resolution, then upsample.
        y = conv2d(x, w)
        y = upsample2d(y, resample_filter_array(self.resample_filter))
        return y * math.sqrt(0.5)


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
        _assert_shape(ws, (None, self.num_conv + self.num_torgb, self.w_dim), f"b{res} ws")
        n = ws.shape[0]
        layer = dict(w_dim=self.w_dim, resolution=res, kernel_size=self.kernel_size, use_noise=self.use_noise,
                     activation=self.activation, resample_filter=self.resample_filter, conv_clamp=self.conv_clamp)

        if self.in_channels == 0:
            const = self.param("const", normal_init(1.0), (res, res, self.out_channels))
            x = jnp.broadcast_to(const[None], (n, res, res, self.out_channels))
            x = SynthesisLayer(self.out_channels, self.out_channels, name="conv1", **layer)(x, ws[:, 0], noise_mode)
        else:
            _assert_shape(x, (n, res // 2, res // 2, self.in_channels), f"b{res} input")
            conv0 = SynthesisLayer(self.in_channels, self.out_channels, up=2, name="conv0", **layer)
            conv1 = SynthesisLayer(self.out_channels, self.out_channels, name="conv1", **layer)
            if self.architecture == "resnet":
                y = SkipLayer(self.out_channels, self.resample_filter, name="skip")(x)
                x = conv0(x, ws[:, 0], noise_mode)
                x = conv1(x, ws[:, 1], noise_mode, gain=math.sqrt(0.5))
                x = y + x
            else:
                x = conv0(x, ws[:, 0], noise_mode)
                x = conv1(x, ws[:, 1], noise_mode)
        _assert_shape(x, (n, res, res, self.out_channels), f"b{res} features")

        if img is not None:
            _assert_shape(img, (n, res // 2, res // 2, self.img_channels), f"b{res} image input")
            img = upsample2d(img, resample_filter_array(self.resample_filter))
        if self.num_torgb:
            y = ToRGBLayer(self.img_channels, self.w_dim, conv_clamp=self.conv_clamp, name="torgb")(
                x, ws[:, self.num_conv])
            y = y.astype(jnp.float32)
            img = y if img is None else img + y
        if img is not None:
            _assert_shape(img, (n, res, res, self.img_channels), f"b{res} image")
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
    num_fp16_res: int = 4                         # Official fp16 resolutions; accepted and ignored (float32 here).
    architecture: str = "skip"                    # 'orig', 'skip' or 'resnet'.
    resample_filter: FilterSpec = DEFAULT_RESAMPLE_FILTER  # Low-pass taps for all upsampling.
    conv_clamp: float | None = 256                # Clamp conv outputs to +-X; None = off.
    kernel_size: int = 3                          # Kernel size of the synthesis convolutions.
    use_noise: bool = True                        # Per-pixel noise inputs?
    activation: str = "lrelu"                     # Activation of the synthesis convolutions.

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
        _assert_shape(ws, (None, self.num_ws, self.w_dim), "StyleGAN2 SynthesisNetwork ws")
        ws = ws.astype(jnp.float32)
        x = img = None
        for res, start, count in self.block_ws_ranges():
            in_ch = block_channels(res // 2, self.channel_base, self.channel_max) if res > 4 else 0
            block = SynthesisBlock(
                in_ch, block_channels(res, self.channel_base, self.channel_max), self.w_dim, res, self.img_channels,
                is_last=res == self.img_resolution, architecture=self.architecture,
                resample_filter=self.resample_filter, conv_clamp=self.conv_clamp, kernel_size=self.kernel_size,
                use_noise=self.use_noise, activation=self.activation, name=f"b{res}")
            x, img = block(x, img, ws[:, start:start + count], noise_mode)
        _assert_shape(img, (ws.shape[0], self.img_resolution, self.img_resolution, self.img_channels),
                      "StyleGAN2 image")
        return img


class StyleGAN2Generator(nn.Module):
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
    num_fp16_res: int = 4                         # Official fp16 resolutions; accepted and ignored.
    architecture: str = "skip"                    # 'orig', 'skip' or 'resnet'.
    resample_filter: FilterSpec = DEFAULT_RESAMPLE_FILTER  # Low-pass taps for all upsampling.
    conv_clamp: float | None = 256                # Clamp conv outputs to +-X; None = off.
    kernel_size: int = 3                          # Kernel size of the synthesis convolutions.
    use_noise: bool = True                        # Per-pixel noise inputs?
    activation: str = "lrelu"                     # Activation of the synthesis convolutions.

    def _synthesis(self, **kw: Any) -> SynthesisNetwork:
        return SynthesisNetwork(
            w_dim=self.w_dim, img_resolution=self.img_resolution, img_channels=self.img_channels,
            channel_base=self.channel_base, channel_max=self.channel_max, num_fp16_res=self.num_fp16_res,
            architecture=self.architecture, resample_filter=self.resample_filter, conv_clamp=self.conv_clamp,
            kernel_size=self.kernel_size, use_noise=self.use_noise, activation=self.activation, **kw)

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

    def map(self, z: jnp.ndarray, c: jnp.ndarray | None = None, truncation_psi: float | jnp.ndarray = 1.0,
            truncation_cutoff: int | None = None, update_emas: bool = False) -> jnp.ndarray:
        """z, c -> ws ``[N, num_ws, w_dim]``."""
        return self.mapping(z, c, truncation_psi, truncation_cutoff, update_emas)

    def synthesize(self, ws: jnp.ndarray, transform: jnp.ndarray | None = None, update_emas: bool = False,
                   noise_mode: str = "random") -> jnp.ndarray:
        """ws -> NCHW images. ``transform`` exists for interface parity with StyleGAN3 and must be None;
        ``update_emas`` is accepted and unused (the synthesis network has no running statistics)."""
        del update_emas
        if transform is not None:
            raise ValueError("StyleGAN2Generator has no input transform (that is a StyleGAN3 feature)")
        return jnp.transpose(self.synthesis(ws, noise_mode), (0, 3, 1, 2))

    def __call__(self, z: jnp.ndarray, c: jnp.ndarray | None = None, truncation_psi: float | jnp.ndarray = 1.0,
                 truncation_cutoff: int | None = None, transform: jnp.ndarray | None = None,
                 update_emas: bool = False, noise_mode: str = "random") -> jnp.ndarray:
        ws = self.map(z, c, truncation_psi, truncation_cutoff, update_emas)
        return self.synthesize(ws, transform, update_emas, noise_mode)


# Architecture fields (everything a checkpoint config must record to rebuild the module).
STYLEGAN2_FIELDS = tuple(f.name for f in dataclasses.fields(StyleGAN2Generator) if f.name not in ("parent", "name"))


# Official constructor arguments: where each lands, and the ones that only affect speed/precision.
_SYNTHESIS_FIELDS = {"channel_base", "channel_max", "num_fp16_res", "architecture", "resample_filter",
                     "conv_clamp", "kernel_size", "use_noise", "activation"}
_IGNORED_SYNTHESIS = {"use_fp16", "fp16_channels_last", "fused_modconv_default"}
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
        fields["resample_filter"] = as_filter_spec(fields["resample_filter"])
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
    "conv2d_up",
    "modulated_conv2d_resample",
    "stylegan2_generator_from_official_kwargs",
    "upsample2d",
]
