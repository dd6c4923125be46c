"""Parity against reference outputs of the official implementation.

``stylegan-jax parity FIXTURE.npz [...]`` (or ``python -m stylegan_jax.parity``) reads files in the
fixture format (``meta`` JSON with the official constructor kwargs, ``G/<name>`` / ``D/<name>``
official state-dict entries, ``in/<name>`` inputs, ``out/<name>`` official outputs), builds our
networks from the same kwargs and weights, runs the same inputs and prints one line per output:
max absolute error, relative error (norm of difference / norm of reference), tolerance, verdict.
It exits non-zero if any output is out of tolerance.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from stylegan_jax.convert.generator import ConversionError, convert_generator, strip_prefix

# Default tolerances (see tests/fixtures/README.md): images and ws absolute; logits and losses
# relative; gradients relative by norm.
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-4
DEFAULT_GRAD_RTOL = 1e-3


@dataclasses.dataclass
class Result:
    name: str
    max_abs: float
    rel: float
    tol: float
    kind: str  # 'abs' or 'rel': which error is compared to tol

    @property
    def ok(self) -> bool:
        err = self.max_abs if self.kind == "abs" else self.rel
        return bool(np.isfinite(err) and err <= self.tol)

    def line(self) -> str:
        verdict = "ok" if self.ok else "FAIL"
        return (f"{self.name:<28} max_abs {self.max_abs:10.3e}  rel {self.rel:10.3e}  "
                f"tol {self.kind} {self.tol:.0e}  {verdict}")


def compare(name: str, ours, ref, tol: float, kind: str = "abs") -> Result:
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
    """A fixture file: decoded meta plus lazy access to its arrays."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with np.load(self.path, allow_pickle=False) as data:
                self.arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise ValueError(f"{self.path}: not a readable .npz fixture ({e})") from e
        if "meta" not in self.arrays:
            raise ValueError(f"{self.path}: no 'meta' entry; not a fixture in the documented format")
        self.meta = json.loads(str(self.arrays["meta"]))

    def get(self, key: str):
        return self.arrays.get(key)

    def has(self, key: str) -> bool:
        return key in self.arrays


def check_generator(fx: Fixture, atol: float = DEFAULT_ATOL, impl: str = "fast", **_) -> list[Result]:
    """Compare every generator output (``ws``, ``ws_trunc``, ``img``, ``img_trunc``, ``img_transformed``)
    present in the fixture."""
    cls = fx.meta.get("official_class", "training.networks_stylegan3.Generator")
    if "stylegan3" not in cls:
        raise ValueError(f"{fx.path}: generator class {cls!r} is not supported by this parity check")
    G, variables = convert_generator(strip_prefix(fx.arrays, "G/"), fx.meta["G_kwargs"], impl=impl)
    z = jnp.asarray(fx.get("in/z"))
    c = jnp.asarray(fx.get("in/c")) if G.c_dim > 0 else None
    psi = fx.meta.get("truncation_psi", 1.0)
    cutoff = fx.meta.get("truncation_cutoff")
    transform = fx.get("in/transform")

    mapping = jax.jit(lambda v, z, c, psi: G.apply(v, z, c, psi, cutoff, method=G.map))
    synthesis = jax.jit(lambda v, ws, t: G.apply(v, ws, t, method=G.synthesize))
    outputs: dict[str, Callable[[], np.ndarray]] = {
        "ws": lambda: mapping(variables, z, c, 1.0),
        "ws_trunc": lambda: mapping(variables, z, c, psi),
        "img": lambda: synthesis(variables, mapping(variables, z, c, 1.0), None),
        "img_trunc": lambda: synthesis(variables, mapping(variables, z, c, psi), None),
        "img_transformed": lambda: synthesis(variables, mapping(variables, z, c, 1.0), jnp.asarray(transform)),
    }
    results = []
    for name, fn in outputs.items():
        ref = fx.get(f"out/{name}")
        if ref is None or (name == "img_transformed" and transform is None):
            continue
        results.append(compare(f"G {name}", fn(), ref, atol, "abs"))
    return results


# Checks by what the fixture holds. Later components (discriminator, losses) register here.
CHECKS: list[tuple[str, Callable[[Fixture], bool], Callable[..., list[Result]]]] = [
    ("generator",
     lambda fx: ("G_kwargs" in fx.meta and fx.has("in/z") and fx.has("out/ws")
                 and "stylegan3" in fx.meta.get("official_class", "training.networks_stylegan3.Generator")),
     check_generator),
]


def register_check(name: str, applies: Callable[[Fixture], bool], run: Callable[..., list[Result]]) -> None:
    CHECKS.append((name, applies, run))


def _load_optional_checks() -> None:
    # Discriminator and loss checks live with their components; import them if present.
    for module in ("stylegan_jax.parity_checks", "stylegan_jax.parity_sg2"):
        try:
            __import__(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise


def run_parity(paths: Iterable[str | Path], atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
               grad_rtol: float = DEFAULT_GRAD_RTOL, impl: str = "fast", out=sys.stdout) -> bool:
    """Run every applicable check on every file; print result lines; return True if all pass."""
    _load_optional_checks()
    all_ok = True
    for path in paths:
        print(f"== {path}", file=out)
        try:
            fx = Fixture(path)
            applicable = [(n, run) for n, applies, run in CHECKS if applies(fx)]
            if not applicable:
                raise ValueError("no G_kwargs / D_kwargs / loss entries in meta: nothing to check")
            for _, run in applicable:
                for r in run(fx, atol=atol, rtol=rtol, grad_rtol=grad_rtol, impl=impl):
                    print(r.line(), file=out)
                    all_ok &= r.ok
        except (ValueError, ConversionError, KeyError) as e:
            print(f"ERROR {e}", file=out)
            all_ok = False
    return all_ok


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("fixtures", nargs="+", help="fixture .npz files in the official-reference format")
    ap.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="absolute tolerance for images and ws")
    ap.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help="relative tolerance for logits and losses")
    ap.add_argument("--grad-rtol", type=float, default=DEFAULT_GRAD_RTOL, help="relative tolerance for gradients")
    ap.add_argument("--impl", choices=["fast", "ref"], default="fast", help="filtered_lrelu implementation")


def command(args: argparse.Namespace) -> int:
    ok = run_parity(args.fixtures, args.atol, args.rtol, args.grad_rtol, args.impl)
    print("parity: all outputs within tolerance" if ok else "parity: FAILED")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stylegan_jax.parity", description=__doc__.splitlines()[0])
    add_arguments(ap)
    return command(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
