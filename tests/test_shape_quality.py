"""The synthetic-shapes quality metric: the shipped classifier scores real shapes near perfect and non-shapes near
zero, FID/KID in its feature space separate real splits from noise, the generator path follows the FID protocol,
the plot writer, the weight-file checks, and the training loop writes the metric and images/quality.png.

Classifier forwards use batches of at most 250 32x32 images (one compilation per batch shape)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stylegan_jax.data import SyntheticShapes
from stylegan_jax.metrics import fid as F
from stylegan_jax.metrics import shape_quality as S
from stylegan_jax.metrics.plot import quality_plot


def _outputs(variables, images_nhwc):
    """Classifier outputs in padded batches of 250 (one compilation per resolution)."""
    out = []
    for i in range(0, len(images_nhwc), 250):
        chunk = images_nhwc[i:i + 250]
        padded = np.concatenate([chunk, np.zeros((250 - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        out.append(np.asarray(S.classifier_outputs(variables, padded, layout="NHWC"))[:len(chunk)])
    return np.concatenate(out)


@pytest.fixture(scope="module")
def clf():
    return S.load_shape_classifier()


@pytest.fixture(scope="module")
def real():
    """300 + 300 images of the training runs' set (content seed 0) and their classes."""
    src = SyntheticShapes(32, 3, num_images=600, seed=0)
    images = np.stack([src.load(i)[0] for i in range(600)])
    return images, np.arange(600) % 3


@pytest.fixture(scope="module")
def real_out(clf, real):
    return _outputs(clf[0], real[0])


@pytest.fixture(scope="module")
def noise():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)


def test_shipped_weights_match_their_metadata(clf):
    variables, meta = clf
    assert meta["fingerprint"] == S.fingerprint(variables)
    assert meta["classes"] == list(S.CLASS_NAMES) and meta["resolution"] == S.RESOLUTION
    assert meta["heldout"]["real_precision"] >= 0.98
    assert set(meta["heldout"]) >= {f"{k}_precision" for k in S.NEGATIVE_KINDS}  # trained with every kind


def test_real_shapes_score_near_perfect(real, real_out):
    _, labels = real
    q = S.shape_quality_from_outputs(real_out, real_out, kid_subsets=2)
    assert q.precision >= 0.97 and q.real_precision == q.precision
    probs = real_out[:, S.FEATURE_DIM:]
    assert np.mean(probs[:, :3].argmax(1) == labels) >= 0.97
    # The set's classes are balanced; the histogram says so (and "other" is nearly empty).
    np.testing.assert_allclose(q.hist[:3], [1 / 3] * 3, atol=0.05)
    assert q.hist[3] <= 0.03


def test_noise_and_non_shapes_score_near_zero(clf, real, real_out, noise):
    q = S.shape_quality_from_outputs(_outputs(clf[0], noise), real_out, kid_subsets=2)
    assert q.precision <= 0.02 and q.hist[3] >= 0.98
    rng = np.random.default_rng(5)
    for kind in ("blur", "blob", "blend", "smooth_noise"):
        neg = S.negative_examples(rng, real[0], real[1], 100, (kind,))
        assert S.shape_quality_from_outputs(_outputs(clf[0], neg), real_out, kid_subsets=2).precision <= 0.1, kind


def _set_shapes_in_scene(rng, n):
    """n of the set's own shapes (circle, square, triangle in turn, the set's sizes) drawn by the renderer of the
    shape negatives."""
    images = []
    for i in range(n):
        k, size = i % 3, rng.uniform(0.25, 0.55)
        img = S._scene(rng, 32, lambda x, y, k=k, size=size: S._set_sdf(k, x, y, size), 1.35 * size if k else size,
                       size)
        images.append(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8))
    return np.stack(images), np.arange(n) % 3


def test_shapes_between_the_classes_score_low(clf, real, real_out):
    # Rounded squares, superellipses, bulging or pinched squares, rounded triangles, stretched and cut shapes,
    # wobbly discs: in the set's style but not a clean circle, square or triangle (the defect of the first
    # classifier: soft rounded discs counted as squares).
    rng = np.random.default_rng(7)
    for kind in S.SHAPE_NEGATIVE_KINDS:
        neg = S.negative_examples(rng, real[0], real[1], 100, (kind,))
        q = S.shape_quality_from_outputs(_outputs(clf[0], neg), real_out, kid_subsets=2)
        assert q.precision <= 0.1, (kind, q.precision)
    # The control: the same renderer drawing the set's own shapes scores them as shapes of the right class, so
    # the negatives above score low for their outline, not for a style of their own.
    images, labels = _set_shapes_in_scene(rng, 150)
    out = _outputs(clf[0], images)
    probs = out[:, S.FEATURE_DIM:]
    assert S.shape_quality_from_outputs(out, real_out, kid_subsets=2).precision >= 0.9
    assert np.mean(probs[:, :3].argmax(1) == labels) >= 0.97
    with pytest.raises(ValueError, match="unknown negative kinds"):
        S.negative_examples(rng, real[0], real[1], 2, ("squircle",))


def test_fid_kid_small_for_real_splits_large_against_noise(clf, real_out, noise):
    a, b = real_out[:300], real_out[300:]
    same = S.shape_quality_from_outputs(a, b, kid_subsets=20, kid_subset_size=300)
    vs_noise = S.shape_quality_from_outputs(_outputs(clf[0], noise), b, kid_subsets=20, kid_subset_size=300)
    assert vs_noise.fid > 50 * max(same.fid, 1e-3) and vs_noise.kid > 50 * max(abs(same.kid), 1e-4)
    # The statistics are those of fid.py on the feature columns.
    s1, s2 = F.FeatureStats(), F.FeatureStats()
    s1.append(a[:, :S.FEATURE_DIM])
    s2.append(b[:, :S.FEATURE_DIM])
    assert np.isclose(same.fid, F.frechet_distance(*s1.get_mean_cov(), *s2.get_mean_cov()), rtol=1e-9)
    assert np.isclose(same.kid, F.kid(a[:, :S.FEATURE_DIM], b[:, :S.FEATURE_DIM], 20, 300, 0), rtol=1e-9)


def test_any_resolution_and_channel_count(clf, real_out):
    # 64x64 renders, box-downsampled to 32: still recognised; grayscale repeated to RGB and RGBA work too.
    src = SyntheticShapes(64, 3, num_images=60, seed=0)
    big = np.stack([src.load(i)[0] for i in range(60)])
    assert S.shape_quality_from_outputs(_outputs(clf[0], big), real_out, kid_subsets=2).precision >= 0.9
    gray = SyntheticShapes(32, 1, num_images=4).load(0)[0][None]
    rgba = SyntheticShapes(32, 4, num_images=4).load(0)[0][None]
    assert S.classifier_outputs(clf[0], gray, layout="NHWC").shape == (1, S.FEATURE_DIM + 4)
    assert S.classifier_outputs(clf[0], rgba, layout="NHWC").shape == (1, S.FEATURE_DIM + 4)
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        S.classifier_outputs(clf[0], np.zeros((1, 2, 32, 32), np.uint8))


class _TinyG:
    """A stand-in generator (z -> tanh(dense)), enough for the metric's generator path."""

    z_dim, c_dim, img_resolution, img_channels = 8, 0, 32, 3

    def apply(self, variables, z, c=None, truncation_psi=1.0, rngs=None):
        return jnp.tanh(z @ variables["w"]).reshape(-1, 3, 32, 32) * 1.2


def test_generator_path_follows_the_fid_protocol(clf, real_out):
    G = _TinyG()
    g_vars = {"w": jax.random.normal(jax.random.key(0), (8, 3 * 32 * 32))}
    ev = S.ShapeQualityEvaluator(G, real_out, classifier=clf, batch_size=4)
    got = ev.outputs(g_vars, 6, seed=7)
    # The same latents as fid.py's generator pass: fold_in(key(seed), batch), uint8 as the official metrics.
    want = []
    for index in range(2):
        z = jax.random.normal(jax.random.fold_in(jax.random.key(7), index), (4, 8))
        u8 = np.clip(np.asarray(G.apply(g_vars, z)) * 127.5 + 128, 0, 255).astype(np.uint8)
        want.append(np.asarray(S.classifier_outputs(clf[0], u8)))
    np.testing.assert_allclose(got, np.concatenate(want)[:6], rtol=1e-5, atol=1e-5)
    q = ev(g_vars, 6, seed=7, kid_subsets=2)
    assert q.num == 6 and q.precision <= 0.2  # noise-like images are not shapes
    d = q.as_dict()
    assert {"shapes_precision", "shapes_fid", "shapes_kid", "shapes_circle", "shapes_real_other"} <= set(d)
    # An ImageSource as the real side gives the same rows as classifying its images directly.
    src = SyntheticShapes(32, 3, num_images=10, seed=0)
    ev2 = S.ShapeQualityEvaluator(G, src, num_real=10, classifier=clf, batch_size=4)
    np.testing.assert_allclose(ev2.real, real_out[:10], rtol=1e-5, atol=1e-5)


def test_weight_file_errors_name_the_problem(tmp_path, clf):
    with pytest.raises(FileNotFoundError, match="shapes-classifier"):
        S.load_shape_classifier(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(ValueError, match="not weights of this ShapeClassifier"):
        S.load_shape_classifier(bad)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        S.load_shape_classifier(tmp_path / "junk.npz")
    # save -> load round trip.
    path = tmp_path / "copy.npz"
    path.write_bytes(S.save_shape_classifier(clf[0], clf[1]))
    v, meta = S.load_shape_classifier(path)
    assert S.fingerprint(v) == S.fingerprint(clf[0]) and meta == clf[1]


@pytest.mark.extended  # beyond CI's time budget: run with -m extended
@pytest.mark.slow  # two 40-step trainings: ~30 s idle, 150 s on a loaded 2-core machine
def test_training_is_deterministic_and_learns():
    kw = dict(steps=40, batch_size=32, pool_size=60, lr=3e-3)
    v1, m1 = S.train_shape_classifier(**kw, evaluate=False)
    v2, _ = S.train_shape_classifier(**kw, evaluate=False)
    assert S.fingerprint(v1) == S.fingerprint(v2) == m1["fingerprint"]
    assert m1["final_loss"] < 0.8 * m1["first_loss"]


def test_quality_plot():
    history = [{"kimg": k / 2, "Metrics/shapes_precision": k / 10, "Metrics/shapes_fid": 40 / (k + 1)}
               for k in range(9)] + [{"kimg": 4.5, "Loss/G": 1.0}]
    img = np.asarray(quality_plot(history, title="run"))
    assert img.shape == (22 + 2 * 200, 640, 3)
    # One coloured curve per panel (the first two palette colours).
    for color, rows in (((31, 119, 180), slice(22, 222)), ((214, 39, 40), slice(222, 422))):
        assert (np.abs(img[rows].astype(int) - color).sum(-1) < 30).sum() > 100
    assert np.asarray(quality_plot([])).shape[0] > 0
    with pytest.raises(ValueError, match="width"):
        quality_plot(history, width=10)


def test_metrics_json_fields_are_plain_numbers(real_out):
    q = S.shape_quality_from_outputs(real_out[:50], real_out[50:100], kid_subsets=2)
    json.dumps(q.as_dict())  # no NumPy scalars
    assert all(isinstance(v, float) for v in q.as_dict().values())


def _tiny_config(total_kimg: float):
    from stylegan_jax.config import base_config

    c = base_config()
    c.model.z_dim = c.model.w_dim = 8
    c.model.mapping_layers = 1
    c.model.num_layers = 3
    c.model.channel_base = c.model.d_channel_base = 128
    c.model.channel_max = c.model.d_channel_max = 8
    c.model.mbstd_group_size = 2
    c.data.resolution = 32
    c.data.synthetic_size = 32
    c.train.batch_size = 4
    c.train.total_kimg = total_kimg
    c.train.r1_gamma = 0.05
    c.train.d_reg_interval = 2
    c.log.tick_kimg = c.log.image_kimg = c.log.checkpoint_kimg = 0.008
    c.log.grid_size = 2
    c.log.progress_bar = False
    c.log.metrics = "shapes"
    c.log.metrics_kimg = 0.008
    c.log.metrics_num = 8
    return c


@pytest.mark.slow  # compiles a (tiny) StyleGAN3 train step: 80 s to 12 minutes on a shared 2-core machine
def test_loop_logs_the_metric_and_writes_quality_png(tmp_path):
    from PIL import Image

    from stylegan_jax.train.loop import train

    lines = []
    train(_tiny_config(0.016), tmp_path / "run", log=lines.append)  # 4 steps: evaluations at steps 2 and 4
    records = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "Metrics/shapes_precision" in r]
    assert [r["step"] for r in evals] == [2, 4]
    want = {f"Metrics/shapes_{k}" for k in ("precision", "fid", "kid", "real_precision", "circle", "square",
                                            "triangle", "other", "real_circle", "real_other")}
    assert want <= set(evals[-1]) and all(np.isfinite(evals[-1][k]) for k in want)
    assert 0 <= evals[-1]["Metrics/shapes_precision"] <= 1
    assert evals[-1]["Metrics/shapes_real_precision"] >= 0.9  # the real side: the training set
    assert sum(1 for s in lines if s.startswith("shapes precision")) == 2
    png = tmp_path / "run" / "images" / "quality.png"
    assert png.is_file() and Image.open(png).size[0] == 640
    assert any((tmp_path / "run" / "tensorboard").iterdir())


def test_loop_refuses_shapes_on_other_data(tmp_path):
    from PIL import Image

    from stylegan_jax.train.loop import train

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    c = _tiny_config(0.008)
    c.data.source = "folder"
    c.data.path = str(folder)
    with pytest.raises(ValueError, match="synthetic shapes"):
        train(c, tmp_path / "run")
    c = _tiny_config(0.008)
    c.data.resolution = 16
    with pytest.raises(ValueError, match="resolution >= 32"):
        train(c, tmp_path / "run16")
