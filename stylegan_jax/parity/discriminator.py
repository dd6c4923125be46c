"""Parity check for official discriminator fixtures (``d_256.npz``, ``d_64_cond.npz``: ``D_kwargs``, ``in/img``,
``out/logits``): logits (relative, ``rtol``), ``r1_grad`` = d(sum logits)/d(img) and ``r1_penalty`` (relative by
norm, ``grad_rtol``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stylegan_jax.convert.discriminator import convert_discriminator
from stylegan_jax.convert.generator import strip_prefix
from stylegan_jax.losses import r1_grad
from stylegan_jax.networks.discriminator import discriminator_from_official_kwargs
from stylegan_jax.parity.common import DEFAULT_ATOL, DEFAULT_GRAD_RTOL, DEFAULT_RTOL, Fixture, Result, compare


def applies_discriminator(fx: Fixture) -> bool:
    return "D_kwargs" in fx.meta and fx.has("in/img") and fx.has("out/logits")


def check_discriminator(fx: Fixture, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
                        grad_rtol: float = DEFAULT_GRAD_RTOL, impl: str = "fast", **_) -> list[Result]:
    """Logits, R1 gradient and R1 penalty of the official discriminator fixture."""
    del atol, impl  # D has no filtered_lrelu; all its outputs are compared relatively.
    D_kwargs = fx.meta["D_kwargs"]
    D = discriminator_from_official_kwargs(D_kwargs)
    variables = convert_discriminator(strip_prefix(fx.arrays, "D/"), D_kwargs)
    gamma = float(fx.meta.get("r1_gamma", 1.0))

    @jax.jit
    def run(variables, img, c):
        grad, logits = r1_grad(lambda x, c: D.apply(variables, x, c), img, c)
        return logits, grad, jnp.sum(jnp.square(grad), axis=(1, 2, 3)) * (gamma / 2)

    c = fx.get("in/c")
    c = np.zeros((fx.get("in/img").shape[0], 0), np.float32) if c is None else c
    logits, grad, penalty = jax.device_get(run(variables, jnp.asarray(fx.get("in/img")), jnp.asarray(c)))
    results = [compare("D logits", logits, fx.get("out/logits"), rtol, "rel")]
    if fx.has("out/r1_grad"):
        results.append(compare("D r1_grad", grad, fx.get("out/r1_grad"), grad_rtol, "rel"))
    if fx.has("out/r1_penalty"):
        results.append(compare("D r1_penalty", penalty, fx.get("out/r1_penalty"), grad_rtol, "rel"))
    return results


__all__ = ["applies_discriminator", "check_discriminator"]
