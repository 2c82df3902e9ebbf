"""OTLP decoding: what the Collector's Kafka exporter writes becomes the events of models.py."""

from __future__ import annotations

import random
from collections.abc import Callable

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pbm
from opentelemetry.proto.trace.v1 import trace_pb2 as pbt

from ingest.models import DbQuery, MetricPoint, Span
from ingest.otlp import OtlpOptions, OtlpState, decode_otlp_metrics, decode_otlp_traces, quantile
from ingest.topics import ensure_topics
from stormwatch.broker import LocalBroker
from stormwatch.settings import StormwatchSettings
from streams.normalize import Normalizer
from tests.ingest.otlp_factory import (
    T0,
    S,
    consume,
    counter,
    gauge,
    histogram,
    metrics_request,
    span,
    to_otlp_json,
    traces_request,
)

CUMULATIVE = pbm.AGGREGATION_TEMPORALITY_CUMULATIVE


def metrics(req: pbm.Metric | object, state: OtlpState | None = None, enc: str = "otlp_proto"):  # type: ignore[no-untyped-def]
    raw = req.SerializeToString() if enc == "otlp_proto" else to_otlp_json(req)  # type: ignore[attr-defined]
    return decode_otlp_metrics(raw, enc, state or OtlpState())


def by_name(events: list) -> dict[str, list[float]]:  # type: ignore[type-arg]
    out: dict[str, list[float]] = {}
    for e in events:
        out.setdefault(e.name, []).append(e.value)
    return out


def test_decode_otlp_metrics_gauge_keeps_value_service_and_labels() -> None:
    events, rejects = metrics(metrics_request(gauge("cpu.util", 0.25, T0, core=3)))
    assert rejects == []
    assert events == [
        MetricPoint(name="cpu.util", value=0.25, ts=T0 / 1e9, service="checkout",
                    labels={"core": "3"})
    ]  # fmt: skip


def test_decode_otlp_metrics_resource_labels_are_configurable() -> None:
    state = OtlpState(OtlpOptions(resource_labels=("host.name",)))
    events, _ = metrics(metrics_request(gauge("cpu.util", 1.0, T0)), state)
    assert events[0].labels == {"host.name": "h1"}


def test_decode_otlp_metrics_cumulative_sum_becomes_rate_across_messages_and_resets() -> None:
    state = OtlpState()
    start = T0 - 10 * S
    first = metrics(metrics_request(counter("http.requests", [(start, T0, 100)])), state)[0]
    second = metrics(metrics_request(counter("http.requests", [(start, T0 + 10 * S, 300)])), state)
    # the process restarted: a new start time and a lower value
    reset = metrics(
        metrics_request(counter("http.requests", [(T0 + 15 * S, T0 + 20 * S, 40)])), state
    )
    assert [e.value for e in first] == [10.0]  # a first point counts from its (recent) start
    assert [(e.name, e.value) for e in second[0]] == [("http.requests.rate", 20.0)]
    assert [e.value for e in reset[0]] == [8.0]


def test_decode_otlp_metrics_first_point_of_an_old_stream_gives_no_rate() -> None:
    state = OtlpState()
    old_start = T0 - 3600 * S
    first, _ = metrics(metrics_request(counter("c", [(old_start, T0, 10_000)])), state)
    second, _ = metrics(metrics_request(counter("c", [(old_start, T0 + 5 * S, 10_050)])), state)
    assert first == []
    assert [e.value for e in second] == [10.0]


def test_decode_otlp_metrics_delta_sum_is_rate_over_its_interval() -> None:
    dp = pbm.NumberDataPoint(start_time_unix_nano=T0, time_unix_nano=T0 + 4 * S, as_int=20)
    m = pbm.Metric(
        name="bytes", sum=pbm.Sum(data_points=[dp], is_monotonic=True,
                                  aggregation_temporality=pbm.AGGREGATION_TEMPORALITY_DELTA),
    )  # fmt: skip
    events, _ = metrics(metrics_request(m))
    assert by_name(events) == {"bytes.rate": [5.0]}


def test_decode_otlp_metrics_histogram_gives_rate_mean_and_quantiles() -> None:
    h = histogram("rpc.duration", T0, T0 + 10 * S, [10, 20, 40], [0, 10, 10, 0], total=500.0)
    events, rejects = metrics(metrics_request(h))
    got = by_name(events)
    assert rejects == []
    assert got["rpc.duration.rate"] == [2.0]
    assert got["rpc.duration.mean"] == [25.0]
    assert got["rpc.duration.p50"] == [20.0]
    assert got["rpc.duration.p90"] == pytest.approx([36.0])
    assert got["rpc.duration.p99"] == pytest.approx([39.6])


def test_decode_otlp_metrics_cumulative_histogram_uses_the_interval_between_points() -> None:
    state = OtlpState()
    start = T0 - 5 * S
    h1 = histogram("lat", start, T0, [10, 100], [10, 0, 0], 50.0, CUMULATIVE)
    h2 = histogram("lat", start, T0 + 10 * S, [10, 100], [10, 10, 0], 1050.0, CUMULATIVE)
    metrics(metrics_request(h1), state)
    events, _ = metrics(metrics_request(h2), state)
    got = by_name(events)
    assert got["lat.mean"] == [100.0]  # (1050 - 50) / (20 - 10): only the new observations
    assert got["lat.p50"] == [55.0]  # all new observations fell in (10, 100]


def test_decode_otlp_metrics_exponential_histogram_quantiles_in_bucket_range() -> None:
    dp = pbm.ExponentialHistogramDataPoint(
        start_time_unix_nano=T0, time_unix_nano=T0 + S, count=100, sum=300.0, scale=0,
        positive=pbm.ExponentialHistogramDataPoint.Buckets(offset=1, bucket_counts=[100]),
    )  # fmt: skip
    m = pbm.Metric(name="size", exponential_histogram=pbm.ExponentialHistogram(
        data_points=[dp], aggregation_temporality=pbm.AGGREGATION_TEMPORALITY_DELTA))  # fmt: skip
    got = by_name(metrics(metrics_request(m))[0])
    assert got["size.mean"] == [3.0]
    assert 2.0 <= got["size.p50"][0] <= 4.0  # bucket 1 at scale 0 is (2, 4]


def test_quantile_answers_open_buckets_with_their_finite_edge() -> None:
    inf = float("inf")
    assert quantile([(-inf, 1.0, 5), (1.0, inf, 5)], 0.99) == 1.0
    assert quantile([(-inf, 1.0, 5), (1.0, inf, 5)], 0.1) == 1.0
    assert quantile([(0.0, 10.0, 10)], 0.5) == 5.0
    assert quantile([(0.0, 10.0, 0)], 0.5) is None


def test_decode_otlp_metrics_bad_point_is_rejected_and_good_ones_kept() -> None:
    bad = pbm.Metric(name="broken", gauge=pbm.Gauge(data_points=[pbm.NumberDataPoint(
        time_unix_nano=T0)]))  # fmt: skip  # no value
    nan = gauge("nan", float("nan"), T0)
    events, rejects = metrics(metrics_request(gauge("ok", 1.0, T0), bad, nan, gauge("ok2", 2, T0)))
    assert [e.name for e in events] == ["ok", "ok2"]
    assert [(r.item, r.reason.split(":")[0]) for r in rejects] == [
        (1, "metric 'broken'"), (2, "metric 'nan'")
    ]  # fmt: skip
    assert "no value" in rejects[0].reason and b"broken" in rejects[0].payload


def test_decode_otlp_metrics_stale_marker_is_skipped_not_rejected() -> None:
    dp = pbm.NumberDataPoint(time_unix_nano=T0, flags=1)
    m = pbm.Metric(name="gone", gauge=pbm.Gauge(data_points=[dp]))
    assert metrics(metrics_request(m)) == ([], [])


def test_decode_otlp_metrics_json_and_proto_give_the_same_series() -> None:
    req = metrics_request(
        gauge("cpu", 0.5, T0, core=1),
        counter("req", [(T0 - 10 * S, T0, 100)]),
        histogram("lat", T0 - 10 * S, T0, [10, 50], [1, 2, 3], 400.0),
    )
    proto_events, _ = metrics(req, enc="otlp_proto")
    json_events, _ = metrics(req, enc="otlp_json")
    auto_events, _ = metrics(req, enc="auto")
    assert len(proto_events) == 7
    assert proto_events == json_events
    norm = Normalizer()
    assert norm.observations(proto_events) == norm.observations(auto_events)


def test_decode_otlp_json_accepts_enum_names_and_numeric_int64() -> None:
    doc = (
        b'{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":'
        b'{"stringValue":"api"}}]},"scopeMetrics":[{"metrics":[{"name":"q","sum":{'
        b'"aggregationTemporality":"AGGREGATION_TEMPORALITY_DELTA","isMonotonic":true,'
        b'"dataPoints":[{"startTimeUnixNano":1790000000000000000,"timeUnixNano":'
        b'"1790000002000000000","asInt":"8"}]}}]}]}]}'
    )
    events, rejects = decode_otlp_metrics(doc, "otlp_json", OtlpState())
    assert rejects == []
    assert [(e.service, e.name, e.value) for e in events] == [("api", "q.rate", 4.0)]


def test_decode_otlp_traces_span_db_and_messaging_events() -> None:
    producer = span("orders publish", T0, 1.0, kind=pbt.Span.SPAN_KIND_PRODUCER,
                    span_id=b"\x03" * 8, messaging__system="kafka",
                    messaging__destination__name="orders")  # fmt: skip
    consumer = span("orders process", T0 + S // 2, 2.0, kind=pbt.Span.SPAN_KIND_CONSUMER,
                    span_id=b"\x04" * 8, parent=b"\x03" * 8, messaging__system="kafka",
                    messaging__destination__name="orders",
                    messaging__consumer__group__name="billing")  # fmt: skip
    req = traces_request(
        span("GET /cart", T0, 12.5, error=True),
        span("SELECT users", T0, 3.0, kind=pbt.Span.SPAN_KIND_CLIENT, db__system="postgresql",
             db__query__text="SELECT * FROM users WHERE id = 42", db__namespace="shop"),
        producer,
        consumer,
    )  # fmt: skip
    events, rejects = decode_otlp_traces(req.SerializeToString(), "otlp_proto", OtlpState())
    assert rejects == []
    spans = [e for e in events if isinstance(e, Span)]
    assert [(s.operation, s.status, s.labels["span.kind"]) for s in spans] == [
        ("GET /cart", "error", "server"), ("SELECT users", "unset", "client"),
        ("orders publish", "unset", "producer"), ("orders process", "unset", "consumer"),
    ]  # fmt: skip
    assert spans[0].duration_ms == 12.5 and spans[0].trace_id == "01" * 16
    assert spans[0].ts == pytest.approx((T0 + 12_500_000) / 1e9)
    (db,) = [e for e in events if isinstance(e, DbQuery)]
    assert (db.system, db.database, db.duration_ms) == ("postgresql", "shop", 3.0)
    (wait,) = [e for e in events if isinstance(e, MetricPoint)]
    assert wait.name == "messaging.queue_time_ms" and wait.value == 499.0
    assert wait.labels == {"group": "billing", "messaging.system": "kafka", "queue": "orders"}
    series = {(s.kind, s.name) for s in _series(events)}
    assert ("db", "latency_ms") in series and ("metric", "messaging.queue_time_ms") in series


def _series(events):  # type: ignore[no-untyped-def]
    norm = Normalizer()
    norm.observations(events)
    return norm.meta.values()


def test_decode_otlp_traces_statement_fingerprint_strips_literals() -> None:
    req = traces_request(*[
        span("q", T0, 1.0, db__system="mysql", db__statement=f"select * from t where email='{e}'")
        for e in ("a@example.com", "b@example.com")
    ])  # fmt: skip
    events, _ = decode_otlp_traces(req.SerializeToString(), "otlp_proto")
    db = [s for s in _series(events) if s.kind == "db"]
    assert len(db) == 2  # latency and error rate of ONE statement shape
    assert all("example.com" not in v for s in db for _, v in s.labels)


def test_decode_otlp_traces_bad_span_rejected_with_index_good_kept() -> None:
    bad = span("backwards", T0, 1.0)
    bad.end_time_unix_nano = T0 - 1
    req = traces_request(span("a", T0, 1.0), bad, span("c", T0, 1.0))
    for enc, raw in (("otlp_proto", req.SerializeToString()), ("otlp_json", to_otlp_json(req))):
        events, rejects = decode_otlp_traces(raw, enc)
        assert [e.operation for e in events] == ["a", "c"], enc  # type: ignore[union-attr]
        assert [(r.item, "ends before it starts" in r.reason) for r in rejects] == [(1, True)]


def test_decode_otlp_json_bad_trace_id_rejects_only_that_span() -> None:
    doc = to_otlp_json(traces_request(span("a", T0, 1.0), span("b", T0, 1.0)))
    doc = doc.replace(b'"traceId":"' + b"01" * 16, b'"traceId":"zz' + b"01" * 15, 1)
    events, rejects = decode_otlp_traces(doc, "otlp_json")
    assert [e.operation for e in events] == ["b"]  # type: ignore[union-attr]
    assert rejects[0].item == 0 and "not hex" in rejects[0].reason


@pytest.mark.parametrize("enc", ["otlp_proto", "otlp_json", "auto"])
def test_decode_otlp_corrupt_message_is_one_reject_never_an_exception(enc: str) -> None:
    good = traces_request(span("a", T0, 1.0)).SerializeToString()
    rng = random.Random(7)
    corrupt = [b"\xff\xfe garbage", good[: len(good) // 2], b"[1,2]", b"{", b"null", b""]
    corrupt += [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))) for _ in range(200)]
    for raw in corrupt:
        for decode in (decode_otlp_traces, lambda r, e: decode_otlp_metrics(r, e, OtlpState())):
            events, rejects = decode(raw, enc)
            assert all(r.reason for r in rejects)
            if raw in corrupt[:5]:
                assert events == [] and rejects and rejects[0].item == -1


def test_decode_otlp_unknown_encoding_is_rejected() -> None:
    events, rejects = decode_otlp_traces(b"{}", "zipkin_json")
    assert events == [] and "unknown encoding" in rejects[0].reason


def test_decode_otlp_proto_and_json_messages_from_kafka_give_the_same_series(
    broker: LocalBroker, make_settings: Callable[..., StormwatchSettings]
) -> None:
    from kafka import KafkaProducer

    t = make_settings().topics
    proto_topic, json_topic = t.otlp_metrics, t.otlp_spans  # one encoding per topic
    ensure_topics(broker.bootstrap, {proto_topic: 1, json_topic: 1})
    reqs = [
        metrics_request(gauge("cpu", 0.5, T0, core=1),
                        counter("req", [(T0 - 10 * S, T0 + i * S, 100 + 50 * i)]))
        for i in range(3)
    ]  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for r in reqs:
        producer.send(proto_topic, r.SerializeToString())
        producer.send(json_topic, to_otlp_json(r))
    producer.flush(10)
    producer.close()

    def series(topic: str, enc: str) -> list[tuple[int, int, float]]:
        state, norm = OtlpState(), Normalizer()
        events = [e for m in consume(broker.bootstrap, topic, 3) for e in
                  decode_otlp_metrics(m, enc, state)[0]]  # fmt: skip
        return [(o.series_id, o.ts_ms, o.value) for o in norm.observations(events)]

    from_proto = series(proto_topic, "otlp_proto")
    assert from_proto == series(json_topic, "otlp_json")
    assert len(from_proto) == 3 + 3  # three gauge points and three rates (10, 50, 50 per s)


def test_decode_otlp_auto_tells_protobuf_from_json_even_when_bytes_look_alike() -> None:
    # 0x0A 0x7B ("\n{") starts a protobuf whose first resource block is 123 bytes long
    for pad in range(200):
        req = traces_request(span("a" * (1 + pad), T0, 1.0))
        raw = req.SerializeToString()
        if raw[:2] == b"\n{":
            break
    assert raw[:2] == b"\n{"
    events, rejects = decode_otlp_traces(raw, "auto")
    assert rejects == [] and len(events) == 1
    assert decode_otlp_traces(b"\n  " + to_otlp_json(req), "auto")[0] == events


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids,
                                                               max_size=4),
    max_leaves=20,
)  # fmt: skip
_keys = st.sampled_from(["resourceSpans", "resourceMetrics", "scopeSpans", "scopeMetrics",
                         "spans", "metrics", "traceId", "gauge", "sum", "dataPoints",
                         "startTimeUnixNano", "timeUnixNano", "asDouble", "name"])  # fmt: skip
_otlpish = st.recursive(
    _json,
    lambda kids: st.dictionaries(_keys, kids, max_size=4) | st.lists(kids, max_size=3),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | _otlpish.map(orjson.dumps), st.sampled_from(
    ["otlp_proto", "otlp_json", "auto"]))  # fmt: skip
def test_decode_otlp_never_raises_on_any_input(raw: bytes, enc: str) -> None:
    for events, rejects in (decode_otlp_traces(raw, enc),
                            decode_otlp_metrics(raw, enc, OtlpState())):  # fmt: skip
        assert isinstance(events, list) and all(r.reason for r in rejects)


def test_decode_otlp_json_bad_resource_drops_its_records_and_keeps_the_others() -> None:
    a = traces_request(span("a", T0, 1.0), span("a2", T0, 1.0), service="cart")
    b = traces_request(span("b", T0, 1.0), service="pay")
    doc = orjson.loads(to_otlp_json(a))
    doc["resourceSpans"] += orjson.loads(to_otlp_json(b))["resourceSpans"]
    doc["resourceSpans"][0]["resource"]["attributes"] = "not a list"
    events, rejects = decode_otlp_traces(orjson.dumps(doc), "otlp_json")
    assert [(e.service, e.operation) for e in events] == [("pay", "b")]  # type: ignore[union-attr]
    assert [r.item for r in rejects] == [-1] and "2 records are dropped" in rejects[0].reason
