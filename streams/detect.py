"""The detect stage as plain logic: windows, one detector per series, episodes, ack tokens.

Delivery: every observation arrives with a token (a Kafka message). A token becomes ready
to ack only when every row its observations produced is in the output handed to the sink,
including windows still open when it arrived. The caller writes `drain()`'s rows and only
then acks its tokens, so offsets never run ahead of what ClickHouse holds (at-least-once),
and rows are keyed so a replay replaces instead of duplicating.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from detectors.base import Detector
from detectors.episodes import (
    Episode,
    EpisodeChanges,
    EpisodeTracker,
    episode_id,
    severity,
)
from detectors.forecast import LagForecaster
from detectors.model_core import FALLBACK, WHY_FALLBACK, WHY_SHIFT
from detectors.robust_core import EVIDENCE
from stormwatch.store import row_count
from streams.checkpoints import encode_state, readable_states
from streams.columns import PointRows, by_series
from streams.series import AGG_LAST, AGG_RATE, Obs, Series
from streams.tokens import TokenLedger
from streams.wire import Points

DRIFT_COLUMNS = [
    "ts", "series_id", "kind", "name", "service", "labels", "detector", "detector_version",
    "before_mean", "after_mean", "before_std", "after_std", "explanation",
]  # fmt: skip
SHADOW_COLUMNS = ["series_id", "ts", "detector", "detector_version", "score"]
MIN_ERRORS = 3  # an error-rate window with fewer errors is too little evidence to alert on
MAX_ZERO_FILL = 360  # rate series: at most this many empty windows become zeros


@dataclass
class _Window:
    total: float = 0.0
    n: int = 0
    tokens: set[Hashable] = field(default_factory=set)


@dataclass
class _SeriesState:
    sid: int
    meta: Series
    detector: Detector
    episodes: EpisodeTracker
    agg: int
    windows: dict[int, _Window] = field(default_factory=dict)
    watermark: int = -1
    last_closed: int = -1  # start of the last closed window
    last_seen_wall: float = 0.0
    emitted: int = 0  # points since the open episode was last published
    last_ts: int = -1  # latest sample time scored (passthrough series)
    forecaster: Any = None  # queue lag series: a LagForecaster
    breach_ms: int = -1  # start of the open predicted-breach episode
    replayed_upto: int = -1  # restored from a checkpoint: samples up to here are stored already
    labels: dict[str, str] = field(init=False)  # one dict shared by every row of the series
    row: tuple[Any, ...] = field(init=False)  # the series' columns of a points row

    def __post_init__(self) -> None:
        m = self.meta
        self.labels = m.label_dict()
        self.row = (self.sid, m.kind, m.name, m.service, self.labels, self.detector.name,
                    self.detector.version)  # fmt: skip


@dataclass
class Output:
    points: PointRows | list[list[Any]]  # column-oriented, POINT_COLUMNS
    episodes: list[Episode]
    tokens: list[Hashable]
    drift: list[list[Any]] = field(default_factory=list)  # rows, DRIFT_COLUMNS
    shadow: list[list[Any]] = field(default_factory=list)  # rows, SHADOW_COLUMNS

    @property
    def rows(self) -> int:
        return row_count(self.points)


@dataclass
class Counters:
    observations: int = 0
    points: int = 0
    late: int = 0
    replayed: int = 0
    episodes_opened: int = 0
    unrestored: int = 0  # checkpoints skipped as unreadable


class DetectStage:
    """Holds the per-series state of the partitions this worker owns."""

    def __init__(
        self,
        make_detector: Callable[[], Detector],
        *,
        window_s: float = 10.0,
        lateness_s: float = 5.0,
        threshold: float = 0.9,
        wall_clock: Callable[[], float] = time.monotonic,
        lag_threshold: float | None = None,
        horizon_s: float = 300.0,
    ) -> None:
        self.make_detector = make_detector
        self.window_ms = int(window_s * 1000)
        self.lateness_ms = int(lateness_s * 1000)
        self.threshold = threshold
        self.clock = wall_clock
        self.lag_threshold = lag_threshold  # queue lag forecasts: off when None
        self.horizon_s = horizon_s
        self.series: dict[int, _SeriesState] = {}
        self.counters = Counters()
        self._tokens = TokenLedger()
        self._rows: list[PointRows] = []  # scored, not drained yet
        self._buffered = 0
        self._episodes = EpisodeChanges()
        self._dirty: set[int] = set()  # series scored since the last snapshot
        # series that may hold open windows: the idle timer walks these, not every series
        # (5 ms a tick at 100k metric series, 25 ms at 500k, for windows none of them had)
        self._windowed: dict[int, _SeriesState] = {}
        self._drift: list[list[Any]] = []
        self._shadow: list[list[Any]] = []

    # -- input ------------------------------------------------------------------------------
    def add(self, obs: Iterable[Obs], meta: dict[int, Series], token: Hashable) -> None:
        """Take one message's observations; `token` is released once their rows are out."""
        self._tokens.hold(token)  # held while we work
        if isinstance(obs, Points) and self._add_passthrough(obs, meta):
            self._tokens.release(token)
            return
        now = self.clock()
        touched: set[int] = set()
        direct: dict[int, tuple[list[int], list[float]]] = {}  # pass-through points, in order
        series, count = self.series, 0
        for sid, ts_ms, value, agg in obs:
            count += 1
            st = series.get(sid)
            if st is None:
                st = series[sid] = _SeriesState(
                    sid, meta[sid], self.make_detector(), EpisodeTracker(high=self.threshold), agg
                )  # fmt: skip
            if st.agg == AGG_LAST:
                if ts_ms <= st.replayed_upto:
                    self.counters.replayed += 1  # scored and stored before the checkpoint
                    continue
                d = direct.get(sid)
                if d is None:
                    direct[sid] = ([ts_ms], [value])
                else:
                    d[0].append(ts_ms)
                    d[1].append(value)
                continue
            st.last_seen_wall = now
            start = ts_ms - ts_ms % self.window_ms
            if start <= st.last_closed:
                self.counters.late += 1
                continue
            w = st.windows.get(start)
            if w is None:
                w = st.windows[start] = _Window()
                self._windowed[sid] = st
            w.total += value
            w.n += 1
            if token not in w.tokens:
                w.tokens.add(token)
                self._tokens.hold(token)
            if ts_ms > st.watermark:
                st.watermark = ts_ms
            touched.add(sid)
        self.counters.observations += count
        if direct:
            ts_all: list[int] = []
            values_all: list[float] = []
            groups: list[tuple[_SeriesState, int, int]] = []
            for sid, (ts, values) in direct.items():
                st = self.series[sid]
                groups.append((st, len(ts_all), len(ts_all) + len(ts)))
                ts_all += ts
                values_all += values
                st.last_ts = max(st.last_ts, max(ts))
            self._score(groups, ts_all, values_all, [1] * len(ts_all))
        for sid in touched:
            st = self.series[sid]
            self._close(st, st.watermark - self.lateness_ms)
        self._tokens.release(token)

    def _add_passthrough(self, p: Points, meta: dict[int, Series]) -> bool:
        """A message of pass-through points only (metrics, queue gauges: the common case),
        grouped by series with numpy, not a loop per point; False (nothing done) for any
        other message. Each series keeps its points' arrival order."""
        n = len(p)
        aggs = np.asarray(p.aggs)
        if not n or aggs.min() != AGG_LAST or aggs.max() != AGG_LAST:
            return False
        order, run_sids, starts, ends = by_series(np.asarray(p.sids).astype(np.int64))
        series, states = self.series, []
        for sid in run_sids.tolist():
            st = series.get(sid)
            if st is None:
                st = series[sid] = _SeriesState(
                    sid, meta[sid], self.make_detector(), EpisodeTracker(high=self.threshold),
                    AGG_LAST,
                )  # fmt: skip
            elif st.agg != AGG_LAST:
                return False  # not expected: a series' kind fixes its aggregation
            states.append(st)
        self.counters.observations += n
        ts = np.asarray(p.ts, dtype=np.int64)[order]
        ys = np.asarray(p.values, dtype=np.float64)[order]
        if any(st.replayed_upto >= 0 for st in states):
            keep = np.ones(n, bool)
            for st, a, b in zip(states, starts.tolist(), ends.tolist(), strict=True):
                if st.replayed_upto >= 0:
                    keep[a:b] = ts[a:b] > st.replayed_upto
            kept = np.concatenate(([0], np.cumsum(keep)))
            self.counters.replayed += n - int(kept[-1])  # scored and stored before
            starts, ends, ts, ys = kept[starts], kept[ends], ts[keep], ys[keep]
        groups = [g for g in zip(states, starts.tolist(), ends.tolist(), strict=True)
                  if g[2] > g[1]]  # fmt: skip
        if not groups:
            return True
        latest = np.maximum.reduceat(ts, [a for _, a, _ in groups]).tolist()
        for (st, _, _), t in zip(groups, latest, strict=True):
            if t > st.last_ts:
                st.last_ts = t
        self._score(groups, ts, ys, None)
        return True

    def close_idle(self) -> None:
        """Close windows of series that got nothing for a window plus the lateness (wall time)."""
        idle = (self.window_ms + self.lateness_ms) / 1000
        now = self.clock()
        for sid, st in list(self._windowed.items()):
            if st.windows and now - st.last_seen_wall >= idle:
                self._close(st, max(st.windows) + self.window_ms)
            if not st.windows:
                del self._windowed[sid]

    # -- output -----------------------------------------------------------------------------
    def drain(self) -> Output:
        """Rows and episodes produced so far, and the tokens safe to ack once they are written."""
        out = Output(
            PointRows.concat(self._rows),
            self._episodes.take(),
            self._tokens.take_ready(),
            self._drift,
            self._shadow,
        )
        self._rows, self._buffered = [], 0
        self._drift, self._shadow = [], []
        return out

    @property
    def buffered_rows(self) -> int:
        return self._buffered

    def apply_feedback(self, series_id: int, label: str) -> bool:
        """A person's label changes what the series' model flags (not_anomaly / expected:
        that pattern stops alerting; new_normal: re-baseline now). False: not our series."""
        st = self.series.get(series_id)
        if st is None:
            return False
        st.detector.apply_feedback(label)
        self._dirty.add(series_id)  # the next checkpoint carries it
        return True

    # -- partitions and checkpoints ------------------------------------------------------------
    def drop_partitions(self, parts: set[int], partitions: int) -> None:
        """Forget series and held messages of partitions this worker no longer owns: the new
        owner replays them from the committed offset."""
        for sid in [s for s in self.series if s % partitions in parts]:
            del self.series[sid]
            self._dirty.discard(sid)
            self._windowed.pop(sid, None)
        self._tokens.forget_where(lambda t: isinstance(t, tuple) and t[0] in parts)

    def snapshot(self) -> dict[int, str]:
        """State of every series scored since the last snapshot, for a checkpoint. Open windows
        are left out: their messages are not acked, so a restart replays them."""
        out = {}
        for sid in self._dirty:
            st = self.series.get(sid)
            if st is None:
                continue
            blob = (st.meta, st.detector, st.episodes, st.agg, st.last_closed, st.last_ts,
                    st.forecaster, st.breach_ms)  # fmt: skip
            out[sid] = encode_state(blob)
        self._dirty.clear()
        return out

    def restore(self, states: dict[int, str]) -> int:
        """Resume series from checkpoints (written by this pipeline to its own store). A
        checkpoint this release cannot read (an older model format) is skipped: that series
        starts afresh and re-scores what the topic replays."""
        blobs, unreadable = readable_states(states, "series")
        self.counters.unrestored += unreadable
        for sid, blob in blobs.items():
            meta, det, episodes, agg, last_closed, last_ts, forecaster, breach_ms = blob
            self.series[sid] = _SeriesState(
                sid, meta, det, episodes, agg, last_closed=last_closed, last_ts=last_ts,
                replayed_upto=last_ts, forecaster=forecaster, breach_ms=breach_ms,
            )  # fmt: skip
        return len(blobs)

    # -- internals --------------------------------------------------------------------------
    def _close(self, st: _SeriesState, upto_ms: int) -> None:
        """Close, in time order, every open window that ends at or before `upto_ms`."""
        ts: list[int] = []
        values: list[float] = []
        ns: list[int] = []
        tokens: list[Hashable] = []
        for start in sorted(st.windows):
            if start + self.window_ms > upto_ms:
                break
            w = st.windows.pop(start)
            if st.agg == AGG_RATE and st.last_closed >= 0:
                gap = (start - st.last_closed) // self.window_ms - 1
                for k in range(1, min(gap, MAX_ZERO_FILL) + 1):
                    ts.append(st.last_closed + k * self.window_ms)
                    values.append(0.0)
                    ns.append(0)
            value = w.total / (self.window_ms / 1000) if st.agg == AGG_RATE else w.total / w.n
            ts.append(start)
            values.append(value)
            ns.append(w.n)
            st.last_closed = start
            tokens.extend(w.tokens)
        if ts:
            self._score([(st, 0, len(ts))], ts, values, ns)
        for t in tokens:
            self._tokens.release(t)

    def _score(
        self, groups: list[tuple[_SeriesState, int, int]], ts: list[int] | np.ndarray,
        values: list[float] | np.ndarray, ns: list[int] | None,
    ) -> None:  # fmt: skip
        """Score points with what each series' model learned before each, and learn them;
        `groups` gives each series' range of the (time-ordered) points. The verdicts of all
        the series land in shared arrays and become one `PointRows` batch (a series' own
        columns once per group): a message holds few points per series, so per-series work,
        not per-point, is what costs."""
        n, thr = len(ts), self.threshold
        ts_ms = np.asarray(ts, dtype=np.int64)
        tsa = ts_ms / 1000
        ys = np.array(values, dtype=np.float64)
        counts = np.ones(n, np.int64) if ns is None else np.array(ns, np.int64)
        score, band, raw = np.empty(n), np.empty((n, 3)), np.empty(n)
        flags = np.zeros(n, np.int8)
        weak_rate = False
        dirty = self._dirty
        for st, a, b in groups:
            model, m = st.detector, st.meta
            weak_rate = weak_rate or m.name == "error_rate"
            dirty.add(st.sid)
            drift, shadow = model.update_into(tsa, ys, a, b, score, band, raw, flags)
            for j, d in drift:
                self._drift.append([
                    int(ts_ms[j]), st.sid, m.kind, m.name, m.service, st.labels, model.name,
                    model.version, d.before_mean, d.after_mean, d.before_std, d.after_std,
                    d.explanation,
                ])  # fmt: skip
            if shadow is not None and model.shadow_ is not None:
                sh = model.shadow_
                self._shadow.extend([st.sid, int(ts_ms[a + i]), sh.name, sh.version, s]
                                    for i, s in enumerate(shadow) if s is not None)  # fmt: skip
        if weak_rate:
            # One failed request in twenty reads as a huge jump on a series that was all
            # zeros; the model cannot know a proportion of few trials is weak evidence.
            rate = np.zeros(n, bool)
            for st, a, b in groups:
                rate[a:b] = st.meta.name == "error_rate"
            weak = rate & (ys * counts < MIN_ERRORS - 0.5)
            score = np.where(weak, np.minimum(score, thr * 0.9), score)
        hot = score >= thr
        self._rows.append(PointRows([(st.row, b - a) for st, a, b in groups], ts_ms, ys, counts,
                                    score, band, hot, (flags & FALLBACK) != 0))  # fmt: skip
        self._buffered += n
        self.counters.points += n
        hot_groups: set[int] = set()
        if hot.any():  # the groups (series) with a point at the threshold
            starts = np.array([a for _, a, _ in groups])
            hot_groups = set(np.searchsorted(starts, np.flatnonzero(hot), "right").tolist())
        # the series whose points go through episodes (and forecasts) one by one
        tracked: list[tuple[_SeriesState, int, int, bool]] = []
        for g, (st, a, b) in enumerate(groups, 1):
            m = st.meta
            forecast = self.lag_threshold is not None and m.kind == "queue" and m.name == "lag"
            if forecast or st.episodes.is_open or g in hot_groups:
                tracked.append((st, a, b, forecast))
        if not tracked:
            return
        # Python numbers for their points: a whole message's columns cost ~0.5 us a point (the
        # band's small lists most), which a message with few series tracked paid for all of
        # its points; a series' slices cost ~3 us plus ~0.15 a point
        cols = (ts_ms, score, ys, band, flags >> WHY_SHIFT)
        whole = [c.tolist() for c in cols] if 6 * len(tracked) >= n else None
        for st, a, b, forecast in tracked:
            t_, s_, v_, b_, w_ = whole or [c[a:b].tolist() for c in cols]
            o = 0 if whole else a  # where the lists start in the message
            for j in range(a - o, b - o):
                self._track(st, st.sid, t_[j], s_[j], v_[j], b_[j], w_[j])
                if forecast:
                    self._forecast(st, t_[j], v_[j])

    def _forecast(self, st: _SeriesState, ts_ms: int, lag: float) -> None:
        """Predict a lag breach before it happens (the trigger for predictive scaling): an
        episode with the signal `predicted_breach`, open until the forecast falls back."""
        if st.forecaster is None:
            st.forecaster = LagForecaster(self.lag_threshold, horizon_s=self.horizon_s)
        fc = st.forecaster
        breach = fc.update(ts_ms / 1000, lag)
        if breach is not None:
            # One ms after its point: never the key (start, series) of an anomaly episode.
            st.breach_ms = ts_ms + 1
            self._episodes.add(
                (st.sid, st.breach_ms),
                self._breach_episode(st, breach, ts_ms, open_=True),
                "open",
            )
        elif st.breach_ms >= 0 and fc.forecast(self.horizon_s) < fc.threshold:
            self._episodes.add(
                (st.sid, st.breach_ms),
                self._breach_episode(st, None, ts_ms, open_=False),
                "close",
            )
            st.breach_ms = -1

    def _breach_episode(self, st: _SeriesState, b: Any, ts_ms: int, *, open_: bool) -> Episode:
        m, fc = st.meta, st.forecaster
        ahead = fc.forecast(self.horizon_s)
        text = b.explanation if b is not None else (
            f"queue lag forecast back under {fc.threshold:.4g} "
            f"({ahead:.4g} in {self.horizon_s:.0f}s)"
        )  # fmt: skip
        return Episode(
            episode_id=episode_id(st.sid, st.breach_ms), series_id=st.sid, start_ms=st.breach_ms,
            end_ms=max(ts_ms, st.breach_ms), is_open=open_, peak_score=self.threshold,
            peak_value=ahead,
            expected=fc.level_, lower=0.0, upper=fc.threshold, severity="major", kind=m.kind,
            name=m.name, service=m.service, labels=m.label_dict(),
            signals=[f"{m.kind}.{m.name}", "predicted_breach"], explanation=text,
            detector=fc.name, detector_version=fc.version, points=1,
        )  # fmt: skip

    def _track(self, st: _SeriesState, sid: int, ts_ms: int, score: float, value: float,
               band: tuple[float, float, float], why: int = 0) -> None:  # fmt: skip
        ep = st.episodes
        change = ep.update(ts_ms, score, value, band, why)
        if change is None:
            return
        if change == "open":
            self.counters.episodes_opened += 1
        st.emitted += 1
        if change == "grow" and st.emitted < 6 and score < ep.peak[0]:
            return  # throttle: publish growth every few points or on a new peak
        st.emitted = 0
        snap = (ep.start_ms, ep.end_ms, ep.points, ep.peak)  # the tracker moves on
        self._episodes.add(
            (sid, ep.start_ms),
            partial(
                build_episode, st.meta, sid, snap, st.detector, closed=change == "close", why=ep.why
            ),
            change,
        )
        if change == "close":
            ep.reset()


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.4g}"


# Why a point inside the single-point range was flagged, by reason code (1 + the index of the
# robust detector's test in robust_core.EVIDENCE; model_core.WHY_FALLBACK: the median/MAD rule)
WHY_INSIDE = {
    1 + EVIDENCE.index("point"): "two wide points in a row on the same side",
    1 + EVIDENCE.index("shift"): "a level shift: the last few points sit off expected together",
    1 + EVIDENCE.index("mid"): "a sustained shift: the last few dozen points lean one way",
    1 + EVIDENCE.index("var"): "a change in spread: more wide points than usual",
    1 + EVIDENCE.index("drift"): "a drift: the level moved slowly away from its long-run mean",
    1 + EVIDENCE.index("stuck"): "a repeated value: the same reading again and again",
    WHY_FALLBACK: "the median/MAD rule over the recent points, while the model warms up",
}
WHY_UNKNOWN = (
    "what the recent points do together: a run of wide points, a level shift, a change in "
    "spread, a drift or a repeated value"
)


def build_episode(
    m: Series,
    sid: int,
    snap: tuple[int, int, int, tuple[float, float, float, float, float]],
    det: Detector,
    *,
    closed: bool,
    why: int = 0,
) -> Episode:
    """The episode of series `m` from a tracker's (start, end, points, peak); `why` is the
    peak's reason code (0: not known)."""
    start_ms, end_ms, points, (score, value, expected, lower, upper) = snap
    where = " ".join(f"{k}={v}" for k, v in m.labels if v)
    ratio = f", {value / expected:.2g}x expected" if expected and math.isfinite(expected) else ""
    # The range is what one point alone must leave; the detector also weighs the recent points
    # together, so a peak inside it was flagged for them: say so rather than look wrong.
    inside = math.isfinite(lower) and math.isfinite(upper) and lower <= value <= upper
    if why == WHY_FALLBACK:
        reason = f"; flagged by {WHY_INSIDE[why]}"
    elif inside:
        says = WHY_INSIDE.get(why, WHY_UNKNOWN)
        reason = f"; inside the range a single point may reach, flagged for {says}"
    else:
        reason = ""
    explanation = (
        f"{m.kind}.{m.name} of {m.service or '-'} [{where}] peaked at {_fmt(value)} vs expected "
        f"{_fmt(expected)} (normal range {_fmt(lower)} to {_fmt(upper)}{ratio}{reason}); score "
        f"{score:.3f} from {det.name} v{det.version} over {points} point(s)"
    )
    return Episode(
        episode_id=episode_id(sid, start_ms), series_id=sid, start_ms=start_ms,
        end_ms=end_ms, is_open=not closed, peak_score=score, peak_value=value,
        expected=expected, lower=lower, upper=upper, severity=severity(score), kind=m.kind,
        name=m.name, service=m.service, labels=m.label_dict(), signals=[f"{m.kind}.{m.name}"],
        explanation=explanation, detector=det.name, detector_version=det.version,
        points=points,
    )  # fmt: skip
