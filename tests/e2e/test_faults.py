"""Faults on purpose, on real parts: nothing lost, nothing duplicated, state resumed."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.pipeline import assigned_at
from ingest.producer import TelemetryProducer
from ingest.topics import ensure_topics
from stormwatch.broker import LocalBroker
from stormwatch.pipeline import topic_partitions
from stormwatch.settings import StormwatchSettings
from tests.e2e.test_pipeline import metric_events
from tests.pipeline import (
    assert_no_offsets_skipped,
    reference_scores,
    reference_unbanded,
    remote_store,
    running_pipeline,
    running_worker,
    stop,
    stored_metric_rows,
    wait_for,
)

pytestmark = pytest.mark.slow
Settings = Callable[..., StormwatchSettings]


def produce(bootstrap: str, topic: str, events: list[dict]) -> None:
    with TelemetryProducer(bootstrap, topic, batch_size=40) as p:
        p.send_many(events)
    assert p.failed == 0


def assert_exactly_once(rows: list[tuple[str, int, float, bool]], events: list[dict]) -> None:
    produced = {(e["labels"]["unit"], int(e["ts"] * 1000)) for e in events}
    assert len(rows) == len(produced), "duplicated or lost rows"
    assert {(u, ts) for u, ts, _, _ in rows} == produced


def test_sigkill_midstream_then_restart_exactly_once_and_state_resumed(
    broker: LocalBroker, make_settings: Settings, tmp_path: Path
) -> None:
    s = make_settings()
    ensure_topics(broker.bootstrap, topic_partitions(s))
    events = metric_events(20, range(150), seed=5)
    third = len(events) // 3
    env = {"STORMWATCH_CHECKPOINT_S": "1"}
    with running_pipeline(s, broker.bootstrap, tmp_path / "up1.log", env) as proc:
        produce(broker.bootstrap, s.topics.raw, events[:third])
        store = remote_store(s)
        wait_for(lambda: len(stored_metric_rows(store, s.database)) >= third, 90, "first third")
        time.sleep(4)  # offsets committed and a checkpoint taken
        produce(broker.bootstrap, s.topics.raw, events[third : 2 * third])
        stop(proc, signal.SIGKILL)  # mid-stream: no final flush, no final checkpoint
    produce(broker.bootstrap, s.topics.raw, events[2 * third :])
    with running_pipeline(s, broker.bootstrap, tmp_path / "up2.log", env):
        store = remote_store(s)
        wait_for(lambda: len(stored_metric_rows(store, s.database)) >= len(events), 120, "all")
        time.sleep(2)
        rows = stored_metric_rows(store, s.database)
    assert_exactly_once(rows, events)
    assert_no_offsets_skipped(tmp_path / "up1.log", tmp_path / "up2.log")
    # Resumed from a checkpoint, not re-warmed: points without a band (warm-up) are exactly
    # those of one uninterrupted run.
    unbanded = sum(1 for *_, banded in rows if not banded)
    assert unbanded == reference_unbanded(s, events)


def test_sink_failing_holds_offsets_retries_and_records_the_outage(
    broker: LocalBroker, make_settings: Settings, tmp_path: Path
) -> None:
    s = make_settings()
    ensure_topics(broker.bootstrap, topic_partitions(s))
    events = metric_events(10, range(60), seed=6)
    env = {"STORMWATCH_FAULT_SINK_FAILURES": "6"}
    with running_pipeline(s, broker.bootstrap, tmp_path / "up.log", env):
        produce(broker.bootstrap, s.topics.raw, events)
        store = remote_store(s)
        wait_for(lambda: len(stored_metric_rows(store, s.database)) >= len(events), 120, "all")
        db = s.database
        wait_for(
            lambda: (
                store.query(
                    f"SELECT sum(value) FROM {db}.health WHERE stage = 'sink' AND metric = "
                    "'points.failures'"
                ).rows[0][0]
                >= 6
            ),
            30,
            "the outage in the health table",
        )
        rows = stored_metric_rows(store, db)
    assert_exactly_once(rows, events)
    ref = reference_scores(s, events)
    assert all(abs(ref[(u, ts)] - score) < 1e-4 for u, ts, score, _ in rows)


def test_worker_joining_and_leaving_midstream_exactly_once_one_scorer_per_series(
    broker: LocalBroker, make_settings: Settings, tmp_path: Path
) -> None:
    s = make_settings()
    ensure_topics(broker.bootstrap, topic_partitions(s))
    events = metric_events(24, range(150), seed=7)
    q = len(events) // 4
    env = {"STORMWATCH_CHECKPOINT_S": "2"}
    store = None

    def written() -> int:
        return len(stored_metric_rows(store, s.database))  # type: ignore[arg-type]

    def resumed_by_workers() -> int:
        return store.query(  # type: ignore[union-attr]
            f"SELECT uniqExact(worker) FROM {s.database}.health WHERE stage = 'detect' "
            f"AND metric = 'restored' AND value > 0"
        ).rows[0][0]

    with running_pipeline(s, broker.bootstrap, tmp_path / "up.log", env):
        store = remote_store(s)
        produce(broker.bootstrap, s.topics.raw, events[:q])
        wait_for(lambda: written() >= q, 90, "first quarter")
        joined = time.time()
        env_info = {**env, "STORMWATCH_LOG_LEVEL": "info"}  # its assignments in its log
        with running_worker(s, broker.bootstrap, tmp_path / "worker.log", env_info) as worker:
            # The group rebalances onto two members: the newcomer resumes series from checkpoints.
            wait_for(lambda: resumed_by_workers() == 2, 90, "the second worker took partitions")
            produce(broker.bootstrap, s.topics.raw, events[q : 3 * q])
            wait_for(lambda: written() >= 3 * q, 120, "half with two workers")
            assert worker.poll() is None
        produce(broker.bootstrap, s.topics.raw, events[3 * q :])  # the worker has left
        wait_for(lambda: written() >= len(events), 120, "all after the worker left")
        time.sleep(2)
        rows = stored_metric_rows(store, s.database)
        health = store.query(
            f"SELECT worker, metric, sum(value) FROM {s.database}.health WHERE stage = 'detect' "
            "GROUP BY worker, metric"
        ).rows
        workers = store.query(
            f"SELECT uniqExact(worker) FROM {s.database}.health WHERE stage = 'detect' "
            f"AND metric = 'points_written' AND value > 0"
        ).rows[0][0]
    assert workers == 2, f"the second worker never scored anything: {health}"
    # At INFO the worker logs when partitions came to it (what benchmarks.pipeline times
    # runs from); up, at the default level, logs no INFO lines.
    assert joined <= assigned_at(tmp_path / "worker.log") <= time.time()
    assert b"[INFO]" not in (tmp_path / "up.log").read_bytes()
    assert_exactly_once(rows, events)
    assert_no_offsets_skipped(tmp_path / "up.log", tmp_path / "worker.log")
    # Each series was scored by one worker at a time, its state handed over by checkpoint:
    # every score equals the score of one uninterrupted run.
    ref = reference_scores(s, events)
    differ = [(u, ts, v, ref[(u, ts)]) for u, ts, v, _ in rows if abs(ref[(u, ts)] - v) > 1e-4]
    assert not differ, differ[:5]


POISON = [
    b"\xff\xfe not even utf-8",
    b"{" * 100_000,  # deep nesting
    b'{"kind": "metric", "name": "x", "value": 1e999, "ts": 1}',  # overflows to inf
    b'{"kind": "metric", "name": "x", "value": NaN, "ts": 1}',
    b'[{"kind": "metric", "name": "' + b"x" * 1_000_000 + b'", "value": 1, "ts": 1}]',  # 1 MB
    b'{"kind": "metric", "name": "x", "value": [1, 2], "ts": 1}',  # wrong type
    b'{"kind": "log", "message": "hello"}',  # unknown kind
    b'{"kind": "span", "service": "a", "operation": "b", "ts": 1, "duration_ms": -5}',
    b"",
]


def test_poison_input_is_dead_lettered_while_good_input_flows(
    broker: LocalBroker, make_settings: Settings, tmp_path: Path
) -> None:
    from kafka import KafkaProducer

    s = make_settings()
    ensure_topics(broker.bootstrap, topic_partitions(s))
    events = metric_events(10, range(40), seed=8)
    raw = KafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=8 * 1024 * 1024)
    with running_pipeline(s, broker.bootstrap, tmp_path / "up.log") as proc:
        for i in range(0, len(events), 50):
            produce(broker.bootstrap, s.topics.raw, events[i : i + 50])
            raw.send(s.topics.raw, POISON[(i // 50) % len(POISON)])
        for p in POISON:
            raw.send(s.topics.raw, p)
        raw.flush()
        raw.close()
        store = remote_store(s)
        db = s.database
        wait_for(lambda: len(stored_metric_rows(store, db)) >= len(events), 120, "good points")
        n_poison = len(events) // 50 + len(POISON)
        wait_for(
            lambda: store.query(f"SELECT count() FROM {db}.dlq FINAL").rows[0][0] >= n_poison,
            60,
            "every poison message dead-lettered",
        )
        reasons = store.query(f"SELECT reason, length(payload) FROM {db}.dlq FINAL").rows
        assert proc.poll() is None, "the pipeline died on poison input"
        rows = stored_metric_rows(store, db)
    assert_exactly_once(rows, events)
    assert all(r for r, _ in reasons), "a dead letter without a reason"
    assert max(n for _, n in reasons) <= 64 * 1024 + 16, "payloads are capped in the dlq table"


def test_batches_in_every_kafka_codec_reach_clickhouse(
    broker: LocalBroker, make_settings: Settings, tmp_path: Path
) -> None:
    """Producers pick their codec (the OTel Collector's exporter offers all four): a batch the
    consumer could not decompress would crash its fetcher and stop the pipeline."""
    import asyncio

    import orjson
    from aiokafka import AIOKafkaProducer

    codecs = ["gzip", "snappy", "lz4", "zstd"]
    s = make_settings()
    ensure_topics(broker.bootstrap, topic_partitions(s))
    events = metric_events(8, range(60), seed=9)
    share = -(-len(events) // len(codecs))

    async def send_all() -> None:
        for i, codec in enumerate(codecs):
            p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, compression_type=codec)
            await p.start()
            try:
                batch = events[i * share : (i + 1) * share]
                for j in range(0, len(batch), 40):
                    await p.send_and_wait(s.topics.raw, orjson.dumps(batch[j : j + 40]))
            finally:
                await p.stop()

    with running_pipeline(s, broker.bootstrap, tmp_path / "up.log") as proc:
        asyncio.run(send_all())
        store = remote_store(s)
        db = s.database
        wait_for(lambda: len(stored_metric_rows(store, db)) >= len(events), 90, "every codec")
        assert proc.poll() is None, "the pipeline died on a compressed batch"
        assert store.query(f"SELECT count() FROM {db}.dlq").rows[0][0] == 0
        rows = stored_metric_rows(store, db)
    assert_exactly_once(rows, events)


def test_broker_restart_pipeline_reconnects_and_goes_on(
    make_settings: Settings, tmp_path: Path
) -> None:
    """The embedded broker keeps nothing across a restart (memory storage): what is produced
    after it is back must flow, and nothing written before is lost from ClickHouse."""
    from stormwatch.broker import free_port

    broker = LocalBroker(free_port(), tmp_path / "broker.log").start()
    s = make_settings()
    try:
        ensure_topics(broker.bootstrap, topic_partitions(s))
        before = metric_events(8, range(0, 40), seed=9)
        after = metric_events(8, range(40, 80), seed=9)
        with running_pipeline(s, broker.bootstrap, tmp_path / "up.log") as proc:
            produce(broker.bootstrap, s.topics.raw, before)
            store = remote_store(s)
            wait_for(
                lambda: len(stored_metric_rows(store, s.database)) >= len(before), 90, "before"
            )
            broker.stop()
            time.sleep(5)
            broker.start()
            ensure_topics(broker.bootstrap, topic_partitions(s))  # memory storage: recreate
            produce(broker.bootstrap, s.topics.raw, after)
            wait_for(
                lambda: len(stored_metric_rows(store, s.database)) >= len(before + after),
                180,
                "points produced after the broker came back",
            )
            assert proc.poll() is None
            rows = stored_metric_rows(store, s.database)
    finally:
        broker.stop()
    assert_exactly_once(rows, before + after)
