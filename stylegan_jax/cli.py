"""``stylegan-jax`` command line: one entry point, one subcommand per job.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``command(args) -> int``; only the module of the subcommand being run is imported, so that
``stylegan-jax parity`` does not pay for TensorFlow or ONNX Runtime imports. The subcommands share
:func:`report_errors` (expected errors as one line on stderr, status 1), :func:`add_checkpoint_arguments`
(``--ckpt --step --network``) and :func:`load_sampler`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import Any

# subcommand -> (module, help)
SUBCOMMANDS = {
    "train": ("stylegan_jax.train.cli", "train a StyleGAN3 model (configs/*.py, --config.key=value overrides)"),
    "generate": ("stylegan_jax.apis.generate", "write images, grids, style mixing or interpolations from a checkpoint"),
    "project": ("stylegan_jax.apis.project_cli", "project an image into the latent space (GAN inversion)"),
    "convert": ("stylegan_jax.convert.cli", "import an official NVIDIA network pickle (nothing in it runs)"),
    "export": ("stylegan_jax.apis.export_onnx", "export the generator of a checkpoint to ONNX"),
    "serve": ("stylegan_jax.apis.server", "HTTP service generating watermarked PNGs from an ONNX model"),
    "visualize": ("stylegan_jax.apis.visualize_cli", "browser visualizer of the checkpoints of a training workdir"),
    "metrics": ("stylegan_jax.metrics.cli", "equivariance metrics (EQ-T, EQ-T frac, EQ-R) and FID/KID of a checkpoint"),
    "shapes-classifier": ("stylegan_jax.metrics.classifier_cli", "train the synthetic-shapes quality classifier"),
    "parity": ("stylegan_jax.parity.cli", "compare our networks with official reference outputs"),
    "augment-preview": ("stylegan_jax.apis.augment_preview_cli", "PNG grid of each ADA augmentation at percentiles"),
}


# Errors a subcommand reports as one line on stderr (status 1) instead of a traceback: bad options and checkpoints
# (CheckpointError is a ValueError), unreadable files, a missing optional extra, a refused computation.
COMMAND_ERRORS = (ValueError, RuntimeError, OSError, ImportError)


def report_errors(name: str, run: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> int:
    """Run ``run(args)`` for ``stylegan-jax NAME``: 0 when it returns, 1 with ``stylegan-jax NAME: error: ...`` on
    stderr when it raises one of :data:`COMMAND_ERRORS` (anything else is a bug and keeps its traceback)."""
    try:
        run(args)
    except COMMAND_ERRORS as e:
        print(f"stylegan-jax {name}: error: {e}", file=sys.stderr)
        return 1
    return 0


def add_checkpoint_arguments(parser: argparse.ArgumentParser, network_help: str = "which generator weights to use",
                             ) -> None:
    """``--ckpt PATH --step N --network {G_ema,G}``: the generator of a checkpoint (generate, project, metrics)."""
    parser.add_argument("--ckpt", required=True, metavar="PATH",
                        help="checkpoint: a training workdir, its checkpoints/ directory, one step directory, or the "
                             "output of 'stylegan-jax convert'")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--network", choices=("G_ema", "G"), default="G_ema", help=f"{network_help} (default: G_ema)")


def load_sampler(args: argparse.Namespace, batch_size: int = 8) -> Any:
    """The :class:`~stylegan_jax.apis.sampling.Sampler` of ``--ckpt --step --network``, with ``--class`` checked
    against the generator: required (and in range) for a conditional one, warned about and cleared for an
    unconditional one. Uses the ``function_cache`` a caller handed to :func:`main`, if any."""
    from stylegan_jax.apis.sampling import Sampler

    s = Sampler.from_checkpoint(args.ckpt, step=args.step, which=args.network, batch_size=batch_size,
                                cache=getattr(args, "function_cache", None))
    print(f"loaded {s} from {args.ckpt}")
    if s.c_dim > 0 and args.class_idx is None:
        raise ValueError(f"the generator is conditional (c_dim={s.c_dim}): pass --class K with K in 0..{s.c_dim - 1}")
    if s.c_dim == 0 and args.class_idx is not None:
        print(f"warning: --class {args.class_idx} ignored: the generator is unconditional", file=sys.stderr)
        args.class_idx = None
    s.labels(1, args.class_idx)  # an out-of-range class is refused before any work
    return s


def main(argv: list[str] | None = None, **context: Any) -> int:
    """Run ``stylegan-jax ARGV`` and return its exit status.

    ``context``: objects an in-process caller hands to the subcommand, set as attributes of its parsed arguments;
    ``function_cache`` (a :class:`stylegan_jax.apis.sampling.FunctionCache`) lets repeated ``generate`` /
    ``project`` calls in one process (a notebook, the tests) reuse the functions compiled for one architecture.
    """
    if argv is None:  # run as a program (not called from Python): huge pages for XLA's buffers, compile cache
        from stylegan_jax.utils.runtime import enable_compile_cache, maybe_reexec_with_hugepages

        maybe_reexec_with_hugepages()
        enable_compile_cache()
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="stylegan-jax", description="StyleGAN3 (and the StyleGAN2 baseline) in JAX/Flax")
    sub = ap.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
            p.set_defaults(_module=module)
    if chosen == "train":
        # --config.key=value overrides are free-form: collect them here, parse the rest strictly.
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        argv = [a for a in argv if not a.startswith("--config.")]
        args = ap.parse_args(argv)
        args.overrides = overrides
    else:
        args = ap.parse_args(argv)
    for name, value in context.items():
        setattr(args, name, value)
    return int(importlib.import_module(args._module).command(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
