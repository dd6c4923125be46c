"""Can this generator draw the training images at all? Fit G alone to a few real images by regression.

    .venv/bin/python benchmarks/generator_fit.py --config configs/quickstart_discs.py [--config.key=value ...]
        [--images 16] [--steps 1000] [--lr 0.005] [--png fit.png] [--json out.json]

A diagnostic for training-quality questions (issue 20), separate from the GAN: ``--images`` synthetic images (the
config's data; ``data.source='synthetic'`` only) are paired with as many fixed latents, and G's parameters are
trained by Adam (the config's betas) on the mean absolute pixel error, with the magnitude EMAs updated as in
training. If G reaches the images here, what a GAN run does not draw is a matter of the adversarial game (D, losses,
length), not of what this G can represent; if it cannot, capacity or the layer schedule is the limit. Five minutes
on 2 CPU cores for the quickstart's G at the defaults. Prints the loss at a few steps and the per-class error of the
end (circle / square / triangle), writes the targets above the fits as a PNG grid (``--png``) and a JSON.
"""

from __future__ import annotations

import sys
import time

import _common


def main(argv: list[str] | None = None) -> int:
    ap = _common.parser(__doc__)
    ap.add_argument("--config", required=True, help="config file (configs/*.py); --config.key=value overrides follow")
    ap.add_argument("--images", type=int, default=16, help="images to fit (one fixed latent each)")
    ap.add_argument("--steps", type=int, default=1000, help="Adam steps")
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default: the config's train.g_lr)")
    ap.add_argument("--seed", type=int, default=0, help="initialisation and latents")
    ap.add_argument("--png", default=None, help="write targets (top rows) over fits (bottom rows) here")
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a for a in argv if a.startswith("--config.")]
    args = ap.parse_args([a for a in argv if not a.startswith("--config.")])

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from stylegan_jax.config import apply_overrides, load_config
    from stylegan_jax.data.synthetic import render_shape
    from stylegan_jax.losses import run_generator
    from stylegan_jax.train.loop import build_networks, resolve_config
    from stylegan_jax.train.state import init_variables

    config = resolve_config(apply_overrides(load_config(args.config), overrides))
    if config.data.source != "synthetic":
        print("generator_fit: only data.source='synthetic' (the images are rendered here)", file=sys.stderr)
        return 2
    G, D = build_networks(config, c_dim=0)
    g_vars, _ = init_variables(G, D, jax.random.PRNGKey(args.seed))
    params = g_vars.pop("params")
    res, n = config.data.resolution, args.images
    rendered = [render_shape(config.data.synthetic_seed, i, res) for i in range(n)]
    target = jnp.asarray(np.stack([img for img, _ in rendered]).transpose(0, 3, 1, 2) * 2 - 1)
    kinds = np.array([kind for _, kind in rendered])
    z = jax.random.normal(jax.random.PRNGKey(args.seed + 1), (n, G.z_dim))
    c = jnp.zeros((n, 0))
    noise_rng = jax.random.PRNGKey(args.seed + 2)  # fixed noise for generators that have noise inputs
    tx = optax.adam(args.lr or config.train.g_lr, b1=config.train.betas[0], b2=config.train.betas[1],
                    eps=config.train.eps)

    @jax.jit
    def step(params, state, opt_state):
        def loss_fn(p):
            img, _, ema = run_generator(G, p, state, z, c, update_emas=True, rng=noise_rng)
            return jnp.mean(jnp.abs(img - target)), (img, ema)

        (loss, (img, ema)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), {**state, "ema": ema}, opt_state, loss, img

    opt_state = tx.init(params)
    state = g_vars
    curve, t0 = [], time.perf_counter()
    report = {0, args.steps - 1, *range(0, args.steps, max(1, args.steps // 8))}
    for i in range(args.steps):
        params, state, opt_state, loss, img = step(params, state, opt_state)
        if i in report:
            curve.append((i + 1, float(loss)))
            print(f"step {i + 1:5d}  L1 {float(loss):.4f}  {time.perf_counter() - t0:6.1f} s", flush=True)
    img = np.asarray(img)
    err = np.abs(img - np.asarray(target)).mean(axis=(1, 2, 3))
    names = ("circle", "square", "triangle")
    per_class = {names[k]: float(err[kinds == k].mean()) for k in range(3) if np.any(kinds == k)}
    rows = [["L1 at the end (pixels in [-1, 1])", "all", *per_class],
            ["mean |fit - target|", f"{err.mean():.4f}", *(f"{v:.4f}" for v in per_class.values())]]
    _common.print_table(rows)
    if args.png:
        from stylegan_jax.apis.postprocessing import denormalize
        from stylegan_jax.apis.sampling import image_grid

        cols = min(8, n)
        image_grid(denormalize(np.concatenate([np.asarray(target), img])), cols=cols).save(args.png)
    _common.write_json(args.json, {"config": args.config, "overrides": overrides, "images": n, "steps": args.steps,
                                   "lr": args.lr or config.train.g_lr, "curve": curve, "l1_end": float(err.mean()),
                                   "l1_end_per_class": per_class, "seconds": time.perf_counter() - t0,
                                   **_common.machine()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
