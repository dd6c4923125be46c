"""``stylegan-jax convert``: official pickle -> checkpoint -> load_generator parity, D, overwrite, bad pickles."""

import dataclasses
import hashlib
import os
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stylegan_jax.checkpoint import load_checkpoint, load_generator
from stylegan_jax.cli import main
from stylegan_jax.convert import load_official_pickle
from stylegan_jax.convert.cli import ConvertError, check_supported
from stylegan_jax.networks.discriminator import discriminator_from_official_kwargs

FIXTURES = Path(__file__).parent / "fixtures"
PKL = FIXTURES / "sg3t_32_official_format.pkl"
EXPECTED = "sg3t_32_official_format_expected.npz"


def convert(*args: str) -> int:
    return main(["convert", *map(str, args)])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("convert") / "ckpt"
    assert convert(PKL, "--out", out) == 0
    return out


def test_g_ema_matches_official_output(converted, load_fixture):
    fx = load_fixture(EXPECTED)
    G, variables = load_generator(converted)
    assert (G.z_dim, G.img_resolution, G.c_dim) == (32, 32, 0)
    img = jax.jit(lambda v, z: G.apply(v, z, None, 0.7))(variables, jnp.asarray(fx["in/z"]))
    np.testing.assert_allclose(np.asarray(img), fx["out/img"], atol=1e-4)


def test_checkpoint_contents(converted, load_fixture):
    fx = load_fixture(EXPECTED)
    meta, state = load_checkpoint(converted)
    assert sorted(state) == ["D", "G", "G_ema"]
    assert meta["step"] == 0
    assert meta["generator"]["class"] == "stylegan3.Generator"
    assert meta["source"]["sha256"] == hashlib.sha256(PKL.read_bytes()).hexdigest()
    assert meta["source"]["pickle"] == str(PKL.absolute())
    assert meta["training_set_kwargs"]["resolution"] == 32
    assert meta["discriminator"] == {"class": "stylegan2.Discriminator", "official_kwargs": fx.meta["D_kwargs"]}
    # The training generator loads too, with G_ema's structure.
    G, v_G = load_generator(converted, which="G")
    _, v_ema = load_generator(converted)
    assert jax.tree.structure(v_G) == jax.tree.structure(v_ema)


def test_discriminator_params_load(converted):
    meta, state = load_checkpoint(converted)
    D = discriminator_from_official_kwargs(meta["discriminator"]["official_kwargs"])
    params = jax.tree.map(np.asarray, state["D"]["params"])
    abstract = jax.eval_shape(D.init_params, jax.random.PRNGKey(0))["params"]
    assert jax.tree.structure(params) == jax.tree.structure(abstract)
    assert all(a.shape == b.shape for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(abstract), strict=True))
    # The D weights are the pickle's, in our layout.
    official = load_official_pickle(PKL).D.state_dict
    np.testing.assert_array_equal(params["b32"]["conv0"]["weight"],
                                  official["b32.conv0.weight"].transpose(2, 3, 1, 0))
    # (D's forward parity with these weights is test_discriminator's business; not compiled again here.)


def test_refuses_to_overwrite(converted, tmp_path, capsys):
    before = sorted(p.name for p in converted.rglob("*"))
    assert convert(PKL, "--out", converted) == 1
    assert "--force" in capsys.readouterr().err
    assert sorted(p.name for p in converted.rglob("*")) == before
    # --force replaces a checkpoint directory...
    copy = tmp_path / "again"
    assert convert(PKL, "--out", copy) == 0
    assert convert(PKL, "--out", copy, "--force") == 0
    assert sorted(p.name for p in copy.iterdir()) == ["0"]
    load_generator(copy)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers
    # ... but never a directory holding anything else.
    other = tmp_path / "data"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    assert convert(PKL, "--out", other, "--force") == 1
    assert "not checkpoint steps" in capsys.readouterr().err
    assert (other / "keep.txt").read_text() == "precious"


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": _RunsCode(marker), "G": None, "D": None}, protocol=4))
    out = tmp_path / "out"
    assert convert(evil, "--out", out) == 1
    err = capsys.readouterr().err
    assert "refusing to load global" in err and "system" in err
    assert not marker.exists()
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [evil]


def test_truncated_pickle(tmp_path, capsys):
    bad = tmp_path / "truncated.pkl"
    data = PKL.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    out = tmp_path / "out"
    assert convert(bad, "--out", out) == 1
    err = capsys.readouterr().err
    assert "truncated.pkl" in err and "truncated" in err.split("truncated.pkl", 1)[1]
    assert not out.exists()
    assert convert(tmp_path / "missing.pkl", "--out", out) == 1
    assert "cannot read" in capsys.readouterr().err


def test_stylegan2_generator_not_supported_yet():
    pkl = load_official_pickle(PKL)
    check_supported(pkl)
    sg2 = dataclasses.replace(pkl.G_ema, architecture="stylegan2",
                              qualified_class_name="training.networks_stylegan2.Generator")
    with pytest.raises(ConvertError, match="StyleGAN2 generator.*not supported yet"):
        check_supported(dataclasses.replace(pkl, G_ema=sg2))


def test_conditional_r_generator_without_g_and_d(tmp_path, monkeypatch, load_fixture, capsys):
    """StyleGAN3-R, conditional, G_ema only: built from the sg3r_64_cond state dict (no such pickle fixture)."""
    from stylegan_jax.convert import convert_generator, strip_prefix
    from stylegan_jax.convert import official_pickle as op

    fx = load_fixture("sg3r_64_cond.npz")
    sd = strip_prefix(fx, "G/")
    record = op.NetworkRecord(class_name="Generator", qualified_class_name="training.networks_stylegan3.Generator",
                              architecture="stylegan3", init_args=(), init_kwargs=fx.meta["G_kwargs"], state_dict=sd)
    fake = op.OfficialPickle(G_ema=record, G=None, D=None, augment_pipe=None, training_set_kwargs=None, path="r.pkl")
    monkeypatch.setattr(op, "load_official_pickle_bytes", lambda data, source: fake)
    pkl = tmp_path / "r.pkl"
    pkl.write_bytes(b"stand-in")
    assert convert(pkl, "--out", tmp_path / "ckpt") == 0
    err = capsys.readouterr().err
    assert "no training generator G" in err and "no discriminator D" in err
    meta, state = load_checkpoint(tmp_path / "ckpt")
    assert sorted(state) == ["G_ema"] and "discriminator" not in meta
    G, variables = load_generator(tmp_path / "ckpt")
    assert G.c_dim == 5 and G.synthesis_kwargs["conv_kernel"] == 1 and G.synthesis_kwargs["use_radial_filters"]
    _, expected = convert_generator(sd, fx.meta["G_kwargs"])
    assert jax.tree.structure(variables) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(a, b)
