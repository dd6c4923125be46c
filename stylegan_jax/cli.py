"""``stylegan-jax`` command line: one entry point, one subcommand per job.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``command(args) -> int``; only the module of the subcommand being run is imported, so that
``stylegan-jax parity`` does not pay for TensorFlow or ONNX Runtime imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # run as a program (not called from Python): enable huge pages for XLA's buffers
        from stylegan_jax.utils.runtime import maybe_reexec_with_hugepages

        maybe_reexec_with_hugepages()
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
    return int(importlib.import_module(args._module).command(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
