"""CelebA 64x64 (the StyleGAN v1 baseline's dataset) through tensorflow-datasets, StyleGAN3-T.

Prepare once (this downloads, so do it outside training):  tfds build celeb_a --data_dir ~/tfds
then train with --config.data.data_dir=~/tfds. gamma follows the resolution-squared rule of thumb
from the official 128px value (0.5 * (64/128)^2 = 0.125)."""

from stylegan_jax.config import stylegan3_config


def get_config():
    c = stylegan3_config("t", 64)  # batch 32, gamma 0.125
    c.model.channel_base = 16384
    c.model.channel_max = 256
    c.model.d_channel_base = 16384
    c.model.d_channel_max = 256
    c.data.source = "tfds"
    c.data.tfds_name = "celeb_a"
    c.data.tfds_split = "train"
    c.data.image_key = "image"
    c.data.mirror = True
    c.log.image_kimg = 50.0
    c.log.checkpoint_kimg = 50.0
    return c
