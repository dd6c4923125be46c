"""Post-processing of generator output on the deployed inference path: denormalize, then watermark.

Order: images are first converted to the exact uint8 bytes that would be delivered (:func:`denormalize`) and the
provenance mark is embedded into those bytes (:func:`stylegan_jax.apis.watermark.embed`). Embedding in float and
quantising afterwards was rejected because

* the embedder's correction passes measure the mark on the rounded, clipped uint8 image, so the delivered bytes
  decode exactly (100% of bits, full header score); rounding applied after embedding would add uncontrolled
  noise on top of the mark;
* the PSNR promise (``target_psnr``, default 42 dB, requirement >= 40 dB) is then measured against the exact
  unmarked image the pipeline would otherwise ship, not against a float image nobody sees.

The cost is one extra rounding of the mark's luma change, which the embedder's distortion budget already
accounts for (~1/12 grey level^2).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stylegan_jax.apis.watermark import DEFAULT_TARGET_PSNR, Key, embed

__all__ = ["denormalize", "postprocess"]


def _as_float(images: object) -> np.ndarray:
    x = np.asarray(images)
    if x.dtype in (np.float32, np.float64):
        return x
    # float16 and ml_dtypes' bfloat16 (what JAX hands back for bf16 outputs; its NumPy kind is "V") are widened to
    # float32, which is what the official PyTorch pipeline computes the conversion in.
    if x.dtype.kind == "f" or x.dtype.name == "bfloat16":
        return x.astype(np.float32)
    raise TypeError(f"denormalize expects floating-point images in [-1, 1], got dtype {x.dtype}")


def denormalize(images: np.ndarray) -> np.ndarray:
    """Generator output (float NCHW, nominally in [-1, 1]) -> uint8 NHWC.

    Values are clipped to [-1, 1], mapped with ``(x + 1) * 127.5`` and rounded half *up* (127.5 -> 128), i.e.
    ``floor(x * 127.5 + 128)``. That is exactly the official StyleGAN3 conversion
    ``(img * 127.5 + 128).clamp(0, 255).to(torch.uint8)`` (truncation of a non-negative value is floor), computed
    the same way in float32, so outputs match the PyTorch reference byte for byte. -1 -> 0, 0 -> 128, 1 -> 255.

    Raises ``ValueError`` for a rank other than 4, a channel axis (axis 1) other than 1 or 3, or any NaN/inf
    (a diverged generator must not be shipped as a silently clipped image); ``TypeError`` for non-float input.
    """
    x = _as_float(images)
    if x.ndim != 4:
        raise ValueError(f"denormalize expects NCHW images of rank 4, got rank {x.ndim} with shape {x.shape}")
    if x.shape[1] not in (1, 3):
        hint = " (this looks like NHWC; transpose to NCHW first)" if x.shape[-1] in (1, 3) else ""
        raise ValueError(f"denormalize expects 1 or 3 channels on axis 1 (NCHW), got shape {x.shape}{hint}")
    finite = np.isfinite(x)
    if not finite.all():
        n_nan = int(np.isnan(x).sum())
        n_inf = int(x.size - finite.sum()) - n_nan
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f"denormalize: images contain {n_nan} NaN and {n_inf} inf value(s) (first at NCHW index {first}); "
            "refusing to convert non-finite generator output"
        )
    y = np.floor(np.clip(x, -1.0, 1.0) * 127.5 + 128.0)
    # Max is 255.5 -> floor 255, min is 0.5 -> floor 0, so no second clip is needed before the cast.
    return np.ascontiguousarray(y.astype(np.uint8).transpose(0, 2, 3, 1))


def postprocess(
    images: np.ndarray,
    key: Key,
    payload_bits: Sequence[int] | np.ndarray,
    *,
    target_psnr: float = DEFAULT_TARGET_PSNR,
) -> np.ndarray:
    """Denormalize float NCHW RGB generator output and watermark every image; returns uint8 ``NxHxWx3``.

    ``payload_bits``: one 1-D sequence of 0/1 shared by all images, or an ``N x num_bits`` array (one payload per
    image). Detect with ``watermark.detect(img, key, num_bits)``.
    """
    u8 = denormalize(images)
    if u8.shape[-1] != 3:
        raise ValueError(f"watermarking needs RGB images (3 channels), got {u8.shape[-1]}")
    bits = np.asarray(payload_bits)
    if bits.ndim == 1:
        bits = np.broadcast_to(bits, (u8.shape[0], bits.size))
    elif bits.ndim != 2 or bits.shape[0] != u8.shape[0]:
        raise ValueError(
            f"payload_bits must be 1-D (shared) or shaped ({u8.shape[0]}, num_bits), got shape {bits.shape}"
        )
    if u8.shape[0] == 0:
        return u8
    return np.stack([embed(img, key, b, target_psnr=target_psnr) for img, b in zip(u8, bits, strict=True)])
