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


def test_the_summary_counts_what_this_run_wrote(chdb_store, db_settings) -> None:  # type: ignore[no-untyped-def]
    """`up --duration` ends with what it wrote: a second demo run in the same data directory
    does not count the first one's rows."""
    import time

    from stormwatch.pipeline import summarize
    from streams.columns import POINT_COLUMNS

    db, now = db_settings.database, time.time()
    row = [7, int(now * 1000), 1.0, 1, 0.1, None, None, None, 0, "metric", "cpu", "api", {},
           "robust", "3.1"]  # fmt: skip
    columns = [*POINT_COLUMNS, "written_at"]
    earlier = [[v] for v in [*row[:1], row[1] - 60_000, *row[2:], int((now - 60) * 1000)]]
    chdb_store.insert(f"{db}.points", columns, earlier)  # the last run's point
    chdb_store.insert(f"{db}.points", columns, [[v] for v in [8, *row[1:], int(now * 1000)]])
    s = summarize(chdb_store, db_settings, now - 1)
    assert (s["points"], s["series"], s["episodes"], s["dead_letters"]) == (1, 1, 0, 0)
    assert summarize(chdb_store, db_settings, now - 120)["points"] == 2
