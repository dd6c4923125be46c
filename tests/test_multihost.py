"""Multi-process training with real OS processes over 127.0.0.1 (tests/multihost.py starts them with the
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` environment of a multi-host launch; CPU
collectives through gloo):

- each process reads only its slice of every global batch, for the synthetic, folder and tfds sources (default
  suite: no compile, ~30 s);
- 2 processes x 2 devices train like 1 process x 4 devices: same per-step losses, same final parameters;
- checkpoints move between process counts (2 -> 1 and 1 -> 2) with the data position and the RNG;
- SIGKILL of one process: the other stops within 2 minutes naming it, the checkpoint survives, a restart
  resumes to the same end;
- tick lines reach a stdout redirected to a file while the run goes on (no PYTHONUNBUFFERED).

Float tolerance between process counts: the all-reduce of 2 processes sums in another order than 1 process, so the
states differ by float rounding after the first step (~1e-7 relative) and training amplifies it. Smoothly at first:
after 6 steps the whole state agrees entry by entry to ~1e-6 of each tensor's largest entry. Then in jumps, most
likely where a leaky-ReLU input (or a clamp) sits within rounding of its kink: one run takes the other slope, which
changes that sample's gradient by a finite amount, not by rounding (inferred from the jump, not isolated). Measured
with a per-tap kernel gradient in `conv2d_weight_grad` (one matrix product per tap instead of the im2col product it
has; same values up to rounding; 2026-12-06): the largest network tensor error in norm, relative to the tensor's
norm, was 6.4e-7 at step 6 and 1.6e-4 at step 8; Adam's first moment (the last gradient, beta1 = 0) of one bias
differed by 1e-3 of its entries at step 8, and the 16 tensors above 1e-5 were all biases and the zero-initialized
input affine weight, whose norms are only what 8 steps of lr moved them. 1 process x 2 devices against x 4 (another
rounding order, no process boundary) hit no such jump in those 8 steps (7.4e-6). Which run hits one depends on the
last bits of the operators, so no fixed tolerance after several steps holds for every correct implementation. Hence:
the whole state (weights, EMAs, Adam moments) entry by entry at every checkpoint before the last (steps 4 and 6,
errors <= ~1e-6), the per-step losses to the end, and the final networks with a test that a jump passes and a real
divergence (a wrong slice, a missing all-reduce, a lost state: every tensor moves) fails: the median tensor error <=
1e-6 (measured 2.3e-7) and every tensor <= 1e-3. With the im2col product the same 8 steps stay smooth (largest error
~7e-6), but that is the luck of its last bits. 1-process runs are bitwise reproducible; 2-process runs are not
always (the cross-process all-reduce on CPU: two 2 x 2 runs have differed in the last bits of step 1's D loss).
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


def run_env(cache_dir: Path) -> dict:
    """The tests' environment without PYTHONUNBUFFERED: stdout to a file is block-buffered, as under SLURM."""
    return {k: v for k, v in env(cache_dir).items() if k != "PYTHONUNBUFFERED"}


def start_n(config: Path, workdir: Path, n: int, cache_dir: Path, logdir: Path, *extra: str, env_extra=None):
    """Start the training command as ``n`` processes with ``DEVICES // n`` CPU devices each (n = 1: a plain
    process); stdout / stderr of process i in ``logdir/process{i}.out`` / ``.err``."""
    cmd = train_cmd(config, workdir, "--config.log.tick_kimg=0.004", "--config.log.checkpoint_kimg=0.008", *extra)
    e = {**run_env(cache_dir), **(env_extra or {})}
    if n == 1:
        e = {k: v for k, v in e.items() if not k.startswith("JAX_COORDINATOR")}
        e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES}"
        return multihost.start(cmd, 1, DEVICES, logdir, env={**e, "STYLEGAN_JAX_NO_DISTRIBUTED": "1"}, cwd=REPO)
    return multihost.start(cmd, n, DEVICES // n, logdir, env=e, cwd=REPO)


def finish(procs: list, logdir: Path, timeout: float = 1500) -> list[tuple[int | None, str, str]]:
    """Wait for the processes; every one must exit 0. ``[(code, stdout, stderr)]``."""
    codes = multihost.wait(procs, timeout)
    results = [(c, (logdir / f"process{i}.out").read_text(), (logdir / f"process{i}.err").read_text())
               for i, c in enumerate(codes)]
    for i, (code, out, err) in enumerate(results):
        assert code == 0, f"process {i} of {len(procs)}: exit {code}\n{out[-2000:]}\n{err[-3000:]}"
    return results


def train_n(config: Path, workdir: Path, n: int, cache_dir: Path, logdir: Path, *extra: str, timeout: float = 1500):
    """The training command as ``n`` processes to the end (see start_n); ``[(code, stdout, stderr)]``."""
    return finish(start_n(config, workdir, n, cache_dir, logdir, *extra), Path(logdir), timeout)


def tick_steps(text: str) -> list[int]:
    """Steps of the tick lines of process 0 of 2 in a stdout."""
    return [int(line.split("step")[1].split()[0]) for line in text.splitlines()
            if line.startswith("[process 0/2] kimg ")]


def checkpoint_state(workdir: Path, step: int) -> dict:
    import jax

    from stylegan_jax.checkpoint import load_checkpoint

    _, state = load_checkpoint(workdir / "checkpoints", step=step)
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


def assert_close_params(a: dict, b: dict, rtol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].dtype.kind == "f":
            scale = max(float(np.abs(a[k]).max()), 1e-3)
            err = float(np.abs(a[k].astype(np.float64) - b[k]).max())
            assert err <= rtol * scale, (k, err, scale)
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def assert_networks_close(a: dict, b: dict, prefixes: tuple[str, ...], median: float = 1e-6,
                          worst: float = 1e-3) -> None:
    """The float leaves under ``prefixes``, each compared in norm relative to its own norm (``|a - b| / |a|``): the
    median over the leaves <= ``median`` and every leaf <= ``worst``; every integer leaf exactly. A leaky-ReLU kink
    taken differently by two runs moves a few small-norm tensors by up to ~1e-4 (module docstring); a divergence
    that is a bug moves every tensor."""
    assert a.keys() == b.keys()
    floats = [k for k in a if a[k].dtype.kind == "f" and k.startswith(prefixes)]
    assert len(floats) >= 10, floats
    errors = {}
    for k in floats:
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        errors[k] = float(np.linalg.norm(x - y)) / max(float(np.linalg.norm(x)), 1e-12)
    values = np.array(list(errors.values()))
    largest = sorted(errors.items(), key=lambda kv: -kv[1])[:5]
    assert np.median(values) <= median, (np.median(values), largest)
    assert values.max() <= worst, largest
    for k in a:
        if a[k].dtype.kind != "f":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """1 process x 4 devices, STEPS steps, unbroken."""
    tmp = tmp_path_factory.mktemp("mh_ref")
    config = write_config(tmp, total_kimg=STEPS * 4 / 1000)
    workdir = tmp / "one"
    train_n(config, workdir, 1, cache_dir, tmp / "logs")
    return config, workdir


@pytest.fixture(scope="module")
def reference_two(reference, tmp_path_factory, cache_dir):
    """2 processes x 2 devices, STEPS steps, unbroken, stdout and stderr redirected to files. While it runs,
    process 0's stdout file is read as soon as metrics.jsonl holds the first ticks: ``(workdir, results,
    (jsonl steps, stdout tick steps, whether both processes were still running))``."""
    config, _ = reference
    tmp = tmp_path_factory.mktemp("mh_two")
    workdir, logdir = tmp / "two", tmp / "logs"
    procs = start_n(config, workdir, 2, cache_dir, logdir)
    jsonl, seen = workdir / "metrics.jsonl", None
    deadline = time.time() + 1500
    while seen is None and time.time() < deadline and all(p.poll() is None for p in procs):
        rows = jsonl.read_text().splitlines() if jsonl.is_file() else []
        steps = [json.loads(r)["step"] for r in rows[:-1] if "Loss/G" in r]  # the last line may be half written
        if len(steps) >= 2:
            time.sleep(1.0)  # a flushed line is in the file within a millisecond; allow for a loaded machine
            out = (logdir / "process0.out").read_text()
            seen = (steps, tick_steps(out), all(p.poll() is None for p in procs))
        time.sleep(0.05)
    return workdir, finish(procs, logdir), seen


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


# ---- d. a dead peer, without training: the watchdog ---------------------------------------------------------

DEAD_PEER = r'''
import os, sys, time
from stylegan_jax.train.distributed import maybe_initialize_distributed, Watchdog
maybe_initialize_distributed()
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

mesh = Mesh(np.array(jax.devices()), ("d",))
x = jax.make_array_from_callback((8,), NamedSharding(mesh, P("d")), lambda i: np.arange(8, dtype=np.float32)[i])
total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))
with Watchdog():
    print("sum", float(total(x).addressable_data(0)), flush=True)  # the collective works while both live
    time.sleep(2)
    if jax.process_index() == 1:
        os.kill(os.getpid(), 9)
    time.sleep(2)
    if sys.argv[1] == "error":  # the collective fails at once (gloo: connection closed by the dead peer)
        raise RuntimeError("UNKNOWN: Gloo all-reduce failed: Connection closed by peer")
    print(float(total(x).addressable_data(0)), flush=True)  # the collective waits for the dead peer
'''


@pytest.mark.slow  # ~1 min: two pairs of processes
@pytest.mark.parametrize("failure", ["error", "wait"])
def test_watchdog_names_a_dead_peer(tmp_path, failure):
    """Process 1 is SIGKILLed after a first collective; process 0 then either gets an error from the collective
    (its peer's connection closed) or waits in it. Either way it exits with status 4 within the heartbeat timeout
    plus a few seconds, naming process 1 (the error path once asked the coordination service who was alive, a
    call that waits for the dead process until jax.distributed's own heartbeat aborts the process)."""
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(DEAD_PEER))
    e = {**os.environ, "STYLEGAN_JAX_NO_REEXEC": "1", "PYTHONPATH": str(REPO), "STYLEGAN_JAX_HEARTBEAT_TIMEOUT": "10"}
    procs = multihost.start([sys.executable, str(probe), failure], 2, 2, tmp_path / "logs", env=e, cwd=REPO)
    while procs[1].poll() is None and procs[0].poll() is None:
        time.sleep(0.05)
    killed = time.time()
    code = multihost.wait(procs[:1], timeout=100)[0]
    took = time.time() - killed
    procs[1].wait()
    err = (tmp_path / "logs" / "process0.err").read_text()
    assert "sum 28.0" in (tmp_path / "logs" / "process0.out").read_text(), err[-2000:]
    assert procs[1].returncode == -signal.SIGKILL
    assert code == 4 and "[process 0/2] lost process 1 of 2: no sign of life" in err, (code, err[-2000:])
    assert took < 10 + 25, took  # the heartbeat timeout plus the watchdog's checks (jax's own abort: 40 s)


# ---- a. 2 x 2 == 1 x 4 ------------------------------------------------------------------------------------


@pytest.mark.slow  # ~6 min on the loaded 2-core machine (both topologies compile; the runs are shared fixtures)
def test_two_processes_match_one(reference, reference_two):
    _, one = reference
    two, results, seen = reference_two
    a, b = losses(one), losses(two)
    assert [s for s, _, _ in a] == [s for s, _, _ in b] == list(range(1, STEPS + 1))  # a tick per step
    np.testing.assert_allclose(np.array([x[1:] for x in b]), np.array([x[1:] for x in a]), rtol=1e-5)
    meta_a, pa = final_params(one)
    meta_b, pb = final_params(two)
    assert meta_b["processes"] == 2 and meta_a["processes"] == 1
    assert position(meta_a["data_state"]) == position(meta_b["data_state"])
    # At every checkpoint before the last, the whole state (weights, EMAs, Adam moments) agrees entry by entry; at
    # the end, the networks as a whole (module docstring: rounding amplified by training, in jumps at leaky-ReLU
    # kinks).
    kept = sorted(int(p.name) for p in (one / "checkpoints").iterdir() if p.name.isdigit())
    assert kept[-1] == STEPS and len(kept) >= 3, kept
    for step in kept[:-1]:
        assert_close_params(checkpoint_state(one, step), checkpoint_state(two, step))
    assert_networks_close(pa, pb, ("['G']", "['G_ema']", "['D']"))
    # Tick lines: printed by process 0 only, prefixed with its index; the other process prints none.
    out0, out1 = results[0][1], results[1][1]
    assert tick_steps(out0) == list(range(1, STEPS + 1)) and " kimg " not in out1.replace("done:", "")
    # ... and flushed: with stdout block-buffered to a file, the tick lines of the steps in metrics.jsonl were
    # in the file while both processes still ran (a block-buffered line would wait for 8 KiB or the exit).
    assert seen is not None, "the run ended before its first two ticks could be observed"
    jsonl_steps, stdout_steps, running = seen
    assert running, "the processes ended before the check: it observed nothing"
    assert set(jsonl_steps) <= set(stdout_steps), (jsonl_steps, stdout_steps)


# ---- c. checkpoints across process counts ------------------------------------------------------------------


@pytest.mark.slow  # ~3-4 min each on the loaded 2-core machine (load 7-9)
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
    assert [k for k in pa if pa[k].dtype.kind != "f"] and all(
        np.array_equal(pa[k], pb[k]) for k in pa if pa[k].dtype.kind != "f")  # counters, RNG key
    # Same batches, random draws and optimizer state after the move: two steps after it, the whole state (weights,
    # EMAs, Adam moments) is the unbroken run's to float tolerance (module docstring: the all-reduce of 2
    # processes sums in another order, and training amplifies it over the later steps).
    after = STEPS // 2 + 2
    assert_close_params(checkpoint_state(one, after), checkpoint_state(workdir, after))
    # Per-step losses after the resume equal the unbroken run's to the end.
    tail = [x for x in losses(workdir) if x[0] > STEPS // 2]
    assert [x[0] for x in tail] == list(range(STEPS // 2 + 1, STEPS + 1))
    np.testing.assert_allclose(np.array([x[1:] for x in tail]),
                               np.array([x[1:] for x in losses(one) if x[0] > STEPS // 2]), rtol=1e-5)


# ---- d. a dead peer ----------------------------------------------------------------------------------------


@pytest.mark.slow  # ~8 min on the loaded 2-core machine (load 7-9): a run to the kill, 20 s, a restart to the end
def test_sigkill_one_process_stops_the_other_and_restart_resumes(reference, reference_two, tmp_path, cache_dir):
    config, _ = reference
    two, _, _ = reference_two
    workdir, logdir = tmp_path / "run", tmp_path / "logs"
    procs = start_n(config, workdir, 2, cache_dir, logdir, env_extra={"STYLEGAN_JAX_HEARTBEAT_TIMEOUT": "20"})
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
    err = (logdir / "process0.err").read_text()
    assert code not in (0, None), f"process 0 did not stop within 2 minutes of the kill:\n{err[-2000:]}"
    assert took < 120
    # Named by our watchdog (exit status 4), not by jax.distributed's fatal heartbeat error.
    assert code == 4 and "lost process 1 of 2" in err, (code, err[-2000:])
    assert "last checkpoint:" in err
    from stylegan_jax.checkpoint import load_checkpoint

    meta, _ = load_checkpoint(workdir)  # the last checkpoint is complete and readable
    assert 2 <= meta["step"] < STEPS
    results = train_n(config, workdir, 2, cache_dir, tmp_path / "logs_restart")
    assert f"resumed from {ckpts}/{meta['step']}" in results[0][1]
    meta_a, pa = final_params(two)
    meta_b, pb = final_params(workdir)
    assert meta_b["step"] == STEPS and position(meta_a["data_state"]) == position(meta_b["data_state"])
    # The restart continues the unbroken 2-process run: the whole state at its first checkpoint, its losses to the
    # end (the killed run may have logged a step past its checkpoint: the restart's line comes last) and the
    # final networks, to float tolerance (2-process runs are not always bitwise reproducible: module docstring).
    first = meta["step"] + 2
    assert_close_params(checkpoint_state(two, first), checkpoint_state(workdir, first))
    resumed = {step: x for step, *x in losses(workdir) if step > meta["step"]}
    unbroken = {step: x for step, *x in losses(two) if step > meta["step"]}
    assert sorted(resumed) == sorted(unbroken) == list(range(meta["step"] + 1, STEPS + 1))
    np.testing.assert_allclose([resumed[k] for k in sorted(resumed)], [unbroken[k] for k in sorted(unbroken)],
                               rtol=1e-5)
    assert_networks_close(pa, pb, ("['G']", "['G_ema']", "['D']"))
