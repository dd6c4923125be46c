"""``stylegan-jax visualize``: serve the browser visualizer (:mod:`stylegan_jax.apis.visualizer`) for a checkpoint.

Examples::

    stylegan-jax visualize --ckpt runs/quickstart                  # http://127.0.0.1:8080
    ssh -L 8080:127.0.0.1:8080 trainbox                            # then, on the training box:
    stylegan-jax visualize --ckpt runs/ffhq256 --port 8080         # and open http://127.0.0.1:8080 locally

It binds to 127.0.0.1 by default: the page has no authentication, so reach it through an SSH port-forward
rather than binding a public address.
"""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``stylegan-jax visualize``."""
    from stylegan_jax.apis.server import KEY_ENV, add_watermark_arguments

    parser.add_argument("--ckpt", required=True, metavar="PATH",
                        help="a training workdir (all its checkpoints are selectable, new ones appear as training "
                             "writes them), its checkpoints/ directory, one step directory, or a 'convert' output")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="bind address (default 127.0.0.1: local only; use ssh -L to reach it remotely)")
    parser.add_argument("--network", choices=("G_ema", "G"), default="G_ema",
                        help="which generator weights to render (default: G_ema)")
    parser.add_argument("--max-concurrency", type=int, default=1, help="renders running at once (default 1)")
    parser.add_argument("--max-queue", type=int, default=None,
                        help="requests allowed to wait for a slot before 503 (default: = --max-concurrency)")
    add_watermark_arguments(parser, f"watermark the downloaded PNGs with this key (default: ${KEY_ENV}; without a "
                                    "key downloads are the plain PNG the page shows)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="do not render seed 0 before serving (the first page load then pays the compilation)")
    parser.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])


def command(args: argparse.Namespace) -> int:
    """Run ``stylegan-jax visualize``; returns the exit status (2 for bad options or checkpoints)."""
    import uvicorn

    from stylegan_jax.apis.server import watermark_from_args
    from stylegan_jax.apis.visualizer import create_app, render_image
    from stylegan_jax.checkpoint import CheckpointError

    if args.max_concurrency < 1 or (args.max_queue is not None and args.max_queue < 0):
        print("stylegan-jax visualize: error: --max-concurrency must be >= 1 and --max-queue >= 0", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f"stylegan-jax visualize: error: --port must be in 0..65535, got {args.port}", file=sys.stderr)
        return 2
    try:
        key, payload = watermark_from_args(args)
        app = create_app(args.ckpt, which=args.network, watermark_key=key, payload=payload,
                         max_concurrency=args.max_concurrency, max_queue=args.max_queue)
    except (CheckpointError, ValueError, OSError) as e:
        print(f"stylegan-jax visualize: error: {e}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {args.host}: the visualizer has no authentication and anyone who can reach this "
              "address can use it; prefer the default 127.0.0.1 with an SSH port-forward", file=sys.stderr)
    checkpoints = app.state.checkpoints
    s = checkpoints.sampler(checkpoints.default_step)
    print(f"loaded {s} from {args.ckpt} (steps {checkpoints.steps()}, showing {checkpoints.default_step}); "
          f"downloads {'watermarked' if key else 'not watermarked (no --watermark-key)'}", file=sys.stderr)
    if not args.no_warmup:
        from stylegan_jax.apis.visualizer import RenderSettings

        t0 = time.perf_counter()
        render_image(s, RenderSettings(step=checkpoints.default_step, seed=0.0,
                                       class_idx=0 if s.c_dim > 0 else None))
        print(f"compiled the generator in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    print(f"visualizer on http://{args.host}:{args.port}  (remote box: ssh -L {args.port}:127.0.0.1:{args.port} "
          "HOST, then open that address locally)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
