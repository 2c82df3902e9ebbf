"""Macro and variable expansion matches what Grafana and the ClickHouse plugin send."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dashboards import DashboardsError
from dashboards.macros import ALL, TimeRange, expand, interpolate, interval_for

TR = TimeRange(datetime(2026, 11, 26, 7, 0, tzinfo=UTC), datetime(2026, 11, 26, 8, 0, tzinfo=UTC),
               interval_ms=5000)  # fmt: skip
F, T = 1795676400, 1795680000  # 2026-11-26 07:00 and 08:00 UTC


def test_time_macros_expand_as_the_plugin_backend_does() -> None:
    sql = ("SELECT $__timeInterval(ts) AS time, count() / $__interval_s FROM t "
           "WHERE $__timeFilter(ts) AND x > $__fromTime AND y < $__toTime "
           "AND $__timeFilter_ms(ts) AND $__timeInterval_ms(ts) > 0")  # fmt: skip
    assert expand(sql, TR, {}) == (
        "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 5 second) AS time, count() / 5 "
        f"FROM t WHERE ts >= toDateTime({F}) AND ts <= toDateTime({T}) "
        f"AND x > toDateTime({F}) AND y < toDateTime({T}) "
        f"AND ts >= fromUnixTimestamp64Milli({F}000) AND ts <= fromUnixTimestamp64Milli({T}000) "
        "AND toStartOfInterval(toDateTime64(ts, 3), INTERVAL 5000 millisecond) > 0"
    )


def test_interval_below_a_second_is_one_second_as_in_the_plugin() -> None:
    tr = TimeRange(TR.start, TR.end, interval_ms=200)
    assert expand("$__interval_s", tr, {}) == "1"
    assert interval_for(3_600_000, 1000) == 5000  # Grafana's nice step for 1h over 1000 px


def test_conditional_all_drops_the_condition_for_all() -> None:
    sql = "WHERE $__conditionalAll(service IN (${service:singlequote}), $service) AND 1"
    assert interpolate(sql, {"service": ALL}) == "WHERE 1=1 AND 1"
    assert interpolate(sql, {"service": ["a", "b"]}) == "WHERE service IN ('a','b') AND 1"


def test_singlequote_escapes_values_and_all_expands_to_every_value() -> None:
    assert interpolate("x = ${v:singlequote}", {"v": "it's"}) == "x = 'it''s'"
    assert interpolate("x IN (${v:singlequote})", {"v": ALL}, {"v": ["a", "b"]}) == (
        "x IN ('a','b')"
    )
    assert interpolate("FROM ${database}.t, $database.u", {"database": "db"}) == ("FROM db.t, db.u")


def test_unknown_variable_or_macro_is_an_error() -> None:
    with pytest.raises(DashboardsError, match="not defined"):
        interpolate("SELECT $nope", {})
    with pytest.raises(DashboardsError, match="not one the ClickHouse plugin expands"):
        expand("SELECT $__unixEpochFilter(ts)", TR, {})
