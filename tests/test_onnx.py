"""ONNX export: onnxruntime output == JAX output (and the official PyTorch outputs), graph validity, metadata,
dynamic batch, the psi input, and the ``stylegan-jax export`` command.

Exports are slow (~10-30 s each on 2 CPU cores), so each fixture model is exported once per test session by
:func:`exported_model`, which ``tests/test_inference.py`` and ``tests/test_server.py`` reuse.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax2onnx")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from stylegan_jax.apis.export_onnx import (  # noqa: E402
    DEFAULT_OPSET,
    ExportError,
    export_generator,
    read_metadata,
)
from stylegan_jax.convert import convert_generator, strip_prefix  # noqa: E402
from stylegan_jax.networks.stylegan3 import Generator  # noqa: E402
from tests.conftest import FIXTURES, Fixture  # noqa: E402

ATOL = 1e-4
MODELS = {"t": "sg3t_64.npz", "r": "sg3r_64_cond.npz"}


@dataclasses.dataclass
class Exported:
    path: Path
    G: Generator
    variables: dict
    fx: Fixture
    cutoff: int | None


_CACHE: dict[str, Exported] = {}


def exported_model(tmp_path_factory: pytest.TempPathFactory, name: str) -> Exported:
    """The fixture generator ``name`` ('t': StyleGAN3-T 64px unconditional, 'r': StyleGAN3-R 64px with c_dim 5
    and truncation cutoff 8), converted from official weights and exported once per session.

    'T' goes through the real command line (checkpoint on disk -> ``stylegan-jax export``)."""
    if name in _CACHE:
        return _CACHE[name]
    fx = Fixture(FIXTURES / MODELS[name])
    G, variables = convert_generator(strip_prefix(fx, "G/"), fx.meta["G_kwargs"])
    cutoff = fx.meta.get("truncation_cutoff")
    out = tmp_path_factory.mktemp(f"onnx_{name}") / f"sg3{name}.onnx"
    if name == "t":
        from stylegan_jax.checkpoint import save_checkpoint
        from stylegan_jax.cli import main
        from stylegan_jax.models import generator_config

        ckpt = out.parent / "ckpt"
        save_checkpoint(ckpt, 1, {"G_ema": variables}, {"generator": generator_config(G)})
        assert main(["export", "--ckpt", str(ckpt), "--out", str(out), "--no-verify"]) == 0
    else:
        export_generator(G, variables, out, truncation_cutoff=cutoff)
    _CACHE[name] = Exported(out, G, variables, fx, cutoff)
    return _CACHE[name]


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request, tmp_path_factory) -> Exported:
    return exported_model(tmp_path_factory, request.param)


_SESSIONS: dict[Path, ort.InferenceSession] = {}


def session_of(m: Exported) -> ort.InferenceSession:
    if m.path not in _SESSIONS:
        _SESSIONS[m.path] = ort.InferenceSession(str(m.path), providers=["CPUExecutionProvider"])
    return _SESSIONS[m.path]


def run_onnx(m: Exported, z: np.ndarray, c: np.ndarray | None, psi: float) -> np.ndarray:
    feed = {"z": z.astype(np.float32), "psi": np.asarray(psi, np.float32)}
    if m.G.c_dim:
        feed["c"] = c.astype(np.float32)
    return session_of(m).run(["img"], feed)[0]


_JAX_FORWARD: dict[int, object] = {}
JAX_BATCH = 4


def run_jax(m: Exported, z: np.ndarray, c: np.ndarray | None, psi: float) -> np.ndarray:
    """The JAX forward pass, always compiled for a batch of 4 (one compilation per model instead of one per batch
    size, ~10 s each on 2 cores); smaller batches are padded with extra latents and cut back. Samples never
    interact in the generator, so row i is the JAX output for z[i]."""
    key = id(m)
    if key not in _JAX_FORWARD:
        _JAX_FORWARD[key] = jax.jit(lambda v, z, c, psi: m.G.apply(v, z, c, psi, m.cutoff))
    n = z.shape[0]
    assert n <= JAX_BATCH
    pad_z, pad_c = inputs(m, JAX_BATCH - n, seed=99)
    z = np.concatenate([z, pad_z])
    c = None if c is None else np.concatenate([c, pad_c])
    return np.asarray(_JAX_FORWARD[key](m.variables, z, c, jnp.float32(psi)))[:n]


def inputs(m: Exported, n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    rng = np.random.RandomState(seed)
    z = rng.randn(n, m.G.z_dim).astype(np.float32)
    c = np.eye(m.G.c_dim, dtype=np.float32)[rng.randint(0, m.G.c_dim, n)] if m.G.c_dim else None
    return z, c


# ---- numerics ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, pytest.param(4, marks=pytest.mark.slow)])  # batch 4: ~20 s more
def test_onnx_matches_jax(model: Exported, batch: int, record_property) -> None:
    z, c = inputs(model, batch, seed=batch)
    for psi in (1.0, 0.5):
        got, want = run_onnx(model, z, c, psi), run_jax(model, z, c, psi)
        assert got.shape == want.shape == (batch, 3, 64, 64) and got.dtype == np.float32
        err = float(np.max(np.abs(got - want)))
        record_property(f"max_abs_psi{psi}", err)
        print(f"[onnx vs jax] {model.path.name} batch {batch} psi {psi}: max abs {err:.3e}")
        assert err <= ATOL, (model.path.name, batch, psi, err)
    # psi is a real input, not a constant: truncation changes the picture.
    assert np.max(np.abs(run_onnx(model, z, c, 0.5) - run_onnx(model, z, c, 1.0))) > 20 * ATOL


def test_onnx_matches_official_outputs(model: Exported) -> None:
    fx = model.fx
    z = fx["in/z"]
    c = fx["in/c"] if model.G.c_dim else None
    for out, psi in (("out/img", 1.0), ("out/img_trunc", fx.meta["truncation_psi"])):
        err = float(np.max(np.abs(run_onnx(model, z, c, psi) - fx[out])))
        print(f"[onnx vs official] {model.path.name} {out} (psi {psi}): max abs {err:.3e}")
        assert err <= ATOL, (out, err)


def test_dynamic_batch(model: Exported) -> None:
    z, c = inputs(model, 5, seed=7)
    whole = run_onnx(model, z, c, 0.7)
    assert whole.shape == (5, 3, 64, 64)
    for n in (1, 2):
        part = run_onnx(model, z[:n], None if c is None else c[:n], 0.7)
        np.testing.assert_allclose(part, whole[:n], atol=1e-5)  # samples do not interact
    s = session_of(model)
    assert s.get_inputs()[0].shape[0] == s.get_outputs()[0].shape[0] == "N"


# ---- graph and metadata -------------------------------------------------------------------------------------------


def test_checker_and_interface(model: Exported) -> None:
    onnx.checker.check_model(str(model.path), full_check=True)
    proto = onnx.load(str(model.path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [DEFAULT_OPSET]
    s = session_of(model)
    ins = {i.name: (i.shape, i.type) for i in s.get_inputs()}
    expected = {"z": (["N", model.G.z_dim], "tensor(float)"), "psi": ([], "tensor(float)")}
    if model.G.c_dim:
        expected["c"] = (["N", model.G.c_dim], "tensor(float)")
    assert ins == expected
    assert [(o.name, o.shape, o.type) for o in s.get_outputs()] == [("img", ["N", 3, 64, 64], "tensor(float)")]


def test_metadata(model: Exported) -> None:
    meta = read_metadata(model.path)
    G = model.G
    assert (meta["z_dim"], meta["c_dim"], meta["w_dim"], meta["img_resolution"], meta["img_channels"],
            meta["num_ws"]) == (G.z_dim, G.c_dim, G.w_dim, 64, 3, G.num_ws)
    assert meta["truncation_cutoff"] == model.cutoff
    assert meta["opset"] == DEFAULT_OPSET and meta["stylegan_jax_version"] and meta["jax2onnx_version"]
    assert meta["generator_config"]["kwargs"]["synthesis_kwargs"] == {
        k: v for k, v in G.synthesis_kwargs.items() if k != "impl"}
    assert meta["inputs"] == (["z", "c", "psi"] if G.c_dim else ["z", "psi"])
    # Rebuilding from the stored config gives the same architecture.
    from stylegan_jax.models import generator_from_config

    assert generator_from_config(meta["generator_config"]).schedule() == G.schedule()
    json.dumps(meta)  # all JSON-serialisable (what /info serves)


# ---- errors -----------------------------------------------------------------------------------------------------


def test_export_argument_errors(tmp_path) -> None:
    from stylegan_jax.models import build_generator

    G = build_generator("t", z_dim=16, w_dim=16, img_resolution=32, channel_base=512, channel_max=16,
                        mapping_layers=2)
    fake = {"params": {}, "ema": {}, "buffers": {}}
    with pytest.raises(ExportError, match="opset"):
        export_generator(G, fake, tmp_path / "g.onnx", opset=11)
    with pytest.raises(ExportError, match="unconditional"):
        export_generator(G, fake, tmp_path / "g.onnx", with_labels=True)
    with pytest.raises(ExportError, match="'buffers'"):
        export_generator(G, {"params": {}, "ema": {}}, tmp_path / "g.onnx")
    Gc = build_generator("t", z_dim=16, w_dim=16, c_dim=3, img_resolution=32, channel_base=512, channel_max=16,
                         mapping_layers=2)
    with pytest.raises(ExportError, match="conditional"):
        export_generator(Gc, fake, tmp_path / "g.onnx", with_labels=False)
    assert not (tmp_path / "g.onnx").exists()


def test_export_cli_reports_a_missing_checkpoint(tmp_path, capsys) -> None:
    from stylegan_jax.cli import main

    missing = tmp_path / "nope"
    assert main(["export", "--ckpt", str(missing), "--out", str(tmp_path / "g.onnx")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err


def test_reference_resampling_exports_with_stock_jax2onnx() -> None:
    """upfirdn2d's reference path (zero insertion, crops, padding; separable and 2-D filters) converts through the
    public ``jax2onnx.to_onnx`` with a symbolic batch, and onnxruntime computes what JAX computes."""
    from jax2onnx import to_onnx

    from stylegan_jax.ops.upfirdn2d import upfirdn2d

    f1 = np.array([1.0, 3.0, 3.0, 1.0], np.float32) / 8
    f2 = np.outer(f1, np.array([1.0, 2.0, 1.0], np.float32) / 4)

    def fn(x):
        a = upfirdn2d(x, f1, up=2, padding=[-1, 2, 3, -2], gain=4, impl="ref")
        b = upfirdn2d(x, f2, up=[3, 2], down=[1, 2], padding=[2, -1, -2, 1], impl="ref")
        return a.sum(axis=(1, 2)) + b.mean(axis=(1, 2)), a

    proto = to_onnx(fn, [jax.ShapeDtypeStruct(("N", 5, 6, 3), jnp.float32)], opset=DEFAULT_OPSET)
    onnx.checker.check_model(proto, full_check=True)
    assert not {n.op_type for n in proto.graph.node} & {"ConvTranspose"}
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = np.random.RandomState(n).randn(n, 5, 6, 3).astype(np.float32)
        got = sess.run(None, {sess.get_inputs()[0].name: x})
        for g, w in zip(got, jax.jit(fn)(x), strict=True):
            np.testing.assert_allclose(g, np.asarray(w), rtol=1e-6, atol=1e-6)


def _tiny_generator(cfg: str, c_dim: int) -> tuple[object, dict]:
    from stylegan_jax.models import build_generator

    G = build_generator(cfg, z_dim=8, w_dim=8, c_dim=c_dim, img_resolution=16, channel_base=256, channel_max=8,
                        mapping_layers=1, num_layers=3)
    # Random values in the structure of G.init (eval_shape only traces: an eager init costs ~30 s on 2 cores);
    # magnitude_ema is an input gain's square, so it stays positive.
    shapes = jax.eval_shape(lambda k: G.init(k, jnp.zeros((1, 8)), jnp.zeros((1, c_dim)) if c_dim else None),
                            jax.random.PRNGKey(0))
    rng = np.random.RandomState(c_dim)

    def draw(path, s):
        x = np.asarray(rng.randn(*s.shape), np.float32)
        return np.abs(x) + 0.5 if "magnitude_ema" in jax.tree_util.keystr(path) else 0.5 * x

    return G, jax.tree_util.tree_map_with_path(draw, dict(shapes))


def test_exports_in_two_threads_both_match_jax(tmp_path) -> None:
    """Two exports at once from two threads (a StyleGAN3-T and a conditional StyleGAN3-R): both graphs are
    valid and match their own JAX generator."""
    import threading

    from stylegan_jax.apis.export_onnx import verify_export

    models = {"t": _tiny_generator("t", 0), "r": _tiny_generator("r", 3)}
    paths, errors = {}, []
    barrier = threading.Barrier(len(models))

    def export(name: str) -> None:
        try:
            barrier.wait()
            G, variables = models[name]
            paths[name] = export_generator(G, variables, tmp_path / f"{name}.onnx")
        except BaseException as e:  # reported in the main thread
            errors.append(e)

    threads = [threading.Thread(target=export, args=(name,)) for name in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for name, (G, variables) in models.items():
        assert read_metadata(paths[name])["c_dim"] == G.c_dim
        err = verify_export(G, variables, paths[name], batch_sizes=(2,))
        assert err <= ATOL, (name, err)


def test_stylegan2_export_bakes_in_const_noise(tmp_path, capsys) -> None:
    """A StyleGAN2 checkpoint through ``stylegan-jax export`` (noise_mode 'const' in the graph), then served."""
    from stylegan_jax.apis.inference import InferenceSession
    from stylegan_jax.checkpoint import save_checkpoint
    from stylegan_jax.cli import main
    from stylegan_jax.models import generator_config
    from tests.test_stylegan2_sampling import tiny_sg2, tiny_sg2_variables

    RES = 32  # the smallest size the default watermark payload fits
    G, variables = tiny_sg2(RES), tiny_sg2_variables(RES)  # non-zero noise strengths: the noise mode shows
    ckpt, out = tmp_path / "ckpt", tmp_path / "sg2.onnx"
    save_checkpoint(ckpt, 0, {"G_ema": variables}, {"generator": generator_config(G)})
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out)]) == 0  # verifies against JAX at 1e-4
    assert "onnxruntime vs JAX" in capsys.readouterr().out
    meta = read_metadata(out)
    assert meta["noise_mode"] == "const" and meta["generator_config"]["class"] == "stylegan2.Generator"
    assert meta["inputs"] == ["z", "psi"] and meta["num_ws"] == G.num_ws

    z = np.random.RandomState(0).randn(3, G.z_dim).astype(np.float32)
    session = InferenceSession(out)
    got = session.generate_float(z, psi=0.7)
    modes = jax.jit(lambda v, z: [G.apply(v, z, None, 0.7, noise_mode=m) for m in ("const", "none")])(variables, z)
    np.testing.assert_allclose(got, np.asarray(modes[0]), atol=ATOL)
    assert np.abs(got - np.asarray(modes[1])).max() > 1e-2  # the noise is in the graph
    assert session.generate_seed(1, psi=0.7).shape == (1, RES, RES, 3)

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from PIL import Image

    from stylegan_jax.apis.server import create_app

    response = TestClient(create_app(session)).get("/generate?seed=1&psi=0.7")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (RES, RES)
