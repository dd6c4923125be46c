"""Low-pass filter design for the alias-free layers (computed once, in NumPy, at trace time).

The Kaiser-window design is written out here in NumPy (Kaiser's attenuation and beta formulas, a windowed sinc
normalised to unit DC gain: what ``scipy.signal.firwin(numtaps, cutoff, width=..., fs=...)`` computes, checked
against it in the tests) because importing ``scipy.signal`` costs every process about 1.1-1.4 s on a CPU (it
pulls in ``scipy.stats``), a tenth of the time to the first image of ``stylegan-jax generate``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special


def kaiser_attenuation(numtaps: int, width: float) -> float:
    """Stopband attenuation in dB of a Kaiser-window FIR filter with ``numtaps`` taps and a transition band of
    ``width`` (a fraction of the Nyquist frequency): Kaiser's empirical formula, ``2.285 (N - 1) pi w + 7.95``."""
    return 2.285 * (numtaps - 1) * math.pi * width + 7.95


def kaiser_beta(attenuation: float) -> float:
    """Kaiser window shape parameter for a stopband attenuation in dB (Kaiser's empirical formula)."""
    if attenuation > 50:
        return 0.1102 * (attenuation - 8.7)
    if attenuation > 21:
        return 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    return 0.0


def kaiser_lowpass(numtaps: int, cutoff: float, width: float, fs: float) -> np.ndarray:
    """Linear-phase low-pass FIR filter ``[numtaps]`` (float64): the ideal response ``2 f_c sinc(2 f_c t)``
    sampled at the taps, times a Kaiser window whose beta meets the attenuation a transition band of ``width``
    allows, scaled to a DC gain of exactly 1."""
    nyquist = fs / 2
    if not 0 < cutoff < nyquist:
        raise ValueError(f"kaiser_lowpass: cutoff must lie in (0, fs/2 = {nyquist}), got {cutoff}")
    band = cutoff / nyquist
    taps = np.arange(numtaps) - (numtaps - 1) / 2
    window = np.kaiser(numtaps, kaiser_beta(kaiser_attenuation(numtaps, width / nyquist)))
    h = band * np.sinc(band * taps) * window
    return h / np.sum(h)


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
        return kaiser_lowpass(numtaps, cutoff, width, fs).astype(np.float32)

    # Radial: the 2-D ideal low-pass response is a jinc, J1(2 pi f_c r) / (pi r).
    t = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(t, t))
    f = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    window = np.kaiser(numtaps, kaiser_beta(kaiser_attenuation(numtaps, width / (fs / 2))))
    f = f * np.outer(window, window)
    f = f / np.sum(f)
    return f.astype(np.float32)
