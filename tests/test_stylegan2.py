"""StyleGAN2 generator: official parity, noise injection, conversion errors, resampling arithmetic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stylegan_jax.convert import ConversionError, strip_prefix
from stylegan_jax.convert.stylegan2 import convert_stylegan2_generator
from stylegan_jax.models import build_generator
from stylegan_jax.networks.stylegan2 import (
    StyleGAN2Generator,
    stylegan2_generator_from_official_kwargs,
)
from stylegan_jax.ops.modulated_conv import conv2d, conv2d_up
from stylegan_jax.ops.upfirdn2d import upfirdn2d
from stylegan_jax.parity import Fixture
from stylegan_jax.parity.stylegan2 import applies_stylegan2, check_stylegan2_generator
from tests.conftest import FIXTURES
from tests.parity_bounds import assert_reached

OUTPUTS = ["G ws", "G ws_trunc", "G img", "G img_trunc", "G img_noise_none", "G img_mixed"]


def _tiny(**kw) -> StyleGAN2Generator:
    # Blocks 4 and 8: three conv layers.
    return StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=8, channel_base=32, channel_max=8,
                              mapping_layers=1, **kw)


def _key(seed: int) -> jax.Array:
    # XLA:CPU compiles every threefry draw slowly (about 10 s for this tiny model's jitted init, with
    # jax's default partitionable threefry); the 'rbg' generator compiles about 4x faster. The draws'
    # values do not matter to these tests.
    return jax.random.key(seed, impl="rbg")


def _shapes(tree):
    return jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), tree)


def test_parity_sg2_64():
    fx = Fixture(FIXTURES / "sg2_64.npz")
    assert applies_stylegan2(fx)
    results = check_stylegan2_generator(fx)
    assert [r.name for r in results] == OUTPUTS
    assert_reached("sg2_64.npz", results)


def test_conversion_tree_matches_fresh_init(load_fixture):
    fx = load_fixture("sg2_64.npz")
    G, v = convert_stylegan2_generator(strip_prefix(fx, "G/"), fx.meta["G_kwargs"])
    assert G.num_ws == fx["out/ws"].shape[1]
    fresh = jax.eval_shape(lambda k: G.init(k, jnp.zeros((1, G.z_dim)), noise_mode="const"), jax.random.PRNGKey(0))
    assert _shapes(fresh) == _shapes(v)


@pytest.fixture(scope="module")
def tiny_model():
    G = _tiny()
    v = jax.jit(lambda k: G.init(k, jnp.zeros((1, 8))))(_key(0))
    return G, v


def test_fresh_noise_strength_zero_and_const_buffers(tiny_model):
    G, v = tiny_model
    strengths = {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(v["params"])[0]
                 if "noise_strength" in jax.tree_util.keystr(p)}
    assert len(strengths) == G.num_ws - 1  # one per conv layer
    assert all(float(s) == 0.0 for s in strengths.values())
    consts = jax.tree_util.tree_leaves(v["buffers"])
    assert len(consts) == G.num_ws - 1
    assert sorted({c.shape for c in consts}) == [(4, 4), (8, 8)]
    assert all(float(jnp.std(c)) > 0.3 for c in consts)  # drawn N(0, 1), not zeros


def test_noise_modes(tiny_model):
    G, v = tiny_model
    # Non-zero strengths, otherwise every noise mode gives the same image.
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.ones_like(x) if "noise_strength" in jax.tree_util.keystr(p) else x, v["params"])
    v = {**v, "params": params}

    def run(v, z, k1, k2):
        def f(mode, key):
            return G.apply(v, z, noise_mode=mode, rngs={"noise": key})
        return f("random", k1), f("random", k1), f("random", k2), f("const", k1), f("const", k2), f("none", k1)

    z = jax.random.normal(jax.random.PRNGKey(1), (2, 8))
    r1, r1b, r2, c1, c2, n1 = jax.jit(run)(v, z, _key(2), _key(3))
    np.testing.assert_array_equal(np.asarray(r1), np.asarray(r1b))  # same key, same noise
    assert float(jnp.max(jnp.abs(r1 - r2))) > 1e-3  # another key, other noise
    np.testing.assert_array_equal(np.asarray(c1), np.asarray(c2))  # const ignores the rng
    assert float(jnp.max(jnp.abs(c1 - n1))) > 1e-3
    assert c1.shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="needs an rng"):
        G.apply(v, z, noise_mode="random")
    with pytest.raises(ValueError, match="noise_mode"):
        G.apply(v, z, noise_mode="zero")


@pytest.mark.parametrize("architecture", ["orig", "resnet"])
def test_other_architectures_shapes(architecture):
    G = _tiny(architecture=architecture)
    v = jax.eval_shape(lambda k: G.init(k, jnp.zeros((2, 8)), noise_mode="const"), jax.random.PRNGKey(0))
    out = jax.eval_shape(lambda v, z: G.apply(v, z, noise_mode="const"), v, jnp.zeros((2, 8)))
    assert out.shape == (2, 3, 8, 8) and G.num_ws == 4
    blocks = v["params"]["synthesis"]
    assert ("torgb" in blocks["b4"]) == (architecture == "skip") and "torgb" in blocks["b8"]
    assert ("skip" in blocks["b8"]) == (architecture == "resnet")


def test_conv2d_up_matches_generic_path():
    """Transposed-conv path == zero-insert + filter + true convolution (the official generic fallback)."""
    f = np.array([1, 3, 3, 1], np.float32) / 8
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 5, 6, 2), np.float32)
    ws = [rng.standard_normal((k, k, 2, 3), np.float32) for k in (1, 3, 5)]

    def both(x, ws):
        out = []
        for w in ws:
            p = w.shape[0] // 2
            up = upfirdn2d(x, f, up=2, padding=(p + 2, p + 1, p + 2, p + 1), gain=4, impl="ref")
            out.append((conv2d_up(x, w, f, up=2, padding=p), conv2d(up, jnp.flip(w, (0, 1)))))
        return out

    for w, (ours, ref) in zip(ws, jax.jit(both)(x, ws), strict=True):
        assert ours.shape == (1, 10, 12, 3)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), atol=1e-5, err_msg=f"kernel {w.shape[0]}")


def _state_dict(fx):
    return dict(strip_prefix(fx, "G/"))


def test_conversion_errors_name_the_key(load_fixture):
    fx = load_fixture("sg2_64.npz")
    kw = fx.meta["G_kwargs"]
    sd = _state_dict(fx)
    del sd["synthesis.b8.conv0.noise_const"]
    with pytest.raises(ConversionError, match=r"missing key 'synthesis.b8.conv0.noise_const'"):
        convert_stylegan2_generator(sd, kw)

    sd = _state_dict(fx)
    sd["synthesis.b16.conv1.weight"] = sd["synthesis.b16.conv1.weight"][:, :, :1]
    with pytest.raises(ConversionError, match=r"'synthesis.b16.conv1.weight' has shape"):
        convert_stylegan2_generator(sd, kw)

    sd = _state_dict(fx)
    sd["synthesis.b4.extra"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError, match=r"unknown keys \['synthesis.b4.extra'\]"):
        convert_stylegan2_generator(sd, kw)

    sd = _state_dict(fx)
    sd["synthesis.b32.resample_filter"] = np.full((4, 4), 1 / 16, np.float32)
    with pytest.raises(ConversionError, match=r"'synthesis.b32.resample_filter' differs"):
        convert_stylegan2_generator(sd, kw)

    # Kwargs that do not belong to the state dict: channels differ, the first mismatch is named.
    with pytest.raises(ConversionError, match=r"'synthesis.b4.const' has shape"):
        convert_stylegan2_generator(_state_dict(fx), {**kw, "channel_max": 32})

    with pytest.raises(ValueError, match="bogus"):
        stylegan2_generator_from_official_kwargs({**kw, "bogus": 1})


@pytest.mark.parametrize("kwargs", [
    dict(c_dim=3, architecture="resnet", use_noise=False, mapping_kwargs=dict(num_layers=2, layer_features=16)),
    dict(architecture="orig", conv_clamp=None, resample_filter=[1, 2, 1]),
])
def test_conversion_round_trip_other_configs(kwargs):
    """A state dict in the official layout, built from a fresh model's tree, converts back to that tree."""
    G_kwargs = {**dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, channel_base=32,
                       channel_max=8), **kwargs}
    G = stylegan2_generator_from_official_kwargs(G_kwargs)
    z, c = jnp.zeros((1, 8)), jnp.zeros((1, G.c_dim))
    fresh = jax.eval_shape(lambda k: G.init(k, z, c, noise_mode="const"), jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    sd = {}
    for coll in fresh:
        for path, leaf in jax.tree_util.tree_flatten_with_path(fresh[coll])[0]:
            shape = tuple(leaf.shape)
            official = {4: lambda s: (s[3], s[2], s[0], s[1]), 3: lambda s: (s[2], s[0], s[1]),
                        2: lambda s: s[::-1]}.get(len(shape), lambda s: s)(shape)
            if path[-1].key == "noise_const":
                official = shape
            sd[".".join(p.key for p in path)] = rng.standard_normal(official).astype(np.float32)
    f = np.outer(*[np.asarray(G.resample_filter, np.float32)] * 2)
    for name in list(sd):  # Every block, SynthesisLayer and resnet skip conv holds a filter buffer.
        if name.endswith(("conv0.weight", "conv1.weight", "skip.weight")):
            sd[name.rsplit(".", 1)[0] + ".resample_filter"] = f / f.sum()
    for res in (4, 8):
        sd[f"synthesis.b{res}.resample_filter"] = f / f.sum()
    G2, v = convert_stylegan2_generator(sd, G_kwargs)
    assert G2 == G and _shapes(v) == _shapes(fresh)
    assert ("buffers" in v) == G.use_noise


# ---- mixed precision -----------------------------------------------------------------------------------------

BF16_U = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits)


def _random_variables(G: StyleGAN2Generator, seed: int) -> dict:
    """N(0, 1) draws for every variable, noise strengths included (no G.init compile)."""
    shapes = jax.eval_shape(lambda k: G.init(k, jnp.zeros((1, G.z_dim)), noise_mode="const"), jax.random.PRNGKey(0))
    rng = np.random.RandomState(seed)
    return jax.tree.map(lambda s: np.asarray(rng.randn(*s.shape), np.float32), shapes)


@pytest.mark.parametrize("architecture", ["skip", "resnet"])
def test_bf16_blocks_stay_close_to_float32(architecture):
    # 16 px, num_fp16_res 4: the official rule puts b8 and b16 in low precision, b4 stays float32.
    G = StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=16, channel_base=128, channel_max=16, mapping_layers=1,
                           architecture=architecture)
    Gb = G.with_compute_dtype("bfloat16")
    assert Gb.supports_compute_dtype and Gb.to_config() == G.to_config()  # a run-time choice, not architecture
    assert Gb == build_generator("stylegan2", z_dim=8, w_dim=8, img_resolution=16, channel_base=128, channel_max=16,
                                 mapping_layers=1, architecture=architecture, fp16_dtype="bfloat16")
    v = _random_variables(G, seed=0)
    z = np.random.RandomState(1).randn(4, 8).astype(np.float32)

    def run(v, z):
        ref = G.apply(v, z, noise_mode="const")
        low, inter = Gb.apply(v, z, noise_mode="const", capture_intermediates=True, mutable=["intermediates"])
        return ref, low, inter["intermediates"]

    ref, low, inter = jax.jit(run)(v, z)
    assert low.dtype == jnp.float32 and low.shape == ref.shape == (4, 3, 16, 16)
    dtypes = {jax.tree_util.keystr(p): x.dtype for p, x in jax.tree_util.tree_flatten_with_path(inter)[0]}
    convs = {k: d for k, d in dtypes.items() if k.endswith("['__call__'][0]") and "conv" in k and "affine" not in k}
    assert convs and all((d == jnp.bfloat16) == ("'b4'" not in k) for k, d in convs.items()), convs
    assert all(d == jnp.float32 for k, d in dtypes.items() if "affine" in k or "mapping" in k)  # styles in float32
    images = [d for k, d in dtypes.items() if k.endswith("['__call__'][0][1]")]  # each block's (features, image)
    # The ToRGB sum is accumulated in float32 (resnet: only the last block has a ToRGB).
    assert len(images) == (3 if architecture == "skip" else 1) and all(d == jnp.float32 for d in images)
    ref, low = np.asarray(ref, np.float64), np.asarray(low, np.float64)
    err = np.abs(low - ref)
    # The stated bound: mean error within 6 bf16 roundoffs of the mean magnitude, worst pixel within 12 of the
    # largest (measured on random weights like these: mean 1-3 u, max 2-5 u).
    assert 0 < err.mean() <= 6 * BF16_U * np.abs(ref).mean(), (err.mean(), np.abs(ref).mean())
    assert err.max() <= 12 * BF16_U * np.abs(ref).max(), (err.max(), np.abs(ref).max())


@pytest.mark.slow  # ~230 s on the loaded 2-core machine: compiles two StyleGAN2 main programs and Dreg
def test_bf16_training_steps_stay_finite():
    """The one switch ``model.bf16`` of the StyleGAN2 config puts G's and D's highest resolutions in bfloat16; a
    few iterations, path-length and R1 regularization included, stay finite and move the weights."""
    from pathlib import Path

    from stylegan_jax.config import load_config
    from stylegan_jax.train.loop import build_networks
    from stylegan_jax.train.state import TrainConfig, create_train_state
    from stylegan_jax.train.step import make_mesh, make_train_step

    c = load_config(Path(__file__).resolve().parents[1] / "configs" / "stylegan2_256.py")
    c.model.bf16 = True
    c.data.resolution = 16
    c.model.z_dim = c.model.w_dim = 8
    c.model.mapping_layers = 2
    c.model.channel_base = c.model.d_channel_base = 128
    c.model.channel_max = c.model.d_channel_max = 16
    c.model.mbstd_group_size = 2
    c.train.batch_size = 4
    G, D = build_networks(c, 0)
    tc = TrainConfig.from_config(c)
    assert tc.bf16 and tc.pl_weight > 0 and tc.g_reg_interval == 4
    mesh = make_mesh()
    state = create_train_state(G, D, tc, jax.random.PRNGKey(0), mesh=mesh)
    step = make_train_step(G, D, c, mesh, donate=False)
    assert jnp.dtype(step.G.fp16_dtype) == jnp.bfloat16 and jnp.dtype(step.D.fp16_dtype) == jnp.bfloat16
    rng = np.random.default_rng(0)
    real = np.tanh(2 * rng.standard_normal((4, 3, 16, 16))).astype(np.float32)
    first = state
    for i in range(5):  # Greg and Dreg at iteration 0 (and Greg at 4), plain Gmain + Dmain between
        state, m = step(state, {"real": real, "c": np.zeros((4, 0), np.float32)}, i)
        m = jax.device_get(m)
        assert bool(m["finite"]), i
        for name in ("Loss/G", "Loss/D", "Loss/pl_penalty", "Loss/r1"):
            assert np.isfinite(float(m[name])), (i, name)
    assert int(state.g_reg_steps) == 2 and float(state.pl_mean) > 0
    leaves = jax.tree.leaves(jax.device_get((state.G, state.G_ema, state.D)))
    assert all(np.isfinite(x).all() for x in leaves)
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), first.G["params"],
                         state.G["params"])
    assert max(jax.tree.leaves(moved)) > 0
