"""The service as `stormwatch up` runs it: real broker, real HTTP (uvicorn), real engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from kafka import KafkaProducer

from actions.base import State
from actions.service import DEMO_POLICIES, ActionsService
from actions.settings import ActionsSettings
from detectors.episodes import Episode
from ingest.topics import ensure_topics
from stormwatch.broker import LocalBroker, free_port
from stormwatch.settings import StormwatchSettings
from stormwatch.store import Store

from .conftest import Receiver, audit_rows, episode, sign, slack_body

pytestmark = pytest.mark.slow


def _publish(broker: LocalBroker, topic: str, *eps: Episode) -> None:
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for ep in eps:
        p.send(topic, key=str(ep.series_id).encode(), value=ep.model_dump_json().encode())
    p.flush(10)
    p.close()


def _wait(cond: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out := cond():
            return out
        time.sleep(0.1)
    raise AssertionError("timed out")


def _click(svc: ActionsService, receiver: Receiver, pid: str, user: str) -> httpx.Response:
    body = slack_body("approve", pid, user, f"{receiver.url}/response/x")
    headers = sign(body, int(time.time()))
    return httpx.post(f"{svc.url}/slack/interactions", content=body, headers=headers, timeout=10)


@pytest.fixture
def service_factory(
    broker: LocalBroker, chdb_store: Store, db_settings: StormwatchSettings,
    make_asettings: Callable[..., ActionsSettings],
) -> Any:  # fmt: skip
    running: list[ActionsService] = []
    topic = db_settings.topics.anomalies
    ensure_topics(broker.bootstrap, {topic: 2})
    port = free_port()
    settings = make_asettings(actions_addr=f"127.0.0.1:{port}", action_base_url="",
                              policies=DEMO_POLICIES, tick_s=0.2,
                              consumer_group=f"{db_settings.app_id}-actions")  # fmt: skip

    def start() -> ActionsService:
        svc = ActionsService(
            settings, store=chdb_store, database=db_settings.database,
            bootstrap=broker.bootstrap, anomalies_topic=topic, demo=True,
        )  # fmt: skip
        running.append(svc)
        return svc.start()

    yield start, topic
    for svc in running:
        svc.stop()


def test_service_turns_a_published_episode_into_an_approved_demo_action(
    service_factory: Any, broker: LocalBroker, receiver: Receiver, chdb_store: Store,
    db_settings: StormwatchSettings,
) -> None:  # fmt: skip
    start, topic = service_factory
    svc = start()
    _publish(broker, topic, episode(start=datetime.now(UTC)))
    [msg] = receiver.wait("/webhook/")
    pid = next(e["value"] for b in msg["blocks"] if b["type"] == "actions"
               for e in b["elements"] if e["action_id"] == "approve")  # fmt: skip
    r = _click(svc, receiver, pid, "UALICE")
    assert r.status_code == 200
    calls = _wait(lambda: httpx.get(f"{svc.url}/demo").json())
    assert calls == [
        {
            "name": "scale_consumers",
            "payload": {
                "action": "scale_consumers",
                "queue": "orders",
                "group": "fulfillment",
                "replicas": 6,
            },
        }
    ]
    [update] = receiver.wait("/response/")
    assert "*succeeded* by <@UALICE>" in str(update)
    assert _click(svc, receiver, pid, "UBOB").json()["text"] == "already succeeded by UALICE"
    _wait(lambda: "succeeded" in {r["state"] for r in audit_rows(chdb_store, db_settings.database)})
    assert len(httpx.get(f"{svc.url}/demo").json()) == 1


def test_service_restart_keeps_pending_proposals_and_runs_none_twice(
    service_factory: Any, broker: LocalBroker, receiver: Receiver
) -> None:
    start, topic = service_factory
    svc = start()
    now = datetime.now(UTC)
    queue = episode(start=now)
    errors = episode(start=now, service="checkout", kind="span", name="error_rate", labels={},
                     episode_id=8008, series_id=88)  # fmt: skip
    _publish(broker, topic, queue, errors)
    [msg] = _wait(lambda: [m for m in receiver.posts("/webhook/")
                           if "checkout" in m["text"]])  # fmt: skip
    assert svc.engine is not None
    by_policy = {p.policy: p.id for p in svc.engine.state.where()}
    assert _click(svc, receiver, by_policy["scale-orders-consumers"], "UALICE").status_code == 200
    _wait(lambda: httpx.get(f"{svc.url}/demo").json())
    svc.stop()

    svc2 = start()
    _publish(broker, topic, queue, errors)  # redelivered episodes after the restart
    time.sleep(2.0)
    assert svc2.engine is not None
    states = {p.policy: p.state for p in svc2.engine.state.where()}
    assert states == {"scale-orders-consumers": State.succeeded,
                      "restart-on-error-burst": State.proposed}  # fmt: skip
    assert httpx.get(f"{svc2.url}/demo").json() == []  # a fresh process: nothing re-run
    assert _click(svc2, receiver, by_policy["restart-on-error-burst"], "UBOB").status_code == 200
    calls = _wait(lambda: httpx.get(f"{svc2.url}/demo").json())
    assert [c["name"] for c in calls] == ["restart_service"]
    time.sleep(1.0)
    assert [c["name"] for c in httpx.get(f"{svc2.url}/demo").json()] == ["restart_service"]


def test_service_start_fails_cleanly_when_the_port_is_taken(
    broker: LocalBroker, chdb_store: Store, db_settings: StormwatchSettings,
    make_asettings: Callable[..., ActionsSettings],
) -> None:  # fmt: skip
    import socket

    from actions import ActionsError

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        settings = make_asettings(actions_addr=f"127.0.0.1:{s.getsockname()[1]}")
        svc = ActionsService(settings, store=chdb_store, database=db_settings.database,
                             bootstrap=broker.bootstrap,
                             anomalies_topic=db_settings.topics.anomalies)  # fmt: skip
        with pytest.raises(ActionsError, match="cannot listen on"):
            svc.start(timeout_s=5)
    finally:
        s.close()


def test_start_in_pipeline_stops_startup_on_a_bad_policy_file(
    make_settings: Callable[..., StormwatchSettings], chdb_store: Store,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
) -> None:  # fmt: skip
    from actions.service import start_in_pipeline
    from stormwatch import StormwatchError

    bad = tmp_path / "bad.yaml"
    bad.write_text("policies:\n  - name: a\n    match: {}\n    action: rm_rf\n")
    monkeypatch.setenv("STORMWATCH_POLICIES", str(bad))
    with pytest.raises(StormwatchError, match=r"bad.yaml:4: policy a: unknown action 'rm_rf'"):
        start_in_pipeline(make_settings(), chdb_store, demo=True)
    monkeypatch.setenv("STORMWATCH_ACTIONS_ADDR", "nowhere")
    with pytest.raises(StormwatchError, match="STORMWATCH_ACTIONS_ADDR"):
        start_in_pipeline(make_settings(), chdb_store, demo=True)


def test_a_demo_run_moves_the_last_runs_state_aside_after_flushing_its_audit(
    make_engine: Callable[..., Any], db_settings: StormwatchSettings, chdb_store: Store,
    broker: LocalBroker, clock: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
) -> None:  # fmt: skip
    """A second `up --demo` proposed nothing: the first run's proposals live 15 minutes and
    hold their policy and target. Each demo run now starts with no state; the old file is
    kept beside it, and what its audit outbox still held reaches ClickHouse first."""
    from actions.service import start_in_pipeline
    from actions.state import StateStore

    data = tmp_path / "demo-data"
    first = make_engine(data_dir=data)
    (p,) = first.on_episode(episode(), clock())  # recorded in the outbox, not flushed
    first.state.close()
    settings = db_settings.model_copy(
        update={"data_dir": data, "kafka_bootstrap": broker.bootstrap}
    )
    monkeypatch.setenv("STORMWATCH_ACTIONS_ADDR", "127.0.0.1:0")
    svc = start_in_pipeline(settings, chdb_store, demo=True)
    try:
        assert svc.engine is not None and svc.engine.state.by_state(State.proposed) == []
        kept = svc.archived_state
        assert kept is not None and kept.parent == data and kept != svc.settings.db_path
        old = StateStore(kept)
        assert [x.id for x in old.by_state(State.proposed)] == [p.id] and old.pending() == []
        old.close()
        audit = audit_rows(chdb_store, db_settings.database)
        assert [(r["proposal_id"], r["state"]) for r in audit] == [(p.id, "proposed")]
    finally:
        svc.stop()
