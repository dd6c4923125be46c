"""Low-pass filter design for the alias-free layers (computed once, in NumPy, at trace time)."""

from __future__ import annotations

import numpy as np
import scipy.signal
import scipy.special


def design_lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> np.ndarray | None:
    """Windowed-sinc low-pass filter.

    Args:
      numtaps: filter length; 1 means identity and returns ``None``.
      cutoff: cutoff frequency (f_c), in the same units as ``fs``.
      width: transition band width (2 * f_h); sets the Kaiser window's beta.
      fs: sampling rate of the signal the filter runs at.
      radial: ``False`` gives a separable 1-D Kaiser-windowed sinc (``[numtaps]``);
        ``True`` gives a radially symmetric 2-D jinc filter (``[numtaps, numtaps]``) windowed by
        the outer product of the same Kaiser window, used by StyleGAN3-R for rotation equivariance.
    """
    if numtaps < 1:
        raise ValueError(f"design_lowpass_filter: numtaps must be >= 1, got {numtaps}")
    if numtaps == 1:
        return None
    if not radial:
        return scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs).astype(np.float32)

    # Radial: the 2-D ideal low-pass response is a jinc, J1(2 pi f_c r) / (pi r).
    t = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(t, t))
    f = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    attenuation = scipy.signal.kaiser_atten(numtaps, width / (fs / 2))
    window = np.kaiser(numtaps, scipy.signal.kaiser_beta(attenuation))
    f = f * np.outer(window, window)
    f = f / np.sum(f)
    return f.astype(np.float32)
