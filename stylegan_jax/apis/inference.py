"""ONNX Runtime inference for exported generators: validated inputs, watermarked uint8 images.

This module needs only ``onnxruntime``, NumPy and SciPy (for the watermark); it does not import JAX, so a
serving process stays small. Models come from :func:`stylegan_jax.apis.export_onnx.export_generator`.

Input contract of :meth:`InferenceSession.generate` / :meth:`InferenceSession.generate_float`:

* ``z``: a real floating-point array of shape ``(N, z_dim)``, ``N >= 1`` (the design's shape is ``(1, 512)``).
  float16/float64 are cast to float32; integer, boolean, complex or object arrays are rejected (an integer
  latent is almost always a seed passed in the wrong place: use :func:`latent_from_seed`). NaN/inf rejected.
* ``c``: labels ``(N, c_dim)`` (one-hot for class-conditional models; :func:`one_hot` builds them) when the
  model is conditional, ``None`` otherwise. Integer/boolean labels are accepted and cast.
* ``psi``: truncation psi, a real scalar in :data:`PSI_RANGE` = ``[-1, 2]``. ``1`` = no truncation, ``0`` =
  the average image, values in ``(0, 1)`` trade variety for quality, ``> 1`` extrapolates away from the
  average and ``< 0`` mirrors through it; outside ``[-1, 2]`` the ws leave the region the synthesis network
  was trained on and the output saturates into artifacts, so such values are treated as client errors.
  NaN/inf are rejected.

Every violation raises :class:`InferenceInputError` (a ``ValueError``) with a message naming the input;
an unreadable model raises :class:`ModelLoadError` naming the path.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stylegan_jax.apis import postprocessing, watermark
from stylegan_jax.apis.watermark import Key

__all__ = [
    "DEFAULT_PAYLOAD",
    "DEFAULT_WATERMARK_KEY",
    "PSI_RANGE",
    "InferenceError",
    "InferenceInputError",
    "InferenceSession",
    "ModelLoadError",
    "decode_metadata",
    "latent_from_seed",
    "one_hot",
    "payload_bits",
]

PSI_RANGE = (-1.0, 2.0)
# A well-known key gives provenance marks anyone with this code can read: deployments should pass their own
# secret (``stylegan-jax serve`` reads it from --watermark-key or $STYLEGAN_JAX_WATERMARK_KEY).
DEFAULT_WATERMARK_KEY: Key = "stylegan-jax/default-provenance-key"
# 32 bits: "SG3J". Short enough for 32x32 images (48 bits fit at 32x32; capacity grows with area).
DEFAULT_PAYLOAD = b"SG3J"
SEED_MAX = 2**32 - 1  # np.random.RandomState accepts seeds in [0, 2**32 - 1]
_PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "ROCMExecutionProvider", "DmlExecutionProvider",
                        "CoreMLExecutionProvider", "CPUExecutionProvider")


class InferenceInputError(ValueError):
    """An input to the generator (z, c, psi, seed, class) is malformed; the message names it."""


class ModelLoadError(RuntimeError):
    """The model file is missing, unreadable, corrupt, or not a stylegan-jax generator export."""


class InferenceError(RuntimeError):
    """The model ran but its output cannot be delivered (non-finite values)."""


# ---------------------------------------------------------------------------------------------------------------------
# Helpers.


def latent_from_seed(seed: int, z_dim: int) -> np.ndarray:
    """``(1, z_dim)`` float32 latent of ``seed`` with the official convention
    ``np.random.RandomState(seed).randn(1, z_dim)`` (same picture as the official ``gen_images.py``)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InferenceInputError(f"seed must be an integer, got {type(seed).__name__}")
    if not 0 <= int(seed) <= SEED_MAX:
        raise InferenceInputError(f"seed must be in [0, {SEED_MAX}], got {seed}")
    return np.random.RandomState(int(seed)).randn(1, z_dim).astype(np.float32)


def one_hot(class_idx: int | Sequence[int], c_dim: int) -> np.ndarray:
    """One-hot labels ``(N, c_dim)`` float32 for one class index or a sequence of them."""
    idx = np.atleast_1d(np.asarray(class_idx))
    if idx.dtype.kind not in "iu" or idx.ndim != 1:
        raise InferenceInputError(f"class index must be an integer or a 1-D sequence of integers, got {class_idx!r}")
    if c_dim <= 0:
        raise InferenceInputError("the model is unconditional: it takes no class")
    if idx.size and (idx.min() < 0 or idx.max() >= c_dim):
        raise InferenceInputError(f"class index must be in [0, {c_dim - 1}], got {class_idx!r}")
    return np.eye(c_dim, dtype=np.float32)[idx]


def payload_bits(payload: bytes | str | Sequence[int] | np.ndarray) -> np.ndarray:
    """Watermark payload as a 1-D uint8 array of 0/1: bytes/str (UTF-8) are expanded MSB first."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    if isinstance(payload, bytes | bytearray):
        bits = np.unpackbits(np.frombuffer(bytes(payload), np.uint8))
    else:
        bits = np.asarray(payload)
        if bits.dtype == bool:
            bits = bits.astype(np.uint8)
        if bits.ndim != 1 or bits.dtype.kind not in "iu" or not np.all((bits == 0) | (bits == 1)):
            raise ValueError("payload must be bytes, str, or a 1-D sequence of 0/1 bits")
        bits = bits.astype(np.uint8)
    if bits.size == 0:
        raise ValueError("payload must not be empty")
    return bits


def decode_metadata(props: Mapping[str, str]) -> dict[str, Any]:
    """Decode an exported model's ``metadata_props`` strings (ints as ints, ``generator_config`` as a dict)."""
    out: dict[str, Any] = dict(props)
    for key in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "num_ws", "opset"):
        if key in out:
            with contextlib.suppress(TypeError, ValueError):
                out[key] = int(out[key])
    if "truncation_cutoff" in out:
        try:
            out["truncation_cutoff"] = int(out["truncation_cutoff"]) if out["truncation_cutoff"] != "" else None
        except (TypeError, ValueError):
            pass
    if "generator_config" in out:
        with contextlib.suppress(TypeError, ValueError):
            out["generator_config"] = json.loads(out["generator_config"])
    if "inputs" in out and isinstance(out["inputs"], str):
        out["inputs"] = [s for s in out["inputs"].split(",") if s]
    return out


def _real_array(value: Any, name: str, allow_int: bool) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as e:  # ragged nested lists and the like
        raise InferenceInputError(f"{name} is not an array ({type(e).__name__}: {e})") from None
    kinds = "fiub" if allow_int else "f"
    if arr.dtype.kind not in kinds:
        want = "real numbers" if allow_int else "floating-point values"
        raise InferenceInputError(f"{name} must hold {want}, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise InferenceInputError(f"{name} contains {int(bad.sum())} NaN/inf value(s) "
                                  f"(first at index {tuple(int(i) for i in np.argwhere(bad)[0])})")
    return np.ascontiguousarray(arr)


def check_psi(psi: Any) -> float:
    """``psi`` as a float, or :class:`InferenceInputError` if it is not a finite real in :data:`PSI_RANGE`."""
    if isinstance(psi, bool | np.bool_) or not isinstance(psi, numbers.Real | np.ndarray):
        raise InferenceInputError(f"psi must be a real number, got {type(psi).__name__}")
    arr = np.asarray(psi)
    if arr.ndim != 0 or arr.dtype.kind not in "fiu":
        raise InferenceInputError(f"psi must be a real scalar, got shape {arr.shape} dtype {arr.dtype}")
    value = float(arr)
    if math.isnan(value):
        raise InferenceInputError("psi is NaN")
    if not PSI_RANGE[0] <= value <= PSI_RANGE[1]:
        raise InferenceInputError(f"psi must be in [{PSI_RANGE[0]:g}, {PSI_RANGE[1]:g}], got {value:g}")
    return value


# ---------------------------------------------------------------------------------------------------------------------
# Session.


def default_providers() -> list[str]:
    """Available onnxruntime execution providers, accelerators first (Azure/TensorRT are never picked by default:
    the first needs a remote endpoint, the second builds engines for minutes on first use)."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    return [p for p in _PREFERRED_PROVIDERS if p in available] or ["CPUExecutionProvider"]


class InferenceSession:
    """An onnxruntime session on an exported generator, with input validation and watermarking.

    Args:
      model_path: the ``.onnx`` file written by ``stylegan-jax export``.
      providers: onnxruntime execution providers (default :func:`default_providers`).
      watermark_key: key of the provenance watermark (:mod:`stylegan_jax.apis.watermark`).
      payload: the bits every image carries: bytes/str (expanded MSB first) or a 0/1 sequence.
      intra_op_threads: onnxruntime threads per run (default: onnxruntime's choice, all cores). With several
        concurrent requests, fewer threads per run avoids oversubscription.
      memory_arena: onnxruntime's CPU memory arena (off by default: half the peak memory, same speed).

    ``run`` is thread-safe (onnxruntime sessions may be shared), so one session can serve concurrent requests.

    Raises:
      ModelLoadError: the file is missing, unreadable, not ONNX, or lacks the ``z``/``psi``/``img`` interface.
      ValueError: the watermark key has the wrong type, or the payload is too long for the model's image size.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        providers: Sequence[str] | None = None,
        watermark_key: Key = DEFAULT_WATERMARK_KEY,
        payload: bytes | str | Sequence[int] | np.ndarray = DEFAULT_PAYLOAD,
        *,
        intra_op_threads: int | None = None,
        memory_arena: bool = False,
    ) -> None:
        import onnxruntime as ort

        self.model_path = Path(model_path)
        self.watermark_key = watermark_key
        self.payload = payload_bits(payload)
        if not self.model_path.exists():
            raise ModelLoadError(f"{self.model_path}: model file not found")
        if not self.model_path.is_file():
            raise ModelLoadError(f"{self.model_path}: not a file")
        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = int(intra_op_threads)
        # The CPU arena keeps every chunk it ever grew to: measured on a 64 px model at batch 8 it doubled the peak
        # RSS (1.8 GiB vs 0.96 GiB) for no speed gain (memory patterns still pre-plan each run's buffers).
        options.enable_cpu_mem_arena = bool(memory_arena)
        options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
        try:
            self._session = ort.InferenceSession(str(self.model_path), options,
                                                 providers=list(providers or default_providers()))
        except Exception as e:  # ORT raises its own Fail/InvalidProtobuf/... types, or RuntimeError
            raise ModelLoadError(f"{self.model_path}: cannot load the ONNX model ({type(e).__name__}: "
                                 f"{str(e).strip()[:500]})") from e
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = [o.name for o in self._session.get_outputs()]
        if "z" not in inputs or "psi" not in inputs or "img" not in outputs:
            raise ModelLoadError(f"{self.model_path}: not a stylegan-jax generator export (inputs {sorted(inputs)}, "
                                 f"outputs {outputs}; expected inputs z, psi [, c] and output img)")
        self.input_names = list(inputs)
        self.metadata = decode_metadata(self._session.get_modelmeta().custom_metadata_map)
        # The graph's own shapes are authoritative; the metadata only fills what they cannot say.
        self.z_dim = _static_dim(inputs["z"].shape, 1, self.metadata.get("z_dim"))
        self.c_dim = _static_dim(inputs["c"].shape, 1, self.metadata.get("c_dim")) if "c" in inputs else 0
        out_shape = self._session.get_outputs()[0].shape
        self.img_channels = _static_dim(out_shape, 1, self.metadata.get("img_channels"))
        self.img_resolution = _static_dim(out_shape, 2, self.metadata.get("img_resolution"))
        if not isinstance(self.z_dim, int) or self.z_dim < 1:
            raise ModelLoadError(f"{self.model_path}: cannot tell the latent size (z input shape {inputs['z'].shape})")
        if isinstance(self.img_resolution, int) and self.img_channels == 3:
            # Fail now, not on the first request, if the key is of the wrong type or the payload does not fit
            # the image size (one embed of a flat image: ~1 ms at 64 px, ~0.15 s at 1024 px).
            res = self.img_resolution
            try:
                watermark.embed(np.full((res, res, 3), 128, np.uint8), watermark_key, self.payload)
            except (TypeError, ValueError) as e:
                raise ValueError(f"watermark settings do not fit this model's {res}x{res} images: {e}") from e

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def info(self) -> dict[str, Any]:
        """Model description for clients (no secrets): sizes, metadata, psi range, watermark bit count."""
        return {
            "z_dim": self.z_dim, "c_dim": self.c_dim, "img_resolution": self.img_resolution,
            "img_channels": self.img_channels, "num_ws": self.metadata.get("num_ws"),
            "psi_range": list(PSI_RANGE), "inputs": self.input_names, "providers": self.providers,
            "watermark": {"num_bits": int(self.payload.size)},
            "metadata": {k: v for k, v in self.metadata.items()},
        }

    # -- validation ----------------------------------------------------------------------------------------------------

    def check_inputs(self, z: Any, c: Any = None, psi: Any = 1.0) -> dict[str, np.ndarray]:
        """Validate and convert the inputs into the ONNX feed; raises :class:`InferenceInputError`."""
        z_arr = _real_array(z, "z", allow_int=False)
        if z_arr.ndim != 2 or z_arr.shape[1] != self.z_dim or z_arr.shape[0] < 1:
            hint = " (a single latent must be shaped (1, z_dim): use z[None])" if z_arr.shape == (self.z_dim,) else ""
            raise InferenceInputError(f"z must have shape (N, {self.z_dim}) with N >= 1, got {z_arr.shape}{hint}")
        feed = {"z": z_arr, "psi": np.asarray(check_psi(psi), np.float32)}
        if self.c_dim > 0:
            if c is None:
                raise InferenceInputError(f"the model is conditional: c of shape ({z_arr.shape[0]}, {self.c_dim}) "
                                          "is required")
            c_arr = _real_array(c, "c", allow_int=True)
            if c_arr.shape != (z_arr.shape[0], self.c_dim):
                raise InferenceInputError(f"c must have shape ({z_arr.shape[0]}, {self.c_dim}) to match z, "
                                          f"got {c_arr.shape}")
            feed["c"] = c_arr
        elif c is not None:
            raise InferenceInputError("the model is unconditional (c_dim = 0): c must be None")
        return feed

    # -- generation ----------------------------------------------------------------------------------------------------

    def generate_float(self, z: Any, c: Any = None, psi: Any = 1.0) -> np.ndarray:
        """Raw generator output: float32 ``(N, C, H, W)``, nominally in ``[-1, 1]``."""
        feed = self.check_inputs(z, c, psi)
        return self._session.run(["img"], feed)[0]

    def generate(self, z: Any, c: Any = None, psi: Any = 1.0, watermark: bool = True) -> np.ndarray:
        """Images as uint8 ``(N, H, W, C)``: the official ``x * 127.5 + 128`` conversion, then (by default) the
        keyed provenance watermark carrying :attr:`payload` (detect with ``watermark.detect(img, key,
        len(payload))``)."""
        images = self.generate_float(z, c, psi)
        try:
            if watermark:
                return postprocessing.postprocess(images, self.watermark_key, self.payload)
            return postprocessing.denormalize(images)
        except ValueError as e:  # non-finite output, or a layout the watermark cannot take
            raise InferenceError(f"generator output cannot be delivered: {e}") from e

    def generate_seed(self, seed: int, psi: Any = 1.0, class_idx: int | None = None,
                      watermark: bool = True) -> np.ndarray:
        """One image ``(1, H, W, C)`` for ``seed`` (official latent convention), optionally of class ``class_idx``."""
        z = latent_from_seed(seed, self.z_dim)
        c = None
        if self.c_dim > 0:
            if class_idx is None:
                raise InferenceInputError(f"the model is conditional: a class in [0, {self.c_dim - 1}] is required")
            c = one_hot(class_idx, self.c_dim)
        elif class_idx is not None:
            raise InferenceInputError("the model is unconditional: it takes no class")
        return self.generate(z, c, psi, watermark=watermark)


def _static_dim(shape: Sequence[Any], axis: int, fallback: Any) -> Any:
    if len(shape) > axis and isinstance(shape[axis], int):
        return int(shape[axis])
    return fallback
