"""The tiny training config the training-command tests share (``test_training``, ``test_training_resume``,
``test_multihost``, ``test_augment``): :func:`stylegan_jax.config.base_config` with the overrides of :data:`TINY`,
applied by :func:`stylegan_jax.config.apply_overrides` (the path ``--config.key=value`` takes on the command line).

A test writes it as a config file for ``stylegan-jax train --config`` with :func:`write_config_file`, changing
what it needs (``{"train.total_kimg": 0.016}``, another data source, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# A 4-layer StyleGAN3-T at 32x32 on 64 synthetic images, batch 4; ticks, grids and checkpoints every 2 steps.
TINY: dict[str, Any] = {
    "model.z_dim": 16,
    "model.w_dim": 16,
    "model.mapping_layers": 2,
    "model.num_layers": 4,  # the design's 14 layers triple the compile time of these runs
    "model.channel_base": 512,
    "model.channel_max": 16,
    "model.d_channel_base": 512,
    "model.d_channel_max": 16,
    "model.mbstd_group_size": 2,
    "data.source": "synthetic",
    "data.resolution": 32,
    "data.synthetic_size": 64,
    "data.prefetch": 2,
    "train.batch_size": 4,
    "train.r1_gamma": 0.05,
    "train.d_reg_interval": 2,
    "log.tick_kimg": 0.008,
    "log.image_kimg": 0.008,
    "log.checkpoint_kimg": 0.008,
    "log.grid_size": 2,
    "log.progress_bar": False,
}

CONFIG_FILE = '''from stylegan_jax.config import apply_overrides, base_config


def get_config():
    return apply_overrides(base_config(), {overrides!r})
'''


def overrides(changes: Mapping[str, Any] | None = None) -> list[str]:
    """:data:`TINY` updated with ``changes``, as ``key=value`` overrides."""
    return [f"{key}={value}" for key, value in {**TINY, **(changes or {})}.items()]


def write_config_file(path: Path, changes: Mapping[str, Any] | None = None) -> Path:
    """A config file at ``path`` whose ``get_config()`` is the tiny config with ``changes``; returns ``path``."""
    path.write_text(CONFIG_FILE.format(overrides=overrides(changes)))
    return path
