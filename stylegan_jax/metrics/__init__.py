"""Metrics of trained generators. The StyleGAN3 equivariance metrics (EQ-T, EQ-T_frac, EQ-R) are re-exported
here; other metrics live in their own submodules."""

from stylegan_jax.metrics.equivariance import (
    METRICS,
    EquivarianceEvaluator,
    compute_equivariance,
    psnr_from_sums,
)

__all__ = ["METRICS", "EquivarianceEvaluator", "compute_equivariance", "psnr_from_sums"]
