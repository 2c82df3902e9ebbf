"""The producer SDK: typed helpers that batch events into JSON arrays on the raw topic.

One Kafka message carries up to `batch_size` events (faust pays ~85 µs per message, so
points travel in batches). Each event goes to the partition of its series: the raw partition
with the number the pipeline's points topic gives the series (`series_id % partitions`). The
worker that normalizes the batch then owns the series' detect stage too and hands its points
over in-process, not through the points topic; a series always lands on one partition, so it
is read in the order it was sent; one producer's events spread over every partition. A batch
holds one partition's events. With a `key` (or when the topic's partitions cannot be read)
every message carries one key instead: one partition for all a producer sends.
`flush()` waits for delivery and returns how many events failed; the context manager flushes
on exit.

Batches are LZ4-compressed by default: a batch of 500 metric events is 4.4x smaller, so the
broker stores and serves a quarter of the bytes and the pipeline's consumer reads them for
~0.1 µs an event of decompression (docs/performance.md, seventh round). Any Kafka codec
reaches the pipeline; `compression=None` sends plain batches.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import orjson
from pydantic import BaseModel

from ingest.models import DbQuery, Event, MetricPoint, QueueEvent, Record, Span

log = logging.getLogger(__name__)
_PARTITIONS_KEPT = 100_000  # metric series' partitions remembered; past it the map starts over

COMPRESSION = "lz4"  # kafka-python's codec name; the lz4 package is a dependency


def _now() -> float:
    import time

    return time.time()


class TelemetryProducer:
    """Thread-safe batching producer over kafka-python: events batched per partition of their
    series, or all under one `key`."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = "telemetry.raw",
        *,
        batch_size: int = 500,
        producer: Any = None,
        key: str | None = None,
        compression: str | None = COMPRESSION,
    ) -> None:
        import uuid

        from kafka import KafkaProducer

        self.topic = topic
        self.key = (key or uuid.uuid4().hex).encode()
        self.by_series = key is None
        self.batch_size = batch_size
        self._partitions = 0  # the topic's, once read; 0: not yet
        self._known: dict[tuple[Any, ...], int] = {}  # metric (name, service, labels) → partition
        self._place: Callable[[Any, int], int | None] | None = None  # once partitions are known
        # Read the partitions at the next event: True at first, None once unknown (keyed),
        # False again after a delivery (then the client holds the topic's metadata).
        self._ask: bool | None = True
        self._producer = producer or KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=5,
            retries=5,
            max_request_size=8 * 1024 * 1024,
            compression_type=compression,
        )
        self._bufs: dict[int | None, list[dict[str, Any]]] = {}  # partition (None: key) → batch
        # Re-entrant: kafka-python runs a callback at once, on this thread, when the send has
        # already completed, and the callback takes this lock while `_send_locked` holds it.
        self._lock = threading.RLock()
        self.sent = 0
        self.failed = 0
        self.errors: list[str] = []

    def __enter__(self) -> TelemetryProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def buffered(self) -> int:
        """Events queued here, not yet handed to the client."""
        with self._lock:
            return sum(map(len, self._bufs.values()))

    def send(self, event: Event | dict[str, Any]) -> None:
        """Queue one event (a model, or a dict already in the wire shape)."""
        doc = event.model_dump(exclude_defaults=False) if not isinstance(event, dict) else event
        with self._lock:
            part = self._partition(event, doc) if self.by_series else None
            buf = self._bufs.setdefault(part, [])
            buf.append(doc)
            if len(buf) >= self.batch_size:
                self._send_locked(part)

    def send_many(self, events: Iterable[Event | dict[str, Any]]) -> None:
        for e in events:
            self.send(e)

    def metric(
        self, name: str, value: float, *, ts: float | None = None, service: str = "", **labels: str
    ) -> None:
        self.send(
            MetricPoint(name=name, value=value, ts=ts or _now(), service=service, labels=labels)
        )

    def span(
        self,
        service: str,
        operation: str,
        duration_ms: float,
        *,
        ts: float | None = None,
        error: bool = False,
        **labels: str,
    ) -> None:
        self.send(
            Span(
                service=service,
                operation=operation,
                duration_ms=duration_ms,
                ts=ts or _now(),
                status="error" if error else "ok",
                labels=labels,
            )
        )

    def queue(
        self,
        queue: str,
        lag: float,
        *,
        group: str = "",
        oldest_age_s: float | None = None,
        ts: float | None = None,
        service: str = "",
    ) -> None:
        self.send(
            QueueEvent(
                queue=queue,
                group=group,
                lag=lag,
                oldest_age_s=oldest_age_s,
                ts=ts or _now(),
                service=service,
            )
        )

    def db(
        self,
        service: str,
        statement: str,
        duration_ms: float,
        *,
        error: bool = False,
        system: str = "",
        ts: float | None = None,
    ) -> None:
        self.send(
            DbQuery(
                service=service,
                statement=statement,
                duration_ms=duration_ms,
                error=error,
                system=system,
                ts=ts or _now(),
            )
        )

    def _partition(self, event: Event | dict[str, Any], doc: dict[str, Any]) -> int | None:
        """The partition of the event's series; None (the key's) if the event is not valid
        (the pipeline dead-letters it) or the topic's partitions cannot be read."""
        labels = doc.get("labels")
        key = None
        if type(labels) is dict and doc.get("kind") == "metric":
            key = (doc.get("name"), doc.get("service", ""), *labels.items())
            part = self._known.get(key)
            if part is not None:
                return part
        if self._place is None:
            if self._ask is None:
                return None
            self._partitions = self._count_partitions()
            if not self._partitions:
                # Keyed until a batch is delivered: the client then holds the topic's metadata
                # (no blocking read per event while the broker is away or the topic missing).
                if self._ask is True:  # said once: an offline collector never knows them
                    log.warning("partitions of %s unknown: batches go out under one key, "
                                "asked again once one is delivered", self.topic)  # fmt: skip
                self._ask = None
                return None
            from streams.normalize import series_partition  # the pipeline's side, imported once

            self._place = series_partition
        try:
            e = event if isinstance(event, BaseModel) else msgspec.convert(doc, Record)
        except msgspec.ValidationError:
            return None
        part = self._place(e, self._partitions)
        if part is not None and key is not None:
            if len(self._known) >= _PARTITIONS_KEPT:
                self._known.clear()
            self._known[key] = part
        return part

    def _count_partitions(self) -> int:
        """The topic's partition count, from the client's metadata; 0 if it cannot be read."""
        try:
            parts = self._producer.partitions_for(self.topic)
        except Exception as e:  # noqa: BLE001 - a producer that cannot tell still sends, keyed
            log.warning("reading the partitions of %s failed: %s", self.topic, e)
            return 0
        return len(parts) if parts else 0

    def _send_locked(self, part: int | None) -> None:
        batch = self._bufs.pop(part)
        n = len(batch)
        key = self.key if part is None else None
        fut = self._producer.send(self.topic, orjson.dumps(batch), key=key, partition=part)
        fut.add_callback(self._ok, n)
        fut.add_errback(self._err, n)

    def _ok(self, n: int, _meta: object) -> None:
        with self._lock:
            self.sent += n
            if self._ask is None:
                self._ask = False  # delivered: the partitions can be read now

    def _err(self, n: int, exc: BaseException) -> None:
        with self._lock:
            self.failed += n
            if len(self.errors) < 20:
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def flush(self, timeout: float | None = 30) -> int:
        """Send what is buffered and wait for delivery; returns events failed so far."""
        with self._lock:
            for part in list(self._bufs):
                self._send_locked(part)
        self._producer.flush(timeout=timeout)
        return self.failed

    def close(self) -> None:
        self.flush()
        self._producer.close()
