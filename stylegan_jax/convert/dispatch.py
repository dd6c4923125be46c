"""Which official generator classes stylegan-jax converts, and with which converter.

The one place that maps an official network (a :class:`~stylegan_jax.convert.official_pickle.NetworkRecord` or
an official class name) to its converter; ``stylegan-jax convert`` and any other caller go through
:func:`official_generator_class` and :func:`convert_official_generator`.

==========================================  ==============================================================
official class                              converter (state dict, constructor kwargs) -> (module, variables)
==========================================  ==============================================================
``training.networks_stylegan3.Generator``   :func:`stylegan_jax.convert.generator.convert_generator`
``training.networks_stylegan2.Generator``   :func:`stylegan_jax.convert.stylegan2.convert_stylegan2_generator`
==========================================  ==============================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from stylegan_jax.convert.generator import convert_generator
from stylegan_jax.convert.official_pickle import NetworkRecord
from stylegan_jax.convert.stylegan2 import convert_stylegan2_generator

STYLEGAN3_GENERATOR = "training.networks_stylegan3.Generator"
STYLEGAN2_GENERATOR = "training.networks_stylegan2.Generator"

GENERATOR_CONVERTERS: dict[str, Callable[[Mapping[str, np.ndarray], dict], tuple[Any, dict]]] = {
    STYLEGAN3_GENERATOR: convert_generator,
    STYLEGAN2_GENERATOR: convert_stylegan2_generator,
}

# The reader infers a network's official module from the classes in its tree (pickles store bare class names).
_ARCHITECTURE_GENERATOR = {"stylegan3": STYLEGAN3_GENERATOR, "stylegan2": STYLEGAN2_GENERATOR}


def official_generator_class(rec: NetworkRecord) -> str | None:
    """The official class of ``rec`` (e.g. ``'training.networks_stylegan2.Generator'``) if it is a generator we
    convert, else None (a discriminator, an augment pipe, an unknown class or module)."""
    cls = _ARCHITECTURE_GENERATOR.get(rec.architecture or "")
    if cls is None or rec.class_name not in ("Generator", cls):
        return None
    return cls


def convert_official_generator(official_class: str, state_dict: Mapping[str, np.ndarray], G_kwargs: dict,
                               ) -> tuple[Any, dict]:
    """Convert an official generator state dict of class ``official_class`` with its constructor kwargs.

    Returns ``(generator module, variables)`` with ``variables = {'params', 'ema', 'buffers'}`` (``buffers``
    possibly empty); raises ``ValueError`` for a class we do not convert, and the
    converter's :class:`~stylegan_jax.convert.generator.ConversionError` / ``ValueError`` for weights or kwargs
    that do not fit.
    """
    converter = GENERATOR_CONVERTERS.get(official_class)
    if converter is None:
        raise ValueError(f"no converter for {official_class}; supported: {', '.join(GENERATOR_CONVERTERS)}")
    G, variables = converter(state_dict, G_kwargs)
    # A StyleGAN2 generator without noise inputs has no buffers; checkpoints and samplers expect the collection.
    variables.setdefault("buffers", {})
    return G, variables


__all__ = [
    "GENERATOR_CONVERTERS",
    "STYLEGAN2_GENERATOR",
    "STYLEGAN3_GENERATOR",
    "convert_official_generator",
    "official_generator_class",
]
