"""The FID Inception-v3 feature extractor in Flax (NHWC), with weights read from a file the user provides.

Network
-------
This is the "FID Inception": TensorFlow's ``inception-2015-12-05`` graph (the network of the original TTUR
FID code and, through NVIDIA's TorchScript export ``inception-2015-12-05.pkl``, of the official StyleGAN3
metrics) in the layout of the ``pytorch-fid`` project's port. It is torchvision's Inception-v3 layer for
layer (same module names and weight shapes, 1008 classes, no auxiliary classifier) except for the pooling
branches, which follow TensorFlow:

* ``Mixed_5b/5c/5d`` (InceptionA), ``Mixed_6b..6e`` (InceptionC) and ``Mixed_7b`` (first InceptionE): the
  3x3/stride-1 average pool of the pool branch does not count the zero padding (``count_include_pad=False``);
* ``Mixed_7c`` (second InceptionE): that pool is a 3x3/stride-1 *max* pool.

Every convolution is bias-free and followed by batch norm (eps 1e-3, running statistics) and ReLU. The
output is the 2048-d global average pool of ``Mixed_7c`` (the features FID and KID use; the 1008-way ``fc``
layer is not needed and is ignored when present in the weights).

Input
-----
Images of any size with values in [0, 255] (uint8 or float), NHWC for :class:`InceptionV3`. They are
resized to 299x299 inside the network, in one of two ways (``resize_mode``):

* ``"pytorch-fid"`` (default): what ``pytorch_fid.inception.InceptionV3`` does with its defaults:
  ``x / 255``, then ``F.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False)`` (half-pixel
  centres, edge clamping, *no* antialiasing even when downsampling), then ``2 * x - 1`` to [-1, 1].
* ``"tf1"``: what the original TensorFlow graph does: TF1's legacy ``ResizeBilinear`` (``align_corners=False``,
  no half-pixel offset: output pixel ``i`` samples input coordinate ``i * in / out``), then ``(x - 128) / 128``.
  This is the convention NVIDIA's TorchScript detector reproduces (as re-implemented by torch-fidelity and
  clean-fid), so it should be the closer one to published StyleGAN numbers; it is not verified against
  that detector here.

Both are identical for 299x299 inputs apart from the scaling (``/127.5 - 1`` vs ``/128 - 1``). Neither is
``jax.image.resize``, which antialiases when downsampling.

Weights
-------
:func:`load_inception_weights` reads, without torch and without downloading anything:

* ``.pth`` / ``.pt``: a ``torch.save`` state dict (zip or legacy format), e.g. ``pt_inception-2015-12-05-6726825d.pth``,
  the ``fid_weights`` release asset of https://github.com/mseitzer/pytorch-fid (torch-fidelity's
  ``weights-inception-2015-12-05-6726825d.pth`` has the same names). It is parsed with the restricted
  unpickler of :mod:`stylegan_jax.convert.official_pickle`: nothing in the file is executed.
* ``.npz``: the same state dict as NumPy arrays; with torch installed::

      import numpy as np, torch
      sd = torch.load("pt_inception-2015-12-05-6726825d.pth")
      np.savez("inception.npz", **{k: v.numpy() for k, v in sd.items()})

Names are pytorch-fid's (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``, ...);
every conv / BN tensor must be present with its exact shape, ``fc.*`` and ``*.num_batches_tracked`` are
optional. torchvision's ImageNet ``inception_v3`` weights are refused (different weights: FID computed with
them is not comparable), and so is NVIDIA's TorchScript ``.pkl`` (running it needs torch).
"""

from __future__ import annotations

import functools
import hashlib
import io
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "FEATURE_DIM",
    "INPUT_SIZE",
    "RESIZE_MODES",
    "WEIGHTS_ASSET",
    "InceptionV3",
    "InceptionWeightsError",
    "fid_inception_state_dict_shapes",
    "inception_features",
    "inception_variables_from_state_dict",
    "inception_state_dict_from_variables",
    "load_inception_weights",
    "preprocess",
    "weights_fingerprint",
]

INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # TF's inception-2015-12-05 has 1008 logits; torchvision's ImageNet model has 1000
RESIZE_MODES = ("pytorch-fid", "tf1")
WEIGHTS_ASSET = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_ASSET

_BN_EPS = 1e-3  # TF's value; torchvision's BasicConv2d uses it too


class InceptionWeightsError(ValueError):
    """The Inception weights file is missing, unreadable, or does not hold the FID Inception-v3 state dict."""


def _missing_file_message(path: Path) -> str:
    return (
        f"Inception weights file '{path}' not found. FID/KID need the FID Inception-v3 weights "
        f"(TensorFlow's inception-2015-12-05 as ported by pytorch-fid). Get the release asset '{WEIGHTS_ASSET}' "
        f"({WEIGHTS_URL}, also in torch-fidelity's releases as 'weights-inception-2015-12-05-6726825d.pth') and "
        "pass its path: the .pth is read without torch, or convert it once to .npz with torch installed: "
        "python -c \"import numpy as np, torch; np.savez('inception.npz', **{k: v.numpy() for k, v in "
        f"torch.load('{WEIGHTS_ASSET}').items()}})\". This code never downloads weights."
    )


# --------------------------------------------------------------------------------------------------------------
# Preprocessing: resize to 299x299 and scale, as pytorch-fid or as the TF graph.


@functools.lru_cache(maxsize=32)
def _resize_matrix(in_size: int, out_size: int, mode: str) -> np.ndarray:
    """``[out, in]`` bilinear interpolation weights; applying it along an axis resizes that axis.

    A dense matrix (rather than a gather) keeps the resize two matmuls, exact to the interpolation weights and
    cheap at these sizes (at most 299 x 1024).
    """
    scale = in_size / out_size
    dst = np.arange(out_size, dtype=np.float64)
    if mode == "pytorch-fid":
        # torch upsample_bilinear2d, align_corners=False: half-pixel centres, negative coordinates clamp to 0.
        src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
    elif mode == "tf1":
        # TF1 ResizeBilinear with align_corners=False and half_pixel_centers=False (the legacy default).
        src = dst * scale
    else:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {mode!r}")
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    m = np.zeros((out_size, in_size), np.float64)
    np.add.at(m, (np.arange(out_size), lo), 1.0 - frac)
    np.add.at(m, (np.arange(out_size), hi), frac)
    return m.astype(np.float32)


def preprocess(images: jax.Array, resize_mode: str = "pytorch-fid") -> jax.Array:
    """NHWC images in [0, 255] (any size, uint8 or float) -> float32 ``[N, 299, 299, C]`` network input."""
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    x = jnp.asarray(images).astype(jnp.float32)
    if resize_mode == "pytorch-fid":
        x = x / 255.0  # pytorch-fid resizes [0, 1] images; keep its order of operations
    hi = jax.lax.Precision.HIGHEST  # the interpolation weights must not be rounded to bf16/tf32 on GPU
    h, w = x.shape[1], x.shape[2]
    if h != INPUT_SIZE:
        x = jnp.einsum("oh,nhwc->nowc", _resize_matrix(h, INPUT_SIZE, resize_mode), x, precision=hi)
    if w != INPUT_SIZE:
        x = jnp.einsum("ow,nhwc->nhoc", _resize_matrix(w, INPUT_SIZE, resize_mode), x, precision=hi)
    if resize_mode == "pytorch-fid":
        return 2.0 * x - 1.0
    return (x - 128.0) / 128.0


# --------------------------------------------------------------------------------------------------------------
# The network. Submodule names equal pytorch-fid's module names, so the weight mapping is name for name.


class BasicConv2d(nn.Module):
    """Bias-free conv -> batch norm (running statistics) -> ReLU, as torchvision's ``BasicConv2d``."""

    features: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = self.padding
        x = nn.Conv(self.features, self.kernel, (self.stride, self.stride), padding=((ph, ph), (pw, pw)),
                    use_bias=False, precision=self.precision, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=_BN_EPS, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3_same(x: jax.Array) -> jax.Array:
    # TF's average pool divides by the number of valid (unpadded) pixels: count_include_pad=False.
    return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), (2, 2), padding="VALID")


class InceptionA(nn.Module):
    pool_features: int
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = functools.partial(BasicConv2d, precision=self.precision)
        b1 = c(64, (1, 1), name="branch1x1")(x)
        b5 = c(48, (1, 1), name="branch5x5_1")(x)
        b5 = c(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = c(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = c(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = c(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class _ReductionBlock(nn.Module):
    """A grid-size reduction block (Mixed_6a, Mixed_7a): each branch of :attr:`branches` is a chain of
    :class:`BasicConv2d` layers ``(name, features, kernel, options)`` applied in turn (the last with stride 2); the
    branches and a 3x3 stride-2 max pool of the input are concatenated on channels."""

    precision: Any = jax.lax.Precision.HIGHEST
    branches: ClassVar[tuple[tuple[tuple[str, int, tuple[int, int], dict], ...], ...]] = ()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        outs = []
        for layers in self.branches:
            y = x
            for name, features, kernel, options in layers:
                y = BasicConv2d(features, kernel, precision=self.precision, name=name, **options)(y)
            outs.append(y)
        return jnp.concatenate([*outs, _max_pool_3x3_s2(x)], axis=-1)


class InceptionB(_ReductionBlock):
    branches = ((("branch3x3", 384, (3, 3), {"stride": 2}),),
                (("branch3x3dbl_1", 64, (1, 1), {}), ("branch3x3dbl_2", 96, (3, 3), {"padding": (1, 1)}),
                 ("branch3x3dbl_3", 96, (3, 3), {"stride": 2})))


class InceptionC(nn.Module):
    channels_7x7: int
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = functools.partial(BasicConv2d, precision=self.precision)
        c7 = self.channels_7x7
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        b1 = c(192, (1, 1), name="branch1x1")(x)
        b7 = c(c7, (1, 1), name="branch7x7_1")(x)
        b7 = c(c7, **row, name="branch7x7_2")(b7)
        b7 = c(192, **col, name="branch7x7_3")(b7)
        bd = c(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = c(c7, **col, name="branch7x7dbl_2")(bd)
        bd = c(c7, **row, name="branch7x7dbl_3")(bd)
        bd = c(c7, **col, name="branch7x7dbl_4")(bd)
        bd = c(192, **row, name="branch7x7dbl_5")(bd)
        bp = c(192, (1, 1), name="branch_pool")(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_ReductionBlock):
    branches = ((("branch3x3_1", 192, (1, 1), {}), ("branch3x3_2", 320, (3, 3), {"stride": 2})),
                (("branch7x7x3_1", 192, (1, 1), {}), ("branch7x7x3_2", 192, (1, 7), {"padding": (0, 3)}),
                 ("branch7x7x3_3", 192, (7, 1), {"padding": (3, 0)}), ("branch7x7x3_4", 192, (3, 3), {"stride": 2})))


class InceptionE(nn.Module):
    pool: str  # "avg" (Mixed_7b) or "max" (Mixed_7c: the FID network's quirk)
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = functools.partial(BasicConv2d, precision=self.precision)
        row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        b1 = c(320, (1, 1), name="branch1x1")(x)
        b3 = c(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([c(384, **row, name="branch3x3_2a")(b3), c(384, **col, name="branch3x3_2b")(b3)], -1)
        bd = c(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = c(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [c(384, **row, name="branch3x3dbl_3a")(bd), c(384, **col, name="branch3x3dbl_3b")(bd)], -1)
        if self.pool == "avg":
            pooled = _avg_pool_3x3_same(x)
        else:  # max_pool pads with -inf, like torch's F.max_pool2d(padding=1)
            pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
        bp = c(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    """FID Inception-v3: NHWC images in [0, 255] of any size -> ``[N, 2048]`` float32 pool features.

    Variables: ``{'params': ..., 'batch_stats': ...}`` from :func:`load_inception_weights`.
    ``precision`` applies to every convolution; HIGHEST keeps GPUs from using TF32/bf16 passes, which would
    move FID by more than the differences this module cares about.
    """

    resize_mode: str = "pytorch-fid"
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"InceptionV3 expects NHWC RGB images [N, H, W, 3], got shape {tuple(images.shape)}")
        x = preprocess(images, self.resize_mode)
        c = functools.partial(BasicConv2d, precision=self.precision)
        p = dict(precision=self.precision)
        x = c(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)  # 149
        x = c(32, (3, 3), name="Conv2d_2a_3x3")(x)  # 147
        x = c(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)  # 73
        x = c(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = c(192, (3, 3), name="Conv2d_4a_3x3")(x)  # 71
        x = _max_pool_3x3_s2(x)  # 35
        x = InceptionA(32, **p, name="Mixed_5b")(x)  # 256
        x = InceptionA(64, **p, name="Mixed_5c")(x)  # 288
        x = InceptionA(64, **p, name="Mixed_5d")(x)  # 288
        x = InceptionB(**p, name="Mixed_6a")(x)  # 768 x 17 x 17
        x = InceptionC(128, **p, name="Mixed_6b")(x)
        x = InceptionC(160, **p, name="Mixed_6c")(x)
        x = InceptionC(160, **p, name="Mixed_6d")(x)
        x = InceptionC(192, **p, name="Mixed_6e")(x)
        x = InceptionD(**p, name="Mixed_7a")(x)  # 1280 x 8 x 8
        x = InceptionE("avg", **p, name="Mixed_7b")(x)  # 2048
        x = InceptionE("max", **p, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


@functools.partial(jax.jit, static_argnames=("resize_mode", "layout"))
def _features_jit(variables: Mapping[str, Any], images: jax.Array, resize_mode: str, layout: str) -> jax.Array:
    if layout == "NCHW":
        images = jnp.transpose(images, (0, 2, 3, 1))
    if images.shape[-1] == 1:  # grayscale: the official metrics repeat the channel
        images = jnp.repeat(images, 3, axis=-1)
    return InceptionV3(resize_mode=resize_mode).apply(variables, images)


def inception_features(variables: Mapping[str, Any], images: Any, *, layout: str = "NCHW",
                       resize_mode: str = "pytorch-fid") -> jax.Array:
    """Jit-compiled 2048-d features of uint8 (or [0, 255] float) images, ``[N, C, H, W]`` (``layout='NCHW'``,
    the data pipeline's and the generator's layout) or ``[N, H, W, C]``; C is 3, or 1 (repeated to RGB).

    The variables are an argument of the compiled function rather than baked-in constants, so one compilation
    serves any weights and the ~95 MB of weights never enter the compiled program.
    """
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    shape = tuple(np.shape(images))
    channels = shape[1] if layout == "NCHW" and len(shape) == 4 else (shape[-1] if len(shape) == 4 else None)
    if channels not in (1, 3):
        raise ValueError(f"Inception features need 4-d {layout} images with 1 or 3 channels, got shape {shape}")
    return _features_jit(variables, images, resize_mode, layout)


# --------------------------------------------------------------------------------------------------------------
# State dict names <-> Flax variables.

_BN_LEAVES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


@functools.lru_cache(maxsize=1)
def _flax_shapes() -> dict[tuple[str, ...], tuple[int, ...]]:
    """(collection, *module path, leaf) -> shape of every Flax variable, from an abstract init (no compute)."""
    shapes = jax.eval_shape(InceptionV3().init, jax.random.key(0), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3)))
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        flat[tuple(str(k.key) for k in path)] = tuple(leaf.shape)
    return flat


def _torch_to_flax() -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """pytorch-fid name -> (Flax variable path, torch shape) for every conv / BN tensor of the network."""
    table = {}
    for path, shape in _flax_shapes().items():
        collection, *modules, leaf = path
        module = ".".join(modules[:-1])  # e.g. "Mixed_5b.branch1x1"; modules[-1] is "conv" or "bn"
        if modules[-1] == "conv":
            kh, kw, cin, cout = shape
            table[f"{module}.conv.weight"] = (path, (cout, cin, kh, kw))
        else:
            torch_leaf = {v: k for k, v in _BN_LEAVES.items()}[(collection, leaf)]
            table[f"{module}.bn.{torch_leaf}"] = (path, shape)
    return table


def fid_inception_state_dict_shapes(include_optional: bool = True) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the pytorch-fid FID Inception state dict (``pt_inception-2015-12-05-*.pth``).

    With ``include_optional``, also ``fc.weight`` / ``fc.bias`` (1008 classes) and every
    ``*.bn.num_batches_tracked`` (shape ``()``), which the file may carry and the features do not use.
    """
    table = {name: shape for name, (_, shape) in _torch_to_flax().items()}
    if include_optional:
        for name in [n for n in table if n.endswith(".bn.running_var")]:
            table[name.replace("running_var", "num_batches_tracked")] = ()
        table["fc.weight"] = (NUM_CLASSES, FEATURE_DIM)
        table["fc.bias"] = (NUM_CLASSES,)
    return table


def inception_variables_from_state_dict(state_dict: Mapping[str, Any], source: str = "<state dict>") -> dict:
    """pytorch-fid state dict (name -> array) -> Flax variables ``{'params', 'batch_stats'}`` (float32).

    Raises :class:`InceptionWeightsError` naming the first offending key for unknown, missing or mis-shaped
    tensors, and explaining what the file is if it looks like torchvision's ImageNet Inception-v3.
    """
    table = _torch_to_flax()
    optional = fid_inception_state_dict_shapes(include_optional=True)
    keys = list(state_dict)
    if any(k.startswith("AuxLogits.") for k in keys) or np.shape(state_dict.get("fc.weight", ()))[:1] == (1000,):
        raise InceptionWeightsError(
            f"{source}: this looks like torchvision's ImageNet inception_v3 state dict (AuxLogits / 1000-class fc), "
            f"not the FID Inception (TF inception-2015-12-05, 1008 classes). Its features differ, so FID/KID "
            f"would not be comparable with published numbers; use pytorch-fid's '{WEIGHTS_ASSET}'.")
    unknown = [k for k in keys if k not in optional]
    if unknown:
        raise InceptionWeightsError(
            f"{source}: unknown key '{unknown[0]}' ({len(unknown)} unknown keys in all, e.g. {unknown[:5]}); "
            f"expected pytorch-fid FID Inception names like 'Conv2d_1a_3x3.conv.weight'")
    missing = [k for k in table if k not in state_dict]
    if missing:
        raise InceptionWeightsError(
            f"{source}: missing key '{missing[0]}' ({len(missing)} of {len(table)} conv/BN tensors missing, "
            f"e.g. {missing[:5]})")
    for name in keys:  # optional extras are shape-checked too: a wrong fc means a different network
        got, want = tuple(np.shape(state_dict[name])), optional[name]
        if got != want:
            raise InceptionWeightsError(f"{source}: key '{name}' has shape {got}, expected {want}")
    variables: dict = {"params": {}, "batch_stats": {}}
    for name, (path, _) in table.items():
        arr = np.asarray(state_dict[name])
        if not np.issubdtype(arr.dtype, np.floating):
            raise InceptionWeightsError(f"{source}: key '{name}' has dtype {arr.dtype}, expected floating point")
        arr = arr.astype(np.float32)
        if name.endswith(".conv.weight"):
            arr = arr.transpose(2, 3, 1, 0)  # torch OIHW -> Flax HWIO
        node = variables
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jnp.asarray(arr)
    return variables


def inception_state_dict_from_variables(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Inverse of :func:`inception_variables_from_state_dict`: Flax variables -> pytorch-fid named float32 arrays
    (conv / BN tensors only). Used to write weight files in the accepted format (tests, conversions)."""
    out = {}
    for name, (path, _) in _torch_to_flax().items():
        node: Any = variables
        for key in path:
            node = node[key]
        arr = np.asarray(node, np.float32)
        out[name] = arr.transpose(3, 2, 0, 1) if name.endswith(".conv.weight") else arr
    return out


# --------------------------------------------------------------------------------------------------------------
# Reading weight files.


def _read_torch_state_dict(data: bytes, source: str) -> dict[str, np.ndarray]:
    # Reuses the torch-free restricted unpickler of the official-pickle reader: a state dict is an OrderedDict of
    # _rebuild_tensor_v2(storage, ...) calls, all of which its allowlist covers.
    from stylegan_jax.convert import official_pickle as op

    try:
        obj = op._plain(op._load_torch_save_bytes(data, source, 0))
    except op.UnsafePickleError as e:
        raise InceptionWeightsError(
            f"{e}. If this is NVIDIA's TorchScript 'inception-2015-12-05.pkl': it is not supported (running it "
            f"needs torch); use pytorch-fid's '{WEIGHTS_ASSET}' (the same TF weights as a plain state dict)") from None
    except op.OfficialPickleError as e:
        raise InceptionWeightsError(f"{source}: not a readable torch.save state dict ({e})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            struct.error, zipfile.BadZipFile, OverflowError, RecursionError, UnicodeDecodeError) as e:
        raise InceptionWeightsError(
            f"{source}: truncated or corrupt torch.save file ({type(e).__name__}: {e})") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]  # checkpoints that wrap the state dict
    if not isinstance(obj, Mapping) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise InceptionWeightsError(f"{source}: the torch.save file does not hold a state dict of tensors")
    return {str(k): v for k, v in obj.items()}


def load_inception_weights(path: str | Path) -> dict:
    """Read FID Inception-v3 weights (``.pth``/``.pt`` torch.save state dict, or ``.npz``) -> Flax variables.

    The format is detected from the content (a ``.npz`` is a zip of ``.npy`` files; a torch.save file is a zip
    with ``data.pkl`` or a legacy pickle stream). Never downloads: a missing file raises
    :class:`InceptionWeightsError` saying which file to get and where.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InceptionWeightsError(_missing_file_message(path))
    data = path.read_bytes()
    source = path.name
    state: dict[str, np.ndarray]
    if data[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile as e:
            raise InceptionWeightsError(f"{source}: corrupt zip archive ({e})") from None
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            state = _read_torch_state_dict(data, source)
        else:
            try:
                with np.load(io.BytesIO(data), allow_pickle=False) as npz:  # never unpickle object arrays
                    state = {k: npz[k] for k in npz.files}
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
                raise InceptionWeightsError(f"{source}: unreadable .npz ({type(e).__name__}: {e})") from None
    elif data[:1] == b"\x80":  # a pickle stream: legacy torch.save, or some other pickle (refused safely)
        state = _read_torch_state_dict(data, source)
    else:
        raise InceptionWeightsError(
            f"{source}: neither a .npz nor a torch.save file; expected pytorch-fid's '{WEIGHTS_ASSET}' "
            "or an .npz of its state dict")
    return inception_variables_from_state_dict(state, source)


def weights_fingerprint(variables: Mapping[str, Any]) -> str:
    """SHA-256 of the variables' names, shapes, dtypes and bytes: identifies the weights in cache keys
    whatever file (or format) they came from."""
    h = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(variables)[0], key=lambda kv: str(kv[0])):
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{arr.shape}|{arr.dtype}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()
