"""Model factories: the registry of generators and the one place that maps config names to classes.

Every generator implements :mod:`stylegan_jax.networks.generator`'s interface; :data:`GENERATOR_CLASSES` lists
them. A new generator adds its module and one line there: config names (``model.cfg``), checkpoint configs and
every caller follow.
"""

from __future__ import annotations

from typing import Any

from stylegan_jax.networks.stylegan2 import StyleGAN2Generator
from stylegan_jax.networks.stylegan3 import Generator, stylegan3_synthesis_kwargs

GENERATOR_CLASSES: tuple[type, ...] = (
    Generator,            # StyleGAN3-T / -R ('t', 'r'); 'stylegan3.Generator' in checkpoints.
    StyleGAN2Generator,   # The StyleGAN2 baseline ('stylegan2'); 'stylegan2.Generator' in checkpoints.
)

GENERATOR_CFGS = tuple(name for cls in GENERATOR_CLASSES for name in cls.cfg_names)


def generator_class(cfg: str) -> type:
    """The generator class that config name ``cfg`` (``model.cfg``) builds."""
    for cls in GENERATOR_CLASSES:
        if cfg in cls.cfg_names:
            return cls
    raise ValueError(f"unknown generator config {cfg!r}; expected one of {GENERATOR_CFGS}")


def build_generator(cfg: str = "t", z_dim: int = 512, w_dim: int = 512, c_dim: int = 0, img_resolution: int = 256,
                    img_channels: int = 3, channel_base: int = 32768, channel_max: int = 512, mapping_layers: int = 8,
                    impl: str = "fast", **synthesis_overrides: Any):
    """A StyleGAN3-T (``cfg='t'``), StyleGAN3-R (``'r'``) or StyleGAN2 (``'stylegan2'``) generator; defaults are
    the design's (z = w = 512, 8 mapping layers, 256x256x3).

    ``synthesis_overrides`` are synthesis-network fields: for StyleGAN3 any ``SynthesisNetwork`` field
    (``magnitude_ema_beta``, ``conv_clamp``, ...); for StyleGAN2 the ``StyleGAN2Generator`` fields
    (``conv_clamp``, ``architecture``, ``use_noise``, ...). StyleGAN3-only ones (``magnitude_ema_beta``,
    ``num_layers``, ``margin_size``, ``input_transform_init``: ``networks.stylegan2.STYLEGAN3_ONLY_FIELDS``) are
    ignored for StyleGAN2 so that one config can describe both.
    """
    return generator_class(cfg).build(cfg, z_dim=z_dim, w_dim=w_dim, c_dim=c_dim, img_resolution=img_resolution,
                                      img_channels=img_channels, channel_base=channel_base, channel_max=channel_max,
                                      mapping_layers=mapping_layers, impl=impl, **synthesis_overrides)


def generator_config(G: Any) -> dict:
    """JSON-serialisable description of a generator's architecture (inverse of :func:`generator_from_config`)."""
    return G.to_config()


def generator_from_config(config: dict, impl: str = "fast"):
    """Rebuild a generator from :func:`generator_config` output (``{'class': ..., 'kwargs': ...}``)."""
    name = config.get("class") if isinstance(config, dict) else None
    for cls in GENERATOR_CLASSES:
        if name == cls.config_class:
            return cls.from_config(config["kwargs"], impl=impl)
    known = ", ".join(cls.config_class for cls in GENERATOR_CLASSES)
    raise ValueError(f"not a generator config we know (classes: {known}): {str(config)[:200]}")


__all__ = ["GENERATOR_CFGS", "GENERATOR_CLASSES", "build_generator", "generator_class", "generator_config",
           "generator_from_config", "stylegan3_synthesis_kwargs"]
