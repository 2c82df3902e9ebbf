"""The stage runner's writes in the real engine: one in flight, and a flush that found it
busy runs when it ends, so the last rows of a burst do not wait for the next idle tick."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

from detectors.registry import model_factory
from stormwatch.store import FlakyStore, Store
from streams.app import Stats
from streams.columns import POINT_COLUMNS
from streams.detect import DetectStage
from streams.runner import StageRunner
from streams.series import AGG_LAST, Obs, make_series, series_id
from streams.sink import ClickHouseSink

CPU = make_series("metric", "cpu", "", host="a")
SID = series_id(CPU)


class SlowFirstInsert(FlakyStore):
    """The real store, whose first insert into `points` waits until the test lets it go: a
    slow insert on demand (it fails none)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner, failures=0)
        self.started = threading.Event()
        self.go = threading.Event()
        self._first = True

    def insert(self, table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> None:
        if self._first and table.endswith(".points"):
            self._first = False
            self.started.set()
            self.go.wait(10)
        self.inner.insert(table, columns, data)


def feed(stage: DetectStage, start: int, n: int) -> None:
    t0 = int(time.time() * 1000) - 3_600_000  # within the table's TTL
    for i in range(start, start + n):
        stage.add([Obs(SID, t0 + i * 10_000, 10.0 + i % 3, AGG_LAST)], {SID: CPU}, (0, i))


def test_a_flush_that_finds_a_write_in_flight_runs_when_that_write_ends(
    chdb_store, db_settings
) -> None:  # type: ignore[no-untyped-def]
    db = db_settings.database
    store = SlowFirstInsert(chdb_store)
    stage = DetectStage(model_factory())
    points = ClickHouseSink(store, f"{db}.points", POINT_COLUMNS)  # type: ignore[arg-type]
    runner = StageRunner(
        app=None, name="detect", topic=None, stage=stage, store=store,  # type: ignore[arg-type]
        database=db, stats=Stats(), decode=lambda raw: (), sinks=[points],
        to_sinks=lambda out: points.add_columns(out.points), drop=lambda parts: None,
        partition_map=dict,
    )  # fmt: skip

    def written() -> int:
        return int(chdb_store.query(f"SELECT count() FROM {db}.points").rows[0][0])

    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        feed(stage, 0, 10)
        await runner.flush(wait=False)  # the first write starts and hangs in the engine
        assert await loop.run_in_executor(None, store.started.wait, 10)
        feed(stage, 10, 5)
        await runner.flush(wait=False)  # as the idle tick would: returns, a write is going
        seen = [written()]
        store.go.set()
        # no message and no tick follow: the 5 rows go out right after the first write
        deadline = time.monotonic() + 10
        while written() < 15 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        seen.append(written())
        return seen

    assert asyncio.run(scenario()) == [0, 15]
    assert runner.stats.values["detect.points_written"] == 15
