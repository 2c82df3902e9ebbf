"""Pydantic models of what producers send (JSON; one object or an array per Kafka message).

Timestamps (`ts`) are epoch seconds, epoch milliseconds (any number above 1e11) or ISO 8601;
they are held as float epoch seconds. Values must be finite.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter


def _to_epoch_s(v: object) -> float:
    if isinstance(v, bool):
        raise ValueError("timestamp must be a number or ISO 8601 string")
    if isinstance(v, int | float):
        x = float(v)
        if not math.isfinite(x) or x < 0:
            raise ValueError("timestamp must be a finite, non-negative number")
        return x / 1000.0 if x > 1e11 else x
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
