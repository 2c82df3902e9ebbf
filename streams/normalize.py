"""Events → series observations (pure functions; no I/O).

Derived signals: a span gives latency (mean per window), error rate (mean of 0/1) and
throughput (count per second) per service and operation; a queue event gives lag and
oldest-message age per queue and group; a DB query gives latency and error rate per
statement fingerprint (literals stripped before anything is stored).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from itertools import compress, repeat
from operator import attrgetter

import numpy as np

from ingest.fingerprint import fingerprint, normalize_statement
from ingest.models import DB, METRIC, QUEUE, SPAN, AnyEvent
from streams.series import AGG_LAST, AGG_MEAN, AGG_RATE, Obs, Series, make_series, series_id
from streams.wire import Points

_KEYS_MAX = 100_000  # raw metric keys remembered; past it the cache starts over
_NAME, _SERVICE, _LABELS = attrgetter("name"), attrgetter("service"), attrgetter("labels")
_TS, _VALUE = attrgetter("ts"), attrgetter("value")


def metric_key(e: AnyEvent) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """A metric event's series as sent (labels unsorted): the key of both id caches."""
    return (e.name, e.service, tuple(e.labels.items()))  # type: ignore[union-attr]


def span_labels(e: AnyEvent) -> dict[str, str]:
    return {**e.labels, "operation": e.operation}  # type: ignore[union-attr]


def queue_labels(e: AnyEvent) -> dict[str, str]:
    return {"queue": e.queue, "group": e.group}  # type: ignore[union-attr]


def db_labels(e: AnyEvent) -> dict[str, str]:
    shape = normalize_statement(e.statement)  # type: ignore[union-attr]
    return {"statement": shape, "fingerprint": fingerprint(shape), "system": e.system}  # type: ignore[union-attr]


def first_series(e: AnyEvent) -> Series | None:
    """The first series `Normalizer.observations` makes of an event, as sent (before
    redaction): what the producer SDK partitions it by."""
    if isinstance(e, METRIC):
        return Series("metric", e.name, e.service, tuple(sorted(e.labels.items())))
    if isinstance(e, SPAN):
        return make_series("span", "latency_ms", e.service, **span_labels(e))
    if isinstance(e, QUEUE):
        return make_series("queue", "lag", e.service, **queue_labels(e))
    if isinstance(e, DB):
        return make_series("db", "latency_ms", e.service, **db_labels(e))
    return None


def series_partition(e: AnyEvent, partitions: int) -> int | None:
    """The partition of the event's first series, as the points topic numbers them: where
    the producer SDK and the gateway place an event."""
    s = first_series(e)
    return None if s is None else series_id(s) % partitions


class Normalizer:
    """Keeps the id of every series it has seen so the hash is computed once per series."""

    def __init__(self, admit: Callable[[Series], bool] | None = None) -> None:
        self._ids: dict[Series, int] = {}
        self.meta: dict[int, Series] = {}
        self._admit = admit  # a cardinality cap: refused series are neither kept nor remembered
        # (name, service, labels as sent) → id of an admitted metric series: a known metric
        # costs one dict lookup, not a sorted tuple and a Series
        self._metric_ids: dict[Hashable, int] = {}

    def _sid(self, s: Series) -> int | None:
        sid = self._ids.get(s)
        if sid is None:
            if self._admit is not None and not self._admit(s):
                return None
            sid = self._ids[s] = series_id(s)
            self.meta[sid] = s
        return sid

    def metric_id(self, key: Hashable) -> int | None:
        """The id of an admitted metric series by (name, service, labels as sent), if known."""
        return self._metric_ids.get(key)

    def _metric_sid(self, key: tuple[str, str, tuple[tuple[str, str], ...]]) -> int | None:
        name, service, items = key
        sid = self._sid(Series("metric", name, service, tuple(sorted(items))))
        if sid is not None:
            if len(self._metric_ids) >= _KEYS_MAX:
                self._metric_ids.clear()
            self._metric_ids[key] = sid
        return sid

    def observations(self, events: Iterable[AnyEvent]) -> list[Obs]:
        out: list[Obs] = []
        metric_ids = self._metric_ids
        new = tuple.__new__  # an Obs from a 4-tuple, without the Python-level Obs.__new__

        def add(sid: int | None, ts: int, value: float, agg: int) -> None:
            if sid is not None:
                out.append(Obs(sid, ts, value, agg))

        for e in events:
            if type(e) in METRIC:
                key = metric_key(e)
                sid = metric_ids.get(key)
                if sid is None and (sid := self._metric_sid(key)) is None:
                    continue
                out.append(new(Obs, (sid, int(e.ts * 1000), e.value, AGG_LAST)))
                continue
            ts = int(e.ts * 1000)
            if isinstance(e, METRIC):
                add(self._sid(first_series(e)), ts, e.value, AGG_LAST)  # type: ignore[arg-type]
            elif isinstance(e, SPAN):
                labels = span_labels(e)
                for name, value, agg in (
                    ("latency_ms", e.duration_ms, AGG_MEAN),
                    ("error_rate", 1.0 if e.status == "error" else 0.0, AGG_MEAN),
                    ("throughput", 1.0, AGG_RATE),
                ):
                    add(self._sid(make_series("span", name, e.service, **labels)), ts, value, agg)
            elif isinstance(e, QUEUE):
                labels = queue_labels(e)
                s = make_series("queue", "lag", e.service, **labels)
                add(self._sid(s), ts, e.lag, AGG_LAST)
                if e.oldest_age_s is not None:
                    s = make_series("queue", "oldest_age_s", e.service, **labels)
                    add(self._sid(s), ts, e.oldest_age_s, AGG_LAST)
            elif isinstance(e, DB):
                labels = db_labels(e)
                for name, value in (("latency_ms", e.duration_ms), ("error_rate", float(e.error))):
                    s = make_series("db", name, e.service, **labels)
                    add(self._sid(s), ts, value, AGG_MEAN)
        return out


class KnownMetrics:
    """The stream's shortcut for metric events seen before: (name, service, labels as sent)
    → series id, for series the redactor left unchanged and the cap admitted. Such events
    skip redaction and normalization and leave as columns, the lookups and the copies done
    in C over a whole message rather than in a Python loop per event; any other event takes
    the full path, and teaches this map."""

    def __init__(self) -> None:
        self._slots: dict[Hashable, int] = {}  # key → index into _sids
        self._sids = np.zeros(1024, np.uint64)

    def take(self, events: list[AnyEvent]) -> tuple[Points | None, list[AnyEvent]]:
        """The known metric events' points (in order); the other events, in order."""
        n = len(events)
        slots_of = self._slots.get
        if set(map(type, events)).issubset(METRIC):  # the common message: metrics only
            keys = zip(map(_NAME, events), map(_SERVICE, events),
                       map(tuple, map(dict.items, map(_LABELS, events))), strict=True)  # fmt: skip
            slots = np.fromiter(map(slots_of, keys, repeat(-1, n)), np.int64, n)
        else:
            slots = np.fromiter(
                (slots_of(metric_key(e), -1) if type(e) in METRIC else -1 for e in events),
                np.int64, n,
            )  # fmt: skip
        hit = slots >= 0
        if hit.all():
            known, rest = events, []
        elif hit.any():
            known = list(compress(events, hit.tolist()))
            rest = list(compress(events, (~hit).tolist()))
            slots = slots[hit]
        else:
            return None, events
        k = len(known)
        ts = np.fromiter(map(_TS, known), np.float64, k)
        return Points(
            self._sids[slots], (ts * 1000).astype(np.int64),
            np.fromiter(map(_VALUE, known), np.float64, k), np.full(k, AGG_LAST, np.int8),
        ), rest  # fmt: skip

    def learn(self, sent: list[AnyEvent], redacted: list[AnyEvent], norm: Normalizer) -> None:
        """After the full path: remember the metric series whose events it did not change."""
        slots = self._slots
        for e, r in zip(sent, redacted, strict=True):
            if r is e and type(e) in METRIC:
                key = metric_key(e)
                sid = norm.metric_id(key)
                if sid is not None and key not in slots:
                    if len(slots) >= _KEYS_MAX:
                        slots.clear()
                    i = slots[key] = len(slots)
                    if i == len(self._sids):
                        self._sids = np.concatenate([self._sids, np.zeros(i, np.uint64)])
                    self._sids[i] = sid
