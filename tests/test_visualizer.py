"""``stylegan-jax visualize``: the API over real HTTP (uvicorn on 127.0.0.1) against tiny orbax checkpoints, pixel
parity with ``stylegan-jax generate``, activations, errors, admission control, watermarked downloads, the CLI.

The browser side is in tests/test_visualizer_browser.py."""

from __future__ import annotations

import base64
import io
import math
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jax
import numpy as np
import PIL.Image
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from stylegan_jax.apis import visualizer, watermark  # noqa: E402
from stylegan_jax.apis.inference import payload_bits  # noqa: E402
from stylegan_jax.apis.postprocessing import denormalize  # noqa: E402
from stylegan_jax.apis.sampling import FunctionCache, Sampler  # noqa: E402
from stylegan_jax.apis.visualizer import RenderSettings, create_app  # noqa: E402
from stylegan_jax.checkpoint import save_checkpoint  # noqa: E402
from stylegan_jax.cli import main  # noqa: E402
from stylegan_jax.models import build_generator, generator_config  # noqa: E402
from tests.conftest import LiveServer as Server  # noqa: E402  (also used by test_visualizer_browser)
from tests.test_sampling import abstract_variables  # noqa: E402

RES = 32
STEPS = (10, 20)
TIMEOUT = httpx.Timeout(120.0)  # the first render of a shape compiles
KEY = "test-visualizer-key"
# This module's compiled functions, handed to every app and generate call below (one compile per architecture).
FUNCTIONS = FunctionCache(max_entries=64)


def tiny_conditional_generator():
    # Four synthesis layers (plus input and ToRGB) compile in a few seconds; three classes exercise the labels.
    return build_generator("t", z_dim=16, w_dim=16, c_dim=3, img_resolution=RES, channel_base=512, channel_max=16,
                           mapping_layers=2, num_layers=4)


def build_workdir(root: Path) -> Path:
    """A training-like workdir with checkpoints/10 and checkpoints/20 (different random weights)."""
    G = tiny_conditional_generator()
    workdir = root / "run"
    for step in STEPS:
        save_checkpoint(workdir / "checkpoints", step, {"G_ema": abstract_variables(G, seed=step)},
                        {"generator": generator_config(G)})
    return workdir


def decode_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(PIL.Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def run_generate(command: str, outdir: Path, cache: FunctionCache | None = None) -> np.ndarray:
    """Run the page's ``stylegan-jax generate`` command in-process (its --outdir replaced) and return the image it
    writes for the page: the seed's PNG, or the bottom-right cell of style_mix.png. ``cache``: compiled functions
    to reuse (the app's)."""
    argv = shlex.split(command)
    assert argv[:2] == ["stylegan-jax", "generate"], command
    i = argv.index("--outdir")
    argv[i + 1] = str(outdir)
    assert main(argv[1:], function_cache=cache) == 0, command
    if "--style-mix" in argv:
        grid = np.asarray(PIL.Image.open(outdir / "style_mix.png"))
        return grid[RES:, RES:]
    seed = int(argv[argv.index("--seeds") + 1])
    return np.asarray(PIL.Image.open(outdir / f"seed{seed:04d}.png"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return build_workdir(tmp_path_factory.mktemp("vis"))


@pytest.fixture(scope="module")
def server(serve, workdir) -> Server:
    return serve(create_app(workdir, functions=FUNCTIONS, max_concurrency=1, max_queue=2))


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        yield c


def render(client: httpx.Client, **params) -> dict:
    r = client.get("/api/render", params=params)
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------------------------------------------------------------


def test_info_page_and_steps(client: httpx.Client, workdir: Path) -> None:
    info = client.get("/api/info").json()
    assert info["steps"] == list(STEPS) and info["step"] == STEPS[-1] and info["default_step"] == STEPS[-1]
    assert (info["input_transform"], info["noise_inputs"], info["c_dim"], info["z_dim"],
            info["img_resolution"]) == (True, False, 3, 16, RES)
    assert info["ckpt"] == str(workdir.absolute()) and info["watermark"]["downloads"] is False
    names = [layer["name"] for layer in info["layers"]]
    sched = tiny_conditional_generator().schedule()
    assert names == ["input"] + [spec.name for spec in sched.layers]
    assert info["layers"][-1]["shape"] == [RES, RES, 3]
    assert info["layers"][1]["shape"] == [sched.layers[0].out_size, sched.layers[0].out_size,
                                          sched.layers[0].out_channels]
    assert client.get("/api/info", params={"step": 10}).json()["step"] == 10
    assert client.get("/api/steps").json()["steps"] == list(STEPS)
    page = client.get("/")
    assert page.status_code == 200 and 'id="image"' in page.text and "/static/app.js" in page.text
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "/api/render?" in js.text


def test_images_equal_what_generate_writes(client: httpx.Client, tmp_path: Path) -> None:
    cases = [
        dict(seed=3, psi=0.7, **{"class": 1}, tx=0.1, ty=-0.05, rotate=12),
        dict(seed=3, psi=0.7, **{"class": 1}),
        dict(seed=5, **{"class": 2}, step=10, rotate=-90),
        dict(seed=3, psi=0.7, **{"class": 1}, mix=8, mix_lo=2, mix_hi=4),
    ]
    shown = []
    for i, params in enumerate(cases):
        r = render(client, **params)
        img = decode_data_url(r["image"])
        assert img.shape == (RES, RES, 3) and img.dtype == np.uint8
        assert "writes this image exactly" in r["command_note"]
        ref = run_generate(r["command"], tmp_path / f"case{i}", FUNCTIONS)
        np.testing.assert_array_equal(img, ref, err_msg=r["command"])
        shown.append(img)
    # Every control changed the picture (transform, step + seed, mixing).
    for a in range(len(shown)):
        for b in range(a + 1, len(shown)):
            assert not np.array_equal(shown[a], shown[b]), (cases[a], cases[b])
    cmd = render(client, seed=3, psi=0.7, **{"class": 1}, tx=0.1, ty=-0.05, rotate=12)["command"]
    assert "--step 20 --seeds 3 --psi 0.7 --class 1 --translate=0.1,-0.05 --rotate 12 " in cmd


def test_fractional_seed_interpolates_in_w(client: httpx.Client, workdir: Path) -> None:
    whole = decode_data_url(render(client, seed=3, **{"class": 0})["image"])
    np.testing.assert_array_equal(decode_data_url(render(client, seed="3.0", **{"class": 0})["image"]), whole)
    r = render(client, seed=3.25, **{"class": 0}, rotate=5)
    assert "fractional" in r["command_note"] and "--seeds 3 " in r["command"]
    s = Sampler.from_checkpoint(workdir, step=STEPS[-1], cache=FUNCTIONS)
    ws = s.ws_from_seeds([3, 4], class_idx=0).astype(np.float64)
    ref = s.synthesize((0.75 * ws[:1] + 0.25 * ws[1:]).astype(np.float32), rotate=5)[0]
    np.testing.assert_array_equal(decode_data_url(r["image"]), ref)
    assert not np.array_equal(ref, s.images([3], class_idx=0, rotate=5)[0])
    assert not np.array_equal(ref, s.images([4], class_idx=0, rotate=5)[0])


def test_layer_activations(client: httpx.Client, workdir: Path) -> None:
    s = Sampler.from_checkpoint(workdir, step=STEPS[-1], cache=FUNCTIONS)
    layers = visualizer.synthesis_layers(s)
    torgb, (h, w, c) = layers[-1]
    st = RenderSettings(step=STEPS[-1], seed=4.0, psi=0.5, class_idx=2, translate=(0.05, 0.0), rotate=30.0)
    act = visualizer.layer_activation(s, dataclass_replace(st, layer=torgb))
    assert act.shape == (h, w, c) == (RES, RES, 3)
    # The ToRGB activations, times the synthesis output scale, are the image (up to float rounding).
    image = visualizer.render_image(s, st)
    scale = s.G.synthesis_kwargs["output_scale"] if "output_scale" in (s.G.synthesis_kwargs or {}) else 0.25
    again = denormalize(np.transpose(act * scale, (2, 0, 1))[None])[0]
    assert np.abs(again.astype(int) - image.astype(int)).max() <= 1
    # Through the API: a channel, and the RMS over channels, of a layer with margins.
    name, shape = layers[2]
    r = render(client, seed=4, psi=0.5, **{"class": 2}, tx=0.05, rotate=30, layer=name, channel=3)
    a = r["activation"]
    assert a["layer"] == name and a["shape"] == list(shape) and a["channel"] == 3
    pic = decode_data_url(a["image"])
    assert pic.shape == shape[:2] and pic.std() > 0
    raw = visualizer.layer_activation(s, dataclass_replace(st, layer=name))[..., 3]
    assert math.isclose(a["max"], float(raw.max()), rel_tol=1e-4, abs_tol=1e-5)
    rms = render(client, seed=4, psi=0.5, **{"class": 2}, tx=0.05, rotate=30, layer=name, channel="rms")
    assert rms["activation"]["channel"] is None and rms["activation"]["min"] >= 0
    np.testing.assert_array_equal(decode_data_url(rms["image"]), decode_data_url(r["image"]))  # image unchanged


def dataclass_replace(st: RenderSettings, **kw) -> RenderSettings:
    import dataclasses

    return dataclasses.replace(st, **kw)


@pytest.mark.parametrize("params,status,needle", [
    ({}, 400, "seed is required"),
    ({"seed": -1, "class": 0}, 400, "seed must be in [0, 4294967295]"),
    ({"seed": "abc", "class": 0}, 400, "seed must be a number"),
    ({"seed": 1}, 400, "class (0..2) is required"),
    ({"seed": 1, "class": 3}, 400, "class must be in [0, 2]"),
    ({"seed": 1, "class": 0, "psi": 5}, 400, "psi must be in [-1, 2]"),
    ({"seed": 1, "class": 0, "rotate": "nan"}, 400, "rotate must be in"),
    ({"seed": 1, "class": 0, "step": 15}, 400, "step 15 is not a checkpoint"),
    ({"seed": 1, "class": 0, "bogus": 1}, 400, "unknown parameter(s) ['bogus']"),
    ({"seed": 1, "class": 0, "layer": "nope"}, 400, "layer 'nope' is not a synthesis layer"),
    ({"seed": 1, "class": 0, "layer": "input", "channel": 99}, 400, "channel must be in [0, 15]"),
    ({"seed": 1, "class": 0, "mix": 2, "mix_lo": 4, "mix_hi": 2}, 400, "mix_lo (4) must not exceed mix_hi (2)"),
    ({"seed": 1, "class": 0, "mix": 2, "mix_hi": 6}, 400, "mix_hi must be in [0, 5]"),
])
def test_bad_parameters_are_4xx_with_a_message(client: httpx.Client, params, status, needle) -> None:
    for route in ("/api/render", "/api/download"):
        r = client.get(route, params=params)
        assert r.status_code == status, (route, r.text)
        assert needle in r.json()["error"], r.json()


def test_unknown_routes_and_info_errors(client: httpx.Client) -> None:
    assert client.get("/nope").status_code == 404 and "error" in client.get("/nope").json()
    r = client.get("/api/info", params={"step": 3})
    assert r.status_code == 400 and "step 3 is not a checkpoint" in r.json()["error"]


def test_busy_server_answers_503(workdir: Path, monkeypatch) -> None:
    gate, entered = threading.Event(), threading.Event()
    real = visualizer.render_image

    def gated(s, st):
        entered.set()
        assert gate.wait(60)
        return real(s, st)

    monkeypatch.setattr(visualizer, "render_image", gated)
    with Server(create_app(workdir, functions=FUNCTIONS, max_concurrency=1, max_queue=0)) as srv, \
            httpx.Client(base_url=srv.url, timeout=TIMEOUT) as c:
        results = {}
        first = threading.Thread(target=lambda: results.setdefault("first", c.get(
            "/api/render", params={"seed": 11, "class": 0})))
        first.start()
        assert entered.wait(60)
        busy = c.get("/api/render", params={"seed": 12, "class": 0})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "busy" in busy.json()["error"]
        assert c.get("/api/download", params={"seed": 12, "class": 0}).status_code == 503
        assert c.get("/healthz").json()["in_flight"] == 1  # health stays answered while a render runs
        gate.set()
        first.join(60)
        assert results["first"].status_code == 200
        health = c.get("/healthz").json()
        assert health["rejected"] == 2 and health["served"] == 1 and health["in_flight"] == 0


def test_downloads_carry_the_watermark_when_keyed(workdir: Path, client: httpx.Client) -> None:
    params = {"seed": 6, "class": 1, "psi": 0.7}
    plain = client.get("/api/download", params=params)
    assert plain.status_code == 200 and plain.headers["x-watermark-bits"] == "0"
    assert 'filename="seed0006_step20.png"' in plain.headers["content-disposition"]
    shown = decode_data_url(render(client, **params)["image"])
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(io.BytesIO(plain.content))), shown)
    with Server(create_app(workdir, functions=FUNCTIONS, watermark_key=KEY, payload=b"SG3J")) as srv, \
            httpx.Client(base_url=srv.url, timeout=TIMEOUT) as c:
        assert c.get("/api/info").json()["watermark"] == {"downloads": True, "num_bits": 32}
        page = decode_data_url(c.get("/api/render", params=params).json()["image"])
        np.testing.assert_array_equal(page, shown)  # the page shows generate's image either way
        marked = c.get("/api/download", params=params)
        assert marked.status_code == 200 and marked.headers["x-watermark-bits"] == "32"
        img = np.asarray(PIL.Image.open(io.BytesIO(marked.content)))
    assert not np.array_equal(img, shown)
    found = watermark.detect(img, KEY, 32)
    assert found.present and np.array_equal(found.bits, payload_bits(b"SG3J"))
    assert not watermark.detect(shown, KEY, 32).present


# ---------------------------------------------------------------------------------------------------------------------
# StyleGAN2: noise modes, no input transform; checkpoints appearing while the visualizer runs.


@pytest.fixture(scope="module")
def sg2_workdir(tmp_path_factory) -> Path:
    from tests.test_stylegan2_sampling import tiny_sg2, tiny_sg2_variables

    workdir = tmp_path_factory.mktemp("vis_sg2") / "run"
    save_checkpoint(workdir / "checkpoints", 1, {"G_ema": tiny_sg2_variables()}, {"generator": generator_config(
        tiny_sg2())})
    return workdir


def test_stylegan2_noise_modes_and_new_checkpoints(sg2_workdir: Path, tmp_path: Path) -> None:
    from tests.test_stylegan2_sampling import tiny_sg2, tiny_sg2_variables

    with Server(create_app(sg2_workdir, functions=FUNCTIONS)) as srv, \
            httpx.Client(base_url=srv.url, timeout=TIMEOUT) as c:
        info = c.get("/api/info").json()
        assert info["input_transform"] is False and info["noise_inputs"] is True and info["steps"] == [1]
        names = [layer["name"] for layer in info["layers"]]
        assert names[:3] == ["b4.conv1", "b4.torgb", "b8.conv0"] and names[-1] == "b16.torgb"
        r = c.get("/api/render", params={"seed": 2, "rotate": 10})
        assert r.status_code == 400 and "StyleGAN3" in r.json()["error"]
        imgs = {}
        for mode in ("const", "random", "none"):
            extra = {"layer": "b8.conv1"} if mode == "random" else {}  # activations with the image's own noise
            out = c.get("/api/render", params={"seed": 2, "noise": mode, **extra}).json()
            assert f"--noise-mode {mode}" in out["command"]
            if extra:
                assert out["activation"]["shape"] == [8, 8, 16]
            imgs[mode] = decode_data_url(out["image"])
            np.testing.assert_array_equal(imgs[mode], run_generate(out["command"], tmp_path / mode, FUNCTIONS))
        assert not np.array_equal(imgs["const"], imgs["random"]) and not np.array_equal(imgs["const"], imgs["none"])
        # A checkpoint written while the visualizer runs (a training run saving) is listed and renders.
        variables = dict(tiny_sg2_variables())
        variables["ema"] = jax.tree.map(lambda x: x + 1, variables["ema"])  # another truncation centre
        save_checkpoint(sg2_workdir / "checkpoints", 2, {"G_ema": variables}, {"generator": generator_config(
            tiny_sg2())})
        assert c.get("/api/steps").json()["steps"] == [1, 2]
        new = c.get("/api/render", params={"seed": 2, "step": 2, "psi": 0.5})
        old = c.get("/api/render", params={"seed": 2, "step": 1, "psi": 0.5})
        assert new.status_code == old.status_code == 200
        assert not np.array_equal(decode_data_url(new.json()["image"]), decode_data_url(old.json()["image"]))


# ---------------------------------------------------------------------------------------------------------------------
# The command.


def test_command_errors(tmp_path: Path, capsys) -> None:
    assert main(["visualize", "--ckpt", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["visualize", "--ckpt", str(tmp_path), "--max-concurrency", "0"]) == 2
    assert "--max-concurrency" in capsys.readouterr().err


@pytest.mark.slow  # a fresh process importing JAX: ~10 s of CPU
def test_visualize_command_serves(workdir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "-m", "stylegan_jax.cli", "visualize", "--ckpt", str(workdir),
                             "--port", str(port), "--no-warmup", "--watermark-key", KEY],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "visualize did not start"
                time.sleep(0.3)
        assert r.status_code == 200 and r.json()["steps"] == list(STEPS) and r.json()["watermark"]["downloads"]
        assert 'id="image"' in httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}" in out and "ssh -L" in out


def test_diverged_checkpoint_is_reported_not_shown(tmp_path: Path) -> None:
    """A training checkpoint whose weights went non-finite: the page gets a 500 naming the problem, no image."""
    G = tiny_conditional_generator()
    variables = jax.tree.map(lambda x: np.full_like(x, np.nan), abstract_variables(G))
    save_checkpoint(tmp_path / "run" / "checkpoints", 7, {"G_ema": variables}, {"generator": generator_config(G)})
    with Server(create_app(tmp_path / "run", functions=FUNCTIONS)) as srv, \
            httpx.Client(base_url=srv.url, timeout=TIMEOUT) as c:
        r = c.get("/api/render", params={"seed": 1, "class": 0})
        assert r.status_code == 500 and "render failed" in r.json()["error"] and "NaN" in r.json()["error"]
        assert c.get("/healthz").json()["in_flight"] == 0
