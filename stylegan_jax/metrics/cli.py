"""``stylegan-jax metrics``: equivariance metrics (EQ-T, EQ-T_frac, EQ-R) and FID/KID of a checkpoint's generator.

Example::

    stylegan-jax metrics --ckpt runs/afhq --metrics eqt_int,eqt_frac,eqr --num 50000 --json eq.json
    stylegan-jax metrics --ckpt runs/afhq --metrics fid50k_full,kid50k_full --inception pt_inception.pth \
        --data /data/afhq.zip

Prints a table (equivariance as PSNR in dB, higher = more equivariant; FID/KID unitless, lower =
closer to the data) and optionally writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from stylegan_jax.metrics.equivariance import METRICS
from stylegan_jax.metrics.fid import add_fid_arguments, is_fid_metric

# Names the paper uses for each metric.
DISPLAY_NAMES = {"eqt_int": "EQ-T", "eqt_frac": "EQ-T_frac", "eqr": "EQ-R"}


def _metrics_arg(s: str) -> list[str]:
    names = [m.strip() for m in s.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS and not is_fid_metric(m)]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown metric(s) {unknown or [s]}; choose from {','.join(METRICS)}, "
                                         "fid50k_full, kid50k_full (or fid<N>k, kid<N>k)")
    return list(dict.fromkeys(names))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``stylegan-jax metrics``."""
    parser.add_argument("--ckpt", required=True, metavar="PATH",
                        help="checkpoint: a training workdir, its checkpoints/ directory, one step directory, or the "
                             "output of 'stylegan-jax convert'")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--network", choices=("G_ema", "G"), default="G_ema",
                        help="which generator weights to evaluate (default: G_ema)")
    parser.add_argument("--metrics", type=_metrics_arg, default=list(METRICS), metavar="LIST",
                        help=f"comma-separated subset of {','.join(METRICS)} (default: all)")
    parser.add_argument("--num", type=int, default=50000, metavar="N",
                        help="number of generated samples (default 50000, as in the paper)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for latents and transforms (default 0)")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per compiled step (default 16)")
    parser.add_argument("--psi", type=float, default=1.0, help="truncation psi (default 1: none, as in the paper)")
    parser.add_argument("--translate-max", type=float, default=0.125,
                        help="largest translation as a fraction of the image size (default 0.125)")
    parser.add_argument("--rotate-max", type=float, default=1.0,
                        help="largest rotation as a fraction of pi (default 1)")
    parser.add_argument("--shard", action=argparse.BooleanOptionalAction, default=None,
                        help="split each batch over all local devices (default: when there is more than one)")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the results to this JSON file")
    add_fid_arguments(parser)


def format_table(results: dict[str, float]) -> str:
    """Plain-text table of metric -> PSNR."""
    rows = [("metric", "name", "value")]
    rows += [(m, DISPLAY_NAMES.get(m, m), f"{v:.3f} dB" if m in METRICS else f"{v:.4f}") for m, v in results.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows)


def _run(args: argparse.Namespace) -> None:
    if args.num < 1:
        raise ValueError("--num must be >= 1")
    if args.batch_size < 1:
        raise ValueError("--batch-size must be >= 1")

    import jax
    import numpy as np

    from stylegan_jax.checkpoint import load_generator  # lazy: orbax is slow to import
    from stylegan_jax.metrics.equivariance import compute_equivariance

    G, variables = load_generator(args.ckpt, step=args.step, which=args.network)
    print(f"loaded {args.network} ({G.img_resolution}x{G.img_resolution}) from {args.ckpt}", file=sys.stderr)

    mesh = None
    devices = jax.devices()
    shard = args.shard if args.shard is not None else len(devices) > 1
    if shard:
        if args.batch_size % len(devices):
            raise ValueError(f"--batch-size {args.batch_size} must be divisible by the {len(devices)} devices "
                             "to shard (or pass --no-shard)")
        mesh = jax.sharding.Mesh(np.array(devices), ("data",))

    last_report = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.time()
        if done == total or now - last_report[0] > 10:
            last_report[0] = now
            print(f"  {done}/{total} samples", file=sys.stderr)

    start = time.time()
    results: dict[str, float] = {}
    eq_metrics = [m for m in args.metrics if m in METRICS]
    if eq_metrics and not hasattr(G, "synthesis_kwargs"):
        raise ValueError(f"{', '.join(eq_metrics)}: the equivariance metrics need a StyleGAN3 generator (an input "
                         f"transform); this checkpoint holds a {type(G).__name__}. Choose FID/KID with --metrics "
                         "fid50k_full,kid50k_full")
    if eq_metrics:
        results.update(compute_equivariance(G, variables, args.num, seed=args.seed, batch_size=args.batch_size,
                                            metrics=eq_metrics, truncation_psi=args.psi, mesh=mesh,
                                            translate_max=args.translate_max, rotate_max=args.rotate_max,
                                            progress=progress))
    if any(is_fid_metric(m) for m in args.metrics):
        from stylegan_jax.metrics.fid import fid_command

        results.update(fid_command(args, G, variables))
    seconds = time.time() - start
    print(format_table(results))
    print(f"({args.num} samples, seed {args.seed}, {seconds:.1f} s)", file=sys.stderr)

    if args.json is not None:
        report = {
            "ckpt": str(Path(args.ckpt).absolute()), "step": args.step, "network": args.network,
            "num_samples": args.num, "seed": args.seed, "truncation_psi": args.psi,
            "translate_max": args.translate_max, "rotate_max": args.rotate_max,
            # Non-finite PSNRs (identical images, empty masks) are not valid JSON numbers.
            "results": {m: (v if math.isfinite(v) else None) for m, v in results.items()},
            "results_display": {DISPLAY_NAMES.get(m, m): (v if math.isfinite(v) else None)
                                for m, v in results.items()},
            "units": {m: ("dB" if m in METRICS else None) for m in results}, "seconds": round(seconds, 3),
        }
        out = Path(args.json)
        if out.parent != Path(""):
            out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)


def command(args: argparse.Namespace) -> int:
    """Run ``stylegan-jax metrics``; returns the exit status (errors are reported on stderr, status 1)."""
    # CheckpointError is a ValueError; ImportError covers a build without the checkpoint module.
    try:
        _run(args)
    except (ImportError, ValueError, RuntimeError, OSError) as e:
        print(f"stylegan-jax metrics: error: {e}", file=sys.stderr)
        return 1
    return 0
