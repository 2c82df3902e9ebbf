"""Queue lag forecast: will the lag cross a threshold within the horizon, and when?

A Holt model (EW level and trend, the trend trusted only beyond 3 standard errors) forecasts
`horizon_s` ahead; when the forecast crosses `threshold` while the lag is still below it, a
`PredictedBreach` is emitted once, with the time to breach. It re-arms when the forecast
falls back below the threshold. The trigger for predictive scaling.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from detectors import DetectorsError


class PredictedBreach(NamedTuple):
    ts: float  # when predicted (epoch s)
    time_to_breach_s: float
    current: float
    forecast: float  # at the horizon
    threshold: float
    explanation: str


class LagForecaster:
    name = "holt-lag"
    version = "1"

    def __init__(
        self, threshold: float, *, horizon_s: float = 300.0, alpha: float = 0.3, beta: float = 0.1
    ) -> None:
        if horizon_s <= 0 or not 0 < alpha < 1 or not 0 < beta < 1:
            raise DetectorsError("need horizon_s > 0 and alpha, beta in (0, 1)")
        self.threshold = threshold
        self.horizon_s = horizon_s
        self.alpha = alpha
        self.beta = beta
        self.level_ = math.nan
        self.trend_ = 0.0  # per second
        self.slope_var_ = 0.0  # EW variance of the per-second level changes around the trend
        self.last_t_ = math.nan
        self.armed_ = True

    def forecast(self, ahead_s: float) -> float:
        return self.level_ + self.trend_ * ahead_s

    def update(self, t: float, lag: float) -> PredictedBreach | None:
        """Learn one observation; return a breach prediction when one is first made."""
        if self.level_ != self.level_:
            self.level_, self.last_t_ = lag, t
            return None
        dt = t - self.last_t_
        if dt <= 0:
            return None
        prev = self.level_
        self.level_ = self.alpha * lag + (1 - self.alpha) * (prev + self.trend_ * dt)
        slope = (self.level_ - prev) / dt
        self.slope_var_ += 0.02 * ((slope - self.trend_) ** 2 - self.slope_var_)
        self.trend_ = self.beta * slope + (1 - self.beta) * self.trend_
        self.last_t_ = t
        ahead = self.forecast(self.horizon_s)
        if ahead < self.threshold:
            self.armed_ = True
            return None
        # a trend no bigger than its own noise is not a forecast (3 standard errors)
        stderr = math.sqrt(self.beta / (2 - self.beta) * self.slope_var_)
        if not self.armed_ or lag >= self.threshold or self.trend_ <= 3 * stderr:
            return None
        self.armed_ = False
        ttb = max(0.0, (self.threshold - self.level_) / self.trend_)
        return PredictedBreach(
            t, ttb, lag, ahead, self.threshold,
            f"queue lag {lag:.4g} rising {self.trend_:.3g}/s: forecast {ahead:.4g} in "
            f"{self.horizon_s:.0f}s crosses {self.threshold:.4g} in about {ttb:.0f}s",
        )  # fmt: skip
