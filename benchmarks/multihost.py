"""Multi-process training: seconds per iteration on 1 process x 4 CPU devices vs 2 x 2, and the step's memory.

The ratio of the two is the cost of the cross-process all-reduce through gloo; the memory is the peak of the
compiled step with and without micro-batches (``train.batch_per_device``, XLA's memory analysis).

    python benchmarks/multihost.py [--steps 10] [--repeats 2] [--json benchmarks/results/multihost_cpu.json]

The model is the tests' tiny StyleGAN3-T (32px, 4 layers, channel_max 16) at batch 8; steps are timed after
compilation (the first two iterations, one of each variant, are not timed). The two topologies run alternately
(``--repeats`` rounds of 1 x 4 then 2 x 2, sharing a compilation cache), so that a changing machine load affects
both; the table gives each round and the ratio within it, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (the benchmarks' folder, put on the path just above)


def tiny_config(batch: int):
    from stylegan_jax.config import base_config

    c = base_config()
    c.model.update(z_dim=16, w_dim=16, mapping_layers=2, num_layers=4, channel_base=512, channel_max=16,
                   d_channel_base=512, d_channel_max=16, mbstd_group_size=2)
    c.data.update(source="synthetic", resolution=32, synthetic_size=64, prefetch=2)
    c.train.update(batch_size=batch, r1_gamma=0.05, d_reg_interval=2)
    return c


def worker(steps: int, batch: int) -> dict:
    from stylegan_jax.train import distributed

    distributed.maybe_initialize_distributed()
    import jax
    import numpy as np

    from stylegan_jax.train.loop import compile_programs, plan, setup

    run = setup(tiny_config(batch), Path(os.environ["BENCH_WORKDIR"]), log=lambda s: None)
    plan(run, steps + 2)
    compile_programs(run)
    times = []
    for i in range(steps + 2):
        batch_ = next(run.data)
        t0 = time.perf_counter()
        run.state, metrics = run.step_fn(run.state, batch_, i)
        jax.block_until_ready(run.state)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    run.data.close()
    run.manager.close()
    return {"processes": jax.process_count(), "devices": jax.device_count(), "batch": batch,
            "s_per_iter_median": float(np.median(times)), "s_per_iter_mean": float(np.mean(times)),
            "steps_timed": steps}


def memory(batch: int, per_device: int) -> dict:
    """Peak memory (XLA memory analysis of the compiled step with Dreg) on 1 device."""
    import jax
    import jax.numpy as jnp

    from stylegan_jax.train.loop import build_networks, resolve_config
    from stylegan_jax.train.state import create_train_state
    from stylegan_jax.train.step import make_mesh, make_train_step

    c = resolve_config(tiny_config(batch))
    G, D = build_networks(c, 0)
    mesh = make_mesh(jax.devices()[:1])
    state = create_train_state(G, D, c, jax.random.PRNGKey(0), mesh=mesh)
    step = make_train_step(G, D, c, mesh, batch_per_device=per_device)
    spec = {"real": jax.ShapeDtypeStruct((batch, 3, 32, 32), jnp.float32, sharding=step.batch_sharding),
            "c": jax.ShapeDtypeStruct((batch, 0), jnp.float32, sharding=step.batch_sharding)}
    ma = step.variant(True, False).lower(state, spec, None).compile().memory_analysis()
    return {"batch": batch, "batch_per_device": per_device or batch, "micro_rounds": step.micro_rounds,
            "temp_bytes": int(ma.temp_size_in_bytes), "argument_bytes": int(ma.argument_size_in_bytes),
            "output_bytes": int(ma.output_size_in_bytes),
            "peak_bytes": int(getattr(ma, "peak_memory_in_bytes", 0) or 0)}


def main() -> None:
    ap = _common.parser(__doc__)
    ap.set_defaults(json=str(REPO / "benchmarks" / "results" / "multihost_cpu.json"))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2, help="alternating rounds of 1 x 4 and 2 x 2")
    ap.add_argument("--skip-memory", action="store_true", help="only the step times")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", dest="json", help=argparse.SUPPRESS)  # the earlier name of --json
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--memory", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.steps, args.batch)), flush=True)
        return
    if args.memory is not None:
        print("RESULT " + json.dumps(memory(32, args.memory)), flush=True)
        return
    import tempfile

    from tests import multihost

    base = {**os.environ, "STYLEGAN_JAX_NO_REEXEC": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, __file__, "--worker", "--steps", str(args.steps), "--batch", str(args.batch)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base.update(JAX_COMPILATION_CACHE_DIR=f"{tmp}/cache", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
        for r in range(args.repeats):
            for n, devices in ((1, 4), (2, 2)):
                env = {**base, "BENCH_WORKDIR": f"{tmp}/w{n}_{r}"}
                if n == 1:
                    env["STYLEGAN_JAX_NO_DISTRIBUTED"] = "1"
                load_before = os.getloadavg()[0]
                results = multihost.run(cmd, n, devices, Path(tmp) / f"logs{n}_{r}", 3600, env=env, cwd=REPO)
                for code, _, err in results:
                    if code != 0:
                        raise SystemExit(f"{n} x {devices}: exit {code}\n{err[-3000:]}")
                row = json.loads(results[0][1].split("RESULT ", 1)[1].splitlines()[0])
                rows.append({**row, "round": r, "load1_before": load_before, "load1_after": os.getloadavg()[0]})
        mem = []
        for per_device in (() if args.skip_memory else (0, 4)):
            out = subprocess.run([sys.executable, __file__, "--memory", str(per_device)], env=base, cwd=REPO,
                                 capture_output=True, text=True, check=True).stdout
            mem.append(json.loads(out.split("RESULT ", 1)[1].splitlines()[0]))
    load = os.getloadavg()
    print("| round | processes x devices | s/iter (median) | s/iter (mean) | 2x2 / 1x4 (median) | load 1 min |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        one = next(x for x in rows if x["round"] == r["round"] and x["processes"] == 1)
        ratio = f"{r['s_per_iter_median'] / one['s_per_iter_median']:.2f}" if r["processes"] > 1 else ""
        print(f"| {r['round']} | {r['processes']} x {r['devices'] // r['processes']} | {r['s_per_iter_median']:.3f} | "
              f"{r['s_per_iter_mean']:.3f} | {ratio} | {r['load1_before']:.1f} -> {r['load1_after']:.1f} |")
    print("\n| batch | batch_per_device | rounds | temp MiB | args MiB | peak MiB |\n|---|---|---|---|---|---|")
    for m in mem:
        print(f"| {m['batch']} | {m['batch_per_device']} | {m['micro_rounds']} | {m['temp_bytes'] / 2**20:.1f} | "
              f"{m['argument_bytes'] / 2**20:.1f} | {m['peak_bytes'] / 2**20:.1f} |")
    print(f"\nload average {load}")
    _common.write_json(args.json, {"step_time": rows, "memory": mem, "loadavg": load,
                                   "machine": _common.machine(with_jax=False)})


if __name__ == "__main__":
    main()
