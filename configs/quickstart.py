"""Quickstart: a small StyleGAN3-T on the built-in synthetic shapes at 32x32, trains on a laptop CPU in minutes.

Its quality is measured every kimg (stylegan_jax.metrics.shape_quality: metrics.jsonl, images/quality.png). At
6 kimg its samples are soft coloured blobs on gradient backgrounds, not yet recognisable shapes (shape precision
near 0; real images ~0.99): it shows the whole pipeline working, see BENCHMARKS.md."""

from stylegan_jax.config import base_config


def get_config():
    c = base_config()
    c.model.z_dim = 64
    c.model.w_dim = 64
    c.model.mapping_layers = 2
    c.model.channel_base = 1024
    c.model.channel_max = 32
    c.model.d_channel_base = 1024
    c.model.d_channel_max = 32
    c.data.source = "synthetic"
    c.data.resolution = 32
    c.train.batch_size = 16
    c.train.total_kimg = 6
    c.train.r1_gamma = 0.05          # gamma ~ resolution^2: 2 * (32 / 256)^2 ~ 0.03
    c.train.d_reg_interval = 4
    c.train.ema_rampup = 0.05
    # No ADA here: in 6 kimg D does not get to memorise 10000 synthetic shapes (ADA's p would stay near 0), while
    # the augmentation pipeline would still run on every D input and lengthen both the compile and each step of
    # what is meant to be a few minutes on a CPU. Folder/tfds data gets ADA by default ('auto'); turn it on here
    # with --config.train.augment=ada.
    c.train.augment = "off"
    c.log.tick_kimg = 0.5
    c.log.image_kimg = 1.0
    c.log.checkpoint_kimg = 1.0
    c.log.grid_size = 6
    c.log.metrics = "shapes"         # synthetic-shapes quality of G_ema (no download) ...
    c.log.metrics_kimg = 1.0         # ... every kimg: metrics.jsonl, TensorBoard, images/quality.png
    c.log.metrics_num = 300
    return c
