from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from detectors.multivariate import MultiVerdict, ServiceModel
from streams.columns import POINT_COLUMNS
from streams.series import make_series, series_id
from streams.services import (
    ServiceBatch,
    ServicePoint,
    ServicePoints,
    ServiceStage,
    batch_of,
    decode_service_points,
    encode_service_points,
    signal_key,
)


def records_of(batch: ServiceBatch) -> list[ServicePoint]:
    """A batch as records, to compare (the stream keeps columns)."""
    return [ServicePoint(svc, *row)
            for svc, cols in batch.items() for row in zip(*cols, strict=True)]  # fmt: skip


LAT = "span.latency_ms{operation=GET /cart}"
ERR = "span.error_rate{operation=GET /cart}"
DB = "db.latency_ms{fingerprint=ab12,system=postgres}"
THR = "span.throughput{operation=GET /cart}"
CPU = "metric.cpu{host=a}"
NORMAL = {LAT: (90.0, 5.0), ERR: (0.01, 0.002), DB: (4.0, 0.3), THR: (20.0, 2.0), CPU: (50, 5)}
S = 10_000  # one bucket, in ms


class Recorder:
    """A stand-in model that records the vectors it is given."""

    name, version, model = "multivariate", "1", "fake"

    def __init__(self, signals: Sequence[str]) -> None:
        self.signals = list(signals)
        self.last_ = [0.0] * len(signals)
        self.med_ = self.mad_ = self.fitted_ = None
        self.seen: list[dict[str, float]] = []

    def update(self, values: Mapping[str, float]) -> MultiVerdict:
        self.seen.append(dict(values))
        return MultiVerdict(0.0, {})


def ecod(signals: list[str]) -> ServiceModel:
    return ServiceModel(signals, window=300, refit_every=50)


def bucket(rng: random.Random, t: int, shift: Mapping[str, float] = {}) -> list[ServicePoint]:  # noqa: B006
    """One bucket of the service's five signals; `shift` moves signals by that many sigmas."""
    return [
        ServicePoint("checkout", s, t, m + shift[s] * sd if s in shift else rng.gauss(m, sd))
        for s, (m, sd) in NORMAL.items()
    ]


def feed(stage: ServiceStage, rng: random.Random, start: int, n: int, **kw: Any) -> None:
    for i in range(start, start + n):
        stage.add(batch_of(bucket(rng, i * S, **kw)), ("t", i))


def test_service_stage_aligns_signals_arriving_in_any_order() -> None:
    models: list[Recorder] = []
    stage = ServiceStage(lambda sig: models.append(Recorder(sig)) or models[-1], carry=3)
    # two workers' messages, each out of time order within the lateness
    recs = [
        ServicePoint("checkout", ERR, 3_000, 0.5), ServicePoint("checkout", LAT, 11_000, 80.0),
        ServicePoint("checkout", LAT, 0, 100.0), ServicePoint("checkout", LAT, 9_000, 120.0),
        ServicePoint("checkout", ERR, 12_000, 0.2),
        ServicePoint("checkout", LAT, 21_000, 70.0),  # ERR missing: carried forward
        ServicePoint("checkout", LAT, 31_000, 71.0), ServicePoint("checkout", LAT, 41_000, 72.0),
        ServicePoint("checkout", LAT, 51_000, 73.0),  # ERR older than 3 buckets: gone
        ServicePoint("checkout", LAT, 90_000, 74.0),  # moves the watermark past all of them
    ]  # fmt: skip
    for i, r in enumerate(recs):
        stage.add(batch_of([r]), i)
    (model,) = models
    assert model.seen == [
        {LAT: 110.0, ERR: 0.5}, {LAT: 80.0, ERR: 0.2}, {LAT: 70.0, ERR: 0.2},
        {LAT: 71.0, ERR: 0.2}, {LAT: 72.0, ERR: 0.2},
    ]  # fmt: skip
    out = stage.drain()
    assert out.points[1] == [0, S, 2 * S, 3 * S, 4 * S]  # ts: bucket starts
    assert out.points[3] == [2, 2, 2, 2, 2]  # n: signals in the vector
    assert stage.counters.unscored == 1  # 50 s: one signal left, not scored
    assert out.points[0] == [series_id(make_series("service", "multivariate", "checkout"))] * 5


def test_service_stage_flags_joint_shift_and_names_its_signals() -> None:
    stage = ServiceStage(ecod)
    rng = random.Random(1)
    feed(stage, rng, 0, 300)
    quiet = stage.drain()
    assert sum(s >= 0.9 for s in quiet.points[4][100:]) == 0 and not quiet.episodes
    feed(stage, rng, 300, 4, shift={LAT: 4.0, ERR: 4.0, DB: 4.0})
    feed(stage, rng, 304, 6)
    out = stage.drain()
    assert out.episodes, out.points[4]
    ep = out.episodes[-1]
    assert ep.kind == "service" and ep.service == "checkout" and ep.start_ms == 300 * S
    assert not ep.is_open and ep.severity in {"minor", "major", "critical"}
    assert {LAT, ERR} <= set(ep.signals) and CPU not in ep.signals and THR not in ep.signals
    assert f"{LAT} 110 vs typical" in ep.explanation
    assert ep.detector == "multivariate/ecod"


def test_service_stage_leaves_one_signal_inside_its_range_alone() -> None:
    """The same shift on latency alone stays below the threshold: it is the joint move that
    the service model flags, not a univariate outlier."""
    stage = ServiceStage(ecod)
    rng = random.Random(1)
    feed(stage, rng, 0, 300)
    stage.drain()
    feed(stage, rng, 300, 4, shift={LAT: 4.0})
    feed(stage, rng, 304, 6)
    out = stage.drain()
    assert not out.episodes and max(out.points[4]) < 0.9


def test_service_stage_holds_tokens_until_buckets_close() -> None:
    now = [0.0]
    stage = ServiceStage(Recorder, lateness_s=5.0, wall_clock=lambda: now[0])
    stage.add(batch_of([ServicePoint("a", LAT, 1_000, 1.0)]), "m1")
    stage.add(
        batch_of([ServicePoint("a", ERR, 8_000, 1.0), ServicePoint("a", LAT, 12_000, 1.0)]), "m2"
    )
    assert stage.drain().tokens == []  # watermark 12 s: bucket [0, 10) open until 15 s
    stage.add(batch_of([ServicePoint("a", LAT, 15_000, 2.0)]), "m3")
    out = stage.drain()
    assert out.tokens == ["m1"]  # m2 also fed the bucket at 10 s, still open
    assert out.points[1] == [0]
    stage.add(batch_of([ServicePoint("a", LAT, 3_000, 9.0)]), "late")  # its bucket is closed
    assert stage.drain().tokens == ["late"] and stage.counters.late == 1
    now[0] = 15.0  # idle for a bucket plus the lateness
    stage.close_idle()
    out = stage.drain()
    assert sorted(out.tokens) == ["m2", "m3"]
    assert out.points[1] == [S]


def test_service_stage_restore_scores_like_an_uninterrupted_run() -> None:
    rng = random.Random(2)
    batches = [bucket(rng, i * S) for i in range(260)]
    batches += [bucket(rng, i * S, {LAT: 5.0, ERR: 5.0}) for i in range(260, 263)]

    def small(signals: list[str]) -> ServiceModel:  # a full window, refit between checkpoints
        return ServiceModel(signals, window=100, refit_every=30, min_fit=60)

    a = ServiceStage(small)
    for i, b in enumerate(batches[:200]):
        a.add(batch_of(b), i)
    a.drain()
    states = a.snapshot()
    assert a.snapshot() == {}  # only what was scored since the last snapshot
    b_stage = ServiceStage(small)
    assert b_stage.restore(states) == 1
    ma, mb = a.services["checkout"].model, b_stage.services["checkout"].model
    assert ma is not None and mb is not None and 0 < ma.since_fit_ < 30
    assert list(mb.rows_) == list(ma.rows_) and len(ma.rows_) == 100
    for i, b in enumerate(batches[200:], 200):
        a.add(batch_of(b), i)
    for i, b in enumerate(batches[197:], 197):  # from before the checkpoint: 197 is stored
        b_stage.add(batch_of(b), i)
    out_a, out_b = a.drain(), b_stage.drain()
    assert b_stage.counters.late == len(batches[197])
    assert out_a.episodes and out_b.points == out_a.points
    assert [e.model_dump() for e in out_b.episodes] == [e.model_dump() for e in out_a.episodes]
    assert len(next(iter(states.values()))) < 16_000  # compact: capped window, no scratch


def test_service_stage_does_not_score_a_service_with_one_signal() -> None:
    models: list[Recorder] = []
    stage = ServiceStage(lambda sig: models.append(Recorder(sig)) or models[-1])
    for i in range(10):
        stage.add(batch_of([ServicePoint("solo", LAT, i * S, 1.0)]), i)
    out = stage.drain()
    assert models == [] and out.rows == 0 and stage.counters.unscored == 8
    assert len(out.tokens) == 8  # its messages are still released once the buckets close


def test_service_stage_caps_signals_per_service() -> None:
    models: list[Recorder] = []
    stage = ServiceStage(lambda sig: models.append(Recorder(sig)) or models[-1], max_signals=3)
    for i in range(4):
        stage.add(batch_of([ServicePoint("wide", f"metric.m{k}", i * S, 1.0) for k in range(5)]), i)
    assert models and all(len(m.signals) == 3 for m in models)
    assert stage.counters.signals_ignored == 8
    assert len(stage.services["wide"].signals) == 3


def test_service_stage_rebuilds_model_when_a_signal_joins() -> None:
    models: list[Recorder] = []
    stage = ServiceStage(lambda sig: models.append(Recorder(sig)) or models[-1])
    for i in range(6):
        recs = [ServicePoint("a", LAT, i * S, 1.0), ServicePoint("a", ERR, i * S, 1.0)]
        if i >= 3:
            recs.append(ServicePoint("a", DB, i * S, 1.0))
        stage.add(batch_of(recs), i)
    assert [m.signals for m in models] == [[LAT, ERR], [LAT, ERR, DB]]
    assert stage.counters.rebuilds == 1


def test_service_stage_drop_services_forgets_state_and_tokens() -> None:
    stage = ServiceStage(Recorder)
    stage.add(batch_of([ServicePoint("a", LAT, 0, 1.0), ServicePoint("a", ERR, 0, 1.0)]), "m1")
    stage.add(batch_of([ServicePoint("b", LAT, 0, 1.0), ServicePoint("b", ERR, 0, 1.0)]), "m2")
    stage.drop_services(lambda s: s == "a")
    assert set(stage.services) == {"b"}
    stage.add(
        batch_of([ServicePoint("a", LAT, 30_000, 1.0), ServicePoint("b", LAT, 30_000, 1.0)]), "m3"
    )
    out = stage.drain()
    assert out.tokens == ["m2"]  # m1 is left unacked for the new owner of "a" to replay
    assert out.points[11] == ["b"]  # "a" starts afresh: nothing of its old bucket is scored


def test_service_points_from_detect_rows_roundtrip_the_wire() -> None:
    cols: list[list[Any]] = [[] for _ in POINT_COLUMNS]
    rows = [
        ("span", "latency_ms", "checkout", {"operation": "GET /cart"}, 120.5),
        ("metric", "cpu", "", {"host": "a"}, 0.5),  # no service: not published
        ("service", "multivariate", "checkout", {}, 0.3),  # the service score itself: not
        ("db", "latency_ms", "checkout", {"statement": "SELECT " + "x" * 80, "system": ""}, 4.0),
    ]
    for sid, (kind, name, svc, labels, value) in enumerate(rows):
        row = dict.fromkeys(POINT_COLUMNS)
        row |= {"series_id": sid, "ts": 10_000, "kind": kind, "name": name, "service": svc,
                "labels": labels, "value": value}  # fmt: skip
        for c, col in zip(POINT_COLUMNS, cols, strict=True):
            col.append(row[c])
    batch = ServicePoints(10_000)(cols)
    assert sorted(r.signal for r in records_of(batch)) == [
        "db.latency_ms{statement=SELECT " + "x" * 40 + "…}",
        "span.latency_ms{operation=GET /cart}",
    ]
    assert decode_service_points(encode_service_points(batch)) == batch
    assert signal_key(make_series("queue", "lag", "s", queue="q", group="g")) == (
        "queue.lag{group=g,queue=q}"
    )


def test_service_points_send_one_record_per_signal_and_bucket_with_the_same_means() -> None:
    cols: list[list[Any]] = [[] for _ in POINT_COLUMNS]
    points = [
        ("x", 1_000, 1.0),
        ("x", 4_000, 2.0),
        ("y", 5_000, 0.5),
        ("x", 9_000, 6.0),
        ("x", 11_000, 10.0),
        ("y", 12_000, 0.1),
        ("x", 12_000, 20.0),
        ("x", 90_000, 1.0),
    ]
    for op, ts, value in points:
        row = dict.fromkeys(POINT_COLUMNS)
        row |= {"series_id": ord(op), "ts": ts, "kind": "span", "name": "latency_ms",
                "service": "a", "labels": {"operation": op}, "value": value}  # fmt: skip
        for c, col in zip(POINT_COLUMNS, cols, strict=True):
            col.append(row[c])
    batch = ServicePoints(S)(cols)
    x, y = "span.latency_ms{operation=x}", "span.latency_ms{operation=y}"
    assert sorted(records_of(batch)) == [
        ServicePoint("a", x, 9_000, 9.0, 3), ServicePoint("a", x, 12_000, 30.0, 2),
        ServicePoint("a", x, 90_000, 1.0, 1), ServicePoint("a", y, 5_000, 0.5, 1),
        ServicePoint("a", y, 12_000, 0.1, 1),
    ]  # fmt: skip
    assert decode_service_points(encode_service_points(batch)) == batch
    # the model sees the same bucket means as when every point travels on its own
    seen = []
    one_by_one = batch_of(ServicePoint("a", x if op == "x" else y, ts, v) for op, ts, v in points)
    for sent in (one_by_one, batch):
        models: list[Recorder] = []
        stage = ServiceStage(lambda sig, m=models: m.append(Recorder(sig)) or m[-1])
        stage.add(sent, "m")
        seen.append(models[0].seen)
    assert seen[0] == seen[1] == [{x: 3.0, y: 0.5}, {x: 15.0, y: 0.1}]


def test_service_points_group_by_service_and_merge_series_cut_to_one_signal() -> None:
    long = "SELECT " + "x" * 80
    rows = [  # series id, kind, name, service, labels, ts, value; a series' rows together
        (1, "span", "latency_ms", "b", {"operation": "GET"}, 1_000, 1.0),
        (1, "span", "latency_ms", "b", {"operation": "GET"}, 2_000, 3.0),
        (2, "db", "latency_ms", "b", {"statement": long + "1"}, 1_000, 4.0),
        (3, "db", "latency_ms", "b", {"statement": long + "2"}, 12_000, 5.0),
        (3, "db", "latency_ms", "b", {"statement": long + "2"}, 3_000, 6.0),
        (4, "span", "latency_ms", "a", {"operation": "GET"}, 5_000, float("nan")),
        (5, "span", "error_rate", "a", {"operation": "GET"}, 5_000, 0.5),
    ]
    cols: list[list[Any]] = [[] for _ in POINT_COLUMNS]
    for sid, kind, name, svc, labels, ts, value in rows:
        row = dict.fromkeys(POINT_COLUMNS)
        row |= {"series_id": sid, "ts": ts, "kind": kind, "name": name, "service": svc,
                "labels": labels, "value": value}  # fmt: skip
        for c, col in zip(POINT_COLUMNS, cols, strict=True):
            col.append(row[c])
    batch = ServicePoints(S)(cols)
    cut = "db.latency_ms{statement=SELECT " + "x" * 40 + "…}"  # series 2 and 3: one signal
    assert sorted(batch) == ["a", "b"]
    assert sorted(records_of(batch)) == [
        ServicePoint("a", "span.error_rate{operation=GET}", 5_000, 0.5, 1),  # NaN: left out
        ServicePoint("b", cut, 3_000, 10.0, 2), ServicePoint("b", cut, 12_000, 5.0, 1),
        ServicePoint("b", "span.latency_ms{operation=GET}", 2_000, 4.0, 2),
    ]  # fmt: skip


def test_an_earlier_releases_rows_decode_to_the_same_batch() -> None:
    # workers of the release before publish a record a row (the oldest, without a count)
    rows = {"v": {"a": [[LAT, 9_000, 6.0, 3], [ERR, 9_000, 0.5]], "b": [[LAT, 1_000, 2.0, 1]]}}
    batch = decode_service_points(orjson.dumps(rows))
    assert batch == {"a": ([LAT, ERR], [9_000, 9_000], [6.0, 0.5], [3, 1]),
                     "b": ([LAT], [1_000], [2.0], [1])}  # fmt: skip
    assert decode_service_points(encode_service_points(batch)) == batch


def test_an_unreadable_service_checkpoint_starts_that_service_afresh_and_keeps_the_others() -> None:
    rng = random.Random(3)
    a = ServiceStage(ecod)
    for i in range(40):
        a.add(batch_of(bucket(rng, i * S)), i)
    a.drain()
    states = a.snapshot()
    (checkout,) = states
    states[checkout + 1] = "bm90IGEgY2hlY2twb2ludA=="  # e.g. written by another release
    b = ServiceStage(ecod)
    assert b.restore(states) == 1  # the worker takes its partitions all the same
    assert b.counters.unrestored == 1
    assert list(b.services) == ["checkout"]
    assert b.services["checkout"].last == a.services["checkout"].last
