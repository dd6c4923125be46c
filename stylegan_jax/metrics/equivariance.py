"""Equivariance metrics of "Alias-Free Generative Adversarial Networks" (Appendix E): EQ-T (integer
translation), EQ-T_frac (sub-pixel translation) and EQ-R (rotation), as PSNRs in dB.

For every sample, the generator renders the image once with the identity input transform and once
with a transform of its Fourier-feature input; the second image is compared with the first one
transformed by the matching image operator (:mod:`stylegan_jax.ops.equivariance`), over the pixels
both images determine. Higher is more equivariant.

Differences from the official ``metrics/equivariance.py`` and why:

- Each sample draws its own translation / angle (the official draws one per batch and GPU,
  because it writes them into a single ``synthesis.input.transform`` buffer; our generator takes a
  per-sample ``transform``). The expectation is the same, the variance lower, and the result
  depends only on ``seed`` and ``num_samples``, not on ``batch_size`` or the number of devices.
- Exactly ``num_samples`` samples are used (the last batch is padded and the padding ignored);
  the official rounds up to whole batches.
- Conditional generators get uniformly random one-hot labels (the official draws labels from the
  training set, which a checkpoint does not carry).

As in the official code, squared errors and mask pixels are summed over all samples (here in
float64 on the host) and the PSNR ``20 log10(2) - 10 log10(sum_sq / sum_mask)`` (images span
[-1, 1], a range of 2) is computed once at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stylegan_jax.ops.equivariance import (
    apply_fractional_pseudo_rotation,
    apply_fractional_rotation,
    apply_fractional_translation,
    apply_integer_translation,
    rotation_matrix,
    translation_matrix,
)

METRICS = ("eqt_int", "eqt_frac", "eqr")

# Independent random streams per sample (fold_in of the sample index, then these offsets).
_Z, _C, _T_INT, _T_FRAC, _ANGLE = range(5)


def psnr_from_sums(sum_sq: float, sum_mask: float) -> float:
    """PSNR in dB of images in [-1, 1] from a summed squared error and the number of pixels it covers."""
    if sum_mask <= 0:
        return float("nan")
    mse = sum_sq / sum_mask
    return float(20 * np.log10(2.0) - 10 * np.log10(mse)) if mse > 0 else float("inf")


def _masked_sums(a: jnp.ndarray, b: jnp.ndarray, mask: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Per-sample sum of squared differences under ``mask``, and the mask's sum ([N] each)."""
    axes = tuple(range(1, a.ndim))
    return jnp.sum(jnp.square(a - b) * mask, axis=axes), jnp.sum(mask, axis=axes)


def _per_sample(op: Callable, *args: Any) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Run an image operator with one parameter set per sample (the ops take one set per batch)."""
    img, params = args[0], args[1:]
    out, mask = jax.vmap(lambda x, *p: op(x[None], *p))(img, *params)
    return out[:, 0], mask[:, 0]


def make_batch_fn(G: Any, metrics: Sequence[str], truncation_psi: float = 1.0, translate_max: float = 0.125,
                  rotate_max: float = 1.0) -> Callable:
    """The (unjitted) per-batch computation: ``fn(variables, key, indices, weights) -> {metric: (sq, mask)}``.

    ``indices`` [B] are global sample numbers (they select the random draws), ``weights`` [B] are 1
    for real samples and 0 for padding; the outputs are per-sample sums weighted by them.
    """
    res = G.img_resolution

    def fn(variables, key, indices, weights):
        keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(key, i), 5))(indices)  # [B, 5]
        n = indices.shape[0]
        z = jax.vmap(lambda k: jax.random.normal(k, (G.z_dim,)))(keys[:, _Z])
        c = None
        if G.c_dim > 0:
            labels = jax.vmap(lambda k: jax.random.randint(k, (), 0, G.c_dim))(keys[:, _C])
            c = jax.nn.one_hot(labels, G.c_dim, dtype=jnp.float32)
        ws = G.apply(variables, z, c, truncation_psi, method=G.map)

        def uniform(col, shape, scale):
            return jax.vmap(lambda k: (jax.random.uniform(k, shape) * 2 - 1) * scale)(keys[:, col])

        # The generator's transform maps output to input coordinates: the inverse of the motion
        # the image operator applies to the reference.
        transforms = [jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (n, 3, 3))]
        t_int = t_frac = angle = None
        if "eqt_int" in metrics:
            t_int = jnp.round(uniform(_T_INT, (2,), translate_max) * res) / res  # whole output pixels
            transforms.append(jax.vmap(translation_matrix)(-t_int[:, 0], -t_int[:, 1]))
        if "eqt_frac" in metrics:
            t_frac = uniform(_T_FRAC, (2,), translate_max)
            transforms.append(jax.vmap(translation_matrix)(-t_frac[:, 0], -t_frac[:, 1]))
        if "eqr" in metrics:
            angle = uniform(_ANGLE, (), rotate_max * np.pi)
            transforms.append(jax.vmap(rotation_matrix)(-angle))

        # One synthesis call for the reference and every transformed render: a single copy of the
        # network in the compiled program (compile time) and a larger batch (throughput). Samples
        # stay the major axis so that a batch sharded over devices stays sharded the same way.
        k = len(transforms)
        ws_all = jnp.repeat(ws, k, axis=0)
        imgs = G.apply(variables, ws_all, jnp.stack(transforms, axis=1).reshape(n * k, 3, 3), method=G.synthesize)
        imgs = imgs.reshape(n, k, *imgs.shape[1:])
        orig, rendered = imgs[:, 0], iter(range(1, k))
        out = {}
        if t_int is not None:
            img = imgs[:, next(rendered)]
            ref, mask = _per_sample(apply_integer_translation, orig, t_int[:, 0], t_int[:, 1])
            out["eqt_int"] = _masked_sums(ref, img, mask)
        if t_frac is not None:
            img = imgs[:, next(rendered)]
            ref, mask = _per_sample(apply_fractional_translation, orig, t_frac[:, 0], t_frac[:, 1])
            out["eqt_frac"] = _masked_sums(ref, img, mask)
        if angle is not None:
            img = imgs[:, next(rendered)]
            ref, ref_mask = _per_sample(apply_fractional_rotation, orig, angle)
            # Both sides get the same oriented band limit: the reference through the rotation
            # filter, the generator's rotated output through the equivalent pseudo-rotation.
            pseudo, pseudo_mask = _per_sample(apply_fractional_pseudo_rotation, img, angle)
            out["eqr"] = _masked_sums(ref, pseudo, ref_mask * pseudo_mask)

        return {k: (sq * weights, m * weights) for k, (sq, m) in out.items()}

    return fn


class EquivarianceEvaluator:
    """A compiled equivariance evaluation, reusable across calls (and checkpoints of the same
    architecture) without recompiling for the same ``batch_size``.

    The network is traced on the first call for each batch shape, so anything read at trace time
    (the layer filters) is fixed from then on; :func:`compute_equivariance` builds a fresh evaluator
    on every call.

    Args:
      G: a :class:`stylegan_jax.networks.stylegan3.Generator` (anything with ``map``/``synthesize``
        taking a per-sample ``transform``), its ``z_dim``, ``c_dim`` and ``img_resolution``.
      metrics: any of ``'eqt_int'`` (EQ-T), ``'eqt_frac'`` (EQ-T_frac), ``'eqr'`` (EQ-R).
      truncation_psi: truncation of the mapping output (the official metric uses 1).
      mesh: if given, a ``jax.sharding.Mesh`` with a ``'data'`` axis; each batch is split over it
        and the variables are replicated. ``batch_size`` must then be divisible by its size.
      translate_max: largest translation, as a fraction of the image size (official: 0.125).
      rotate_max: largest rotation, as a fraction of pi (official: 1, i.e. +-180 degrees).
    """

    def __init__(self, G: Any, metrics: Sequence[str] = METRICS, truncation_psi: float = 1.0,
                 mesh: jax.sharding.Mesh | None = None, translate_max: float = 0.125, rotate_max: float = 1.0):
        self.metrics = tuple(metrics)
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ValueError(f"unknown equivariance metrics {unknown}; choose from {list(METRICS)}")
        self.mesh = mesh
        fn = make_batch_fn(G, self.metrics, truncation_psi, translate_max, rotate_max)
        if mesh is None:
            self._step = jax.jit(fn)
            return
        from jax.sharding import NamedSharding, PartitionSpec

        if "data" not in mesh.axis_names:
            raise ValueError(f"mesh needs a 'data' axis, has {mesh.axis_names}")
        self._replicated = NamedSharding(mesh, PartitionSpec())
        self._batch = NamedSharding(mesh, PartitionSpec("data"))
        # Samples are independent, so each device runs the whole computation on its slice of the
        # batch (shard_map, no collectives). Left to automatic partitioning, the per-sample FFTs of
        # the rotation filters are all-gathered and computed on every device.
        local = jax.shard_map(fn, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(), PartitionSpec("data"),
                                                       PartitionSpec("data")), out_specs=PartitionSpec("data"))
        self._step = jax.jit(local)

    def __call__(self, variables: Any, num_samples: int, seed: int = 0, batch_size: int = 16,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
        """``{metric: psnr_db}`` over ``num_samples`` samples drawn from ``seed``.

        The result depends only on ``seed`` and ``num_samples`` (not on ``batch_size`` or the mesh,
        up to float summation order); ``progress(done, total)`` is called after every batch.
        """
        if num_samples < 1 or batch_size < 1:
            raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples}, {batch_size}")
        key = jax.random.key(seed)
        if self.mesh is None:
            place = jnp.asarray
        else:
            num_shards = self.mesh.shape["data"]
            if batch_size % num_shards:
                raise ValueError(f"batch_size {batch_size} is not divisible by the mesh's data axis ({num_shards})")
            variables = jax.device_put(variables, self._replicated)
            key = jax.device_put(key, self._replicated)

            def place(a):
                return jax.device_put(a, self._batch)

        totals = {m: np.zeros(2, np.float64) for m in self.metrics}
        for start in range(0, num_samples, batch_size):
            indices = np.arange(start, start + batch_size, dtype=np.int32)
            weights = (indices < num_samples).astype(np.float32)
            sums = self._step(variables, key, place(indices), place(weights))
            for m, (sq, msk) in sums.items():
                totals[m] += [np.sum(np.asarray(sq, np.float64)), np.sum(np.asarray(msk, np.float64))]
            if progress is not None:
                progress(min(start + batch_size, num_samples), num_samples)
        return {m: psnr_from_sums(*totals[m]) for m in self.metrics}


def compute_equivariance(
    G: Any,
    variables: Any,
    num_samples: int,
    seed: int = 0,
    batch_size: int = 16,
    metrics: Sequence[str] = METRICS,
    truncation_psi: float = 1.0,
    mesh: jax.sharding.Mesh | None = None,
    *,
    translate_max: float = 0.125,
    rotate_max: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Equivariance PSNRs (dB) of a StyleGAN3 generator: ``{metric: psnr_db}`` in the order given.

    Args:
      G, variables: the generator and its variables (``params``, ``ema``, ``buffers``).
      num_samples: number of latents to evaluate (the paper uses 50,000).
      seed: selects the latents, labels and transforms; the result depends only on ``seed`` and
        ``num_samples`` (not on ``batch_size`` or ``mesh``, up to float summation order).
      batch_size: samples per compiled step (the global batch when sharded).
      metrics, truncation_psi, mesh, translate_max, rotate_max: see :class:`EquivarianceEvaluator`.
      progress: optional callback ``progress(done, total)`` after every batch.

    Compiles afresh on every call; use :class:`EquivarianceEvaluator` to evaluate repeatedly.
    """
    evaluator = EquivarianceEvaluator(G, metrics, truncation_psi, mesh, translate_max, rotate_max)
    return evaluator(variables, num_samples, seed=seed, batch_size=batch_size, progress=progress)


__all__ = ["METRICS", "EquivarianceEvaluator", "compute_equivariance", "make_batch_fn", "psnr_from_sums"]
