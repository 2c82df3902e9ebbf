"""The robust detector's per-point arithmetic, compiled, on flat state arrays.

Why: in Python the detector costs ~8 µs a point, more than the machine's whole raw path
(consume, decode, insert: ~5.5 µs). The same arithmetic compiled with numba costs a fraction
of a microsecond, and a batch of one series' points runs in one call (`model_core.run`).
`RobustDetector` (robust.py) keeps the object API, pickling and the rare steps (finding and
re-fitting the cycle length, with numpy's FFT); every per-point step lives here, once, and
both the object API and the batch kernel call it.

State: one float64 vector per series (indices below), the seasonal profile, a ring of the
last `window` deseasonalised values, and float32 buffers for the period search.

The small per-point steps are `inline="always"`: a call between compiled functions counts a
reference up and down (an atomic operation) for every array it passes, and LLVM optimises
nothing across it. Inlined into the kernel, a settled series' point costs ~0.27 µs rather
than ~0.38. `learn` stays a call: inlined too, it doubled the first compile (~60 s) for
~0.02 µs.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from detectors import calibrate
from detectors.calibrate import Z_AT_THRESHOLD

SQRT_HALF_PI = 1.2533  # mean absolute deviation → standard deviation for Gaussian noise
GAUSS_TAIL3 = 0.0027  # P(|z| > 3) for Gaussian noise
GAUSS_TAIL2 = 0.0455  # P(|z| > 2) for Gaussian noise
SQRT2 = math.sqrt(2.0)
LONE = 1.2
REFINE_CYCLES = 6  # a found cycle length is re-fitted once this many cycles are in
MID_RATE = 0.08  # the slower residual average: about 25 points
MID_N = (2 - MID_RATE) / MID_RATE  # its effective number of points
DETECT_AT = (48, 72, 96, 144, 192, 288, 384, 576, 768)  # points at which a period is looked for

z_to_score = njit(cache=True)(calibrate.z_to_score)
tail_to_z = njit(cache=True)(calibrate.tail_to_z)

# -- state vector layout ------------------------------------------------------------------
# parameters
ALPHA, WARMUP, ADAPT, REL_FLOOR, WINDOW, ZSUS, MAXP, PERIOD_PARAM = range(8)  # -1: find it
# learned
N, LEVEL, SLOW, DEV, SHORT, SHORT_DEV, QUIET, MID, MID_DEV, VAR, VAR_MEAN = range(8, 19)
LAG1, SQ, DRIFT_DEV, SINCE, PERIOD, SEEN, RATIO, POS, RUN, LAST_Y, LAST_R = range(19, 30)
BURST, TAIL, SAME, SAME_RATE, JUMP, LAST_T, STEP, TF, TFL, M, U0 = range(30, 41)
REC_N, REC_HEAD, BUF0, NBUF, NMORE = range(41, 46)  # NBUF / NMORE -1: not buffering
SIZE = 46

# what `buffer_append` says
BUF_OFF, BUF_KEPT, BUF_SEARCH = 0, 1, 2


@njit(cache=True)
def reset(st: np.ndarray, period: int, ratio: float) -> None:
    """Learned statistics back to their priors (the profile is the caller's, zeroed)."""
    st[N] = 0.0
    st[LEVEL] = st[SLOW] = st[DEV] = st[SHORT] = 0.0
    st[SHORT_DEV] = 0.3  # EW mean |short| (prior: white residuals)
    st[QUIET] = 0.0
    st[MID] = 0.0
    st[MID_DEV] = 0.16
    st[VAR] = st[VAR_MEAN] = GAUSS_TAIL2  # EW rate of residuals beyond 2 scales, its mean
    st[LAG1] = 0.0  # EW mean of clipped residual x previous residual, in scales
    st[SQ] = 1.0  # EW mean of clipped squared residual
    st[DRIFT_DEV] = 0.0
    st[SINCE] = 0.0
    st[PERIOD] = period
    st[SEEN] = 0.0
    st[RATIO] = ratio  # slots per point: a cycle of 95.6 points fills 96 slots
    st[POS] = 0.0
    st[RUN] = 0.0
    st[LAST_Y] = math.nan
    st[LAST_R] = 0.0
    st[BURST] = 0.0
    st[TAIL] = GAUSS_TAIL3
    st[SAME] = 0.0
    st[SAME_RATE] = 0.5
    st[JUMP] = 0.0
    st[LAST_T] = math.nan
    st[STEP] = math.inf
    st[REC_N] = st[REC_HEAD] = 0.0
    derive(st)


@njit(cache=True, inline="always")
def derive(st: np.ndarray) -> None:
    """What the evidence derives from slowly learned statistics (once per learned point)."""
    # heavier tails than Gaussian; the powers only between the clamps (the same values)
    tail = st[TAIL] / GAUSS_TAIL3
    f = 1.0 if tail <= 1.0 else (2.0 if tail >= 16.0 else tail**0.25)
    st[TF] = f
    st[TFL] = 1.0 if f == 1.0 else f**LONE
    # clustered residuals (a random walk) hold fewer independent points: the usual
    # (1 - rho) / (1 + rho) effective-size correction of the wide-point count
    rho = min(0.95, max(0.0, st[LAG1] / st[SQ])) if st[SQ] > 0 else 0.0
    m = MID_N * (1 - rho) / (1 + rho)
    st[M] = m
    st[U0] = math.sqrt(m * st[VAR_MEAN] + 0.375)


@njit(cache=True, inline="always")
def scale(st: np.ndarray) -> float:
    # half a typical step: a sparse series (mostly 0, now and then one error) moves in steps,
    # and one ordinary step is not an anomaly however small its usual noise
    s = SQRT_HALF_PI * st[DEV]
    j = 0.5 * st[JUMP]
    f = st[REL_FLOOR] * abs(st[LEVEL])
    s = s if s > j else j
    s = s if s > f else f
    return s if s > 1e-9 else 1e-9


@njit(cache=True, inline="always")
def wrap(v: float, period: float) -> float:
    """v % period, without the library call when v is within a cycle past 0 (a cycle
    position moving on by less than a cycle): there v - period is exact, as fmod's."""
    if 0.0 <= v < period:
        return v
    if period <= v < 2.0 * period:
        return v - period
    return v % period


@njit(cache=True, inline="always")
def phase_of(st: np.ndarray, t: float) -> float:
    """The cycle position of a point at time t, skipping the slots of missing points."""
    period = st[PERIOD]
    if not period:
        return 0.0
    dt = t - st[LAST_T]
    step = st[STEP]
    skip = 0
    if dt > 1.5 * step and math.isfinite(step):
        skip = min(int(round(dt / step)) - 1, 10 * int(period))
    return wrap(st[POS] + skip * st[RATIO], period)


@njit(cache=True, inline="always")
def evidence(st: np.ndarray, season: np.ndarray, y: float, t: float) -> tuple:  # type: ignore[type-arg]
    """(z point, z shift, z mid, z var, z drift, z stuck, short, mid, var, r) for y at t,
    without learning it."""
    s = scale(st)
    if st[PERIOD]:
        r = (y - st[LEVEL] - season[int(phase_of(st, t))]) / s
    else:
        r = (y - st[LEVEL]) / s
    ar = -r if r < 0 else r
    # heavy tails widen the band for a lone point; two wide residuals in a row on the same
    # side are far rarer than one twice as wide there, so a short burst needs less
    z_point = ar / st[TFL]
    lr = st[LAST_R]
    if r * lr > 0:
        z_point = max(z_point, SQRT2 * min(ar, abs(lr)) / st[TF])
    short0, mid0, var0 = st[SHORT], st[MID], st[VAR]
    if st[BURST] and z_point < st[ZSUS]:
        # a burst the point test flagged is over: the averages it filled have been reported
        # already and must not hold the alarm open after it
        short0, mid0, var0 = 0.0, 0.0, st[VAR_MEAN]
    psi = -3.0 if r < -3.0 else (3.0 if r > 3.0 else r)  # one point: a nudge at most
    short = 0.75 * short0 + 0.25 * psi
    z_shift = abs(short) / max(SQRT_HALF_PI * st[SHORT_DEV], 0.3)
    b = MID_RATE
    mid = (1 - b) * mid0 + b * psi
    z_mid = abs(mid) / max(SQRT_HALF_PI * st[MID_DEV], 0.15)
    # the rate of wide points (beyond 2 scales) as a count over the average's ~24
    # (independent) points on the variance-stabilised (Anscombe) scale
    var = (1 - b) * var0 + (b if ar > 2.0 else 0.0)
    z_var = 2 * (math.sqrt(st[M] * var + 0.375) - st[U0])
    z_drift = abs(st[LEVEL] - st[SLOW]) / s / max(SQRT_HALF_PI * st[DRIFT_DEV], 0.35)
    z_stuck = 0.0
    if y == st[LAST_Y] and st[DEV] > 0:
        run = st[SAME] + 1
        if run >= 5:
            z_stuck = tail_to_z(run * math.log(max(st[SAME_RATE], 1e-4)))
    return z_point, z_shift, z_mid, z_var, z_drift, z_stuck, short, mid, var, r


NO_EVIDENCE = (0.0,) * 10  # what a point scored during the warm-up (or NaN) has


@njit(cache=True, inline="always")
def evidence_of(st: np.ndarray, season: np.ndarray, y: float, t: float) -> tuple:  # type: ignore[type-arg]
    """`evidence` when the point is scored (warm, y a number), else NO_EVIDENCE: what `score`
    reads and `learn` may take instead of computing it again."""
    if st[N] < st[WARMUP] or y != y:
        return NO_EVIDENCE
    return evidence(st, season, y, t)


@njit(cache=True, inline="always")
def score_of(st: np.ndarray, y: float, ev: tuple) -> float:  # type: ignore[type-arg]
    """The score of y whose `evidence_of` is ev."""
    if st[N] < st[WARMUP] or y != y:
        return 0.0
    return z_to_score(max(ev[0], ev[1], ev[2], ev[3], ev[4], ev[5]))


@njit(cache=True)
def score(st: np.ndarray, season: np.ndarray, y: float, t: float) -> float:
    return score_of(st, y, evidence_of(st, season, y, t))


# the tests `evidence` runs, in its order: what an episode names as the reason it was flagged
EVIDENCE = ("point", "shift", "mid", "var", "drift", "stuck")


@njit(cache=True)
def strongest(st: np.ndarray, season: np.ndarray, y: float, t: float) -> int:
    """Which test (an index into EVIDENCE) scores y at t highest; -1 while warming up. Call
    it before y is learned, as `score` is."""
    if st[N] < st[WARMUP] or y != y:
        return -1
    ev = evidence(st, season, y, t)
    k = 0
    for i in range(1, 6):
        if ev[i] > ev[k]:
            k = i
    return k


@njit(cache=True, inline="always")
def band(st: np.ndarray, season: np.ndarray) -> tuple[float, float, float]:
    """(expected, lower, upper) for the next point; infinite while warming up."""
    if st[N] < st[WARMUP]:
        return st[LEVEL], -math.inf, math.inf
    e = st[LEVEL] + (season[int(st[POS])] if st[PERIOD] else 0.0)
    w = Z_AT_THRESHOLD * scale(st) * st[TFL]  # what a lone point must exceed
    return e, e - w, e + w


@njit(cache=True, inline="always")
def ring_push(ring: np.ndarray, st: np.ndarray, n_at: int, head_at: int, v: float) -> None:
    """Append to a ring of the last len(ring) values (count and head kept in st)."""
    size = ring.shape[0]
    h = int(st[head_at])
    ring[h] = v
    st[head_at] = (h + 1) % size
    if st[n_at] < size:
        st[n_at] += 1


@njit(cache=True)
def ring_last(ring: np.ndarray, st: np.ndarray, n_at: int, head_at: int, k: int) -> np.ndarray:
    """The last k values pushed (all if k <= 0 or more than held), oldest first."""
    n = int(st[n_at])
    if k <= 0 or k > n:
        k = n
    size = ring.shape[0]
    h = int(st[head_at])
    out = np.empty(k)
    for i in range(k):
        out[i] = ring[(h - k + i) % size]
    return out


@njit(cache=True)
def rebaseline(st: np.ndarray, rec: np.ndarray, last: int) -> None:
    """Take the `last` recent points (0: all kept) as the new normal."""
    vals = np.sort(ring_last(rec, st, REC_N, REC_HEAD, max(3, last) if last else 0))
    if vals.shape[0] == 0:
        return
    med = vals[vals.shape[0] // 2]
    mad = 0.0
    for v in vals:
        mad += abs(v - med)
    mad /= vals.shape[0]
    st[LEVEL] = st[SLOW] = med
    st[DEV] = max(0.75 * st[DEV], mad)  # a run of stuck values is not a quiet series
    st[SHORT] = st[MID] = 0.0
    st[SINCE] = 0.0
    st[VAR] = st[VAR_MEAN]
    st[RUN] = 0.0


@njit(cache=True, inline="always")
def buffer_append(st: np.ndarray, buf: np.ndarray, y: float) -> int:
    """Keep y for the period search (the caller made room). BUF_SEARCH: search now."""
    nb = int(st[NBUF])
    if nb < 0:
        return BUF_OFF
    if st[BUF0] != st[BUF0]:
        st[BUF0] = y
    buf[nb] = y - st[BUF0]  # float32 offsets: no detail lost on series far from zero
    n = nb + 1
    st[NBUF] = n
    return BUF_SEARCH if search_due(st, n) else BUF_KEPT


@njit(cache=True, inline="always")
def search_due(st: np.ndarray, n: int) -> bool:
    """Whether the buffer, at n points, is due a period search."""
    given = st[PERIOD_PARAM]
    if given > 0:
        return n == 2 * given
    if n >= 3 * st[MAXP]:
        return True
    for k in DETECT_AT:
        if n == k:
            return True
    return False


@njit(cache=True, inline="always")
def dev_rate(st: np.ndarray) -> float:
    """How fast the noise scale learns: the plain mean of the residuals seen since the warm-up
    (whose median deviation counts as `warmup` of them), then its EW rate. A young series'
    scale is otherwise the warm-up's few points for ~200 more, and a cycle not found yet (or
    any wider spread) alarms on every swing until a re-baseline."""
    w = 1.0 / (st[QUIET] + st[WARMUP])
    a = 0.2 * st[ALPHA]
    return w if w > a else a


@njit(cache=True)
def learn(
    st: np.ndarray, season: np.ndarray, rec: np.ndarray, y: float, t: float, ev: tuple = None,  # type: ignore[type-arg,assignment]
) -> bool:  # fmt: skip
    """Learn y at t; False if it was held back as anomalous. The evidence is the one its
    score saw (before this point's time moved the clock): `ev`, the scoring's `evidence_of`
    with nothing learned since, spares computing it twice."""
    n = int(st[N])
    period = st[PERIOD]
    warm = n >= st[WARMUP]
    if n == 0:
        st[LEVEL] = st[SLOW] = y - (season[0] if period else 0.0)
    z_point = z_shift = z_mid = z_var = z_drift = z_stuck = r = 0.0
    if warm:
        e = evidence(st, season, y, t) if ev is None else ev
        z_point, z_shift, z_mid, z_var, z_drift, z_stuck, short, mid, var, r = e
    else:
        short, mid, var = 0.0, 0.0, st[VAR]
    pos = phase_of(st, t) if period else 0.0
    phase = int(pos)
    if t == t:
        dt = t - st[LAST_T]
        if dt > 0:
            st[STEP] = min(st[STEP], dt)
        st[LAST_T] = t
    anomalous = drifted = False
    prev_r = st[LAST_R]
    if warm:
        # the drift gap says the baseline moved, not that this point is an outlier: the point
        # is learned (or a slow drift freezes the baseline until it is re-based)
        zs = st[ZSUS]
        anomalous = z_point >= zs or z_shift >= zs or z_mid >= zs or z_var >= zs
        anomalous = anomalous or z_stuck >= zs
        drifted = z_drift >= Z_AT_THRESHOLD
        st[BURST] = 1.0 if z_point >= zs else 0.0
        st[LAST_R] = r
    # the evidence accumulates through an anomaly; what is normal for it learns quietly
    st[SHORT], st[MID], st[VAR] = short, mid, var
    # identical-values statistics (a stuck sensor)
    last_y = st[LAST_Y]
    same = y == last_y
    st[SAME] = st[SAME] + 1 if same else 0.0
    if not anomalous:
        st[SAME_RATE] += 0.01 * ((1.0 if same else 0.0) - st[SAME_RATE])
        if not same and last_y == last_y:
            step = abs(y - last_y)
            st[JUMP] += (0.02 if st[JUMP] else 1.0) * (step - st[JUMP])
    st[LAST_Y] = y
    season_v = season[phase] if period else 0.0
    ring_push(rec, st, REC_N, REC_HEAD, y - season_v)
    st[N] = n + 1
    if period:
        st[POS] = wrap(pos + st[RATIO], period)
    if not warm:
        # warm-up: robust statistics of the recent points stand in
        srt = np.sort(ring_last(rec, st, REC_N, REC_HEAD, 0))
        med = srt[srt.shape[0] // 2]
        d = 0.0
        for v in srt:
            d += abs(v - med)
        st[LEVEL] = st[SLOW] = med
        st[DEV] = d / srt.shape[0]
        return True
    s = scale(st)
    if drifted:
        # a drift flagged once is acknowledged: the recent points are the new normal, and a
        # drift that goes on is flagged again only after as large a further move
        rebaseline(st, rec, 0)
        return False
    a = st[ALPHA]
    if anomalous:
        # not learned (it must not poison the baseline) except, clipped, by the noise scale:
        # a lasting variance change then widens the band instead of alerting forever
        st[DEV] += 0.5 * dev_rate(st) * (3.0 * s - st[DEV])
        st[RUN] += 1
        if st[RUN] >= st[ADAPT]:
            rebaseline(st, rec, 0)
        return False
    st[RUN] = 0.0
    r = y - st[LEVEL] - season_v
    ar = -r if r < 0 else r
    c = 3.0 * s
    rc = -c if r < -c else (c if r > c else r)  # Huber: a big residual moves it like 3 sigma
    level = st[LEVEL] + a * rc
    st[LEVEL] = level
    # the slow level averages everything since the last re-baseline (so one noisy median is
    # not a reference a drift is measured from), then forgets over ~200 points
    since = st[SINCE] + 1
    st[SINCE] = since
    k = 1.0 / (since + 1)
    k = k if k > 0.1 * a else 0.1 * a
    slow = st[SLOW] + k * (level - st[SLOW])
    st[SLOW] = slow
    if not same or st[SAME_RATE] > 0.2:  # a repeated value says nothing of the noise
        st[DEV] += dev_rate(st) * ((ar if ar < 4.0 * s else 4.0 * s) - st[DEV])
    st[TAIL] += 0.1 * a * ((1.0 if ar > c else 0.0) - st[TAIL])
    # what is normal for the evidence: the mean of what was seen so far, then EW means (a
    # cold start must not judge a series by the white-noise prior for a hundred points)
    q = st[QUIET] + 1
    st[QUIET] = q
    w = 1.0 / (q + 1)
    w5 = w if w > 0.5 * a else 0.5 * a
    w2 = w if w > 0.2 * a else 0.2 * a
    st[SHORT_DEV] += w5 * (abs(short) - st[SHORT_DEV])
    st[MID_DEV] += w5 * (abs(mid) - st[MID_DEV])
    wide = 1.0 if ar > 2.0 * s else 0.0
    wv = 1.0 / (q + 20)
    st[VAR_MEAN] += (wv if wv > 0.2 * a else 0.2 * a) * (wide - st[VAR_MEAN])
    rs = r / s
    rs = -3.0 if rs < -3.0 else (3.0 if rs > 3.0 else rs)
    pr = -3.0 if prev_r < -3.0 else (3.0 if prev_r > 3.0 else prev_r)
    st[LAG1] += w2 * (rs * pr - st[LAG1])
    st[SQ] += w2 * (rs * rs - st[SQ])
    derive(st)
    dd = st[DRIFT_DEV]  # clipped, so a slow drift cannot teach it that drifting is normal
    gap = abs(level - slow) / s
    cap = 2 * dd + 0.1
    st[DRIFT_DEV] = dd + 0.1 * a * ((gap if gap < cap else cap) - dd)
    if period:
        g = 1.0 / (1 + int(st[SEEN]) // int(period))  # whole counts: the float // exactly
        g = g if g > 0.1 else 0.1
        d = y - level - season_v
        season[phase] += g * (-c if d < -c else (c if d > c else d))
        st[SEEN] += 1
    return True


@njit(cache=True)
def fit_profile(values: np.ndarray, cycle: float, season: np.ndarray, ratio: float) -> int:
    """The seasonal profile (offsets from the mean) from the whole cycles at the end of
    `values`, `ratio` slots a point; returns how many points it used."""
    slots = season.shape[0]
    n = values.shape[0]
    first = n - int(n // cycle * cycle)
    sums, counts = np.zeros(slots), np.zeros(slots, np.int64)
    total = 0.0
    for i in range(first, n):
        k = int((i * ratio) % slots)
        sums[k] += values[i]
        counts[k] += 1
        total += values[i]
    mean = total / (n - first)
    for k in range(slots):
        season[k] = sums[k] / counts[k] - mean if counts[k] else 0.0
    return n - first


@njit(cache=True)
def median_profile(values: np.ndarray, cycle: float) -> np.ndarray:
    """The seasonal profile (offsets from the mean) from the slot medians of the whole cycles
    at the end of `values`, round(cycle) slots at round(cycle) / cycle slots a point: what
    the re-fit rebuilds at a new length, robust to the anomalies six cycles hold. NaN is
    skipped; a slot with no value gets the mean. A slot's median is its upper middle value.
    Compiled: the same list-and-sort in Python took ~0.1 ms a series, once, on the loop."""
    n = values.shape[0]
    size = int(round(cycle))
    ratio = size / cycle
    first = n - int(n // cycle * cycle)
    slot = np.full(n, -1, np.int64)
    ends = np.zeros(size + 1, np.int64)  # slot k's values go to grouped[ends[k]:ends[k + 1]]
    for i in range(first, n):
        if values[i] == values[i]:
            slot[i] = int(i * ratio % size)
            ends[slot[i] + 1] += 1
    for k in range(size):
        ends[k + 1] += ends[k]
    grouped, fill = np.empty(ends[size]), ends[:size].copy()
    for i in range(first, n):
        if slot[i] >= 0:
            grouped[fill[slot[i]]] = values[i]
            fill[slot[i]] += 1
    meds = np.full(size, np.nan)
    total, known = 0.0, 0
    for k in range(size):
        m = ends[k + 1] - ends[k]
        if m:
            part = grouped[ends[k] : ends[k + 1]]
            part.sort()  # a few values a slot (one a cycle), in place
            meds[k] = part[m // 2]
            total += meds[k]
            known += 1
    mean = total / known
    for k in range(size):
        meds[k] = (meds[k] if meds[k] == meds[k] else mean) - mean
    return meds


@njit(cache=True)
def learn_many(st: np.ndarray, season: np.ndarray, rec: np.ndarray, ys: np.ndarray) -> None:
    """Learn values without timestamps (the buffer replayed once a cycle is found)."""
    for y in ys:
        learn(st, season, rec, y, math.nan)


# what `learn_point` says
LEARN_DONE, LEARN_SEARCH, LEARN_REFINE = 0, 1, 2


@njit(cache=True, inline="always")
def learn_point(
    st: np.ndarray, season: np.ndarray, rec: np.ndarray, buf: np.ndarray, more: np.ndarray,
    y: float, t: float, searched: bool, ev: tuple = None,  # type: ignore[type-arg,assignment]
) -> int:  # fmt: skip
    """Everything `learn_one` does for a finite y except the period search and re-fit, which
    it asks for: LEARN_SEARCH (y is buffered, nothing else done) or LEARN_REFINE (y is
    learned; the re-fit buffer is full). `searched`: the search for y has been done. `ev`:
    see `learn` (what buffering changes, the evidence does not read)."""
    if not searched and buffer_append(st, buf, y) == BUF_SEARCH:
        return LEARN_SEARCH
    if st[NMORE] >= 0 and t - st[LAST_T] > 1.5 * st[STEP]:
        st[NMORE] = -1  # a gap: buffer positions no longer match the cycle
    normal = learn(st, season, rec, y, t, ev)
    nm = int(st[NMORE])
    if nm >= 0:
        more[nm] = (y - st[BUF0]) if normal else math.nan  # anomalies don't shape the re-fit
        st[NMORE] = nm + 1
        if nm + 1 >= REFINE_CYCLES * st[PERIOD]:
            return LEARN_REFINE
    return LEARN_DONE


# what `needs_python` says
PY_NONE, PY_GROW, PY_POINT = 0, 1, 2


@njit(cache=True, inline="always")
def needs_python(st: np.ndarray, buf: np.ndarray, y: float, t: float) -> int:
    """Whether learning y at t needs the object: PY_GROW (the search buffer is full) or PY_POINT (a
    period search or re-fit is due). Checked before anything of the point is done."""
    if y != y or math.isinf(y):
        return PY_NONE
    nb = int(st[NBUF])
    if nb >= 0:
        if nb >= buf.shape[0]:
            return PY_GROW
        if search_due(st, nb + 1):
            return PY_POINT
    nm = st[NMORE]
    if nm >= 0 and not (t - st[LAST_T] > 1.5 * st[STEP]) and nm + 1 >= REFINE_CYCLES * st[PERIOD]:
        return PY_POINT
    return PY_NONE


@njit(cache=True)
def _kth(a: np.ndarray, lo: int, hi: int, k: int) -> float:
    """Reorders a[lo:hi] so that a[k] is its k-th smallest (quickselect, median-of-three).
    Each pass moves every value without a branch on it (a swap, and the store index moved
    by the comparison): on noise, which is what a search's differences are, a partition's
    branches are a coin toss, and their mispredictions took most of the length fits' time.
    Values equal to the pivot are gathered in a second pass, so many ties (integer counts)
    cost no more than distinct values."""
    while hi - lo > 1:
        mid = (lo + hi - 1) // 2
        x, y, z = a[lo], a[mid], a[hi - 1]
        if x > y:
            x, y = y, x
        if y > z:
            y = max(x, z)
        p = lo if a[lo] == y else (mid if a[mid] == y else hi - 1)
        a[p], a[hi - 1] = a[hi - 1], y  # the pivot waits at the end
        less = lo
        for i in range(lo, hi - 1):
            v = a[i]
            a[i] = a[less]
            a[less] = v
            less += v < y
        if k < less:
            hi = less
            continue
        same = less
        for i in range(less, hi - 1):
            v = a[i]
            a[i] = a[same]
            a[same] = v
            same += v == y
        a[same], a[hi - 1] = y, a[same]  # a[less:same + 1] all equal the pivot
        if k <= same:
            return y
        lo = same + 1
    return a[k]


@njit(cache=True)
def median_of(a: np.ndarray, m: int) -> float:
    """The median of a[:m], reordering it: the value np.median gives, without its copy."""
    h = m // 2
    upper = _kth(a, 0, m, h)
    if m % 2:
        return upper
    lower = a[0]
    for i in range(1, h):  # the largest of the h smaller values
        lower = max(lower, a[i])
    return (lower + upper) / 2


@njit(cache=True)
def _misfit_at(x: np.ndarray, k: int, d: np.ndarray, w: np.ndarray) -> float:
    """The clipped variance of the differences between points k apart (`mismatch`'s term
    for one multiple), in the scratch d and w."""
    m = x.shape[0] - k
    for i in range(m):
        d[i] = w[i] = x[i + k] - x[i]
    med = median_of(w, m)
    for i in range(m):
        w[i] = abs(d[i] - med)
    lim = 4 * 1.4826 * median_of(w, m) + 1e-12
    lo, hi = med - lim, med + lim  # an anomaly is one point: clipped
    s = 0.0
    for i in range(m):
        w[i] = min(max(d[i], lo), hi)
        s += w[i]
    mean, ssd = s / m, 0.0
    for i in range(m):
        ssd += (w[i] - mean) * (w[i] - mean)
    return ssd / m


@njit(cache=True)
def mismatch(x: np.ndarray, p: int, bound: float = math.inf) -> float:
    """How badly the series repeats itself every p points: the spread of differences between
    points one and more cycles apart (a length one point off leaves k points of slide at k
    cycles). Unlike the autocorrelation it has no edge effects, and a trend adds the same to
    every difference, which the variance ignores. Compiled, and without a temporary array a
    step: the period search tries dozens of lengths, each over every multiple. It computes
    exactly what np.median, np.clip and np.var of the differences would.

    Past `bound` it stops and returns inf: the terms are never negative, so a length whose
    first terms already fit worse than the best so far cannot win. The widest multiple goes
    first (the most slide, the fewest points); the sum is still taken from the first
    multiple up, so a length that is not stopped gets the same value to the last bit."""
    n = x.shape[0]
    d, w = np.empty(n), np.empty(n)
    ks = np.arange(p, max(p, n - p // 2), p)
    terms = np.empty(ks.shape[0])
    stop = bound * (1 + 1e-9)  # a partial sum in another order may round a hair higher
    partial = 0.0
    for j in range(ks.shape[0] - 1, -1, -1):
        terms[j] = _misfit_at(x, ks[j], d, w)
        partial += terms[j]
        if partial > stop:
            return math.inf
    total = 0.0
    for j in range(ks.shape[0]):
        total += terms[j]
    return total


@njit(cache=True)
def best_length(x: np.ndarray, p0: int, lo: int, hi: int) -> int:
    """The length in [lo, hi] with the smallest `mismatch` (the shortest of equals; 0 if the
    range is empty). Tried from p0, the autocorrelation's peak, outwards: a good fit found
    first lets `mismatch` stop early on the lengths that cannot beat it."""
    choice, fit = 0, math.inf
    for j in range(2 * max(p0 - lo, hi - p0) + 1):
        p = p0 + (j + 1) // 2 if j % 2 else p0 - j // 2  # p0, p0+1, p0-1, p0+2, ...
        if p < lo or p > hi:
            continue
        m = mismatch(x, p, fit)
        if m < fit or (m == fit and m < math.inf and p < choice):
            choice, fit = p, m
    return choice


FRACTION_Z = 3.0  # a fractional cycle must fit better than the whole length by this many sd


@njit(cache=True)
def _cycle_lags(n: int, c: float) -> np.ndarray:
    """The lags a cycle of c points, whole or not, is fitted at in n points: each multiple k
    at its nearest whole lag round(k c), so a fraction's slide does not build up with k."""
    k = 1
    while k * c <= n - c / 2:
        k += 1
    return np.array([int(round(j * c)) for j in range(1, k)], dtype=np.int64)


@njit(cache=True)
def _cycle_misfit(x: np.ndarray, c: float, at: np.ndarray, d: np.ndarray, w: np.ndarray) -> float:
    """The misfit of a cycle of c points, whole or not, as `mismatch` measures a whole one,
    at `_cycle_lags`. `at` caches each lag's term (NaN until computed): nearby lengths share
    most lags."""
    total = 0.0
    for lag in _cycle_lags(x.shape[0], c):
        v = at[lag]
        if v != v:
            v = at[lag] = _misfit_at(x, lag, d, w)
        total += v
    return total


@njit(cache=True)
def fractional_cycle(x: np.ndarray, p: int) -> float:
    """The cycle length, to a tenth of a point within 0.9 of the whole length p, that best fits
    the prepared buffer x (six cycles give a tenth: the fifth multiple's lag moves a point
    every 0.2). A cycle of 24.4 points fitted as 24 slides a slot every 2.5 cycles; the
    profile chases it, and its residuals swing with the slide, so the noise scale widens and
    small anomalies go unseen. p itself unless a fraction fits better by FRACTION_Z times
    the misfit's sampling sd (each term a variance of m differences, whose relative
    variance is 2 / m): on a whole cycle the tenths around it only trade noise."""
    n = x.shape[0]
    d, w, at = np.empty(n), np.empty(n), np.full(n, np.nan)
    whole = _cycle_misfit(x, float(p), at, d, w)
    best, fit = float(p), whole
    for j in range(-9, 10):
        c = p + j / 10
        if j == 0 or c < 4 or c > n / 2:
            continue
        m = _cycle_misfit(x, c, at, d, w)
        if m < fit:
            best, fit = c, m
    rel = 0.0  # the misfit's relative variance: its terms' 2 / m, m pairs at each lag
    for lag in _cycle_lags(n, float(p)):
        rel += 2.0 / (n - lag)
    sd = at[p] * math.sqrt(rel)  # scaled by the first term: noise, hardly any slide
    return best if whole - fit > FRACTION_Z * sd else float(p)


@njit(cache=True)
def prepared(x: np.ndarray) -> np.ndarray:
    """The period search's view of a buffer, in place: gaps filled, trend removed, outliers
    clipped. Compiled: it runs at every search, dozens of times a series."""
    n = x.shape[0]
    last = 0
    for i in range(n):  # held-back points: the last kept value stands in
        if x[i] == x[i]:
            last = i
        x[i] = x[last]
    w = np.empty(n)  # scratch for the medians
    k = 0
    for i in range(n):
        if x[i] == x[i]:
            w[k] = x[i]
            k += 1
    fill = median_of(w, k) if k else 0.0
    for i in range(n):
        if x[i] != x[i]:
            x[i] = fill
    mi, mx = (n - 1) / 2.0, x.mean()  # a trend is not a cycle: least-squares line out
    sxy = sxx = 0.0
    for i in range(n):
        sxy += (i - mi) * (x[i] - mx)
        sxx += (i - mi) * (i - mi)
    slope = sxy / sxx if sxx > 0 else 0.0
    for i in range(n):
        x[i] -= mx + slope * (i - mi)
    w[:] = x
    med = median_of(w, n)
    for i in range(n):
        w[i] = abs(x[i] - med)
    lim = 5 * 1.4826 * median_of(w, n) + 1e-12
    for i in range(n):  # nor is a burst of outliers
        x[i] = min(max(x[i], med - lim), med + lim)
    return x


@njit(cache=True)
def _acf(r: np.ndarray, x: np.ndarray, var: float, k: int) -> float:
    """The autocorrelation of x at lag k (unbiased: each lag's mean product over var),
    computed the first time it is read: r holds NaN until then. A search reads the lags up
    to a third of the buffer and the multiples of its few peaks, not every lag."""
    v = r[k]
    if v != v:
        m = x.shape[0] - k
        # four running sums, not one: each addition no longer waits for the one before it
        # (a lag's sum took ~4 cycles a point); the order of a sum's terms moves only its
        # last bits, as the FFT's lags differ from these
        a = b = c = d = 0.0
        i = 0
        while i + 4 <= m:
            a += x[i] * x[i + k]
            b += x[i + 1] * x[i + 1 + k]
            c += x[i + 2] * x[i + 2 + k]
            d += x[i + 3] * x[i + 3 + k]
            i += 4
        while i < m:
            a += x[i] * x[i + k]
            i += 1
        v = r[k] = ((a + b) + (c + d)) / (var * m)
    return v


@njit(cache=True)
def _peak(r: np.ndarray, x: np.ndarray, var: float, p: int) -> bool:
    """A local maximum of the autocorrelation at lag p."""
    at = _acf(r, x, var, p)
    return at > _acf(r, x, var, p - 1) and at >= _acf(r, x, var, p + 1)


@njit(cache=True)
def _strong(r: np.ndarray, x: np.ndarray, var: float, p: int) -> bool:
    """A cycle of p points: a peak well above the trough half a cycle earlier, and strong
    again at each multiple the buffer holds (a burst or a trend is not a cycle)."""
    n = x.shape[0]
    at = _acf(r, x, var, p)
    if not (at > 0.4 and at - _acf(r, x, var, p // 2) > 0.7):
        return False
    lo, total, k = math.inf, 0.0, 0
    for j in range(p, max(p, n - p // 2), p):
        v = _acf(r, x, var, j)
        lo = min(lo, v)
        total += v
        k += 1
    return lo > 0.25 and total / k > 0.4


@njit(cache=True)
def choose_period(
    x: np.ndarray, r: np.ndarray, var: float, hi: int, max_period: int, step: float
) -> int:
    """`find_period`'s choice from the autocorrelation r of the prepared buffer x (see
    there): r may be all computed, or NaN where `_acf` is to compute it when read. Compiled,
    as it looks at every lag and then fits each length near the winner."""
    n = x.shape[0]
    if math.isfinite(step) and step > 0:  # calendar cycles first, at their exact lag
        best_q, best_v = -1, -math.inf
        for c in (86_400.0, 3_600.0, 604_800.0):
            q = c / step
            k = int(round(q))
            if abs(q - k) < 0.01 and 4 <= q <= hi and _strong(r, x, var, k) and r[k] > best_v:
                best_q, best_v = k, r[k]
        if best_q > 0:
            return best_q
    # a peak just past the last lag allowed may be a cycle of exactly that length
    top = min(n - 2, hi + 3)
    best = -math.inf
    for p in range(4, top):
        if _peak(r, x, var, p) and _strong(r, x, var, p):
            best = max(best, r[p])
    if best == -math.inf:
        return 0
    p0 = 0
    for p in range(4, top):  # the shortest strong peak near the best
        if _peak(r, x, var, p) and _strong(r, x, var, p) and r[p] >= 0.85 * best:
            p0 = p
            break
    # its length: the whole number of points near it whose multiples line up best
    return best_length(x, p0, max(4, int(0.92 * p0)), min(int(1.08 * p0) + 1, max_period))


# Up to this many points a search computes the autocorrelation lag by lag as it reads it
# (~4-16 us at 48-192 points, against ~19-26 us for numpy's FFTs); past it, by FFT
# (at 288 points the two cost the same, 62-66 us with a cycle; at 384 the FFT wins).
DIRECT_ACF_MAX = 256


@njit(cache=True)
def search_ready(x: np.ndarray, max_period: int) -> tuple[int, float]:
    """A search's first steps on the buffer x (prepared in place): the longest lag it tries
    and the variance, or (0, 0.0) when there is nothing to look for. `find_period`'s FFT path
    and `period_direct` share them; numba's `np.dot` is numpy's `x @ x` (the same BLAS call),
    so either path sees the same variance to the bit."""
    n = x.shape[0]
    hi = min(max_period, n // 3)
    if hi < 4:
        return 0, 0.0
    prepared(x)
    var = np.dot(x, x) / n
    return (hi, var) if var > 0 else (0, 0.0)


@njit(cache=True)
def period_direct(x: np.ndarray, max_period: int, step: float) -> int:
    """`find_period` over the buffer x (overwritten) of at most DIRECT_ACF_MAX points, each lag
    of the autocorrelation computed when read: one compiled call, so a search the stream's
    kernel runs needs no Python, and the object's costs one call rather than five."""
    hi, var = search_ready(x, max_period)
    if not hi:
        return 0
    return choose_period(x, np.full(x.shape[0], np.nan), var, hi, max_period, step)


@njit(cache=True)
def buffered(offsets: np.ndarray, base: float) -> np.ndarray:
    """A search or re-fit buffer's values: its float32 offsets from `base`, as doubles."""
    x = np.empty(offsets.shape[0])
    for i in range(offsets.shape[0]):
        x[i] = offsets[i] + base
    return x


@njit(cache=True)
def search_buffer(st: np.ndarray, buf: np.ndarray) -> int:
    """The search due on the buffer, where `period_direct` does it (no period given, at most
    DIRECT_ACF_MAX points): the cycle found, 0 for none; -1 where it is the FFT's, in Python."""
    nb = int(st[NBUF])
    if st[PERIOD_PARAM] >= 0 or nb > DIRECT_ACF_MAX:
        return -1
    return period_direct(buffered(buf[:nb], st[BUF0]), int(st[MAXP]), st[STEP])
