"""FID / KID: the math against direct NumPy/SciPy, streaming statistics, and the Inception weight mapping through
real files (random weights saved with pytorch-fid names as .npz and as a torch.save zip, written without torch).

Every Inception forward here uses batches of two 32x32 RGB uint8 images, so the extractor compiles once."""

import pickle

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from stylegan_jax.data import SyntheticShapes, ordered_batches
from stylegan_jax.metrics import fid as F
from stylegan_jax.metrics import inception as I
from tests.pickle_writer import torch_save_state_dict

# ----------------------------------------------------------------------------------------------------------------
# The math.


def _random_cov(rng, d, n=200):
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    return np.cov(x, rowvar=False)


def test_frechet_distance_known_answers_and_scipy():
    rng = np.random.default_rng(0)
    d = 16
    mu, sigma = rng.standard_normal(d), _random_cov(rng, d)
    assert abs(F.frechet_distance(mu, sigma, mu, sigma)) < 1e-8  # identical statistics
    shift = rng.standard_normal(d)
    assert np.isclose(F.frechet_distance(mu + shift, sigma, mu, sigma), shift @ shift, rtol=1e-8, atol=1e-8)
    # Diagonal covariances: sum (sqrt(a) - sqrt(b))^2 in closed form.
    a, b = rng.uniform(0.5, 2, d), rng.uniform(0.5, 2, d)
    want = shift @ shift + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert np.isclose(F.frechet_distance(mu + shift, np.diag(a), mu, np.diag(b)), want, rtol=1e-10)
    # General case against a direct SciPy computation.
    s2 = _random_cov(rng, d)
    direct = shift @ shift + np.trace(sigma + s2 - 2 * scipy.linalg.sqrtm(sigma @ s2).real)
    assert np.isclose(F.frechet_distance(mu + shift, sigma, mu, s2), direct, rtol=1e-9)
    # Singular covariances (fewer samples than dimensions) still give a finite value.
    low = np.cov(rng.standard_normal((4, d)), rowvar=False)
    assert np.isfinite(F.frechet_distance(mu, low, mu + 1, low))


def _mmd2_unbiased(x, y):
    """Direct double-loop unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3."""
    d, m = x.shape[1], len(x)
    k = lambda a, b: (a @ b / d + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (xx + yy) / (m * (m - 1)) - 2 * xy / m**2


def test_kid_against_direct_mmd():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((12, 5)), rng.standard_normal((12, 5)) + 0.7
    # One subset as large as the sets: the subset is a permutation, so the value is the full-set estimate.
    assert np.isclose(F.kid(x, y, num_subsets=1, max_subset_size=100, seed=3), _mmd2_unbiased(x, y), rtol=1e-10)
    assert np.isclose(F.kid(x, y, num_subsets=3, max_subset_size=100), _mmd2_unbiased(x, y), rtol=1e-10)
    # Subsets: the mean of per-subset estimates, which is reproducible for a seed.
    a, b = rng.standard_normal((300, 8)), rng.standard_normal((300, 8))
    k1 = F.kid(a, b + 0.5, num_subsets=20, max_subset_size=50, seed=0)
    assert k1 == F.kid(a, b + 0.5, num_subsets=20, max_subset_size=50, seed=0) and k1 > 0
    assert abs(F.kid(a, b, num_subsets=20, max_subset_size=50, seed=0)) < 0.2 * k1  # same distribution: ~0


def test_streaming_stats_equal_batch_stats(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((103, 7)).astype(np.float32) * 3 + 1
    s = F.FeatureStats(capture_all=True, capture_mean_cov=True, max_items=100)
    for lo in range(0, len(x), 17):
        s.append(x[lo:lo + 17])
    assert s.num_items == 100 and s.is_full()
    mean, cov = s.get_mean_cov()
    np.testing.assert_allclose(mean, x[:100].astype(np.float64).mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x[:100].astype(np.float64), rowvar=False, bias=True), atol=1e-10)
    np.testing.assert_array_equal(s.get_all(), x[:100])
    s.save(tmp_path / "s.npz")
    t = F.FeatureStats.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(t.get_mean_cov()[1], cov)
    np.testing.assert_array_equal(t.get_all(), x[:100])


def test_metric_names():
    assert F.parse_metric("fid50k_full") == F.MetricSpec("fid50k_full", "fid", 50000, None)
    assert F.parse_metric("kid50k_full") == F.MetricSpec("kid50k_full", "kid", 50000, 1_000_000)
    assert F.parse_metric("fid10k") == F.MetricSpec("fid10k", "fid", 10000, 10000)
    assert not F.is_fid_metric("eqt_int")
    with pytest.raises(ValueError, match="unknown FID/KID metric"):
        F.parse_metric("fid")


def test_resize_matches_torch_and_tf1_conventions():
    a, b, c, d = 1.0, 5.0, 9.0, 13.0
    # torch F.interpolate(bilinear, align_corners=False): half-pixel centres, no antialiasing when shrinking.
    np.testing.assert_allclose(I._resize_matrix(2, 4, "pytorch-fid") @ [a, b], [a, a + (b - a) / 4, b - (b - a) / 4, b])
    np.testing.assert_allclose(I._resize_matrix(4, 2, "pytorch-fid") @ [a, b, c, d], [(a + b) / 2, (c + d) / 2])
    # TF1 legacy ResizeBilinear: output i samples input i * in / out.
    np.testing.assert_allclose(I._resize_matrix(2, 4, "tf1") @ [a, b], [a, (a + b) / 2, b, b])
    np.testing.assert_allclose(I._resize_matrix(4, 2, "tf1") @ [a, b, c, d], [a, c])
    x = np.random.default_rng(0).integers(0, 256, (1, 299, 299, 3)).astype(np.uint8)
    np.testing.assert_allclose(I.preprocess(x, "pytorch-fid"), x / 255 * 2 - 1, atol=1e-6)
    np.testing.assert_allclose(I.preprocess(x, "tf1"), (x - 128.0) / 128, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# The extractor and its weight files.


def test_state_dict_table_matches_the_real_network():
    shapes = I.fid_inception_state_dict_shapes(include_optional=False)
    assert len(shapes) == 94 * 5  # 94 BasicConv2d: conv.weight + bn.{weight, bias, running_mean, running_var}
    # Totals of TF's Inception-v3 (Keras' InceptionV3 summary: 21,751,136 conv weights, 17,216 BN channels).
    assert sum(np.prod(s) for k, s in shapes.items() if k.endswith(".conv.weight")) == 21_751_136
    assert sum(s[0] for k, s in shapes.items() if k.endswith(".bn.running_mean")) == 17_216
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Mixed_5b.branch_pool.conv.weight"] == (32, 192, 1, 1)
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert shapes["Mixed_6b.branch7x7dbl_2.conv.weight"] == (128, 128, 7, 1)
    assert shapes["Mixed_7b.branch3x3_2b.conv.weight"] == (384, 384, 3, 1)
    assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    full = I.fid_inception_state_dict_shapes()
    assert full["fc.weight"] == (1008, 2048) and full["Mixed_7c.branch1x1.bn.num_batches_tracked"] == ()


def _random_state_dict(seed=0):
    """Random weights with pytorch-fid names and shapes; He-scaled convs and BN stats near identity keep the
    activations O(1) through the 48 layers."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in I.fid_inception_state_dict_shapes().items():
        if name.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            out[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2 / fan_in))
        elif name.endswith(("bn.weight", "bn.running_var")):
            out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif name.endswith("num_batches_tracked"):
            out[name] = np.array(0, np.int64)
        else:  # bn.bias, bn.running_mean, fc.*
            out[name] = rng.normal(0, 0.1, shape).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """(state dict, path of the .npz, path of the .pth, loaded variables)."""
    state = _random_state_dict()
    d = tmp_path_factory.mktemp("inception")
    np.savez(d / "inception.npz", **state)
    (d / "pt_inception.pth").write_bytes(torch_save_state_dict(state))
    return state, d / "inception.npz", d / "pt_inception.pth", I.load_inception_weights(d / "inception.npz")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(5).integers(0, 256, (2, 3, 32, 32)).astype(np.uint8)


def test_weight_files_load_and_map_every_tensor(weights):
    state, npz, pth, variables = weights
    back = I.inception_state_dict_from_variables(variables)
    assert set(back) == set(I.fid_inception_state_dict_shapes(include_optional=False))
    for name, arr in back.items():
        np.testing.assert_array_equal(arr, state[name], err_msg=name)
    # The torch.save file (read by the restricted unpickler) gives the same variables.
    from_pth = I.load_inception_weights(pth)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), from_pth, variables))
    # Layout of the mapping: the first BasicConv2d equals a direct NumPy cross-correlation with the OIHW weights.
    x = np.random.default_rng(0).standard_normal((1, 9, 9, 3)).astype(np.float32)
    sub = {c: variables[c]["Conv2d_1a_3x3"] for c in ("params", "batch_stats")}
    got = I.BasicConv2d(32, (3, 3), stride=2).apply(sub, x)
    w = state["Conv2d_1a_3x3.conv.weight"].astype(np.float64)
    patches = np.stack([[x[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :] for j in range(4)] for i in range(4)])
    conv = np.einsum("ijhwc,ochw->ijo", patches, w)
    bn = (conv - state["Conv2d_1a_3x3.bn.running_mean"]) / np.sqrt(state["Conv2d_1a_3x3.bn.running_var"] + 1e-3)
    want = np.maximum(bn * state["Conv2d_1a_3x3.bn.weight"] + state["Conv2d_1a_3x3.bn.bias"], 0)
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4)


def test_features_shape_and_the_mapping_is_live(weights, images):
    state, _, _, variables = weights
    feats = np.asarray(I.inception_features(variables, images))
    assert feats.shape == (2, 2048) and np.isfinite(feats).all() and feats.std() > 0
    assert not np.allclose(feats[0], feats[1])
    for name in ("Mixed_6e.branch7x7dbl_3.conv.weight", "Mixed_7c.branch_pool.bn.running_var"):
        perturbed = dict(state, **{name: state[name] * np.float32(1.001)})
        other = np.asarray(I.inception_features(I.inception_variables_from_state_dict(perturbed), images))
        change = np.abs(other - feats).max()
        assert 0 < change < 0.1 * np.abs(feats).max(), (name, change)


def test_weight_errors_name_the_problem(tmp_path, weights):
    state = weights[0]
    missing_file = tmp_path / "nope.pth"
    with pytest.raises(I.InceptionWeightsError, match="pt_inception-2015-12-05-6726825d.pth") as e:
        I.load_inception_weights(missing_file)
    assert "never downloads" in str(e.value) and str(missing_file) in str(e.value)
    with pytest.raises(I.InceptionWeightsError, match="unknown key 'Mixed_5b.extra.weight'"):
        I.inception_variables_from_state_dict(dict(state, **{"Mixed_5b.extra.weight": np.zeros(3, np.float32)}))
    with pytest.raises(I.InceptionWeightsError, match="missing key 'Mixed_6a.branch3x3.bn.running_var'"):
        I.inception_variables_from_state_dict(
            {k: v for k, v in state.items() if k != "Mixed_6a.branch3x3.bn.running_var"})
    with pytest.raises(I.InceptionWeightsError, match=r"key 'Mixed_6b.branch7x7_2.conv.weight' has shape"):
        bad = dict(state, **{"Mixed_6b.branch7x7_2.conv.weight": np.zeros((128, 128, 7, 1), np.float32)})
        I.inception_variables_from_state_dict(bad)
    with pytest.raises(I.InceptionWeightsError, match="torchvision"):
        I.inception_variables_from_state_dict(dict(state, **{"AuxLogits.fc.weight": np.zeros((1000, 768))}))
    (tmp_path / "evil.pth").write_bytes(pickle.dumps(print))  # refused by the allowlist, never called
    with pytest.raises(I.InceptionWeightsError, match="refusing to load global builtins.print"):
        I.load_inception_weights(tmp_path / "evil.pth")


# ----------------------------------------------------------------------------------------------------------------
# End to end: a tiny generator, real data from an ImageSource and from an iterable, the statistics cache.


class _TinyG(nn.Module):
    z_dim: int = 8
    c_dim: int = 0

    @nn.compact
    def __call__(self, z, c=None, truncation_psi=1.0):
        return jnp.tanh(nn.Dense(3 * 32 * 32)(z)).reshape(-1, 3, 32, 32) * 1.2


def test_compute_fid_kid_end_to_end_and_cache(tmp_path, weights, monkeypatch):
    inc = weights[3]
    G = _TinyG()
    g_vars = G.init(jax.random.key(0), jnp.zeros((1, 8)))
    source = SyntheticShapes(32, 3, num_images=4)
    batches = [b.images for b in ordered_batches(source, 2)]

    # Expected statistics from the pieces: the same latents, the official uint8 conversion, the extractor.
    gen = []
    for index in range(2):
        z = jax.random.normal(jax.random.fold_in(jax.random.key(7), index), (2, 8))
        u8 = np.clip(np.asarray(G.apply(g_vars, z)) * 127.5 + 128, 0, 255).astype(np.uint8)
        gen.append(np.asarray(I.inception_features(inc, u8)))
    gen = np.concatenate(gen)[:3]  # num_gen=3: the second batch's surplus sample is dropped
    real = np.concatenate([np.asarray(I.inception_features(inc, b)) for b in batches])

    # The Frechet math is tested above; here it is replaced by a recorder (sqrtm of 2048x2048 takes a minute on
    # a small CPU) and the statistics it receives are checked.
    seen = []

    def record(mu1, sigma1, mu2, sigma2):
        seen.append((mu1, sigma1, mu2, sigma2))
        return float(len(seen))

    monkeypatch.setattr(F, "frechet_distance", record)

    def check_fid_inputs(stats):
        mu_g, sigma_g, mu_r, sigma_r = stats
        np.testing.assert_allclose(mu_g, gen.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sigma_g, np.cov(gen, rowvar=False, bias=True), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(mu_r, real.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sigma_r, np.cov(real, rowvar=False, bias=True), rtol=1e-4, atol=1e-6)

    # FID against all 4 real images, KID against the first 3 (subsets of 3 of 3: deterministic): two data passes.
    specs = [F.MetricSpec("fid", "fid", 3, None), F.MetricSpec("kid", "kid", 3, 3)]
    got = F.compute_fid_kid(G, g_vars, source, inc, specs, batch_size=2, seed=7, num_subsets=2, cache_dir=tmp_path)
    check_fid_inputs(seen[-1])
    assert got["fid"] == 1.0 and np.isclose(got["kid"], F.kid(gen, real[:3], 1, 100), rtol=1e-4)
    assert len(list(tmp_path.glob("*-inception-mean_cov-*.npz"))) == 1
    assert len(list(tmp_path.glob("*-inception-all-*.npz"))) == 1

    # Cached: the data is not read again, and the cached statistics are the same.
    def unreadable(index):
        raise AssertionError("read despite the cache")

    source.load = unreadable
    F.compute_fid(G, g_vars, source, inc, num_gen=3, batch_size=2, seed=7, cache_dir=tmp_path)
    check_fid_inputs(seen[-1])

    # An iterable of uint8 NCHW batches (re-chunked to batch_size; not cached without data_desc), and compute_kid.
    F.compute_fid(G, g_vars, iter([np.concatenate(batches)]), inc, 3, 2, seed=7, cache_dir=tmp_path)
    check_fid_inputs(seen[-1])
    assert np.isclose(F.compute_kid(G, g_vars, batches, inc, 3, 2, seed=7, max_real=3), got["kid"], rtol=1e-6)
    assert len(list(tmp_path.glob("*.npz"))) == 2


@pytest.mark.slow  # ~35 s; the StyleGAN2 noise path of sampling stays in test_stylegan2_sampling.py
def test_generator_stats_of_a_stylegan2_use_random_noise(weights):
    """StyleGAN2 has noise inputs: generated statistics use random noise (as the official metrics) drawn from the
    documented key, and work without the caller passing an rng."""
    from stylegan_jax.models import build_generator

    inc = weights[3]
    G = build_generator(cfg="stylegan2", z_dim=8, w_dim=8, img_resolution=16, img_channels=3, channel_base=64,
                        channel_max=8, mapping_layers=1)
    g_vars = jax.jit(G.init)(jax.random.key(0), jnp.zeros((1, 8)), None)
    g_vars = {**g_vars, "params": jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.5 if "noise_strength" in jax.tree_util.keystr(p) else x, g_vars["params"])}
    stats = F.generator_feature_stats(G, g_vars, inc, num_gen=2, batch_size=2, seed=3, capture_all=True)
    key = jax.random.fold_in(jax.random.key(3), 0)
    z = jax.random.normal(key, (2, 8))
    img = jax.jit(lambda v, z, k: G.apply(v, z, None, rngs={"noise": k}))(g_vars, z, jax.random.fold_in(key, 1))
    u8 = np.clip(np.asarray(img) * 127.5 + 128, 0, 255).astype(np.uint8)
    np.testing.assert_allclose(stats.get_all(), np.asarray(I.inception_features(inc, u8)), rtol=1e-4, atol=1e-5)
    const = jax.jit(lambda v, z: G.apply(v, z, None, noise_mode="const"))(g_vars, z)
    assert not np.allclose(np.asarray(const), np.asarray(img))
