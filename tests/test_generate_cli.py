"""``stylegan-jax generate`` against tiny checkpoints written in tmp_path."""

import numpy as np
import PIL.Image
import pytest

from stylegan_jax.apis.sampling import FunctionCache, Sampler
from stylegan_jax.checkpoint import save_checkpoint
from stylegan_jax.cli import main
from stylegan_jax.models import generator_config
from tests.test_sampling import BATCH, RES, abstract_variables, tiny_generator, tiny_variables


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    G = tiny_generator()
    path = tmp_path_factory.mktemp("ckpt") / "run"
    save_checkpoint(path, 5, {"G_ema": tiny_variables()}, {"generator": generator_config(G)})
    return path


@pytest.fixture(scope="module")
def cond_ckpt(tmp_path_factory):
    G = tiny_generator(c_dim=3)
    path = tmp_path_factory.mktemp("cond") / "run"
    # Random weights without compiling G.init: enough to check the label handling end to end.
    save_checkpoint(path, 0, {"G_ema": abstract_variables(G)}, {"generator": generator_config(G)})
    return path


# This module's compiled functions: every generate call below reuses them (a CLI process would compile once).
FUNCTIONS = FunctionCache()


def generate(*args: str, cache: FunctionCache = FUNCTIONS) -> int:
    """``stylegan-jax generate --batch-size 4 ARGS`` in-process, with the compiled functions of ``cache``."""
    return main(["generate", "--batch-size", str(BATCH), *args], function_cache=cache)


def check_style_mix_and_interpolation(generate, ckpt, tmp_path, res: int, *extra: str) -> None:
    """``--style-mix`` writes the (rows + 1) x (cols + 1) grid, ``--interpolate`` the frames of the video."""
    out = tmp_path / "mix"
    assert generate("--ckpt", str(ckpt), "--style-mix", "--rows", "0-1", "--cols", "2-4", "--styles", "0-2",
                    "--outdir", str(out), *extra) == 0
    with PIL.Image.open(out / "style_mix.png") as im:
        assert im.size == (4 * res, 3 * res)
    video = tmp_path / "lerp.gif"
    assert generate("--ckpt", str(ckpt), "--seeds", "0,1", "--interpolate", "--frames", "3", "--video", str(video),
                    *extra) == 0
    with PIL.Image.open(video) as im:
        assert im.n_frames == 4 and im.size == (res, res)


def test_seed_pngs_and_grid(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert generate("--ckpt", str(ckpt), "--seeds", "0-3", "--psi", "0.7", "--outdir", str(out), "--grid") == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["grid.png", "seed0000.png", "seed0001.png", "seed0002.png", "seed0003.png"]
    with PIL.Image.open(out / "seed0002.png") as im:
        assert im.size == (RES, RES) and im.mode == "RGB"
        img = np.asarray(im)
    with PIL.Image.open(out / "grid.png") as im:
        assert im.size == (2 * RES, 2 * RES)
    # Same pixels as the Python API (the PNG is lossless).
    ref = Sampler.from_checkpoint(ckpt, batch_size=BATCH, cache=FUNCTIONS).images([0, 1, 2, 3], psi=0.7)
    np.testing.assert_array_equal(img, ref[2])
    assert "wrote 4 image(s)" in capsys.readouterr().out


def test_translate_rotate_change_the_image(ckpt, tmp_path):
    plain, moved = tmp_path / "plain", tmp_path / "moved"
    assert generate("--ckpt", str(ckpt), "--seeds", "0-3", "--outdir", str(plain)) == 0
    assert generate("--ckpt", str(ckpt), "--seeds", "0-3", "--outdir", str(moved), "--translate=0.1,-0.05",
                    "--rotate", "12") == 0
    a = np.asarray(PIL.Image.open(plain / "seed0001.png"))
    b = np.asarray(PIL.Image.open(moved / "seed0001.png"))
    assert a.shape == b.shape == (RES, RES, 3) and not np.array_equal(a, b)


def test_style_mix_and_interpolation(ckpt, tmp_path):
    check_style_mix_and_interpolation(generate, ckpt, tmp_path, RES, "--kind", "slerp")


def test_bad_checkpoint_path(tmp_path, capsys):
    # The command as a program runs it: no function cache handed in.
    rc = main(["generate", "--ckpt", str(tmp_path / "nope"), "--seeds", "0", "--outdir", str(tmp_path / "o")])
    assert rc != 0
    err = capsys.readouterr().err
    assert "nope" in err and "no such checkpoint" in err
    assert not (tmp_path / "o").exists()
    (tmp_path / "empty").mkdir()
    assert generate("--ckpt", str(tmp_path / "empty"), "--seeds", "0", "--outdir", str(tmp_path / "o")) != 0
    assert "no stylegan-jax checkpoint" in capsys.readouterr().err


def test_option_errors(ckpt, tmp_path, capsys):
    assert generate("--ckpt", str(ckpt), "--outdir", str(tmp_path)) == 1
    assert "--seeds is required" in capsys.readouterr().err
    assert generate("--ckpt", str(ckpt), "--style-mix", "--rows", "0", "--outdir", str(tmp_path)) == 1
    assert "--rows and --cols" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        generate("--ckpt", str(ckpt), "--seeds", "a-b", "--outdir", str(tmp_path))
    assert e.value.code == 2


def test_conditional_model_needs_class(cond_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert generate("--ckpt", str(cond_ckpt), "--seeds", "0", "--outdir", str(out)) == 1
    err = capsys.readouterr().err
    assert "conditional (c_dim=3)" in err and "--class" in err
    assert generate("--ckpt", str(cond_ckpt), "--seeds", "0", "--class", "3", "--outdir", str(out)) == 1
    assert "out of range" in capsys.readouterr().err
    assert generate("--ckpt", str(cond_ckpt), "--seeds", "0", "--class", "2", "--outdir", str(out)) == 0
    assert (out / "seed0000.png").is_file()


def test_load_generator_reads_only_the_generator_it_is_asked_for(tmp_path):
    """A training checkpoint holds G, G_ema, D and the optimizer states; ``load_generator`` restores just the
    entry asked for (orbax partial restore) and gives exactly the saved arrays; an entry the checkpoint lacks is a
    CheckpointError naming it and listing what is there."""
    import jax

    from stylegan_jax.checkpoint import CheckpointError, load_checkpoint, load_generator

    G = tiny_generator()
    g, g_ema = tiny_variables(), jax.tree.map(lambda x: x * 0.5 + 1, tiny_variables())
    other = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    path = tmp_path / "run"
    save_checkpoint(path, 7, {"G": g, "G_ema": g_ema, "D": other, "step": np.int32(7)},
                    {"generator": generator_config(G)})
    _, full = load_checkpoint(path)
    for which, saved in (("G_ema", g_ema), ("G", g)):
        _, variables = load_generator(path, which=which)
        assert jax.tree.structure(variables) == jax.tree.structure(full[which])
        assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(variables),
                                                                     jax.tree.leaves(saved), strict=True))
    with pytest.raises(CheckpointError, match=r"no 'G_avg' entry \(has \['D', 'G', 'G_ema', 'step'\]\)"):
        load_generator(path, which="G_avg")
