"""The training loop: config -> networks, data, sharded steps, logs, grids, checkpoints, resume.

Exact resume: every source of randomness is a pure function of (seed, step) or is saved in the
checkpoint (the data position, the train state with its RNG key), and checkpoints are written at
step boundaries. A run killed at any point and restarted on the same workdir therefore continues
with the same batches and the same random draws as an unbroken run, and ends with bitwise the same
parameters on the same machine.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from stylegan_jax.checkpoint import checkpoint_manager, load_checkpoint, save_checkpoint
from stylegan_jax.models import build_generator, generator_config

# TrainState fields newer than the first checkpoint format; a checkpoint without them resumes with their initial
# values (they only matter for path-length regularization, which older runs did not use).
ADDED_STATE_FIELDS = ("g_reg_steps", "pl_mean", "last_pl_penalty")


class TrainingDiverged(RuntimeError):
    """A step produced a non-finite loss or gradient; the update was not applied."""


def _resolved(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Fill the official batch-dependent defaults (-1 sentinels)."""
    c = ml_collections.ConfigDict(config.to_dict())
    batch = c.train.batch_size
    if c.model.magnitude_ema_beta < 0:
        c.model.magnitude_ema_beta = 0.5 ** (batch / (20 * 1e3))
    if c.train.ema_kimg < 0:
        c.train.ema_kimg = batch * 10 / 32
    if c.train.blur_fade_kimg < 0:
        c.train.blur_fade_kimg = batch * 200 / 32
    return c


def build_networks(config: ml_collections.ConfigDict, c_dim: int):
    """(G, D) from a resolved config: ``model.cfg`` picks StyleGAN3-T / -R or StyleGAN2 (``'stylegan2'``); the
    discriminator is the same StyleGAN2 residual one for all three."""
    from stylegan_jax.networks.discriminator import Discriminator

    m = config.model
    G = build_generator(cfg=m.cfg, z_dim=m.z_dim, w_dim=m.w_dim, c_dim=c_dim, img_resolution=config.data.resolution,
                        img_channels=config.data.channels, channel_base=m.channel_base, channel_max=m.channel_max,
                        mapping_layers=m.mapping_layers, conv_clamp=m.conv_clamp,
                        magnitude_ema_beta=m.magnitude_ema_beta, num_layers=m.num_layers)
    D = Discriminator(c_dim=c_dim, img_resolution=config.data.resolution, img_channels=config.data.channels,
                      channel_base=m.d_channel_base, channel_max=m.d_channel_max, conv_clamp=m.conv_clamp,
                      mbstd_group_size=m.mbstd_group_size, mbstd_num_channels=m.mbstd_num_channels)
    return G, D


def _grid_png(images_nchw: np.ndarray, path: Path, cols: int) -> None:
    """Save a grid of generator outputs (NCHW, [-1, 1]) as PNG, atomically (write, then rename)."""
    from stylegan_jax.apis.postprocessing import denormalize
    from stylegan_jax.apis.sampling import image_grid

    tmp = path.with_suffix(".tmp.png")
    image_grid(denormalize(np.asarray(images_nchw, np.float32)), cols=cols).save(tmp)
    tmp.replace(path)


class _Logger:
    """JSON lines + TensorBoard event files in the workdir (TensorBoard only on process 0)."""

    def __init__(self, workdir: Path, enabled: bool):
        self.enabled = enabled
        self.jsonl = open(workdir / "metrics.jsonl", "a") if enabled else None
        self.tb = None
        if enabled:
            try:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(str(workdir / "tensorboard"))
            except ImportError:  # optional dependency
                self.tb = None

    def write(self, step: int, kimg: float, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, "kimg": kimg, **values}) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, global_step=int(kimg * 1000))
            self.tb.flush()

    def close(self) -> None:
        if self.jsonl:
            self.jsonl.close()
        if self.tb:
            self.tb.close()


def train(config: ml_collections.ConfigDict, workdir: str | Path, resume: bool = True,
          stop_after_steps: int | None = None, log=print) -> dict[str, Any]:
    """Train until ``config.train.total_kimg`` (or ``stop_after_steps`` more steps, for tests and
    benchmarks). Returns a summary dict. Raises :class:`TrainingDiverged` on a non-finite step."""
    from stylegan_jax.data import make_dataset
    from stylegan_jax.train.state import create_train_state
    from stylegan_jax.train.step import make_mesh, make_train_step, maybe_initialize_distributed

    maybe_initialize_distributed()
    config = _resolved(config)
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0
    (workdir / "images").mkdir(exist_ok=True)
    if is_main:
        (workdir / "config.json").write_text(json.dumps(config.to_dict(), indent=2, default=str))

    mesh = make_mesh()
    batch_size = config.train.batch_size
    if batch_size % mesh.size:
        raise ValueError(f"batch_size {batch_size} must be divisible by the number of devices ({mesh.size})")
    data_sharding = NamedSharding(mesh, P("data"))

    ckpt_dir = workdir / "checkpoints"
    data_cfg = {**config.data.to_dict(), "batch_size": batch_size, "seed": config.train.seed}
    data = make_dataset(data_cfg, sharding=data_sharding)
    G, D = build_networks(config, data.info.c_dim)
    is_stylegan2 = config.model.cfg == "stylegan2"
    if is_stylegan2 and config.log.metrics_kimg > 0 and str(config.log.metrics).strip():
        raise ValueError(f"log.metrics={config.log.metrics!r}: the equivariance metrics need a StyleGAN3 generator "
                         "(an input transform); set --config.log.metrics_kimg=0 for model.cfg='stylegan2'")
    state = create_train_state(G, D, config, jax.random.PRNGKey(config.train.seed), mesh=mesh)

    start_step = 0
    if resume and ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir()):
        # States saved before path-length regularization existed lack its fields: they start fresh (zeros).
        meta, state = load_checkpoint(ckpt_dir, target=state, fill_missing=ADDED_STATE_FIELDS)
        data.restore(meta["data_state"])
        start_step = int(meta["step"])
        log(f"resumed from {ckpt_dir}/{start_step} at {meta['kimg']:.3f} kimg")
    state = jax.device_put(state, NamedSharding(mesh, P()))

    step_fn = make_train_step(G, D, config, mesh)
    manager = checkpoint_manager(ckpt_dir, keep=config.log.keep_checkpoints) if is_main else None
    logger = _Logger(workdir, is_main)
    model_meta = {"generator": generator_config(G),
                  "discriminator": {"class": "stylegan2.Discriminator", "kwargs": {
                      "c_dim": data.info.c_dim, "img_resolution": config.data.resolution,
                      "img_channels": config.data.channels, "channel_base": config.model.d_channel_base,
                      "channel_max": config.model.d_channel_max, "conv_clamp": config.model.conv_clamp,
                      "mbstd_group_size": config.model.mbstd_group_size,
                      "mbstd_num_channels": config.model.mbstd_num_channels}},
                  "config": config.to_dict()}

    # Fixed grid latents (official convention: a fixed seed, here the config seed).
    grid_n = config.log.grid_size**2
    grid_z = jnp.asarray(np.random.RandomState(config.train.seed).randn(grid_n, G.z_dim), jnp.float32)
    grid_c = jnp.asarray(data.sample_labels(grid_n, config.train.seed)) if data.info.c_dim else None
    # Generators with noise inputs (StyleGAN2) show the grid with their fixed noise_const images, so that grids
    # of successive snapshots differ only by training (the official gen_images.py default, noise_mode='const').
    grid_kwargs = {"noise_mode": "const"} if is_stylegan2 else {}
    grid_fn = jax.jit(lambda v, z, c: G.apply(v, z, c, config.log.grid_psi, **grid_kwargs))

    def save_grid(kimg: float, tag: str) -> None:
        if not is_main:
            return
        g_ema = state_g_ema(state)
        imgs = jax.device_get(grid_fn(g_ema, grid_z, grid_c))
        _grid_png(imgs, workdir / "images" / f"fakes_{tag}.png", config.log.grid_size)

    def save(step: int, kimg: float) -> None:
        if not is_main:
            return
        save_checkpoint(ckpt_dir, step, state, {**model_meta, "kimg": kimg, "data_state": data.state()},
                        manager=manager)

    total_steps = math.ceil(config.train.total_kimg * 1000 / batch_size)
    end_step = total_steps if stop_after_steps is None else min(total_steps, start_step + stop_after_steps)
    kimg_of = lambda s: s * batch_size / 1000
    if start_step == 0:
        save_grid(0.0, "init")

    metric_names = [m.strip() for m in str(config.log.metrics).split(",") if m.strip()]
    metric_steps = round(config.log.metrics_kimg * 1000 / batch_size) if config.log.metrics_kimg > 0 else 0
    evaluator = None

    def evaluate_metrics(step: int) -> None:
        # Equivariance of G_ema, sharded over the same mesh; logged like the training metrics.
        nonlocal evaluator
        from stylegan_jax.metrics.equivariance import EquivarianceEvaluator

        if evaluator is None:
            evaluator = EquivarianceEvaluator(G, metric_names, mesh=mesh if mesh.size > 1 else None)
        eval_batch = max(mesh.size, min(16, config.log.metrics_num))
        eval_batch -= eval_batch % mesh.size
        results = evaluator(state_g_ema(state), config.log.metrics_num, seed=config.train.seed, batch_size=eval_batch)
        values = {f"Metrics/{k}": float(v) for k, v in results.items()}
        logger.write(step, kimg_of(step), values)
        if is_main:
            log("metrics " + "  ".join(f"{k} {v:.2f} dB" for k, v in results.items()))

    tick_steps = max(1, round(config.log.tick_kimg * 1000 / batch_size))
    image_steps = max(1, round(config.log.image_kimg * 1000 / batch_size))
    ckpt_steps = max(1, round(config.log.checkpoint_kimg * 1000 / batch_size))
    progress = None
    if is_main and config.log.progress_bar and sys.stderr.isatty():
        from tqdm import tqdm

        progress = tqdm(total=end_step, initial=start_step, unit="step", dynamic_ncols=True)

    tick_metrics: list[dict] = []
    tick_start = time.perf_counter()
    tick_start_step = start_step
    step = start_step
    try:
        while step < end_step:
            batch = next(data)
            state, metrics = step_fn(state, batch, step)
            step += 1
            tick_metrics.append(metrics)
            if progress:
                progress.update(1)
            if not bool(metrics["finite"]):
                last = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) if ckpt_dir.is_dir() else []
                raise TrainingDiverged(
                    f"non-finite loss or gradient at step {step} ({kimg_of(step):.3f} kimg); the update was not "
                    f"applied. Last good checkpoint: {ckpt_dir / str(last[-1]) if last else 'none yet'}")
            if step % tick_steps == 0 or step == end_step:
                host = jax.device_get(tick_metrics)
                dt = time.perf_counter() - tick_start
                n_img = (step - tick_start_step) * batch_size
                values = {k: float(np.mean([m[k] for m in host])) for k in host[0] if k != "finite"}
                values.update({"Timing/sec_per_kimg": dt / max(n_img, 1) * 1000, "Timing/img_per_s": n_img / dt})
                logger.write(step, kimg_of(step), values)
                line = (f"kimg {kimg_of(step):8.3f}  step {step:6d}  s/kimg {values['Timing/sec_per_kimg']:8.2f}  "
                        f"img/s {values['Timing/img_per_s']:7.1f}  G {values.get('Loss/G', float('nan')):7.4f}  "
                        f"D {values.get('Loss/D', float('nan')):7.4f}  R1 {values.get('Loss/r1', float('nan')):8.4f}")
                if "Loss/pl_penalty" in values:
                    line += f"  PL {values['Loss/pl_penalty']:8.4f}"
                if progress:
                    progress.write(line)
                elif is_main:
                    log(line)
                tick_metrics, tick_start, tick_start_step = [], time.perf_counter(), step
            if step % image_steps == 0 or step == end_step:
                save_grid(kimg_of(step), f"{int(round(kimg_of(step) * 1000)):08d}")
            if step % ckpt_steps == 0 or step == end_step:
                save(step, kimg_of(step))
            if metric_steps and (step % metric_steps == 0 or step == end_step):
                evaluate_metrics(step)
    finally:
        if progress:
            progress.close()
        logger.close()
        data.close()
        if manager is not None:
            manager.close()
    return {"step": step, "kimg": kimg_of(step), "workdir": str(workdir), "state": state}


def state_g_ema(state: Any) -> dict:
    """The G_ema variables of a train state (params, ema, buffers)."""
    return state.G_ema
