"""CelebA 64x64 through tensorflow-datasets with the StyleGAN2 generator: the StyleGAN v1/v2 baseline's own
setting, next to configs/celeba64.py (StyleGAN3-T) with the same data, resolution, channels, batch and gamma,
so the two can be compared run for run. Only the generator and its training options differ (official
--cfg=stylegan2: style mixing 0.9, path-length reg weight 2 every 4 iterations, G lr 0.002, 8 mapping layers).

Prepare once (this downloads, so do it outside training):  tfds build celeb_a --data_dir ~/tfds
then train with --config.data.data_dir=~/tfds."""

from pathlib import Path

from stylegan_jax.config import load_config, use_stylegan2


def get_config():
    return use_stylegan2(load_config(Path(__file__).with_name("celeba64.py")))
