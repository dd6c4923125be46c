"""What every parity checker shares: the fixture file, one compared output, the default tolerances.

A fixture (see ``tests/fixtures/README.md``) is an ``.npz`` with a ``meta`` JSON string (the official
constructor kwargs and call arguments), ``G/<name>`` / ``D/<name>`` official state-dict entries, ``in/<name>``
inputs and ``out/<name>`` outputs of the official code.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Default tolerances of the command line (see tests/fixtures/README.md): images and ws absolute; logits and
# losses relative; gradients relative by norm. The tests assert the (much tighter) errors we actually reach.
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-4
DEFAULT_GRAD_RTOL = 1e-3


@dataclasses.dataclass
class Result:
    """One compared output: its errors against the official value and the tolerance it is held to."""

    name: str       # What was compared, e.g. 'G img_trunc'.
    max_abs: float  # Largest absolute difference.
    rel: float      # Norm of the difference over the norm of the reference.
    tol: float      # Tolerance that `kind` error is compared to.
    kind: str       # 'abs' or 'rel': which error is compared to `tol`.

    @property
    def ok(self) -> bool:
        err = self.max_abs if self.kind == "abs" else self.rel
        return bool(np.isfinite(err) and err <= self.tol)

    @property
    def error(self) -> float:
        """The error that is compared to the tolerance."""
        return self.max_abs if self.kind == "abs" else self.rel

    def line(self) -> str:
        verdict = "ok" if self.ok else "FAIL"
        return (f"{self.name:<28} max_abs {self.max_abs:10.3e}  rel {self.rel:10.3e}  "
                f"tol {self.kind} {self.tol:.0e}  {verdict}")


def compare(name: str, ours, ref, tol: float, kind: str = "abs") -> Result:
    """Compare ``ours`` with the official ``ref`` (a shape mismatch is an infinite error)."""
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        return Result(f"{name} (shape {ours.shape} != {ref.shape})", float("inf"), float("inf"), tol, kind)
    diff = ours - ref
    max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
    denom = float(np.linalg.norm(ref))
    rel = float(np.linalg.norm(diff) / denom) if denom > 0 else max_abs
    return Result(name, max_abs, rel, tol, kind)


class Fixture:
    """A fixture file: decoded meta plus its arrays."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with np.load(self.path, allow_pickle=False) as data:
                self.arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise ValueError(f"{self.path}: not a readable .npz fixture ({e})") from e
        if "meta" not in self.arrays:
            raise ValueError(f"{self.path}: no 'meta' entry; not a fixture in the documented format")
        try:
            self.meta = json.loads(str(self.arrays["meta"]))
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.path}: 'meta' is not JSON ({e})") from e

    def get(self, key: str):
        return self.arrays.get(key)

    def has(self, key: str) -> bool:
        return key in self.arrays


@dataclasses.dataclass(frozen=True)
class Checker:
    """One kind of parity check: which fixtures it applies to and how to run it.

    ``run(fx, atol=, rtol=, grad_rtol=, impl=)`` returns one :class:`Result` per compared output.
    """

    name: str                                   # Shown in errors, e.g. 'stylegan3 generator'.
    applies: Callable[[Fixture], bool]          # True if the fixture holds what this checker compares.
    run: Callable[..., list[Result]]            # The check itself.


__all__ = ["DEFAULT_ATOL", "DEFAULT_GRAD_RTOL", "DEFAULT_RTOL", "Checker", "Fixture", "Result", "compare"]
