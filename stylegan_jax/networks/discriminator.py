"""The StyleGAN2 residual discriminator, as used to train StyleGAN3.

Structure (for a ``R x R`` input): one ``DiscriminatorBlock`` per resolution ``R, R/2, ..., 8`` that
halves the resolution, then a ``DiscriminatorEpilogue`` at 4x4 (minibatch standard deviation, 3x3 conv,
two dense layers). Conditional models project the epilogue output onto an embedding of the label
computed by a small mapping network.

Layout: images and activations are NHWC inside the network; ``Discriminator.__call__`` takes the image
as NCHW (the layout of the official code and of our generator's output) and transposes once.

Parameters follow the official names (``b64/conv0/weight``, ``b4/fc/bias``, ``mapping/fc0/weight``) so
that weight conversion is a rename plus a transpose: conv weights are HWIO ``[kh, kw, in, out]``, dense
weights ``[in, out]``. Weights are stored as N(0, 1) samples (divided by the layer's learning-rate
multiplier) and scaled at run time (equalized learning rate).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from stylegan_jax.networks.layers import FullyConnectedLayer, normal_init
from stylegan_jax.networks.mapping import normalize_2nd_moment
from stylegan_jax.ops.bias_act import ACTIVATION_GAINS, bias_act
from stylegan_jax.ops.modulated_conv import conv2d
from stylegan_jax.ops.upfirdn2d import filter_size, upfirdn2d
from stylegan_jax.utils.shapes import check_shape

DEFAULT_RESAMPLE_FILTER = (1, 3, 3, 1)

# A filter spec is a 1-D tuple of taps or a 2-D tuple of rows (tuples keep flax modules hashable).
FilterSpec = tuple[float, ...] | tuple[tuple[float, ...], ...]


# ----------------------------------------------------------------------------------------------------
# Filters.


def as_filter_spec(f: Any) -> FilterSpec:
    """Nested lists / arrays -> nested tuples of floats (hashable, usable as a module field)."""
    a = np.asarray(f, np.float64)
    if a.ndim == 0:
        a = a[None]
    if a.ndim not in (1, 2) or a.size == 0:
        raise ValueError(f"resample_filter must be a non-empty 1-D or 2-D array of taps, got shape {a.shape}")
    if a.ndim == 1:
        return tuple(float(v) for v in a)
    return tuple(tuple(float(v) for v in row) for row in a)


def official_filter_buffer(f: Any) -> np.ndarray:
    """The ``resample_filter`` buffer the official code stores for taps ``f`` (its ``setup_filter``).

    Short 1-D filters (< 8 taps) are stored as their 2-D outer product, longer ones stay 1-D; either
    way the filter is normalised to unit DC gain. Used by the converter to check the buffer.
    """
    a = np.asarray(f, np.float32)
    if a.ndim == 0:
        a = a[None]
    if a.ndim == 1 and a.size < 8:
        a = np.outer(a, a)
    return (a / a.sum()).astype(np.float32)


def resample_filter_array(f: FilterSpec) -> np.ndarray:
    """The filter handed to ``upfirdn2d``: normalised to unit DC gain, and kept 1-D for 1-D taps.

    The official code expands short 1-D filters to their outer product; a 1-D filter applied
    separably computes the same thing, and lets ``upfirdn2d`` take its fast separable path.
    It is a NumPy constant, never a parameter.
    """
    a = np.asarray(f, np.float64)
    return (a / a.sum()).astype(np.float32)


def _check_activation(act: str, what: str) -> None:
    if act not in ACTIVATION_GAINS:
        raise ValueError(f"{what}: activation {act!r} is not supported; expected one of {sorted(ACTIVATION_GAINS)}")


# ----------------------------------------------------------------------------------------------------
# Layers.


class Conv2dLayer(nn.Module):
    """Equalized-learning-rate convolution with optional FIR-filtered 2x downsampling, bias, activation
    and clamp. Output: ``clamp(act(conv(x) + b) * act_gain * gain, conv_clamp * gain)``."""

    out_channels: int                             # Number of output channels.
    kernel_size: int                              # Width and height of the (square) kernel.
    use_bias: bool = True                         # Add a bias before the activation?
    activation: str = "linear"                    # 'linear', 'relu' or 'lrelu'.
    down: int = 1                                 # Integer downsampling factor.
    resample_filter: FilterSpec = DEFAULT_RESAMPLE_FILTER  # Low-pass taps used when downsampling.
    conv_clamp: float | None = None               # Clamp the output to +-conv_clamp (times gain); None = off.

    @nn.compact
    def __call__(self, x: jnp.ndarray, gain: float = 1.0) -> jnp.ndarray:
        in_channels = x.shape[-1]
        k = self.kernel_size
        weight = self.param("weight", normal_init(1.0), (k, k, in_channels, self.out_channels))
        # Scale in float32, then cast: the same rounding as the official fp16 path.
        w = (weight * (1 / math.sqrt(in_channels * k * k))).astype(x.dtype)
        pad = k // 2

        if self.down == 1:
            y = conv2d(x, w, padding=pad)
        else:
            # Low-pass filter first (anti-aliasing), then a strided conv. The padding makes the filtered
            # image line up so that output pixel i covers input pixels 2i-1 .. 2i+2 (for 4 taps), i.e. the
            # output has exactly H / down pixels; all padding happens here, none in the conv itself.
            f = resample_filter_array(self.resample_filter)
            fw, fh = filter_size(f)
            d = self.down
            padding = (pad + (fw - d + 1) // 2, pad + (fw - d) // 2, pad + (fh - d + 1) // 2, pad + (fh - d) // 2)
            if k == 1:
                # A 1x1 conv commutes with the filter: decimate first so the conv runs on 1/4 of the pixels.
                x = upfirdn2d(x, f, down=d, padding=padding).astype(x.dtype)
                y = conv2d(x, w)
            else:
                x = upfirdn2d(x, f, padding=padding).astype(x.dtype)
                y = conv2d(x, w, stride=d)

        b = self.param("bias", nn.initializers.zeros, (self.out_channels,)) if self.use_bias else None
        act_gain = ACTIVATION_GAINS[self.activation] * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(y, b, act=self.activation, gain=act_gain, clamp=clamp)


def minibatch_stddev(x: jnp.ndarray, group_size: int | None, num_channels: int = 1) -> jnp.ndarray:
    """Append ``num_channels`` feature maps holding the minibatch standard deviation (NHWC).

    The batch is split into groups of ``G = min(group_size, N)`` samples (``None``: the whole batch)
    with stride: sample ``i`` belongs to group ``i % (N / G)``, so the G members of a group are
    ``N / G`` apart. For each group and each of the ``num_channels`` channel slices, the standard
    deviation over the group is averaged over pixels and channels of the slice; every sample of the
    group gets that value as a constant extra channel.
    """
    n, h, w, c = x.shape
    g = n if group_size is None else min(group_size, n)
    if n % g != 0:
        raise ValueError(
            f"minibatch_stddev: batch size {n} is not divisible by the group size {g} "
            f"(mbstd_group_size={group_size}); use a batch that is a multiple of it")
    f = num_channels
    if f < 1 or c % f != 0:
        raise ValueError(f"minibatch_stddev: {c} channels cannot be split into num_channels={f} equal slices")
    # [G, n, H, W, F, c/F]: a row-major split of the batch axis, which is what makes the grouping strided.
    y = x.astype(jnp.float32).reshape(g, n // g, h, w, f, c // f)
    y = y - jnp.mean(y, axis=0)
    y = jnp.sqrt(jnp.mean(jnp.square(y), axis=0) + 1e-8)   # [n, H, W, F, c/F]
    y = jnp.mean(y, axis=(1, 2, 4))                         # [n, F]
    y = jnp.tile(y, (g, 1)).astype(x.dtype)                 # [N, F]: sample i gets group i % n.
    y = jnp.broadcast_to(y[:, None, None, :], (n, h, w, f))
    return jnp.concatenate([x, y], axis=-1)


class MinibatchStdLayer(nn.Module):
    """Module wrapper of ``minibatch_stddev`` (no parameters)."""

    group_size: int | None                        # Samples per group; None = the whole minibatch.
    num_channels: int = 1                         # Number of channel slices, i.e. of appended channels.

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return minibatch_stddev(x, self.group_size, self.num_channels)


# ----------------------------------------------------------------------------------------------------
# Blocks.


class DiscriminatorBlock(nn.Module):
    """One resnet block: ``(skip(x) + conv1(conv0(x))) * sqrt(0.5)`` at half the resolution.

    The first block (``in_channels == 0``) first turns the image into features with a 1x1 FromRGB;
    later blocks only see features. Returns ``[N, resolution / 2, resolution / 2, out_channels]``.
    """

    in_channels: int                              # Input feature channels; 0 = first block (reads the image).
    tmp_channels: int                             # Channels inside the block.
    out_channels: int                             # Output channels.
    resolution: int                               # Input resolution of this block.
    img_channels: int                             # Colour channels of the image.
    activation: str = "lrelu"                     # Activation of FromRGB, conv0 and conv1.
    resample_filter: FilterSpec = DEFAULT_RESAMPLE_FILTER  # Low-pass taps of the downsampling layers.
    conv_clamp: float | None = None               # Clamp of FromRGB, conv0 and conv1 (not skip); None = off.
    dtype: Any = jnp.float32                      # Compute dtype of this block (float16/bfloat16 = "use_fp16").

    @nn.compact
    def __call__(self, x: jnp.ndarray | None, img: jnp.ndarray | None) -> jnp.ndarray:
        res = self.resolution
        if self.in_channels not in (0, self.tmp_channels):
            raise ValueError(f"b{res}: in_channels must be 0 or tmp_channels ({self.tmp_channels}), "
                             f"got {self.in_channels}")
        if self.in_channels == 0:
            if img is None:
                raise ValueError(f"b{res}: the first block needs the image")
            check_shape(img, (None, res, res, self.img_channels), f"b{res} image")
            x = Conv2dLayer(self.tmp_channels, 1, activation=self.activation, conv_clamp=self.conv_clamp,
                            name="fromrgb")(img.astype(self.dtype))
        else:
            if x is None:
                raise ValueError(f"b{res}: needs the features of the previous block")
            check_shape(x, (None, res, res, self.in_channels), f"b{res} input")
            x = x.astype(self.dtype)

        # Both branches are scaled by sqrt(0.5) so the sum keeps unit variance; the skip branch has
        # neither bias nor activation nor clamp.
        gain = math.sqrt(0.5)
        y = Conv2dLayer(self.out_channels, 1, use_bias=False, down=2, resample_filter=self.resample_filter,
                        name="skip")(x, gain=gain)
        x = Conv2dLayer(self.tmp_channels, 3, activation=self.activation, conv_clamp=self.conv_clamp,
                        name="conv0")(x)
        x = Conv2dLayer(self.out_channels, 3, activation=self.activation, down=2,
                        resample_filter=self.resample_filter, conv_clamp=self.conv_clamp, name="conv1")(x, gain=gain)
        x = y + x
        check_shape(x, (None, res // 2, res // 2, self.out_channels), f"b{res} output")
        return x


class DiscriminatorMapping(nn.Module):
    """Label -> ``cmap`` embedding for projection conditioning: the official MappingNetwork with
    ``z_dim=0``, ``num_ws=None`` and ``w_avg_beta=None`` (no latent, no broadcast, no moving average)."""

    c_dim: int                                    # Conditioning label dimensionality (> 0).
    cmap_dim: int                                 # Output dimensionality (the mapping's w_dim).
    num_layers: int = 8                           # Number of dense layers after the embedding.
    embed_features: int | None = None             # Label embedding width; None = cmap_dim.
    layer_features: int | None = None             # Hidden layer width; None = cmap_dim.
    activation: str = "lrelu"                     # Activation of the dense layers (the embedding is linear).
    lr_multiplier: float = 0.01                   # Learning-rate multiplier of the dense layers (not the embedding).

    @nn.compact
    def __call__(self, c: jnp.ndarray) -> jnp.ndarray:
        check_shape(c, (None, self.c_dim), "mapping label c")
        embed_features = self.cmap_dim if self.embed_features is None else self.embed_features
        layer_features = self.cmap_dim if self.layer_features is None else self.layer_features
        x = normalize_2nd_moment(FullyConnectedLayer(embed_features, name="embed")(c.astype(jnp.float32)))
        for idx in range(self.num_layers):
            features = self.cmap_dim if idx == self.num_layers - 1 else layer_features
            x = FullyConnectedLayer(features, activation=self.activation, lr_multiplier=self.lr_multiplier,
                                    name=f"fc{idx}")(x)
        check_shape(x, (None, self.cmap_dim), "mapping output")
        return x


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 head: minibatch stddev, 3x3 conv, dense, dense to ``1`` (or ``cmap_dim``), then the
    projection ``sum(out * cmap) / sqrt(cmap_dim)`` for conditional models. Always float32."""

    in_channels: int                              # Input feature channels.
    cmap_dim: int                                 # Dimensionality of the mapped label; 0 = unconditional.
    resolution: int = 4                           # Spatial size of the input.
    mbstd_group_size: int | None = 4              # Minibatch-stddev group size; None = the whole minibatch.
    mbstd_num_channels: int = 1                   # Minibatch-stddev channels; 0 = no minibatch-stddev layer.
    activation: str = "lrelu"                     # Activation of conv and fc.
    conv_clamp: float | None = None               # Clamp of the 3x3 conv; None = off.
    num_classes: int = 0                          # Width of the auxiliary class head on fc's features; 0 = none.

    @nn.compact
    def __call__(self, x: jnp.ndarray, cmap: jnp.ndarray | None = None,
                 ) -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray]:
        """Logits ``[N, 1]``; with ``num_classes > 0`` also the class logits ``[N, num_classes]``."""
        r = self.resolution
        check_shape(x, (None, r, r, self.in_channels), "b4 input")
        x = x.astype(jnp.float32)
        if self.mbstd_num_channels > 0:
            x = MinibatchStdLayer(self.mbstd_group_size, self.mbstd_num_channels, name="mbstd")(x)
        x = Conv2dLayer(self.in_channels, 3, activation=self.activation, conv_clamp=self.conv_clamp, name="conv")(x)
        # Flatten in NCHW order so that fc's weight is exactly the (transposed) official one.
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        x = FullyConnectedLayer(self.in_channels, activation=self.activation, name="fc")(x)
        classes = FullyConnectedLayer(self.num_classes, name="cls")(x) if self.num_classes > 0 else None
        x = FullyConnectedLayer(1 if self.cmap_dim == 0 else self.cmap_dim, name="out")(x)
        if self.cmap_dim > 0:
            if cmap is None:
                raise ValueError("b4: a conditional epilogue needs cmap")
            check_shape(cmap, (x.shape[0], self.cmap_dim), "b4 cmap")
            x = jnp.sum(x * cmap, axis=1, keepdims=True) * (1 / math.sqrt(self.cmap_dim))
        check_shape(x, (None, 1), "b4 output")
        return x if classes is None else (x, classes)


# ----------------------------------------------------------------------------------------------------
# The network.


class Discriminator(nn.Module):
    """StyleGAN2 discriminator (``resnet`` architecture): ``D(img [N, C, H, W], c [N, c_dim]) -> logits [N, 1]``.

    The fields mirror the official constructor, with the nested ``block_kwargs`` / ``mapping_kwargs`` /
    ``epilogue_kwargs`` flattened (see ``discriminator_from_official_kwargs``).

    ``pack > 1`` (not in the official network; PacGAN, Lin et al. 2018) scores packs of ``pack`` images stacked along
    the channels, ``[N, C, H, W] -> [N / pack, pack * C, H, W]``, one logit per pack, given to each of its members so
    that the output keeps the shape ``[N, 1]`` and the losses stay per-sample means. A pack of fakes that are all the
    same kind of image then looks unlike a pack of reals, which is the point: D sees the mixture. Pack ``j`` holds
    images ``j, j + N / pack, ...`` (strided, like the minibatch-stddev groups), so that the strided micro-batches
    of the train step hold whole packs, the same ones as the whole batch.
    """

    c_dim: int                                    # Conditioning label dimensionality; 0 = unconditional.
    img_resolution: int                           # Input resolution (a power of two >= 8).
    img_channels: int                             # Number of colour channels.
    architecture: str = "resnet"                  # Only 'resnet' (the one StyleGAN3 trains with) is implemented.
    channel_base: int = 32768                     # Channels at resolution r: min(channel_base // r, channel_max).
    channel_max: int = 512                        # Maximum number of channels of any layer.
    num_fp16_res: int = 4                         # Number of highest resolutions that run in fp16_dtype.
    conv_clamp: float | None = 256                # Clamp of every block's and the epilogue's convs; None = off.
    cmap_dim: int | None = None                   # Mapped label dimensionality; None = channels at 4x4.
    activation: str = "lrelu"                     # block_kwargs.activation: activation of the blocks.
    resample_filter: FilterSpec = DEFAULT_RESAMPLE_FILTER  # block_kwargs.resample_filter: downsampling taps.
    mapping_num_layers: int = 8                   # mapping_kwargs.num_layers.
    mapping_embed_features: int | None = None     # mapping_kwargs.embed_features; None = cmap_dim.
    mapping_layer_features: int | None = None     # mapping_kwargs.layer_features; None = cmap_dim.
    mapping_activation: str = "lrelu"             # mapping_kwargs.activation.
    mapping_lr_multiplier: float = 0.01           # mapping_kwargs.lr_multiplier.
    mbstd_group_size: int | None = 4              # epilogue_kwargs.mbstd_group_size; None = whole minibatch.
    mbstd_num_channels: int = 1                   # epilogue_kwargs.mbstd_num_channels; 0 = off.
    epilogue_activation: str = "lrelu"            # epilogue_kwargs.activation.
    fp16_dtype: Any = None                        # Dtype of the num_fp16_res blocks; None = float32 (official on CPU).
    pack: int = 1                                 # Images per scored pack (PacGAN); 1 = the official D.
    class_head: bool = False                      # Also predict the label (AC-GAN head, needs c_dim > 0); False =
                                                  # the official D.
    project_labels: bool = True                   # Realness projected on the mapped label (official); False: the
                                                  # realness ignores c (classic AC-GAN D, needs class_head).

    def __post_init__(self) -> None:
        # Fail at construction, not at the first trace.
        if self.pack < 1:
            raise ValueError(f"Discriminator: pack must be >= 1, got {self.pack}")
        if self.pack > 1 and self.c_dim > 0:
            raise ValueError(f"Discriminator: pack={self.pack} needs an unconditional D (c_dim=0, got {self.c_dim}): "
                             f"the members of a pack have their own labels")
        if self.class_head and self.c_dim == 0:
            raise ValueError("Discriminator: class_head=True needs a conditional D (c_dim > 0): it predicts the label")
        if not self.project_labels and self.c_dim > 0 and not self.class_head:
            raise ValueError("Discriminator: project_labels=False needs class_head=True: otherwise D reads no label at "
                             "all and a conditional G is never asked to follow its labels")
        if self.architecture != "resnet":
            raise ValueError(f"Discriminator: architecture {self.architecture!r} is not implemented; only 'resnet'")
        log2 = int(round(math.log2(self.img_resolution))) if self.img_resolution > 0 else 0
        if self.img_resolution < 8 or 2**log2 != self.img_resolution:
            raise ValueError(f"Discriminator: img_resolution must be a power of two >= 8, got {self.img_resolution}")
        _check_activation(self.activation, "Discriminator blocks")
        _check_activation(self.mapping_activation, "Discriminator mapping")
        _check_activation(self.epilogue_activation, "Discriminator epilogue")
        if self.c_dim < 0 or self.img_channels < 1:
            raise ValueError(f"Discriminator: bad c_dim={self.c_dim} / img_channels={self.img_channels}")
        super().__post_init__()

    # Derived configuration (plain Python, usable outside apply).
    @property
    def block_resolutions(self) -> list[int]:
        """Resolutions of the blocks, highest first (``img_resolution, ..., 8``)."""
        log2 = int(round(math.log2(self.img_resolution)))
        return [2**i for i in range(log2, 2, -1)]

    def channels(self, res: int) -> int:
        """Number of feature channels at resolution ``res``."""
        return min(self.channel_base // res, self.channel_max)

    @property
    def fp16_resolution(self) -> int:
        """Blocks at this resolution and above run in ``fp16_dtype`` (when set)."""
        log2 = int(round(math.log2(self.img_resolution)))
        return max(2 ** (log2 + 1 - self.num_fp16_res), 8)

    @property
    def effective_cmap_dim(self) -> int:
        """``cmap_dim`` after the defaults: 0 if unconditional or not projecting the labels, else channels at 4x4
        unless given."""
        if self.c_dim == 0 or not self.project_labels:
            return 0
        return self.channels(4) if self.cmap_dim is None else self.cmap_dim

    @nn.compact
    def __call__(self, img: jnp.ndarray, c: jnp.ndarray | None = None, force_fp32: bool = False,
                 return_classes: bool = False) -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray]:
        """Logits ``[N, 1]`` for images ``[N, img_channels, img_resolution, img_resolution]`` (NCHW) and labels
        ``c [N, c_dim]`` (ignored when ``c_dim == 0`` or ``not project_labels``). ``force_fp32`` overrides
        ``fp16_dtype``. With ``pack > 1``, ``N`` must be a multiple of ``pack`` and the logits are one per pack,
        given to each of its members. ``return_classes`` (needs ``class_head``): ``(logits, class_logits [N,
        c_dim])``, the head's prediction of the label from the image alone (it does not see ``c``)."""
        if return_classes and not self.class_head:
            raise ValueError("Discriminator: return_classes=True needs class_head=True")
        r = self.img_resolution
        check_shape(img, (None, self.img_channels, r, r), "Discriminator image (NCHW)")
        n = img.shape[0]
        if self.pack > 1:
            if n % self.pack:
                raise ValueError(f"Discriminator: a batch of {n} images is not a multiple of pack={self.pack}")
            # [pack, N / pack, ...]: member k of pack j is image j + k * N / pack.
            img = img.reshape(self.pack, n // self.pack, self.img_channels, r, r)
            img = jnp.swapaxes(img, 0, 1).reshape(n // self.pack, self.pack * self.img_channels, r, r)
        x = None
        img = jnp.transpose(img, (0, 2, 3, 1))
        for res in self.block_resolutions:
            use_fp16 = self.fp16_dtype is not None and res >= self.fp16_resolution and not force_fp32
            x = DiscriminatorBlock(
                in_channels=self.channels(res) if res < r else 0,
                tmp_channels=self.channels(res),
                out_channels=self.channels(res // 2),
                resolution=res,
                img_channels=self.img_channels * self.pack,
                activation=self.activation,
                resample_filter=self.resample_filter,
                conv_clamp=self.conv_clamp,
                dtype=self.fp16_dtype if use_fp16 else jnp.float32,
                name=f"b{res}",
            )(x, img if res == r else None)

        cmap_dim = self.effective_cmap_dim
        cmap = None
        if cmap_dim > 0:
            if c is None:
                raise ValueError(f"Discriminator: c_dim={self.c_dim} but no labels c were given")
            check_shape(c, (img.shape[0], self.c_dim), "Discriminator labels c")
            cmap = DiscriminatorMapping(
                c_dim=self.c_dim, cmap_dim=cmap_dim, num_layers=self.mapping_num_layers,
                embed_features=self.mapping_embed_features, layer_features=self.mapping_layer_features,
                activation=self.mapping_activation, lr_multiplier=self.mapping_lr_multiplier, name="mapping",
            )(c)
        out = DiscriminatorEpilogue(
            in_channels=self.channels(4), cmap_dim=cmap_dim, resolution=4,
            mbstd_group_size=self.mbstd_group_size, mbstd_num_channels=self.mbstd_num_channels,
            activation=self.epilogue_activation, conv_clamp=self.conv_clamp,
            num_classes=self.c_dim if self.class_head else 0, name="b4",
        )(x, cmap)
        if self.class_head:
            # The head is always built (so that init creates its parameters) and dropped by XLA when not returned.
            logits, classes = out
            return (logits, classes) if return_classes else logits
        return jnp.tile(out, (self.pack, 1)) if self.pack > 1 else out  # image i gets pack i % (N / pack)

    def init_params(self, rng: Any, batch_size: int = 1) -> dict:
        """``self.init`` with dummy inputs of the right shapes (``{'params': ...}``)."""
        r = self.img_resolution
        batch_size = -(-batch_size // self.pack) * self.pack
        img = jnp.zeros((batch_size, self.img_channels, r, r), jnp.float32)
        c = jnp.zeros((batch_size, self.c_dim), jnp.float32)
        return self.init(rng, img, c)


# ----------------------------------------------------------------------------------------------------
# Official kwargs.

OFFICIAL_CLASS_NAME = "training.networks_stylegan2.Discriminator"

_TOP_LEVEL = {"c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max",
              "num_fp16_res", "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs"}
# The official Discriminator passes img_channels / architecture / conv_clamp / use_fp16 / resolution itself,
# so only these can come through the nested dicts (anything else is a TypeError there, a ValueError here).
_BLOCK = {"activation", "resample_filter", "fp16_channels_last", "freeze_layers"}
_MAPPING = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier",
            "freeze_layers", "freeze_embed"}
_EPILOGUE = {"mbstd_group_size", "mbstd_num_channels", "activation"}


def _check_keys(given: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValueError(f"discriminator_from_official_kwargs: unsupported {where} {unknown}; "
                         f"supported: {sorted(allowed)}")


def discriminator_from_official_kwargs(D_kwargs: dict, fp16_dtype: Any = None) -> Discriminator:
    """Build our ``Discriminator`` from the official ``training.networks_stylegan2.Discriminator`` kwargs.

    Accepts exactly the official constructor kwargs (``block_kwargs`` / ``mapping_kwargs`` /
    ``epilogue_kwargs`` as nested dicts) plus ``class_name`` when it names the official class (as in
    the ``D_kwargs`` of a training config). Raises ``ValueError`` for anything unsupported: other
    architectures than 'resnet', frozen layers (``freeze_layers > 0``, ``freeze_embed``: mask the
    optimizer instead), activations other than linear/relu/lrelu, unknown kwargs.
    ``fp16_channels_last`` is a PyTorch memory-format hint and is accepted and ignored.
    """
    kw = dict(D_kwargs)
    class_name = kw.pop("class_name", OFFICIAL_CLASS_NAME)
    if class_name != OFFICIAL_CLASS_NAME:
        raise ValueError(
            f"discriminator_from_official_kwargs: class_name {class_name!r} is not {OFFICIAL_CLASS_NAME!r}")
    _check_keys(kw, _TOP_LEVEL, "Discriminator kwargs")
    missing = sorted({"c_dim", "img_resolution", "img_channels"} - set(kw))
    if missing:
        raise ValueError(f"discriminator_from_official_kwargs: missing required kwargs {missing}")
    block = dict(kw.pop("block_kwargs", None) or {})
    mapping = dict(kw.pop("mapping_kwargs", None) or {})
    epilogue = dict(kw.pop("epilogue_kwargs", None) or {})
    _check_keys(block, _BLOCK, "block_kwargs")
    _check_keys(mapping, _MAPPING, "mapping_kwargs")
    _check_keys(epilogue, _EPILOGUE, "epilogue_kwargs")

    if block.pop("freeze_layers", 0) or mapping.pop("freeze_layers", 0) or mapping.pop("freeze_embed", False):
        raise ValueError("discriminator_from_official_kwargs: freeze_layers / freeze_embed are not supported; "
                         "freeze parameters by masking the optimizer update instead")
    block.pop("fp16_channels_last", None)
    if kw.get("architecture", "resnet") != "resnet":
        raise ValueError(f"discriminator_from_official_kwargs: architecture {kw['architecture']!r} is not "
                         f"implemented; only 'resnet'")

    fields: dict[str, Any] = {k: kw[k] for k in kw}
    if "activation" in block:
        fields["activation"] = block["activation"]
    if "resample_filter" in block:
        fields["resample_filter"] = as_filter_spec(block["resample_filter"])
    for src, dst in (("num_layers", "mapping_num_layers"), ("embed_features", "mapping_embed_features"),
                     ("layer_features", "mapping_layer_features"), ("activation", "mapping_activation"),
                     ("lr_multiplier", "mapping_lr_multiplier")):
        if src in mapping:
            fields[dst] = mapping[src]
    for src, dst in (("mbstd_group_size", "mbstd_group_size"), ("mbstd_num_channels", "mbstd_num_channels"),
                     ("activation", "epilogue_activation")):
        if src in epilogue:
            fields[dst] = epilogue[src]
    return Discriminator(**fields, fp16_dtype=fp16_dtype)


__all__ = [
    "Conv2dLayer",
    "Discriminator",
    "DiscriminatorBlock",
    "DiscriminatorEpilogue",
    "DiscriminatorMapping",
    "MinibatchStdLayer",
    "discriminator_from_official_kwargs",
    "minibatch_stddev",
    "official_filter_buffer",
]
