"""`stormwatch demo`: the shop's telemetry on the configured Kafka, every kind of event."""

from __future__ import annotations

import subprocess
import sys

import orjson
from kafka import KafkaConsumer

from ingest.decode import decode_json
from ingest.topics import ensure_topics


def test_demo_command_produces_every_kind_then_stops(broker, make_settings) -> None:  # type: ignore[no-untyped-def]
    s = make_settings()
    ensure_topics(broker.bootstrap, {s.topics.raw: 2})
    r = subprocess.run(
        [sys.executable, "-m", "stormwatch.cli", "--kafka-bootstrap", broker.bootstrap, "demo",
         "--duration", "3", "--cycles", "1"],
        env={"STORMWATCH_TOPIC_RAW": s.topics.raw, "PATH": ""},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "db slow-query regression" in r.stdout
    c = KafkaConsumer(s.topics.raw, bootstrap_servers=broker.bootstrap,
                      auto_offset_reset="earliest", consumer_timeout_ms=5000)  # fmt: skip
    events = [e for m in c for e in decode_json(m.value)[0]]
    c.close()
    assert {e.kind for e in events} == {"metric", "span", "queue", "db"}
    assert len(events) > 200
    assert orjson.dumps(events[0].model_dump())
