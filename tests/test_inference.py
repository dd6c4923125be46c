"""InferenceSession: uint8 NHWC watermarked output, input validation, model loading errors.

Uses the fixture models exported once per session by ``tests/test_onnx.py`` (64x64 StyleGAN3-T unconditional,
64x64 StyleGAN3-R with 5 classes).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("jax2onnx")
pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from stylegan_jax.apis import postprocessing, watermark  # noqa: E402
from stylegan_jax.apis.inference import (  # noqa: E402
    PSI_RANGE,
    InferenceInputError,
    InferenceSession,
    ModelLoadError,
    latent_from_seed,
    one_hot,
    payload_bits,
)
from tests.test_onnx import exported_model  # noqa: E402

KEY = "test-inference-key"
PAYLOAD = b"\xa5\x0f\x3c"  # 24 bits


@pytest.fixture(scope="module")
def t_model(tmp_path_factory):
    return exported_model(tmp_path_factory, "t")


@pytest.fixture(scope="module")
def sess(t_model) -> InferenceSession:
    return InferenceSession(t_model.path, watermark_key=KEY, payload=PAYLOAD)


@pytest.fixture(scope="module")
def cond(tmp_path_factory) -> InferenceSession:
    return InferenceSession(exported_model(tmp_path_factory, "r").path, watermark_key=KEY, payload=PAYLOAD)


def z_of(n: int, seed: int = 0, z_dim: int = 64) -> np.ndarray:
    return np.random.RandomState(seed).randn(n, z_dim).astype(np.float32)


# ---- outputs ----------------------------------------------------------------------------------------------------


def test_session_describes_the_model(sess: InferenceSession, cond: InferenceSession) -> None:
    assert (sess.z_dim, sess.c_dim, sess.img_resolution, sess.img_channels) == (64, 0, 64, 3)
    assert (cond.z_dim, cond.c_dim, cond.img_resolution) == (64, 5, 64)
    info = sess.info()
    assert info["num_ws"] == 16 and info["psi_range"] == list(PSI_RANGE) and info["watermark"]["num_bits"] == 24
    text = json.dumps(info)
    assert KEY not in text  # the watermark key is a secret


def test_generate_returns_watermarked_uint8_nhwc(sess: InferenceSession) -> None:
    images = sess.generate(z_of(3), psi=0.7)
    assert images.shape == (3, 64, 64, 3) and images.dtype == np.uint8 and images.flags.c_contiguous
    bits = payload_bits(PAYLOAD)
    for img in images:
        det = watermark.detect(img, KEY, bits.size)
        assert det.present and np.array_equal(det.bits, bits), det.score
        assert not watermark.detect(img, "another key", bits.size).present
    # The mark is invisible: PSNR against the unmarked conversion of the same output stays >= 40 dB.
    plain = sess.generate(z_of(3), psi=0.7, watermark=False)
    mse = np.mean((images.astype(np.float64) - plain) ** 2)
    assert 0 < mse and 10 * np.log10(255**2 / mse) >= 40
    assert not watermark.detect(plain[0], KEY, bits.size).present


def test_generate_float_is_the_raw_model_output(sess: InferenceSession, t_model) -> None:
    fx = t_model.fx
    raw = sess.generate_float(fx["in/z"], psi=fx.meta["truncation_psi"])
    assert raw.dtype == np.float32 and raw.shape == (2, 3, 64, 64)
    np.testing.assert_allclose(raw, fx["out/img_trunc"], atol=1e-4)  # the official PyTorch output
    np.testing.assert_array_equal(sess.generate(fx["in/z"], psi=fx.meta["truncation_psi"], watermark=False),
                                  postprocessing.denormalize(raw))


def test_float64_and_float16_latents_are_cast(sess: InferenceSession) -> None:
    z = z_of(1)
    ref = sess.generate_float(z)
    np.testing.assert_array_equal(sess.generate_float(z.astype(np.float64)), ref)
    assert sess.generate_float(z.astype(np.float16)).shape == ref.shape
    assert sess.generate_float(z.tolist()).shape == ref.shape  # nested lists of floats are fine too


def test_psi_range_bounds_are_inclusive(sess: InferenceSession) -> None:
    for psi in (PSI_RANGE[0], PSI_RANGE[1], 0, np.float32(0.5), np.array(0.5)):
        assert sess.generate_float(z_of(1), psi=psi).shape == (1, 3, 64, 64)


def test_seed_convention_is_official(sess: InferenceSession) -> None:
    np.testing.assert_array_equal(latent_from_seed(42, 64), np.random.RandomState(42).randn(1, 64).astype(np.float32))
    np.testing.assert_array_equal(sess.generate_seed(42, psi=0.5), sess.generate(latent_from_seed(42, 64), psi=0.5))


def test_conditional_model(cond: InferenceSession) -> None:
    z = z_of(2, seed=3)
    c = one_hot([1, 4], 5)
    a = cond.generate(z, c, psi=0.5)
    assert a.shape == (2, 64, 64, 3) and a.dtype == np.uint8
    # Integer one-hot labels are accepted and mean the same thing.
    np.testing.assert_array_equal(cond.generate_float(z, c.astype(np.int64)), cond.generate_float(z, c))
    # The label matters.
    assert np.abs(cond.generate_float(z, one_hot([0, 0], 5)) - cond.generate_float(z, c)).max() > 1e-3
    assert cond.generate_seed(5, class_idx=2).shape == (1, 64, 64, 3)


# ---- input errors ---------------------------------------------------------------------------------------------------


BAD_Z = {
    "int dtype": (np.zeros((1, 64), np.int32), "floating"),
    "bool dtype": (np.zeros((1, 64), bool), "floating"),
    "strings": ([["a"] * 64], "floating"),
    "ragged": ([[0.0] * 64, [0.0] * 3], "z"),
    "1-D": (np.zeros(64, np.float32), r"z\[None\]"),
    "wrong width": (np.zeros((1, 63), np.float32), r"\(N, 64\)"),
    "empty batch": (np.zeros((0, 64), np.float32), "N >= 1"),
    "3-D": (np.zeros((1, 1, 64), np.float32), r"\(N, 64\)"),
    "NaN": (np.full((1, 64), np.nan, np.float32), "NaN"),
    "inf": (np.concatenate([np.zeros((1, 63)), [[np.inf]]], 1), "NaN/inf"),
    "None": (None, "floating"),
}


@pytest.mark.parametrize("case", sorted(BAD_Z))
def test_bad_z_is_rejected(sess: InferenceSession, case: str) -> None:
    z, match = BAD_Z[case]
    with pytest.raises(InferenceInputError, match=match):
        sess.generate(z)


@pytest.mark.parametrize("psi", [2.01, -1.5, 10, float("nan"), float("inf"), -float("inf"), "0.5", True, None,
                                 np.array([0.5, 0.5]), 1j])
def test_bad_psi_is_rejected(sess: InferenceSession, psi) -> None:
    with pytest.raises(InferenceInputError, match="psi"):
        sess.generate(z_of(1), psi=psi)


def test_input_errors_are_value_errors() -> None:
    assert issubclass(InferenceInputError, ValueError)


def test_labels_must_match_the_model(sess: InferenceSession, cond: InferenceSession) -> None:
    with pytest.raises(InferenceInputError, match="unconditional"):
        sess.generate(z_of(1), c=one_hot(0, 5))
    with pytest.raises(InferenceInputError, match="conditional"):
        cond.generate(z_of(1))
    with pytest.raises(InferenceInputError, match=r"c must have shape \(2, 5\)"):
        cond.generate(z_of(2), c=one_hot([0], 5))
    with pytest.raises(InferenceInputError, match=r"c must have shape"):
        cond.generate(z_of(1), c=np.zeros((1, 4), np.float32))
    with pytest.raises(InferenceInputError, match="NaN"):
        cond.generate(z_of(1), c=np.full((1, 5), np.nan))
    with pytest.raises(InferenceInputError, match=r"\[0, 4\]"):
        cond.generate_seed(0, class_idx=5)
    with pytest.raises(InferenceInputError, match="class"):
        cond.generate_seed(0)
    with pytest.raises(InferenceInputError, match="unconditional"):
        sess.generate_seed(0, class_idx=1)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "3", True])
def test_bad_seed_is_rejected(seed) -> None:
    with pytest.raises(InferenceInputError, match="seed"):
        latent_from_seed(seed, 64)


# ---- model loading ----------------------------------------------------------------------------------------------


def test_missing_model_names_the_path(tmp_path) -> None:
    path = tmp_path / "missing.onnx"
    with pytest.raises(ModelLoadError, match="missing.onnx.*not found"):
        InferenceSession(path)
    with pytest.raises(ModelLoadError, match="not a file"):
        InferenceSession(tmp_path)


def test_corrupt_models_are_reported(tmp_path, t_model) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.RandomState(0).bytes(4096))
    with pytest.raises(ModelLoadError, match="garbage.onnx"):
        InferenceSession(garbage)
    truncated = tmp_path / "truncated.onnx"
    data = t_model.path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated.onnx"):
        InferenceSession(truncated)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty.onnx"):
        InferenceSession(empty)


def test_foreign_onnx_model_is_refused(tmp_path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    with pytest.raises(ModelLoadError, match="not a stylegan-jax generator"):
        InferenceSession(path)


def test_watermark_settings_are_checked_at_load(t_model) -> None:
    with pytest.raises(ValueError, match="too few"):
        InferenceSession(t_model.path, payload=np.ones(400, np.uint8))  # 400 bits do not fit 64x64
    with pytest.raises(ValueError, match="key"):
        InferenceSession(t_model.path, watermark_key=1.5)


def test_payload_conversion() -> None:
    assert payload_bits(b"\x80\x01").tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert payload_bits([1, 0, True]).tolist() == [1, 0, 1]
    for bad in (b"", [2], [[0, 1]]):
        with pytest.raises(ValueError):
            payload_bits(bad)
