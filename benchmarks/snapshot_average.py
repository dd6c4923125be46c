"""Would a longer G EMA score better? Average the saved G_ema snapshots of a run over windows that end at its last
checkpoint and score each average with the synthetic-shapes metric, as the training loop scores G_ema (the same
latents, labels and real features: seed = the run's train.seed), next to the last G_ema and the raw G.

    python benchmarks/snapshot_average.py --workdir runs/quickstart --windows 4,8,12 --json out.json

A window of W kimg averages the snapshots saved in the last W kimg (keep them: ``--config.log.keep_checkpoints``),
a rough stand-in for a G_ema with a half-life of about W / 2 kimg more than the run's own."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np
from _common import write_json

from stylegan_jax.checkpoint import load_checkpoint_meta, load_generator
from stylegan_jax.data.input_pipeline import make_source
from stylegan_jax.metrics.shape_quality import ShapeQualityEvaluator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True, help="a training run's workdir (config.json, checkpoints/)")
    ap.add_argument("--windows", default="4,8", help="comma-separated window lengths in kimg")
    ap.add_argument("--num", default="300,1000", help="comma-separated sample counts to score each with")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    workdir = Path(args.workdir)
    config = json.loads((workdir / "config.json").read_text())
    ckpts = workdir / "checkpoints"
    steps = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    if not steps:
        raise SystemExit(f"{ckpts}: no checkpoints")
    kimg = {s: float(load_checkpoint_meta(ckpts, s)["kimg"]) for s in steps}
    last = steps[-1]
    seed = int(config["train"]["seed"])
    G, last_g_ema = load_generator(ckpts, last)
    evaluator = ShapeQualityEvaluator(G, make_source(config["data"]), num_real=1000, batch_size=64)
    loaded = {(last, "G_ema"): last_g_ema}

    def load(step: int, which: str = "G_ema") -> dict:
        # The windows overlap (each ends at the last snapshot): read each snapshot once.
        if (step, which) not in loaded:
            loaded[(step, which)] = load_generator(ckpts, step, which=which)[1]
        return loaded[(step, which)]

    def mean_of(snapshots: list[dict]) -> dict:
        out = dict(snapshots[-1])  # the EMA collections (w_avg, magnitude_ema) of the last snapshot
        out["params"] = jax.tree.map(lambda *a: np.mean(np.stack(a), axis=0), *[v["params"] for v in snapshots])
        return out

    candidates = [(f"G_ema at {kimg[last]:g} kimg", [last], lambda: load(last)),
                  (f"G (raw) at {kimg[last]:g} kimg", [last], lambda: load(last, "G"))]
    for window in (float(w) for w in args.windows.split(",")):
        chosen = [s for s in steps if kimg[s] >= kimg[last] - window - 1e-9]
        candidates.append((f"mean of G_ema {kimg[chosen[0]]:g}-{kimg[last]:g} kimg ({len(chosen)} snapshots)",
                           chosen, lambda chosen=chosen: mean_of([load(s) for s in chosen])))
    rows = []
    print(f"{'weights':56s} {'samples':>7s} {'precision':>9s} {'FID':>8s}  circle/square/triangle/other")
    for name, used, make in candidates:
        variables = make()
        for num in (int(n) for n in args.num.split(",")):
            q = evaluator(variables, num, seed=seed)
            rows.append({"weights": name, "steps": used, "num": num, **q.as_dict()})
            print(f"{name:56s} {num:7d} {q.precision:9.3f} {q.fid:8.1f}  "
                  + " ".join(f"{h:.2f}" for h in q.hist), flush=True)
    if args.json:
        write_json(args.json, {"workdir": str(workdir), "seed": seed, "rows": rows})


if __name__ == "__main__":
    main()
