"""Official StyleGAN2/3 discriminator state dict -> flax variables of ``stylegan_jax`` ``Discriminator``.

Official names map one to one onto our parameter paths (``b64.conv0.weight`` -> ``b64/conv0/weight``);
only the layouts differ: conv weights ``[out, in, kh, kw]`` -> ``[kh, kw, in, out]``, dense weights
``[out, in]`` -> ``[in, out]``. The stored values are the raw (pre-equalization) ones on both sides, so
no rescaling is involved. The ``resample_filter`` buffers are deterministic: they are checked against
our constant and dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from stylegan_jax.networks.discriminator import (
    DEFAULT_RESAMPLE_FILTER,
    Discriminator,
    discriminator_from_official_kwargs,
    official_filter_buffer,
)


def _to_official_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Our parameter shape -> the official one."""
    if len(shape) == 4:
        kh, kw, i, o = shape
        return (o, i, kh, kw)
    if len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def _from_official(value: np.ndarray) -> np.ndarray:
    """Official layout -> ours (OIHW -> HWIO, [out, in] -> [in, out])."""
    if value.ndim == 4:
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
    if value.ndim == 2:
        return np.ascontiguousarray(value.T)
    return value


def expected_parameters(D: Discriminator) -> dict[str, tuple[int, ...]]:
    """Official parameter name -> our parameter shape, from an abstract init (no compute)."""
    abstract = jax.eval_shape(D.init_params, jax.random.PRNGKey(0))
    flat = jax.tree_util.tree_flatten_with_path(abstract["params"])[0]
    return {".".join(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def expected_buffers(D: Discriminator) -> dict[str, np.ndarray]:
    """Official buffer name -> its value (only deterministic ``resample_filter`` buffers exist in D).

    Every official Conv2dLayer and DiscriminatorBlock registers one. Only the block's, conv1's and skip's
    use the configured filter; FromRGB, conv0 and the epilogue conv never resample and keep the
    default [1, 3, 3, 1].
    """
    configured = official_filter_buffer(D.resample_filter)
    default = official_filter_buffer(DEFAULT_RESAMPLE_FILTER)
    out: dict[str, np.ndarray] = {}
    for res in D.block_resolutions:
        out[f"b{res}.resample_filter"] = configured
        if res == D.img_resolution:
            out[f"b{res}.fromrgb.resample_filter"] = default
        out[f"b{res}.conv0.resample_filter"] = default
        out[f"b{res}.conv1.resample_filter"] = configured
        out[f"b{res}.skip.resample_filter"] = configured
    out["b4.conv.resample_filter"] = default
    return out


def _nest(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def convert_discriminator(state_dict: Mapping[str, Any], D_kwargs: dict) -> dict:
    """Convert an official discriminator ``state_dict`` into ``{'params': ...}`` for our ``Discriminator``.

    Args:
      state_dict: official names (``b256.conv0.weight``, ``mapping.fc0.bias``, ...; without any ``D/``
        or ``D.`` prefix) to arrays (NumPy, or anything ``np.asarray`` accepts) in the official layouts.
      D_kwargs: the official constructor kwargs (see ``discriminator_from_official_kwargs``).

    Returns:
      ``{'params': nested dict of float32 NumPy arrays}``, usable with
      ``discriminator_from_official_kwargs(D_kwargs).apply``.

    Raises:
      ValueError: naming every unknown key, missing parameter, shape mismatch (expected vs got, both in
        the official layout) and ``resample_filter`` buffer that differs from the configured filter.
        Absent buffers are not an error (they carry no information).
    """
    D = discriminator_from_official_kwargs(D_kwargs)
    params = expected_parameters(D)
    buffers = expected_buffers(D)
    errors: list[str] = []
    converted: dict[str, np.ndarray] = {}

    for key in sorted(state_dict):
        value = np.asarray(state_dict[key])
        if key in params:
            want = _to_official_shape(params[key])
            if tuple(value.shape) != want:
                errors.append(f"{key}: expected shape {want}, got {tuple(value.shape)}")
                continue
            converted[key] = _from_official(value.astype(np.float32))
        elif key in buffers:
            ref = buffers[key]
            if value.shape != ref.shape:
                errors.append(f"{key}: expected shape {ref.shape}, got {tuple(value.shape)}")
            elif not np.allclose(value, ref, rtol=1e-6, atol=1e-7):
                errors.append(f"{key}: differs from the filter implied by D_kwargs (resample_filter "
                              f"{list(D.resample_filter)} for conv1/skip/block, [1, 3, 3, 1] otherwise)")
        else:
            hint = " (strip the 'D/' prefix)" if key.startswith(("D/", "D.")) else ""
            errors.append(f"{key}: unknown key for a discriminator built from these D_kwargs{hint}")

    for key in sorted(set(params) - set(state_dict)):
        errors.append(f"{key}: missing (expected shape {_to_official_shape(params[key])})")

    if errors:
        raise ValueError("convert_discriminator: state dict does not match D_kwargs:\n  " + "\n  ".join(errors))
    return {"params": _nest(converted)}


__all__ = ["convert_discriminator", "expected_buffers", "expected_parameters"]
