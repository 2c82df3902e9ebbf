from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from actions.base import Proposal, State, Verdict
from actions.slack import Redact, check_signature, digest_message, incident_message

from .conftest import SECRET, T0, episode, sign


def _proposal(i: int) -> Proposal:
    return Proposal(id=f"p{i:09d}", state=State.proposed, policy="scale", action="http_post",
                    params={"url": "http://x", "n": i}, target=f"t{i}", service="svc",
                    episode_id=i, series_id=i, incident_id="inc", created_at=T0,
                    expires_at=T0 + timedelta(minutes=15),
                    guards=[Verdict(guard="cooldown", ok=True)])  # fmt: skip


def _check_blocks(msg: dict) -> None:  # type: ignore[type-arg]
    blocks = msg["blocks"]
    assert len(blocks) <= 50
    ids = [b["block_id"] for b in blocks if "block_id" in b]
    assert len(ids) == len(set(ids))
    for b in blocks:
        if b["type"] == "section":
            assert len(b["text"]["text"]) <= 3000
        if b["type"] == "actions":
            aids = [e["action_id"] for e in b["elements"]]
            assert len(aids) == len(set(aids))


def test_incident_message_stays_within_block_kit_limits() -> None:
    long = episode().model_copy(update={"explanation": "<&>" * 2000})
    msg = incident_message("svc", [long] * 3, [_proposal(i) for i in range(30)])
    _check_blocks(msg)
    assert "&lt;&amp;&gt;" in str(msg) and "<&>" not in str(msg)


def test_digest_message_offers_buttons_for_the_first_proposals_only() -> None:
    groups = [(f"svc{i}", [episode(episode_id=i)], [_proposal(i)]) for i in range(12)]
    msg = digest_message(groups)
    _check_blocks(msg)
    approves = [e for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]
                if e["action_id"] == "approve"]  # fmt: skip
    assert len(approves) == 8
    assert "4 more: `stormwatch actions list`" in str(msg)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [({}, "missing Slack signature headers"),
     ({"x-slack-request-timestamp": "soon", "x-slack-signature": "v0=00"}, "bad timestamp"),
     (sign(b"payload=x", int(T0.timestamp()) - 301), "stale timestamp"),
     (sign(b"payload=x", int(T0.timestamp()), "other"), "bad signature"),
     (sign(b"payload=y", int(T0.timestamp())), "bad signature")],
)  # fmt: skip
def test_check_signature_refuses_with_reason(headers: dict[str, str], reason: str) -> None:
    assert check_signature(SECRET, b"payload=x", headers, T0) == reason


def test_check_signature_accepts_slacks_signature_within_the_window() -> None:
    h = sign(b"payload=x", int(T0.timestamp()) - 299)
    assert check_signature(SECRET, b"payload=x", h, T0) is None


def test_redact_masks_secrets_in_http_client_logs(caplog: pytest.LogCaptureFixture) -> None:
    r = Redact(["https://hooks.slack.com/services/T/B/secret"]).install()
    try:
        with caplog.at_level(logging.INFO, logger="httpx"):
            logging.getLogger("httpx").info(
                'HTTP Request: POST %s "HTTP/1.1 200 OK"',
                "https://hooks.slack.com/services/T/B/secret",
            )
    finally:
        r.remove()
    assert "secret" not in caplog.text and "POST *** " in caplog.text


def test_incident_message_keeps_every_proposal_button_with_many_anomalies() -> None:
    eps = [episode(episode_id=i) for i in range(20)]
    msg = incident_message("svc", eps, [_proposal(i) for i in range(10)])
    _check_blocks(msg)
    approves = [e for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]
                if e["action_id"] == "approve"]  # fmt: skip
    assert len(approves) == 10 and "15 more anomalies" in str(msg)
    assert "signals queue.lag · detector robust v1" in str(msg)
