"""Score calibration: every detector maps its statistic to [0, 1] through these functions,
so a threshold of 0.9 means "about a 5-sigma event" on every series and every detector."""

from __future__ import annotations

import math

Z_AT_THRESHOLD = 5.0  # the z-score that maps to score 0.9
_K = math.log(10) / (Z_AT_THRESHOLD - 1.0) ** 2


def z_to_score(z: float) -> float:
    """Monotone map of |z| to [0, 1): 0 up to z = 1, 0.9 at Z_AT_THRESHOLD, 0.99 near 6.7."""
    if z != z:  # NaN: no evidence either way
        return 0.0
    d = abs(z) - 1.0
    if d <= 0.0:
        return 0.0
    return 1.0 - math.exp(-_K * d * d)


def score_to_z(score: float) -> float:
    """The inverse of `z_to_score`: the |z| a score in (0, 1) stands for (a threshold as z)."""
    return 1.0 + math.sqrt(-math.log(1.0 - score) / _K)


def tail_to_z(log_p: float) -> float:
    """A probability (as its natural log, <= 0) → the |z| of a Gaussian tail that unlikely."""
    return math.sqrt(max(0.0, -2.0 * log_p))
