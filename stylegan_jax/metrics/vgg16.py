"""VGG16 features in Flax and the LPIPS-style perceptual distance of the StyleGAN2 projector.

Network
-------
The convolutional part of VGG16 (Simonyan & Zisserman 2015, configuration "D"; torchvision's ``vgg16().features``):
five blocks of 2, 2, 3, 3, 3 3x3 convolutions (padding 1, bias) each followed by ReLU, a 2x2 / stride-2 max pool
after each block. :class:`VGG16Features` returns the last ReLU output of every block (``relu1_2``, ``relu2_2``,
``relu3_3``, ``relu4_3``, ``relu5_3``), the five layers LPIPS uses. The block widths are a field (``widths``,
VGG16: 64, 128, 256, 512, 512), read from the weights, so the same code runs the real network and the reduced one
of the test fixture.

Input: RGB images with values in [0, 255], NCHW like the generator output (1-channel images are repeated to RGB),
normalised with the ImageNet mean / std, ``(x / 255 - mean) / std``. This is what torchvision's weights expect, and
the same map as LPIPS' "scaling layer" (``(2 x / 255 - 1 - shift) / scale`` with ``shift = 2 mean - 1``,
``scale = 2 std``).

Distance
--------
:func:`perceptual_distance` is LPIPS (Zhang et al. 2018) in the form the StyleGAN2 projector uses: each of the five
activations is unit-normalised over channels (``f / (|f| + 1e-10)``), the squared difference of two images' maps
is weighted per channel (the learned LPIPS weights of NVIDIA's ``vgg16.pt``; all ones for torchvision's plain
ImageNet weights, the "baseline" LPIPS variant), averaged over pixels, and summed over channels and layers.
:func:`lpips_embedding` flattens the same thing into one vector per image (the normalised maps times
``sqrt(w_c / (H W))``), so that the distance is the squared Euclidean distance of two embeddings: the target's
embedding is computed once and an optimisation compares against it, as the projector does.

Weights
-------
:func:`load_vgg16_weights` reads, without torch, without running anything from the file and without downloading:

* torchvision's ImageNet ``vgg16`` state dict (``vgg16-397923af.pth``; ``features.0.weight`` ...
  ``features.28.bias``; ``classifier.*`` is ignored), a ``torch.save`` file parsed with the restricted unpickler
  of :mod:`stylegan_jax.convert.official_pickle`. LPIPS weights: all ones.
* NVIDIA's ``vgg16.pt`` of the StyleGAN2-ADA projector and metrics (a TorchScript archive; parameters
  ``layers.conv1.weight`` ... ``layers.conv13.bias`` and the LPIPS weights ``lpips0`` ... ``lpips4``;
  ``layers.fc*`` ignored). Only the archive's ``data.pkl`` is read, with the same restricted unpickler extended to
  accept TorchScript's ``__torch__.*`` class names as inert records; its TorchScript code (``code/``) is never
  read or run. The forward pass is ours (above), not the archive's.
* ``.npz`` of either state dict (names as above).

The feature extractor is checked against a PyTorch reference of the torchvision layout
(``tests/fixtures/make_vgg16_fixture.py``); the preprocessing of NVIDIA's TorchScript forward could not be compared
with here (it needs the file and torch), and is taken to be the standard LPIPS / ImageNet normalisation above.
"""

from __future__ import annotations

import functools
import io
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "DEPTHS",
    "LAYERS",
    "VGG16_WIDTHS",
    "VGG16Features",
    "VGG16WeightsError",
    "load_vgg16_weights",
    "lpips_embedding",
    "perceptual_distance",
    "preprocess",
    "vgg16_activations",
    "vgg16_variables_from_state_dict",
]

VGG16_WIDTHS = (64, 128, 256, 512, 512)
DEPTHS = (2, 2, 3, 3, 3)
LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORM_EPS = 1e-10


class VGG16WeightsError(ValueError):
    """The VGG16 weights file is missing, unreadable, or does not hold a VGG16 state dict we know."""


# --------------------------------------------------------------------------------------------------------------
# The network.


def preprocess(images: jax.Array) -> jax.Array:
    """[0, 255] RGB (or grey) NCHW images -> ImageNet-normalised NHWC float32."""
    x = jnp.transpose(jnp.asarray(images, jnp.float32), (0, 2, 3, 1))
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    return (x / 255.0 - mean) / std


def _max_pool_2x2(x: jax.Array) -> jax.Array:
    # torch MaxPool2d(2, 2): floor mode, an odd last row / column is dropped (VALID).
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


class VGG16Features(nn.Module):
    """VGG16's convolutional blocks (NHWC, normalised input) -> the five LPIPS activations (NHWC)."""

    widths: tuple[int, ...] = VGG16_WIDTHS  # Output channels of the five blocks (VGG16: 64, 128, 256, 512, 512).

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        if len(self.widths) != len(DEPTHS):
            raise ValueError(f"VGG16Features: widths must have {len(DEPTHS)} entries, got {self.widths}")
        outs = []
        for b, (width, depth) in enumerate(zip(self.widths, DEPTHS, strict=True)):
            if b > 0:
                x = _max_pool_2x2(x)
            for k in range(depth):
                x = nn.Conv(width, (3, 3), padding=1, precision=lax.Precision.HIGHEST, name=f"conv{b + 1}_{k + 1}")(x)
                x = jax.nn.relu(x)
            outs.append(x)
        return outs


def _widths(variables: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(int(variables["params"][f"conv{b + 1}_1"]["bias"].shape[0]) for b in range(len(DEPTHS)))


def vgg16_activations(variables: Mapping[str, Any], images: jax.Array) -> list[jax.Array]:
    """The five activations (NHWC) of [0, 255] NCHW images. Traceable (use inside jit / grad)."""
    net = VGG16Features(widths=_widths(variables))
    return net.apply({"params": variables["params"]}, preprocess(images))


def lpips_embedding(variables: Mapping[str, Any], images: jax.Array) -> jax.Array:
    """``[N, D]``: per image, the channel-normalised activations times ``sqrt(w_c / (H W))``, flattened; the
    squared distance of two rows is :func:`perceptual_distance`. Traceable."""
    parts = []
    for name, f in zip(LAYERS, vgg16_activations(variables, images), strict=True):
        f = f / (jnp.sqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True)) + NORM_EPS)
        h, w = f.shape[1:3]
        scale = jnp.sqrt(jnp.asarray(variables["lpips"][name], jnp.float32) / (h * w))
        parts.append((f * scale).reshape(f.shape[0], -1))
    return jnp.concatenate(parts, axis=1)


def perceptual_distance(variables: Mapping[str, Any], a: jax.Array, b: jax.Array) -> jax.Array:
    """LPIPS-style distance ``[N]`` between [0, 255] NCHW image batches ``a`` and ``b`` (same shape). Traceable."""
    return jnp.sum(jnp.square(lpips_embedding(variables, a) - lpips_embedding(variables, b)), axis=1)


# --------------------------------------------------------------------------------------------------------------
# State dicts.


def _conv_names() -> list[str]:
    return [f"conv{b + 1}_{k + 1}" for b, d in enumerate(DEPTHS) for k in range(d)]


def _torchvision_indices() -> list[int]:
    """``features.N`` index of each of the 13 convolutions (conv, relu, ..., pool)."""
    out, i = [], 0
    for d in DEPTHS:
        for _ in range(d):
            out.append(i)
            i += 2
        i += 1  # the pool
    return out


def vgg16_variables_from_state_dict(state_dict: Mapping[str, Any], source: str = "<state dict>") -> dict:
    """A torchvision (``features.N.*``) or NVIDIA ``vgg16.pt`` (``layers.convK.*``, ``lpipsK``) state dict ->
    ``{'params': Flax conv params, 'lpips': {layer: per-channel weight}}`` (float32).

    The block widths are read from the weights (any widths of the VGG16 structure are accepted, so a reduced
    network loads too) and every shape is checked. Raises :class:`VGG16WeightsError` naming the offending key.
    """
    keys = [str(k) for k in state_dict]
    if any(k.startswith("features.") for k in keys):
        conv_keys = [f"features.{i}" for i in _torchvision_indices()]
        ignored = ("classifier.",)
        lin_keys = None
        known = {f"{c}.{leaf}" for c in conv_keys for leaf in ("weight", "bias")}
    elif any(k.startswith("layers.conv") for k in keys):
        conv_keys = [f"layers.conv{i + 1}" for i in range(sum(DEPTHS))]
        ignored = ("layers.fc",)
        lin_keys = [f"lpips{k}" for k in range(len(LAYERS))]
        known = {f"{c}.{leaf}" for c in conv_keys for leaf in ("weight", "bias")} | set(lin_keys)
    else:
        raise VGG16WeightsError(
            f"{source}: not a VGG16 state dict: expected torchvision names ('features.0.weight', ...) or those of "
            f"the StyleGAN2 projector's vgg16.pt ('layers.conv1.weight', ..., 'lpips0'); got e.g. {keys[:4]}")
    unknown = [k for k in keys if k not in known and not k.startswith(ignored)]
    if unknown:
        raise VGG16WeightsError(f"{source}: unknown key '{unknown[0]}' ({len(unknown)} unknown keys in all)")
    missing = [k for k in sorted(known) if k not in state_dict]
    if missing:
        raise VGG16WeightsError(f"{source}: missing key '{missing[0]}' ({len(missing)} of {len(known)} missing)")

    def array(name: str) -> np.ndarray:
        arr = np.asarray(state_dict[name])
        if not np.issubdtype(arr.dtype, np.floating):
            raise VGG16WeightsError(f"{source}: key '{name}' has dtype {arr.dtype}, expected floating point")
        return arr.astype(np.float32)

    params: dict[str, dict[str, jnp.ndarray]] = {}
    cin = 3
    widths = []
    for block, depth in enumerate(DEPTHS):
        for k in range(depth):
            idx = sum(DEPTHS[:block]) + k
            name, key = _conv_names()[idx], conv_keys[idx]
            w, b = array(f"{key}.weight"), array(f"{key}.bias")
            if w.ndim != 4 or w.shape[1:] != (cin, 3, 3) or (k > 0 and w.shape[0] != cin):
                want = f"({cin if k > 0 else 'C'}, {cin}, 3, 3)"
                raise VGG16WeightsError(f"{source}: key '{key}.weight' has shape {w.shape}, expected {want}")
            if b.shape != (w.shape[0],):
                raise VGG16WeightsError(f"{source}: key '{key}.bias' has shape {b.shape}, expected ({w.shape[0]},)")
            params[name] = {"kernel": jnp.asarray(w.transpose(2, 3, 1, 0)), "bias": jnp.asarray(b)}  # OIHW -> HWIO
            cin = w.shape[0]
        widths.append(cin)
    lpips = {}
    for i, (layer, width) in enumerate(zip(LAYERS, widths, strict=True)):
        if lin_keys is None:
            lpips[layer] = jnp.ones((width,), jnp.float32)
            continue
        w = array(lin_keys[i])
        if w.size != width:
            raise VGG16WeightsError(f"{source}: key '{lin_keys[i]}' has shape {w.shape}: expected {width} weights "
                                    f"(the channels of {layer})")
        if (w < 0).any():
            raise VGG16WeightsError(f"{source}: key '{lin_keys[i]}' has negative LPIPS weights")
        lpips[layer] = jnp.asarray(w.reshape(width))
    return {"params": params, "lpips": lpips}


# --------------------------------------------------------------------------------------------------------------
# Reading weight files.


def _restricted_module():
    from stylegan_jax.convert import official_pickle as op

    return op


@functools.cache
def _torchscript_unpickler() -> type:
    """The restricted unpickler of the official-pickle reader, also admitting TorchScript class names
    (``__torch__.*``) as inert records (NEWOBJ + BUILD(attribute dict)) and TorchScript's list builders."""
    op = _restricted_module()

    def typed_list(items: Any) -> list:
        if not isinstance(items, list):
            raise op.OfficialPickleError("TorchScript list builder without a list")
        return list(items)

    lists = {f"build_{t}list": typed_list for t in ("int", "double", "bool", "tensor", "")}
    lists["restore_type_tag"] = lambda value, _tag=None: value

    class _TorchScriptUnpickler(op._RestrictedUnpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module == "__torch__" or module.startswith("__torch__."):
                return op._make_module_record(f"{module}.{name}")
            if module == "torch.jit._pickle" and name in lists:
                return op._Global(lists[name], f"{module}.{name}")
            return super().find_class(module, name)

    return _TorchScriptUnpickler


def _read_torchscript(data: bytes, source: str) -> Any:
    """The object tree of a TorchScript archive's ``data.pkl`` (records; tensors materialised), code unread."""
    op = _restricted_module()
    unpickler = _torchscript_unpickler()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise VGG16WeightsError(f"{source}: TorchScript archive without exactly one data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        storages: dict[str, Any] = {}

        def load_storage(pid: tuple) -> Any:
            key = pid[2]
            entry = f"{prefix}data/{key}"
            if not isinstance(key, str) or entry not in names:
                raise op.OfficialPickleError(f"{source}: storage {key!r} missing from the archive")
            if key not in storages:
                rec = op._storage_from_pid(pid, "<")
                raw = zf.read(entry)
                if len(raw) < rec.numel * rec.dtype.itemsize:
                    raise op.OfficialPickleError(f"{source}: storage {key!r} has {len(raw)} bytes, too few")
                rec.set_data(np.frombuffer(raw, dtype=rec.dtype, count=rec.numel).copy())
                storages[key] = rec
            return storages[key]

        obj = unpickler(io.BytesIO(zf.read(pkl[0])), source, 0, load_storage).load()
    return op._plain(obj)


def _flatten_module(obj: Any, prefix: str, out: dict[str, np.ndarray], depth: int = 0) -> None:
    """Collect the tensors of a TorchScript record tree under dotted attribute names (``layers.conv1.weight``)."""
    op = _restricted_module()
    if depth > 16:
        raise VGG16WeightsError("TorchScript module tree nested more than 16 deep")
    state = obj.__dict__.get("_state") if isinstance(obj, op._PlainModuleRecord) else obj
    if not isinstance(state, Mapping):
        return
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, np.ndarray):
            out[name] = value
        elif isinstance(value, op._PlainModuleRecord | dict):
            _flatten_module(value, name + ".", out, depth + 1)


def _read_torch_state_dict(data: bytes, source: str) -> dict[str, np.ndarray]:
    op = _restricted_module()
    obj = op._plain(op._load_torch_save_bytes(data, source, 0))
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise VGG16WeightsError(f"{source}: the torch.save file does not hold a state dict of tensors")
    return {str(k): v for k, v in obj.items()}


def _missing_file_message(path: Path) -> str:
    return (f"VGG16 weights file '{path}' not found. Pass torchvision's ImageNet vgg16 state dict "
            "('vgg16-397923af.pth') or the StyleGAN2-ADA projector's 'vgg16.pt' (NVIDIA's metrics/vgg16.pt); "
            "both are read without torch. This code never downloads weights.")


def load_vgg16_weights(path: str | Path) -> dict:
    """Read VGG16 weights (torchvision ``.pth``, NVIDIA's TorchScript ``vgg16.pt``, or an ``.npz`` of either state
    dict) -> variables for :func:`perceptual_distance`. Raises :class:`VGG16WeightsError` (file named)."""
    op = _restricted_module()
    path = Path(path).expanduser()
    if not path.is_file():
        raise VGG16WeightsError(_missing_file_message(path))
    data = path.read_bytes()
    source = path.name
    try:
        if data[:4] == b"PK\x03\x04":
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
            if any(n.endswith("constants.pkl") for n in names) or any("/code/" in n for n in names):
                state = {}
                _flatten_module(_read_torchscript(data, source), "", state)
            elif any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
                state = _read_torch_state_dict(data, source)
            else:
                with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                    state = {k: npz[k] for k in npz.files}
        elif data[:1] == b"\x80":  # legacy torch.save
            state = _read_torch_state_dict(data, source)
        else:
            raise VGG16WeightsError(f"{source}: neither a torch.save / TorchScript file nor an .npz")
    except VGG16WeightsError:
        raise
    except op.UnsafePickleError as e:
        raise VGG16WeightsError(f"{e}; nothing from the file was run") from None
    except op.OfficialPickleError as e:
        raise VGG16WeightsError(f"{source}: unreadable weights file ({e})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, OSError,
            struct.error, zipfile.BadZipFile, OverflowError, RecursionError, UnicodeDecodeError) as e:
        raise VGG16WeightsError(f"{source}: truncated or corrupt weights file ({type(e).__name__}: {e})") from None
    return vgg16_variables_from_state_dict(state, source)
