"""Inference benchmark: JAX (jit) vs ONNX Runtime for one generator config: latency, images/s, peak memory.

Each backend runs in its own subprocess, so that its peak resident memory (``ru_maxrss``) is its own: the JAX
worker builds, compiles and runs the generator; the export worker writes the ONNX model (its memory is not
charged to either backend); the ONNX worker loads only onnxruntime + NumPy, as a server would, and also times
the full serving path (``InferenceSession.generate``: run + denormalize + watermark). Both use the same
weights (``G.init`` with PRNGKey(0)) and the same latents, and the outputs are compared.

Usage::

  python benchmarks/inference.py --cfg t --res 256 --cbase 32768 --cmax 512 --batches 1,8 --json out.json
  python benchmarks/inference.py --res 64 --cbase 4096 --cmax 128 --runs 5          # quick
  python benchmarks/inference.py --model g.onnx ...   # reuse an exported model of the same config

Reported per backend and batch: median / p90 / min latency of one batched call, images/s (batch / median),
compile or session-creation time, peak RSS of the worker process (MiB) and its RSS once the model is loaded.

Resolution 32 or more: the serving path embeds the 32-bit provenance watermark, which a 16x16 image cannot carry
(the ONNX worker stops with that error, as ``InferenceSession`` does for such a model).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np


def _rss_mib() -> float:
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def _current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def _time_calls(fn, runs: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_s": statistics.median(times), "p90_s": times[min(len(times) - 1, int(0.9 * len(times)))],
            "min_s": times[0], "runs": runs}


def _latents(z_dim: int, batch: int, seed: int = 123) -> np.ndarray:
    return np.random.RandomState(seed).randn(batch, z_dim).astype(np.float32)


def _build(args: argparse.Namespace):
    import jax
    import jax.numpy as jnp

    from stylegan_jax.models import build_generator

    G = build_generator(cfg=args.cfg, img_resolution=args.res, channel_base=args.cbase, channel_max=args.cmax,
                        mapping_layers=args.map_layers, z_dim=args.z_dim, w_dim=args.z_dim)
    variables = jax.jit(G.init)(jax.random.PRNGKey(0), jnp.zeros((1, G.z_dim)))
    return G, variables


# ---------------------------------------------------------------------------------------------------------------------
# Workers (run in subprocesses).


def worker_jax(args: argparse.Namespace) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    G, variables = _build(args)
    jax.block_until_ready(variables)
    loaded = _current_rss_mib()
    forward = jax.jit(lambda v, z, psi: G.apply(v, z, None, psi))
    out: dict[str, Any] = {"backend": "jax", "device": f"{jax.default_backend()} / {jax.devices()[0].device_kind}",
                           "loaded_rss_mib": loaded, "results": {}}
    for batch in args.batch_list:
        z = jnp.asarray(_latents(G.z_dim, batch))
        psi = jnp.float32(args.psi)
        t0 = time.perf_counter()
        compiled = forward.lower(variables, z, psi).compile()
        compile_s = time.perf_counter() - t0
        stats = _time_calls(lambda f=compiled, z=z, p=psi: f(variables, z, p).block_until_ready(), args.runs,
                            args.warmup)
        out["results"][str(batch)] = {**stats, "compile_s": compile_s, "img_per_s": batch / stats["median_s"]}
        if batch == args.batch_list[0]:
            np.save(args.outputs / "jax.npy", np.asarray(compiled(variables, z, psi)))
    out["peak_rss_mib"] = _rss_mib()
    return out


def worker_export(args: argparse.Namespace) -> dict[str, Any]:
    from stylegan_jax.apis.export_onnx import export_generator

    G, variables = _build(args)
    t0 = time.perf_counter()
    export_generator(G, variables, args.model, opset=args.opset, impl=args.impl)
    return {"backend": "export", "export_s": time.perf_counter() - t0, "peak_rss_mib": _rss_mib(),
            "model_mib": Path(args.model).stat().st_size / 2**20}


def worker_onnx(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime as ort

    from stylegan_jax.apis.inference import InferenceSession

    t0 = time.perf_counter()
    session = InferenceSession(args.model, providers=args.providers, intra_op_threads=args.threads,
                               memory_arena=args.arena)
    create_s = time.perf_counter() - t0
    loaded = _current_rss_mib()
    out: dict[str, Any] = {"backend": "onnxruntime", "device": ",".join(session.providers),
                           "onnxruntime": ort.__version__, "session_create_s": create_s, "loaded_rss_mib": loaded,
                           "results": {}, "serving": {}}
    for batch in args.batch_list:
        z = _latents(session.z_dim, batch)
        t0 = time.perf_counter()
        first = session.generate_float(z, psi=args.psi)  # first run: ORT allocates its arenas here
        first_s = time.perf_counter() - t0
        stats = _time_calls(lambda z=z: session.generate_float(z, psi=args.psi), args.runs, max(0, args.warmup - 1))
        out["results"][str(batch)] = {**stats, "first_run_s": first_s, "img_per_s": batch / stats["median_s"]}
        serve = _time_calls(lambda z=z: session.generate(z, psi=args.psi), args.runs, 0)
        out["serving"][str(batch)] = {**serve, "img_per_s": batch / serve["median_s"]}
        if batch == args.batch_list[0]:
            np.save(args.outputs / "onnx.npy", first)
    out["peak_rss_mib"] = _rss_mib()
    return out


WORKERS = {"jax": worker_jax, "export": worker_export, "onnx": worker_onnx}


# ---------------------------------------------------------------------------------------------------------------------
# Driver.


def _run_worker(name: str, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, *argv, "--worker", name]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"worker {name!r} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT "):])


def _table(report: dict[str, Any]) -> str:
    rows = [("backend", "batch", "median ms", "p90 ms", "min ms", "img/s", "setup s", "peak RSS MiB")]
    jax_r, ort_r = report["jax"], report["onnxruntime"]
    for batch in report["config"]["batches"]:
        b = str(batch)
        j = jax_r["results"][b]
        rows.append(("jax jit", b, f"{j['median_s'] * 1e3:.1f}", f"{j['p90_s'] * 1e3:.1f}", f"{j['min_s'] * 1e3:.1f}",
                     f"{j['img_per_s']:.2f}", f"{j['compile_s']:.1f} (compile)", f"{jax_r['peak_rss_mib']:.0f}"))
        o = ort_r["results"][b]
        rows.append(("onnxruntime", b, f"{o['median_s'] * 1e3:.1f}", f"{o['p90_s'] * 1e3:.1f}",
                     f"{o['min_s'] * 1e3:.1f}", f"{o['img_per_s']:.2f}", f"{ort_r['session_create_s']:.1f} (load)",
                     f"{ort_r['peak_rss_mib']:.0f}"))
        s = ort_r["serving"][b]
        rows.append(("ort+postprocess", b, f"{s['median_s'] * 1e3:.1f}", f"{s['p90_s'] * 1e3:.1f}",
                     f"{s['min_s'] * 1e3:.1f}", f"{s['img_per_s']:.2f}", "", ""))
    return _common.format_table(rows)


def main(argv: list[str] | None = None) -> None:
    ap = _common.parser(__doc__, json_help="write the full report here")
    _common.add_generator_args(ap)
    ap.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    ap.add_argument("--runs", type=int, default=10, help="timed calls per batch size")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--psi", type=float, default=0.7)
    ap.add_argument("--opset", type=int, default=18)
    ap.add_argument("--impl", choices=["ref", "fast"], default="ref", help="upfirdn2d traced into the ONNX graph")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    ap.add_argument("--arena", action="store_true", help="enable onnxruntime's CPU memory arena (default off)")
    ap.add_argument("--providers", default=None, help="comma-separated onnxruntime providers")
    ap.add_argument("--model", default=None, help="exported model of this config to reuse (default: export one)")
    ap.add_argument("--worker", choices=sorted(WORKERS), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--outputs", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.batch_list = [int(b) for b in args.batches.split(",") if b.strip()]
    args.providers = [p for p in args.providers.split(",") if p] if isinstance(args.providers, str) else None

    if args.worker:
        args.outputs = Path(args.outputs)
        print("RESULT " + json.dumps(WORKERS[args.worker](args)), flush=True)
        return

    env = dict(os.environ)
    try:  # the same malloc setting the project's CLIs use for XLA, applied to every worker for a fair comparison
        from stylegan_jax.utils.runtime import TUNABLES

        if sys.platform == "linux" and "hugetlb" not in env.get("GLIBC_TUNABLES", ""):
            env["GLIBC_TUNABLES"] = ":".join(t for t in (env.get("GLIBC_TUNABLES"), TUNABLES) if t)
    except ImportError:
        pass
    env.setdefault("STYLEGAN_JAX_NO_REEXEC", "1")
    with tempfile.TemporaryDirectory() as tmp:
        argv = list(sys.argv[1:] if argv is None else argv)
        report: dict[str, Any] = {}
        if args.model is None:
            args.model = str(Path(tmp) / "g.onnx")
            argv += ["--model", args.model]
            report["export"] = _run_worker("export", argv + ["--outputs", tmp], env)
        argv += ["--outputs", tmp]
        report["jax"] = _run_worker("jax", argv, env)
        report["onnxruntime"] = _run_worker("onnx", argv, env)
        diff = float(np.max(np.abs(np.load(Path(tmp) / "jax.npy") - np.load(Path(tmp) / "onnx.npy"))))
    report["config"] = {"cfg": args.cfg, "res": args.res, "cbase": args.cbase, "cmax": args.cmax,
                        "map_layers": args.map_layers, "z_dim": args.z_dim, "batches": args.batch_list,
                        "runs": args.runs, "psi": args.psi, "opset": args.opset, "impl": args.impl,
                        "threads": args.threads, "ort_arena": args.arena}
    report["max_abs_diff_jax_vs_onnx"] = diff
    report["host"] = {**_common.machine(with_jax=False), "glibc_tunables": env.get("GLIBC_TUNABLES", "")}

    print(f"StyleGAN3-{args.cfg.upper()} {args.res}px cbase={args.cbase} cmax={args.cmax} map={args.map_layers} "
          f"z={args.z_dim} psi={args.psi}; jax: {report['jax']['device']}; onnxruntime "
          f"{report['onnxruntime']['onnxruntime']}: {report['onnxruntime']['device']}")
    if "export" in report:
        e = report["export"]
        print(f"export: {e['export_s']:.1f} s, {e['model_mib']:.1f} MiB, peak RSS {e['peak_rss_mib']:.0f} MiB")
    print(_table(report))
    print(f"RSS after load: jax {report['jax']['loaded_rss_mib']:.0f} MiB, onnxruntime "
          f"{report['onnxruntime']['loaded_rss_mib']:.0f} MiB; max |jax - onnx| = {diff:.2e} "
          f"(batch {args.batch_list[0]})")
    _common.write_json(args.json, report)


if __name__ == "__main__":
    main()
