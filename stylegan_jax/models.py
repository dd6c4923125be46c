"""Model factories: build networks from our config names (one place that maps 't'/'r' to kwargs)."""

from __future__ import annotations

from stylegan_jax.networks.stylegan3 import Generator

# Generator fields that describe the architecture (saved with every checkpoint).
_GENERATOR_FIELDS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_layers",
                     "mapping_lr_multiplier", "w_avg_beta", "synthesis_kwargs")


def stylegan3_synthesis_kwargs(cfg: str, channel_base: int = 32768, channel_max: int = 512, **overrides) -> dict:
    """Synthesis kwargs of the two StyleGAN3 configurations.

    ``'t'``: translation equivariant, 3x3 convs, separable Kaiser filters.
    ``'r'``: rotation equivariant, 1x1 convs, radially symmetric jinc downsampling filters and
    twice the channels (the official training script doubles channel_base and channel_max).
    """
    if cfg == "t":
        kw = dict(channel_base=channel_base, channel_max=channel_max)
    elif cfg == "r":
        kw = dict(channel_base=channel_base * 2, channel_max=channel_max * 2, conv_kernel=1, use_radial_filters=True)
    else:
        raise ValueError(f"unknown StyleGAN3 config {cfg!r}; expected 't' or 'r'")
    kw.update(overrides)
    return kw


GENERATOR_CFGS = ("t", "r", "stylegan2")


def build_generator(cfg: str = "t", z_dim: int = 512, w_dim: int = 512, c_dim: int = 0, img_resolution: int = 256,
                    img_channels: int = 3, channel_base: int = 32768, channel_max: int = 512, mapping_layers: int = 8,
                    impl: str = "fast", **synthesis_overrides):
    """A StyleGAN3-T (``cfg='t'``), StyleGAN3-R (``'r'``) or StyleGAN2 (``'stylegan2'``) generator; defaults are
    the design's (z = w = 512, 8 mapping layers, 256x256x3).

    ``synthesis_overrides`` are synthesis-network fields: for StyleGAN3 any ``SynthesisNetwork`` field
    (``magnitude_ema_beta``, ``conv_clamp``, ...); for StyleGAN2 the ``StyleGAN2Generator`` fields
    (``conv_clamp``, ``architecture``, ``use_noise``, ...). StyleGAN3-only ones (``magnitude_ema_beta``,
    ``num_layers``) are ignored for StyleGAN2 so that one config can describe both.
    """
    if cfg == "stylegan2":
        from stylegan_jax.networks.stylegan2 import STYLEGAN2_FIELDS, StyleGAN2Generator

        overrides = {k: v for k, v in synthesis_overrides.items() if k not in ("magnitude_ema_beta", "num_layers")}
        unknown = sorted(set(overrides) - set(STYLEGAN2_FIELDS))
        if unknown:
            raise ValueError(f"build_generator: {unknown} are not StyleGAN2 generator fields")
        return StyleGAN2Generator(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                  img_channels=img_channels, mapping_layers=mapping_layers, channel_base=channel_base,
                                  channel_max=channel_max, **overrides)
    if cfg not in GENERATOR_CFGS:
        raise ValueError(f"unknown generator config {cfg!r}; expected one of {GENERATOR_CFGS}")
    kw = stylegan3_synthesis_kwargs(cfg, channel_base, channel_max, impl=impl, **synthesis_overrides)
    return Generator(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                     mapping_layers=mapping_layers, synthesis_kwargs=kw)


def generator_config(G) -> dict:
    """JSON-serialisable description of a generator's architecture (inverse of generator_from_config)."""
    from stylegan_jax.networks.stylegan2 import STYLEGAN2_FIELDS, StyleGAN2Generator

    if isinstance(G, StyleGAN2Generator):
        return {"class": "stylegan2.Generator", "kwargs": {f: getattr(G, f) for f in STYLEGAN2_FIELDS}}
    cfg = {f: getattr(G, f) for f in _GENERATOR_FIELDS}
    cfg["synthesis_kwargs"] = {k: v for k, v in dict(G.synthesis_kwargs or {}).items() if k != "impl"}
    return {"class": "stylegan3.Generator", "kwargs": cfg}


def generator_from_config(config: dict, impl: str = "fast"):
    """Rebuild a generator (StyleGAN3 or StyleGAN2) from :func:`generator_config` output."""
    if isinstance(config, dict) and config.get("class") == "stylegan2.Generator":
        from stylegan_jax.networks.discriminator import as_filter_spec
        from stylegan_jax.networks.stylegan2 import STYLEGAN2_FIELDS, StyleGAN2Generator

        kwargs = dict(config["kwargs"])
        unknown = set(kwargs) - set(STYLEGAN2_FIELDS)
        if unknown:
            raise ValueError(f"generator config has unknown fields {sorted(unknown)}")
        kwargs["resample_filter"] = as_filter_spec(kwargs.get("resample_filter", (1, 3, 3, 1)))
        return StyleGAN2Generator(**kwargs)
    if not isinstance(config, dict) or config.get("class") != "stylegan3.Generator":
        raise ValueError(f"not a stylegan3 generator config: {str(config)[:200]}")
    kwargs = dict(config["kwargs"])
    unknown = set(kwargs) - set(_GENERATOR_FIELDS)
    if unknown:
        raise ValueError(f"generator config has unknown fields {sorted(unknown)}")
    kwargs["synthesis_kwargs"] = {**dict(kwargs.get("synthesis_kwargs") or {}), "impl": impl}
    return Generator(**kwargs)


__all__ = ["GENERATOR_CFGS", "build_generator", "generator_config", "generator_from_config",
           "stylegan3_synthesis_kwargs"]
