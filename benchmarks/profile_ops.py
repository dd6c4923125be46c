"""Where a compiled program spends its time: XLA:CPU thunk time of one run, by phase and kind of kernel.

    python benchmarks/profile_ops.py --what step --cfg t --res 64 --cbase 8192 --cmax 256 --map-layers 2 \\
        --z-dim 256 --batch 8 --gamma 1 --reg-interval 2 --json out.json      # the issue-17 iteration (main + Dreg)
    python benchmarks/profile_ops.py --what generator --json out.json       # the design-config forward, batch 1

The programs are compiled with ``xla_cpu_enable_xprof_traceme`` (one trace event per XLA thunk), run twice to
warm up, then once under ``jax.profiler.trace``. Each event is attributed through its HLO instruction's
``op_name`` to a phase (G forward, G backward, D, the Dreg program) and by its name to a kind: ``conv`` (library
convolutions and matrix products, ``ynn_fusion`` / ``convolution`` / ``dot``), ``concatenate`` (the im2col
patches of the kernel gradient, ``ops.modulated_conv.conv2d_weight_grad``) and ``loop fusion`` (XLA's own
kernels: resampling passes, activations, optimizer). Times are the sums over the worker threads ("thread
seconds"), so with two cores they add up to about twice the wall time at most; work a library runs in a pool of
its own is not traced and does not appear. The wall time of each program is printed next to them.
"""

from __future__ import annotations

import collections
import glob
import re
import tempfile
import time

import _common

TRACE_OPTIONS = {"xla_cpu_enable_xprof_traceme": True}


def phase_of(op_name: str) -> str:
    """The phase an HLO instruction belongs to, from its JAX ``op_name`` (``jit(train_step)/transpose(jvp(...``)."""
    if "dreg_step" in op_name:
        return "Dreg program"
    if "Generator" in op_name:
        return "G backward" if "transpose(jvp(Generator" in op_name else "G forward"
    if "Discriminator" in op_name:
        return "D forward + backward"
    return "other (optimizer, EMA, finite check, mapping)"


def kind_of(event: str) -> str:
    base = re.sub(r"[.\d]+$", "", event)
    if base.startswith(("ynn", "convolution", "conv_general", "dot", "custom-call", "onednn")):
        return "conv / matmul (library)"
    if "concatenate" in base:
        return "concatenate"
    return "loop fusion (XLA)"


def op_names(hlo_text: str) -> dict[str, str]:
    out = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)
        if m:
            n = re.search(r'op_name="([^"]*)"', line)
            out[m.group(1)] = n.group(1) if n else ""
    return out


def profile(run, names: dict[str, str]) -> tuple[dict, dict]:
    """Call ``run()`` (which runs the programs once and returns ``{label: wall s}``) under the profiler; returns
    (those walls, {(phase, kind): thread s})."""
    import jax
    from jax._src.lib import _profile_data

    with tempfile.TemporaryDirectory(prefix="profile_ops_") as tmp:
        with jax.profiler.trace(tmp):
            walls = run()
        data = _profile_data.ProfileData.from_file(glob.glob(f"{tmp}/**/*.xplane.pb", recursive=True)[0])
    by = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if "python" in line.name:
                continue
            for ev in line.events:
                if ev.name.startswith(("ThunkExecutor", "SlinkyThreadPool", "end: ")):
                    continue
                by[(phase_of(names.get(ev.name, "")), kind_of(ev.name))] += ev.duration_ns / 1e9
    return walls, dict(by)


def timed(label: str, fn, *args):
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, {label: time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    import train_step as ts

    ap = _common.parser(__doc__)
    ap.add_argument("--what", choices=("step", "generator"), default="step",
                    help="the training iteration (the other arguments are train_step.py's) or the design-config "
                         "generator forward")
    known, rest = ap.parse_known_args(argv)
    import jax
    import jax.numpy as jnp
    import numpy as np

    if known.what == "step":
        args = ts.parse_args(rest)
        built = ts.build(args)
        state, step, batch = built["state"], built["step"], built["batch"]
        main_c = step.main_program().lower(state, batch, None).compile(compiler_options=TRACE_OPTIONS)
        flag = jax.ShapeDtypeStruct((), jnp.bool_)
        dreg_c = step.dreg_program.lower(state, batch, None, flag).compile(compiler_options=TRACE_OPTIONS)
        names = {**op_names(main_c.as_text()), **op_names(dreg_c.as_text())}
        box = {"state": state}

        def run():  # one iteration with Dreg, as the loop runs it (the state is donated from call to call)
            (s, m), w1 = timed("main program", main_c, box["state"], batch, None)
            (s, _), w2 = timed("Dreg program", dreg_c, s, batch, None, m["finite"])
            box["state"] = s
            return {**w1, **w2}

        config = vars(args)
    else:
        from performance import GEN

        from stylegan_jax.models import build_generator

        G = build_generator(cfg=GEN["cfg"], img_resolution=GEN["res"], z_dim=GEN["z_dim"], w_dim=GEN["z_dim"],
                            mapping_layers=GEN["map_layers"], channel_base=GEN["cbase"], channel_max=GEN["cmax"])
        z = jnp.asarray(np.random.RandomState(0).randn(GEN["batch"], G.z_dim).astype(np.float32))
        v = jax.jit(G.init)(jax.random.PRNGKey(0), z)
        fwd = jax.jit(lambda v, z: G.apply(v, z, None)).lower(v, z).compile(compiler_options=TRACE_OPTIONS)
        names = op_names(fwd.as_text())

        def run():
            return timed("generator forward", fwd, v, z)[1]

        config = dict(GEN)
    for _ in range(2):  # warm-up: the first executions of a program are slower
        run()
    walls, by = profile(run, names)
    _common.print_table([["program", "wall s"]] + [[k, f"{v:.2f}"] for k, v in walls.items()])
    print()
    kinds = sorted({k for _, k in by})
    phases = sorted({p for p, _ in by})
    table = [["phase (thread s)", *kinds, "total"]]
    for p in phases:
        vals = [by.get((p, k), 0.0) for k in kinds]
        table.append([p, *(f"{x:.2f}" for x in vals), f"{sum(vals):.2f}"])
    totals = [sum(by.get((p, k), 0.0) for p in phases) for k in kinds]
    table.append(["all", *(f"{x:.2f}" for x in totals), f"{sum(totals):.2f}"])
    _common.print_table(table)
    _common.write_json(known.json, {"what": known.what, "config": config, "wall_s": walls,
                                    "thread_s": {f"{p} | {k}": v for (p, k), v in sorted(by.items())},
                                    "machine": _common.machine()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
