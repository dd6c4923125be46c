"""GAN losses of StyleGAN2/3 training, as pure functions of logits and of a discriminator apply function.

Two levels:

- per-sample terms (``g_nonsaturating_loss``, ``d_logistic_loss``, ``r1_penalty``): shape ``[N]`` or
  ``[N, 1]`` like the logits; the official training loop back-propagates the batch mean of each term;
- the four training phases of the official ``StyleGAN2Loss.accumulate_gradients`` (``g_main_loss``,
  ``g_pl_loss``, ``d_main_loss``, ``d_reg_loss``): scalar batch means as pure functions of the networks'
  variables, the batch and an rng, ready for ``jax.value_and_grad``. They include the options the official
  loss has beyond StyleGAN3's defaults (style mixing, path-length regularization of the StyleGAN2 config,
  the discriminator blur of the R config), off by default.

Generators with noise inputs (StyleGAN2) draw their per-pixel noise from the flax rng stream ``'noise'``;
the phase losses derive it from their ``rng`` (``noise_key``), so a phase is a pure function of its inputs.

``d_apply`` arguments are callables ``d_apply(img, c) -> logits [N, 1]`` with the discriminator's
variables closed over, e.g. ``lambda img, c: D.apply(variables, img, c)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from stylegan_jax.ops.upfirdn2d import upfirdn2d

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


# ----------------------------------------------------------------------------------------------------
# Phase losses of the official StyleGAN2Loss (NVlabs/stylegan3 training/loss.py), as pure functions.
#
# Variables: the generator's are ``{'params', 'ema', 'buffers'}`` (see networks/stylegan3.py); the phase
# losses take ``g_params`` separately from ``g_state = {'ema': ..., 'buffers': ...}`` so that
# ``jax.value_and_grad(..., argnums=<params>)`` differentiates exactly the trainable weights. The
# discriminator's variables are ``{'params': ...}`` only.


@dataclasses.dataclass(frozen=True)
class LossOptions:
    """Hyperparameters of the phase losses (official ``StyleGAN2Loss`` kwargs), hashable and static under jit."""

    r1_gamma: float = 10.0           # R1 weight (official constructor default 10; train.py --gamma sets it).
    style_mixing_prob: float = 0.0   # Mixing regularization probability; official StyleGAN3 0, StyleGAN2 cfg 0.9.
    blur_init_sigma: float = 0.0     # D input blur sigma at kimg 0 (official StyleGAN3-R: 10, T: 0).
    blur_fade_kimg: float = 0.0      # Blur fades linearly to 0 over this many kimg (R: batch * 200 / 32); 0 = no blur.
    pl_weight: float = 0.0           # Path-length regularization weight; official StyleGAN2 cfg 2, StyleGAN3 0.
    pl_batch_shrink: int = 2         # Greg runs on batch // pl_batch_shrink latents (official default 2).
    pl_decay: float = 0.01           # Rate of the running mean of path lengths (official default 0.01).
    augment_spec: Any = None         # ops.augment.AugmentSpec of D's input augmentation (ADA); None = none.
    class_weight: float = 0.0        # Auxiliary-classifier loss weight (AC-GAN; needs D.class_head); 0 = off.
    g_class_weight: float | None = None  # G's class loss weight; None = class_weight (D's is always class_weight).
    diversity_weight: float = 0.0    # Weight of G's mode-seeking term (mode_seeking_loss); 0 = off (official).


def blur_sigma_schedule(opts: LossOptions, cur_nimg: jnp.ndarray | float) -> jnp.ndarray:
    """The official blur schedule ``max(1 - cur_nimg / (blur_fade_kimg * 1e3), 0) * blur_init_sigma`` (0 when
    ``blur_fade_kimg <= 0``). ``cur_nimg`` may be traced (it lives in the train state)."""
    if opts.blur_fade_kimg <= 0 or opts.blur_init_sigma <= 0:
        return jnp.zeros((), jnp.float32)
    frac = 1 - jnp.asarray(cur_nimg, jnp.float32) / (opts.blur_fade_kimg * 1e3)
    return jnp.maximum(frac, 0) * opts.blur_init_sigma


def blur_images(img: jnp.ndarray, sigma: jnp.ndarray | float, max_sigma: float) -> jnp.ndarray:
    """The discriminator-input blur of the official ``run_D`` on NCHW images.

    Official taps: ``2 ** -(x / sigma)^2`` for ``x = -floor(3 sigma) .. floor(3 sigma)``, normalised, applied
    separably with zero padding (same-size output); no blur when ``floor(3 sigma) == 0``. ``sigma`` changes
    every step, so it is traced: the kernel has the static length of ``max_sigma`` (the initial sigma) and
    taps beyond the current ``floor(3 sigma)`` are zero, which computes exactly the shorter official filter
    (the extra taps only ever meet the zero padding or contribute 0).
    """
    size = int(np.floor(max_sigma * 3))
    if size <= 0:
        return img
    sigma = jnp.asarray(sigma, jnp.float32)
    x = jnp.arange(-size, size + 1, dtype=jnp.float32)
    half = jnp.floor(sigma * 3)
    # sigma = 0 would divide by zero; then only the centre tap survives the mask, i.e. the identity.
    safe = jnp.maximum(sigma, 1e-8)
    taps = jnp.where(jnp.abs(x) <= half, jnp.exp2(-jnp.square(x / safe)), 0.0)
    taps = taps / jnp.sum(taps)
    y = upfirdn2d(jnp.transpose(img, (0, 2, 3, 1)), taps, padding=size)
    return jnp.transpose(y, (0, 3, 1, 2)).astype(img.dtype)


def noise_key(rng: jax.Array) -> jax.Array:
    """The key of the generator's ``'noise'`` rng stream in a phase with key ``rng`` (a fold, so the style-mixing
    draws from ``rng`` are the same with and without noise inputs)."""
    return jax.random.fold_in(rng, 0x6E6F6973)  # 'nois'


def _mix_styles(module, ws, z, c, z_mix, mix_cutoff):
    # ws from layer mix_cutoff on come from a second latent, mapped without EMA update.
    if z_mix is None:
        return ws
    ws_mix = module.map(z_mix, c, update_emas=False)
    take_mix = (jnp.arange(ws.shape[1]) >= mix_cutoff)[None, :, None]
    return jnp.where(take_mix, ws_mix, ws)


def _g_map_forward(module, z, c, z_mix, mix_cutoff):
    """Mapping of the official ``run_G`` without EMA update, style mixing included: z -> ws."""
    return _mix_styles(module, module.map(z, c, update_emas=False), z, c, z_mix, mix_cutoff)


def _g_synthesis_forward(module, ws):
    return module.synthesize(ws, update_emas=False)


def _g_train_forward(module, z, c, z_mix, mix_cutoff, update_emas: bool):
    """Generator forward of the official ``run_G`` (called as ``G.apply(..., method=_g_train_forward)``).

    With ``z_mix``, the ws from layer ``mix_cutoff`` on come from a second latent mapped without EMA update
    (style mixing regularization); ``mix_cutoff == num_ws`` mixes nothing.
    """
    ws = _mix_styles(module, module.map(z, c, update_emas=update_emas), z, c, z_mix, mix_cutoff)
    img = module.synthesize(ws, update_emas=update_emas)
    return img, ws


def run_generator(G: nn.Module, g_params: Any, g_state: Mapping[str, Any], z: jnp.ndarray, c: jnp.ndarray,
                  *, update_emas: bool = False, style_mixing_prob: float = 0.0,
                  rng: jax.Array | None = None, mixing: tuple[jnp.ndarray, jnp.ndarray] | None = None,
                  ) -> tuple[jnp.ndarray, jnp.ndarray, dict | None]:
    """``(img NCHW, ws, new_ema)`` as the official ``run_G``; ``new_ema`` is None unless ``update_emas``.

    With ``update_emas`` the mapping moves ``w_avg`` towards this batch's mean w and every synthesis
    layer updates ``magnitude_ema`` from its input *before* reading it for the input gain, so the image
    already depends on the updated statistics (as in the official Dmain phase).
    Style mixing (``style_mixing_prob > 0``, needs ``rng``): with that probability, one cutoff drawn
    uniformly from ``[1, num_ws)`` for the whole batch, ws from the cutoff on come from fresh latents;
    ``mixing=(z_mix, cutoff)`` passes draws the caller made (:func:`style_mixing_draw`) instead.
    Noise inputs (StyleGAN2, ``noise_mode='random'``) draw from ``noise_key(rng)``; such a generator needs ``rng``.
    """
    variables = {"params": g_params, **g_state}
    z_mix, cutoff = style_mixing_draw(G, z, style_mixing_prob, rng) if mixing is None else mixing
    rngs = {"noise": noise_key(rng)} if rng is not None else {}
    if update_emas:
        (img, ws), updated = G.apply(variables, z, c, z_mix, cutoff, True, method=_g_train_forward,
                                     mutable=["ema"], rngs=rngs)
        return img, ws, updated["ema"]
    img, ws = G.apply(variables, z, c, z_mix, cutoff, False, method=_g_train_forward, rngs=rngs)
    return img, ws, None


def style_mixing_draw(G: nn.Module, z: jnp.ndarray, style_mixing_prob: float,
                      rng: jax.Array | None) -> tuple[jnp.ndarray | None, jnp.ndarray | None]:
    """``(z_mix, cutoff)`` of the official ``run_G`` style mixing, or ``(None, None)`` when it is off."""
    if style_mixing_prob <= 0:
        return None, None
    if rng is None:
        raise ValueError("run_generator: style mixing needs an rng")
    k_cut, k_prob, k_z = jax.random.split(rng, 3)
    num_ws = G.num_ws
    cutoff = jax.random.randint(k_cut, (), 1, num_ws)
    cutoff = jnp.where(jax.random.uniform(k_prob, ()) < style_mixing_prob, cutoff, num_ws)
    return jax.random.normal(k_z, z.shape, z.dtype), cutoff


def run_discriminator(D: nn.Module, d_params: Any, img: jnp.ndarray, c: jnp.ndarray,
                      blur_sigma: jnp.ndarray | float = 0.0, max_blur_sigma: float = 0.0, *,
                      augment_spec: Any = None, augment_p: jnp.ndarray | float = 0.0,
                      augment_rng: jax.Array | None = None, augment_index: jnp.ndarray | None = None,
                      return_classes: bool = False) -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray]:
    """Logits ``[N, 1]`` of the official ``run_D``: optional input blur, then (with ``augment_spec``) the
    augmentation pipeline at probability ``augment_p`` with draws from ``augment_rng`` (sample ``i`` from
    ``fold_in(augment_rng, augment_index[i])``, default ``arange(N)``), then D. ``return_classes``: ``(logits,
    class_logits)`` from a D with ``class_head``."""
    img = blur_images(img, blur_sigma, max_blur_sigma)
    if augment_spec is not None:
        from stylegan_jax.ops.augment import augment

        if augment_rng is None:
            raise ValueError("run_discriminator: augmentation needs an augment_rng")
        img = augment(img, augment_p, augment_rng, augment_spec, sample_index=augment_index)
    return D.apply({"params": d_params}, img, c, return_classes=return_classes)


def class_cross_entropy(class_logits: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    """Per-sample cross-entropy ``-sum(c * log_softmax(class_logits))`` of the auxiliary class head against the
    labels ``c [N, c_dim]`` (one-hot, or any distribution over the classes)."""
    if class_logits.shape != c.shape:
        raise ValueError(f"class_cross_entropy: class logits {class_logits.shape} and labels {c.shape} differ")
    return -jnp.sum(c.astype(jnp.float32) * jax.nn.log_softmax(class_logits.astype(jnp.float32), axis=-1), axis=-1)


def mode_seeking_loss(img: jnp.ndarray, z: jnp.ndarray, c: jnp.ndarray, eps: float = 1e-5) -> jnp.ndarray:
    """Mode-seeking term (Mao et al. 2019, "Mode Seeking GANs"): ``mean over pairs of 1 / (d_img / d_z + eps)``
    with ``d_img`` the mean absolute difference of two fakes and ``d_z`` that of their latents, over every pair
    ``i < j`` of the batch whose labels agree (``c_i . c_j``; all pairs when unconditional). Small when fakes
    from different latents differ, large when G draws the same image for many latents: it penalises a collapse,
    for a conditional G one within a class, which neither D's realness nor its class head sees. 0 when no pair
    shares a label."""
    n = img.shape[0]
    if z.shape[0] != n or c.shape[0] != n:
        raise ValueError(f"mode_seeking_loss: {n} images, {z.shape[0]} latents, {c.shape[0]} labels")
    i, j = jnp.triu_indices(n, k=1)
    x = img.astype(jnp.float32).reshape(n, -1)
    d_img = jnp.mean(jnp.abs(x[i] - x[j]), axis=1)
    d_z = jnp.mean(jnp.abs(z[i].astype(jnp.float32) - z[j].astype(jnp.float32)), axis=1)
    same = jnp.ones_like(d_z) if c.shape[1] == 0 else jnp.sum(c[i].astype(jnp.float32) * c[j], axis=1)
    terms = 1.0 / (d_img / jnp.maximum(d_z, 1e-12) + eps)  # (two equal latents: a huge term, not a NaN)
    return jnp.sum(same * terms) / jnp.maximum(jnp.sum(same), 1.0)


def _augment_kwargs(opts: LossOptions, augment_p: jnp.ndarray | float, augment_rng: jax.Array | None,
                    which: int, index: jnp.ndarray | None = None) -> dict[str, Any]:
    """run_discriminator's augmentation arguments for the ``which``-th D call of a phase (own draws per call)."""
    if opts.augment_spec is None:
        return {}
    if augment_rng is None:
        raise ValueError("phase losses with LossOptions.augment_spec need an augment_rng")
    return {"augment_spec": opts.augment_spec, "augment_p": augment_p,
            "augment_rng": jax.random.fold_in(augment_rng, which), "augment_index": index}


def g_main_loss(G: nn.Module, D: nn.Module, g_params: Any, d_params: Any, g_state: Mapping[str, Any],
                gen_z: jnp.ndarray, gen_c: jnp.ndarray, *, opts: LossOptions = LossOptions(),
                blur_sigma: jnp.ndarray | float = 0.0, rng: jax.Array | None = None,
                augment_p: jnp.ndarray | float = 0.0, augment_rng: jax.Array | None = None,
                augment_index: jnp.ndarray | None = None, mixing: tuple[jnp.ndarray, jnp.ndarray] | None = None,
                ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Gmain: ``mean(softplus(-D(G(z))))``, differentiable w.r.t. ``g_params`` (argnums=2).

    G runs without EMA update (official ``run_G(gen_z, gen_c)``). With ``opts.augment_spec``, D sees the fakes
    augmented at probability ``augment_p`` (the gradient reaches G through the augmentation; ``augment_index``:
    the samples' indices that key their draws, see :func:`run_discriminator`; ``mixing``: see
    :func:`run_generator`). With ``opts.class_weight > 0`` (AC-GAN, a D with ``class_head``) the loss adds
    ``g_class_weight * mean(cross-entropy(D's class head(G(z, c)), c))`` (``g_class_weight`` None:
    ``class_weight``): G is also asked to draw what the head
    recognises as the label it was given. With ``opts.diversity_weight > 0`` it adds that times
    :func:`mode_seeking_loss` of the fakes. Returns ``(loss, aux)`` with the fake logits in ``aux['fake_logits']``
    (and the class loss in ``aux['loss_class']``, the mode-seeking term in ``aux['loss_diversity']``).
    """
    img, _, _ = run_generator(G, g_params, g_state, gen_z, gen_c, style_mixing_prob=opts.style_mixing_prob, rng=rng,
                              mixing=mixing)
    with_classes = opts.class_weight > 0
    out = run_discriminator(D, d_params, img, gen_c, blur_sigma, opts.blur_init_sigma,
                            **_augment_kwargs(opts, augment_p, augment_rng, 0, augment_index),
                            return_classes=with_classes)
    logits, classes = out if with_classes else (out, None)
    loss = jnp.mean(g_nonsaturating_loss(logits))
    aux = {"fake_logits": logits}
    if with_classes:
        aux["loss_class"] = jnp.mean(class_cross_entropy(classes, gen_c))
        g_weight = opts.class_weight if opts.g_class_weight is None else opts.g_class_weight
        loss = loss + g_weight * aux["loss_class"]
    if opts.diversity_weight > 0:
        aux["loss_diversity"] = mode_seeking_loss(img, gen_z, gen_c)
        loss = loss + opts.diversity_weight * aux["loss_diversity"]
    return loss, aux


def g_pl_loss(G: nn.Module, g_params: Any, g_state: Mapping[str, Any], gen_z: jnp.ndarray, gen_c: jnp.ndarray,
              pl_mean: jnp.ndarray | float, *, opts: LossOptions = LossOptions(), rng: jax.Array,
              ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Greg: the path-length regularizer of the official StyleGAN2 loss, differentiable w.r.t. ``g_params``
    (argnums=1). Without the lazy-regularization gain: the caller multiplies by the interval.

    On the first ``N // pl_batch_shrink`` latents (G run as in ``run_G``: no EMA update, style mixing, random
    noise inputs), with ``y`` a fresh normal image scaled by ``1 / sqrt(H * W)``:

    - ``pl_lengths = sqrt(mean_layers(sum_w (d sum(G(ws) * y) / d ws)^2))`` per sample;
    - ``pl_mean' = pl_mean + pl_decay * (mean(pl_lengths) - pl_mean)`` (the official ``lerp``; it stays in the
      graph, as in the official code, so 1% of the gradient flows through the batch mean);
    - loss ``= pl_weight * mean((pl_lengths - pl_mean')^2)``, a double backward through the synthesis network.

    Returns ``(loss, aux)`` with the per-sample ``pl_penalty`` and ``pl_lengths`` and the new running mean
    ``pl_mean`` (stop-gradient) for the caller to keep. The official running mean is per GPU; ours is over the
    global batch.
    """
    n = max(gen_z.shape[0] // max(int(opts.pl_batch_shrink), 1), 1)
    z, c = gen_z[:n], gen_c[:n]
    k_run, k_pl = jax.random.split(rng)
    variables = {"params": g_params, **g_state}
    z_mix, cutoff = style_mixing_draw(G, z, opts.style_mixing_prob, k_run)
    ws = G.apply(variables, z, c, z_mix, cutoff, method=_g_map_forward)
    rngs = {"noise": noise_key(k_run)}
    img, pullback = jax.vjp(lambda w: G.apply(variables, w, method=_g_synthesis_forward, rngs=rngs), ws)
    pl_noise = jax.random.normal(k_pl, img.shape, jnp.float32) / np.sqrt(img.shape[2] * img.shape[3])
    (pl_grads,) = pullback(pl_noise.astype(img.dtype))
    pl_lengths = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(pl_grads.astype(jnp.float32)), axis=2), axis=1))
    pl_mean = jnp.asarray(pl_mean, jnp.float32)
    new_pl_mean = pl_mean + (jnp.mean(pl_lengths) - pl_mean) * opts.pl_decay
    penalty = jnp.square(pl_lengths - new_pl_mean)
    aux = {"pl_penalty": penalty, "pl_lengths": pl_lengths, "pl_mean": lax.stop_gradient(new_pl_mean)}
    return jnp.mean(penalty) * opts.pl_weight, aux


def d_main_loss(G: nn.Module, D: nn.Module, d_params: Any, g_params: Any, g_state: Mapping[str, Any],
                real: jnp.ndarray, real_c: jnp.ndarray, gen_z: jnp.ndarray, gen_c: jnp.ndarray, *,
                opts: LossOptions = LossOptions(), blur_sigma: jnp.ndarray | float = 0.0,
                rng: jax.Array | None = None, update_emas: bool = True,
                augment_p: jnp.ndarray | float = 0.0, augment_rng: jax.Array | None = None,
                augment_index: jnp.ndarray | None = None, mixing: tuple[jnp.ndarray, jnp.ndarray] | None = None,
                ) -> tuple[jnp.ndarray, tuple[dict[str, jnp.ndarray], dict | None]]:
    """Dmain: ``mean(softplus(D(G(z)))) + mean(softplus(-D(x)))``, differentiable w.r.t. ``d_params`` (argnums=2).

    As in the official phase, G runs with ``update_emas=True`` (unless told otherwise): its images use the
    updated ``magnitude_ema``, and the updated ``ema`` collection is returned for the caller to keep.
    The fake and the real batch go through D separately (the minibatch-stddev groups never mix them), each
    augmented with its own draws when ``opts.augment_spec`` is set (``augment_index``, ``mixing``: as in
    :func:`g_main_loss`).
    With ``opts.class_weight > 0`` (AC-GAN) the loss adds ``class_weight * mean(cross-entropy(D's class head(x),
    real_c))`` on the reals only: the head learns the labels from real images, never from G's attempts (which
    would teach it that G's drawings are the classes they were asked to be).
    Returns ``(loss, (aux, new_g_ema))``; ``aux`` holds ``loss_fake``, ``loss_real`` (batch means), the
    logits (and ``loss_class``).
    """
    img, _, new_ema = run_generator(G, g_params, g_state, gen_z, gen_c, update_emas=update_emas,
                                    style_mixing_prob=opts.style_mixing_prob, rng=rng, mixing=mixing)
    # D's phase never trains G; cutting the graph here keeps the backward pass out of G.
    img = lax.stop_gradient(img)
    with_classes = opts.class_weight > 0
    # Always (logits, class logits or None): one shape for both branches below.
    as_pair = (lambda out: out) if with_classes else (lambda out: (out, None))
    if img.shape == real.shape and img.dtype == real.dtype and gen_c.shape == real_c.shape:
        # One D call over the stacked [fakes, reals] (vmap: D's code is traced and compiled once for both, and
        # the minibatch-stddev groups stay within each batch); the draws of each are its own, as two calls.
        def d_call(x, c, which):
            return as_pair(run_discriminator(D, d_params, x, c, blur_sigma, opts.blur_init_sigma,
                                             **_augment_kwargs(opts, augment_p, augment_rng, which, augment_index),
                                             return_classes=with_classes))

        logits, classes = jax.vmap(d_call)(jnp.stack([img, real]), jnp.stack([gen_c, real_c]), jnp.asarray([1, 2]))
        fake_logits, real_logits = logits[0], logits[1]
        real_classes = None if classes is None else classes[1]
    else:
        fake_logits = run_discriminator(D, d_params, img, gen_c, blur_sigma, opts.blur_init_sigma,
                                        **_augment_kwargs(opts, augment_p, augment_rng, 1, augment_index))
        real_logits, real_classes = as_pair(run_discriminator(
            D, d_params, real, real_c, blur_sigma, opts.blur_init_sigma,
            **_augment_kwargs(opts, augment_p, augment_rng, 2, augment_index), return_classes=with_classes))
    loss_fake = jnp.mean(jax.nn.softplus(fake_logits))
    loss_real = jnp.mean(jax.nn.softplus(-real_logits))
    aux = {"loss_fake": loss_fake, "loss_real": loss_real, "fake_logits": fake_logits, "real_logits": real_logits}
    loss = loss_fake + loss_real
    if with_classes:
        aux["loss_class"] = jnp.mean(class_cross_entropy(real_classes, real_c))
        loss = loss + opts.class_weight * aux["loss_class"]
    return loss, (aux, new_ema)


def d_reg_loss(D: nn.Module, d_params: Any, real: jnp.ndarray, real_c: jnp.ndarray, *,
               opts: LossOptions = LossOptions(), blur_sigma: jnp.ndarray | float = 0.0,
               augment_p: jnp.ndarray | float = 0.0, augment_rng: jax.Array | None = None,
               augment_index: jnp.ndarray | None = None, gamma: jnp.ndarray | float | None = None,
               ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Dreg: R1 on reals, ``mean(gamma / 2 * ||d(sum D(x)) / dx||^2)``, differentiable w.r.t. ``d_params``
    (argnums=1), a double backward. ``gamma``: the R1 weight of this iteration when scheduled (traced); None =
    ``opts.r1_gamma``. Without the lazy-regularization gain: the caller multiplies by the
    interval. The gradient is taken w.r.t. the real image before blur and augmentation (both are part of
    ``run_D``, as in the official phase).
    Returns ``(loss, aux)`` with the raw per-sample penalty ``||grad||^2`` in ``aux['r1_penalty']`` (with a packing
    D, ``pack > 1``: divided by ``pack``, see below).
    """
    aug = _augment_kwargs(opts, augment_p, augment_rng, 3, augment_index)
    d_apply = lambda x, c: run_discriminator(D, d_params, x, c, blur_sigma, opts.blur_init_sigma, **aug)
    grad, logits = r1_grad(d_apply, real, real_c)
    penalty = jnp.sum(jnp.square(grad), axis=tuple(range(1, grad.ndim)))
    pack = getattr(D, "pack", 1)
    if pack > 1:
        # A packing D gives each pack's logit to all its members, so the gradient of the summed logits is
        # pack x the pack's own: dividing the squared norms by pack makes their sample mean the mean over packs
        # of each pack's R1 (the penalty of D as the function of a pack it is), not pack^2 / pack = pack x that.
        penalty = penalty / pack
    gamma = opts.r1_gamma if gamma is None else gamma
    return jnp.mean(penalty) * (gamma / 2), {"r1_penalty": penalty, "real_logits": logits}


__all__ = [
    "LossOptions",
    "blur_images",
    "blur_sigma_schedule",
    "class_cross_entropy",
    "mode_seeking_loss",
    "d_logistic_loss",
    "d_main_loss",
    "d_reg_loss",
    "g_main_loss",
    "g_nonsaturating_loss",
    "g_pl_loss",
    "noise_key",
    "r1_grad",
    "r1_penalty",
    "r1_penalty_from_grad",
    "run_discriminator",
    "run_generator",
    "style_mixing_draw",
]
