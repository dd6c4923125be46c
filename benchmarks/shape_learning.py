"""Shape learning: how many updates does a network need to tell the synthetic shapes apart, given their labels?

Issue 20's question is why a GAN on the built-in shapes draws discs and never squares or triangles. For G to be
pushed towards a class, D's features must tell that class apart. This script measures how fast they can: it
trains a configuration's discriminator (its architecture, equalized learning rate included, with the auxiliary
class head ``Discriminator(class_head=True)`` on its last features) on the labels alone, a plain supervised task,
with the configuration's batch size and Adam betas, at each of ``--d-lrs``; and, for comparison, the network of
the shape metric (``metrics.shape_quality.ShapeClassifier``: ordinary He-initialised layers) at each of
``--classifier-lrs``, on the same images in the same order. It prints the held-out class accuracy every
``--eval-every`` updates and the first update at which it reached ``--target``.

  python benchmarks/shape_learning.py --config configs/quickstart_discs.py --steps 6000 --json out.json

The images are the configuration's own training images (its data config, uint8 as D sees them, converted as the
step converts them); the first ``--pool`` are trained on, the next ``--held-out`` scored. Nothing here is a GAN:
an update is one Adam step on ``--batch`` labelled images.
"""

from __future__ import annotations

import time

import _common
import numpy as np


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--config", default="configs/quickstart_discs.py", help="a config file with synthetic data")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, repeatable (e.g. model.d_resample_filter='(1,1)')")
    ap.add_argument("--steps", type=int, default=6000, help="updates per network")
    ap.add_argument("--batch", type=int, default=None, help="images per update (default: the config's batch)")
    ap.add_argument("--d-lrs", default=None, help="comma-separated D learning rates (default: the config's d_lr); "
                    "'LR/BIAS_LR' gives the biases their own rate")
    ap.add_argument("--classifier-lrs", default="0.002", help="comma-separated learning rates of the metric's "
                    "classifier architecture ('' for none)")
    ap.add_argument("--eval-every", type=int, default=600, help="score the held-out images every N updates")
    ap.add_argument("--pool", type=int, default=4000, help="training images")
    ap.add_argument("--held-out", type=int, default=500, help="held-out images")
    ap.add_argument("--target", type=float, default=0.9, help="report the first update reaching this accuracy")
    ap.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import optax

    from stylegan_jax.config import apply_overrides, load_config
    from stylegan_jax.data.input_pipeline import make_source, to_model_images
    from stylegan_jax.losses import class_cross_entropy
    from stylegan_jax.metrics.shape_quality import ShapeClassifier
    from stylegan_jax.train.loop import build_networks, resolve_config

    config = resolve_config(apply_overrides(load_config(args.config), args.set))
    if config.data.source != "synthetic":
        raise SystemExit(f"{args.config}: needs the synthetic shapes (data.source 'synthetic'), got "
                         f"{config.data.source!r}")
    batch = args.batch or int(config.train.batch_size)
    betas = tuple(float(b) for b in config.train.betas)
    def lr_pair(token: str) -> tuple[float, float]:
        weight, _, bias = token.partition("/")
        return float(weight), float(bias or weight)

    d_lrs = [lr_pair(x) for x in (args.d_lrs or str(config.train.d_lr)).split(",") if x]
    classifier_lrs = [lr_pair(x) for x in args.classifier_lrs.split(",") if x]

    data = config.data.to_dict()
    data["use_labels"] = True
    source = make_source(data)
    total = args.pool + args.held_out
    if len(source) < total:
        raise SystemExit(f"the dataset has {len(source)} images, --pool + --held-out need {total}")
    images, labels = zip(*(source.load(i) for i in range(total)), strict=True)
    x_all = np.asarray(to_model_images(np.stack(images)))       # NCHW float32 in [-1, 1], as the step feeds D
    y_all = np.stack(labels).astype(np.float32)                 # one-hot [N, 3]
    x_train, y_train, x_test, y_test = x_all[:args.pool], y_all[:args.pool], x_all[args.pool:], y_all[args.pool:]
    c_dim = y_all.shape[1]
    order = np.random.default_rng(args.seed).integers(0, args.pool, (args.steps, batch))

    _, D = build_networks(config, c_dim)
    D = D.clone(class_head=True)
    classifier = ShapeClassifier()

    def d_classes(params, x, y):
        return D.apply({"params": params}, x, y, return_classes=True)[1]

    def classifier_classes(params, x, y):   # its 4th class ('other') has no examples here; the labels leave it out
        return classifier.apply(params, jnp.transpose(x, (0, 2, 3, 1)))[1][:, :c_dim]

    nets = {"D": (lambda k: D.init_params(k, batch_size=batch)["params"], d_classes, d_lrs),
            "classifier": (lambda k: classifier.init(k, jnp.zeros((1, 32, 32, 3))), classifier_classes,
                           classifier_lrs)}
    runs = []
    for name, (init, classes_fn, lrs) in nets.items():
        for lr, bias_lr in lrs:
            params = init(jax.random.PRNGKey(args.seed))
            adam = lambda rate: optax.adam(rate, b1=betas[0], b2=betas[1], eps=float(config.train.eps))
            # Biases ('bias' in D, 'bias' in the flax layers of the classifier) at their own rate when asked.
            kinds = jax.tree_util.tree_map_with_path(
                lambda path, _: "bias" if "bias" in jax.tree_util.keystr(path) else "weight", params)
            tx = optax.multi_transform({"weight": adam(lr), "bias": adam(bias_lr)}, kinds)
            opt = tx.init(params)
            rate = f"{lr:g}" if bias_lr == lr else f"{lr:g} (biases {bias_lr:g})"

            def loss_fn(p, x, y, classes_fn=classes_fn):
                return jnp.mean(class_cross_entropy(classes_fn(p, x, y), y))

            @jax.jit
            def update(p, o, x, y, loss_fn=loss_fn, tx=tx):
                loss, g = jax.value_and_grad(loss_fn)(p, x, y)
                u, o = tx.update(g, o, p)
                return optax.apply_updates(p, u), o, loss

            @jax.jit
            def correct(p, x, y, classes_fn=classes_fn):
                return jnp.sum(jnp.argmax(classes_fn(p, x, y), -1) == jnp.argmax(y, -1))

            def accuracy(p) -> float:
                hits = sum(int(correct(p, x_test[i:i + 100], y_test[i:i + 100])) for i in range(0, len(x_test), 100))
                return hits / len(x_test)

            curve, losses, reached, t0 = [], [], None, time.perf_counter()
            for step in range(args.steps):
                idx = order[step]
                params, opt, loss = update(params, opt, x_train[idx], y_train[idx])
                losses.append(float(loss))
                if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
                    acc = accuracy(params)
                    curve.append({"step": step + 1, "accuracy": acc, "loss": float(np.mean(losses[-100:]))})
                    if reached is None and acc >= args.target:
                        reached = step + 1
                    print(f"{name} lr {rate}: update {step + 1} held-out accuracy {acc:.3f} "
                          f"(loss {curve[-1]['loss']:.3f}, {time.perf_counter() - t0:.0f} s)", flush=True)
            runs.append({"network": name, "lr": lr, "bias_lr": bias_lr, "rate": rate, "curve": curve,
                         "first_step_at_target": reached, "seconds": time.perf_counter() - t0})

    steps = [p["step"] for p in runs[0]["curve"]] if runs else []
    rows = [["network", "lr", *[str(s) for s in steps], f"first >= {args.target:g}"]]
    for r in runs:
        rows.append([r["network"], r["rate"], *[f"{p['accuracy']:.3f}" for p in r["curve"]],
                     str(r["first_step_at_target"] or "-")])
    print(f"\nheld-out class accuracy after N updates of batch {batch} ({' '.join([args.config, *args.set])}, "
          f"chance 1/{c_dim})")
    _common.print_table(rows)
    _common.write_json(args.json, {
        "config": args.config, "overrides": args.set, "batch": batch, "betas": list(betas), "steps": args.steps,
        "pool": args.pool,
        "held_out": args.held_out, "target": args.target, "seed": args.seed, "runs": runs,
        "machine": _common.machine()})


if __name__ == "__main__":
    main()
