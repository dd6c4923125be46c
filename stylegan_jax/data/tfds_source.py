"""TensorFlow Datasets source: a prepared TFDS dataset read by random access, without TensorFlow.

Requirements: ``tensorflow-datasets`` (reading), plus ``array_record`` for datasets prepared in that format
(a dependency of tensorflow-datasets on Linux). TensorFlow itself is only needed to *prepare* a dataset
(``tfds build`` / ``download_and_prepare``); reading goes through TFDS's numpy example parser and Pillow.

Nothing is ever downloaded at run time: the dataset must already be prepared in ``data_dir``.

Random access, needed for exact resume and per-host slicing, comes from:

* ``array_record`` (or ``parquet``) prepared datasets: TFDS's own ``as_data_source``.
* ``tfrecord`` prepared datasets (the TFDS default): a record index built on construction by walking the
  TFRecord framing of each shard (8-byte length, 4-byte CRC, payload, 4-byte CRC: 12 bytes read per record,
  about a second per 100k records), then ``os.pread`` of single records. The payloads are the same serialized
  ``tf.train.Example`` protos TFDS would parse, decoded by the same TFDS feature spec.

Images are taken from the example still encoded (``SkipDecoding``) and decoded by Pillow, so every source
shares one crop/resize/channel path.
"""

from __future__ import annotations

import os
import struct
import threading
from typing import Any

import numpy as np

from stylegan_jax.data.base import (
    DatasetError,
    ImageSource,
    array_to_image,
    check_channel_mode,
    check_channels,
    decode_image,
    prepare_image,
)


def _import_tfds() -> Any:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "source='tfds' needs tensorflow-datasets: pip install 'tensorflow-datasets>=4.9' "
            "(and tensorflow-cpu to prepare datasets)"
        ) from e
    return tfds


def _not_prepared_message(name: str, data_dir: str) -> str:
    base = name.split(":")[0].split("/")[0]
    return (
        f"TFDS dataset '{name}' is not prepared in data_dir '{data_dir}', and this pipeline never downloads at "
        f"run time. Prepare it once (needs network and tensorflow-cpu):\n"
        f"    tfds build {name} --data_dir {data_dir}\n"
        f"or in Python: tfds.builder('{name}', data_dir='{data_dir}').download_and_prepare(). "
        f"Datasets with manual downloads expect their files in '{os.path.join(data_dir, 'downloads', 'manual')}' "
        f"first (see the '{base}' page of the TFDS catalog)."
    )


class _TfRecordIndex:
    """Random access to the records of the TFRecord shards selected by TFDS file instructions."""

    def __init__(self, file_instructions: list[Any]):
        self._fds: dict[str, int] = {}
        offsets: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        file_ids: list[np.ndarray] = []
        self._files: list[str] = []
        cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for fi in file_instructions:
            if fi.filename not in cache:
                cache[fi.filename] = self._scan(fi.filename, fi.examples_in_shard)
                self._files.append(fi.filename)
            off, ln = cache[fi.filename]
            sel = slice(fi.skip, fi.skip + fi.take)
            offsets.append(off[sel])
            lengths.append(ln[sel])
            file_ids.append(np.full(len(off[sel]), self._files.index(fi.filename), np.int32))
        self.offsets = np.concatenate(offsets) if offsets else np.zeros(0, np.int64)
        self.lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        self.file_ids = np.concatenate(file_ids) if file_ids else np.zeros(0, np.int32)

    def _fd(self, filename: str) -> int:
        fd = self._fds.get(filename)
        if fd is None:
            fd = self._fds[filename] = os.open(filename, os.O_RDONLY)
        return fd

    def _scan(self, filename: str, expected: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            fd = self._fd(filename)
            size = os.fstat(fd).st_size
        except OSError as e:
            raise DatasetError(f"cannot open TFDS shard '{filename}': {e}") from e
        offsets, lengths = [], []
        pos = 0
        while pos < size:
            header = os.pread(fd, 8, pos)
            if len(header) < 8:
                break
            (n,) = struct.unpack("<Q", header)
            if pos + 12 + n + 4 > size:
                raise DatasetError(f"TFDS shard '{filename}' is truncated at byte {pos} (record of {n} bytes)")
            offsets.append(pos + 12)
            lengths.append(n)
            pos += 12 + n + 4
        if len(offsets) != expected:
            raise DatasetError(
                f"TFDS shard '{filename}' holds {len(offsets)} records but dataset_info.json says {expected}; "
                "the prepared data is incomplete or corrupt, prepare it again"
            )
        return np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> bytes:
        fd = self._fd(self._files[self.file_ids[index]])
        return os.pread(fd, int(self.lengths[index]), int(self.offsets[index]))

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class TfdsSource(ImageSource):
    """Images (and optional labels) of a prepared TFDS dataset split.

    Labels (``use_labels``), from feature ``label_key``: a ``ClassLabel`` is one-hot encoded
    (``c_dim = num_classes``); a numeric/bool ``Tensor`` of shape ``(k,)`` is used as a float vector; a
    ``FeaturesDict`` of scalars (e.g. ``celeb_a``'s ``attributes``) becomes a float vector in sorted key order.
    """

    def __init__(
        self,
        name: str,
        resolution: int,
        channels: int = 3,
        split: str = "train",
        data_dir: str | os.PathLike | None = None,
        image_key: str = "image",
        label_key: str = "label",
        use_labels: bool = False,
        channel_mode: str = "convert",
    ):
        tfds = _import_tfds()
        self.resolution = int(resolution)
        self.channels = check_channels(channels)
        self.channel_mode = check_channel_mode(channel_mode)
        self.image_key = image_key
        self.label_key = label_key
        self.use_labels = bool(use_labels)
        self.split = split
        data_dir = os.fspath(data_dir) if data_dir is not None else None
        self.name = f"tfds:{name}[{split}]"

        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError as e:
            where = data_dir or "the default TFDS data_dir"
            raise DatasetError(
                f"TFDS dataset '{name}' is neither a registered TFDS dataset nor prepared in {where}: "
                f"{str(e).splitlines()[0]}"
            ) from e
        if not builder.is_prepared():
            raise DatasetError(_not_prepared_message(name, os.fspath(data_dir or builder.data_dir_root)))
        self.data_dir = builder.data_dir
        info = builder.info
        try:
            num = info.splits[split].num_examples
        except (KeyError, ValueError, AssertionError) as e:
            raise DatasetError(
                f"TFDS dataset '{name}' in '{builder.data_dir}' has no split '{split}' "
                f"(available: {', '.join(sorted(info.splits.keys()))}): {e}"
            ) from e
        if num == 0:
            raise DatasetError(f"TFDS dataset '{name}' split '{split}' is empty")

        features = info.features
        keys = list(features.keys())
        if image_key not in keys:
            raise DatasetError(f"TFDS dataset '{name}' has no feature '{image_key}' (features: {', '.join(keys)})")
        self._image_feature = features[image_key]
        if not isinstance(self._image_feature, tfds.features.Image | tfds.features.Tensor):
            raise DatasetError(
                f"TFDS feature '{image_key}' of '{name}' is a {type(self._image_feature).__name__}, not an image"
            )
        self._c_dim = 0
        if self.use_labels:
            self._c_dim, self._label_fn = self._label_spec(tfds, features, name)

        # Keep every image feature encoded: decoding what we do not use would cost a full decode per label read.
        skip = tfds.decode.SkipDecoding()
        self._decoders_image = {image_key: skip} if isinstance(self._image_feature, tfds.features.Image) else None
        self._decoders_label = {
            k: tfds.decode.SkipDecoding() for k in keys if isinstance(features[k], tfds.features.Image)
        }
        self._features = features

        fmt = info.file_format
        formats = {f.value for f in info.available_file_formats()} if info.available_file_formats() else set()
        self._lock = threading.Lock()
        if formats & {"array_record", "parquet"}:
            # Raw records; decoding stays ours so all formats share one path.
            self._records = builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
            self._index = None
        elif fmt is not None and fmt.value == "tfrecord":
            from tensorflow_datasets.core.data_sources import base as ds_base

            self._index = _TfRecordIndex(ds_base.file_instructions(info, split))
            self._records = self._index
        else:
            raise DatasetError(f"TFDS dataset '{name}' is stored as {fmt}, which this pipeline cannot read")
        if len(self._records) != num:
            raise DatasetError(
                f"TFDS dataset '{name}' split '{split}': found {len(self._records)} records, expected {num}"
            )

    def _label_spec(self, tfds: Any, features: Any, name: str) -> tuple[int, Any]:
        key = self.label_key
        if key not in features.keys():
            raise DatasetError(
                f"use_labels=True but TFDS dataset '{name}' has no feature '{key}' "
                f"(features: {', '.join(features.keys())}); set label_key"
            )
        feat = features[key]
        if isinstance(feat, tfds.features.ClassLabel):
            n = int(feat.num_classes)

            def fn(v: Any) -> np.ndarray:
                out = np.zeros(n, np.float32)
                out[int(v)] = 1
                return out

            return n, fn
        if isinstance(feat, tfds.features.FeaturesDict):
            sub = sorted(feat.keys())
            bad = [k for k in sub if tuple(getattr(feat[k], "shape", (None,))) != ()]
            if bad:
                raise DatasetError(f"TFDS label feature '{key}' of '{name}' has non-scalar entries: {bad}")
            return len(sub), lambda v: np.asarray([float(v[k]) for k in sub], np.float32)
        shape = tuple(getattr(feat, "shape", ()) or ())
        if isinstance(feat, tfds.features.Tensor) and len(shape) == 1 and shape[0]:
            k = int(shape[0])
            return k, lambda v: np.asarray(v, np.float32).reshape(k)
        raise DatasetError(
            f"TFDS label feature '{key}' of '{name}' ({type(feat).__name__}, shape {shape}) is not usable as a label: "
            "need a ClassLabel, a 1-D numeric Tensor of fixed length, or a FeaturesDict of scalars"
        )

    def _record(self, index: int) -> bytes:
        if not 0 <= index < len(self._records):
            raise IndexError(f"index {index} out of range for {len(self._records)} examples")
        with self._lock:  # the array_record reader is not documented as thread-safe; reads are short anyway
            return self._records[index]

    def __len__(self) -> int:
        return len(self._records)

    @property
    def c_dim(self) -> int:
        return self._c_dim

    def _label_of(self, example: dict[str, Any]) -> np.ndarray:
        if not self.use_labels:
            return np.zeros((0,), np.float32)
        return self._label_fn(example[self.label_key])

    def label(self, index: int) -> np.ndarray:
        if not self.use_labels:
            return np.zeros((0,), np.float32)
        ex = self._features.deserialize_example_np(self._record(int(index)), decoders=self._decoders_label)
        return self._label_of(ex)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        index = int(index)
        what = f"example {index} of {self.name}"
        try:
            ex = self._features.deserialize_example_np(self._record(index), decoders=self._decoders_image)
        except IndexError:
            raise
        except Exception as e:
            raise DatasetError(f"cannot parse {what}: {type(e).__name__}: {e}") from e
        data = ex[self.image_key]
        if isinstance(data, bytes | np.bytes_):
            img = decode_image(bytes(data), self.resolution, self.channels, self.channel_mode, what)
        else:
            img = prepare_image(
                array_to_image(np.asarray(data)), self.resolution, self.channels, self.channel_mode, what
            )
        return img, self._label_of(ex)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
