"""OTLP as the OpenTelemetry Collector's Kafka exporter writes it → the events of `models.py`.

One Kafka message is one serialized `ExportMetricsServiceRequest` / `ExportTraceServiceRequest`,
`otlp_proto` (default) or `otlp_json` (lowerCamelCase, hex trace/span ids, 64-bit integers as
strings or numbers, enums as integers or names). `auto` tells them apart by their first bytes.
Decoders never raise on input: a bad record becomes a `Reject` (item = the record's ordinal, a
metric or a span, in the message; -1 = the whole message) and the good records are kept.
"""

from __future__ import annotations

import base64
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pbm
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus
from pydantic import BaseModel, ConfigDict, ValidationError

from ingest.decode import MAX_ITEMS, Reject
from ingest.models import DbQuery, Event, MetricPoint, Span

ENCODINGS = ("otlp_proto", "otlp_json", "auto")
UNKNOWN_SERVICE = "unknown_service"
QUANTILES = ((0.5, "p50"), (0.9, "p90"), (0.99, "p99"))
_MAX_LABELS = 32
_MAX_TEXT = 200
_MAX_PAYLOAD = 64 * 1024
_NO_RECORDED_VALUE = 1  # DataPointFlags.FLAG_NO_RECORDED_VALUE: a staleness marker, not a value
_CUMULATIVE = pbm.AGGREGATION_TEMPORALITY_CUMULATIVE
_DELTA = pbm.AGGREGATION_TEMPORALITY_DELTA
_CONSUMER_OPS = {"receive", "process", "deliver", "settle"}


class OtlpOptions(BaseModel):
    """Which OTLP attributes become labels: everything else is dropped to bound cardinality."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resource_labels: tuple[str, ...] = (
        "service.namespace",
        "deployment.environment",
        "deployment.environment.name",
    )
    span_labels: tuple[str, ...] = ()  # span attributes kept as labels (span.kind always is)
    # A first cumulative point counts from its start time if that lies within these bounds
    # (SDKs start a stream at its first measurement: a tiny interval would be a wild rate).
    first_interval_min_s: float = 1.0
    first_interval_max_s: float = 300.0
    max_streams: int = 200_000  # previous points kept for cumulative streams (LRU)
    max_producer_spans: int = 100_000  # publish spans kept to compute queue time (LRU)


@dataclass
class OtlpState:
    """What cumulative metrics and queue time need across messages; bounded LRU maps.

    One per consumer (per worker): a stream's previous point must be seen by the same state,
    which holds when the Collector partitions metrics by resource (or one partition is used).
    """

    options: OtlpOptions = field(default_factory=OtlpOptions)
    prev: OrderedDict[tuple[Any, ...], tuple[int, int, Any]] = field(default_factory=OrderedDict)
    producers: OrderedDict[tuple[bytes, bytes], tuple[int, str]] = field(
        default_factory=OrderedDict
    )

    def swap(
        self, key: tuple[Any, ...], value: tuple[int, int, Any]
    ) -> tuple[int, int, Any] | None:
        old = self.prev.pop(key, None)
        self.prev[key] = value
        if len(self.prev) > self.options.max_streams:
            self.prev.popitem(last=False)
        return old

    def remember_producer(self, trace_id: bytes, span_id: bytes, end_ns: int, dest: str) -> None:
        self.producers[(trace_id, span_id)] = (end_ns, dest)
        if len(self.producers) > self.options.max_producer_spans:
            self.producers.popitem(last=False)


# --- attributes ---------------------------------------------------------------------------


def any_value_text(v: AnyValue) -> str:
    """An attribute value as label text (arrays and maps as compact JSON)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "int_value":
        return str(v.int_value)
    if kind == "double_value":
        return format(v.double_value, "g")
    if kind == "bytes_value":
        return v.bytes_value.hex()
    if kind is None:
        return ""
    return orjson.dumps(json_format.MessageToDict(v)).decode()


def attr_map(kvs: Iterable[KeyValue]) -> dict[str, str]:
    return {kv.key: any_value_text(kv.value)[:_MAX_TEXT] for kv in kvs}


def _labels(*parts: dict[str, str]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for p in parts:
        merged.update(p)
    items = sorted((k[:_MAX_TEXT], v) for k, v in merged.items() if k)
    return dict(items[:_MAX_LABELS])  # the model holds 32 labels; the rest are dropped


def _resource(attrs: dict[str, str], options: OtlpOptions) -> tuple[str, dict[str, str]]:
    service = attrs.get("service.name") or UNKNOWN_SERVICE
    return service[:_MAX_TEXT], {k: attrs[k] for k in options.resource_labels if attrs.get(k)}


# --- parsing ------------------------------------------------------------------------------

_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _hex_ids_to_b64(node: Any) -> Any:
    """OTLP/JSON writes ids as hex; protobuf's JSON mapping wants base64 for bytes."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in _ID_KEYS and isinstance(v, str):
                try:
                    v = base64.b64encode(bytes.fromhex(v)).decode()
                except ValueError:
                    raise ValueError(f"{k} is not hex: {v[:40]!r}") from None
            else:
                v = _hex_ids_to_b64(v)
            out[k] = v
        return out
    if isinstance(node, list):
        return [_hex_ids_to_b64(x) for x in node]
    return node


def parse_json_message(doc: Any, msg: Message) -> Message:
    """Fill `msg` from an OTLP/JSON object; raises ValueError with a precise reason."""
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
    try:
        return json_format.ParseDict(_hex_ids_to_b64(doc), msg, ignore_unknown_fields=True)
    except json_format.ParseError as e:
        raise ValueError(str(e)[:300]) from None


def parse_request(raw: bytes, kind: str, encoding: str) -> Message:
    """A whole Export{Metrics,Trace}ServiceRequest, as the gateway validates it; ValueError."""
    cls = ExportMetricsServiceRequest if kind == "metrics" else ExportTraceServiceRequest
    if _is_json(raw, encoding, kind):
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise ValueError(f"invalid JSON: {e}") from None
        return parse_json_message(doc, cls())
    msg = cls()
    try:
        msg.ParseFromString(raw)
    except (DecodeError, RuntimeError) as e:
        raise ValueError(f"invalid OTLP protobuf: {e}") from None
    return msg


def _is_json(raw: bytes, encoding: str, kind: str) -> bool:
    if encoding == "otlp_json":
        return True
    if encoding == "otlp_proto":
        return False
    if raw[:1] == b"{":
        return True
    if raw.lstrip()[:1] != b"{":
        return False
    # Whitespace, then "{": JSON, unless it is protobuf (0x0A is both "\n" and field 1's tag
    # and 0x7B a length of 123).
    cls = ExportMetricsServiceRequest if kind == "metrics" else ExportTraceServiceRequest
    try:
        cls().ParseFromString(raw)
    except (DecodeError, RuntimeError):
        return True
    return False


@dataclass
class _Blocks:
    """Resource blocks of one message; JSON blocks are parsed record by record."""

    blocks: list[Any]
    rejects: list[Reject]


def _split(raw: bytes, encoding: str, kind: str) -> _Blocks:
    """(resource attrs, [(record ordinal, record | Reject)]) per resource, from either encoding."""
    if encoding not in ENCODINGS:
        return _Blocks([], [Reject(-1, f"unknown encoding {encoding!r}", raw[:_MAX_PAYLOAD])])
    res_key, scope_key, rec_key = (
        ("resourceMetrics", "scopeMetrics", "metrics")
        if kind == "metrics"
        else ("resourceSpans", "scopeSpans", "spans")
    )
    rec_cls: Callable[[], Message] = Metric if kind == "metrics" else PbSpan
    if not _is_json(raw, encoding, kind):
        try:
            return _proto_blocks(parse_request(raw, kind, "otlp_proto"), kind)
        except ValueError as e:
            return _Blocks([], [Reject(-1, str(e), raw[:_MAX_PAYLOAD])])
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return _Blocks([], [Reject(-1, f"invalid JSON: {e}", raw[:_MAX_PAYLOAD])])
    if not isinstance(doc, dict) or not isinstance(doc.get(res_key, []), list):
        return _Blocks([], [Reject(-1, f"expected an object with a {res_key} array", raw[:300])])
    req_cls = ExportMetricsServiceRequest if kind == "metrics" else ExportTraceServiceRequest
    try:  # the common case, whole (protobuf's parser is much faster on one large dict)
        return _proto_blocks(parse_json_message(doc, req_cls()), kind)
    except ValueError:
        pass  # at least one bad record: parse record by record to keep the good ones
    blocks, rejects, n = [], [], 0
    for ri, rb in enumerate(doc.get(res_key, [])):
        if not isinstance(rb, dict):
            rejects.append(Reject(-1, f"{res_key}[{ri}] is not an object", orjson.dumps(rb)))
            continue
        scopes = rb.get(scope_key, [])
        items: list[Any] = []
        for sb in scopes if isinstance(scopes, list) else []:
            listed = sb.get(rec_key) if isinstance(sb, dict) else None
            if isinstance(listed, list):
                items.extend(listed)
        try:
            res = parse_json_message(rb.get("resource", {}), Resource())
        except ValueError as e:  # its records cannot be attributed to a service
            reason = f"{res_key}[{ri}].resource: {e}; its {len(items)} records are dropped"
            rejects.append(Reject(-1, reason, orjson.dumps(rb)[:_MAX_PAYLOAD]))
            n += len(items)
            continue
        recs: list[tuple[int, Any]] = []
        for item in items:
            try:
                recs.append((n, parse_json_message(item, rec_cls())))
            except ValueError as e:
                recs.append((n, Reject(n, str(e), orjson.dumps(item)[:_MAX_PAYLOAD])))
            n += 1
        blocks.append((attr_map(res.attributes), recs))  # type: ignore[attr-defined]
    return _Blocks(blocks, rejects)


def _proto_blocks(req: Message, kind: str) -> _Blocks:
    res_f, scope_f, rec_f = (
        ("resource_metrics", "scope_metrics", "metrics")
        if kind == "metrics"
        else ("resource_spans", "scope_spans", "spans")
    )
    blocks, n = [], 0
    for rb in getattr(req, res_f):
        recs = []
        for sb in getattr(rb, scope_f):
            for rec in getattr(sb, rec_f):
                recs.append((n, rec))
                n += 1
        blocks.append((attr_map(rb.resource.attributes), recs))
    return _Blocks(blocks, [])


def _payload(rec: Message) -> bytes:
    return json_format.MessageToJson(rec, indent=None).encode()[:_MAX_PAYLOAD]


# --- metrics ------------------------------------------------------------------------------


def decode_otlp_metrics(
    raw: bytes, encoding: str, state: OtlpState
) -> tuple[list[Event], list[Reject]]:
    """An ExportMetricsServiceRequest → MetricPoints (gauges, rates, histogram mean/quantiles)."""

    def one(rec: Any, service: str, res_labels: dict[str, str]) -> tuple[list[Event], list[str]]:
        try:
            return _metric_events(rec, service, res_labels, state)
        except (ValidationError, ValueError, OverflowError) as e:
            return [], [_short(e)]

    return _decode(raw, encoding, "metrics", state, one)


def _decode(
    raw: bytes,
    encoding: str,
    kind: str,
    state: OtlpState,
    one: Callable[[Any, str, dict[str, str]], tuple[list[Event], list[str]]],
) -> tuple[list[Event], list[Reject]]:
    """The loop both signals share: resources → records, a reject per bad record (the good
    ones kept), a cap on records per message, and never an exception out."""
    try:
        parts = _split(raw, encoding, kind)
        events: list[Event] = []
        rejects = list(parts.rejects)
        count = 0
        what = "metric" if kind == "metrics" else "span"
        for attrs, recs in parts.blocks:
            service, res_labels = _resource(attrs, state.options)
            for n, rec in recs:
                count += 1
                if count > MAX_ITEMS:
                    rejects.append(Reject(-1, f"more than {MAX_ITEMS} {what}s in one message", b""))
                    return events, rejects
                if isinstance(rec, Reject):
                    rejects.append(rec)
                    continue
                got, problems = one(rec, service, res_labels)
                events.extend(got)
                for p in problems:
                    rejects.append(Reject(n, f"{what} {rec.name[:80]!r}: {p}", _payload(rec)))
        return events, rejects
    except Exception as e:  # noqa: BLE001 - the contract: never raise on input
        return [], [Reject(-1, f"internal error: {type(e).__name__}: {e}", raw[:_MAX_PAYLOAD])]


def _short(e: Exception) -> str:
    if isinstance(e, ValidationError):
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        return f"{loc}: {err['msg']}"
    return str(e)[:300]


def _metric_events(
    m: Metric, service: str, res_labels: dict[str, str], state: OtlpState
) -> tuple[list[Event], list[str]]:
    if not m.name:
        return [], ["metric without a name"]
    out: list[Event] = []
    problems: list[str] = []
    data = m.WhichOneof("data")

    def emit(name: str, value: float, t_ns: int, labels: dict[str, str]) -> None:
        if not math.isfinite(value):
            raise ValueError(f"non-finite value {value}")
        out.append(
            MetricPoint(
                name=name[:_MAX_TEXT], value=value, ts=t_ns / 1e9, service=service, labels=labels
            )  # fmt: skip
        )

    points: Sequence[Any] = getattr(m, data).data_points if data else ()
    for i, dp in enumerate(points):
        if dp.flags & _NO_RECORDED_VALUE:
            continue
        labels = _labels(res_labels, attr_map(dp.attributes))
        try:
            if dp.time_unix_nano <= 0:
                raise ValueError("time_unix_nano is missing")
            if data == "gauge":
                emit(m.name, _number(dp), dp.time_unix_nano, labels)
            elif data == "sum":
                _sum_point(m, dp, service, labels, state, emit)
            elif data in ("histogram", "exponential_histogram"):
                _histogram_point(m, dp, data, service, labels, state, emit)
            elif data == "summary":
                for q in dp.quantile_values:
                    for want, suffix in QUANTILES:
                        if abs(q.quantile - want) < 1e-9:
                            emit(f"{m.name}.{suffix}", q.value, dp.time_unix_nano, labels)
        except (ValidationError, ValueError) as e:
            problems.append(f"point {i}: {_short(e)}")
    if data is None:
        problems.append("metric has no data (gauge, sum, histogram, ...)")
    return out, problems


def _number(dp: pbm.NumberDataPoint) -> float:
    kind = dp.WhichOneof("value")
    if kind == "as_double":
        return dp.as_double
    if kind == "as_int":
        return float(dp.as_int)
    raise ValueError("data point has no value")


def _interval(
    key: tuple[Any, ...], dp: Any, cur: Any, state: OtlpState, temporality: int
) -> tuple[float, Any, Any] | None:
    """(seconds, previous snapshot or None, current) for the interval this point closes.

    Delta points cover start..time. Cumulative points are differenced against the previous point
    of the same stream; a first point (or one after a reset: a new start time or a value that
    went down) counts from its start time only if that start is recent (a worker restart must
    not turn a lifetime total into a spike) but not too recent.
    """
    t, start = dp.time_unix_nano, dp.start_time_unix_nano
    if temporality == _DELTA:
        return ((t - start) / 1e9, None, cur) if start and t > start else None
    if temporality != _CUMULATIVE:
        raise ValueError("aggregation temporality is unspecified")
    prev = state.swap(key, (start, t, cur))
    if prev is not None:
        p_start, p_t, p_cur = prev
        if t <= p_t:
            return None  # a duplicate or out-of-order point: nothing new
        if p_start == start and _not_reset(p_cur, cur):
            return (t - p_t) / 1e9, p_cur, cur
    since = (t - start) / 1e9 if start else 0.0
    lo, hi = state.options.first_interval_min_s, state.options.first_interval_max_s
    return (since, None, cur) if lo <= since <= hi else None


def _not_reset(prev: Any, cur: Any) -> bool:
    if isinstance(cur, float):
        return bool(cur >= prev)
    return bool(cur[0] >= prev[0])  # histograms: the count


def _sum_point(
    m: Metric, dp: pbm.NumberDataPoint, service: str, labels: dict[str, str], state: OtlpState,
    emit: Callable[[str, float, int, dict[str, str]], None],
) -> None:  # fmt: skip
    value = _number(dp)
    s = m.sum
    if s.aggregation_temporality == _CUMULATIVE and not s.is_monotonic:
        emit(m.name, value, dp.time_unix_nano, labels)  # an up-down counter is a level
        return
    key = ("sum", service, m.name, tuple(labels.items()))
    iv = _interval(key, dp, value, state, s.aggregation_temporality)
    if iv is None:
        return
    seconds, prev, cur = iv
    if seconds > 0:
        emit(f"{m.name}.rate", (cur - (prev or 0.0)) / seconds, dp.time_unix_nano, labels)


def _histogram_point(
    m: Metric, dp: Any, data: str, service: str, labels: dict[str, str], state: OtlpState,
    emit: Callable[[str, float, int, dict[str, str]], None],
) -> None:  # fmt: skip
    buckets = _buckets(dp, data)
    cur = (float(dp.count), dp.sum if dp.HasField("sum") else math.nan, [c for _, _, c in buckets])
    temporality = getattr(m, data).aggregation_temporality
    key = ("hist", service, m.name, tuple(labels.items()), tuple((lo, hi) for lo, hi, _ in buckets))
    iv = _interval(key, dp, cur, state, temporality)
    if iv is None:
        return
    seconds, prev, cur = iv
    count, total, counts = cur
    if prev is not None:
        count, total = count - prev[0], total - prev[1]
        counts = [c - p for c, p in zip(counts, prev[2], strict=True)]
    t = dp.time_unix_nano
    if seconds > 0:
        emit(f"{m.name}.rate", count / seconds, t, labels)
    if count <= 0:
        return
    if math.isfinite(total):
        emit(f"{m.name}.mean", total / count, t, labels)
    bounds = [(lo, hi, c) for (lo, hi, _), c in zip(buckets, counts, strict=True)]
    lo_clamp = dp.min if prev is None and dp.HasField("min") else -math.inf
    hi_clamp = dp.max if prev is None and dp.HasField("max") else math.inf
    for q, suffix in QUANTILES:
        est = quantile(bounds, q)
        if est is not None:
            emit(f"{m.name}.{suffix}", min(max(est, lo_clamp), hi_clamp), t, labels)


def _buckets(dp: Any, data: str) -> list[tuple[float, float, float]]:
    """(lower, upper, count) per bucket, in value order; open ends are infinite."""
    if data == "histogram":
        edges = [-math.inf, *dp.explicit_bounds, math.inf]
        counts = list(dp.bucket_counts)
        if counts and len(counts) != len(edges) - 1:
            raise ValueError("bucket_counts must have one more entry than explicit_bounds")
        return [(edges[i], edges[i + 1], float(c)) for i, c in enumerate(counts)]
    base = 2.0 ** (2.0**-dp.scale)
    out: list[tuple[float, float, float]] = []
    neg = dp.negative
    for i in reversed(range(len(neg.bucket_counts))):
        k = neg.offset + i
        out.append((-(base ** (k + 1)), -(base**k), float(neg.bucket_counts[i])))
    if dp.zero_count:
        out.append((-dp.zero_threshold, dp.zero_threshold, float(dp.zero_count)))
    pos = dp.positive
    for i, c in enumerate(pos.bucket_counts):
        k = pos.offset + i
        out.append((base**k, base ** (k + 1), float(c)))
    return out


def quantile(buckets: Sequence[tuple[float, float, float]], q: float) -> float | None:
    """Estimate the q-quantile from bucket counts, linear within the bucket it falls in.

    An open-ended bucket answers with its finite edge (the best the buckets know)."""
    total = sum(c for _, _, c in buckets)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for lo, hi, c in buckets:
        if c <= 0:
            continue
        if seen + c >= rank:
            if math.isinf(lo) and math.isinf(hi):
                return None
            if math.isinf(lo):
                return hi
            if math.isinf(hi):
                return lo
            return lo + (hi - lo) * (rank - seen) / c
        seen += c
    return None


# --- traces -------------------------------------------------------------------------------


def decode_otlp_traces(
    raw: bytes, encoding: str, state: OtlpState | None = None
) -> tuple[list[Event], list[Reject]]:
    """An ExportTraceServiceRequest → Spans, plus DbQuery events for database spans and
    `messaging.queue_time_ms` metric points for consumer spans whose publish span was seen."""
    state = state or OtlpState()

    def one(rec: Any, service: str, res_labels: dict[str, str]) -> tuple[list[Event], list[str]]:
        try:
            return list(_span_events(rec, service, res_labels, state)), []
        except (ValidationError, ValueError) as e:
            return [], [_short(e)]

    return _decode(raw, encoding, "traces", state, one)


_KIND = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS = {PbStatus.STATUS_CODE_ERROR: "error", PbStatus.STATUS_CODE_OK: "ok"}


def _first(attrs: dict[str, str], *keys: str) -> str:
    for k in keys:
        if attrs.get(k):
            return attrs[k]
    return ""


def _span_events(
    s: PbSpan, service: str, res_labels: dict[str, str], state: OtlpState
) -> Iterator[Event]:
    if not s.name:
        raise ValueError("span without a name")
    start, end = s.start_time_unix_nano, s.end_time_unix_nano
    if start <= 0 or end <= 0:
        raise ValueError("start or end time is missing")
    if end < start:
        raise ValueError("span ends before it starts")
    attrs = attr_map(s.attributes)
    kind = _KIND.get(s.kind, "unspecified")
    picked = {k: attrs[k] for k in state.options.span_labels if k in attrs}
    status = _STATUS.get(s.status.code, "unset")
    duration_ms = (end - start) / 1e6
    yield Span(
        service=service, operation=s.name[:_MAX_TEXT], ts=end / 1e9, duration_ms=duration_ms,
        status=status, trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
        labels=_labels(res_labels, picked, {"span.kind": kind}),
    )  # fmt: skip
    db_system = _first(attrs, "db.system.name", "db.system")
    if db_system:
        statement = _first(attrs, "db.query.text", "db.statement", "db.query.summary") or s.name
        yield DbQuery(
            service=service, statement=statement, ts=end / 1e9, duration_ms=duration_ms,
            error=status == "error", system=db_system[:_MAX_TEXT],
            database=_first(attrs, "db.namespace", "db.name")[:_MAX_TEXT],
        )  # fmt: skip
    msg_system = attrs.get("messaging.system", "")
    if msg_system:
        yield from _messaging(s, attrs, kind, msg_system, service, res_labels, state)


def _messaging(
    s: PbSpan, attrs: dict[str, str], kind: str, system: str, service: str,
    res_labels: dict[str, str], state: OtlpState,
) -> Iterator[Event]:  # fmt: skip
    """Queue time = a consumer span's start minus the end of the publish span it continues
    (its parent or a link). Only possible when both spans reach the same decoder state."""
    dest = _first(attrs, "messaging.destination.name", "messaging.destination")
    op = _first(attrs, "messaging.operation.type", "messaging.operation")
    if kind == "producer" or op in ("publish", "send", "create"):
        state.remember_producer(s.trace_id, s.span_id, s.end_time_unix_nano, dest)
        return
    if kind != "consumer" and op not in _CONSUMER_OPS:
        return
    refs = [(s.trace_id, s.parent_span_id)] + [(ln.trace_id, ln.span_id) for ln in s.links]
    for ref in refs:
        hit = state.producers.get(ref)
        if hit is None:
            continue
        published_ns, p_dest = hit
        group = _first(attrs, "messaging.consumer.group.name", "messaging.kafka.consumer.group")
        labels = {"queue": (dest or p_dest)[:_MAX_TEXT], "messaging.system": system}
        if group:
            labels["group"] = group
        wait_ms = max(0.0, (s.start_time_unix_nano - published_ns) / 1e6)
        yield MetricPoint(
            name="messaging.queue_time_ms", value=wait_ms, ts=s.start_time_unix_nano / 1e9,
            service=service, labels=_labels(res_labels, labels),
        )  # fmt: skip
        return
