"""Training input pipeline on Grain: source -> shuffled global batches -> this process's block -> [-1, 1] -> devices.

The pieces, all Grain's own except the block layout of a global batch:

* ``ExampleSource``: a Grain random-access data source over the *virtual* dataset, ``num_images`` raw examples
  (after ``max_images``) followed, with ``mirror``, by their x-flipped copies. Any ``ImageSource`` (synthetic
  shapes, folder/zip, TFDS) is served through it; images are decoded in Grain's reader threads.
* Order: ``grain.samplers.IndexSampler(length, shuffle=True, num_epochs=None, seed=seed)``, one endless stream
  of global positions with a fresh permutation per epoch (Grain's ``index_shuffle`` seeded with ``seed +
  epoch``). A global batch is the next ``batch_size`` positions of the stream and may straddle an epoch
  boundary, so no example is dropped and datasets smaller than a batch work.
* Processes: ``GlobalBatchSampler`` gives process ``p`` of ``P`` (from ``grain.sharding.ShardByJaxProcess``,
  i.e. ``jax.process_index()`` / ``jax.process_count()``, or explicit ``ShardOptions``) the contiguous block
  ``[p * B / P, (p + 1) * B / P)`` of every global batch, and nothing else. The global batch is then the
  concatenation over processes in process order (what ``jax.make_array_from_process_local_data`` assembles),
  example for example the batch a 1-process run reads. Grain's own sharding (``IndexSampler`` splitting the
  dataset into per-process parts, or the ``DataLoader`` dealing out every ``P``-th record) would give each
  process a different *subset of the data*, so runs on different process counts would train on different
  batches; the block layout keeps them identical.
* ``grain.DataLoader`` with the transforms ``XFlip`` (the mirrored copies) and ``grain.transforms.Batch`` whose
  ``batch_fn`` is ``ToModelInputs`` (uint8 -> float32 ``x / 127.5 - 1`` in the model layout, labels float32
  ``[N, c_dim]``);
  reading is prefetched by ``num_workers`` threads, ``prefetch`` batches ahead (``ReadOptions``). Threads, not
  Grain's worker processes: Pillow and the numpy rendering release the GIL, and threads keep the source
  unpickled and the error of a bad file in the training process.

State. ``DataPipeline.state()`` is a JSON dict: the global position ``{epoch, index}`` (examples consumed, the
same on every process), ``seed``, ``length``, ``batch_size``, and ``grain``: the DataLoader iterator's own
``get_state()`` with the sampler's start position and the process count it was taken with. ``restore`` gives
the state back to Grain (``set_state``) when the process count and batch size are the ones it was saved with,
and otherwise restarts the sampler at the saved global position, so a checkpoint written by a 2-process run
resumes in a 1-process run (and back) on the same batches. Either way the batches after a resume are exactly
those an unbroken run reads.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import grain
import jax
import ml_collections
import numpy as np

from stylegan_jax.data.base import DatasetError, ImageSource, check_channel_mode, check_channels
from stylegan_jax.data.folder import VALIDATE_MODES, ImageFolderSource
from stylegan_jax.data.synthetic import SyntheticShapes

SOURCES = ("synthetic", "folder", "tfds")
LAYOUTS = ("NCHW", "NHWC")
# Grain's index_shuffle takes 32-bit seeds.
MAX_SEED = 2**32 - 1

# Every field make_dataset understands, with its default. This is also the expected shape of `config.data`.
def _defaults() -> dict[str, Any]:
    # The data fields and their defaults are stylegan_jax.config.base_config's `data` section (the one source of
    # defaults); the pipeline adds what the training loop passes from elsewhere (batch, seed) and its own options.
    from stylegan_jax.config import base_config

    return {
        **base_config().data.to_dict(),
        "batch_size": base_config().train.batch_size,  # global batch size, over all processes
        "seed": 0,  # shuffling seed, 0 .. 2**32 - 1 (and the official --max-size subset choice)
        "shuffle": True,
        "layout": "NCHW",  # image layout handed to the model
    }


DEFAULTS: dict[str, Any] = _defaults()


class Batch(NamedTuple):
    """A batch for the model. A NamedTuple so it is a JAX pytree."""

    images: Any  # float32 [N, C, H, W] (or NHWC) in [-1, 1]; np.ndarray or jax.Array
    labels: Any  # float32 [N, c_dim]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str  # the source's name (path, tfds:name[split], synthetic_shapes(...))
    num_images: int  # raw images used (after max_images)
    length: int  # examples per epoch: num_images, doubled by mirror
    resolution: int  # image size (square)
    channels: int  # image channels
    c_dim: int  # label dimension (0 = unconditional)
    batch_size: int  # global
    local_batch_size: int  # this process's block
    process_index: int  # this process (Grain shard index)
    process_count: int  # all processes (Grain shard count)


def _default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def _subset(num_raw: int, max_images: int | None, seed: int) -> np.ndarray:
    """Raw indices used; with ``max_images`` the same sorted random subset as the official ``--max-size``."""
    idx = np.arange(num_raw, dtype=np.int64)
    if max_images is not None and num_raw > max_images:
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        # RandomState is NumPy's frozen legacy stream: the subset never changes between versions.
        np.random.RandomState(seed % (1 << 31)).shuffle(idx)
        idx = np.sort(idx[:max_images])
    return idx


def to_model_images(images: np.ndarray, layout: str = "NCHW") -> np.ndarray:
    """``uint8 [N, H, W, C]`` -> float32 in [-1, 1] (``x / 127.5 - 1`` as the official training loop), in ``layout``."""
    x = images.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if layout == "NCHW" else x


def _check_seed(seed: Any) -> int:
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**32 - 1] (Grain's shuffle seed), got {seed!r}")
    return int(seed)


# ---------------------------------------------------------------------------------------------------------------
# Grain data source, sampler and transforms


class ExampleSource:
    """Grain random-access data source over the virtual dataset: ``len`` + ``__getitem__``.

    Record ``v`` is raw example ``raw[v % n]`` (``n = len(raw)``), to be x-flipped when ``v >= n`` (only with
    ``mirror``): ``{"image": uint8 [H, W, C], "label": float32 [c_dim], "flip": bool}``. Decoding happens here,
    i.e. in Grain's reader threads.
    """

    def __init__(
        self,
        source: ImageSource,  # any ImageSource (synthetic, folder/zip, tfds)
        raw: np.ndarray,  # raw indices used, after max_images
        mirror: bool = False,  # append x-flipped copies (official --mirror)
    ):
        self.source = source
        self.raw = np.asarray(raw, np.int64)
        self.mirror = bool(mirror)
        self.num_images = len(self.raw)
        if self.num_images < 1:
            raise DatasetError("cannot iterate over an empty dataset")

    def __len__(self) -> int:
        return self.num_images * (2 if self.mirror else 1)

    def __getitem__(self, record_key: int) -> dict[str, Any]:
        v = int(record_key)
        if not 0 <= v < len(self):
            raise IndexError(f"record {v} out of range for {len(self)} examples")
        image, label = self.source.load(int(self.raw[v % self.num_images]))
        return {"image": image, "label": np.asarray(label, np.float32), "flip": v >= self.num_images}

    def __repr__(self) -> str:
        # Grain checks it against a restored iterator state: independent of where the files are, so a moved
        # dataset still resumes (the length check guards against a different dataset).
        return f"ExampleSource(num_images={self.num_images}, mirror={self.mirror})"


class GlobalBatchSampler:
    """Grain sampler: this process's contiguous block of every global batch of an ``IndexSampler`` stream.

    The DataLoader asks for local indices ``0, 1, 2, ...`` (it is given ``NoSharding``: the sharding is here).
    Local index ``i`` is element ``j = i % L`` of local batch ``s = i // L`` and maps to global stream position
    ``start + s * B + shard_index * L + j`` (``L = B / shard_count``), whose record key ``base`` gives.
    """

    def __init__(
        self,
        base: grain.samplers.IndexSampler,  # the global order (seeded shuffle, endless epochs)
        batch_size: int,  # global batch size B
        shard_options: grain.sharding.ShardOptions,  # this process (shard_index) of shard_count
        start: int = 0,  # global stream position of local index 0 (where a resumed run restarted)
        description: str = "",  # the parameters of ``base``, for __repr__ (Grain validates restored states by it)
    ):
        count, index = int(shard_options.shard_count), int(shard_options.shard_index)
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"invalid shard_index={index} for shard_count={count}")
        if batch_size < 1 or batch_size % count:
            raise ValueError(f"global batch_size {batch_size} must be positive and divisible by process_count {count}")
        self.base = base
        self.batch_size = int(batch_size)
        self.shard_index, self.shard_count = index, count
        self.local_batch_size = self.batch_size // count
        self.start = int(start)
        self._description = description

    def __len__(self) -> int:
        return sys.maxsize // 2  # endless

    def position(self, index: int) -> int:
        """Global stream position of local index ``index``."""
        step, j = divmod(int(index), self.local_batch_size)
        return self.start + step * self.batch_size + self.shard_index * self.local_batch_size + j

    def __getitem__(self, index: int) -> grain.RecordMetadata:
        meta = self.base[self.position(index)]
        return grain.RecordMetadata(index=int(index), record_key=meta.record_key, rng=meta.rng)

    def __repr__(self) -> str:
        # No shard_index: every process consumes the same number of local records, so the state process 0 saved
        # restores on every process.
        return (f"GlobalBatchSampler({self._description}, batch_size={self.batch_size}, "
                f"process_count={self.shard_count}, start={self.start})")


class XFlip(grain.transforms.Map):
    """Mirror the records flagged ``flip`` (the official ``--mirror`` copies) left-right."""

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        if element["flip"]:
            element = {**element, "image": element["image"][:, ::-1]}
        return element


class ToModelInputs:
    """The ``batch_fn`` of the ``grain.transforms.Batch`` transform: records -> ``Batch(images float32 in [-1, 1] in
    the model layout, labels float32 [N, c_dim])``.

    One pass per image straight into the output array (``x * (1 / 127.5) - 1`` in float32, the official
    scaling, bit for bit what ``to_model_images`` gives), instead of stacking uint8 and converting the stack:
    the batch is assembled in the training thread, so its cost is not hidden behind the reader threads.
    """

    def __init__(self, layout: str = "NCHW"):  # "NCHW" or "NHWC"
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.layout = layout

    def __call__(self, records: list[dict[str, Any]]) -> Batch:
        h, w, c = records[0]["image"].shape
        shape = (len(records), c, h, w) if self.layout == "NCHW" else (len(records), h, w, c)
        images = np.empty(shape, np.float32)
        for k, rec in enumerate(records):
            img = rec["image"].transpose(2, 0, 1) if self.layout == "NCHW" else rec["image"]
            np.multiply(img, np.float32(1 / 127.5), out=images[k], dtype=np.float32)
            np.subtract(images[k], np.float32(1), out=images[k])
        labels = np.stack([np.asarray(rec["label"], np.float32) for rec in records])
        return Batch(images, labels)


# ---------------------------------------------------------------------------------------------------------------
# The pipeline


class DataPipeline:
    """What training consumes: an endless iterator of ``Batch`` es (this process's block of each global batch),
    read by a Grain DataLoader and placed on devices with ``sharding`` (a ``NamedSharding`` over the mesh's data
    axis; its spec shards the leading batch dimension). Without a sharding, batches stay numpy.

    ``state()`` is the position after the last batch *returned to the caller* (records Grain's threads read
    ahead are not counted), so it is what a checkpoint should store.
    """

    def __init__(
        self,
        source: ImageSource,  # the decoded-image source
        batch_size: int,  # global batch size
        *,
        shard_options: grain.sharding.ShardOptions,  # this process and the process count
        mirror: bool = False,  # append x-flipped copies
        shuffle: bool = True,  # shuffle (a fresh permutation per epoch) or read in index order
        seed: int = 0,  # shuffling seed (and the max_images subset)
        max_images: int | None = None,  # fixed random subset (official --max-size)
        layout: str = "NCHW",  # model image layout
        num_workers: int | None = None,  # Grain reader threads; None = min(8, cpu count)
        prefetch: int = 2,  # batches read ahead; 0 = synchronous
        sharding: Any = None,  # device placement (jax.sharding.Sharding) or None for numpy batches
        state: Mapping[str, Any] | None = None,  # a saved state() to resume from
    ):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if state is not None and "seed" in state:
            seed = state["seed"]  # a resumed run keeps its own seed, for the order and the max_images subset
        self.source = source
        self.shard_options = shard_options
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.layout = layout
        self.sharding = sharding
        self.max_images = max_images
        self.mirror = bool(mirror)
        self._configure(seed)
        # Checks the shard options and the batch size before anything is read.
        self._local = GlobalBatchSampler(self._base(), self.batch_size, shard_options).local_batch_size
        workers = _default_workers() if num_workers is None else int(num_workers)
        prefetch = int(prefetch)
        self.read_options = grain.ReadOptions(
            num_threads=workers if prefetch > 0 else 0,
            prefetch_buffer_size=max(prefetch, 0) * self._local if workers > 0 else 0,
        )
        self.info = DatasetInfo(
            name=source.name, num_images=len(self.raw), length=self.length, resolution=source.resolution,
            channels=source.channels, c_dim=source.c_dim, batch_size=self.batch_size,
            local_batch_size=self._local, process_index=int(shard_options.shard_index),
            process_count=int(shard_options.shard_count),
        )
        self._iterator: Any = None
        self._start(0)
        if state is not None:
            self.restore(state)

    def _configure(self, seed: Any) -> None:
        """Everything that depends on the seed: the max_images subset, the virtual dataset."""
        self.seed = _check_seed(seed)
        self.raw = _subset(len(self.source), self.max_images, self.seed)
        self.examples = ExampleSource(self.source, self.raw, self.mirror)
        self.length = len(self.examples)

    # -- Grain objects -------------------------------------------------------------------------------------

    def _base(self) -> grain.samplers.IndexSampler:
        return grain.samplers.IndexSampler(
            self.length, grain.sharding.NoSharding(), shuffle=self.shuffle, num_epochs=None,
            seed=self.seed if self.shuffle else None,
        )

    def _loader(self, start: int) -> grain.DataLoader:
        sampler = GlobalBatchSampler(
            self._base(), self.batch_size, self.shard_options, start=start,
            description=f"length={self.length}, shuffle={self.shuffle}, seed={self.seed}",
        )
        return grain.DataLoader(
            data_source=self.examples,
            sampler=sampler,
            operations=[XFlip(), grain.transforms.Batch(self._local, drop_remainder=True,
                                                        batch_fn=ToModelInputs(self.layout))],
            worker_count=0,
            shard_options=grain.sharding.NoSharding(),  # GlobalBatchSampler holds the sharding
            read_options=self.read_options,
        )

    def _start(self, start: int, grain_state: Any = None) -> None:
        self._iterator = None  # drops the previous DataLoader iterator and its reader threads
        self._start_pos = int(start)
        self._steps = 0
        self._failed: BaseException | None = None
        self._iterator = iter(self._loader(self._start_pos))
        if grain_state is not None:
            self._iterator.set_state(json.dumps(grain_state).encode())

    # -- device placement ----------------------------------------------------------------------------------

    def _place(self, batch: Batch) -> Batch:
        if self.sharding is None:
            return batch
        if jax.process_count() > 1:
            # Each process holds only its block; JAX assembles the global array from all processes' blocks.
            put = lambda x: jax.make_array_from_process_local_data(self.sharding, x)
        else:
            put = lambda x: jax.device_put(x, self.sharding)
        return Batch(put(batch.images), put(batch.labels))

    # -- public API ----------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self._failed is not None:
            raise self._failed
        try:
            batch = next(self._iterator)
        except BaseException as e:  # a bad file, a corrupt record: keep failing instead of hanging or skipping
            self._failed = e
            raise
        self._steps += 1
        return self._place(batch)

    @property
    def position(self) -> int:
        """Global stream position after the last returned batch (examples consumed by all processes)."""
        return self._start_pos + self._steps * self.batch_size

    def state(self) -> dict[str, Any]:
        """JSON-serialisable position after the last returned batch (see the module docstring)."""
        epoch, index = divmod(self.position, self.length)
        return {
            "epoch": int(epoch), "index": int(index), "seed": self.seed, "length": self.length,
            "batch_size": self.batch_size,
            "grain": {
                "start": self._start_pos,
                "process_count": int(self.shard_options.shard_count),
                "iterator": json.loads(self._iterator.get_state().decode()),
            },
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from a saved ``state()``; the next batch is the one an unbroken run would have produced."""
        missing = {"epoch", "index", "seed"} - set(state)
        if missing:
            raise ValueError(f"data state is missing {sorted(missing)}: {dict(state)}")
        if _check_seed(state["seed"]) != self.seed:
            self._configure(state["seed"])  # the saved seed wins (order and max_images subset)
            self.info = dataclasses.replace(self.info, num_images=len(self.raw), length=self.length)
        if "length" in state and int(state["length"]) != self.length:
            raise DatasetError(
                f"cannot resume: the saved data position is for {state['length']} examples per epoch, this dataset "
                f"has {self.length} (dataset, mirror or max_images changed), so the batch order would differ"
            )
        position = int(state["epoch"]) * self.length + int(state["index"])
        saved = state.get("grain")
        if saved is None:
            warnings.warn(
                "this data state was saved by the pre-Grain input pipeline: training resumes at the same position "
                "(epoch/index) but the example order from here on is Grain's, not the one the run started with",
                stacklevel=2,
            )
        if (saved is not None and int(saved["process_count"]) == self.info.process_count
                and int(state.get("batch_size", -1)) == self.batch_size):
            # Grain's own iterator state, on a loader rebuilt exactly as it was.
            self._start(int(saved["start"]), saved["iterator"])
            self._steps = (position - self._start_pos) // self.batch_size
            if self.position != position:
                raise DatasetError(f"inconsistent data state: Grain's start {saved['start']} and position {position} "
                                   f"do not differ by whole batches of {self.batch_size}")
        else:
            # Another process count or batch size: the same global stream, restarted at the saved position.
            self._start(position)

    def sample_labels(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Labels ``float32 [n, c_dim]`` of random dataset examples: the conditioning for generated images
        (the official loop draws them the same way). Shape ``[n, 0]`` for an unconditional dataset."""
        if self.info.c_dim == 0:
            return np.zeros((n, 0), np.float32)
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        raw = self.raw[rng.integers(0, len(self.raw), size=n)]
        return np.stack([self.source.label(int(i)) for i in raw]).astype(np.float32)

    def close(self) -> None:
        """Stop reading and release the source's files."""
        self._iterator = None  # Grain closes its reader threads when its iterator goes away
        self.source.close()

    def __enter__(self) -> DataPipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _as_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, ml_collections.ConfigDict):
        return config.to_dict()
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"config must be an ml_collections.ConfigDict or a mapping, got {type(config).__name__}")


def resolve_config(config: Any = None, **overrides: Any) -> dict[str, Any]:
    """``DEFAULTS`` updated by ``config`` then ``overrides``; unknown keys are an error (they are usually typos)."""
    cfg = dict(DEFAULTS)
    given = {**_as_dict(config), **overrides}
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown data config field(s) {unknown}; known: {sorted(DEFAULTS)}")
    cfg.update(given)
    # Cheap checks here, so a config mistake fails before a (possibly long) dataset scan.
    if cfg["source"] not in SOURCES:
        raise ValueError(f"data source must be one of {SOURCES}, got {cfg['source']!r}")
    if cfg["layout"] not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {cfg['layout']!r}")
    if cfg["validate"] not in VALIDATE_MODES:
        raise ValueError(f"validate must be one of {VALIDATE_MODES}, got {cfg['validate']!r}")
    check_channels(cfg["channels"])
    check_channel_mode(cfg["channel_mode"])
    for key in ("resolution", "batch_size"):
        if not isinstance(cfg[key], numbers.Integral) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise ValueError(f"{key} must be a positive int, got {cfg[key]!r}")
    return cfg


def default_config() -> ml_collections.ConfigDict:
    """``config.data`` with every field at its default (``None`` fields typed so they can be overridden)."""
    cfg = ml_collections.ConfigDict(dict(DEFAULTS))
    for key, typ in (("path", str), ("max_images", int), ("tfds_name", str), ("data_dir", str), ("num_workers", int)):
        cfg[key] = ml_collections.config_dict.placeholder(typ)
    return cfg


def make_source(config: Any = None, **overrides: Any) -> ImageSource:
    """The ``ImageSource`` named by ``config.source`` (validated on construction)."""
    cfg = resolve_config(config, **overrides)
    source = cfg["source"]
    if source == "synthetic":
        return SyntheticShapes(
            cfg["resolution"],
            cfg["channels"],
            num_images=cfg["synthetic_size"],
            use_labels=cfg["use_labels"],
            seed=cfg["synthetic_seed"],
        )
    if source == "folder":
        if not cfg["path"]:
            raise ValueError("source='folder' needs `path` (a directory or a .zip archive)")
        return ImageFolderSource(cfg["path"], **_stored_source_kwargs(cfg), num_workers=cfg["num_workers"])
    if not cfg["tfds_name"]:
        raise ValueError("source='tfds' needs `tfds_name`")
    from stylegan_jax.data.tfds_source import TfdsSource  # keeps tensorflow_datasets optional

    return TfdsSource(cfg["tfds_name"], **_stored_source_kwargs(cfg), split=cfg["tfds_split"], data_dir=cfg["data_dir"],
                      image_key=cfg["image_key"], label_key=cfg["label_key"])


def _stored_source_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments the sources of stored images (folder, tfds) share, from a resolved config."""
    return {key: cfg[key] for key in ("resolution", "channels", "use_labels", "validate", "channel_mode")}


def _check_sharding(sharding: Any, shape: tuple[int, ...], batch_size: int) -> None:
    try:
        sharding.shard_shape(shape)
    except Exception as e:
        raise ValueError(
            f"batch of shape {shape} (global batch_size {batch_size}) cannot be split by the given sharding "
            f"{sharding}: the batch size must be divisible by the number of devices along the data axis ({e})"
        ) from e


def make_dataset(
    config: Any = None,
    *,
    sharding: Any = None,
    state: Mapping[str, Any] | None = None,
    shard_options: grain.sharding.ShardOptions | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    **overrides: Any,
) -> DataPipeline:
    """Build the training pipeline from ``config`` (``config.data``: a ConfigDict or mapping) and/or keyword
    overrides; see ``DEFAULTS`` for the fields.

    Args:
      sharding: e.g. ``NamedSharding(mesh, P("data"))``; batches are placed with it. None keeps numpy batches.
      state: a saved ``pipeline.state()`` to resume from.
      shard_options: this process's place as Grain ``ShardOptions(shard_index, shard_count)``; default
        ``grain.sharding.ShardByJaxProcess()`` (``jax.process_index()`` of ``jax.process_count()``).
      process_index, process_count: the same as two ints (``ShardOptions(process_index, process_count)``).

    Configuration mistakes and bad data raise here, before any training step.
    """
    cfg = resolve_config(config, **overrides)
    if shard_options is not None and (process_index is not None or process_count is not None):
        raise ValueError("give either shard_options or process_index/process_count, not both")
    if shard_options is None:
        if process_index is None and process_count is None:
            shard_options = grain.sharding.ShardByJaxProcess()
        else:
            pi = jax.process_index() if process_index is None else int(process_index)
            pc = jax.process_count() if process_count is None else int(process_count)
            if pc < 1 or not 0 <= pi < pc:
                raise ValueError(f"invalid process_index={pi} for process_count={pc}")
            shard_options = grain.sharding.ShardOptions(pi, pc)
    pc = int(shard_options.shard_count)
    batch_size = int(cfg["batch_size"])
    if batch_size % pc:
        raise ValueError(f"global batch_size {batch_size} must be positive and divisible by process_count {pc}")
    _check_seed(cfg["seed"])
    local = batch_size // pc
    res, ch = int(cfg["resolution"]), int(cfg["channels"])
    if sharding is not None:
        # Checked before the (possibly slow) dataset scan so a mesh mistake fails at once.
        per_call = batch_size if jax.process_count() > 1 else local
        shape = (per_call, ch, res, res) if cfg["layout"] == "NCHW" else (per_call, res, res, ch)
        _check_sharding(sharding, shape, batch_size)

    source = make_source(cfg)
    try:
        return DataPipeline(
            source,
            batch_size,
            shard_options=shard_options,
            mirror=cfg["mirror"],
            shuffle=cfg["shuffle"],
            seed=cfg["seed"],
            max_images=cfg["max_images"],
            layout=cfg["layout"],
            num_workers=cfg["num_workers"],
            prefetch=cfg["prefetch"],
            sharding=sharding,
            state=state,
        )
    except BaseException:
        source.close()
        raise


def ordered_batches(
    source: ImageSource, batch_size: int, *, max_images: int | None = None, layout: str = "NCHW"
) -> Iterator[Batch]:
    """One pass over ``source`` in index order: ``Batch(uint8 images in layout, float32 labels)``; the last batch
    may be smaller. For metrics (e.g. FID reference statistics) that want raw uint8 images."""
    n = len(source) if max_images is None else min(len(source), max_images)
    with ThreadPoolExecutor(_default_workers()) as pool:
        for lo in range(0, n, batch_size):
            images, labels = source.load_batch(np.arange(lo, min(lo + batch_size, n)), pool)
            yield Batch(np.ascontiguousarray(images.transpose(0, 3, 1, 2)) if layout == "NCHW" else images, labels)
