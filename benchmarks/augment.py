"""ADA augmentation benchmark: ms per batch of the augmentation pipeline and its share of a training step.

1. The op: ``ops.augment.augment`` on a batch (default 32 x 3 x 256 x 256, spec bgc, p = 0.5), compiled, forward
   alone (what D's real and Dmain-fake inputs cost) and forward + backward (Gmain: the gradient goes back through
   the augmentation to G). One iteration of the official loop augments three times (Gmain fakes with backward,
   Dmain fakes and reals forward), so ``per_iteration = fwd_bwd + 2 * fwd`` (Dreg every 16 iterations adds a
   double backward, not counted).
2. Its share of one training step: the per-iteration cost over the step time. With ``--step-res R`` the step is
   measured here, with and without augmentation (``train.augment='fixed'``, p = 0.5, same model), on a model of
   the given size (default: the quickstart's, 32x32); ``--step-ms`` uses a step time measured elsewhere instead
   (e.g. the 256x256 step of BENCHMARKS.md) for the share of part 1.

  python benchmarks/augment.py --json augment.json                      # op at 256, quickstart-size step at 32
  python benchmarks/augment.py --res 256 --step-ms 41000 --no-step      # share against a given 256px step time
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import _common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = _common.parser(__doc__)
    ap.add_argument("--res", type=int, default=256, help="image resolution of the op timing")
    ap.add_argument("--batch", type=int, default=32, help="batch of the op timing")
    ap.add_argument("--spec", default="bgc", help="augmentation spec")
    ap.add_argument("--p", type=float, default=0.5, help="augmentation probability")
    ap.add_argument("--runs", type=int, default=3, help="timed calls (after one warm-up)")
    ap.add_argument("--step-res", type=int, default=32, help="resolution of the measured training step")
    ap.add_argument("--step-batch", type=int, default=16, help="batch of the measured training step")
    ap.add_argument("--no-step", action="store_true", help="do not measure a training step")
    ap.add_argument("--step-ms", type=float, default=None, help="a step time (ms) measured elsewhere for the "
                                                                "share of the op timing")
    return ap.parse_args(argv)


def _time(fn, *args, runs: int) -> tuple[float, float]:
    """(compile + first call s, median ms of ``runs`` further calls)."""
    import jax

    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t) * 1000)
    return first, statistics.median(times)


def bench_op(args) -> dict:
    import jax
    import jax.numpy as jnp

    from stylegan_jax.ops.augment import augment, make_spec

    spec = make_spec(args.spec)
    x = jax.random.uniform(jax.random.PRNGKey(0), (args.batch, 3, args.res, args.res), minval=-1, maxval=1)
    key = jax.random.PRNGKey(1)
    fwd = jax.jit(lambda x, k: augment(x, args.p, k, spec))
    w = jax.random.normal(jax.random.PRNGKey(2), x.shape)
    bwd = jax.jit(jax.value_and_grad(lambda x, k, w: jnp.sum(augment(x, args.p, k, spec) * w)))
    c_fwd, t_fwd = _time(fwd, x, key, runs=args.runs)
    c_bwd, t_bwd = _time(bwd, x, key, w, runs=args.runs)
    return {"res": args.res, "batch": args.batch, "spec": args.spec, "p": args.p, "fwd_ms": t_fwd,
            "fwd_bwd_ms": t_bwd, "per_iteration_ms": t_bwd + 2 * t_fwd, "compile_fwd_s": c_fwd,
            "compile_fwd_bwd_s": c_bwd}


def bench_step(args) -> dict:
    import dataclasses

    import jax

    from stylegan_jax.config import base_config
    from stylegan_jax.train.loop import build_networks
    from stylegan_jax.train.state import TrainConfig, create_train_state
    from stylegan_jax.train.step import make_mesh, make_train_step

    c = base_config()  # the quickstart's model sizes
    c.model.z_dim = c.model.w_dim = 64
    c.model.mapping_layers = 2
    c.model.channel_base = c.model.d_channel_base = 1024
    c.model.channel_max = c.model.d_channel_max = 32
    c.data.resolution = args.step_res
    c.train.batch_size = args.step_batch
    G, D = build_networks(c, 0)
    base = TrainConfig.from_config(c)
    mesh = make_mesh()
    batch = {"real": jax.random.uniform(jax.random.PRNGKey(0), (args.step_batch, 3, args.step_res, args.step_res),
                                        minval=-1, maxval=1)}
    fns, out = {}, {}
    for name, tc in (("off", dataclasses.replace(base, augment="off")),
                     ("augmented", dataclasses.replace(base, augment="fixed", augment_p=args.p,
                                                       augment_spec=args.spec))):
        state = create_train_state(G, D, tc, jax.random.PRNGKey(0), mesh=mesh)
        step = make_train_step(G, D, tc, mesh, donate=False)
        fn = step.main  # Gmain + Dmain, the iteration 15 of 16 times
        placed = step.place_batch(batch)
        t = time.perf_counter()
        jax.block_until_ready(fn(state, placed, None))
        fns[name] = (fn, state, placed)
        out[name] = {"compile_s": time.perf_counter() - t, "times_ms": []}
    # Interleaved, so that a change of machine load hits both alike.
    for _ in range(args.runs):
        for name, (fn, state, placed) in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(state, placed, None))
            out[name]["times_ms"].append((time.perf_counter() - t) * 1000)
    for v in out.values():
        v["step_ms"] = statistics.median(v["times_ms"])
    on, off = out["augmented"]["step_ms"], out["off"]["step_ms"]
    return {"res": args.step_res, "batch": args.step_batch, "spec": args.spec, "p": args.p, **out,
            "augment_share": (on - off) / on}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    results = _common.machine()
    op = bench_op(args)
    results["op"] = op
    print(f"augment {op['spec']} p={op['p']} on {op['batch']}x3x{op['res']}x{op['res']} "
          f"({results['device']}, load {results['load_avg'][0]:.1f}):")
    print(f"  {'forward':<28} {op['fwd_ms']:10.1f} ms")
    print(f"  {'forward + backward':<28} {op['fwd_bwd_ms']:10.1f} ms")
    print(f"  {'per iteration (fb + 2 f)':<28} {op['per_iteration_ms']:10.1f} ms")
    if args.step_ms:
        op["share_of_given_step"] = op["per_iteration_ms"] / args.step_ms
        print(f"  {'share of a ' + f'{args.step_ms:.0f} ms step':<28} {100 * op['share_of_given_step']:9.1f} %")
    if not args.no_step:
        st = bench_step(args)
        results["step"] = st
        print(f"training step (Gmain + Dmain), quickstart-size model, {st['batch']}x3x{st['res']}x{st['res']}:")
        print(f"  {'augment off':<28} {st['off']['step_ms']:10.1f} ms")
        print(f"  {'augment ' + st['spec'] + f' p={st[chr(112)]}':<28} {st['augmented']['step_ms']:10.1f} ms")
        print(f"  {'share of the step':<28} {100 * st['augment_share']:9.1f} %")
    _common.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
