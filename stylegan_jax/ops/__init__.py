"""Low-level ops: pure, jit-compatible functions on NHWC arrays.

Every op has a plain reference path (``impl="ref"``) that mirrors the definition step by step,
and, where it matters for speed, a fast path that computes the same thing differently.
"""

from stylegan_jax.ops.bias_act import bias_act
from stylegan_jax.ops.filtered_lrelu import filtered_lrelu
from stylegan_jax.ops.lowpass import design_lowpass_filter
from stylegan_jax.ops.modulated_conv import modulated_conv2d
from stylegan_jax.ops.upfirdn2d import upfirdn2d

__all__ = ["bias_act", "design_lowpass_filter", "filtered_lrelu", "modulated_conv2d", "upfirdn2d"]
