"""The one config system: ``ml_collections.ConfigDict`` trees built in Python.

``configs/<name>.py`` files define ``get_config()`` starting from :func:`base_config` and changing
what differs. ``stylegan-jax train --config configs/<name>.py --config.train.batch_size=16`` loads
the file and applies ``--config.<dotted.key>=value`` overrides (typed by the existing field).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import ml_collections

# Official recommended R1 gamma per resolution for 8 GPUs, batch 32 (NVlabs/stylegan3 docs/configs.md);
# gamma scales with the square of the resolution.
OFFICIAL_GAMMA = {128: 0.5, 256: 2.0, 512: 8.0, 1024: 32.0}


def base_config() -> ml_collections.ConfigDict:
    """Defaults: the design's StyleGAN3-T 256 (z = w = 512, 8 mapping layers) with the official
    training hyperparameters."""
    c = ml_collections.ConfigDict()

    c.model = ml_collections.ConfigDict()
    c.model.cfg = "t"                      # 't', 'r' (StyleGAN3-T / -R) or 'stylegan2' (the baseline).
    c.model.z_dim = 512                    # Input latent (Z) dimensionality.
    c.model.w_dim = 512                    # Intermediate latent (W) dimensionality.
    c.model.mapping_layers = 8             # Mapping network depth (the design; official StyleGAN3 uses 2).
    c.model.mapping_lr_multiplier = 0.01   # Learning-rate multiplier of G's mapping and D's label mapping (official).
    c.model.channel_base = 32768           # Channel multiplier (R doubles it internally).
    c.model.channel_max = 512              # Max channels per layer (R doubles it internally).
    c.model.conv_clamp = 256.0             # Clamp conv outputs; None = off.
    c.model.magnitude_ema_beta = -1.0      # -1 = official 0.5 ** (batch / 20000).
    c.model.num_layers = 14                # StyleGAN3 synthesis layers (the design's 14; fewer only for quick tests).
    c.model.margin_size = 10               # StyleGAN3 pixels kept outside the image on each side (official 10).
    c.model.input_transform_init = 0.0     # StyleGAN3 input transform affine's initial weight std (official 0).
    c.model.d_channel_base = 32768         # Discriminator channel multiplier.
    c.model.d_channel_max = 512            # Discriminator max channels.
    c.model.mbstd_group_size = 4           # Minibatch-stddev group size.
    c.model.mbstd_num_channels = 1         # Minibatch-stddev feature channels.
    c.model.d_resample_filter = (1, 3, 3, 1)  # Low-pass taps of D's downsampling (official [1,3,3,1]; (1, 1) = box).
    c.model.d_pack = 1                     # D scores packs of this many images (PacGAN); 1 = official.
    c.model.d_project_labels = True        # D's realness projected on the label (official); False: only D's class
                                           # head reads labels (classic AC-GAN; needs train.class_weight > 0).
    c.model.bf16 = False                   # bf16 compute in the highest-resolution layers (GPU/TPU only).

    c.data = ml_collections.ConfigDict()
    c.data.source = "synthetic"            # 'synthetic', 'folder' (directory or .zip) or 'tfds'.
    c.data.path = ml_collections.FieldReference(None, field_type=str)      # Folder/zip path.
    c.data.resolution = 256                # Training resolution (= model output resolution).
    c.data.channels = 3                    # Image channels.
    c.data.mirror = False                  # x-flip augmentation (doubles the dataset).
    c.data.use_labels = False              # Conditional training on dataset labels.
    c.data.max_images = ml_collections.FieldReference(None, field_type=int)  # Use only the first N images.
    c.data.tfds_name = ml_collections.FieldReference(None, field_type=str)   # e.g. 'celeb_a'.
    c.data.tfds_split = "train"            # TFDS split.
    c.data.data_dir = ml_collections.FieldReference(None, field_type=str)    # TFDS data_dir (already prepared).
    c.data.image_key = "image"             # TFDS feature holding the image.
    c.data.label_key = "label"             # TFDS feature holding the label.
    c.data.synthetic_size = 10000          # Number of distinct synthetic images.
    c.data.validate = "scan"               # 'scan', 'full' or 'none' (check every file before training).
    c.data.prefetch = 2                    # Batches prefetched by a background thread.
    c.data.num_workers = ml_collections.FieldReference(None, field_type=int)  # Reader threads; None = min(8, CPUs).
    c.data.synthetic_seed = 0              # Content seed of the synthetic images (independent of the shuffle seed).
    c.data.channel_mode = "convert"        # 'convert' or 'strict': images whose channel count differs.

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32                # Global batch over all devices and hosts.
    c.train.batch_per_device = 0           # Samples per device at a time (official --batch-gpu); 0 = all its share.
    c.train.total_kimg = 25000.0           # Training length in thousands of real images shown to D.
    c.train.g_lr = 0.0025                  # Generator Adam learning rate.
    c.train.d_lr = 0.002                   # Discriminator Adam learning rate.
    c.train.betas = (0.0, 0.99)            # Adam betas.
    c.train.eps = 1e-8                     # Adam epsilon.
    c.train.r1_gamma = 2.0                 # R1 weight (official 256px value).
    c.train.r1_gamma_final = -1.0          # R1 weight from r1_gamma_final_kimg on (a sharper D late in a run) ...
    c.train.r1_gamma_final_kimg = -1.0     # ... starting at this kimg; -1 = r1_gamma throughout (official).
    c.train.d_reg_interval = 16            # Lazy R1 every N D steps.
    c.train.lr_decay_start_kimg = -1.0     # G's and D's learning rates fall linearly from this kimg ...
    c.train.lr_decay_end_kimg = -1.0       # ... to lr_final_mult times their value at this kimg, then stay there;
    c.train.lr_final_mult = 0.1            # ... -1 (both kimg) = constant rates (official).
    c.train.style_mixing_prob = 0.0        # Style-mixing regularization probability (StyleGAN2: 0.9).
    c.train.pl_weight = 0.0                # Path-length regularization weight (StyleGAN2: 2; 0 = off).
    c.train.g_reg_interval = 4             # Lazy path-length reg every N G steps (used when pl_weight > 0).
    c.train.pl_batch_shrink = 2            # Path-length reg on batch_size // N latents.
    c.train.pl_decay = 0.01                # Decay of the running mean of path lengths.
    c.train.ema_kimg = -1.0                # G EMA half-life in kimg; -1 = official batch * 10 / 32.
    c.train.ema_rampup = 0.05              # EMA rampup ratio; None = off.
    c.train.blur_init_sigma = 0.0          # D input blur at start (StyleGAN3-R uses 10).
    c.train.blur_fade_kimg = -1.0          # Blur fade-out in kimg; -1 = official batch * 200 / 32.
    c.train.seed = 0                       # Seed for initialisation and z sampling.
    # Adaptive discriminator augmentation (ADA). 'auto' = 'ada' for folder and tfds data (the official default,
    # --aug=ada), 'off' for the synthetic shapes (rendered on demand, 10000 distinct images by default).
    c.train.augment = "auto"               # 'ada', 'fixed' (p = augment_p throughout), 'off' or 'auto'.
    c.train.augment_p = 0.0                # Initial p with 'ada', the constant p with 'fixed'.
    c.train.ada_target = 0.6               # ADA target of E[sign(D(real))] (official --target).
    c.train.ada_interval = 4               # ADA adjusts p every N iterations.
    c.train.ada_kimg = 500.0               # ADA speed: p can move by 1 in this many kimg.
    c.train.augment_spec = "bgc"           # Augmentations (ops.augment.SPECS): blit + geometric + colour.
    # Auxiliary classifier (AC-GAN, Odena et al. 2017; not in the official code): with labels (data.use_labels),
    # D gets a head that learns the label of real images and G is asked to draw what it recognises as its label.
    c.train.class_weight = 0.0             # Weight of both class losses; 0 = off (the official objective).
    c.train.g_class_weight = -1.0          # Weight of G's class loss alone; -1 = class_weight (D's stays class_weight).
    c.train.diversity_weight = 0.0         # Mode-seeking term of G (pairs of fakes with the same label); 0 = off.
    c.train.bias_lr_mult = 1.0             # Biases learn at g_lr / d_lr times this; 1 = official (see make_optimizers).

    c.log = ml_collections.ConfigDict()
    c.log.tick_kimg = 4.0                  # Log a line every N kimg.
    c.log.image_kimg = 200.0               # Save a grid of G_ema samples every N kimg.
    c.log.checkpoint_kimg = 200.0          # Save a checkpoint every N kimg.
    c.log.keep_checkpoints = 3             # Number of checkpoints kept.
    c.log.grid_size = 8                    # Grid of grid_size x grid_size fixed-seed samples.
    c.log.grid_psi = 1.0                   # Truncation of the grid samples.
    c.log.progress_bar = True              # tqdm progress bar on stderr.
    c.log.metrics = "eqt_int,eqt_frac,eqr"  # Equivariance metrics computed during training (G_ema).
    c.log.metrics_kimg = 0.0               # Compute them every N kimg; 0 = never.
    c.log.metrics_num = 1000               # Samples per evaluation (the paper uses 50000).
    return c


def stylegan3_config(cfg: str, resolution: int) -> ml_collections.ConfigDict:
    """:func:`base_config` with the official StyleGAN3 recipe for ``cfg`` ('t' or 'r') at ``resolution``: batch
    32, R1 gamma from :data:`OFFICIAL_GAMMA` (elsewhere its rule, gamma ~ resolution^2: 2 * (resolution / 256)^2)
    and, for StyleGAN3-R, the D input blur fade-in from sigma 10. Model sizes and data stay at their defaults."""
    if cfg not in ("t", "r"):
        raise ValueError(f"stylegan3_config: cfg must be 't' or 'r', got {cfg!r}")
    c = base_config()
    c.model.cfg = cfg
    c.data.resolution = resolution
    c.train.batch_size = 32
    c.train.r1_gamma = OFFICIAL_GAMMA.get(resolution, 2.0 * (resolution / 256) ** 2)
    if cfg == "r":
        c.train.blur_init_sigma = 10.0
    return c


# The official --cfg=stylegan2 settings (NVlabs/stylegan3 train.py) that differ from base_config's StyleGAN3 ones.
STYLEGAN2_SETTINGS = {"model.cfg": "stylegan2", "model.mapping_layers": 8, "train.g_lr": 0.002,
                      "train.style_mixing_prob": 0.9, "train.pl_weight": 2.0, "train.g_reg_interval": 4,
                      "train.pl_batch_shrink": 2, "train.pl_decay": 0.01, "log.metrics_kimg": 0.0}


def use_stylegan2(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Switch a config to the StyleGAN2 baseline with the official ``--cfg=stylegan2`` training settings
    (NVlabs/stylegan3 train.py): 8 mapping layers, G lr 0.002, style mixing 0.9, path-length regularization
    weight 2 every 4 iterations on half the batch; no equivariance metrics (they need StyleGAN3's input
    transform). Data, resolution, channels, gamma and batch are left as they are. Returns ``c``."""
    c.update_from_flattened_dict(STYLEGAN2_SETTINGS)
    return c


def load_config(path: str | Path) -> ml_collections.ConfigDict:
    """Import a config file and call its ``get_config()``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    spec = importlib.util.spec_from_file_location(f"stylegan_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path} defines no get_config()")
    return module.get_config()


def _parse_value(text: str, current):
    """Parse an override string into the type of the field it replaces."""
    if isinstance(current, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if text.lower() in ("none", "null"):
        return None
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str):
        return text
    if isinstance(current, tuple | list):
        value = ast.literal_eval(text)
        return tuple(value) if isinstance(current, tuple) else list(value)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> ml_collections.ConfigDict:
    """Apply ``key.sub=value`` overrides; unknown keys are an error (they are usually typos)."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, text = item.split("=", 1)
        key = key.removeprefix("--").removeprefix("config.")
        node = config
        parts = key.split(".")
        for part in parts[:-1]:
            if part not in node:
                raise KeyError(f"unknown config key {key!r}")
            node = node[part]
        if parts[-1] not in node:
            raise KeyError(f"unknown config key {key!r}")
        current = node[parts[-1]]
        # A None field keeps its declared type (FieldReference(None, field_type=...)): ConfigDict.get_type.
        field_type = node.get_type(parts[-1]) if current is None else None
        if field_type in (int, float, str):
            value = None if text.lower() in ("none", "null") else field_type(text)
        else:
            value = _parse_value(text, current)
        try:
            node[parts[-1]] = value
        except TypeError as e:
            raise ValueError(f"override {item!r}: {e}") from e
    return config
