"""The training loop end to end: outputs in the workdir, exact resume after SIGKILL, bad data and
non-finite losses stop with a clear message. Runs in subprocesses like a user's command, sharing a
persistent compilation cache so that each process does not pay the compile again."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.tiny_config import write_config_file

REPO = Path(__file__).parent.parent

def write_config(tmp_path: Path, total_kimg: float) -> Path:
    """The tiny config (tests/tiny_config.py) training ``total_kimg``, as a config file in ``tmp_path``."""
    return write_config_file(tmp_path / "tiny.py", {"train.total_kimg": total_kimg})


def env(cache_dir: Path) -> dict:
    e = dict(os.environ)
    e.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
             STYLEGAN_JAX_NO_REEXEC="1", PYTHONUNBUFFERED="1")
    return e


def train_cmd(config: Path, workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stylegan_jax.cli", "train", "--config", str(config), "--workdir", str(workdir),
            *extra]


def final_params(workdir: Path) -> dict:
    import jax

    from stylegan_jax.checkpoint import load_checkpoint

    meta, state = load_checkpoint(workdir)
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    return meta, {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


def test_train_writes_grids_checkpoints_logs(tmp_path, cache_dir):
    config = write_config(tmp_path, total_kimg=0.016)  # 4 steps of batch 4
    workdir = tmp_path / "run"
    # Equivariance metrics during training, at the end of the run (every 4 steps).
    out = subprocess.run(train_cmd(config, workdir, "--config.log.metrics_kimg=0.016", "--config.log.metrics_num=2",
                                   "--config.log.metrics=eqt_int"),
                         env=env(cache_dir), capture_output=True, text=True, timeout=900, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (workdir / "images" / "fakes_init.png").is_file()
    assert len(list((workdir / "images").glob("fakes_0*.png"))) >= 2
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 4 and len(steps) <= 3  # keep_checkpoints = 3
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_lines = [line for line in lines if "Loss/G" in line]
    assert train_lines and {"Loss/G", "Loss/D", "Timing/sec_per_kimg", "kimg"} <= set(train_lines[-1])
    assert all(np.isfinite(v) for v in train_lines[-1].values())
    metric_lines = [line for line in lines if "Metrics/eqt_int" in line]
    assert metric_lines and np.isfinite(metric_lines[-1]["Metrics/eqt_int"])
    assert "metrics eqt_int" in out.stdout
    assert any((workdir / "tensorboard").iterdir())
    assert "kimg" in out.stdout and "s/kimg" in out.stdout
    # Sampling from the run's checkpoint works.
    from stylegan_jax.apis.sampling import Sampler

    imgs = Sampler.from_checkpoint(workdir).images(seeds=[0, 1])
    assert imgs.shape == (2, 32, 32, 3)


def test_bad_data_is_reported_before_training(tmp_path, cache_dir):
    config = write_config(tmp_path, total_kimg=0.016)
    data = tmp_path / "data"
    data.mkdir()
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    out = subprocess.run(train_cmd(config, tmp_path / "run", "--config.data.source=folder",
                                   f"--config.data.path={data}"),
                         env=env(cache_dir), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode != 0
    assert "broken.png" in out.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bad_override_is_reported(tmp_path, cache_dir):
    config = write_config(tmp_path, total_kimg=0.016)
    out = subprocess.run(train_cmd(config, tmp_path / "run", "--config.train.batchsize=3"),
                         env=env(cache_dir), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 2 and "unknown config key 'train.batchsize'" in out.stderr


@pytest.mark.slow  # ~1 min (its own compile: the learning rate is a constant of the program)
def test_non_finite_loss_stops_with_message_and_keeps_checkpoints(tmp_path, cache_dir):
    # A huge D learning rate overflows D's weights after the first update: the next step's loss is not
    # finite, the run stops naming that step, and the checkpoints written before stay readable.
    config = write_config(tmp_path, total_kimg=0.016)
    workdir = tmp_path / "run"
    out = subprocess.run(train_cmd(config, workdir, "--config.train.d_lr=1e30",
                                   "--config.train.r1_gamma=0", "--config.log.checkpoint_kimg=0.004"),
                         env=env(cache_dir), capture_output=True, text=True, timeout=900, cwd=REPO)
    assert out.returncode == 3, (out.stdout[-2000:], out.stderr[-2000:])
    assert "non-finite loss or gradient at step" in out.stderr
    assert "Last good checkpoint" in out.stderr
    from stylegan_jax.checkpoint import load_checkpoint

    meta, _ = load_checkpoint(workdir)
    assert 1 <= meta["step"] < 4


@pytest.mark.slow
def test_eight_devices_match_one(tmp_path, cache_dir):
    # The same command on 8 simulated CPU devices (global batch split over the 'data' mesh axis)
    # ends with the same parameters as on 1 device, to float tolerance.
    config = write_config(tmp_path, total_kimg=0.016)  # batch 8 below: 2 steps
    results = {}
    for n in (1, 8):
        e = env(cache_dir)
        e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
        workdir = tmp_path / f"dev{n}"
        out = subprocess.run(train_cmd(config, workdir, "--config.train.batch_size=8"), env=e, capture_output=True,
                             text=True, timeout=1200, cwd=REPO)
        assert out.returncode == 0, out.stderr[-3000:]
        results[n] = final_params(workdir)[1]
    assert results[1].keys() == results[8].keys()
    moved = 0.0
    for k in results[1]:
        a, b = results[1][k], results[8][k]
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4, err_msg=k)
            moved = max(moved, float(np.abs(a).max()))
        else:
            np.testing.assert_array_equal(a, b, err_msg=k)
    assert moved > 0


# ---- the StyleGAN2 baseline through the same command -------------------------------------------------------

STYLEGAN2 = ("--config.data.resolution=16", "--config.model.cfg=stylegan2", "--config.train.style_mixing_prob=0.9",
             "--config.train.pl_weight=2",
             "--config.train.g_reg_interval=2", "--config.train.g_lr=0.002")


@pytest.mark.slow  # ~5 min on 2 cores: a StyleGAN2 training command (the default suite keeps the StyleGAN3 one)
def test_stylegan2_trains_with_the_same_command(tmp_path, cache_dir):
    config = write_config(tmp_path, total_kimg=0.016)  # 4 steps: Greg at 0 and 2, Dreg at 0 and 2
    workdir = tmp_path / "run"
    out = subprocess.run(train_cmd(config, workdir, *STYLEGAN2), env=env(cache_dir), capture_output=True, text=True,
                         timeout=900, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "PL " in out.stdout
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    last = [line for line in lines if "Loss/pl_penalty" in line][-1]
    assert all(np.isfinite(v) for v in last.values())
    assert last["Loss/pl_penalty"] > 0 and last["Progress/pl_mean"] > 0
    assert (workdir / "images" / "fakes_init.png").is_file()
    meta, state = final_params(workdir)
    assert meta["generator"]["class"] == "stylegan2.Generator" and meta["step"] == 4
    assert int(state["['g_reg_steps']"]) == 2 and float(state["['pl_mean']"]) > 0

    from stylegan_jax.checkpoint import load_generator
    from stylegan_jax.networks.stylegan2 import StyleGAN2Generator

    G, variables = load_generator(workdir)
    assert isinstance(G, StyleGAN2Generator) and G.img_resolution == 16
    # Training moved the noise strengths away from their initial 0.
    strengths = [float(v) for k, v in state.items() if k.startswith("['G']") and "noise_strength" in k]
    assert strengths and any(s != 0.0 for s in strengths)
    # Sampling from the run: const noise by default, random noise reproducible per seed.
    from stylegan_jax.apis.sampling import Sampler

    s = Sampler.from_checkpoint(workdir)
    const = s.images(seeds=[0, 1])
    assert const.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(s.images(seeds=[0, 1], noise_mode="random"),
                                  s.images(seeds=[0, 1], noise_mode="random"))


def test_stylegan2_rejects_equivariance_metrics(tmp_path, cache_dir):
    config = write_config(tmp_path, total_kimg=0.016)
    out = subprocess.run(train_cmd(config, tmp_path / "run", *STYLEGAN2, "--config.log.metrics_kimg=0.008"),
                         env=env(cache_dir), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 2 and "equivariance metrics need a StyleGAN3 generator" in out.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_stylegan2_resume_equals_unbroken_run(tmp_path, cache_dir):
    # pl_mean and the Greg counters live in the train state: stopping after 1 step (mid-way between Greg steps)
    # and resuming gives the unbroken run bit for bit.
    config = write_config(tmp_path, total_kimg=0.016)
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    for workdir, extra in ((unbroken, ()), (broken, ("--stop-after-steps=1",)), (broken, ())):
        out = subprocess.run(train_cmd(config, workdir, *STYLEGAN2, "--config.log.checkpoint_kimg=0.004", *extra),
                             env=env(cache_dir), capture_output=True, text=True, timeout=900, cwd=REPO)
        assert out.returncode == 0, out.stderr[-3000:]
    meta_a, a = final_params(unbroken)
    meta_b, b = final_params(broken)
    assert meta_a["step"] == meta_b["step"] == 4 and a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_checkpoint_without_newer_state_fields_resumes(tmp_path, caplog):
    """A train state saved before the path-length fields existed restores with them at their initial values;
    any other structural difference is still an error. Restoring logs no orbax warning about a missing
    metadata file (it used to on every resume)."""
    import logging

    import jax
    from flax import serialization

    from stylegan_jax.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from stylegan_jax.models import build_generator
    from stylegan_jax.networks.discriminator import Discriminator
    from stylegan_jax.train.loop import ADDED_STATE_FIELDS
    from stylegan_jax.train.state import TrainConfig, create_train_state

    G = build_generator(cfg="t", z_dim=4, w_dim=4, img_resolution=8, img_channels=1, channel_base=32, channel_max=4,
                        mapping_layers=1, impl="ref", num_layers=2, num_critical=1, margin_size=2)
    D = Discriminator(c_dim=0, img_resolution=8, img_channels=1, channel_base=32, channel_max=4, mbstd_group_size=2)
    state = create_train_state(G, D, TrainConfig(batch_size=4), jax.random.PRNGKey(0))
    old = {k: v for k, v in serialization.to_state_dict(state).items() if k not in ADDED_STATE_FIELDS}
    old["step"] = np.int32(7)
    save_checkpoint(tmp_path / "ckpt", 7, old, {"step": 7})
    fresh = create_train_state(G, D, TrainConfig(batch_size=4), jax.random.PRNGKey(1))
    with caplog.at_level(logging.WARNING):
        _, restored = load_checkpoint(tmp_path / "ckpt", target=fresh, fill_missing=ADDED_STATE_FIELDS)
        _, g_ema = load_checkpoint(tmp_path / "ckpt", entries=("G_ema",))
    assert not [r.getMessage() for r in caplog.records if "Metadata file" in r.getMessage()]
    assert list(g_ema) == ["G_ema"]
    assert int(restored.step) == 7 and float(restored.pl_mean) == 0.0 and int(restored.g_reg_steps) == 0
    np.testing.assert_array_equal(np.asarray(jax.tree.leaves(restored.G)[0]), np.asarray(jax.tree.leaves(state.G)[0]))
    with pytest.raises(CheckpointError, match="could not be restored"):
        load_checkpoint(tmp_path / "ckpt", target=fresh)


def test_resume_with_settings_that_change_the_state_names_them(tmp_path):
    """Resuming a workdir with a setting that changes what the training state holds (here the biases' own Adam of
    train.bias_lr_mult) is refused naming that setting and its saved value; the checkpoint and config.json stay as they
    were, and the run still resumes with settings that do not change the state."""
    from stylegan_jax.checkpoint import CheckpointError
    from stylegan_jax.config import apply_overrides, base_config
    from stylegan_jax.train import loop
    from tests.tiny_config import overrides

    def config_with(*changes: str):
        return loop.resolve_config(apply_overrides(base_config(), overrides() + list(changes)))

    workdir = tmp_path / "run"
    run = loop.setup(config_with(), workdir, log=lambda _: None)
    loop.save_checkpoint(run)
    loop.save_config(run)
    loop.close(run)
    saved_config = (workdir / "config.json").read_text()
    with pytest.raises(CheckpointError, match=r"(?s)^the run in .* saved with other settings than this one's: "
                                              r"train\.bias_lr_mult: 1\.0 -> 0\.5; train\.g_lr.*could not be restored"):
        loop.train(config_with("train.bias_lr_mult=0.5", "train.g_lr=0.01"), workdir, log=lambda _: None)
    assert (workdir / "config.json").read_text() == saved_config
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["0"]
    run = loop.setup(config_with("train.g_lr=0.01"), workdir, log=lambda _: None)  # not part of the state: resumes
    try:
        loop.restore(run, resume=True)
        assert run.step == 0 and run.saved_steps() == [0]
    finally:
        loop.close(run)


def test_grid_labels_of_a_conditional_run_are_dataset_draws_ordered_by_class():
    """A conditional run's grid draws its labels from the dataset (the official way) and orders them by class, so
    that the grid reads class by class, row after row."""
    from stylegan_jax.data.input_pipeline import make_dataset
    from stylegan_jax.train.loop import grid_labels

    data = make_dataset(resolution=8, batch_size=4, use_labels=True, prefetch=0, synthetic_size=60)
    drawn, labels = data.sample_labels(36, 0), grid_labels(data, 36, 0)
    classes = np.argmax(labels, axis=1)
    assert labels.shape == (36, 3) and np.all(np.diff(classes) >= 0)  # grouped: class 0 first, then 1, then 2
    assert len(np.unique(classes)) == 3
    # The same draws, only reordered.
    np.testing.assert_array_equal(np.sort(np.argmax(drawn, axis=1)), classes)
    assert not np.array_equal(np.argmax(drawn, axis=1), classes)  # the draws alone are not sorted
