"""Runs a keyed stage (per-series detection, per-service detection) behind a faust topic.

Delivery: each message is a token; the stage says when a token's rows are all out
(`drain()`); the runner writes them, then acks the message, so committed offsets never pass
a row that is not stored. State: checkpointed after the rows it covers (periodically, when
partitions are revoked, and before a graceful stop while the partitions are still ours) and
restored when partitions are assigned. Messages of partitions not owned are left unacked:
their owner replays them. A message may also be handed over in-process by the stage before
(`hand`): it is acked the way it says, or sent through the topic if its partition is revoked
before its rows are stored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import faust
from faust.types import TP

from stormwatch.store import Store, StoreError
from streams.checkpoints import CHECKPOINT_COLUMNS, load_checkpoints
from streams.sink import ClickHouseSink

log = logging.getLogger("stormwatch.streams")
FENCE = b"SWF1"  # a runner's marker on a partition it owns: see `StageRunner.hand`


async def write_with_retry(write: Callable[[], Any], stats: Any, what: str) -> None:
    """Retry a sink write with capped exponential backoff until it succeeds (offsets held)."""
    delay = 0.1
    while True:
        try:
            await asyncio.get_running_loop().run_in_executor(None, write)
            return
        except StoreError as e:
            stats.add(f"sink.{what}.failures")
            log.warning("writing %s failed (%s); retrying in %.1fs", what, e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _has_work(out: Any) -> bool:
    return bool(out.rows or out.episodes or out.tokens or getattr(out, "drift", None))


class Modulo(Mapping[int, int]):
    """series id → partition for stages keyed by `id % partitions`."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __getitem__(self, sid: int) -> int:
        return sid % self.n

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(())

    def __len__(self) -> int:
        return 0


@dataclass(frozen=True)
class Held:
    """A message the stage holds: `ack` once all its rows are stored; `resend`, for one handed
    over in-process, puts it on the topic when its partition is revoked before that."""

    ack: Callable[[], Awaitable[Any]]
    resend: Callable[[], Awaitable[Any]] | None = None


class SourceAcks:
    """Acks a batch of source events (one `take_events` batch) once every part of it handed
    over in-process is stored. `take_events` acks its events when the batch is done; the
    reference taken here holds their offsets until then. Call `done()` once the batch's
    other parts are sent; each part handed over (`held()`) counts for itself."""

    def __init__(self, stream: faust.StreamT, events: Sequence[Any]) -> None:
        self._stream, self._events, self._left = stream, events, 1
        for ev in events:
            ev.message.incref()

    def held(self, send: Callable[[], Awaitable[Any]]) -> Held:
        """A part handed over: acked with the batch, or sent by `send` (then acked) if its
        partition is revoked before its rows are stored."""
        self._left += 1

        async def resend() -> None:
            await send()
            await self.done()

        return Held(self.done, resend)

    async def done(self) -> None:
        self._left -= 1
        if self._left == 0:
            for ev in self._events:
                await self._stream.ack(ev)


@dataclass
class StageRunner:
    """Wires one stage into `app`; `install()` registers its agent, timers and hooks."""

    app: Any  # streams.app.StormApp
    name: str  # stats prefix: "detect", "services"
    topic: faust.TopicT
    stage: Any  # add(*decoded, token), drain(), close_idle(), snapshot(), restore()
    store: Store
    database: str
    stats: Any
    decode: Callable[[bytes], tuple[Any, ...]]  # a message → the arguments of stage.add
    sinks: Sequence[ClickHouseSink]
    to_sinks: Callable[[Any], None]  # a drained output → rows added to the sinks
    drop: Callable[[set[int]], None]  # forget the stage's state of these partitions
    partition_map: Callable[[], Mapping[int, int]]  # state key → partition, per checkpoint
    after_write: Callable[[Any], Awaitable[None]] | None = None
    control: Callable[[bytes], Awaitable[bool]] | None = None  # True: handled, ack it
    restore_before: Any = None
    restore_after: Any = None
    checkpoint_s: float = 30.0
    # Fewer, larger parts: ClickHouse's insert and background merges cost ~3.5 us of CPU a
    # point at these settings, ~4.9 at 20k rows / 0.2 s (docs/performance.md, third round,
    # before inserts skipped the insert-time collapse, which took most of both); the price
    # is up to 0.3 s more latency (p99 to episode ~0.8-1.0 s at 47-54k points/s).
    flush_rows: int = 50_000
    flush_s: float = 0.5
    idle_s: float = 0.2
    # Input quiet this long when a write ends: the rows scored meanwhile are the end of a
    # burst, written then rather than at the next idle tick (up to `idle_s` later). Twice the
    # normalize stage's take window, so a steady stream's gaps between takes do not count:
    # more, smaller writes at a steady rate cost latency (docs/performance.md, tenth round).
    quiet_s: float = 0.1
    hand_overs: bool = False  # whether a stage before this one hands messages over (`hand`)
    # hand-overs of a partition waiting for its marker (see `hand`): each up to 50,000 points,
    # its raw batch held meanwhile; a raw backlog delays the marker (it is read after the raw
    # messages fetched before it), and past this they take the topic as before
    max_waiting: int = 20
    # token → how to ack its message once its rows are stored, and (handed over in-process)
    # how to send it through the topic instead if its partition is revoked before that
    held: dict[tuple[int, int], Held] = field(default_factory=dict)
    owned: set[int] = field(default_factory=set)
    stopping: bool = False

    def __post_init__(self) -> None:
        self._lock = asyncio.Lock()
        self._inflight: asyncio.Future[None] | None = None  # the write started last
        self._stream: faust.StreamT | None = None
        self._last_flush = time.monotonic()
        self.last_add = self._last_flush  # the consume loop's last message in: how long quiet
        self._owed: set[asyncio.Task[None]] = set()
        self._handed = 0  # messages handed over in-process: their tokens' negative offsets
        # Hand-overs per partition: taken at once only once the consume loop has read what
        # the topic held when the partition became ours (`_ready`); until then they wait, in
        # order, for the marker sent then (`_fences`) to come back.
        self._ready: set[int] = set()
        self._fences: dict[int, bytes] = {}
        self._waiting: dict[int, list[tuple[tuple[Any, ...], Held]]] = {}
        self._marked: dict[int, float] = {}  # when each partition's latest marker was sent
        # held by the stage before while it hands over or sends one batch's parts (see
        # `_revoked`)
        self.handing = asyncio.Lock()
        self._checkpoints = ClickHouseSink(
            self.store, f"{self.database}.checkpoints", CHECKPOINT_COLUMNS
        )

    @property
    def topic_name(self) -> str:
        return self.topic.get_topic_name()

    async def flush(self, wait: bool = True) -> None:
        """Write what the stage has drained, then ack the messages it is done with.

        `wait=False` (the consume loop) starts the write and returns: detection goes on while
        the rows are inserted, one write in flight at a time (a second waits, and so does a
        buffer past `4 * flush_rows`). Acks still follow their rows' write."""
        async with self._lock:
            if self._inflight is not None:
                busy = not self._inflight.done()
                if busy and not wait and self.stage.buffered_rows < 4 * self.flush_rows:
                    return  # the previous write is still going: keep detecting meanwhile
                await self._inflight
                self._inflight = None
            out = self.stage.drain()
            if not _has_work(out):
                return
            self.to_sinks(out)
            if wait:
                await self._write_and_ack(out)
            else:
                self._inflight = asyncio.ensure_future(self._write_and_ack(out))
                self._inflight.add_done_callback(self._after_write)

    def _after_write(self, done: asyncio.Future[None] | None = None) -> None:
        """A write started by the consume loop or the tick ended: if rows wait and the input
        has been quiet for `quiet_s`, write them now; if it went quiet only just, look again
        when `quiet_s` has passed. A stream still flowing is left to the loop and the tick."""
        if self.stopping or not self.stage.buffered_rows or (done and done.cancelled()):
            return  # a cancelled write: the worker is going down, its stop writes the rest
        if self._inflight is not None and not self._inflight.done():
            return  # another write started meanwhile: its end looks again
        wait = self.last_add + self.quiet_s - time.monotonic()
        loop = asyncio.get_running_loop()
        if wait <= 0:
            task = loop.create_task(self.flush(wait=False))
            self._owed.add(task)  # held until done: the loop keeps only a weak reference
            task.add_done_callback(self._owed.discard)
        else:  # it went quiet only just: look again once quiet_s has passed
            loop.call_later(wait, self._quiet_check, self.last_add)

    def _quiet_check(self, last_add: float) -> None:
        if self.last_add == last_add:  # nothing came since: the burst ended
            self._after_write()

    async def _write_and_ack(self, out: Any) -> None:
        table = self.sinks[0].table.rsplit(".", 1)[-1]  # the outage is named by its table
        await write_with_retry(self._write, self.stats, table)
        self.stats.add(f"{self.name}.points_written", out.rows)
        if self.after_write:
            await self.after_write(out)
        for tok in out.tokens:
            held = self.held.pop(tok, None)
            if held is not None:
                await held.ack()
        self._last_flush = time.monotonic()

    def _write(self) -> None:
        for sink in self.sinks:
            sink.flush()

    async def checkpoint(self) -> None:
        """Write everything scored, then save the state that scored it. The snapshot is taken
        with the last drain, with no await between: a point the consume loop scores while the
        rows are written is in neither, so a restart never skips a row it did not store."""
        async with self._lock:
            if self._inflight is not None:
                await self._inflight
                self._inflight = None
            out = self.stage.drain()
            snapshot = self.stage.snapshot()
            if _has_work(out):
                self.to_sinks(out)
                await self._write_and_ack(out)
            now_ms = int(time.time() * 1000)
            parts = self.partition_map()
            for key, state in snapshot.items():
                self._checkpoints.add([now_ms, self.topic_name, parts[key], key, state])
            n = len(self._checkpoints)
            await write_with_retry(self._checkpoints.flush, self.stats, "checkpoints")
            self.stats.add(f"{self.name}.checkpointed", n)

    async def _assigned(self, sender: object, assigned: set[Any], **kw: Any) -> None:
        parts = {tp.partition for tp in assigned if tp.topic == self.topic_name}
        if not parts:
            return
        loop = asyncio.get_running_loop()
        async with self._lock:
            states = await loop.run_in_executor(
                None,
                load_checkpoints,
                self.store,
                self.database,
                self.topic_name,
                parts,
                self.restore_before,
                self.restore_after,
            )
            self.drop(parts)  # anything built while the partitions were not ours
            self.stage.restore(states)
            await self._send_on(self._unready(parts))  # none expected: revoked first
            self.owned.update(parts)
            if self.hand_overs:  # the markers go now: most come back before the first hand-over
                for p in sorted(parts):
                    await self._send_marker(p)
        self.stats.add(f"{self.name}.restored", len(states))
        log.info("%s: partitions %s assigned, %d states resumed", self.name, parts, len(states))

    async def _revoked(self, sender: object, revoked: set[Any], **kw: Any) -> None:
        parts = {tp.partition for tp in revoked if tp.topic == self.topic_name}
        if not parts:
            return
        # The batch being handed over finishes first, and the next sees the partitions gone:
        # what it sends for them goes after what is sent on here, in the order it came.
        async with self.handing:
            self.owned.difference_update(parts)
            await self.checkpoint()
            async with self._lock:
                self.drop(parts)
                resend = [self.held.pop(k) for k in [k for k in self.held if k[0] in parts]]
                resend += self._unready(parts)  # newer than any taken
                await self._send_on(resend)  # their rows' next owner gets them via the topic

    async def _before_stop(self) -> None:
        """A graceful stop takes nothing more, writes what is done and checkpoints it, so the
        next owner resumes exactly here."""
        async with self.handing:  # a batch being handed over is taken whole, or not at all
            self.stopping = True
        await self.checkpoint()

    async def _consume(self, stream: faust.StreamT) -> None:
        self._stream = stream
        async for ev in stream.noack().events():
            msg = ev.message
            if self.stopping:
                continue  # not acked: whoever owns the partition next replays it
            if msg.partition not in self.owned and not await self._owned_soon(msg.partition):
                continue  # revoked: not acked, its next owner replays it
            if ev.value.startswith(FENCE):
                await stream.ack(ev)
                await self._fenced(msg.partition, ev.value)
                continue
            if self.control is not None and await self.control(ev.value):
                await stream.ack(ev)
                continue
            tok = (msg.partition, msg.offset)
            try:
                args = self.decode(ev.value)
            except Exception as e:  # noqa: BLE001 - only our own stages write these topics
                log.error("%s: unreadable message %s: %s", self.name, tok, e)
                self.stats.add(f"{self.name}.unreadable")
                await stream.ack(ev)
                continue
            self.held[tok] = Held(partial(stream.ack, ev))
            await self._add(args, tok)

    def takes(self, partition: int) -> bool:
        """Whether a message for `partition` can be handed over in-process (`hand`): this
        worker owns the partition and its state is restored."""
        return not self.stopping and partition in self.owned

    async def hand(self, partition: int, args: tuple[Any, ...], held: Held) -> None:
        """Take a message for `partition` that did not go through the topic (the stage that
        made it runs in this worker): `held.ack` once its rows are stored, `held.resend` if
        the partition is revoked first. Only when `takes(partition)`, with no await between.

        A partition just assigned may still have messages in the topic (sent before it was
        ours, by this worker or the one before): hand-overs wait behind a marker sent to the
        partition until the consume loop reads it, so a series keeps its order. Past
        `max_waiting` they go on through the topic instead, behind a new marker."""
        if partition in self._ready:
            await self._take(partition, args, held)
            return
        waiting = self._waiting.setdefault(partition, [])
        waiting.append((args, held))
        if len(waiting) > self.max_waiting:
            del self._waiting[partition]
            # the new marker is the one to wait for from now on (an older one read meanwhile
            # releases nothing), and goes after what is sent on here
            marker = self._new_marker(partition)
            await self._send_on([h for _, h in waiting])
            await self.topic.send(value=marker, partition=partition)
        elif partition not in self._fences:
            await self._send_marker(partition)

    async def _send_marker(self, partition: int) -> None:
        await self.topic.send(value=self._new_marker(partition), partition=partition)

    @staticmethod
    async def _send_on(helds: list[Held]) -> None:
        """Hand-overs not stored here, through the topic, in order (topic messages have no
        `resend`: the broker keeps them for the next owner)."""
        for held in helds:
            if held.resend is not None:
                await held.resend()

    def _new_marker(self, partition: int) -> bytes:
        self._fences[partition] = marker = FENCE + os.urandom(8)
        self._marked[partition] = time.monotonic()
        return marker

    async def _take(self, partition: int, args: tuple[Any, ...], held: Held) -> None:
        self._handed += 1
        tok = (partition, -self._handed)  # never a real offset
        self.held[tok] = held
        await self._add(args, tok)

    async def _fenced(self, partition: int, marker: bytes) -> None:
        """A marker read back: if it is the partition's latest, what waited is taken, in order,
        and hand-overs are taken at once from now on. Under `handing`, so that no batch is
        handed over meanwhile and no revoke comes between the takes."""
        async with self.handing:
            if self._fences.get(partition) != marker:
                return  # an older marker, or another worker's
            waiting = self._waiting.pop(partition, [])
            for args, held in waiting:
                await self._take(partition, args, held)
            del self._fences[partition]
            self._ready.add(partition)
        since = time.monotonic() - self._marked[partition]
        log.info("%s: partition %d takes hand-overs, %.3f s after its marker was sent; %d waited",
                 self.name, partition, since, len(waiting))  # fmt: skip

    def _unready(self, parts: set[int]) -> list[Held]:
        """Forget these partitions' markers; what waited for them, to send on."""
        self._ready.difference_update(parts)
        waiting = [self._waiting.pop(p, []) for p in parts]
        for p in parts:
            self._fences.pop(p, None)
        return [held for w in waiting for _, held in w]

    async def _add(self, args: tuple[Any, ...], tok: tuple[int, int]) -> None:
        t0 = time.perf_counter()
        self.stage.add(*args, tok)
        self.last_add = time.monotonic()
        self.stats.add(f"{self.name}.busy_s", time.perf_counter() - t0)
        if (
            self.stage.buffered_rows >= self.flush_rows
            or time.monotonic() - self._last_flush >= self.flush_s
        ):
            await self.flush(wait=False)

    async def _owned_soon(self, partition: int) -> bool:
        """Whether a message of a partition not (yet) ours is to be taken: one assigned to us
        whose state is still being restored waits for it. Skipping it would lose it: faust
        commits the first run of consecutive acked offsets, not counting from the last commit,
        so the next acked message of the partition would commit past the skipped one."""
        tp = TP(self.topic_name, partition)
        if tp in self.app.consumer.assignment():
            self.stats.add(f"{self.name}.waited_for_restore")
        while partition not in self.owned:
            if self.stopping or tp not in self.app.consumer.assignment():
                return False
            await asyncio.sleep(0.02)
        return True

    async def _idle(self) -> None:
        """Close quiet windows and start writing what is drained. It does not wait for the
        write: waiting held the stage's lock, and the consume loop stalled behind it."""
        if self._stream is not None and not self.stopping:
            self.stage.close_idle()
            await self.flush(wait=False)

    async def _periodic_checkpoint(self) -> None:
        if self._stream is not None:
            await self.checkpoint()

    def install(self) -> StageRunner:
        app = self.app
        app.agent(self.topic, name=f"stormwatch.{self.name}")(self._consume)
        app.timer(self.idle_s, name=f"stormwatch.{self.name}.idle")(self._idle)
        app.timer(self.checkpoint_s, name=f"stormwatch.{self.name}.checkpoint")(
            self._periodic_checkpoint
        )
        app.on_partitions_assigned.connect(self._assigned)
        app.on_partitions_revoked.connect(self._revoked)
        app.before_stop.append(self._before_stop)
        return self
