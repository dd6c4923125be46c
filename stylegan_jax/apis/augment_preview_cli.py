"""``stylegan-jax augment-preview --spec bgc --res 64 --out grid.png``: a PNG grid of each augmentation of a spec
at several percentiles (what D sees under ADA), on an image of yours (``--image``) or a built-in synthetic shape."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(ap: argparse.ArgumentParser) -> None:
    from stylegan_jax.apis.augment_preview import DEFAULT_PERCENTILES

    ap.add_argument("--spec", default="bgc", help="augmentation spec name (blit, geom, color, filter, noise, cutout, "
                                                  "bg, bgc, bgcf, bgcfn, bgcfnc); default bgc")
    ap.add_argument("--set", dest="knobs", action="append", default=[], metavar="KNOB=VALUE",
                    help="override a knob of the spec, e.g. --set xint_max=0.25 (repeatable)")
    ap.add_argument("--res", type=int, default=64, help="image resolution (square); default 64")
    ap.add_argument("--image", default=None, help="image file to augment (center-cropped, resized); default: a "
                                                  "built-in synthetic shape")
    ap.add_argument("--percentiles", default=",".join(f"{p:g}" for p in DEFAULT_PERCENTILES),
                    help="comma-separated percentiles in (0, 1), one column each")
    ap.add_argument("--seed", type=int, default=0, help="synthetic shape index and the additive-noise draw")
    ap.add_argument("--scale", type=int, default=0, help="pixel repetition of each cell; default: cells >= 96 px")
    ap.add_argument("--out", required=True, help="PNG file to write")


def _load_image(path: str, res: int):
    import numpy as np
    from PIL import Image

    img = Image.open(path).convert("RGB")
    s = min(img.size)
    left, top = (img.width - s) // 2, (img.height - s) // 2
    img = img.crop((left, top, left + s, top + s)).resize((res, res), Image.LANCZOS)
    return np.asarray(img, np.float32).transpose(2, 0, 1) / 127.5 - 1


def _synthetic_image(res: int, seed: int):
    import numpy as np

    from stylegan_jax.data.synthetic import SyntheticShapes

    img, _ = SyntheticShapes(res, channels=3, num_images=seed + 1).load(seed)
    return img.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1


def _knobs(items: list[str]) -> dict:
    import ast

    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KNOB=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = ast.literal_eval(v.strip())
    return out


def command(args: argparse.Namespace) -> int:
    from stylegan_jax.apis.augment_preview import preview_grid
    from stylegan_jax.ops.augment import make_spec

    try:
        if args.res < 8:
            raise ValueError(f"--res must be >= 8, got {args.res}")
        spec = make_spec(args.spec, **_knobs(args.knobs))
        percentiles = [float(p) for p in args.percentiles.split(",") if p.strip()]
        if args.image is not None and not Path(args.image).is_file():
            raise ValueError(f"--image {args.image}: no such file")
        image = _load_image(args.image, args.res) if args.image else _synthetic_image(args.res, args.seed)
        scale = args.scale or max(1, -(-96 // args.res))
        grid = preview_grid(image, spec, percentiles, seed=args.seed, scale=scale)
    except (ValueError, SyntaxError) as e:
        print(f"stylegan-jax augment-preview: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    print(f"wrote {out} ({grid.width}x{grid.height}): rows {', '.join(spec.enabled())}"
          f"{', all' if len(spec.enabled()) > 1 else ''}; columns input, {', '.join(f'{p:g}' for p in percentiles)}")
    return 0
