"""Training-step benchmark: seconds per iteration, images/s and s/kimg of the compiled step (compile excluded).

One iteration is what the official training loop does per batch: Gmain, (StyleGAN2 only: Greg, lazy
path-length reg every ``--g-reg-interval``), Dmain and, every ``--reg-interval`` iterations, Dreg (lazy R1),
then the G_ema update. Every phase combination a run uses ("main", "reg", ...) is timed separately and combined
into the average over one regularization period (e.g. StyleGAN3: ``((I - 1) * t_main + t_reg) / I``), which is
what a long run sees. By default each is timed as the training loop runs it: the main program, then on Dreg
iterations the Dreg program (``TrainStep``); the compile of a combination is what its first call compiled that
the earlier ones had not. ``--fixed-variants`` times and compiles each combination as one program (the loop
before round 10). "compile total" is the compile of everything a run needs; with ``--precompile`` it is the wall time
of ``TrainStep.precompile``, which the training loop calls (the programs compile in worker threads, overlapping).
The batch is random data already on the devices, so input-pipeline time is not included.

CPU (small models; ``--devices N`` simulates N CPU devices for the data-parallel path):
  python benchmarks/train_step.py --cfg t --res 32 --cbase 2048 --cmax 64 --z-dim 64 --batch 8 --json out.json
  python benchmarks/train_step.py --cfg t --res 64 --cbase 2048 --cmax 64 --z-dim 64 --batch 8 --devices 2
  python benchmarks/train_step.py --cfg stylegan2 --res 32 --cbase 2048 --cmax 64 --z-dim 64 --batch 8
The quickstart's networks (configs/quickstart.py; its margin is --margin):
  python benchmarks/train_step.py --cfg t --res 32 --cbase 1024 --cmax 32 --map-layers 2 --z-dim 64 --num-layers 6 \\
      --batch 8 --gamma 0.5 --reg-interval 4 --margin 4

GPU, the official StyleGAN3-T 256x256 setting (official channels, mapping depth 2, batch 32, gamma 2):
  python benchmarks/train_step.py --cfg t --res 256 --cbase 32768 --cmax 512 --map-layers 2 --batch 32 \\
      --gamma 2 --json sg3t256.json
Official reference (NVlabs/stylegan3 docs/configs.md, 256x256, 1 GPU, batch 32 with --batch-gpu=16,
mixed precision on the 4 highest resolutions, ADA on): 49.81 s/kimg on one A100 (89.15 on one V100).
Add ``--bf16`` for bf16 in the highest-resolution layers of G (both kinds) and D (``model.bf16``).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import _common

# Official s/kimg of StyleGAN3 at batch 32 on one GPU (docs/configs.md): (cfg, res) -> {gpu: s/kimg}.
OFFICIAL_1GPU = {("t", 256): {"A100": 49.81, "V100": 89.15}, ("r", 256): {"A100": 56.73, "V100": 87.37},
                 ("t", 128): {"A100": 27.20, "V100": 73.68}, ("r", 128): {"A100": 34.23, "V100": 58.44}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = _common.parser(__doc__)
    _common.add_generator_args(ap, cfgs=("t", "r", "stylegan2"), res=64)
    ap.add_argument("--channels", type=int, default=3, help="image channels")
    ap.add_argument("--num-layers", type=int, default=14, help="StyleGAN3 synthesis layers (configs/quickstart.py: 6)")
    ap.add_argument("--margin", type=int, default=10, help="StyleGAN3 margin in pixels per side (model.margin_size)")
    ap.add_argument("--batch", type=int, default=32, help="global batch")
    ap.add_argument("--devices", type=int, default=0, help="devices in the data mesh (0 = all); on the CPU, "
                                                           "N > 1 simulates N host devices")
    ap.add_argument("--gamma", type=float, default=2.0, help="R1 gamma")
    ap.add_argument("--reg-interval", type=int, default=16, help="lazy R1 interval")
    ap.add_argument("--g-reg-interval", type=int, default=4, help="lazy path-length reg interval (stylegan2 only)")
    ap.add_argument("--mbstd-group", type=int, default=4, help="minibatch-stddev group size")
    ap.add_argument("--impl", choices=["fast", "ref"], default="fast", help="filtered_lrelu implementation")
    ap.add_argument("--bf16", action="store_true", help="bf16 in the highest-resolution layers of G and D")
    ap.add_argument("--runs", type=int, default=5, help="timed calls per variant (after one warm-up)")
    ap.add_argument("--precompile", action="store_true",
                    help="compile every program ahead of time as the training loop does (TrainStep.precompile: "
                         "compiles overlap in worker threads) and report that wall time as the compile total")
    ap.add_argument("--fixed-variants", action="store_true",
                    help="each phase combination as one compiled program (the loop before round 10) instead of "
                         "the loop's main program followed by the Dreg program")
    return ap.parse_args(argv)


def build(args: argparse.Namespace) -> dict | None:
    """G, D, train config, initial state, the train step and one placed random batch for these arguments (None if
    fewer devices than ``--devices`` exist). Also used by ``benchmarks/performance.py``."""
    import jax
    import numpy as np

    from stylegan_jax.models import build_generator
    from stylegan_jax.networks.discriminator import Discriminator
    from stylegan_jax.train.state import TrainConfig, create_train_state
    from stylegan_jax.train.step import make_mesh, make_train_step

    devices = jax.devices()[: args.devices] if args.devices else jax.devices()
    if args.devices and len(devices) < args.devices:
        print(f"only {len(devices)} devices available, asked for {args.devices}", file=sys.stderr)
        return None
    mesh = make_mesh(devices)
    sg2 = args.cfg == "stylegan2"
    # StyleGAN2: the official --cfg=stylegan2 options (style mixing 0.9, path-length weight 2, G lr 0.002).
    sg2_options = dict(g_reg_interval=args.g_reg_interval, pl_weight=2.0, style_mixing_prob=0.9, g_lr=0.002)
    tc = TrainConfig(batch_size=args.batch, r1_gamma=args.gamma, d_reg_interval=args.reg_interval, bf16=args.bf16,
                     **(sg2_options if sg2 else {}))
    G = build_generator(cfg=args.cfg, z_dim=args.z_dim, w_dim=args.z_dim, img_resolution=args.res,
                        img_channels=args.channels, channel_base=args.cbase, channel_max=args.cmax,
                        mapping_layers=args.map_layers, impl=args.impl, num_layers=args.num_layers,
                        margin_size=args.margin, magnitude_ema_beta=tc.resolved_magnitude_ema_beta)
    D = Discriminator(c_dim=0, img_resolution=args.res, img_channels=args.channels, channel_base=args.cbase,
                      channel_max=args.cmax, mbstd_group_size=args.mbstd_group)

    t0 = time.perf_counter()
    state = create_train_state(G, D, tc, jax.random.PRNGKey(0), mesh=mesh)
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0
    step = make_train_step(G, D, tc, mesh)
    real = np.random.default_rng(0).uniform(-1, 1, (args.batch, args.channels, args.res, args.res))
    batch = step.place_batch({"real": real.astype(np.float32), "c": np.zeros((args.batch, 0), np.float32)})

    return {"G": G, "D": D, "tc": tc, "state": state, "step": step, "batch": batch, "init_s": init_s,
            "devices": devices, "mesh": mesh}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.devices > 1:
        # Must be set before JAX starts; only affects the CPU platform.
        flag = f"--xla_force_host_platform_device_count={args.devices}"
        os.environ["XLA_FLAGS"] = " ".join(f for f in (os.environ.get("XLA_FLAGS"), flag) if f)
    from stylegan_jax.utils.runtime import maybe_reexec_with_hugepages

    maybe_reexec_with_hugepages()

    import jax

    built = build(args)
    if built is None:
        return 2
    devices, tc, state, step, batch, init_s = (built[k] for k in ("devices", "tc", "state", "step", "batch", "init_s"))
    sg2 = args.cfg == "stylegan2"
    precompile_s = None
    if args.precompile and not args.fixed_variants:
        t0 = time.perf_counter()
        step.precompile(state, batch)
        precompile_s = time.perf_counter() - t0

    def call(iteration: int, kind: tuple[bool, bool]):
        if args.fixed_variants:
            return step.variant(*kind)(state, batch, None)
        return step.run_phases(state, batch, *kind)  # the same phases again, whatever state.step

    def timed(fn_iteration: int, kind: tuple[bool, bool]) -> tuple[float, list[float]]:
        nonlocal state
        t0 = time.perf_counter()
        state, metrics = call(fn_iteration, kind)  # first call compiles
        jax.block_until_ready(metrics)
        first = time.perf_counter() - t0
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            state, metrics = call(fn_iteration, kind)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t0)
        if not bool(metrics["finite"]):
            print("warning: non-finite step (state not updated)", file=sys.stderr)
        assert float(metrics["Progress/reg"]) == float(kind[0]), "the program ran other phases than asked"
        return first - statistics.median(times), times

    # Which variant each iteration of one regularization period runs, and one iteration to time it with.
    period = math.lcm(max(args.reg_interval, 1), max(tc.g_reg_interval or 1, 1))
    kinds = [(step.wants_reg(i), step.wants_g_reg(i)) for i in range(period)]
    names = {(False, False): "main", (True, False): "reg", (False, True): "greg", (True, True): "reg+greg"}
    timings = {}
    for kind in dict.fromkeys(kinds):
        compile_s, times = timed(kinds.index(kind), kind)
        timings[names[kind]] = (compile_s, times, statistics.median(times))
    s_iter = sum(timings[names[k]][2] for k in kinds) / period
    s_main = timings["main"][2]
    s_reg = timings["reg+greg" if sg2 else "reg"][2]
    compile_main = timings["main"][0]
    compile_reg = timings["reg+greg" if sg2 else "reg"][0]
    # Each first call compiled what it newly needed; after --precompile they found their programs compiled (what
    # their figures show is run time: the first execution's excess and noise).
    compile_total = sum(v[0] for v in timings.values()) if precompile_s is None else precompile_s
    img_s = args.batch / s_iter
    backend = jax.default_backend()
    kind = str(devices[0].device_kind)
    result = {
        "cfg": args.cfg, "res": args.res, "cbase": args.cbase, "cmax": args.cmax, "map_layers": args.map_layers,
        "z_dim": args.z_dim, "num_layers": args.num_layers, "margin": args.margin, "batch": args.batch,
        "devices": len(devices), "impl": args.impl, "bf16": args.bf16, "fixed_variants": args.fixed_variants,
        "gamma": args.gamma, "reg_interval": args.reg_interval,
        "g_reg_interval": tc.g_reg_interval, "period": period,
        "variants": {k: {"compile_s": v[0], "median_s": v[2]} for k, v in timings.items()},
        "s_per_iter": s_iter, "s_main": s_main,
        "s_reg": s_reg, "img_per_s": img_s, "s_per_kimg": 1000 / img_s, "compile_main_s": compile_main,
        "compile_reg_s": compile_reg, "compile_total_s": compile_total, "precompile_s": precompile_s,
        "init_s": init_s, "runs": args.runs,
        **_common.machine(),
    }
    ref = OFFICIAL_1GPU.get((args.cfg, args.res))
    arch = "StyleGAN2" if sg2 else f"StyleGAN3-{args.cfg.upper()}"
    rows = [("config", f"{arch} {args.res}px cbase={args.cbase} cmax={args.cmax} "
                       f"map={args.map_layers} z={args.z_dim} batch={args.batch} impl={args.impl}"
                       f"{'' if sg2 else f' layers={args.num_layers} margin={args.margin}'}"
                       f"{' bf16' if args.bf16 else ''}"),
            ("devices", f"{len(devices)} x {backend} / {kind}"),
            ("compile", (f"ahead of time (precompile) {precompile_s:.1f} s" if precompile_s is not None else
                         ", ".join(f"{k} {v[0]:.1f} s" for k, v in timings.items())) +
             f", total {compile_total:.1f} s (init {init_s:.1f} s)"),
            *[(f"s/iter {k}", f"{v[2]:.4f}  (min {min(v[1]):.4f}, {args.runs} runs)") for k, v in timings.items()],
            (f"s/iter (avg over {period})", f"{s_iter:.4f}"),
            ("images/s", f"{img_s:.2f}"),
            ("s/kimg", f"{1000 / img_s:.2f}")]
    if ref:
        rows.append(("official s/kimg", ", ".join(f"{g} {v}" for g, v in ref.items()) +
                     " (1 GPU, batch 32, official channels)"))
    _common.print_rows(rows)
    _common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
