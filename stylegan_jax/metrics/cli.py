"""``stylegan-jax metrics``: equivariance metrics (EQ-T, EQ-T_frac, EQ-R) and FID/KID of a checkpoint's generator.

Example::

    stylegan-jax metrics --ckpt runs/afhq --metrics eqt_int,eqt_frac,eqr --num 50000 --json eq.json
    stylegan-jax metrics --ckpt runs/afhq --metrics fid50k_full,kid50k_full --inception pt_inception.pth \
        --data /data/afhq.zip
    stylegan-jax metrics --ckpt runs/quickstart --metrics shapes --num 1000     # synthetic shapes, no download

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
from typing import Any

from stylegan_jax.cli import add_checkpoint_arguments, report_errors
from stylegan_jax.metrics.equivariance import METRICS
from stylegan_jax.metrics.fid import is_fid_metric
from stylegan_jax.metrics.inception import RESIZE_MODES

# Names the paper uses for each metric.
DISPLAY_NAMES = {"eqt_int": "EQ-T", "eqt_frac": "EQ-T_frac", "eqr": "EQ-R"}
# The synthetic-shapes quality metric (stylegan_jax.metrics.shape_quality): one name, several results.
SHAPES = "shapes"


def _metrics_arg(s: str) -> list[str]:
    names = [m.strip() for m in s.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS and m != SHAPES and not is_fid_metric(m)]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown metric(s) {unknown or [s]}; choose from {','.join(METRICS)}, "
                                         f"{SHAPES}, fid50k_full, kid50k_full (or fid<N>k, kid<N>k)")
    return list(dict.fromkeys(names))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``stylegan-jax metrics``."""
    add_checkpoint_arguments(parser, "which generator weights to evaluate")
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
    g = parser.add_argument_group(f"synthetic shapes quality ({SHAPES}: shape precision, FID/KID in a shape "
                                  "classifier's feature space, class histogram; no download)")
    g.add_argument("--shapes-classifier", metavar="PATH", default=None,
                   help="classifier weights (default: the ones shipped in the package)")
    g.add_argument("--shapes-real", type=int, default=2000, metavar="N",
                   help="real images of the synthetic set (seed 0, the training set) to compare with (default 2000)")
    add_fid_arguments(parser)


def shapes_command(args: argparse.Namespace, G: Any, variables: Any, mesh: Any = None) -> dict[str, float]:
    """The ``shapes`` metric of ``G`` against the synthetic set at its resolution: ``{shapes_precision,
    shapes_fid, shapes_kid, shapes_<class>, shapes_real_<class>, ...}``."""
    from stylegan_jax.data import SyntheticShapes
    from stylegan_jax.metrics.shape_quality import ShapeQualityEvaluator, load_shape_classifier

    if args.num < 2 or args.shapes_real < 2:
        raise ValueError(f"{SHAPES} needs --num >= 2 and --shapes-real >= 2")
    classifier = load_shape_classifier(args.shapes_classifier)
    real = SyntheticShapes(int(G.img_resolution), int(G.img_channels), num_images=max(args.shapes_real, 10000),
                           use_labels=int(G.c_dim) > 0)
    if int(G.c_dim) not in (0, real.c_dim if real.use_labels else 0):
        raise ValueError(f"{SHAPES}: the generator is conditional with c_dim={G.c_dim}; the synthetic set has "
                         f"{len(real.class_names)} classes")
    evaluator = ShapeQualityEvaluator(G, real, num_real=args.shapes_real, classifier=classifier, psi=args.psi,
                                      mesh=mesh, batch_size=args.batch_size)
    return evaluator(variables, args.num, seed=args.seed).as_dict()


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
    if eq_metrics and not G.has_input_transform:
        raise ValueError(f"{', '.join(eq_metrics)}: the equivariance metrics need a StyleGAN3 generator (an input "
                         f"transform); this checkpoint holds a {type(G).__name__}. Choose FID/KID with --metrics "
                         "fid50k_full,kid50k_full")
    if eq_metrics:
        results.update(compute_equivariance(G, variables, args.num, seed=args.seed, batch_size=args.batch_size,
                                            metrics=eq_metrics, truncation_psi=args.psi, mesh=mesh,
                                            translate_max=args.translate_max, rotate_max=args.rotate_max,
                                            progress=progress))
    if SHAPES in args.metrics:
        results.update(shapes_command(args, G, variables, mesh))
    if any(is_fid_metric(m) for m in args.metrics):
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
    return report_errors("metrics", _run, args)


# --------------------------------------------------------------------------------------------------------------
# FID / KID options (``stylegan-jax metrics --metrics fid50k_full,kid50k_full --inception PATH --data ...``).


def add_fid_arguments(parser: argparse.ArgumentParser) -> None:
    """The FID/KID options of ``stylegan-jax metrics`` (the shared ones, ``--ckpt --step --network --metrics
    --seed --batch-size --psi --json``, belong to the metrics CLI)."""
    g = parser.add_argument_group("FID / KID (fid50k_full, kid50k_full, fid50k, kid50k, ...)")
    g.add_argument("--inception", metavar="PATH", default=None,
                   help="FID Inception-v3 weights: pytorch-fid's pt_inception-2015-12-05-6726825d.pth (read "
                        "without torch) or an .npz of its state dict; never downloaded")
    g.add_argument("--data", metavar="PATH", default=None,
                   help="real images: a dataset folder or .zip (dataset_tool layout), 'synthetic', or tfds:NAME")
    g.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="cache of real-data statistics (default $STYLEGAN_JAX_CACHE/gan-metrics or "
                        "~/.cache/stylegan_jax/gan-metrics)")
    g.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True,
                   help="read/write the real-data statistics cache (default on)")
    g.add_argument("--resize-mode", choices=RESIZE_MODES, default="pytorch-fid",
                   help="how images are resized to 299x299 (see stylegan_jax.metrics.inception)")
    g.add_argument("--kid-subsets", type=int, default=100, help="KID subsets (default 100)")
    g.add_argument("--kid-subset-size", type=int, default=1000, help="KID max subset size (default 1000)")


def _open_data(spec: str, G: Any) -> Any:
    from stylegan_jax.data import make_source

    common = dict(resolution=int(G.img_resolution), channels=int(G.img_channels), use_labels=int(G.c_dim) > 0)
    if spec == "synthetic":
        return make_source(source="synthetic", **common)
    if spec.startswith("tfds:"):
        return make_source(source="tfds", tfds_name=spec[len("tfds:"):], **common)
    if not Path(spec).expanduser().exists():
        raise ValueError(f"--data {spec!r}: no such dataset folder or .zip")
    return make_source(source="folder", path=str(Path(spec).expanduser()), **common)


def fid_command(args: argparse.Namespace, G: Any = None, variables: Any = None) -> dict[str, float]:
    """Run the FID/KID metrics named in ``args.metrics`` (a list or comma-separated string; other names are
    skipped) and print one official-style JSON line per metric. Uses ``args.ckpt`` / ``args.step`` /
    ``args.network`` to load the generator unless ``G, variables`` are given, plus ``args.seed``,
    ``args.batch_size``, ``args.psi`` and the options of :func:`add_fid_arguments`. Returns ``{name: value}``."""
    names = args.metrics.split(",") if isinstance(args.metrics, str) else list(args.metrics)
    names = [n.strip() for n in names if n.strip() and is_fid_metric(n.strip())]
    if not names:
        return {}
    if not getattr(args, "inception", None):
        raise ValueError(f"{','.join(names)} need --inception PATH (pytorch-fid's "
                         "pt_inception-2015-12-05-6726825d.pth or an .npz of it)")
    if not getattr(args, "data", None):
        raise ValueError(f"{','.join(names)} need --data (the real images: dataset folder or .zip)")
    from stylegan_jax.metrics.fid import compute_fid_kid, default_cache_dir
    from stylegan_jax.metrics.inception import load_inception_weights

    inception_vars = load_inception_weights(args.inception)  # fail on bad weights before loading anything else
    if G is None:
        from stylegan_jax.checkpoint import load_generator  # lazy: orbax is slow to import

        G, variables = load_generator(args.ckpt, step=getattr(args, "step", None),
                                      which=getattr(args, "network", "G_ema"))
    source = _open_data(args.data, G)
    cache_dir = None
    if getattr(args, "cache", True):
        cache_dir = Path(args.cache_dir).expanduser() if getattr(args, "cache_dir", None) else default_cache_dir()
    last = [0.0]

    def progress(tag: str, done: int, total: int | None) -> None:
        now = time.time()
        if done == total or now - last[0] > 10:
            last[0] = now
            print(f"  {tag}: {done}/{total if total is not None else '?'}", file=sys.stderr)

    start = time.time()
    results = compute_fid_kid(G, variables, source, inception_vars, names, batch_size=int(args.batch_size),
                              psi=float(getattr(args, "psi", 1.0)), seed=int(getattr(args, "seed", 0)),
                              num_subsets=int(getattr(args, "kid_subsets", 100)),
                              max_subset_size=int(getattr(args, "kid_subset_size", 1000)), cache_dir=cache_dir,
                              resize_mode=getattr(args, "resize_mode", "pytorch-fid"), progress=progress)
    seconds = time.time() - start
    for name, value in results.items():
        print(json.dumps(dict(results={name: value}, metric=name, total_time=round(seconds, 3),
                              snapshot=str(getattr(args, "ckpt", "")), data=str(args.data),
                              inception=str(args.inception), timestamp=time.time())))
    return results
