"""The default univariate detector (first version): a robust exponentially weighted baseline.

Level: river's EWMean; scale: an EW mean of absolute deviations (a streaming MAD), floored so
flat series do not explode. The score maps the robust z-score to [0, 1]. Points scoring above
the threshold are learned with a small weight (river's AnomalyFilter idea: anomalies do not
poison the baseline) until `adapt_after` in a row, which means a new normal: then it adapts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from river import stats

from detectors.base import Band

Z_AT_THRESHOLD = 5.0  # the z-score that maps to score 0.9


def z_to_score(z: float) -> float:
    """Monotone map of |z| to [0, 1) with score(Z_AT_THRESHOLD) = 0.9."""
    k = math.log(10) / (Z_AT_THRESHOLD - 1.0) ** 2
    return 1.0 - math.exp(-k * max(0.0, z - 1.0) ** 2)


class RobustDetector:
    name = "robust"
    version = "1"

    def __init__(
        self,
        alpha: float = 0.1,
        warmup: int = 12,
        threshold: float = 0.9,
        adapt_after: int = 30,
        rel_floor: float = 0.01,
    ) -> None:
        if not 0 < alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        if warmup < 2:
            raise ValueError("warmup must be at least 2")
        self.alpha = alpha
        self.warmup = warmup
        self.threshold = threshold
        self.adapt_after = adapt_after
        self.rel_floor = rel_floor
        self.level_ = stats.EWMean(fading_factor=alpha)
        self.dev_ = stats.EWMean(fading_factor=alpha)
        self.n_ = 0
        self.run_ = 0  # consecutive anomalous points learned

    def _scale(self) -> float:
        mean = self.level_.get()
        return max(1.4826 * self.dev_.get(), self.rel_floor * abs(mean), 1e-9)

    def score_one(self, x: Mapping[str, float]) -> float:
        if self.n_ < self.warmup:
            return 0.0
        z = abs(x["y"] - self.level_.get()) / self._scale()
        return z_to_score(z)

    def band(self) -> Band:
        mean = self.level_.get()
        w = Z_AT_THRESHOLD * self._scale() if self.n_ >= self.warmup else float("inf")
        return Band(mean, mean - w, mean + w)

    def learn_one(self, x: Mapping[str, float]) -> None:
        y = x["y"]
        anomalous = self.score_one(x) >= self.threshold
        self.run_ = self.run_ + 1 if anomalous else 0
        self.n_ += 1
        if anomalous and self.run_ < self.adapt_after:
            # Learn nothing from an anomaly (it must not poison the baseline) until it has
            # lasted `adapt_after` points: then it is the new normal and is learned in full.
            return
        dev = abs(y - self.level_.get()) if self.n_ > 1 else 0.0
        self.level_.update(y)
        self.dev_.update(dev)
