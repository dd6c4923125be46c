"""Shared pieces of the data sources: the source interface, the error type and image preprocessing.

Every source is random-access (``len`` + ``load(index)``). That is what makes the pipeline exactly resumable
and lets each host read only its own slice of a global batch: the order of examples is a pure function of
(seed, epoch, position), never of what a reader happened to stream before.
"""

from __future__ import annotations

import abc
import io
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor

import numpy as np
from PIL import Image

# Pillow modes for the channel counts the models use.
MODE_FOR_CHANNELS = {1: "L", 3: "RGB", 4: "RGBA"}
CHANNEL_MODES = ("convert", "strict")


class DatasetError(ValueError):
    """Bad or inconsistent training data (unreadable file, labels that do not match, empty dataset, ...).

    Raised on construction of a source whenever possible, so that a broken dataset fails before training starts.
    """


class ImageSource(abc.ABC):
    """Random-access source of square ``uint8 [resolution, resolution, channels]`` images and float32 labels.

    Subclasses implement ``__len__``, ``load`` and ``label``; images come out already converted to
    ``channels``, center-cropped and resized to ``resolution``.
    """

    name: str
    resolution: int
    channels: int

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @property
    @abc.abstractmethod
    def c_dim(self) -> int:
        """Label dimension (0 for an unconditional source)."""

    @abc.abstractmethod
    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``uint8 [H, W, C]`` and label ``float32 [c_dim]`` of raw example ``index``."""

    def label(self, index: int) -> np.ndarray:
        """Label ``float32 [c_dim]`` of raw example ``index``; subclasses override it where this is cheaper."""
        return self.load(index)[1]

    def load_batch(
        self, indices: Sequence[int] | np.ndarray, executor: Executor | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Images ``uint8 [N, H, W, C]`` and labels ``float32 [N, c_dim]`` for ``indices``.

        With an executor, examples are decoded in parallel threads: Pillow and the numpy rendering release the
        GIL for most of their work, so threads give real speed-up without the pickling cost of processes.
        """
        indices = [int(i) for i in indices]
        mapper: Callable[..., Iterable[tuple[np.ndarray, np.ndarray]]] = executor.map if executor else map
        items = list(mapper(self.load, indices))
        images = np.empty((len(indices), self.resolution, self.resolution, self.channels), np.uint8)
        labels = np.empty((len(indices), self.c_dim), np.float32)
        for k, (img, lab) in enumerate(items):
            images[k] = img
            labels[k] = lab
        return images, labels

    def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing to release
        """Release open files; the source must not be used afterwards."""


def check_channels(channels: int) -> int:
    if channels not in MODE_FOR_CHANNELS:
        raise ValueError(f"channels must be one of {sorted(MODE_FOR_CHANNELS)}, got {channels!r}")
    return int(channels)


def check_channel_mode(channel_mode: str) -> str:
    if channel_mode not in CHANNEL_MODES:
        raise ValueError(f"channel_mode must be one of {CHANNEL_MODES}, got {channel_mode!r}")
    return channel_mode


def mode_problem(mode: str, channels: int, channel_mode: str) -> str | None:
    """Why an image of Pillow ``mode`` is refused for ``channels``, or None if it is accepted.

    ``convert`` (the default) accepts any mode Pillow can convert: grayscale is replicated to RGB, RGB goes to
    luminance, alpha is dropped. Real scraped datasets routinely contain a few grayscale or CMYK JPEGs, and
    refusing them would make such datasets unusable without a rewrite. ``strict`` mirrors the official
    ``dataset_tool.py`` (which refuses mixed channel counts) for users who want to be told instead.
    """
    want = MODE_FOR_CHANNELS[channels]
    if mode == want:
        return None
    if channel_mode == "strict":
        return f"has Pillow mode {mode!r} but channels={channels} needs {want!r} (channel_mode='strict')"
    return None


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    if img.mode == mode:
        return img
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        # Pillow's own I;16 -> L conversion clips at 255 instead of rescaling, which would turn most 16-bit
        # images white; rescale the 16-bit range to 8 bits explicitly.
        arr = np.asarray(img).astype(np.float64)
        img = Image.fromarray(np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8), "L")
        return img if mode == "L" else img.convert(mode)
    if img.mode == "P" and "transparency" in img.info:
        # Going through RGBA avoids Pillow's warning about palette transparency being lost.
        img = img.convert("RGBA")
    return img.convert(mode)


def center_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """Largest centered square, with the same rounding as the official ``dataset_tool.py --transform=center-crop``."""
    c = min(width, height)
    return ((width - c) // 2, (height - c) // 2, (width + c) // 2, (height + c) // 2)


def prepare_image(
    img: Image.Image, resolution: int, channels: int, channel_mode: str = "convert", what: str = "image"
) -> np.ndarray:
    """Decoded Pillow image -> ``uint8 [resolution, resolution, channels]``: convert mode, center crop, resize.

    Resizing uses LANCZOS like the official ``dataset_tool.py``; an image that is already square at the target
    size is passed through untouched so pre-resized datasets are bit-exact.
    """
    problem = mode_problem(img.mode, channels, channel_mode)
    if problem:
        raise DatasetError(f"{what} {problem}")
    img = _to_mode(img, MODE_FOR_CHANNELS[channels])
    w, h = img.size
    if w <= 0 or h <= 0:
        raise DatasetError(f"{what} is empty ({w}x{h})")
    if w != h:
        # Crop first: resize(box=...) would let the filter taps read pixels outside the crop, unlike the official
        # crop-then-resize.
        img = img.crop(center_crop_box(w, h))
    if img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def decode_image(
    data: bytes, resolution: int, channels: int, channel_mode: str = "convert", what: str = "image"
) -> np.ndarray:
    """Encoded bytes (PNG, JPEG, ...) -> ``uint8 [resolution, resolution, channels]``; DatasetError names ``what``."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return prepare_image(img, resolution, channels, channel_mode, what)
    except DatasetError:
        raise
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ... depending on the codec
        raise DatasetError(f"cannot decode {what}: {type(e).__name__}: {e}") from e


def array_to_image(arr: np.ndarray) -> Image.Image:
    """``uint8 [H, W]`` or ``[H, W, C]`` (C in 1, 3, 4) -> Pillow image."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise DatasetError(f"expected uint8 image data, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return Image.fromarray(arr, "L")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return Image.fromarray(arr, "RGB" if arr.shape[2] == 3 else "RGBA")
    raise DatasetError(f"expected an image array [H, W] or [H, W, 1|3|4], got shape {arr.shape}")


def one_hot(classes: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.zeros((len(classes), num_classes), np.float32)
    out[np.arange(len(classes)), classes] = 1
    return out
