"""Official StyleGAN2 generator state dict (``training.networks_stylegan2.Generator``) -> our Flax variables.

Names map one to one (``synthesis.b8.conv0.affine.weight`` -> ``synthesis/b8/conv0/affine/weight``);
layouts differ: dense ``[out, in]`` -> ``[in, out]``, conv ``[out, in, kh, kw]`` -> ``[kh, kw, in, out]``,
the constant input ``[C, H, W]`` -> ``[H, W, C]``. Stored values are the raw (pre-equalization) ones
on both sides. ``resample_filter`` buffers are deterministic: they are checked against the filter
the kwargs describe and dropped. Error rules are the StyleGAN3 converter's: every missing, unknown,
mis-shaped or inconsistent entry raises :class:`ConversionError` naming its key.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from stylegan_jax.convert.generator import ConversionError, _StateDict
from stylegan_jax.networks.discriminator import official_filter_buffer
from stylegan_jax.networks.stylegan2 import (
    StyleGAN2Generator,
    block_channels,
    block_resolutions,
    stylegan2_generator_from_official_kwargs,
)


def _dense(sd: _StateDict, prefix: str, in_f: int, out_f: int) -> dict:
    return {"weight": sd.take(f"{prefix}.weight", (out_f, in_f)).T, "bias": sd.take(f"{prefix}.bias", (out_f,))}


def _conv(sd: _StateDict, key: str, out_ch: int, in_ch: int, k: int) -> np.ndarray:
    return np.ascontiguousarray(sd.take(key, (out_ch, in_ch, k, k)).transpose(2, 3, 1, 0))


def convert_stylegan2_generator(state_dict: Mapping[str, np.ndarray], G_kwargs: dict,
                                ) -> tuple[StyleGAN2Generator, dict]:
    """Convert an official ``training.networks_stylegan2.Generator`` state dict.

    Args:
      state_dict: official names (``mapping.fc0.weight``, ``synthesis.b4.const``, ...) to arrays,
        parameters and buffers.
      G_kwargs: the official constructor kwargs.

    Returns:
      ``(generator, variables)`` with ``variables = {'params', 'ema', 'buffers'}``.

    Raises:
      ConversionError: naming the key that is missing, unknown, mis-shaped or inconsistent.
      ValueError: for constructor kwargs we do not support.
    """
    G = stylegan2_generator_from_official_kwargs(G_kwargs)
    sd = _StateDict(state_dict, "StyleGAN2 generator state dict")
    f_buffer = official_filter_buffer(G.resample_filter)

    # Mapping network: z (+ label embedding) -> layer_features x (num_layers - 1) -> w_dim.
    embed = (G.w_dim if G.embed_features is None else G.embed_features) if G.c_dim > 0 else 0
    hidden = G.w_dim if G.layer_features is None else G.layer_features
    mapping: dict = {}
    if G.c_dim > 0:
        mapping["embed"] = _dense(sd, "mapping.embed", G.c_dim, embed)
    in_f = G.z_dim + embed
    for idx in range(G.mapping_layers):
        out_f = G.w_dim if idx == G.mapping_layers - 1 else hidden
        mapping[f"fc{idx}"] = _dense(sd, f"mapping.fc{idx}", in_f, out_f)
        in_f = out_f
    ema = {"mapping": {"w_avg": sd.take("mapping.w_avg", (G.w_dim,))}}

    synthesis: dict = {}
    synthesis_buffers: dict = {}
    k = G.kernel_size

    def layer(prefix: str, in_ch: int, out_ch: int, res: int, params: dict, buffers: dict, name: str) -> None:
        p = {"affine": _dense(sd, f"{prefix}.affine", G.w_dim, in_ch),
             "weight": _conv(sd, f"{prefix}.weight", out_ch, in_ch, k),
             "bias": sd.take(f"{prefix}.bias", (out_ch,))}
        if G.use_noise:
            p["noise_strength"] = sd.take(f"{prefix}.noise_strength", ())
            buffers[name] = {"noise_const": sd.take(f"{prefix}.noise_const", (res, res))}
        params[name] = p
        sd.check_filter(f"{prefix}.resample_filter", f_buffer)

    resolutions = block_resolutions(G.img_resolution)
    for res in resolutions:
        b = f"synthesis.b{res}"
        out_ch = block_channels(res, G.channel_base, G.channel_max)
        params: dict = {}
        buffers: dict = {}
        sd.check_filter(f"{b}.resample_filter", f_buffer)
        if res == 4:
            params["const"] = np.ascontiguousarray(sd.take(f"{b}.const", (out_ch, res, res)).transpose(1, 2, 0))
        else:
            in_ch = block_channels(res // 2, G.channel_base, G.channel_max)
            layer(f"{b}.conv0", in_ch, out_ch, res, params, buffers, "conv0")
            if G.architecture == "resnet":
                params["skip"] = {"weight": _conv(sd, f"{b}.skip.weight", out_ch, in_ch, 1)}
                sd.check_filter(f"{b}.skip.resample_filter", f_buffer)
        layer(f"{b}.conv1", out_ch, out_ch, res, params, buffers, "conv1")
        if res == G.img_resolution or G.architecture == "skip":
            params["torgb"] = {"affine": _dense(sd, f"{b}.torgb.affine", G.w_dim, out_ch),
                               "weight": _conv(sd, f"{b}.torgb.weight", G.img_channels, out_ch, 1),
                               "bias": sd.take(f"{b}.torgb.bias", (G.img_channels,))}
        synthesis[f"b{res}"] = params
        if buffers:
            synthesis_buffers[f"b{res}"] = buffers
    sd.finish()

    variables = {"params": {"mapping": mapping, "synthesis": synthesis}, "ema": ema}
    if synthesis_buffers:
        variables["buffers"] = {"synthesis": synthesis_buffers}
    return G, variables


__all__ = ["ConversionError", "convert_stylegan2_generator"]
