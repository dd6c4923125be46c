"""VGG16 feature extractor and LPIPS-style distance against the PyTorch reference fixture (make_vgg16_fixture.py)."""

import os
import pickle
import zipfile

import jax
import numpy as np
import pytest

from stylegan_jax.metrics import vgg16 as V
from tests.conftest import FIXTURES

TORCHVISION = FIXTURES / "vgg16_small_torchvision.pth"
TORCHSCRIPT = FIXTURES / "vgg16_small_torchscript.pt"


@pytest.fixture(scope="module")
def ref(load_fixture):
    with np.load(FIXTURES / "vgg16_ref.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def activations_fn():
    return jax.jit(V.vgg16_activations)


@pytest.mark.parametrize("path", [TORCHVISION, TORCHSCRIPT], ids=["torchvision_pth", "nvidia_torchscript"])
def test_activations_match_the_reference(path, ref, activations_fn):
    v = V.load_vgg16_weights(path)
    assert tuple(int(b.shape[0]) for b in (v["params"][f"conv{i}_1"]["bias"] for i in range(1, 6))) == tuple(
        ref["widths"])
    acts = activations_fn(v, ref["images"])
    for name, a in zip(V.LAYERS, acts, strict=True):
        want = ref[f"out/{name}"].transpose(0, 2, 3, 1)
        assert a.shape == want.shape, name
        np.testing.assert_allclose(np.asarray(a), want, atol=2e-5 * np.abs(want).max(), rtol=0, err_msg=name)


def test_distance_matches_the_reference(ref):
    a, b = ref["images"][0::2], ref["images"][1::2]
    tv = V.load_vgg16_weights(TORCHVISION)  # plain ImageNet weights: unit LPIPS weights
    np.testing.assert_allclose(np.asarray(V.perceptual_distance(tv, a, b)), ref["dist/ones"], rtol=1e-5)
    nv = V.load_vgg16_weights(TORCHSCRIPT)  # NVIDIA's layout carries learned per-channel weights
    for k in range(5):
        np.testing.assert_array_equal(np.asarray(nv["lpips"][V.LAYERS[k]]), ref[f"lin/{k}"])
    d = np.asarray(V.perceptual_distance(nv, a, b))
    np.testing.assert_allclose(d, ref["dist/lin"], rtol=1e-5)
    # The embedding form (target computed once, as the projector does) gives the same numbers.
    ea, eb = V.lpips_embedding(nv, a), V.lpips_embedding(nv, b)
    np.testing.assert_allclose(np.sum(np.square(np.asarray(ea - eb)), axis=1), d, rtol=1e-5)
    assert float(V.perceptual_distance(nv, a, a)[0]) == 0.0


def test_npz_state_dict_loads(ref, tmp_path):
    path = tmp_path / "vgg.npz"
    np.savez(path, **{k[3:]: v for k, v in ref.items() if k.startswith("sd/")})
    v = V.load_vgg16_weights(path)
    np.testing.assert_array_equal(np.asarray(v["params"]["conv3_2"]["kernel"]),
                                  ref["sd/features.12.weight"].transpose(2, 3, 1, 0))


def test_bad_files_name_the_problem(ref, tmp_path):
    with pytest.raises(V.VGG16WeightsError, match="not found.*never downloads"):
        V.load_vgg16_weights(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"hello")
    with pytest.raises(V.VGG16WeightsError, match="junk.pth"):
        V.load_vgg16_weights(junk)
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(TORCHSCRIPT.read_bytes()[:5000])
    with pytest.raises(V.VGG16WeightsError, match="cut.pt"):
        V.load_vgg16_weights(truncated)
    # A pickle that asks for code is refused before anything runs.
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(os.system))
    with pytest.raises(V.VGG16WeightsError, match="refusing.*system"):
        V.load_vgg16_weights(evil)
    evil_ts = tmp_path / "evil.pt"  # the same inside a TorchScript-shaped archive
    with zipfile.ZipFile(evil_ts, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps(os.system))
        zf.writestr("evil/constants.pkl", pickle.dumps(()))
    with pytest.raises(V.VGG16WeightsError, match="refusing.*system"):
        V.load_vgg16_weights(evil_ts)
    sd = {k[3:]: v for k, v in ref.items() if k.startswith("sd/")}
    wrong = dict(sd)
    wrong["features.2.weight"] = wrong["features.2.weight"][:, :2]
    with pytest.raises(V.VGG16WeightsError, match="features.2.weight.*shape"):
        V.vgg16_variables_from_state_dict(wrong)
    with pytest.raises(V.VGG16WeightsError, match="missing key 'features.28"):
        V.vgg16_variables_from_state_dict({k: v for k, v in sd.items() if not k.startswith("features.28")})
    with pytest.raises(V.VGG16WeightsError, match="not a VGG16 state dict"):
        V.vgg16_variables_from_state_dict({"conv.weight": np.zeros((1,))})
    # torchvision's classifier is ignored, other extras are not.
    V.vgg16_variables_from_state_dict({**sd, "classifier.0.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(V.VGG16WeightsError, match="unknown key 'extra'"):
        V.vgg16_variables_from_state_dict({**sd, "extra": np.zeros((2,), np.float32)})


def test_torchscript_code_is_never_read(tmp_path):
    """Replacing the archive's TorchScript code by garbage changes nothing: only data.pkl and data/ are read."""
    out = tmp_path / "vgg16.pt"
    with zipfile.ZipFile(TORCHSCRIPT) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            body = src.read(info)
            dst.writestr(info, b"raise SystemExit('ran code')" if "/code/" in info.filename else body)
    a, b = V.load_vgg16_weights(out), V.load_vgg16_weights(TORCHSCRIPT)
    np.testing.assert_array_equal(np.asarray(a["params"]["conv5_3"]["kernel"]),
                                  np.asarray(b["params"]["conv5_3"]["kernel"]))
