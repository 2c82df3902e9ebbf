"""The service stage as plain logic: one service's signals, aligned into vectors and scored
by its multivariate model (detectors/multivariate.py), with episodes naming the signals.

The points topic is keyed by series, so one service's signals are scored by many detect
workers. Each publishes what it scored as records (service, signal, bucket time, sum, count:
`ServicePoint`), sent as columns a service (`ServiceBatch`), to a topic keyed by service;
one `ServiceStage` per service partition aligns them into time buckets, closes a bucket once
the service's watermark passes its end plus the lateness, and scores the bucket's vector
before learning it (causal).

Delivery is DetectStage's rule: a token (a services message) is ready to ack only once every
bucket its records fell into is closed and its rows are in `drain()`'s output.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import orjson

from detectors.episodes import Episode, EpisodeChanges, EpisodeTracker, episode_id, severity
from detectors.multivariate import ServiceModel
from streams.checkpoints import encode_state, readable_states
from streams.columns import POINT_COLUMNS, PointRows
from streams.detect import Output
from streams.series import Series, make_series, series_id
from streams.tokens import TokenLedger

MAX_LABEL = 48  # a label value longer than this is cut in a signal key (statements)
MIN_Z = 3.0  # a contributor is at least this unusual on its own (robust z against its window)
MIN_SHARE = 0.1  # ... and carries at least this share of the vector's unusualness
MAX_CONTRIBUTORS = 5
_TRANSIENT = ("U_l", "U_r", "U_skew", "O")  # ECOD's per-call arrays: recomputed when scoring


class ServicePoint(NamedTuple):
    """A service's signal in one bucket, as published by a detect worker: the sum of its `n`
    scored points there (the stage averages a bucket anyway), stamped with the latest."""

    service: str
    signal: str
    ts_ms: int
    value: float  # the sum of n values
    n: int = 1


# service → its records as columns (signals, latest times, sums, counts): how a detect worker
# publishes them and the stage takes them, with no object a record
ServiceBatch = dict[str, tuple[list[str], list[int], list[float], list[int]]]


def signal_key(s: Series) -> str:
    """A readable, stable name for a series within its service, e.g.
    `span.latency_ms{operation=GET /cart}`; long label values are cut (the fingerprint of a
    statement keeps DB signals apart)."""
    labels = ",".join(
        f"{k}={v if len(v) <= MAX_LABEL else v[: MAX_LABEL - 1] + '…'}" for k, v in s.labels if v
    )
    return f"{s.kind}.{s.name}{{{labels}}}" if labels else f"{s.kind}.{s.name}"


def service_series(service: str) -> Series:
    return make_series("service", "multivariate", service)


@lru_cache(maxsize=100_000)  # asked for every record a detect worker publishes
def service_partition(service: str, partitions: int) -> int:
    """Which services partition a service lives on: one service always meets one stage."""
    h = hashlib.blake2b(service.encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") % partitions


class ServicePoints:
    """The records a detect worker publishes for the column-oriented rows (POINT_COLUMNS) it
    just wrote: one per service, signal and bucket of `bucket_ms`, for series that belong to
    a service (the service series themselves, kind `service`, are left out). One record per
    bucket, not per point: ten times fewer messages to encode, send and decode at 1 s
    samples and 10 s buckets, and the stage sees the same bucket means."""

    MAX_KEYS = 500_000

    def __init__(self, bucket_ms: int) -> None:
        self.bucket_ms = bucket_ms
        self._keys: dict[int, str] = {}  # series id → signal key

    def _key(self, sid: int, kind: str, name: str, service: str, labels: dict[str, str]) -> str:
        key = self._keys.get(sid)
        if key is None:
            key = signal_key(Series(kind, name, service, tuple(sorted(labels.items()))))
            if len(self._keys) >= self.MAX_KEYS:
                self._keys.clear()
            self._keys[sid] = key
        return key

    def __call__(self, points: Sequence[Sequence[Any]]) -> ServiceBatch:
        if isinstance(points, PointRows):
            ts, value = points.ts, points.value
            metas = [(r[0], r[1], r[2], r[3], r[4]) for r, _ in points.runs]
            lengths = points.lengths
        else:
            col = {c: points[i] for i, c in enumerate(POINT_COLUMNS)}
            if not len(col["series_id"]):
                return {}
            sid = np.array(col["series_id"], dtype=np.int64)
            ts = np.array(col["ts"], dtype=np.int64)
            value = np.array(col["value"], dtype=np.float64)  # NULL -> NaN
            # a series' kind, name, service and labels are part of its id: read once per run
            # of its rows (the stage writes each series' points together)
            starts = np.flatnonzero(np.concatenate(([True], sid[1:] != sid[:-1])))
            metas = [(col["series_id"][i], col["kind"][i], col["name"][i], col["service"][i],
                      col["labels"][i]) for i in starts.tolist()]  # fmt: skip
            lengths = np.diff(np.append(starts, len(sid)))
        # each run's signal: its rank among this block's (service, signal) pairs, sorted so a
        # service's signals are neighbours; -1: not a service's series
        known, numbers = self._keys, {}
        found = np.full(len(metas), -1, np.int64)
        for r, (s, kind, name, svc, labels) in enumerate(metas):  # a series, not a point
            if svc and kind != "service":
                key = known.get(s) or self._key(s, kind, name, svc, labels)
                found[r] = numbers.setdefault((svc, key), len(numbers))
        if not numbers:
            return {}
        pairs = sorted(numbers)
        rank = np.empty(len(pairs), np.int64)
        rank[[numbers[p] for p in pairs]] = np.arange(len(pairs))
        signal = np.where(found >= 0, rank[found.clip(0)], -1).repeat(lengths)
        rows = np.flatnonzero(np.isfinite(value) & (signal >= 0))
        if not len(rows):
            return {}
        # sum, count and latest time per signal and bucket (two series cut to one signal
        # name are one signal), in numpy: no Python a point or a record
        signal, ts, vals = signal[rows], ts[rows], value[rows]
        bucket = ts - ts % self.bucket_ms
        order = np.lexsort((bucket, signal))
        signal, ts, vals, bucket = signal[order], ts[order], vals[order], bucket[order]
        new = np.ones(len(signal), bool)
        new[1:] = (signal[1:] != signal[:-1]) | (bucket[1:] != bucket[:-1])
        first = np.flatnonzero(new)
        group = signal[first]
        sums = np.add.reduceat(vals, first)
        latest = np.maximum.reduceat(ts, first)
        counts = np.diff(np.append(first, len(signal)))
        names = np.array([key for _, key in pairs], dtype=object)
        services: list[str] = []
        service_of = np.empty(len(pairs), np.int64)  # rank → index into services
        for i, (svc, _) in enumerate(pairs):
            if not services or services[-1] != svc:
                services.append(svc)
            service_of[i] = len(services) - 1
        owner = service_of[group]
        bounds = [0, *(np.flatnonzero(np.diff(owner)) + 1).tolist(), len(group)]
        out: ServiceBatch = {}
        for lo, hi in zip(bounds, bounds[1:]):  # noqa: B905 - one shorter by design
            out[services[owner[lo]]] = (names[group[lo:hi]].tolist(), latest[lo:hi].tolist(),
                                        sums[lo:hi].tolist(), counts[lo:hi].tolist())  # fmt: skip
        return out


def batch_of(records: Iterable[ServicePoint]) -> ServiceBatch:
    """Records as a batch (columns per service), in their order."""
    out: ServiceBatch = {}
    for r in records:
        cols = out.setdefault(r.service, ([], [], [], []))
        for c, v in zip(cols, (r.signal, r.ts_ms, r.value, r.n), strict=True):
            c.append(v)
    return out


def encode_service_points(batch: ServiceBatch) -> bytes:
    """A batch as a message: each service's columns (`c`), its name written once."""
    return orjson.dumps({"c": batch})


def decode_service_points(raw: bytes) -> ServiceBatch:
    """A batch of `encode_service_points`; also the rows of an earlier release (`v`: a record
    a row, with or without a count), as the same batch."""
    doc = orjson.loads(raw)
    if "c" in doc:
        out: ServiceBatch = {}
        for svc, (signals, stamps, values, counts) in doc["c"].items():
            if not len(signals) == len(stamps) == len(values) == len(counts):
                raise ValueError(f"service {svc!r}: columns of different lengths")
            out[str(svc)] = (signals, stamps, values, counts)
        return out
    return batch_of(
        ServicePoint(
            svc, str(row[0]), int(row[1]), float(row[2]), int(row[3]) if len(row) > 3 else 1
        )  # fmt: skip
        for svc, rows in doc["v"].items()
        for row in rows
    )


class _Signal(NamedTuple):
    signal: str
    value: float
    typical: float  # the window's median
    spread: float  # the window's robust sigma (MAD x 1.4826, floored)
    share: float  # of the vector's unusualness

    @property
    def z(self) -> float:
        return abs(self.value - self.typical) / self.spread


@dataclass
class _Bucket:
    values: dict[str, tuple[float, int]] = field(default_factory=dict)  # signal -> sum, n
    tokens: set[Hashable] = field(default_factory=set)


@dataclass
class _ServiceState:
    service: str
    sid: int
    signals: list[str] = field(default_factory=list)  # admitted, in first-seen order
    last: dict[str, tuple[int, float]] = field(default_factory=dict)  # signal -> bucket, value
    model: ServiceModel | None = None
    episodes: EpisodeTracker = field(default_factory=EpisodeTracker)
    peak: list[tuple[str, float, float, float]] = field(default_factory=list)  # contributors
    emitted: int = 0
    buckets: dict[int, _Bucket] = field(default_factory=dict)
    watermark: int = -1
    last_closed: int = -1
    last_seen_wall: float = 0.0


@dataclass
class ServiceCounters:
    records: int = 0
    late: int = 0
    vectors: int = 0  # scored
    unscored: int = 0  # closed buckets with fewer than min_signals signals
    signals_ignored: int = 0  # records of signals beyond max_signals
    rebuilds: int = 0  # models rebuilt because a new signal joined
    episodes_opened: int = 0
    unrestored: int = 0  # checkpoints skipped as unreadable


class ServiceStage:
    """Holds the per-service state of the services partitions this worker owns.

    `make_model(signals)` builds a service's model once it has `min_signals` signals, and
    again (re-warming) when a new signal joins; at most `max_signals` are admitted, later
    ones are ignored and counted. A signal missing from a bucket carries its last value for
    up to `carry` buckets; beyond that it no longer counts towards the vector's signals.
    """

    def __init__(
        self,
        make_model: Callable[[list[str]], ServiceModel],
        *,
        bucket_s: float = 10.0,
        lateness_s: float = 5.0,
        threshold: float = 0.9,
        min_signals: int = 2,
        max_signals: int = 32,
        carry: int = 6,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_signals < 2 or max_signals < min_signals:
            raise ValueError("need 2 <= min_signals <= max_signals")
        self.make_model = make_model
        self.bucket_ms = int(bucket_s * 1000)
        self.lateness_ms = int(lateness_s * 1000)
        self.threshold = threshold
        self.min_signals = min_signals
        self.max_signals = max_signals
        self.carry_ms = carry * self.bucket_ms
        self.clock = wall_clock
        self.services: dict[str, _ServiceState] = {}
        self.counters = ServiceCounters()
        self._tokens = TokenLedger()
        self._points: list[list[Any]] = [[] for _ in POINT_COLUMNS]
        self._episodes = EpisodeChanges()
        self._dirty: set[str] = set()

    # -- input ------------------------------------------------------------------------------
    def add(self, batch: ServiceBatch, token: Hashable) -> None:
        """Take one message's records; `token` is released once their buckets are out."""
        self._tokens.hold(token)  # held while we work
        now = self.clock()
        counters, tokens, size = self.counters, self._tokens, self.bucket_ms
        for svc, (signals, stamps, values, counts) in batch.items():
            counters.records += len(signals)
            st = self.services.get(svc)
            if st is None:
                st = self.services[svc] = self._new_state(svc)
            st.last_seen_wall = now
            admitted, buckets, closed = set(st.signals), st.buckets, st.last_closed
            for signal, ts, value, n in zip(signals, stamps, values, counts, strict=True):
                if signal not in admitted:
                    if len(admitted) >= self.max_signals:
                        counters.signals_ignored += 1
                        continue
                    st.signals.append(signal)
                    admitted.add(signal)
                start = ts - ts % size
                if start <= closed:
                    counters.late += 1
                    continue
                b = buckets.get(start)
                if b is None:
                    b = buckets[start] = _Bucket()
                total, m = b.values.get(signal, (0.0, 0))
                b.values[signal] = (total + value, m + n)
                if token not in b.tokens:
                    b.tokens.add(token)
                    tokens.hold(token)
                if ts > st.watermark:
                    st.watermark = ts
            self._close(st, st.watermark - self.lateness_ms)
        self._tokens.release(token)

    def close_idle(self) -> None:
        """Close buckets of services that got nothing for a bucket plus the lateness (wall)."""
        idle = (self.bucket_ms + self.lateness_ms) / 1000
        now = self.clock()
        for st in self.services.values():
            if st.buckets and now - st.last_seen_wall >= idle:
                self._close(st, max(st.buckets) + self.bucket_ms)

    # -- output -----------------------------------------------------------------------------
    def drain(self) -> Output:
        """Rows and episodes produced so far, and the tokens safe to ack once they are written."""
        out = Output(self._points, self._episodes.take(), self._tokens.take_ready())
        self._points = [[] for _ in POINT_COLUMNS]
        return out

    @property
    def buffered_rows(self) -> int:
        return len(self._points[0])

    # -- partitions and checkpoints ------------------------------------------------------------
    def drop_services(self, predicate: Callable[[str], bool]) -> None:
        """Forget the services (and their held messages) this worker no longer owns: the new
        owner replays their open buckets from the committed offset. A message that fed a
        dropped service is never released (a message carries one partition's services)."""
        for svc in [s for s in self.services if predicate(s)]:
            st = self.services.pop(svc)
            self._dirty.discard(svc)
            for b in st.buckets.values():
                self._tokens.forget(b.tokens)

    def snapshot(self) -> dict[int, str]:
        """Service series id → state of every service scored since the last snapshot. Open
        buckets are left out (their messages are not acked, so a restart replays them); the
        model's window is capped by its own `window`, and ECOD's per-call arrays are dropped."""
        out = {}
        for svc in self._dirty:
            st = self.services.get(svc)
            if st is None:
                continue
            blob = (st.service, st.signals, st.last, _compact(st.model), st.episodes, st.peak,
                    st.emitted, st.last_closed)  # fmt: skip
            out[st.sid] = encode_state(blob)
        self._dirty.clear()
        return out

    def restore(self, states: dict[int, str]) -> int:
        """Resume services from checkpoints (written by this pipeline to its own store). A
        checkpoint this release cannot read is skipped (`readable_states`): that service starts
        afresh."""
        blobs, unreadable = readable_states(states, "service")
        self.counters.unrestored += unreadable
        for blob in blobs.values():
            svc, signals, last, model, episodes, peak, emitted, last_closed = blob
            st = self._new_state(svc)
            st.signals, st.last, st.model, st.episodes = signals, last, _expand(model), episodes
            st.peak, st.emitted, st.last_closed = peak, emitted, last_closed
            self.services[svc] = st
        return len(blobs)

    # -- internals --------------------------------------------------------------------------
    def _new_state(self, service: str) -> _ServiceState:
        return _ServiceState(
            service, series_id(service_series(service)),
            episodes=EpisodeTracker(high=self.threshold),
        )  # fmt: skip

    def _close(self, st: _ServiceState, upto_ms: int) -> None:
        """Close, in time order, every open bucket that ends at or before `upto_ms`."""
        for start in sorted(st.buckets):
            if start + self.bucket_ms > upto_ms:
                break
            b = st.buckets.pop(start)
            for sig, (total, n) in b.values.items():
                st.last[sig] = (start, total / n)
            self._score(st, start)
            st.last_closed = start
            for t in b.tokens:
                self._tokens.release(t)

    def _score(self, st: _ServiceState, start: int) -> None:
        """Score the bucket's vector with what the model learned before it, then learn it."""
        values = {s: v for s, (ts, v) in st.last.items() if start - ts <= self.carry_ms}
        if len(values) < self.min_signals:
            self.counters.unscored += 1
            return
        known = [s for s in st.signals if s in st.last]
        if st.model is None or len(st.model.signals) != len(known):
            if st.model is not None:
                self.counters.rebuilds += 1
            st.model = self.make_model(known)
        model = st.model
        vec = [values.get(s, model.last_[i]) for i, s in enumerate(model.signals)]
        base = (model.med_, model.mad_)  # the window the score is judged against
        verdict = model.update(values)
        _drop_scratch(model.fitted_)
        self.counters.vectors += 1
        self._dirty.add(st.service)
        score = verdict.score
        row = (
            st.sid, start, score, len(values), score, None, None, None,
            int(score >= self.threshold), "service", "multivariate", st.service, {},
            _detector(model), model.version,
        )  # fmt: skip
        for col, val in zip(self._points, row, strict=True):
            col.append(val)
        if base[0] is None or base[1] is None:
            return
        med, mad = base
        detail = [
            _Signal(s, vec[i], float(med[i]), float(mad[i]),
                    verdict.contributions.get(s, 0.0))
            for i, s in enumerate(model.signals)
        ]  # fmt: skip
        self._track(st, start, score, detail)

    def _track(self, st: _ServiceState, ts_ms: int, score: float, detail: list[_Signal]) -> None:
        """Hysteresis on the service score; the top contributor gives the episode's value and
        band (typical ± 3 robust sigma), the explanation names every contributor."""
        ep = st.episodes
        before = ep.peak[0] if ep.is_open else -1.0
        top = _contributors(detail)
        t = top[0]
        band = (t.typical, t.typical - 3 * t.spread, t.typical + 3 * t.spread)
        change = ep.update(ts_ms, score, t.value, band)
        if change is None:
            return
        if change == "open" or (change == "grow" and score > before):
            st.peak = [(c.signal, c.value, c.typical, c.share) for c in top]
        if change == "open":
            self.counters.episodes_opened += 1
        st.emitted += 1
        if change == "grow" and st.emitted < 6 and score < ep.peak[0]:
            return  # throttle: publish growth every few vectors or on a new peak
        st.emitted = 0
        self._episodes.add((st.sid, ep.start_ms), self._episode(st, ep, closed=change == "close"),
                           change)  # fmt: skip
        if change == "close":
            ep.reset()

    def _episode(self, st: _ServiceState, ep: EpisodeTracker, *, closed: bool) -> Episode:
        score, value, expected, _, _ = ep.peak
        model = st.model
        assert model is not None  # noqa: S101 - an episode follows a score
        parts = ", ".join(
            f"{s} {_fmt(v)} vs typical {_fmt(t)} ({share:.0%})" for s, v, t, share in st.peak
        )
        explanation = (
            f"service {st.service}: unusual combination of {len(model.signals)} signals, "
            f"driven by {parts}; score {score:.3f} from {_detector(model)} v{model.version} "
            f"over {ep.points} bucket(s) of {self.bucket_ms / 1000:g}s"
        )
        lower, upper = ep.peak[3], ep.peak[4]
        return Episode(
            episode_id=episode_id(st.sid, ep.start_ms), series_id=st.sid, start_ms=ep.start_ms,
            end_ms=ep.end_ms, is_open=not closed, peak_score=score, peak_value=value,
            expected=expected, lower=lower, upper=upper, severity=severity(score),
            kind="service", name="multivariate", service=st.service, labels={},
            signals=[p[0] for p in st.peak], explanation=explanation,
            detector=_detector(model), detector_version=model.version, points=ep.points,
        )  # fmt: skip


def _contributors(detail: list[_Signal]) -> list[_Signal]:
    """The signals that matter, largest share first: unusual on their own (MIN_Z) and carrying
    a real share; the largest one when none qualifies."""
    ranked = sorted(detail, key=lambda d: d.share, reverse=True)
    top = [d for d in ranked if d.z >= MIN_Z and d.share >= MIN_SHARE][:MAX_CONTRIBUTORS]
    return top or ranked[:1]


def _detector(model: ServiceModel) -> str:
    return f"{model.name}/{model.model}"


def _drop_scratch(fitted: Any) -> None:
    """ECOD and COPOD keep their last call's arrays (window x signals floats, four times
    over, ~0.5 MB at 500 x 32); scoring recomputes them, so a service need not hold them."""
    for a in _TRANSIENT:
        if getattr(fitted, a, None) is not None:
            setattr(fitted, a, None)


def _compact(model: ServiceModel | None) -> Any:
    """The model for a checkpoint, without what can be rebuilt exactly: ECOD's per-call arrays
    (window x signals floats, four times over), and the part of the window the fit already
    holds as `X_train` (the window is the fit's rows plus the vectors seen since)."""
    if model is None or model.fitted_ is None:
        return model
    m = copy.copy(model)
    fitted = m.fitted_ = copy.copy(model.fitted_)
    _drop_scratch(fitted)  # a fit leaves them too
    train = getattr(fitted, "X_train", None)
    if train is None or m.since_fit_ > len(m.rows_):
        return m
    m.rows_ = deque(list(m.rows_)[len(m.rows_) - m.since_fit_ :], maxlen=m.window)
    return (m, True)


def _expand(blob: Any) -> ServiceModel | None:
    """Undo `_compact`: the window is the fit's rows, then the vectors seen since, capped."""
    if not isinstance(blob, tuple):
        return blob
    m = blob[0]
    rows = [tuple(r) for r in m.fitted_.X_train.tolist()] + list(m.rows_)
    m.rows_ = deque(rows[-m.window :], maxlen=m.window)
    return m


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else "n/a"
