from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from actions.base import State
from actions.engine import Engine
from stormwatch.settings import StormwatchSettings
from stormwatch.store import Store

from .conftest import Clock, Receiver, audit_rows, episode

ANY_QUEUE = """
  - name: any-queue
    match: {kind: queue, name: depth}
    target: "{{service}}"
    action: http_post
    params: {url: "{{base_url}}/act/any", body: {service: "{{service}}"}}
  - name: page-fulfillment
    match: {service: fulfillment, name: oldest_age_s}
    action: http_post
    params: {url: "{{base_url}}/act/page"}
"""


def buttons(message: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["action_id"], e["value"]) for b in message["blocks"] if b["type"] == "actions"
            for e in b["elements"]]  # fmt: skip


def test_episode_becomes_a_proposal_and_a_message_with_buttons(
    make_engine: Callable[..., Engine], receiver: Receiver, clock: Clock,
    chdb_store: Store, db_settings: StormwatchSettings,
) -> None:  # fmt: skip
    e = make_engine()
    [p] = e.on_episode(episode(), clock.now)
    assert p.state == State.proposed and p.target == "queue/orders"
    assert p.params == {"url": f"{receiver.url}/act/scale", "queue": "orders",
                        "group": "fulfillment", "replicas": 6}  # fmt: skip
    assert {v.guard for v in p.guards} >= {"cooldown", "rate_limit", "blast_radius", "kill_switch"}
    e.tick(clock.now)
    [msg] = receiver.posts("/webhook/")
    assert ("approve", p.id) in buttons(msg) and ("reject", p.id) in buttons(msg)
    fb = f"{p.episode_id}:{p.series_id}"
    assert {("feedback_not_anomaly", fb), ("feedback_expected", fb),
            ("feedback_new_normal", fb)} <= set(buttons(msg))  # fmt: skip
    text = str(msg)
    assert "peaked at 3040" in text and "scale_consumers" in text and "cooldown" in text
    e.tick(clock.advance(1))
    assert len(receiver.posts("/webhook/")) == 1  # sent once
    rows = audit_rows(chdb_store, db_settings.database)
    assert [(r["state"], r["proposal_id"], r["episode_id"]) for r in rows] == [
        ("proposed", p.id, p.episode_id)]  # fmt: skip


def test_audit_joins_back_to_the_episode_and_detector_version(
    make_engine: Callable[..., Engine], clock: Clock, chdb_store: Store,
    db_settings: StormwatchSettings,
) -> None:  # fmt: skip
    ep = episode()
    db = db_settings.database
    chdb_store.command(
        f"INSERT INTO {db}.anomalies (episode_id, series_id, start, end, is_open, detector, "
        f"detector_version, updated_at) VALUES ({ep.episode_id}, {ep.series_id}, now64(3), "
        f"now64(3), 1, 'robust', '1', now64(3))"
    )
    e = make_engine()
    [p] = e.on_episode(ep, clock.now)
    e.decide(p.id, True, "UALICE", clock.now, source="slack")
    e.auditor.flush()
    r = chdb_store.query(
        f"SELECT a.state, a.actor, e.detector, e.detector_version FROM {db}.action_audit AS a "
        f"INNER JOIN {db}.anomalies AS e ON a.episode_id = e.episode_id "
        f"WHERE a.proposal_id = '{p.id}' ORDER BY a.ts, a.state"
    )
    states = [row[0] for row in r.rows]
    assert {"proposed", "approved", "executing", "succeeded"} <= set(states)
    assert all(row[2:] == ("robust", "1") for row in r.rows)
    assert ("approved", "UALICE") in [row[:2] for row in r.rows]


def test_repeated_episode_messages_make_one_proposal_per_target(
    make_engine: Callable[..., Engine], clock: Clock
) -> None:
    e = make_engine()
    assert len(e.on_episode(episode(), clock.now)) == 1
    assert e.on_episode(episode(), clock.advance(5)) == []  # the episode grew
    assert e.on_episode(episode(episode_id=2002), clock.now) == []  # same target, still live
    assert len(e.state.where()) == 1


def test_episodes_of_one_service_become_one_message(
    make_engine: Callable[..., Engine], make_asettings: Callable[..., Any],
    policy_file: Callable[..., Any], receiver: Receiver, clock: Clock,
) -> None:  # fmt: skip
    e = make_engine(make_asettings(policies=policy_file(ANY_QUEUE), group_wait_s=10))
    [a] = e.on_episode(episode(), clock.now)
    e.tick(clock.advance(3))
    assert receiver.posts("/webhook/") == []  # waiting for the rest of the group
    [b] = e.on_episode(episode(episode_id=3003, series_id=78, name="oldest_age_s"), clock.now)
    assert a.incident_id == b.incident_id
    e.tick(clock.advance(8))
    [msg] = receiver.posts("/webhook/")
    ids = {v for k, v in buttons(msg) if k == "approve"}
    assert ids == {a.id, b.id}
    assert "2 anomalies" in msg["text"]


def test_message_cap_sends_a_digest(
    make_engine: Callable[..., Engine], make_asettings: Callable[..., Any],
    policy_file: Callable[..., Any], receiver: Receiver, clock: Clock,
) -> None:  # fmt: skip
    e = make_engine(make_asettings(policies=policy_file(ANY_QUEUE), max_messages_per_min=2))
    for i in range(4):
        e.on_episode(episode(service=f"svc{i}", name="depth", labels={}, episode_id=10 + i,
                             series_id=100 + i), clock.now)  # fmt: skip
    e.tick(clock.advance(1))
    msgs = receiver.posts("/webhook/")
    assert len(msgs) == 2
    assert msgs[0]["text"].startswith("Incident on svc")
    assert msgs[1]["text"].startswith("Digest: 3 incidents, 3 proposals")
    assert len([k for k, _ in buttons(msgs[1]) if k == "approve"]) == 3
    e.on_episode(episode(service="svc9", name="depth", labels={}, episode_id=99, series_id=199),
                 clock.now)  # fmt: skip
    e.tick(clock.advance(1))
    assert len(receiver.posts("/webhook/")) == 2  # cap reached for this minute
    e.tick(clock.advance(60))
    assert len(receiver.posts("/webhook/")) == 3


def test_dry_run_records_what_would_have_run(
    make_engine: Callable[..., Engine], receiver: Receiver, clock: Clock, chdb_store: Store,
    db_settings: StormwatchSettings,
) -> None:  # fmt: skip
    e = make_engine(dry_run=True)
    [p] = e.on_episode(episode(), clock.now)
    assert p.dry_run and any("dry run" in v.reason for v in p.guards)
    e.decide(p.id, True, "UALICE", clock.now, source="slack")
    done = e.state.get(p.id)
    assert done is not None and done.state == State.succeeded and done.dry_run
    body = '{"action":"scale_consumers","queue":"orders","group":"fulfillment","replicas":6}'
    assert done.detail == f"would run: POST {receiver.url}/act/scale {body}"
    assert receiver.posts("/act/") == []
    e.auditor.flush()
    rows = {r["state"]: r for r in audit_rows(chdb_store, db_settings.database)}
    assert rows["succeeded"]["dry_run"] == 1 and "would run: POST" in rows["succeeded"]["detail"]


def test_ineffective_action_is_detected_and_rolled_back_once(
    make_engine: Callable[..., Engine], receiver: Receiver, clock: Clock, chdb_store: Store,
    db_settings: StormwatchSettings,
) -> None:  # fmt: skip
    e = make_engine()
    [p] = e.on_episode(episode(), clock.now)
    e.decide(p.id, True, "UALICE", clock.now, source="slack")
    assert receiver.posts("/act/scale") == [{"action": "scale_consumers", "queue": "orders",
                                             "group": "fulfillment", "replicas": 6}]  # fmt: skip
    e.tick(clock.advance(30))
    assert e.state.get(p.id).outcome == "watching"  # type: ignore[union-attr]
    e.on_episode(episode(), clock.now)  # still open
    e.tick(clock.advance(31))
    done = e.state.get(p.id)
    assert done is not None and done.state == State.rolled_back and done.outcome == "ineffective"
    assert receiver.posts("/act/unscale") == [{"action": "scale_consumers", "queue": "orders",
                                               "group": "fulfillment", "replicas": 2}]  # fmt: skip
    notice = receiver.posts("/webhook/")[-1]
    assert (
        "did not clear the anomaly within 60s" in notice["text"] and "Rolled back" in notice["text"]
    )
    e.tick(clock.advance(60))
    assert len(receiver.posts("/act/unscale")) == 1
    states = [r["state"] for r in audit_rows(chdb_store, db_settings.database)]
    assert "ineffective" in states and "rolled_back" in states


def test_cleared_anomaly_marks_the_action_effective(
    make_engine: Callable[..., Engine], receiver: Receiver, clock: Clock
) -> None:
    e = make_engine()
    [p] = e.on_episode(episode(), clock.now)
    e.decide(p.id, True, "UALICE", clock.now, source="slack")
    closed = episode(is_open=False, start=clock.now + timedelta(seconds=20))
    e.on_episode(closed, clock.advance(20))
    e.tick(clock.advance(100))
    done = e.state.get(p.id)
    assert done is not None and done.state == State.succeeded and done.outcome == "effective"
    assert receiver.posts("/act/unscale") == []


def test_guard_refusing_at_execution_fails_the_proposal(
    make_engine: Callable[..., Engine], receiver: Receiver, clock: Clock
) -> None:
    e = make_engine()
    [p] = e.on_episode(episode(), clock.now)
    e.on_episode(episode(is_open=False, start=clock.now + timedelta(seconds=5)), clock.now)
    e.decide(p.id, True, "UALICE", clock.advance(10), source="slack")
    done = e.state.get(p.id)
    assert done is not None and done.state == State.failed
    assert done.detail == "blocked by still_open: the anomaly has cleared"
    assert receiver.posts("/act/") == []


def test_guard_refusing_at_proposal_blocks_it_with_the_reason(
    make_engine: Callable[..., Engine], receiver: Receiver, clock: Clock
) -> None:
    e = make_engine()
    [p] = e.on_episode(episode(), clock.now)
    e.decide(p.id, True, "UALICE", clock.now, source="slack")
    e.on_episode(episode(is_open=False, start=clock.now + timedelta(seconds=1)), clock.now)
    assert e.on_episode(episode(episode_id=4004, start=clock.advance(120)), clock.now) == []
    [blocked] = e.state.by_state(State.blocked)
    assert blocked.detail.startswith("cooldown: queue/orders was acted on 12:00:00; cooling 480s")
    e.set_kill(True, "cli:ops", clock.now, source="cli")
    assert e.on_episode(episode(service="checkout", kind="span", name="error_rate", labels={},
                                episode_id=5005), clock.now) == []  # fmt: skip
    killed = [b for b in e.state.by_state(State.blocked) if b.episode_id == 5005]
    assert killed[0].detail == "kill_switch: the kill switch is on (set by cli:ops)"


def test_unanswered_proposal_expires(make_engine: Callable[..., Engine], clock: Clock) -> None:
    e = make_engine(proposal_ttl_s=60)
    [p] = e.on_episode(episode(), clock.now)
    e.tick(clock.advance(59))
    assert e.state.get(p.id).state == State.proposed  # type: ignore[union-attr]
    e.tick(clock.advance(2))
    assert e.state.get(p.id).state == State.expired  # type: ignore[union-attr]


def test_restart_loses_no_proposal_and_runs_none_twice(
    make_engine: Callable[..., Engine], make_asettings: Callable[..., Any], receiver: Receiver,
    clock: Clock,
) -> None:  # fmt: skip
    s = make_asettings()
    held: list[Any] = []
    first = make_engine(s)
    first.runner = held.append  # the process dies before the pool runs the execution
    [a] = first.on_episode(episode(), clock.now)
    [b] = first.on_episode(episode(service="checkout", kind="span", name="error_rate", labels={},
                                   episode_id=6006), clock.now)  # fmt: skip
    first.decide(a.id, True, "UALICE", clock.now, source="slack")
    assert held and receiver.posts("/act/") == []
    first.state.close()

    second = make_engine(s)
    second.recover(clock.now)
    assert second.state.get(b.id).state == State.proposed  # type: ignore[union-attr]
    second.tick(clock.advance(6))
    assert len(receiver.posts("/act/scale")) == 1
    assert second.execute(a.id, clock.now) is None  # a late or second runner loses the CAS
    second.tick(clock.advance(6))
    assert len(receiver.posts("/act/scale")) == 1
    second.decide(b.id, True, "UBOB", clock.now, source="slack")
    assert len(receiver.posts("/act/restart")) == 1


def test_execution_cut_short_by_a_crash_is_not_retried(
    make_engine: Callable[..., Engine], make_asettings: Callable[..., Any], receiver: Receiver,
    clock: Clock,
) -> None:  # fmt: skip
    s = make_asettings()
    first = make_engine(s)
    [a] = first.on_episode(episode(), clock.now)
    first.state.transition(a.id, [State.proposed], State.approved, clock.now)
    first.state.transition(a.id, [State.approved], State.executing, clock.now)
    first.state.close()
    second = make_engine(s)
    second.recover(clock.now)
    second.tick(clock.advance(10))
    done = second.state.get(a.id)
    assert done is not None and done.state == State.failed and "not retried" in done.detail
    assert receiver.posts("/act/") == []


def test_execution_refused_by_a_guard_does_not_start_a_cooldown(
    make_engine: Callable[..., Engine], receiver: Receiver, clock: Clock
) -> None:
    e = make_engine()
    [p] = e.on_episode(episode(), clock.now)
    e.on_episode(episode(is_open=False, start=clock.now + timedelta(seconds=5)), clock.now)
    e.decide(p.id, True, "UALICE", clock.advance(10), source="slack")
    assert e.state.get(p.id).state == State.failed  # type: ignore[union-attr]
    [q] = e.on_episode(episode(episode_id=4242, start=clock.advance(10)), clock.now)
    assert q.state == State.proposed  # nothing ran, so nothing to cool down from
    e.decide(q.id, True, "UALICE", clock.now, source="slack")
    assert len(receiver.posts("/act/scale")) == 1


def test_proposal_whose_anomaly_cleared_before_anyone_was_asked_expires_silently(
    make_engine: Callable[..., Engine], receiver: Receiver, clock: Clock
) -> None:
    e = make_engine(group_wait_s=5)
    [p] = e.on_episode(episode(), clock.now)
    e.on_episode(episode(is_open=False, start=clock.now + timedelta(seconds=2)), clock.advance(2))
    e.tick(clock.advance(5))
    done = e.state.get(p.id)
    assert done is not None and done.state == State.expired
    assert done.detail == "the anomaly cleared before anyone was asked"
    assert receiver.posts("/webhook/") == []


def test_templated_command_values_cannot_inject_arguments(
    make_engine: Callable[..., Engine], make_asettings: Callable[..., Any],
    policy_file: Callable[..., Any], clock: Clock,
) -> None:  # fmt: skip
    import json
    import sys

    script = "import sys, json; print(json.dumps(sys.argv[1:]))"
    extra = f"""
  - name: restart-unit
    match: {{kind: span, name: error_rate}}
    target: "unit/{{{{label.unit}}}}"
    action: run_command
    params: {{command: restart, args: {{unit: "{{{{label.unit}}}}"}}}}
commands:
  restart:
    argv: [{json.dumps(sys.executable)}, "-c", {json.dumps(script)}, "{{unit}}"]
    args: {{unit: '[a-z0-9][a-z0-9-]*\\.service'}}
"""
    e = make_engine(make_asettings(policies=policy_file(extra)))

    def errors(unit: str, eid: int) -> Any:
        return episode(service="api", kind="span", name="error_rate", labels={"unit": unit},
                       episode_id=eid, series_id=eid)  # fmt: skip

    for i, evil in enumerate(["a.service --now", "-rf.service", "a.service;id", "$(id).service"]):
        assert e.on_episode(errors(evil, 500 + i), clock.now) == []
    blocked = e.state.by_state(State.blocked)
    assert len(blocked) == 4 and all("is not allowed" in b.detail for b in blocked)
    [p] = e.on_episode(errors("orders-worker.service", 600), clock.now)
    e.decide(p.id, True, "UALICE", clock.now, source="slack")
    done = e.state.get(p.id)
    assert done is not None and done.state == State.succeeded
    assert done.detail == 'exit 0: ["orders-worker.service"]'


def test_audit_waits_in_the_outbox_while_clickhouse_is_away(
    make_engine: Callable[..., Engine], clock: Clock, chdb_store: Store,
    db_settings: StormwatchSettings,
) -> None:  # fmt: skip
    class Away:
        def insert(self, *a: Any) -> None:
            from stormwatch.store import StoreError

            raise StoreError("connection refused")

    e = make_engine()
    e.auditor.store = Away()
    [p] = e.on_episode(episode(), clock.now)
    e.decide(p.id, True, "UALICE", clock.now, source="slack")
    assert e.auditor.flush() == 0 and len(e.state.pending()) == 4
    e.auditor.store = chdb_store
    assert e.auditor.flush() == 4 and e.state.pending() == []
    assert e.auditor.flush() == 0
    states = [r["state"] for r in audit_rows(chdb_store, db_settings.database)]
    assert states == ["proposed", "approved", "executing", "succeeded"]


def test_slack_down_keeps_proposals_for_the_next_tick(
    make_engine: Callable[..., Engine], make_asettings: Callable[..., Any], receiver: Receiver,
    clock: Clock,
) -> None:  # fmt: skip
    e = make_engine(make_asettings(slack_webhook_url=f"{receiver.url}/fail/webhook"))
    [p] = e.on_episode(episode(), clock.now)
    e.tick(clock.advance(1))
    e.tick(clock.advance(1))
    assert len(receiver.posts("/fail/webhook")) == 2
    assert not e.state.get(p.id).notified  # type: ignore[union-attr]
