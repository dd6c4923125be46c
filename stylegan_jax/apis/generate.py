"""``stylegan-jax generate``: images, grids, style mixing and interpolation videos from a checkpoint.

Examples::

    stylegan-jax generate --ckpt runs/quickstart --seeds 0-7 --psi 0.7 --outdir out --grid
    stylegan-jax generate --ckpt ckpt --seeds 3 --translate=0.1,-0.05 --rotate 12 --outdir out
    stylegan-jax generate --ckpt ckpt --style-mix --rows 0-3 --cols 4-7 --styles 0-6 --outdir out
    stylegan-jax generate --ckpt ckpt --seeds 0,1,2 --interpolate --frames 30 --video out/lerp.gif
    stylegan-jax generate --ckpt sg2_ckpt --seeds 0-7 --noise-mode random --outdir out     # StyleGAN2
    stylegan-jax generate --ckpt ckpt --ws proj/projected_w.npz --rotate 10 --outdir out  # a projected latent
    stylegan-jax generate --ckpt ckpt --ws a/projected_w.npz --ws b/projected_w.npz --seeds 3 --interpolate \
        --video out/ab3.gif                                         # projected latents (then seeds) as keyframes

Per-seed images are written as ``seed0000.png`` ... like the official ``gen_images.py`` (same seeds, same
pictures for a converted official model; for StyleGAN2 with ``--noise-mode const``, the default). StyleGAN2
generators have no input transform, so ``--translate`` / ``--rotate`` are refused for them; ``--noise-mode
random`` draws each image's noise from its seed (see :mod:`stylegan_jax.apis.sampling`), so the same command
always writes the same pictures. ``--ws FILE`` renders a latent written by ``stylegan-jax project``
(``projected_w.npz``: ``w [num_ws, w_dim]``; a StyleGAN2 projection also stores its optimised noise images, used
with ``--noise-mode const``) as ``<file stem>.png``; ``--psi`` truncates it towards ``w_avg`` like a seed's ws.
All the work is done by :mod:`stylegan_jax.apis.sampling`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from stylegan_jax.apis.sampling import _to_pil, parse_range, parse_vec2
from stylegan_jax.cli import add_checkpoint_arguments, load_sampler, report_errors


def _range_arg(s: str) -> list[int]:
    try:
        return parse_range(s)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _vec2_arg(s: str) -> tuple[float, float]:
    try:
        return parse_vec2(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``stylegan-jax generate``."""
    add_checkpoint_arguments(parser, "which generator weights to sample from")
    parser.add_argument("--seeds", type=_range_arg, metavar="LIST",
                        help="random seeds, e.g. '0-7,10' (z = np.random.RandomState(seed).randn(1, z_dim))")
    parser.add_argument("--ws", dest="ws_files", action="append", default=None, metavar="FILE",
                        help="render a latent saved by 'stylegan-jax project' (projected_w.npz); repeat for several; "
                             "with --interpolate they are the first keyframes (then --seeds, if given)")
    parser.add_argument("--psi", "--trunc", dest="psi", type=float, default=1.0,
                        help="truncation psi (1 = none; default 1)")
    parser.add_argument("--cutoff", type=int, default=None,
                        help="truncate only the first N ws of the per-seed images (default: all)")
    parser.add_argument("--class", dest="class_idx", type=int, default=None, metavar="K",
                        help="class label of a conditional model (required for those)")
    parser.add_argument("--translate", type=_vec2_arg, default=(0.0, 0.0), metavar="X,Y",
                        help="translate the input grid, in image widths (write negatives as --translate=-0.1,0.2); "
                             "StyleGAN3 only")
    parser.add_argument("--rotate", type=float, default=0.0, metavar="DEG",
                        help="rotation angle in degrees; StyleGAN3 only")
    parser.add_argument("--noise-mode", choices=("const", "random", "none"), default="const",
                        help="noise inputs of StyleGAN2 generators: const (default, like gen_images.py: the noise "
                             "images stored with the weights), random (fresh noise drawn from each image's seed, "
                             "so reruns give the same pictures; style-mixing cells use their row's seed, "
                             "interpolation frames the first seed) or none; StyleGAN3 has no noise inputs and "
                             "ignores it")
    parser.add_argument("--outdir", default=None, metavar="DIR", help="directory for the PNGs (created)")
    parser.add_argument("--grid", action="store_true", help="also write grid.png with all the seeds' images")
    parser.add_argument("--grid-cols", type=int, default=None, metavar="N",
                        help="columns of grid.png (default: about square)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per compiled forward pass (default 8)")

    mix = parser.add_argument_group("style mixing (--style-mix)")
    mix.add_argument("--style-mix", action="store_true",
                     help="write style_mix.png: rows' ws with the --styles layers taken from the columns' seeds")
    mix.add_argument("--rows", type=_range_arg, metavar="LIST", help="row seeds, e.g. '0-3'")
    mix.add_argument("--cols", type=_range_arg, metavar="LIST", help="column seeds, e.g. '4-7'")
    mix.add_argument("--styles", type=_range_arg, default=list(range(7)), metavar="LIST",
                     help="ws layers copied from the column seeds (default '0-6')")

    interp = parser.add_argument_group("interpolation (--interpolate)")
    interp.add_argument("--interpolate", action="store_true",
                        help="write a video moving through the --seeds in W space")
    interp.add_argument("--frames", type=int, default=30, help="frames per transition between two seeds (default 30)")
    interp.add_argument("--kind", choices=("linear", "slerp"), default="linear", help="interpolation in W space")
    interp.add_argument("--loop", action="store_true", help="return to the first seed at the end")
    interp.add_argument("--fps", type=float, default=30.0, help="video frame rate (default 30)")
    interp.add_argument("--video", default=None, metavar="FILE",
                        help="output .gif (Pillow) or .mp4 (needs imageio-ffmpeg); default OUTDIR/interpolation.gif")


def _save_png(img: np.ndarray, path: Path) -> None:
    _to_pil(img).save(path)


def _run(args: argparse.Namespace) -> None:
    # Validate the options before loading anything, so mistakes cost nothing.
    if args.style_mix and args.interpolate:
        raise ValueError("choose one of --style-mix and --interpolate")
    if args.style_mix:
        if args.rows is None or args.cols is None:
            raise ValueError("--style-mix needs --rows and --cols (e.g. --rows 0-3 --cols 4-7)")
        if args.ws_files:
            raise ValueError("--ws cannot be combined with --style-mix")
    elif args.seeds is None and not args.ws_files:
        raise ValueError("--seeds is required (e.g. --seeds 0-7), or --ws FILE")
    if args.interpolate and args.video is None and args.outdir is None:
        raise ValueError("--interpolate needs --video FILE or --outdir DIR")
    if not args.interpolate and args.outdir is None:
        raise ValueError("--outdir is required")
    if args.batch_size < 1:
        raise ValueError("--batch-size must be >= 1")

    s = load_sampler(args, batch_size=args.batch_size)
    s.input_transform(args.translate, args.rotate)  # StyleGAN2 refuses --translate/--rotate before any output
    outdir = Path(args.outdir) if args.outdir is not None else None
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
    common = dict(psi=args.psi, class_idx=args.class_idx, translate=args.translate, rotate=args.rotate,
                  noise_mode=args.noise_mode)

    if args.style_mix:
        grid = s.style_mixing_grid(args.rows, args.cols, args.styles, **common)
        grid.save(outdir / "style_mix.png")
        print(f"wrote {outdir / 'style_mix.png'} ({len(args.rows)} rows x {len(args.cols)} columns, "
              f"styles {args.styles})")
        return

    if args.ws_files:
        _run_ws(args, s, outdir, common)
        return

    if args.interpolate:
        frames = s.interpolate(args.seeds, frames_per_transition=args.frames, kind=args.kind, loop=args.loop,
                               **common)
        video = Path(args.video) if args.video is not None else outdir / "interpolation.gif"
        s.save_video(frames, video, fps=args.fps)
        print(f"wrote {video} ({len(frames)} frames)")
        return

    imgs = s.images(args.seeds, truncation_cutoff=args.cutoff, **common)
    for seed, img in zip(args.seeds, imgs, strict=True):
        _save_png(img, outdir / f"seed{seed:04d}.png")
    print(f"wrote {len(imgs)} image(s) seed{args.seeds[0]:04d}.png ... to {outdir}")
    if args.grid:
        s.grid(imgs, cols=args.grid_cols).save(outdir / "grid.png")
        print(f"wrote {outdir / 'grid.png'}")


def _truncate(ws: np.ndarray, w_avg: np.ndarray, psi: float, cutoff: int | None) -> np.ndarray:
    if psi == 1.0:
        return ws
    out = ws.copy()
    layers = slice(None) if cutoff is None else slice(0, cutoff)
    out[:, layers] = w_avg + psi * (ws[:, layers] - w_avg)
    return out


def _run_ws(args: argparse.Namespace, s, outdir: Path | None, common: dict) -> None:
    """``--ws FILE ...``: render projected latents, or interpolate through them (then through --seeds)."""
    from stylegan_jax.apis.projector import load_projected_w, sampler_with_noise

    loaded = [load_projected_w(f, s.num_ws, s.w_dim) for f in args.ws_files]
    ws = np.stack([w for w, _ in loaded])
    noise = loaded[0][1]
    if noise and args.noise_mode == "const":
        s = sampler_with_noise(s, noise)  # the projection's own noise images (StyleGAN2)
        if len(loaded) > 1:
            print(f"using the noise images of {args.ws_files[0]} for every latent")
    ws = _truncate(ws, s.w_avg, args.psi, args.cutoff)
    if args.interpolate:
        keys = ws
        if args.seeds:
            keys = np.concatenate([keys, s.ws_from_seeds(args.seeds, args.psi, args.class_idx)])
        frames = s.interpolate_ws(keys, frames_per_transition=args.frames, kind=args.kind, loop=args.loop,
                                  translate=args.translate, rotate=args.rotate, noise_mode=args.noise_mode,
                                  noise_seed=args.seeds[0] if args.seeds else 0)
        video = Path(args.video) if args.video is not None else outdir / "interpolation.gif"
        s.save_video(frames, video, fps=args.fps)
        print(f"wrote {video} ({len(frames)} frames, {len(keys)} keyframes)")
        return
    if args.seeds:
        print("warning: --seeds ignored with --ws (use --interpolate to combine them)", file=sys.stderr)
    imgs = s.synthesize(ws, args.translate, args.rotate, noise_mode=args.noise_mode)
    names = [f"{Path(f).stem}.png" for f in args.ws_files]
    if len(set(names)) < len(names):  # e.g. several runs' projected_w.npz: prefix the directory name
        names = [f"{Path(f).absolute().parent.name}_{Path(f).stem}.png" for f in args.ws_files]
    for name, img in zip(names, imgs, strict=True):
        _save_png(img, outdir / name)
    print(f"wrote {', '.join(names)} to {outdir}")
    if args.grid:
        s.grid(imgs, cols=args.grid_cols).save(outdir / "grid.png")
        print(f"wrote {outdir / 'grid.png'}")


def command(args: argparse.Namespace) -> int:
    """Run ``stylegan-jax generate``; returns the exit status (errors are reported on stderr, status 1)."""
    return report_errors("generate", _run, args)
