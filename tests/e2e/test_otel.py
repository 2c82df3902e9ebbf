"""The official OpenTelemetry SDK → the gateway `stormwatch up` runs → scored points."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest.topics import ensure_topics
from stormwatch.broker import LocalBroker, free_port
from stormwatch.pipeline import topic_partitions
from stormwatch.settings import StormwatchSettings
from tests.pipeline import remote_store, running_pipeline, wait_for

pytestmark = pytest.mark.slow
TOKEN = "e2e-gateway-token"


def test_otel_sdk_spans_and_metrics_become_scored_series(
    broker: LocalBroker, make_settings: Callable[..., StormwatchSettings], tmp_path: Path
) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    s = make_settings(window_s=1.0, lateness_s=0.5)
    ensure_topics(broker.bootstrap, topic_partitions(s))
    port = free_port()
    env = {"STORMWATCH_GATEWAY_PORT": str(port), "STORMWATCH_GATEWAY_TOKEN": TOKEN}
    url = f"http://127.0.0.1:{port}"
    auth = {"authorization": f"Bearer {TOKEN}"}
    with running_pipeline(s, broker.bootstrap, tmp_path / "up.log", env):
        resource = Resource.create({"service.name": "shop-api"})
        tp = TracerProvider(resource=resource)
        tp.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(f"{url}/v1/traces", headers=auth))
        )
        tracer = tp.get_tracer("e2e")
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(f"{url}/v1/metrics", headers=auth), export_interval_millis=500
        )
        mp = MeterProvider(metric_readers=[reader], resource=resource)
        queue_depth = mp.get_meter("e2e").create_gauge("orders.queue_depth")
        db = {"db.system": "postgresql", "db.statement": "SELECT * FROM cart WHERE user = 'a@b.c'"}
        for i in range(40):  # ~8 s of traffic: several windows per series
            with tracer.start_as_current_span("GET /cart"):
                with tracer.start_as_current_span("SELECT cart", attributes=db):
                    time.sleep(0.01)
            queue_depth.set(10 + i % 3)
            time.sleep(0.2)
        tp.shutdown()
        mp.shutdown()
        store = remote_store(s)
        db_name = s.database

        def series() -> set[tuple[str, str]]:
            rows = store.query(
                f"SELECT DISTINCT kind, name FROM {db_name}.points WHERE service = 'shop-api'"
            ).rows
            return {(k, n) for k, n in rows}

        # ... and the service's signals, scored together by its multivariate model.
        wanted = {("span", "latency_ms"), ("span", "throughput"), ("db", "latency_ms"),
                  ("metric", "orders.queue_depth"), ("service", "multivariate")}  # fmt: skip
        wait_for(lambda: wanted <= series(), 90, "span, DB, metric and service series")
        scored = store.query(
            f"SELECT count(), countIf(expected IS NOT NULL) FROM {db_name}.points "
            "WHERE service = 'shop-api'"
        ).rows[0]
        statements = store.query(
            f"SELECT DISTINCT labels['statement'] FROM {db_name}.points WHERE kind = 'db'"
        ).rows
    assert scored[0] > 20 and scored[1] > 0, scored  # points scored, some with a band
    assert statements == [("SELECT * FROM cart WHERE user = ?",)]  # no literal (email) stored
