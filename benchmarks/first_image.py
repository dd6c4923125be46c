"""Time to the first image of ``stylegan-jax generate`` on the design config, cold and warm persistent cache.

    .venv/bin/python benchmarks/first_image.py [--pairs 2] [--code-root DIR] [--json OUT]

Writes a checkpoint of a randomly initialised design-config generator (StyleGAN3-T 256, z = w = 512, 8 mapping
layers, cbase 32768, cmax 512) once (by default a whole training state, as a training run saves it; ``--checkpoint
generator``: G_ema alone), then runs ``python -m stylegan_jax.cli generate --ckpt ... --seeds 0`` as a
fresh process, wall clock from start to exit (imports, checkpoint restore, trace, compile, one image, PNG):

- ``cold``: with an empty JAX persistent compilation cache (``JAX_COMPILATION_CACHE_DIR`` a new folder);
- ``warm``: again with the cache the cold run just filled.

``--code-root`` runs the command from another checkout (e.g. a ``git worktree`` of an older commit, put first on
``PYTHONPATH``) against the same checkpoint, to compare versions in one window. Cold and warm pairs alternate
``--pairs`` times; medians are reported.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
from performance import GEN

ROOT = Path(__file__).resolve().parents[1]
# The design config of the generator benchmark in performance.py, as build_generator arguments.
DESIGN = {"cfg": GEN["cfg"], "img_resolution": GEN["res"], "z_dim": GEN["z_dim"], "w_dim": GEN["z_dim"],
          "mapping_layers": GEN["map_layers"], "channel_base": GEN["cbase"], "channel_max": GEN["cmax"]}


def write_checkpoint(directory: Path, kind: str = "training") -> None:
    """A design-config checkpoint (random weights) that ``generate`` can load: ``'training'``, the whole train state
    a ``stylegan-jax train`` run saves (G, G_ema, D and both Adam states: G_ema is ~15% of it); ``'generator'``,
    G_ema alone (what rounds 1-10 measured)."""
    import jax
    import jax.numpy as jnp

    from stylegan_jax.checkpoint import save_checkpoint
    from stylegan_jax.models import build_generator, generator_config

    G = build_generator(**DESIGN)
    if kind == "generator":
        state = {"G_ema": jax.jit(G.init)(jax.random.PRNGKey(0), jnp.zeros((1, G.z_dim)))}
    else:
        from flax import serialization

        from stylegan_jax.networks.discriminator import Discriminator
        from stylegan_jax.train.state import TrainConfig, create_train_state

        D = Discriminator(c_dim=0, img_resolution=G.img_resolution, img_channels=G.img_channels,
                          channel_base=DESIGN["channel_base"], channel_max=DESIGN["channel_max"])
        state = serialization.to_state_dict(create_train_state(G, D, TrainConfig(batch_size=4), jax.random.PRNGKey(0)))
    save_checkpoint(directory, 0, state, {"generator": generator_config(G)}, keep=None)


def time_generate(ckpt: Path, outdir: Path, cache: Path, code_root: Path) -> float:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(code_root), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "stylegan_jax.cli", "generate", "--ckpt", str(ckpt), "--seeds", "0",
           "--outdir", str(outdir)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=code_root, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or not any(outdir.glob("*.png")):
        raise RuntimeError(f"generate failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = _common.parser(__doc__)
    ap.add_argument("--pairs", type=int, default=2, help="cold/warm pairs to run")
    ap.add_argument("--code-root", default=str(ROOT), help="checkout whose stylegan_jax runs the command")
    ap.add_argument("--checkpoint", choices=("training", "generator"), default="training",
                    help="what the checkpoint holds: a whole training state (as 'stylegan-jax train' saves) or G_ema "
                         "alone (rounds 1-10)")
    args = ap.parse_args(argv)
    code_root = Path(args.code_root).resolve()

    with tempfile.TemporaryDirectory(prefix="first_image_") as tmp:
        tmp = Path(tmp)
        write_checkpoint(tmp / "ckpt", args.checkpoint)
        cold, warm = [], []
        for i in range(args.pairs):
            cache = tmp / f"cache{i}"
            cold.append(time_generate(tmp / "ckpt", tmp / f"out_cold{i}", cache, code_root))
            warm.append(time_generate(tmp / "ckpt", tmp / f"out_warm{i}", cache, code_root))
            print(f"pair {i + 1}/{args.pairs}: cold {cold[-1]:.1f} s, warm {warm[-1]:.1f} s", flush=True)

    def row(name: str, times: list[float]) -> list[str]:
        return [name, f"{statistics.median(times):.1f}", " ".join(f"{t:.1f}" for t in times)]

    _common.print_table([["time to first image (design config)", "median s", "runs"],
                         row("cold persistent cache", cold), row("warm persistent cache", warm)])
    _common.write_json(args.json, {"code_root": str(code_root), "config": DESIGN, "checkpoint": args.checkpoint,
                                   "cold_s": cold, "warm_s": warm,
                                   "machine": _common.machine()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
