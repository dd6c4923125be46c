"""The compiled training step on a tiny conditional model (8x8, one channel): data-parallel invariance (1 vs 8
simulated CPU devices), one compilation per program, learning on a fixed batch, non-finite guard, lazy-R1 and
G_ema bookkeeping."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stylegan_jax.train.state import TrainConfig, TrainState, create_train_state, make_optimizers
from stylegan_jax.train.step import make_mesh, make_train_step

REG_INTERVAL = 4
BATCH = 8
C_DIM = 2
REPO = Path(__file__).resolve().parents[1]

# Built identically here and in the 8-device subprocess.
TINY_MODELS = """
from stylegan_jax.models import build_generator
from stylegan_jax.networks.discriminator import Discriminator
from stylegan_jax.train.state import TrainConfig

def tiny_models():
    G = build_generator(cfg="t", z_dim=4, w_dim=4, c_dim=2, img_resolution=8, img_channels=1, channel_base=32,
                        channel_max=4, mapping_layers=1, impl="ref", num_layers=2, num_critical=1, margin_size=2)
    D = Discriminator(c_dim=2, img_resolution=8, img_channels=1, channel_base=32, channel_max=4, mbstd_group_size=2,
                      mapping_num_layers=1)
    tc = TrainConfig(batch_size=8, d_reg_interval=4, r1_gamma=1.0)
    return G, D, tc
"""
_ns: dict = {}
exec(TINY_MODELS, _ns)
tiny_models = _ns["tiny_models"]


def toy_batch() -> dict[str, np.ndarray]:
    """Fixed reals: smooth random blobs in [-1, 1], one-hot labels."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:8, 0:8] / 7.0
    real = np.stack([np.tanh(3 * np.sin(6 * (a * xx + b * yy) + p)) for a, b, p in rng.uniform(-1, 1, (BATCH, 3))])
    c = np.eye(C_DIM, dtype=np.float32)[np.arange(BATCH) % C_DIM]
    return {"real": real[:, None].astype(np.float32), "c": c}


def host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


def identical(a, b) -> bool:
    """Same tree, same values bit for bit (NaN equals NaN)."""
    la, lb = jax.tree.leaves(host(a)), jax.tree.leaves(host(b))
    return len(la) == len(lb) and all(np.array_equal(x, y, equal_nan=True) for x, y in zip(la, lb, strict=True))


def test_r1_gamma_schedule_switches_the_weight_of_dreg_at_its_kimg():
    """train.r1_gamma_final from r1_gamma_final_kimg on: iteration 0 (0 images seen) runs R1 with r1_gamma,
    iteration 1 (8 images, the switch at 0.008 kimg) with r1_gamma_final, and that second iteration is the one a run
    with the final weight throughout makes from the same state. Half-set schedules are refused by name."""
    G, D, _ = tiny_models()
    mesh = make_mesh()
    plain = TrainConfig(batch_size=8, d_reg_interval=1, r1_gamma=1.0)
    sched = TrainConfig(batch_size=8, d_reg_interval=1, r1_gamma=4.0, r1_gamma_final=1.0, r1_gamma_final_kimg=0.008)
    assert sched.r1_gamma_scheduled and not plain.r1_gamma_scheduled
    state0 = create_train_state(G, D, plain, jax.random.PRNGKey(0), mesh=mesh)
    step_plain = make_train_step(G, D, plain, mesh, donate=False)
    step_sched = make_train_step(G, D, sched, mesh, donate=False)
    batch = toy_batch()
    s1, m0 = step_sched(state0, batch, iteration=0)
    p1, _ = step_plain(state0, batch, iteration=0)
    assert float(m0["Progress/r1_gamma"]) == 4.0
    assert max_abs_diff(s1.D["params"], p1.D["params"]) > 1e-6  # gamma 4, not 1, in the first iteration
    s2, m1 = step_sched(s1, batch, iteration=1)
    p2, mp = step_plain(s1, batch, iteration=1)
    assert float(m1["Progress/r1_gamma"]) == 1.0 and "Progress/r1_gamma" not in mp
    assert max_abs_diff(s2.D["params"], p2.D["params"]) < 1e-6
    np.testing.assert_allclose(float(m1["Loss/D/reg"]), float(mp["Loss/D/reg"]), rtol=1e-6)
    from stylegan_jax.config import base_config
    from stylegan_jax.train.loop import resolve_config

    c = base_config()
    c.data.source, c.data.resolution = "synthetic", 32
    c.train.update(r1_gamma=0.5, r1_gamma_final=0.1, r1_gamma_final_kimg=30.0, diversity_weight=2.0)
    tc = TrainConfig.from_config(resolve_config(c))
    assert (tc.r1_gamma, tc.r1_gamma_final, tc.r1_gamma_final_kimg) == (0.5, 0.1, 30.0)
    assert tc.loss_options().diversity_weight == 2.0
    with pytest.raises(ValueError, match="are set together"):
        TrainConfig(r1_gamma_final=0.1)
    with pytest.raises(ValueError, match="an R1 schedule needs r1_gamma > 0"):
        TrainConfig(r1_gamma=0.0, r1_gamma_final=0.1, r1_gamma_final_kimg=10.0)


def test_lr_decay_scales_every_update_linearly_between_its_kimg():
    """train.lr_decay_*: 1 up to the start, linear to lr_final_mult at the end (an Adam step is linear in its
    rate, so G's update of an iteration is the undecayed one times the multiplier), then the final multiplier
    (0 here: the weights stay, Adam's moments still move). Half-set or reversed schedules are refused."""
    G, D, _ = tiny_models()
    mesh = make_mesh()
    plain = TrainConfig(batch_size=8, d_reg_interval=2)
    decay = TrainConfig(batch_size=8, d_reg_interval=2, lr_decay_start_kimg=0.008, lr_decay_end_kimg=0.024,
                        lr_final_mult=0.0)
    assert decay.lr_scheduled and not plain.lr_scheduled
    state = create_train_state(G, D, plain, jax.random.PRNGKey(0), mesh=mesh)
    step_plain = make_train_step(G, D, plain, mesh, donate=False)
    step_decay = make_train_step(G, D, decay, mesh, donate=False)
    batch = toy_batch()
    delta = lambda new, old: jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64),
                                          new.G["params"], old.G["params"])
    for it, scale in enumerate((1.0, 1.0, 0.5, 0.0)):  # iterations at 0, 8, 16, 24 images
        d_new, m = step_decay(state, batch, iteration=it)
        p_new, mp = step_plain(state, batch, iteration=it)
        assert float(m["Progress/lr_scale"]) == scale and "Progress/lr_scale" not in mp
        got, full = delta(d_new, state), delta(p_new, state)
        assert max(float(np.max(np.abs(x))) for x in jax.tree.leaves(full)) > 1e-4
        # Equal up to the float32 rounding of the stored weights (some are tens in size: one ulp is ~1e-6 there).
        assert within_ulps(got, jax.tree.map(lambda x, s=scale: x * s, full), state.G["params"], 2), it
        if scale == 0.0:
            assert max_abs_diff(d_new.D["params"], state.D["params"]) == 0.0  # Dmain and Dreg stood still too
        state = d_new
    with pytest.raises(ValueError, match="are set together"):
        TrainConfig(lr_decay_start_kimg=10.0)
    with pytest.raises(ValueError, match="lr_decay_end_kimg > lr_decay_start_kimg"):
        TrainConfig(lr_decay_start_kimg=10.0, lr_decay_end_kimg=5.0)


def within_ulps(a, b, weights, n: float) -> bool:
    """Whether every leaf of ``a`` is within ``n`` float32 ulps (of the same leaf of ``weights``) of ``b``'s."""
    ok = jax.tree.map(lambda x, y, w: bool(np.all(np.abs(x - y) <= n * np.spacing(np.abs(np.float32(w))) + 1e-12)),
                      a, b, weights)
    return all(jax.tree.leaves(ok))


def max_abs_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.fixture(scope="module")
def setup():
    G, D, tc = tiny_models()
    mesh = make_mesh()
    state0 = create_train_state(G, D, tc, jax.random.PRNGKey(0), mesh=mesh)
    step = make_train_step(G, D, tc, mesh, donate=False)
    return G, D, tc, state0, step


@pytest.fixture(scope="module")
def first_steps(setup):
    """Six iterations (0..5) with their metrics; reg is due at 0 and 4."""
    _, _, _, state, step = setup
    batch = toy_batch()
    states, metrics = [state], []
    for i in range(6):
        state, m = step(state, batch, iteration=i if i != 5 else None)  # None: read from state.step
        states.append(state)
        metrics.append(host(m))
    return states, metrics


# ---- (b) one compilation per program, and the programs equal the one-program iteration ---------------------


def test_each_program_compiles_once(setup, first_steps):
    step = setup[4]
    assert step.main_program(False)._cache_size() == 1
    assert step.dreg_program._cache_size() == 1
    assert step.main._cache_size() == step.reg._cache_size() == 0  # the one-program iterations were not needed


@pytest.mark.slow  # ~40 s of compiles; the default suite is at its 10-minute budget
def test_precompile_compiles_every_program_ahead_and_the_calls_use_them(setup, first_steps):
    """``precompile`` (the loop's start: Dreg and main compiled in worker threads, overlapping) leaves nothing to
    trace at the calls, and the iterations are those of the step compiled on first call, bit for bit."""
    G, D, tc, state, _ = setup
    step = make_train_step(G, D, tc, make_mesh(), donate=False)
    batch = toy_batch()
    step.precompile(state, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32,
                                                                       sharding=step.batch_sharding), batch))
    assert set(step._compiled) == {("main", False), "dreg"}
    states, _ = first_steps
    for i in range(5):
        state, _ = step(state, batch, iteration=i)
        assert identical(state, states[i + 1]), i
    assert step.main_program(False)._cache_size() == step.dreg_program._cache_size() == 0  # nothing traced


def test_main_then_dreg_equals_the_one_program_iteration(setup, first_steps):
    """The loop's main program followed (at 0 and 4) by the Dreg program gives the states and metrics of the
    whole iteration as one program (``variant``), to float rounding: the same phases, draws and updates."""
    _, _, _, state, step = setup
    states, metrics = first_steps
    batch = step.place_batch(toy_batch())
    for i in range(6):
        state, m = (step.reg if i % REG_INTERVAL == 0 else step.main)(state, batch, None)
        assert max_abs_diff(state, states[i + 1]) < 1e-6, i
        assert max_abs_diff(host(m), metrics[i]) < 1e-5, i
    assert int(state.d_reg_steps) == 2


# ---- (e) lazy regularization and counters ------------------------------------------------------------------


def test_lazy_r1_runs_every_interval(first_steps):
    states, metrics = first_steps
    assert [int(m["Progress/reg"]) for m in metrics] == [1, 0, 0, 0, 1, 0]
    assert [int(s.d_reg_steps) for s in states] == [0, 1, 1, 1, 1, 2, 2]
    final = states[-1]
    assert (int(final.step), int(final.g_steps), int(final.d_steps), int(final.nimg)) == (6, 6, 6, 6 * BATCH)
    # Between reg steps the last R1 value is reported, and it changes only on reg steps.
    r1 = [float(m["Loss/r1"]) for m in metrics]
    assert r1[0] > 0 and r1[1] == r1[2] == r1[3] == r1[0] and r1[4] != r1[0] and r1[5] == r1[4]
    assert all(bool(m["finite"]) for m in metrics)


def test_d_optimizer_has_the_lazy_reg_adjustment():
    tc = TrainConfig(batch_size=32)
    ratio = 16 / 17
    _, d_tx = make_optimizers(tc)
    params = {"w": jnp.zeros(3)}
    grads = {"w": jnp.array([1.0, -2.0, 0.5])}
    # First Adam step with beta1 = 0: lr * g / (|g| + eps * sqrt(1 - beta2)) ~ lr * sign(g).
    updates, _ = d_tx.update(grads, d_tx.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"]), -0.002 * ratio * np.sign(grads["w"]), rtol=1e-5)
    assert tc.resolved_ema_kimg == 10.0 and tc.resolved_magnitude_ema_beta == pytest.approx(0.5 ** (32 / 20000))
    assert tc.resolved_blur_fade_kimg == 200.0


def test_bias_lr_mult_slows_only_the_biases():
    """train.bias_lr_mult: parameters named 'bias' step at lr * mult, the rest at lr; 1 is the official single Adam
    (the optimizer state of earlier checkpoints)."""
    tc = TrainConfig(batch_size=32, d_reg_interval=None, g_lr=0.025, d_lr=0.02, bias_lr_mult=0.2)
    g_tx, d_tx = make_optimizers(tc)
    params = {"b4": {"fc": {"weight": jnp.zeros(3), "bias": jnp.zeros(2)}}, "mapping": {"bias": jnp.zeros(1)}}
    grads = jax.tree.map(lambda p: jnp.linspace(-1.0, 2.0, p.size), params)
    for tx, lr in ((g_tx, 0.025), (d_tx, 0.02)):
        updates, _ = tx.update(grads, tx.init(params), params)
        sign = lambda x: np.sign(np.asarray(x))
        np.testing.assert_allclose(np.asarray(updates["b4"]["fc"]["weight"]),
                                   -lr * sign(grads["b4"]["fc"]["weight"]), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(updates["b4"]["fc"]["bias"]),
                                   -0.2 * lr * sign(grads["b4"]["fc"]["bias"]), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(updates["mapping"]["bias"]),
                                   -0.2 * lr * sign(grads["mapping"]["bias"]), rtol=1e-5)
    plain, _ = make_optimizers(TrainConfig(batch_size=32))
    assert isinstance(plain.init(params), tuple) and "ScaleByAdamState" in type(plain.init(params)[0]).__name__
    with pytest.raises(ValueError, match="bias_lr_mult must be > 0"):
        TrainConfig(bias_lr_mult=0.0)


def test_g_ema_bookkeeping(setup, first_steps):
    tc = setup[2]
    states, metrics = first_steps
    # Iteration 0 starts at cur_nimg = 0: the rampup makes beta 0, i.e. G_ema = G.
    assert float(metrics[0]["Progress/ema_beta"]) == 0.0
    assert max_abs_diff(states[1].G_ema["params"], states[1].G["params"]) == 0.0
    for k, (s_prev, s, m) in enumerate(zip(states[:-1], states[1:], metrics, strict=True)):
        cur_nimg = k * BATCH
        beta = 0.5 ** (BATCH / max(min(tc.resolved_ema_kimg * 1000, cur_nimg * tc.ema_rampup), 1e-8))
        assert float(m["Progress/ema_beta"]) == pytest.approx(beta, rel=1e-5, abs=1e-30)
        expect = jax.tree.map(lambda p, e, b=beta: p + (e - p) * b, host(s.G["params"]), host(s_prev.G_ema["params"]))
        assert max_abs_diff(s.G_ema["params"], expect) < 1e-6
        # Buffers and running statistics are copied from G.
        assert max_abs_diff({k: s.G_ema[k] for k in ("ema", "buffers")}, {k: s.G[k] for k in ("ema", "buffers")}) == 0
    # Dmain ran G with update_emas: the magnitude EMAs moved.
    assert max_abs_diff(states[1].G["ema"], states[0].G["ema"]) > 0


# ---- (c) learning ------------------------------------------------------------------------------------------


def test_d_loss_on_fixed_batch_goes_down(setup):
    _, _, _, state, step = setup
    batch = toy_batch()
    losses = []
    for i in range(50):
        state, m = step(state, batch, iteration=i)
        losses.append(float(m["Loss/D"]))
    assert bool(m["finite"])
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05, losses


# ---- (d) non-finite guard ----------------------------------------------------------------------------------


@pytest.mark.parametrize("iteration", [0, 1], ids=["with-reg", "without-reg"])
def test_nan_in_batch_leaves_state_unchanged(setup, first_steps, iteration):
    step = setup[4]
    state = first_steps[0][iteration]  # the state at that step (the step checks that they agree)
    before = host(state)
    batch = toy_batch()
    batch["real"][3, 0, 2, 5] = np.nan
    new_state, metrics = step(state, batch, iteration=iteration)
    assert not bool(metrics["finite"])
    assert identical(new_state, before)


def test_nan_in_params_leaves_state_unchanged(setup, first_steps):
    step = setup[4]
    state = first_steps[0][2]
    d_params = jax.tree.map(lambda x: x, state.D["params"])
    d_params["b8"]["conv0"]["bias"] = d_params["b8"]["conv0"]["bias"].at[0].set(jnp.inf)
    bad = state.replace(D={"params": d_params})
    before = host(bad)
    new_state, metrics = step(bad, toy_batch(), iteration=2)
    assert not bool(metrics["finite"])
    assert identical(new_state, before)


def test_iteration_must_be_the_states_step(setup, first_steps, monkeypatch):
    """The Python side picks the phases from ``iteration`` while the programs key their draws (and ADA's deferral)
    on ``state.step``: a call whose iteration is not the state's step is refused, naming both; a call that
    continues from the state the last call returned, with the next iteration, is trusted without a device read."""
    G, D, tc, _, _ = setup
    states, _ = first_steps
    step = make_train_step(G, D, tc, make_mesh(), donate=False)
    with pytest.raises(ValueError, match=r"iteration=5 but the state is at step 2"):
        step(states[2], toy_batch(), iteration=5)
    state, _ = step(states[2], toy_batch(), iteration=2)  # checked with one read, then remembered
    reads = []
    real_get = jax.device_get
    monkeypatch.setattr(jax, "device_get", lambda x: reads.append(x) or real_get(x))
    state, _ = step(state, toy_batch(), iteration=3)
    assert reads == []
    with pytest.raises(ValueError, match=r"iteration=3 but the state is at step 4"):
        step(state, toy_batch(), iteration=3)  # the same iteration again: not a continuation
    assert len(reads) == 1
    monkeypatch.undo()
    assert identical(state, states[4])


# ---- (a) 1 device vs 4 / 8 devices -----------------------------------------------------------------------------

SCRIPT = TINY_MODELS + """
import sys
import jax
import numpy as np
from stylegan_jax.train.state import create_train_state
from stylegan_jax.train.step import make_mesh, make_train_step

assert jax.device_count() == int(sys.argv[3]), jax.devices()
G, D, tc = tiny_models()
data = np.load(sys.argv[1], allow_pickle=True)
g_vars, d_vars, batch = data["g"].item(), data["d"].item(), data["batch"].item()
mesh = make_mesh()
# Same key as the parent's state: the same latents are drawn.
state = create_train_state(G, D, tc, jax.random.PRNGKey(0), mesh, g_variables=g_vars, d_variables=d_vars)
step = make_train_step(G, D, tc, mesh)  # donates the state
state, metrics = step(state, batch, iteration=0)  # Gmain, Dmain and Dreg
assert bool(metrics["finite"])
n = len(jax.devices())
assert n > 1 and len(state.D["params"]["b8"]["conv0"]["weight"].sharding.device_set) == n
assert all(len(x.sharding.device_set) == n for x in jax.tree.leaves(state))
out = jax.tree.map(np.asarray, jax.device_get({"G": state.G, "G_ema": state.G_ema, "D": state.D,
                                               "loss_d": metrics["Loss/D"]}))
np.savez(sys.argv[2], out=np.array(out, dtype=object))
"""


# 4 devices in the default suite (~30 s); 8 (one sample per device) in the slow step. Sharded training is also
# checked end to end by test_training.py's slow 8-device run and test_multihost.py (2 processes x 2 devices).
@pytest.mark.parametrize("devices", [4, pytest.param(8, marks=pytest.mark.slow)])
def test_one_vs_n_devices_same_update(setup, first_steps, tmp_path, devices):
    """The same iteration (with Dreg) on a mesh of 4 or 8 simulated CPU devices, in a subprocess, gives the update
    of the single-device run of this process (first_steps, iteration 0) to float tolerance."""
    state0 = setup[3]
    state1, metrics0 = first_steps[0][1], first_steps[1][0]
    assert int(metrics0["Progress/reg"]) == 1
    init, result = tmp_path / "init.npz", tmp_path / "result.npz"
    np.savez(init, g=np.array(host(state0.G), dtype=object), d=np.array(host(state0.D), dtype=object),
             batch=np.array(toy_batch(), dtype=object))
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    args = [str(init), str(result), str(devices)]
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    many = np.load(result, allow_pickle=True)["out"].item()
    one = host({"G": state1.G, "G_ema": state1.G_ema, "D": state1.D, "loss_d": metrics0["Loss/D"]})
    assert max_abs_diff(one["D"], host(state0.D)) > 1e-4  # the step really moved the weights
    assert max_abs_diff(many, one) < 1e-5


def test_exact_resume_through_a_checkpoint(setup, first_steps, tmp_path):
    """Iterations 0-2, an orbax checkpoint, a restore into a fresh state (another seed), iterations 3-5: bit for
    bit the state of the unbroken run (first_steps). The iteration's randomness comes from the restored state."""
    from stylegan_jax.checkpoint import load_checkpoint, save_checkpoint

    G, D, tc, _, step = setup
    states, metrics = first_steps
    save_checkpoint(tmp_path / "ckpt", 3, states[3], {"kimg": 3 * BATCH / 1000})
    fresh = create_train_state(G, D, tc, jax.random.PRNGKey(123), mesh=make_mesh())
    assert not identical(fresh, states[3])
    meta, state = load_checkpoint(tmp_path / "ckpt", target=fresh)
    assert meta["step"] == 3 and identical(state, states[3])
    batch = toy_batch()
    for i in range(3, 6):
        state, m = step(state, batch, iteration=i)
        assert identical(host(m), metrics[i])
    assert identical(state, states[6])


def test_state_is_a_pytree(setup):
    state0 = setup[3]
    assert isinstance(state0, TrainState)
    leaves = jax.tree.leaves(state0)
    assert all(isinstance(x, jax.Array) for x in leaves)


# ---- micro-batches (train.batch_per_device, the official --batch-gpu) ----------------------------------------


# Slow step (~40 s: two compiles of the step with Dreg): the default suite has no time left for it; CI's slow step
# runs it together with the micro-batch tests with ADA (test_augment.py).
@pytest.mark.slow
def test_micro_batches_give_the_update_of_one_batch(setup):
    """4 micro-batches of 2 (gradient accumulation in the step) = one batch of 8, for an iteration with Dreg:
    the minibatch-stddev groups (size 2) are the same samples (strided micro-batches), every loss is a per-sample
    mean, and G's EMAs take the whole batch's statistics. With magnitude_ema_beta=1 the images do not depend on
    the batch statistics either, so the math says the updates are equal; they are, to float tolerance."""
    from stylegan_jax.models import build_generator

    _, D, tc, _, _ = setup
    G = build_generator(cfg="t", z_dim=4, w_dim=4, c_dim=2, img_resolution=8, img_channels=1, channel_base=32,
                        channel_max=4, mapping_layers=1, impl="ref", num_layers=2, num_critical=1, margin_size=2,
                        magnitude_ema_beta=1.0)
    mesh = make_mesh()
    state0 = create_train_state(G, D, tc, jax.random.PRNGKey(0), mesh=mesh)
    out = {}
    for per_device in (0, 2):
        step = make_train_step(G, D, tc, mesh, donate=False, batch_per_device=per_device)
        assert step.micro_rounds == (1 if per_device == 0 else 4)
        state, metrics = step(state0, toy_batch(), iteration=0)
        out[per_device] = host({"state": state, "metrics": {k: v for k, v in metrics.items() if k != "finite"}})
        assert bool(metrics["finite"]) and int(metrics["Progress/reg"]) == 1
    assert max_abs_diff(out[0]["state"].D, host(state0.D)) > 1e-4  # the step moved the weights
    assert max_abs_diff(out[0]["state"].G["ema"], host(state0.G["ema"])) > 1e-6  # and w_avg
    assert max_abs_diff(out[0], out[2]) < 2e-6


@pytest.mark.slow
def test_packing_d_micro_batches_give_the_update_of_one_batch():
    """A packing D (PacGAN pairs, model.d_pack=2) in the step: 2 micro-batches of 4 = one batch of 8, for an
    iteration with Dreg. The strided micro-batches hold whole packs, the same pairs as the whole batch, and the
    minibatch-stddev groups of packs the same packs."""
    from stylegan_jax.models import build_generator
    from stylegan_jax.networks.discriminator import Discriminator

    G = build_generator(cfg="t", z_dim=4, w_dim=4, c_dim=0, img_resolution=8, img_channels=1, channel_base=32,
                        channel_max=4, mapping_layers=1, impl="ref", num_layers=2, num_critical=1, margin_size=2,
                        magnitude_ema_beta=1.0)
    D = Discriminator(c_dim=0, img_resolution=8, img_channels=1, channel_base=32, channel_max=4, mbstd_group_size=2,
                      pack=2)
    tc = TrainConfig(batch_size=8, d_reg_interval=4, r1_gamma=1.0)
    mesh = make_mesh()
    state0 = create_train_state(G, D, tc, jax.random.PRNGKey(0), mesh=mesh)
    assert state0.D["params"]["b8"]["fromrgb"]["weight"].shape[2] == 2  # two 1-channel images per pack
    batch = {**toy_batch(), "c": np.zeros((BATCH, 0), np.float32)}
    out = {}
    for per_device in (0, 4):
        step = make_train_step(G, D, tc, mesh, donate=False, batch_per_device=per_device)
        assert step.micro_rounds == (1 if per_device == 0 else 2)
        state, metrics = step(state0, batch, iteration=0)
        out[per_device] = host({"state": state, "metrics": {k: v for k, v in metrics.items() if k != "finite"}})
        assert bool(metrics["finite"]) and int(metrics["Progress/reg"]) == 1
    assert max_abs_diff(out[0]["state"].D, host(state0.D)) > 1e-4  # the step moved the weights
    assert float(out[0]["metrics"]["Loss/r1"]) > 0
    assert max_abs_diff(out[0], out[4]) < 2e-6


def test_micro_rounds_checks_the_split():
    from stylegan_jax.train.step import micro_rounds

    with pytest.raises(ValueError, match="batch_per_device=3 must divide the 8 samples"):
        micro_rounds(8, 1, 3)
    with pytest.raises(ValueError, match="not a multiple of model.mbstd_group_size=4"):
        micro_rounds(12, 1, 6, mbstd_group=4)
    assert micro_rounds(32, 8, 4) == 1 and micro_rounds(32, 2, 4) == 4
    # A packing D: whole packs per batch and micro-batch, and minibatch-stddev groups of packs.
    with pytest.raises(ValueError, match="batch_size 6 must be a multiple of model.d_pack=4"):
        micro_rounds(6, 1, None, pack=4)
    with pytest.raises(ValueError, match="not a multiple of model.d_pack=2"):
        micro_rounds(12, 1, 3, pack=2)
    with pytest.raises(ValueError, match=r"\(3 packs of model.d_pack=2\).*mbstd_group_size=2"):
        micro_rounds(12, 1, 6, mbstd_group=2, pack=2)
    assert micro_rounds(16, 1, 8, mbstd_group=4, pack=2) == 2


def test_class_weight_needs_labels_and_gives_d_a_class_head():
    """train.class_weight (AC-GAN) reaches D (the head) and the losses; without labels it is refused by name."""
    from stylegan_jax.config import base_config
    from stylegan_jax.train.loop import build_networks, resolve_config

    c = base_config()
    c.data.source, c.data.resolution, c.train.class_weight = "synthetic", 32, 0.5
    c = resolve_config(c)
    _, D = build_networks(c, 3)
    assert D.class_head and TrainConfig.from_config(c).loss_options().class_weight == 0.5
    assert TrainConfig.from_config(c).loss_options().g_class_weight == 0.5  # unset (-1): G's follows class_weight
    c.train.g_class_weight = 0.1
    opts = TrainConfig.from_config(c).loss_options()
    assert (opts.class_weight, opts.g_class_weight) == (0.5, 0.1)
    with pytest.raises(ValueError, match=r"train.class_weight=0.5 needs labels \(data.use_labels=True"):
        build_networks(c, 0)
    c.train.class_weight = 0.0
    assert not build_networks(c, 3)[1].class_head  # off: the official D, no extra parameters
    with pytest.raises(ValueError, match="class_weight must be >= 0"):
        TrainConfig(class_weight=-1.0)
    with pytest.raises(ValueError, match=r"g_class_weight=0.1 needs class_weight > 0"):
        TrainConfig(class_weight=0.0, g_class_weight=0.1)


def test_mapping_lr_multiplier_reaches_g_and_keeps_its_initial_function():
    """model.mapping_lr_multiplier sets the multiplier of G's mapping layers (and of a conditional D's label mapping)
    and is saved in the generator description; the stored weights scale with 1 / multiplier, so the same seed starts
    from the same network (only the size of Adam's steps on the mapping changes)."""
    from stylegan_jax.config import base_config
    from stylegan_jax.models import generator_config
    from stylegan_jax.train.loop import build_networks, resolve_config

    c = base_config()
    c.data.source, c.data.resolution = "synthetic", 32
    c.model.update(z_dim=8, w_dim=8, mapping_layers=2, num_layers=3, channel_base=256, channel_max=8)
    official, _ = build_networks(resolve_config(c), 3)
    c.model.mapping_lr_multiplier = 0.5
    G, D = build_networks(resolve_config(c), 3)
    assert official.mapping_lr_multiplier == 0.01 and G.mapping_lr_multiplier == 0.5
    assert D.mapping_lr_multiplier == 0.5  # D's label mapping (a conditional D) follows the same setting
    assert generator_config(G)["kwargs"]["mapping_lr_multiplier"] == 0.5
    z, c = jax.random.normal(jax.random.PRNGKey(1), (2, 8)), jnp.eye(3)[:2]
    ws = [g.apply(g.init(jax.random.PRNGKey(0), z, c), z, c, method=g.map) for g in (official, G)]
    np.testing.assert_allclose(ws[0], ws[1], rtol=1e-5, atol=1e-6)


def test_d_resample_filter_reaches_d_and_its_description():
    """model.d_resample_filter (a command-line tuple) sets the taps of D's downsampling layers and is recorded in the
    run's D description; the default is the official [1, 3, 3, 1]."""
    from stylegan_jax.config import apply_overrides, base_config
    from stylegan_jax.train.loop import _discriminator_meta, build_networks, resolve_config

    c = base_config()
    c.data.source, c.data.resolution = "synthetic", 32
    assert build_networks(resolve_config(c), 0)[1].resample_filter == (1.0, 3.0, 3.0, 1.0)
    c = resolve_config(apply_overrides(c, ["--config.model.d_resample_filter=(1,1)"]))
    _, D = build_networks(c, 0)
    assert D.resample_filter == (1.0, 1.0)
    assert _discriminator_meta(D)["kwargs"]["resample_filter"] == (1.0, 1.0)
    params = D.init_params(jax.random.PRNGKey(0), batch_size=4)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 3, 32, 32))
    official, c = D.clone(resample_filter=(1, 3, 3, 1)), jnp.zeros((4, 0))
    assert not np.allclose(D.apply(params, x, c), official.apply(params, x, c))  # the taps are used


@pytest.mark.slow
def test_class_losses_in_the_step_train_the_head_and_are_logged():
    """One iteration with train.class_weight: the step logs both class losses, and D's class head moves (it is
    trained by the reals' labels)."""
    G, D, _ = tiny_models()
    D = D.clone(class_head=True)
    tc = TrainConfig(batch_size=8, d_reg_interval=4, r1_gamma=1.0, class_weight=1.0)
    mesh = make_mesh()
    state0 = create_train_state(G, D, tc, jax.random.PRNGKey(0), mesh=mesh)
    step = make_train_step(G, D, tc, mesh, donate=False)
    state, metrics = step(state0, toy_batch(), iteration=0)
    assert bool(metrics["finite"])
    for key in ("Loss/G/class", "Loss/D/class"):
        assert np.isfinite(float(metrics[key])) and float(metrics[key]) > 0
    head = lambda s: host(s.D["params"]["b4"]["cls"])
    assert max_abs_diff(head(state), head(state0)) > 1e-5
