"""OTLP through the same stages the agents run (decode → redact → normalize → cardinality cap →
points wire → detect → ClickHouse sink), without faust: scored points land in the real engine
with no PII in them."""

from __future__ import annotations

import time

from detectors.registry import model_factory
from ingest.cardinality import CardinalityGuard, CardinalityLimits
from ingest.otlp import OtlpState, decode_otlp_metrics, decode_otlp_traces
from ingest.redact import Redactor
from stormwatch.settings import StormwatchSettings
from stormwatch.store import Store
from streams.columns import POINT_COLUMNS
from streams.detect import DetectStage
from streams.normalize import Normalizer
from streams.sink import ClickHouseSink
from streams.wire import decode_points, encode_points
from tests.ingest.otlp_factory import (
    S,
    gauge,
    metrics_request,
    span,
    to_otlp_json,
    traces_request,
)

# Recent event time: ClickHouse drops rows already past the table's TTL at insert, so a
# fixed date would make this test fail once it is older than the retention.
T0 = (int(time.time()) // 3600 * 3600 - 86_400) * S


def test_otlp_messages_become_scored_points_in_clickhouse_without_pii(
    chdb_store: Store, db_settings: StormwatchSettings
) -> None:
    messages: list[tuple[str, bytes]] = []
    for i in range(120):
        t = T0 + i * S
        cpu = 0.5 + (5.0 if i == 100 else 0.0)  # one spike
        metrics = metrics_request(
            gauge("cpu.util", cpu, t, host="10.0.0.7", owner="ops@example.com"),
            *[gauge("req.size", 1.0, t, request_id=f"r{i}-{k}") for k in range(3)],  # a flood
        )
        traces = traces_request(span("GET /users/bob@example.com", t, 20.0 + (i % 3)))
        enc = "otlp_proto" if i % 2 else "otlp_json"  # both encodings, one set of series
        raw_m = metrics.SerializeToString() if i % 2 else to_otlp_json(metrics)
        raw_t = traces.SerializeToString() if i % 2 else to_otlp_json(traces)
        messages += [("m" + enc, raw_m), ("t" + enc, raw_t)]

    state, redactor, norm = OtlpState(), Redactor(), Normalizer()
    guard = CardinalityGuard(CardinalityLimits(per_name=50))
    clock = [0.0]
    stage = DetectStage(model_factory("robust", threshold=0.9), window_s=10,
                        lateness_s=5, threshold=0.9, wall_clock=lambda: clock[0])  # fmt: skip
    for n, (what, raw) in enumerate(messages):
        enc = what[1:]
        if what[0] == "m":
            events, rejects = decode_otlp_metrics(raw, enc, state)
        else:
            events, rejects = decode_otlp_traces(raw, enc, state)
        assert rejects == []
        obs = guard.filter(norm.observations(redactor.events(events)), norm.meta)
        stage.add(*decode_points(encode_points(obs, norm.meta)), n)  # as the points topic does
    clock[0] = 1e9
    stage.close_idle()
    out = stage.drain()
    sink = ClickHouseSink(chdb_store, f"{db_settings.database}.points", POINT_COLUMNS)
    sink.add_columns(out.points)
    sink.flush()

    rows = chdb_store.query(
        f"SELECT kind, name, toString(labels), count(), max(score), max(is_anomaly) "
        f"FROM {db_settings.database}.points GROUP BY kind, name, labels ORDER BY kind, name"
    ).rows
    by_name = {(r[0], r[1]): r for r in rows if r[1] != "req.size"}
    assert by_name[("metric", "cpu.util")][3] == 120
    assert by_name[("metric", "cpu.util")][5] == 1  # the spike is flagged
    assert by_name[("span", "latency_ms")][3] >= 11  # 10 s windows over 120 s
    assert "<email>" in by_name[("span", "latency_ms")][2]
    text = repr(rows)
    assert "example.com" not in text and "10.0.0.7" not in text
    assert sum(1 for r in rows if r[1] == "req.size") == 50  # the flood stopped at the cap
    assert guard.unmodeled == 360 - 50
