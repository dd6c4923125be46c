"""Official StyleGAN3 generator state dict -> our Flax variables.

Official layouts: dense weights ``[out, in]``, conv weights ``[out, in, kh, kw]``. Ours: dense
``[in, out]``, conv ``[kh, kw, in, out]``. Filters are not imported: they are recomputed from the
constructor kwargs and checked against the official buffers, so a state dict that does not belong
to the kwargs it came with is caught.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from stylegan_jax.networks.stylegan3 import Generator, generator_from_official_kwargs


class ConversionError(ValueError):
    """An official state dict does not match what the constructor kwargs describe."""


def _nest(flat: dict[tuple[str, ...], np.ndarray]) -> dict:
    out: dict = {}
    for path, value in flat.items():
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


class _StateDict:
    """Tracks which official entries were consumed, and checks shapes."""

    def __init__(self, state_dict: Mapping[str, np.ndarray], what: str):
        self.sd = {k: np.asarray(v) for k, v in state_dict.items()}
        self.used: set[str] = set()
        self.what = what

    def take(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in self.sd:
            raise ConversionError(f"{self.what}: missing key {key!r} (expected shape {shape})")
        value = self.sd[key]
        if tuple(value.shape) != tuple(shape):
            raise ConversionError(f"{self.what}: {key!r} has shape {tuple(value.shape)}, expected {tuple(shape)}")
        if not np.all(np.isfinite(value)):
            raise ConversionError(f"{self.what}: {key!r} contains NaN or inf")
        self.used.add(key)
        return value.astype(np.float32)

    def check_filter(self, key: str, expected: np.ndarray | None) -> None:
        if expected is None:
            if key in self.sd and self.sd[key] is not None and np.asarray(self.sd[key]).size > 1:
                raise ConversionError(f"{self.what}: {key!r} is a filter where the kwargs give none")
            self.used.add(key)
            return
        value = self.take(key, expected.shape)
        if not np.allclose(value, expected, atol=1e-6, rtol=1e-5):
            raise ConversionError(f"{self.what}: {key!r} differs from the filter the kwargs describe "
                                  "(the state dict does not belong to these constructor kwargs)")

    def finish(self) -> None:
        unknown = sorted(set(self.sd) - self.used)
        if unknown:
            raise ConversionError(f"{self.what}: unknown keys {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")


def _dense(sd: _StateDict, prefix: str, in_f: int, out_f: int, bias: bool = True) -> dict:
    out = {"weight": sd.take(f"{prefix}.weight", (out_f, in_f)).T}
    if bias:
        out["bias"] = sd.take(f"{prefix}.bias", (out_f,))
    return out


def convert_generator(state_dict: Mapping[str, np.ndarray], G_kwargs: dict, mapping_layers_default: int = 2,
                      impl: str = "fast") -> tuple[Generator, dict]:
    """Convert an official ``training.networks_stylegan3.Generator`` state dict.

    Args:
      state_dict: official names (``mapping.fc0.weight``, ``synthesis.L0_36_512.affine.bias``, ...) to
        arrays, parameters and buffers.
      G_kwargs: the official constructor kwargs.

    Returns:
      ``(generator, variables)`` with ``variables = {'params', 'ema', 'buffers'}``.

    Raises:
      ConversionError: naming the key that is missing, unknown, mis-shaped or inconsistent.
    """
    G = generator_from_official_kwargs(G_kwargs, mapping_layers_default=mapping_layers_default, impl=impl)
    sched = G.schedule()
    sd = _StateDict(state_dict, "generator state dict")
    params: dict = {}
    ema: dict = {}
    buffers: dict = {}

    # Mapping network.
    mapping: dict = {}
    in_f = G.z_dim
    if G.c_dim > 0:
        mapping["embed"] = _dense(sd, "mapping.embed", G.c_dim, G.w_dim)
        in_f += G.w_dim
    for idx in range(G.mapping_layers):
        mapping[f"fc{idx}"] = _dense(sd, f"mapping.fc{idx}", in_f, G.w_dim)
        in_f = G.w_dim
    params["mapping"] = mapping
    ema["mapping"] = {"w_avg": sd.take("mapping.w_avg", (G.w_dim,))}

    # Synthesis input.
    ch = sched.input_channels
    synthesis: dict = {"input": {"weight": sd.take("synthesis.input.weight", (ch, ch)),
                                 "affine": _dense(sd, "synthesis.input.affine", G.w_dim, 4)}}
    buffers["synthesis"] = {"input": {"freqs": sd.take("synthesis.input.freqs", (ch, 2)),
                                      "phases": sd.take("synthesis.input.phases", (ch,)),
                                      "transform": sd.take("synthesis.input.transform", (3, 3))}}
    ema_synthesis: dict = {}
    for spec in sched.layers:
        p = f"synthesis.{spec.name}"
        k = spec.conv_kernel
        synthesis[spec.name] = {
            "affine": _dense(sd, f"{p}.affine", G.w_dim, spec.in_channels),
            "weight": sd.take(f"{p}.weight", (spec.out_channels, spec.in_channels, k, k)).transpose(2, 3, 1, 0),
            "bias": sd.take(f"{p}.bias", (spec.out_channels,)),
        }
        ema_synthesis[spec.name] = {"magnitude_ema": sd.take(f"{p}.magnitude_ema", ())}
        sd.check_filter(f"{p}.up_filter", spec.up_filter())
        sd.check_filter(f"{p}.down_filter", spec.down_filter())
    params["synthesis"] = synthesis
    ema["synthesis"] = ema_synthesis
    sd.finish()
    return G, {"params": params, "ema": ema, "buffers": buffers}


def strip_prefix(flat: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """``{'G/mapping.fc0.weight': ...}`` -> ``{'mapping.fc0.weight': ...}`` for keys under ``prefix``."""
    return {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
