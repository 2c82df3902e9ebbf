"""Pydantic models of what producers send (JSON; one object or an array per Kafka message).

Timestamps (`ts`) are epoch seconds, epoch milliseconds (any number above 1e11) or ISO 8601;
they are held as float epoch seconds. Values must be finite.
"""

from __future__ import annotations

import math
import sys
from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

MAX_EPOCH_S = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last instant ISO 8601 can name


def _to_epoch_s(v: object) -> float:
    if isinstance(v, bool):
        raise ValueError("timestamp must be a number or ISO 8601 string")
    if isinstance(v, int | float):
        x = float(v)
        if not math.isfinite(x) or x < 0:
            raise ValueError("timestamp must be a finite, non-negative number")
        x = x / 1000.0 if x > 1e11 else x
        if x > MAX_EPOCH_S:  # past any calendar, and past int64 milliseconds downstream
            raise ValueError("timestamp after the year 9999")
        return x
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise ValueError(f"not an ISO 8601 timestamp: {v[:40]!r}") from None
    raise ValueError("timestamp must be a number or ISO 8601 string")


Timestamp = Annotated[float, BeforeValidator(_to_epoch_s)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
ShortText = Annotated[str, Field(max_length=200)]
Labels = Annotated[dict[ShortText, ShortText], Field(max_length=32)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MetricPoint(_Event):
    """A sample of a named metric (a gauge, or a rate the producer already computed)."""

    kind: Literal["metric"] = "metric"
    name: Name
    value: Finite
    ts: Timestamp
    service: ShortText = ""
    labels: Labels = {}


class Span(_Event):
    """A finished span; becomes latency, error rate and throughput per service and operation."""

    kind: Literal["span"] = "span"
    service: Name
    operation: Name
    ts: Timestamp
    duration_ms: NonNeg
    status: Literal["ok", "error", "unset"] = "ok"
    trace_id: ShortText = ""
    span_id: ShortText = ""
    labels: Labels = {}


class QueueEvent(_Event):
    """A consumer group's position on a queue: lag in messages and the oldest message's age."""

    kind: Literal["queue"] = "queue"
    queue: Name
    group: ShortText = ""
    ts: Timestamp
    lag: NonNeg
    oldest_age_s: NonNeg | None = None
    service: ShortText = ""


class DbQuery(_Event):
    """One executed statement; becomes latency and error rate per statement fingerprint."""

    kind: Literal["db"] = "db"
    service: Name
    statement: Annotated[str, Field(min_length=1, max_length=100_000)]
    ts: Timestamp
    duration_ms: NonNeg
    error: bool = False
    system: ShortText = ""
    database: ShortText = ""


Event = Annotated[MetricPoint | Span | QueueEvent | DbQuery, Field(discriminator="kind")]
EVENT = TypeAdapter(Event)
EVENTS = TypeAdapter(list[Event])
KINDS = ("metric", "span", "queue", "db")


# -- the same schema for msgspec: the hot path's decoder ---------------------------------------
# Why: validating a batch into the models above costs ~3.7 µs an event, more than the rest of
# the normalize hop; msgspec checks the same constraints at ~0.6 µs. These records mirror the
# models field for field (tests/ingest/test_records.py holds the two in step: the same fields
# and defaults, and on generated input msgspec never accepts what pydantic rejects, nor reads
# a value differently). Anything they reject is decoded again by pydantic, for its reasons;
# the gateway and `ship` keep the models. `ts` is the raw number or text, converted after.

_MAX = sys.float_info.max
RName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
RShort = Annotated[str, msgspec.Meta(max_length=200)]
RLabels = Annotated[dict[RShort, RShort], msgspec.Meta(max_length=32)]
RFinite = Annotated[float, msgspec.Meta(ge=-_MAX, le=_MAX)]  # 1e999 reads as inf: refused
RNonNeg = Annotated[float, msgspec.Meta(ge=0, le=_MAX)]
RTimestamp = RNonNeg | str


class _Record(msgspec.Struct, tag_field="kind", kw_only=True, forbid_unknown_fields=True, gc=False):
    pass


class MetricRecord(_Record, tag="metric", kw_only=True):
    kind: ClassVar[str] = "metric"
    name: RName
    value: RFinite
    ts: RTimestamp
    service: RShort = ""
    labels: RLabels = {}


class SpanRecord(_Record, tag="span", kw_only=True):
    kind: ClassVar[str] = "span"
    service: RName
    operation: RName
    ts: RTimestamp
    duration_ms: RNonNeg
    status: Literal["ok", "error", "unset"] = "ok"
    trace_id: RShort = ""
    span_id: RShort = ""
    labels: RLabels = {}


class QueueRecord(_Record, tag="queue", kw_only=True):
    kind: ClassVar[str] = "queue"
    queue: RName
    group: RShort = ""
    ts: RTimestamp
    lag: RNonNeg
    oldest_age_s: RNonNeg | None = None
    service: RShort = ""


class DbRecord(_Record, tag="db", kw_only=True):
    kind: ClassVar[str] = "db"
    service: RName
    statement: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
    ts: RTimestamp
    duration_ms: RNonNeg
    error: bool = False
    system: RShort = ""
    database: RShort = ""


Record = MetricRecord | SpanRecord | QueueRecord | DbRecord
RECORDS = msgspec.json.Decoder(list[Record])
# what a stage may be handed: a model (gateway, OTLP, a rejected batch) or a record
METRIC = (MetricPoint, MetricRecord)
SPAN = (Span, SpanRecord)
QUEUE = (QueueEvent, QueueRecord)
DB = (DbQuery, DbRecord)
AnyEvent = Event | Record


def records_json(raw: bytes) -> list[Record] | None:
    """A valid JSON array of events as records, timestamps in epoch seconds; None if
    anything is off (the caller decodes with the models then, for the reasons)."""
    try:
        recs = RECORDS.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    for r in recs:
        ts = r.ts
        if type(ts) is not float or ts > 1e11:
            try:
                r.ts = _to_epoch_s(ts)
            except ValueError:
                return None
    return recs


def with_fields(e: AnyEvent, upd: dict[str, object]) -> AnyEvent:
    """`e` with some fields replaced, whichever form it has."""
    if isinstance(e, BaseModel):
        return e.model_copy(update=upd)
    return msgspec.structs.replace(e, **upd)  # type: ignore[arg-type]
