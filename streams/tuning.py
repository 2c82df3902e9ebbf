"""Knobs faust does not expose, set where they are needed (measured in docs/performance.md).

faust hard-codes its consumer's `fetch_max_wait_ms=1500`; a broker may hold a fetch that
finds nothing that long, so each Kafka hop added up to 1.5 s: p99 produce → episode went from
3.7 s to 1.8 s at half the maximum rate with 100 ms, throughput unchanged.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

FETCH_MAX_WAIT_MS = 100
# faust's default is 1 MiB a partition: ~18 raw messages of 500 events, so under a backlog
# the normalize agent's batches stayed small and so did the points messages it sends, and
# the detect stage pays per series per message (6.8k points a message on average here and
# 125k points/s with 1 worker; 8 MiB: 12.5k and 150-180k). It must also hold the largest
# message a stage writes (`producer_max_request_size`), which is the same 8 MiB.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def prompt_fetches(max_wait_ms: int = FETCH_MAX_WAIT_MS) -> None:
    """Make faust's worker consumers answer within `max_wait_ms` when there is nothing new.
    Idempotent; affects the faust consumers this process creates afterwards."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "stormwatch_prompt", False):
        return

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms  # read when its fetcher starts
        return consumer

    create_worker_consumer.stormwatch_prompt = True  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def ordered_commits() -> None:
    """Make faust commit no partition past its oldest message a stream took and has not acked.

    faust commits the first run of consecutive acked offsets and guards the head of that run
    only when the partition has a committed offset and then off by one (docs/reliability.md,
    "Commits in order"). Our stages ack out of order (a raw batch waits for its rows, a window
    for its close), so a later batch acked first was committed past the earlier one: a crash
    then lost it. Idempotent; affects every faust consumer in this process."""
    from faust.transport.consumer import Consumer

    if getattr(Consumer._filter_committable_offsets, "stormwatch_ordered", False):
        return

    def filter_committable_offsets(self: Any, tps: Any) -> dict[Any, int]:
        committed = self._committed_offset
        heads: dict[Any, int] = {}  # per partition, the oldest offset taken and not acked
        for m in list(self._unacked_messages):
            c = committed.get(m.tp)
            # below the commit: acked after a commit passed it, and never cleared from the set
            if (c is None or m.offset >= c) and m.offset < heads.get(m.tp, m.offset + 1):
                heads[m.tp] = m.offset
        out: dict[Any, int] = {}
        for tp in tps:
            head, acked = heads.get(tp), self._acked[tp]
            if head is not None and acked and min(acked) > head:
                continue  # what is acked lies past a message still in flight: commit nothing
            offset = self._new_offset(tp)
            if offset is not None and self._should_commit(tp, offset):
                out[tp] = offset
        return out

    filter_committable_offsets.stormwatch_ordered = True  # type: ignore[attr-defined]
    Consumer._filter_committable_offsets = filter_committable_offsets  # type: ignore[method-assign]


def quiet_gc() -> Callable[[], None]:
    """Move what start-up allocated out of the collector's way and collect young objects
    less often: the hot path allocates many short-lived objects (DESIGN.md: default GC costs
    ~20% of the raw path). Returns a function restoring the defaults."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)

    def restore() -> None:
        gc.set_threshold(*before)
        gc.unfreeze()

    return restore
