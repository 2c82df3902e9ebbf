"""The stream's msgspec records and the pydantic models are one schema: the same fields and
defaults, and on any input the records never accept what the models reject, nor read a value
differently (what they refuse, the models decode again, for their reasons)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ingest.decode import decode_records
from ingest.models import (
    EVENTS,
    DbQuery,
    DbRecord,
    MetricPoint,
    MetricRecord,
    QueueEvent,
    QueueRecord,
    Span,
    SpanRecord,
    records_json,
)

PAIRS = [(MetricPoint, MetricRecord), (Span, SpanRecord), (QueueEvent, QueueRecord),
         (DbQuery, DbRecord)]  # fmt: skip


@pytest.mark.parametrize(("model", "record"), PAIRS)
def test_records_have_the_models_fields_and_defaults(model: Any, record: Any) -> None:
    def record_default(f: Any) -> Any:
        if f.default is not msgspec.NODEFAULT:
            return f.default
        return "required" if f.default_factory is msgspec.NODEFAULT else f.default_factory()

    want = {n: "required" if f.is_required() else f.default
            for n, f in model.model_fields.items() if n != "kind"}  # fmt: skip
    assert {f.name: record_default(f) for f in msgspec.structs.fields(record)} == want
    assert record.kind == model.model_fields["kind"].default


def as_dict(e: Any) -> dict[str, Any]:
    if isinstance(e, msgspec.Struct):
        return {"kind": e.kind, **msgspec.structs.asdict(e)}
    return e.model_dump()


def short(min_size: int = 0) -> st.SearchStrategy[str]:
    return st.one_of(st.text(min_size=min_size, max_size=8), st.text(min_size=200, max_size=200))


too_long = st.text(min_size=201, max_size=201)
finite = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                   st.integers(min_value=-(2**70), max_value=2**70))  # fmt: skip
non_neg = st.one_of(st.floats(min_value=0, allow_infinity=False), st.integers(0, 2**70))
negative = st.one_of(st.floats(max_value=-1e-9, allow_infinity=False), st.integers(max_value=-1))
stamp = st.one_of(non_neg, st.sampled_from([1e11 + 1, 1.7e12, "2026-11-26T10:00:00Z",
                                            "2026-11-26 10:00:00+01:00"]))  # fmt: skip
bad_stamp = st.one_of(negative, st.sampled_from(["yesterday", "", True, None]))
wrong_type = st.sampled_from([True, None, [1], {"a": 1}, "1.5", "x"])
labels = st.one_of(
    st.dictionaries(short(), short(), max_size=3),
    st.dictionaries(st.text(min_size=2, max_size=3), st.just("v"), min_size=32, max_size=32),
)
bad_labels = st.one_of(
    st.dictionaries(st.text(min_size=2, max_size=3), st.just("v"), min_size=33, max_size=33),
    st.dictionaries(too_long, st.just("v"), min_size=1, max_size=1),
    st.dictionaries(st.just("k"), st.one_of(too_long, st.integers()), min_size=1, max_size=1),
)
NAME, SHORT = (short(1), st.one_of(st.just(""), too_long)), (short(), too_long)
# field → (well-formed values, values the models refuse)
FIELDS: dict[str, dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]]] = {
    "metric": {"name": NAME, "value": (finite, wrong_type), "ts": (stamp, bad_stamp),
               "service": SHORT, "labels": (labels, bad_labels)},
    "span": {"service": NAME, "operation": NAME, "ts": (stamp, bad_stamp),
             "duration_ms": (non_neg, negative),
             "status": (st.sampled_from(["ok", "error", "unset"]), st.just("bad")),
             "trace_id": SHORT, "span_id": SHORT, "labels": (labels, bad_labels)},
    "queue": {"queue": NAME, "group": SHORT, "ts": (stamp, bad_stamp),
              "lag": (non_neg, negative), "oldest_age_s": (st.none() | non_neg, negative),
              "service": SHORT},
    "db": {"service": NAME, "statement": NAME, "ts": (stamp, bad_stamp),
           "duration_ms": (non_neg, negative),
           "error": (st.booleans(), st.sampled_from([0, 1, "true", 2])), "system": SHORT,
           "database": SHORT},
}  # fmt: skip


@st.composite
def event(draw: st.DrawFn) -> dict[str, Any]:
    """An event of any kind: mostly well formed, now and then with a refused, wrongly typed,
    missing or unknown field or kind."""
    kind = draw(st.sampled_from(sorted(FIELDS)))
    out: dict[str, Any] = {"kind": kind}
    for name, (good, bad) in FIELDS[kind].items():
        roll = draw(st.integers(0, 39))
        if roll == 0:
            continue  # left out
        out[name] = draw(bad if roll == 1 else wrong_type if roll == 2 else good)
    mutate = draw(st.integers(0, 39))
    if mutate == 0:
        out["extra"] = 1
    elif mutate == 1:
        out["kind"] = draw(st.sampled_from(["teapot", "METRIC", 1]))
    elif mutate == 2:
        del out["kind"]
    return out


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event(), min_size=1, max_size=3))
def test_records_accept_nothing_the_models_reject_and_read_the_same_values(
    batch: list[dict[str, Any]],
) -> None:
    raw = json.dumps(batch).encode()
    recs = records_json(raw)
    if recs is None:
        return  # the models decide, as before
    try:
        models = EVENTS.validate_json(raw)
    except ValidationError as e:
        raise AssertionError(f"records accepted what the models reject: {e}") from None
    assert [as_dict(r) for r in recs] == [as_dict(m) for m in models]


good_event = st.one_of(
    st.fixed_dictionaries({"kind": st.just("metric"), "name": st.text(min_size=1, max_size=20),
                           "value": st.floats(allow_nan=False, allow_infinity=False),
                           "ts": st.floats(0, 2e12)},
                          optional={"service": st.text(max_size=20),
                                    "labels": st.dictionaries(st.text(max_size=9),
                                                              st.text(max_size=9), max_size=5)}),
    st.fixed_dictionaries({"kind": st.just("span"), "service": st.text(min_size=1, max_size=9),
                           "operation": st.text(min_size=1, max_size=9),
                           "ts": st.integers(0, 2**40), "duration_ms": st.floats(0, 1e9)},
                          optional={"status": st.sampled_from(["ok", "error", "unset"])}),
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(good_event, min_size=1, max_size=5))
def test_well_formed_batches_take_the_fast_path_with_the_models_values(
    batch: list[dict[str, Any]],
) -> None:
    raw = json.dumps(batch).encode()
    recs = records_json(raw)
    assert recs is not None, "a well-formed batch fell back to the models"
    assert [as_dict(r) for r in recs] == [as_dict(m) for m in EVENTS.validate_json(raw)]
    assert decode_records(raw) == (recs, [])


def test_a_bad_item_falls_back_to_the_models_and_keeps_the_good_ones() -> None:
    good = {"kind": "metric", "name": "cpu", "value": 0.5, "ts": 1_700_000_000_000}
    raw = json.dumps([good, {**good, "value": "high"}, good]).encode()
    events, bad = decode_records(raw)
    assert [type(e) for e in events] == [MetricPoint, MetricPoint]
    assert events[0].ts == 1_700_000_000.0  # milliseconds read as seconds on both paths
    assert [r.item for r in bad] == [1] and "value" in bad[0].reason


def test_a_number_too_large_for_a_float_is_refused_on_both_paths() -> None:
    raw = b'[{"kind": "metric", "name": "cpu", "value": 1e999, "ts": 1700000000}]'
    assert records_json(raw) is None
    events, bad = decode_records(raw)
    assert events == [] and len(bad) == 1  # orjson calls it invalid JSON: the whole message


def test_a_timestamp_past_the_year_9999_is_refused_with_a_reason_on_both_paths() -> None:
    # 1e25 ms would read as 1e22 s: past any calendar and past int64 milliseconds, where it
    # once failed the whole batch downstream instead of one event
    good = {"kind": "metric", "name": "cpu", "value": 0.5, "ts": 1_700_000_000}
    raw = json.dumps([good, {**good, "ts": 1e25}, good]).encode()
    assert records_json(raw) is None
    events, bad = decode_records(raw)
    assert [e.ts for e in events] == [1_700_000_000.0, 1_700_000_000.0]
    assert [r.item for r in bad] == [1] and "9999" in bad[0].reason
