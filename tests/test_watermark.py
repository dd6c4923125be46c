"""Provenance watermark (stylegan_jax.apis.watermark) and inference post-processing (stylegan_jax.apis.postprocessing).

Every requirement is measured on 200 seeded, image-like 256x256 RGB images (smooth random fields, gradients,
soft-edged shapes, mild sensor noise, some saturation), not on white noise: noise would make the host far more
hostile (and the PSNR budget trivially easy) than real generator output.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from stylegan_jax.apis import watermark as wm
from stylegan_jax.apis.postprocessing import denormalize, postprocess

KEY = "stylegan-jax/provenance/test-key"
WRONG_KEY = "stylegan-jax/provenance/other-key"
N_IMAGES = 200
N_BITS = 48
SIZE = 256


# ---------------------------------------------------------------------------------------------------------------------
# Image-like test content and attacks
# ---------------------------------------------------------------------------------------------------------------------


def synthetic_images(n: int, size: int | tuple[int, int] = SIZE, seed: int = 0) -> np.ndarray:
    """``n`` uint8 RGB images resembling photos: low-frequency fields, a gradient, 1-3 soft edges, mild noise."""
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    ty = (np.arange(h) + 0.5) / h
    tx = (np.arange(w) + 0.5) / w
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        img = np.empty((h, w, 3), np.float32)
        img[:] = rng.uniform(50, 200, 3)
        # k random sinusoids (0.5..10 cycles/image, ~1/f amplitudes, random colour), written as two rank-k outer
        # products: sin(a*y + b*x + p) = sin(a*y + p) cos(b*x) + cos(a*y + p) sin(b*x).
        k = int(rng.integers(6, 14))
        freq, theta, phase = rng.uniform(0.5, 10.0, k), rng.uniform(0, 2 * np.pi, k), rng.uniform(0, 2 * np.pi, k)
        amp = rng.uniform(5, 40, k) / (1 + freq / 2)
        colour = rng.uniform(0.3, 1.0, (k, 3))
        ay = np.outer(2 * np.pi * freq * np.sin(theta), ty) + phase[:, None]
        bx = np.outer(2 * np.pi * freq * np.cos(theta), tx)
        left = np.concatenate([np.sin(ay), np.cos(ay)]) * np.concatenate([amp, amp])[:, None]
        right = np.concatenate([np.cos(bx), np.sin(bx)])[:, :, None] * np.concatenate([colour, colour])[:, None, :]
        img += (left.T.astype(np.float32) @ right.reshape(2 * k, -1).astype(np.float32)).reshape(h, w, 3)
        angle = rng.uniform(0, 2 * np.pi)
        grad = np.cos(angle) * tx[None, :] + np.sin(angle) * ty[:, None]
        img += grad[..., None].astype(np.float32) * rng.uniform(-60, 60, 3).astype(np.float32)
        for _ in range(int(rng.integers(1, 4))):  # half-planes and discs with 0.5-2 px soft edges
            cx, cy = rng.uniform(0, 1, 2)
            if rng.random() < 0.5:
                t = rng.uniform(0, 2 * np.pi)
                dist = (np.cos(t) * (tx[None, :] - cx) + np.sin(t) * (ty[:, None] - cy)) * min(h, w)
            else:
                dist = (rng.uniform(0.05, 0.3) - np.hypot(tx[None, :] - cx, ty[:, None] - cy)) * min(h, w)
            mask = 0.5 + 0.5 * np.tanh(dist / rng.uniform(0.5, 2.0))
            img += mask[..., None].astype(np.float32) * rng.uniform(-80, 80, 3).astype(np.float32)
        img += rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(0.5, 3.0))
        out[i] = np.clip(np.rint(img), 0, 255)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def jpeg(img: np.ndarray, quality: int = 90) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def resize_roundtrip(img: np.ndarray, factor: float, resample: Image.Resampling) -> np.ndarray:
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((round(w * factor), round(h * factor)), resample)
    return np.asarray(small.resize((w, h), resample))


def bit_accuracy(detections: list[wm.Detection], payloads: np.ndarray) -> np.ndarray:
    return np.array([np.mean(d.bits == p) for d, p in zip(detections, payloads, strict=True)])


# ---------------------------------------------------------------------------------------------------------------------
# Shared data (generated once: ~2 s of image synthesis + ~3 s of embedding on 2 cores)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return synthetic_images(N_IMAGES, seed=2024)


@pytest.fixture(scope="module")
def payloads() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 2, (N_IMAGES, N_BITS))


@pytest.fixture(scope="module")
def marked(clean: np.ndarray, payloads: np.ndarray) -> np.ndarray:
    return np.stack([wm.embed(img, KEY, bits) for img, bits in zip(clean, payloads, strict=True)])


# ---------------------------------------------------------------------------------------------------------------------
# Requirements
# ---------------------------------------------------------------------------------------------------------------------


def test_test_images_are_image_like(clean: np.ndarray) -> None:
    # Guard the premise: varied, mostly smooth content (neighbour differences far below white noise's ~100).
    assert clean.shape == (N_IMAGES, SIZE, SIZE, 3) and clean.dtype == np.uint8
    assert np.std(clean.mean(axis=(1, 2, 3))) > 10
    neighbour_diff = np.abs(np.diff(clean[:20].astype(np.int16), axis=2)).mean()
    assert 1.0 < neighbour_diff < 10.0


def test_invisible_psnr(clean: np.ndarray, marked: np.ndarray) -> None:
    values = np.array([psnr(m, c) for m, c in zip(marked, clean, strict=True)])
    assert values.min() >= 40.0, values.min()
    # The embedder spends its budget: the default target is 42 dB, so it should land right there.
    assert values.min() >= wm.DEFAULT_TARGET_PSNR - 1e-9
    assert values.mean() < wm.DEFAULT_TARGET_PSNR + 0.5


def test_only_luma_changes(clean: np.ndarray, marked: np.ndarray) -> None:
    # The same luma change goes to R, G and B, so channels differ only by rounding (or clipping at 0/255).
    diff = marked[:10].astype(np.int16) - clean[:10]
    unclipped = ((marked[:10] > 0) & (marked[:10] < 255)).all(-1)
    spread = diff.max(-1) - diff.min(-1)
    assert spread[unclipped].max() <= 1
    assert np.abs(diff).max() > 0


def test_roundtrip_without_attack_is_exact(marked: np.ndarray, payloads: np.ndarray) -> None:
    det = wm.detect_batch(marked, KEY, N_BITS)
    assert bit_accuracy(det, payloads).min() == 1.0
    assert all(d.present for d in det)
    assert min(d.confidence for d in det) > 0.9999
    assert min(d.score for d in det) > 2 * wm.DEFAULT_THRESHOLD


def test_robust_to_jpeg_quality_90(marked: np.ndarray, payloads: np.ndarray) -> None:
    det = wm.detect_batch(np.stack([jpeg(m, 90) for m in marked]), KEY, N_BITS)
    acc = bit_accuracy(det, payloads)
    assert acc.mean() >= 0.95 and acc.min() >= 0.95, (acc.mean(), acc.min())
    assert all(d.present for d in det)


@pytest.mark.parametrize("resample", [Image.Resampling.BICUBIC, Image.Resampling.BILINEAR], ids=["bicubic", "bilinear"])
def test_robust_to_resize_90_percent_and_back(
    marked: np.ndarray, payloads: np.ndarray, resample: Image.Resampling
) -> None:
    det = wm.detect_batch(np.stack([resize_roundtrip(m, 0.9, resample) for m in marked]), KEY, N_BITS)
    acc = bit_accuracy(det, payloads)
    assert acc.mean() >= 0.95 and acc.min() >= 0.95, (acc.mean(), acc.min())
    assert all(d.present for d in det)


def test_resized_copy_can_be_detected_given_original_size(marked: np.ndarray, payloads: np.ndarray) -> None:
    small = np.asarray(Image.fromarray(marked[0]).resize((230, 230), Image.Resampling.BICUBIC))
    det = wm.detect(small, KEY, N_BITS, size=(SIZE, SIZE))
    assert det.present and np.array_equal(det.bits, payloads[0])


def test_false_positives_on_unmarked_images(clean: np.ndarray) -> None:
    det = wm.detect_batch(clean, KEY, N_BITS)
    scores = np.array([d.score for d in det])
    assert np.mean([d.present for d in det]) <= 0.01
    assert not any(wm.is_watermarked(img, KEY, N_BITS) for img in clean[:5])
    # Calibration: under no mark the header score is a unit-variance Rademacher sum, roughly N(0, 1).
    assert abs(scores.mean()) < 0.3 and 0.7 < scores.std() < 1.3, (scores.mean(), scores.std())
    # confidence = 1 - p_value and p_value bounds the false-positive rate, so few unmarked images exceed 0.99.
    assert np.mean([d.confidence >= 0.99 for d in det]) <= 0.01


def test_wrong_key_neither_detects_nor_reads(marked: np.ndarray, payloads: np.ndarray) -> None:
    det = wm.detect_batch(marked, WRONG_KEY, N_BITS)
    assert np.mean([d.present for d in det]) <= 0.01
    # Without the key the payload reads as coin flips.
    acc = bit_accuracy(det, payloads)
    assert 0.45 < acc.mean() < 0.55, acc.mean()
    assert not wm.is_watermarked(marked[0], WRONG_KEY, N_BITS)
    assert wm.is_watermarked(marked[0], KEY, N_BITS)


def test_keys_of_every_type_and_distinct_patterns(clean: np.ndarray) -> None:
    bits = np.arange(32) % 2
    outs = {}
    for key in (12345, b"\x00\x01raw", "text key", "12345"):
        outs[key] = wm.embed(clean[0], key, bits)
        det = wm.detect(outs[key], key, 32)
        assert det.present and np.array_equal(det.bits, bits)
    # The key seeds the pattern: 12345 and "12345" are different keys, and so is every other pair.
    assert not np.array_equal(outs[12345], outs["12345"])
    assert not wm.detect(outs[12345], "12345", 32).present
    assert np.array_equal(wm.embed(clean[0], 12345, bits), outs[12345])  # deterministic


SHAPES = [(32, 32), (64, 64), (96, 160), (512, 512), (1024, 1024)]


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
def test_sizes_from_32_to_1024(shape: tuple[int, int]) -> None:
    n = 1 if shape[0] >= 512 else 4
    imgs = synthetic_images(n, shape, seed=shape[0] * 7 + shape[1])
    bits = np.random.default_rng(shape[1]).integers(0, 2, (n, N_BITS))
    for img, b in zip(imgs, bits, strict=True):
        out = wm.embed(img, KEY, b)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert psnr(out, img) >= 40.0
        det = wm.detect(out, KEY, N_BITS)
        assert det.present and np.array_equal(det.bits, b)


def test_detection_result_api(marked: np.ndarray, payloads: np.ndarray) -> None:
    det = wm.detect(marked[1], KEY, N_BITS)
    bits, confidence = det  # also unpacks as (bits, confidence)
    assert bits.dtype == np.uint8 and bits.shape == (N_BITS,) and np.array_equal(bits, payloads[1])
    assert confidence == det.confidence and 0.0 <= confidence <= 1.0
    assert det.p_value == pytest.approx(np.exp(-0.5 * det.score**2))
    assert np.array_equal(det.bit_scores > 0, bits.astype(bool))


def test_geometric_attacks_are_a_documented_limit(marked: np.ndarray) -> None:
    # The mark is tied to the pixel grid (see module docstring): a flip or a 4-pixel shift removes it.
    assert not wm.is_watermarked(marked[2][:, ::-1].copy(), KEY, N_BITS)
    shifted = np.pad(marked[2][4:, 4:], ((0, 4), (0, 4), (0, 0)), mode="edge")
    assert not wm.is_watermarked(shifted, KEY, N_BITS)


def test_input_validation(clean: np.ndarray) -> None:
    img = clean[0]
    with pytest.raises(TypeError, match="uint8"):
        wm.embed(img.astype(np.float32), KEY, [0, 1])
    with pytest.raises(ValueError, match="HxWx3"):
        wm.embed(img[..., 0], KEY, [0, 1])
    with pytest.raises(ValueError, match="0 or 1"):
        wm.embed(img, KEY, [0, 2])
    with pytest.raises(ValueError, match="non-empty"):
        wm.embed(img, KEY, [])
    with pytest.raises(ValueError, match="too few"):
        wm.embed(img[:16, :16], KEY, [0, 1] * 24)
    with pytest.raises(TypeError, match="bool"):
        wm.embed(img, True, [0, 1])
    with pytest.raises(TypeError, match="key"):
        wm.detect(img, 1.5, 8)
    with pytest.raises(ValueError, match="num_bits"):
        wm.detect(img, KEY, 0)


# ---------------------------------------------------------------------------------------------------------------------
# denormalize / postprocess
# ---------------------------------------------------------------------------------------------------------------------


def test_denormalize_range_dtype_layout() -> None:
    x = np.random.default_rng(0).uniform(-1.5, 1.5, (2, 3, 5, 7)).astype(np.float32)
    y = denormalize(x)
    assert y.dtype == np.uint8 and y.shape == (2, 5, 7, 3) and y.flags.c_contiguous
    assert y.min() == 0 and y.max() == 255
    # Same bytes as the official PyTorch conversion (img * 127.5 + 128).clamp(0, 255).to(uint8), in float32.
    ref = np.trunc(np.clip(x * np.float32(127.5) + np.float32(128), 0, 255)).astype(np.uint8)
    assert np.array_equal(y, ref.transpose(0, 2, 3, 1))
    assert denormalize(x[:, :1]).shape == (2, 5, 7, 1)


def test_denormalize_rounding() -> None:
    vals = np.array([-1.0, 0.0, 1.0, -3.0, 2.5, 0.5 / 127.5 - 1.0, 1.0 / 127.5 - 1.0, 126.5 / 127.5 - 1.0])
    y = denormalize(np.broadcast_to(vals[None, None, None, :], (1, 3, 1, vals.size)))[0, 0, :, 0]
    # -1 -> 0, 0 -> 127.5 -> 128 (half up), 1 -> 255, out of range clipped, 0.5 -> 1, 1 -> 1, 126.5 -> 127.
    assert y.tolist() == [0, 128, 255, 0, 255, 1, 1, 127]
    # uint8 -> [-1, 1] -> uint8 is the identity (each value maps to v + 0.5 before the floor).
    v = np.arange(256, dtype=np.float32).reshape(1, 1, 16, 16)
    assert np.array_equal(denormalize(np.repeat(v / 127.5 - 1, 3, axis=1))[0, ..., 0], v[0, 0].astype(np.uint8))


@pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_denormalize_rejects_non_finite(bad: float, word: str) -> None:
    x = np.zeros((2, 3, 4, 4), np.float32)
    x[1, 2, 3, 0] = bad
    with pytest.raises(ValueError, match=word) as err:
        denormalize(x)
    assert "(1, 2, 3, 0)" in str(err.value)


def test_denormalize_rejects_bad_shapes_and_dtypes() -> None:
    with pytest.raises(ValueError, match="rank 4"):
        denormalize(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="channels"):
        denormalize(np.zeros((1, 4, 8, 8), np.float32))
    with pytest.raises(ValueError, match="NHWC"):
        denormalize(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(TypeError, match="floating"):
        denormalize(np.zeros((1, 3, 8, 8), np.uint8))


def test_denormalize_accepts_bfloat16() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.array([-1.0, 0.0, 1.0], dtype=ml_dtypes.bfloat16).reshape(1, 1, 1, 3)
    assert denormalize(x)[0, 0, :, 0].tolist() == [0, 128, 255]


def test_postprocess_denormalizes_then_watermarks(clean: np.ndarray, payloads: np.ndarray) -> None:
    u8 = clean[:3]
    floats = (u8.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2)  # what the generator would emit
    assert np.array_equal(denormalize(floats), u8)
    out = postprocess(floats, KEY, payloads[0])
    assert out.dtype == np.uint8 and out.shape == u8.shape
    for o, ref in zip(out, u8, strict=True):
        assert psnr(o, ref) >= 40.0
        det = wm.detect(o, KEY, N_BITS)
        assert det.present and np.array_equal(det.bits, payloads[0])
    # One payload per image.
    out = postprocess(floats, KEY, payloads[:3])
    assert all(np.array_equal(wm.detect(o, KEY, N_BITS).bits, p) for o, p in zip(out, payloads[:3], strict=True))
    with pytest.raises(ValueError, match="payload_bits"):
        postprocess(floats, KEY, payloads[:2])
    with pytest.raises(ValueError, match="RGB"):
        postprocess(floats[:, :1], KEY, payloads[0])
