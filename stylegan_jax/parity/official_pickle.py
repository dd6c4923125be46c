"""Parity check for an official network pickle against the outputs stored beside it.

``stylegan-jax parity NAME.pkl`` (or ``NAME_expected.npz``) reads the pickle with the safe reader (nothing in it
runs), converts its ``meta.network`` generator (default ``G_ema``) with the one converter of its official class,
and compares ``G(in/z, in/c, meta.truncation_psi)`` with ``out/img`` of ``NAME_expected.npz``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from stylegan_jax.parity.common import DEFAULT_ATOL, Fixture, Result, compare

EXPECTED_SUFFIX = "_expected.npz"


def expected_path(pickle_path: str | Path) -> Path:
    """``NAME.pkl`` -> ``NAME_expected.npz`` (the outputs the official code gave for that pickle)."""
    p = Path(pickle_path)
    return p.with_name(p.stem + EXPECTED_SUFFIX)


def pickle_path(fx: Fixture) -> Path:
    """The pickle an ``*_expected.npz`` fixture belongs to."""
    return fx.path.with_name(fx.path.name[: -len(EXPECTED_SUFFIX)] + ".pkl")


def applies_official_pickle(fx: Fixture) -> bool:
    return fx.path.name.endswith(EXPECTED_SUFFIX) and fx.has("out/img") and fx.has("in/z") and not any(
        k.startswith("G/") for k in fx.arrays)


def check_official_pickle(fx: Fixture, atol: float = DEFAULT_ATOL, **_) -> list[Result]:
    from stylegan_jax.convert.dispatch import convert_official_generator, official_generator_class
    from stylegan_jax.convert.official_pickle import load_official_pickle

    pkl = pickle_path(fx)
    if not pkl.is_file():
        raise ValueError(f"{fx.path}: the pickle it belongs to, {pkl}, does not exist")
    which = fx.meta.get("network", "G_ema")
    official = load_official_pickle(pkl)
    rec = getattr(official, which, None)
    if rec is None:
        raise ValueError(f"{pkl}: no network {which!r} in the pickle")
    cls = official_generator_class(rec)
    if cls is None:
        raise ValueError(f"{pkl}: {which} is not a generator we convert ({rec.class_name})")
    G, variables = convert_official_generator(cls, rec.state_dict, rec.init_kwargs)
    z = jnp.asarray(fx.get("in/z"))
    c = jnp.asarray(fx.get("in/c")) if fx.has("in/c") and G.c_dim > 0 else None
    psi = float(fx.meta.get("truncation_psi", 1.0))
    img = jax.jit(lambda v, z, c: G.apply(v, z, c, psi))(variables, z, c)
    return [compare(f"{which} img (pickle)", img, fx.get("out/img"), atol, "abs")]


__all__ = ["EXPECTED_SUFFIX", "applies_official_pickle", "check_official_pickle", "expected_path", "pickle_path"]
