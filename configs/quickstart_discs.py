"""The quickstart of rounds 7-16 (configs/quickstart.py until round 17): a small unconditional StyleGAN3-T on the
built-in synthetic shapes at 32x32. It draws discs only; kept as the base of configs/quickstart_shapes.py (and through
it of today's quickstart) and of configs/quickstart_stylegan2.py, and to reproduce the figures of those rounds.

Its quality is measured every 2 kimg (stylegan_jax.metrics.shape_quality: metrics.jsonl, images/quality.png).
Measured (2026-12-06/07, 2-core CPU, BENCHMARKS.md "Training quality", rounds 7-13; README command 1 from a fresh
clone: 8 min 2 s in all in round 13 on a fast day, install included, median 15.0 s/kimg; 10 min 18 s in round 12):
blobs and rainbow-coloured crescents at varied positions up to ~16 kimg, then discs; at 28 kimg crisp, shaded discs
of every colour at varied positions and sizes on the right gradient backgrounds. Shape precision (second classifier,
real images ~0.99), rounds 10-13's code: below 0.06 up to 16 kimg, 0.29 at 20, 0.58 at 24 and 0.75 at 28 kimg, all of it
circles. Squares and triangles do not appear, not even with conditional training (G draws discs for every label at
this size and length, round 8), and D separates reals from fakes by the fakes' artifacts rather than by their shape
(benchmarks/discriminator_probe.py). The curve is seed 0's: train.seed 1 and 2 reached 0.48 and 0.67 at 28 kimg (mean
of the three 0.63), and the same seeds with round 9's code (other rounding, same math) 0.80 / 0.49 / 0.44.

Round 14 found why (README, BENCHMARKS.md): within this run D cannot learn what tells the shapes apart. The same
config with every weight's learning rate 5x and the biases' unchanged (train.g_lr=0.025, train.d_lr=0.02,
train.bias_lr_mult=0.2) draws discs, squares and triangles, but needs ~72 kimg for clean ones
(configs/quickstart_shapes.py); round 17 added labels, the class head, a mode-seeking term and a late R1 drop on top of
that (configs/quickstart.py). On round 17's machine (another CPU, AVX-512: other float rounding) this config's seed 0
reached 0.63 at 28 kimg (0.40 / 0.49 / 0.58 at 22 / 24 / 26), discs only.

It is still StyleGAN3-T (Fourier-feature input, alias-free filtered nonlinearities, the official layer schedule
and loss); what differs from the official 256px recipe is chosen for a short CPU run and explained below."""

from stylegan_jax.config import base_config


def get_config():
    c = base_config()
    c.model.z_dim = 64
    c.model.w_dim = 64
    c.model.mapping_layers = 2       # the official StyleGAN3 mapping depth
    c.model.channel_base = 1024
    c.model.channel_max = 32
    # 6 synthesis layers instead of the design's 14 (the official schedule, cutoffs 2 -> 16 over 4 layers plus 2
    # critically sampled ones). At 32px, 9 of the 14 layers ran their nonlinearity on a 2x-oversampled 64px grid
    # (plus margins); 6 layers (with batch 8, round 4) made a kimg about 3x cheaper on a CPU.
    c.model.num_layers = 6
    # Margin 4 instead of the official 10 pixels per side: the layers at sampling rate 16 run on 24x24 instead of
    # 36x36 grids, those at 32 on 40x40 instead of 52x52; the step takes 0.21 instead of 0.31 s (BENCHMARKS.md).
    c.model.margin_size = 4
    # Each w starts with its own translation (std ~0.12 of the frame) and rotation (~8 degrees) of the Fourier
    # features instead of the official identity for all: the reals sit anywhere in the frame, and from the official
    # start G placed every sample at the same spot (from border effects, not through the features' phases).
    c.model.input_transform_init = 0.15
    # Magnitude EMA of each layer's input (its input gain is 1 / sqrt(EMA)): the official beta 0.5 ** (batch / 20000)
    # (the base config's -1; half-life 20 kimg). Rounds 4-7 used a 0.5 kimg half-life for short runs; at batch 4 the
    # official one reaches precision 0.8 at 28 kimg against 0.78 with the short one (0.82 only at 30; rounds 7-8,
    # BENCHMARKS.md).
    c.model.magnitude_ema_beta = -1.0
    c.model.d_channel_base = 1024
    c.model.d_channel_max = 32
    c.data.source = "synthetic"
    c.data.resolution = 32
    # Batch 4 (one minibatch-stddev group of 4): 250 G and D updates per kimg, against 125 at batch 8 (round 6) and
    # 62.5 at batch 16 (the first quickstart). Updates, not images, are what the quickstart is short of: at batch 8
    # the shape precision was 0.33 at 30 kimg, at batch 4 0.82 (round 7, BENCHMARKS.md), for ~1.3x the time per kimg.
    # 28 kimg: near the peak of its curve (0.75 for seed 0, mean 0.63 over seeds 0-2 in round 10; round 7's quickstart
    # peaked at 32 kimg and fell in a longer run).
    c.train.batch_size = 4
    c.train.total_kimg = 28
    # Learning rates 2x the official (G 0.0025, D 0.002): with so few updates, FID in the shape classifier's features
    # at 4 kimg was 644 with these vs 771 with the official ones (same run otherwise).
    c.train.g_lr = 0.005
    c.train.d_lr = 0.004
    # R1 gamma 0.5, 10x the resolution^2 rule (2 * (32 / 256)^2 ~ 0.03): with 0.05, D pulled ahead between 4 and
    # 8 kimg (D loss 1.1 -> 0.5-0.6, G loss ~3) and G collapsed to one colour or one blob for all samples; with 0.5
    # D's loss stays 0.8-1.3 through 30 kimg and the samples keep their colours and positions.
    c.train.r1_gamma = 0.5
    c.train.d_reg_interval = 4
    c.train.ema_rampup = 0.05        # G_ema half-life min(batch * 10 / 32 kimg, 5% of the images so far)
    # No ADA here: in a few kimg D does not get to memorise 10000 synthetic shapes (ADA's p would stay near 0),
    # while the augmentation pipeline would still run on every D input and lengthen both the compile and each step of
    # what is meant to be a few minutes on a CPU. Folder/tfds data gets ADA by default ('auto'); turn it on here
    # with --config.train.augment=ada.
    c.train.augment = "off"
    c.log.tick_kimg = 1.0
    c.log.image_kimg = 2.0
    c.log.checkpoint_kimg = 2.0
    c.log.grid_size = 6
    c.log.metrics = "shapes"         # synthetic-shapes quality of G_ema (no download) ...
    c.log.metrics_kimg = 2.0         # ... every 2 kimg: metrics.jsonl, TensorBoard, images/quality.png
    c.log.metrics_num = 300
    return c
