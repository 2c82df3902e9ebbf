"""The stage runner's writes in the real engine: one in flight, and the rows scored behind it
at the end of a burst go out when it ends, not at the next idle tick, once the input is
quiet; while it still flows, they wait for it to go quiet."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

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


def feed(runner: StageRunner, start: int, n: int) -> None:
    """Messages into the stage as the consume loop adds them (no tick runs in these tests)."""
    t0 = int(time.time() * 1000) - 3_600_000  # within the table's TTL
    for i in range(start, start + n):
        runner.stage.add([Obs(SID, t0 + i * 10_000, 10.0 + i % 3, AGG_LAST)], {SID: CPU}, (0, i))
        runner.last_add = time.monotonic()


@pytest.fixture
def slow_runner(chdb_store, db_settings):  # type: ignore[no-untyped-def]
    db = db_settings.database
    store = SlowFirstInsert(chdb_store)
    points = ClickHouseSink(store, f"{db}.points", POINT_COLUMNS)  # type: ignore[arg-type]
    runner = StageRunner(
        app=None, name="detect", topic=None, stage=DetectStage(model_factory()),  # type: ignore[arg-type]
        store=store, database=db, stats=Stats(), decode=lambda raw: (), sinks=[points],
        to_sinks=lambda out: points.add_columns(out.points), drop=lambda parts: None,
        partition_map=dict, quiet_s=1.0,
    )  # fmt: skip

    def written() -> int:
        return int(chdb_store.query(f"SELECT count() FROM {db}.points").rows[0][0])

    return runner, store, written


async def until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def test_rows_behind_a_write_at_a_bursts_end_go_out_when_it_ends(slow_runner) -> None:  # type: ignore[no-untyped-def]
    runner, store, written = slow_runner

    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        feed(runner, 0, 10)
        await runner.flush(wait=False)  # the first write starts and hangs in the engine
        assert await loop.run_in_executor(None, store.started.wait, 10)
        feed(runner, 10, 5)
        await runner.flush(wait=False)  # as the idle tick would: returns, a write is going
        seen = [written()]
        runner.last_add -= runner.quiet_s  # the burst ended quiet_s ago
        store.go.set()
        # no message and no tick follow: the 5 rows go out right after the first write
        await until(lambda: written() >= 15)
        seen.append(written())
        await runner.flush()  # the last write's acks and counters, before the loop ends
        return seen

    assert asyncio.run(scenario()) == [0, 15]
    assert runner.stats.values["detect.points_written"] == 15


def test_rows_behind_a_write_wait_until_the_input_goes_quiet(slow_runner) -> None:  # type: ignore[no-untyped-def]
    runner, store, written = slow_runner

    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        feed(runner, 0, 10)
        await runner.flush(wait=False)
        assert await loop.run_in_executor(None, store.started.wait, 10)
        feed(runner, 10, 5)  # the last message came just now
        store.go.set()
        await until(lambda: written() >= 10)
        await asyncio.sleep(0.1)
        seen = [written()]  # the first write is done; the input has been quiet < quiet_s
        await until(lambda: written() >= 15)  # then quiet_s passes: no tick, no message
        seen.append(written())
        await runner.flush()
        return seen

    assert asyncio.run(scenario()) == [10, 15]
    assert runner.stats.values["detect.points_written"] == 15
