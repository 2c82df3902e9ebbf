"""The service's consumer loop on the real broker: a poll batch is recorded in one
transaction, and its offsets are committed only after that transaction is durable."""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from actions.engine import Engine
from actions.service import ActionsService
from actions.state import StateStore
from detectors.episodes import Episode
from ingest.topics import ensure_topics
from stormwatch.broker import LocalBroker

from .conftest import Clock, episode


def _topic(broker: LocalBroker, values: list[bytes]) -> tuple[KafkaConsumer, TopicPartition]:
    """A fresh topic holding `values`, and a consumer configured as the service's own."""
    name = f"anomalies-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap, {name: 1})
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for v in values:
        p.send(name, v)
    p.flush()
    p.close()
    tp = TopicPartition(name, 0)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=f"g-{name}",
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_poll_records=200)  # fmt: skip
    consumer.assign([tp])
    return consumer, tp


def _poll_until(svc: ActionsService, consumer: KafkaConsumer, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20
    while not done():
        assert time.monotonic() < deadline, "the consumer did not get there in 20 s"
        svc._poll(consumer)


def _service(engine: Engine, clock: Clock) -> ActionsService:
    svc = ActionsService(engine.settings, store=None, database="", bootstrap="",
                         anomalies_topic="anomalies", clock=clock)  # fmt: skip
    svc.engine = engine
    return svc


def _durable(engine: Engine) -> tuple[list[int], list[tuple[int, str]], int]:
    """What another connection sees: episodes, proposals (episode, policy), audit rows."""
    other = StateStore(engine.settings.db_path)
    try:
        eps = [r[0] for r in other._exec("SELECT episode_id FROM episodes ORDER BY 1")]
        props = sorted((p.episode_id, p.policy) for p in other.where())
        return eps, props, len(other.pending())
    finally:
        other.close()


def test_consumer_commits_offsets_after_the_batch_is_durable_and_skips_a_failing_episode(
    make_engine: Callable[..., Engine], clock: Clock, monkeypatch: pytest.MonkeyPatch,
    broker: LocalBroker,
) -> None:  # fmt: skip
    engine = make_engine()
    real = engine.on_episode

    def on_episode(ep: Episode, now: datetime) -> Any:
        if ep.episode_id == 2:
            raise RuntimeError("a bug in one episode")
        return real(ep, now)

    monkeypatch.setattr(engine, "on_episode", on_episode)
    errors = dict(service="checkout", kind="span", name="error_rate", labels={})
    values = [
        episode(episode_id=1).model_dump_json().encode(),
        episode(episode_id=2, series_id=78).model_dump_json().encode(),
        b"not an episode",
        episode(episode_id=3, series_id=79, **errors).model_dump_json().encode(),  # type: ignore[arg-type]
    ]
    consumer, tp = _topic(broker, values)
    svc = _service(engine, clock)
    try:
        _poll_until(svc, consumer, lambda: consumer.committed(tp) is not None)
        assert consumer.committed(tp) == 4
        eps, props, audit = _durable(engine)
    finally:
        consumer.close()
    assert eps == [1, 3]
    assert props == [(1, "scale-orders"), (3, "restart-checkout")]
    assert audit == 2  # one "proposed" row each


def test_consumer_commits_no_offset_and_reads_again_when_the_state_is_locked(
    make_engine: Callable[..., Engine], clock: Clock, broker: LocalBroker,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    engine = make_engine()
    engine.state._exec("PRAGMA busy_timeout=100")
    consumer, tp = _topic(broker, [episode().model_dump_json().encode()])
    svc = _service(engine, clock)
    other = sqlite3.connect(engine.settings.db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the database
    try:
        with caplog.at_level(logging.WARNING, "stormwatch.actions"):
            _poll_until(svc, consumer, lambda: "not recorded" in caplog.text)
        assert consumer.committed(tp) is None
        assert consumer.position(tp) == 0  # the batch will be read again
        other.execute("ROLLBACK")
        _poll_until(svc, consumer, lambda: consumer.committed(tp) is not None)
        assert consumer.committed(tp) == 1
        eps, props, _ = _durable(engine)
    finally:
        other.close()
        consumer.close()
    assert (eps, props) == ([1001], [(1001, "scale-orders")])


def test_an_episodes_growth_in_one_batch_is_handled_as_its_newest_state(
    make_engine: Callable[..., Engine], clock: Clock, monkeypatch: pytest.MonkeyPatch,
    broker: LocalBroker,
) -> None:  # fmt: skip
    engine = make_engine()
    real, seen = engine.on_episode, []

    def on_episode(ep: Episode, now: datetime) -> Any:
        seen.append((ep.end_ms, ep.is_open))
        return real(ep, now)

    monkeypatch.setattr(engine, "on_episode", on_episode)
    growth = [episode(start=clock.now + timedelta(seconds=i)) for i in range(8)]
    closed = episode(start=clock.now + timedelta(seconds=9), is_open=False)
    other = episode(episode_id=3003, series_id=79)
    values = [e.model_dump_json().encode() for e in [growth[0], other, *growth[1:], closed]]
    consumer, tp = _topic(broker, values)
    svc = _service(engine, clock)
    try:
        _poll_until(svc, consumer, lambda: consumer.committed(tp) is not None)
        assert consumer.committed(tp) == len(values)
        eps, props, _ = _durable(engine)
    finally:
        consumer.close()
    # the first open state (which proposes), the newest growth, the close; nothing between
    first, newest = growth[0], growth[-1]
    assert seen == [(first.end_ms, True), (other.end_ms, True), (newest.end_ms, True),
                    (closed.end_ms, False)]  # fmt: skip
    assert eps == [1001, 3003] and (1001, "scale-orders") in props
    assert engine.state.episode_open(1001) is False
