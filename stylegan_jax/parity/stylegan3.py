"""Parity check for official StyleGAN3 generator fixtures (``training.networks_stylegan3.Generator``).

Outputs compared (absolute tolerance): ``ws``, ``ws_trunc`` (``meta.truncation_psi`` / ``truncation_cutoff``),
``img``, ``img_trunc`` and ``img_transformed`` (``in/transform`` written into the Fourier input, as the
official ``gen_images.py`` does).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from stylegan_jax.convert.generator import convert_generator, strip_prefix
from stylegan_jax.parity.common import DEFAULT_ATOL, Fixture, Result, compare

OFFICIAL_CLASS = "training.networks_stylegan3.Generator"


def applies_stylegan3(fx: Fixture) -> bool:
    """True for generator fixtures of the official StyleGAN3 class (the default when ``meta`` names none)."""
    return ("G_kwargs" in fx.meta and fx.has("in/z") and fx.has("out/ws")
            and "stylegan3" in fx.meta.get("official_class", OFFICIAL_CLASS))


def check_generator(fx: Fixture, atol: float = DEFAULT_ATOL, impl: str = "fast", **_) -> list[Result]:
    """Compare every StyleGAN3 generator output present in the fixture."""
    cls = fx.meta.get("official_class", OFFICIAL_CLASS)
    if "stylegan3" not in cls:
        raise ValueError(f"{fx.path}: generator class {cls!r} is not supported by this parity check")
    G, variables = convert_generator(strip_prefix(fx.arrays, "G/"), fx.meta["G_kwargs"], impl=impl)
    z = jnp.asarray(fx.get("in/z"))
    c = jnp.asarray(fx.get("in/c")) if G.c_dim > 0 else None
    psi = fx.meta.get("truncation_psi", 1.0)
    cutoff = fx.meta.get("truncation_cutoff")
    transform = fx.get("in/transform")

    mapping = jax.jit(lambda v, z, c, psi: G.apply(v, z, c, psi, cutoff, method=G.map))
    synthesis = jax.jit(lambda v, ws, t: G.apply(v, ws, t, method=G.synthesize))
    outputs: dict[str, Callable[[], np.ndarray]] = {
        "ws": lambda: mapping(variables, z, c, 1.0),
        "ws_trunc": lambda: mapping(variables, z, c, psi),
        "img": lambda: synthesis(variables, mapping(variables, z, c, 1.0), None),
        "img_trunc": lambda: synthesis(variables, mapping(variables, z, c, psi), None),
        "img_transformed": lambda: synthesis(variables, mapping(variables, z, c, 1.0), jnp.asarray(transform)),
    }
    results = []
    for name, fn in outputs.items():
        ref = fx.get(f"out/{name}")
        if ref is None or (name == "img_transformed" and transform is None):
            continue
        results.append(compare(f"G {name}", fn(), ref, atol, "abs"))
    return results


__all__ = ["OFFICIAL_CLASS", "applies_stylegan3", "check_generator"]
