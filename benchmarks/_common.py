"""What the benchmark scripts share: their argument parser, the generator-size arguments, the machine they ran on,
the printed table and the JSON file.

A script builds its parser with :func:`parser` (description from its docstring, ``--json``), adds
:func:`add_generator_args` if it builds a generator, prints its results with :func:`print_rows` (label / value
lines) or :func:`print_table` (columns), records :func:`machine` with them and ends with :func:`write_json`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def parser(doc: str, json_help: str = "write the results here") -> argparse.ArgumentParser:
    """An argument parser described by the first line of ``doc`` (the script's docstring), with ``--json``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--json", default=None, help=json_help)
    return ap


def add_generator_args(ap: argparse.ArgumentParser, cfgs: Sequence[str] = ("t", "r"), res: int = 256) -> None:
    """``--cfg`` (one of ``cfgs``), ``--res``, ``--cbase``, ``--cmax``, ``--map-layers``, ``--z-dim``: the size of the
    generator (and discriminator) a benchmark builds; official StyleGAN3 channels by default."""
    ap.add_argument("--cfg", choices=list(cfgs), default=cfgs[0],
                    help="StyleGAN3-T or -R" + (", or the StyleGAN2 baseline" if "stylegan2" in cfgs else ""))
    ap.add_argument("--res", type=int, default=res, help="image resolution")
    ap.add_argument("--cbase", type=int, default=32768, help="channel_base (R doubles it for G)")
    ap.add_argument("--cmax", type=int, default=512, help="channel_max (R doubles it for G)")
    ap.add_argument("--map-layers", type=int, default=8, help="mapping depth (official StyleGAN3: 2)")
    ap.add_argument("--z-dim", type=int, default=512, help="z and w dimensionality")


def machine(with_jax: bool = True) -> dict[str, Any]:
    """The host a measurement comes from: name, CPUs, platform, Python, load average (1, 5, 15 min) and, with
    ``with_jax``, JAX's backend, device kind, device count and version (this imports JAX)."""
    out: dict[str, Any] = {"host": platform.node(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version(),
                           "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                           "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}
    if with_jax:
        import jax

        out.update(backend=jax.default_backend(), device=str(jax.devices()[0].device_kind),
                   num_devices=jax.device_count(), jax=jax.__version__)
    return out


def print_rows(rows: Sequence[tuple[str, str]]) -> None:
    """``label  value`` lines, the values aligned."""
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Columns under the header ``rows[0]``: the first left-aligned, the others right-aligned, a rule below the
    header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def print_table(rows: Sequence[Sequence[str]]) -> None:
    print(format_table(rows))


def write_json(path: str | Path | None, result: Any) -> None:
    """Write ``result`` (indented JSON) to ``path``, creating its folder; nothing when ``path`` is None. Non-finite
    floats (a metric not computed yet, a diverged loss) are written as ``null``: strict JSON, which ``NaN`` is not."""
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_strict(result), indent=2) + "\n")
    print(f"wrote {path}")


def _strict(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    return x
