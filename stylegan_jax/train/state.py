"""Training state and hyperparameters: the ``TrainState`` pytree, the Adam optimizers with the official
lazy-regularization adjustment, and the official batch-dependent defaults.

Sources of the constants (NVlabs/stylegan3):

- ``train.py``: Adam ``betas=[0, 0.99]``, ``eps=1e-8``; G lr 0.0025 for StyleGAN3 (0.002 for the stylegan2 cfg),
  D lr 0.002; ``ema_kimg = batch * 10 / 32``; ``magnitude_ema_beta = 0.5 ** (batch / (20 * 1e3))`` (a generator
  constructor argument); StyleGAN3-R: ``blur_init_sigma = 10``, ``blur_fade_kimg = batch * 200 / 32``;
  the stylegan2 cfg: ``style_mixing_prob = 0.9``, ``pl_weight = 2``, ``G_reg_interval = 4`` (the loss defaults
  ``pl_batch_shrink = 2``, ``pl_decay = 0.01``), 8 mapping layers.
- ``training/training_loop.py``: ``ema_rampup = 0.05`` (train.py keeps it, except when resuming from a pickle),
  ``D_reg_interval = 16``, ``G_reg_interval = None``; lazy regularization
  ``mb_ratio = interval / (interval + 1)``, ``lr *= mb_ratio``, ``betas = beta ** mb_ratio``; the G_ema update
  ``ema_nimg = min(ema_kimg * 1000, cur_nimg * ema_rampup)``, ``ema_beta = 0.5 ** (batch / max(ema_nimg, 1e-8))``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from stylegan_jax.config import base_config
from stylegan_jax.losses import LossOptions


def official_ema_kimg(batch_size: int) -> float:
    """G_ema half-life in kimg of the official train.py: ``batch * 10 / 32``."""
    return batch_size * 10 / 32


def official_magnitude_ema_beta(batch_size: int) -> float:
    """``magnitude_ema_beta`` the official train.py gives the StyleGAN3 generator: ``0.5 ** (batch / 20000)``."""
    return 0.5 ** (batch_size / (20 * 1e3))


def official_blur_fade_kimg(batch_size: int) -> float:
    """Discriminator blur fade-out of the official StyleGAN3-R config: ``batch * 200 / 32`` kimg."""
    return batch_size * 200 / 32


# The one source of defaults: stylegan_jax.config.base_config. This dataclass is the typed view of its `train`
# section (and model.bf16 / magnitude_ema_beta) that the step reads; its defaults are read from there.
_BASE = base_config()
_TRAIN, _MODEL = _BASE.train, _BASE.model


def _unset(value: Any) -> bool:
    """None or the configs' ``-1`` sentinel: use the official batch-dependent default."""
    return value is None or (isinstance(value, int | float) and value < 0)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of the training step (hashable: the step functions close over it).

    ``None`` (or a negative value, the configs' sentinel) in a batch-dependent field means the official
    default for ``batch_size``; read the ``resolved_*`` properties.
    """

    batch_size: int = _TRAIN.batch_size                # Global batch over all devices and hosts (official --batch).
    g_lr: float = _TRAIN.g_lr                          # G Adam learning rate (official StyleGAN3 default).
    d_lr: float = _TRAIN.d_lr                          # D Adam learning rate (official --dlr default).
    betas: tuple[float, float] = tuple(_TRAIN.betas)   # Adam betas of both networks.
    eps: float = _TRAIN.eps                            # Adam epsilon (outside the square root, as torch.optim.Adam).
    r1_gamma: float = _TRAIN.r1_gamma                  # R1 weight (official recommendation for 256px, batch 32).
    r1_gamma_final: float = _TRAIN.r1_gamma_final      # R1 weight from r1_gamma_final_kimg on; -1 = unset.
    r1_gamma_final_kimg: float = _TRAIN.r1_gamma_final_kimg  # Where r1_gamma_final takes over; -1 = never.
    d_reg_interval: int | None = _TRAIN.d_reg_interval  # Lazy R1 every N iterations; None = R1 every step.
    lr_decay_start_kimg: float = _TRAIN.lr_decay_start_kimg  # Learning rates fall linearly from here ...
    lr_decay_end_kimg: float = _TRAIN.lr_decay_end_kimg      # ... to lr_final_mult times theirs here; -1 = never.
    lr_final_mult: float = _TRAIN.lr_final_mult        # The rates' multiplier from lr_decay_end_kimg on.
    g_reg_interval: int | None = None                  # Lazy path-length reg every N iterations (official StyleGAN2:
                                                       # 4); None with pl_weight > 0 = in every G step ('Gboth').
    ema_kimg: float | None = None                      # G_ema half-life in kimg; None = batch * 10 / 32.
    ema_rampup: float | None = _TRAIN.ema_rampup       # Half-life at most cur_nimg * rampup early on; None = off.
    blur_init_sigma: float = _TRAIN.blur_init_sigma    # D input blur at start (official StyleGAN3-R: 10; T: 0).
    blur_fade_kimg: float | None = None                # Blur fade-out length in kimg; None = batch * 200 / 32.
    style_mixing_prob: float = _TRAIN.style_mixing_prob  # Style mixing probability (StyleGAN3: 0; StyleGAN2: 0.9).
    pl_weight: float = _TRAIN.pl_weight                # Path-length reg weight (StyleGAN3: 0; StyleGAN2: 2).
    pl_batch_shrink: int = _TRAIN.pl_batch_shrink      # Path-length reg on batch // pl_batch_shrink latents.
    pl_decay: float = _TRAIN.pl_decay                  # Decay of the running mean of path lengths.
    magnitude_ema_beta: float | None = None            # Generator constructor value; None = 0.5 ** (batch / 20000).
    bf16: bool = _MODEL.bf16                           # bf16 compute in the highest-resolution layers (step.py).
    augment: str = "off"                               # D augmentation: 'ada' (adaptive p), 'fixed' (augment_p),
                                                       # 'off' (the config's 'auto' resolved without folder data).
    augment_p: float = _TRAIN.augment_p                # Initial (ada) or constant (fixed) augmentation probability.
    ada_target: float = _TRAIN.ada_target              # ADA target of E[sign(D(real))] (official --target).
    ada_interval: int = _TRAIN.ada_interval            # ADA adjusts p every this many iterations.
    ada_kimg: float = _TRAIN.ada_kimg                  # ADA: kimg for p to move from 0 to 1 at full speed.
    augment_spec: str = _TRAIN.augment_spec            # Augmentation spec name (ops.augment.SPECS; official 'bgc').
    class_weight: float = _TRAIN.class_weight          # AC-GAN class loss weight (D's class head); 0 = off.
    g_class_weight: float = _TRAIN.g_class_weight      # G's class loss weight; -1 (unset) = class_weight.
    diversity_weight: float = _TRAIN.diversity_weight  # G's mode-seeking term (losses.mode_seeking_loss); 0 = off.
    bias_lr_mult: float = _TRAIN.bias_lr_mult          # Biases learn at lr * this (both networks); 1 = official.

    def __post_init__(self) -> None:
        for name in ("d_reg_interval", "g_reg_interval"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"TrainConfig: {name} must be >= 1 or None, got {value}")
        if self.pl_weight < 0 or self.pl_batch_shrink < 1 or not 0 <= self.pl_decay <= 1:
            raise ValueError(f"TrainConfig: need pl_weight >= 0, pl_batch_shrink >= 1, 0 <= pl_decay <= 1; got "
                             f"{self.pl_weight}, {self.pl_batch_shrink}, {self.pl_decay}")
        if not 0 <= self.style_mixing_prob <= 1:
            raise ValueError(f"TrainConfig: style_mixing_prob must be in [0, 1], got {self.style_mixing_prob}")
        if self.batch_size < 1:
            raise ValueError(f"TrainConfig: batch_size must be >= 1, got {self.batch_size}")
        if not self.class_weight >= 0:
            raise ValueError(f"TrainConfig: class_weight must be >= 0, got {self.class_weight}")
        if self.class_weight == 0 and not _unset(self.g_class_weight) and self.g_class_weight > 0:
            raise ValueError(f"TrainConfig: g_class_weight={self.g_class_weight} needs class_weight > 0 (D's class "
                             f"head, which G's class loss reads, exists only then)")
        if _unset(self.r1_gamma_final) != _unset(self.r1_gamma_final_kimg):
            raise ValueError(f"TrainConfig: r1_gamma_final={self.r1_gamma_final} and r1_gamma_final_kimg="
                             f"{self.r1_gamma_final_kimg} are set together (both >= 0) or not at all (-1)")
        if self.r1_gamma_scheduled and not self.r1_gamma > 0:
            raise ValueError(f"TrainConfig: an R1 schedule needs r1_gamma > 0 (got {self.r1_gamma}: without it the "
                             f"Dreg phase is not run at all)")
        if _unset(self.lr_decay_start_kimg) != _unset(self.lr_decay_end_kimg):
            raise ValueError(f"TrainConfig: lr_decay_start_kimg={self.lr_decay_start_kimg} and lr_decay_end_kimg="
                             f"{self.lr_decay_end_kimg} are set together (both >= 0) or not at all (-1)")
        if self.lr_scheduled and not (self.lr_decay_end_kimg > self.lr_decay_start_kimg and self.lr_final_mult >= 0):
            raise ValueError(f"TrainConfig: a learning-rate decay needs lr_decay_end_kimg > lr_decay_start_kimg and "
                             f"lr_final_mult >= 0; got {self.lr_decay_start_kimg}, {self.lr_decay_end_kimg}, "
                             f"{self.lr_final_mult}")
        if not self.diversity_weight >= 0:
            raise ValueError(f"TrainConfig: diversity_weight must be >= 0, got {self.diversity_weight}")
        if not self.bias_lr_mult > 0:
            raise ValueError(f"TrainConfig: bias_lr_mult must be > 0, got {self.bias_lr_mult}")
        if self.augment not in ("ada", "fixed", "off"):
            raise ValueError(f"TrainConfig: augment must be 'ada', 'fixed' or 'off', got {self.augment!r}")
        if not (self.augment_p >= 0 and self.ada_interval >= 1 and self.ada_kimg > 0):
            raise ValueError(f"TrainConfig: need augment_p >= 0, ada_interval >= 1, ada_kimg > 0; got "
                             f"{self.augment_p}, {self.ada_interval}, {self.ada_kimg}")
        from stylegan_jax.ops.augment import make_spec

        make_spec(self.augment_spec)  # an unknown spec name fails here, naming it

    @property
    def augmenting(self) -> bool:
        """Whether D sees augmented images (official: a pipeline exists when ADA is on or the fixed p > 0)."""
        return self.augment == "ada" or (self.augment == "fixed" and self.augment_p > 0)

    @property
    def resolved_ema_kimg(self) -> float:
        return official_ema_kimg(self.batch_size) if _unset(self.ema_kimg) else float(self.ema_kimg)

    @property
    def resolved_blur_fade_kimg(self) -> float:
        return official_blur_fade_kimg(self.batch_size) if _unset(self.blur_fade_kimg) else float(self.blur_fade_kimg)

    @property
    def resolved_magnitude_ema_beta(self) -> float:
        if _unset(self.magnitude_ema_beta):
            return official_magnitude_ema_beta(self.batch_size)
        return float(self.magnitude_ema_beta)

    @property
    def d_mb_ratio(self) -> float:
        """Share of D updates that are main updates: ``interval / (interval + 1)`` (1 without lazy reg)."""
        return 1.0 if self.d_reg_interval is None else self.d_reg_interval / (self.d_reg_interval + 1)

    @property
    def g_mb_ratio(self) -> float:
        """Share of G updates that are main updates: ``interval / (interval + 1)`` (1 without lazy reg)."""
        return 1.0 if self.g_reg_interval is None else self.g_reg_interval / (self.g_reg_interval + 1)

    def loss_options(self) -> LossOptions:
        return LossOptions(r1_gamma=float(self.r1_gamma), style_mixing_prob=float(self.style_mixing_prob),
                           blur_init_sigma=float(self.blur_init_sigma),
                           blur_fade_kimg=self.resolved_blur_fade_kimg if self.blur_init_sigma > 0 else 0.0,
                           pl_weight=float(self.pl_weight), pl_batch_shrink=int(self.pl_batch_shrink),
                           pl_decay=float(self.pl_decay), augment_spec=self._augment_spec(),
                           class_weight=float(self.class_weight), g_class_weight=self.resolved_g_class_weight,
                           diversity_weight=float(self.diversity_weight))

    @property
    def r1_gamma_scheduled(self) -> bool:
        """Whether R1's weight changes to ``r1_gamma_final`` at ``r1_gamma_final_kimg``."""
        return not _unset(self.r1_gamma_final_kimg)

    @property
    def lr_scheduled(self) -> bool:
        """Whether the learning rates decay between ``lr_decay_start_kimg`` and ``lr_decay_end_kimg``."""
        return not _unset(self.lr_decay_start_kimg)

    @property
    def resolved_g_class_weight(self) -> float:
        return float(self.class_weight) if _unset(self.g_class_weight) else float(self.g_class_weight)

    def _augment_spec(self):
        from stylegan_jax.ops.augment import make_spec

        return make_spec(self.augment_spec) if self.augmenting else None

    @classmethod
    def from_config(cls, config: Any) -> TrainConfig:
        """From the project's ``ml_collections`` config (``config.train.*``, ``config.model.{magnitude_ema_beta,
        bf16}``; see ``stylegan_jax/config.py``). A ``TrainConfig`` passes through unchanged."""
        if isinstance(config, TrainConfig):
            return config
        config = complete_config(config)
        t, m = config.train, config.model
        pl_weight = float(t.pl_weight)
        # The configs' g_reg_interval only applies with path-length reg: StyleGAN3 runs (pl_weight 0) keep the
        # official G_reg_interval=None, i.e. no lazy-reg adjustment of G's Adam.
        g_reg = t.g_reg_interval if pl_weight > 0 else None
        d_reg = t.d_reg_interval
        return cls(
            batch_size=int(t.batch_size), g_lr=float(t.g_lr), d_lr=float(t.d_lr),
            betas=tuple(float(b) for b in t.betas), eps=float(t.eps),
            r1_gamma=float(t.r1_gamma), r1_gamma_final=float(t.r1_gamma_final),
            r1_gamma_final_kimg=float(t.r1_gamma_final_kimg), lr_decay_start_kimg=float(t.lr_decay_start_kimg),
            lr_decay_end_kimg=float(t.lr_decay_end_kimg), lr_final_mult=float(t.lr_final_mult),
            d_reg_interval=None if d_reg in (None, 0) else int(d_reg),
            ema_kimg=t.ema_kimg, ema_rampup=t.ema_rampup,
            blur_init_sigma=float(t.blur_init_sigma), blur_fade_kimg=t.blur_fade_kimg,
            style_mixing_prob=float(t.style_mixing_prob),
            g_reg_interval=None if g_reg in (None, 0) else int(g_reg), pl_weight=pl_weight,
            pl_batch_shrink=int(t.pl_batch_shrink), pl_decay=float(t.pl_decay),
            magnitude_ema_beta=m.magnitude_ema_beta, bf16=bool(m.bf16),
            augment=resolve_augment(str(t.augment), config.data.source),
            augment_p=float(t.augment_p), ada_target=float(t.ada_target), ada_interval=int(t.ada_interval),
            ada_kimg=float(t.ada_kimg), augment_spec=str(t.augment_spec), class_weight=float(t.class_weight),
            g_class_weight=float(t.g_class_weight), diversity_weight=float(t.diversity_weight),
            bias_lr_mult=float(t.bias_lr_mult),
        )


def complete_config(config: Any) -> ml_collections.ConfigDict:
    """``config`` laid over :func:`stylegan_jax.config.base_config`: every field present, the given values kept
    (configs written before a field existed, and partial configs in tests, get the base default)."""
    full = base_config()
    given = config.to_dict() if hasattr(config, "to_dict") else dict(config)

    def merge(node: ml_collections.ConfigDict, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            if key in node and isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, Mapping):
                merge(node[key], value)
            else:
                with node.ignore_type():
                    node[key] = value

    merge(full, given)
    return full


def resolve_augment(augment: str, source: str | None) -> str:
    """``train.augment`` with ``'auto'`` resolved: ``'ada'`` for folder and tfds data (the official default),
    ``'off'`` otherwise (the synthetic shapes)."""
    if augment == "auto":
        return "ada" if source in ("folder", "tfds") else "off"
    return augment


def make_optimizers(tc: TrainConfig) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """``(G Adam, D Adam)``. optax.adam is torch.optim.Adam (bias-corrected, eps outside the square root).

    Each Adam is shared by its network's main and lazy-reg updates, i.e. it steps ``interval + 1`` times per
    ``interval`` iterations; the official loop compensates with ``lr * mb_ratio`` and ``beta ** mb_ratio``
    (for G only when ``g_reg_interval`` is set: the StyleGAN2 config).

    ``bias_lr_mult != 1``: every parameter named ``bias`` gets its own Adam at ``lr * bias_lr_mult`` (same betas).
    With the equalized learning rate the weights are stored as N(0, 1) samples, so ``lr`` is the *relative* speed
    of every weight, while a bias moves by ``lr`` in absolute terms; this lets a run raise the weights' speed
    without making the biases equally jumpy (see BENCHMARKS.md, "Training quality", round 14).
    """
    b1, b2 = tc.betas

    def adam(lr: float, ratio: float) -> optax.GradientTransformation:
        make = lambda rate: optax.adam(rate, b1=b1**ratio, b2=b2**ratio, eps=tc.eps)
        if tc.bias_lr_mult == 1:
            return make(lr * ratio)
        return optax.multi_transform({"weights": make(lr * ratio), "biases": make(lr * ratio * tc.bias_lr_mult)},
                                     parameter_kinds)

    return adam(tc.g_lr, tc.g_mb_ratio), adam(tc.d_lr, tc.d_mb_ratio)


def parameter_kinds(params: Any) -> Any:
    """``'biases'`` for every leaf named ``bias``, ``'weights'`` for the rest: the labels of
    :func:`make_optimizers`' two Adams."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "biases" if getattr(path[-1], "key", None) == "bias" else "weights", params)


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (a pytree; checkpoint it whole for exact resume)."""

    step: jnp.ndarray          # Training iterations done (the official batch_idx); int32 scalar.
    nimg: jnp.ndarray          # Real images shown to D so far (the official cur_nimg); int32 scalar.
    g_steps: jnp.ndarray       # G optimizer updates applied (Gmain).
    g_reg_steps: jnp.ndarray   # G lazy-regularization (path length) optimizer updates applied (Greg).
    d_steps: jnp.ndarray       # D main optimizer updates applied (Dmain).
    d_reg_steps: jnp.ndarray   # D lazy-regularization optimizer updates applied (Dreg).
    G: Any                     # Generator variables {'params', 'ema' (w_avg, magnitude_ema), 'buffers'}.
    G_ema: Any                 # EMA generator variables, same structure; sample and evaluate with these.
    D: Any                     # Discriminator variables {'params'}.
    g_opt_state: Any           # optax Adam state of G.
    d_opt_state: Any           # optax Adam state of D (shared by Dmain and Dreg updates).
    rng: jax.Array             # Base PRNG key; the key of iteration k is fold_in(rng, k).
    last_r1: jnp.ndarray       # Mean raw R1 penalty of the last Dreg update (reported between reg steps).
    last_r1_grad_norm: jnp.ndarray  # Global norm of the last Dreg gradient (gain included).
    pl_mean: jnp.ndarray       # Running mean of path lengths (the official loss's pl_mean buffer); 0 at start.
    last_pl_penalty: jnp.ndarray  # Mean path-length penalty of the last Greg update (reported between reg steps).
    ada_p: jnp.ndarray         # Augmentation probability p (the official augment_pipe.p); float32 scalar.
    ada_sign_sum: jnp.ndarray  # ADA: sum of sign(D(real)) since the last p adjustment (Dmain and Dreg reals).
    ada_sign_count: jnp.ndarray  # ADA: number of real logits in ada_sign_sum.

    @property
    def kimg(self) -> jnp.ndarray:
        """Thousands of real images shown so far."""
        return self.nimg / 1000

    @property
    def G_params(self) -> Any:
        return self.G["params"]

    @property
    def D_params(self) -> Any:
        return self.D["params"]


def _copy(tree: Any) -> Any:
    # Distinct buffers for G and G_ema: a donated state must not hold one buffer twice.
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def init_variables(G: nn.Module, D: nn.Module, rng: jax.Array) -> tuple[dict, dict]:
    """Fresh ``(G variables, D variables)`` from the networks' initializers.

    Jit-compiled (eager initialization of a StyleGAN3 generator is much slower), and drawn with an
    XLA RngBitGenerator key derived from ``rng``: with threefry keys, compiling the initializers of the
    many small parameters takes 2-4x longer on the CPU. The values are deterministic for a given ``rng``
    and backend (not across backends, unlike threefry); only the initial draw is affected.
    """
    init_key = jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl="rbg")
    k_g, k_d = jax.random.split(init_key)
    z = jnp.zeros((1, G.z_dim), jnp.float32)
    c = jnp.zeros((1, G.c_dim), jnp.float32)
    g_vars = jax.jit(G.init)(k_g, z, c)
    d_vars = jax.jit(D.init_params)(k_d)
    return flax.core.unfreeze(g_vars), flax.core.unfreeze(d_vars)


def create_train_state(G: nn.Module, D: nn.Module, config: Any, rng: jax.Array, mesh: Mesh | None = None,
                       g_variables: Mapping[str, Any] | None = None,
                       d_variables: Mapping[str, Any] | None = None) -> TrainState:
    """A step-0 train state: G_ema = G (as the official ``copy.deepcopy(G)``), fresh Adam states.

    Args:
      G, D: the networks (their field values, e.g. ``magnitude_ema_beta``, are the model's).
      config: a ``TrainConfig`` or the project's ``ml_collections`` config.
      rng: PRNG key; initialization and the per-iteration keys derive from it.
      mesh: if given, the state is placed replicated on it (``P()``), as the step expects.
      g_variables, d_variables: start from these (e.g. converted official weights) instead of initializing.
    """
    tc = TrainConfig.from_config(config)
    k_init, k_steps = jax.random.split(rng)
    g_init, d_init = (None, None) if g_variables is not None and d_variables is not None else init_variables(
        G, D, k_init)
    g_vars = dict(g_variables) if g_variables is not None else g_init
    d_vars = dict(d_variables) if d_variables is not None else d_init
    g_vars = {k: _copy(v) for k, v in g_vars.items()}
    d_vars = {"params": _copy(d_vars["params"])}
    g_tx, d_tx = make_optimizers(tc)
    # A fresh array per counter: a donated state must not hold one buffer twice.
    zero = lambda dtype=jnp.int32: jnp.zeros((), dtype)
    state = TrainState(
        step=zero(), nimg=zero(), g_steps=zero(), g_reg_steps=zero(), d_steps=zero(), d_reg_steps=zero(),
        G=g_vars, G_ema=_copy(g_vars), D=d_vars,
        g_opt_state=g_tx.init(g_vars["params"]), d_opt_state=d_tx.init(d_vars["params"]),
        rng=k_steps, last_r1=zero(jnp.float32), last_r1_grad_norm=zero(jnp.float32), pl_mean=zero(jnp.float32),
        last_pl_penalty=zero(jnp.float32),
        ada_p=jnp.asarray(tc.augment_p if tc.augmenting else 0.0, jnp.float32), ada_sign_sum=zero(jnp.float32),
        ada_sign_count=zero(jnp.float32),
    )
    if mesh is not None:
        state = jax.device_put(state, NamedSharding(mesh, P()))
    return state


__all__ = [
    "TrainConfig",
    "TrainState",
    "create_train_state",
    "init_variables",
    "make_optimizers",
    "resolve_augment",
    "official_blur_fade_kimg",
    "official_ema_kimg",
    "official_magnitude_ema_beta",
]
