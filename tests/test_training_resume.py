"""Exact resume after SIGKILL, through the training command (its own module so that pytest-xdist can run it
next to the rest of test_training.py; both share the session's persistent compilation cache)."""

import signal
import subprocess
import time

import numpy as np
import pytest

from tests.test_training import REPO, env, final_params, train_cmd, write_config


@pytest.mark.slow  # ~2 min (three training processes)
def test_sigkill_and_resume_equals_unbroken_run(tmp_path, cache_dir):
    total = 0.032  # 8 steps of batch 4; checkpoint every 2 steps
    config = write_config(tmp_path, total_kimg=total)
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    out = subprocess.run(train_cmd(config, unbroken), env=env(cache_dir), capture_output=True, text=True,
                         timeout=900, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]

    # Start the same run, kill -9 it as soon as a checkpoint past step 2 exists (mid-training).
    proc = subprocess.Popen(train_cmd(config, broken), env=env(cache_dir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=REPO)
    deadline = time.time() + 900
    ckpts = broken / "checkpoints"
    while time.time() < deadline and proc.poll() is None:
        done = [p for p in ckpts.iterdir() if p.name.isdigit() and int(p.name) >= 4] if ckpts.is_dir() else []
        if done:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    assert killed_at < 8

    out = subprocess.run(train_cmd(config, broken), env=env(cache_dir), capture_output=True, text=True,
                         timeout=900, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in out.stdout

    meta_a, a = final_params(unbroken)
    meta_b, b = final_params(broken)
    assert meta_a["step"] == meta_b["step"] == 8
    assert meta_a["data_state"] == meta_b["data_state"]
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # bitwise
