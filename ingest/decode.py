"""Bytes of one Kafka message → valid events + rejects with reasons. Never raises on input.

A batch with a bad record keeps its good records; each reject carries its item index so the
dead-letter log can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from ingest.models import EVENT, EVENTS, AnyEvent, Event, records_json

MAX_ITEMS = 100_000


@dataclass(frozen=True)
class Reject:
    item: int  # -1: the whole message
    reason: str
    payload: bytes


def _reason(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = e.error_count() - 3
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def decode_json(raw: bytes) -> tuple[list[Event], list[Reject]]:
    """Decode a JSON message holding one event or an array of events."""
    try:  # the common case, a valid array, parsed and validated in one pass (no dicts built)
        events = EVENTS.validate_json(raw)
    except ValidationError:
        pass  # not JSON, not an array, or a bad item: the path below says which, as before
    else:
        if len(events) <= MAX_ITEMS:
            return events, []
    try:
        doc: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return [], [Reject(-1, f"invalid JSON: {e}", raw)]
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list):
        return [], [Reject(-1, f"expected an object or an array, got {type(doc).__name__}", raw)]
    if len(doc) > MAX_ITEMS:
        return [], [Reject(-1, f"batch of {len(doc)} items exceeds {MAX_ITEMS}", raw)]
    try:
        return EVENTS.validate_python(doc), []
    except ValidationError:
        pass  # at least one bad item: validate one by one to keep the good ones
    good: list[Event] = []
    bad: list[Reject] = []
    for i, item in enumerate(doc):
        try:
            good.append(EVENT.validate_python(item))
        except ValidationError as e:
            bad.append(Reject(i, _reason(e), orjson.dumps(item)))
    return good, bad


def decode_records(raw: bytes) -> tuple[list[AnyEvent], list[Reject]]:
    """`decode_json` for the stream's hot path: a valid array decodes to msgspec records
    (~6x cheaper than the models); anything else takes `decode_json`, for its reasons."""
    recs = records_json(raw)
    if recs is not None and len(recs) <= MAX_ITEMS:
        return recs, []  # type: ignore[return-value]
    return decode_json(raw)  # type: ignore[return-value]
