"""TensorFlow Datasets source: a prepared TFDS dataset read by random access, every record's checksum verified.

Requirements: ``tensorflow-datasets`` (reading), ``array_record`` for datasets prepared in that format (a
dependency of tensorflow-datasets on Linux) and ``google-crc32c`` for TFRecord datasets (all in the ``tfds``
extra). TensorFlow itself is only needed to *prepare* a dataset (``tfds build`` / ``download_and_prepare``);
reading goes through TFDS's numpy example parser and Pillow. Nothing is ever downloaded at run time: the
dataset must already be prepared in ``data_dir``.

Two storage formats, both random access (needed for exact resume and per-process slicing):

* ``array_record`` (recommended: ``tfds build NAME --data_dir DIR --file_format=array_record``): read through
  TFDS's own data source (``builder.as_data_source``), whose Riegeli reader checks the hash of every chunk it
  reads.
* ``tfrecord`` (the TFDS default): a record index built on construction from the TFRecord framing of each shard
  (8-byte length, masked CRC-32C of the length, payload, masked CRC-32C of the payload). Every record read is
  checked against both CRCs, the way TensorFlow's own reader does, before its bytes are parsed.

``validate`` (as for folders): ``"scan"`` (default) reads every record of the split once on construction and
verifies its checksums (TFRecord CRCs, ArrayRecord chunk hashes), so a corrupted shard stops before any training
step; ``"full"`` also decodes every image; ``"none"`` skips the scan (checksums are still verified when a record
is read, so a corrupted record stops training when it is first loaded, before any step uses it). Either way the
error names the shard file and the record's position in it.

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
from stylegan_jax.data.folder import VALIDATE_MODES


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


def _masked_crc(data: bytes | memoryview) -> int:
    """The masked CRC-32C of the TFRecord framing (``((crc >> 15) | (crc << 17)) + 0xa282ead8``, 32 bits)."""
    import google_crc32c

    crc = google_crc32c.value(bytes(data))
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _import_crc32c() -> None:
    try:
        import google_crc32c
    except ImportError as e:
        raise ImportError(
            "reading TFRecord TFDS data needs google-crc32c to verify the record checksums: "
            "pip install 'stylegan-jax[tfds]' (or prepare the dataset with --file_format=array_record)"
        ) from e
    if google_crc32c.implementation != "c":
        import warnings

        warnings.warn("google-crc32c runs its pure-Python fallback: verifying TFRecord checksums will be slow",
                      stacklevel=3)


class _TfRecordShards:
    """Random access to the records of the TFRecord shards selected by TFDS file instructions, every read checked
    against the record's two CRCs.

    ``scan=True`` reads every selected record once on construction and verifies both CRCs (one sequential read
    of the shards); otherwise only the 12-byte headers are read and their length CRC checked, and payload CRCs
    are checked when a record is read.
    """

    _HEADER, _FOOTER = 12, 4

    def __init__(self, file_instructions: list[Any], scan: bool = False):
        _import_crc32c()
        self._fds: dict[str, int] = {}
        self._fd_lock = threading.Lock()
        self._files: list[str] = []
        starts: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        file_ids: list[np.ndarray] = []
        in_shard: list[np.ndarray] = []
        cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for fi in file_instructions:
            if fi.filename not in cache:
                cache[fi.filename] = self._index(fi.filename, fi.examples_in_shard)
                self._files.append(fi.filename)
            off, ln = cache[fi.filename]
            sel = slice(fi.skip, fi.skip + fi.take)
            starts.append(off[sel])
            lengths.append(ln[sel])
            file_ids.append(np.full(len(off[sel]), self._files.index(fi.filename), np.int32))
            in_shard.append(np.arange(len(off))[sel])
        cat = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype)
        self.starts, self.lengths = cat(starts, np.int64), cat(lengths, np.int64)
        self.file_ids, self.in_shard = cat(file_ids, np.int32), cat(in_shard, np.int64)
        if scan:
            self.verify_all()

    def _fd(self, filename: str) -> int:
        with self._fd_lock:
            fd = self._fds.get(filename)
            if fd is None:
                fd = self._fds[filename] = os.open(filename, os.O_RDONLY)
            return fd

    def _index(self, filename: str, expected: int) -> tuple[np.ndarray, np.ndarray]:
        """Start offsets and payload lengths of every record of a shard, from its headers (length CRC checked)."""
        try:
            fd = self._fd(filename)
            size = os.fstat(fd).st_size
        except OSError as e:
            raise DatasetError(f"cannot open TFDS shard '{filename}': {e}") from e
        starts, lengths = [], []
        pos = 0
        while pos < size:
            k = len(starts)
            header = os.pread(fd, self._HEADER, pos)
            if len(header) < self._HEADER:
                raise DatasetError(f"TFDS shard '{filename}' record {k}: truncated header at byte {pos}")
            (n,) = struct.unpack("<Q", header[:8])
            (crc,) = struct.unpack("<I", header[8:])
            if _masked_crc(header[:8]) != crc:
                raise DatasetError(
                    f"TFDS shard '{filename}' record {k}: length CRC mismatch at byte {pos}: the shard is corrupt, "
                    "prepare the dataset again"
                )
            if pos + self._HEADER + n + self._FOOTER > size:
                raise DatasetError(f"TFDS shard '{filename}' record {k}: truncated at byte {pos} (record of {n} bytes)")
            starts.append(pos)
            lengths.append(n)
            pos += self._HEADER + n + self._FOOTER
        if len(starts) != expected:
            raise DatasetError(
                f"TFDS shard '{filename}' holds {len(starts)} records but dataset_info.json says {expected}; "
                "the prepared data is incomplete or corrupt, prepare it again"
            )
        return np.asarray(starts, np.int64), np.asarray(lengths, np.int64)

    def where(self, index: int) -> str:
        """``shard 'FILE' record K`` for selected record ``index``."""
        return f"TFDS shard '{self._files[self.file_ids[index]]}' record {int(self.in_shard[index])}"

    def _checked(self, index: int, framed: bytes) -> bytes:
        n = int(self.lengths[index])
        if len(framed) != self._HEADER + n + self._FOOTER or struct.unpack("<Q", framed[:8])[0] != n:
            raise DatasetError(f"{self.where(index)}: the shard changed on disk since it was indexed")
        (crc,) = struct.unpack("<I", framed[8:12])
        payload = memoryview(framed)[self._HEADER : self._HEADER + n]
        (data_crc,) = struct.unpack("<I", framed[self._HEADER + n :])
        if _masked_crc(framed[:8]) != crc or _masked_crc(payload) != data_crc:
            raise DatasetError(
                f"{self.where(index)}: CRC mismatch (the record's bytes are corrupt); prepare the dataset again"
            )
        return bytes(payload)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> bytes:
        fd = self._fd(self._files[self.file_ids[index]])
        n = int(self.lengths[index])
        return self._checked(index, os.pread(fd, self._HEADER + n + self._FOOTER, int(self.starts[index])))

    def verify_all(self) -> None:
        """Read every selected record once, in file order, and check both CRCs (raises on the first bad one)."""
        for fid, filename in enumerate(self._files):
            sel = np.flatnonzero(self.file_ids == fid)
            if not len(sel):
                continue
            sel = sel[np.argsort(self.starts[sel])]
            with open(filename, "rb", buffering=1 << 20) as f:
                for i in sel:
                    f.seek(int(self.starts[i]))
                    self._checked(int(i), f.read(self._HEADER + int(self.lengths[i]) + self._FOOTER))

    def close(self) -> None:
        with self._fd_lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


class _DataSourceShards:
    """TFDS's own data source (ArrayRecord; Parquet too), with read errors (Riegeli chunk hash mismatches,
    truncation) turned into a DatasetError naming the shard file and the record's position in it."""

    def __init__(self, data_source: Any, file_instructions: list[Any]):
        self._source = data_source
        names, in_shard = [], []
        for fi in file_instructions:
            names += [fi.filename] * fi.take
            in_shard.append(np.arange(fi.skip, fi.skip + fi.take))
        self._names = names
        self._in_shard = np.concatenate(in_shard) if in_shard else np.zeros(0, np.int64)
        self._lock = threading.Lock()

    def where(self, index: int) -> str:
        if 0 <= index < len(self._names) and len(self._names) == len(self._source):
            return f"TFDS shard '{self._names[index]}' record {int(self._in_shard[index])}"
        return f"TFDS record {index}"

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> bytes:
        try:
            with self._lock:  # the array_record reader is not documented as thread-safe; reads are short anyway
                return self._source[index]
        except IndexError:
            raise
        except Exception as e:  # array_record raises RuntimeError("Corrupted Riegeli/records file: ...")
            raise DatasetError(f"{self.where(index)}: cannot read ({type(e).__name__}: {e}); the shard is corrupt, "
                               "prepare the dataset again") from e

    def verify_all(self) -> None:
        for i in range(len(self)):
            self[i]

    def close(self) -> None:
        pass


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
        validate: str = "scan",
    ):
        tfds = _import_tfds()
        if validate not in VALIDATE_MODES:
            raise ValueError(f"validate must be one of {VALIDATE_MODES}, got {validate!r}")
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
        from tensorflow_datasets.core.data_sources import base as ds_base

        instructions = ds_base.file_instructions(info, split)
        self._records: _TfRecordShards | _DataSourceShards
        if formats & {"array_record", "parquet"}:
            # TFDS's own reader; raw records, decoding stays ours so all formats share one path.
            source = builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
            self._records = _DataSourceShards(source, instructions)
        elif fmt is not None and fmt.value == "tfrecord":
            self._records = _TfRecordShards(instructions)
        else:
            raise DatasetError(
                f"TFDS dataset '{name}' is stored as {fmt}, which this pipeline cannot read; prepare it with "
                f"`tfds build {name} --file_format=array_record` (or tfrecord)"
            )
        if len(self._records) != num:
            raise DatasetError(
                f"TFDS dataset '{name}' split '{split}': found {len(self._records)} records, expected {num}"
            )
        if validate != "none":
            self._records.verify_all()
            if validate == "full":
                for i in range(len(self._records)):
                    self.load(i)

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
        return self._records[index]  # checksums verified; DatasetError names the shard and record

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
        what = f"example {index} of {self.name} ({self._records.where(index)})"
        try:
            ex = self._features.deserialize_example_np(self._record(index), decoders=self._decoders_image)
        except (IndexError, DatasetError):
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
        self._records.close()
