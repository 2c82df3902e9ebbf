"""Decoding never raises on input: good records survive, bad ones come back with a reason."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ingest.decode import decode_json
from ingest.models import EVENT, MetricPoint, Span

GOOD = {"kind": "metric", "name": "cpu", "value": 0.5, "ts": 1_700_000_000}
GOOD_JSON = orjson.dumps(GOOD)


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
    want = _decode_like_before(raw)
    if want != "invalid":
        assert isinstance(want, list)
        assert [e.model_dump() for e in events] == [w for w in want if w is not None]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_decode_never_raises_on_any_bytes(raw: bytes) -> None:
    decode_json(raw)


def _decode_like_before(raw: bytes) -> object:
    """The pre-fast-path result: orjson, then the per-item path (what rejects are made of)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "invalid"
    docs = doc if isinstance(doc, list) else [doc]
    return [EVENT.validate_python(d).model_dump() if _valid(d) else None for d in docs]


def _valid(d: object) -> bool:
    try:
        EVENT.validate_python(d)
    except ValidationError:
        return False
    return True


EDGE = [b"[" + GOOD_JSON.replace(b'"value":0.5', v) + b"]" for v in (
    b'"value":NaN', b'"value":1e400', b'"value":100000000000000000000', b'"value":true',
    b'"value":"1.5"', b'"value":01', b'"value":1.', b'"value":-0',
)] + [b"\xef\xbb\xbf[]", b'[{"kind":"metric","name":"\\ud800","value":1,"ts":1}]',
      b'[{"kind":"metric","name":"\xff","value":1,"ts":1}]', b"[] x",
      b'[{"kind":"metric","name":"a","value":1,"value":2,"ts":1700000000000}]']  # fmt: skip


@pytest.mark.parametrize("raw", EDGE)
def test_decode_accepts_and_rejects_as_orjson_and_the_models_do(raw: bytes) -> None:
    events, rejects = decode_json(raw)
    want = _decode_like_before(raw)
    if want == "invalid":
        assert events == [] and [r.item for r in rejects] == [-1]
    else:
        assert isinstance(want, list)
        assert [e.model_dump() for e in events] == [w for w in want if w is not None]
        assert [r.item for r in rejects] == [i for i, w in enumerate(want) if w is None]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"kind": st.just("metric"), "name": st.text(min_size=1, max_size=5),
             "value": st.floats(allow_nan=False) | st.integers(-(2**63), 2**64 - 1),
             "ts": st.floats(min_value=0, max_value=1e13) | st.integers(0, 2**40)
                   | st.just("2023-11-14T22:13:20Z"),
             "labels": st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=3)}
        ),
        max_size=5,
    )
)  # fmt: skip
def test_decode_of_metric_batches_matches_the_models_value_for_value(docs: list[dict]) -> None:
    events, rejects = decode_json(orjson.dumps(docs))
    assert rejects == [] or not all(map(_valid, docs))
    assert [e.model_dump() for e in events] == [
        EVENT.validate_python(d).model_dump() for d in docs if _valid(d)
    ]
