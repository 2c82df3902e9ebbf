"""The default univariate detector: a robust seasonal baseline with self-calibrated evidence.

Expected value = level + seasonal offset (additive Holt-Winters-like, Huber-clipped updates so
outliers barely move it). The period is a parameter or found once from the first three cycles
(checked at 48, 72, 96, 144, ... points, so a short cycle is learned in minutes, not weeks) and
re-fitted once at six. Evidence, each a z-score mapped through `calibrate.z_to_score`: the
point's residual (two wide ones in a row count more than one: heavy tails), short and slower
averages of clipped residuals (level shifts, small shifts), the rate of wide residuals (spread
bursts, corrected for clustered residuals), the gap between the level and a slow level (slow
drifts) and a run of identical values (a stuck sensor). Each is scaled by its own running
spread, so autocorrelated series calibrate themselves. Anomalous points are not learned
(river's AnomalyFilter idea) until `adapt_after` of them in a row: that is a new normal, and
the detector re-baselines on the recent points; a flagged drift re-baselines at once.
Plain floats and `array` only: about 8 µs per point and 1.4 KB pickled (docs/detectors.md).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping

import numpy as np

from detectors.base import Band
from detectors.calibrate import Z_AT_THRESHOLD, score_to_z, tail_to_z, z_to_score

SQRT_HALF_PI = 1.2533  # mean absolute deviation → standard deviation for Gaussian noise
GAUSS_TAIL3 = 0.0027  # P(|z| > 3) for Gaussian noise
GAUSS_TAIL2 = 0.0455  # P(|z| > 2) for Gaussian noise
SQRT2 = math.sqrt(2.0)
LONE = 1.2
REFINE_CYCLES = 6  # a found cycle length is re-fitted once this many cycles are in
MID_RATE = 0.08  # the slower residual average: about 25 points
MID_N = (2 - MID_RATE) / MID_RATE  # its effective number of points
DETECT_AT = (48, 72, 96, 144, 192, 288, 384, 576, 768)  # points at which a period is looked for


def find_period(values: array, max_period: int, step: float = math.inf) -> int:
    """The dominant cycle length in whole points (0 if none is clear).

    Needs three cycles. With timestamps, calendar cycles
    (hour, day, week) are tried first at their exact lag. Otherwise a candidate is an
    autocorrelation peak well above the trough half a cycle earlier and strong again at each
    multiple the buffer holds (a burst or a trend is not a cycle); the shortest strong one
    wins. Its length is then the whole number of points near it whose multiples line up
    best: an error of one point slides the profile a slot every cycle."""
    n = len(values)
    hi = min(max_period, n // 3)
    if hi < 4:
        return 0
    x = _prepared(values)
    var = float(x @ x) / n
    if var <= 0:
        return 0
    f = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n] / (var * (n - np.arange(n)))  # unbiased

    def multiples(p: int) -> list[float]:
        return [float(acf[k]) for k in range(p, max(p, n - p // 2), p)]

    def strong(p: int) -> bool:
        m = multiples(p)
        return bool(
            acf[p] > 0.4 and acf[p] - acf[p // 2] > 0.7 and min(m) > 0.25 and sum(m) / len(m) > 0.4
        )

    if math.isfinite(step) and step > 0:
        lags = [c / step for c in (86_400.0, 3_600.0, 604_800.0)]
        ok = [round(q) for q in lags if abs(q - round(q)) < 0.01 and 4 <= q <= hi]
        ok = [q for q in ok if strong(q)]
        if ok:
            return max(ok, key=lambda q: acf[q])
    # a peak just past the last lag allowed may be a cycle of exactly that length
    top = min(n - 2, hi + 3)
    peaks = [p for p in range(4, top) if acf[p] > acf[p - 1] and acf[p] >= acf[p + 1]]
    peaks = [p for p in peaks if strong(p)]
    if not peaks:
        return 0
    best = max(acf[p] for p in peaks)
    p0 = next(p for p in peaks if acf[p] >= 0.85 * best)

    near = [p for p in range(max(4, int(0.92 * p0)), int(1.08 * p0) + 2) if p <= max_period]
    return min(near, key=lambda p: _mismatch(x, p))


def refine_period(values: array, period: int) -> int:
    """The whole cycle length within 3 points of `period` that best fits more cycles: each
    further cycle in the buffer multiplies the misfit of a wrong length."""
    x = _prepared(values)
    near = range(max(4, period - 3), min(period + 4, len(x) // 2))
    return min(near, key=lambda p: _mismatch(x, p), default=period)


def _prepared(values: array) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    gaps = np.isnan(x)
    if gaps.any():  # held-back points: the last kept value stands in
        keep = np.where(gaps, 0, np.arange(len(x)))
        x = x[np.maximum.accumulate(keep)]
        x[np.isnan(x)] = float(np.nanmedian(x)) if (~gaps).any() else 0.0
    idx = np.arange(len(x))
    x = x - np.polyval(np.polyfit(idx, x, 1), idx)  # a trend is not a cycle
    med = float(np.median(x))
    lim = 5 * 1.4826 * float(np.median(np.abs(x - med))) + 1e-12
    return np.clip(x, med - lim, med + lim)  # nor is a burst of outliers


def _mismatch(x: np.ndarray, p: int) -> float:
    """How badly the series repeats itself every p points: the spread of differences between
    points one and more cycles apart (a length one point off leaves k points of slide at k
    cycles). Unlike the autocorrelation it has no edge effects, and a trend adds the same to
    every difference, which the variance ignores."""
    n = len(x)
    total = 0.0
    for k in range(p, n - p // 2, p):
        d = x[k:] - x[:-k]
        med = float(np.median(d))
        lim = 4 * 1.4826 * float(np.median(np.abs(d - med))) + 1e-12
        total += float(np.var(np.clip(d, med - lim, med + lim)))  # an anomaly is one point
    return total


class RobustDetector:
    """Robust seasonal detector; see the module docstring. Learned state ends in `_`."""

    name = "robust"
    version = "3.1"

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
        self.z_suspect_ = score_to_z(self.suspect)
        self.warmup = warmup
        self.adapt_after = adapt_after
        self.rel_floor = rel_floor
        self.window = window
        self._reset(0)
        # the first points are kept to find the period (or fill a given one's profile)
        # Buffers hold float32 offsets from the first value: half the memory of doubles, and
        # no precision lost on series far from zero (1e9 +- 10 keeps its detail).
        self.buf_: array | None = array("f") if period != 0 else None
        self.buf0_ = math.nan
        self.more_: array | None = None  # after a cycle is found: more of them, to refine it

    def _reset(self, period: int, ratio: float = 1.0) -> None:
        self.n_ = 0
        self.level_ = 0.0
        self.slow_ = 0.0
        self.dev_ = 0.0  # EW mean |residual|
        self.short_ = 0.0  # EW mean of residual / scale
        self.short_dev_ = 0.3  # EW mean |short_| (prior: white residuals)
        self.quiet_ = 0  # points learned as normal
        self.mid_ = 0.0  # slower EW mean of clipped residual / scale: small shifts, drifts
        self.mid_dev_ = 0.16  # EW mean |mid_| (prior: white residuals)
        self.var_ = GAUSS_TAIL2  # EW rate of residuals beyond 2 scales: a burst of spread
        self.var_mean_ = GAUSS_TAIL2  # its long-run rate, learned quietly
        self.lag1_ = 0.0  # EW mean of (clipped) residual x previous residual, in scales
        self.sq_ = 1.0  # EW mean of (clipped) squared residual: lag1_ / sq_ is their correlation
        self.drift_dev_ = 0.0  # EW mean |level_ - slow_| / scale
        self.since_ = 0  # points learned since the last re-baseline
        self.period_ = period
        self.season_ = array("d", bytes(8 * period))
        self.seen_ = 0  # points seen per phase, for a fast first fill of the profile
        self.ratio_ = ratio  # slots per point: a cycle of 95.6 points fills 96 slots
        self.pos_ = 0.0  # position of the next point in the cycle, in slots
        self.recent_ = array("d")  # last `window` deseasonalised values
        self.run_ = 0  # anomalous points in a row
        self.last_y_ = math.nan
        self.last_r_ = 0.0  # the last residual / scale
        self.burst_ = False  # the last point was an outlier by itself
        self.tail_ = GAUSS_TAIL3  # EW rate of |residual| > 3 scales: heavy tails widen the band
        self.same_ = 0  # identical values in a row
        self.same_rate_ = 0.5
        self.jump_ = 0.0  # EW mean size of a change between consecutive distinct values
        self.last_t_ = math.nan
        self.step_ = math.inf
        self._derive()

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
        s = SQRT_HALF_PI * self.dev_
        j = 0.5 * self.jump_
        f = self.rel_floor * abs(self.level_)
        s = s if s > j else j
        s = s if s > f else f
        return s if s > 1e-9 else 1e-9

    def _tail_factor(self) -> float:
        """How much heavier than Gaussian the residual tails are (1 to 2)."""
        return min(2.0, max(1.0, (self.tail_ / GAUSS_TAIL3) ** 0.25))

    def _derive(self) -> None:
        """Recompute what the evidence derives from slowly learned statistics (once per
        learned point, not per score)."""
        f = self._tail_factor()
        self.tf_, self.tfl_ = f, f**LONE
        # residuals that come in clusters (a random walk) hold fewer independent points: the
        # usual (1 - rho) / (1 + rho) effective-size correction of the wide-point count
        rho = min(0.95, max(0.0, self.lag1_ / self.sq_)) if self.sq_ > 0 else 0.0
        self.m_ = m = MID_N * (1 - rho) / (1 + rho)
        self.u0_ = math.sqrt(m * self.var_mean_ + 0.375)

    def _expected(self, phase: int) -> float:
        return self.level_ + (self.season_[phase] if self.period_ else 0.0)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state.pop("_cache", None)  # a speed-up, not state
        return state

    def _evidence(self, y: float, t: float) -> tuple[float, ...]:
        """(z point, z shift, z mid, z var, z drift, z stuck, short, mid, var) for y at t,
        without learning it.

        The stream scores then learns the same point: the second call reuses the first."""
        key = (y, t, self.n_)
        cache = self.__dict__.get("_cache")
        if cache is not None and cache[0] == key:
            return cache[1]
        ev = self._compute(y, t)
        self.__dict__["_cache"] = (key, ev)
        return ev

    def _compute(self, y: float, t: float) -> tuple[float, ...]:
        s = self._scale()
        if self.period_:
            r = (y - self.level_ - self.season_[int(self._phase_of(t))]) / s
        else:
            r = (y - self.level_) / s
        ar = -r if r < 0 else r
        # heavy tails widen the band for a lone point; two wide residuals in a row on the same
        # side are far rarer than one twice as wide there, so a short burst needs less
        z_point = ar / self.tfl_
        lr = self.last_r_
        if r * lr > 0:
            z_point = max(z_point, SQRT2 * min(ar, abs(lr)) / self.tf_)
        short0, mid0, var0 = self.short_, self.mid_, self.var_
        if self.burst_ and z_point < self.z_suspect_:
            # a burst the point test flagged is over: the averages it filled have been reported
            # already and must not hold the alarm open after it
            short0, mid0, var0 = 0.0, 0.0, self.var_mean_
        psi = -3.0 if r < -3.0 else (3.0 if r > 3.0 else r)  # one point: a nudge at most
        short = 0.75 * short0 + 0.25 * psi
        z_shift = abs(short) / max(SQRT_HALF_PI * self.short_dev_, 0.3)
        b = MID_RATE
        mid = (1 - b) * mid0 + b * psi
        z_mid = abs(mid) / max(SQRT_HALF_PI * self.mid_dev_, 0.15)
        # the rate of wide points (beyond 2 scales): one adds little, a run of them adds up,
        # as a count over the average's ~24 (independent) points on the variance-stabilised
        # (Anscombe) scale: a count of rare events is far more skewed than a normal z assumes
        var = (1 - b) * var0 + (b if ar > 2.0 else 0.0)
        z_var = 2 * (math.sqrt(self.m_ * var + 0.375) - self.u0_)
        z_drift = abs(self.level_ - self.slow_) / s / max(SQRT_HALF_PI * self.drift_dev_, 0.35)
        z_stuck = 0.0
        if y == self.last_y_ and self.dev_ > 0:
            run = self.same_ + 1
            if run >= 5:
                z_stuck = tail_to_z(run * math.log(max(self.same_rate_, 1e-4)))
        return z_point, z_shift, z_mid, z_var, z_drift, z_stuck, short, mid, var, r

    # -- contract -----------------------------------------------------------------------------
    def score_one(self, x: Mapping[str, float]) -> float:
        y = x["y"]
        if self.n_ < self.warmup or y != y:
            return 0.0
        ev = self._evidence(y, x.get("t", math.nan))
        return z_to_score(max(ev[:6]))

    def band(self) -> Band:
        if self.n_ < self.warmup:
            return Band(self.level_, -math.inf, math.inf)
        e = self._expected(int(self.pos_))
        w = Z_AT_THRESHOLD * self._scale() * self.tfl_  # what a lone point must exceed
        return Band(e, e - w, e + w)

    def learn_one(self, x: Mapping[str, float]) -> None:
        y = x["y"]
        if y != y or math.isinf(y):
            return
        t = x.get("t", math.nan)
        if self.buf_ is not None:
            if self.buf0_ != self.buf0_:
                self.buf0_ = y
            self.buf_.append(y - self.buf0_)
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
        more = self.more_
        if more is not None and t - self.last_t_ > 1.5 * self.step_:
            more = self.more_ = None  # a gap: buffer positions no longer match the cycle
        normal = self._learn(y, t)
        if more is not None:
            more.append(y - self.buf0_ if normal else math.nan)  # anomalies don't shape the refit
            if len(more) >= REFINE_CYCLES * self.period_:
                self._refine()

    def _try_period(self) -> None:
        assert self.buf_ is not None  # noqa: S101 (only called while buffering)
        buf = self._values(self.buf_)
        # sampling intervals divide real cycles (a day is 288 five-minute points): snap to one
        cycle = float(self.period or find_period(buf, self.max_period, self.step_))
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
        calendar = any(abs(c / step - slots) < 0.01 for c in (86_400.0, 3_600.0, 604_800.0))
        if not self.period and not calendar and REFINE_CYCLES * slots <= 3 * self.max_period:
            # three cycles pin a length down to a point or two; six do better
            self.more_ = array("f", (v - self.buf0_ for v in buf))

    def _values(self, offsets: array) -> array:
        """A buffer's values, as doubles."""
        base = self.buf0_
        return array("d", (v + base for v in offsets))

    def _refine(self) -> None:
        """Re-fit the cycle length on six cycles; if it changes, move the learned profile to
        the new length (stretched, so what was learned is kept)."""
        assert self.more_ is not None  # noqa: S101 (only called while refining)
        buf = self._values(self.more_)
        self.more_ = None
        p = refine_period(buf, self.period_)
        if p == self.period_:
            return
        n = len(buf)
        first = n - n // p * p
        slots: list[list[float]] = [[] for _ in range(p)]
        for i in range(first, n):
            if buf[i] == buf[i]:
                slots[i % p].append(buf[i])
        meds = [sorted(v)[len(v) // 2] if v else math.nan for v in slots]
        known = [m for m in meds if m == m]
        mean = sum(known) / len(known)
        meds = [m if m == m else mean for m in meds]
        self.__dict__.pop("_cache", None)
        self.period_, self.ratio_, self.pos_ = p, 1.0, float(n % p)
        self.season_ = array("d", [m - mean for m in meds])

    def _learn(self, y: float, t: float) -> bool:
        """Learn y at t; False if it was held back as anomalous."""
        n = self.n_
        if n == 0:
            self.level_ = self.slow_ = y - (self.season_[0] if self.period_ else 0.0)
        pos = self._phase_of(t) if self.period_ else 0.0
        phase = int(pos)
        if t == t:
            dt = t - self.last_t_
            if dt > 0:
                self.step_ = min(self.step_, dt)
            self.last_t_ = t
        anomalous = drifted = False
        if n >= self.warmup:
            ev = self._evidence(y, t)
            # the drift gap says the baseline moved, not that this point is an outlier: the
            # point is learned (or a slow drift freezes the baseline until it is re-based)
            zs = self.z_suspect_
            anomalous = ev[0] >= zs or ev[1] >= zs or ev[2] >= zs or ev[3] >= zs or ev[5] >= zs
            drifted = ev[4] >= Z_AT_THRESHOLD
            prev_r = self.last_r_
            self.burst_ = ev[0] >= self.z_suspect_
            short, mid, var, self.last_r_ = ev[6:]
        else:
            short, mid, var = 0.0, 0.0, self.var_
        # the evidence accumulates through an anomaly; what is normal for it learns quietly
        self.short_, self.mid_, self.var_ = short, mid, var
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
            return True
        s = self._scale()
        if drifted:
            # a drift flagged once is acknowledged: the recent points are the new normal, and
            # a drift that goes on is flagged again only after as large a further move
            self.rebaseline()
            return False
        if anomalous:
            # not learned (it must not poison the baseline) except, clipped, by the noise scale:
            # a lasting variance change then widens the band instead of alerting forever
            self.dev_ += 0.1 * self.alpha * (3.0 * s - self.dev_)
            self.run_ += 1
            if self.run_ >= self.adapt_after:
                self.rebaseline()
            return False
        self.run_ = 0
        a = self.alpha
        r = y - self.level_ - season
        ar = -r if r < 0 else r
        c = 3.0 * s
        rc = -c if r < -c else (c if r > c else r)  # Huber: a big residual moves it like 3 sigma
        self.level_ = level = self.level_ + a * rc
        # the slow level averages everything since the last re-baseline (so one noisy median
        # is not a reference a drift is measured from), then forgets over ~200 points
        self.since_ = since = self.since_ + 1
        k = 1.0 / (since + 1)
        k = k if k > 0.1 * a else 0.1 * a
        self.slow_ = slow = self.slow_ + k * (level - self.slow_)
        if not same or self.same_rate_ > 0.2:  # a repeated value says nothing of the noise
            self.dev_ += 0.2 * a * ((ar if ar < 4.0 * s else 4.0 * s) - self.dev_)
        self.tail_ += 0.1 * a * ((1.0 if ar > c else 0.0) - self.tail_)
        # what is normal for the evidence: the mean of what was seen so far, then EW means (a
        # cold start must not judge a series by the white-noise prior for a hundred points)
        self.quiet_ = q = self.quiet_ + 1
        w = 1.0 / (q + 1)
        w5 = w if w > 0.5 * a else 0.5 * a
        w2 = w if w > 0.2 * a else 0.2 * a
        self.short_dev_ += w5 * (abs(short) - self.short_dev_)
        self.mid_dev_ += w5 * (abs(mid) - self.mid_dev_)
        wide = 1.0 if ar > 2.0 * s else 0.0
        wv = 1.0 / (q + 20)
        self.var_mean_ += (wv if wv > 0.2 * a else 0.2 * a) * (wide - self.var_mean_)
        rs = r / s
        rs = -3.0 if rs < -3.0 else (3.0 if rs > 3.0 else rs)
        pr = -3.0 if prev_r < -3.0 else (3.0 if prev_r > 3.0 else prev_r)
        self.lag1_ += w2 * (rs * pr - self.lag1_)
        self.sq_ += w2 * (rs * rs - self.sq_)
        self._derive()
        dd = self.drift_dev_  # clipped, so a slow drift cannot teach it that drifting is normal
        gap = abs(level - slow) / s
        cap = 2 * dd + 0.1
        self.drift_dev_ = dd + 0.1 * a * ((gap if gap < cap else cap) - dd)
        if self.period_:
            g = 1.0 / (1 + self.seen_ // self.period_)
            g = g if g > 0.1 else 0.1
            d = y - level - season
            self.season_[phase] += g * (-c if d < -c else (c if d > c else d))
            self.seen_ += 1
        return True

    def rebaseline(self, last: int | None = None) -> None:
        """Take the `last` recent points (default: all kept) as the new normal."""
        self.__dict__.pop("_cache", None)
        rec = sorted(self.recent_[-max(3, last) :] if last else self.recent_)
        if not rec:
            return
        med = rec[len(rec) // 2]
        mad = sum(abs(v - med) for v in rec) / len(rec)
        self.level_ = self.slow_ = med
        self.dev_ = max(0.75 * self.dev_, mad)  # a run of stuck values is not a quiet series
        self.short_ = self.mid_ = 0.0
        self.since_ = 0
        self.var_ = self.var_mean_
        self.run_ = 0
