"""Redaction: PII never reaches series labels (so neither storage nor Slack)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ingest.models import DbQuery, MetricPoint, QueueEvent, Span
from ingest.redact import CustomPattern, RedactionRules, Redactor, luhn_ok
from streams.normalize import Normalizer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user bob.smith+x@example.co.uk signed in", "user <email> signed in"),
        ("Authorization: Bearer abc.DEF-123_456~xyz", "Authorization: <token>"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_nature", "<token>"),
        ("key AKIAIOSFODNN7EXAMPLE used", "key <token> used"),
        ("GET /v1/x?api_key=s3cr3t&page=2", "GET /v1/x?api_key=<token>&page=2"),
        ("paid with 4111 1111 1111 1111", "paid with <card>"),
        ("paid with 4111-1111-1111-1111!", "paid with <card>!"),
        ("order 4111111111111112 (not Luhn)", "order 4111111111111112 (not Luhn)"),
        ("from 10.0.12.7 via 192.168.0.1:8080", "from <ip> via <ip>:8080"),
        ("peer 2001:db8::8a2e:370:7334 and fe80::1%eth0", "peer <ip> and <ip>"),
        ("mapped ::ffff:10.1.2.3", "mapped <ip>"),
        ("at 12:30:45 build 1.2.3 host 999.1.1.1", "at 12:30:45 build 1.2.3 host 999.1.1.1"),
        ("GET /cart", "GET /cart"),
    ],
)
def test_redactor_text_masks_pii_and_leaves_the_rest(text: str, expected: str) -> None:
    assert Redactor().text(text) == expected


def test_luhn_ok_checks_the_digit() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112")


def test_redactor_labels_masks_secret_keys_values_and_pii_in_keys() -> None:
    r = Redactor()
    labels = {"db.password": "hunter2", "X-Api-Key": "k", "user": "a@b.io", "a@b.io": "1",
              "route": "/cart"}  # fmt: skip
    assert r.labels(labels) == {"db.password": "<redacted>", "X-Api-Key": "<redacted>",
                                "user": "<email>", "<email>": "1", "route": "/cart"}  # fmt: skip
    clean = {"route": "/cart"}
    assert r.labels(clean) is clean  # nothing to do: no copy


def test_redactor_event_rewrites_every_kind_and_keeps_clean_events_identical() -> None:
    r = Redactor()
    m = MetricPoint(name="logins", value=1, ts=1, labels={"user": "eve@example.com"})
    s = Span(service="api", operation="GET /users/eve@example.com", ts=1, duration_ms=1,
             labels={"client.ip": "10.1.1.1"})  # fmt: skip
    q = QueueEvent(queue="jobs-10.0.0.1", ts=1, lag=3)
    d = DbQuery(service="api", statement="select 1", ts=1, duration_ms=1, database="a@b.io")
    clean = MetricPoint(name="cpu", value=1, ts=1, labels={"core": "1"})
    out = r.events([m, s, q, d, clean])
    assert out[0].labels == {"user": "<email>"}  # type: ignore[union-attr]
    assert out[1].operation == "GET /users/<email>"  # type: ignore[union-attr]
    assert out[1].labels == {"client.ip": "<ip>"}  # type: ignore[union-attr]
    assert out[2].queue == "jobs-<ip>"  # type: ignore[union-attr]
    assert out[3].database == "<email>"  # type: ignore[union-attr]
    assert out[4] is clean
    assert r.redacted >= 5


def test_redactor_applied_before_normalize_keeps_pii_out_of_series() -> None:
    events = [
        Span(service="api", operation="login", ts=1, duration_ms=5,
             labels={"enduser.id": f"user{i}@example.com", "card": "4111111111111111"})
        for i in range(3)
    ]  # fmt: skip
    norm = Normalizer()
    norm.observations(Redactor().events(events))
    text = repr(list(norm.meta.values()))
    assert "example.com" not in text and "4111" not in text
    assert len(norm.meta) == 3  # the three users collapse into one series per signal


def test_redaction_rules_can_turn_classes_off_and_add_patterns() -> None:
    custom = CustomPattern(pattern=r"cust-\d+", replacement="<customer>")
    rules = RedactionRules(ip_addresses=False, custom=(custom,))
    r = Redactor(rules)
    assert r.text("10.0.0.1 cust-991 a@b.io") == "10.0.0.1 <customer> <email>"


def test_redaction_rules_reject_bad_regex_and_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        RedactionRules(custom=(CustomPattern(pattern="("),))
    with pytest.raises(ValidationError):
        RedactionRules(emails_please=True)  # type: ignore[call-arg]


def test_redactor_labels_seen_clean_stay_clean_but_secret_keys_and_pii_still_redact() -> None:
    r = Redactor()
    clean = {"route": "/cart", "user": "bob"}
    assert r.labels(clean) is clean and r.labels(dict(clean)) == clean  # the cached path
    # a value seen clean is still redacted under a secret-looking key
    assert r.labels({"route": "/cart", "api_key": "bob"}) == {
        "route": "/cart",
        "api_key": "<redacted>",
    }
    assert r.labels({"user": "bob@example.com"}) == {"user": "<email>"}
    m = MetricPoint(name="cpu", value=1, ts=1, labels={"user": "bob"})
    pii = MetricPoint(name="cpu", value=1, ts=1, labels={"user": "10.0.0.1"})
    out = r.events([m, pii, m])
    assert out[0] is m and out[2] is m and out[1].labels == {"user": "<ip>"}  # type: ignore[union-attr]
