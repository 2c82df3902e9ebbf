"""The benchmark's own correctness: its stream reaches every partition, and its point check
fails a run that lost or duplicated points (that is what makes `make bench` exit non-zero)."""

from __future__ import annotations

from kafka.partitioner.default import murmur2

from benchmarks.ceiling import (
    ColumnBuilder,
    StreamSpec,
    check_points,
    event,
    expected_ids,
    partition_keys,
    stream_start,
)
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
