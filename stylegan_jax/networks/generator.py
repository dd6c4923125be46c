"""The one interface every generator implements, so that callers never ask which generator they hold.

A generator is an unbound Flax module with:

- fields ``z_dim``, ``c_dim``, ``w_dim``, ``img_resolution``, ``img_channels`` and the property ``num_ws``;
- ``map(z, c, truncation_psi, truncation_cutoff, update_emas) -> ws [N, num_ws, w_dim]``;
- ``synthesize(ws, transform=None, update_emas=False, noise_mode='random') -> NCHW images`` and
  ``__call__(z, c, truncation_psi, truncation_cutoff, transform, update_emas, noise_mode)``; generators with noise
  inputs draw ``noise_mode='random'`` noise from the ``'noise'`` rng stream, the others accept and ignore it;
- capability flags: ``has_input_transform`` (a user transform of the input, StyleGAN3's Fourier features),
  ``has_noise_inputs`` (per-pixel noise, StyleGAN2), ``supports_compute_dtype`` (a lower-precision path);
- ``with_impl(impl)`` / ``with_compute_dtype(dtype)``: the same architecture with another op implementation or
  compute dtype (same variables);
- ``to_config()`` / ``from_config(kwargs, impl)`` (the checkpoint's description) and ``build(cfg, ...)`` (from our
  config names), with ``config_class`` / ``cfg_names`` naming it in checkpoints and configs.

``stylegan_jax.models.GENERATOR_CLASSES`` lists the implementations: a new generator adds its module and one line
there.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

NOISE_MODES = ("random", "const", "none")


def check_noise_mode(noise_mode: str) -> str:
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode {noise_mode!r} not in {NOISE_MODES}")
    return noise_mode


class GeneratorInterface(nn.Module):
    """Base of every generator module: the shared methods of the interface (see the module docstring).

    Subclasses set up ``self.mapping`` (z, c -> ws) and implement ``synthesize``, ``num_ws`` and the config
    methods.
    """

    config_class: ClassVar[str]                 # Name of the class in checkpoint configs, e.g. 'stylegan3.Generator'.
    cfg_names: ClassVar[tuple[str, ...]]        # Values of config `model.cfg` that build this class.
    has_input_transform: ClassVar[bool]         # Does synthesize() take a user transform of its input?
    supports_compute_dtype: ClassVar[bool]      # Does with_compute_dtype() change the computation?

    def map(self, z: jnp.ndarray, c: jnp.ndarray | None = None, truncation_psi: float | jnp.ndarray = 1.0,
            truncation_cutoff: int | None = None, update_emas: bool = False) -> jnp.ndarray:
        """z, c -> ws ``[N, num_ws, w_dim]``."""
        return self.mapping(z, c, truncation_psi, truncation_cutoff, update_emas)

    def __call__(self, z: jnp.ndarray, c: jnp.ndarray | None = None, truncation_psi: float | jnp.ndarray = 1.0,
                 truncation_cutoff: int | None = None, transform: jnp.ndarray | None = None,
                 update_emas: bool = False, noise_mode: str = "random") -> jnp.ndarray:
        ws = self.map(z, c, truncation_psi, truncation_cutoff, update_emas)
        return self.synthesize(ws, transform, update_emas, noise_mode)

    def synthesize(self, ws: jnp.ndarray, transform: jnp.ndarray | None = None, update_emas: bool = False,
                   noise_mode: str = "random") -> jnp.ndarray:
        raise NotImplementedError

    @property
    def has_noise_inputs(self) -> bool:
        """Per-pixel noise inputs (then ``noise_mode`` matters)."""
        return False

    @property
    def variable_collections(self) -> tuple[str, ...]:
        """The variable collections a checkpoint of this generator must hold."""
        return ("params", "ema", "buffers")

    def check_transform(self, transform: Any) -> None:
        """Refuse a user transform on a generator without an input transform."""
        if transform is not None and not self.has_input_transform:
            raise ValueError(f"{type(self).__name__} has no input transform (translate/rotate are StyleGAN3 "
                             "features)")

    def with_impl(self, impl: str) -> GeneratorInterface:
        return self

    def with_compute_dtype(self, dtype: Any) -> GeneratorInterface:
        return self


__all__ = ["NOISE_MODES", "GeneratorInterface", "check_noise_mode"]
