"""Parity of the training phases (Gmain, Dmain, Dreg) with the official StyleGAN2Loss on tests/fixtures/loss_32.npz,
and the loss options the fixture does not cover (discriminator blur, style mixing).

The fixture pins the phase semantics: gradients of each phase's mean loss w.r.t. every parameter; in Dmain the
official G runs with update_emas=True (each synthesis layer updates magnitude_ema from its input, then reads it).
The default run compiles G with the reference filtered_lrelu (its backward compiles ~4x faster on CPU); the
'fast' path and the EMA-semantics counter-check are marked slow.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stylegan_jax import parity
from stylegan_jax.convert.discriminator import convert_discriminator
from stylegan_jax.convert.generator import convert_generator, strip_prefix
from stylegan_jax.losses import (
    LossOptions,
    blur_images,
    blur_sigma_schedule,
    class_cross_entropy,
    d_main_loss,
    g_main_loss,
    mode_seeking_loss,
    run_discriminator,
    run_generator,
)
from stylegan_jax.models import build_generator
from stylegan_jax.networks.discriminator import Discriminator, discriminator_from_official_kwargs
from stylegan_jax.parity.losses import PHASES, check_losses, convert_d_gradients, official_gradients

FIXTURE = Path(__file__).parent / "fixtures" / "loss_32.npz"
SCALAR_RTOL = 1e-4
GRAD_RTOL = 1e-3


@pytest.fixture(scope="module")
def fx() -> parity.Fixture:
    return parity.Fixture(FIXTURE)


def _check(fx: parity.Fixture, impl: str) -> list[parity.Result]:
    return check_losses(fx, rtol=SCALAR_RTOL, grad_rtol=GRAD_RTOL, impl=impl)


@pytest.fixture(scope="module")
def results(fx) -> list[parity.Result]:
    return _check(fx, impl="ref")


def _failures(results: list[parity.Result]) -> str:
    return "\n".join(r.line() for r in results if not r.ok)


def test_scalar_losses_match_official(results):
    scalars = [r for r in results if r.name.startswith("loss ")]
    assert sorted(r.name for r in scalars) == sorted(f"loss {p}" for p in PHASES)
    assert all(r.ok for r in scalars), _failures(scalars)


def test_every_gradient_of_every_phase_matches_official(fx, results):
    grads = [r for r in results if r.name.startswith("grad ")]
    # Every official gradient is compared, plus D's b4.out.bias in Dreg, which has no official gradient
    # (torch leaves it None: the R1 term does not depend on the last bias) and must be exactly zero here.
    n_official = sum(k.startswith("grad/") for k in fx.arrays)
    assert len(grads) == n_official + 1
    assert [r.name for r in grads if "official: None" in r.name] == ["grad Dreg D.b4.out.bias (official: None)"]
    assert all(r.ok for r in grads), _failures(grads)


@pytest.mark.slow
def test_gradients_match_official_with_fast_filtered_lrelu(fx):
    results = _check(fx, impl="fast")
    assert all(r.ok for r in results), _failures(results)


@pytest.mark.slow
def test_dmain_gradients_need_the_ema_update(fx):
    """Without update_emas the Dmain gradients miss the fixture by far more than the tolerance: the fixture
    really pins the update-then-read order of magnitude_ema."""
    G, g_vars = convert_generator(strip_prefix(fx.arrays, "G/"), fx.meta["G_kwargs"], impl="ref")
    D = discriminator_from_official_kwargs(fx.meta["D_kwargs"])
    d_params = convert_discriminator(strip_prefix(fx.arrays, "D/"), fx.meta["D_kwargs"])["params"]
    g_state = {k: v for k, v in g_vars.items() if k != "params"}
    z, real = jnp.asarray(fx.get("in/z")), jnp.asarray(fx.get("in/real"))
    c = jnp.zeros((z.shape[0], 0))
    grad = jax.jit(jax.grad(lambda p: d_main_loss(G, D, p, g_vars["params"], g_state, real, c, z, c,
                                                  opts=LossOptions(r1_gamma=1.0), update_emas=False)[0]))(d_params)
    ref, _ = convert_d_gradients(strip_prefix(fx.arrays, "D/"), official_gradients(fx.arrays, "Dmain", "D"),
                                 fx.meta["D_kwargs"])
    rels = jax.tree.map(lambda a, b: float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)), grad, ref)
    assert max(jax.tree.leaves(rels)) > 3 * GRAD_RTOL


# ---- discriminator blur (StyleGAN3-R) ---------------------------------------------------------------------


def official_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Direct definition: taps 2^-(x/sigma)^2 on |x| <= floor(3 sigma), normalised, separable, zero padding."""
    size = int(np.floor(sigma * 3))
    if size <= 0:
        return img
    taps = np.exp2(-np.square(np.arange(-size, size + 1) / sigma))
    taps /= taps.sum()
    n, ch, h, w = img.shape
    pad = np.pad(img.astype(np.float64), ((0, 0), (0, 0), (size, size), (size, size)))
    rows = sum(taps[k] * pad[:, :, :, k:k + w] for k in range(2 * size + 1))
    return sum(taps[k] * rows[:, :, k:k + h, :] for k in range(2 * size + 1))


@pytest.mark.parametrize("sigma", [0.0, 0.3, 1.0, 1.7, 2.5])
def test_blur_matches_official_definition(sigma):
    img = np.random.default_rng(0).normal(size=(2, 3, 12, 12)).astype(np.float32)
    ours = jax.jit(lambda x, s: blur_images(x, s, max_sigma=2.5))(jnp.asarray(img), jnp.float32(sigma))
    np.testing.assert_allclose(np.asarray(ours), official_blur(img, sigma), atol=1e-6)


def test_blur_schedule():
    opts = LossOptions(blur_init_sigma=10.0, blur_fade_kimg=200.0)
    assert float(blur_sigma_schedule(opts, 0)) == 10.0
    assert float(blur_sigma_schedule(opts, 50_000)) == pytest.approx(7.5)
    assert float(blur_sigma_schedule(opts, 400_000)) == 0.0
    assert float(blur_sigma_schedule(LossOptions(blur_init_sigma=10.0, blur_fade_kimg=0.0), 0)) == 0.0
    assert blur_images(jnp.ones((1, 1, 4, 4)), 3.0, max_sigma=0.0).shape == (1, 1, 4, 4)  # static no-op


# ---- style mixing (off for StyleGAN3, the official StyleGAN2 config uses 0.9) ----------------------------------


def test_style_mixing_takes_ws_after_a_cutoff_from_fresh_latents():
    from stylegan_jax.models import build_generator

    G = build_generator(cfg="t", z_dim=4, w_dim=4, img_resolution=8, img_channels=1, channel_base=32, channel_max=4,
                        mapping_layers=1, impl="ref", num_layers=2, num_critical=1, margin_size=2)
    z = jax.random.normal(jax.random.PRNGKey(1), (3, 4))
    c = jnp.zeros((3, 0))
    g_vars = jax.jit(G.init)(jax.random.PRNGKey(0), z, c)
    g_state = {k: v for k, v in g_vars.items() if k != "params"}
    run = jax.jit(lambda key, prob: run_generator(G, g_vars["params"], g_state, z, c, style_mixing_prob=prob,
                                                  rng=key)[1], static_argnums=1)
    plain = np.asarray(run(jax.random.PRNGKey(2), 0.0))
    seen_cutoffs = set()
    for seed in range(6):
        mixed = np.asarray(run(jax.random.PRNGKey(seed), 1.0))
        same = np.all(np.isclose(mixed, plain), axis=(0, 2))  # per ws index
        cutoff = int(np.argmin(same))
        assert 1 <= cutoff < G.num_ws and same[:cutoff].all() and not same[cutoff:].any()
        seen_cutoffs.add(cutoff)
    assert len(seen_cutoffs) > 1


# ---- auxiliary classifier (AC-GAN) -------------------------------------------------------------------------------


def _class_models():
    G = build_generator(cfg="t", z_dim=4, w_dim=4, c_dim=3, img_resolution=8, img_channels=1, channel_base=32,
                        channel_max=4, mapping_layers=1, impl="ref", num_layers=2, num_critical=1, margin_size=2)
    D = Discriminator(c_dim=3, img_resolution=8, img_channels=1, channel_base=32, channel_max=4, mbstd_group_size=2,
                      mapping_num_layers=1, class_head=True)
    return G, D


def _class_state():
    """The models of :func:`_class_models` with their initial training state split as the losses take it."""
    from stylegan_jax.train.state import TrainConfig, create_train_state

    G, D = _class_models()
    state = create_train_state(G, D, TrainConfig(batch_size=4), jax.random.PRNGKey(0))
    g_state = {k: v for k, v in state.G.items() if k != "params"}
    return G, D, state.G["params"], state.D["params"], g_state


def test_class_cross_entropy():
    logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    c = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    lse = np.log(np.exp([2.0, 0.0, -1.0]).sum())
    np.testing.assert_allclose(np.asarray(class_cross_entropy(logits, c)), [lse - 2.0, np.log(3.0)], rtol=1e-6)
    with pytest.raises(ValueError, match="class logits .* and labels .* differ"):
        class_cross_entropy(logits, c[:, :2])


def test_class_losses_add_the_head_cross_entropy_of_fakes_to_g_and_of_reals_to_d():
    G, D, g_params, d_params, g_state = _class_state()
    z = jax.random.normal(jax.random.PRNGKey(2), (4, 4))
    gen_c = jnp.eye(3)[jnp.array([0, 1, 2, 1])]
    real_c = jnp.eye(3)[jnp.array([2, 2, 0, 1])]
    real = jnp.tanh(jax.random.normal(jax.random.PRNGKey(3), (4, 1, 8, 8)))
    w = 0.7
    plain, with_class = LossOptions(r1_gamma=1.0), LossOptions(r1_gamma=1.0, class_weight=w)

    # Gmain: the official loss plus w x the head's cross-entropy of G's fakes against the labels G was given.
    loss0, _ = g_main_loss(G, D, g_params, d_params, g_state, z, gen_c, opts=plain)
    loss1, aux = g_main_loss(G, D, g_params, d_params, g_state, z, gen_c, opts=with_class)
    img, _, _ = run_generator(G, g_params, g_state, z, gen_c)
    _, fake_classes = run_discriminator(D, d_params, img, gen_c, return_classes=True)
    ce_fake = float(jnp.mean(class_cross_entropy(fake_classes, gen_c)))
    np.testing.assert_allclose(float(aux["loss_class"]), ce_fake, rtol=1e-5)
    np.testing.assert_allclose(float(loss1), float(loss0) + w * ce_fake, rtol=1e-5)
    grad = jax.grad(lambda p: g_main_loss(G, D, p, d_params, g_state, z, gen_c, opts=with_class)[0])(g_params)
    grad0 = jax.grad(lambda p: g_main_loss(G, D, p, d_params, g_state, z, gen_c, opts=plain)[0])(g_params)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(grad0),
                                                                strict=True))
    assert diff > 1e-6  # the class term reaches G
    # g_class_weight weighs G's class term alone (D's stays class_weight, below); 0 leaves G the official loss.
    loss_g, _ = g_main_loss(G, D, g_params, d_params, g_state, z, gen_c,
                            opts=LossOptions(r1_gamma=1.0, class_weight=w, g_class_weight=0.2))
    np.testing.assert_allclose(float(loss_g), float(loss0) + 0.2 * ce_fake, rtol=1e-5)
    loss_g0, _ = g_main_loss(G, D, g_params, d_params, g_state, z, gen_c,
                             opts=LossOptions(r1_gamma=1.0, class_weight=w, g_class_weight=0.0))
    np.testing.assert_allclose(float(loss_g0), float(loss0), rtol=1e-6)

    # Dmain: plus w x the head's cross-entropy of the reals only; the fakes' labels do not train the head.
    dl0, (aux0, _) = d_main_loss(G, D, d_params, g_params, g_state, real, real_c, z, gen_c, opts=plain)
    dl1, (aux1, _) = d_main_loss(G, D, d_params, g_params, g_state, real, real_c, z, gen_c, opts=with_class)
    _, real_classes = run_discriminator(D, d_params, real, real_c, return_classes=True)
    ce_real = float(jnp.mean(class_cross_entropy(real_classes, real_c)))
    np.testing.assert_allclose(float(aux1["loss_class"]), ce_real, rtol=1e-5)
    np.testing.assert_allclose(float(dl1), float(dl0) + w * ce_real, rtol=1e-5)
    dl2, _ = d_main_loss(G, D, d_params, g_params, g_state, real, real_c, z, gen_c,
                         opts=LossOptions(r1_gamma=1.0, class_weight=w, g_class_weight=0.0))
    np.testing.assert_allclose(float(dl2), float(dl1), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(aux1["real_logits"]), np.asarray(aux0["real_logits"]))
    head_grad = lambda c: jax.grad(lambda p: d_main_loss(G, D, p, g_params, g_state, real, real_c, z, c,
                                                         opts=with_class)[0])(d_params)["b4"]["cls"]
    # The head's gradient is the reals' alone: the same whatever labels the fakes carry.
    np.testing.assert_allclose(np.asarray(head_grad(gen_c)["weight"]), np.asarray(head_grad(gen_c[::-1])["weight"]),
                               rtol=1e-6, atol=1e-8)
    assert float(jnp.max(jnp.abs(head_grad(gen_c)["weight"]))) > 0


# ---- mode-seeking term --------------------------------------------------------------------------------------------


def test_mode_seeking_loss_is_large_for_a_collapse_and_counts_only_pairs_with_one_label():
    z = jax.random.normal(jax.random.PRNGKey(0), (4, 8))
    diverse = jax.random.uniform(jax.random.PRNGKey(1), (4, 3, 8, 8), minval=-1, maxval=1)
    collapsed = jnp.broadcast_to(diverse[:1], diverse.shape) + 0.01 * diverse
    none = jnp.zeros((4, 0))
    d = float(mode_seeking_loss(diverse, z, none))
    assert float(mode_seeking_loss(collapsed, z, none)) > 20 * d
    # By hand: the mean over the 6 pairs of mean|z_i - z_j| / mean|x_i - x_j|.
    x, zz = np.asarray(diverse).reshape(4, -1), np.asarray(z)
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    expect = np.mean([1 / (np.abs(x[i] - x[j]).mean() / np.abs(zz[i] - zz[j]).mean() + 1e-5) for i, j in pairs])
    np.testing.assert_allclose(d, expect, rtol=1e-5)
    # Conditional: only pairs with the same label count; samples 0 and 2 share one, so only their pair does.
    c = jnp.eye(3)[jnp.array([0, 1, 0, 2])]
    mixed = diverse.at[2].set(diverse[0] + 0.01)
    only = 1 / (np.abs(x[0] - x[0] - 0.01).mean() / np.abs(zz[0] - zz[2]).mean() + 1e-5)
    np.testing.assert_allclose(float(mode_seeking_loss(mixed, z, c)), only, rtol=1e-4)
    assert float(mode_seeking_loss(mixed, z, none)) < only / 3
    assert float(mode_seeking_loss(diverse, z, jnp.eye(4))) == 0.0  # no two share a label
    with pytest.raises(ValueError, match="4 images, 3 latents"):
        mode_seeking_loss(diverse, z[:3], none)


def test_diversity_weight_adds_the_mode_seeking_term_to_gmain():
    G, D, g_params, d_params, g_state = _class_state()
    z = jax.random.normal(jax.random.PRNGKey(2), (4, 4))
    gen_c = jnp.eye(3)[jnp.array([0, 1, 0, 1])]
    loss0, aux0 = g_main_loss(G, D, g_params, d_params, g_state, z, gen_c, opts=LossOptions(r1_gamma=1.0))
    assert "loss_diversity" not in aux0
    loss1, aux1 = g_main_loss(G, D, g_params, d_params, g_state, z, gen_c,
                              opts=LossOptions(r1_gamma=1.0, diversity_weight=0.5))
    img, _, _ = run_generator(G, g_params, g_state, z, gen_c)
    term = float(mode_seeking_loss(img, z, gen_c))
    np.testing.assert_allclose(float(aux1["loss_diversity"]), term, rtol=1e-5)
    np.testing.assert_allclose(float(loss1), float(loss0) + 0.5 * term, rtol=1e-5)
    from stylegan_jax.train.state import TrainConfig

    with pytest.raises(ValueError, match="diversity_weight must be >= 0"):
        TrainConfig(diversity_weight=-1.0)

