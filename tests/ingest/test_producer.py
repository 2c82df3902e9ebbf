"""The producer SDK on a real broker: batching, delivery counts, no deadlock on fast acks."""

from __future__ import annotations

import threading

from kafka import KafkaProducer

from ingest.producer import TelemetryProducer
from ingest.topics import ensure_topics


class AckedBeforeReturn(KafkaProducer):
    """The real client, but `send` returns only once the broker acknowledged: callbacks are
    then attached to a completed future and run at once, on the caller's thread."""

    def send(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        future = super().send(*args, **kwargs)
        future.get(timeout=30)
        return future


def test_producer_counts_every_event_even_when_acks_beat_the_callbacks(
    broker, make_settings
) -> None:  # type: ignore[no-untyped-def]
    s = make_settings()
    ensure_topics(broker.bootstrap, {s.topics.raw: 2})
    result: list[tuple[int, int]] = []

    def run() -> None:
        client = AckedBeforeReturn(bootstrap_servers=broker.bootstrap)
        with TelemetryProducer(broker.bootstrap, s.topics.raw, batch_size=50, producer=client) as p:
            for i in range(500):
                p.metric("m", float(i), ts=1_700_000_000 + i)
        result.append((p.sent, p.failed))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    assert result == [(500, 0)], "the producer deadlocked or lost count"
