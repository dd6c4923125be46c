"""The official PyTorch training iteration, timed the way benchmarks/train_step.py times ours (issue 17's ratio).

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy scipy requests 'setuptools>=77,<81'
    /tmp/torchenv/bin/python benchmarks/official_train_step.py --official-root PATH/TO/NVlabs/stylegan3 \\
        --cfg t --res 64 --cbase 8192 --cmax 256 --map-layers 2 --z-dim 256 --batch 8 --gamma 1 --reg-interval 2 \\
        --runs 2 --json official.json

Needs a checkout of NVlabs/stylegan3 (``--official-root``: its ``training``, ``torch_utils`` and ``dnnlib`` are
imported from there; nothing of it is copied into this project) and torch, which this project does not depend on
(the ``official-bench`` extra of pyproject.toml lists what the script needs): run it with another interpreter
(above). It builds the official StyleGAN3 generator and StyleGAN2 discriminator
at the given size, in float32 (the official ``--fp32``: no fp16 layers, no conv clamp), and runs what the official
``training_loop`` runs per batch: for each phase due at the iteration (``Gboth``; ``Dmain``; ``Dreg`` every
``--reg-interval`` iterations) zero the gradients, ``StyleGAN2Loss.accumulate_gradients`` with the phase's gain,
replace non-finite gradients, step the phase's Adam (lazy-regularization ratio on D's rate and betas), then the
G_ema update. On a CPU the official ops take their reference paths (no CUDA plugins). Random images stand in for
data. Variants: ``reg`` (an iteration with Dreg) and ``main`` (without); their average over one regularization
period is what a long run sees, as in train_step.py.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import _common  # standard library only at import: runs under the torch interpreter too


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # The size arguments and their defaults are train_step.py's (one parser helper), so one command line fits both.
    ap = _common.parser(__doc__)
    _common.add_generator_args(ap, cfgs=("t", "r"), res=64)
    ap.add_argument("--official-root", required=True, help="a checkout of NVlabs/stylegan3")
    ap.add_argument("--batch", type=int, default=32, help="batch")
    ap.add_argument("--gamma", type=float, default=2.0, help="R1 gamma")
    ap.add_argument("--reg-interval", type=int, default=16, help="lazy R1 interval")
    ap.add_argument("--mbstd-group", type=int, default=4, help="minibatch-stddev group size")
    ap.add_argument("--runs", type=int, default=2, help="timed iterations per variant (after one warm-up of each)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    sys.path.insert(0, os.path.abspath(args.official_root))
    import numpy as np
    import torch
    from training.loss import StyleGAN2Loss
    from training.networks_stylegan2 import Discriminator
    from training.networks_stylegan3 import Generator

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cpu")
    g_kwargs = dict(z_dim=args.z_dim, w_dim=args.z_dim, c_dim=0, img_resolution=args.res, img_channels=3,
                    channel_base=args.cbase, channel_max=args.cmax, num_fp16_res=0, conv_clamp=None,
                    mapping_kwargs=dict(num_layers=args.map_layers),
                    magnitude_ema_beta=0.5 ** (args.batch / (20 * 1e3)))
    if args.cfg == "r":
        g_kwargs.update(conv_kernel=1, use_radial_filters=True, channel_base=args.cbase * 2,
                        channel_max=args.cmax * 2)
    G = Generator(**g_kwargs).train().requires_grad_(False).to(device)
    D = Discriminator(c_dim=0, img_resolution=args.res, img_channels=3, channel_base=args.cbase,
                      channel_max=args.cmax, num_fp16_res=0, conv_clamp=None,
                      epilogue_kwargs=dict(mbstd_group_size=args.mbstd_group)).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    loss = StyleGAN2Loss(device=device, G=G, D=D, r1_gamma=args.gamma,
                         blur_init_sigma=10 if args.cfg == "r" else 0,
                         blur_fade_kimg=args.batch * 200 / 32 if args.cfg == "r" else 0)
    betas = (0.0, 0.99)
    g_opt = torch.optim.Adam(G.parameters(), lr=0.0025, betas=betas, eps=1e-8)
    ratio = args.reg_interval / (args.reg_interval + 1)
    d_opt = torch.optim.Adam(D.parameters(), lr=0.002 * ratio, betas=[b**ratio for b in betas], eps=1e-8)
    phases = [("Gboth", G, g_opt, 1), ("Dmain", D, d_opt, 1), ("Dreg", D, d_opt, args.reg_interval)]
    real = torch.rand([args.batch, 3, args.res, args.res], device=device) * 2 - 1
    real_c = torch.zeros([args.batch, 0], device=device)
    ema_beta = 0.5 ** (args.batch / (args.batch * 10 / 32 * 1000))
    state = {"cur_nimg": 0}

    def iteration(with_reg: bool) -> None:
        for name, module, opt, interval in phases:
            if name == "Dreg" and not with_reg:
                continue
            gen_z = torch.randn([args.batch, G.z_dim], device=device)
            gen_c = torch.zeros([args.batch, 0], device=device)
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            loss.accumulate_gradients(phase=name, real_img=real, real_c=real_c, gen_z=gen_z, gen_c=gen_c,
                                      gain=interval, cur_nimg=state["cur_nimg"])
            module.requires_grad_(False)
            params = [p for p in module.parameters() if p.grad is not None]
            if params:
                flat = torch.cat([p.grad.flatten() for p in params])
                torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
                for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
                    p.grad = g.reshape(p.shape)
            opt.step()
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
                p_ema.copy_(p.lerp(p_ema, ema_beta))
            for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
                b_ema.copy_(b)
        state["cur_nimg"] += args.batch

    times: dict[str, list[float]] = {}
    for variant, with_reg in (("reg", True), ("main", False)):
        iteration(with_reg)  # warm-up
        times[variant] = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            iteration(with_reg)
            times[variant].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    avg = ((args.reg_interval - 1) * med["main"] + med["reg"]) / args.reg_interval
    result = {
        "config": vars(args), "implementation": "official NVlabs/stylegan3 (PyTorch, reference ops, float32)",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "numpy": np.__version__,
        "machine": _common.machine(with_jax=False),
        "s_per_iter": {k: {"median": med[k], "runs": v} for k, v in times.items()},
        "s_per_iter_avg": avg, "s_per_kimg": avg / args.batch * 1000,
    }
    print(f"official StyleGAN3-{args.cfg.upper()} {args.res}px cbase={args.cbase} cmax={args.cmax} "
          f"map={args.map_layers} z={args.z_dim} batch={args.batch} gamma={args.gamma} reg every {args.reg_interval}")
    for k, v in times.items():
        print(f"s/iter {k:5s} {med[k]:8.2f}  ({', '.join(f'{t:.2f}' for t in v)})")
    print(f"s/iter (avg over {args.reg_interval}) {avg:.2f}   s/kimg {result['s_per_kimg']:.1f}")
    _common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
