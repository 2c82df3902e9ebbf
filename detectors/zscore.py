"""The baseline: a rolling z-score over the last `window` points (mean and standard deviation).

Kept as the yardstick the default detector must beat, and as a simple choice for series
where nothing else fits. `z_at` is the |z| that scores exactly the threshold (0.9).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping

from detectors.base import Band
from detectors.calibrate import Z_AT_THRESHOLD, z_to_score


class RollingZScore:
    name = "zscore"
    version = "1"

    def __init__(self, window: int = 50, z_at: float = 4.0, threshold: float = 0.9) -> None:
        if window < 3:
            raise ValueError("window must be at least 3")
        if z_at <= 1:
            raise ValueError("z_at must be above 1")
        self.window = window
        self.z_at = z_at
        self.threshold = threshold
        self.values_ = array("d")
        self.sum_ = 0.0
        self.sq_ = 0.0

    def _stats(self) -> tuple[float, float]:
        n = len(self.values_)
        mean = self.sum_ / n
        var = max(0.0, self.sq_ / n - mean * mean) * n / (n - 1)
        return mean, max(math.sqrt(var), 1e-9 * max(1.0, abs(mean)))

    def score_one(self, x: Mapping[str, float]) -> float:
        y = x["y"]
        if len(self.values_) < min(self.window, 10) or y != y:
            return 0.0
        mean, sd = self._stats()
        return z_to_score(abs(y - mean) / sd * Z_AT_THRESHOLD / self.z_at)

    def band(self) -> Band:
        if len(self.values_) < min(self.window, 10):
            return Band(math.nan, -math.inf, math.inf)
        mean, sd = self._stats()
        return Band(mean, mean - self.z_at * sd, mean + self.z_at * sd)

    def learn_one(self, x: Mapping[str, float]) -> None:
        y = x["y"]
        if y != y or math.isinf(y):
            return
        self.values_.append(y)
        self.sum_ += y
        self.sq_ += y * y
        if len(self.values_) > self.window:
            old = self.values_.pop(0)
            self.sum_ -= old
            self.sq_ -= old * old
