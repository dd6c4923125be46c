"""Parity check for official loss fixtures (``loss_32.npz``: ``out/loss_*`` and ``grad/<phase>/<net>/<name>``).

The scalar losses ``Gmain``, ``Dmain``, ``Dreg`` (relative, ``rtol``) and every parameter gradient of every phase
(relative by norm, ``grad_rtol``). Official gradients are mapped onto our parameter tree by the weight converters
themselves (a gradient has its parameter's layout), so a naming or layout mistake there shows up here.

Semantics pinned by the loss fixture (see its ``meta.note``): the scalar losses use the stored G buffers
without EMA update; the Dmain gradients come from the official phase, in which G runs with
``update_emas=True`` (each synthesis layer updates ``magnitude_ema`` from its input, then reads it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stylegan_jax.convert.discriminator import convert_discriminator
from stylegan_jax.convert.generator import convert_generator, strip_prefix
from stylegan_jax.losses import LossOptions, d_main_loss, d_reg_loss, g_main_loss
from stylegan_jax.networks.discriminator import discriminator_from_official_kwargs
from stylegan_jax.parity.common import DEFAULT_ATOL, DEFAULT_GRAD_RTOL, DEFAULT_RTOL, Fixture, Result, compare

# Official state-dict entries of the StyleGAN3 generator that are buffers, not parameters (by last name part).
_G_BUFFER_NAMES = frozenset({"w_avg", "magnitude_ema", "freqs", "phases", "transform", "up_filter", "down_filter"})
PHASES = ("Gmain", "Dmain", "Dreg")


def _is_g_param(name: str) -> bool:
    return name.rsplit(".", 1)[-1] not in _G_BUFFER_NAMES


def _is_d_param(name: str) -> bool:
    return not name.endswith("resample_filter")


def _flatten(tree: Any) -> dict[str, np.ndarray]:
    """Nested dict -> ``{'a.b.c': leaf}``: our parameter paths joined with '.' are the official names."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {".".join(str(getattr(k, "key", k)) for k in path): np.asarray(v) for path, v in flat}




def applies_losses(fx: Fixture) -> bool:
    return "G_kwargs" in fx.meta and "D_kwargs" in fx.meta and (
        fx.has("out/loss_Gmain") or any(k.startswith("grad/") for k in fx.arrays))


def official_gradients(fx_arrays: Mapping[str, np.ndarray], phase: str, net: str) -> dict[str, np.ndarray]:
    """``{official name: gradient}`` of one phase and network (``grad/<phase>/<net>/<name>``)."""
    prefix = f"grad/{phase}/{net}/"
    return {k[len(prefix):]: np.asarray(v) for k, v in fx_arrays.items() if k.startswith(prefix)}


def convert_g_gradients(g_state_dict: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray],
                        G_kwargs: dict, impl: str = "fast") -> tuple[dict, list[str]]:
    """Official G gradients -> our ``params`` tree, through ``convert_generator``.

    The gradients replace the parameters in the official state dict (buffers and filters stay, so the
    converter's consistency checks pass); parameters without a gradient (PyTorch ``grad is None``: no
    path from the loss) become zeros and are returned by name.
    """
    missing = sorted(k for k in g_state_dict if _is_g_param(k) and k not in grads)
    sd = {k: (grads[k] if k in grads else np.zeros_like(v) if _is_g_param(k) else v) for k, v in g_state_dict.items()}
    _, variables = convert_generator(sd, G_kwargs, impl=impl)
    return variables["params"], missing


def convert_d_gradients(d_state_dict: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray],
                        D_kwargs: dict) -> tuple[dict, list[str]]:
    """Official D gradients -> our ``params`` tree, through ``convert_discriminator`` (missing ones are zeros)."""
    missing = sorted(k for k in d_state_dict if _is_d_param(k) and k not in grads)
    sd = {k: (grads[k] if k in grads else np.zeros_like(v) if _is_d_param(k) else v) for k, v in d_state_dict.items()}
    return convert_discriminator(sd, D_kwargs)["params"], missing


def compute_loss_fixture(fx: Fixture, impl: str = "fast") -> dict[str, Any]:
    """Our scalar losses and phase gradients for a loss fixture, in our parameter trees.

    Returns ``{'loss': {phase: scalar}, 'grad': {phase: params tree}}``. ``loss/Dmain`` is evaluated without
    EMA update (the fixture's scalar convention), ``grad/Dmain`` with it (the official phase).
    """
    G_kwargs, D_kwargs = fx.meta["G_kwargs"], fx.meta["D_kwargs"]
    G, g_vars = convert_generator(strip_prefix(fx.arrays, "G/"), G_kwargs, impl=impl)
    D = discriminator_from_official_kwargs(D_kwargs)
    d_params = convert_discriminator(strip_prefix(fx.arrays, "D/"), D_kwargs)["params"]
    opts = LossOptions(r1_gamma=float(fx.meta.get("r1_gamma", 10.0)),
                       blur_init_sigma=float(fx.meta.get("blur_sigma", 0.0)),
                       blur_fade_kimg=1.0 if fx.meta.get("blur_sigma", 0.0) else 0.0)
    blur_sigma = float(fx.meta.get("blur_sigma", 0.0))
    z = jnp.asarray(fx.get("in/z"))
    real = jnp.asarray(fx.get("in/real"))
    c = fx.get("in/c")
    c = jnp.asarray(np.zeros((z.shape[0], 0), np.float32) if c is None else c)
    g_params = g_vars["params"]
    g_state = {k: v for k, v in g_vars.items() if k != "params"}

    @jax.jit
    def run(g_params, g_state, d_params, z, c, real):
        (loss_g, _), grad_g = jax.value_and_grad(g_main_loss, argnums=2, has_aux=True)(
            G, D, g_params, d_params, g_state, z, c, opts=opts, blur_sigma=blur_sigma)
        (_, (_, _)), grad_d = jax.value_and_grad(d_main_loss, argnums=2, has_aux=True)(
            G, D, d_params, g_params, g_state, real, c, z, c, opts=opts, blur_sigma=blur_sigma, update_emas=True)
        loss_d, _ = d_main_loss(G, D, d_params, g_params, g_state, real, c, z, c, opts=opts, blur_sigma=blur_sigma,
                                update_emas=False)
        (loss_r, _), grad_r = jax.value_and_grad(d_reg_loss, argnums=1, has_aux=True)(
            D, d_params, real, c, opts=opts, blur_sigma=blur_sigma)
        return ({"Gmain": loss_g, "Dmain": loss_d, "Dreg": loss_r},
                {"Gmain": grad_g, "Dmain": grad_d, "Dreg": grad_r})

    losses, grads = jax.device_get(run(g_params, g_state, d_params, z, c, real))
    return {"loss": losses, "grad": grads}


def check_losses(fx: Fixture, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
                 grad_rtol: float = DEFAULT_GRAD_RTOL, impl: str = "fast", **_) -> list[Result]:
    """Scalar losses (``rtol``) and every gradient of every phase (``grad_rtol``, relative by norm)."""
    del atol
    ours = compute_loss_fixture(fx, impl=impl)
    results = []
    for phase in PHASES:
        ref = fx.get(f"out/loss_{phase}")
        if ref is not None:
            results.append(compare(f"loss {phase}", ours["loss"][phase], ref, rtol, "rel"))
    g_sd = strip_prefix(fx.arrays, "G/")
    d_sd = strip_prefix(fx.arrays, "D/")
    for phase in PHASES:
        for net in ("G", "D"):
            ref_grads = official_gradients(fx.arrays, phase, net)
            if not ref_grads:
                continue
            if net == "G":
                ref_tree, missing = convert_g_gradients(g_sd, ref_grads, fx.meta["G_kwargs"], impl=impl)
            else:
                ref_tree, missing = convert_d_gradients(d_sd, ref_grads, fx.meta["D_kwargs"])
            ours_flat = _flatten(ours["grad"][phase])
            for name, ref in _flatten(ref_tree).items():
                label = f"grad {phase} {net}.{name}" + (" (official: None)" if name in missing else "")
                results.append(compare(label, ours_flat.get(name, np.full_like(ref, np.nan)), ref,
                                              grad_rtol, "rel"))
    return results


__all__ = ["PHASES", "applies_losses", "check_losses", "compute_loss_fixture", "convert_d_gradients",
           "convert_g_gradients", "official_gradients"]
