"""Faults on purpose, on real parts: nothing lost, nothing duplicated, state resumed."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest.producer import TelemetryProducer
from ingest.topics import ensure_topics
from stormwatch.broker import LocalBroker
from stormwatch.pipeline import topic_partitions
from stormwatch.settings import StormwatchSettings
from tests.e2e.test_pipeline import metric_events
from tests.pipeline import (
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
        with running_worker(s, broker.bootstrap, tmp_path / "worker.log", env) as worker:
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
    assert_exactly_once(rows, events)
    # Each series was scored by one worker at a time, its state handed over by checkpoint:
    # every score equals the score of one uninterrupted run.
    ref = reference_scores(s, events)
    differ = [(u, ts, v, ref[(u, ts)]) for u, ts, v, _ in rows if abs(ref[(u, ts)] - v) > 1e-4]
    assert not differ, differ[:5]
