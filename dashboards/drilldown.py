"""Series drill-down: one series against its expected band, with episodes and drift marked."""

from __future__ import annotations

from dashboards.model import Board, annotation, query_variable, table, timeseries
from dashboards.sql import DB, SERIES_LABEL, finite

UID = "stormwatch-series"
SERIES = "series_id = toUInt64OrZero(${series:singlequote})"


def board(ds: str) -> Board:
    band_sql = f"""
SELECT $__timeInterval(ts) AS time, avg(value) AS value, avg({finite("expected")}) AS expected,
       avg({finite("lower")}) AS lower, avg({finite("upper")}) AS upper
FROM {DB}.points
WHERE {SERIES} AND $__timeFilter(ts)
GROUP BY time ORDER BY time"""
    panels = [
        timeseries(
            "Value against the expected band",
            band_sql,
            width=24,
            height=10,
            needs=("value", "expected", "lower", "upper"),
            description="Observed value, the detector's expectation and its normal range "
            "(shaded). Red regions are anomaly episodes; purple marks are drift events.",
            overrides=_band_overrides(),
        ),  # fmt: skip
        timeseries(
            "Anomaly score",
            f"""
SELECT $__timeInterval(ts) AS time, max(score) AS score
FROM {DB}.points
WHERE {SERIES} AND $__timeFilter(ts)
GROUP BY time ORDER BY time""",
            width=16,
            height=7,
            needs=("score",),
            defaults={
                "min": 0,
                "max": 1,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 10,
                    "showPoints": "never",
                    "spanNulls": False,
                    "thresholdsStyle": {"mode": "line+area"},
                },
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": "green", "value": None}, {"color": "red", "value": 0.9}],
                },
            },
        ),  # fmt: skip
        table(
            "Detector",
            f"""
SELECT any({SERIES_LABEL}) AS signal, detector, detector_version AS version,
       count() AS points, countIf(is_anomaly = 1) AS anomalous, min(ts) AS first_seen,
       max(ts) AS last_seen
FROM {DB}.points
WHERE {SERIES} AND $__timeFilter(ts)
GROUP BY detector, detector_version ORDER BY last_seen DESC""",
            width=8,
            height=7,
            needs=("signal", "detector", "version", "points"),
        ),  # fmt: skip
        table(
            "Episodes of this series",
            f"""
SELECT start AS started, if(is_open = 1, NULL, end) AS ended, severity,
       round(peak_value, 4) AS peak, round(expected, 4) AS expected,
       round(lower, 4) AS lower, round(upper, 4) AS upper, round(peak_score, 3) AS score,
       points, explanation, concat(detector, ' v', detector_version) AS detector
FROM {DB}.anomalies FINAL
WHERE {SERIES} AND start <= $__toTime AND (is_open = 1 OR end >= $__fromTime)
ORDER BY start DESC LIMIT 200""",
            width=24,
            height=8,
            needs=("started", "severity", "explanation", "detector"),
        ),  # fmt: skip
    ]
    variables = [
        query_variable(
            "service",
            "Service",
            f"SELECT DISTINCT service FROM {DB}.points WHERE $__timeFilter(ts) ORDER BY service",
            ds,
        ),  # fmt: skip
        query_variable(
            "series",
            "Series",
            f"SELECT toString(series_id) AS value, any({SERIES_LABEL}) AS text "
            f"FROM {DB}.points WHERE $__timeFilter(ts) AND service = ${{service:singlequote}} "
            "GROUP BY series_id ORDER BY text",
            ds,
        ),  # fmt: skip
    ]
    annotations = [
        annotation(
            "Anomaly episodes",
            f"""
SELECT start AS time, if(is_open = 1, $__toTime, end) AS timeEnd,
       concat(severity, ': ', explanation) AS text, severity AS tags
FROM {DB}.anomalies FINAL
WHERE {SERIES} AND start <= $__toTime AND (is_open = 1 OR end >= $__fromTime)""",
            ds,
            "red",
        ),  # fmt: skip
        annotation(
            "Drift",
            f"""
SELECT ts AS time, explanation AS text, concat('drift ', detector) AS tags
FROM {DB}.drift
WHERE {SERIES} AND $__timeFilter(ts)""",
            ds,
            "purple",
        ),  # fmt: skip
    ]
    return Board(UID, "Stormwatch / Series drill-down",
                 "One series: value, expected band, score, episodes and drift.", panels,
                 variables=variables, annotations=annotations)  # fmt: skip


def _band_overrides() -> list[dict[str, object]]:
    def props(name: str, *items: tuple[str, object]) -> dict[str, object]:
        return {"matcher": {"id": "byName", "options": name},
                "properties": [{"id": k, "value": v} for k, v in items]}  # fmt: skip

    grey = {"mode": "fixed", "fixedColor": "#8e8e8e"}
    return [
        props("value", ("color", {"mode": "fixed", "fixedColor": "blue"}),
              ("custom.lineWidth", 2), ("custom.fillOpacity", 0)),
        props("expected", ("color", grey), ("custom.lineStyle", {"fill": "dash", "dash": [6, 4]}),
              ("custom.fillOpacity", 0)),
        props("upper", ("color", grey), ("custom.lineWidth", 0), ("custom.fillBelowTo", "lower"),
              ("custom.fillOpacity", 20)),
        props("lower", ("color", grey), ("custom.lineWidth", 0), ("custom.fillOpacity", 0)),
    ]  # fmt: skip
