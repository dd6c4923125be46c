"""The training step: one official StyleGAN2/3 iteration as a pure, jit-compiled, data-parallel function.

Order of one iteration (NVlabs/stylegan3 ``training/training_loop.py`` with ``training/loss.py``; StyleGAN3
has no G regularization, so its G phase is ``Gboth`` = ``Gmain``; the StyleGAN2 config adds lazy Greg):

1. **Gmain**: ``mean(softplus(-D(G(z1))))``, G without EMA update, D at its current weights; G Adam step.
1b. **Greg**, only with path-length regularization (``pl_weight > 0``) and when
   ``iteration % g_reg_interval == 0``: ``pl_weight * mean((pl_lengths - pl_mean)^2)`` on ``batch //
   pl_batch_shrink`` fresh latents (``losses.g_pl_loss``) times ``g_reg_interval`` (the official gain), with
   the G just updated; a second G Adam step; ``pl_mean`` (in the state) moves. With ``g_reg_interval=None``
   the penalty joins Gmain in one update every iteration (official ``Gboth``).
2. **Dmain**: ``mean(softplus(D(G(z2)))) + mean(softplus(-D(x)))`` with the *updated* G, run with
   ``update_emas=True`` (``w_avg`` and every ``magnitude_ema`` move, and the image already uses the new
   ``magnitude_ema``); the updated EMAs become G's; D Adam step.
3. **Dreg**, only when ``iteration % d_reg_interval == 0`` (iterations 0, 16, 32, ...): R1 on the same reals,
   ``gamma / 2 * mean ||dD(x)/dx||^2`` times ``d_reg_interval`` (the official gain), gradient at the D weights
   *after* the Dmain step; a second D Adam step with the same optimizer.
4. **G_ema**: ``ema_beta = 0.5 ** (batch / max(ema_nimg, 1e-8))`` with
   ``ema_nimg = min(ema_kimg * 1000, cur_nimg * ema_rampup)`` (``cur_nimg`` before this batch, so the first
   iteration copies G), params ``G_ema = G + (G_ema - G) * ema_beta``, and G's ``ema``/``buffers``
   collections copied into G_ema.
5. ``cur_nimg += batch``, ``iteration += 1``.
6. **ADA** (``train.augment='ada'``): D sees every image (Gmain fakes, Dmain fakes and reals, Dreg reals)
   through ``ops.augment`` at probability ``p = state.ada_p``, each D call with its own draws; R1 is the gradient
   w.r.t. the real image before augmentation. The signs of the real logits of Dmain and Dreg accumulate in the
   state; after every ``ada_interval``-th iteration (the official ``batch_idx % ada_interval == 0`` after the
   increment) ``p = max(p + sign(mean_sign - ada_target) * batch * ada_interval / (ada_kimg * 1000), 0)`` and the
   accumulator restarts, inside the jitted step. ``'fixed'`` keeps ``p = augment_p``.

Not in the official code, off by default: R1's weight can switch to ``train.r1_gamma_final`` at a kimg
(:func:`r1_gamma_at`), and every Adam update of an iteration can be scaled by :func:`lr_scale_at` (a linear
learning-rate decay between two kimg, ``train.lr_decay_*``).

Each phase draws its own latents (the official ``all_gen_z`` has one slice per phase), and generators with noise
inputs (StyleGAN2) draw fresh per-pixel noise in each phase (``losses.noise_key``). Labels of the fakes:
``batch['gen_c']`` if given, else a random permutation of the batch's labels per phase (the official code
draws them from the dataset's label distribution).

Non-finite values: if any loss, gradient or updated weight of a program is NaN/inf, no part of its update is
applied (every leaf of the returned state equals the input's) and ``metrics['finite']`` is False. For the main
program that means the whole iteration (the Dreg program after it applies nothing either); a non-finite Dreg
alone leaves the main phases' update in place, as the official loop's separate phase steps would. The official
loop instead replaces NaN gradients by 0 and infinities by +-1e5 and carries on.

Programs: :class:`TrainStep` runs an iteration as its main program (:func:`train_step` with ``do_reg=False``:
Gmain, Greg when due, Dmain, G_ema, ADA) and, on Dreg iterations, the Dreg program (:func:`dreg_step`) after it,
so the lazy-R1 iterations add a compile of Dreg alone rather than a second copy of Gmain and Dmain (issue 17:
that was about half of the step's compile time). ``train_step(do_reg=True)`` is the whole iteration as one
program; the two give the same states to float rounding (tests/test_train_step.py).

Parallelism: each program is one ``jax.jit`` over a 1-D ``Mesh`` with axis ``data``; the batch is sharded along it
(``P('data')``), the state replicated (``P()``); XLA inserts the gradient all-reduce. Every mean is over the
*global* batch, so the result does not depend on the number of devices. (The official code instead forms
minibatch-stddev groups within each GPU's slice; ours are formed over the global batch, as the official
single-GPU run with the same batch.)

Mixed precision: ``TrainConfig.bf16`` switches the discriminator's ``num_fp16_res`` highest-resolution blocks
to bfloat16 (``Discriminator.fp16_dtype``) and the generator's ``num_fp16_res`` highest-resolution layers
(``G.with_compute_dtype``: StyleGAN3's ``use_fp16`` synthesis layers, StyleGAN2's highest-resolution blocks);
styles, demodulation, noise, EMAs and the optimizer stay float32.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from stylegan_jax.losses import (
    blur_sigma_schedule,
    d_main_loss,
    d_reg_loss,
    g_main_loss,
    g_pl_loss,
    style_mixing_draw,
)
from stylegan_jax.train import distributed as _distributed
from stylegan_jax.train.state import TrainConfig, TrainState, make_optimizers

DATA_AXIS = "data"

# ----------------------------------------------------------------------------------------------------
# Devices, hosts, sharding.


# Starting several processes lives in train.distributed; re-exported here for existing callers.
multi_host_env = _distributed.multi_host_env
maybe_initialize_distributed = _distributed.maybe_initialize_distributed


def make_mesh(devices: Any = None) -> Mesh:
    """A 1-D mesh with axis ``'data'`` over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("make_mesh: no devices")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``'data'``."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Place a batch (any pytree of arrays with the batch on axis 0) sharded over ``'data'``.

    Single process: the arrays are the global batch. Several processes: each passes its own contiguous slice
    (``global_batch / process_count`` rows, in process order) and the global array is assembled with
    ``jax.make_array_from_process_local_data``.
    """
    sharding = data_sharding(mesh)
    if jax.process_count() > 1:
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
    return jax.tree.map(lambda x: jax.device_put(x, sharding), batch)


def as_batch_dict(batch: Any) -> dict[str, Any]:
    """``{'real', 'c'[, 'gen_c']}`` from a dict with those keys (``'c'`` optional: unconditional) or from the
    input pipeline's ``Batch(images, labels)``."""
    if isinstance(batch, Mapping):
        if "real" not in batch:
            raise ValueError(f"batch must have a 'real' entry (NCHW float in [-1, 1]); got keys {sorted(batch)}")
        out = {"real": batch["real"], "c": batch.get("c")}
        if batch.get("gen_c") is not None:
            out["gen_c"] = batch["gen_c"]
    elif hasattr(batch, "images") and hasattr(batch, "labels"):
        out = {"real": batch.images, "c": batch.labels}
    else:
        raise TypeError(f"batch must be a dict with 'real' and 'c' or a Batch(images, labels), got {type(batch)}")
    if out["c"] is None:
        out["c"] = np.zeros((np.shape(out["real"])[0], 0), np.float32)
    return out


# ----------------------------------------------------------------------------------------------------
# The step.


def global_norm(tree: Any) -> jnp.ndarray:
    """sqrt of the sum of squares of every leaf."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def _all_finite(*trees: Any) -> jnp.ndarray:
    leaves = [x for t in trees for x in jax.tree.leaves(t)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _gen_labels(key: jax.Array, batch: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
    if "gen_c" in batch:
        return batch["gen_c"].astype(jnp.float32)
    c = batch["c"].astype(jnp.float32)
    if c.shape[1] == 0:
        return c
    return jax.random.permutation(key, c, axis=0)


def _micro_split(x: jnp.ndarray, rounds: int) -> jnp.ndarray:
    """``[n, ...] -> [rounds, n / rounds, ...]``, micro-batch ``r`` = rows ``r, r + rounds, r + 2 rounds, ...``.

    Strided, not contiguous: with the batch sharded in contiguous blocks over the devices, every micro-batch then
    takes ``n / rounds / devices`` rows of each device (no data moves), and a minibatch-stddev group of the
    micro-batch (members ``m / G`` apart) holds the same samples as in the whole batch (members ``n / G`` apart)."""
    return jnp.swapaxes(x.reshape(x.shape[0] // rounds, rounds, *x.shape[1:]), 0, 1)


def _micro_merge(x: jnp.ndarray) -> jnp.ndarray:
    """Inverse of ``_micro_split`` for per-sample outputs ``[rounds, m, ...] -> [rounds * m, ...]``."""
    return jnp.swapaxes(x, 0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def value_and_grad_micro(loss_fn: Any, params: Any, inputs: Any, rounds: int, mean_keys: tuple[str, ...] = ()):
    """``((loss, aux), grads)`` of ``loss_fn(params, inputs, r) -> (loss, aux)`` over ``rounds`` micro-batches
    (gradient accumulation; ``r`` is the round, None for one round).

    ``inputs`` is a pytree of per-sample arrays (batch on axis 0) cut by :func:`_micro_split`; a ``lax.scan``
    runs the rounds one after the other, so only one micro-batch's activations are alive at a time. The loss
    and gradients are the means over the rounds (the whole batch's mean when the loss is a per-sample mean);
    ``aux`` entries: per-sample arrays are put back in batch order, scalars averaged, and top-level entries
    named in ``mean_keys`` (e.g. EMA collections) averaged leaf by leaf."""
    if rounds == 1:
        return jax.value_and_grad(lambda p: loss_fn(p, inputs, None), has_aux=True)(params)
    micro = jax.tree.map(lambda x: _micro_split(x, rounds), inputs)

    def body(carry, xs):
        r, mb = xs
        (loss, aux), grads = jax.value_and_grad(lambda p: loss_fn(p, mb, r), has_aux=True)(params)
        return jax.tree.map(jnp.add, carry, (loss, grads)), aux

    zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
    (loss, grads), auxs = jax.lax.scan(body, zero, (jnp.arange(rounds), micro))
    mean = lambda x: jnp.mean(x, axis=0)
    aux = {k: jax.tree.map(mean if k in mean_keys else (lambda x: mean(x) if x.ndim == 1 else _micro_merge(x)), v)
           for k, v in auxs.items()}
    return (loss / rounds, aux), jax.tree.map(lambda g: g / rounds, grads)


def r1_gamma_at(tc: TrainConfig, cur_nimg: jnp.ndarray) -> jnp.ndarray | float:
    """The R1 weight of the iteration that starts at ``cur_nimg`` images: ``tc.r1_gamma``, and from
    ``tc.r1_gamma_final_kimg`` on ``tc.r1_gamma_final`` when that schedule is set (a traced value then; without it
    the Python float, so that a run without the schedule compiles exactly as before)."""
    if not tc.r1_gamma_scheduled:
        return float(tc.r1_gamma)
    return jnp.where(cur_nimg >= tc.r1_gamma_final_kimg * 1000, jnp.float32(tc.r1_gamma_final),
                     jnp.float32(tc.r1_gamma))


def lr_scale_at(tc: TrainConfig, cur_nimg: jnp.ndarray) -> jnp.ndarray | None:
    """The learning rates' multiplier in the iteration that starts at ``cur_nimg`` images: 1 up to
    ``tc.lr_decay_start_kimg``, linear to ``tc.lr_final_mult`` at ``tc.lr_decay_end_kimg``, then that. None when no
    decay is set (the updates are left as Adam gives them, so such a run compiles exactly as before)."""
    if not tc.lr_scheduled:
        return None
    start, end = tc.lr_decay_start_kimg * 1000, tc.lr_decay_end_kimg * 1000
    t = jnp.clip((cur_nimg - start) / (end - start), 0.0, 1.0)
    return (1.0 + (tc.lr_final_mult - 1.0) * t).astype(jnp.float32)


def _scaled(updates: Any, lr_scale: jnp.ndarray | None) -> Any:
    """Adam's updates at ``lr_scale`` times its learning rate (an Adam step is linear in its rate)."""
    return updates if lr_scale is None else jax.tree.map(lambda u: u * lr_scale, updates)


def _r1_update(D: nn.Module, tc: TrainConfig, opts: Any, d_tx: Any, d_params: Any, d_opt_state: Any,
               inputs: Mapping[str, jnp.ndarray], aug: Mapping[str, Any], blur_sigma: jnp.ndarray, rounds: int,
               gamma: jnp.ndarray | float, lr_scale: jnp.ndarray | None = None):
    """The Dreg phase: R1 (weight ``gamma``) on ``inputs`` (``real``, ``real_c``, ``index``) times the lazy
    interval (the official gain), and its D Adam step (at ``lr_scale`` times the rate). Returns ``(d_params,
    d_opt_state, loss, aux, grads)``."""
    gain = float(tc.d_reg_interval or 1)

    def reg_loss(p, mb, r):
        loss, aux = d_reg_loss(D, p, mb["real"], mb["real_c"], opts=opts, blur_sigma=blur_sigma, **aug,
                               augment_index=mb["index"], gamma=gamma)
        return loss * gain, aux

    (loss_r, r_aux), r_grads = value_and_grad_micro(reg_loss, d_params, inputs, rounds)
    r_updates, d_opt_state = d_tx.update(r_grads, d_opt_state, d_params)
    return optax.apply_updates(d_params, _scaled(r_updates, lr_scale)), d_opt_state, loss_r, r_aux, r_grads


def _ada_update(tc: TrainConfig, n: int, state: TrainState, real_logits: list[jnp.ndarray], adjust_now: jnp.ndarray):
    """ADA: add the signs of these real logits to the state's accumulator; where ``adjust_now``, move ``p`` by
    ``sign(mean_sign - ada_target) * n * ada_interval / (ada_kimg * 1000)`` (at least 0) and restart the
    accumulator. Returns ``(ada_p, sign_sum, sign_count, ada_stat)``."""
    signs = [jnp.sign(x) for x in real_logits]
    sign_sum = state.ada_sign_sum + sum(jnp.sum(x.astype(jnp.float32)) for x in signs)
    sign_count = state.ada_sign_count + float(sum(x.size for x in signs))
    ada_stat = sign_sum / jnp.maximum(sign_count, 1.0)
    adjust = jnp.sign(ada_stat - tc.ada_target) * (n * tc.ada_interval / (tc.ada_kimg * 1000))
    ada_p = jnp.where(adjust_now, jnp.maximum(state.ada_p + adjust, 0.0), state.ada_p)
    return ada_p, jnp.where(adjust_now, 0.0, sign_sum), jnp.where(adjust_now, 0.0, sign_count), ada_stat


def train_step(G: nn.Module, D: nn.Module, tc: TrainConfig, state: TrainState, batch: Mapping[str, jnp.ndarray],
               rng: jax.Array | None, do_reg: bool, do_g_reg: bool = False, micro_rounds: int = 1,
               dreg_follows: bool = False) -> tuple[TrainState, dict[str, jnp.ndarray]]:
    """One iteration (see the module docstring), a pure function; ``do_reg`` (static) adds the Dreg phase,
    ``do_g_reg`` (static) the Greg phase.

    ``dreg_follows`` (static, with ``do_reg=False``): the iteration's Dreg runs next as its own program
    (:func:`dreg_step`) when ``state.step`` is due for it; ADA then leaves the adjustment of ``p`` to that
    program, which adds Dreg's signs first (the official adjusts after all phases).

    The iteration's randomness is ``fold_in(rng, state.step)`` with ``rng = state.rng`` when None, so a run
    is a function of (seed, data) and resumes exactly from a saved state.

    ``micro_rounds`` (static) > 1 accumulates every phase's gradient over that many micro-batches
    (:func:`value_and_grad_micro`; the official ``--batch-gpu``). G's EMAs (``w_avg``, ``magnitude_ema``) become
    the mean over the rounds of each round's update from the iteration's start: the update of the whole batch's
    statistics (they are affine in them), while each round's images are normalized with its own update, as each
    official GPU does.

    Random draws and the equalities they give. Per-sample draws are made for the whole global batch, or keyed by
    the sample's index in it, never by its device or micro-batch:

    - latents and fake labels of every phase: drawn for the whole batch, then split;
    - style mixing (``style_mixing_prob > 0``): the mixing latents drawn for the whole batch and split, one
      cutoff per phase for the whole batch (the official draws one per GPU batch);
    - augmentation (ADA): sample ``i`` of the global batch draws from ``fold_in(key, i)`` in every D call
      (``ops.augment``'s ``sample_index``), whatever micro-batch and device it is on.

    Hence (float tolerance; the all-reduce sums in another order): **1 device == N devices == N processes** for
    any config and any ``micro_rounds``, since the mesh never changes a draw; and **k micro-batches == one
    batch** when every loss term is a per-sample mean of independent samples: minibatch-stddev groups divide the
    micro-batch (:func:`micro_rounds` checks it; strided micro-batches keep the groups), ADA on or off, style
    mixing on or off, and the images do not depend on the batch statistics (StyleGAN3 with
    ``magnitude_ema_beta=1``; with the default beta each round normalizes with its own update, as each official
    GPU). Not equal to one batch by design, as in the official per-GPU loop: path-length regularization (each
    round regularizes the first ``m // pl_batch_shrink`` samples of its micro-batch, with its own batch mean for
    ``pl_mean``) and StyleGAN2's random noise inputs (per-pixel noise drawn per round, from the round's key).
    """
    rng = state.rng if rng is None else rng
    opts = tc.loss_options()
    g_tx, d_tx = make_optimizers(tc)
    key = jax.random.fold_in(rng, state.step)
    k_gz, k_gc, k_gmix, k_dz, k_dc, k_dmix = jax.random.split(key, 6)
    # Augmentation draws: a fold, so the other phases' draws are those of a run without augmentation.
    aug = {"augment_p": state.ada_p, "augment_rng": jax.random.fold_in(key, 0x41756721)}  # 'Aug!'
    real = batch["real"].astype(jnp.float32)
    real_c = batch["c"].astype(jnp.float32)
    n = real.shape[0]
    cur_nimg = state.nimg.astype(jnp.float32)
    blur_sigma = blur_sigma_schedule(opts, cur_nimg)
    r1_gamma = r1_gamma_at(tc, cur_nimg)
    lr_scale = lr_scale_at(tc, cur_nimg)
    g_state = {k: v for k, v in state.G.items() if k != "params"}
    g_params, d_params = state.G["params"], state.D["params"]
    finite_terms: list[Any] = []

    rounds = int(micro_rounds)
    rkey = lambda k, r: k if r is None else jax.random.fold_in(k, r)  # a phase's own draws in round r
    # Each sample's index in the global batch travels with it through the micro-batch split: its augmentation
    # draws are keyed by it (not by the round or the device).
    index = jnp.arange(n, dtype=jnp.uint32)
    raug = lambda mb: {**aug, "augment_index": mb["index"]}
    prob = opts.style_mixing_prob

    def mixing_in(k, z):
        """Style-mixing draws for the whole batch: (per-sample inputs, the cutoff) of ``style_mixing_draw``."""
        z_mix, cutoff = style_mixing_draw(G, z, prob, k)
        return ({} if z_mix is None else {"z_mix": z_mix}), cutoff

    mix = lambda mb, cutoff: None if cutoff is None else (mb["z_mix"], cutoff)

    # The key of Greg: a fold, so the draws of the other phases are those of a run without path-length reg.
    k_greg = jax.random.fold_in(key, 0x47726567)  # 'Greg'
    g_both = do_g_reg and tc.g_reg_interval is None
    # Greg's own latents and labels (the official all_gen_z / all_gen_c slice of the phase).
    k_plz, k_plc, k_plrun = jax.random.split(k_greg, 3)
    pl_in = ({"pl_z": jax.random.normal(k_plz, (n, G.z_dim), jnp.float32), "pl_c": _gen_labels(k_plc, batch)}
             if do_g_reg else {})

    def pl_loss(p, mb, r):
        return g_pl_loss(G, p, g_state, mb["pl_z"], mb["pl_c"], state.pl_mean, opts=opts, rng=rkey(k_plrun, r))

    # Gmain (official Gboth when the path-length penalty is not lazy).
    gen_z = jax.random.normal(k_gz, (n, G.z_dim), jnp.float32)
    gen_c = _gen_labels(k_gc, batch)
    g_mix, g_cutoff = mixing_in(k_gmix, gen_z)

    def g_loss(p, mb, r):
        loss, aux = g_main_loss(G, D, p, d_params, g_state, mb["z"], mb["c"], opts=opts, blur_sigma=blur_sigma,
                                rng=rkey(k_gmix, r), mixing=mix(mb, g_cutoff), **raug(mb))
        if g_both:
            loss_pl, pl_aux = pl_loss(p, mb, r)
            return loss + loss_pl, {**aux, "loss_main": loss, **pl_aux}
        return loss, {**aux, "loss_main": loss}

    g_in = {"z": gen_z, "c": gen_c, "index": index, **g_mix, **(pl_in if g_both else {})}
    (_, g_aux), g_grads = value_and_grad_micro(g_loss, g_params, g_in, rounds)
    loss_g = g_aux["loss_main"]
    g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, g_params)
    g_params = optax.apply_updates(g_params, _scaled(g_updates, lr_scale))
    finite_terms += [loss_g, g_grads]

    # Greg (lazy path-length reg), a second G update with the same Adam.
    pl_mean, last_pl = state.pl_mean, state.last_pl_penalty
    if do_g_reg:
        if g_both:
            pl_aux = g_aux
        else:
            gain = float(tc.g_reg_interval)  # official: the phase loss times its interval

            def reg_loss_g(p, mb, r):
                loss, aux = pl_loss(p, mb, r)
                return loss * gain, aux

            (loss_pl, pl_aux), pl_grads = value_and_grad_micro(reg_loss_g, g_params, pl_in, rounds)
            pl_updates, g_opt_state = g_tx.update(pl_grads, g_opt_state, g_params)
            g_params = optax.apply_updates(g_params, _scaled(pl_updates, lr_scale))
            finite_terms += [loss_pl, pl_grads]
        pl_mean = pl_aux["pl_mean"]
        last_pl = jnp.mean(pl_aux["pl_penalty"])
        finite_terms += [pl_mean, last_pl]

    # Dmain (with the G just updated; G's EMAs move).
    gen_z = jax.random.normal(k_dz, (n, G.z_dim), jnp.float32)
    gen_c = _gen_labels(k_dc, batch)
    d_mix, d_cutoff = mixing_in(k_dmix, gen_z)

    def d_loss(p, mb, r):
        loss, (aux, ema) = d_main_loss(G, D, p, g_params, g_state, mb["real"], mb["real_c"], mb["z"], mb["c"],
                                       opts=opts, blur_sigma=blur_sigma, rng=rkey(k_dmix, r), update_emas=True,
                                       mixing=mix(mb, d_cutoff), **raug(mb))
        return loss, {"d": aux, "ema": ema}

    d_in = {"real": real, "real_c": real_c, "z": gen_z, "c": gen_c, "index": index, **d_mix}
    (loss_d, d_out), d_grads = value_and_grad_micro(d_loss, d_params, d_in, rounds, mean_keys=("ema",))
    d_aux, g_ema_coll = d_out["d"], d_out["ema"]
    d_updates, d_opt_state = d_tx.update(d_grads, state.d_opt_state, d_params)
    d_params = optax.apply_updates(d_params, _scaled(d_updates, lr_scale))
    g_state = {**g_state, "ema": g_ema_coll}

    # Dreg (lazy R1), a second D update with the same Adam.
    finite_terms += [loss_d, d_grads]
    last_r1, last_r1_grad_norm = state.last_r1, state.last_r1_grad_norm
    if do_reg:
        r_in = {"real": real, "real_c": real_c, "index": index}
        d_params, d_opt_state, loss_r, r_aux, r_grads = _r1_update(D, tc, opts, d_tx, d_params, d_opt_state, r_in,
                                                                    aug, blur_sigma, rounds, r1_gamma, lr_scale)
        last_r1 = jnp.mean(r_aux["r1_penalty"])
        last_r1_grad_norm = global_norm(r_grads)
        finite_terms += [loss_r, r_grads]

    # ADA: accumulate the signs of the real logits (official Loss/signs/real of Dmain and Dreg), adjust p.
    ada_p, sign_sum, sign_count = state.ada_p, state.ada_sign_sum, state.ada_sign_count
    if tc.augment == "ada":
        adjust_now = (state.step + 1) % tc.ada_interval == 0
        if dreg_follows:
            adjust_now = adjust_now & ~_dreg_due(tc, state.step)
        logits = [d_aux["real_logits"]] + ([r_aux["real_logits"]] if do_reg else [])
        ada_p, sign_sum, sign_count, ada_stat = _ada_update(tc, n, state, logits, adjust_now)

    # G_ema.
    ema_nimg = tc.resolved_ema_kimg * 1000
    if tc.ema_rampup is not None:
        ema_nimg = jnp.minimum(ema_nimg, cur_nimg * tc.ema_rampup)
    ema_beta = jnp.asarray(0.5, jnp.float32) ** (n / jnp.maximum(ema_nimg, 1e-8))
    ema_params = jax.tree.map(lambda p, e: p + (e - p) * ema_beta, g_params, state.G_ema["params"])
    g_vars = {"params": g_params, **g_state}
    g_ema_vars = {"params": ema_params, **jax.tree.map(jnp.copy, g_state)}

    # The updated weights too: a non-finite weight can hide behind a clamp (conv_clamp) and give finite losses.
    finite = _all_finite(*finite_terms, g_vars, ema_params, d_params)
    one = jnp.ones((), jnp.int32)
    new_state = state.replace(
        step=state.step + one, nimg=state.nimg + n, g_steps=state.g_steps + one, d_steps=state.d_steps + one,
        g_reg_steps=state.g_reg_steps + (one if do_g_reg and not g_both else 0),
        d_reg_steps=state.d_reg_steps + (one if do_reg else 0), G=g_vars, G_ema=g_ema_vars, D={"params": d_params},
        g_opt_state=g_opt_state, d_opt_state=d_opt_state, last_r1=last_r1, last_r1_grad_norm=last_r1_grad_norm,
        pl_mean=pl_mean, last_pl_penalty=last_pl, ada_p=ada_p, ada_sign_sum=sign_sum, ada_sign_count=sign_count)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)

    fake, real_logits = d_aux["fake_logits"], d_aux["real_logits"]
    metrics = {
        "Loss/G": loss_g,                                   # official Loss/G/loss
        "Loss/D": loss_d,                                   # official Loss/D/loss
        "Loss/D/fake": d_aux["loss_fake"],
        "Loss/D/real": d_aux["loss_real"],
        "Loss/r1": last_r1,                                 # official Loss/r1_penalty (raw ||grad||^2)
        "Loss/D/reg": last_r1 * (r1_gamma / 2),             # official Loss/D/reg (without the interval gain)
        "Loss/scores/fake": jnp.mean(fake),
        "Loss/scores/real": jnp.mean(real_logits),
        "Loss/signs/fake": jnp.mean(jnp.sign(fake)),
        "Loss/signs/real": jnp.mean(jnp.sign(real_logits)),
        "Loss/scores/fake_G": jnp.mean(g_aux["fake_logits"]),
        "Grad/G_norm": global_norm(g_grads),
        "Grad/D_norm": global_norm(d_grads),
        "Grad/D_reg_norm": last_r1_grad_norm,
        "Progress/reg": jnp.asarray(1.0 if do_reg else 0.0, jnp.float32),
        "Progress/ema_beta": ema_beta,
        "Progress/blur_sigma": blur_sigma,
        "finite": finite,
    }
    if tc.r1_gamma_scheduled:
        metrics["Progress/r1_gamma"] = jnp.asarray(r1_gamma, jnp.float32)  # this iteration's R1 weight
    if lr_scale is not None:
        metrics["Progress/lr_scale"] = lr_scale             # this iteration's multiplier of both learning rates
    if tc.augmenting:
        metrics["Progress/augment"] = ada_p                 # official Progress/augment (p after this iteration)
    if tc.augment == "ada":
        metrics["Progress/ada_stat"] = ada_stat             # mean sign(D(real)) since the last adjustment
    if tc.class_weight > 0:
        metrics["Loss/G/class"] = g_aux["loss_class"]      # class head's cross-entropy on G's fakes (their labels)
        metrics["Loss/D/class"] = d_aux["loss_class"]      # ... on the reals
    if tc.diversity_weight > 0:
        metrics["Loss/G/diversity"] = g_aux["loss_diversity"]  # mode-seeking term (unweighted)
    if tc.pl_weight > 0:
        metrics.update({
            "Loss/pl_penalty": last_pl,                     # official Loss/pl_penalty (raw (length - mean)^2)
            "Loss/G/reg": last_pl * tc.pl_weight,           # official Loss/G/reg (without the interval gain)
            "Progress/pl_mean": pl_mean,
            "Progress/g_reg": jnp.asarray(1.0 if do_g_reg else 0.0, jnp.float32),
        })
    return new_state, metrics


def _dreg_due(tc: TrainConfig, step: jnp.ndarray) -> jnp.ndarray:
    """Whether iteration ``step`` (traced) runs Dreg: the rule of :meth:`TrainStep.wants_reg`."""
    if tc.r1_gamma == 0:
        return jnp.zeros((), bool)
    return jnp.ones((), bool) if tc.d_reg_interval is None else step % tc.d_reg_interval == 0


def dreg_step(D: nn.Module, tc: TrainConfig, state: TrainState, batch: Mapping[str, jnp.ndarray],
              rng: jax.Array | None, main_finite: jnp.ndarray | bool = True, micro_rounds: int = 1,
              ) -> tuple[TrainState, dict[str, jnp.ndarray]]:
    """The Dreg phase of the iteration ``state.step - 1`` just run by ``train_step(..., do_reg=False,
    dreg_follows=True)``, as its own pure function: R1 on the same reals with the same draws, a second D Adam
    step, and (ADA) the signs of its real logits and the adjustment of ``p`` that the main program deferred.

    ``train_step(do_reg=False, dreg_follows=True)`` followed by this equals ``train_step(do_reg=True)`` up to
    float rounding; as two programs, an iteration with Dreg compiles no second copy of Gmain and Dmain (the
    official runs the phases one after the other too). ``main_finite``: the main program's ``metrics['finite']``;
    when False that program applied nothing (``state`` is the previous iteration's) and neither does this one.
    Non-finite values: if the R1 loss, its gradient or the updated D is NaN/inf, this phase is not applied (the
    main phase's update stays) and ``metrics['finite']`` is False."""
    rng = state.rng if rng is None else rng
    opts = tc.loss_options()
    _, d_tx = make_optimizers(tc)
    iteration = state.step - 1
    key = jax.random.fold_in(rng, iteration)
    aug = {"augment_p": state.ada_p, "augment_rng": jax.random.fold_in(key, 0x41756721)}  # as train_step's
    real = batch["real"].astype(jnp.float32)
    real_c = batch["c"].astype(jnp.float32)
    n = real.shape[0]
    cur_nimg = (state.nimg - n).astype(jnp.float32)  # cur_nimg of that iteration
    blur_sigma = blur_sigma_schedule(opts, cur_nimg)
    r1_gamma = r1_gamma_at(tc, cur_nimg)
    r_in = {"real": real, "real_c": real_c, "index": jnp.arange(n, dtype=jnp.uint32)}
    d_params, d_opt_state, loss_r, r_aux, r_grads = _r1_update(D, tc, opts, d_tx, state.D["params"],
                                                                state.d_opt_state, r_in, aug, blur_sigma,
                                                                int(micro_rounds), r1_gamma,
                                                                lr_scale_at(tc, cur_nimg))
    last_r1 = jnp.mean(r_aux["r1_penalty"])
    last_r1_grad_norm = global_norm(r_grads)

    ada_p, sign_sum, sign_count = state.ada_p, state.ada_sign_sum, state.ada_sign_count
    if tc.augment == "ada":
        # The official batch_idx % ada_interval after the increment: state.step is already past this iteration.
        ada_p, sign_sum, sign_count, ada_stat = _ada_update(tc, n, state, [r_aux["real_logits"]],
                                                            state.step % tc.ada_interval == 0)

    finite = _all_finite(loss_r, r_grads, d_params) & main_finite
    new_state = state.replace(
        D={"params": d_params}, d_opt_state=d_opt_state, d_reg_steps=state.d_reg_steps + 1, last_r1=last_r1,
        last_r1_grad_norm=last_r1_grad_norm, ada_p=ada_p, ada_sign_sum=sign_sum, ada_sign_count=sign_count)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    metrics = {
        "Loss/r1": last_r1,
        "Loss/D/reg": last_r1 * (r1_gamma / 2),
        "Grad/D_reg_norm": last_r1_grad_norm,
        "Progress/reg": jnp.ones((), jnp.float32),
        "finite": finite,
    }
    if tc.augmenting:
        metrics["Progress/augment"] = ada_p
    if tc.augment == "ada":
        metrics["Progress/ada_stat"] = ada_stat
    return new_state, metrics


class TrainStep:
    """The compiled training step: ``state, metrics = step(state, batch, iteration)``.

    An iteration runs one jit-compiled main program (Gmain, Greg when due, Dmain, G_ema, ADA) and, every
    ``d_reg_interval``-th iteration, the Dreg program after it (:func:`dreg_step`: R1 and its D update): the phases
    one after the other, as the official loop runs them, so that the R1 iterations do not compile a second copy
    of Gmain and Dmain. Main programs: one for StyleGAN3; two for StyleGAN2 with lazy path-length
    regularization (with and without Greg, which sits between Gmain and Dmain). Each is compiled once on first
    use and is a pure ``(state, batch, rng) -> (state, metrics)`` (``rng=None``: ``state.rng``). Calling the
    object picks the programs on the Python side from the iteration number (pass it to avoid reading
    ``state.step`` back from the device every call; it must equal ``state.step``, which is checked without a
    device read when a call continues from the state the last one returned), places a host batch on the
    mesh, and uses ``state.rng`` unless ``rng`` is given. The input state is donated (its buffers are reused)
    unless ``donate=False``. ``variant(d_reg, g_reg)`` is the whole iteration as one program instead (the loop
    before round 10; benchmarks compare the two).

    ``batch_per_device`` (default: the config's ``train.batch_per_device``; 0 or None = all of it) splits each
    device's share of the batch into micro-batches of that size, with gradient accumulation inside the step
    (the official ``--batch-gpu``): a global batch of 32 trains on devices that hold 4 samples at a time.
    """

    def __init__(self, G: nn.Module, D: nn.Module, config: Any, mesh: Mesh | None = None, donate: bool = True,
                 batch_per_device: int | None = None):
        if batch_per_device is None and hasattr(config, "train") and hasattr(config.train, "get"):
            batch_per_device = config.train.get("batch_per_device", 0)
        self.config = TrainConfig.from_config(config)
        if self.config.bf16 and getattr(D, "fp16_dtype", None) is None:
            D = D.clone(fp16_dtype=jnp.bfloat16)
        if self.config.bf16 and G.supports_compute_dtype:
            # The generator's use_fp16 layers (the num_fp16_res highest resolutions) compute in bfloat16.
            G = G.with_compute_dtype("bfloat16")
        self.G, self.D = G, D
        self.mesh = make_mesh() if mesh is None else mesh
        self.batch_sharding = data_sharding(self.mesh)
        self.micro_rounds = micro_rounds(self.config.batch_size, self.mesh.size, batch_per_device,
                                         getattr(D, "mbstd_group_size", None), getattr(D, "pack", 1))
        self._donate = donate
        self._variants: dict[tuple[bool, bool], Any] = {}
        self._mains: dict[bool, Any] = {}
        self._dreg: Any = None
        self._compiled: dict[Any, Any] = {}
        # (the step counter array of the last state returned, its iteration): a call that continues from that
        # state with the next iteration needs no device read to check ``iteration``.
        self._last: tuple[Any, int] | None = None

    def _jit(self, fn: Any, extra_args: int = 0):
        rep = replicated(self.mesh)
        return jax.jit(fn, in_shardings=(rep, self.batch_sharding, rep) + (rep,) * extra_args,
                       out_shardings=(rep, rep), donate_argnums=(0,) if self._donate else ())

    def variant(self, d_reg: bool = False, g_reg: bool = False):
        """The whole iteration as one jitted program that runs Dreg if ``d_reg`` and Greg if ``g_reg`` (compiled
        on first call)."""
        key = (bool(d_reg), bool(g_reg))
        if key not in self._variants:
            self._variants[key] = self._jit(functools.partial(
                train_step, self.G, self.D, self.config, micro_rounds=self.micro_rounds, do_reg=key[0],
                do_g_reg=key[1]))
        return self._variants[key]

    def main_program(self, g_reg: bool = False):
        """The jitted main program (Gmain, Greg if ``g_reg``, Dmain, G_ema, ADA) of the iterations ``__call__``
        runs; Dreg, when due, is :meth:`dreg_program` after it."""
        g_reg = bool(g_reg)
        if g_reg not in self._mains:
            self._mains[g_reg] = self._jit(functools.partial(
                train_step, self.G, self.D, self.config, micro_rounds=self.micro_rounds, do_reg=False,
                do_g_reg=g_reg, dreg_follows=True))
        return self._mains[g_reg]

    @property
    def dreg_program(self):
        """The jitted Dreg program ``(state, batch, rng, main_finite) -> (state, metrics)`` (:func:`dreg_step`)."""
        if self._dreg is None:
            self._dreg = self._jit(functools.partial(dreg_step, self.D, self.config,
                                                     micro_rounds=self.micro_rounds), extra_args=1)
        return self._dreg

    def variants_between(self, start: int, end: int) -> list[tuple[bool, bool]]:
        """The (Dreg, Greg) phase combinations iterations ``start .. end - 1`` run."""
        tc = self.config
        period = math.lcm(tc.d_reg_interval or 1, tc.g_reg_interval or 1)
        its = range(start, min(end, start + period))
        return sorted({(self.wants_reg(i), self.wants_g_reg(i)) for i in its})

    def precompile(self, state: TrainState, batch: Any, start: int = 0, end: int | None = None,
                   also: Mapping[str, tuple[Any, tuple]] | None = None) -> dict[str, Any]:
        """Compile, ahead of time, every program iterations ``start .. end - 1`` use (all of them when ``end`` is
        None) for this state and a batch of this shape (arrays or ``jax.ShapeDtypeStruct`` with their sharding);
        later calls with matching arguments run the compiled programs without tracing. A multi-process run
        compiles everything before its first collective this way (see ``train.distributed.sync``).

        ``also``: other programs to compile in the same worker threads, ``{name: (jitted function, arguments)}``
        (the training loop's sample grid); returns ``{name: compiled}`` for them."""
        end = start + 10**9 if end is None else end
        combos = self.variants_between(start, end) if end > start else []
        # (where the compiled program goes, its key there, program, arguments), in the order they are lowered: the
        # other programs and Dreg first (their lowerings are short), so that they compile while the main program is
        # still being traced.
        extra: dict[str, Any] = {}
        todo = [(extra, name, program, args) for name, (program, args) in (also or {}).items()]
        if combos:
            batch = as_batch_dict(batch)
            if isinstance(batch["real"], jax.ShapeDtypeStruct):
                spec = dict(batch)
                if spec["c"].shape[1:] == (0,) and not isinstance(spec["c"], jax.ShapeDtypeStruct):
                    spec["c"] = jax.ShapeDtypeStruct(spec["c"].shape, jnp.float32, sharding=self.batch_sharding)
            else:
                spec = self.place_batch(batch)
            if any(d for d, _ in combos) and "dreg" not in self._compiled:
                flag = jax.ShapeDtypeStruct((), jnp.bool_, sharding=replicated(self.mesh))
                todo.append((self._compiled, "dreg", self.dreg_program, (state, spec, None, flag)))
            for g_reg in sorted({g for _, g in combos}):
                if ("main", g_reg) not in self._compiled:
                    todo.append((self._compiled, ("main", g_reg), self.main_program(g_reg), (state, spec, None)))
        # Tracing and lowering run here, one program after the other (Python); each XLA compile runs in a worker
        # thread as soon as its program is lowered, and two compiles overlap (XLA releases the GIL).
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            futures = [(where, key, pool.submit(program.lower(*args).compile)) for where, key, program, args in todo]
            for where, key, future in futures:
                where[key] = future.result()
        return extra

    @property
    def main(self):
        """Gmain + Dmain as one program."""
        return self.variant(False, False)

    @property
    def reg(self):
        """Gmain + Dmain + Dreg as one program."""
        return self.variant(True, False)

    def wants_reg(self, iteration: int) -> bool:
        """Whether iteration ``iteration`` (0-based) runs Dreg: every ``d_reg_interval``-th, from 0 on."""
        tc = self.config
        if tc.r1_gamma == 0:  # official: the Dreg phase becomes 'none'
            return False
        return tc.d_reg_interval is None or iteration % tc.d_reg_interval == 0

    def wants_g_reg(self, iteration: int) -> bool:
        """Whether iteration ``iteration`` runs the path-length penalty: every ``g_reg_interval``-th from 0 on
        (every iteration, inside Gmain, without lazy reg); never with ``pl_weight == 0`` (official: 'none')."""
        tc = self.config
        if tc.pl_weight == 0:
            return False
        return tc.g_reg_interval is None or iteration % tc.g_reg_interval == 0

    def place_batch(self, batch: Any) -> dict[str, jax.Array]:
        """The batch as a dict of global arrays sharded over ``'data'`` (no copy if already placed)."""
        batch = as_batch_dict(batch)
        placed = {}
        for k, x in batch.items():
            if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(self.batch_sharding, x.ndim):
                placed[k] = x
            elif isinstance(x, jax.Array) and jax.process_count() == 1:
                placed[k] = jax.device_put(x, self.batch_sharding)
            else:
                placed[k] = shard_batch(np.asarray(x, np.float32), self.mesh)
        n = placed["real"].shape[0]
        if n % self.mesh.size:
            raise ValueError(f"global batch {n} is not divisible by the {self.mesh.size} devices of the mesh")
        return placed

    def __call__(self, state: TrainState, batch: Any, iteration: int | None = None,
                 rng: jax.Array | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
        iteration = self._checked_iteration(state, iteration)
        state, metrics = self.run_phases(state, batch, self.wants_reg(iteration), self.wants_g_reg(iteration), rng)
        self._last = (state.step, iteration + 1)
        return state, metrics

    def run_phases(self, state: TrainState, batch: Any, d_reg: bool, g_reg: bool = False,
                   rng: jax.Array | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
        """One iteration with the phases given instead of those of ``state.step``: the main program (with Greg if
        ``g_reg``), then the Dreg program if ``d_reg``. For benchmarks that time one phase combination again and
        again; training calls the object, which takes the phases from the iteration."""
        batch = self.place_batch(batch)
        # rng None (a different pytree, hence its own compilation) reads state.rng inside the step: passing
        # state.rng as an argument too would hand the donated state's key buffer over twice.
        fn = (self._compiled.get(("main", bool(g_reg))) if rng is None else None) or self.main_program(g_reg)
        state, metrics = fn(state, batch, rng)
        if d_reg:
            fn = (self._compiled.get("dreg") if rng is None else None) or self.dreg_program
            state, reg_metrics = fn(state, batch, rng, metrics["finite"])
            metrics = {**metrics, **reg_metrics}  # its finite is the iteration's: it includes the main's
        return state, metrics

    def _checked_iteration(self, state: TrainState, iteration: int | None) -> int:
        """``iteration`` (read from ``state.step`` when None), checked against the state: the programs decide on
        the device from ``state.step`` (R1 keys, ADA's deferral to the Dreg program) what the Python side decides
        from ``iteration`` (whether to run Dreg), so the two must agree. Continuing from the state the last call
        returned with the next iteration is trusted (no device read); any other call reads ``state.step`` once."""
        if iteration is not None:
            iteration = int(iteration)
            if self._last is not None and state.step is self._last[0] and iteration == self._last[1]:
                return iteration
        step = int(jax.device_get(state.step))
        if iteration is not None and iteration != step:
            raise ValueError(f"iteration={iteration} but the state is at step {step}: pass the state's own step "
                             f"(or iteration=None to read it)")
        return step


def micro_rounds(batch_size: int, devices: int, batch_per_device: int | None, mbstd_group: int | None = None,
                 pack: int = 1) -> int:
    """Micro-batches per step for ``batch_per_device`` samples per device at a time (0 / None: one round);
    ``pack``: images per pack of a packing D (its minibatch-stddev groups are groups of packs)."""
    if batch_size % devices:
        raise ValueError(f"batch_size {batch_size} must be divisible by the number of devices ({devices})")
    if batch_size % pack:
        raise ValueError(f"batch_size {batch_size} must be a multiple of model.d_pack={pack} (D scores packs of "
                         f"{pack} images)")
    per_device = batch_size // devices
    if not batch_per_device or batch_per_device >= per_device:
        return 1
    if batch_per_device < 0 or per_device % batch_per_device:
        raise ValueError(f"train.batch_per_device={batch_per_device} must divide the {per_device} samples each of the "
                         f"{devices} devices holds (batch_size {batch_size} / {devices})")
    micro = batch_per_device * devices
    if micro % pack:
        raise ValueError(f"train.batch_per_device={batch_per_device}: a micro-batch of {micro} samples over "
                         f"{devices} devices is not a multiple of model.d_pack={pack}")
    packs = micro // pack
    if mbstd_group and packs % min(mbstd_group, packs):
        in_packs = f" ({packs} packs of model.d_pack={pack})" if pack > 1 else ""
        raise ValueError(f"train.batch_per_device={batch_per_device}: a micro-batch of {micro} samples{in_packs} over "
                         f"{devices} devices is not a multiple of model.mbstd_group_size={mbstd_group}")
    return per_device // batch_per_device


def make_train_step(G: nn.Module, D: nn.Module, config: Any, mesh: Mesh | None = None,
                    donate: bool = True, batch_per_device: int | None = None) -> TrainStep:
    """The compiled step for these networks and hyperparameters (``TrainConfig`` or the project config)."""
    return TrainStep(G, D, config, mesh, donate, batch_per_device)


__all__ = [
    "DATA_AXIS",
    "TrainStep",
    "as_batch_dict",
    "data_sharding",
    "make_mesh",
    "dreg_step",
    "make_train_step",
    "micro_rounds",
    "maybe_initialize_distributed",
    "multi_host_env",
    "replicated",
    "shard_batch",
    "train_step",
    "value_and_grad_micro",
]
