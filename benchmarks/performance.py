"""Trace size, compile time and run time of the training step and the generator (issue 17), in one table.

    .venv/bin/python benchmarks/performance.py [--quick] [--ops new|old] [--compare] [--json OUT]

For one version of the low-level ops (``--ops new``: the working tree; ``--ops old``: ``upfirdn2d``,
``filtered_lrelu`` and ``bias_act`` as of commit ``--legacy-rev``, read with ``git show`` and swapped in for the
current functions everywhere the package imported them), it measures:

- the number of primitives (jaxpr equations, counted recursively through every sub-jaxpr: jit, custom VJPs,
  scans, conditionals) of the design-config generator forward and of the training step (the ``reg`` variant:
  Gmain + Dmain + Dreg);
- the cold compile time of that training step (trace + lower + XLA compile, persistent compilation cache off);
- seconds per call of the compiled ``reg`` step (median of ``--runs``, after one warm-up);
- the generator forward (design config: StyleGAN3-T 256, z = w = 512, 8 mapping layers, batch 1) against its
  FLOP floor: the convolution FLOPs of the layer schedule (and XLA's own cost-analysis count) divided by the fp32
  matrix-multiply rate this machine reaches in the same run (a large ``jnp.dot``, best of a few).

The training configuration is the one of issue 17 (``benchmarks/train_step.py`` arguments: ``--cfg t --res 64
--cbase 8192 --cmax 256 --map-layers 2 --z-dim 256 --batch 8 --gamma 1 --reg-interval 2``); ``--quick`` shrinks it
and the generator (for iterating on a loaded 2-core machine). ``--compare`` runs ``old`` and ``new`` each in a
fresh process, alternating, ``--repeats`` times, and prints both with their ratios. Every row records the load
average (``os.getloadavg``) at its start.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (the benchmarks' folder, put on the path just above)

# The ops before issue 17 (sum-of-slices polyphase FIR, filtered lrelu differentiated by autodiff).
LEGACY_REV = "9ef5a58"
LEGACY_FILES = {"upfirdn2d": "stylegan_jax/ops/upfirdn2d.py", "filtered_lrelu": "stylegan_jax/ops/filtered_lrelu.py",
                "bias_act": "stylegan_jax/ops/bias_act.py"}
# Issue 17's training configuration (benchmarks/train_step.py arguments) and a small one for --quick.
TRAIN_ARGS = ["--cfg", "t", "--res", "64", "--cbase", "8192", "--cmax", "256", "--map-layers", "2", "--z-dim", "256",
              "--batch", "8", "--gamma", "1", "--reg-interval", "2"]
TRAIN_ARGS_QUICK = ["--cfg", "t", "--res", "32", "--cbase", "2048", "--cmax", "64", "--map-layers", "2", "--z-dim",
                    "64", "--batch", "4", "--gamma", "1", "--reg-interval", "2"]
# Generator forward: the design config, and a small one for --quick.
GEN = {"cfg": "t", "res": 256, "cbase": 32768, "cmax": 512, "map_layers": 8, "z_dim": 512, "batch": 1}
GEN_QUICK = {"cfg": "t", "res": 64, "cbase": 8192, "cmax": 256, "map_layers": 2, "z_dim": 256, "batch": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = _common.parser(__doc__)
    ap.add_argument("--ops", choices=["new", "old"], default="new", help="which version of the ops to measure")
    ap.add_argument("--compare", action="store_true", help="measure old and new, each in a fresh process")
    ap.add_argument("--repeats", type=int, default=1, help="with --compare: old/new pairs to run (alternating)")
    ap.add_argument("--legacy-rev", default=LEGACY_REV, help="commit holding the old ops")
    ap.add_argument("--quick", action="store_true", help="small training and generator configs")
    ap.add_argument("--runs", type=int, default=3, help="timed calls per measurement (after one warm-up)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: gen_count, gen_time, step_count, "
                                               "step_compile, step_time")
    return ap.parse_args(argv)


def count_primitives(jaxpr: Any) -> int:
    """Equations of a (closed) jaxpr, counting those of every sub-jaxpr in its parameters too."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, list | tuple) else (param,):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    total += count_primitives(sub)
    return total


def load_legacy_ops(rev: str) -> dict[str, ModuleType]:
    """The ops modules as of ``rev``, loaded from git history under private names, wired to each other."""
    tmp = Path(tempfile.mkdtemp(prefix="legacy_ops_"))
    mods: dict[str, ModuleType] = {}
    for name in ("bias_act", "upfirdn2d", "filtered_lrelu"):  # dependencies first
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{LEGACY_FILES[name]}"], check=True,
                                capture_output=True, text=True).stdout
        path = tmp / f"legacy_{name}.py"
        path.write_text(source.replace("from stylegan_jax.ops.bias_act import", "from legacy_bias_act import")
                        .replace("from stylegan_jax.ops.upfirdn2d import", "from legacy_upfirdn2d import"))
        spec = importlib.util.spec_from_file_location(f"legacy_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        mods[name] = module
    return mods


def use_legacy_ops(rev: str) -> int:
    """Swap the old ops in for the current ones in every loaded ``stylegan_jax`` module; returns the swaps made."""
    import stylegan_jax.losses  # noqa: F401  (import everything that binds the ops by name)
    import stylegan_jax.networks.discriminator  # noqa: F401
    import stylegan_jax.networks.stylegan2  # noqa: F401
    import stylegan_jax.networks.stylegan3  # noqa: F401
    import stylegan_jax.ops.modulated_conv  # noqa: F401
    from stylegan_jax.ops import bias_act as new_bias_act
    from stylegan_jax.ops import filtered_lrelu as new_filtered_lrelu
    from stylegan_jax.ops import upfirdn2d as new_upfirdn2d
    from stylegan_jax.ops.upfirdn2d import upsample2d as new_upsample2d

    old = load_legacy_ops(rev)
    swap = {new_bias_act: old["bias_act"].bias_act, new_filtered_lrelu: old["filtered_lrelu"].filtered_lrelu,
            new_upfirdn2d: old["upfirdn2d"].upfirdn2d, new_upsample2d: old["upfirdn2d"].upsample2d}
    swaps = 0
    for modname, module in list(sys.modules.items()):
        if not modname.startswith("stylegan_jax") or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if callable(value) and not isinstance(value, type) and value in swap:
                setattr(module, attr, swap[value])
                swaps += 1
    return swaps


def matmul_gflops(n: int = 2048, runs: int = 5) -> float:
    """fp32 GFLOP/s of an ``n x n`` matrix product on the default device (best of ``runs``)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: jnp.dot(a, a, precision="highest"))
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def schedule_conv_flops(G: Any, batch: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of the synthesis convolutions, from the layer schedule."""
    sched = G.schedule()
    total = 0.0
    for s in sched.layers:
        conv_out = s.in_size + s.conv_kernel - 1  # "full" padding: kernel - 1 on each side
        total += 2.0 * conv_out**2 * s.conv_kernel**2 * s.in_channels * s.out_channels
    return total * batch


def _median_time(fn: Any, runs: int) -> tuple[float, list[float]]:
    import jax

    jax.block_until_ready(fn())  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from stylegan_jax.utils.runtime import maybe_reexec_with_hugepages

    maybe_reexec_with_hugepages()
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_compilation_cache", False)
    skip = set(filter(None, args.skip.split(",")))
    swaps = use_legacy_ops(args.legacy_rev) if args.ops == "old" else 0

    import train_step as train_bench

    from stylegan_jax.models import build_generator

    res: dict[str, Any] = {"ops": args.ops, "legacy_rev": args.legacy_rev if args.ops == "old" else None,
                           "swaps": swaps, "quick": args.quick, "runs": args.runs}
    gcfg = GEN_QUICK if args.quick else GEN
    res["gen_config"] = gcfg
    G = build_generator(cfg=gcfg["cfg"], img_resolution=gcfg["res"], channel_base=gcfg["cbase"],
                        channel_max=gcfg["cmax"], mapping_layers=gcfg["map_layers"], z_dim=gcfg["z_dim"],
                        w_dim=gcfg["z_dim"])
    variables = jax.jit(G.init)(jax.random.PRNGKey(0), jnp.zeros((1, G.z_dim)))
    z = jax.random.normal(jax.random.PRNGKey(1), (gcfg["batch"], G.z_dim))

    def forward(v, z):
        return G.apply(v, z)

    if "gen_count" not in skip:
        t0 = time.perf_counter()
        res["gen_primitives"] = count_primitives(jax.make_jaxpr(forward)(variables, z))
        res["gen_trace_s"] = time.perf_counter() - t0
    if "gen_time" not in skip:
        res["gen_load"] = os.getloadavg()[0]
        t0 = time.perf_counter()
        compiled = jax.jit(forward).lower(variables, z).compile()
        res["gen_compile_s"] = time.perf_counter() - t0
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        res["gen_xla_flops"] = float(cost.get("flops", float("nan"))) if cost else float("nan")
        res["gen_conv_flops"] = schedule_conv_flops(G, gcfg["batch"])
        res["gen_s"], times = _median_time(lambda: compiled(variables, z), args.runs)
        res["gen_min_s"] = min(times)
        res["matmul_gflops"] = matmul_gflops()
        res["gen_floor_s"] = res["gen_conv_flops"] / (res["matmul_gflops"] * 1e9)
        res["gen_vs_floor"] = res["gen_s"] / res["gen_floor_s"]
        del compiled

    if not {"step_count", "step_compile", "step_time"} <= skip:
        targs = train_bench.parse_args((TRAIN_ARGS_QUICK if args.quick else TRAIN_ARGS) + ["--runs", str(args.runs)])
        res["train_config"] = {k: getattr(targs, k) for k in ("cfg", "res", "cbase", "cmax", "map_layers", "z_dim",
                                                              "batch", "gamma", "reg_interval")}
        built = train_bench.build(targs)
        step, state, batch = built["step"], built["state"], built["batch"]
        fn = step.variant(True, False)  # Gmain + Dmain + Dreg
        if "step_count" not in skip:
            t0 = time.perf_counter()
            res["step_primitives"] = count_primitives(jax.make_jaxpr(fn)(state, batch, None))
            res["step_trace_s"] = time.perf_counter() - t0
        if "step_compile" not in skip or "step_time" not in skip:
            res["step_load"] = os.getloadavg()[0]
            t0 = time.perf_counter()
            lowered = fn.lower(state, batch, None)
            res["step_lower_s"] = time.perf_counter() - t0
            compiled = lowered.compile()
            res["step_compile_s"] = time.perf_counter() - t0
        if "step_time" not in skip:
            holder = {"state": state}

            def one_step():
                holder["state"], metrics = compiled(holder["state"], batch, None)
                return metrics

            res["step_s"], times = _median_time(one_step, args.runs)
            res["step_min_s"] = min(times)
    res.update(_common.machine())
    return res


ROWS = [("gen_primitives", "generator jaxpr primitives", "{:.0f}"),
        ("step_primitives", "train step (reg) jaxpr primitives", "{:.0f}"),
        ("step_trace_s", "train step trace (make_jaxpr) s", "{:.1f}"),
        ("step_lower_s", "train step trace + lower s", "{:.1f}"),
        ("step_compile_s", "train step cold compile s (incl. lower)", "{:.1f}"),
        ("step_s", "train step (reg) s / iteration", "{:.2f}"),
        ("gen_compile_s", "generator compile s", "{:.1f}"),
        ("gen_s", "generator forward s", "{:.3f}"),
        ("gen_floor_s", "generator FLOP floor s (schedule convs)", "{:.3f}"),
        ("gen_vs_floor", "generator forward / floor", "{:.2f}x"),
        ("gen_xla_flops", "generator XLA GFLOP", "{:.0f}"),
        ("matmul_gflops", "fp32 matmul GFLOP/s (same run)", "{:.0f}"),
        ("step_load", "load average at step compile", "{:.1f}"),
        ("gen_load", "load average at generator", "{:.1f}")]


def print_table(results: list[dict[str, Any]]) -> None:
    has_ratio = len(results) == 2 and results[0]["ops"] == "old" and results[1]["ops"] == "new"
    rows = [[""] + [f"{r['ops']}" for r in results] + (["old/new"] if has_ratio else [])]
    for key, label, fmt in ROWS:
        vals = [r.get(key) for r in results]
        if all(v is None for v in vals):
            continue
        cells = [fmt.format(v / 1e9 if key == "gen_xla_flops" else v) if v is not None else "-" for v in vals]
        if has_ratio:
            ratio = None not in vals and vals[1] and not key.endswith("load")
            cells.append(f"{vals[0] / vals[1]:.2f}x" if ratio else "")
        rows.append([label] + cells)
    _common.print_table(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.compare:
        result = measure(args)
        print_table([result])
        _common.write_json(args.json, result)
        return 0
    child = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--compare"]
    if "--json" in child:
        i = child.index("--json")
        del child[i : i + 2]
    runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    for _ in range(args.repeats):
        for ops in ("old", "new"):
            with tempfile.NamedTemporaryFile(suffix=".json") as f:
                subprocess.run([sys.executable, __file__, *child, "--ops", ops, "--json", f.name], check=True)
                runs[ops].append(json.loads(Path(f.name).read_text()))
    # Per quantity, the median over the repeats (counts are identical across repeats).
    merged = []
    for ops in ("old", "new"):
        keys = {k for r in runs[ops] for k, v in r.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        m = dict(runs[ops][0])
        m.update({k: statistics.median(r[k] for r in runs[ops] if k in r) for k in keys})
        merged.append(m)
    print(f"\nmedian over {args.repeats} old/new pair(s), each in a fresh process:")
    print_table(merged)
    _common.write_json(args.json, {"old": runs["old"], "new": runs["new"], "median": merged})
    return 0


if __name__ == "__main__":
    sys.exit(main())
