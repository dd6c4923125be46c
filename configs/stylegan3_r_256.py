"""StyleGAN3-R at 256x256: 1x1 convs, radial filters, doubled channels, D blur fade-in (sigma 10 over
batch * 200 / 32 kimg), official hyperparameters for 256x256 (batch 32, gamma 2)."""

from stylegan_jax.config import stylegan3_config


def get_config():
    return stylegan3_config("r", 256)
