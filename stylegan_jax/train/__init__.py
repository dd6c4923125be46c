"""Training: the train state (``state``), the compiled data-parallel step (``step``), the loop (``loop``) and the
``stylegan-jax train`` command (``cli``).

The public names below are imported lazily, so that ``import stylegan_jax.train.cli`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> submodule defining it.
_EXPORTS = {
    "TrainConfig": "state",
    "TrainState": "state",
    "create_train_state": "state",
    "make_optimizers": "state",
    "TrainStep": "step",
    "make_mesh": "step",
    "make_train_step": "step",
    "maybe_initialize_distributed": "step",
    "shard_batch": "step",
    "train_step": "step",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
