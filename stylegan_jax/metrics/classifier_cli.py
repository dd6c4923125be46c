"""``stylegan-jax shapes-classifier``: train the synthetic-shapes quality classifier and write its weights.

The package ships the result (``stylegan_jax/metrics/weights/shapes_classifier_32.npz``); this command makes it
again, deterministically (same machine and software: the same bits)::

    stylegan-jax shapes-classifier --out stylegan_jax/metrics/weights/shapes_classifier_32.npz

It prints the training progress and the held-out scores (shape precision of real images, share of each kind of
non-shape image wrongly called a shape) that are also stored in the file's metadata.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``stylegan-jax shapes-classifier``."""
    parser.add_argument("--out", required=True, metavar="PATH", help="where to write the weights (.npz)")
    parser.add_argument("--steps", type=int, default=6000, help="training steps (default 6000)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate, cosine-decayed (default 2e-3)")
    parser.add_argument("--seed", type=int, default=0, help="initialization and augmentation seed (default 0)")
    parser.add_argument("--pool-size", type=int, default=9000,
                        help="synthetic images (content seed 1) to train on (default 9000)")


def command(args: argparse.Namespace) -> int:
    """Run ``stylegan-jax shapes-classifier``; returns the exit status (errors on stderr, status 1)."""
    from stylegan_jax.metrics.shape_quality import save_shape_classifier, train_shape_classifier

    out = Path(args.out)
    start = time.time()
    try:
        variables, meta = train_shape_classifier(
            steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, pool_size=args.pool_size,
            log=lambda s: print(f"[{time.time() - start:6.0f} s] {s}", file=sys.stderr, flush=True))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(save_shape_classifier(variables, meta))
    except (ValueError, OSError) as e:
        print(f"stylegan-jax shapes-classifier: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(meta["heldout"], indent=2))
    print(f"wrote {out} ({out.stat().st_size} bytes, fingerprint {meta['fingerprint']}, "
          f"{time.time() - start:.0f} s)", file=sys.stderr)
    return 0
