from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from actions import ActionsError
from actions.library import SHIPPED
from actions.policy import Policy, Window, context, load_policies, matches, render
from actions.registry import ActionRegistry
from actions.service import DEMO_POLICIES

from .conftest import episode

REG = ActionRegistry(SHIPPED)


def _load(tmp_path: Path, text: str) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(text)
    load_policies(p, REG)


def test_load_policies_accepts_the_demo_file() -> None:
    pf = load_policies(DEMO_POLICIES, REG)
    names = {p.name for p in pf.policies}
    assert names == {"scale-orders-consumers", "restart-on-error-burst", "db-fallback-on-latency"}
    assert "restart-unit" in pf.commands


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("policies:\n  - name: a\n    match: {}\n    action: nuke_everything\n", 4,
         "unknown action 'nuke_everything'"),
        ("policies:\n  - name: a\n    match: {}\n    action: scale_consumers\n    params:\n"
         "      url: http://x/y\n      queue: q\n      group: g\n      replicas: 500\n", 9,
         "replicas"),
        ("policies:\n  - name: a\n    match:\n      min_severity: huge\n    action: http_post\n",
         4, "min_severity"),
        ("policies:\n  - name: a\n    match: {}\n    action: http_post\n    params:\n"
         "      url: '{{base_url}}/{{secret_env}}'\n", 6, "unknown template variable"),
        ("policies:\n  - name: a\n    match: {}\n    action: http_post\n    colour: red\n", 5,
         "Extra inputs"),
        ("policies:\n  - name: a\n    match: {service: '(('}\n    action: http_post\n", 3,
         "service"),
        ("policies:\n  - name: a\n   match: {}\n", 3, "not valid YAML"),
        ("commands:\n  evil:\n    argv: ['{prog}']\n    args: {prog: '.*'}\n", 3,
         "argv[0]"),
        ("commands:\n  evil:\n    argv: [ls, '--dir={d}']\n    args: {d: '.*'}\n", 3,
         "whole argv element"),
    ],
)  # fmt: skip
def test_load_policies_refuses_a_bad_file_naming_line_and_reason(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    with pytest.raises(ActionsError) as e:
        _load(tmp_path, text)
    assert f"p.yaml:{line}:" in str(e.value)
    assert reason in str(e.value)


def test_load_policies_refuses_duplicate_names(tmp_path: Path) -> None:
    text = (
        "policies:\n"
        + "  - {name: a, match: {}, action: http_post, params: {url: 'http://x'}}\n" * 2
    )
    with pytest.raises(ActionsError, match="used twice"):
        _load(tmp_path, text)


def test_matches_checks_every_criterion() -> None:
    p = Policy.model_validate({
        "name": "p", "action": "http_post",
        "match": {"service": "fulf.*", "kind": "queue", "name": "lag|oldest_age_s",
                  "labels": {"queue": "orders"}, "min_severity": "major", "min_duration_s": 10},
    })  # fmt: skip
    assert matches(p, episode())
    assert not matches(p, episode(service="checkout"))
    assert not matches(p, episode(name="depth"))
    assert not matches(p, episode(labels={"queue": "payments", "group": "g"}))
    assert not matches(p, episode(score=0.91).model_copy(update={"severity": "minor"}))
    short = episode().model_copy(update={"start_ms": episode().end_ms - 5000})
    assert not matches(p, short)


def test_matches_predicted_breach_uses_the_signal() -> None:
    p = Policy.model_validate({"name": "p", "action": "http_post",
                               "match": {"predicted_breach": True}})  # fmt: skip
    assert not matches(p, episode())
    assert matches(p, episode().model_copy(update={"signals": ["queue.lag", "predicted_breach"]}))


def test_render_quotes_episode_values_inside_urls() -> None:
    ep = episode(service="a/../admin?x=1")
    ctx = context(ep, "http://127.0.0.1:9")
    out = render({"url": "{{base_url}}/svc/{{service}}", "service": "{{service}}"}, ctx)
    assert out["url"] == "http://127.0.0.1:9/svc/a%2F..%2Fadmin%3Fx%3D1"
    assert out["service"] == "a/../admin?x=1"  # the params model then refuses it


def test_render_refuses_a_missing_label() -> None:
    with pytest.raises(ActionsError, match="label.region"):
        render("{{label.region}}", context(episode(), "http://x"))


def test_window_covers_absolute_and_daily_ranges() -> None:
    now = datetime(2026, 11, 26, 2, 30, tzinfo=UTC)
    daily = Window(name="n", daily_from="02:00", daily_to="03:00", services=["checkout"])
    assert daily.covers("checkout", now)
    assert not daily.covers("fulfillment", now)
    overnight = Window(name="o", daily_from="23:00", daily_to="03:00")
    assert overnight.covers("x", now)
    absolute = Window(name="a", start=datetime(2026, 11, 26, 3, tzinfo=UTC),
                      end=datetime(2026, 11, 26, 4, tzinfo=UTC))  # fmt: skip
    assert not absolute.covers("x", now)
