"""The one static shape check used at layer and op boundaries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def check_shape(x: Any, shape: Sequence[int | None], what: str) -> None:
    """Raise ``ValueError`` naming ``what`` and both shapes unless ``x`` has ``shape`` (None = any size).

    Runs at trace time (shapes are static under jit), so it costs nothing in the compiled program.
    """
    got = tuple(x.shape)
    if len(got) != len(shape) or any(s is not None and s != d for s, d in zip(shape, got, strict=True)):
        want = ", ".join("N" if s is None else str(s) for s in shape)
        raise ValueError(f"{what}: expected shape [{want}], got [{', '.join(map(str, got))}]")


__all__ = ["check_shape"]
