"""Parity of the low-level ops with the official reference outputs (tests/fixtures/ops.npz)."""

import jax.numpy as jnp
import numpy as np
import pytest

from stylegan_jax.ops import design_lowpass_filter, filtered_lrelu, upfirdn2d


def nchw_to_nhwc(x):
    return jnp.asarray(np.transpose(x, (0, 2, 3, 1)))


def nhwc_to_nchw(x):
    return np.transpose(np.asarray(x), (0, 3, 1, 2))


def cases(fx, op):
    return [c for c in fx.meta["cases"] if c["op"] == op]


@pytest.fixture(scope="module")
def ops(load_fixture):
    return load_fixture("ops.npz")


@pytest.mark.parametrize("impl", ["ref", "fast"])
@pytest.mark.parametrize("i", range(7))
def test_upfirdn2d_matches_official(ops, impl, i):
    case = cases(ops, "upfirdn2d")[i]
    key = f"upfirdn2d/{i}"
    f = ops[f"{key}/f"]
    y = upfirdn2d(nchw_to_nhwc(ops[f"{key}/x"]), f, up=case["up"], down=case["down"], padding=case["padding"],
                  flip_filter=case["flip_filter"], gain=case["gain"], impl=impl)
    ref = ops[f"{key}/y"]
    assert nhwc_to_nchw(y).shape == ref.shape
    np.testing.assert_allclose(nhwc_to_nchw(y), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["ref", "fast"])
@pytest.mark.parametrize("i", range(6))
def test_filtered_lrelu_matches_official(ops, impl, i):
    case = cases(ops, "filtered_lrelu")[i]
    key = f"filtered_lrelu/{i}"
    fu = ops.get(f"{key}/fu")
    fd = ops.get(f"{key}/fd")
    y = filtered_lrelu(nchw_to_nhwc(ops[f"{key}/x"]), fu=fu, fd=fd, b=jnp.asarray(ops[f"{key}/b"]),
                       up=case["up"], down=case["down"], padding=case["padding"], gain=case["gain"],
                       slope=case["slope"], clamp=case["clamp"], flip_filter=case["flip_filter"], impl=impl)
    ref = ops[f"{key}/y"]
    assert nhwc_to_nchw(y).shape == ref.shape
    # The fixtures' tolerance is 1e-4 absolute. Cases without clamp reach |y| ~ 1e4, where float32
    # spacing alone is ~1e-3, so there the bound is 1e-6 of the output's scale (a real difference,
    # e.g. a one-sample shift, gives errors of order 1e-1 of it).
    err = np.abs(nhwc_to_nchw(y) - ref).max()
    assert err <= max(1e-4, 1e-6 * np.abs(ref).max()), f"max abs error {err:.2e}, max |y| {np.abs(ref).max():.1f}"


@pytest.mark.parametrize("i", range(5))
def test_design_lowpass_filter_matches_official(ops, i):
    case = cases(ops, "design_lowpass_filter")[i]
    f = design_lowpass_filter(case["numtaps"], case["cutoff"], case["width"], case["fs"], radial=case["radial"])
    np.testing.assert_allclose(f, ops[f"lowpass/{i}/f"], atol=1e-7, rtol=1e-6)


def test_identity_filter_is_none():
    assert design_lowpass_filter(1, 2.0, 1.0, 16) is None


def test_upfirdn2d_rejects_bad_input():
    with pytest.raises(ValueError, match="NHWC"):
        upfirdn2d(jnp.zeros((3, 8, 8)), np.ones(4, np.float32))
    with pytest.raises(ValueError, match="empty output"):
        upfirdn2d(jnp.zeros((1, 4, 4, 1)), np.ones(4, np.float32), padding=-4)


@pytest.mark.parametrize("case", [
    dict(up=2, down=1, padding=[5, 4, 5, 4], taps=12), dict(up=4, down=1, padding=[-6, -9, 3, 2], taps=24),
    dict(up=1, down=2, padding=0, taps=12), dict(up=1, down=2, padding=[2, 1, -1, 3], taps=6),
])
@pytest.mark.parametrize("flip", [False, True])
def test_fast_upfirdn2d_gradient_matches_reference(case, flip):
    # The fast path has a custom VJP (the transposed resampling); it must equal autodiff of the reference.
    import jax

    rng = np.random.RandomState(0)
    f = rng.randn(case["taps"]).astype(np.float32)
    x = jnp.asarray(rng.randn(2, 24, 26, 3).astype(np.float32))

    def fn(impl):
        return lambda x: upfirdn2d(x, f, up=case["up"], down=case["down"], padding=case["padding"],
                                   flip_filter=flip, gain=2.0, impl=impl)

    y, vjp_ref = jax.vjp(fn("ref"), x)
    ct = jnp.asarray(rng.randn(*y.shape).astype(np.float32))
    g_ref = vjp_ref(ct)[0]
    g_fast = jax.vjp(fn("fast"), x)[1](ct)[0]
    scale = float(jnp.abs(g_ref).max())
    assert float(jnp.abs(g_ref - g_fast).max()) <= 1e-6 * scale + 1e-5


def test_conv2d_full_padding_matches_lax():
    # conv2d pre-pads the part of the padding beyond kernel // 2; the result must not change.
    from jax import lax

    from stylegan_jax.ops.modulated_conv import conv2d

    rng = np.random.RandomState(1)
    x = jnp.asarray(rng.randn(2, 9, 9, 4).astype(np.float32))
    w = jnp.asarray(rng.randn(3, 3, 4, 5).astype(np.float32))
    ref = lax.conv_general_dilated(x, w, (1, 1), [(2, 2)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                   precision=lax.Precision.HIGHEST)
    np.testing.assert_allclose(np.asarray(conv2d(x, w, padding=2)), np.asarray(ref), atol=1e-5)
