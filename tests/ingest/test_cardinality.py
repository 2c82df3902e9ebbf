"""Cardinality cap: a flood of new label values stays under the cap, the overflow is counted."""

from __future__ import annotations

from ingest.cardinality import OTHER, CardinalityGuard, CardinalityLimits
from ingest.models import MetricPoint, Span
from streams.normalize import Normalizer
from streams.series import make_series


def test_guard_flood_of_label_values_stays_under_the_cap_and_counts_overflow() -> None:
    guard = CardinalityGuard(CardinalityLimits(per_name=100))
    norm = Normalizer()
    events = [
        MetricPoint(name="http.requests", value=1, ts=1_790_000_000 + i, service="api",
                    labels={"request_id": f"r{i}"})
        for i in range(5_000)
    ]  # fmt: skip
    events += [MetricPoint(name="cpu", value=0.5, ts=1_790_000_000, service="api")] * 10
    kept = guard.filter(norm.observations(events), norm.meta)
    assert guard.series == 101  # 100 request ids + cpu: the cap held
    assert len(kept) == 100 + 10
    assert guard.unmodeled == 4_900
    assert guard.unmodeled_by == {"metric:http.requests": 4_900}


def test_guard_admitted_series_stay_admitted() -> None:
    guard = CardinalityGuard(CardinalityLimits(per_name=1))
    a = make_series("metric", "m", "svc", k="a")
    b = make_series("metric", "m", "svc", k="b")
    assert guard.admit(a) and not guard.admit(b) and guard.admit(a)
    assert guard.unmodeled == 1


def test_guard_caps_series_per_service_across_names() -> None:
    guard = CardinalityGuard(CardinalityLimits(per_service=3))
    admitted = [guard.admit(make_series("metric", f"m{i}", "svc")) for i in range(5)]
    assert admitted == [True, True, True, False, False]
    assert guard.admit(make_series("metric", "m9", "other"))  # another service has room


def test_guard_caps_span_operations_per_service_not_across_services() -> None:
    guard = CardinalityGuard(CardinalityLimits(per_name=2))
    norm = Normalizer()
    spans = [Span(service=svc, operation=f"GET /item/{i}", ts=1, duration_ms=1)
             for svc in ("a", "b") for i in range(10)]  # fmt: skip
    kept = guard.filter(norm.observations(spans), norm.meta)
    # per service: 2 operations x 3 signals (latency, error rate, throughput)
    assert len(kept) == 2 * 2 * 3
    assert guard.unmodeled_by["span:a:latency_ms"] == 8


def test_guard_total_cap_and_bounded_overflow_counters() -> None:
    guard = CardinalityGuard(CardinalityLimits(total=5, tracked_keys=2))
    for i in range(50):
        guard.admit(make_series("metric", f"m{i}", f"s{i}"))
    assert guard.series == 5 and guard.unmodeled == 45
    assert len(guard.unmodeled_by) == 3 and guard.unmodeled_by[OTHER] == 43
