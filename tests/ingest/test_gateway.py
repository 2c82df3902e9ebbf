"""The HTTP gateway: OTLP/HTTP and JSON lines in, Kafka out; auth, limits and 503s."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydantic import SecretStr

from ingest import IngestError
from ingest.gateway import GatewayServer, GatewaySettings, create_app, split_by_resource
from ingest.models import EVENTS
from ingest.otlp import OtlpState, decode_otlp_metrics, decode_otlp_traces
from ingest.topics import ensure_topics
from stormwatch.broker import LocalBroker, free_port
from stormwatch.settings import StormwatchSettings
from streams.normalize import Normalizer
from tests.ingest.otlp_factory import T0, consume, span, to_otlp_json, traces_request

TOKEN = "s3cret-token"  # noqa: S105 - a test token
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROTO = {"Content-Type": "application/x-protobuf"}


class Recorder:
    """Stands in for Kafka: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[tuple[bytes | None, bytes]]]] = []

    async def send(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        self.sent.append((topic, list(messages)))

    def close(self) -> None:
        pass


def gw(**kw: object) -> GatewaySettings:
    base: dict[str, object] = {"token": SecretStr(TOKEN), "max_body_bytes": 64 * 1024}
    base.update(kw)
    return GatewaySettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def settings(make_settings: Callable[..., StormwatchSettings]) -> StormwatchSettings:
    return make_settings(kafka_bootstrap="127.0.0.1:9")


@pytest.fixture
def client(settings: StormwatchSettings) -> Iterator[tuple[TestClient, Recorder]]:
    rec = Recorder()
    with TestClient(create_app(settings, gw(), rec)) as c:
        yield c, rec


def traces_body() -> bytes:
    return traces_request(span("GET /cart", T0, 5.0)).SerializeToString()


def test_gateway_v1_traces_forwards_protobuf_to_the_spans_topic(client, settings) -> None:  # type: ignore[no-untyped-def]
    c, rec = client
    body = traces_body()
    r = c.post("/v1/traces", content=body, headers={**AUTH, **PROTO})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    assert rec.sent == [(settings.topics.otlp_spans, [(b"checkout", body)])]


def test_gateway_v1_json_and_gzip_are_forwarded_as_otlp_proto(client, settings) -> None:  # type: ignore[no-untyped-def]
    c, rec = client
    req = traces_request(span("GET /cart", T0, 5.0))
    headers = {**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    r = c.post("/v1/traces", content=gzip.compress(to_otlp_json(req)), headers=headers)
    assert r.status_code == 200 and r.json() == {}
    (topic, [(key, value)]), = rec.sent  # fmt: skip
    assert ExportTraceServiceRequest.FromString(value) == req


def test_gateway_splits_resources_by_service_key(client) -> None:  # type: ignore[no-untyped-def]
    c, rec = client
    a = traces_request(span("a", T0, 1.0), service="cart")
    b = traces_request(span("b", T0, 1.0), service="pay")
    both = ExportTraceServiceRequest(resource_spans=[*a.resource_spans, *b.resource_spans])
    assert c.post(
        "/v1/traces", content=both.SerializeToString(), headers={**AUTH, **PROTO}
    ).is_success
    keys = [k for k, _ in rec.sent[0][1]]
    assert keys == [b"cart", b"pay"]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}]
)
def test_gateway_missing_or_wrong_token_is_401_and_nothing_sent(client, headers) -> None:  # type: ignore[no-untyped-def]
    c, rec = client
    for path in ("/v1/traces", "/ingest"):
        r = c.post(path, content=traces_body(), headers={**headers, **PROTO})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "wrong" not in r.text and TOKEN not in r.text  # no token echoed back
    assert rec.sent == []


def test_gateway_oversized_body_is_413_declared_streamed_or_gzip_bomb(client) -> None:  # type: ignore[no-untyped-def]
    c, rec = client
    big = b"x" * (64 * 1024 + 1)
    assert c.post("/ingest", content=big, headers=AUTH).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        for _ in range(100):
            yield b"y" * 4096

    assert c.post("/ingest", content=chunks(), headers=AUTH).status_code == 413
    bomb = gzip.compress(b"\0" * (10 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    r = c.post("/v1/traces", content=bomb, headers={**AUTH, **PROTO, "Content-Encoding": "gzip"})
    assert r.status_code == 413
    assert status_pb2.Status.FromString(r.content).code == code_pb2.RESOURCE_EXHAUSTED
    assert rec.sent == []


def test_gateway_precise_400s_with_otlp_status_bodies(client) -> None:  # type: ignore[no-untyped-def]
    c, _ = client
    r = c.post("/v1/traces", content=b"\xff\xfe not protobuf", headers={**AUTH, **PROTO})
    assert r.status_code == 400
    st = status_pb2.Status.FromString(r.content)
    assert st.code == code_pb2.INVALID_ARGUMENT and "invalid OTLP protobuf" in st.message
    r = c.post("/v1/metrics", content=b'{"resourceMetrics": 3}',
               headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 400 and "resourceMetrics" in r.json()["message"]
    r = c.post("/v1/traces", content=b"{}", headers={**AUTH, "Content-Type": "text/plain"})
    assert r.status_code == 415
    r = c.post("/v1/traces", content=b"abc", headers={**AUTH, **PROTO, "Content-Encoding": "gzip"})
    assert r.status_code == 400 and "gzip" in status_pb2.Status.FromString(r.content).message


def test_gateway_ingest_forwards_valid_lines_and_reports_bad_ones(client, settings) -> None:  # type: ignore[no-untyped-def]
    c, rec = client
    lines = [
        orjson.dumps({"kind": "metric", "name": "cpu", "value": 0.5, "ts": 1_790_000_000,
                      "service": "api"}),
        b"{not json",
        b"",
        orjson.dumps([{"kind": "span", "service": "web", "operation": "GET /", "ts": 1_790_000_000,
                       "duration_ms": 3}, {"kind": "metric", "name": "x", "ts": 1}]),
    ]  # fmt: skip
    r = c.post("/ingest", content=b"\n".join(lines), headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 2 and body["rejected"] == 2
    assert [(e["line"], e["item"]) for e in body["errors"]] == [(2, -1), (4, 1)]
    assert "value" in body["errors"][1]["reason"]
    (topic, msgs), = rec.sent  # fmt: skip
    assert topic == settings.topics.raw
    events = [e for _, v in msgs for e in EVENTS.validate_json(v)]
    assert sorted(e.kind for e in events) == ["metric", "span"]
    assert_placed_by_series(msgs, settings.topics.partitions)


def assert_placed_by_series(msgs: list[tuple[bytes | None, bytes]], partitions: int) -> None:
    """Each message's key lands it (Kafka's default partitioner) on the points partition of
    every event's first series, as the normalizer computes it."""
    from kafka.partitioner.default import murmur2

    from ingest.models import RECORDS
    from streams.normalize import Normalizer

    norm = Normalizer()
    for key, value in msgs:
        assert key is not None
        part = (murmur2(key) & 0x7FFFFFFF) % partitions
        for e in RECORDS.decode(value):
            assert norm.observations([e])[0].series_id % partitions == part


def test_gateway_ingest_places_each_series_on_its_partition_across_requests(
    client, settings
) -> None:  # type: ignore[no-untyped-def]
    """Events of many series in two requests: every message lands on its series' partition,
    and a series sent twice goes under the same key both times (so it stays in order)."""
    c, rec = client

    def body(r: int) -> bytes:
        return b"\n".join(
            orjson.dumps({"kind": "metric", "name": f"m{i % 3}", "value": r,
                          "ts": 1_790_000_000 + r, "service": f"s{i % 4}",
                          "labels": {"host": f"h{i}"}})
            for i in range(40)
        )  # fmt: skip

    for r in range(2):
        assert c.post("/ingest", content=body(r), headers=AUTH).status_code == 200
    keys: dict[tuple[str, str], set[bytes | None]] = {}
    for _, msgs in rec.sent:
        assert_placed_by_series(msgs, settings.topics.partitions)
        for key, value in msgs:
            for e in orjson.loads(value):
                keys.setdefault((e["name"], e["labels"]["host"]), set()).add(key)
    assert len(keys) == 40 and all(len(k) == 1 for k in keys.values())
    assert len({k for ks in keys.values() for k in ks}) == settings.topics.partitions


def test_gateway_ingest_all_invalid_or_empty_is_400(client) -> None:  # type: ignore[no-untyped-def]
    c, rec = client
    assert c.post("/ingest", content=b"[1]\n", headers=AUTH).status_code == 400
    assert c.post("/ingest", content=b"\n\n", headers=AUTH).status_code == 400
    assert rec.sent == []


def test_gateway_settings_without_token_bind_loopback_only() -> None:
    assert GatewaySettings().bind_host() == "127.0.0.1"
    assert "loopback only" in GatewaySettings().auth_note()
    with pytest.raises(IngestError, match="without STORMWATCH_GATEWAY_TOKEN"):
        GatewaySettings(host="0.0.0.0").bind_host()  # noqa: S104
    assert gw().bind_host() == "0.0.0.0"  # noqa: S104


def test_gateway_settings_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORMWATCH_GATEWAY_TOKEN", "from-env")
    s = GatewaySettings()
    assert s.token is not None and s.token.get_secret_value() == "from-env"
    assert "from-env" not in repr(s)


def test_gateway_kafka_unreachable_is_503_with_retry_after(make_settings) -> None:  # type: ignore[no-untyped-def]
    closed = make_settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    app = create_app(closed, gw(kafka_timeout_s=1.0, retry_after_s=7))
    with TestClient(app) as c:
        t0 = time.monotonic()
        r = c.post("/v1/traces", content=traces_body(), headers={**AUTH, **PROTO})
        assert r.status_code == 503 and r.headers["retry-after"] == "7"
        assert status_pb2.Status.FromString(r.content).code == code_pb2.UNAVAILABLE
        r = c.post("/ingest", content=b'{"kind":"metric","name":"a","value":1,"ts":1}',
                   headers=AUTH)  # fmt: skip
        assert r.status_code == 503 and r.headers["retry-after"] == "7"
        assert time.monotonic() - t0 < 10


def test_gateway_slow_body_times_out_with_408(settings) -> None:  # type: ignore[no-untyped-def]
    server = GatewayServer(settings, gw(port=free_port(), body_timeout_s=0.5), Recorder()).start()
    try:
        with socket.create_connection(("127.0.0.1", server.gw.port), timeout=5) as s:
            s.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      + TOKEN.encode() + b"\r\nContent-Length: 1000\r\n\r\n{")  # fmt: skip
            t0 = time.monotonic()
            reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - t0 < 3
    finally:
        server.stop()


# --- with the real broker and the official OpenTelemetry SDK ---------------------------------


def test_gateway_otel_sdk_spans_and_metrics_land_on_otlp_topics_and_decode(
    broker: LocalBroker, make_settings: Callable[..., StormwatchSettings]
) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Status, StatusCode

    settings = make_settings(kafka_bootstrap=broker.bootstrap)
    t = settings.topics
    ensure_topics(broker.bootstrap, {t.otlp_metrics: 2, t.otlp_spans: 2})
    server = GatewayServer(settings, gw(port=free_port(), max_body_bytes=4 << 20)).start()
    resource = Resource.create({"service.name": "shop-api"})
    try:
        tp = TracerProvider(resource=resource)
        exporter = OTLPSpanExporter(
            endpoint=f"{server.url}/v1/traces", headers=AUTH, compression=Compression.Gzip
        )
        tp.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = tp.get_tracer("test")
        with tracer.start_as_current_span("GET /cart") as root:
            db = {"db.system": "postgresql", "db.statement": "SELECT * FROM cart WHERE id = 7"}
            with tracer.start_as_current_span("SELECT cart", attributes=db):
                time.sleep(0.002)
            root.set_status(Status(StatusCode.ERROR))
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{server.url}/v1/metrics", headers=AUTH),
            export_interval_millis=3_600_000,
        )
        mp = MeterProvider(metric_readers=[reader], resource=resource)
        meter = mp.get_meter("test")
        orders = meter.create_counter("orders")
        latency = meter.create_histogram("checkout.latency", unit="ms")
        orders.add(5, {"region": "eu"})
        latency.record(1000)
        assert mp.force_flush(10_000)  # a stream's first point, under 1 s old: no rate yet
        time.sleep(0.5)
        orders.add(10, {"region": "eu"})
        for v in (3, 7, 12, 40, 80):
            latency.record(v)
        assert mp.force_flush(10_000)
        tp.shutdown()
        mp.shutdown()
    finally:
        server.stop()

    span_msgs = consume(broker.bootstrap, t.otlp_spans, 2)
    metric_msgs = consume(broker.bootstrap, t.otlp_metrics, 2)
    span_events = [e for m in span_msgs for e in decode_otlp_traces(m, "otlp_proto")[0]]
    state = OtlpState()
    metric_events = [e for m in metric_msgs for e in decode_otlp_metrics(m, "otlp_proto", state)[0]]

    ops = {(e.kind, getattr(e, "operation", ""), getattr(e, "status", "")) for e in span_events}
    assert ("span", "GET /cart", "error") in ops and ("db", "", "") in ops
    assert {e.service for e in span_events + metric_events} == {"shop-api"}
    rates = [e for e in metric_events if e.name == "orders.rate"]  # type: ignore[union-attr]
    assert [r.labels for r in rates] == [{"region": "eu"}] * 2  # type: ignore[union-attr]
    assert 5 < rates[0].value < 25  # type: ignore[union-attr]  # 10 in ~0.5 s
    assert rates[1].value == 0.0  # type: ignore[union-attr]  # shutdown's final export
    names = {e.name for e in metric_events}  # type: ignore[union-attr]
    assert {"checkout.latency.mean", "checkout.latency.p50", "checkout.latency.p99"} <= names
    mean = next(e for e in metric_events if e.name == "checkout.latency.mean")  # type: ignore[union-attr]
    assert mean.value == pytest.approx(28.4)  # type: ignore[union-attr]
    norm = Normalizer()
    norm.observations(span_events + metric_events)
    series = {(s.kind, s.name) for s in norm.meta.values()}
    assert {("span", "latency_ms"), ("db", "latency_ms"), ("metric", "orders.rate")} <= series


def test_split_by_resource_keeps_every_record_under_the_message_limit() -> None:
    spans = [span(f"op{i}", T0, 1.0, http__url="x" * 200) for i in range(300)]
    req = ExportTraceServiceRequest(resource_spans=[
        *traces_request(*spans[:200], service="big").resource_spans,
        *traces_request(*spans[200:], service="small").resource_spans,
    ])  # fmt: skip
    msgs = split_by_resource(req, "traces", req.SerializeToString(), 20_000)
    assert all(len(v) <= 20_000 for _, v in msgs) and len(msgs) > 3
    names = []
    for key, value in msgs:
        (rs,) = ExportTraceServiceRequest.FromString(value).resource_spans
        assert key.decode() == next(a.value.string_value for a in rs.resource.attributes)
        names += [s.name for ss in rs.scope_spans for s in ss.spans]
    assert names == [f"op{i}" for i in range(300)]


def test_gateway_command_refuses_public_address_without_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stormwatch.cli import main

    monkeypatch.delenv("STORMWATCH_GATEWAY_TOKEN", raising=False)
    monkeypatch.setenv("STORMWATCH_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    assert main(["gateway", "--host", "0.0.0.0", "--port", str(free_port())]) == 2  # noqa: S104
    assert "without STORMWATCH_GATEWAY_TOKEN" in capsys.readouterr().err


def test_gateway_command_serves_ingest_into_the_raw_topic(
    broker: LocalBroker, make_settings: Callable[..., StormwatchSettings], tmp_path: Path
) -> None:
    import httpx

    topics = make_settings().topics
    port = free_port()
    env = {**os.environ, "STORMWATCH_KAFKA_BOOTSTRAP": broker.bootstrap,
           "STORMWATCH_TOPIC_RAW": topics.raw, "STORMWATCH_TOPIC_PARTITIONS": "1",
           "STORMWATCH_GATEWAY_TOKEN": TOKEN, "STORMWATCH_GATEWAY_HOST": "127.0.0.1",
           "STORMWATCH_DATA_DIR": str(tmp_path)}  # fmt: skip
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "stormwatch.cli", "gateway", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert f"on http://127.0.0.1:{port} (bearer token required)" in banner
        event = {"kind": "metric", "name": "cpu", "value": 1.5, "ts": 1_790_000_000}
        r = httpx.post(f"http://127.0.0.1:{port}/ingest", content=orjson.dumps(event),
                       headers=AUTH, timeout=15)  # fmt: skip
        assert r.status_code == 200 and r.json()["accepted"] == 1
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0  # Ctrl-C is the normal stop
    (msg,) = consume(broker.bootstrap, topics.raw, 1)
    assert EVENTS.validate_json(msg)[0].value == 1.5  # type: ignore[union-attr]


def test_gateway_broker_stopped_gives_503_then_recovers_when_it_is_back(
    make_settings: Callable[..., StormwatchSettings], tmp_path: Path
) -> None:
    port = free_port()
    own = LocalBroker(port, tmp_path / "broker.log").start()  # not the shared one: it stops
    settings = make_settings(kafka_bootstrap=own.bootstrap)
    event = b'{"kind":"metric","name":"a","value":1,"ts":1790000000}'
    try:
        ensure_topics(own.bootstrap, {settings.topics.raw: 1})
        with TestClient(create_app(settings, gw(kafka_timeout_s=1.0))) as c:
            assert c.post("/ingest", content=event, headers=AUTH).status_code == 200
            assert own.proc is not None
            own.proc.kill()  # the broker dies (stop() waits up to 5 s for open connections)
            own.proc.wait()
            for _ in range(2):
                r = c.post("/ingest", content=event, headers=AUTH)
                assert r.status_code == 503 and r.headers["retry-after"] == "5"
            own = LocalBroker(port, tmp_path / "broker.log").start()  # memory storage: empty
            ensure_topics(own.bootstrap, {settings.topics.raw: 1})
            codes = []
            for _ in range(10):
                codes.append(c.post("/ingest", content=event, headers=AUTH).status_code)
                if codes[-1] == 200:
                    break
                time.sleep(0.5)
            assert codes[-1] == 200 and set(codes) <= {200, 503}, codes
        (msg,) = consume(own.bootstrap, settings.topics.raw, 1, timeout_s=10)
        assert EVENTS.validate_json(msg)[0].name == "a"  # type: ignore[union-attr]
    finally:
        own.stop()
