"""StyleGAN3-R at 256x256: 1x1 convs, radial filters, doubled channels, D blur fade-in (sigma 10 over
batch * 200 / 32 kimg), official hyperparameters for 256x256 (batch 32, gamma 2)."""

from stylegan_jax.config import base_config


def get_config():
    c = base_config()
    c.model.cfg = "r"
    c.data.resolution = 256
    c.train.r1_gamma = 2.0
    c.train.blur_init_sigma = 10.0
    return c
