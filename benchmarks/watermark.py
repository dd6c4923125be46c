"""Time the provenance watermark: embed and detect per image (default 256x256 RGB, 48-bit payload).

    .venv/bin/python benchmarks/watermark.py [--sizes 256 1024] [--images 20] [--bits 48] [--json OUT]

Prints a table (median / mean milliseconds per image; ``detect_batch`` amortised over the whole stack) and,
with ``--json``, writes the same numbers plus the environment. The images are smooth, photo-like synthetic
fields (the embed cost depends slightly on content through its correction passes).
"""

from __future__ import annotations

import statistics
import time

import _common
import numpy as np
import scipy

from stylegan_jax.apis import watermark as wm


def photo_like(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Random low-frequency sinusoids + gradient + a soft disc + mild noise, as uint8 RGB."""
    rng = np.random.default_rng(seed)
    t = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(t, t, indexing="ij")
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = np.full((size, size, 3), rng.uniform(60, 190, 3))
        for _ in range(8):
            f, th = rng.uniform(0.5, 8), rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * f * (np.cos(th) * xx + np.sin(th) * yy) + rng.uniform(0, 2 * np.pi))
            img += (rng.uniform(5, 30) / (1 + f / 2) * wave)[..., None] * rng.uniform(0.3, 1, 3)
        img += (xx * rng.uniform(-50, 50))[..., None]
        cx, cy, r = rng.uniform(0.2, 0.8, 3) * [1, 1, 0.4]
        img += (0.5 + 0.5 * np.tanh((r - np.hypot(xx - cx, yy - cy)) * size))[..., None] * rng.uniform(-60, 60, 3)
        img += rng.normal(0, 1.5, img.shape)
        out[i] = np.clip(np.rint(img), 0, 255)
    return out


def _time_each(fn, items) -> list[float]:
    times = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def bench_size(size: int, n_images: int, n_bits: int, key: str) -> dict[str, float | int]:
    imgs = photo_like(n_images, size)
    bits = np.random.default_rng(1).integers(0, 2, (n_images, n_bits))
    wm.embed(imgs[0], key, bits[0])  # warm the keyed-layout cache and FFT plans: steady-state serving cost
    pairs = list(zip(imgs, bits, strict=True))
    marked = []
    embed_ms = _time_each(lambda p: marked.append(wm.embed(p[0], key, p[1])), pairs)
    detect_ms = _time_each(lambda m: wm.detect(m, key, n_bits), marked)
    stack = np.stack(marked)
    t0 = time.perf_counter()
    det = wm.detect_batch(stack, key, n_bits)
    batch_ms = (time.perf_counter() - t0) * 1e3 / n_images
    psnr = [10 * np.log10(255.0**2 / np.mean((m.astype(float) - c) ** 2)) for m, c in zip(marked, imgs, strict=True)]
    return {
        "size": size,
        "images": n_images,
        "bits": n_bits,
        "embed_ms_median": statistics.median(embed_ms),
        "embed_ms_mean": statistics.fmean(embed_ms),
        "detect_ms_median": statistics.median(detect_ms),
        "detect_ms_mean": statistics.fmean(detect_ms),
        "detect_batch_ms_per_image": batch_ms,
        "psnr_db_min": float(min(psnr)),
        "score_min": float(min(d.score for d in det)),
        "bit_accuracy_min": float(min(np.mean(d.bits == b) for d, b in zip(det, bits, strict=True))),
    }


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--bits", type=int, default=48)
    args = parser.parse_args()

    rows = [bench_size(s, args.images, args.bits, key="benchmark-key") for s in args.sizes]
    header = f"{'size':>9} {'embed ms (med/mean)':>20} {'detect ms (med/mean)':>21} {'batch det ms/img':>17} "
    header += f"{'min PSNR':>9} {'min z':>7} {'min acc':>8}"
    print(header)
    for r in rows:
        print(
            f"{r['size']:>4}x{r['size']:<4} {r['embed_ms_median']:>9.2f} / {r['embed_ms_mean']:<8.2f} "
            f"{r['detect_ms_median']:>10.2f} / {r['detect_ms_mean']:<8.2f} {r['detect_batch_ms_per_image']:>17.2f} "
            f"{r['psnr_db_min']:>9.2f} {r['score_min']:>7.1f} {r['bit_accuracy_min']:>8.3f}"
        )
    env = {**_common.machine(with_jax=False), "numpy": np.__version__, "scipy": scipy.__version__}
    _common.write_json(args.json, {"benchmark": "watermark", "environment": env, "results": rows})

if __name__ == "__main__":
    main()
