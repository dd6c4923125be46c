"""Equivariance metrics: image operators vs the official ones, the metric on real and aliasing
generators, determinism, and the ``stylegan-jax metrics`` command."""

import argparse
import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stylegan_jax.networks.stylegan3 as sg3
from stylegan_jax.convert import convert_generator, strip_prefix
from stylegan_jax.metrics import EquivarianceEvaluator, compute_equivariance, psnr_from_sums
from stylegan_jax.models import build_generator
from stylegan_jax.ops import equivariance as E
from stylegan_jax.ops.upfirdn2d import upfirdn2d

TOL = 1e-4


@pytest.fixture(scope="module")
def eq_case(load_fixture):
    fx = load_fixture("ops.npz")
    (case,) = [c for c in fx.meta["cases"] if c.get("op") == "equivariance"]
    return fx, case


def _operator_outputs(fx, case):
    x = jnp.asarray(fx["eq/x"])
    a = case["a"]
    angle = case["rotate_angle_radians"]
    return {
        "int": jax.jit(E.apply_integer_translation)(x, *case["int_translate"]),
        "frac": jax.jit(E.apply_fractional_translation, static_argnums=3)(x, *case["frac_translate"], a),
        "rot": jax.jit(E.apply_fractional_rotation, static_argnums=2)(x, angle, a),
        "pseudo": jax.jit(E.apply_fractional_pseudo_rotation, static_argnums=2)(x, angle, a),
    }


def test_operators_match_official(eq_case):
    fx, case = eq_case
    outs = _operator_outputs(fx, case)
    for name, (img, mask) in outs.items():
        ref, ref_mask = fx[f"eq/{name}_ref"], fx[f"eq/{name}_mask"]
        assert img.shape == ref.shape and mask.shape == ref_mask.shape, name
        assert 0 < ref_mask.sum() < ref_mask.size, name  # the case exercises both sides of the mask
        err = float(np.max(np.abs(np.asarray(img) - ref)))
        mask_err = float(np.max(np.abs(np.asarray(mask) - ref_mask)))
        assert err <= TOL, f"{name}: image max abs error {err:.3g}"
        assert mask_err == 0, f"{name}: mask differs"


def test_polyphase_upsampling_equals_upfirdn2d(eq_case):
    # The rotation upsamples polyphase instead of through zero insertion; same numbers.
    fx, _ = eq_case
    x = jnp.asarray(fx["eq/x"])
    f = E.construct_affine_bandlimit_filter(E.rotation_matrix(0.7), a=3, amax=6)
    k, up = f.shape[0], 4
    p0, p1 = k // 2 + (k + up - 1) // 2, k // 2 + (k - up) // 2
    ours = E._upsample2d_polyphase(x, f, up, p0, p1)
    ref = jnp.transpose(upfirdn2d(jnp.transpose(x, (0, 2, 3, 1)), f, up=up, padding=[p0, p1, p0, p1],
                                  gain=up * up, impl="ref"), (0, 3, 1, 2))
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), atol=1e-5)


def test_operators_vmap_per_sample_parameters(eq_case):
    # The metric draws one transform per sample and vmaps the operators over them.
    fx, _ = eq_case
    x = jnp.asarray(fx["eq/x"])
    tx, ty = jnp.array([0.0371, -0.25]), jnp.array([-0.0913, 0.125])
    batched = jax.jit(jax.vmap(lambda img, a, b: E.apply_fractional_translation(img[None], a, b)))(x, tx, ty)
    for i in range(x.shape[0]):
        single = E.apply_fractional_translation(x[i:i + 1], tx[i], ty[i])
        for got, want in zip(batched, single, strict=True):
            np.testing.assert_allclose(np.asarray(got[i]), np.asarray(want), atol=1e-6)


def test_psnr_formula():
    # Images span [-1, 1]: an MSE of 4 (error = the full range everywhere) is 0 dB.
    assert psnr_from_sums(4.0 * 10, 10) == pytest.approx(0.0, abs=1e-12)
    assert psnr_from_sums(4e-6, 1) == pytest.approx(60.0)


# ----------------------------------------------------------------------------------------------
# The metric on generators.


def _box_filter(taps: int, factor: int) -> np.ndarray | None:
    """Centred box of ``factor`` taps inside ``taps``, unit DC gain (None for the 1-tap identity)."""
    if taps == 1:
        return None
    f = np.zeros(taps, np.float32)
    f[(taps - factor) // 2:(taps + factor) // 2] = 1 / factor
    return f


def test_alias_free_filters_give_translation_equivariance(load_fixture, monkeypatch):
    fx = load_fixture("sg3t_64.npz")
    G, v = convert_generator(strip_prefix(fx, "G/"), fx.meta["G_kwargs"])
    kw = dict(num_samples=4, seed=0, batch_size=4, metrics=("eqt_int",))
    real = compute_equivariance(G, v, **kw)["eqt_int"]

    # Same weights, filters replaced by boxes of the resampling factor: upsampling becomes
    # sample-and-hold and downsampling a plain average of the repeated samples, so the leaky ReLU
    # effectively runs at the layer's own sampling rate with nothing removing the harmonics it
    # creates above Nyquist. Those alias back as content locked to the pixel grid, which moves
    # differently from the image when it is shifted by a sub-sample amount at the coarse layers:
    # the StyleGAN2-style aliasing the paper's filters exist to remove. Tap counts (and so the
    # paddings and sizes) are unchanged. Filters are recomputed at trace time, and
    # compute_equivariance compiles afresh on every call, so the patch takes effect.
    monkeypatch.setattr(sg3.LayerSpec, "up_filter", lambda self: _box_filter(self.up_taps, self.up_factor))
    monkeypatch.setattr(sg3.LayerSpec, "down_filter", lambda self: _box_filter(self.down_taps, self.down_factor))
    aliasing = compute_equivariance(G, v, **kw)["eqt_int"]

    print(f"EQ-T (integer): alias-free {real:.2f} dB, box filters {aliasing:.2f} dB")
    assert np.isfinite(real) and np.isfinite(aliasing)
    assert real > aliasing + 10, (real, aliasing)


@pytest.fixture(scope="module")
def tiny_generator():
    # Few layers: the metric compiles the whole network, and compile time dominates these tests.
    G = build_generator("t", z_dim=16, w_dim=16, img_resolution=32, channel_base=512, channel_max=16,
                        mapping_layers=2, num_layers=4)
    v = jax.jit(G.init)(jax.random.key(0), jnp.zeros((1, 16)))
    return G, v


TINY_METRICS = ("eqt_int", "eqt_frac", "eqr")
TINY_RUN = dict(num_samples=3, seed=7)


@pytest.fixture(scope="module")
def tiny_evaluator(tiny_generator):
    return EquivarianceEvaluator(tiny_generator[0], TINY_METRICS)


@pytest.fixture(scope="module")
def tiny_result(tiny_generator, tiny_evaluator):
    return tiny_evaluator(tiny_generator[1], batch_size=3, **TINY_RUN)


@pytest.mark.slow  # ~30 s
def test_metric_deterministic_and_batch_independent(tiny_generator, tiny_evaluator, tiny_result):
    G, v = tiny_generator
    assert list(tiny_result) == list(TINY_METRICS)
    assert all(np.isfinite(x) and x > 0 for x in tiny_result.values()), tiny_result
    assert tiny_evaluator(v, batch_size=3, **TINY_RUN) == tiny_result  # same compiled step: bitwise
    # Per-sample random draws: the batch size (here with a padded last batch) and a mesh change
    # nothing but float rounding (which matters in relative terms: EQ-T at init is ~110 dB, an
    # MSE of ~1e-11; 0.01 dB is a 0.2% change of the MSE).
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    other = compute_equivariance(G, v, batch_size=2, metrics=TINY_METRICS, mesh=mesh, **TINY_RUN)
    for m in tiny_result:
        assert other[m] == pytest.approx(tiny_result[m], abs=0.01), (m, tiny_result, other)
    different_seed = tiny_evaluator(v, batch_size=3, num_samples=3, seed=8)
    assert different_seed != tiny_result


def test_metric_rejects_bad_arguments(tiny_generator):
    G, v = tiny_generator
    with pytest.raises(ValueError, match="unknown"):
        compute_equivariance(G, v, 2, metrics=("eqt",))
    with pytest.raises(ValueError, match=">= 1"):
        compute_equivariance(G, v, 0)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("batch",))
    with pytest.raises(ValueError, match="'data'"):
        compute_equivariance(G, v, 2, mesh=mesh)


@pytest.mark.skipif(importlib.util.find_spec("stylegan_jax.checkpoint") is None,
                    reason="stylegan_jax.checkpoint not available")
def test_metrics_command(tiny_generator, tiny_result, tmp_path, capsys):
    from stylegan_jax.checkpoint import save_checkpoint
    from stylegan_jax.metrics import cli
    from stylegan_jax.models import generator_config

    G, v = tiny_generator
    save_checkpoint(tmp_path / "ckpt", 0, {"G_ema": v}, {"generator": generator_config(G)}, keep=None)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = tmp_path / "res" / "eq.json"
    args = parser.parse_args(["--ckpt", str(tmp_path / "ckpt"), "--metrics", "eqr,eqt_int",
                              "--num", str(TINY_RUN["num_samples"]), "--seed", str(TINY_RUN["seed"]),
                              "--batch-size", "3", "--json", str(out)])
    assert cli.command(args) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in ("EQ-T", "EQ-R", " dB")) and "EQ-T_frac" not in table, table
    report = json.loads(out.read_text())
    assert report["num_samples"] == 3 and report["units"] == {"eqr": "dB", "eqt_int": "dB"}
    assert list(report["results"]) == ["eqr", "eqt_int"]
    # The same per-sample draws as the fixture's run of all three metrics (another compiled program:
    # equal up to float rounding).
    for m, value in report["results"].items():
        assert value == pytest.approx(tiny_result[m], abs=0.01), m

    bad = parser.parse_args(["--ckpt", str(tmp_path / "missing"), "--num", "2"])
    assert cli.command(bad) == 1
    assert "no such checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--ckpt", "x", "--metrics", "eqt_int,foo"])
