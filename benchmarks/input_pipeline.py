"""Images/s of the input pipeline from a zip: the Grain pipeline against the hand-rolled one it replaced.

    .venv/bin/python benchmarks/input_pipeline.py [--res 256] [--images 512] [--batch 32] [--batches 24]
        [--repeats 5] [--format png|jpeg] [--json OUT]

Writes a zip of ``--images`` photo-like images (the synthetic shapes plus sensor-like noise, so PNG decoding
costs what it costs on photos; cached next to the JSON), then, ``--repeats`` times and back to back, builds
each pipeline on it (``source=folder``, ``validate=none``, default threads and prefetch) and times
``--batches`` batches after two warm-up batches: decode, crop/resize (none: the images are stored at the
model size), x-flip, batching, uint8 -> float32 NCHW. The old pipeline is the module as of commit
:data:`LEGACY_REV`, read with ``git show`` into a temporary file (it is no longer part of the package). The
load average is recorded with every measurement: on a shared machine, compare the medians of runs taken
under similar load.
"""

from __future__ import annotations

import importlib.util
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import _common
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# The last commit with the hand-rolled pipeline (shuffling, per-host slicing, prefetch thread of its own).
LEGACY_REV = "1a45254"
LEGACY_PATH = "stylegan_jax/data/input_pipeline.py"


def legacy_module() -> ModuleType:
    """The pre-Grain ``stylegan_jax.data.input_pipeline``, loaded from git history as ``legacy_input_pipeline``."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{LEGACY_REV}:{LEGACY_PATH}"], check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="legacy_pipeline_")) / "legacy_input_pipeline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("legacy_input_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_zip(path: Path, n: int, res: int, fmt: str) -> Path:
    """``n`` photo-like ``res`` x ``res`` RGB images in ``path`` (dataset_tool.py layout), unless already there."""
    if path.exists():
        return path
    from stylegan_jax.data import SyntheticShapes

    shapes = SyntheticShapes(res, num_images=n, seed=7)
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            img = shapes.load(i)[0].astype(np.float32) + rng.normal(0, 4, (res, res, 3))
            buf = io.BytesIO()
            Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8)).save(
                buf, "PNG" if fmt == "png" else "JPEG", **({"quality": 90} if fmt == "jpeg" else {}))
            zf.writestr(f"{i // 1000:05d}/img{i:08d}.{fmt}", buf.getvalue())
    tmp.rename(path)
    return path


def measure(make_dataset: Any, path: Path, res: int, batch: int, batches: int) -> dict[str, float]:
    pipeline = make_dataset(source="folder", path=str(path), resolution=res, batch_size=batch, mirror=True,
                            validate="none", seed=1)
    try:
        for _ in range(2):
            next(pipeline)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        for _ in range(batches):
            b = next(pipeline)
            assert b.images.shape == (batch, 3, res, res)
        dt = time.perf_counter() - t0
    finally:
        pipeline.close()
    return {"images_per_s": batch * batches / dt, "seconds": dt, "load_before": load0,
            "load_after": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--res", type=int, default=256, help="image resolution")
    parser.add_argument("--images", type=int, default=512, help="images in the dataset zip")
    parser.add_argument("--batch", type=int, default=32, help="batch size")
    parser.add_argument("--batches", type=int, default=24, help="timed batches per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per pipeline, alternating")
    parser.add_argument("--format", choices=["png", "jpeg"], default="png", help="image format in the zip")
    parser.add_argument("--zip", type=Path, default=None, help="dataset zip (default: a cached one in /tmp)")
    args = parser.parse_args(argv)

    from stylegan_jax.data import make_dataset as grain_make_dataset

    legacy = legacy_module()
    zpath = args.zip or Path(tempfile.gettempdir()) / f"stylegan_jax_bench_{args.images}_{args.res}.{args.format}.zip"
    write_zip(zpath, args.images, args.res, args.format)
    pipelines = {"legacy (hand-rolled)": legacy.make_dataset, "grain": grain_make_dataset}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in pipelines}
    for r in range(args.repeats):
        order = list(pipelines) if r % 2 == 0 else list(pipelines)[::-1]  # alternate who goes first
        for name in order:
            runs[name].append(measure(pipelines[name], zpath, args.res, args.batch, args.batches))
            print(f"repeat {r + 1}/{args.repeats}  {name:22s} {runs[name][-1]['images_per_s']:8.1f} img/s  "
                  f"(load {runs[name][-1]['load_before']:.1f})", flush=True)

    summary = {}
    for name, rs in runs.items():
        ips = [x["images_per_s"] for x in rs]
        summary[name] = {"median_images_per_s": statistics.median(ips), "min": min(ips), "max": max(ips),
                         "load_median": statistics.median(x["load_before"] for x in rs)}
    legacy_ips = summary["legacy (hand-rolled)"]["median_images_per_s"]
    print(f"\n{args.res}x{args.res} {args.format} from a zip, batch {args.batch}, mirror, {args.batches} batches x "
          f"{args.repeats} repeats, {os.cpu_count()} CPUs")
    print(f"{'pipeline':24s} {'median img/s':>12s} {'min':>8s} {'max':>8s} {'vs legacy':>10s} {'load':>6s}")
    for name, s in summary.items():
        print(f"{name:24s} {s['median_images_per_s']:12.1f} {s['min']:8.1f} {s['max']:8.1f} "
              f"{s['median_images_per_s'] / legacy_ips:9.2f}x {s['load_median']:6.1f}")
    _common.write_json(args.json, {
        "benchmark": "input_pipeline", "res": args.res, "images": args.images, "format": args.format,
        "batch": args.batch, "batches": args.batches, "repeats": args.repeats, "legacy_rev": LEGACY_REV,
        "summary": summary, "runs": runs, "env": _common.machine(with_jax=False)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
