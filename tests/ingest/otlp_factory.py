"""OTLP requests built with `opentelemetry-proto`, their OTLP/JSON form (as the Collector
writes `otlp_json`: lowerCamelCase, hex ids, int64 as strings, enums as integers), and a
reader of a topic from its beginning."""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message
from kafka import KafkaConsumer, TopicPartition
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pbm
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2 as pbt

S = 1_000_000_000
T0 = 1_790_000_000 * S  # 2026-09-21, epoch nanoseconds


def kv(**attrs: object) -> list[KeyValue]:
    out = []
    for k, v in attrs.items():
        key = k.replace("__", ".")
        if isinstance(v, bool):
            out.append(KeyValue(key=key, value=AnyValue(bool_value=v)))
        elif isinstance(v, int):
            out.append(KeyValue(key=key, value=AnyValue(int_value=v)))
        elif isinstance(v, float):
            out.append(KeyValue(key=key, value=AnyValue(double_value=v)))
        else:
            out.append(KeyValue(key=key, value=AnyValue(string_value=str(v))))
    return out


def metrics_request(*metrics: pbm.Metric, service: str = "checkout") -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest(
        resource_metrics=[
            pbm.ResourceMetrics(
                resource=Resource(attributes=kv(service__name=service, host__name="h1")),
                scope_metrics=[pbm.ScopeMetrics(metrics=list(metrics))],
            )
        ]
    )


def gauge(name: str, value: float, t: int, **attrs: object) -> pbm.Metric:
    dp = pbm.NumberDataPoint(time_unix_nano=t, as_double=value, attributes=kv(**attrs))
    return pbm.Metric(name=name, gauge=pbm.Gauge(data_points=[dp]))


def counter(name: str, points: list[tuple[int, int, int]], **attrs: object) -> pbm.Metric:
    """A cumulative monotonic sum; points are (start, time, value)."""
    dps = [
        pbm.NumberDataPoint(start_time_unix_nano=s, time_unix_nano=t, as_int=v,
                            attributes=kv(**attrs))
        for s, t, v in points
    ]  # fmt: skip
    return pbm.Metric(
        name=name,
        sum=pbm.Sum(data_points=dps, is_monotonic=True,
                    aggregation_temporality=pbm.AGGREGATION_TEMPORALITY_CUMULATIVE),
    )  # fmt: skip


DELTA = pbm.AGGREGATION_TEMPORALITY_DELTA


def histogram(name: str, start: int, t: int, bounds: list[float], counts: list[int],
              total: float, temporality: int = DELTA) -> pbm.Metric:  # fmt: skip
    dp = pbm.HistogramDataPoint(
        start_time_unix_nano=start, time_unix_nano=t, count=sum(counts), sum=total,
        explicit_bounds=bounds, bucket_counts=counts,
    )  # fmt: skip
    return pbm.Metric(
        name=name, histogram=pbm.Histogram(data_points=[dp], aggregation_temporality=temporality)
    )


def span(name: str, start: int, dur_ms: float, *, kind: int = pbt.Span.SPAN_KIND_SERVER,
         error: bool = False, trace: bytes = b"\x01" * 16, span_id: bytes = b"\x02" * 8,
         parent: bytes = b"", **attrs: object) -> pbt.Span:  # fmt: skip
    code = pbt.Status.STATUS_CODE_ERROR if error else pbt.Status.STATUS_CODE_UNSET
    return pbt.Span(
        trace_id=trace, span_id=span_id, parent_span_id=parent, name=name, kind=kind,
        start_time_unix_nano=start, end_time_unix_nano=start + int(dur_ms * 1e6),
        attributes=kv(**attrs), status=pbt.Status(code=code),
    )  # fmt: skip


def traces_request(*spans: pbt.Span, service: str = "checkout") -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[
            pbt.ResourceSpans(
                resource=Resource(attributes=kv(service__name=service)),
                scope_spans=[pbt.ScopeSpans(spans=list(spans))],
            )
        ]
    )


def to_otlp_json(msg: Message) -> bytes:
    """OTLP/JSON as the Collector writes it: hex ids and integer enums."""
    doc = json_format.MessageToDict(msg, use_integers_for_enums=True)
    return orjson.dumps(_b64_to_hex(doc))


def _b64_to_hex(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") else
            _b64_to_hex(v)
            for k, v in node.items()
        }  # fmt: skip
    if isinstance(node, list):
        return [_b64_to_hex(x) for x in node]
    return node


def consume(bootstrap: str, topic: str, min_count: int, timeout_s: float = 20.0) -> list[bytes]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < min_count and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                out.extend(r.value for r in recs)
        return out
    finally:
        consumer.close()
