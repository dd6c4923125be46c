"""Sampling API: seed convention, transforms (against the official fixture), style mixing, interpolation, video."""

import functools
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from stylegan_jax.apis.postprocessing import denormalize
from stylegan_jax.apis.sampling import (
    FunctionCache,
    Sampler,
    image_grid,
    make_transform,
    parse_range,
    save_video,
    show,
    slerp,
    z_from_seeds,
)
from stylegan_jax.convert import convert_generator, strip_prefix
from stylegan_jax.models import build_generator

RES = 32
BATCH = 4  # every compiled call below uses chunks of 4 rows, so each function compiles once


def tiny_generator(c_dim: int = 0):
    return build_generator("t", z_dim=16, w_dim=16, c_dim=c_dim, img_resolution=RES, channel_base=512,
                           channel_max=16, mapping_layers=2)


def abstract_variables(G, seed: int = 0):
    """Random variables of the right structure without compiling G.init (eval_shape only traces), for any
    generator: normal draws (scalars too, e.g. StyleGAN2's noise strengths), except StyleGAN3's input transform
    (identity) and magnitude EMAs (positive), so the generator output is finite."""
    shapes = jax.eval_shape(G.init, jax.random.PRNGKey(0), jnp.zeros((1, G.z_dim)), jnp.zeros((1, G.c_dim)))
    rng = np.random.RandomState(seed)

    def fill(path, s):
        name = path[-1].key
        if name == "transform":
            return np.eye(3, dtype=np.float32)
        if name == "magnitude_ema":
            return np.ones(s.shape, np.float32)
        return np.asarray(rng.randn(*s.shape), np.float32)  # randn() of no shape is a Python float

    return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.cache
def tiny_variables(c_dim: int = 0) -> dict:
    """Variables of tiny_generator(c_dim) as NumPy (cached: shared with test_generate_cli)."""
    variables = abstract_variables(tiny_generator(c_dim))  # no G.init compile: the slowest step on 2 cores
    # w_avg is random too (not the zeros of an init), so that truncation and slerp around it are exercised.
    assert np.abs(variables["ema"]["mapping"]["w_avg"]).min() > 0
    return variables


@pytest.fixture(scope="module")
def sampler():
    return Sampler(tiny_generator(), tiny_variables(), batch_size=BATCH)


def test_function_cache_is_the_owners():
    G, v = tiny_generator(), tiny_variables()
    own, other = Sampler(G, v), Sampler(G, v)
    assert own._fns is not other._fns  # no cache shared behind the caller's back
    cache = FunctionCache(max_entries=2)
    a, b = Sampler(G, v, cache=cache), Sampler(G, {**v}, batch_size=2, cache=cache)
    assert a._fns is b._fns and a.cache is cache and len(cache) == 1  # one architecture, one set of functions
    assert Sampler(tiny_generator(c_dim=3), abstract_variables(tiny_generator(c_dim=3)), cache=cache)._fns \
        is not a._fns
    built = []
    assert cache.get(G, "x", lambda: built.append(1) or "x") == "x" and len(cache) == 2  # oldest entry dropped
    assert Sampler(G, v, cache=cache)._fns is not a._fns and built == [1]
    with pytest.raises(ValueError, match="max_entries"):
        FunctionCache(0)


# ----------------------------------------------------------------------------------------------------------------
# Pure helpers.


def test_z_from_seeds_is_the_official_convention():
    z = z_from_seeds([0, 7, 123456], 16)
    assert z.shape == (3, 16) and z.dtype == np.float64
    for row, seed in zip(z, [0, 7, 123456], strict=True):
        np.testing.assert_array_equal(row[None], np.random.RandomState(seed).randn(1, 16))
    np.testing.assert_array_equal(z_from_seeds("0-1", 16), z_from_seeds([0, 1], 16))
    with pytest.raises(ValueError, match="seed"):
        z_from_seeds([-1], 16)


def test_parse_range():
    assert parse_range("0-7,10") == [0, 1, 2, 3, 4, 5, 6, 7, 10]
    assert parse_range(" 3 , 5-6 ") == [3, 5, 6]
    assert parse_range(4) == [4]
    assert parse_range(range(2)) == [0, 1]
    for bad in ("", "1,,2", "a-b", "5-3", "-1"):
        with pytest.raises(ValueError):
            parse_range(bad)


def test_make_transform_is_the_inverse_of_the_official_forward_matrix(load_fixture):
    tx, ty, deg = 0.1, -0.05, 12.0
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    # gen_images.py's forward matrix is [[c, s, tx], [-s, c, ty]]; its inverse is [R^T | -R^T t].
    expected = np.array([[c, -s, -(c * tx - s * ty)],
                         [s, c, -(s * tx + c * ty)],
                         [0, 0, 1]])
    m = make_transform((tx, ty), deg)
    np.testing.assert_allclose(m, expected, atol=1e-12)
    np.testing.assert_allclose(m @ np.array([[c, s, tx], [-s, c, ty], [0, 0, 1]]), np.eye(3), atol=1e-12)
    np.testing.assert_allclose(make_transform((0, 0), 0), np.eye(3))
    # The fixture stores the matrix the official script wrote into synthesis.input.transform.
    fx = load_fixture("sg3t_64.npz")
    meta = fx.meta["transform"]
    np.testing.assert_allclose(make_transform(meta["translate"], meta["rotate_degrees"]), fx["in/transform"],
                               atol=1e-6)


def test_slerp_endpoints_and_norm():
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([0.0, 2.0, 0.0])
    np.testing.assert_array_equal(slerp(a, b, 0.0), a)
    np.testing.assert_allclose(slerp(a, b, 1.0), b, atol=1e-12)
    mid = slerp(a, a * 3, 0.5)  # parallel: falls back to lerp
    np.testing.assert_allclose(mid, a * 2)
    u = slerp(a, np.array([0.0, 1.0, 0.0]), 0.5)
    np.testing.assert_allclose(np.linalg.norm(u), 1.0)


def test_image_grid_and_show():
    imgs = np.stack([np.full((8, 6, 3), i * 40, np.uint8) for i in range(5)])
    g = image_grid(imgs, cols=2)
    assert g.size == (12, 24) and g.mode == "RGB"
    arr = np.asarray(g)
    assert arr[0, 6, 0] == 40 and arr[16, 0, 0] == 160 and arr[16, 6, 0] == 0  # row-major; empty cell black
    assert image_grid(imgs[:, :, :, :1]).mode == "L"
    assert show(imgs, cols=5).size == (30, 8)  # outside IPython: returned, nothing opened
    with pytest.raises(TypeError, match="uint8"):
        image_grid(imgs.astype(np.float32))


# ----------------------------------------------------------------------------------------------------------------
# Parity with the official fixture.


def test_translate_rotate_reproduce_official_img_transformed(load_fixture):
    fx = load_fixture("sg3t_64.npz")
    G, variables = convert_generator(strip_prefix(fx, "G/"), fx.meta["G_kwargs"])
    s = Sampler(G, variables, batch_size=2)
    t = fx.meta["transform"]
    out = s.images_from_z(fx["in/z"], psi=1.0, translate=t["translate"], rotate=t["rotate_degrees"],
                          noise_mode="const", to_uint8=False)
    ref = fx["out/img_transformed"]
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-4)
    u8 = s.images_from_z(fx["in/z"], translate=t["translate"], rotate=t["rotate_degrees"])
    assert u8.shape == (2, 64, 64, 3) and u8.dtype == np.uint8
    assert np.abs(u8.astype(int) - denormalize(ref).astype(int)).max() <= 1


# ----------------------------------------------------------------------------------------------------------------
# The tiny generator.


def test_same_seed_same_image_and_batching(sampler):
    imgs = sampler.images([3, 5, 3, 0, 1, 2], psi=0.7)  # 6 rows: a full chunk of 4 and a padded one
    assert imgs.shape == (6, RES, RES, 3) and imgs.dtype == np.uint8
    np.testing.assert_array_equal(imgs[0], imgs[2])
    assert not np.array_equal(imgs[0], imgs[1])
    again = sampler.images("0-2,3", psi=0.7)
    np.testing.assert_array_equal(again[:3], imgs[3:])
    np.testing.assert_array_equal(again[3], imgs[0])
    # psi changes the image; psi=1 is the untruncated path.
    assert not np.array_equal(sampler.images([0, 1, 2, 3], psi=1.0)[0], imgs[3])


def test_ws_from_seeds_truncation(sampler):
    ws1 = sampler.ws_from_seeds([0, 1, 2, 3])
    ws07 = sampler.ws_from_seeds([0, 1, 2, 3], psi=0.7)
    assert ws1.shape == (4, sampler.num_ws, 16)
    np.testing.assert_allclose(ws07, sampler.w_avg + 0.7 * (ws1 - sampler.w_avg), atol=1e-6)
    cut = sampler.ws_from_seeds([0, 1, 2, 3], psi=0.7, truncation_cutoff=3)
    np.testing.assert_allclose(cut[:, :3], ws07[:, :3], atol=1e-6)
    np.testing.assert_allclose(cut[:, 3:], ws1[:, 3:], atol=1e-6)  # separately compiled: ulp differences


def test_style_mixing_grid(sampler):
    rows, cols, styles = [0, 1], [2, 3, 4], range(0, 7)
    row_imgs, col_imgs, mixed = sampler.style_mix(rows, cols, styles)
    assert mixed.shape == (2, 3, RES, RES, 3)
    np.testing.assert_array_equal(row_imgs, sampler.images(rows + [5, 6])[:2])
    for i in range(2):
        for j in range(3):
            assert not np.array_equal(mixed[i, j], row_imgs[i]), (i, j)
            assert not np.array_equal(mixed[i, j], col_imgs[j]), (i, j)
    grid = sampler.style_mixing_grid(rows, cols, styles)
    assert grid.size == (4 * RES, 3 * RES)
    g = np.asarray(grid)
    assert not g[:RES, :RES].any()  # top-left empty
    np.testing.assert_array_equal(g[:RES, RES:2 * RES], col_imgs[0])
    np.testing.assert_array_equal(g[2 * RES:, :RES], row_imgs[1])
    np.testing.assert_array_equal(g[2 * RES:, 3 * RES:], mixed[1, 2])
    # Taking every layer from the column seed gives the column image.
    _, col_all, mixed_all = sampler.style_mix([0], [2, 3], range(sampler.num_ws))
    assert np.abs(mixed_all[0].astype(int) - col_all.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="col_styles"):
        sampler.style_mix([0], [1], [sampler.num_ws])


def test_noise_mode_is_accepted_and_ignored_by_stylegan3(sampler):
    assert not sampler.stylegan2
    seeds = [0, 1, 2, 3]
    base = sampler.images(seeds, psi=0.7)
    for mode in ("const", "random", "none"):
        np.testing.assert_array_equal(sampler.images(seeds, psi=0.7, noise_mode=mode), base)
    mixed = sampler.style_mix([0, 1], [2, 3, 4], range(0, 7))[2]
    np.testing.assert_array_equal(sampler.style_mix([0, 1], [2, 3, 4], range(0, 7), noise_mode="random")[2], mixed)
    with pytest.raises(ValueError, match="noise_mode"):
        sampler.images(seeds, noise_mode="zero")
    np.testing.assert_array_equal(sampler.input_transform((0.1, -0.05), 12.0), make_transform((0.1, -0.05), 12.0))


@pytest.mark.parametrize("kind", ["linear", "slerp"])
def test_interpolation(sampler, kind):
    frames = sampler.interpolate([0, 1, 2], frames_per_transition=3, kind=kind, psi=0.8)
    assert frames.shape == (7, RES, RES, 3) and frames.dtype == np.uint8
    keys = sampler.images([0, 1, 2, 3], psi=0.8)
    np.testing.assert_array_equal(frames[0], keys[0])
    np.testing.assert_array_equal(frames[3], keys[1])
    np.testing.assert_array_equal(frames[6], keys[2])
    assert not np.array_equal(frames[1], frames[0])
    if kind == "slerp":
        assert sampler.interpolate([0, 1], frames_per_transition=4, kind=kind, loop=True).shape[0] == 8


def test_gif_written_and_readable(sampler, tmp_path):
    frames = sampler.interpolate([0, 1], frames_per_transition=3)
    path = save_video(frames, tmp_path / "sub" / "lerp.gif", fps=10)
    with PIL.Image.open(path) as im:
        assert im.format == "GIF" and im.size == (RES, RES)
        assert im.n_frames == len(frames) == 4
        im.seek(0)
        first = np.asarray(im.convert("RGB"))
    # GIF is palettised: close to the frame, not exact.
    assert np.abs(first.astype(int) - frames[0].astype(int)).mean() < 8


def test_mp4_without_ffmpeg_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails even where it is installed
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(RuntimeError, match="pip install imageio imageio-ffmpeg"):
        save_video(frames, tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()
    with pytest.raises(ValueError, match="unsupported"):
        save_video(frames, tmp_path / "x.bmp")


def test_class_labels():
    G = tiny_generator(c_dim=3)
    s = Sampler(G, abstract_variables(G))
    np.testing.assert_array_equal(s.labels(2, 1), [[0, 1, 0], [0, 1, 0]])
    with pytest.raises(ValueError, match="conditional.*c_dim=3"):
        s.images([0])
    with pytest.raises(ValueError, match="out of range"):
        s.images([0], class_idx=3)
    unconditional = Sampler(tiny_generator(), abstract_variables(tiny_generator()))
    with pytest.warns(UserWarning, match="unconditional"):
        assert unconditional.labels(1, 2) is None
