"""``stylegan-jax project``: find the latent of a real image (GAN inversion), then edit it with ``generate``.

Examples::

    stylegan-jax project --ckpt ckpt/ffhqu256 --target me.png --outdir out                 # W, pixel distance
    stylegan-jax project --ckpt ckpt/ffhqu256 --target me.png --outdir out --space w+ --vgg16 vgg16.pt --video
    stylegan-jax generate --ckpt ckpt/ffhqu256 --ws out/projected_w.npz --rotate 10 --outdir edits

Writes ``OUT/projected.png`` (the projection, at the model's resolution), ``OUT/compare.png`` (target |
projection), ``OUT/projected_w.npz`` (``w`` ``[num_ws, w_dim]``; StyleGAN2 also the optimised noise images) and
with ``--video`` ``OUT/projection.mp4`` (target | projection during the optimisation; needs the ``video`` extra).
The method is that of the StyleGAN2-ADA projector (:mod:`stylegan_jax.apis.projector`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from stylegan_jax.cli import add_checkpoint_arguments, load_sampler, report_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``stylegan-jax project``."""
    from stylegan_jax.apis.projector import ProjectionConfig

    d = ProjectionConfig()
    add_checkpoint_arguments(parser, "which generator to project into")
    parser.add_argument("--target", required=True, metavar="IMG",
                        help="image to project (any size: centre-cropped to a square and resized to the model's)")
    parser.add_argument("--outdir", required=True, metavar="DIR", help="output directory (created)")
    parser.add_argument("--space", choices=("w", "w+"), default=d.space,
                        help="'w': one w for all layers (default, the official projector; best for editing); "
                             "'w+': one w per layer (closer reconstructions)")
    parser.add_argument("--steps", type=int, default=d.num_steps, help=f"optimisation steps (default {d.num_steps})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent noise and StyleGAN2's initial noise")
    parser.add_argument("--class", dest="class_idx", type=int, default=None, metavar="K",
                        help="class label of a conditional model (required for those)")
    parser.add_argument("--vgg16", default=None, metavar="PATH",
                        help="VGG16 weights for the perceptual distance: torchvision's vgg16 state dict "
                             "(vgg16-397923af.pth) or the StyleGAN2-ADA projector's vgg16.pt; read without torch, "
                             "never downloaded. Without it: a pixel + multi-scale distance")
    parser.add_argument("--lr", type=float, default=d.initial_learning_rate,
                        help=f"peak learning rate (default {d.initial_learning_rate})")
    parser.add_argument("--w-avg-samples", type=int, default=d.w_avg_samples,
                        help=f"latents mapped to estimate w_avg / w_std (default {d.w_avg_samples})")
    parser.add_argument("--noise-reg", type=float, default=d.regularize_noise_weight,
                        help=f"weight of the StyleGAN2 noise regulariser (default {d.regularize_noise_weight:g})")
    parser.add_argument("--no-noise-opt", action="store_true",
                        help="StyleGAN2: keep the stored noise images instead of optimising them")
    parser.add_argument("--video", action="store_true", help="write OUTDIR/projection.mp4 of the optimisation")
    parser.add_argument("--video-every", type=int, default=None, metavar="N",
                        help="one video frame every N steps (default: about 100 frames)")
    parser.add_argument("--fps", type=float, default=10.0, help="video frame rate (default 10)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run(args: argparse.Namespace) -> None:
    from stylegan_jax.apis import projector as P
    from stylegan_jax.apis.sampling import image_grid, save_video

    cfg = P.ProjectionConfig(num_steps=args.steps, space=args.space, w_avg_samples=args.w_avg_samples,
                             initial_learning_rate=args.lr, regularize_noise_weight=args.noise_reg,
                             optimize_noise=not args.no_noise_opt)
    cfg.validate()  # option mistakes cost nothing
    if args.video_every is not None and args.video_every < 1:
        raise ValueError("--video-every must be >= 1")
    if args.video:
        try:
            import imageio  # noqa: F401
            import imageio_ffmpeg  # noqa: F401
        except ImportError as e:
            raise RuntimeError(f"--video needs imageio and imageio-ffmpeg ({e.name} is not installed): "
                               "pip install 'stylegan-jax[video]'") from None
    distance = P.vgg16_distance(args.vgg16) if args.vgg16 else P.pixel_distance()

    s = load_sampler(args)
    target, message = P.load_target(args.target, s.img_resolution, s.img_channels)
    if message:
        print(message)
    print(f"distance: {distance.description}")
    noise_count = len(P.noise_buffers(s.variables)) if cfg.optimize_noise else 0
    print(f"projecting in {cfg.space.upper()} space for {cfg.num_steps} steps"
          + (f", optimising {noise_count} noise images" if noise_count else ""))

    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    every = args.video_every or max(1, cfg.num_steps // 100)
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.num_steps, unit="step", dynamic_ncols=True, desc="project")

    def progress(i: int, dist: float) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(dist=f"{dist:.4g}", refresh=False)

    start = time.perf_counter()
    try:
        result = P.project(s, target, distance, cfg, seed=args.seed, class_idx=args.class_idx,
                           video_every=every if args.video else None, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - start

    from stylegan_jax.apis.sampling import _to_pil

    _to_pil(result.image).save(outdir / "projected.png")
    image_grid(list(target[None]) + list(result.image[None]), cols=2).save(outdir / "compare.png")
    P.save_projected_w(outdir / "projected_w.npz", result.w, result.noise)
    summary = {"distance": result.distance_name, "space": result.space, "steps": cfg.num_steps,
               "seed": args.seed, "class": args.class_idx, "first_distance": float(result.distances[0]),
               "final_distance": result.final_distance, "psnr_db": P.psnr(result.image, target),
               "seconds": round(elapsed, 2)}
    (outdir / "projection.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"distance {result.distances[0]:.4g} -> {result.final_distance:.4g} ({result.distance_name}), "
          f"PSNR {summary['psnr_db']:.2f} dB, {elapsed:.1f} s")
    print(f"wrote {outdir / 'projected.png'}, {outdir / 'compare.png'}, {outdir / 'projected_w.npz'}")
    if args.video:
        video = save_video(result.frames, outdir / "projection.mp4", fps=args.fps)
        print(f"wrote {video} ({len(result.frames)} frames)")


def command(args: argparse.Namespace) -> int:
    """Run ``stylegan-jax project``; returns the exit status (errors are reported on stderr, status 1)."""
    return report_errors("project", _run, args)
