"""Checkpoints on disk (orbax): the full training state, and the model description needed to
rebuild the networks without the config that trained them.

Layout of a checkpoint directory (what ``stylegan-jax train`` writes under ``WORKDIR/checkpoints``
and what ``stylegan-jax convert`` writes)::

    <dir>/<step>/state/...   the state pytree (orbax StandardSave): at least ``G_ema`` =
                             {'params', 'ema', 'buffers'}; training adds G, D, optimizer states,
                             counters and RNG.
    <dir>/<step>/meta/...    JSON: format version, networks' architecture (``generator`` /
                             ``discriminator`` configs), kimg, data position, config used.

orbax writes each step to a temporary directory and renames it when complete, so a run killed
while saving leaves the previous checkpoints intact; ``keep`` bounds how many are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

FORMAT = "stylegan-jax/1"


class CheckpointError(ValueError):
    """A path is not a readable stylegan-jax checkpoint."""


def checkpoint_manager(directory: str | Path, keep: int | None = 3, create: bool = True) -> ocp.CheckpointManager:
    """An orbax manager for ``directory`` with 'state' (pytree) and 'meta' (JSON) items."""
    directory = Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))


def save_checkpoint(directory: str | Path, step: int, state: Any, meta: dict, keep: int | None = 3,
                    manager: ocp.CheckpointManager | None = None) -> Path:
    """Save ``state`` (any pytree; flax structs are stored as their state dicts) and ``meta`` at ``step``.

    Blocks until the checkpoint is committed on disk.
    """
    from flax import serialization

    own = manager is None
    manager = manager or checkpoint_manager(directory, keep=keep)
    tree = serialization.to_state_dict(state)
    meta = {**meta, "format": FORMAT, "step": int(step)}
    manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                    meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()
    if own:
        manager.close()
    return Path(directory).absolute() / str(int(step))


def _resolve(path: str | Path) -> tuple[Path, int]:
    """Accept a workdir, a checkpoints directory, or one step directory; return (manager dir, step)."""
    path = Path(path).absolute()
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint (file or directory not found)")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint directory (a stylegan-jax checkpoint is a directory "
                              "written by 'stylegan-jax train' or 'stylegan-jax convert')")
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if (path / "meta").is_dir() and (path / "state").is_dir() and path.name.isdigit():
        return path.parent, int(path.name)
    steps = sorted(int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit()
                   and (p / "meta").is_dir())
    if not steps:
        raise CheckpointError(f"{path}: contains no stylegan-jax checkpoint steps")
    return path, steps[-1]


def load_checkpoint(path: str | Path, step: int | None = None, target: Any = None,
                    fill_missing: tuple[str, ...] = (), entries: tuple[str, ...] | None = None) -> tuple[dict, Any]:
    """Load ``(meta, state)``. ``state`` is restored into the structure of ``target`` if given
    (arrays placed like ``target``'s leaves), else as nested dicts of arrays. Top-level entries of ``target``
    named in ``fill_missing`` that the checkpoint lacks (fields added since it was written) keep ``target``'s
    values; any other difference in structure is an error. Without ``target``, ``entries`` restores only those
    top-level entries (the others are not read: a generator's ``G_ema`` is ~15% of a training checkpoint);
    one the checkpoint lacks is an error.

    Raises:
      CheckpointError: naming the path and what is wrong (missing, foreign, truncated or corrupt).
    """
    directory, latest = _resolve(path)
    step = latest if step is None else int(step)
    manager = checkpoint_manager(directory, keep=None, create=False)
    try:
        meta = _read_meta(manager, directory, step)
    except CheckpointError:
        manager.close()
        raise
    try:
        if target is not None:
            from flax import serialization

            template = serialization.to_state_dict(target)
            if fill_missing:
                stored = _stored_tree(directory / str(step) / "state")
                absent = {k for k in fill_missing if k in template and k not in stored}
            else:
                absent = set()
            wanted = {k: v for k, v in template.items() if k not in absent}
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, wanted)
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
            state = serialization.from_state_dict(target, {**restored["state"], **{k: template[k] for k in absent}})
        else:
            # Restore onto this process's first device whatever topology saved it (a run on 8 GPUs
            # must load on a laptop), using the shapes and dtypes stored in the checkpoint.
            stored = _stored_tree(directory / str(step) / "state")
            if entries is not None:
                missing = [k for k in entries if k not in stored]
                if missing:
                    raise CheckpointError(f"{directory}/{step}: checkpoint state has no {missing[0]!r} entry "
                                          f"(has {sorted(stored)})")
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), stored)
            restore = ocp.args.StandardRestore(abstract)
            if entries is not None:
                abstract = {k: abstract[k] for k in entries}
                try:  # a subset of the saved tree: the other entries' files are not read
                    restore = ocp.args.PyTreeRestore(item=abstract, partial_restore=True,
                                                     restore_args=ocp.checkpoint_utils.construct_restore_args(abstract))
                except TypeError:  # an orbax without partial restore: read everything, keep what was asked for
                    pass
            state = manager.restore(step, args=ocp.args.Composite(state=restore))["state"]
            if entries is not None:
                state = {k: state[k] for k in entries}
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{directory}/{step}: the state could not be restored ({type(e).__name__}: {e}); "
                              "the checkpoint is truncated, corrupt, or from a different model/config") from e
    finally:
        manager.close()
    return meta, state


def _stored_tree(item_dir: Path) -> Any:
    """Shapes and dtypes of the state pytree saved in ``item_dir`` (``<step>/state``), without reading arrays.

    Asked of the item's handler, not of a ``Checkpointer``: a Checkpointer looks for its own
    ``_CHECKPOINT_METADATA`` file in the item directory, which a CheckpointManager writes one level up, and
    logs "Metadata file does not exist" on every resume."""
    return ocp.StandardCheckpointHandler().metadata(item_dir)


def _read_meta(manager: ocp.CheckpointManager, directory: Path, step: int) -> dict:
    """The checkpoint's JSON metadata, checked to be ours (the caller closes ``manager``)."""
    try:
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # orbax raises many types for unreadable data
        raise CheckpointError(f"{directory}/{step}: unreadable checkpoint metadata ({type(e).__name__}: {e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{directory}/{step}: not a stylegan-jax checkpoint (format {meta.get('format')!r})"
                              if isinstance(meta, dict) else f"{directory}/{step}: foreign checkpoint metadata")
    return meta


def load_checkpoint_meta(path: str | Path, step: int | None = None) -> dict:
    """Only the JSON metadata of a checkpoint (the latest step unless ``step``): networks, kimg, config used."""
    directory, latest = _resolve(path)
    step = latest if step is None else int(step)
    manager = checkpoint_manager(directory, keep=None, create=False)
    try:
        return _read_meta(manager, directory, step)
    finally:
        manager.close()


def load_generator(path: str | Path, step: int | None = None, impl: str = "fast", which: str = "G_ema"):
    """Rebuild the generator saved in a checkpoint: returns ``(G, variables)``.

    ``which`` selects ``'G_ema'`` (default: the weights to sample from) or ``'G'``.
    """
    from stylegan_jax.models import generator_from_config

    meta, state = load_checkpoint(path, step, entries=(which,))
    if "generator" not in meta:
        raise CheckpointError(f"{path}: checkpoint metadata has no generator description")
    G = generator_from_config(meta["generator"], impl=impl)
    variables = jax.tree.map(np.asarray, dict(state[which]))
    for collection in ("params", "ema", "buffers"):
        if collection not in variables:
            raise CheckpointError(f"{path}: {which} lacks the {collection!r} collection")
    return G, variables
