"""Input pipeline tests on real files: PNG/JPEG folders and zips, a TFDS dataset prepared locally, the synthetic set.

TensorFlow / tensorflow-datasets are imported only inside the TFDS tests (skipped when not installed).
"""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from collections import Counter
from pathlib import Path

import grain
import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from stylegan_jax.data import (
    DatasetError,
    ImageFolderSource,
    SyntheticShapes,
    default_config,
    make_dataset,
    make_source,
    ordered_batches,
    prepare_image,
    validate_dataset,
)

RES = 16


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _pattern(k: int, w: int = 24, h: int = 20) -> np.ndarray:
    """A distinct, non-symmetric RGB image per k (so flips and mix-ups are visible)."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 10 + k * 37) % 256, (y * 12 + k * 53) % 256, ((x + 2 * y) * 7 + k * 11) % 256], -1)
    return img.astype(np.uint8)


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def _write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files.items():
            zf.writestr(rel, data)
    return path


def _labels_json(entries: object) -> bytes:
    return json.dumps({"labels": entries}).encode()


# Relative paths deliberately out of order on disk; the dataset order is sorted by relative path.
DATASET_FILES = {
    "b/img3.png": 3,
    "a/img1.png": 1,
    "a/img0.png": 0,
    "c/deep/img5.jpg": 5,
    "img2.png": 2,
    "b/img4.jpeg": 4,
}
SORTED = sorted(DATASET_FILES)


def _dataset_files(labels: object = None) -> dict[str, bytes]:
    files = {rel: (_jpeg if rel.endswith(("jpg", "jpeg")) else _png)(_pattern(k)) for rel, k in DATASET_FILES.items()}
    files["notes.txt"] = b"not an image"  # non-image files are ignored
    files[".hidden/img9.png"] = b"garbage"  # hidden entries are ignored
    if labels is not None:
        files["dataset.json"] = _labels_json(labels)
    return files


def _expected(rel: str, res: int = RES) -> np.ndarray:
    """What the pipeline must produce for a file of DATASET_FILES (JPEGs: their lossy decode, then the same path)."""
    k = DATASET_FILES[rel]
    img = Image.open(io.BytesIO(_jpeg(_pattern(k)))) if rel.endswith(("jpg", "jpeg")) else Image.fromarray(_pattern(k))
    return prepare_image(img, res, 3)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return _write_tree(tmp_path / "ds", _dataset_files())


def _take(pipeline, n: int) -> list:
    return [next(pipeline) for _ in range(n)]


def _np(batch) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(batch.images), np.asarray(batch.labels)


# ---------------------------------------------------------------------------------------------------------------
# synthetic


def test_synthetic_deterministic_and_shaped():
    a = SyntheticShapes(32, use_labels=True, seed=0)
    b = SyntheticShapes(32, use_labels=True, seed=0)
    img0, lab0 = a.load(0)
    assert img0.shape == (32, 32, 3) and img0.dtype == np.uint8
    np.testing.assert_array_equal(img0, b.load(0)[0])
    assert not np.array_equal(img0, a.load(1)[0])
    assert not np.array_equal(img0, SyntheticShapes(32, seed=1).load(0)[0])
    # balanced classes: the label is the shape class, index % 3
    for i in range(6):
        np.testing.assert_array_equal(a.load(i)[1], np.eye(3, dtype=np.float32)[i % 3])
    assert a.c_dim == 3 and SyntheticShapes(32).c_dim == 0
    # recognisable structure: a real spread of colours, not noise or a flat fill
    assert img0.std() > 10
    # arbitrary resolution and channel counts
    assert SyntheticShapes(37, channels=1).load(5)[0].shape == (37, 37, 1)
    assert SyntheticShapes(8, channels=4).load(5)[0][..., 3].min() == 255
    with pytest.raises(IndexError):
        a.load(len(a))


def test_synthetic_pipeline_range_and_layout():
    p = make_dataset(resolution=32, batch_size=6, use_labels=True, prefetch=0)
    images, labels = _np(next(p))
    assert images.shape == (6, 3, 32, 32) and images.dtype == np.float32
    assert labels.shape == (6, 3) and labels.dtype == np.float32
    assert -1.0 <= images.min() < -0.5 and 0.5 < images.max() <= 1.0
    assert p.info.c_dim == 3 and p.info.length == 10_000
    # NHWC layout carries the same numbers
    q = make_dataset(resolution=32, batch_size=6, use_labels=True, prefetch=0, layout="NHWC")
    np.testing.assert_array_equal(np.asarray(next(q).images).transpose(0, 3, 1, 2), images)


# ---------------------------------------------------------------------------------------------------------------
# processing


def test_center_crop_and_resize():
    # 30x10 image whose middle 10 columns are white: the center crop keeps exactly those.
    arr = np.zeros((10, 30, 3), np.uint8)
    arr[:, 10:20] = 255
    np.testing.assert_array_equal(prepare_image(Image.fromarray(arr), 10, 3), np.full((10, 10, 3), 255, np.uint8))
    assert prepare_image(Image.fromarray(arr), 4, 3).min() == 255
    # tall image: rows (h - c) // 2 .. (h + c) // 2, as dataset_tool.py
    tall = np.zeros((11, 4), np.uint8)
    tall[3:7] = 200
    np.testing.assert_array_equal(prepare_image(Image.fromarray(tall), 4, 1)[..., 0], np.full((4, 4), 200, np.uint8))
    # the resize is Pillow LANCZOS on the crop
    big = _pattern(3, 64, 80)
    ref = Image.fromarray(big[8:72]).resize((RES, RES), Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(prepare_image(Image.fromarray(big), RES, 3), np.asarray(ref))


def test_channel_conversion_and_strict_mode():
    gray = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    rgb = prepare_image(Image.fromarray(gray, "L"), 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], gray)
    assert prepare_image(Image.fromarray(_pattern(0, 8, 8)), 8, 1).shape == (8, 8, 1)
    rgba = np.dstack([_pattern(1, 8, 8), np.full((8, 8), 7, np.uint8)])
    np.testing.assert_array_equal(prepare_image(Image.fromarray(rgba, "RGBA"), 8, 3), _pattern(1, 8, 8))
    # 16-bit grayscale is rescaled, not clipped to white
    buf = io.BytesIO()
    Image.fromarray(gray.astype(np.uint16) * 257).save(buf, "PNG")
    g16 = Image.open(buf)
    assert g16.mode.startswith("I")
    np.testing.assert_array_equal(prepare_image(g16, 8, 1)[..., 0], gray)
    with pytest.raises(DatasetError, match=r"mode 'L'.*channels=3.*strict"):
        prepare_image(Image.fromarray(gray, "L"), 8, 3, channel_mode="strict")


# ---------------------------------------------------------------------------------------------------------------
# folders and zips


def test_folder_order_content_and_ignored_files(folder: Path):
    src = ImageFolderSource(folder, RES)
    assert src.names == SORTED
    assert src.c_dim == 0
    for i, rel in enumerate(SORTED):
        img, lab = src.load(i)
        assert lab.shape == (0,)
        np.testing.assert_array_equal(img, _expected(rel))


def test_zip_equals_folder(tmp_path: Path, folder: Path):
    files = _dataset_files()
    files["__MACOSX/a/._img0.png"] = b"resource fork"  # macOS archive metadata is ignored
    zsrc = ImageFolderSource(_write_zip(tmp_path / "ds.zip", files), RES)
    fsrc = ImageFolderSource(folder, RES)
    assert zsrc.names == fsrc.names
    for i in range(len(fsrc)):
        np.testing.assert_array_equal(zsrc.load(i)[0], fsrc.load(i)[0])
    zsrc.close()


@pytest.mark.parametrize("container", ["dir", "zip"])
def test_labels_int_one_hot(tmp_path: Path, container: str):
    entries = [[rel, DATASET_FILES[rel] % 4] for rel in SORTED]  # classes 0..3 -> c_dim 4
    files = _dataset_files(entries)
    path = _write_tree(tmp_path / "d", files) if container == "dir" else _write_zip(tmp_path / "d.zip", files)
    p = make_dataset(
        source="folder",
        path=str(path),
        resolution=RES,
        batch_size=len(SORTED),
        use_labels=True,
        shuffle=False,
        prefetch=0,
    )
    assert p.info.c_dim == 4
    images, labels = _np(next(p))
    np.testing.assert_array_equal(labels, np.eye(4, dtype=np.float32)[[DATASET_FILES[r] % 4 for r in SORTED]])
    np.testing.assert_allclose(
        images[SORTED.index("img2.png")], _expected("img2.png").transpose(2, 0, 1) / 127.5 - 1, atol=1e-6
    )
    assert p.sample_labels(5, 0).shape == (5, 4)


def test_labels_vectors_and_ignored_without_use_labels(tmp_path: Path):
    entries = [[rel, [DATASET_FILES[rel] * 0.5, -1.0]] for rel in SORTED]
    path = _write_tree(tmp_path / "d", _dataset_files(entries))
    src = ImageFolderSource(path, RES, use_labels=True)
    assert src.c_dim == 2
    np.testing.assert_array_equal(src.label(SORTED.index("b/img4.jpeg")), [2.0, -1.0])
    # use_labels=False never reads dataset.json, even a broken one
    (path / "dataset.json").write_text("{not json")
    assert ImageFolderSource(path, RES).c_dim == 0


def test_mirror_doubles_with_flipped_copies(folder: Path):
    n = len(SORTED)
    p = make_dataset(
        source="folder", path=str(folder), resolution=RES, batch_size=2 * n, mirror=True, shuffle=False, prefetch=0
    )
    assert p.info.length == 2 * n and p.info.num_images == n
    images, _ = _np(next(p))
    np.testing.assert_array_equal(images[n:], images[:n, :, :, ::-1])
    # shuffled: one epoch holds every image once plain and once flipped
    q = make_dataset(source="folder", path=str(folder), resolution=RES, batch_size=4, mirror=True, prefetch=0)
    epoch = np.concatenate([_np(b)[0] for b in _take(q, 3)])
    keys = {a.tobytes() for a in epoch}
    assert keys == {a.tobytes() for a in images} and len(keys) == 2 * n


# ---------------------------------------------------------------------------------------------------------------
# order, hosts, resume


def _loaded(pipeline) -> list[int]:
    """Record the raw indices ``pipeline`` decodes from now on (its source's ``load`` calls, in call order)."""
    calls: list[int] = []
    load = pipeline.source.load

    def recording(index):
        calls.append(int(index))
        return load(index)

    pipeline.source.load = recording
    return calls


def test_order_epochs_are_seeded_permutations():
    kw = dict(resolution=8, synthetic_size=7, prefetch=0)
    p = make_dataset(**kw, batch_size=8, seed=3)
    calls = _loaded(p)
    _take(p, 3)  # 24 examples: 3 epochs and 3 more; batches straddle epoch boundaries
    for e in range(3):
        assert sorted(calls[7 * e : 7 * (e + 1)]) == list(range(7))
    assert calls[:7] != calls[7:14]  # a fresh permutation per epoch
    assert p.state()["epoch"] == 3 and p.state()["index"] == 3
    other = make_dataset(**kw, batch_size=8, seed=4)
    other_calls = _loaded(other)
    next(other)
    assert other_calls[:7] != calls[:7]
    ordered = make_dataset(**kw, batch_size=4, shuffle=False)
    ordered_calls = _loaded(ordered)
    _take(ordered, 2)
    assert ordered_calls == [0, 1, 2, 3, 4, 5, 6, 0]
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*32 - 1\]"):
        make_dataset(**kw, batch_size=4, seed=2**32)


def _sources_for_sharding(folder: Path) -> dict[str, dict]:
    return {
        "synthetic": dict(resolution=8, synthetic_size=20, use_labels=True),
        "folder": dict(source="folder", path=str(folder), resolution=RES, mirror=True),
    }


def _check_process_blocks(kw: dict, steps: int = 3, procs: int = 4, batch: int = 8) -> None:
    """Each of ``procs`` processes (explicit Grain ShardOptions) decodes exactly its block of every global batch:
    the blocks are disjoint and, concatenated in process order, are the 1-process batches image for image."""
    local = batch // procs
    single = make_dataset(**kw, batch_size=batch, prefetch=0)
    single_calls = _loaded(single)
    full = [_np(b) for b in _take(single, steps)]
    _take(single, 4)  # the batches after those: where the readers of the processes may read ahead

    def block(i: int, steps: int) -> list[int]:
        return [single_calls[s * batch + i * local + j] for s in range(steps) for j in range(local)]
    for prefetch in (0, 2):
        pipes = [make_dataset(**kw, batch_size=batch, prefetch=prefetch,
                              shard_options=grain.sharding.ShardOptions(i, procs)) for i in range(procs)]
        calls = [_loaded(p) for p in pipes]
        got = [[_np(b) for b in _take(p, steps)] for p in pipes]
        for i, p in enumerate(pipes):
            assert (p.info.process_index, p.info.process_count, p.info.local_batch_size) == (i, procs, local)
            if prefetch == 0:
                assert calls[i] == block(i, steps)  # read only its own block, nothing else, in order
            else:  # Grain's threads read ahead (in any order), but only into the process's own later blocks
                assert Counter(block(i, steps)) <= Counter(calls[i]) <= Counter(block(i, steps + 4))
            p.close()
        for s in range(steps):
            np.testing.assert_array_equal(np.concatenate([got[i][s][0] for i in range(procs)]), full[s][0])
            np.testing.assert_array_equal(np.concatenate([got[i][s][1] for i in range(procs)]), full[s][1])


@pytest.mark.parametrize("name", ["synthetic", "folder", "tfds"])
def test_each_process_reads_only_its_block_of_every_global_batch(folder: Path, name: str, request):
    if name == "tfds":
        kw = _tfds_kw(request.getfixturevalue("tfds_dirs")["tfrecord"], use_labels=True)
    else:
        kw = _sources_for_sharding(folder)[name]
    _check_process_blocks(kw)


def test_process_arguments():
    kw = dict(resolution=8, batch_size=8, synthetic_size=20, prefetch=0)
    p = make_dataset(**kw)  # default: Grain's ShardByJaxProcess
    assert (p.info.process_index, p.info.process_count) == (jax.process_index(), jax.process_count())
    q = make_dataset(**kw, process_index=1, process_count=2)
    assert (q.info.process_index, q.info.process_count, q.info.local_batch_size) == (1, 2, 4)
    with pytest.raises(ValueError, match="divisible by process_count 3"):
        make_dataset(**kw, process_index=0, process_count=3)
    with pytest.raises(ValueError, match="invalid process_index=2 for process_count=2"):
        make_dataset(**kw, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="either shard_options or process_index"):
        make_dataset(**kw, process_index=0, shard_options=grain.sharding.ShardOptions(0, 1))


@pytest.mark.parametrize("prefetch", [0, 3])
def test_resume_replays_exact_batches(folder: Path, prefetch: int):
    # 6 images mirrored = 12 per epoch, batch 4: resumes cross epoch boundaries.
    kw = dict(source="folder", path=str(folder), resolution=RES, batch_size=4, mirror=True, seed=11, prefetch=prefetch)
    unbroken = [_np(b) for b in _take(make_dataset(**kw), 9)]

    first = make_dataset(**kw)
    head = [_np(b) for b in _take(first, 4)]
    saved = json.loads(json.dumps(first.state()))  # survives a JSON checkpoint
    assert {k: saved[k] for k in ("epoch", "index", "seed", "length", "batch_size")} == {
        "epoch": 1, "index": 4, "seed": 11, "length": 12, "batch_size": 4}
    assert saved["grain"]["process_count"] == 1 and "last_seen_indices" in saved["grain"]["iterator"]
    first.close()
    resumed = make_dataset(**kw, state=saved)
    tail = [_np(b) for b in _take(resumed, 5)]
    for got, want in zip(head + tail, unbroken, strict=True):
        np.testing.assert_array_equal(got[0], want[0])
    # restore() on a live pipeline rewinds past what Grain's threads already read
    resumed.restore(saved)
    np.testing.assert_array_equal(_np(next(resumed))[0], unbroken[4][0])
    resumed.close()
    # the saved seed wins over the configured one; a different dataset size cannot resume
    np.testing.assert_array_equal(_np(next(make_dataset(**{**kw, "seed": 99}, state=saved)))[0], unbroken[4][0])
    live = make_dataset(**{**kw, "seed": 99})
    live.restore(saved)
    np.testing.assert_array_equal(_np(next(live))[0], unbroken[4][0])
    with pytest.raises(DatasetError, match="cannot resume"):
        make_dataset(**{**kw, "mirror": False}, state=saved)
    # a state without Grain's part (the pre-Grain pipeline's) resumes at its position, with a warning
    legacy = {k: saved[k] for k in ("epoch", "index", "seed", "length")}
    with pytest.warns(UserWarning, match="pre-Grain"):
        old = make_dataset(**kw, state=legacy)
    np.testing.assert_array_equal(_np(next(old))[0], unbroken[4][0])


def test_resume_across_process_counts(folder: Path):
    """A state saved by process 0 of 2 resumes in 1 process and in 2 processes, and a 1-process state in 2
    processes: always on the batches an unbroken 1-process run reads."""
    kw = dict(source="folder", path=str(folder), resolution=RES, batch_size=4, mirror=True, seed=5, prefetch=0)
    unbroken = [_np(b)[0] for b in _take(make_dataset(**kw), 6)]

    def run(procs, steps, state=None):
        pipes = [make_dataset(**kw, state=state, shard_options=grain.sharding.ShardOptions(i, procs))
                 for i in range(procs)]
        batches = [np.concatenate([_np(next(p))[0] for p in pipes]) for _ in range(steps)]
        return batches, json.loads(json.dumps(pipes[0].state()))

    two, state2 = run(2, 3)
    for k in range(3):
        np.testing.assert_array_equal(two[k], unbroken[k])
    one, state1 = run(1, 2, state2)  # 2 -> 1
    np.testing.assert_array_equal(one[0], unbroken[3])
    np.testing.assert_array_equal(one[1], unbroken[4])
    again, _ = run(2, 2, state2)  # 2 -> 2, through Grain's own set_state on both processes
    np.testing.assert_array_equal(again[0], unbroken[3])
    back, _ = run(2, 1, state1)  # 1 -> 2
    np.testing.assert_array_equal(back[0], unbroken[5])


def test_device_sharding_single_device(folder: Path):
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    sharding = NamedSharding(jax.make_mesh((1,), ("data",)), P("data"))
    p = make_dataset(source="folder", path=str(folder), resolution=RES, batch_size=4, sharding=sharding, seed=1)
    ref = make_dataset(source="folder", path=str(folder), resolution=RES, batch_size=4, seed=1, prefetch=0)
    b = next(p)
    assert isinstance(b.images, jax.Array) and b.images.sharding == sharding and b.labels.shape == (4, 0)
    np.testing.assert_array_equal(np.asarray(b.images), next(ref).images)
    p.close()


def test_device_sharding_over_data_axis_subprocess():
    # Several devices need XLA flags set before JAX starts, hence a fresh interpreter.
    code = textwrap.dedent(
        """
        import numpy as np, jax
        from jax.sharding import NamedSharding, PartitionSpec as P
        from stylegan_jax.data import make_dataset
        mesh = jax.make_mesh((4,), ("data",))
        sh = NamedSharding(mesh, P("data"))
        p = make_dataset(resolution=8, batch_size=8, use_labels=True, sharding=sh)
        ref = make_dataset(resolution=8, batch_size=8, use_labels=True, prefetch=0)
        for _ in range(2):
            b, r = next(p), next(ref)
            assert len(b.images.addressable_shards) == 4
            assert {s.data.shape for s in b.images.addressable_shards} == {(2, 3, 8, 8)}
            np.testing.assert_array_equal(np.asarray(b.images), r.images)
            np.testing.assert_array_equal(np.asarray(b.labels), r.labels)
        try:
            make_dataset(resolution=8, batch_size=6, sharding=sh)
        except ValueError as e:
            assert "divisible by the number of devices" in str(e), e
        else:
            raise AssertionError("batch 6 over 4 devices accepted")
        print("OK")
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


def test_config_dict_and_unknown_fields(folder: Path):
    cfg = default_config()
    cfg.source = "folder"
    cfg.path = str(folder)
    cfg.resolution = RES
    cfg.batch_size = 3
    cfg.prefetch = 0
    assert isinstance(cfg, ml_collections.ConfigDict)
    assert _np(next(make_dataset(cfg)))[0].shape == (3, 3, RES, RES)
    with pytest.raises(TypeError, match="unknown data config field.*'batchsize'"):
        make_dataset(cfg, batchsize=4)
    with pytest.raises(ValueError, match="data source must be one of"):
        make_dataset(source="imagenet")
    with pytest.raises(ValueError, match="needs `path`"):
        make_dataset(source="folder")
    with pytest.raises(ValueError, match="layout must be one of"):
        make_dataset(source="folder", path=str(folder), layout="CHWN")
    with pytest.raises(ValueError, match="channels must be one of"):
        make_dataset(channels=2)


def test_ordered_batches(folder: Path):
    src = make_source(source="folder", path=str(folder), resolution=RES)
    batches = list(ordered_batches(src, 4))
    assert [b.images.shape[0] for b in batches] == [4, 2] and batches[0].images.dtype == np.uint8
    np.testing.assert_array_equal(batches[0].images[1], _expected(SORTED[1]).transpose(2, 0, 1))


# ---------------------------------------------------------------------------------------------------------------
# bad data: every case fails on construction with the file or the problem named


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "rel, data",
    [
        ("a/img1.png", _truncate(_png(_pattern(1)))),
        ("c/deep/img5.jpg", _truncate(_jpeg(_pattern(5)))),
        ("img2.png", b"this is not a png"),
    ],
    ids=["truncated-png", "truncated-jpeg", "garbage"],
)
@pytest.mark.parametrize("container", ["dir", "zip"])
def test_unreadable_image_is_named(tmp_path: Path, rel: str, data: bytes, container: str):
    files = {**_dataset_files(), rel: data}
    path = _write_tree(tmp_path / "d", files) if container == "dir" else _write_zip(tmp_path / "d.zip", files)
    with pytest.raises(DatasetError, match=rf"1 of 6 images .*failed validation:\n  '{rel}'"):
        make_dataset(source="folder", path=str(path), resolution=RES)


def test_unvalidated_bad_file_fails_in_training_with_its_name(tmp_path: Path):
    path = _write_tree(tmp_path / "d", {**_dataset_files(), "img2.png": _truncate(_png(_pattern(2)))})
    # validate="none" skips the scan (huge datasets); the error then surfaces from the prefetch thread.
    p = make_dataset(source="folder", path=str(path), resolution=RES, batch_size=6, validate="none", shuffle=False)
    with pytest.raises(DatasetError, match="img2.png"):
        next(p)
    with pytest.raises(DatasetError, match="img2.png"):  # and keeps failing instead of hanging
        next(p)
    with pytest.raises(DatasetError, match="failed validation"):
        validate_dataset(path)


def test_grayscale_image_converted_or_refused(tmp_path: Path):
    gray = _pattern(2)[..., 0]
    path = _write_tree(tmp_path / "d", {**_dataset_files(), "img2.png": _png(gray, "L")})
    img, _ = ImageFolderSource(path, RES).load(SORTED.index("img2.png"))  # default: converted
    assert img.shape == (RES, RES, 3) and np.array_equal(img[..., 0], img[..., 2])
    with pytest.raises(DatasetError, match=r"'img2.png' has Pillow mode 'L' but channels=3"):
        make_dataset(source="folder", path=str(path), resolution=RES, channel_mode="strict")


def test_empty_and_missing_paths(tmp_path: Path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="no images found in"):
        make_dataset(source="folder", path=str(tmp_path / "empty"))
    with pytest.raises(DatasetError, match="no images found in"):
        make_dataset(source="folder", path=str(_write_zip(tmp_path / "e.zip", {"x.txt": b"x"})))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_dataset(source="folder", path=str(tmp_path / "nope"))
    (tmp_path / "file.bin").write_bytes(b"1234")
    with pytest.raises(DatasetError, match="neither a directory nor a zip"):
        make_dataset(source="folder", path=str(tmp_path / "file.bin"))


def _good_entries() -> list:
    return [[rel, DATASET_FILES[rel] % 3] for rel in SORTED]


@pytest.mark.parametrize(
    "labels_file, message",
    [
        (None, "has no dataset.json"),
        (b"{not json", "is not valid JSON"),
        (b"[1, 2]", 'must be a JSON object with a "labels" key'),
        (_labels_json(None), '"labels": null'),
        (_labels_json(_good_entries()[1:]), r"has no label for 1 image\(s\): 'a/img0.png'"),
        (_labels_json(_good_entries() + [["gone.png", 1]]), r"labels for 1 path\(s\) that are not images.*'gone.png'"),
        (_labels_json(_good_entries() + [["a/img0.png", 1]]), "duplicate label entry for 'a/img0.png'"),
        (_labels_json([[r, "cat"] for r in SORTED]), r"must be ints \(class index\) or lists of numbers; got str"),
        (_labels_json([[r, True] for r in SORTED]), "got bool"),
        (_labels_json([[r, 1 if i else [1.0]] for i, r in enumerate(SORTED)]), "mix class indices and vectors"),
        (_labels_json([[r, [1.0] * (1 + (i == 2))] for i, r in enumerate(SORTED)]), "same non-zero length"),
        (_labels_json([[r, ["x"]] for r in SORTED]), "must be a list of finite numbers"),
        (_labels_json([[r, -1] for r in SORTED]), "must be >= 0"),
        (_labels_json([["a/img0.png"]]), r"entry 0 must be a \[\"relative/path\", label\] pair"),
    ],
    ids=[
        "absent",
        "bad-json",
        "not-object",
        "null",
        "missing",
        "extra",
        "duplicate",
        "str",
        "bool",
        "mixed",
        "ragged",
        "non-numeric",
        "negative",
        "malformed-entry",
    ],
)
def test_bad_labels_file(tmp_path: Path, labels_file: bytes | None, message: str):
    files = _dataset_files()
    if labels_file is not None:
        files["dataset.json"] = labels_file
    path = _write_zip(tmp_path / "d.zip", files)
    with pytest.raises(DatasetError, match=message):
        make_dataset(source="folder", path=str(path), use_labels=True)


# ---------------------------------------------------------------------------------------------------------------
# TFDS: a real builder prepared locally (no network) and read back through make_dataset

TFDS_NAME = "stylegan_jax_tiny_test"
TFDS_N = 12


@functools.lru_cache(maxsize=1)
def _tiny_builder_class():
    # TFDS registers builder classes by name, once per process: define it once however many modules use it.
    import tensorflow_datasets as tfds

    class StyleganJaxTinyTest(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return self.dataset_info_from_configs(
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(None, None, 3)),
                        "label": tfds.features.ClassLabel(num_classes=4),
                        "attrs": tfds.features.FeaturesDict({"b": np.bool_, "a": np.bool_}),
                        "vec": tfds.features.Tensor(shape=(2,), dtype=np.float32),
                        "count": np.int64,
                    }
                )
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(TFDS_N), "test": self._generate_examples(2)}

        def _generate_examples(self, n):
            for k in range(n):
                yield (
                    k,
                    {
                        "image": _pattern(k, 20 + k, 18),
                        "label": k % 4,
                        "attrs": {"a": k % 2 == 0, "b": k % 3 == 0},
                        "vec": np.array([k, -k], np.float32),
                        "count": k,
                    },
                )

    return StyleganJaxTinyTest


@pytest.fixture(scope="session")
def tfds_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")
    StyleganJaxTinyTest = _tiny_builder_class()
    dirs = {}
    for fmt in ("tfrecord", "array_record"):
        d = str(tmp_path_factory.mktemp(f"tfds_{fmt}"))
        StyleganJaxTinyTest(data_dir=d, file_format=fmt).download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
        dirs[fmt] = d
    return dirs


def _tfds_kw(data_dir: str, **kw) -> dict:
    return dict(source="tfds", tfds_name=TFDS_NAME, data_dir=data_dir, resolution=RES, **kw)


@pytest.mark.parametrize("fmt", ["tfrecord", "array_record"])
def test_tfds_matches_tfds_own_reader(tfds_dirs: dict[str, str], fmt: str):
    import tensorflow_datasets as tfds

    # Reference: TFDS's own readers, in file order (tf.data for TFRecord, its data source for ArrayRecord).
    builder = tfds.builder(TFDS_NAME, data_dir=tfds_dirs[fmt])
    if fmt == "tfrecord":
        ref = list(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False)))
    else:
        ref = list(builder.as_data_source("train"))
    assert len(ref) == TFDS_N

    src = make_source(**_tfds_kw(tfds_dirs[fmt], use_labels=True))
    assert len(src) == TFDS_N and src.c_dim == 4
    for i, ex in enumerate(ref):
        img, lab = src.load(i)
        np.testing.assert_array_equal(img, prepare_image(Image.fromarray(ex["image"]), RES, 3))
        np.testing.assert_array_equal(lab, np.eye(4, dtype=np.float32)[ex["label"]])
    # other label kinds: FeaturesDict of scalars (sorted keys), fixed-length vectors
    attrs = make_source(**_tfds_kw(tfds_dirs[fmt], use_labels=True, label_key="attrs"))
    np.testing.assert_array_equal(attrs.label(3), [ref[3]["attrs"]["a"], ref[3]["attrs"]["b"]])
    vec = make_source(**_tfds_kw(tfds_dirs[fmt], use_labels=True, label_key="vec"))
    np.testing.assert_array_equal(vec.label(5), ref[5]["vec"])
    # split slicing is honoured
    part = make_source(**_tfds_kw(tfds_dirs[fmt], tfds_split="train[3:7]"))
    assert len(part) == 4
    np.testing.assert_array_equal(part.load(0)[0], src.load(3)[0])


def test_tfds_pipeline_resume_and_formats_agree(tfds_dirs: dict[str, str]):
    kw = _tfds_kw(tfds_dirs["tfrecord"], batch_size=4, mirror=True, use_labels=True, seed=5)
    unbroken = [_np(b) for b in _take(make_dataset(**kw), 8)]
    first = make_dataset(**kw)
    _take(first, 5)
    resumed = make_dataset(**kw, state=first.state())
    for k in range(3):
        np.testing.assert_array_equal(_np(next(resumed))[0], unbroken[5 + k][0])
    # the same data prepared as array_record yields the same batches
    ar = make_dataset(**{**kw, "data_dir": tfds_dirs["array_record"]})
    for k in range(3):
        np.testing.assert_array_equal(_np(next(ar))[1], unbroken[k][1])


def test_tfds_errors(tfds_dirs: dict[str, str], tmp_path: Path):
    empty = str(tmp_path / "empty_data_dir")
    with pytest.raises(DatasetError, match=r"(?s)not prepared in data_dir.*never downloads.*tfds build"):
        make_dataset(**_tfds_kw(empty))
    with pytest.raises(DatasetError, match=r"(?s)'mnist' is not prepared.*tfds build mnist --data_dir"):
        make_dataset(source="tfds", tfds_name="mnist", data_dir=empty)
    with pytest.raises(DatasetError, match="neither a registered TFDS dataset nor prepared"):
        make_dataset(source="tfds", tfds_name="no_such_dataset_xyz", data_dir=empty)
    with pytest.raises(DatasetError, match="has no split 'validation'"):
        make_dataset(**_tfds_kw(tfds_dirs["tfrecord"], tfds_split="validation"))
    with pytest.raises(DatasetError, match="has no feature 'img'"):
        make_dataset(**_tfds_kw(tfds_dirs["tfrecord"], image_key="img"))
    with pytest.raises(DatasetError, match="no feature 'labels'"):
        make_dataset(**_tfds_kw(tfds_dirs["tfrecord"], use_labels=True, label_key="labels"))
    with pytest.raises(DatasetError, match="not usable as a label"):
        make_dataset(**_tfds_kw(tfds_dirs["tfrecord"], use_labels=True, label_key="count"))


def _shard(data_dir: str, fmt: str) -> Path:
    (path,) = Path(data_dir).glob(f"{TFDS_NAME}/1.0.0/{TFDS_NAME}-train.{fmt}-*")
    return path


def _corrupted_copy(tfds_dirs: dict[str, str], fmt: str, tmp_path: Path, record: int) -> tuple[str, Path]:
    """A copy of the prepared dataset whose train shard has one byte flipped inside record ``record``'s payload."""
    import shutil

    import tensorflow_datasets as tfds

    data_dir = tmp_path / fmt
    shutil.copytree(tfds_dirs[fmt], data_dir)
    shard = _shard(str(data_dir), fmt)
    data = bytearray(shard.read_bytes())
    if fmt == "tfrecord":
        pos = 0
        for _ in range(record):  # walk the framing: u64 length, u32 crc, payload, u32 crc
            pos += 16 + int.from_bytes(data[pos : pos + 8], "little")
        target = pos + 12 + int.from_bytes(data[pos : pos + 8], "little") // 2
    else:  # find the record's (stored) bytes in the file
        builder = tfds.builder(TFDS_NAME, data_dir=str(data_dir))
        raw = builder.as_data_source("train", deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)[record]
        piece = raw[len(raw) // 2 : len(raw) // 2 + 16]
        assert data.count(piece) == 1, "the record is not stored verbatim: cannot aim the corruption"
        target = data.index(piece) + 8
    data[target] ^= 0x5A
    shard.write_bytes(bytes(data))
    return str(data_dir), shard


@pytest.mark.parametrize("fmt", ["tfrecord", "array_record"])
def test_tfds_corrupted_record_stops_before_training_on_it(tfds_dirs: dict[str, str], tmp_path: Path, fmt: str):
    data_dir, shard = _corrupted_copy(tfds_dirs, fmt, tmp_path, record=7)
    named = rf"TFDS shard '{shard}' record 7\b"
    # Default validate="scan": every record's checksum is verified when the pipeline is built.
    with pytest.raises(DatasetError, match=named):
        make_dataset(**_tfds_kw(data_dir))
    # validate="none": the corruption surfaces when the record is read, before a batch holding it is returned.
    p = make_dataset(**_tfds_kw(data_dir, validate="none", batch_size=4, shuffle=False))
    np.testing.assert_array_equal(_np(next(p))[0], _np(next(make_dataset(**_tfds_kw(tfds_dirs[fmt], batch_size=4,
                                                                                  shuffle=False))))[0])
    with pytest.raises(DatasetError, match=named):
        next(p)  # records 4..7
    with pytest.raises(DatasetError, match=named):
        next(p)  # and it keeps failing, never skips the batch
    p.close()


def test_batch_transform_is_the_official_scaling_bit_for_bit():
    from stylegan_jax.data import ToModelInputs, to_model_images

    images = np.random.RandomState(0).randint(0, 256, (5, 7, 6, 3)).astype(np.uint8)
    records = [{"image": im[:, ::-1] if k % 2 else im, "label": np.full(2, k, np.float32)}
               for k, im in enumerate(images)]  # flipped views, as XFlip hands them over
    stacked = np.stack([r["image"] for r in records])
    for layout in ("NCHW", "NHWC"):
        batch = ToModelInputs(layout)(records)
        np.testing.assert_array_equal(batch.images, to_model_images(stacked, layout))
        assert batch.images.flags.c_contiguous and batch.images.dtype == np.float32
        np.testing.assert_array_equal(batch.labels, np.repeat(np.arange(5, dtype=np.float32)[:, None], 2, 1))
