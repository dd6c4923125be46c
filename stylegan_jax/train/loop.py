"""The training loop: config -> networks, data, sharded steps, logs, grids, checkpoints, resume.

:func:`train` reads top to bottom as its named steps: :func:`setup` (distributed runtime, mesh, data,
networks, state, compiled programs), :func:`restore` (the latest checkpoint and the data position), then per
iteration :func:`train_one_step`, and at their intervals :func:`log_tick`, :func:`save_grids`,
:func:`run_evaluations` and :func:`save_checkpoint`. All the run's objects live in one :class:`Run`.

Where to add things:

- **A periodic evaluation** (a metric every N kimg): append an :class:`Evaluation` in :func:`evaluations_for`.
  Its function runs on *every* process (it may use collectives: the state is a global array) and returns
  ``{name: value}``; the loop writes the values to ``metrics.jsonl`` / TensorBoard and a line on process 0.
- **A field of the tick line**: any scalar the step returns in its metrics is averaged over the tick and
  logged; add ``(key, label, format)`` to :data:`TICK_LINE_FIELDS` to also show it on the printed line (fields
  absent from the metrics are skipped).
- **A grid**: :func:`save_grids` computes images on every process and writes them on process 0.

Non-finite steps. The step never applies a non-finite update (``metrics['finite']`` is False and the state is
left as it was), so reading the flag back every step (a host sync per step) is not needed for correctness:
the flags of the pending steps are read at each tick and before each checkpoint (:func:`check_finite`), and
:class:`TrainingDiverged` names the first non-finite step. A checkpoint is never written after a non-finite
step.

Several processes (``jax.distributed``, see :mod:`stylegan_jax.train.distributed`): every process runs the same
programs and collectives in the same order. Grids and evaluations are computed by all processes; only process
0 writes files (``config.json``, ``metrics.jsonl``, TensorBoard, PNGs) and prints tick lines. Checkpoints are
saved by all processes together (orbax is collective; process 0 writes the replicated state). Programs are
compiled ahead of time and the processes meet at a barrier before the first collective, so hosts that compile
at different speeds do not time out.

Exact resume: every source of randomness is a pure function of (seed, step) or is saved in the checkpoint (the
data position, the train state with its RNG key), and checkpoints are written at step boundaries. A run killed
at any point and restarted on the same workdir therefore continues with the same batches and the same random
draws as an unbroken run, and ends with bitwise the same parameters on the same machine. The data position
counts global examples, so a checkpoint resumes with any number of processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from stylegan_jax.apis.sampling import FunctionCache
from stylegan_jax.checkpoint import CheckpointError, checkpoint_manager, load_checkpoint, load_checkpoint_meta
from stylegan_jax.checkpoint import save_checkpoint as _write_checkpoint
from stylegan_jax.models import build_generator, generator_class, generator_config
from stylegan_jax.train import distributed

# TrainState fields newer than the first checkpoint format; a checkpoint without them resumes with their initial
# values (path-length regularization and ADA, which older runs did not use; ADA restarts at train.augment_p).
ADDED_STATE_FIELDS = ("g_reg_steps", "pl_mean", "last_pl_penalty", "ada_p", "ada_sign_sum", "ada_sign_count")

# Fields of the printed tick line after kimg / step / timing: (metrics key, label, format). Absent keys are skipped.
TICK_LINE_FIELDS: list[tuple[str, str, str]] = [
    ("Loss/G", "G", "7.4f"),
    ("Loss/D", "D", "7.4f"),
    ("Loss/r1", "R1", "8.4f"),
    ("Loss/pl_penalty", "PL", "8.4f"),
    ("Loss/G/class", "Gcls", "7.4f"),
    ("Loss/D/class", "Dcls", "7.4f"),
    ("Loss/G/diversity", "Gdiv", "7.4f"),
    ("Progress/r1_gamma", "gamma", "6.3f"),
    ("Progress/lr_scale", "lr", "5.3f"),
    ("Progress/augment", "augment", "6.3f"),
]


class TrainingDiverged(RuntimeError):
    """A step produced a non-finite loss or gradient; the update was not applied."""


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config laid over base_config, with the official batch-dependent defaults (-1 sentinels) filled in: the
    resolution is :class:`TrainConfig`'s (one place), written back so that config.json records the values used."""
    from stylegan_jax.train.state import TrainConfig, complete_config

    c = complete_config(config)
    tc = TrainConfig.from_config(c)
    c.model.magnitude_ema_beta = tc.resolved_magnitude_ema_beta
    c.train.ema_kimg = tc.resolved_ema_kimg
    c.train.blur_fade_kimg = tc.resolved_blur_fade_kimg
    return c


def build_networks(config: ml_collections.ConfigDict, c_dim: int):
    """(G, D) from a resolved config: ``model.cfg`` picks StyleGAN3-T / -R or StyleGAN2 (``'stylegan2'``); the
    discriminator is the same StyleGAN2 residual one for all three."""
    from stylegan_jax.networks.discriminator import Discriminator, as_filter_spec

    m = config.model
    G = build_generator(cfg=m.cfg, z_dim=m.z_dim, w_dim=m.w_dim, c_dim=c_dim, img_resolution=config.data.resolution,
                        img_channels=config.data.channels, channel_base=m.channel_base, channel_max=m.channel_max,
                        mapping_layers=m.mapping_layers, conv_clamp=m.conv_clamp,
                        magnitude_ema_beta=m.magnitude_ema_beta, num_layers=m.num_layers,
                        margin_size=m.margin_size, input_transform_init=m.input_transform_init)
    G = G.clone(mapping_lr_multiplier=m.mapping_lr_multiplier)
    D = Discriminator(c_dim=c_dim, img_resolution=config.data.resolution, img_channels=config.data.channels,
                      channel_base=m.d_channel_base, channel_max=m.d_channel_max, conv_clamp=m.conv_clamp,
                      mbstd_group_size=m.mbstd_group_size, mbstd_num_channels=m.mbstd_num_channels,
                      pack=m.d_pack, class_head=_class_head(config, c_dim),
                      project_labels=m.d_project_labels,
                      resample_filter=as_filter_spec(m.d_resample_filter),
                      mapping_lr_multiplier=m.mapping_lr_multiplier)
    return G, D


def _class_head(config: ml_collections.ConfigDict, c_dim: int) -> bool:
    """Whether D gets the auxiliary class head: ``train.class_weight > 0``, which needs labels."""
    if config.train.class_weight > 0 and c_dim == 0:
        raise ValueError(f"train.class_weight={config.train.class_weight} needs labels (data.use_labels=True and a "
                         f"dataset with labels): the class head learns them from the real images")
    return config.train.class_weight > 0


def _discriminator_meta(D: Any) -> dict:
    """The run's D as saved with every checkpoint: read from the built network, so it cannot drift from it."""
    fields = ("c_dim", "img_resolution", "img_channels", "channel_base", "channel_max", "conv_clamp",
              "mbstd_group_size", "mbstd_num_channels", "pack", "class_head", "resample_filter",
              "mapping_lr_multiplier", "project_labels")
    return {"class": "stylegan2.Discriminator", "kwargs": {f: getattr(D, f) for f in fields}}


def _grid_png(images_nchw: np.ndarray, path: Path, cols: int) -> None:
    """Save a grid of generator outputs (NCHW, [-1, 1]) as PNG, atomically (write, then rename)."""
    from stylegan_jax.apis.postprocessing import denormalize
    from stylegan_jax.apis.sampling import image_grid

    tmp = path.with_suffix(".tmp.png")
    image_grid(denormalize(np.asarray(images_nchw, np.float32)), cols=cols).save(tmp)
    tmp.replace(path)


def global_array(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array with ``sharding`` from a host array that every process holds identically (each process
    places only its own shards, so this works across processes without a collective)."""
    x = np.asarray(x)
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def host_value(x: Any) -> Any:
    """A replicated (global) array, or a pytree of them, as numpy: this process's copy, no collective."""
    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(a.addressable_data(0))
        return np.asarray(a)

    return jax.tree.map(one, x)


class _Logger:
    """Tick lines on stdout (flushed at once, so a redirected stdout shows them as they happen) and, on process
    0 only, JSON lines + TensorBoard event files in the workdir. With several processes only process 0 prints
    tick lines; every other message is prefixed by ``[process i/n]``."""

    def __init__(self, workdir: Path, enabled: bool, log: Callable[[str], Any] = print):
        self.enabled = enabled  # process 0: write files and tick lines
        self.log = log  # where lines go (print by default)
        self.prefix = distributed.log_prefix()
        self.jsonl = open(workdir / "metrics.jsonl", "a") if enabled else None
        self.tb = None
        self.progress = None
        if enabled:
            try:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(str(workdir / "tensorboard"))
            except ImportError:  # optional dependency
                self.tb = None

    def line(self, text: str, all_processes: bool = False) -> None:
        """Print ``text`` (process 0 only unless ``all_processes``), flushed at once."""
        if not (self.enabled or all_processes):
            return
        text = self.prefix + text
        if self.progress is not None:
            self.progress.write(text)
        else:
            self.log(text)
        if self.log is print:
            sys.stdout.flush()

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
        if self.progress is not None:
            self.progress.close()
        if self.jsonl:
            self.jsonl.close()
        if self.tb:
            self.tb.close()


@dataclasses.dataclass
class Evaluation:
    """A periodic evaluation of the run (a metric every ``every_steps`` steps and at the end).

    ``fn(run, step)`` runs on every process and returns ``{name: value}``; ``describe(values)`` gives the text
    printed on process 0 (None: print nothing)."""

    name: str  # shown in errors and barrier names
    every_steps: int  # run when step % every_steps == 0 and at the last step; 0 = never
    fn: Callable[[Run, int], dict[str, float]]  # the evaluation itself
    describe: Callable[[dict[str, float]], str] | None = None  # the printed line


@dataclasses.dataclass
class Run:
    """Everything one training run holds; built by :func:`setup`."""

    config: ml_collections.ConfigDict  # resolved config (official sentinels filled in)
    workdir: Path  # run directory
    mesh: jax.sharding.Mesh  # every device of every process, axis 'data'
    data: Any  # the input pipeline (this process's slice of every global batch)
    G: Any  # generator module
    D: Any  # discriminator module
    state: Any  # the train state, replicated on the mesh
    step_fn: Any  # the compiled step (train.step.TrainStep)
    logger: _Logger  # lines, metrics.jsonl, TensorBoard
    manager: Any  # orbax checkpoint manager (on every process: saving is collective)
    model_meta: dict  # networks' description saved with every checkpoint
    is_main: bool  # process 0
    grid_fn: Any = None  # compiled G_ema grid program
    grid_inputs: tuple = ()  # (z, c) of the grid, global arrays
    evaluations: list[Evaluation] = dataclasses.field(default_factory=list)
    step: int = 0  # iterations done
    start_step: int = 0  # iteration this invocation started at
    end_step: int = 0  # iteration this invocation stops at
    pending: list[tuple[int, dict]] = dataclasses.field(default_factory=list)  # (step, metrics) since the tick
    checked: int = 0  # entries of ``pending`` whose finite flag was read
    tick_start: float = 0.0  # perf_counter at the start of the tick
    tick_start_step: int = 0  # step at the start of the tick
    reals: Any = None  # NCHW training images of images/reals.png (and reals_augmented.png), process 0
    functions: FunctionCache = dataclasses.field(default_factory=FunctionCache)  # e.g. the reals' augmentation

    @property
    def batch_size(self) -> int:
        return self.config.train.batch_size

    @property
    def ckpt_dir(self) -> Path:
        return self.workdir / "checkpoints"

    def kimg(self, step: int | None = None) -> float:
        return (self.step if step is None else step) * self.batch_size / 1000

    def every(self, kimg: float) -> int:
        """An interval in kimg as a number of steps (at least 1)."""
        return max(1, round(kimg * 1000 / self.batch_size))

    def due(self, every_steps: int) -> bool:
        """Whether the step just done is on an interval of ``every_steps`` (or the last one)."""
        return bool(every_steps) and (self.step % every_steps == 0 or self.step == self.end_step)

    def saved_steps(self) -> list[int]:
        d = self.ckpt_dir
        return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []

    def last_checkpoint_note(self) -> str:
        last = self.saved_steps()
        return f"; last checkpoint: {self.ckpt_dir / str(last[-1]) if last else 'none yet'}"


# ------------------------------------------------------------------------------------------------------------
# Set up.


def setup(config: ml_collections.ConfigDict, workdir: str | Path, log: Callable[[str], Any] = print) -> Run:
    """Distributed runtime, workdir, mesh, data, networks, a fresh state, the step and the checkpoint manager."""
    from stylegan_jax.data import make_dataset
    from stylegan_jax.train.state import create_train_state
    from stylegan_jax.train.step import make_mesh, make_train_step

    distributed.maybe_initialize_distributed()
    config = resolve_config(config)
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0
    (workdir / "images").mkdir(exist_ok=True)

    mesh = make_mesh()
    batch_size = config.train.batch_size
    if batch_size % mesh.size:
        raise ValueError(f"batch_size {batch_size} must be divisible by the number of devices ({mesh.size})")
    data_cfg = {**config.data.to_dict(), "batch_size": batch_size, "seed": config.train.seed}
    data = make_dataset(data_cfg, sharding=NamedSharding(mesh, P("data")))
    G, D = build_networks(config, data.info.c_dim)
    metric_names = [m.strip() for m in str(config.log.metrics).split(",") if m.strip()]
    if config.log.metrics_kimg > 0 and (problem := _metrics_problem(config, metric_names)):
        data.close()
        raise ValueError(problem)
    replicated = NamedSharding(mesh, P())
    state = create_train_state(G, D, config, jax.random.PRNGKey(config.train.seed))
    state = jax.tree.map(lambda x: global_array(np.asarray(x), replicated), state)
    model_meta = {"generator": generator_config(G), "discriminator": _discriminator_meta(D),
                  "config": config.to_dict()}
    run = Run(config=config, workdir=workdir, mesh=mesh, data=data, G=G, D=D, state=state,
              step_fn=make_train_step(G, D, config, mesh), logger=_Logger(workdir, is_main, log),
              manager=checkpoint_manager(workdir / "checkpoints", keep=config.log.keep_checkpoints),
              model_meta=model_meta, is_main=is_main)
    run.evaluations = evaluations_for(run)
    return run


SHAPES_METRIC = "shapes"  # log.metrics name of the synthetic-shapes quality (stylegan_jax.metrics.shape_quality)


def _metrics_problem(config: ml_collections.ConfigDict, names: list[str]) -> str | None:
    """Why ``log.metrics`` cannot run with this config (None if it can)."""
    from stylegan_jax.metrics.equivariance import METRICS

    unknown = [m for m in names if m not in METRICS and m != SHAPES_METRIC]
    if unknown:
        return f"log.metrics: unknown metric(s) {unknown}; choose from {', '.join(METRICS)}, {SHAPES_METRIC}"
    eq = [m for m in names if m in METRICS]
    if eq and not generator_class(config.model.cfg).has_input_transform:
        return (f"log.metrics={config.log.metrics!r}: the equivariance metrics need a StyleGAN3 generator (an input "
                f"transform); set --config.log.metrics={SHAPES_METRIC} or --config.log.metrics_kimg=0 for "
                "model.cfg='stylegan2'")
    if SHAPES_METRIC in names and config.data.source != "synthetic":
        return (f"log.metrics: {SHAPES_METRIC!r} measures the built-in synthetic shapes (data.source='synthetic'), "
                f"not data.source={config.data.source!r}; remove it from --config.log.metrics")
    if SHAPES_METRIC in names and config.data.resolution < 32:
        return (f"log.metrics: {SHAPES_METRIC!r} needs data.resolution >= 32 (its classifier works at 32x32), got "
                f"{config.data.resolution}")
    return None


def evaluations_for(run: Run) -> list[Evaluation]:
    """The periodic evaluations the config asks for (``log.metrics`` every ``log.metrics_kimg``: equivariance of
    G_ema, and/or ``shapes``: the synthetic-shapes quality, which also writes ``images/quality.png``)."""
    from stylegan_jax.metrics.equivariance import METRICS

    c = run.config
    out = []
    names = [m.strip() for m in str(c.log.metrics).split(",") if m.strip()]
    every = round(c.log.metrics_kimg * 1000 / run.batch_size) if c.log.metrics_kimg > 0 else 0
    eq_names = [m for m in names if m in METRICS]
    if every and eq_names:
        out.append(Evaluation("equivariance", every, _equivariance_fn(eq_names),
                              lambda v: "metrics " + "  ".join(f"{k.split('/')[-1]} {x:.2f} dB" for k, x in v.items())))
    if every and SHAPES_METRIC in names:
        out.append(Evaluation("shapes", every, _shapes_fn(), _describe_shapes))
    return out


def _shapes_fn() -> Callable[[Run, int], dict[str, float]]:
    evaluator = None
    history: list[dict] | None = None

    def evaluate(run: Run, step: int) -> dict[str, float]:
        # Shape quality of G_ema on every process (generation split over the mesh, results replicated); process 0
        # redraws images/quality.png with every evaluation of this run and of the runs it resumes.
        nonlocal evaluator, history
        from stylegan_jax.metrics.plot import quality_plot
        from stylegan_jax.metrics.shape_quality import ShapeQualityEvaluator

        mesh, c = run.mesh, run.config
        num = max(2, int(c.log.metrics_num))
        if evaluator is None:
            batch = min(64, num) + (-min(64, num)) % mesh.size
            source = run.data.source
            evaluator = ShapeQualityEvaluator(run.G, source, num_real=min(len(source), max(1000, num)),
                                              mesh=mesh if mesh.size > 1 else None, batch_size=batch)
        quality = evaluator(run.state.G_ema, num, seed=c.train.seed)
        values = {f"Metrics/{k}": float(v) for k, v in quality.as_dict().items()}
        if run.is_main:
            if history is None:
                history = _metric_history(run.workdir / "metrics.jsonl", "Metrics/shapes_precision",
                                          run.kimg(run.start_step))
            history.append({"kimg": run.kimg(), **values})
            keys = ["Metrics/shapes_precision", "Metrics/shapes_fid"]
            tmp = run.workdir / "images" / "quality.tmp.png"
            quality_plot(history, keys, title=f"{run.workdir.name}: G_ema, {num} samples").save(tmp)
            tmp.replace(run.workdir / "images" / "quality.png")
        return values

    return evaluate


def _metric_history(path: Path, key: str, upto_kimg: float) -> list[dict]:
    """Earlier records with ``key`` in a run's metrics.jsonl up to ``upto_kimg``, the step this invocation
    started from: a resumed run continues its curve, a fresh one (step 0) starts a new one."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if key in rec and float(rec.get("kimg", math.inf)) <= upto_kimg:
            out.append(rec)
    return out


def _describe_shapes(v: dict[str, float]) -> str:
    from stylegan_jax.metrics.shape_quality import CLASS_NAMES

    hist = " ".join(f"{v[f'Metrics/shapes_{n}']:.2f}" for n in CLASS_NAMES)
    real = " ".join(f"{v[f'Metrics/shapes_real_{n}']:.2f}" for n in CLASS_NAMES)
    return (f"shapes precision {v['Metrics/shapes_precision']:.3f}  FID {v['Metrics/shapes_fid']:.3f}  "
            f"KID {v['Metrics/shapes_kid']:.4f}  {'/'.join(CLASS_NAMES)} {hist} (real {real})")


def _equivariance_fn(names: list[str]) -> Callable[[Run, int], dict[str, float]]:
    evaluator = None

    def evaluate(run: Run, step: int) -> dict[str, float]:
        # Equivariance of G_ema, sharded over the same mesh.
        nonlocal evaluator
        from stylegan_jax.metrics.equivariance import EquivarianceEvaluator

        mesh, c = run.mesh, run.config
        if evaluator is None:
            evaluator = EquivarianceEvaluator(run.G, names, mesh=mesh if mesh.size > 1 else None)
        batch = max(mesh.size, min(16, c.log.metrics_num))
        batch -= batch % mesh.size
        results = evaluator(run.state.G_ema, c.log.metrics_num, seed=c.train.seed, batch_size=batch)
        return {f"Metrics/{k}": float(v) for k, v in results.items()}

    return evaluate


def grid_labels(data: Any, n: int, seed: int) -> np.ndarray:
    """The labels of a conditional run's grid: ``n`` dataset labels drawn with ``seed`` (as the official loop
    draws them), ordered by class (the argmax of each label, a stable sort), so that the grid, filled row by
    row, reads class by class."""
    labels = data.sample_labels(n, seed)
    return labels[np.argsort(np.argmax(labels, axis=1), kind="stable")]


def compile_programs(run: Run) -> None:
    """Compile the step's programs and the grid program ahead of time, then meet the other processes: the first
    collective must not start while a slower host is still compiling (gloo waits only 30 s for a peer)."""
    c = run.config
    grid_n = c.log.grid_size**2
    z = np.random.RandomState(c.train.seed).randn(grid_n, run.G.z_dim).astype(np.float32)
    labels = grid_labels(run.data, grid_n, c.train.seed) if run.data.info.c_dim else None
    split = grid_n % run.mesh.size == 0
    in_sharding = NamedSharding(run.mesh, P("data") if split else P())
    replicated = NamedSharding(run.mesh, P())
    run.grid_inputs = (global_array(z, in_sharding), None if labels is None else global_array(labels, in_sharding))
    # Generators with noise inputs (StyleGAN2) show the grid with their fixed noise_const images, so that grids
    # of successive snapshots differ only by training (the official gen_images.py default, noise_mode='const').
    grid = jax.jit(lambda v, z, c_: run.G.apply(v, z, c_, c.log.grid_psi, noise_mode="const"),
                   in_shardings=(replicated, in_sharding, None if labels is None else in_sharding),
                   out_shardings=replicated)
    # The grid program compiles in the step's worker threads, alongside the step's programs.
    compiled = run.step_fn.precompile(run.state, next_batch_spec(run), run.start_step, run.end_step,
                                      also={"grid": (grid, (run.state.G_ema, *run.grid_inputs))})
    run.grid_fn = compiled["grid"]
    distributed.sync("compiled")
    run.tick_start, run.tick_start_step = time.perf_counter(), run.step  # the first tick's timing without compiles


def next_batch_spec(run: Run) -> Any:
    """The shapes and shardings of a global batch (for compiling before the first batch is read)."""
    from stylegan_jax.train.step import data_sharding

    info, c = run.data.info, run.config
    sharding = data_sharding(run.mesh)
    n = run.batch_size
    return {"real": jax.ShapeDtypeStruct((n, c.data.channels, c.data.resolution, c.data.resolution), jnp.float32,
                                         sharding=sharding),
            "c": jax.ShapeDtypeStruct((n, info.c_dim), jnp.float32, sharding=sharding)}


# ------------------------------------------------------------------------------------------------------------
# Restore.


def restore(run: Run, resume: bool) -> None:
    """Continue from the latest checkpoint in the workdir (state, data position), if any and ``resume``."""
    if resume and run.saved_steps():
        # States saved before path-length regularization existed lack its fields: they start fresh (zeros).
        try:
            meta, state = load_checkpoint(run.ckpt_dir, target=run.state, fill_missing=ADDED_STATE_FIELDS)
        except CheckpointError as e:
            changed = _changed_settings(load_checkpoint_meta(run.ckpt_dir).get("config", {}), run.config.to_dict())
            if not changed:
                raise
            # The settings first: orbax's own message lists every leaf of the state and can run to pages.
            raise CheckpointError(f"the run in {run.workdir} was saved with other settings than this one's: "
                                  f"{'; '.join(changed)}. Resume with the saved settings (config.json in the "
                                  f"workdir), or train the new ones in a new --workdir.\n{e}") from e
        run.state = state
        run.data.restore(meta["data_state"])
        run.step = run.start_step = int(meta["step"])
        run.logger.line(f"resumed from {run.ckpt_dir}/{run.step} at {meta['kimg']:.3f} kimg")


def save_config(run: Run) -> None:
    """``config.json``: the settings this invocation trains with, written once the workdir's checkpoint (if any) has
    been restored with them, so that a refused resume leaves the saved run's file as it was."""
    if run.is_main:
        (run.workdir / "config.json").write_text(json.dumps(run.config.to_dict(), indent=2, default=str))


# Config sections whose values can change what a training state holds (its networks, optimizers, counters); the
# others (log, the length of the run) cannot.
_STATE_SECTIONS = ("model", "data", "train")
_NOT_STATE_KEYS = {"train.total_kimg", "data.path", "data.data_dir", "data.num_workers", "data.prefetch"}


def _changed_settings(saved: dict, current: dict) -> list[str]:
    """``'key: saved -> current'`` for the settings of ``_STATE_SECTIONS`` that differ between two configs."""
    from flax import traverse_util

    def flat(d: dict) -> dict[str, Any]:  # through JSON as the checkpoint's meta was: tuples come back as lists
        return traverse_util.flatten_dict(json.loads(json.dumps(d, default=str)), sep=".")

    # Settings the saved config lacks did not exist when it was written (their defaults are the old behaviour).
    a, b = flat(saved), flat(current)
    return [f"{key}: {a[key]!r} -> {b.get(key, '(unset)')!r}" for key in sorted(a)
            if key.split(".")[0] in _STATE_SECTIONS and key not in _NOT_STATE_KEYS and a[key] != b.get(key)]


def plan(run: Run, stop_after_steps: int | None) -> None:
    """The last step of this invocation: ``train.total_kimg``, or ``stop_after_steps`` more."""
    total = math.ceil(run.config.train.total_kimg * 1000 / run.batch_size)
    run.end_step = total if stop_after_steps is None else min(total, run.start_step + stop_after_steps)
    if run.is_main and run.config.log.progress_bar and sys.stderr.isatty():
        from tqdm import tqdm

        run.logger.progress = tqdm(total=run.end_step, initial=run.start_step, unit="step", dynamic_ncols=True)


# ------------------------------------------------------------------------------------------------------------
# Step, log, sample, evaluate, checkpoint.


def train_one_step(run: Run) -> None:
    """One iteration on the next global batch; its metrics stay on the device until the tick."""
    batch = next(run.data)
    run.state, metrics = run.step_fn(run.state, batch, run.step)
    run.step += 1
    run.pending.append((run.step, metrics))
    if run.logger.progress is not None:
        run.logger.progress.update(1)


def check_finite(run: Run) -> None:
    """Read the finite flags of the steps not checked yet; raise :class:`TrainingDiverged` naming the first
    non-finite one. (The step did not apply it; the state is the last good one.)"""
    unchecked = run.pending[run.checked:]
    if not unchecked:
        return
    flags = host_value([m["finite"] for _, m in unchecked])
    run.checked = len(run.pending)
    for (step, _), ok in zip(unchecked, flags, strict=True):
        if not bool(ok):
            last = run.saved_steps()
            raise TrainingDiverged(
                f"non-finite loss or gradient at step {step} ({run.kimg(step):.3f} kimg); the update was not "
                f"applied. Last good checkpoint: {run.ckpt_dir / str(last[-1]) if last else 'none yet'}")


def log_tick(run: Run) -> None:
    """Means of the tick's metrics to metrics.jsonl / TensorBoard, and one line on stdout (process 0)."""
    check_finite(run)
    host = host_value([m for _, m in run.pending])
    dt = time.perf_counter() - run.tick_start
    n_img = (run.step - run.tick_start_step) * run.batch_size
    values = {k: float(np.mean([m[k] for m in host])) for k in host[0] if k != "finite"}
    values.update({"Timing/sec_per_kimg": dt / max(n_img, 1) * 1000, "Timing/img_per_s": n_img / dt})
    run.logger.write(run.step, run.kimg(), values)
    line = (f"kimg {run.kimg():8.3f}  step {run.step:6d}  s/kimg {values['Timing/sec_per_kimg']:8.2f}  "
            f"img/s {values['Timing/img_per_s']:7.1f}")
    for key, label, fmt in TICK_LINE_FIELDS:
        if key in values:
            line += f"  {label} {values[key]:{fmt}}"
    run.logger.line(line)
    run.pending, run.checked = [], 0
    run.tick_start, run.tick_start_step = time.perf_counter(), run.step


def save_grids(run: Run, tag: str | None = None) -> None:
    """The fixed-latent G_ema grid: computed by every process (a collective program), written by process 0."""
    images = host_value(run.grid_fn(run.state.G_ema, *run.grid_inputs))
    if run.is_main:
        tag = tag or f"{int(round(run.kimg() * 1000)):08d}"
        _grid_png(images, run.workdir / "images" / f"fakes_{tag}.png", run.config.log.grid_size)
        save_reals(run)
    distributed.sync("grid written")


def save_reals(run: Run) -> None:
    """``images/reals.png`` (a fixed choice of training images, written once) and, when D sees augmented images,
    ``images/reals_augmented.png``: the same images through the augmentation at the current p (process 0 only,
    on its own device: no collective)."""
    from stylegan_jax.apis.augment_preview import augment_images, real_grid_images

    c, tc, images = run.config, run.step_fn.config, run.workdir / "images"
    if run.reals is None:
        run.reals = real_grid_images(run.data, c.log.grid_size**2, c.train.seed)
    if not (images / "reals.png").exists():
        _grid_png(run.reals, images / "reals.png", c.log.grid_size)
    if tc.augmenting:
        p = float(host_value(run.state.ada_p))
        _grid_png(augment_images(run.reals, p, tc.augment_spec, seed=c.train.seed + run.step, cache=run.functions),
                  images / "reals_augmented.png", c.log.grid_size)


def run_evaluations(run: Run, final: bool = False) -> None:
    """The periodic evaluations due at this step (all processes compute, process 0 logs)."""
    for ev in run.evaluations:
        if run.due(ev.every_steps):
            values = ev.fn(run, run.step)
            run.logger.write(run.step, run.kimg(), values)
            if ev.describe is not None:
                run.logger.line(ev.describe(values))
            distributed.sync(f"{ev.name} logged")


def save_checkpoint(run: Run) -> None:
    """Checkpoint at this step (every process takes part; orbax writes the replicated state once). Never after a
    non-finite step: the pending finite flags are checked first."""
    check_finite(run)
    meta = {**run.model_meta, "kimg": run.kimg(), "data_state": run.data.state(),
            "processes": jax.process_count(), "devices": run.mesh.size}
    _write_checkpoint(run.ckpt_dir, run.step, run.state, meta, manager=run.manager)


def close(run: Run) -> None:
    run.logger.close()
    run.data.close()
    run.manager.close()


# ------------------------------------------------------------------------------------------------------------
# The loop.


def train(config: ml_collections.ConfigDict, workdir: str | Path, resume: bool = True,
          stop_after_steps: int | None = None, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Train until ``config.train.total_kimg`` (or ``stop_after_steps`` more steps, for tests and
    benchmarks). Returns a summary dict. Raises :class:`TrainingDiverged` on a non-finite step."""
    run = setup(config, workdir, log)
    with distributed.Watchdog(on_lost=run.last_checkpoint_note):
        try:
            restore(run, resume)
            save_config(run)
            plan(run, stop_after_steps)
            compile_programs(run)
            if run.step == 0:
                save_grids(run, "init")
            tick, images, ckpt = (run.every(run.config.log.tick_kimg), run.every(run.config.log.image_kimg),
                                  run.every(run.config.log.checkpoint_kimg))
            while run.step < run.end_step:
                train_one_step(run)
                if run.due(tick):
                    log_tick(run)
                if run.due(images):
                    save_grids(run)
                if run.due(ckpt):
                    save_checkpoint(run)
                run_evaluations(run)
            check_finite(run)
        finally:
            close(run)
    return {"step": run.step, "kimg": run.kimg(), "workdir": str(run.workdir), "state": run.state}


def state_g_ema(state: Any) -> dict:
    """The G_ema variables of a train state (params, ema, buffers)."""
    return state.G_ema
