"""Sampling from StyleGAN2 generators: noise modes, reproducible random noise, no input transform, the CLI."""

import functools

import jax
import numpy as np
import PIL.Image
import pytest

from stylegan_jax.apis.sampling import FunctionCache, Sampler, architecture_key
from stylegan_jax.checkpoint import load_generator, save_checkpoint
from stylegan_jax.cli import main
from stylegan_jax.models import generator_config
from stylegan_jax.networks.stylegan2 import StyleGAN2Generator
from tests.test_generate_cli import check_style_mix_and_interpolation
from tests.test_generate_cli import generate as run_generate
from tests.test_sampling import abstract_variables

RES = 16
BATCH = 4  # every compiled call below uses chunks of 4 rows, so each function compiles once


def tiny_sg2(res: int = RES) -> StyleGAN2Generator:
    # At 16 px: blocks 4, 8, 16, six ws, five noise inputs.
    return StyleGAN2Generator(z_dim=16, w_dim=16, img_resolution=res, channel_base=8 * res, channel_max=16,
                              mapping_layers=2)


@functools.cache
def tiny_sg2_variables(res: int = RES) -> dict:
    """Random variables of tiny_sg2(res) without compiling G.init (eval_shape only traces). Every noise_strength
    is a normal draw, not the 0 of an init, so that the noise modes give different images."""
    G = tiny_sg2(res)
    variables = abstract_variables(G)
    strengths = [x for p, x in jax.tree_util.tree_flatten_with_path(variables["params"])[0]
                 if "noise_strength" in jax.tree_util.keystr(p)]
    assert len(strengths) == G.num_ws - 1 and all(x.shape == () and float(x) != 0 for x in strengths)
    return variables


# This module's compiled functions, shared by its Samplers and in-process generate calls.
FUNCTIONS = FunctionCache()


@pytest.fixture(scope="module")
def sampler():
    return Sampler(tiny_sg2(), tiny_sg2_variables(), batch_size=BATCH, cache=FUNCTIONS)


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return np.abs(a.astype(int) - b.astype(int)).max() > 2


def test_noise_modes(sampler):
    seeds = [0, 1, 2, 3]
    const = sampler.images(seeds)
    assert const.shape == (4, RES, RES, 3) and const.dtype == np.uint8
    np.testing.assert_array_equal(sampler.images(seeds, noise_mode="const"), const)  # const is the default
    none = sampler.images(seeds, noise_mode="none")
    random = sampler.images(seeds, noise_mode="random")
    for i in range(4):
        assert differ(const[i], none[i]) and differ(const[i], random[i]) and differ(none[i], random[i]), i
    with pytest.raises(ValueError, match="noise_mode"):
        sampler.images(seeds, noise_mode="zero")


def test_random_noise_is_reproducible_per_seed(sampler):
    imgs = sampler.images([0, 1, 2, 3, 4, 5], noise_mode="random")  # a full chunk and a padded one
    np.testing.assert_array_equal(sampler.images([0, 1, 2, 3, 4, 5], noise_mode="random"), imgs)
    # An image does not depend on its batch neighbours, position or chunk.
    again = sampler.images([5, 4, 0, 2], noise_mode="random")
    np.testing.assert_array_equal(again, imgs[[5, 4, 0, 2]])

    # Same ws, different noise seeds: different noise; the documented rule, row by row.
    ws = np.repeat(sampler.ws_from_seeds([7]), 4, axis=0)
    out = sampler.synthesize(ws, noise_mode="random", noise_seeds=[1, 2, 1, 2**32 - 1], to_uint8=False)
    np.testing.assert_array_equal(out[0], out[2])
    assert np.abs(out[0] - out[1]).max() > 1e-2 and np.abs(out[1] - out[3]).max() > 1e-2
    G, v = sampler.G, sampler.variables
    ref = jax.jit(lambda v, w, key: G.apply(v, w, noise_mode="random", rngs={"noise": key}, method=G.synthesize))
    for row, seed in ((1, 2), (3, 2**32 - 1)):
        np.testing.assert_allclose(out[row], ref(v, ws[:1], jax.random.key(seed))[0], atol=1e-5)
    # Default noise seeds: the row numbers.
    np.testing.assert_array_equal(sampler.synthesize(ws, noise_mode="random"),
                                  sampler.synthesize(ws, noise_mode="random", noise_seeds=[0, 1, 2, 3]))
    with pytest.raises(ValueError, match="one seed per image"):
        sampler.synthesize(ws, noise_mode="random", noise_seeds=[1, 2])
    with pytest.raises(ValueError, match="out of range"):
        sampler.synthesize(ws, noise_mode="random", noise_seeds=[2**32, 0, 0, 0])


def test_translate_rotate_are_refused(sampler):
    seeds = [0, 1, 2, 3]
    np.testing.assert_array_equal(sampler.images(seeds, translate=(0, 0), rotate=0), sampler.images(seeds))
    for kwargs in (dict(translate=(0.1, 0.0)), dict(rotate=12.0)):
        with pytest.raises(ValueError, match="StyleGAN2 generator, which has no input transform"):
            sampler.images(seeds, **kwargs)
        with pytest.raises(ValueError, match="no input transform"):
            sampler.style_mix([0], [1], range(3), **kwargs)
        with pytest.raises(ValueError, match="no input transform"):
            sampler.interpolate([0, 1], frames_per_transition=2, **kwargs)
    ws = sampler.ws_from_seeds(seeds)
    with pytest.raises(ValueError, match="no input transform"):
        sampler.synthesize(ws, transform=np.diag([2.0, 2.0, 1.0]))
    np.testing.assert_array_equal(sampler.synthesize(ws, transform=np.eye(3)), sampler.images(seeds))


def test_style_mix_and_interpolation_with_noise(sampler):
    rows, cols = [0, 1], [2, 3, 4]
    for mode in ("const", "random"):
        row_imgs, col_imgs, mixed = sampler.style_mix(rows, cols, range(3), noise_mode=mode)
        np.testing.assert_array_equal(row_imgs, sampler.images(rows + [5, 6], noise_mode=mode)[:2])
        np.testing.assert_array_equal(col_imgs, sampler.images(cols + [5], noise_mode=mode)[:3])
        assert mixed.shape == (2, 3, RES, RES, 3)
    # Every layer from the column: the column's ws with the row's noise. (Requests of 4 rows: no new compile.)
    _, col_all, mixed_all = sampler.style_mix([0], [2], range(sampler.num_ws), noise_mode="random")
    with_row_noise = sampler.synthesize(sampler.ws_from_seeds([2, 2, 2, 2]), noise_mode="random", noise_seeds=0)
    assert np.abs(mixed_all[0, 0].astype(int) - with_row_noise[0].astype(int)).max() <= 1
    assert differ(mixed_all[0, 0], col_all[0])

    frames = sampler.interpolate([0, 1], frames_per_transition=3, noise_mode="random")
    assert frames.shape == (4, RES, RES, 3)
    np.testing.assert_array_equal(frames[0], sampler.images([0, 1, 2, 3], noise_mode="random")[0])
    # The last keyframe keeps the first seed's noise (no flicker), so it is seed 1 with seed 0's noise.
    last = sampler.synthesize(sampler.ws_from_seeds([1, 1, 1, 1]), noise_mode="random", noise_seeds=0)
    np.testing.assert_array_equal(frames[3], last[0])
    const = sampler.interpolate([0, 1], frames_per_transition=3)
    np.testing.assert_array_equal(const[3], sampler.images([1, 0, 2, 3])[0])


# ----------------------------------------------------------------------------------------------------------------
# stylegan-jax generate on a StyleGAN2 checkpoint.


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("sg2") / "run"
    save_checkpoint(path, 3, {"G_ema": tiny_sg2_variables()}, {"generator": generator_config(tiny_sg2())})
    return path


def generate(*args: str) -> int:
    return run_generate(*args, cache=FUNCTIONS)


def test_checkpoint_round_trip_keeps_the_compiled_functions(ckpt, sampler):
    # The rebuilt generator equals the saved one (integer filter taps stay integers), so a Sampler of the
    # checkpoint finds the functions compiled for the in-memory model instead of compiling them again.
    G, _ = load_generator(ckpt)
    assert G == sampler.G and architecture_key(G) == architecture_key(sampler.G)
    assert G.resample_filter == (1, 3, 3, 1)
    assert Sampler.from_checkpoint(ckpt, batch_size=BATCH, cache=FUNCTIONS)._fns is sampler._fns


def read(path) -> np.ndarray:
    with PIL.Image.open(path) as im:
        return np.asarray(im)


def test_cli_noise_modes(ckpt, tmp_path):
    out = {}
    for name, extra in (("const", ()), ("none", ("--noise-mode", "none")), ("random", ("--noise-mode", "random")),
                        ("random2", ("--noise-mode", "random"))):
        assert generate("--ckpt", str(ckpt), "--seeds", "0-3", "--outdir", str(tmp_path / name), *extra) == 0
        out[name] = np.stack([read(tmp_path / name / f"seed{i:04d}.png") for i in range(4)])
    assert out["const"].shape == (4, RES, RES, 3)
    assert differ(out["const"], out["none"]) and differ(out["const"], out["random"])
    np.testing.assert_array_equal(out["random"], out["random2"])  # the same command, the same pictures
    ref = Sampler.from_checkpoint(ckpt, batch_size=BATCH, cache=FUNCTIONS).images([0, 1, 2, 3], noise_mode="random")
    np.testing.assert_array_equal(out["random"], ref)


def test_cli_style_mix_and_interpolation(ckpt, tmp_path):
    check_style_mix_and_interpolation(generate, ckpt, tmp_path, RES, "--noise-mode", "random")


def test_cli_translate_is_refused(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert generate("--ckpt", str(ckpt), "--seeds", "0", "--translate=0.1,0", "--outdir", str(out)) == 1
    err = capsys.readouterr().err
    assert "translate / rotate need a StyleGAN3 generator" in err and "Traceback" not in err
    assert generate("--ckpt", str(ckpt), "--style-mix", "--rows", "0", "--cols", "1", "--rotate", "5",
                    "--outdir", str(out)) == 1
    assert "no input transform" in capsys.readouterr().err
    assert not out.exists()


def test_cli_equivariance_metrics_are_refused(ckpt, capsys):
    assert main(["metrics", "--ckpt", str(ckpt), "--metrics", "eqt_int", "--num", "2", "--batch-size", "2"]) == 1
    err = capsys.readouterr().err
    assert "need a StyleGAN3 generator" in err and "StyleGAN2Generator" in err and "Traceback" not in err
