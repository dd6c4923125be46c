"""Quickstart with the StyleGAN2 baseline: the same data, size, discriminator, batch and schedule as
configs/quickstart.py, the StyleGAN2 generator with the official --cfg=stylegan2 training options (style mixing,
lazy path-length regularization, G lr 0.002, 8 mapping layers), to compare the two in minutes on a CPU."""

from pathlib import Path

from stylegan_jax.config import load_config, use_stylegan2


def get_config():
    return use_stylegan2(load_config(Path(__file__).with_name("quickstart.py")))
