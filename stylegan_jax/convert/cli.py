"""``stylegan-jax convert PKL --out CKPT_DIR``: import an official NVIDIA StyleGAN3 or StyleGAN2 network pickle.

The pickle is read by :func:`stylegan_jax.convert.official_pickle.load_official_pickle_bytes`, which never
executes anything from the file (no torch, no ``module_src``, only an allowlist of globals). ``G``, ``G_ema``
and ``D`` are converted to our variables and written as an ordinary checkpoint (step 0)::

    state = {'G': vars, 'G_ema': vars, 'D': {'params': ...}}
    meta  = {'generator': generator_config(G), 'discriminator': {'class': 'stylegan2.Discriminator',
             'official_kwargs': D_kwargs}, 'source': {'pickle': path, 'sha256': ...}, 'training_set_kwargs': ...}

so ``stylegan-jax generate --ckpt CKPT_DIR`` and :func:`stylegan_jax.checkpoint.load_generator` work on it.
With an ``augment_pipe`` in the pickle (a snapshot of an ADA run), its probability ``p`` becomes the state's
``ada_p`` (the train state's name for it) and ``meta['augment']`` records ``p`` and the pipe's official kwargs,
so that resuming from the snapshot keeps its p.

Generators: ``training.networks_stylegan3.Generator`` (StyleGAN3-T and -R) and
``training.networks_stylegan2.Generator`` (StyleGAN2, ``generator_config`` class ``'stylegan2.Generator'``);
:mod:`stylegan_jax.convert.dispatch` picks the converter. ``G`` and ``G_ema`` must be the same class. The
discriminator is ``training.networks_stylegan2.Discriminator`` in both (StyleGAN3 trains with StyleGAN2's).

Everything is read and converted before anything is written, and the checkpoint is written to a staging
directory next to the output and renamed into place, so a bad pickle (unsafe, truncated, foreign) or a failure
half-way leaves no checkpoint behind.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from stylegan_jax.convert.dispatch import GENERATOR_CONVERTERS, official_generator_class
from stylegan_jax.convert.official_pickle import NetworkRecord, OfficialPickle

__all__ = ["ConvertError", "add_arguments", "check_supported", "command", "convert_official_pickle"]

STYLEGAN2_DISCRIMINATOR = "training.networks_stylegan2.Discriminator"

# Positional parameters of the official constructors, for the (rare) pickles whose networks were built with
# positional arguments: the persistence wrapper records them in _init_args, not _init_kwargs.
_G_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")
_D_POSITIONAL = ("c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max",
                 "num_fp16_res", "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs")

# Entries a directory may hold for --force to treat it as a previous checkpoint (orbax step directories, orbax
# temporary step directories, our own staging leftovers), and nothing else.
_CHECKPOINT_ENTRY = re.compile(r"^\d+(\.orbax-checkpoint-tmp-\d+)?$")


class ConvertError(ValueError):
    """The pickle cannot be converted (unsupported network, inconsistent kwargs) or the output is not writable."""


def _jsonable(x: Any) -> Any:
    """Kwargs from a pickle -> JSON data (numpy scalars/arrays to Python, tuples to lists)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if x is None or isinstance(x, bool | int | float | str):
        return x
    raise ConvertError(f"cannot store {type(x).__name__} value {x!r} of the pickle's constructor kwargs as JSON")


def _kwargs(rec: NetworkRecord, positional: tuple[str, ...], what: str) -> dict:
    """The network's constructor kwargs, positional arguments named."""
    if len(rec.init_args) > len(positional):
        raise ConvertError(f"{what}: {len(rec.init_args)} positional constructor arguments, expected at most "
                           f"{len(positional)}")
    named = dict(zip(positional, rec.init_args, strict=False))
    clash = sorted(set(named) & set(rec.init_kwargs))
    if clash:
        raise ConvertError(f"{what}: constructor arguments {clash} given both positionally and by name")
    return {**named, **rec.init_kwargs}


def check_supported(pkl: OfficialPickle) -> str:
    """The official class of the pickle's generators (``G_ema`` and, if present, ``G``), which
    :func:`stylegan_jax.convert.dispatch.convert_official_generator` converts.

    Raises :class:`ConvertError` for anything else in those slots (a discriminator, an unknown class) and when
    ``G`` and ``G_ema`` are of different classes.
    """
    supported = " or ".join(GENERATOR_CONVERTERS)
    classes = {}
    for key in ("G_ema", "G"):
        rec = getattr(pkl, key)
        if rec is None:
            continue
        official = official_generator_class(rec)
        if official is None:
            cls = rec.qualified_class_name or rec.class_name
            raise ConvertError(
                f"{pkl.path}: {key} is a {cls} (architecture {rec.architecture or 'unknown'}), not a generator "
                f"stylegan-jax can convert ({supported})")
        classes[key] = official
    if len(set(classes.values())) > 1:
        raise ConvertError(f"{pkl.path}: G is a {classes['G']} but G_ema a {classes['G_ema']}; a network pickle "
                           "holds two copies of one generator, so this file is inconsistent")
    return classes["G_ema"]


def _check_output(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConvertError(f"{out} exists and is not a directory")
    if not out.is_dir():
        return
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if not force:
        raise ConvertError(f"{out} exists and is not empty ({', '.join(entries[:5])}"
                           f"{' ...' if len(entries) > 5 else ''}); pass --force to replace it")
    # --force replaces the directory wholesale: only do that to something that is clearly a checkpoint, so that
    # a mistyped --out (a home directory, a dataset) is never deleted.
    foreign = [e for e in entries if not _CHECKPOINT_ENTRY.match(e)]
    if foreign:
        raise ConvertError(f"{out} holds files that are not checkpoint steps ({', '.join(foreign[:5])}); "
                           "refusing to replace it even with --force: choose another --out or remove it yourself")


def convert_official_pickle(pkl_path: str | Path, out: str | Path, force: bool = False,
                            skip_discriminator: bool = False, log: Any = print) -> Path:
    """Convert an official StyleGAN3 or StyleGAN2 network pickle into a stylegan-jax checkpoint directory ``out``.

    Returns the written step directory. Raises :class:`OfficialPickleError` (unreadable, truncated, unsafe:
    :class:`~stylegan_jax.convert.official_pickle.UnsafePickleError`), :class:`ConvertError` (unsupported
    network, existing output) or :class:`~stylegan_jax.convert.generator.ConversionError` (weights that do not
    match their kwargs); nothing is written in those cases.
    """
    from stylegan_jax.checkpoint import save_checkpoint
    from stylegan_jax.convert.discriminator import convert_discriminator
    from stylegan_jax.convert.dispatch import convert_official_generator
    from stylegan_jax.convert.official_pickle import load_official_pickle_bytes
    from stylegan_jax.models import generator_config

    pkl_path, out = Path(pkl_path), Path(out).absolute()
    _check_output(out, force)  # before the (possibly long) read, so a refused overwrite fails fast
    try:
        data = pkl_path.read_bytes()
    except OSError as e:
        raise ConvertError(f"{pkl_path}: cannot read ({e.strerror or e})") from None
    sha256 = hashlib.sha256(data).hexdigest()
    pkl = load_official_pickle_bytes(data, source=str(pkl_path))
    official_class = check_supported(pkl)

    G_kwargs = _kwargs(pkl.G_ema, _G_POSITIONAL, "G_ema")
    G_ema, v_ema = convert_official_generator(official_class, pkl.G_ema.state_dict, G_kwargs)
    state: dict[str, Any] = {"G_ema": v_ema}
    config = _jsonable(generator_config(G_ema))
    if pkl.G is not None:
        G, v_G = convert_official_generator(official_class, pkl.G.state_dict, _kwargs(pkl.G, _G_POSITIONAL, "G"))
        if _jsonable(generator_config(G)) != config:
            raise ConvertError(f"{pkl_path}: G and G_ema have different architectures "
                               f"({generator_config(G)} vs {generator_config(G_ema)})")
        state["G"] = v_G
    else:
        log("note: the pickle has no training generator G (only G_ema); the checkpoint can sample but not resume")

    meta: dict[str, Any] = {
        "generator": config,
        "source": {"pickle": str(pkl_path.absolute()), "sha256": sha256, "official_G_kwargs": _jsonable(G_kwargs),
                   "official_G_class": official_class},
        "training_set_kwargs": _jsonable(pkl.training_set_kwargs),
    }
    if pkl.D is not None and not skip_discriminator:
        d_cls = pkl.D.qualified_class_name or pkl.D.class_name
        if d_cls != STYLEGAN2_DISCRIMINATOR:
            raise ConvertError(f"{pkl_path}: D is a {d_cls}, not {STYLEGAN2_DISCRIMINATOR}; pass "
                               "--skip-discriminator to convert the generators only")
        D_kwargs = _jsonable(_kwargs(pkl.D, _D_POSITIONAL, "D"))
        try:
            state["D"] = convert_discriminator(pkl.D.state_dict, D_kwargs)
        except ValueError as e:
            raise ConvertError(f"{pkl_path}: D: {e}\n(pass --skip-discriminator to convert the generators only)"
                               ) from None
        meta["discriminator"] = {"class": "stylegan2.Discriminator", "official_kwargs": D_kwargs}
    elif pkl.D is None:
        log("note: the pickle has no discriminator D; the checkpoint can sample but not resume training")
    if pkl.augment_pipe is not None:
        p = pkl.augment_pipe.state_dict.get("p")
        if p is None or np.size(p) != 1 or not np.isfinite(p).all() or float(np.ravel(p)[0]) < 0:
            raise ConvertError(f"{pkl_path}: augment_pipe has no valid scalar buffer 'p' (got {p!r})")
        state["ada_p"] = np.asarray(p, np.float32).reshape(())
        meta["augment"] = {"p": float(np.ravel(p)[0]), "official_kwargs": _jsonable(pkl.augment_pipe.init_kwargs)}

    # Stage next to the destination (same filesystem, so the final rename is atomic) and swap it in.
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}"
    staging = out.parent / f".{out.name}.converting-{tag}"
    old = out.parent / f".{out.name}.replaced-{tag}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        save_checkpoint(staging, 0, state, meta, keep=None)
        if out.exists():
            _check_output(out, force)  # re-check: something may have appeared while we converted
            out.rename(old)
        try:
            staging.rename(out)
        except OSError:
            if old.exists():
                old.rename(out)  # put the previous checkpoint back rather than lose it
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"converted {', '.join(sorted(state))} of {pkl_path.name} (sha256 {sha256[:12]}...)")
    return out / "0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``stylegan-jax convert``."""
    parser.add_argument("pickle", metavar="PKL", help="official network pickle (network-snapshot-*.pkl, *.pkl)")
    parser.add_argument("--out", required=True, metavar="CKPT_DIR", help="checkpoint directory to write")
    parser.add_argument("--force", action="store_true",
                        help="replace CKPT_DIR if it already holds a checkpoint")
    parser.add_argument("--skip-discriminator", action="store_true",
                        help="do not convert D (the checkpoint can then sample but not resume training)")


def command(args: argparse.Namespace) -> int:
    """Run ``stylegan-jax convert``; errors are reported on stderr with exit status 1."""
    log = lambda msg: print(msg, file=sys.stderr)
    try:
        step_dir = convert_official_pickle(args.pickle, args.out, force=args.force,
                                           skip_discriminator=args.skip_discriminator, log=log)
    except ValueError as e:  # OfficialPickleError, UnsafePickleError, ConvertError, ConversionError, bad kwargs
        print(f"stylegan-jax convert: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"stylegan-jax convert: error: {args.out}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {step_dir.parent}; sample with: stylegan-jax generate --ckpt {step_dir.parent} --seeds 0-7 "
          "--outdir out")
    return 0
