"""Step time of the training loop with the non-finite check read every step (a host sync per step) vs at ticks.

The training loop (``stylegan_jax.train.loop``) used to read ``metrics["finite"]`` on the host after every step,
which makes the host wait for the step before it dispatches the next one (and reads the next batch). It now reads
the pending flags at ticks and before checkpoints (:func:`stylegan_jax.train.loop.check_finite`). This script
runs the loop's own pieces (``setup``, ``compile_programs``, ``train_one_step``, ``check_finite``) on one run,
in blocks of ``--steps`` iterations, alternately:

- ``every step``: :func:`check_finite` after every step (the old behaviour);
- ``at ticks``: :func:`check_finite` once, after the block's last step (the new one: a tick is a block here).

Each block ends synchronised (the flags read, the state ready), so both modes are timed over the same work; the
blocks are interleaved (every step, at ticks, every step, ...) so that a change of load hits both alike, and
each block holds the same mix of step variants (``--steps`` a multiple of the regularization intervals). The
batches come from the run's input pipeline, as in training. Default: the quickstart of rounds 7-16
(configs/quickstart_discs.py) without its metrics; ``--set key=value`` overrides it (e.g. a smaller model).

Also reported: "host busy", the share of a block that passed before the host had dispatched its last step (was
free for other work: logging, grids, the next batches); with the check every step it is ~100 % by construction.

  python benchmarks/finite_check.py --blocks 4 --steps 16 --json finite_check.json
  python benchmarks/finite_check.py --set model.num_layers=4 --set model.channel_base=512 \\
      --set model.channel_max=16 --set train.batch_size=4
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common

ROOT = Path(__file__).resolve().parents[1]
MODES = ("every step", "at ticks")


def parse_args(argv: list[str] | None = None):
    ap = _common.parser(__doc__)
    ap.add_argument("--config", default=str(ROOT / "configs" / "quickstart_discs.py"), help="training config file")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override (repeatable), e.g. train.batch_size=4")
    ap.add_argument("--steps", type=int, default=16, help="training steps per block (a tick)")
    ap.add_argument("--blocks", type=int, default=4, help="timed blocks per mode, interleaved (after one warm-up "
                                                          "block each)")
    return ap.parse_args(argv)


def block(run, steps: int, every_step: bool) -> tuple[float, float]:
    """``steps`` iterations of the loop, the finite flags read after every step or once at the end: (seconds until
    the host had dispatched the last step, i.e. was free for other work; seconds until all were done)."""
    import jax

    from stylegan_jax.train import loop

    t = time.perf_counter()
    for _ in range(steps):
        loop.train_one_step(run)
        if every_step:
            loop.check_finite(run)
    dispatched = time.perf_counter() - t
    loop.check_finite(run)
    jax.block_until_ready(run.state)
    done = time.perf_counter() - t
    run.pending, run.checked = [], 0  # what log_tick does after reading them
    return dispatched, done


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from stylegan_jax.utils.runtime import maybe_reexec_with_hugepages

    maybe_reexec_with_hugepages()

    from stylegan_jax.config import apply_overrides, load_config
    from stylegan_jax.train import loop

    config = apply_overrides(load_config(args.config), ["log.metrics_kimg=0", "log.progress_bar=False",
                                                        *args.set])
    with tempfile.TemporaryDirectory(prefix="finite_check_") as workdir:
        run = loop.setup(config, workdir, log=lambda _: None)
        try:
            loop.plan(run, None)
            t = time.perf_counter()
            loop.compile_programs(run)
            compile_s = time.perf_counter() - t
            for mode in MODES:  # warm-up: first calls, pipeline threads
                block(run, args.steps, mode == MODES[0])
            times: dict[str, list[float]] = {m: [] for m in MODES}
            host: dict[str, list[float]] = {m: [] for m in MODES}  # share of the block before the host was free
            for b in range(args.blocks):
                for mode in MODES:
                    dispatched, done = block(run, args.steps, mode == MODES[0])
                    times[mode].append(done / args.steps)
                    host[mode].append(dispatched / done)
                print(f"block {b + 1}/{args.blocks}  " + "  ".join(
                    f"{m}: {times[m][-1] * 1000:.1f} ms/step (host busy {100 * host[m][-1]:.0f} %)" for m in MODES),
                    flush=True)
        finally:
            loop.close(run)

    c = run.config
    med = {m: statistics.median(v) for m, v in times.items()}
    ratios = [a / b for a, b in zip(times[MODES[0]], times[MODES[1]], strict=True)]
    result = {"config": args.config, "overrides": args.set, "resolution": c.data.resolution,
              "batch": c.train.batch_size, "num_layers": c.model.num_layers, "channel_base": c.model.channel_base,
              "channel_max": c.model.channel_max, "steps_per_block": args.steps, "blocks": args.blocks,
              "compile_s": compile_s, "s_per_step": times, "median_s_per_step": med,
              "host_busy_share": host, "median_host_busy_share": {m: statistics.median(v) for m, v in host.items()},
              "ratio_every_step_over_at_ticks": ratios, "median_ratio": statistics.median(ratios),
              "machine": _common.machine()}
    m = result["machine"]
    print(f"\n{Path(args.config).name} {' '.join(args.set)}: {c.data.resolution}px, batch {c.train.batch_size}, "
          f"{args.blocks} x {args.steps} steps per mode, interleaved; {m['device']} x {m['num_devices']}, "
          f"{m['cpu_count']} CPUs, load {m['load_avg'][0]:.2f}")
    rows = [("finite check", "median ms/step", "min", "max", "img/s", "host busy")]
    for mode in MODES:
        v = times[mode]
        rows.append((mode, f"{med[mode] * 1000:.1f}", f"{min(v) * 1000:.1f}", f"{max(v) * 1000:.1f}",
                     f"{c.train.batch_size / med[mode]:.1f}", f"{100 * statistics.median(host[mode]):.0f} %"))
    _common.print_table(rows)
    print(f"every step / at ticks: median ratio {result['median_ratio']:.3f} "
          f"(per block: {', '.join(f'{r:.3f}' for r in ratios)})")
    _common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
