"""Everything one series needs around its detector, in one picklable object.

`SeriesModel.update(x)` scores a point before learning it and returns a `Verdict`: the
active detector's score, or a median/MAD fallback while the detector warms up or if it
raises (the verdict says `fallback=True`: never a silent gap); a drift event, recorded once
per change, after which the detector re-baselines instead of flagging the new normal
forever; and an optional shadow detector's score, returned but never thresholded. Feedback
labels change what is flagged from then on. The same object runs in the stream and in
`stormwatch replay`; factories must pickle (e.g. `functools.partial(make_detector, name)`).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Mapping
from typing import Literal, NamedTuple

from river import drift

from detectors import DetectorsError
from detectors.base import Band, Detector
from detectors.calibrate import Z_AT_THRESHOLD, z_to_score

Label = Literal["anomaly", "not_anomaly", "expected", "new_normal"]
LABELS: tuple[str, ...] = ("anomaly", "not_anomaly", "expected", "new_normal")


class DriftEvent(NamedTuple):
    kind: str  # "level" or "variance"
    before_mean: float
    after_mean: float
    before_std: float
    after_std: float
    explanation: str


class Verdict(NamedTuple):
    score: float  # what thresholds and episodes use (after feedback)
    band: Band
    is_anomaly: bool
    drift: DriftEvent | None
    fallback: bool  # the median/MAD rule decided, not the detector
    shadow_score: float | None  # never thresholded
    raw_score: float  # the deciding model's score before feedback


def median_mad_band(values: array, z: float = Z_AT_THRESHOLD) -> tuple[float, float]:
    """(median, scale) of recent values; the scale is 1.4826 MAD, floored for flat series."""
    srt = sorted(values)
    med = srt[len(srt) // 2]
    mad = sorted(abs(v - med) for v in srt)[len(srt) // 2]
    return med, max(1.4826 * mad, 0.001 * abs(med), 1e-9)


class SeriesModel:
    """Active detector + drift + fallback + shadow + feedback for one series."""

    def __init__(
        self,
        make: Callable[[], Detector],
        *,
        threshold: float = 0.9,
        shadow: Callable[[], Detector] | None = None,
        window: int = 32,
        cooldown: int = 60,
        settle: int = 8,
    ) -> None:
        if not 0 < threshold < 1:
            raise DetectorsError("threshold must be in (0, 1)")
        if window < 5:
            raise DetectorsError("window must be at least 5")
        self.make = make
        self.threshold = threshold
        self.window = window
        self.cooldown = cooldown
        self.settle = settle
        self.detector_ = make()
        self.shadow_ = shadow() if shadow is not None else None
        self.recent_ = array("d")  # last `window` raw values: fallback and drift "after"
        self.mean_ = math.nan  # slow EW mean / variance of values: drift "before"
        self.var_ = 0.0
        self.level_ph_ = drift.PageHinkley(min_instances=20, threshold=40.0)
        self.spread_ph_ = drift.PageHinkley(min_instances=20, threshold=40.0, mode="up")
        self.since_drift_ = cooldown
        self.pending_ = ""  # a drift seen, confirmed `settle` points later with "after" stats
        self.pending_n_ = 0
        self.flag_run_ = 0  # flagged points in a row (the candidate new normal)
        self.tolerance_ = 0.0  # deviations (in half-band widths) feedback declared normal
        self.last_flag_ = 0.0  # deviation of the last flagged point, for feedback
        self.errors_ = 0

    @property
    def name(self) -> str:
        return self.detector_.name

    @property
    def version(self) -> str:
        return self.detector_.version

    # -- scoring ------------------------------------------------------------------------------
    def _fallback(self, y: float) -> tuple[float, Band]:
        n = len(self.recent_)
        if n < 8:
            return 0.0, Band(math.nan, -math.inf, math.inf)  # nothing to expect yet
        med, scale = median_mad_band(self.recent_)
        # A MAD from a few points is itself uncertain: widen the band for small samples
        # (x1.9 at 8 points, x1.3 at 32) so a cold start does not cry wolf.
        scale *= math.sqrt(1.0 + 20.0 / n)
        w = Z_AT_THRESHOLD * scale
        return z_to_score((y - med) / scale), Band(med, med - w, med + w)

    def update(self, x: Mapping[str, float]) -> Verdict:
        """Score `x` with what was learned before it, then learn it."""
        y = x["y"]
        fallback = False
        try:
            score = self.detector_.score_one(x)
            band = self.detector_.band()
            if not math.isfinite(band.lower) or not math.isfinite(band.upper):
                fallback = True  # warming up: the robust rule stands in
        except Exception:  # noqa: BLE001 (any model failure must fall back, not stop the series)
            self.errors_ += 1
            fallback = True
            self.detector_ = self.make()
        if fallback:
            score, band = self._fallback(y)
        shadow = None
        if self.shadow_ is not None:
            try:
                shadow = self.shadow_.score_one(x)
                self.shadow_.learn_one(x)
            except Exception:  # noqa: BLE001 (a shadow must never hurt the active path)
                shadow = None
        half = (band.upper - band.expected) if math.isfinite(band.upper) else math.inf
        dev = abs(y - band.expected) / half if half > 0 else 0.0
        raw = score
        if raw >= self.threshold and dev <= self.tolerance_:
            score = min(raw, self.threshold - 0.01)  # a pattern labelled normal: never alerts
        flagged = score >= self.threshold
        self.flag_run_ = self.flag_run_ + 1 if raw >= self.threshold else 0
        if flagged:
            self.last_flag_ = max(self.last_flag_, dev) if self.last_flag_ else dev
        event = self._learn(x, y, band, fallback, quiet=raw < 0.6)
        return Verdict(score, band, flagged, event, fallback, shadow, raw)

    def _learn(
        self, x: Mapping[str, float], y: float, band: Band, fallback: bool, *, quiet: bool
    ) -> DriftEvent | None:
        try:
            self.detector_.learn_one(x)
        except Exception:  # noqa: BLE001
            self.errors_ += 1
            self.detector_ = self.make()
        if y != y:
            return None
        rec = self.recent_
        rec.append(y)
        if len(rec) > self.window:
            del rec[0]
        self.since_drift_ += 1
        event = None
        if not fallback and math.isfinite(band.upper) and band.upper > band.expected:
            z = (y - band.expected) / ((band.upper - band.expected) / Z_AT_THRESHOLD)
            z = max(-10.0, min(10.0, z))
            self.level_ph_.update(z)
            self.spread_ph_.update(abs(z))
            hit = "level" if self.level_ph_.drift_detected else None
            hit = hit or ("variance" if self.spread_ph_.drift_detected else None)
            if hit and not self.pending_ and self.since_drift_ >= self.cooldown:
                self.pending_, self.pending_n_ = hit, 0
        if self.pending_:
            self.pending_n_ += 1
            if self.pending_n_ >= self.settle:
                event = self._drift(self.pending_)
                self.pending_ = ""
            return event
        if quiet:  # the "before" statistics learn only from unremarkable points
            if self.mean_ != self.mean_:
                self.mean_ = y
            d = y - self.mean_
            self.mean_ += 0.02 * d
            self.var_ = 0.98 * (self.var_ + 0.02 * d * d)
        return event

    def _drift(self, kind: str) -> DriftEvent:
        tail = self.recent_[-self.settle :]
        after_mean = sum(tail) / len(tail)
        after_std = math.sqrt(sum((v - after_mean) ** 2 for v in tail) / len(tail))
        before_std = math.sqrt(self.var_)
        ev = DriftEvent(
            kind, self.mean_, after_mean, before_std, after_std,
            f"{kind} shift: mean {self.mean_:.4g} -> {after_mean:.4g}, "
            f"std {before_std:.4g} -> {after_std:.4g}; the detector re-baselined",
        )  # fmt: skip
        self.mean_, self.var_ = after_mean, after_std**2
        self.since_drift_ = 0
        if self.flag_run_ >= self.settle:
            # still alarming once settled: the new normal. A change the detector already
            # follows (no alarm now) is left to it: re-basing mid-drift would hide the drift.
            self._rebaseline(self.settle)
        else:
            self._reset_ph()
        return ev

    def _rebaseline(self, last: int) -> None:
        det = self.detector_
        reb = getattr(det, "rebaseline", None)
        if callable(reb):
            reb(last)
        else:  # a detector that cannot re-baseline starts afresh; the fallback covers it
            self.detector_ = self.make()
        self._reset_ph()

    def _reset_ph(self) -> None:
        self.level_ph_ = drift.PageHinkley(min_instances=20, threshold=40.0)
        self.spread_ph_ = drift.PageHinkley(min_instances=20, threshold=40.0, mode="up")

    # -- feedback -----------------------------------------------------------------------------
    def apply_feedback(self, label: str) -> None:
        """Change what is flagged. not_anomaly / expected: deviations as large as the last
        flagged one stop alerting; anomaly: undo that; new_normal: re-baseline now."""
        if label not in LABELS:
            raise DetectorsError(f"unknown label {label!r}; use one of {', '.join(LABELS)}")
        if label in ("not_anomaly", "expected"):
            self.tolerance_ = max(self.tolerance_, self.last_flag_ * 1.1)
        elif label == "anomaly":
            self.tolerance_ = 0.0
        else:
            self._rebaseline(max(3, self.flag_run_))
            self.since_drift_ = 0
        self.last_flag_ = 0.0
