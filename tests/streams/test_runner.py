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
from streams.runner import FENCE, Held, Modulo, SourceAcks, StageRunner
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


class Topic:
    """The points topic as the runner sends to it: what went where, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []

    def get_topic_name(self) -> str:
        return "points"

    async def send(self, value: bytes, partition: int) -> None:
        self.sent.append((partition, value))


class Recording(DetectStage):
    """The real stage, noting the token of each message in the order it came."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(model_factory(), **kw)
        self.order: list[Any] = []

    def add(self, obs: Any, meta: Any, token: Any) -> None:
        self.order.append(token)
        super().add(obs, meta, token)


@pytest.fixture
def hand_runner(chdb_store, db_settings):  # type: ignore[no-untyped-def]
    db = db_settings.database
    points = ClickHouseSink(chdb_store, f"{db}.points", POINT_COLUMNS)
    topic = Topic()
    runner = StageRunner(
        app=None, name="detect", topic=topic, stage=Recording(window_s=10.0),  # type: ignore[arg-type]
        store=chdb_store, database=db, stats=Stats(), decode=lambda raw: (), sinks=[points],
        to_sinks=lambda out: points.add_columns(out.points),
        drop=lambda parts: runner.stage.drop_partitions(parts, 4),
        partition_map=lambda: Modulo(4), max_waiting=3,
    )  # fmt: skip

    def written() -> int:
        return int(chdb_store.query(f"SELECT count() FROM {db}.points").rows[0][0])

    return runner, topic, written


T0 = int(time.time() * 1000) - 3_600_000  # within the table's TTL
T0 -= T0 % 10_000


def cpu_points(start: int, n: int) -> tuple[Any, dict[int, Any]]:
    obs = [Obs(SID, T0 + i * 1000, 1.0 + i % 2, AGG_LAST) for i in range(start, start + n)]
    return points_of(obs), {SID: CPU}


async def never() -> None:
    raise AssertionError("sent through the topic, though stored in-process")


async def acked() -> None:
    pass  # a message whose ack this test does not follow


async def hand_numbered(runner: StageRunner, part: int, n: int, sent: list[int]) -> None:
    """n hand-overs of 5 points each, none to be stored; each notes its number in `sent`
    when it is sent through the topic."""
    for i in range(n):

        async def send(i: int = i) -> None:
            sent.append(i)

        await runner.hand(part, cpu_points(i * 5, 5), Held(never, send))


def test_hand_overs_wait_for_the_marker_then_are_taken_in_order(hand_runner) -> None:  # type: ignore[no-untyped-def]
    runner, topic, written = hand_runner
    part = SID % 4

    async def scenario() -> list[Any]:
        assert not runner.takes(part)  # not ours yet: the normalize stage sends it instead
        runner.owned.add(part)  # as when its state is restored
        assert runner.takes(part)
        source = Source(1)
        acks = SourceAcks(source, source.events)  # type: ignore[arg-type]
        await runner.hand(part, cpu_points(0, 5), acks.held(never))
        await runner.hand(part, cpu_points(5, 5), acks.held(never))
        seen = [list(runner.stage.order), list(topic.sent)]  # waiting; one marker sent
        ((_, marker),) = topic.sent
        # the consume loop reads a message sent before the marker, then an older marker
        runner.held[(part, 7)] = Held(acked)
        runner.stage.add(*cpu_points(10, 0), (part, 7))
        await runner._fenced(part, marker[:-1] + b"x")
        seen.append(len(runner.stage.order))  # an older marker: still waiting
        await runner._fenced(part, marker)  # its own marker: what waited is taken, in order
        await runner.hand(part, cpu_points(10, 5), acks.held(never))  # and now taken at once
        await acks.done()
        await source.batch_done()
        await runner.flush()
        return [*seen, runner.stage.order, source.final, written()]

    seen = asyncio.run(scenario())
    assert seen[0] == [] and [p for p, _ in seen[1]] == [part]
    assert seen[1][0][1].startswith(FENCE)
    assert seen[2:] == [1, [(part, 7), (part, -1), (part, -2), (part, -3)], [0], 15]


def test_too_many_hand_overs_waiting_go_through_the_topic_behind_a_new_marker(hand_runner) -> None:  # type: ignore[no-untyped-def]
    runner, topic, _ = hand_runner
    part = SID % 4
    sent: list[int] = []

    async def scenario() -> None:
        runner.owned.add(part)
        await hand_numbered(runner, part, 4, sent)  # max_waiting is 3

    asyncio.run(scenario())
    assert sent == [0, 1, 2, 3]
    assert runner.stage.order == []
    first, second = (m for p, m in topic.sent)
    assert first != second and all(m.startswith(FENCE) for m in (first, second))


def test_a_batch_handed_over_in_process_is_acked_once_its_rows_are_stored(hand_runner) -> None:  # type: ignore[no-untyped-def]
    runner, topic, written = hand_runner
    part = SID % 4

    async def scenario() -> list[Any]:
        runner.owned.add(part)
        await runner.hand(part, cpu_points(0, 1), Held(acked))  # the marker goes out
        await runner._fenced(part, topic.sent[0][1])  # and comes back
        await runner.flush()
        source = Source(3)
        acks = SourceAcks(source, source.events)  # type: ignore[arg-type]
        await runner.hand(part, cpu_points(1, 20), acks.held(never))
        await acks.done()  # every part of the batch handed over or sent
        await source.batch_done()
        seen = [list(source.final), written()]  # held until the rows are stored
        await runner.flush()
        return [*seen, list(source.final), written()]

    assert asyncio.run(scenario()) == [[], 1, [0, 1, 2], 21]


def test_a_part_handed_over_is_sent_on_when_its_partition_is_revoked(hand_runner) -> None:  # type: ignore[no-untyped-def]
    runner, topic, _ = hand_runner
    part = SPAN_SID % 4
    sent: list[str] = []

    async def scenario() -> list[Any]:
        source = Source(2)
        acks = SourceAcks(source, source.events)  # type: ignore[arg-type]
        runner.owned.add(part)
        spans = points_of([Obs(SPAN_SID, T0 + i * 100, 5.0, AGG_MEAN) for i in range(10)])

        async def send() -> None:
            sent.append(f"final acks before the send: {source.final}")

        await runner.hand(part, (spans, {SPAN_SID: SPAN}), acks.held(send))
        await runner._fenced(part, topic.sent[0][1])
        await acks.done()
        await source.batch_done()
        await runner.flush()
        seen = [list(source.final), list(sent)]  # the window is open: its rows are not out
        await runner._revoked(None, {TP("points", part)})
        return [*seen, list(source.final), list(sent), runner.takes(part)]

    assert asyncio.run(scenario()) == [[], [], [0, 1], ["final acks before the send: []"], False]


def test_hand_overs_waiting_when_the_partition_is_revoked_are_sent_on(hand_runner) -> None:  # type: ignore[no-untyped-def]
    runner, topic, _ = hand_runner
    part = SID % 4
    sent: list[int] = []

    async def scenario() -> bool:
        runner.owned.add(part)
        await hand_numbered(runner, part, 2, sent)
        await runner._revoked(None, {TP("points", part)})
        await runner._fenced(part, topic.sent[0][1])  # a marker read after: nothing to take
        return runner.takes(part)

    assert asyncio.run(scenario()) is False
    assert sent == [0, 1] and runner.stage.order == []


def test_the_marker_goes_out_when_the_partition_is_assigned(hand_runner) -> None:  # type: ignore[no-untyped-def]
    runner, topic, _ = hand_runner
    runner.hand_overs = True
    part = SID % 4

    async def scenario() -> list[Any]:
        await runner._assigned(None, {TP("points", part)})  # restores (none) and sends it
        seen = [[p for p, _ in topic.sent], runner.takes(part)]
        await runner._fenced(part, topic.sent[0][1])  # back before the first hand-over
        await runner.hand(part, cpu_points(0, 5), Held(acked))
        return [*seen, runner.stage.order, len(topic.sent)]

    assert asyncio.run(scenario()) == [[part], True, [(part, -1)], 1]


def span_points(start: int, n: int) -> tuple[Any, dict[int, Any]]:
    obs = [Obs(SPAN_SID, T0 + i * 100, 5.0, AGG_MEAN) for i in range(start, start + n)]
    return points_of(obs), {SPAN_SID: SPAN}


def test_a_revoke_or_a_stop_waits_for_the_batch_being_handed_over(hand_runner) -> None:  # type: ignore[no-untyped-def]
    runner, topic, _ = hand_runner
    part = SPAN_SID % 4  # its windows stay open: the parts stay held until the revoke
    sent: list[str] = []

    def held(name: str) -> Held:
        async def send() -> None:
            sent.append(name)

        return Held(acked, send)

    async def batch(then: str) -> bool:
        """One batch being handed over: part of it, a pause, the rest."""
        async with runner.handing:
            await runner.hand(part, span_points(0, 5), held(f"{then} 1"))
            await asyncio.sleep(0.05)
            taken = runner.takes(part)  # still ours while the batch is handed over
            await runner.hand(part, span_points(5, 5), held(f"{then} 2"))
            return taken

    async def scenario() -> list[Any]:
        runner.owned.add(part)
        await runner.hand(part, span_points(0, 0), Held(acked))
        await runner._fenced(part, topic.sent[0][1])
        first = asyncio.create_task(batch("a"))
        await asyncio.sleep(0.01)
        await runner._revoked(None, {TP("points", part)})
        seen = [await first, list(sent), runner.takes(part)]
        runner.owned.add(part)  # assigned again
        second = asyncio.create_task(batch("b"))
        await asyncio.sleep(0.01)
        await runner._before_stop()
        return [*seen, await second, runner.stopping]

    assert asyncio.run(scenario()) == [True, ["a 1", "a 2"], False, True, True]


def test_a_marker_read_while_a_batch_is_handed_over_waits_for_it(hand_runner) -> None:  # type: ignore[no-untyped-def]
    runner, topic, _ = hand_runner
    part = SID % 4

    async def scenario() -> list[Any]:
        runner.owned.add(part)
        await runner.hand(part, cpu_points(0, 5), Held(acked))
        async with runner.handing:  # a batch is being handed over
            fenced = asyncio.create_task(runner._fenced(part, topic.sent[0][1]))
            await asyncio.sleep(0.02)
            await runner.hand(part, cpu_points(5, 5), Held(acked))  # still waits, in order
            seen = [list(runner.stage.order)]
        await fenced
        return [*seen, runner.stage.order, runner.takes(part)]

    assert asyncio.run(scenario()) == [[], [(part, -1), (part, -2)], True]
