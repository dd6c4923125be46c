"""The command line's persistent compilation cache: where it goes, how a user turns it off or moves it, and that a
second ``stylegan-jax generate`` process loads the programs the first one compiled (same images)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from stylegan_jax.utils import runtime
from tests.test_generate_cli import ckpt  # noqa: F401  (the tiny checkpoint fixture)

REPO = Path(__file__).parent.parent


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_COMPILATION_CACHE_MAX_SIZE", runtime.COMPILE_CACHE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return monkeypatch


def test_default_directory_is_under_the_user_cache(clean_env, tmp_path):
    path = runtime.enable_compile_cache()
    assert path == str(tmp_path / "xdg" / "stylegan-jax" / "xla") and Path(path).is_dir()
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == path
    assert int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"]) == runtime.COMPILE_CACHE_MAX_BYTES


def test_off_and_other_directories(clean_env, tmp_path):
    clean_env.setenv(runtime.COMPILE_CACHE_ENV, "off")
    assert runtime.enable_compile_cache() is None
    assert "JAX_COMPILATION_CACHE_DIR" not in os.environ and not (tmp_path / "xdg").exists()

    clean_env.setenv(runtime.COMPILE_CACHE_ENV, str(tmp_path / "mine"))
    assert runtime.enable_compile_cache() == str(tmp_path / "mine") and (tmp_path / "mine").is_dir()


def test_the_users_jax_setting_wins(clean_env, tmp_path):
    clean_env.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "theirs"))
    clean_env.setenv(runtime.COMPILE_CACHE_ENV, str(tmp_path / "mine"))
    assert runtime.enable_compile_cache() == str(tmp_path / "theirs")
    assert not (tmp_path / "mine").exists() and "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ


def test_a_directory_that_cannot_be_made_leaves_it_off(clean_env, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    clean_env.setenv(runtime.COMPILE_CACHE_ENV, str(tmp_path / "file" / "xla"))
    assert runtime.enable_compile_cache() is None and "JAX_COMPILATION_CACHE_DIR" not in os.environ


@pytest.mark.slow  # two OS processes (~20 s): the default suite is at its 10-minute budget
def test_a_second_generate_process_loads_what_the_first_compiled(tmp_path, ckpt):  # noqa: F811
    cache = tmp_path / "xla"
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(JAX_PLATFORMS="cpu", STYLEGAN_JAX_NO_REEXEC="1", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    env[runtime.COMPILE_CACHE_ENV] = str(cache)

    def generate(out: Path) -> tuple[dict[str, bytes], list[np.ndarray]]:
        r = subprocess.run([sys.executable, "-m", "stylegan_jax.cli", "generate", "--ckpt", str(ckpt), "--seeds",
                            "0-1", "--outdir", str(out)], env=env, cwd=REPO, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        # With a size bound, JAX stamps an entry's "-atime" file each time a process reads it (least recently used).
        stamps = {p.name: p.read_bytes() for p in cache.glob("*-atime")}
        return stamps, [np.asarray(PIL.Image.open(p)) for p in sorted(out.glob("*.png"))]

    first, images = generate(tmp_path / "a")
    entries = sorted(p.name for p in cache.glob("*-cache"))
    assert entries and len(first) == len(entries), "the first process stored nothing"
    second, again = generate(tmp_path / "b")
    assert sorted(p.name for p in cache.glob("*-cache")) == entries, "the second process compiled something anew"
    assert any(second[name] != first[name] for name in first), "no entry was read by the second process"
    assert len(images) == 2 and all(np.array_equal(a, b) for a, b in zip(images, again, strict=True))
