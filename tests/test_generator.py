"""StyleGAN3 generator: parity with the official outputs, conversion errors, buffers, jit cache."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stylegan_jax.convert import ConversionError, convert_generator, load_official_pickle, strip_prefix
from stylegan_jax.models import build_generator
from stylegan_jax.networks.layers import FullyConnectedLayer
from stylegan_jax.networks.stylegan3 import Generator, generator_from_official_kwargs
from stylegan_jax.parity import Fixture, check_generator
from tests.parity_bounds import assert_reached

FIXTURES = ["sg3t_64.npz", "sg3r_64_cond.npz", "sg3t_256.npz"]
OUTPUTS = ["G ws", "G ws_trunc", "G img", "G img_trunc", "G img_transformed"]


@pytest.mark.parametrize("name", FIXTURES)
def test_generator_parity(name):
    from tests.conftest import FIXTURES as DIR

    results = check_generator(Fixture(DIR / name))
    assert [r.name for r in results] == OUTPUTS
    assert_reached(name, results)


def test_activations_match_per_layer(load_fixture):
    fx = load_fixture("sg3t_64.npz")
    G, v = convert_generator(strip_prefix(fx, "G/"), fx.meta["G_kwargs"])
    ws = jnp.asarray(fx["out/ws"][:1])
    _, acts = jax.jit(lambda v, ws: G.apply(v, ws, return_activations=True,
                                           method=lambda m, w, **kw: m.synthesis(w, **kw)))(v, ws)
    for name in ["input"] + fx.meta["layer_names"]:
        ref = fx[f"act/{name}"]
        ours = np.transpose(np.asarray(acts[name]), (0, 3, 1, 2))[:, : ref.shape[1]]
        np.testing.assert_allclose(ours, ref, atol=1e-4, err_msg=name)


def test_schedule_matches_official_layer_names(load_fixture):
    for name in FIXTURES:
        fx = load_fixture(name)
        G = generator_from_official_kwargs(fx.meta["G_kwargs"])
        assert [s.name for s in G.schedule().layers] == fx.meta["layer_names"]


def test_design_defaults():
    G = build_generator()
    assert (G.z_dim, G.w_dim, G.mapping_layers, G.img_resolution, G.img_channels) == (512, 512, 8, 256, 3)
    sched = G.schedule()
    assert sched.num_ws == 16
    assert sched.layers[-1].out_size == 256 and sched.layers[-1].out_channels == 3
    # R: 1x1 convs, radial filters on non-critical layers, doubled channels.
    r = build_generator("r").schedule()
    assert all(s.conv_kernel == 1 for s in r.layers)
    assert r.layers[0].down_radial and not r.layers[-2].down_radial
    assert r.layers[0].out_channels == 1024


def test_output_shape_and_range_at_init():
    # 4 synthesis layers: the shapes, collections and range do not need the design's 14 (a third of the compile).
    G = build_generator(img_resolution=32, channel_base=512, channel_max=16, z_dim=16, w_dim=16, mapping_layers=2,
                        num_layers=4)
    v = jax.jit(G.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16)))
    assert set(v) == {"params", "ema", "buffers"}
    img = jax.jit(G.apply)(v, jax.random.normal(jax.random.PRNGKey(1), (2, 16)))
    assert img.shape == (2, 3, 32, 32) and img.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(img)))


def test_input_transform_init_and_margin_reach_the_network():
    """model.margin_size and model.input_transform_init go from the config to StyleGAN3's synthesis network (and
    its saved description); 0 keeps the official start, where every w gets the untransformed features."""
    from stylegan_jax.config import load_config
    from stylegan_jax.train.loop import build_networks, resolve_config

    c = load_config(Path(__file__).resolve().parents[1] / "configs" / "quickstart.py")
    c.model.margin_size, c.model.input_transform_init = 4, 0.15
    G, _ = build_networks(resolve_config(c), 3)  # the quickstart is class-conditional (three shapes)
    assert G.schedule().layers[0].in_size == G.schedule().layers[0].in_sampling_rate + 2 * 4
    kwargs = G.to_config()["kwargs"]["synthesis_kwargs"]
    assert kwargs["margin_size"] == 4 and kwargs["input_transform_init"] == 0.15

    def transform_spread(transform_init: float) -> np.ndarray:
        g = build_generator(img_resolution=16, channel_base=256, channel_max=8, z_dim=16, w_dim=16, mapping_layers=2,
                            num_layers=3, input_transform_init=transform_init)
        v = g.init(jax.random.PRNGKey(0), jnp.zeros((1, 16)))
        ws = g.apply(v, jax.random.normal(jax.random.PRNGKey(1), (64, 16)), method=g.map)
        # The input's transform affine (the same layer with its initial weights) applied to each sample's w.
        affine = FullyConnectedLayer(4, name="affine")
        t = affine.apply({"params": v["params"]["synthesis"]["input"]["affine"]}, ws[:, 0])
        return np.asarray(t).std(axis=0)

    assert np.all(transform_spread(0.0) == 0)  # the official start
    spread = transform_spread(0.15)
    assert np.all(spread[2:] > 0.05) and np.all(spread[2:] < 0.3)  # translations of a few pixels per w

    # The StyleGAN2 generator has neither: one config describes both.
    c.model.cfg = "stylegan2"
    G2, _ = build_networks(resolve_config(c), 3)
    assert "margin_size" not in str(G2.to_config())


@pytest.mark.slow  # ~20 s
def test_emas_update_only_when_asked():
    G = build_generator(img_resolution=32, channel_base=512, channel_max=16, z_dim=16, w_dim=16, mapping_layers=2)
    v = jax.jit(G.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16)))
    z = jax.random.normal(jax.random.PRNGKey(1), (4, 16))
    apply = jax.jit(lambda v, z, update: G.apply(v, z, update_emas=update, mutable=["ema"]), static_argnums=2)
    _, updated = apply(v, z, True)
    old, new = v["ema"], updated["ema"]
    assert not np.allclose(old["mapping"]["w_avg"], new["mapping"]["w_avg"])
    name = G.schedule().layers[0].name
    assert float(new["synthesis"][name]["magnitude_ema"]) != 1.0
    # update_emas=False with ema mutable leaves it unchanged.
    _, same = apply(v, z, False)
    jax.tree.map(np.testing.assert_array_equal, same["ema"], v["ema"])


@pytest.mark.slow  # ~15 s
def test_forward_compiles_once():
    G = build_generator(img_resolution=32, channel_base=512, channel_max=16, z_dim=16, w_dim=16, mapping_layers=2)
    v = jax.jit(G.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16)))
    fwd = jax.jit(lambda v, z, psi: G.apply(v, z, truncation_psi=psi))
    for seed in range(3):
        fwd(v, jax.random.normal(jax.random.PRNGKey(seed), (2, 16)), 0.7).block_until_ready()
    assert fwd._cache_size() == 1


def test_official_pickle_generator_matches_expected(load_fixture):
    from tests.conftest import FIXTURES as DIR

    pkl = load_official_pickle(DIR / "sg3t_32_official_format.pkl")
    G, v = convert_generator(pkl.G_ema.state_dict, pkl.G_ema.init_kwargs)
    expected = load_fixture("sg3t_32_official_format_expected.npz")
    img = jax.jit(lambda v, z: G.apply(v, z, None, 0.7))(v, jnp.asarray(expected["in/z"]))
    np.testing.assert_allclose(np.asarray(img), expected["out/img"], atol=1e-4)


# ---- conversion errors name the offending key ------------------------------------------------


@pytest.fixture(scope="module")
def sg3t64(load_fixture):
    fx = load_fixture("sg3t_64.npz")
    return strip_prefix(fx, "G/"), fx.meta["G_kwargs"]


def test_unknown_key_is_named(sg3t64):
    sd, kw = sg3t64
    with pytest.raises(ConversionError, match="synthesis.L99.weight"):
        convert_generator({**sd, "synthesis.L99.weight": np.zeros(3)}, kw)


def test_missing_key_is_named(sg3t64):
    sd, kw = sg3t64
    sd = {k: v for k, v in sd.items() if k != "mapping.fc1.bias"}
    with pytest.raises(ConversionError, match="missing key 'mapping.fc1.bias'"):
        convert_generator(sd, kw)


def test_misshaped_key_is_named(sg3t64):
    sd, kw = sg3t64
    sd = dict(sd)
    sd["synthesis.L3_36_32.weight"] = sd["synthesis.L3_36_32.weight"][:, :, :2]
    with pytest.raises(ConversionError, match=r"'synthesis.L3_36_32.weight' has shape \(32, 32, 2, 3\)"):
        convert_generator(sd, kw)


def test_foreign_kwargs_are_caught(sg3t64):
    sd, kw = sg3t64
    # Same shapes, different cutoffs: the stored filters no longer match the kwargs.
    with pytest.raises(ConversionError, match="up_filter|down_filter"):
        convert_generator(sd, {**kw, "first_cutoff": 3})
    with pytest.raises(ValueError, match="unsupported official generator kwargs"):
        generator_from_official_kwargs({**kw, "bogus": 1})


def test_nan_weights_are_rejected(sg3t64):
    sd, kw = sg3t64
    sd = dict(sd)
    sd["mapping.fc0.weight"] = np.full_like(sd["mapping.fc0.weight"], np.nan)
    with pytest.raises(ConversionError, match="NaN"):
        convert_generator(sd, kw)


def test_wrong_input_shapes_raise():
    G = Generator(z_dim=8, w_dim=8, img_resolution=16, mapping_layers=1,
                  synthesis_kwargs=dict(channel_base=256, channel_max=8, num_layers=4))
    v = jax.jit(G.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8)))
    with pytest.raises(ValueError, match=r"z must have shape \[N, 8\]"):
        G.apply(v, jnp.zeros((1, 7)))
    with pytest.raises(ValueError, match=r"SynthesisNetwork ws: expected shape \[N, 6, 8\], got \[1, 3, 8\]"):
        G.apply(v, jnp.zeros((1, 3, 8)), method=G.synthesize)



@pytest.mark.slow  # ~25 s
def test_bf16_high_resolution_layers():
    # fp16_dtype makes the use_fp16 layers compute in bfloat16; the output stays float32 and close to fp32.
    G = build_generator(img_resolution=32, channel_base=512, channel_max=16, z_dim=16, w_dim=16, mapping_layers=2)
    Gb = build_generator(img_resolution=32, channel_base=512, channel_max=16, z_dim=16, w_dim=16, mapping_layers=2,
                         fp16_dtype="bfloat16")
    assert any(s.use_fp16 for s in G.schedule().layers)  # at 32px every layer is among the 4 highest res
    v = jax.jit(G.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16)))
    z = jax.random.normal(jax.random.PRNGKey(1), (2, 16))
    ref = jax.jit(G.apply)(v, z)
    low = jax.jit(Gb.apply)(v, z)
    assert low.dtype == jnp.float32
    err = float(jnp.abs(low - ref).max())
    assert 0 < err < 0.1 * float(jnp.abs(ref).max()), err
