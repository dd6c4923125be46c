"""``stylegan-jax train --config configs/NAME.py --workdir DIR [--config.key=value ...] [--no-resume]``."""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--config", required=True, help="config file defining get_config(), e.g. configs/quickstart.py")
    ap.add_argument("--workdir", required=True, help="run directory: checkpoints, logs, image grids")
    ap.add_argument("--no-resume", dest="resume", action="store_false",
                    help="start from scratch even if WORKDIR has checkpoints (they are kept until overwritten)")
    ap.add_argument("--resume", dest="resume", action="store_true", help="continue from WORKDIR (the default)")
    ap.add_argument("--stop-after-steps", type=int, default=None, help="stop after this many steps (smoke tests)")
    ap.set_defaults(resume=True)


def parse_known(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser()
    add_arguments(ap)
    return ap.parse_known_args(argv)


def command(args: argparse.Namespace) -> int:
    from stylegan_jax.config import apply_overrides, load_config
    from stylegan_jax.train import distributed
    from stylegan_jax.train.loop import TrainingDiverged, train

    try:
        config = apply_overrides(load_config(args.config), getattr(args, "overrides", []))
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"stylegan-jax train: bad config: {e}", file=sys.stderr)
        return 2
    try:
        summary = train(config, args.workdir, resume=args.resume, stop_after_steps=args.stop_after_steps)
    except TrainingDiverged as e:
        print(f"{distributed.log_prefix()}stylegan-jax train: stopped: {e}", file=sys.stderr)
        return 3
    except ValueError as e:  # bad data, bad config combinations: reported before training starts
        print(f"{distributed.log_prefix()}stylegan-jax train: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if not distributed.is_peer_failure(e):
            raise
        # Another process died: say which, and exit without the exit barrier (it would wait for the dead peer).
        message = str(e) if isinstance(e, distributed.PeerLost) else distributed.lost_peer_message(e)
        print(f"{distributed.log_prefix()}stylegan-jax train: {message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(distributed.LOST_PEER_EXIT_CODE)
    where = f"{summary['workdir']}/checkpoints"
    print(f"{distributed.log_prefix()}done: {summary['kimg']:.3f} kimg, checkpoints in {where}", flush=True)
    return 0
