"""The default univariate detector: a robust seasonal baseline with self-calibrated evidence.

Expected value = level + seasonal offset (additive Holt-Winters-like, Huber-clipped updates so
outliers barely move it). The period is a parameter or found once from the first points by
autocorrelation (checked at 64, 128, 256, ... points, so a short cycle is learned in minutes,
not weeks). Four pieces of evidence, each a z-score mapped through `calibrate.z_to_score`:
the point's residual, a short EWMA of residuals (small level shifts), the gap between a fast
and a slow level (slow drifts) and a run of identical values (a stuck sensor). Each is scaled
by its own running mean absolute value, so autocorrelated series calibrate themselves.
Anomalous points are not learned (river's AnomalyFilter idea) until `adapt_after` of them in a
row: that is a new normal, and the detector re-baselines on the recent points.
Plain floats and `array` only: about 4 µs per point and 3 KB of state.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping

import numpy as np

from detectors.base import Band
from detectors.calibrate import Z_AT_THRESHOLD, tail_to_z, z_to_score

SQRT_HALF_PI = 1.2533  # mean absolute deviation → standard deviation for Gaussian noise
GAUSS_TAIL3 = 0.0027  # P(|z| > 3) for Gaussian noise
DETECT_AT = (
    64,
    96,
    128,
    192,
    256,
    384,
    512,
    768,
    1024,
)  # points at which an unknown period is looked for


def find_period(values: array, max_period: int, step: float = math.inf) -> float:
    """The dominant cycle length in points, possibly fractional (0 if none is clear).

    Needs three cycles. With timestamps, calendar cycles (hour, day, week) are
    tried first at their exact lag. Otherwise a candidate must be an autocorrelation peak
    well above the trough half a cycle earlier; the shortest strong one wins, and its length
    is refined in the spectrum (a cycle off by a fraction of a point slides the profile a
    slot every few cycles)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    hi = min(max_period, n // 3)
    if hi < 4:
        return 0.0
    idx = np.arange(n)
    x = x - np.polyval(np.polyfit(idx, x, 1), idx)  # a trend is not a cycle
    med = float(np.median(x))
    lim = 5 * 1.4826 * float(np.median(np.abs(x - med))) + 1e-12
    x = np.clip(x, med - lim, med + lim)  # nor is a burst of outliers
    var = float(x @ x) / n
    if var <= 0:
        return 0.0
    f = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n] / (var * (n - np.arange(n)))  # unbiased

    def strong(p: int) -> bool:
        return bool(acf[p] > 0.3 and acf[p] - acf[p // 2] > 0.6)

    if math.isfinite(step) and step > 0:
        lags = [c / step for c in (86_400.0, 3_600.0, 604_800.0)]
        ok = [round(q) for q in lags if abs(q - round(q)) < 0.01 and 4 <= q <= hi]
        ok = [q for q in ok if strong(q)]
        if ok:
            return float(max(ok, key=lambda q: acf[q]))
    peaks = [p for p in range(4, hi + 1) if acf[p] > acf[p - 1] and acf[p] >= acf[p + 1]]
    peaks = [p for p in peaks if strong(p)]
    if not peaks:
        return 0.0
    best = max(acf[p] for p in peaks)
    p0 = next(p for p in peaks if acf[p] >= 0.85 * best)
    # refine: the fundamental's frequency in a finely zero-padded, windowed spectrum
    nfft = 16 * n
    spec = np.abs(np.fft.rfft(x * np.hanning(n), nfft)) ** 2
    lo, up = int(nfft / (p0 * 1.15)), int(nfft / (p0 * 0.85)) + 1
    k = lo + int(np.argmax(spec[lo:up]))
    if not lo < k < up - 1:
        return float(p0)
    a, b, c = np.log(spec[k - 1 : k + 2] + 1e-300)
    den = a - 2 * b + c
    kf = k + (0.5 * (a - c) / den if den < 0 else 0.0)
    return float(nfft / kf)


class RobustDetector:
    """Robust seasonal detector; see the module docstring. Learned state ends in `_`."""

    name = "robust"
    version = "2"

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
        self.alpha = alpha
        self.threshold = threshold
        self.suspect = min(suspect, threshold)
        self.warmup = warmup
        self.adapt_after = adapt_after
        self.rel_floor = rel_floor
        self.window = window
        self._reset(0)
        # the first points are kept to find the period (or fill a given one's profile)
        self.buf_: array | None = array("d") if period != 0 else None

    def _reset(self, period: int, ratio: float = 1.0) -> None:
        self.n_ = 0
        self.level_ = 0.0
        self.slow_ = 0.0
        self.dev_ = 0.0  # EW mean |residual|
        self.short_ = 0.0  # EW mean of residual / scale
        self.short_dev_ = 0.0  # EW mean |short_|
        self.drift_dev_ = 0.0  # EW mean |level_ - slow_| / scale
        self.period_ = period
        self.season_ = array("d", bytes(8 * period))
        self.seen_ = 0  # points seen per phase, for a fast first fill of the profile
        self.ratio_ = ratio  # slots per point: a cycle of 95.6 points fills 96 slots
        self.pos_ = 0.0  # position of the next point in the cycle, in slots
        self.recent_ = array("d")  # last `window` deseasonalised values
        self.run_ = 0  # anomalous points in a row
        self.last_y_ = math.nan
        self.tail_ = GAUSS_TAIL3  # EW rate of |residual| > 3 scales: heavy tails widen the band
        self.same_ = 0  # identical values in a row
        self.same_rate_ = 0.5
        self.jump_ = 0.0  # EW mean size of a change between consecutive distinct values
        self.last_t_ = math.nan
        self.step_ = math.inf

    # -- helpers ------------------------------------------------------------------------------
    def _phase_of(self, t: float) -> float:
        """The cycle position of a point at time t, skipping the slots of missing points."""
        if not self.period_:
            return 0.0
        dt = t - self.last_t_
        skip = 0
        if dt > 1.5 * self.step_ and math.isfinite(self.step_):
            skip = min(int(round(dt / self.step_)) - 1, 10 * self.period_)
        return (self.pos_ + skip * self.ratio_) % self.period_

    def _scale(self) -> float:
        # half a typical step: a sparse series (mostly 0, now and then one error) moves in
        # steps, and one ordinary step is not an anomaly however small its usual noise
        return max(
            SQRT_HALF_PI * self.dev_, 0.5 * self.jump_, self.rel_floor * abs(self.level_), 1e-9
        )

    def _tail_factor(self) -> float:
        """How much heavier than Gaussian the residual tails are (1 to 2)."""
        return min(2.0, max(1.0, (self.tail_ / GAUSS_TAIL3) ** 0.2))

    def _expected(self, phase: int) -> float:
        return self.level_ + (self.season_[phase] if self.period_ else 0.0)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state.pop("_cache", None)  # a speed-up, not state
        return state

    def _evidence(self, y: float, t: float) -> tuple[float, float, float, float, float]:
        """(z point, z shift, z drift, z stuck, short) for y at t, without learning it.

        The stream scores then learns the same point: the second call reuses the first."""
        key = (y, t, self.n_)
        cache = self.__dict__.get("_cache")
        if cache is not None and cache[0] == key:
            return cache[1]
        ev = self._compute(y, t)
        self.__dict__["_cache"] = (key, ev)
        return ev

    def _compute(self, y: float, t: float) -> tuple[float, float, float, float, float]:
        s = self._scale()
        phase = int(self._phase_of(t))
        r = (y - self._expected(phase)) / s
        z_point = abs(r) / self._tail_factor()
        a = 0.25
        short = (1 - a) * self.short_ + a * max(-4.0, min(4.0, r))  # one point: a nudge
        z_shift = abs(short) / max(SQRT_HALF_PI * self.short_dev_, 0.3)
        z_drift = abs(self.level_ - self.slow_) / s / max(SQRT_HALF_PI * self.drift_dev_, 0.5)
        z_stuck = 0.0
        if y == self.last_y_ and self.dev_ > 0:
            run = self.same_ + 1
            if run >= 5:
                z_stuck = tail_to_z(run * math.log(max(self.same_rate_, 1e-4)))
        return z_point, z_shift, z_drift, z_stuck, short

    # -- contract -----------------------------------------------------------------------------
    def score_one(self, x: Mapping[str, float]) -> float:
        y = x["y"]
        if self.n_ < self.warmup or y != y:
            return 0.0
        zp, zs, zd, zk, _ = self._evidence(y, x.get("t", math.nan))
        return z_to_score(max(zp, zs, zd, zk))

    def band(self) -> Band:
        if self.n_ < self.warmup:
            return Band(self.level_, -math.inf, math.inf)
        e = self._expected(int(self.pos_))
        w = Z_AT_THRESHOLD * self._scale() * self._tail_factor()
        return Band(e, e - w, e + w)

    def learn_one(self, x: Mapping[str, float]) -> None:
        y = x["y"]
        if y != y or math.isinf(y):
            return
        t = x.get("t", math.nan)
        if self.buf_ is not None:
            self.buf_.append(y)
            n = len(self.buf_)
            if (self.period and n == 2 * self.period) or (
                not self.period and (n in DETECT_AT or n >= 3 * self.max_period)
            ):
                self._try_period()
                if self.buf_ is not None and len(self.buf_) >= 3 * self.max_period:
                    self.buf_ = None  # no cycle found: stop looking
                if self.period_:
                    if t == t:
                        self.last_t_ = t
                    return  # the buffer (this point included) was replayed
        self._learn(y, t)

    def _try_period(self) -> None:
        buf = self.buf_
        assert buf is not None  # noqa: S101 (only called while buffering)
        # sampling intervals divide real cycles (a day is 288 five-minute points): snap to one
        cycle = float(self.period or round(find_period(buf, self.max_period, self.step_)))
        if not cycle:
            return
        last_t, step = self.last_t_, self.step_
        self.buf_ = None
        slots = int(round(cycle))
        self._reset(slots, slots / cycle)
        # the profile from whole cycles, then replay the buffer through the seasonal model
        first = len(buf) - int(len(buf) // cycle * cycle)
        sums, counts = [0.0] * slots, [0] * slots
        for i in range(first, len(buf)):
            k = int((i * self.ratio_) % slots)
            sums[k] += buf[i]
            counts[k] += 1
        mean = sum(buf[first:]) / (len(buf) - first)
        for k in range(slots):
            self.season_[k] = sums[k] / counts[k] - mean if counts[k] else 0.0
        self.seen_ = len(buf) - first
        for v in buf:
            self._learn(v, math.nan)
        self.last_t_, self.step_ = last_t, step

    def _learn(self, y: float, t: float) -> None:
        n = self.n_
        if n == 0:
            self.level_ = self.slow_ = y - (self.season_[0] if self.period_ else 0.0)
        pos = self._phase_of(t)
        phase = int(pos)
        if t == t:
            dt = t - self.last_t_
            if dt > 0:
                self.step_ = min(self.step_, dt)
            self.last_t_ = t
        anomalous = False
        if n >= self.warmup:
            zp, zs, zd, zk, short = self._evidence(y, t)
            anomalous = z_to_score(max(zp, zs, zd, zk)) >= self.suspect
        else:
            short = 0.0
        # identical-values statistics (a stuck sensor)
        same = y == self.last_y_
        self.same_ = self.same_ + 1 if same else 0
        if not anomalous:
            self.same_rate_ += 0.01 * ((1.0 if same else 0.0) - self.same_rate_)
            if not same and self.last_y_ == self.last_y_:
                step = abs(y - self.last_y_)
                self.jump_ += (0.02 if self.jump_ else 1.0) * (step - self.jump_)
        self.last_y_ = y
        season = self.season_[phase] if self.period_ else 0.0
        desea = y - season
        rec = self.recent_
        rec.append(desea)
        if len(rec) > self.window:
            del rec[0]
        self.n_ = n + 1
        if self.period_:
            self.pos_ = (pos + self.ratio_) % self.period_
        if n < self.warmup:
            # warm-up: robust statistics of the recent points stand in
            srt = sorted(rec)
            med = srt[len(srt) // 2]
            self.level_ = self.slow_ = med
            self.dev_ = sum(abs(v - med) for v in srt) / len(srt)
            return
        s = self._scale()
        if anomalous:
            # not learned (it must not poison the baseline) except, clipped, by the noise scale:
            # a lasting variance change then widens the band instead of alerting forever
            self.dev_ += 0.1 * self.alpha * (3.0 * s - self.dev_)
            self.run_ += 1
            if self.run_ >= self.adapt_after:
                self.rebaseline()
            return
        self.run_ = 0
        a = self.alpha
        r = y - self.level_ - season
        c = 3.0 * s
        rc = max(-c, min(c, r))  # Huber: a big residual moves the baseline like a 3-sigma one
        self.level_ += a * rc
        self.slow_ += 0.1 * a * (self.level_ - self.slow_)
        if not same or self.same_rate_ > 0.2:  # a repeated value says nothing of the noise
            self.dev_ += 0.5 * a * (min(abs(r), 4.0 * s) - self.dev_)
        self.tail_ += 0.2 * a * ((1.0 if abs(r) > 3.0 * s else 0.0) - self.tail_)
        self.short_ = short
        self.short_dev_ += 0.5 * a * (abs(short) - self.short_dev_)
        dd = self.drift_dev_  # clipped, so a slow drift cannot teach it that drifting is normal
        self.drift_dev_ += 0.1 * a * (min(abs(self.level_ - self.slow_) / s, 2 * dd + 0.1) - dd)
        if self.period_:
            g = max(0.1, 1.0 / (1 + self.seen_ // self.period_))
            self.season_[phase] += g * max(-c, min(c, y - self.level_ - season))
            self.seen_ += 1

    def rebaseline(self, last: int | None = None) -> None:
        """Take the `last` recent points (default: all kept) as the new normal."""
        self.__dict__.pop("_cache", None)
        rec = sorted(self.recent_[-max(3, last) :] if last else self.recent_)
        if not rec:
            return
        med = rec[len(rec) // 2]
        mad = sum(abs(v - med) for v in rec) / len(rec)
        self.level_ = self.slow_ = med
        self.dev_ = max(0.5 * self.dev_, mad)
        self.short_ = 0.0
        self.run_ = 0
