"""Decoding never raises on input: good records survive, bad ones come back with a reason."""

from __future__ import annotations

import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.decode import decode_json
from ingest.models import MetricPoint, Span

GOOD = {"kind": "metric", "name": "cpu", "value": 0.5, "ts": 1_700_000_000}


def test_decode_single_object_and_array() -> None:
    assert decode_json(orjson.dumps(GOOD)) == ([MetricPoint(**GOOD)], [])
    events, rejects = decode_json(orjson.dumps([GOOD, GOOD]))
    assert len(events) == 2 and rejects == []


def test_decode_keeps_good_records_of_a_batch_with_bad_ones() -> None:
    batch = [GOOD, {**GOOD, "value": "NaN"}, {**GOOD, "value": float("inf")}, {"kind": "x"}, GOOD]
    events, rejects = decode_json(orjson.dumps(batch, option=orjson.OPT_SERIALIZE_NUMPY))
    assert len(events) == 2
    assert [r.item for r in rejects] == [1, 2, 3]
    assert all(r.reason for r in rejects)


def test_decode_rejects_non_json_deep_nesting_and_scalars() -> None:
    for raw in (b"{oops", b"[" * 5000 + b"]" * 5000, b"42", b'"text"'):
        events, rejects = decode_json(raw)
        assert events == [] and len(rejects) == 1 and rejects[0].item == -1


def test_timestamps_accept_seconds_millis_and_iso() -> None:
    for ts in (1_700_000_000, 1_700_000_000_000, "2023-11-14T22:13:20Z"):
        (e,), _ = decode_json(orjson.dumps({**GOOD, "ts": ts}))
        assert e.ts == 1_700_000_000


def test_span_model_fields() -> None:
    (s,), _ = decode_json(
        orjson.dumps(
            {
                "kind": "span",
                "service": "api",
                "operation": "GET /",
                "ts": 1,
                "duration_ms": 3,
                "status": "error",
            }
        )
    )
    assert isinstance(s, Span) and s.status == "error"


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=20,
    )
)
def test_decode_never_raises_on_any_json(doc: object) -> None:
    raw = json.dumps(doc).encode()  # stdlib: big ints and NaN literals too
    events, rejects = decode_json(raw)
    assert len(events) + len(rejects) >= 1 or doc == []


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_decode_never_raises_on_any_bytes(raw: bytes) -> None:
    decode_json(raw)
