"""Parity of the StyleGAN2 resnet discriminator, its weight conversion and the R1 penalty with the official
code (tests/fixtures/d_256.npz, d_64_cond.npz), plus the conversion's and the minibatch-stddev layer's errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stylegan_jax.convert.discriminator import convert_discriminator
from stylegan_jax.losses import LossOptions, d_logistic_loss, d_reg_loss, g_nonsaturating_loss, r1_grad, r1_penalty
from stylegan_jax.networks.discriminator import (
    Discriminator,
    MinibatchStdLayer,
    discriminator_from_official_kwargs,
    minibatch_stddev,
)
from tests.parity_bounds import bound

FIXTURES = ["d_256.npz", "d_64_cond.npz"]


def state_dict(fx) -> dict:
    return {k[len("D/"):]: v for k, v in fx.items() if k.startswith("D/")}


def rel_err(x, ref) -> float:
    return float(np.linalg.norm(np.asarray(x, np.float64) - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module", params=FIXTURES)
def parity(request, load_fixture):
    """Convert once and run logits + R1 in one jitted call per fixture."""
    fx = load_fixture(request.param)
    D_kwargs = fx.meta["D_kwargs"]
    D = discriminator_from_official_kwargs(D_kwargs)
    variables = convert_discriminator(state_dict(fx), D_kwargs)
    gamma = fx.meta["r1_gamma"]

    @jax.jit
    def run(variables, img, c):
        d_apply = lambda x, c: D.apply(variables, x, c)
        grad, logits = r1_grad(d_apply, img, c)
        return logits, grad, r1_penalty(d_apply, img, c, gamma)

    logits, grad, penalty = jax.device_get(run(variables, fx["in/img"], fx["in/c"]))
    return request.param, fx, logits, grad, penalty


def test_logits_match_official(parity):
    name, fx, logits, _, _ = parity
    assert logits.shape == fx["out/logits"].shape
    assert rel_err(logits, fx["out/logits"]) < bound(name, "D logits")


def test_r1_grad_matches_official(parity):
    name, fx, _, grad, _ = parity
    assert grad.shape == fx["out/r1_grad"].shape
    assert rel_err(grad, fx["out/r1_grad"]) < bound(name, "D r1_grad")


def test_r1_penalty_matches_official(parity):
    name, fx, _, _, penalty = parity
    assert penalty.shape == fx["out/r1_penalty"].shape
    assert rel_err(penalty, fx["out/r1_penalty"]) < bound(name, "D r1_penalty")


def test_param_names_mirror_official(load_fixture):
    fx = load_fixture("d_64_cond.npz")
    D = discriminator_from_official_kwargs(fx.meta["D_kwargs"])
    abstract = jax.eval_shape(D.init_params, jax.random.PRNGKey(0))["params"]
    ours = {".".join(k.key for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(abstract)[0]}
    official = {k for k in state_dict(fx) if not k.endswith("resample_filter")}
    assert ours == official
    converted = convert_discriminator(state_dict(fx), fx.meta["D_kwargs"])["params"]
    assert jax.tree.map(np.shape, converted) == jax.tree.map(lambda a: a.shape, abstract)


# ---- conversion errors --------------------------------------------------------------------------------


@pytest.fixture
def cond(load_fixture):
    fx = load_fixture("d_64_cond.npz")
    return dict(state_dict(fx)), fx.meta["D_kwargs"]


def test_convert_unknown_key(cond):
    sd, kw = cond
    sd["b32.conv2.weight"] = sd["b32.conv1.weight"]
    with pytest.raises(ValueError, match=r"b32\.conv2\.weight: unknown"):
        convert_discriminator(sd, kw)


def test_convert_missing_key(cond):
    sd, kw = cond
    del sd["mapping.fc3.bias"]
    with pytest.raises(ValueError, match=r"mapping\.fc3\.bias: missing"):
        convert_discriminator(sd, kw)


def test_convert_misshaped_entry(cond):
    sd, kw = cond
    sd["b16.conv0.weight"] = sd["b16.conv0.weight"][:, :, :2, :2]
    with pytest.raises(ValueError, match=r"b16\.conv0\.weight: expected shape \(32, 32, 3, 3\), got \(32, 32, 2, 2\)"):
        convert_discriminator(sd, kw)


def test_convert_checks_resample_filter(cond):
    sd, kw = cond
    sd["b8.skip.resample_filter"] = np.full((4, 4), 1 / 16, np.float32)
    with pytest.raises(ValueError, match=r"b8\.skip\.resample_filter: differs"):
        convert_discriminator(sd, kw)


def test_unsupported_official_kwargs_raise():
    base = dict(c_dim=0, img_resolution=32, img_channels=3)
    for extra, what in [(dict(architecture="skip"), "architecture"), (dict(foo=1), "foo"),
                        (dict(block_kwargs=dict(conv_clamp=1)), "conv_clamp"),
                        (dict(block_kwargs=dict(freeze_layers=2)), "freeze"),
                        (dict(epilogue_kwargs=dict(activation="tanh")), "tanh")]:
        with pytest.raises(ValueError, match=what):
            discriminator_from_official_kwargs({**base, **extra})


# ---- minibatch standard deviation ---------------------------------------------------------------------


def mbstd_reference(x: np.ndarray, group_size: int) -> np.ndarray:
    """Direct definition (NHWC, one stat channel): sample i is in group i % (N / G)."""
    n = x.shape[0] // group_size
    stat = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        members = x[[j for j in range(x.shape[0]) if j % n == i % n]].astype(np.float64)
        stat[i] = np.sqrt(members.var(axis=0) + 1e-8).mean()
    return np.concatenate([x, np.broadcast_to(stat[:, None, None, None], x.shape[:3] + (1,))], axis=-1)


def test_mbstd_strided_grouping():
    x = np.random.default_rng(0).normal(size=(6, 3, 3, 4)).astype(np.float32)
    y = np.asarray(minibatch_stddev(jnp.asarray(x), group_size=3))
    np.testing.assert_allclose(y, mbstd_reference(x, 3), rtol=1e-5, atol=1e-6)
    # Samples 0, 2, 4 share a group, not 0, 1, 2.
    assert y[0, 0, 0, -1] == y[2, 0, 0, -1] == y[4, 0, 0, -1] != y[1, 0, 0, -1]
    # A group larger than the batch, and None, use the whole batch.
    np.testing.assert_allclose(np.asarray(MinibatchStdLayer(8).apply({}, jnp.asarray(x))), mbstd_reference(x, 6),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(minibatch_stddev(jnp.asarray(x), None)), mbstd_reference(x, 6),
                               rtol=1e-5, atol=1e-6)


def test_mbstd_batch_not_divisible_raises():
    x = jnp.zeros((6, 4, 4, 8))
    with pytest.raises(ValueError, match="batch size 6 is not divisible by the group size 4"):
        MinibatchStdLayer(4).apply({}, x)


# ---- packing (PacGAN) ---------------------------------------------------------------------------------


def _packing_pair():
    """A packing D (pack 2, RGB) and the plain D of 6-channel images with the same variables."""
    kw = dict(c_dim=0, img_resolution=16, channel_base=256, channel_max=16, mbstd_group_size=2)
    return Discriminator(img_channels=3, pack=2, **kw), Discriminator(img_channels=6, **kw)


def _pairs(x):
    """Pack j of a batch of N = images j and j + N / 2, stacked along the channels."""
    n = x.shape[0]
    return jnp.concatenate([x[: n // 2], x[n // 2 :]], axis=1)


def test_pack_scores_channel_stacked_pairs():
    D, D6 = _packing_pair()
    variables = D.init_params(jax.random.PRNGKey(0), batch_size=3)   # rounded up to whole packs
    assert variables["params"]["b16"]["fromrgb"]["weight"].shape[2] == 6
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 3, 16, 16))
    c = jnp.zeros((8, 0))
    logits = np.asarray(D.apply(variables, x, c))
    pair_logits = np.asarray(D6.apply(variables, _pairs(x), jnp.zeros((4, 0))))
    assert logits.shape == (8, 1)
    np.testing.assert_array_equal(logits, np.tile(pair_logits, (2, 1)))
    # The pack sees both members: giving image 0 another partner changes its logit.
    swapped = np.asarray(D.apply(variables, x[jnp.array([0, 1, 2, 3, 5, 4, 6, 7])], c))
    assert abs(swapped[0, 0] - logits[0, 0]) > 1e-4


def test_pack_r1_is_the_penalty_of_the_pack_function():
    D, D6 = _packing_pair()
    variables = D.init_params(jax.random.PRNGKey(0), batch_size=2)
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 3, 16, 16))
    loss, aux = d_reg_loss(D, variables["params"], x, jnp.zeros((4, 0)), opts=LossOptions(r1_gamma=3.0))
    grad = jax.grad(lambda y: D6.apply(variables, y, jnp.zeros((2, 0))).sum())(_pairs(x))
    per_pack = np.sum(np.square(np.asarray(grad, np.float64)), axis=(1, 2, 3))
    np.testing.assert_allclose(float(loss), per_pack.mean() * 3.0 / 2, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(aux["r1_penalty"]).mean(), per_pack.mean(), rtol=1e-5)


def test_pack_refuses_what_it_cannot_score():
    with pytest.raises(ValueError, match="pack must be >= 1"):
        Discriminator(c_dim=0, img_resolution=16, img_channels=3, pack=0)
    with pytest.raises(ValueError, match="needs an unconditional D"):
        Discriminator(c_dim=3, img_resolution=16, img_channels=3, pack=2)
    D, _ = _packing_pair()
    variables = D.init_params(jax.random.PRNGKey(0), batch_size=2)
    with pytest.raises(ValueError, match="a batch of 3 images is not a multiple of pack=2"):
        D.apply(variables, jnp.zeros((3, 3, 16, 16)), jnp.zeros((3, 0)))


# ---- auxiliary class head (AC-GAN) --------------------------------------------------------------------


def _class_head_pair():
    """A conditional D with the class head and the same D without it."""
    kw = dict(c_dim=3, img_resolution=16, img_channels=3, channel_base=256, channel_max=16, mbstd_group_size=2,
              mapping_num_layers=1)
    return Discriminator(class_head=True, **kw), Discriminator(**kw)


def test_class_head_reads_the_image_and_leaves_the_logits_alone():
    D, plain = _class_head_pair()
    variables = D.init_params(jax.random.PRNGKey(0), batch_size=4)
    assert variables["params"]["b4"]["cls"]["weight"].shape == (16, 3)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 3, 16, 16))
    c = jnp.eye(3)[jnp.array([0, 1, 2, 0])]
    logits, classes = D.apply(variables, x, c, return_classes=True)
    assert logits.shape == (4, 1) and classes.shape == (4, 3)
    # The realness logits are the official D's (the head only adds parameters), with or without return_classes.
    without_head = {"params": {**variables["params"], "b4": {k: v for k, v in variables["params"]["b4"].items()
                                                             if k != "cls"}}}
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(plain.apply(without_head, x, c)))
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(D.apply(variables, x, c)))
    # The prediction is the image's, not the label's: other labels, the same class logits; other images, others.
    _, classes_other_c = D.apply(variables, x, c[::-1], return_classes=True)
    np.testing.assert_array_equal(np.asarray(classes), np.asarray(classes_other_c))
    _, classes_other_x = D.apply(variables, x[::-1], c, return_classes=True)
    assert np.max(np.abs(np.asarray(classes_other_x) - np.asarray(classes))) > 1e-4


def test_class_head_refuses_what_it_cannot_predict():
    with pytest.raises(ValueError, match="class_head=True needs a conditional D"):
        Discriminator(c_dim=0, img_resolution=16, img_channels=3, class_head=True)
    _, plain = _class_head_pair()
    variables = plain.init_params(jax.random.PRNGKey(0), batch_size=2)
    with pytest.raises(ValueError, match="return_classes=True needs class_head=True"):
        plain.apply(variables, jnp.zeros((2, 3, 16, 16)), jnp.zeros((2, 3)), return_classes=True)


def test_unprojected_d_realness_ignores_the_labels_and_its_head_still_reads_the_image():
    kw = dict(c_dim=3, img_resolution=16, img_channels=3, channel_base=256, channel_max=16, mbstd_group_size=2,
              mapping_num_layers=1, class_head=True)
    D, projected = Discriminator(project_labels=False, **kw), Discriminator(**kw)
    variables = D.init_params(jax.random.PRNGKey(0), batch_size=4)
    assert "mapping" not in variables["params"] and variables["params"]["b4"]["out"]["weight"].shape == (16, 1)
    assert "mapping" in projected.init_params(jax.random.PRNGKey(0), batch_size=4)["params"]
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 3, 16, 16))
    c = jnp.eye(3)[jnp.array([0, 1, 2, 0])]
    logits, classes = D.apply(variables, x, c, return_classes=True)
    logits_other_c, classes_other_c = D.apply(variables, x, c[::-1], return_classes=True)
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(logits_other_c))
    np.testing.assert_array_equal(np.asarray(classes), np.asarray(classes_other_c))
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(D.apply(variables, x, None)))
    logits_other_x, _ = D.apply(variables, x[::-1], c, return_classes=True)
    assert np.max(np.abs(np.asarray(logits_other_x) - np.asarray(logits))) > 1e-4
    with pytest.raises(ValueError, match="project_labels=False needs class_head=True"):
        Discriminator(project_labels=False, **{**kw, "class_head": False})
    # Unconditional: nothing to project, the setting changes nothing.
    Discriminator(c_dim=0, img_resolution=16, img_channels=3, project_labels=False)


# ---- logistic losses ----------------------------------------------------------------------------------


def test_logistic_losses():
    real, fake = jnp.array([[2.0], [-1.0]]), jnp.array([[0.5], [-3.0]])
    sp = lambda v: np.log1p(np.exp(np.asarray(v)))
    np.testing.assert_allclose(g_nonsaturating_loss(fake), sp(-fake), rtol=1e-6)
    np.testing.assert_allclose(d_logistic_loss(real, fake), sp(fake) + sp(-real), rtol=1e-6)
