"""Training input pipeline: source -> shuffled global batches -> this host's slice -> [-1, 1] float -> devices.

Order of examples. The pipeline walks an endless stream made of one permutation per epoch of the virtual
dataset (``num_images`` raw examples, doubled with x-flipped copies when ``mirror``). The permutation of epoch
``e`` depends only on ``(seed, e)``; a global batch is the next ``batch_size`` entries of the stream and may
straddle an epoch boundary, so no example is dropped and datasets smaller than a batch work. The position in
the stream is ``(epoch, index)``; saving ``state()`` and building the pipeline again with it gives exactly the
batches an unbroken run would have seen. The position counts global examples, so it is the same on every host
and stays valid if the number of hosts changes.

Hosts. Every host computes the same global batch of indices and loads only its own contiguous slice
``[process_index * B / P, (process_index + 1) * B / P)``; the global batch is the concatenation over hosts in
process order, which is what ``jax.make_array_from_process_local_data`` assembles.
"""

from __future__ import annotations

import atexit
import dataclasses
import numbers
import os
import queue
import threading
import weakref
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from stylegan_jax.data.base import DatasetError, ImageSource, check_channel_mode, check_channels
from stylegan_jax.data.folder import VALIDATE_MODES, ImageFolderSource
from stylegan_jax.data.synthetic import SyntheticShapes

SOURCES = ("synthetic", "folder", "tfds")
LAYOUTS = ("NCHW", "NHWC")

# Every field make_dataset understands, with its default. This is also the expected shape of `config.data`.
DEFAULTS: dict[str, Any] = dict(
    source="synthetic",  # synthetic | folder | tfds
    path=None,  # folder: a directory or a .zip in dataset_tool.py layout
    resolution=64,  # model resolution: images are center-cropped to square and resized (LANCZOS) to this
    channels=3,  # 1, 3 or 4
    batch_size=32,  # global batch size, over all hosts
    mirror=False,  # official --mirror: add an x-flipped copy of every image (doubles the dataset)
    seed=0,  # shuffling seed (and the official --max-size subset choice)
    shuffle=True,
    use_labels=False,  # conditional training: one-hot class or label vector per image
    max_images=None,  # official --max-size: use a fixed random subset of this many images
    layout="NCHW",  # image layout handed to the model
    # tfds
    tfds_name=None,  # e.g. "celeb_a", "celeb_a:2.1.0", "my_dataset/config"
    tfds_split="train",  # TFDS split syntax, e.g. "train", "train[:90%]"
    data_dir=None,  # TFDS data_dir where the dataset is prepared; None = TFDS default (~/tensorflow_datasets)
    image_key="image",
    label_key="label",
    # synthetic
    synthetic_size=10_000,  # number of distinct synthetic images
    synthetic_seed=0,  # content seed of the synthetic images (independent of the shuffling seed)
    # robustness / performance
    validate="scan",  # folder: scan | full | none (see stylegan_jax.data.folder)
    channel_mode="convert",  # convert | strict: what to do with images whose channel count differs
    num_workers=None,  # decoding threads per host; None = min(8, cpu count)
    prefetch=2,  # batches prepared ahead in a background thread (0 = synchronous)
)


class Batch(NamedTuple):
    """A batch for the model. A NamedTuple so it is a JAX pytree."""

    images: Any  # float32 [N, C, H, W] (or NHWC) in [-1, 1]; np.ndarray or jax.Array
    labels: Any  # float32 [N, c_dim]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_images: int  # raw images used (after max_images)
    length: int  # examples per epoch: num_images, doubled by mirror
    resolution: int
    channels: int
    c_dim: int
    batch_size: int  # global
    local_batch_size: int  # this host's slice
    process_index: int
    process_count: int


def _default_workers() -> int:
    return min(8, os.cpu_count() or 1)


class IndexStream:
    """Endless stream of virtual example indices: one permutation of ``range(length)`` per epoch.

    The permutation sorts the raw 64-bit outputs of ``PCG64(SeedSequence([seed, epoch]))``: NumPy guarantees
    that bit stream across versions (it does not for ``Generator.permutation``), so a saved position replays
    the same batches even after a NumPy upgrade.
    """

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True, epoch: int = 0, index: int = 0):
        if length < 1:
            raise DatasetError("cannot iterate over an empty dataset")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if epoch < 0 or not 0 <= index < length:
            raise ValueError(f"invalid position epoch={epoch}, index={index} for {length} examples")
        self.length, self.seed, self.shuffle = int(length), int(seed), bool(shuffle)
        self.epoch, self.index = int(epoch), int(index)
        self._cached: tuple[int, np.ndarray] | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.length, dtype=np.int64)
        if self._cached is None or self._cached[0] != epoch:
            keys = np.random.PCG64(np.random.SeedSequence([self.seed, epoch])).random_raw(self.length)
            self._cached = (epoch, np.argsort(np.asarray(keys, np.uint64), kind="stable").astype(np.int64))
        return self._cached[1]

    def take(self, n: int) -> np.ndarray:
        parts = []
        while n > 0:
            k = min(n, self.length - self.index)
            parts.append(self.permutation(self.epoch)[self.index : self.index + k])
            self.index += k
            n -= k
            if self.index == self.length:
                self.epoch, self.index = self.epoch + 1, 0
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "length": self.length}


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


class DataIterator:
    """Synchronous iterator over this host's slice of each global batch, as numpy ``Batch`` es.

    ``state()`` is the position after the last batch returned; ``restore(state)`` moves there.
    """

    def __init__(
        self,
        source: ImageSource,
        batch_size: int,
        *,
        mirror: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        max_images: int | None = None,
        process_index: int = 0,
        process_count: int = 1,
        layout: str = "NCHW",
        num_workers: int | None = None,
        state: Mapping[str, int] | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(f"invalid process_index={process_index} for process_count={process_count}")
        if batch_size % process_count:
            raise ValueError(f"global batch_size {batch_size} is not divisible by process_count {process_count}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.source = source
        self.batch_size = int(batch_size)
        self.local_batch_size = self.batch_size // process_count
        self.process_index, self.process_count = int(process_index), int(process_count)
        self.mirror = bool(mirror)
        self.layout = layout
        if state is not None and "seed" in state:
            seed = int(state["seed"])  # a resumed run keeps its own seed, for the order and the max_images subset
        self.raw = _subset(len(source), max_images, seed)
        self.length = len(self.raw) * (2 if self.mirror else 1)
        self._shuffle = bool(shuffle)
        self._stream = IndexStream(self.length, seed, shuffle)
        self._workers = num_workers or _default_workers()
        self._pool: ThreadPoolExecutor | None = None
        if state is not None:
            self.restore(state)

    def state(self) -> dict[str, int]:
        return self._stream.state()

    def restore(self, state: Mapping[str, int]) -> None:
        missing = {"epoch", "index", "seed"} - set(state)
        if missing:
            raise ValueError(f"data state is missing {sorted(missing)}: {dict(state)}")
        if "length" in state and int(state["length"]) != self.length:
            raise DatasetError(
                f"cannot resume: the saved data position is for {state['length']} examples per epoch, this dataset "
                f"has {self.length} (dataset, mirror or max_images changed), so the batch order would differ"
            )
        self._stream = IndexStream(
            self.length, int(state["seed"]), self._shuffle, int(state["epoch"]), int(state["index"])
        )

    def next_indices(self) -> np.ndarray:
        """Advance by one global batch and return this host's virtual indices."""
        idx = self._stream.take(self.batch_size)
        lo = self.process_index * self.local_batch_size
        return idx[lo : lo + self.local_batch_size]

    def load(self, virtual: np.ndarray) -> Batch:
        """Numpy batch for virtual indices (``i >= num_images`` means the x-flipped copy of ``i - num_images``)."""
        n = len(self.raw)
        if self._pool is None and self._workers > 1:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="data-load")
        images, labels = self.source.load_batch(self.raw[virtual % n], self._pool)
        flip = virtual >= n
        if flip.any():
            images[flip] = images[flip, :, ::-1, :]
        return Batch(to_model_images(images, self.layout), labels)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        return self.load(self.next_indices())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


# Prefetch threads still running at interpreter exit would call into JAX while it is being torn down; stop them
# first (a pipeline that was closed is simply skipped).
_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _halt_all() -> None:
    for pipeline in list(_LIVE):
        pipeline._halt()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class DataPipeline:
    """What training consumes: an endless iterator of ``Batch`` es, prefetched in a background thread and
    placed on devices with ``sharding`` (a ``NamedSharding`` over the mesh's data axis; its spec shards the
    leading batch dimension). Without a sharding, batches stay numpy.

    ``state()`` is the position after the last batch *returned to the caller* (batches still waiting in the
    prefetch buffer are not counted), so it is what a checkpoint should store.
    """

    def __init__(self, iterator: DataIterator, info: DatasetInfo, sharding: Any = None, prefetch: int = 2):
        self.iterator = iterator
        self.source = iterator.source
        self.info = info
        self.sharding = sharding
        self.prefetch = int(prefetch)
        self._state = iterator.state()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._failed: BaseException | None = None

    # -- device placement ----------------------------------------------------------------------------------

    def _place(self, batch: Batch) -> Batch:
        if self.sharding is None:
            return batch
        if jax.process_count() > 1:
            # Each process holds only its slice; JAX assembles the global array from all processes' slices.
            put = lambda x: jax.make_array_from_process_local_data(self.sharding, x)
        else:
            put = lambda x: jax.device_put(x, self.sharding)
        return Batch(put(batch.images), put(batch.labels))

    # -- background prefetch -------------------------------------------------------------------------------

    def _produce(self, stop: threading.Event, q: queue.Queue) -> None:
        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            while not stop.is_set():
                batch = self.iterator.load(self.iterator.next_indices())
                if not put((self._place(batch), self.iterator.state())):
                    return
        except BaseException as e:  # handed to the consumer, which re-raises it in the training thread
            put(_Failure(e))

    def _start(self) -> None:
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self.prefetch)
        self._thread = threading.Thread(
            target=self._produce, args=(self._stop, self._queue), name="data-prefetch", daemon=True
        )
        self._thread.start()
        _LIVE.add(self)

    def _halt(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._queue = queue.Queue()
        _LIVE.discard(self)

    # -- public API ----------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self._failed is not None:
            raise self._failed
        if self.prefetch <= 0:
            batch = self._place(next(self.iterator))
            self._state = self.iterator.state()
            return batch
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, _Failure):
            self._halt()
            self._failed = item.error
            raise item.error
        batch, self._state = item
        return batch

    def state(self) -> dict[str, int]:
        """JSON-serialisable position ``{epoch, index, seed, length}`` after the last returned batch."""
        return dict(self._state)

    def restore(self, state: Mapping[str, int]) -> None:
        """Continue from a saved ``state()``; the next batch is the one an unbroken run would have produced."""
        self._halt()
        self.iterator.restore(state)
        self._state = self.iterator.state()
        self._failed = None

    def sample_labels(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Labels ``float32 [n, c_dim]`` of random dataset examples: the conditioning for generated images
        (the official loop draws them the same way). Shape ``[n, 0]`` for an unconditional dataset."""
        if self.info.c_dim == 0:
            return np.zeros((n, 0), np.float32)
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        raw = self.iterator.raw[rng.integers(0, len(self.iterator.raw), size=n)]
        return np.stack([self.source.label(int(i)) for i in raw]).astype(np.float32)

    def close(self) -> None:
        self._halt()
        self.iterator.close()
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
        return ImageFolderSource(
            cfg["path"],
            cfg["resolution"],
            cfg["channels"],
            use_labels=cfg["use_labels"],
            validate=cfg["validate"],
            channel_mode=cfg["channel_mode"],
            num_workers=cfg["num_workers"],
        )
    if not cfg["tfds_name"]:
        raise ValueError("source='tfds' needs `tfds_name`")
    from stylegan_jax.data.tfds_source import TfdsSource  # keeps tensorflow_datasets optional

    return TfdsSource(
        cfg["tfds_name"],
        cfg["resolution"],
        cfg["channels"],
        split=cfg["tfds_split"],
        data_dir=cfg["data_dir"],
        image_key=cfg["image_key"],
        label_key=cfg["label_key"],
        use_labels=cfg["use_labels"],
        channel_mode=cfg["channel_mode"],
    )


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
    state: Mapping[str, int] | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    **overrides: Any,
) -> DataPipeline:
    """Build the training pipeline from ``config`` (``config.data``: a ConfigDict or mapping) and/or keyword
    overrides; see ``DEFAULTS`` for the fields.

    Args:
      sharding: e.g. ``NamedSharding(mesh, P("data"))``; batches are placed with it. None keeps numpy batches.
      state: a saved ``pipeline.state()`` to resume from.
      process_index, process_count: this host's place (default ``jax.process_index()`` / ``jax.process_count()``).

    Configuration mistakes and bad data raise here, before any training step.
    """
    cfg = resolve_config(config, **overrides)
    pi = jax.process_index() if process_index is None else int(process_index)
    pc = jax.process_count() if process_count is None else int(process_count)
    batch_size = int(cfg["batch_size"])
    if batch_size < 1 or batch_size % pc:
        raise ValueError(f"global batch_size {batch_size} must be positive and divisible by process_count {pc}")
    local = batch_size // pc
    res, ch = int(cfg["resolution"]), int(cfg["channels"])
    if sharding is not None:
        # Checked before the (possibly slow) dataset scan so a mesh mistake fails at once.
        per_call = batch_size if jax.process_count() > 1 else local
        shape = (per_call, ch, res, res) if cfg["layout"] == "NCHW" else (per_call, res, res, ch)
        _check_sharding(sharding, shape, batch_size)

    source = make_source(cfg)
    try:
        iterator = DataIterator(
            source,
            batch_size,
            mirror=cfg["mirror"],
            shuffle=cfg["shuffle"],
            seed=cfg["seed"],
            max_images=cfg["max_images"],
            process_index=pi,
            process_count=pc,
            layout=cfg["layout"],
            num_workers=cfg["num_workers"],
            state=state,
        )
    except BaseException:
        source.close()
        raise
    info = DatasetInfo(
        name=source.name,
        num_images=len(iterator.raw),
        length=iterator.length,
        resolution=res,
        channels=ch,
        c_dim=source.c_dim,
        batch_size=batch_size,
        local_batch_size=local,
        process_index=pi,
        process_count=pc,
    )
    return DataPipeline(iterator, info, sharding=sharding, prefetch=cfg["prefetch"])


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
