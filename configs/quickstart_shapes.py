"""The unconditional quickstart of rounds 7-16 (configs/quickstart_discs.py) with every weight learning 5x faster
and the biases at that quickstart's rate, run to 72 kimg: the first setting of this project whose samples hold
squares and triangles as well as discs (round 14).

Why: with the equalized learning rate a weight's step is `lr` relative to its scale, ~10x smaller than an
ordinarily initialised layer's, and the quickstart's D does not learn within its run what tells a square from a disc
(benchmarks/shape_learning.py: 57% after 6000 updates on the labels alone), so nothing pushed G away from discs.
5x the learning rates on the weights lets it; the biases, which move by `lr` in absolute terms, stay at the
quickstart's rate (5x on them too kept D at chance in the supervised probe).

Measured (round 14, BENCHMARKS.md "Training quality", 2-core CPU): discs by ~16 kimg (shape precision 0.52 / 0.60 for
seeds 0 / 1), which then break up into rounded triangles and squares (the strict metric calls them "other": 0.05 /
0.14 at 28 kimg); at 72 kimg, seeds 0 / 1 / 2: precision 0.39 / 0.25 / 0.28, each over all three classes (seed 0:
circle / square / triangle 0.22 / 0.06 / 0.11), classifier-space FID 139 / 164 / 260 (the quickstart at 28 kimg:
5117), crisp discs, squares and triangles in seed 0's grid.
~15 s/kimg alone, so ~18 minutes for 72 kimg. Round 15 (BENCHMARKS.md) tried to shorten the stage where the discs
break up (D's downsampling taps, a softer G, the mapping's learning rate, R1 gamma, PacGAN, labels): none did.
Round 17's quickstart (configs/quickstart.py) is this config with labels, D's class head, a mode-seeking term and a
late R1 drop: all three shapes by ~40 kimg.
A mode-seeking term alone (train.diversity_weight=1, no labels) still drew discs only at 20 kimg (round 17)."""

from pathlib import Path

from stylegan_jax.config import load_config


def get_config():
    c = load_config(Path(__file__).with_name("quickstart_discs.py"))
    c.train.g_lr = 0.025             # 5x the quickstart's 0.005 (10x the official)
    c.train.d_lr = 0.02              # 5x the quickstart's 0.004 (10x the official)
    c.train.bias_lr_mult = 0.2       # biases at the quickstart's rates (0.005, 0.004)
    c.train.total_kimg = 72
    return c
