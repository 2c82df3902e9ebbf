"""End to end on real parts: Tansu broker → faust agents → detectors → chdb ClickHouse."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from ingest.producer import TelemetryProducer
from ingest.topics import ensure_topics
from stormwatch.broker import LocalBroker
from stormwatch.pipeline import topic_partitions
from stormwatch.settings import StormwatchSettings
from streams.series import make_series, series_id
from tests.pipeline import (
    assert_no_offsets_skipped,
    reference_scores,
    remote_store,
    running_pipeline,
    wait_for,
)

pytestmark = pytest.mark.slow

T0 = float(int(time.time()) // 3600 * 3600 - 86_400)  # yesterday: event time, inside retention
STEP = 10.0
N_POINTS = 160
INJECTED = {  # series index → (first index, last index, offset in noise units)
    7: (100, 106, 12.0),
    23: (120, 131, -10.0),
    41: (80, 85, 15.0),
}


def metric_events(n_series: int, indexes: range, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in indexes:
        for s in range(n_series):
            base = 100 + 5 * s
            value = base + rng.gauss(0, 2)
            inj = INJECTED.get(s)
            if inj and inj[0] <= i <= inj[1]:
                value += inj[2] * 2
            out.append(
                {
                    "kind": "metric",
                    "name": "e2e.load",
                    "value": value,
                    "ts": T0 + i * STEP,
                    "labels": {"unit": f"u{s:02d}"},
                }
            )
    return out


def sid(s: int) -> int:
    return series_id(make_series("metric", "e2e.load", "", unit=f"u{s:02d}"))


def test_pipeline_finds_injected_anomalies_and_dead_letters_bad_input(
    broker: LocalBroker, make_settings: Callable[..., StormwatchSettings], tmp_path: Path
) -> None:
    s = make_settings()
    ensure_topics(broker.bootstrap, topic_partitions(s))
    events = metric_events(50, range(N_POINTS))
    bad = [
        b"{not json",
        b'{"kind": "metric", "name": "x", "value": "high", "ts": 1}',
        b'{"kind": "teapot"}',
        b"[1, 2, 3]",
    ]
    with running_pipeline(s, broker.bootstrap, tmp_path / "up.log"):
        with TelemetryProducer(broker.bootstrap, s.topics.raw, batch_size=250) as p:
            p.send_many(events[: len(events) // 2])
            p.flush()
            raw = KafkaProducer(bootstrap_servers=broker.bootstrap)
            for b in bad:
                raw.send(s.topics.raw, b)
            raw.flush()
            raw.close()
            p.send_many(events[len(events) // 2 :])
        assert p.failed == 0
        store = remote_store(s)
        db = s.database

        def done() -> bool:
            r = store.query(
                f"SELECT (SELECT count() FROM {db}.points FINAL), "
                f"(SELECT count() FROM {db}.dlq FINAL)"
            )
            return r.rows[0] == (len(events), 6)  # [1, 2, 3] is three rejects

        wait_for(done, 120, "all points and dead letters written")
        dlq = store.query(f"SELECT source_topic, item, reason FROM {db}.dlq FINAL").rows
        assert {r[0] for r in dlq} == {s.topics.raw}
        reasons = " | ".join(r[2] for r in dlq)
        assert "invalid JSON" in reasons and "teapot" in reasons and "value" in reasons
        episodes = store.query(
            f"SELECT series_id, toUnixTimestamp64Milli(start), toUnixTimestamp64Milli(end) "
            f"FROM {db}.anomalies FINAL"
        ).rows
        final = {
            r[0]: r[1:]
            for r in store.query(
                f"SELECT episode_id, is_open, toUnixTimestamp64Milli(end) FROM {db}.anomalies FINAL"
            ).rows
        }
        # the actions service's view: every episode opens on the topic, its newest state last

        def newest_states() -> dict[int, list[dict]] | None:
            per: dict[int, list[dict]] = {}
            for e in anomaly_messages(broker.bootstrap, s.topics.anomalies):
                per.setdefault(e["episode_id"], []).append(e)
            last = {k: (v[-1]["is_open"], v[-1]["end_ms"]) for k, v in per.items()}
            return per if last == final else None

        published = wait_for(newest_states, 60, "each episode's newest state on the topic")
    assert final and len(published) == len(final)  # type: ignore[arg-type]
    for eid, changes in published.items():  # type: ignore[union-attr]
        assert changes[0]["is_open"], f"episode {eid} was never published open"
    for s_idx, (first, last, _) in INJECTED.items():
        lo, hi = (T0 + first * STEP) * 1000, (T0 + last * STEP) * 1000
        hits = [e for e in episodes if e[0] == sid(s_idx) and e[1] <= hi and e[2] >= lo]
        assert hits, f"no episode overlaps the anomaly injected in series {s_idx}"
    injected_ids = {sid(i) for i in INJECTED}
    false_alarms = [e for e in episodes if e[0] not in injected_ids]
    assert len(false_alarms) <= 3, false_alarms


def anomaly_messages(bootstrap: str, topic: str) -> list[dict]:
    """Every episode change on the anomalies topic, in order per partition, key checked."""
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                      consumer_timeout_ms=2000, enable_auto_commit=False)  # fmt: skip
    try:
        out = []
        for m in c:
            e = json.loads(m.value)
            assert m.key == str(e["series_id"]).encode()
            out.append(e)
        return out
    finally:
        c.close()


def span_events(indexes: range, seed: int = 2) -> list[dict]:
    """Spans for 10 operations, several per window, so windows straddle the restart."""
    rng = random.Random(seed)
    return [
        {
            "kind": "span",
            "service": "svc",
            "operation": f"op{k}",
            "ts": T0 + i * 0.5 + rng.random() * 0.4,
            "duration_ms": rng.uniform(5, 15),
            "status": "error" if rng.random() < 0.05 else "ok",
        }
        for i in indexes
        for k in range(10)
    ]


def test_restart_midway_loses_and_duplicates_nothing(
    broker: LocalBroker, make_settings: Callable[..., StormwatchSettings], tmp_path: Path
) -> None:
    s = make_settings(window_s=2.0, lateness_s=1.0)
    ensure_topics(broker.bootstrap, topic_partitions(s))
    metrics = metric_events(20, range(120), seed=3)
    spans = span_events(range(480))
    db = s.database
    half_m, half_s = len(metrics) // 2, len(spans) // 2

    def counts(store) -> tuple[int, int]:  # type: ignore[no-untyped-def]
        r = store.query(
            f"SELECT countIf(kind = 'metric'), sumIf(n, kind = 'span' AND name = 'throughput') "
            f"FROM {db}.points FINAL"
        )
        return r.rows[0]

    with running_pipeline(s, broker.bootstrap, tmp_path / "up1.log"):
        with TelemetryProducer(broker.bootstrap, s.topics.raw, batch_size=100) as p:
            p.send_many(metrics[:half_m] + spans[:half_s])
        store = remote_store(s)
        wait_for(lambda: counts(store)[0] >= half_m, 90, "first half written")
        time.sleep(4)  # let faust commit (every 2.8 s): the restart resumes midway, not from 0
    # Stopped midway: the rest is produced while no worker runs.
    with TelemetryProducer(broker.bootstrap, s.topics.raw, batch_size=100) as p:
        p.send_many(metrics[half_m:] + spans[half_s:])
    with running_pipeline(s, broker.bootstrap, tmp_path / "up2.log"):
        store = remote_store(s)
        # Every metric point once; every span counted once in its throughput window (the last
        # window closes when the stream goes idle).
        wait_for(
            lambda: counts(store) == (len(metrics), len(spans)), 120, "all points after restart"
        )
        stored = store.query(
            f"SELECT series_id, toUnixTimestamp64Milli(ts) FROM {db}.points FINAL "
            f"WHERE kind = 'metric'"
        ).rows
        scores = {
            (labels["unit"], ts): score
            for labels, ts, score in store.query(
                f"SELECT labels, toUnixTimestamp64Milli(ts), score FROM {db}.points FINAL "
                f"WHERE kind = 'metric'"
            ).rows
        }
    produced = {
        (series_id(make_series("metric", "e2e.load", "", **e["labels"])), int(e["ts"] * 1000))
        for e in metrics
    }
    assert len(stored) == len(produced)  # none duplicated
    assert {tuple(r) for r in stored} == produced  # none lost
    assert_no_offsets_skipped(tmp_path / "up1.log", tmp_path / "up2.log")
    # Detector state resumed from the checkpoint taken at the stop: every score equals the score
    # of one uninterrupted run of the same detector over the same series.
    reference = reference_scores(s, metrics)
    differ = [(k, v, scores[k]) for k, v in reference.items() if abs(scores[k] - v) > 1e-4]
    assert not differ, differ[:5]
