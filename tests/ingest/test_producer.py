"""The producer SDK on a real broker: batching, delivery counts, no deadlock on fast acks."""

from __future__ import annotations

import threading

import orjson
from kafka import KafkaProducer

from ingest.producer import TelemetryProducer
from ingest.topics import ensure_topics
from tests.conftest import read_partitions


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


def test_events_go_to_the_partition_the_pipeline_gives_their_series(broker, make_settings) -> None:  # type: ignore[no-untyped-def]
    """Without a key, each event lands on the raw partition with the number of its series'
    points partition (so normalize and detect of a series meet in one worker), every series on
    one partition in the order sent, and one producer's events spread over all partitions."""
    from ingest.models import RECORDS
    from streams.normalize import Normalizer

    s = make_settings()
    n_parts = s.topics.partitions
    ensure_topics(broker.bootstrap, {s.topics.raw: n_parts})
    with TelemetryProducer(broker.bootstrap, s.topics.raw, batch_size=7) as p:
        for r in range(6):
            for i in range(40):
                p.metric(f"m{i % 3}", float(r), ts=1_700_000_000 + r, service=f"s{i % 5}",
                         host=f"h{i}", zone="z1")  # fmt: skip
            p.span("checkout", f"op{r % 2}", 12.0 + r, ts=1_700_000_000 + r, region="eu")
            p.queue("orders", float(r), group="g", ts=1_700_000_000 + r, service="shop")
            p.db("shop", f"SELECT * FROM t WHERE id = {r}", 3.0, ts=1_700_000_000 + r)
            # a dict in the wire shape, labels in another order than the first time
            p.send({"kind": "metric", "name": "m0", "value": 1.0, "ts": 1_700_000_000 + r,
                    "service": "s0", "labels": {"zone": "z1", "host": "h0"}})  # fmt: skip
    assert p.sent == 6 * 44 and p.failed == 0
    got = read_partitions(broker.bootstrap, s.topics.raw, n_parts)
    norm = Normalizer()
    seen: dict[int, int] = {}  # series id → the partition it was read from
    last_ts: dict[int, float] = {}
    for part, messages in got.items():
        for batch in messages:
            assert len(batch) <= 7
            events = RECORDS.decode(orjson.dumps(batch))
            for e in events:
                sid = norm.observations([e])[0].series_id  # the first series, as normalized
                assert sid % n_parts == part, "an event off its series' points partition"
                assert seen.setdefault(sid, part) == part
                assert e.ts >= last_ts.get(sid, 0.0), "a series out of order"
                last_ts[sid] = e.ts
    assert sum(len(b) for m in got.values() for b in m) == 6 * 44
    assert all(got[p] for p in range(n_parts)), "one producer's events all on one partition"


def test_a_key_puts_everything_a_producer_sends_on_one_partition(broker, make_settings) -> None:  # type: ignore[no-untyped-def]
    s = make_settings()
    ensure_topics(broker.bootstrap, {s.topics.raw: 4})
    with TelemetryProducer(broker.bootstrap, s.topics.raw, batch_size=10, key="host-7") as p:
        for i in range(100):
            p.metric("m", float(i), ts=1_700_000_000 + i, host=f"h{i}")
    got = read_partitions(broker.bootstrap, s.topics.raw, 4)
    used = [part for part, messages in got.items() if messages]
    assert len(used) == 1 and sum(len(b) for b in got[used[0]]) == 100
    assert [e["value"] for b in got[used[0]] for e in b] == [float(i) for i in range(100)]


def test_a_client_that_cannot_tell_partitions_sends_under_one_key() -> None:
    """The offline replay's collector has no metadata: the producer batches as keyed."""
    from stormwatch.simulate import Collector

    collector = Collector()
    with TelemetryProducer("", producer=collector, batch_size=3) as p:
        for i in range(7):
            p.metric("m", float(i), ts=1_700_000_000 + i, host=f"h{i}")
    assert [len(orjson.loads(m)) for m in collector.take()] == [3, 3, 1]  # one buffer


class MetadataLate(KafkaProducer):
    """The real client, whose first read of a topic's partitions fails (the broker was away
    or the topic not yet created when the producer's first event came)."""

    reads = 0

    def partitions_for(self, topic):  # type: ignore[no-untyped-def]
        self.reads += 1
        if self.reads == 1:
            raise TimeoutError("metadata not available")
        return super().partitions_for(topic)


def test_a_producer_that_could_not_read_partitions_places_by_series_once_it_delivers(
    broker, make_settings
) -> None:  # type: ignore[no-untyped-def]
    """Its first batch goes out under its key; once one is delivered it reads the partitions
    again and places every later event on its series' partition, all partitions in use."""
    import msgspec

    from ingest.models import Record
    from streams.normalize import series_partition

    s = make_settings()
    n_parts = s.topics.partitions
    ensure_topics(broker.bootstrap, {s.topics.raw: n_parts})
    client = MetadataLate(bootstrap_servers=broker.bootstrap)
    with TelemetryProducer(broker.bootstrap, s.topics.raw, batch_size=5, producer=client) as p:
        for i in range(5):
            p.metric("m", float(i), ts=1_700_000_000, host=f"h{i}")
        p.flush()
        for r in range(3):
            for i in range(40):
                p.metric("m", float(r), ts=1_700_000_001 + r, host=f"h{i}")
    assert p.sent == 125 and p.failed == 0 and client.reads == 2
    got = read_partitions(broker.bootstrap, s.topics.raw, n_parts)
    first = [part for part, messages in got.items()
             if messages and messages[0][0]["ts"] == 1_700_000_000]  # fmt: skip
    assert len(first) == 1 and len(got[first[0]][0]) == 5  # keyed: one batch, one partition
    later = [(part, e) for part, messages in got.items() for b in messages for e in b
             if e["ts"] > 1_700_000_000]  # fmt: skip
    assert len(later) == 120
    assert all(series_partition(msgspec.convert(e, Record), n_parts) == part for part, e in later)
    assert {part for part, _ in later} == set(range(n_parts))
