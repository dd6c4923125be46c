"""Conversion of official NVIDIA StyleGAN2/3 weights (state dicts and network pickles) into ours.

Everything that knows about official names and layouts lives in this package.
"""

from stylegan_jax.convert.discriminator import convert_discriminator
from stylegan_jax.convert.dispatch import convert_official_generator, official_generator_class
from stylegan_jax.convert.generator import ConversionError, convert_generator, strip_prefix
from stylegan_jax.convert.official_pickle import (
    OfficialPickleError,
    UnsafePickleError,
    load_official_pickle,
)
from stylegan_jax.convert.stylegan2 import convert_stylegan2_generator

__all__ = [
    "ConversionError",
    "OfficialPickleError",
    "UnsafePickleError",
    "convert_discriminator",
    "convert_generator",
    "convert_official_generator",
    "convert_stylegan2_generator",
    "load_official_pickle",
    "official_generator_class",
    "strip_prefix",
]
