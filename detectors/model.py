"""Everything one series needs around its detector, in one picklable object.

`SeriesModel.update(x)` scores a point before learning it and returns a `Verdict`: the
active detector's score, or a median/MAD fallback while the detector warms up or if it
raises (the verdict says `fallback=True`: never a silent gap); a drift event, recorded once
per change, after which the detector re-baselines instead of flagging the new normal
forever; and an optional shadow detector's score, returned but never thresholded. Feedback
labels change what is flagged from then on. The same object runs in the stream and in
`stormwatch replay`; factories must pickle (e.g. `functools.partial(make_detector, name)`).
`update_batch` does the same for one series' batch of points, compiled for the default
detector (`model_core`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Literal, NamedTuple

import numpy as np

from detectors import DetectorsError
from detectors import model_core as core
from detectors import robust_core as rc
from detectors.base import Band, Detector, pack_arrays, unpack_arrays
from detectors.robust import RobustDetector

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
    why: int = 0  # a flagged point's reason code (model_core WHY_*): 0 when not known


class Verdicts(NamedTuple):
    """One batch's verdicts as columns: what `update` says point by point."""

    score: np.ndarray
    band: np.ndarray  # (n, 3): expected, lower, upper
    raw: np.ndarray
    flags: np.ndarray  # core.FLAGGED | core.FALLBACK
    drift: list[tuple[int, DriftEvent]]  # (index, event)
    shadow: list[float | None] | None  # None without a shadow detector


class SeriesModel:
    """Active detector + drift + fallback + shadow + feedback for one series. The model's
    state is `core`'s vector `m_` and the ring `rec_` of the last `window` raw values."""

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
        self.detector_ = make()
        self.shadow_ = shadow() if shadow is not None else None
        m = self.m_ = np.zeros(core.SIZE)
        m[core.THRESH], m[core.WIN], m[core.COOLDOWN], m[core.SETTLE] = (
            threshold, window, cooldown, settle,
        )  # fmt: skip
        m[core.MEAN] = math.nan  # slow EW mean / variance of values: a drift's "before"
        m[core.SINCE_DRIFT] = cooldown
        core.reset_drift_tests(m)
        self.rec_ = np.zeros(window)
        self.errors_ = 0

    def __getstate__(self) -> dict[str, object]:
        return pack_arrays(self.__dict__)

    def __setstate__(self, state: dict[str, object]) -> None:
        state = unpack_arrays(state)
        if "m_" not in state:
            raise DetectorsError("a SeriesModel saved by an older release (no state vector)")
        self.__dict__.update(state)

    @property
    def name(self) -> str:
        return self.detector_.name

    @property
    def version(self) -> str:
        return self.detector_.version

    @property
    def settle(self) -> int:
        return int(self.m_[core.SETTLE])

    # -- scoring ------------------------------------------------------------------------------
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
            score, *b = core.fallback(self.m_, self.rec_, y)
            band = Band(*b)
        shadow = None
        if self.shadow_ is not None:
            try:
                shadow = self.shadow_.score_one(x)
                self.shadow_.learn_one(x)
            except Exception:  # noqa: BLE001 (a shadow must never hurt the active path)
                shadow = None
        raw = score
        score = core.judge(self.m_, y, raw, band.expected, band.upper)
        why = 0
        det = self.detector_
        if score >= self.threshold and isinstance(det, RobustDetector):
            why = core.reason(det.st_, det.season_, y, x.get("t", math.nan), fallback)
        elif score >= self.threshold and fallback:
            why = core.WHY_FALLBACK
        try:
            self.detector_.learn_one(x)
        except Exception:  # noqa: BLE001
            self.errors_ += 1
            self.detector_ = self.make()
        kind = core.learn(self.m_, self.rec_, y, band.expected, band.upper, fallback, raw < 0.6)
        event = self._drift(core.KINDS[kind]) if kind else None
        return Verdict(score, band, score >= self.threshold, event, fallback, shadow, raw, why)

    def update_batch(self, ts: np.ndarray, ys: np.ndarray) -> Verdicts:
        """`update` over one series' points (float64 arrays, time order), as columns."""
        n = len(ys)
        score, band, raw = np.empty(n), np.empty((n, 3)), np.empty(n)
        flags = np.zeros(n, np.int8)
        drift, shadow = self.update_into(ts, ys, 0, n, score, band, raw, flags)
        return Verdicts(score, band, raw, flags, drift, shadow)

    def update_into(
        self, ts: np.ndarray, ys: np.ndarray, j: int, end: int, score: np.ndarray,
        band: np.ndarray, raw: np.ndarray, flags: np.ndarray,
    ) -> tuple[list[tuple[int, DriftEvent]], list[float | None] | None]:  # fmt: skip
        """`update` over ys[j:end], verdicts written at the same indices of the output arrays
        (a message's series share them). With the robust detector and no shadow it runs
        compiled, handing Python only a period search or a drift event to build; the object
        takes a whole point only for the six-cycle re-fit. Returns the drift events (index,
        event) and, with a shadow detector, its scores."""
        drift: list[tuple[int, DriftEvent]] = []
        shadow: list[float | None] | None = None if self.shadow_ is None else []
        while j < end:
            j = self.run_compiled(ts, ys, j, end, score, band, raw, flags, drift)
            if j >= end:
                break
            v = self.update({"y": float(ys[j]), "t": float(ts[j])})
            score[j], band[j], raw[j] = v.score, v.band, v.raw_score
            flags[j] = core.point_flags(v.is_anomaly, v.fallback, v.why)
            if v.drift is not None:
                drift.append((j, v.drift))
            if shadow is not None:
                shadow.append(v.shadow_score)
            j += 1
        return drift, shadow

    def run_compiled(
        self, ts: np.ndarray, ys: np.ndarray, j: int, end: int, score: np.ndarray,
        band: np.ndarray, raw: np.ndarray, flags: np.ndarray,
        drift: list[tuple[int, DriftEvent]],
    ) -> int:  # fmt: skip
        """Score ys[j:end] compiled as far as it goes (`update_into`'s fast part): returns the
        index of the first point the object must take, `end` when all are done; the drift
        events settled on the way are appended to `drift` as (index, event). Only the robust
        detector without a shadow runs compiled; any other model returns j at once."""
        det = self.detector_
        if self.shadow_ is not None or type(det) is not RobustDetector:
            return j
        while True:
            j, what, kind, found = core.run(det.st_, det.season_, det.rec_, det.buf_,
                                            det.more_, self.m_, self.rec_, ts, ys, j, end,
                                            score, band, raw, flags)  # fmt: skip
            if what == core.GROW:
                det.grow()
                continue
            if what == core.SEARCH:  # point j is scored and learned up to its period search
                det.after_learn(rc.LEARN_SEARCH, float(ys[j]), float(ts[j]), found)
            elif what != core.EVENT:
                return j
            if kind:  # point j is done; the event is built (and re-baselines) after its search
                drift.append((j, self._drift(core.KINDS[kind])))
            j += 1

    def _drift(self, kind: str) -> DriftEvent:
        m, settle = self.m_, self.settle
        tail = rc.ring_last(self.rec_, m, core.REC_N, core.REC_HEAD, settle).tolist()
        after_mean = sum(tail) / len(tail)
        after_std = math.sqrt(sum((v - after_mean) ** 2 for v in tail) / len(tail))
        before_mean, before_std = float(m[core.MEAN]), math.sqrt(m[core.VAR])
        # still alarming once settled: the new normal. A change the detector already follows
        # (no alarm now) is left to it: re-basing mid-drift would hide the drift.
        rebase = m[core.FLAG_RUN] >= settle
        ev = DriftEvent(
            kind, before_mean, after_mean, before_std, after_std,
            f"{kind} shift: mean {before_mean:.4g} -> {after_mean:.4g}, "
            f"std {before_std:.4g} -> {after_std:.4g}; "
            + ("the detector re-baselined" if rebase else "the detector follows it already"),
        )  # fmt: skip
        m[core.MEAN], m[core.VAR] = after_mean, after_std**2
        m[core.SINCE_DRIFT] = 0
        if rebase:
            self._rebaseline(settle)
        else:
            core.reset_drift_tests(m)
        return ev

    def _rebaseline(self, last: int) -> None:
        det = self.detector_
        reb = getattr(det, "rebaseline", None)
        if callable(reb):
            reb(last)
        else:  # a detector that cannot re-baseline starts afresh; the fallback covers it
            self.detector_ = self.make()
        core.reset_drift_tests(self.m_)

    # -- feedback -----------------------------------------------------------------------------
    def apply_feedback(self, label: str) -> None:
        """Change what is flagged. not_anomaly / expected: deviations as large as the last
        flagged one stop alerting; anomaly: undo that; new_normal: re-baseline now."""
        if label not in LABELS:
            raise DetectorsError(f"unknown label {label!r}; use one of {', '.join(LABELS)}")
        m = self.m_
        if label in ("not_anomaly", "expected"):
            m[core.TOLERANCE] = max(m[core.TOLERANCE], m[core.LAST_FLAG] * 1.1)
        elif label == "anomaly":
            m[core.TOLERANCE] = 0.0
        else:
            self._rebaseline(max(3, int(m[core.FLAG_RUN])))
            m[core.SINCE_DRIFT] = 0
        m[core.LAST_FLAG] = 0.0


def warm_up(make: Callable[[], SeriesModel]) -> None:
    """Run a made-up series through a model from `make`: numba loads each compiled function
    from its cache on first call (~0.6 s in all), which would otherwise land on the first
    message a worker takes, in its first verdicts' latency. The series has a cycle of a
    fractional length (the period search, the re-fit and its new profile), a level shift
    (flags, drift) and a gap."""
    n = 400
    ts = np.arange(n, dtype=np.float64) * 10.0
    ts[300:] += 200.0
    ys = 10 + np.sin(np.arange(n) * (2 * math.pi / 24.4)) + 0.1 * np.cos(np.arange(n) * 1.3)
    ys[200:260] += 8.0
    make().update_batch(ts, ys)
