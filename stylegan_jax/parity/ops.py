"""Parity check for the low-level op fixture (``ops.npz``: ``meta.cases``, one entry per case).

Each case names its op: ``upfirdn2d`` (``upfirdn2d/<i>/{x,f,y}``), ``filtered_lrelu``
(``filtered_lrelu/<i>/{x,fu,fd,b,y}``), ``design_lowpass_filter`` (``lowpass/<i>/f``) and ``equivariance`` (the
metric's image operators: ``eq/x`` and ``eq/<op>_ref`` / ``eq/<op>_mask`` for integer and fractional translation,
rotation and pseudo-rotation). Images are NCHW in the fixture, NHWC in our ops. All outputs are compared
absolutely; filtered_lrelu cases without clamp reach |y| ~ 1e4, so their bound is the larger of ``atol`` and 1e-6
of the output's scale (float32 spacing alone is ~1e-3 there).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stylegan_jax.parity.common import DEFAULT_ATOL, Fixture, Result, compare

OPS = ("upfirdn2d", "filtered_lrelu", "design_lowpass_filter", "equivariance")


def applies_ops(fx: Fixture) -> bool:
    cases = fx.meta.get("cases")
    return isinstance(cases, list) and any(isinstance(c, dict) and c.get("op") in OPS for c in cases)


def _nhwc(x: np.ndarray) -> jnp.ndarray:
    return jnp.asarray(np.transpose(x, (0, 2, 3, 1)))


def _nchw(x) -> np.ndarray:
    return np.transpose(np.asarray(x), (0, 3, 1, 2))


def check_ops(fx: Fixture, atol: float = DEFAULT_ATOL, impl: str = "fast", **_) -> list[Result]:
    """Compare every op case of the fixture with our implementation (``impl`` picks the resampling path)."""
    from stylegan_jax.ops import design_lowpass_filter, filtered_lrelu, upfirdn2d
    from stylegan_jax.ops import equivariance as E

    results: list[Result] = []
    counters: dict[str, int] = {}
    for case in fx.meta["cases"]:
        op = case.get("op")
        i = case.get("i", counters.get(op, 0))
        counters[op] = counters.get(op, 0) + 1
        if op == "upfirdn2d":
            key = f"upfirdn2d/{i}"
            y = upfirdn2d(_nhwc(fx.get(f"{key}/x")), fx.get(f"{key}/f"), up=case["up"], down=case["down"],
                          padding=case["padding"], flip_filter=case["flip_filter"], gain=case["gain"], impl=impl)
            results.append(compare(f"upfirdn2d[{i}]", _nchw(y), fx.get(f"{key}/y"), atol, "abs"))
        elif op == "filtered_lrelu":
            key = f"filtered_lrelu/{i}"
            ref = fx.get(f"{key}/y")
            y = filtered_lrelu(_nhwc(fx.get(f"{key}/x")), fu=fx.get(f"{key}/fu"), fd=fx.get(f"{key}/fd"),
                               b=jnp.asarray(fx.get(f"{key}/b")), up=case["up"], down=case["down"],
                               padding=case["padding"], gain=case["gain"], slope=case["slope"], clamp=case["clamp"],
                               flip_filter=case["flip_filter"], impl=impl)
            tol = max(atol, 1e-6 * float(np.abs(ref).max()))
            results.append(compare(f"filtered_lrelu[{i}]", _nchw(y), ref, tol, "abs"))
        elif op == "design_lowpass_filter":
            f = design_lowpass_filter(case["numtaps"], case["cutoff"], case["width"], case["fs"],
                                      radial=case["radial"])
            results.append(compare(f"lowpass[{i}]", f, fx.get(f"lowpass/{i}/f"), atol, "abs"))
        elif op == "equivariance":
            x = jnp.asarray(fx.get("eq/x"))
            a, angle = case["a"], case["rotate_angle_radians"]
            outputs = {
                "int": jax.jit(E.apply_integer_translation)(x, *case["int_translate"]),
                "frac": jax.jit(E.apply_fractional_translation, static_argnums=3)(x, *case["frac_translate"], a),
                "rot": jax.jit(E.apply_fractional_rotation, static_argnums=2)(x, angle, a),
                "pseudo": jax.jit(E.apply_fractional_pseudo_rotation, static_argnums=2)(x, angle, a),
            }
            for name, (img, mask) in outputs.items():
                results.append(compare(f"equivariance {name}", img, fx.get(f"eq/{name}_ref"), atol, "abs"))
                # Masks are 0/1: any difference is a whole pixel in or out.
                results.append(compare(f"equivariance {name} mask", mask, fx.get(f"eq/{name}_mask"), 0.0, "abs"))
    return results


__all__ = ["OPS", "applies_ops", "check_ops"]
