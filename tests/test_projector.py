"""``stylegan-jax project`` and the projection API on tiny checkpoints written in tmp_path.

The default suite runs one short projection through the command line (one compile) plus cheap checks; the
recovery tests (PSNR in W+ and W), StyleGAN2 with its noise images on a conditional model, and the VGG16 distance
on StyleGAN3-R are marked slow.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from stylegan_jax.apis import projector as P
from stylegan_jax.apis.sampling import Sampler
from stylegan_jax.checkpoint import save_checkpoint
from stylegan_jax.cli import main
from stylegan_jax.models import build_generator, generator_config
from tests.conftest import FIXTURES
from tests.test_sampling import abstract_variables

RES = 32
TARGET_SEED = 5  # the target is the image of this seed's w: a random w, not the starting point w_avg


def tiny(cfg: str = "t", c_dim: int = 0):
    kw = dict(num_layers=4) if cfg != "stylegan2" else {}
    return build_generator(cfg, z_dim=16, w_dim=16, c_dim=c_dim, img_resolution=RES, channel_base=512,
                           channel_max=16, mapping_layers=2, **kw)


def tiny_variables(G, seed: int = 0) -> dict:
    """Random variables (no G.init compile). The mapping weights are scaled by 1 / lr_multiplier (100), as an
    initialisation would, so that w depends on z: with raw N(0, 1) draws every z maps to nearly the same w."""
    if G.c_dim == 0 and G.has_input_transform:
        v = abstract_variables(G, seed)
    else:  # StyleGAN2 has scalar parameters (noise strengths), conditional models a label input
        shapes = jax.eval_shape(G.init, jax.random.PRNGKey(0), jnp.zeros((1, G.z_dim)), jnp.zeros((1, G.c_dim)))
        rng = np.random.RandomState(seed)
        v = jax.tree_util.tree_map_with_path(
            lambda path, s: np.eye(3, dtype=np.float32) if path[-1].key == "transform" else (
                np.ones(s.shape, np.float32) if path[-1].key == "magnitude_ema" else
                np.asarray(rng.randn(*s.shape), np.float32)), shapes)
    for layer in v["params"]["mapping"].values():
        if "weight" in layer:
            layer["weight"] = layer["weight"] / G.mapping_lr_multiplier
    return v


def write_ckpt(path, G, v):
    save_checkpoint(path, 0, {"G_ema": v}, {"generator": generator_config(G)})
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    G = tiny()
    v = tiny_variables(G)
    ckpt = write_ckpt(tmp_path_factory.mktemp("proj") / "ckpt", G, v)
    s = Sampler(G, v, batch_size=1)
    target = s.images([TARGET_SEED])[0]
    return ckpt, s, target


def project(*args: str) -> int:
    return main(["project", "--no-progress", *args])


# ----------------------------------------------------------------------------------------------------------------
# Pure pieces.


def test_schedules():
    cfg = P.ProjectionConfig(num_steps=1000)
    lr = [float(P.schedules(i, cfg)[0]) for i in (0, 25, 50, 500, 750, 875, 1000)]
    assert lr[0] == 0 and abs(lr[1] - 0.5) < 1e-6 and lr[2] == lr[3] == lr[4] == 1.0  # ramp-up over 5%
    assert abs(lr[5] - 0.5) < 1e-6 and lr[6] == 0  # cosine ramp-down over the last 25%
    noise = [float(P.schedules(i, cfg)[1]) for i in (0, 375, 750, 900)]
    assert noise[0] == 1 and abs(noise[1] - 0.25) < 1e-6 and noise[2] == noise[3] == 0  # (1 - t / 0.75)^2


def test_noise_regularizer_penalises_correlated_noise():
    white = jax.random.normal(jax.random.key(0), (32, 32))
    smooth = jnp.asarray(np.repeat(np.repeat(np.random.RandomState(0).randn(8, 8), 4, 0), 4, 1), jnp.float32)
    smooth = (smooth - smooth.mean()) / smooth.std()
    assert float(P.noise_regularizer({"a": white})) < 1e-2 < float(P.noise_regularizer({"a": smooth}))
    # Scales 32, 16, 8: two terms each.
    x = jnp.ones((32, 32))
    assert float(P.noise_regularizer({"a": x})) == pytest.approx(6.0)


def test_pixel_distance_is_the_sum_of_per_scale_mse():
    rng = np.random.RandomState(0)
    a, b = rng.rand(1, 3, 32, 32) * 255, rng.rand(1, 3, 32, 32) * 255
    d = P.pixel_distance()
    got = float(np.sum(np.square(np.asarray(d.embed(None, a) - d.embed(None, b)))))
    want, x, y = 0.0, a / 255, b / 255
    for _ in range(3):  # 32, 16, 8
        want += np.mean(np.square(x - y))
        x = x.reshape(1, 3, x.shape[2] // 2, 2, x.shape[3] // 2, 2).mean(axis=(3, 5))
        y = y.reshape(1, 3, y.shape[2] // 2, 2, y.shape[3] // 2, 2).mean(axis=(3, 5))
    assert got == pytest.approx(want, rel=1e-5)


def test_load_target_resizes_with_a_message(tmp_path):
    path = tmp_path / "wide.png"
    PIL.Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(path)
    img, msg = P.load_target(path, RES)
    assert img.shape == (RES, RES, 3) and img.dtype == np.uint8
    assert "50x40" in msg and "centre-cropped to 40x40" in msg and f"resized to {RES}x{RES}" in msg
    exact = tmp_path / "exact.png"
    PIL.Image.fromarray(np.zeros((RES, RES, 3), np.uint8)).save(exact)
    assert P.load_target(exact, RES)[1] is None
    grey, _ = P.load_target(exact, RES, channels=1)
    assert grey.shape == (RES, RES, 1)


def test_unreadable_targets_and_latent_files(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="cannot read .*notes.png.* as an image"):
        P.load_target(bad, RES)
    with pytest.raises(ValueError, match="not found"):
        P.load_target(tmp_path / "missing.png", RES)
    np.savez(tmp_path / "x.npz", z=np.zeros(3))
    with pytest.raises(ValueError, match="no 'w' array"):
        P.load_projected_w(tmp_path / "x.npz")
    P.save_projected_w(tmp_path / "w.npz", np.zeros((6, 16)))
    with pytest.raises(ValueError, match="this generator takes \\[8, 16\\]"):
        P.load_projected_w(tmp_path / "w.npz", 8, 16)
    w, noise = P.load_projected_w(tmp_path / "w.npz", 6, 16)
    assert w.shape == (6, 16) and noise == {}


def test_config_errors():
    for bad in (dict(space="z"), dict(num_steps=0), dict(lr_rampup_length=0.0), dict(w_avg_samples=1)):
        with pytest.raises(ValueError):
            P.ProjectionConfig(**bad).validate()


# ----------------------------------------------------------------------------------------------------------------
# The command, end to end (one compile).


@pytest.fixture(scope="module")
def cli_run(model, tmp_path_factory):
    ckpt, s, target = model
    tmp = tmp_path_factory.mktemp("cli")
    # The target file is the model's own image at twice the size: the command resizes it (with a message).
    big = tmp / "target.png"
    PIL.Image.fromarray(target).resize((2 * RES, 2 * RES), PIL.Image.NEAREST).save(big)
    out = tmp / "out"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = project("--ckpt", str(ckpt), "--target", str(big), "--outdir", str(out), "--space", "w+",
                     "--steps", "80", "--w-avg-samples", "2000")
    return rc, buf.getvalue(), out


def test_cli_writes_the_projection(cli_run, model):
    rc, stdout, out = cli_run
    _, s, target = model
    assert rc == 0, stdout
    assert f"is {2 * RES}x{2 * RES}, the model outputs {RES}x{RES}: resized to {RES}x{RES}" in stdout
    assert "distance: pixel + multi-scale distance" in stdout and "--vgg16" in stdout
    with PIL.Image.open(out / "projected.png") as im:
        assert im.size == (RES, RES)
        proj = np.asarray(im)
    with PIL.Image.open(out / "compare.png") as im:
        assert im.size == (2 * RES, RES)
        np.testing.assert_array_equal(np.asarray(im)[:, RES:], proj)
    w, noise = P.load_projected_w(out / "projected_w.npz", s.num_ws, s.w_dim)
    assert noise == {}  # StyleGAN3: no noise inputs
    summary = json.loads((out / "projection.json").read_text())
    # The distance falls over the run, and the projection is much closer to the target than the start (w_avg).
    assert summary["final_distance"] < summary["first_distance"] / 5
    w_avg, _ = P.w_stats(s, 2000)
    start = s.synthesize(np.broadcast_to(w_avg, (1, s.num_ws, s.w_dim)))[0]
    assert P.psnr(proj, target) > P.psnr(start, target) + 6


def test_generate_renders_the_projected_w(cli_run, model, tmp_path):
    _, _, out = cli_run
    ckpt, s, _ = model
    gen = tmp_path / "gen"
    assert main(["generate", "--ckpt", str(ckpt), "--ws", str(out / "projected_w.npz"), "--outdir", str(gen),
                 "--batch-size", "1"]) == 0
    a = np.asarray(PIL.Image.open(gen / "projected_w.png")).astype(int)
    b = np.asarray(PIL.Image.open(out / "projected.png")).astype(int)
    assert np.abs(a - b).max() <= 1  # the same latent through the Sampler's compiled synthesis
    moved = tmp_path / "moved"
    assert main(["generate", "--ckpt", str(ckpt), "--ws", str(out / "projected_w.npz"), "--outdir", str(moved),
                 "--translate=0.1,0", "--rotate", "10", "--batch-size", "1"]) == 0
    c = np.asarray(PIL.Image.open(moved / "projected_w.png")).astype(int)
    assert c.shape == b.shape and np.abs(c - b).mean() > 1
    video = tmp_path / "v.gif"
    assert main(["generate", "--ckpt", str(ckpt), "--ws", str(out / "projected_w.npz"), "--seeds", "1",
                 "--interpolate", "--frames", "2", "--video", str(video), "--batch-size", "1"]) == 0
    with PIL.Image.open(video) as im:
        assert im.n_frames == 3
        first = np.asarray(im.convert("RGB")).astype(int)
    # The first keyframe is the projection (GIF stores a 256-colour palette per frame: a few levels of error).
    assert np.abs(first - b).max() <= 4 and np.abs(first - b).mean() < 1


def test_cli_errors(model, tmp_path, capsys):
    ckpt, _, _ = model
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    assert project("--ckpt", str(ckpt), "--target", str(bad), "--outdir", str(tmp_path / "o")) == 1
    err = capsys.readouterr().err
    assert "cannot read" in err and "notes.png" in err and "as an image" in err
    assert project("--ckpt", str(ckpt), "--target", str(tmp_path / "none.png"), "--outdir", str(tmp_path)) == 1
    assert "not found" in capsys.readouterr().err
    assert project("--ckpt", str(ckpt), "--target", str(bad), "--outdir", str(tmp_path), "--steps", "0") == 1
    assert "num_steps must be >= 1" in capsys.readouterr().err
    assert project("--ckpt", str(ckpt), "--target", str(bad), "--outdir", str(tmp_path), "--vgg16",
                   str(tmp_path / "vgg.pth")) == 1
    assert "VGG16 weights file" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Recovery (slow: a compile and a few hundred steps per space).


@pytest.mark.slow
@pytest.mark.parametrize("space,min_psnr", [("w+", 30.0), ("w", 24.0)])
def test_projection_recovers_a_generated_image(model, space, min_psnr):
    _, s, target = model
    w_avg, _ = P.w_stats(s, 10000)
    start = s.synthesize(np.broadcast_to(w_avg, (1, s.num_ws, s.w_dim)))[0]
    assert P.psnr(start, target) < 20  # the target is far from the starting point
    r = P.project(s, target, config=P.ProjectionConfig(num_steps=300, space=space), seed=1)
    assert r.compiles == 1
    assert P.psnr(r.image, target) >= min_psnr
    d = r.distances
    assert d[-30:].mean() < d[:30].mean() / 10 and r.final_distance < d[0] / 10  # falling over the run
    if space == "w":
        np.testing.assert_array_equal(r.w, np.broadcast_to(r.w[0], r.w.shape))
    np.testing.assert_array_equal(s.synthesize(r.w[None])[0], r.image)


@pytest.mark.extended  # beyond CI's time budget: run with -m extended
@pytest.mark.slow
def test_stylegan2_conditional_projection_optimises_noise(tmp_path, capsys):
    G = tiny("stylegan2", c_dim=3)
    v = tiny_variables(G)
    ckpt = write_ckpt(tmp_path / "sg2", G, v)
    s = Sampler(G, v, batch_size=1)
    target_path = tmp_path / "t.png"
    PIL.Image.fromarray(s.images([TARGET_SEED], class_idx=1)[0]).save(target_path)
    out = tmp_path / "out"
    assert project("--ckpt", str(ckpt), "--target", str(target_path), "--outdir", str(out)) == 1
    assert "conditional (c_dim=3)" in capsys.readouterr().err
    assert project("--ckpt", str(ckpt), "--target", str(target_path), "--outdir", str(out), "--class", "1",
                   "--steps", "100", "--w-avg-samples", "2000", "--video") == 0
    stdout = capsys.readouterr().out
    n_noise = len(P.noise_buffers(v))
    assert n_noise > 0 and f"optimising {n_noise} noise images" in stdout
    w, noise = P.load_projected_w(out / "projected_w.npz", s.num_ws, s.w_dim)
    assert set(noise) == set(P.noise_buffers(v))
    for arr in noise.values():  # re-normalised after every step
        assert abs(arr.mean()) < 1e-4 and abs(arr.std() - 1) < 1e-3
    summary = json.loads((out / "projection.json").read_text())
    assert summary["final_distance"] < summary["first_distance"] / 3
    assert (out / "projection.mp4").stat().st_size > 0
    # generate --ws uses the stored noise images: the same picture as projected.png.
    gen = tmp_path / "gen"
    assert main(["generate", "--ckpt", str(ckpt), "--ws", str(out / "projected_w.npz"), "--class", "1",
                 "--outdir", str(gen), "--batch-size", "1"]) == 0
    a = np.asarray(PIL.Image.open(gen / "projected_w.png")).astype(int)
    b = np.asarray(PIL.Image.open(out / "projected.png")).astype(int)
    assert np.abs(a - b).max() <= 1
    assert main(["generate", "--ckpt", str(ckpt), "--ws", str(out / "projected_w.npz"), "--class", "1",
                 "--outdir", str(gen), "--rotate", "5"]) == 1  # StyleGAN2: no input transform
    assert "StyleGAN3" in capsys.readouterr().err


@pytest.mark.extended  # beyond CI's time budget: run with -m extended
@pytest.mark.slow
def test_vgg16_distance_on_stylegan3_r(tmp_path, capsys):
    G = tiny("r")
    v = tiny_variables(G)
    ckpt = write_ckpt(tmp_path / "r", G, v)
    s = Sampler(G, v, batch_size=1)
    target_path = tmp_path / "t.png"
    PIL.Image.fromarray(s.images([TARGET_SEED])[0]).save(target_path)
    out = tmp_path / "out"
    weights = FIXTURES / "vgg16_small_torchscript.pt"  # the reduced random-weight VGG16 of test_vgg16
    assert project("--ckpt", str(ckpt), "--target", str(target_path), "--outdir", str(out), "--steps", "100",
                   "--w-avg-samples", "2000", "--vgg16", str(weights)) == 0
    stdout = capsys.readouterr().out
    assert "distance: VGG16 perceptual distance (LPIPS-style, learned LPIPS weights)" in stdout
    summary = json.loads((out / "projection.json").read_text())
    assert summary["distance"] == "vgg16" and summary["final_distance"] < summary["first_distance"] / 2
