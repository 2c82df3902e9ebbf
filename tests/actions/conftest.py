"""Fixtures for the actions tests: a local HTTP receiver standing in for Slack and for the
remediation endpoints, a settable clock, policies, and interaction requests signed exactly as
Slack signs them (`v0=` HMAC-SHA256 of `v0:{timestamp}:{body}` with the signing secret).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from actions.engine import Engine, inline
from actions.service import build_engine
from actions.settings import ActionsSettings
from detectors.episodes import Episode
from stormwatch.settings import StormwatchSettings
from stormwatch.store import Store

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # the example secret of Slack's docs
# The tests' clock: a fixed weekday and time of day (expected texts name 12:00:00), in the
# week before now. The audit and feedback tables drop rows past their 365-day TTL on insert,
# so a date fixed for good would fail these tests a year on.
_THURSDAY_NOON = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
T0 = _THURSDAY_NOON + timedelta(weeks=(datetime.now(UTC) - _THURSDAY_NOON) // timedelta(weeks=1))


@dataclass
class Receiver:
    """Records every POST (path, JSON body); paths under /fail answer 500."""

    url: str = ""
    calls: list[tuple[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def posts(self, prefix: str) -> list[Any]:
        with self.lock:
            return [body for path, body in self.calls if path.startswith(prefix)]

    def wait(self, prefix: str, n: int = 1, timeout: float = 20.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.posts(prefix)
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{len(self.posts(prefix))} posts to {prefix}, wanted {n}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            return

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            try:
                data: Any = json.loads(body) if body else None
            except ValueError:
                data = body.decode()
            with rec.lock:
                rec.calls.append((self.path, data))
            code = 500 if self.path.startswith("/fail") else 200
            self.send_response(code)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    yield rec
    srv.shutdown()
    srv.server_close()


class Clock:
    """The time the code under test sees; tests move it."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


POLICIES = """
policies:
  - name: scale-orders
    match: {{kind: queue, name: lag, labels: {{queue: orders}}}}
    target: "queue/{{{{label.queue}}}}"
    action: scale_consumers
    params:
      url: "{{{{base_url}}}}/act/scale"
      queue: "{{{{label.queue}}}}"
      group: "{{{{label.group}}}}"
      replicas: 6
    rollback:
      action: scale_consumers
      params:
        {{url: "{{{{base_url}}}}/act/unscale", queue: orders, group: fulfillment, replicas: 2}}
    guards: {{cooldown_s: 600, max_executions: 2, window_s: 3600, blast_radius: 1}}
  - name: restart-checkout
    match: {{service: checkout, kind: span, name: error_rate}}
    target: "service/{{{{service}}}}"
    action: restart_service
    params: {{url: "{{{{base_url}}}}/act/restart", service: "{{{{service}}}}"}}
    approvers: [UBOB]
    ttl_s: 300
{extra}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Callable[..., Path]:
    def write(extra: str = "") -> Path:
        p = tmp_path / "policies.yaml"
        p.write_text(POLICIES.format(extra=extra))
        return p

    return write


@pytest.fixture
def make_asettings(
    tmp_path: Path, receiver: Receiver, policy_file: Callable[..., Path]
) -> Callable[..., ActionsSettings]:
    def make(**kw: Any) -> ActionsSettings:
        base: dict[str, Any] = {
            "data_dir": tmp_path, "slack_webhook_url": f"{receiver.url}/webhook/T0/B0/xyz",
            "slack_signing_secret": SECRET,
            "slack_response_url_prefix": f"{receiver.url}/response/",
            "approvers": "UALICE,UBOB", "dry_run": False, "group_wait_s": 0,
            "action_base_url": receiver.url, "watch_s": 60, "http_retries": 1,
        }  # fmt: skip
        if "policies" not in kw:
            base["policies"] = policy_file()
        base.update(kw)
        return ActionsSettings(**base)

    return make


@pytest.fixture
def make_engine(
    make_asettings: Callable[..., ActionsSettings], chdb_store: Store,
    db_settings: StormwatchSettings, clock: Clock,
) -> Iterator[Callable[..., Engine]]:  # fmt: skip
    made: list[Engine] = []

    def make(settings: ActionsSettings | None = None, **kw: Any) -> Engine:
        s = settings or make_asettings(**kw)
        e = build_engine(s, store=chdb_store, database=db_settings.database, bootstrap=None,
                         runner=inline, clock=clock)  # fmt: skip
        made.append(e)
        return e

    yield make
    for e in made:
        e.executors.close()
        e.poster.close()
        e.state.close()


def episode(*, is_open: bool = True, start: datetime = T0, service: str = "fulfillment",
            kind: str = "queue", name: str = "lag", labels: dict[str, str] | None = None,
            episode_id: int = 1001, series_id: int = 77,
            score: float = 0.97) -> Episode:  # fmt: skip
    labels = {"queue": "orders", "group": "fulfillment"} if labels is None else labels
    ms = int(start.timestamp() * 1000)
    return Episode(
        episode_id=episode_id, series_id=series_id, start_ms=ms - 20_000, end_ms=ms,
        is_open=is_open, peak_score=score, peak_value=3040.0, expected=40.0, lower=20.0,
        upper=60.0, severity="major", kind=kind, name=name, service=service, labels=labels,
        signals=[f"{kind}.{name}"], explanation=f"{kind}.{name} of {service} peaked at 3040 vs "
        "expected 40", detector="robust", detector_version="1", points=5,
    )  # fmt: skip


def slack_body(action_id: str, value: str, user: str, response_url: str) -> bytes:
    """A `block_actions` payload as Slack posts it: form-encoded `payload=<json>`."""
    payload = {
        "type": "block_actions", "team": {"id": "T0", "domain": "shop"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": "T0"},
        "api_app_id": "A0", "token": "legacy-verification-token", "trigger_id": "1.2.3",
        "container": {"type": "message", "message_ts": "1700000000.000100",
                      "channel_id": "C0", "is_ephemeral": False},
        "channel": {"id": "C0", "name": "incidents"}, "response_url": response_url,
        "actions": [{"action_id": action_id, "block_id": f"a:{value}", "value": value,
                     "type": "button", "action_ts": "1700000001.000200",
                     "text": {"type": "plain_text", "text": action_id}}],
    }  # fmt: skip
    return urlencode({"payload": json.dumps(payload)}).encode()


def sign(body: bytes, ts: int, secret: str = SECRET) -> dict[str, str]:
    base = f"v0:{ts}:{body.decode()}".encode()
    sig = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"x-slack-request-timestamp": str(ts), "x-slack-signature": sig,
            "content-type": "application/x-www-form-urlencoded"}  # fmt: skip


def audit_rows(store: Store, database: str) -> list[dict[str, Any]]:
    return store.query(f"SELECT * FROM {database}.action_audit FINAL ORDER BY ts, audit_id").dicts()
