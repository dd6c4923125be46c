"""Quickstart: a small class-conditional StyleGAN3-T on the built-in synthetic shapes (circles, squares and triangles
on colour gradients, 32x32), trained on a laptop CPU in about ten minutes.

Its quality is measured every 2 kimg (stylegan_jax.metrics.shape_quality: metrics.jsonl, images/quality.png); the
grids (images/fakes_*.png) hold two rows per class: circles, squares, triangles.

It is StyleGAN3-T (Fourier-feature input, alias-free filtered nonlinearities, the official layer schedule and loss),
sized and tuned for a short CPU run in three steps, each its own config (BENCHMARKS.md "Training quality"):

1. configs/quickstart_discs.py (the quickstart of rounds 7-16): 6 synthesis layers, 32 channels, batch 4, R1 gamma
   0.5, a per-w input transform. It draws discs only: its D does not learn within the run what tells a square from a
   disc (round 14).
2. configs/quickstart_shapes.py: every weight learns 5x faster, the biases do not. D now learns the shapes, and G
   draws all three, but first collapses to discs for every sample and needs ~70 kimg to split into three classes.
3. This config, for the split: the class labels (data.use_labels) with an auxiliary classifier in D
   (train.class_weight=1: D's class head learns the reals' labels, G is asked to draw what the head reads as its
   label), so that each sample is told which shape to draw; a mode-seeking term (train.diversity_weight=1: fakes of
   one class from different latents should differ), without which each class collapsed to one colour on a grey
   background (round 16); and R1 gamma 0.5 -> 0.05 from 30 kimg (train.r1_gamma_final*), which straightens the edges
   and sharpens the corners once the shapes are formed; and (round 19) a G EMA half-life of up to 2.5 kimg instead
   of 1.25: at these learning rates G's own weights still jump from step to step (round 18: its raw samples score
   0.28 where G_ema's score 0.74), and the longer average scored higher in five of six seeds.

Measured: see README "The two commands" and BENCHMARKS.md "Training quality", rounds 17-19."""

from pathlib import Path

from stylegan_jax.config import load_config


def get_config():
    c = load_config(Path(__file__).with_name("quickstart_shapes.py"))
    c.data.use_labels = True
    c.train.class_weight = 1.0       # D's class head on the reals' labels; G's fakes scored against theirs
    c.train.diversity_weight = 1.0   # mode-seeking term over pairs of fakes of one class
    c.train.r1_gamma_final = 0.05    # R1 gamma 0.5 (quickstart_discs.py) up to 30 kimg, then 0.05
    c.train.r1_gamma_final_kimg = 30.0
    c.train.ema_kimg = 2.5           # G_ema half-life min(2.5 kimg, 5% of the images so far); the official 1.25 kimg
    c.train.total_kimg = 56
    return c
