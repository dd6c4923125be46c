"""Discriminator probe: what can D learn to tell apart, against a training run's generator held fixed?

Takes a run trained on the built-in synthetic shapes (a workdir of ``stylegan-jax train``), restores G and D from
one of its checkpoints, and trains a copy of D alone (Adam with the run's D settings, the logistic loss and R1
every step at each ``--gamma``) against a fixed pool of that G's samples, reporting every ``--report-every``
steps the mean D score of held-out real images per shape class and of held-out fakes, and the AUC of reals
against fakes. It answers the question a GAN's losses cannot: when D's loss sits at chance, is that because the
fakes are as good as the reals in every respect D can see, or because G follows D so closely that D never gets
ahead? And does D prefer the classes G does not draw (mode dropping shows as reals of the missing classes
scoring above the drawn one), or does it separate every real from every fake by something else (an artifact)?

  python benchmarks/discriminator_probe.py --workdir runs/quickstart --gamma 0.5,0.02 --json probe.json

The probe's D starts from the checkpoint's D (``--fresh-d``: from a new initialisation). The real images are
the run's own training images (its data config, uint8 as D saw them); the held-out ones come after the pool.
"""

from __future__ import annotations

import json
from pathlib import Path

import _common
import numpy as np


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random ``pos`` scores above a random ``neg`` (ties count half)."""
    diff = pos[:, None] - neg[None, :]
    return float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--workdir", required=True, help="a run of stylegan-jax train on the synthetic shapes")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    ap.add_argument("--gamma", default="0.5,0.02", help="comma-separated R1 weights, one probe each")
    ap.add_argument("--steps", type=int, default=300, help="D updates per probe")
    ap.add_argument("--report-every", type=int, default=100, help="report every N updates")
    ap.add_argument("--pool", type=int, default=2000, help="real and fake training images")
    ap.add_argument("--held-out", type=int, default=300, help="real and fake images scored at each report")
    ap.add_argument("--fresh-d", action="store_true", help="start D from a new initialisation")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import ml_collections
    import optax

    from stylegan_jax.checkpoint import load_checkpoint
    from stylegan_jax.data.input_pipeline import make_source, to_model_images
    from stylegan_jax.data.synthetic import shape_class
    from stylegan_jax.losses import d_logistic_loss, r1_grad, r1_penalty_from_grad
    from stylegan_jax.train.loop import build_networks
    from stylegan_jax.train.state import TrainConfig, create_train_state

    workdir = Path(args.workdir)
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    if config.data.source != "synthetic":
        raise SystemExit(f"{workdir}: the probe needs a run on the synthetic shapes (data.source 'synthetic')")
    source = make_source(config.data.to_dict())  # the run's own images and labels (uint8, as D saw them)
    c_dim = source.c_dim
    G, D = build_networks(config, c_dim)
    fresh = create_train_state(G, D, config, jax.random.PRNGKey(config.train.seed))
    meta, state = load_checkpoint(workdir / "checkpoints", step=args.step, target=fresh)
    n, m = args.pool, args.held_out
    group = int(config.model.get("mbstd_group_size", 4) or 1)
    if m % group or int(config.train.batch_size) % group:
        raise SystemExit(f"--held-out ({m}) and the run's batch ({config.train.batch_size}) must be multiples of its "
                         f"minibatch-stddev group size ({group}): D scores groups of that many images together")

    def reals(start: int, count: int) -> tuple[jax.Array, np.ndarray, np.ndarray]:
        images, labels = zip(*(source.load(i) for i in range(start, start + count)), strict=True)
        kinds = shape_class(np.arange(start, start + count))  # labels used or not
        return jnp.asarray(to_model_images(np.stack(images))), kinds, np.stack(labels).astype(np.float32)

    rng = np.random.RandomState(1)
    x_pool, _, c_pool = reals(0, n)
    x_test, k_test, c_test = reals(n + 1000, m)
    generate = jax.jit(lambda v, z, c: G.apply(v, z, c if c_dim else None))
    fake_c = (np.stack([source.label(int(i)) for i in rng.randint(0, len(source), n + m)]).astype(np.float32)
              if c_dim else np.zeros((n + m, 0), np.float32))  # labels drawn as the loop draws them
    fakes = np.concatenate([np.asarray(generate(state.G, rng.randn(len(c), G.z_dim).astype(np.float32),
                                                jnp.asarray(c)))
                            for c in np.array_split(fake_c, range(100, n + m, 100))])
    f_pool, f_test, fc_pool, fc_test = fakes[:n], fakes[n:], fake_c[:n], fake_c[n:]

    def d_apply(p, x, c):
        return D.apply({"params": p}, x, c if c_dim else None)

    score = jax.jit(d_apply)
    tc = TrainConfig.from_config(config)
    batch = int(config.train.batch_size)
    results = []
    for gamma in (float(g) for g in args.gamma.split(",")):
        params = fresh.D["params"] if args.fresh_d else state.D["params"]
        tx = optax.adam(tc.d_lr, b1=tc.betas[0], b2=tc.betas[1], eps=tc.eps)
        opt = tx.init(params)

        @jax.jit
        def update(p, o, real, rc, fake, fc, gamma=gamma, tx=tx):
            def loss(p):  # the training step's Dmain and Dreg losses, with R1 every update
                grad, real_logits = r1_grad(lambda x, c: d_apply(p, x, c), real, rc)
                return jnp.mean(d_logistic_loss(real_logits, d_apply(p, fake, fc))
                                + r1_penalty_from_grad(grad, gamma)[:, None])

            grads = jax.grad(loss)(p)
            updates, o = tx.update(grads, o, p)
            return optax.apply_updates(p, updates), o

        rows = []
        for step in range(args.steps + 1):
            if step % args.report_every == 0:
                sr = np.asarray(score(params, x_test, jnp.asarray(c_test))).ravel()
                sf = np.asarray(score(params, jnp.asarray(f_test), jnp.asarray(fc_test))).ravel()
                rows.append({"step": step, "real_by_class": [float(sr[k_test == k].mean()) for k in range(3)],
                             "fake": float(sf.mean()), "auc_real_vs_fake": auc(sr, sf),
                             "auc_by_class": [auc(sr[k_test == k], sf) for k in range(3)]})
            if step < args.steps:
                a, b = rng.randint(0, n, batch), rng.randint(0, n, batch)
                params, opt = update(params, opt, x_pool[a], jnp.asarray(c_pool[a]), jnp.asarray(f_pool[b]),
                                     jnp.asarray(fc_pool[b]))
        results.append({"gamma": gamma, "rows": rows})
        print(f"\nR1 gamma {gamma}: {workdir} at step {meta['step']} ({meta['kimg']:.1f} kimg), "
              f"D {'fresh' if args.fresh_d else 'from the checkpoint'}")
        _common.print_table(
            [["D updates", "real circle", "real square", "real triangle", "fake", "AUC real/fake",
              "AUC circle / square / triangle"]]
            + [[str(r["step"]), *(f"{s:+.2f}" for s in r["real_by_class"]), f"{r['fake']:+.2f}",
                f"{r['auc_real_vs_fake']:.3f}", " / ".join(f"{a:.2f}" for a in r["auc_by_class"])] for r in rows])
    _common.write_json(args.json, {"workdir": str(workdir), "checkpoint_step": meta["step"], "kimg": meta["kimg"],
                                   "fresh_d": args.fresh_d, "steps": args.steps, "probes": results,
                                   "machine": _common.machine()})


if __name__ == "__main__":
    main()
