"""Offsets a source partition skipped between two messages the normalize agents took.

Kafka numbers a partition's messages without holes, and a worker reads each partition it owns
in order from where it began (the committed offset, else the first retained), so the first
message an agent takes is at that offset and each next one at the last + 1. A larger step
means messages were never normalized: deleted by retention before they were read, compacted,
taken by a transaction's marker, or dropped by the client between the fetch and the agent.
faust counts such a hole as read, so nothing else would report it. A message the broker lost
itself leaves no hole to see (docs/reliability.md, "Known issue").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("stormwatch.normalize")


class OffsetGaps:
    """The last offset taken per (topic, partition); `see` counts and logs any skipped.

    A partition's tracking starts where reading it began (`start`), again when it is revoked
    (its next owner may read past us), and a message at or before the last is a seek back
    (replayed, not skipped).
    Logs at most one warning a partition every `every_s`; the count says how many went by."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.last: dict[tuple[str, int], int] = {}
        self.skipped = 0  # offsets, all partitions, since start
        self.every_s = every_s
        self.clock = clock
        self._logged: dict[tuple[str, int], float] = {}

    def tracks(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self.last

    def start(self, topic: str, partition: int, offset: int | None) -> None:
        """Where reading a partition began (its committed offset, else its first retained):
        a first message past it means the head was skipped. None: unknown, not checked."""
        if offset is not None:
            self.last[(topic, partition)] = offset - 1

    def see(self, topic: str, partition: int, offset: int) -> int:
        """Record a message taken; returns how many offsets before it were skipped."""
        tp = (topic, partition)
        last = self.last.get(tp)
        self.last[tp] = offset
        if last is None or offset <= last + 1:
            return 0
        n = offset - last - 1
        self.skipped += n
        now = self.clock()
        if now - self._logged.get(tp, -self.every_s) >= self.every_s:
            self._logged[tp] = now
            log.warning(
                "%s[%d]: offsets %d..%d were never normalized (%d skipped in all on this "
                "worker): retention, compaction, transaction markers or a lost message",
                topic, partition, last + 1, offset - 1, self.skipped,
            )  # fmt: skip
        return n

    def forget(self, tps: Iterable[Any]) -> None:
        """Partitions revoked: whoever reads them next may start past our last offset."""
        for tp in tps:
            self.last.pop((tp.topic, tp.partition), None)
