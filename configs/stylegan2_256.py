"""The StyleGAN2 baseline at 256x256 with the official ``--cfg=stylegan2`` settings (NVlabs/stylegan3 train.py):
learned-constant generator with noise inputs and skip ToRGB, 8-layer mapping, z = w = 512, G lr 0.002, style
mixing 0.9, lazy path-length regularization (weight 2 every 4 iterations, batch shrink 2), lazy R1 (gamma 2
for 256px, every 16), batch 32, EMA 10 kimg; the same discriminator as StyleGAN3. Set the data with
--config.data.source=folder --config.data.path=/path/to/dataset.zip (or tfds), as for stylegan3_t_256."""

from stylegan_jax.config import base_config, use_stylegan2


def get_config():
    c = use_stylegan2(base_config())
    c.data.resolution = 256
    c.train.r1_gamma = 2.0
    return c
