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


def test_kaiser_lowpass_equals_scipy_firwin_over_the_layer_schedules():
    """Our NumPy Kaiser design (no scipy.signal import at run time) is scipy.signal.firwin's filter: every
    (numtaps, cutoff, width, fs) the StyleGAN3 schedules use at 16-1024 px, T and R, and the quickstart's."""
    scipy_signal = pytest.importorskip("scipy.signal")
    from stylegan_jax.networks.stylegan3 import synthesis_schedule
    from stylegan_jax.ops.lowpass import kaiser_beta, kaiser_lowpass

    designs = set()
    for res in (16, 32, 64, 128, 256, 512, 1024):
        for layers, margin in ((14, 10), (6, 4)):
            for spec in synthesis_schedule(res, 3, num_layers=layers, margin_size=margin).layers:
                for taps, cutoff, half_width in ((spec.up_taps, spec.in_cutoff, spec.in_half_width),
                                                 (spec.down_taps, spec.out_cutoff, spec.out_half_width)):
                    if taps > 1:
                        designs.add((taps, float(cutoff), float(half_width * 2), float(spec.tmp_sampling_rate)))
    assert len(designs) > 50
    for taps, cutoff, width, fs in sorted(designs):
        expected = scipy_signal.firwin(numtaps=taps, cutoff=cutoff, width=width, fs=fs)
        np.testing.assert_allclose(kaiser_lowpass(taps, cutoff, width, fs), expected, rtol=0, atol=1e-15)
    for attenuation in (0.0, 10.0, 21.0, 21.5, 35.0, 50.0, 50.5, 80.0):
        assert kaiser_beta(attenuation) == pytest.approx(scipy_signal.kaiser_beta(attenuation), abs=1e-13)
    with pytest.raises(ValueError, match="cutoff"):
        kaiser_lowpass(8, 9.0, 2.0, 16)


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
    # The fast path (polyphase slices, custom VJP with the transposed passes) must equal autodiff of the reference.
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


@pytest.mark.parametrize("up,down,pad", [(2, 1, (5, 4)), (4, 1, (-6, -9)), (1, 2, (0, 0)), (1, 2, (2, -3)),
                                         (2, 2, (3, 1)), (3, 2, (1, 4))])
def test_fir_axis_transpose_is_adjoint(up, down, pad):
    # <A x, y> == <x, A^T y> for every pass the fast filtered lrelu transposes.
    from stylegan_jax.ops.upfirdn2d import fir_axis, fir_axis_transpose

    rng = np.random.RandomState(2)
    g = rng.randn(12).astype(np.float32)
    x = jnp.asarray(rng.randn(2, 5, 29, 3).astype(np.float32))
    ax = fir_axis(x, g, 2, up, down, *pad)
    y = jnp.asarray(rng.randn(*ax.shape).astype(np.float32))
    gt, ut, dt, q0, q1 = fir_axis_transpose(g, x.shape[2], ax.shape[2], up, down, *pad)
    aty = fir_axis(y, gt, 2, ut, dt, q0, q1)
    assert aty.shape == x.shape
    lhs, rhs = float(jnp.vdot(ax, y)), float(jnp.vdot(x, aty))
    assert abs(lhs - rhs) <= 1e-4 * (abs(lhs) + 1)


FLRELU_CASES = [
    dict(up=2, down=2, padding=[9, 8, 9, 8], tu=12, td=12, clamp=None, size=18),        # StyleGAN3 layer
    dict(up=4, down=2, padding=[-6, -9, -6, -9], tu=24, td=12, clamp=None, size=18),    # critically resampled
    dict(up=2, down=2, padding=[-11, -12, -11, -12], tu=12, td=12, clamp=0.5, size=24),  # last layer, clamping
    dict(up=1, down=1, padding=0, tu=0, td=0, clamp=0.5, size=8, gain=1.0, slope=1.0),  # ToRGB: no filters
    dict(up=2, down=1, padding=[3, 2, 4, 1], tu=6, td=0, clamp=1.0, size=10),
]


@pytest.mark.parametrize("case", FLRELU_CASES)
@pytest.mark.parametrize("flip", [False, True])
def test_fast_filtered_lrelu_gradient_matches_reference(case, flip):
    # The fast path's custom VJP (stored int8 codes, transposed resampling) must equal autodiff of the reference,
    # for x and the bias, also under vmap + jit.
    import jax

    rng = np.random.RandomState(3)
    fu = rng.rand(case["tu"]).astype(np.float32) if case["tu"] else None
    fd = rng.rand(case["td"]).astype(np.float32) if case["td"] else None
    x = jnp.asarray(rng.randn(3, 2, case["size"], case["size"] + 2, 4).astype(np.float32))
    b = jnp.asarray(rng.randn(4).astype(np.float32))

    def fn(impl):
        return lambda x, b: filtered_lrelu(x, fu, fd, b, up=case["up"], down=case["down"], padding=case["padding"],
                                           gain=case.get("gain", np.sqrt(2)), slope=case.get("slope", 0.2),
                                           clamp=case["clamp"], flip_filter=flip, impl=impl)

    y_ref, vjp_ref = jax.vjp(fn("ref"), x[0], b)
    y_fast, vjp_fast = jax.vjp(fn("fast"), x[0], b)
    if case["clamp"] is not None:
        assert float(jnp.mean(jnp.abs(y_ref) >= case["clamp"])) > 0.05  # the clamp is exercised
    assert float(jnp.abs(y_fast - y_ref).max()) <= 1e-6 * float(jnp.abs(y_ref).max()) + 1e-5
    ct = jnp.asarray(rng.randn(*y_ref.shape).astype(np.float32))
    for g_ref, g_fast in zip(vjp_ref(ct), vjp_fast(ct), strict=True):
        scale = float(jnp.abs(g_ref).max())
        assert float(jnp.abs(g_ref - g_fast).max()) <= 1e-5 * scale + 1e-5

    def loss(impl):
        return jax.jit(jax.vmap(jax.grad(lambda x, b: jnp.vdot(fn(impl)(x, b), ct), argnums=(0, 1)),
                                in_axes=(0, None)))

    for g_ref, g_fast in zip(loss("ref")(x, b), loss("fast")(x, b), strict=True):
        scale = float(jnp.abs(g_ref).max())
        assert float(jnp.abs(g_ref - g_fast).max()) <= 1e-5 * scale + 1e-5


def test_filtered_lrelu_fast_gradient_is_transposed_passes():
    # Forward and backward are polyphase passes: ~3 primitives (slice, scale, add) per filter tap that lands on a
    # sample, plus a few per pass. Autodiff through the slices instead (a pad + add per slice, the bias_act
    # gradient) or a pass that multiplies inserted zeros would exceed the bound.
    import jax

    def count_primitives(jaxpr):
        jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
        subs = [s for e in jaxpr.eqns for p in e.params.values() for s in (p if isinstance(p, tuple) else (p,))
                if hasattr(s, "eqns") or hasattr(getattr(s, "jaxpr", None), "eqns")]
        return len(jaxpr.eqns) + sum(count_primitives(s) for s in subs)

    fu, fd = np.ones(24, np.float32) / 24, np.ones(12, np.float32) / 12
    x = jnp.zeros((2, 20, 20, 4))
    b = jnp.zeros(4)
    grad = jax.grad(lambda x, b: jnp.sum(filtered_lrelu(x, fu, fd, b, up=4, down=2, padding=[-6, -9, -6, -9])),
                    argnums=(0, 1))
    taps = 2 * (24 + 12)  # W and H, up and down: each tap lands on a sample once per pass
    passes = 4
    assert count_primitives(jax.make_jaxpr(grad)(x, b)) <= 2 * (3 * taps + 8 * passes) + 20


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


@pytest.mark.parametrize("k,padding,stride,size", [(3, 2, 1, 9), (3, 1, 1, 9), (1, 0, 1, 9), (3, 0, 1, 9),
                                                   (3, 0, 2, 11), (3, 0, 2, 12), (3, 1, 2, 10), (1, 0, 2, 9)])
def test_conv2d_custom_gradient_matches_lax(k, padding, stride, size):
    # conv2d's custom VJP (im2col kernel gradient, input gradient as a stride-1 convolution) must equal XLA's
    # autodiff of the plain convolution, to first order and for R1's gradient of a gradient.
    import jax
    from jax import lax

    from stylegan_jax.ops.modulated_conv import conv2d

    rng = np.random.RandomState(4)
    x = jnp.asarray(rng.randn(2, size, size, 3).astype(np.float32))
    w = jnp.asarray(rng.randn(k, k, 3, 5).astype(np.float32))

    def plain(x, w):
        return lax.conv_general_dilated(x, w, (stride, stride), [(padding, padding)] * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest")

    def ours(x, w):
        return conv2d(x, w, padding=padding, stride=stride)

    y = plain(x, w)
    ct = jnp.asarray(rng.randn(*y.shape).astype(np.float32))
    assert float(jnp.abs(ours(x, w) - y).max()) <= 1e-5 * float(jnp.abs(y).max())
    for a, b in zip(jax.vjp(plain, x, w)[1](ct), jax.vjp(ours, x, w)[1](ct), strict=True):
        assert float(jnp.abs(a - b).max()) <= 1e-5 * float(jnp.abs(a).max())

    def r1(f):
        return jax.grad(lambda w: jnp.sum(jax.grad(lambda x: jnp.vdot(jnp.tanh(f(x, w)), ct))(x) ** 2))(w)

    h_plain, h_ours = r1(plain), r1(ours)
    assert float(jnp.abs(h_plain - h_ours).max()) <= 1e-5 * float(jnp.abs(h_plain).max())
