"""Quickstart with the StyleGAN2 baseline: the same data, size and discriminator as configs/quickstart_discs.py
(the unconditional quickstart of rounds 7-16), the StyleGAN2 generator with the official --cfg=stylegan2 training
options (style mixing, lazy path-length regularization, G lr 0.002, 8 mapping layers), to compare the two in minutes
on a CPU.

Batch (16), D learning rate (the official 0.002), R1 gamma (0.05) and tick length are pinned here to the values
this quickstart was measured with (the StyleGAN3 quickstart moved to batch 4, 2x learning rates and gamma 0.5). Measured
on 2 idle CPU cores (2026-12-06, ~14 s/kimg, 20 kimg in ~5 minutes, 40 kimg in ~11): coloured blobs on the right
gradient backgrounds, at varied positions, and no clean shapes through 40 kimg: shape precision <= 0.03 at every
evaluation (BENCHMARKS.md, "Training quality")."""

from pathlib import Path

from stylegan_jax.config import load_config, use_stylegan2


def get_config():
    c = use_stylegan2(load_config(Path(__file__).with_name("quickstart_discs.py")))
    c.train.batch_size = 16
    c.train.d_lr = 0.002
    c.train.r1_gamma = 0.05  # as measured (the StyleGAN3 quickstart moved to 0.5 in round 6, untried here)
    c.train.total_kimg = 20
    c.log.tick_kimg = 0.5
    c.log.image_kimg = 2.0
    c.log.checkpoint_kimg = 2.0
    c.log.metrics = "shapes"  # use_stylegan2 turns the (equivariance) metrics off; the shapes quality works here
    c.log.metrics_kimg = 2.0
    return c
