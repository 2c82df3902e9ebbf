"""Secrets from the environment never reach logs, errors or ClickHouse."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaProducer

from ingest.producer import TelemetryProducer
from ingest.topics import ensure_topics
from stormwatch.broker import LocalBroker
from stormwatch.pipeline import topic_partitions
from stormwatch.settings import StormwatchSettings
from tests.e2e.test_pipeline import metric_events
from tests.pipeline import remote_store, running_pipeline, stored_metric_rows, wait_for

pytestmark = pytest.mark.slow
SECRETS = {
    "STORMWATCH_GATEWAY_TOKEN": "gw-token-7f3a9c",
    "STORMWATCH_SLACK_SIGNING_SECRET": "slack-signing-2b8e41",
    "STORMWATCH_SLACK_WEBHOOK_URL": "http://127.0.0.1:9/services/T0/B0/hook-secret-91d2",
}


def test_secrets_stay_out_of_logs_and_storage(
    broker: LocalBroker, make_settings: Callable[..., StormwatchSettings], tmp_path: Path
) -> None:
    s = make_settings()
    ensure_topics(broker.bootstrap, topic_partitions(s))
    events = metric_events(5, range(30), seed=10)
    log = tmp_path / "up.log"
    with running_pipeline(s, broker.bootstrap, log, SECRETS):
        with TelemetryProducer(broker.bootstrap, s.topics.raw) as p:
            p.send_many(events)
        raw = KafkaProducer(bootstrap_servers=broker.bootstrap)
        raw.send(s.topics.raw, b'{"kind": "nope", "token": "not a secret"}')
        raw.flush()
        raw.close()
        store = remote_store(s)
        wait_for(lambda: len(stored_metric_rows(store, s.database)) >= len(events), 90, "points")
        wait_for(
            lambda: store.query(f"SELECT count() FROM {s.database}.dlq").rows[0][0] >= 1, 30, "dlq"
        )
        tables = [r[0] for r in store.query(f"SHOW TABLES FROM {s.database}").rows]
        stored = " ".join(repr(store.query(f"SELECT * FROM {s.database}.{t}").rows) for t in tables)
    # A bad server DSN: its password must not appear in the error either.
    bad = subprocess.run(
        [sys.executable, "-m", "stormwatch.cli", "sql", "SELECT 1"],
        env={"STORMWATCH_CLICKHOUSE_DSN": "http://admin:pw-5c6d7e@127.0.0.1:1", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    text = log.read_text() + bad.stdout + bad.stderr
    for secret in [*SECRETS.values(), "pw-5c6d7e"]:
        assert secret not in text, f"{secret} leaked into output"
        assert secret not in stored, f"{secret} leaked into ClickHouse"
    assert "points" in tables and len(stored) > 1000  # the check looked at real data
