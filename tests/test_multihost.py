"""Multi-process training with real OS processes over 127.0.0.1 (tests/multihost.py starts them with the
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` environment of a multi-host launch; CPU
collectives through gloo):

- each process reads only its slice of every global batch, for the synthetic, folder and tfds sources (default
  suite: no compile, ~30 s);
- 2 processes x 2 devices train like 1 process x 4 devices: same per-step losses, same final parameters;
- checkpoints move between process counts (2 -> 1 and 1 -> 2) with the data position and the RNG;
- SIGKILL of one process: the other stops within 2 minutes naming it, the checkpoint survives, a restart
  resumes to the same end.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests import multihost
from tests.test_data import tfds_dirs  # noqa: F401 - the locally prepared TFDS dataset (a fixture)
from tests.test_training import REPO, env, final_params, train_cmd, write_config

STEPS = 8  # batch 4: total_kimg 0.032
DEVICES = 4  # in all, 1 x 4 or 2 x 2


def losses(workdir: Path) -> list[tuple[int, float, float]]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["Loss/G"], r["Loss/D"]) for r in rows if "Loss/G" in r]


def position(data_state: dict) -> tuple:
    """The process-count independent part of a data state: (epoch, index) of the global stream."""
    return data_state["epoch"], data_state["index"]


def train_n(config: Path, workdir: Path, n: int, cache_dir: Path, logdir: Path, *extra: str, timeout: float = 1500):
    """The training command as ``n`` processes with ``DEVICES // n`` CPU devices each (n = 1: a plain process)."""
    cmd = train_cmd(config, workdir, "--config.log.tick_kimg=0.004", "--config.log.checkpoint_kimg=0.008", *extra)
    e = env(cache_dir)
    if n == 1:
        e = {k: v for k, v in e.items() if not k.startswith("JAX_COORDINATOR")}
        e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES}"
        results = multihost.run(cmd, 1, DEVICES, logdir, timeout, env={**e, "STYLEGAN_JAX_NO_DISTRIBUTED": "1"},
                                cwd=REPO)
    else:
        results = multihost.run(cmd, n, DEVICES // n, logdir, timeout, env=e, cwd=REPO)
    for i, (code, out, err) in enumerate(results):
        assert code == 0, f"process {i} of {n}: exit {code}\n{out[-2000:]}\n{err[-3000:]}"
    return results


def assert_close_params(a: dict, b: dict, rtol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].dtype.kind == "f":
            scale = max(float(np.abs(a[k]).max()), 1e-3)
            err = float(np.abs(a[k].astype(np.float64) - b[k]).max())
            assert err <= rtol * scale, (k, err, scale)
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """1 process x 4 devices, STEPS steps, unbroken."""
    tmp = tmp_path_factory.mktemp("mh_ref")
    config = write_config(tmp, total_kimg=STEPS * 4 / 1000)
    workdir = tmp / "one"
    train_n(config, workdir, 1, cache_dir, tmp / "logs")
    return config, workdir


# ---- b. data slices --------------------------------------------------------------------------------------

PROBE = r'''
import sys
import numpy as np
from stylegan_jax.train.distributed import maybe_initialize_distributed
maybe_initialize_distributed()
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
from stylegan_jax.data import make_dataset
from stylegan_jax.train.step import make_mesh

out, tfds_dir, folder = sys.argv[1], sys.argv[2], sys.argv[3]
mesh = make_mesh()
sharding = NamedSharding(mesh, P("data"))
sources = {
    "synthetic": dict(source="synthetic", synthetic_size=24, resolution=8),
    "folder": dict(source="folder", path=folder, resolution=8),
}
if tfds_dir:
    sources["tfds"] = dict(source="tfds", tfds_name="stylegan_jax_tiny_test", data_dir=tfds_dir, resolution=8)
result = {}
for name, cfg in sources.items():
    data = make_dataset({**cfg, "batch_size": 8, "seed": 3, "prefetch": 0}, sharding=sharding)
    for b in range(3):
        images = next(data)[0]
        if isinstance(images, jax.Array):
            shards = sorted(images.addressable_shards, key=lambda s: s.index[0].start or 0)
            rows = np.concatenate([np.arange(8)[s.index[0]] for s in shards])
            local = np.concatenate([np.asarray(s.data) for s in shards])
        else:
            rows, local = np.arange(len(images)), np.asarray(images)
        result[f"{name}/{b}/rows"] = rows
        result[f"{name}/{b}/images"] = local
    result[f"{name}/state"] = np.array(str(data.state()))
    data.close()
np.savez(out + f"_{jax.process_index()}.npz", **result)
'''


def _write_folder(path: Path, n: int = 10) -> Path:
    from PIL import Image

    path.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), np.uint8)).save(path / f"img{i:02d}.png")
    return path


def test_each_process_reads_its_slice(tmp_path, request):
    try:
        tfds_dir = request.getfixturevalue("tfds_dirs")["tfrecord"]
    except pytest.skip.Exception:  # tensorflow-datasets not installed
        tfds_dir = ""
    folder = _write_folder(tmp_path / "images")
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(PROBE))
    e = {**os.environ, "STYLEGAN_JAX_NO_REEXEC": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(probe), str(tmp_path / "two"), tfds_dir, str(folder)]
    for code, _, err in multihost.run(cmd, 2, 2, tmp_path / "logs2", 600, env=e, cwd=REPO):
        assert code == 0, err[-3000:]
    one = {**e, "STYLEGAN_JAX_NO_DISTRIBUTED": "1"}
    cmd1 = [sys.executable, str(probe), str(tmp_path / "one"), tfds_dir, str(folder)]
    (code, _, err), = multihost.run(cmd1, 1, 4, tmp_path / "logs1", 600, env=one, cwd=REPO)
    assert code == 0, err[-3000:]
    p0, p1, ref = (np.load(tmp_path / f"{n}.npz") for n in ("two_0", "two_1", "one_0"))
    names = ["synthetic", "folder"] + (["tfds"] if tfds_dir else [])
    for name in names:
        for b in range(3):
            r0, r1 = p0[f"{name}/{b}/rows"], p1[f"{name}/{b}/rows"]
            # Each process holds only its half of the global batch: disjoint, together the whole batch.
            assert len(r0) == len(r1) == 4 and not set(r0) & set(r1) and sorted([*r0, *r1]) == list(range(8))
            both = np.empty_like(ref[f"{name}/{b}/images"])
            both[r0], both[r1] = p0[f"{name}/{b}/images"], p1[f"{name}/{b}/images"]
            np.testing.assert_array_equal(both, ref[f"{name}/{b}/images"], err_msg=f"{name} batch {b}")
        # The processes agree on the position; it counts global examples, as in the 1-process run (Grain's own
        # iterator state, also saved, depends on the process count).
        s0, s1, s_ref = (ast.literal_eval(str(p[f"{name}/state"])) for p in (p0, p1, ref))
        assert s0 == s1 and position(s0) == position(s_ref) == divmod(3 * 8, s_ref["length"])
    if not tfds_dir:
        pytest.skip("tensorflow_datasets not installed: tfds source not checked (synthetic and folder were)")


# ---- a. 2 x 2 == 1 x 4 ------------------------------------------------------------------------------------


@pytest.mark.slow  # ~3 min on 2 cores (both topologies compile)
def test_two_processes_match_one(reference, tmp_path, cache_dir):
    config, one = reference
    two = tmp_path / "two"
    results = train_n(config, two, 2, cache_dir, tmp_path / "logs")
    a, b = losses(one), losses(two)
    assert [s for s, _, _ in a] == [s for s, _, _ in b] == list(range(1, STEPS + 1))  # a tick per step
    np.testing.assert_allclose(np.array([x[1:] for x in b]), np.array([x[1:] for x in a]), rtol=1e-5)
    meta_a, pa = final_params(one)
    meta_b, pb = final_params(two)
    assert meta_b["processes"] == 2 and meta_a["processes"] == 1
    assert position(meta_a["data_state"]) == position(meta_b["data_state"])
    assert_close_params(pa, pb)
    # Tick lines: printed by process 0 only, prefixed with its index; the other process prints none.
    out0, out1 = results[0][1], results[1][1]
    assert "[process 0/2] kimg" in out0 and " kimg " not in out1.replace("done:", "")


# ---- c. checkpoints across process counts ------------------------------------------------------------------


@pytest.mark.extended  # beyond CI's time budget: run with -m extended
@pytest.mark.slow  # ~4 min
@pytest.mark.parametrize("first,second", [(2, 1), (1, 2)])
def test_checkpoint_moves_between_process_counts(reference, tmp_path, cache_dir, first, second):
    config, one = reference
    workdir = tmp_path / "run"
    train_n(config, workdir, first, cache_dir, tmp_path / "logs_a", f"--stop-after-steps={STEPS // 2}")
    meta_half, _ = final_params(workdir)
    assert meta_half["step"] == STEPS // 2 and meta_half["processes"] == first
    results = train_n(config, workdir, second, cache_dir, tmp_path / "logs_b")
    assert "resumed from" in results[0][1]
    meta_a, pa = final_params(one)
    meta_b, pb = final_params(workdir)
    assert meta_b["step"] == STEPS and meta_b["processes"] == second
    assert position(meta_a["data_state"]) == position(meta_b["data_state"])  # the data position carried over
    np.testing.assert_array_equal(pa["['rng']"], pb["['rng']"])
    # Same batches and random draws after the move: the same parameters (float tolerance: the all-reduce of
    # 2 processes sums in another order).
    assert_close_params(pa, pb)
    # Per-step losses after the resume equal the unbroken run's.
    tail = [x for x in losses(workdir) if x[0] > STEPS // 2]
    np.testing.assert_allclose(np.array([x[1:] for x in tail]),
                               np.array([x[1:] for x in losses(one) if x[0] > STEPS // 2]), rtol=1e-5)


# ---- d. a dead peer ----------------------------------------------------------------------------------------


@pytest.mark.extended  # beyond CI's time budget: run with -m extended
@pytest.mark.slow  # ~4 min
def test_sigkill_one_process_stops_the_other_and_restart_resumes(reference, tmp_path, cache_dir):
    config, one = reference
    workdir = tmp_path / "run"
    e = {**env(cache_dir), "STYLEGAN_JAX_HEARTBEAT_TIMEOUT": "20"}
    cmd = train_cmd(config, workdir, "--config.log.tick_kimg=0.004", "--config.log.checkpoint_kimg=0.008")
    procs = multihost.start(cmd, 2, 2, tmp_path / "logs", env=e, cwd=REPO)
    ckpts = workdir / "checkpoints"
    deadline = time.time() + 1500
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if ckpts.is_dir() and any(p.name.isdigit() and int(p.name) >= 2 for p in ckpts.iterdir()):
            break
        time.sleep(0.05)
    assert all(p.poll() is None for p in procs), "a process ended before the kill"
    procs[1].send_signal(signal.SIGKILL)
    killed = time.time()
    code = multihost.wait(procs[:1], timeout=120)[0]
    took = time.time() - killed
    procs[1].wait()
    err = (tmp_path / "logs" / "process0.err").read_text()
    assert code not in (0, None), f"process 0 did not stop within 2 minutes of the kill:\n{err[-2000:]}"
    assert took < 120
    assert "lost process 1 of 2" in err, err[-2000:]
    assert "last checkpoint:" in err
    from stylegan_jax.checkpoint import load_checkpoint

    meta, _ = load_checkpoint(workdir)  # the last checkpoint is complete and readable
    assert 2 <= meta["step"] < STEPS
    results = train_n(config, workdir, 2, cache_dir, tmp_path / "logs_restart")
    assert "resumed from" in results[0][1]
    meta_a, pa = final_params(one)
    meta_b, pb = final_params(workdir)
    assert meta_b["step"] == STEPS and position(meta_a["data_state"]) == position(meta_b["data_state"])
    assert_close_params(pa, pb)
