"""Parity check for the augmentation fixtures (``ada_*.npz``): the official ``AugmentPipe`` in its percentile mode.

``meta.specs`` maps a spec name to its ``AugmentPipe`` constructor kwargs, ``meta.percentiles`` lists the debug
percentiles and ``meta.grad`` the specs with gradients. ``in/images`` (NCHW) go through :func:`augment` with
``debug_percentile`` and are compared with ``out/<spec>/<pct>`` absolutely; where ``grad/<spec>/<pct>`` exists, the
gradient of ``sum(out * in/grad_weights)`` w.r.t. the images is compared by relative norm. The resolution is the
fixture's image size; every spec, percentile and knob comes from the file.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stylegan_jax.parity.common import DEFAULT_ATOL, DEFAULT_GRAD_RTOL, Fixture, Result, compare


def applies_ada(fx: Fixture) -> bool:
    return isinstance(fx.meta.get("specs"), dict) and "percentiles" in fx.meta and fx.has("in/images")


def _pct_key(pct: float) -> str:
    return f"{pct:.2f}"


def check_ada(fx: Fixture, atol: float = DEFAULT_ATOL, grad_rtol: float = DEFAULT_GRAD_RTOL, **_) -> list[Result]:
    """Compare every spec at every percentile (images, and gradients where the fixture has them)."""
    from stylegan_jax.ops.augment import augment, make_spec

    images = jnp.asarray(fx.get("in/images"), jnp.float32)
    weights = fx.get("in/grad_weights")
    p = float(fx.meta.get("p", 1.0))
    key = jax.random.PRNGKey(0)  # only the additive noise image reads it; the fixtures hold no noise
    results: list[Result] = []
    for name, kwargs in fx.meta["specs"].items():
        spec = make_spec(kwargs)

        def run(x, pct, spec=spec):
            return augment(x, p, key, spec, debug_percentile=pct)

        fwd = jax.jit(run)
        grad = jax.jit(jax.grad(lambda x, w, pct, spec=spec: jnp.sum(run(x, pct, spec) * w)))
        for pct in fx.meta["percentiles"]:
            out_key = f"out/{name}/{_pct_key(pct)}"
            if not fx.has(out_key):
                raise ValueError(f"{fx.path}: meta lists spec {name!r} at percentile {pct} but {out_key} is missing")
            results.append(compare(f"ada {name} @{_pct_key(pct)}", fwd(images, pct), fx.get(out_key), atol, "abs"))
            grad_key = f"grad/{name}/{_pct_key(pct)}"
            if fx.has(grad_key):
                if weights is None:
                    raise ValueError(f"{fx.path}: {grad_key} needs in/grad_weights")
                g = grad(images, jnp.asarray(weights, jnp.float32), pct)
                results.append(compare(f"ada {name} @{_pct_key(pct)} grad", np.asarray(g), fx.get(grad_key),
                                       grad_rtol, "rel"))
    return results


__all__ = ["applies_ada", "check_ada"]
