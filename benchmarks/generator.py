"""Generator forward benchmark: jit-compiled time per batch (compile excluded), images/s, XLA FLOPs.

Usage:
  python benchmarks/generator.py --cfg t --res 256 --cbase 32768 --cmax 512 --map-layers 8 --batch 1 --json out.json
"""

from __future__ import annotations

import statistics
import time

import _common
import jax
import jax.numpy as jnp

from stylegan_jax.models import build_generator
from stylegan_jax.utils.runtime import maybe_reexec_with_hugepages


def main(argv: list[str] | None = None) -> None:
    maybe_reexec_with_hugepages()
    ap = _common.parser(__doc__)
    _common.add_generator_args(ap)
    ap.add_argument("--batch", type=int, default=1, help="images per forward pass")
    ap.add_argument("--runs", type=int, default=5, help="timed calls (after one warm-up)")
    ap.add_argument("--impl", choices=["fast", "ref"], default="fast", help="filtered_lrelu implementation")
    args = ap.parse_args(argv)

    G = build_generator(cfg=args.cfg, img_resolution=args.res, channel_base=args.cbase, channel_max=args.cmax,
                        mapping_layers=args.map_layers, z_dim=args.z_dim, w_dim=args.z_dim, impl=args.impl)
    variables = jax.jit(G.init)(jax.random.PRNGKey(0), jnp.zeros((1, G.z_dim)))
    z = jax.random.normal(jax.random.PRNGKey(1), (args.batch, G.z_dim))
    forward = jax.jit(lambda v, z: G.apply(v, z))

    t0 = time.perf_counter()
    compiled = forward.lower(variables, z).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0]
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")

    compiled(variables, z).block_until_ready()  # warm-up
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        compiled(variables, z).block_until_ready()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    result = {
        "cfg": args.cfg, "res": args.res, "cbase": args.cbase, "cmax": args.cmax, "map_layers": args.map_layers,
        "batch": args.batch, "impl": args.impl, "median_s": median, "min_s": min(times),
        "img_per_s": args.batch / median, "flops": flops, "gflop_per_s": flops / median / 1e9,
        "compile_s": compile_s, **_common.machine(),
    }
    rows = [("config", f"StyleGAN3-{args.cfg.upper()} {args.res}px cbase={args.cbase} cmax={args.cmax} "
                       f"map={args.map_layers} batch={args.batch} impl={args.impl}"),
            ("device", f"{result['backend']} / {result['device']}"),
            ("compile", f"{compile_s:.1f} s"),
            ("median forward", f"{median:.3f} s  (min {min(times):.3f}, {args.runs} runs)"),
            ("images/s", f"{result['img_per_s']:.3f}"),
            ("XLA flops", f"{flops / 1e9:.1f} GFLOP  ({result['gflop_per_s']:.1f} GFLOP/s)")]
    _common.print_rows(rows)
    _common.write_json(args.json, result)


if __name__ == "__main__":
    main()
