"""The benchmark's own correctness: its stream reaches every partition, and its point check
fails a run that lost or duplicated points (that is what makes `make bench` exit non-zero)."""

from __future__ import annotations

import orjson
from kafka.partitioner.default import murmur2

from benchmarks.ceiling import (
    PARTITIONS,
    ColumnBuilder,
    RunBuilder,
    StreamSpec,
    check_points,
    event,
    expected_ids,
    partition_keys,
    produce_stream,
    stream_start,
    write_rows,
)
from stormwatch.broker import LocalBroker
from stormwatch.settings import StormwatchSettings
from stormwatch.store import Store
from streams.columns import POINT_COLUMNS

SPEC = StreamSpec(series=5, points=23)
START = stream_start()  # recent: older rows fall to the table TTL


def _columns(spec: StreamSpec) -> list[list[object]]:
    b = ColumnBuilder()
    b.add([event(i, START + r, 1.0) for r in range(spec.rounds) for i in range(spec.series)
           if r * spec.series + i < spec.points])  # fmt: skip
    return b.take()


def _insert(store: Store, db: str, cols: list[list[object]]) -> None:
    store.insert(f"{db}.points", POINT_COLUMNS, cols)


def test_partition_keys_cover_every_partition() -> None:
    keys = partition_keys(4)
    assert sorted((murmur2(k.encode()) & 0x7FFFFFFF) % 4 for k in keys) == [0, 1, 2, 3]


def test_the_stream_reaches_the_broker_once_and_one_producer_opens_each_partition(
    broker: LocalBroker,
) -> None:
    """Every point once; and every partition's first message holds only the first round, sent
    by one producer before the others start: the embedded broker can lose a message when
    several producers write one partition at the same moment, and the bench's four did so
    with their first messages (docs/reliability.md, "Known issue")."""
    from ingest.topics import ensure_topics
    from tests.conftest import read_partitions, unique

    spec = StreamSpec(series=40, points=400, batch=10)
    topic = unique("bench-stream")
    ensure_topics(broker.bootstrap, {topic: PARTITIONS})
    produce_stream(broker.bootstrap, topic, spec, START)
    messages = read_partitions(broker.bootstrap, topic, PARTITIONS)
    firsts = {p: ms[0] for p, ms in messages.items() if ms}
    seen = [(e["name"], e["service"], repr(e["labels"]), e["ts"])
            for ms in messages.values() for events in ms for e in events]  # fmt: skip
    assert len(seen) == spec.points
    assert len(set(seen)) == spec.points
    assert sorted(firsts) == list(range(PARTITIONS))
    assert all(e["ts"] == START for events in firsts.values() for e in events)


def test_check_points_accepts_the_whole_stream(
    chdb_store: Store, db_settings: StormwatchSettings
) -> None:
    db = db_settings.database
    _insert(chdb_store, db, _columns(SPEC))
    c = check_points(chdb_store, db, expected_ids(SPEC, START))
    assert c["ok"] and c["rows"] == c["rows_final"] == c["unique_ids"] == 23


def test_check_points_fails_a_run_that_lost_a_point(
    chdb_store: Store, db_settings: StormwatchSettings
) -> None:
    db = db_settings.database
    cols = [col[:-1] for col in _columns(SPEC)]
    _insert(chdb_store, db, cols)
    c = check_points(chdb_store, db, expected_ids(SPEC, START))
    assert not c["ok"] and c["series_mismatched"] == 1


def test_check_points_fails_a_run_that_wrote_a_point_twice(
    chdb_store: Store, db_settings: StormwatchSettings
) -> None:
    db = db_settings.database
    cols = _columns(SPEC)
    _insert(chdb_store, db, cols)
    _insert(chdb_store, db, [col[:1] for col in cols])
    c = check_points(chdb_store, db, expected_ids(SPEC, START))
    assert not c["ok"] and c["rows"] == 24 and c["rows_final"] == 23


def test_the_pipeline_building_blocks_store_what_the_naive_path_stores(
    chdb_store: Store, db_settings: StormwatchSettings
) -> None:
    """The ceiling's default path (msgspec records, PointRows, the numpy Native encoder) must
    write the very rows the plain path writes, or its figure measures something else."""
    db = db_settings.database
    events = [event(i, START + r, 0.5 * i - r) for r in range(SPEC.rounds)
              for i in range(SPEC.series) if r * SPEC.series + i < SPEC.points]  # fmt: skip
    select = (f"SELECT series_id, ts, value, n, score, expected, is_anomaly, kind, name, "
              f"service, labels, detector, detector_version FROM {db}.points "
              "ORDER BY series_id, ts")  # fmt: skip
    builder = RunBuilder()
    for k in range(0, len(events), 4):
        assert builder.add_message(orjson.dumps(events[k : k + 4])) == len(events[k : k + 4])
    write_rows(chdb_store, f"{db}.points", builder.take())
    fast = chdb_store.query(select).rows
    assert check_points(chdb_store, db, expected_ids(SPEC, START))["ok"]
    chdb_store.command(f"TRUNCATE TABLE {db}.points")
    plain = ColumnBuilder()
    plain.add(events)
    _insert(chdb_store, db, plain.take())
    assert fast == chdb_store.query(select).rows
    assert len(fast) == SPEC.points
