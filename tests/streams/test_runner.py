"""The stage runner's writes in the real engine: one in flight, and the rows scored behind it
at the end of a burst go out when it ends, not at the next idle tick, once the input is
quiet; while it still flows, they wait for it to go quiet. Points handed over in-process
hold their raw batch until they are stored, or go on through the topic when revoked."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from faust.types.tuples import Message

from detectors.registry import model_factory
from stormwatch.store import FlakyStore, Store
from streams.app import Stats
from streams.columns import POINT_COLUMNS
from streams.detect import DetectStage
from streams.runner import Modulo, SourceAcks, StageRunner
from streams.series import AGG_LAST, AGG_MEAN, Obs, make_series, series_id
from streams.sink import ClickHouseSink
from streams.wire import points_of

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


class Source:
    """The stream a `take_events` batch came from, as `SourceAcks` acks it (faust's own
    reference counting on real `Message`s); which messages got their final ack, in order."""

    def __init__(self, n: int) -> None:
        self.events = [
            SimpleNamespace(message=Message("raw", 0, i, 0.0, 0, [], None, b"", None))
            for i in range(n)
        ]
        self.final: list[int] = []
        for ev in self.events:
            ev.message.incref()  # the reference faust takes when it delivers the message

    async def ack(self, ev: Any) -> bool:
        if ev.message.ack(None):
            self.final.append(ev.message.offset)
            return True
        return False

    async def batch_done(self) -> None:
        """What `take_events` does once the agent has handled the batch."""
        for ev in self.events:
            await self.ack(ev)


SPAN = make_series("span", "latency_ms", "checkout", operation="pay")
SPAN_SID = series_id(SPAN)


def test_a_batch_handed_over_in_process_is_acked_once_its_rows_are_stored(slow_runner) -> None:  # type: ignore[no-untyped-def]
    runner, store, written = slow_runner
    store.go.set()
    t0 = int(time.time() * 1000) - 3_600_000

    async def scenario() -> list[Any]:
        source = Source(3)
        acks = SourceAcks(source, source.events)  # type: ignore[arg-type]
        assert not runner.takes(0)  # not ours yet: the normalize stage sends it instead
        runner.owned.add(0)
        points = points_of([Obs(SID, t0 + i * 1000, 1.0 + i % 2, AGG_LAST) for i in range(20)])

        async def never() -> None:
            raise AssertionError("sent through the topic, though stored in-process")

        await runner.hand(0, (points, {SID: CPU}), acks.held(never))
        await acks.done()  # every part of the batch handed over or sent
        await source.batch_done()
        seen = [list(source.final), written()]  # held until the rows are stored
        await runner.flush()
        return [*seen, list(source.final), written()]

    assert asyncio.run(scenario()) == [[], 0, [0, 1, 2], 20]


def test_a_part_handed_over_goes_through_the_topic_when_its_partition_is_revoked(
    chdb_store, db_settings
) -> None:  # type: ignore[no-untyped-def]
    db = db_settings.database
    points_sink = ClickHouseSink(chdb_store, f"{db}.points", POINT_COLUMNS)
    runner = StageRunner(
        app=None, name="detect", topic=SimpleNamespace(get_topic_name=lambda: "points"),  # type: ignore[arg-type]
        stage=DetectStage(model_factory(), window_s=10.0), store=chdb_store, database=db,
        stats=Stats(), decode=lambda raw: (), sinks=[points_sink],
        to_sinks=lambda out: points_sink.add_columns(out.points),
        drop=lambda parts: runner.stage.drop_partitions(parts, 4),
        partition_map=lambda: Modulo(4),
    )  # fmt: skip
    part = SPAN_SID % 4
    t0 = int(time.time() * 1000) - 3_600_000
    t0 -= t0 % 10_000
    sent: list[str] = []

    async def scenario() -> list[Any]:
        source = Source(2)
        acks = SourceAcks(source, source.events)  # type: ignore[arg-type]
        runner.owned.add(part)
        spans = points_of([Obs(SPAN_SID, t0 + i * 100, 5.0, AGG_MEAN) for i in range(10)])

        async def send() -> None:
            sent.append(f"final acks before the send: {source.final}")

        await runner.hand(part, (spans, {SPAN_SID: SPAN}), acks.held(send))
        await acks.done()
        await source.batch_done()
        await runner.flush()
        seen = [list(source.final), list(sent)]  # the window is open: its rows are not out
        await runner._revoked(None, {TP("points", part)})
        return [*seen, list(source.final), list(sent), runner.takes(part)]

    assert asyncio.run(scenario()) == [[], [], [0, 1], ["final acks before the send: []"], False]
