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


def test_check_supported_refuses_what_it_cannot_convert():
    pkl = load_official_pickle(PKL)
    assert check_supported(pkl) == "training.networks_stylegan3.Generator"
    sg2 = dataclasses.replace(pkl.G_ema, architecture="stylegan2", qualified_class_name=None)
    assert check_supported(dataclasses.replace(pkl, G_ema=sg2, G=sg2)) == "training.networks_stylegan2.Generator"
    cases = {
        "D in the G_ema slot": (dataclasses.replace(pkl, G_ema=pkl.D), r"G_ema is a training.networks_stylegan2"
                                r"\.Discriminator \(architecture stylegan2\), not a generator"),
        "D in the G slot": (dataclasses.replace(pkl, G=pkl.D), r"G is a .*Discriminator"),
        "unknown class": (dataclasses.replace(pkl, G_ema=dataclasses.replace(
            pkl.G_ema, class_name="MyGenerator", qualified_class_name=None, architecture=None)),
            r"G_ema is a MyGenerator \(architecture unknown\)"),
        "generator of an unknown module": (dataclasses.replace(pkl, G_ema=dataclasses.replace(
            pkl.G_ema, architecture=None, qualified_class_name=None)), r"G_ema is a Generator \(architecture unknown"),
        "G stylegan3, G_ema stylegan2": (dataclasses.replace(pkl, G_ema=sg2),
                                         r"G is a training.networks_stylegan3.Generator but G_ema a "
                                         r"training.networks_stylegan2.Generator"),
    }
    for what, (bad, message) in cases.items():
        with pytest.raises(ConvertError, match=message) as err:
            check_supported(bad)
        assert "training.networks_stylegan3.Generator or training.networks_stylegan2.Generator" in str(err.value) \
            or "but G_ema" in str(err.value), what


# ----------------------------------------------------------------------------------------------------------------
# An official StyleGAN2 network pickle, written from the G/ entries of sg2_64.npz (the official generator's
# state dict) and the D/ entries of loss_32.npz, in the module tree the official classes pickle as.

SG2 = "sg2_64.npz"


@pytest.fixture(scope="module")
def sg2_pickle(tmp_path_factory, load_fixture) -> Path:
    from stylegan_jax.convert import strip_prefix
    from tests.pickle_writer import (
        dumps,
        official_layout,
        official_network,
        stylegan2_discriminator_class,
        stylegan2_generator_class,
    )

    fx, fx_d = load_fixture(SG2), load_fixture("loss_32.npz")
    sd = strip_prefix(fx, "G/")
    # G differs from G_ema (as in a real snapshot), so that the test can tell which one was loaded.
    sd_G = {**sd, "mapping.w_avg": -sd["mapping.w_avg"]}
    D_kwargs = fx_d.meta["D_kwargs"]
    layout = official_layout(
        official_network(sd, stylegan2_generator_class, fx.meta["G_kwargs"]),
        G=official_network(sd_G, stylegan2_generator_class, fx.meta["G_kwargs"], fmt="zip"),
        D=official_network(strip_prefix(fx_d, "D/"),
                           lambda p: stylegan2_discriminator_class(p, D_kwargs["img_resolution"]), D_kwargs),
        training_set_kwargs={"class_name": "training.dataset.ImageFolderDataset", "resolution": 64})
    path = tmp_path_factory.mktemp("sg2pkl") / "stylegan2-64.pkl"
    path.write_bytes(dumps(layout))
    return path


@pytest.fixture(scope="module")
def sg2_converted(sg2_pickle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sg2ckpt") / "ckpt"
    assert convert(sg2_pickle, "--out", out) == 0
    return out


def test_stylegan2_pickle_reads_as_the_official_class(sg2_pickle, load_fixture):
    fx = load_fixture(SG2)
    pkl = load_official_pickle(sg2_pickle)
    for rec in (pkl.G_ema, pkl.G):
        assert rec.class_name == "Generator" and rec.architecture == "stylegan2"
        assert rec.qualified_class_name == "training.networks_stylegan2.Generator"
        assert rec.init_kwargs == fx.meta["G_kwargs"]
        assert list(rec.state_dict) == [k[2:] for k in fx if k.startswith("G/")]
    assert rec.module_classes["synthesis.b8"] == "SynthesisBlock"
    assert rec.module_classes["synthesis.b8.conv0.affine"] == "FullyConnectedLayer"
    assert pkl.D.qualified_class_name == "training.networks_stylegan2.Discriminator"
    assert check_supported(pkl) == "training.networks_stylegan2.Generator"


def test_stylegan2_pickle_converts_to_the_official_images(sg2_converted, load_fixture):
    from stylegan_jax.networks.stylegan2 import StyleGAN2Generator

    fx = load_fixture(SG2)
    meta, state = load_checkpoint(sg2_converted)
    assert sorted(state) == ["D", "G", "G_ema"]
    assert meta["generator"]["class"] == "stylegan2.Generator"
    assert meta["source"]["official_G_class"] == "training.networks_stylegan2.Generator"
    assert meta["source"]["official_G_kwargs"] == fx.meta["G_kwargs"]
    assert meta["discriminator"]["official_kwargs"] == load_fixture("loss_32.npz").meta["D_kwargs"]
    assert meta["training_set_kwargs"]["resolution"] == 64

    G, variables = load_generator(sg2_converted)
    assert isinstance(G, StyleGAN2Generator) and (G.img_resolution, G.mapping_layers, G.num_ws) == (64, 8, 10)

    @jax.jit
    def images(v, z):
        ws = G.apply(v, z, None, 1.0, method=G.map)
        return tuple(G.apply(v, ws, noise_mode=mode, method=G.synthesize) for mode in ("const", "none"))

    const, none = images(variables, jnp.asarray(fx["in/z"]))
    np.testing.assert_allclose(np.asarray(const), fx["out/img"], atol=1e-4)
    np.testing.assert_allclose(np.asarray(none), fx["out/img_noise_none"], atol=1e-4)
    # The training generator G is converted too (its w_avg was negated in the pickle).
    _, v_G = load_generator(sg2_converted, which="G")
    assert jax.tree.structure(v_G) == jax.tree.structure(variables)
    np.testing.assert_array_equal(v_G["ema"]["mapping"]["w_avg"], -variables["ema"]["mapping"]["w_avg"])


def test_generate_from_converted_stylegan2(sg2_converted, tmp_path):
    import PIL.Image

    out = tmp_path / "out"
    assert main(["generate", "--ckpt", str(sg2_converted), "--seeds", "0-1", "--psi", "0.7", "--outdir", str(out),
                 "--grid", "--batch-size", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "seed0000.png", "seed0001.png"]
    with PIL.Image.open(out / "seed0001.png") as im:
        assert im.size == (64, 64) and im.mode == "RGB"
        assert np.asarray(im).std() > 0


def test_stylegan2_without_noise_inputs_loads_from_a_checkpoint(tmp_path, load_fixture):
    """use_noise=False: no noise entries, no buffers; the converted variables still have the collection."""
    from stylegan_jax.checkpoint import save_checkpoint
    from stylegan_jax.convert import convert_official_generator, strip_prefix
    from stylegan_jax.models import generator_config

    fx = load_fixture(SG2)
    sd = {k: v for k, v in strip_prefix(fx, "G/").items() if "noise" not in k}
    G, variables = convert_official_generator("training.networks_stylegan2.Generator", sd,
                                              {**fx.meta["G_kwargs"], "use_noise": False})
    assert variables["buffers"] == {} and not G.use_noise
    save_checkpoint(tmp_path / "ckpt", 0, {"G_ema": variables}, {"generator": generator_config(G)})
    G2, v2 = load_generator(tmp_path / "ckpt")
    assert G2 == G and v2["buffers"] == {}
    with pytest.raises(ValueError, match="no converter for training.networks_stylegan3.Discriminator"):
        convert_official_generator("training.networks_stylegan3.Discriminator", sd, fx.meta["G_kwargs"])


def test_stylegan2_pickle_with_a_discriminator_as_g_ema_is_refused(sg2_pickle, tmp_path, capsys):
    from stylegan_jax.convert import official_pickle as op

    pkl = op.load_official_pickle(sg2_pickle)
    bad = tmp_path / "d_as_g.pkl"
    bad.write_bytes(b"stand-in")
    out = tmp_path / "out"
    for G_ema, message in ((pkl.D, "G_ema is a training.networks_stylegan2.Discriminator"),
                           (dataclasses.replace(pkl.G_ema, architecture="stylegan3"), "G is a training.networks_"
                                                                                      "stylegan2.Generator but G_ema")):
        fake = dataclasses.replace(pkl, G_ema=G_ema, path=str(bad))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(op, "load_official_pickle_bytes", lambda data, source, fake=fake: fake)
            assert convert(bad, "--out", out) == 1
        assert message in capsys.readouterr().err
        assert not out.exists()


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
