"""``stylegan-jax`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, help). Each module has add_arguments(parser) and command(args) -> int.
SUBCOMMANDS = {
    "parity": ("stylegan_jax.parity", "compare our networks with official reference outputs"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="stylegan-jax", description="StyleGAN3 in JAX/Flax")
    sub = ap.add_subparsers(dest="subcommand", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    args = ap.parse_args(argv)
    return int(importlib.import_module(args._module).command(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
