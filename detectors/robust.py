"""The default univariate detector: a robust seasonal baseline with self-calibrated evidence.

Expected value = level + seasonal offset (additive Holt-Winters-like, Huber-clipped updates so
outliers barely move it). The period is a parameter or found once from the first three cycles
(checked at 48, 72, 96, 144, ... points, so a short cycle is learned in minutes, not weeks) and
re-fitted once at six, to a tenth of a point (a cycle need not be a whole number of points).
Evidence, each a z-score mapped through `calibrate.z_to_score`: the point's residual (two
wide ones in a row count more than one: heavy tails), short and slower averages of clipped
residuals (level shifts, small shifts), the rate of wide residuals (spread bursts, corrected
for clustered residuals), the gap between the level and a slow level (slow drifts) and a run
of identical values (a stuck sensor). Each is scaled by its own running spread, so
autocorrelated series calibrate themselves. Anomalous points are not learned
(river's AnomalyFilter idea) until `adapt_after` of them in a row: that is a new normal, and
the detector re-baselines on the recent points; a flagged drift re-baselines at once.
The per-point arithmetic is compiled (`robust_core`); the object keeps the rare steps.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping

import numpy as np

from detectors import robust_core as core
from detectors.base import Band, pack_arrays, unpack_arrays
from detectors.calibrate import score_to_z
from detectors.robust_core import REFINE_CYCLES


def find_period(values: array, max_period: int, step: float = math.inf) -> int:
    """The dominant cycle length in whole points (0 if none is clear).

    Needs three cycles. With timestamps, calendar cycles
    (hour, day, week) are tried first at their exact lag. Otherwise a candidate is an
    autocorrelation peak well above the trough half a cycle earlier and strong again at each
    multiple the buffer holds (a burst or a trend is not a cycle); the shortest strong one
    wins. Its length is then the whole number of points near it whose multiples line up
    best: an error of one point slides the profile a slot every cycle."""
    x = np.array(values, dtype=np.float64)
    n = len(x)
    if n <= core.DIRECT_ACF_MAX:  # each lag when read: the lags a search reads cost less
        return core.period_direct(x, max_period, step)
    hi, var = core.search_ready(x, max_period)
    if not hi:
        return 0
    f = np.fft.rfft(x, 2 * n)  # every lag at once
    acf = np.fft.irfft(f * np.conj(f))[:n] / (var * (n - np.arange(n)))  # unbiased
    return core.choose_period(x, acf, var, hi, max_period, step)


def refine_period(values: array, period: int) -> float:
    """The cycle length near `period` that best fits more cycles: first the whole length
    within 3 points (each further cycle in the buffer multiplies the misfit of a wrong one),
    then a fraction of a point if one fits clearly better (`robust_core.fractional_cycle`)."""
    x = _prepared(values)
    whole = core.best_length(x, period, max(4, period - 3), min(period + 3, len(x) // 2 - 1))
    return core.fractional_cycle(x, whole or period)


def _prepared(values: array | np.ndarray) -> np.ndarray:
    return core.prepared(np.array(values, dtype=np.float64))


class RobustDetector:
    """Robust seasonal detector; see the module docstring. The per-point arithmetic is
    `robust_core` on the state vector `st_`; learned state ends in `_`."""

    name = "robust"
    version = "3.3"

    def __init__(
        self,
        period: int | None = None,
        max_period: int = 288,
        alpha: float = 0.05,
        threshold: float = 0.9,
        suspect: float = 0.6,
        warmup: int = 10,
        adapt_after: int = 20,
        rel_floor: float = 0.001,
        window: int = 16,
    ) -> None:
        if period is not None and (period < 0 or period == 1):
            raise ValueError("period must be None (detect), 0 (none) or >= 2")
        if not 0 < alpha < 0.5:
            raise ValueError("alpha must be in (0, 0.5)")
        if not 0 < threshold < 1:
            raise ValueError("threshold must be in (0, 1)")
        if warmup < 3 or window < 4 or adapt_after < 1:
            raise ValueError("warmup >= 3, window >= 4 and adapt_after >= 1 are required")
        self.period = period
        self.max_period = max_period
        self.threshold = threshold
        self.suspect = min(suspect, threshold)
        st = self.st_ = np.zeros(core.SIZE)
        st[core.ALPHA], st[core.WARMUP], st[core.ADAPT] = alpha, warmup, adapt_after
        st[core.REL_FLOOR], st[core.WINDOW] = rel_floor, window
        st[core.ZSUS], st[core.MAXP] = score_to_z(self.suspect), max_period
        st[core.PERIOD_PARAM] = -1 if period is None else period
        self.rec_ = np.zeros(window)  # ring of the last `window` deseasonalised values
        self._reset(0)
        # the first points are kept to find the period (or fill a given one's profile), as
        # float32 offsets from the first value: half the memory of doubles, no detail lost
        st[core.BUF0] = math.nan
        st[core.NBUF] = 0 if period != 0 else -1
        self.buf_ = np.zeros(64 if period != 0 else 0, np.float32)
        st[core.NMORE] = -1  # after a cycle is found: more of them, to refine it
        self.more_ = np.zeros(0, np.float32)

    def __getstate__(self) -> dict[str, object]:
        return pack_arrays(self.__dict__)

    def __setstate__(self, state: dict[str, object]) -> None:
        state = unpack_arrays(state)
        if "st_" not in state:
            raise ValueError("a RobustDetector saved by an older release (no state vector)")
        self.__dict__.update(state)

    def _reset(self, period: int, ratio: float = 1.0) -> None:
        core.reset(self.st_, period, ratio)
        self.season_ = np.zeros(period)

    @property
    def period_(self) -> int:
        """The cycle length in points in use (0: none found yet, or none)."""
        return int(self.st_[core.PERIOD])

    # -- contract -----------------------------------------------------------------------------
    def score_one(self, x: Mapping[str, float]) -> float:
        return core.score(self.st_, self.season_, x["y"], x.get("t", math.nan))

    def band(self) -> Band:
        return Band(*core.band(self.st_, self.season_))

    def learn_one(self, x: Mapping[str, float]) -> None:
        y = x["y"]
        if y != y or math.isinf(y):
            return
        t = x.get("t", math.nan)
        if core.needs_python(self.st_, self.buf_, y, t) == core.PY_GROW:
            self.grow()
        self.after_learn(self._learn_point(y, t, False), y, t)

    def after_learn(self, status: int, y: float, t: float, found: int = -1) -> None:
        """The rare steps learning y at t asked for (`robust_core.learn_point`'s status): the
        period search, then the point learned with what it found; the re-fit. The compiled
        batch path calls this too, with the cycle its search `found` (-1: not searched)."""
        st = self.st_
        if status == core.LEARN_SEARCH:
            self._try_period(found)
            if st[core.NBUF] >= 3 * self.max_period:
                self._stop_buffering()  # no cycle found: stop looking
            if self.period_:
                if t == t:
                    st[core.LAST_T] = t
                return  # the buffer (this point included) was replayed
            status = self._learn_point(y, t, True)
        if status == core.LEARN_REFINE:
            self._refine()
        elif st[core.NMORE] < 0 and self.more_.size:
            self.more_ = np.zeros(0, np.float32)  # a gap ended the re-fit buffer

    def _learn_point(self, y: float, t: float, searched: bool) -> int:
        return core.learn_point(self.st_, self.season_, self.rec_, self.buf_, self.more_,
                                y, t, searched)  # fmt: skip

    def grow(self) -> None:
        """Room for more points in the search buffer (doubling, up to what a search needs)."""
        cap = max(3 * self.max_period, 2 * (self.period or 0))
        buf = np.zeros(min(cap, 2 * len(self.buf_)), np.float32)
        buf[: len(self.buf_)] = self.buf_
        self.buf_ = buf

    def _stop_buffering(self) -> None:
        self.st_[core.NBUF] = -1
        self.buf_ = np.zeros(0, np.float32)

    def _buffered(self, offsets: np.ndarray) -> np.ndarray:
        """A buffer's values, as doubles."""
        return core.buffered(offsets, self.st_[core.BUF0])

    def _try_period(self, found: int = -1) -> None:
        st = self.st_
        buf = self._buffered(self.buf_[: int(st[core.NBUF])])
        if found < 0:
            found = self.period or find_period(buf, self.max_period, st[core.STEP])
        # sampling intervals divide real cycles (a day is 288 five-minute points): snap to one
        cycle = float(found)
        if not cycle:
            return
        last_t, step = st[core.LAST_T], st[core.STEP]
        self._stop_buffering()
        slots = int(round(cycle))
        self._reset(slots, slots / cycle)
        # the profile from whole cycles, then replay the buffer through the seasonal model
        st[core.SEEN] = core.fit_profile(buf, cycle, self.season_, st[core.RATIO])
        core.learn_many(st, self.season_, self.rec_, buf)
        st[core.LAST_T], st[core.STEP] = last_t, step
        calendar = any(abs(c / step - slots) < 0.01 for c in (86_400.0, 3_600.0, 604_800.0))
        if not self.period and not calendar and REFINE_CYCLES * slots <= 3 * self.max_period:
            # three cycles pin a length down to a point or two; six do better
            self.more_ = np.zeros(max(REFINE_CYCLES * slots, len(buf) + 1), np.float32)
            self.more_[: len(buf)] = buf - st[core.BUF0]
            st[core.NMORE] = len(buf)

    def _refine(self) -> None:
        """Re-fit the cycle length on six cycles; if it changes, rebuild the profile at the
        new length from the buffer's whole cycles (slot medians). A fractional cycle of c
        points keeps round(c) slots and moves round(c) / c slots a point."""
        st = self.st_
        buf = self._buffered(self.more_[: int(st[core.NMORE])])
        st[core.NMORE] = -1
        self.more_ = np.zeros(0, np.float32)
        period = self.period_
        cycle = refine_period(buf, period)
        if cycle == period:
            return
        self.season_ = core.median_profile(buf, cycle)  # round(cycle) slots
        size = len(self.season_)
        ratio = size / cycle
        st[core.PERIOD], st[core.RATIO], st[core.POS] = size, ratio, float(len(buf) * ratio % size)

    def rebaseline(self, last: int | None = None) -> None:
        """Take the `last` recent points (default: all kept) as the new normal."""
        core.rebaseline(self.st_, self.rec_, last or 0)
