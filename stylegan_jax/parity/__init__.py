"""Parity against reference outputs of the official implementation.

``stylegan-jax parity FIXTURE [...]`` and ``python -m stylegan_jax.parity FIXTURE [...]`` (the same code,
:mod:`stylegan_jax.parity.cli`) read files in the fixture format (``meta`` JSON with the official constructor
kwargs, ``G/<name>`` / ``D/<name>`` official state-dict entries, ``in/<name>`` inputs, ``out/<name>`` official
outputs; see :mod:`stylegan_jax.parity.common`), run every checker of :data:`CHECKERS` that applies, and print one
line per output: max absolute error, relative error, tolerance, verdict.

:data:`CHECKERS` is the one explicit list: a new kind of fixture adds its module here and one line below.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from stylegan_jax.convert.generator import ConversionError
from stylegan_jax.parity.ada import applies_ada, check_ada
from stylegan_jax.parity.common import DEFAULT_ATOL, DEFAULT_GRAD_RTOL, DEFAULT_RTOL, Checker, Fixture, Result, compare
from stylegan_jax.parity.discriminator import applies_discriminator, check_discriminator
from stylegan_jax.parity.losses import applies_losses, check_losses
from stylegan_jax.parity.official_pickle import applies_official_pickle, check_official_pickle, expected_path
from stylegan_jax.parity.ops import applies_ops, check_ops
from stylegan_jax.parity.stylegan2 import applies_stylegan2, check_stylegan2_generator
from stylegan_jax.parity.stylegan3 import applies_stylegan3, check_generator

CHECKERS: tuple[Checker, ...] = (
    Checker("stylegan3 generator", applies_stylegan3, check_generator),
    Checker("stylegan2 generator", applies_stylegan2, check_stylegan2_generator),
    Checker("discriminator", applies_discriminator, check_discriminator),
    Checker("losses", applies_losses, check_losses),
    Checker("ops", applies_ops, check_ops),
    Checker("official pickle", applies_official_pickle, check_official_pickle),
    Checker("augmentation", applies_ada, check_ada),
)


def fixture_for(path: str | Path) -> Fixture:
    """The fixture to check for a command-line path: an ``.npz`` itself, or for an official ``NAME.pkl`` the
    ``NAME_expected.npz`` beside it."""
    path = Path(path)
    if path.suffix == ".pkl":
        expected = expected_path(path)
        if not expected.is_file():
            raise ValueError(f"{path}: an official pickle is checked against {expected.name} beside it; not found")
        path = expected
    return Fixture(path)


def applicable_checkers(fx: Fixture) -> list[Checker]:
    return [c for c in CHECKERS if c.applies(fx)]


def check_file(path: str | Path, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
               grad_rtol: float = DEFAULT_GRAD_RTOL, impl: str = "fast") -> list[Result]:
    """Every result of every applicable checker on one file; ``ValueError`` if none applies."""
    fx = fixture_for(path)
    checkers = applicable_checkers(fx)
    if not checkers:
        raise ValueError(f"{fx.path}: nothing to check (no checker applies; known: "
                         f"{', '.join(c.name for c in CHECKERS)})")
    results = []
    for checker in checkers:
        results += checker.run(fx, atol=atol, rtol=rtol, grad_rtol=grad_rtol, impl=impl)
    return results


def run_parity(paths: Iterable[str | Path], atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
               grad_rtol: float = DEFAULT_GRAD_RTOL, impl: str = "fast", out=None) -> bool:
    """Run every applicable check on every file; print result lines (to ``out``, default stdout); return True if
    all pass."""
    out = sys.stdout if out is None else out
    all_ok = True
    for path in paths:
        print(f"== {path}", file=out)
        try:
            for r in check_file(path, atol=atol, rtol=rtol, grad_rtol=grad_rtol, impl=impl):
                print(r.line(), file=out)
                all_ok &= r.ok
        except (ValueError, ConversionError, KeyError) as e:
            print(f"ERROR {e}", file=out)
            all_ok = False
    return all_ok


__all__ = [
    "CHECKERS",
    "DEFAULT_ATOL",
    "DEFAULT_GRAD_RTOL",
    "DEFAULT_RTOL",
    "Checker",
    "Fixture",
    "Result",
    "applicable_checkers",
    "check_file",
    "check_generator",
    "compare",
    "fixture_for",
    "run_parity",
]
