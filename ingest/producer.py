"""The producer SDK: typed helpers that batch events into JSON arrays on the raw topic.

One Kafka message carries up to `batch_size` events (faust pays ~85 µs per message, so
points travel in batches). Every message of one producer carries the same key, so it lands on
one partition and a series sent by one producer is read in the order it was sent.
`flush()` waits for delivery and returns how many events failed; the context manager flushes
on exit.

Batches are LZ4-compressed by default: a batch of 500 metric events is 4.4x smaller, so the
broker stores and serves a quarter of the bytes and the pipeline's consumer reads them for
~0.1 µs an event of decompression (docs/performance.md, seventh round). Any Kafka codec
reaches the pipeline; `compression=None` sends plain batches.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import orjson

from ingest.models import DbQuery, Event, MetricPoint, QueueEvent, Span

COMPRESSION = "lz4"  # kafka-python's codec name; the lz4 package is a dependency


def _now() -> float:
    import time

    return time.time()


class TelemetryProducer:
    """Thread-safe batching producer over kafka-python."""

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
        self.batch_size = batch_size
        self._producer = producer or KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=5,
            retries=5,
            max_request_size=8 * 1024 * 1024,
            compression_type=compression,
        )
        self._buf: list[dict[str, Any]] = []
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

    def send(self, event: Event | dict[str, Any]) -> None:
        """Queue one event (a model, or a dict already in the wire shape)."""
        doc = event.model_dump(exclude_defaults=False) if not isinstance(event, dict) else event
        with self._lock:
            self._buf.append(doc)
            if len(self._buf) >= self.batch_size:
                self._send_locked()

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

    def _send_locked(self) -> None:
        batch, self._buf = self._buf, []
        n = len(batch)
        fut = self._producer.send(self.topic, orjson.dumps(batch), key=self.key)
        fut.add_callback(self._ok, n)
        fut.add_errback(self._err, n)

    def _ok(self, n: int, _meta: object) -> None:
        with self._lock:
            self.sent += n

    def _err(self, n: int, exc: BaseException) -> None:
        with self._lock:
            self.failed += n
            if len(self.errors) < 20:
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def flush(self, timeout: float | None = 30) -> int:
        """Send what is buffered and wait for delivery; returns events failed so far."""
        with self._lock:
            if self._buf:
                self._send_locked()
        self._producer.flush(timeout=timeout)
        return self.failed

    def close(self) -> None:
        self.flush()
        self._producer.close()
