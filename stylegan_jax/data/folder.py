"""Image folders and zip archives in the layout of the official StyleGAN ``dataset_tool.py``.

* Images: every file with an image extension anywhere in the tree, sorted by relative path (``/`` separators).
  Hidden files and folders (``.name``) and macOS ``__MACOSX/`` zip metadata are skipped.
* Labels (optional): ``dataset.json`` at the root, ``{"labels": [["relative/path.png", label], ...]}`` where
  every label is an int (class index, one-hot encoded with ``c_dim = max + 1``) or every label is a list of
  numbers of one length (used as the float vector). ``"labels": null`` means unconditional.

Validation happens on construction so a broken dataset fails before training starts:

* ``validate="scan"`` (default): every file is opened and checked without a full decode where the format allows
  it: PNG via Pillow ``verify()`` (walks all chunks and checks their CRCs, catching truncation and corruption),
  JPEG by decoding at 1/8 scale (libjpeg's DCT scaling reads the whole entropy-coded stream, so truncation is
  caught at a fraction of the cost), anything else by a full decode. Cost: one read of every byte of the
  dataset, so it is I/O bound (roughly a minute per 10 GB on a local SSD, spread over ``num_workers`` threads).
* ``validate="full"``: full decode of every image (slowest, strongest).
* ``validate="none"``: only the file list and labels are checked; for very large datasets that were already
  validated once (e.g. with ``validate_dataset``). A bad file then raises ``DatasetError`` naming it when it is
  first loaded, which may be mid-training.

Every problem found is reported in one error (first few listed), not just the first one.
"""

from __future__ import annotations

import io
import json
import math
import os
import threading
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stylegan_jax.data.base import (
    DatasetError,
    ImageSource,
    check_channel_mode,
    check_channels,
    decode_image,
    mode_problem,
    one_hot,
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
VALIDATE_MODES = ("scan", "full", "none")
LABELS_FILE = "dataset.json"
_MAX_LISTED = 5


def _is_hidden(rel: str) -> bool:
    parts = rel.split("/")
    return parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


def _is_image_name(rel: str) -> bool:
    return rel.lower().endswith(IMAGE_EXTENSIONS) and not _is_hidden(rel)


def _listing(items: Sequence[str], total: int | None = None) -> str:
    total = len(items) if total is None else total
    shown = ", ".join(repr(s) for s in items[:_MAX_LISTED])
    return shown + (f", ... ({total} in all)" if total > _MAX_LISTED else "")


class ImageFolderSource(ImageSource):
    """Images (and optional labels) from a directory or a ``.zip`` archive; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike,
        resolution: int,
        channels: int = 3,
        use_labels: bool = False,
        validate: str = "scan",
        channel_mode: str = "convert",
        num_workers: int | None = None,
    ):
        self.path = Path(path)
        self.name = str(self.path)
        self.resolution = int(resolution)
        if self.resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        self.channels = check_channels(channels)
        self.channel_mode = check_channel_mode(channel_mode)
        if validate not in VALIDATE_MODES:
            raise ValueError(f"validate must be one of {VALIDATE_MODES}, got {validate!r}")
        self.use_labels = bool(use_labels)
        # One ZipFile per thread: reads through one shared handle from several threads are not safe.
        self._local = threading.local()
        self._zips: list[zipfile.ZipFile] = []
        self._zips_lock = threading.Lock()

        if not self.path.exists():
            raise FileNotFoundError(f"dataset path '{self.path}' does not exist")
        if self.path.is_dir():
            self._zip_path = None
            names = sorted(
                rel
                for root, dirs, files in os.walk(self.path)
                for rel in (Path(root, f).relative_to(self.path).as_posix() for f in files)
                if _is_image_name(rel)
            )
            self._member = {n: n for n in names}
        elif zipfile.is_zipfile(self.path):
            self._zip_path = self.path
            members = {}
            for info in self._zip().infolist():
                # Archives written on Windows may use backslashes; labels are matched on the '/' form.
                rel = info.filename.replace("\\", "/")
                if not info.is_dir() and _is_image_name(rel):
                    members[rel] = info.filename
            names = sorted(members)
            self._member = members
        else:
            raise DatasetError(f"dataset path '{self.path}' is neither a directory nor a zip archive")
        if not names:
            raise DatasetError(
                f"no images found in '{self.path}' (looked for files ending in {', '.join(IMAGE_EXTENSIONS)}, "
                "at any depth)"
            )
        self.names: list[str] = names
        self._labels = self._read_labels() if self.use_labels else np.zeros((len(names), 0), np.float32)
        if validate != "none":
            self.validate(full=validate == "full", num_workers=num_workers)

    # -- file access ---------------------------------------------------------------------------------------

    def _zip(self) -> zipfile.ZipFile:
        zf = getattr(self._local, "zip", None)
        if zf is None:
            zf = self._local.zip = zipfile.ZipFile(self._zip_path)
            with self._zips_lock:  # keep every thread's handle so close() can release them all
                self._zips.append(zf)
        return zf

    def _read(self, rel: str) -> bytes:
        if self._zip_path is None:
            with open(self.path / rel, "rb") as f:
                return f.read()
        return self._zip().read(self._member.get(rel, rel))

    def _exists(self, rel: str) -> bool:
        if self._zip_path is None:
            return (self.path / rel).is_file()
        return rel in self._zip().namelist()

    def close(self) -> None:
        with self._zips_lock:
            for zf in self._zips:
                zf.close()
            self._zips.clear()
        self._local = threading.local()

    # -- labels --------------------------------------------------------------------------------------------

    def _read_labels(self) -> np.ndarray:
        where = f"'{LABELS_FILE}' in '{self.path}'"
        if not self._exists(LABELS_FILE):
            raise DatasetError(
                f"use_labels=True but '{self.path}' has no {LABELS_FILE} at its root "
                '(expected {"labels": [["relative/path.png", class_index_or_vector], ...]})'
            )
        try:
            meta = json.loads(self._read(LABELS_FILE).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DatasetError(f"{where} is not valid JSON: {e}") from e
        if not isinstance(meta, dict) or "labels" not in meta:
            raise DatasetError(f'{where} must be a JSON object with a "labels" key')
        entries = meta["labels"]
        if entries is None:
            raise DatasetError(f'use_labels=True but {where} has "labels": null (an unconditional dataset)')
        if not isinstance(entries, list):
            raise DatasetError(f'{where}: "labels" must be a list of [path, label] pairs, got {type(entries).__name__}')

        table: dict[str, Any] = {}
        for k, entry in enumerate(entries):
            if not (isinstance(entry, list | tuple) and len(entry) == 2 and isinstance(entry[0], str)):
                raise DatasetError(f'{where}: entry {k} must be a ["relative/path", label] pair, got {entry!r}')
            rel = entry[0].replace("\\", "/")
            if rel in table:
                raise DatasetError(f"{where}: duplicate label entry for '{rel}'")
            table[rel] = entry[1]

        missing = [n for n in self.names if n not in table]
        if missing:
            raise DatasetError(f"{where} has no label for {len(missing)} image(s): {_listing(missing)}")
        known = set(self.names)
        extra = sorted(n for n in table if n not in known)
        if extra:
            raise DatasetError(
                f"{where} has labels for {len(extra)} path(s) that are not images of the dataset: {_listing(extra)}"
            )

        values = [table[n] for n in self.names]

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool)

        if all(is_int(v) for v in values):
            classes = np.asarray(values, np.int64)
            bad = [n for n, v in zip(self.names, values, strict=True) if v < 0]
            if bad:
                raise DatasetError(f"{where}: class labels must be >= 0; negative for {_listing(bad)}")
            return one_hot(classes, int(classes.max()) + 1)
        if all(isinstance(v, list) for v in values):
            length = len(values[0])
            for n, v in zip(self.names, values, strict=True):
                if len(v) != length or length == 0:
                    raise DatasetError(
                        f"{where}: label vectors must all have the same non-zero length; '{n}' has {len(v)}, "
                        f"'{self.names[0]}' has {length}"
                    )
                if not all(is_num(x) and math.isfinite(x) for x in v):
                    raise DatasetError(f"{where}: label of '{n}' must be a list of finite numbers, got {v!r}")
            return np.asarray(values, np.float32)
        bad = [n for n, v in zip(self.names, values, strict=True) if not (is_int(v) or isinstance(v, list))]
        if bad:
            kinds = sorted({type(table[n]).__name__ for n in bad})
            raise DatasetError(
                f"{where}: labels must be ints (class index) or lists of numbers; got {'/'.join(kinds)} "
                f"for {_listing(bad)}"
            )
        raise DatasetError(f"{where}: labels mix class indices and vectors; use one kind for every image")

    # -- validation ----------------------------------------------------------------------------------------

    def _check_one(self, rel: str, full: bool) -> str | None:
        try:
            data = self._read(rel)
        except Exception as e:
            return f"'{rel}': cannot read file: {type(e).__name__}: {e}"
        try:
            with Image.open(io.BytesIO(data)) as img:
                problem = mode_problem(img.mode, self.channels, self.channel_mode)
                if problem:
                    return f"'{rel}' {problem}"
                if full:
                    img.load()
                elif img.format == "PNG":
                    img.verify()
                elif img.format == "JPEG":
                    img.draft(img.mode, (1, 1))  # decode at 1/8 scale: still reads the whole stream
                    img.load()
                else:
                    img.load()
                if img.size[0] < 1 or img.size[1] < 1:
                    return f"'{rel}': empty image {img.size}"
        except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ... depending on the codec
            return f"'{rel}': not a readable image: {type(e).__name__}: {e}"
        return None

    def validate(self, full: bool = False, num_workers: int | None = None) -> None:
        """Check every image is readable (see module docstring); raise one DatasetError listing the bad files."""
        workers = num_workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            problems = [p for p in pool.map(lambda r: self._check_one(r, full), self.names) if p]
        if problems:
            raise DatasetError(
                f"{len(problems)} of {len(self.names)} images in '{self.path}' failed validation:\n  "
                + "\n  ".join(problems[:10])
                + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
            )

    # -- ImageSource ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.names)

    @property
    def c_dim(self) -> int:
        return int(self._labels.shape[1])

    def label(self, index: int) -> np.ndarray:
        return self._labels[index]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rel = self.names[index]
        what = f"image '{rel}' in '{self.path}'"
        try:
            data = self._read(rel)
        except Exception as e:
            raise DatasetError(f"cannot read {what}: {type(e).__name__}: {e}") from e
        return decode_image(data, self.resolution, self.channels, self.channel_mode, what), self._labels[index]


def validate_dataset(path: str | os.PathLike, channels: int = 3, use_labels: bool = False, full: bool = True) -> int:
    """Validate a folder/zip dataset offline (labels and every image; full decode by default).

    Returns the number of images. Useful once for very large datasets that are then trained with
    ``validate="none"``.
    """
    src = ImageFolderSource(path, resolution=1, channels=channels, use_labels=use_labels, validate="none")
    try:
        src.validate(full=full)
        return len(src)
    finally:
        src.close()
