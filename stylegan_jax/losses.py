"""GAN losses of StyleGAN2/3 training, as pure functions of logits and of a discriminator apply function.

All losses are returned per sample (shape ``[N]`` or ``[N, 1]`` like the logits); the official training
loop back-propagates the batch mean of each term, so callers take ``.mean()``.

``d_apply`` arguments are callables ``d_apply(img, c) -> logits [N, 1]`` with the discriminator's
variables closed over, e.g. ``lambda img, c: D.apply(variables, img, c)``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

DApply = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def g_nonsaturating_loss(fake_logits: jnp.ndarray) -> jnp.ndarray:
    """Generator loss ``softplus(-D(G(z)))`` (= -log sigmoid(D(G(z)))), per sample."""
    return jax.nn.softplus(-fake_logits)


def d_logistic_loss(real_logits: jnp.ndarray, fake_logits: jnp.ndarray) -> jnp.ndarray:
    """Discriminator loss ``softplus(D(G(z))) + softplus(-D(x))``, per sample.

    Both logits must have the same shape (same batch size), so that the mean of the sum equals the
    sum of the two means the official loop back-propagates.
    """
    if real_logits.shape != fake_logits.shape:
        raise ValueError(f"d_logistic_loss: real logits {real_logits.shape} and fake logits {fake_logits.shape} "
                         f"differ in shape; average softplus(fake) and softplus(-real) separately instead")
    return jax.nn.softplus(fake_logits) + jax.nn.softplus(-real_logits)


def r1_grad(d_apply: DApply, img: jnp.ndarray, c: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(d(sum of logits)/d(img), logits)`` from a single forward pass.

    Summing over the batch is exact because samples do not interact except through the minibatch
    stddev layer, and there the official code takes the same gradient of the sum.
    The logits are returned so that a combined real-logits + R1 step needs no second forward.
    """
    logits, vjp = jax.vjp(lambda x: d_apply(x, c), img)
    (grad,) = vjp(jnp.ones_like(logits))
    return grad, logits


def r1_penalty_from_grad(grad: jnp.ndarray, gamma: float) -> jnp.ndarray:
    """``gamma / 2 * ||grad||^2`` per sample (summed over every axis but the first)."""
    return jnp.sum(jnp.square(grad), axis=tuple(range(1, grad.ndim))) * (gamma / 2)


def r1_penalty(d_apply: DApply, img: jnp.ndarray, c: jnp.ndarray, gamma: float) -> jnp.ndarray:
    """R1 gradient penalty on real images, ``gamma / 2 * ||d(sum logits)/d(img)||^2``, shape ``[N]``.

    Differentiable w.r.t. the discriminator's parameters (closed over in ``d_apply``): the training
    step takes the gradient of ``r1_penalty(...).mean()`` (a double backward).
    """
    grad, _ = r1_grad(d_apply, img, c)
    return r1_penalty_from_grad(grad, gamma)


__all__ = ["d_logistic_loss", "g_nonsaturating_loss", "r1_grad", "r1_penalty", "r1_penalty_from_grad"]
