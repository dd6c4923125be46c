"""``stylegan-jax parity`` / ``python -m stylegan_jax.parity``: one command, two entry points."""

from __future__ import annotations

import argparse
import sys

from stylegan_jax.parity import DEFAULT_ATOL, DEFAULT_GRAD_RTOL, DEFAULT_RTOL, run_parity


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("fixtures", nargs="+",
                    help="fixture .npz files in the official-reference format, or official .pkl files with a "
                         "NAME_expected.npz beside them")
    ap.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="absolute tolerance for images and ws")
    ap.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help="relative tolerance for logits and losses")
    ap.add_argument("--grad-rtol", type=float, default=DEFAULT_GRAD_RTOL, help="relative tolerance for gradients")
    ap.add_argument("--impl", choices=["fast", "ref"], default="fast", help="resampling / filtered_lrelu path")


def command(args: argparse.Namespace) -> int:
    ok = run_parity(args.fixtures, args.atol, args.rtol, args.grad_rtol, args.impl)
    print("parity: all outputs within tolerance" if ok else "parity: FAILED")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stylegan_jax.parity",
                                 description="compare our networks with official reference outputs")
    add_arguments(ap)
    return command(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
