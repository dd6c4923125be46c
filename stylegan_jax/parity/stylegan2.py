"""Parity check for official StyleGAN2 generator fixtures (``training.networks_stylegan2.Generator``).

Outputs compared (absolute tolerance):
``ws``, ``ws_trunc`` (``meta.truncation_psi`` / ``truncation_cutoff``), ``img`` and ``img_trunc``
(``meta.noise_mode``, 'const' in the fixtures: random noise cannot be reproduced across frameworks),
``img_noise_none``, and ``img_mixed`` (ws of ``in/z`` below ``meta.style_mix.cutoff``, of ``in/z2``
from it on).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from stylegan_jax.convert.generator import strip_prefix
from stylegan_jax.convert.stylegan2 import convert_stylegan2_generator
from stylegan_jax.parity.common import DEFAULT_ATOL, Fixture, Result, compare

OFFICIAL_CLASS = "training.networks_stylegan2.Generator"


def applies_stylegan2(fx: Fixture) -> bool:
    """True for generator fixtures of the official StyleGAN2 class."""
    return (fx.meta.get("official_class") == OFFICIAL_CLASS and "G_kwargs" in fx.meta and fx.has("in/z")
            and not fx.meta.get("loss"))


def check_stylegan2_generator(fx: Fixture, atol: float = DEFAULT_ATOL, **_) -> list[Result]:
    """Compare every StyleGAN2 generator output present in the fixture."""
    G, variables = convert_stylegan2_generator(strip_prefix(fx.arrays, "G/"), fx.meta["G_kwargs"])
    z = jnp.asarray(fx.get("in/z"))
    c = jnp.asarray(fx.get("in/c")) if G.c_dim > 0 else None
    psi = fx.meta.get("truncation_psi", 1.0)
    cutoff = fx.meta.get("truncation_cutoff")
    noise_mode = fx.meta.get("noise_mode", "const")
    if noise_mode == "random":
        raise ValueError(f"{fx.path}: outputs taken with noise_mode='random' cannot be reproduced")

    mapping = jax.jit(lambda v, z, c, psi: G.apply(v, z, c, psi, cutoff, method=G.map))
    synthesis = jax.jit(lambda v, ws, mode: G.apply(v, ws, noise_mode=mode, method=G.synthesize), static_argnums=2)

    def mixed() -> jnp.ndarray:
        mix = fx.meta.get("style_mix") or {}
        if not fx.has("in/z2") or "cutoff" not in mix:
            raise ValueError(f"{fx.path}: out/img_mixed needs in/z2 and meta.style_mix.cutoff")
        k = int(mix["cutoff"])
        ws = mapping(variables, z, c, 1.0)
        ws = jnp.concatenate([ws[:, :k], mapping(variables, jnp.asarray(fx.get("in/z2")), c, 1.0)[:, k:]], axis=1)
        return synthesis(variables, ws, noise_mode)

    outputs: dict[str, Callable[[], jnp.ndarray]] = {
        "ws": lambda: mapping(variables, z, c, 1.0),
        "ws_trunc": lambda: mapping(variables, z, c, psi),
        "img": lambda: synthesis(variables, mapping(variables, z, c, 1.0), noise_mode),
        "img_trunc": lambda: synthesis(variables, mapping(variables, z, c, psi), noise_mode),
        "img_noise_none": lambda: synthesis(variables, mapping(variables, z, c, 1.0), "none"),
        "img_mixed": mixed,
    }
    results = []
    for name, fn in outputs.items():
        ref = fx.get(f"out/{name}")
        if ref is None:
            continue
        results.append(compare(f"G {name}", np.asarray(fn()), ref, atol, "abs"))
    return results


__all__ = ["OFFICIAL_CLASS", "applies_stylegan2", "check_stylegan2_generator"]
