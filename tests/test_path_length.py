"""StyleGAN2 training: path-length regularization (the Greg phase), style mixing, the lazy G schedule and the
StyleGAN2 configs, on tiny models on the CPU."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from stylegan_jax.config import load_config
from stylegan_jax.losses import LossOptions, g_pl_loss
from stylegan_jax.models import build_generator
from stylegan_jax.networks.discriminator import Discriminator
from stylegan_jax.train.state import TrainConfig, create_train_state, make_optimizers
from stylegan_jax.train.step import make_mesh, make_train_step

REPO = Path(__file__).resolve().parents[1]
BATCH = 4


def tiny_stylegan2(c_dim: int = 0, resolution: int = 8):
    G = build_generator(cfg="stylegan2", z_dim=8, w_dim=8, c_dim=c_dim, img_resolution=resolution, img_channels=3,
                        channel_base=32, channel_max=8, mapping_layers=2)
    D = Discriminator(c_dim=c_dim, img_resolution=resolution, img_channels=3, channel_base=32, channel_max=8,
                      mbstd_group_size=2, mapping_num_layers=1)
    return G, D


def init_g(G, seed: int = 0):
    variables = jax.jit(G.init)(jax.random.PRNGKey(seed), jnp.zeros((1, G.z_dim)), jnp.zeros((1, G.c_dim)))
    # Non-zero noise strengths, so that the noise inputs take part in the path lengths as they do after training.
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.3 if "noise_strength" in jax.tree_util.keystr(p) else x, variables["params"])
    return params, {k: v for k, v in variables.items() if k != "params"}


@pytest.fixture(scope="module")
def pl_setup():
    G, _ = tiny_stylegan2()
    params, g_state = init_g(G)
    opts = LossOptions(pl_weight=2.0, pl_batch_shrink=2, pl_decay=0.01, style_mixing_prob=0.9)
    z = jax.random.normal(jax.random.PRNGKey(1), (BATCH, G.z_dim))
    c = jnp.zeros((BATCH, 0))
    key = jax.random.PRNGKey(2)
    fn = jax.jit(jax.value_and_grad(
        lambda p, m, k: g_pl_loss(G, p, g_state, z, c, m, opts=opts, rng=k), has_aux=True))
    return G, params, g_state, opts, z, c, key, fn


def test_pl_loss_follows_the_official_formula(pl_setup):
    _, params, _, opts, _, _, key, fn = pl_setup
    pl_mean = jnp.float32(0.3)
    (loss, aux), grads = fn(params, pl_mean, key)
    lengths = np.asarray(aux["pl_lengths"], np.float64)
    assert lengths.shape == (BATCH // opts.pl_batch_shrink,) and np.all(lengths > 0)
    new_mean = 0.3 + (lengths.mean() - 0.3) * opts.pl_decay  # torch.lerp(pl_mean, mean, decay)
    assert float(aux["pl_mean"]) == pytest.approx(new_mean, rel=1e-5)
    assert float(loss) == pytest.approx(opts.pl_weight * np.mean((lengths - new_mean) ** 2), rel=1e-4)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    # The penalty reaches every trainable part of G: mapping, synthesis convs, noise strengths, the constant.
    flat = {jax.tree_util.keystr(k): float(np.abs(v).sum()) for k, v in jax.tree_util.tree_flatten_with_path(grads)[0]}
    for part in ("mapping", "b4']['const", "conv0']['weight", "noise_strength", "affine"):
        assert any(part in k and v > 0 for k, v in flat.items()), part
    # Same key, same value: the synthesis noise and the projection image are fixed by the key.
    (loss2, _), _ = fn(params, pl_mean, key)
    assert float(loss2) == float(loss)
    (loss3, _), _ = fn(params, pl_mean, jax.random.PRNGKey(3))
    assert float(loss3) != float(loss)


def test_pl_gradient_matches_finite_differences(pl_setup):
    """The double backward through the synthesis network (custom VJPs included) is the true gradient."""
    _, params, _, _, _, _, key, fn = pl_setup
    pl_mean = jnp.float32(0.5)
    (_, _), grads = fn(params, pl_mean, key)
    loss_at = jax.jit(lambda p: fn(p, pl_mean, key)[0][0])
    rng = np.random.default_rng(0)
    direction = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), params)
    norm = np.sqrt(sum(float(jnp.sum(d * d)) for d in jax.tree.leaves(direction)))
    direction = jax.tree.map(lambda d: d / norm, direction)
    analytic = sum(float(jnp.sum(g * d)) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction),
                                                            strict=True))
    eps = 1e-2
    plus = loss_at(jax.tree.map(lambda p, d: p + eps * d, params, direction))
    minus = loss_at(jax.tree.map(lambda p, d: p - eps * d, params, direction))
    numeric = (float(plus) - float(minus)) / (2 * eps)
    assert abs(analytic) > 1e-3
    assert numeric == pytest.approx(analytic, rel=3e-2)


def test_pl_penalty_decreases_on_fixed_batch(pl_setup):
    """Adam steps on the path-length penalty of a fixed batch (fixed latents, noise and projection) lower it well
    below a control run in which only the running mean moves."""
    _, params, _, _, _, _, key, fn = pl_setup
    tx = optax.adam(0.01, b1=0.0, b2=0.99)

    def run(train: bool, steps: int = 12) -> list[float]:
        p, opt, pl_mean, out = params, tx.init(params), jnp.float32(0.0), []
        for _ in range(steps):
            (loss, aux), g = fn(p, pl_mean, key)
            assert np.isfinite(float(loss))
            out.append(float(jnp.mean(aux["pl_penalty"])))
            pl_mean = aux["pl_mean"]
            if train:
                updates, opt = tx.update(g, opt, p)
                p = optax.apply_updates(p, updates)
        return out

    trained, control = run(True), run(False)
    assert trained[0] == control[0]
    assert trained[-1] < 0.5 * trained[0]
    assert trained[-1] < 0.5 * control[-1]
    assert np.mean(np.diff(trained) < 0) >= 0.75  # mostly monotone


def test_noise_strengths_start_at_zero_and_init_is_deterministic():
    G, _ = tiny_stylegan2()
    v = jax.jit(G.init)(jax.random.PRNGKey(0), jnp.zeros((1, G.z_dim)), jnp.zeros((1, 0)))
    strengths = [np.asarray(x) for k, x in jax.tree_util.tree_flatten_with_path(v["params"])[0]
                 if "noise_strength" in jax.tree_util.keystr(k)]
    assert len(strengths) == 2 * 2 - 1 and all(float(s) == 0.0 for s in strengths)


# ---- the train step with Greg ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sg2_steps():
    G, D = tiny_stylegan2(c_dim=2)
    # Greg and Dreg on the same iterations: the main programs with and without Greg, and the Dreg program.
    tc = TrainConfig(batch_size=BATCH, g_lr=0.002, d_reg_interval=2, r1_gamma=1.0, g_reg_interval=2, pl_weight=2.0,
                     style_mixing_prob=0.9)
    mesh = make_mesh()
    state = create_train_state(G, D, tc, jax.random.PRNGKey(0), mesh=mesh)
    step = make_train_step(G, D, tc, mesh, donate=False)
    rng = np.random.default_rng(0)
    batch = {"real": rng.uniform(-1, 1, (BATCH, 3, 8, 8)).astype(np.float32),
             "c": np.eye(2, dtype=np.float32)[np.arange(BATCH) % 2]}
    states, metrics = [state], []
    for i in range(4):
        state, m = step(state, batch, i)
        states.append(state)
        metrics.append(jax.device_get(m))
    return step, states, metrics


@pytest.mark.slow  # ~75 s (compiles a StyleGAN2 train step with Greg and Dreg)
def test_greg_runs_every_g_reg_interval(sg2_steps):
    step, states, metrics = sg2_steps
    assert [int(m["Progress/g_reg"]) for m in metrics] == [1, 0, 1, 0]
    assert [int(m["Progress/reg"]) for m in metrics] == [1, 0, 1, 0]
    assert [int(s.g_reg_steps) for s in states] == [0, 1, 1, 2, 2]
    assert [int(s.g_steps) for s in states] == [0, 1, 2, 3, 4]
    # Greg is a second update of G's Adam (official: its own optimizer step), Gmain the first.
    adam_counts = [int(jax.tree.leaves(s.g_opt_state[0].count)[0]) for s in states]
    assert adam_counts == [0, 2, 3, 5, 6]
    pl = [float(s.pl_mean) for s in states]
    assert pl[0] == 0.0 and pl[1] > 0 and pl[2] == pl[1] and pl[3] != pl[2] and pl[4] == pl[3]
    for m in metrics:
        assert bool(m["finite"])
        assert np.isfinite(float(m["Loss/pl_penalty"])) and float(m["Loss/pl_penalty"]) > 0
        assert float(m["Loss/G/reg"]) == pytest.approx(2.0 * float(m["Loss/pl_penalty"]))
    # Between reg steps the last penalty is reported.
    assert float(metrics[1]["Loss/pl_penalty"]) == float(metrics[0]["Loss/pl_penalty"])
    assert sorted(step._mains) == [False, True] and not step._variants
    assert all(fn._cache_size() == 1 for fn in [*step._mains.values(), step.dreg_program])


def test_g_optimizer_has_the_lazy_reg_adjustment():
    tc = TrainConfig(batch_size=32, g_lr=0.002, g_reg_interval=4, pl_weight=2.0)
    g_tx, _ = make_optimizers(tc)
    params = {"w": jnp.zeros(3)}
    grads = {"w": jnp.array([1.0, -2.0, 0.5])}
    updates, _ = g_tx.update(grads, g_tx.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"]), -0.002 * 0.8 * np.sign(grads["w"]), rtol=1e-5)
    # StyleGAN3 (no path-length reg): G's Adam is plain, even though the configs carry g_reg_interval = 4.
    sg3 = TrainConfig.from_config(load_config(REPO / "configs" / "stylegan3_t_256.py"))
    assert sg3.g_reg_interval is None and sg3.g_mb_ratio == 1.0 and sg3.pl_weight == 0.0


# ---- configs -----------------------------------------------------------------------------------------------


def test_stylegan2_configs_have_the_official_settings():
    for name in ("stylegan2_256", "celeba64_stylegan2"):
        c = load_config(REPO / "configs" / f"{name}.py")
        tc = TrainConfig.from_config(c)
        assert c.model.cfg == "stylegan2" and c.model.mapping_layers == 8
        assert (c.model.z_dim, c.model.w_dim) == (512, 512)
        assert (tc.g_lr, tc.d_lr, tc.style_mixing_prob, tc.pl_weight) == (0.002, 0.002, 0.9, 2.0)
        assert (tc.g_reg_interval, tc.pl_batch_shrink, tc.pl_decay, tc.d_reg_interval) == (4, 2, 0.01, 16)
    sg2 = load_config(REPO / "configs" / "celeba64_stylegan2.py").to_dict()
    sg3 = load_config(REPO / "configs" / "celeba64.py").to_dict()
    # Same data, resolution, batch, gamma and discriminator as the StyleGAN3 CelebA config.
    assert sg2["data"] == sg3["data"] and sg2["data"]["tfds_name"] == "celeb_a" and sg2["data"]["resolution"] == 64
    assert {k: sg2["train"][k] for k in ("batch_size", "r1_gamma", "total_kimg")} == \
        {k: sg3["train"][k] for k in ("batch_size", "r1_gamma", "total_kimg")}
    assert all(sg2["model"][k] == sg3["model"][k] for k in sg3["model"] if k.startswith("d_"))


@pytest.mark.parametrize("name", ["stylegan2_256", "celeba64_stylegan2"])
def test_stylegan2_config_builds_the_baseline_generator(name):
    from stylegan_jax.networks.stylegan2 import StyleGAN2Generator
    from stylegan_jax.train.loop import build_networks, resolve_config

    c = resolve_config(load_config(REPO / "configs" / f"{name}.py"))
    G, D = build_networks(c, 0)
    assert isinstance(G, StyleGAN2Generator) and G.img_resolution == c.data.resolution
    shapes = jax.eval_shape(G.init, jax.random.PRNGKey(0), jnp.zeros((1, 512)), jnp.zeros((1, 0)))
    res = c.data.resolution
    assert shapes["params"]["synthesis"]["b4"]["const"].shape == (4, 4, min(G.channel_base // 4, G.channel_max))
    assert shapes["buffers"]["synthesis"][f"b{res}"]["conv1"]["noise_const"].shape == (res, res)
    assert len(shapes["params"]["mapping"]) >= 8
