"""Slack interactions over HTTP: requests built and signed exactly as Slack does."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from actions.audit import Feedback
from actions.base import State
from actions.engine import Engine
from actions.http import create_app
from stormwatch.settings import StormwatchSettings
from stormwatch.store import Store

from .conftest import SECRET, Clock, Receiver, audit_rows, episode, sign, slack_body


@dataclass
class Slack:
    engine: Engine
    client: TestClient
    receiver: Receiver
    clock: Clock

    @property
    def response_url(self) -> str:
        return f"{self.receiver.url}/response/T0/1/abc"

    def click(self, action_id: str, value: str, user: str = "UALICE", *, ts_offset: int = 0,
              secret: str = SECRET, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> Any:  # fmt: skip
        body = body or slack_body(action_id, value, user, self.response_url)
        headers = headers or sign(body, int(self.clock.now.timestamp()) + ts_offset, secret)
        return self.client.post("/slack/interactions", content=body, headers=headers)


@pytest.fixture
def slack(make_engine: Callable[..., Engine], receiver: Receiver, clock: Clock) -> Iterator[Slack]:
    e = make_engine()
    with TestClient(create_app(e, SECRET, clock)) as c:
        yield Slack(e, c, receiver, clock)


def _proposal(s: Slack, **kw: Any) -> str:
    [p] = s.engine.on_episode(episode(**kw), s.clock.now)
    return p.id


def test_signed_approve_executes_once_and_updates_the_message(
    slack: Slack, chdb_store: Store, db_settings: StormwatchSettings
) -> None:
    pid = _proposal(slack)
    r = slack.click("approve", pid)
    assert r.status_code == 200 and r.json()["text"] == "approved by UALICE"
    assert len(slack.receiver.posts("/act/scale")) == 1
    [update] = slack.receiver.posts("/response/")
    assert update["replace_original"] is True
    assert f"proposal `{pid}` *succeeded* by <@UALICE>" in str(update["blocks"])
    assert not any(e["action_id"] == "approve" for b in update["blocks"]
                   if b["type"] == "actions" for e in b["elements"])  # fmt: skip
    slack.engine.auditor.flush()
    rows = [(r["state"], r["actor"], r["source"]) for r in
            audit_rows(chdb_store, db_settings.database) if r["proposal_id"] == pid]  # fmt: skip
    assert ("approved", "UALICE", "slack") in rows and ("succeeded", "", "service") in rows


def test_reject_changes_state_and_runs_nothing(slack: Slack) -> None:
    pid = _proposal(slack)
    assert slack.click("reject", pid, "UBOB").status_code == 200
    assert slack.engine.state.get(pid).state == State.rejected  # type: ignore[union-attr]
    assert slack.receiver.posts("/act/") == []
    assert "*rejected* by <@UBOB>" in str(slack.receiver.posts("/response/")[0])
    assert slack.click("approve", pid, "UALICE").json()["text"] == "already rejected by UBOB"
    assert slack.receiver.posts("/act/") == []


REFUSALS: dict[str, tuple[Callable[[Slack, str], Any], int, str]] = {
    "forged signature": (lambda s, pid: s.click("approve", pid, secret="not-the-secret"), 401,
                         "bad signature"),
    "stale timestamp": (lambda s, pid: s.click("approve", pid, ts_offset=-301), 401,
                        "stale timestamp"),
    "future timestamp": (lambda s, pid: s.click("approve", pid, ts_offset=301), 401,
                         "stale timestamp"),
    "no signature": (lambda s, pid: s.click("approve", pid, headers={"x": "y"}), 401,
                     "missing Slack signature headers"),
    "unknown user": (lambda s, pid: s.click("approve", pid, "UMALLORY"), 403,
                     "user UMALLORY is not an approver"),
    "user not allowed for the policy": (
        lambda s, pid: s.click("approve", _proposal(s, service="checkout", kind="span",
                                                    name="error_rate", labels={},
                                                    episode_id=9009), "UALICE"),
        403, "user UALICE may not approve policy restart-checkout"),
    "unknown proposal": (lambda s, pid: s.click("approve", "ffffffffff"), 403,
                         "unknown proposal"),
    "expired proposal": (lambda s, pid: (s.clock.advance(901), s.click("approve", pid))[1], 403,
                         "proposal expired"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSALS))
def test_interaction_refused_audited_and_nothing_runs(
    slack: Slack, case: str, chdb_store: Store, db_settings: StormwatchSettings
) -> None:
    send, code, reason = REFUSALS[case]
    pid = _proposal(slack)
    r = send(slack, pid)
    assert r.status_code == code and r.json()["text"] == reason
    assert slack.receiver.posts("/act/") == []
    assert all(p.state in (State.proposed, State.expired) for p in slack.engine.state.where())
    slack.engine.auditor.flush()
    refused = [r for r in audit_rows(chdb_store, db_settings.database) if r["state"] == "refused"]
    assert len(refused) == 1 and refused[0]["detail"].startswith(reason)
    assert refused[0]["source"] == "slack" and refused[0]["detail"].endswith("from testclient")


def test_replayed_request_is_refused(
    slack: Slack, chdb_store: Store, db_settings: StormwatchSettings
) -> None:
    pid = _proposal(slack)
    body = slack_body("approve", pid, "UALICE", slack.response_url)
    headers = sign(body, int(slack.clock.now.timestamp()))
    assert slack.click("approve", pid, body=body, headers=headers).status_code == 200
    slack.clock.advance(30)
    again = slack.click("approve", pid, body=body, headers=headers)
    assert again.status_code == 401 and again.json()["text"] == "replayed request"
    assert len(slack.receiver.posts("/act/scale")) == 1
    slack.engine.auditor.flush()
    assert "replayed request from testclient" in [
        r["detail"] for r in audit_rows(chdb_store, db_settings.database)]  # fmt: skip


def test_double_approve_executes_once(slack: Slack) -> None:
    pid = _proposal(slack)
    first = slack.click("approve", pid, "UALICE")
    slack.clock.advance(1)
    second = slack.click("approve", pid, "UBOB")
    assert first.status_code == second.status_code == 200
    assert second.json()["text"] == "already succeeded by UALICE"
    assert len(slack.receiver.posts("/act/scale")) == 1


def test_concurrent_approvers_execute_once(slack: Slack) -> None:
    pid = _proposal(slack)
    start = threading.Barrier(8)
    codes: list[str] = []

    def approve(user: str) -> None:
        start.wait()
        d = slack.engine.decide(pid, True, user, slack.clock.now, source="slack")
        codes.append(d.message)

    threads = [threading.Thread(target=approve, args=(u,)) for u in ["UALICE", "UBOB"] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(slack.receiver.posts("/act/scale")) == 1
    assert sum(m.startswith("approved by") for m in codes) == 1


def test_feedback_is_stored_and_handed_to_the_detectors(
    make_engine: Callable[..., Engine], receiver: Receiver, clock: Clock, chdb_store: Store,
    db_settings: StormwatchSettings,
) -> None:  # fmt: skip
    got: list[Feedback] = []
    e = make_engine()
    e.on_feedback = got.append
    s = Slack(e, TestClient(create_app(e, SECRET, clock)), receiver, clock)
    ep = episode()
    r = s.click("feedback_new_normal", f"{ep.episode_id}:{ep.series_id}", "UCAROL")
    assert r.status_code == 200
    assert [(f.episode_id, f.label, f.user) for f in got] == [(ep.episode_id, "new_normal",
                                                               "UCAROL")]  # fmt: skip
    e.auditor.flush()
    rows = chdb_store.query(
        f"SELECT episode_id, series_id, label, user, source FROM {db_settings.database}.feedback"
    ).rows
    assert rows == [(ep.episode_id, ep.series_id, "new_normal", "UCAROL", "slack")]
    assert receiver.posts("/response/")[0]["response_type"] == "ephemeral"


def test_response_url_outside_slack_is_not_called(
    make_engine: Callable[..., Engine], receiver: Receiver, clock: Clock
) -> None:
    e = make_engine()
    s = Slack(e, TestClient(create_app(e, SECRET, clock)), receiver, clock)
    pid = _proposal(s)
    body = slack_body("approve", pid, "UALICE", f"{receiver.url}/elsewhere/steal")
    assert s.click("approve", pid, body=body).status_code == 200
    assert receiver.posts("/elsewhere") == [] and receiver.posts("/response/") == []


def test_secrets_never_reach_logs_messages_or_clickhouse(
    slack: Slack, caplog: pytest.LogCaptureFixture, chdb_store: Store,
    db_settings: StormwatchSettings,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    pid = _proposal(slack)
    slack.engine.tick(slack.clock.now)
    slack.click("approve", pid, secret="wrong")
    slack.click("approve", pid)
    slack.engine.tick(slack.clock.advance(61))
    slack.engine.auditor.flush()
    webhook_token = "/T0/B0/xyz"
    dump = str(chdb_store.query(f"SELECT * FROM {db_settings.database}.action_audit").rows)
    posted = str([body for _, body in slack.receiver.calls])
    for text in (caplog.text, dump, posted, repr(slack.engine.settings)):
        assert SECRET not in text
        assert webhook_token not in text
    assert "rolled_back" in dump


def test_oversized_request_is_refused_before_verification(slack: Slack) -> None:
    pid = _proposal(slack)
    body = slack_body("approve", pid, "UALICE", slack.response_url) + b"&pad=" + b"x" * 70_000
    r = slack.click("approve", pid, body=body)
    assert r.status_code == 413
    assert slack.receiver.posts("/act/") == []
