"""`stormwatch ship`: JSON lines to the raw topic of a real broker, failures counted."""

from __future__ import annotations

import subprocess
import sys

import orjson
from kafka import KafkaConsumer

from ingest.topics import ensure_topics


def test_ship_sends_valid_lines_in_batches_and_reports_failures(
    broker, make_settings, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    s = make_settings()
    ensure_topics(broker.bootstrap, {s.topics.raw: 2})
    lines = [
        orjson.dumps({"kind": "metric", "name": "m", "value": i, "ts": 1_700_000_000 + i})
        for i in range(1200)
    ]
    lines.insert(10, b"{broken")
    lines.insert(
        20, orjson.dumps([{"kind": "metric", "name": "m", "value": 1, "ts": 1}, {"kind": "?"}])
    )
    f = tmp_path / "in.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "stormwatch.cli",
            "--kafka-bootstrap",
            broker.bootstrap,
            "ship",
            str(f),
            "--topic",
            s.topics.raw,
            "--batch-size",
            "500",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, r.stderr
    assert f"sent 1201 events to {s.topics.raw}; 2 failed" in r.stdout
    assert "line 11" in r.stderr and "invalid JSON" in r.stderr
    c = KafkaConsumer(
        s.topics.raw,
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    messages = [m.value for m in c]
    c.close()
    assert sum(len(orjson.loads(m)) for m in messages) == 1201
    assert len(messages) == 3  # batches, not one message per event


def test_ship_reports_progress_with_the_events_still_queued(broker, make_settings) -> None:  # type: ignore[no-untyped-def]
    """A slow source (stdin from a live producer): the progress line counts events sent and
    events still batching, and the run ends with every event delivered."""
    import io
    import time

    from ingest.producer import TelemetryProducer
    from stormwatch.commands.ship import ship_lines

    s = make_settings()
    ensure_topics(broker.bootstrap, {s.topics.raw: 4})

    def slow_lines():  # type: ignore[no-untyped-def]
        for i in range(12):
            if i in (4, 8):
                time.sleep(0.6)  # past the progress interval
            yield orjson.dumps({"kind": "metric", "name": "m", "value": i, "ts": 1_700_000_000,
                                "labels": {"host": f"h{i}"}})  # fmt: skip

    out = io.StringIO()
    with TelemetryProducer(broker.bootstrap, s.topics.raw, batch_size=500) as p:
        sent, failed, reasons = ship_lines(slow_lines(), p, progress=out)  # type: ignore[arg-type]
    assert (sent, failed, reasons) == (12, 0, [])
    shown = [part for part in out.getvalue().split("\r") if part.startswith("shipping")]
    assert shown and shown[0].startswith("shipping: 5 events"), out.getvalue()
