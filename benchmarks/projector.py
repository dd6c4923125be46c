"""Projector benchmark: seconds per 1000 optimisation steps (compile excluded), per generator and distance.

Each configuration runs :func:`stylegan_jax.apis.projector.project` for ``--steps`` steps on a randomly initialised
generator (the speed does not depend on the weights) and times the steps after the first (which compiles). The
VGG16 distance runs the full-width VGG16 with random weights (the real weights are not needed for timing).

Usage:
  python benchmarks/projector.py --res 256 --steps 6 --json benchmarks/results/projector_256_cpu2.json
"""

from __future__ import annotations

import time

import _common
import jax
import jax.numpy as jnp

from stylegan_jax.apis import projector as P
from stylegan_jax.apis.sampling import Sampler
from stylegan_jax.metrics.vgg16 import VGG16_WIDTHS, VGG16Features
from stylegan_jax.models import build_generator
from stylegan_jax.utils.runtime import maybe_reexec_with_hugepages

# name -> (cfg, channel_base, channel_max)
MODELS = {
    "t_small": ("t", 8192, 256),
    "t_design": ("t", 32768, 512),
    "stylegan2_small": ("stylegan2", 8192, 256),
}


def random_vgg16() -> dict:
    net = VGG16Features(widths=VGG16_WIDTHS)
    params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
    lpips = {name: jnp.ones((w,), jnp.float32) for name, w in zip(
        ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"), VGG16_WIDTHS, strict=True)}
    return {"params": params, "lpips": lpips}


def bench(model: str, distance_name: str, res: int, steps: int, space: str) -> dict:
    cfg, cbase, cmax = MODELS[model]
    G = build_generator(cfg, img_resolution=res, channel_base=cbase, channel_max=cmax)
    variables = jax.jit(G.init)(jax.random.PRNGKey(0), jnp.zeros((1, G.z_dim)))
    s = Sampler(G, variables, batch_size=1)
    target = s.images([1])[0]
    distance = P.vgg16_distance(random_vgg16()) if distance_name == "vgg16" else P.pixel_distance()
    stamps: list[float] = []
    t0 = time.perf_counter()
    P.project(s, target, distance, P.ProjectionConfig(num_steps=steps, space=space, w_avg_samples=1000),
              progress=lambda i, d: stamps.append(time.perf_counter()))
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    return {"model": model, "cfg": cfg, "cbase": cbase, "cmax": cmax, "res": res, "distance": distance_name,
            "space": space, "timed_steps": len(stamps) - 1, "s_per_step": per_step, "s_per_1000_steps": 1000 * per_step,
            "first_step_incl_compile_s": stamps[0] - t0}


def main() -> None:
    maybe_reexec_with_hugepages()
    ap = _common.parser(__doc__)
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6, help="steps per configuration (the first one compiles)")
    ap.add_argument("--space", choices=P.SPACES, default="w")
    ap.add_argument("--models", default="t_small,stylegan2_small,t_design", help=f"of {sorted(MODELS)}")
    ap.add_argument("--distances", default="pixel,vgg16")
    args = ap.parse_args()
    rows = []
    for model in args.models.split(","):
        for dist in args.distances.split(","):
            row = bench(model, dist, args.res, args.steps, args.space)
            rows.append(row)
            print(f"{row['model']:>16} {row['distance']:>6} {row['res']}px {row['space']:>2}: "
                  f"{row['s_per_step']:.3f} s/step = {row['s_per_1000_steps']:.0f} s per 1000 steps "
                  f"(first step incl. compile {row['first_step_incl_compile_s']:.1f} s)", flush=True)
    print()
    print("| model | distance | res | s / 1000 steps |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} (cbase {r['cbase']}, cmax {r['cmax']}) | {r['distance']} | {r['res']} | "
              f"{r['s_per_1000_steps']:.0f} |")
    _common.write_json(args.json, {"results": rows, "machine": _common.machine()})


if __name__ == "__main__":
    main()
