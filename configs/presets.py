"""Official 8-GPU presets (NVlabs/stylegan3 docs/configs.md, "Recommended configurations"), as
documented values. Select with --config configs/presets.py --config.preset=... is not needed:
``get_config()`` returns StyleGAN3-T 256; ``preset(name)`` returns any of the table's rows.

| preset            | resolution | cfg | batch | gamma | official s/kimg (8x A100) |
| ----------------- | ---------- | --- | ----- | ----- | ------------------------- |
| stylegan3-t-128   | 128        | t   | 32    | 0.5   | 4.40                      |
| stylegan3-r-128   | 128        | r   | 32    | 0.5   | 5.69                      |
| stylegan3-t-256   | 256        | t   | 32    | 2     | 7.32                      |
| stylegan3-r-256   | 256        | r   | 32    | 2     | 8.03                      |
| stylegan3-t-512   | 512        | t   | 32    | 8     | 12.29                     |
| stylegan3-r-512   | 512        | r   | 32    | 8     | 14.04                     |
| stylegan3-t-1024  | 1024       | t   | 32    | 32    | 20.01                     |
| stylegan3-r-1024  | 1024       | r   | 32    | 32    | 23.42                     |

The paper's FFHQ(-U) 1024 runs used gamma 32.8 with --mirror=1 --aug=noaug.
"""

from stylegan_jax.config import OFFICIAL_GAMMA, stylegan3_config

PRESETS = {f"stylegan3-{cfg}-{res}": (cfg, res) for res in OFFICIAL_GAMMA for cfg in ("t", "r")}


def preset(name: str):
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return stylegan3_config(*PRESETS[name])


def get_config():
    return preset("stylegan3-t-256")
