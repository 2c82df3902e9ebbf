"""`SeriesModel`'s per-point arithmetic, compiled, and the batch kernel for the default detector.

The model around a detector (median/MAD fallback, feedback tolerance, Page-Hinkley drift
tests, the "before" statistics of a drift event) lives here once, on a float64 state vector
and a ring of recent raw values: `SeriesModel.update` calls it point by point for any
detector, and `run` calls it with the robust detector's steps (`robust_core`) for a whole
batch of one series in one call. `run` hands a point back to Python (the object) only when
something rare is due: a period search, a re-fit, a drift event, a bigger buffer.

The Page-Hinkley test is river's `drift.PageHinkley` (same update, same defaults as used
here), ported so it runs inside the kernel; tests check both flag the same points.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from detectors import robust_core as rc
from detectors.calibrate import Z_AT_THRESHOLD

# -- state vector layout ------------------------------------------------------------------
THRESH, WIN, COOLDOWN, SETTLE = range(4)  # parameters
MEAN, VAR, SINCE_DRIFT, PENDING, PENDING_N, FLAG_RUN, TOLERANCE, LAST_FLAG = range(4, 12)
REC_N, REC_HEAD, PH_LEVEL, PH_SPREAD = 12, 13, 14, 21  # two Page-Hinkley blocks of PH_SIZE
SIZE = 28
NO_DRIFT, LEVEL_DRIFT, VARIANCE_DRIFT = 0, 1, 2  # PENDING
KINDS = ("", "level", "variance")

# Page-Hinkley (river's defaults except min_instances and threshold, as SeriesModel sets them)
PH_N, PH_MEAN, PH_INC, PH_DEC, PH_MIN_INC, PH_MAX_DEC, PH_DRIFT = range(7)
PH_SIZE = 7
PH_MIN_INSTANCES = 20
PH_DELTA = 0.005
PH_THRESHOLD = 40.0
PH_ALPHA = 1 - 0.0001

# flags of a scored point
FLAGGED, FALLBACK = 1, 2
# bits 2-4 of a flagged point's flags: why it was flagged. 1 + the index of the robust
# detector's strongest test (robust_core.EVIDENCE), WHY_FALLBACK for the median/MAD rule,
# 0 when not known (another detector, or a point the Python path scored)
WHY_SHIFT, WHY_FALLBACK = 2, 7


@njit(cache=True)
def reason(st: np.ndarray, season: np.ndarray, y: float, t: float, fell_back: bool) -> int:
    """A flagged point's reason code, before the robust detector (`st`, `season`) learns y."""
    return WHY_FALLBACK if fell_back else rc.strongest(st, season, y, t) + 1


@njit(cache=True, inline="always")
def point_flags(flagged: bool, fell_back: bool, why: int) -> int:
    """A scored point's flags: FLAGGED, FALLBACK and its reason code."""
    return (FLAGGED if flagged else 0) | (FALLBACK if fell_back else 0) | (why << WHY_SHIFT)


# what `run` says
DONE, POINT, GROW, SEARCH, EVENT = 0, 1, 2, 3, 4


@njit(cache=True)
def ph_reset(m: np.ndarray, at: int) -> None:
    m[at + PH_N] = 0.0
    m[at + PH_MEAN] = 0.0
    m[at + PH_INC] = 0.0
    m[at + PH_DEC] = 0.0
    m[at + PH_MIN_INC] = math.inf
    m[at + PH_MAX_DEC] = -1.0
    m[at + PH_DRIFT] = 0.0


@njit(cache=True, inline="always")
def ph_update(m: np.ndarray, at: int, x: float, up_only: bool) -> bool:
    """river.drift.PageHinkley.update; True when it detects a drift."""
    if m[at + PH_DRIFT]:
        ph_reset(m, at)
    n = m[at + PH_N] + 1.0
    m[at + PH_N] = n
    mean = m[at + PH_MEAN] + (1.0 / n) * (x - m[at + PH_MEAN])
    m[at + PH_MEAN] = mean
    dev = x - mean
    inc = PH_ALPHA * m[at + PH_INC] + dev - PH_DELTA
    dec = PH_ALPHA * m[at + PH_DEC] + dev + PH_DELTA
    m[at + PH_INC], m[at + PH_DEC] = inc, dec
    if inc < m[at + PH_MIN_INC]:
        m[at + PH_MIN_INC] = inc
    if dec > m[at + PH_MAX_DEC]:
        m[at + PH_MAX_DEC] = dec
    if n >= PH_MIN_INSTANCES:
        up = inc - m[at + PH_MIN_INC] > PH_THRESHOLD
        down = m[at + PH_MAX_DEC] - dec > PH_THRESHOLD
        m[at + PH_DRIFT] = 1.0 if (up if up_only else (up or down)) else 0.0
    return m[at + PH_DRIFT] > 0


@njit(cache=True)
def reset_drift_tests(m: np.ndarray) -> None:
    ph_reset(m, PH_LEVEL)
    ph_reset(m, PH_SPREAD)


@njit(cache=True)
def median_mad_band(values: np.ndarray) -> tuple[float, float]:
    """(median, scale) of recent values; the scale is 1.4826 MAD, floored for flat series."""
    srt = np.sort(values)
    med = srt[srt.shape[0] // 2]
    mad = np.sort(np.abs(srt - med))[srt.shape[0] // 2]
    return med, max(1.4826 * mad, 0.001 * abs(med), 1e-9)


@njit(cache=True)
def fallback(m: np.ndarray, rec: np.ndarray, y: float) -> tuple[float, float, float, float]:
    """(score, expected, lower, upper) by the median/MAD rule over the recent raw values."""
    n = int(m[REC_N])
    if n < 8:
        return 0.0, math.nan, -math.inf, math.inf  # nothing to expect yet
    med, s = median_mad_band(rc.ring_last(rec, m, REC_N, REC_HEAD, 0))
    # A MAD from a few points is itself uncertain: widen the band for small samples
    # (x1.9 at 8 points, x1.3 at 32) so a cold start does not cry wolf.
    s *= math.sqrt(1.0 + 20.0 / n)
    w = Z_AT_THRESHOLD * s
    return rc.z_to_score((y - med) / s), med, med - w, med + w


@njit(cache=True, inline="always")
def judge(m: np.ndarray, y: float, score: float, expected: float, upper: float) -> float:
    """The score after feedback (a pattern labelled normal never alerts); counts flags."""
    thr = m[THRESH]
    half = (upper - expected) if math.isfinite(upper) else math.inf
    dev = abs(y - expected) / half if half > 0 else 0.0
    raw = score
    if raw >= thr and dev <= m[TOLERANCE]:
        score = min(raw, thr - 0.01)
    m[FLAG_RUN] = m[FLAG_RUN] + 1 if raw >= thr else 0.0
    if score >= thr:
        m[LAST_FLAG] = max(m[LAST_FLAG], dev) if m[LAST_FLAG] else dev
    return score


@njit(cache=True, inline="always")
def learn(
    m: np.ndarray, rec: np.ndarray, y: float, expected: float, upper: float, fell_back: bool,
    quiet: bool,
) -> int:  # fmt: skip
    """After the detector learned y: recent values, drift tests, "before" statistics. Returns
    the kind of a drift event now settled (NO_DRIFT mostly); the caller builds it."""
    if y != y:
        return NO_DRIFT
    rc.ring_push(rec, m, REC_N, REC_HEAD, y)
    m[SINCE_DRIFT] += 1
    if not fell_back and math.isfinite(upper) and upper > expected:
        z = (y - expected) / ((upper - expected) / Z_AT_THRESHOLD)
        z = max(-10.0, min(10.0, z))
        level = ph_update(m, PH_LEVEL, z, False)
        spread = ph_update(m, PH_SPREAD, abs(z), True)
        hit = LEVEL_DRIFT if level else (VARIANCE_DRIFT if spread else NO_DRIFT)
        if hit and not m[PENDING] and m[SINCE_DRIFT] >= m[COOLDOWN]:
            m[PENDING], m[PENDING_N] = hit, 0.0
    if m[PENDING]:
        m[PENDING_N] += 1
        if m[PENDING_N] >= m[SETTLE]:
            kind = int(m[PENDING])
            m[PENDING] = NO_DRIFT
            return kind
        return NO_DRIFT
    if quiet:  # the "before" statistics learn only from unremarkable points
        if m[MEAN] != m[MEAN]:
            m[MEAN] = y
        d = y - m[MEAN]
        m[MEAN] += 0.02 * d
        m[VAR] = 0.98 * (m[VAR] + 0.02 * d * d)
    return NO_DRIFT


@njit(cache=True)
def run(
    st: np.ndarray, season: np.ndarray, drec: np.ndarray, buf: np.ndarray, more: np.ndarray,
    m: np.ndarray, rec: np.ndarray, ts: np.ndarray, ys: np.ndarray, j: int, n: int,
    out_score: np.ndarray, out_band: np.ndarray, out_raw: np.ndarray, out_flags: np.ndarray,
) -> tuple[int, int, int, int]:  # fmt: skip
    """Score then learn ys[j:n] with the robust detector and the model around it, as
    `SeriesModel.update` does point by point, writing the verdicts at the same indices (a
    message's series share the arrays, each its own range). Stops at a point the object must
    take (POINT) or a full search buffer (GROW): (index, what, 0, -1); (n, DONE, 0, -1) when
    all are done. Two rare steps of a point are the object's, but only those:
    - a period search that finds a cycle, or needs numpy's FFTs: the point is scored and
      learned up to it, and (index, SEARCH, kind, found) asks for
      `RobustDetector.after_learn`, `found` being the cycle the search here found (-1: the
      search is the object's). A search that finds nothing (a young series' first few) is
      done here, and so is the rest of its point.
    - a drift event settled: the point is done, and (index, EVENT, kind, -1) asks for the
      event to be built.
    `kind` is the drift's, 0 when none."""
    thr = m[THRESH]
    while j < n:
        y, t = ys[j], ts[j]
        need = rc.needs_python(st, buf, y, t)
        if need == rc.PY_GROW:
            return j, GROW, 0, -1
        search = need == rc.PY_POINT and st[rc.NBUF] >= 0  # not a re-fit: no buffer then
        if need == rc.PY_POINT and not search:
            return j, POINT, 0, -1
        ev = rc.evidence_of(st, season, y, t)  # scored, then learned from: computed once
        score = rc.score_of(st, y, ev)
        expected, lower, upper = rc.band(st, season)
        fell_back = not (math.isfinite(lower) and math.isfinite(upper))
        if fell_back:
            score, expected, lower, upper = fallback(m, rec, y)
        raw = score
        score = judge(m, y, score, expected, upper)
        why = reason(st, season, y, t, fell_back) if score >= thr else 0  # rare: tests rerun
        status = rc.LEARN_DONE
        if y == y and not math.isinf(y):
            status = rc.learn_point(st, season, drec, buf, more, y, t, False, ev)
        # the model's learning does not read the detector's: its order against the search's
        # does not matter; an event it settles is built after the search, as `update` does
        kind = learn(m, rec, y, expected, upper, fell_back, raw < 0.6)
        out_score[j], out_raw[j] = score, raw
        out_band[j, 0], out_band[j, 1], out_band[j, 2] = expected, lower, upper
        out_flags[j] = point_flags(score >= thr, fell_back, why)
        if status == rc.LEARN_SEARCH:
            found = rc.search_buffer(st, buf)
            if found != 0 or st[rc.NBUF] >= 3 * st[rc.MAXP]:  # a cycle, or the last search
                return j, SEARCH, kind, found
            # no cycle yet, and buffering goes on (no period, no re-fit buffer meanwhile): what
            # `after_learn` does then, the point learned after its search
            rc.learn_point(st, season, drec, buf, more, y, t, True, ev)
        if kind:
            return j, EVENT, kind, -1
        j += 1
    return n, DONE, 0, -1
