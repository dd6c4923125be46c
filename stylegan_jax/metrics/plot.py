"""Metric curves as a PNG without a plotting library: one panel per metric against kimg, drawn with Pillow.

``quality_plot(history)`` returns a ``PIL.Image``; the training loop saves it as ``images/quality.png``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

# Panel titles of the metrics the loop logs (others are shown under their own name).
TITLES = {
    "Metrics/shapes_precision": "shape precision (share of fakes classified as a shape, p >= 0.9)",
    "Metrics/shapes_fid": "FID in the shape classifier's feature space",
    "Metrics/shapes_kid": "KID in the shape classifier's feature space",
    "Metrics/eqt_int": "EQ-T (dB)",
    "Metrics/eqt_frac": "EQ-T_frac (dB)",
    "Metrics/eqr": "EQ-R (dB)",
}
_COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + 1e-9 * step:
        if t >= lo - 1e-9 * step:
            ticks.append(round(t, 10))
        t += step
    return ticks


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 or v == int(v) else (f"{v:.1f}" if abs(v) >= 10 else f"{v:.2g}")


def quality_plot(history: Sequence[Mapping[str, float]], keys: Sequence[str] | None = None, *,
                 width: int = 640, panel_height: int = 200, title: str | None = None) -> Image.Image:
    """Plot ``history`` (records with a ``kimg`` field and metric values, as the loop's metrics.jsonl lines) as
    one panel per metric in ``keys`` (default: every key of :data:`TITLES` present), value against kimg.

    Precision-like metrics in [0, 1] get a fixed 0..1 axis; the others span their range (from 0 when all
    values are positive). Non-finite values are skipped. Returns an RGB image of ``width`` x (panels *
    ``panel_height`` + title).
    """
    if width < 200 or panel_height < 80:
        raise ValueError(f"width must be >= 200 and panel_height >= 80, got {width} and {panel_height}")
    records = [r for r in history if isinstance(r.get("kimg"), int | float)]
    if keys is None:
        keys = [k for k in TITLES if any(k in r for r in records)]
    keys = list(keys)
    font = ImageFont.load_default()
    top = 22 if title else 4
    img = Image.new("RGB", (width, top + max(len(keys), 1) * panel_height), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((8, 5), title, fill="black", font=font)
    if not keys or not records:
        draw.text((8, top + 8), "no metrics yet", fill="gray", font=font)
        return img
    kimgs = [float(r["kimg"]) for r in records]
    x_lo, x_hi = 0.0, max(max(kimgs), 1e-3)
    left, right = 52, 14
    for p, key in enumerate(keys):
        y0 = top + p * panel_height
        plot_top, plot_bottom = y0 + 18, y0 + panel_height - 24
        points = [(float(r["kimg"]), float(r[key])) for r in records
                  if key in r and r[key] is not None and math.isfinite(float(r[key]))]
        draw.text((left, y0 + 3), TITLES.get(key, key), fill="black", font=font)
        values = [v for _, v in points]
        if "precision" in key:
            y_lo, y_hi = 0.0, 1.0
        elif values:
            y_lo = 0.0 if min(values) >= 0 else min(values)
            y_hi = max(values) if max(values) > y_lo else y_lo + 1.0
        else:
            y_lo, y_hi = 0.0, 1.0
        yt = _nice_ticks(y_lo, y_hi)
        if yt:
            y_lo, y_hi = min(y_lo, yt[0]), max(y_hi, yt[-1])
        def sx(x: float) -> float:
            return left + (x - x_lo) / (x_hi - x_lo) * (width - left - right)

        def sy(y: float, lo: float = y_lo, hi: float = y_hi, b: float = plot_bottom, t: float = plot_top) -> float:
            return b - (y - lo) / (hi - lo) * (b - t)

        for t in yt:
            y = sy(t)
            draw.line([(left, y), (width - right, y)], fill=(230, 230, 230))
            draw.text((4, y - 6), _fmt(t), fill="black", font=font)
        for t in _nice_ticks(x_lo, x_hi, 8):
            x = sx(t)
            draw.line([(x, plot_bottom), (x, plot_bottom + 3)], fill="black")
            draw.text((x - 8, plot_bottom + 5), _fmt(t), fill="black", font=font)
        draw.rectangle([left, plot_top, width - right, plot_bottom], outline="black")
        if p == len(keys) - 1:
            draw.text((width - right - 30, plot_bottom + 12), "kimg", fill="black", font=font)
        color = _COLORS[p % len(_COLORS)]
        xy = [(sx(x), sy(y)) for x, y in points]
        if len(xy) > 1:
            draw.line(xy, fill=color, width=2)
        for x, y in xy:
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=color)
        if points:
            draw.text((width - right - 70, y0 + 3), f"last {_fmt(points[-1][1])}", fill=color, font=font)
    return img
