"""The stream's shortcut for known metric series gives what the full path gives, and never
skips a redaction or the cardinality cap."""

from __future__ import annotations

from typing import Any

from ingest.cardinality import CardinalityGuard, CardinalityLimits
from ingest.models import records_json
from ingest.redact import Redactor
from streams.normalize import KnownMetrics, Normalizer
from streams.wire import Points, by_partition, partition_of, points_of

PARTS = 4


def run(batches: list[bytes], guard: CardinalityGuard | None = None) -> tuple[Any, ...]:
    """The normalize agent's steps over `batches`: points per partition, redactions counted."""
    red, known = Redactor(), KnownMetrics()
    norm = Normalizer(admit=(guard or CardinalityGuard()).admit)
    chunks: list[Points] = []
    for raw in batches:
        good = records_json(raw)
        assert good is not None
        taken, rest = known.take(good)
        clean = red.events(rest)
        chunks += [taken] if taken is not None else []
        chunks.append(points_of(norm.observations(clean)))
        known.learn(rest, clean, norm)
    by_part = dict(by_partition(chunks, PARTS))
    points = sorted(p for cols in by_part.values() for p in cols)
    parts_ok = all(partition_of(o.series_id, PARTS) == p for p, c in by_part.items() for o in c)
    return points, red.redacted, norm.meta, parts_ok


def batch(values: list[tuple[str, str, float]], t0: int) -> bytes:
    import orjson

    return orjson.dumps([
        {"kind": "metric", "name": "cpu", "service": "api", "value": v, "ts": t0 + i,
         "labels": {"host": host, "owner": owner}}
        for i, (host, owner, v) in enumerate(values)
    ])  # fmt: skip


def test_known_series_take_the_shortcut_to_the_same_points() -> None:
    rows = [("a", "ops", 1.0), ("b", "ops", 2.0)]
    batches = [batch(rows, 100 + 10 * k) for k in range(3)]
    points, redacted, meta, parts_ok = run(batches)
    one_by_one = [run([b]) for b in batches]  # each batch on a fresh path: no shortcut taken
    assert points == sorted(p for r in one_by_one for p in r[0])
    assert len(points) == 6 and parts_ok and redacted == 0 and len(meta) == 2


def test_a_label_that_needs_redaction_is_redacted_every_time() -> None:
    rows = [("a", "jane.doe@example.com", 1.0)]
    _, redacted, meta, _ = run([batch(rows, 100 + k) for k in range(3)])
    assert redacted == 3  # never remembered as clean: each event is redacted
    [series] = meta.values()
    assert dict(series.labels)["owner"] == "<email>"


def test_a_series_the_cap_refused_is_never_remembered() -> None:
    guard = CardinalityGuard(CardinalityLimits(per_name=1))
    rows = [("a", "ops", 1.0), ("b", "ops", 2.0)]
    points, _, meta, _ = run([batch(rows, 100 + 10 * k) for k in range(3)], guard)
    assert len(meta) == 1 and len(points) == 3
    assert guard.unmodeled == 3  # host b counted each time, not skipped by a shortcut


def test_a_mixed_message_takes_its_known_metrics_and_leaves_the_rest_in_order() -> None:
    import orjson

    metric = {"kind": "metric", "name": "cpu", "service": "api", "labels": {"host": "a"}}
    span = {"kind": "span", "service": "api", "operation": "GET /", "duration_ms": 5.0}
    first = [{**metric, "value": 1.0, "ts": 100}]
    mixed = [
        {**span, "ts": 101},
        {**metric, "value": 2.0, "ts": 102},
        {**metric, "labels": {"host": "b"}, "value": 3.0, "ts": 103},  # not seen yet
        {**span, "ts": 104},
        {**metric, "value": 4.0, "ts": 105},
    ]
    red, known, norm = Redactor(), KnownMetrics(), Normalizer()
    good = records_json(orjson.dumps(first))
    assert good is not None
    taken, rest = known.take(good)
    assert taken is None and rest == good  # nothing known yet: all of it takes the full path
    norm.observations(red.events(rest))
    known.learn(rest, red.events(rest), norm)
    good = records_json(orjson.dumps(mixed))
    assert good is not None
    taken, rest = known.take(good)
    assert taken is not None
    [sid] = norm.meta
    assert [(o.series_id, o.ts_ms, o.value) for o in taken] == [(sid, 102_000, 2.0),
                                                                 (sid, 105_000, 4.0)]  # fmt: skip
    assert [e.ts for e in rest] == [101, 103, 104]  # spans and the new series, in order
