"""Training-quality benchmark: train the quickstarts and record the synthetic-shapes quality curve against kimg.

Each config is trained from scratch with the real training loop (``stylegan_jax.train.loop.train``) and the
``shapes`` metric every ``--metrics-kimg`` (:mod:`stylegan_jax.metrics.shape_quality`: shape precision, FID/KID
in the shape classifier's feature space, class histogram of G_ema's samples). The script prints one table per
config (kimg, shape precision, FID, KID, wall-clock seconds since the start, training seconds) and a summary
(steady-state s/kimg, the first kimg with precision >= the target and the time it took), and writes everything
as JSON. Each run's workdir keeps its grids, ``images/quality.png`` and ``metrics.jsonl``.

  python benchmarks/quality.py --kimg 8 --json benchmarks/results/quality_cpu2.json
  python benchmarks/quality.py --configs configs/quickstart.py --kimg 4 --metrics-kimg 0.5 --config.train.r1_gamma=0.01
  python benchmarks/quality.py --from-workdir runs/quickstart      # the table of a run made elsewhere (no training)

Wall-clock figures depend on the machine and on its load: the JSON records the CPU count and the load average
before and after each run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import _common

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = ("configs/quickstart.py", "configs/quickstart_stylegan2.py")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = _common.parser(__doc__)
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="comma-separated config files")
    ap.add_argument("--kimg", type=float, default=None, help="train this long (default: each config's total_kimg)")
    ap.add_argument("--metrics-kimg", type=float, default=None,
                    help="evaluate every N kimg (default: the config's log.metrics_kimg, or 1 if it has none)")
    ap.add_argument("--metrics-num", type=int, default=None, help="samples per evaluation (default: the config's)")
    ap.add_argument("--target", type=float, default=0.8, help="shape precision to report the time to (default 0.8)")
    ap.add_argument("--workdir", default="runs/bench_quality", help="one subdirectory per config (started afresh)")
    ap.add_argument("--from-workdir", default=None,
                    help="train nothing: print (and with --json write) the curve of an existing run's metrics.jsonl")
    args, extra = ap.parse_known_args(argv)
    bad = [a for a in extra if not a.startswith("--config.")]
    if bad:
        ap.error(f"unrecognized arguments: {' '.join(bad)} (config overrides look like --config.train.r1_gamma=0.01)")
    args.overrides = extra  # --config.key=value, applied to every config
    return args


def run_one(config_path: str, args: argparse.Namespace) -> dict:
    from stylegan_jax.config import apply_overrides, load_config
    from stylegan_jax.train.loop import train

    c = load_config(REPO / config_path if not Path(config_path).is_absolute() else config_path)
    if args.kimg is not None:
        c.train.total_kimg = args.kimg
    c.log.metrics = "shapes"
    if args.metrics_kimg is not None or c.log.metrics_kimg <= 0:
        c.log.metrics_kimg = args.metrics_kimg if args.metrics_kimg is not None else 1.0
    if args.metrics_num is not None:
        c.log.metrics_num = args.metrics_num
    c.log.progress_bar = False
    c = apply_overrides(c, args.overrides)
    workdir = Path(args.workdir) / Path(config_path).stem
    if workdir.exists():
        shutil.rmtree(workdir)
    load_before = os.getloadavg()
    start = time.time()
    stamps: list[tuple[float, str]] = []

    def log(line: str) -> None:
        stamps.append((time.time() - start, line))
        print(f"[{Path(config_path).stem} {time.time() - start:7.1f} s] {line}", flush=True)

    train(c, workdir, resume=False, log=log)
    wall = time.time() - start
    records = [json.loads(s) for s in (workdir / "metrics.jsonl").read_text().splitlines()]
    ticks = [r for r in records if "Timing/sec_per_kimg" in r]
    evals = [r for r in records if "Metrics/shapes_precision" in r]
    # Wall-clock time of each evaluation: the moment its line was printed.
    eval_times = [t for t, line in stamps if line.startswith("shapes precision")]
    steady = [r["Timing/sec_per_kimg"] for r in ticks[1:]] or [r["Timing/sec_per_kimg"] for r in ticks]
    curve = []
    for i, r in enumerate(evals):
        curve.append({"kimg": r["kimg"], "precision": r["Metrics/shapes_precision"], "fid": r["Metrics/shapes_fid"],
                      "kid": r["Metrics/shapes_kid"],
                      "hist": [r[f"Metrics/shapes_{n}"] for n in ("circle", "square", "triangle", "other")],
                      "wall_s": round(eval_times[i], 1) if i < len(eval_times) else None})
    reached = next((p for p in curve if p["precision"] >= args.target), None)
    grids = sorted((workdir / "images").glob("fakes_0*.png"))
    return {
        "config": config_path, "cfg": c.model.cfg, "total_kimg": c.train.total_kimg, "batch": c.train.batch_size,
        "metrics_kimg": c.log.metrics_kimg, "metrics_num": c.log.metrics_num, "wall_s": round(wall, 1),
        "s_per_kimg_steady": round(statistics.median(steady), 2) if steady else None,
        "target": args.target, "first_kimg_at_target": reached["kimg"] if reached else None,
        "wall_s_at_target": reached["wall_s"] if reached else None,
        "final": curve[-1] if curve else None, "curve": curve, "workdir": str(workdir),
        "last_grid": str(grids[-1]) if grids else None, "quality_png": str(workdir / "images" / "quality.png"),
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def from_workdir(workdir: str | Path, target: float) -> dict:
    """The result of :func:`run_one` for a run made elsewhere (e.g. ``stylegan-jax train``, resumed or not), read
    from its ``metrics.jsonl`` and ``config.json``; no wall-clock times (an evaluation of a resumed run appears once,
    its last record)."""
    workdir = Path(workdir)
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --from-workdir needs a training run's workdir")
    records = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    config = json.loads((workdir / "config.json").read_text()) if (workdir / "config.json").is_file() else {}
    ticks = [r["Timing/sec_per_kimg"] for r in records if "Timing/sec_per_kimg" in r]
    evals = {round(r["kimg"], 3): r for r in records if "Metrics/shapes_precision" in r}
    if not evals:
        raise ValueError(f"{path} has no shapes evaluation (log.metrics='shapes' with log.metrics_kimg > 0)")
    curve = [{"kimg": r["kimg"], "step": r.get("step"), "precision": r["Metrics/shapes_precision"],
              "fid": r["Metrics/shapes_fid"], "kid": r["Metrics/shapes_kid"],
              "hist": [r[f"Metrics/shapes_{n}"] for n in ("circle", "square", "triangle", "other")], "wall_s": None}
             for _, r in sorted(evals.items())]
    reached = next((p for p in curve if p["precision"] >= target), None)
    grids = sorted((workdir / "images").glob("fakes_0*.png"))
    return {
        "config": str(workdir), "cfg": config.get("model", {}).get("cfg"),
        "total_kimg": config.get("train", {}).get("total_kimg"), "batch": config.get("train", {}).get("batch_size"),
        "metrics_kimg": config.get("log", {}).get("metrics_kimg"),
        "metrics_num": config.get("log", {}).get("metrics_num"), "wall_s": None,
        "s_per_kimg_steady": round(statistics.median(ticks[1:] or ticks), 2) if ticks else None,
        "target": target, "first_kimg_at_target": reached["kimg"] if reached else None, "wall_s_at_target": None,
        "final": curve[-1], "curve": curve, "workdir": str(workdir), "last_grid": str(grids[-1]) if grids else None,
        "quality_png": str(workdir / "images" / "quality.png"), "loadavg_before": None,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def table(result: dict) -> str:
    rows = [("kimg", "precision", "FID", "KID", "wall s")]
    for p in result["curve"]:
        rows.append((f"{p['kimg']:.2f}", f"{p['precision']:.3f}", f"{p['fid']:.2f}", f"{p['kid']:.4f}",
                     "-" if p["wall_s"] is None else f"{p['wall_s']:.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"{result['config']} ({result['cfg']}, batch {result['batch']}, {result['metrics_num']} samples per "
             f"point)"]
    lines += ["  ".join(f"{v:>{w}}" for v, w in zip(r, widths, strict=True)) for r in rows]
    at = result["first_kimg_at_target"]
    total = "" if result["wall_s"] is None else f"total {result['wall_s']:.0f} s; "
    when = "" if result["wall_s_at_target"] is None else f" ({result['wall_s_at_target']:.0f} s)"
    lines.append(f"steady {result['s_per_kimg_steady']} s/kimg; {total}precision >= {result['target']} "
                 + (f"at {at:.2f} kimg{when}" if at is not None else "not reached"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    results = []
    if args.from_workdir:
        results.append(from_workdir(args.from_workdir, args.target))
        print(table(results[-1]), flush=True)
    for config_path in ([] if args.from_workdir else [s.strip() for s in args.configs.split(",") if s.strip()]):
        results.append(run_one(config_path, args))
        print(table(results[-1]), flush=True)
    _common.write_json(args.json, {"results": results, "machine": _common.machine(),
                                   "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
