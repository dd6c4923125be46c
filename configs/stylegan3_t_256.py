"""The design: StyleGAN3-T at 256x256, z = w = 512, 8-layer mapping, official hyperparameters for
256x256 (batch 32, R1 gamma 2, G lr 0.0025, D lr 0.002, EMA 10 kimg). Set the data with
--config.data.source=folder --config.data.path=/path/to/dataset.zip (or tfds)."""

from stylegan_jax.config import stylegan3_config


def get_config():
    return stylegan3_config("t", 256)
