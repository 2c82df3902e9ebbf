"""Anomaly overview: what is anomalous now, where, since when, and why."""

from __future__ import annotations

from dashboards.model import Board, heatmap, query_variable, stat, table, timeseries
from dashboards.sql import DB, SERIES_LABEL, SERVICE_FILTER

UID = "stormwatch-overview"
DRILLDOWN_UID = "stormwatch-series"
DRILL_LINK = (
    f"/d/{DRILLDOWN_UID}?var-service=${{__data.fields.service}}"
    "&var-series=${__data.fields.series_id}&${__url_time_range}"
)

# Episodes overlapping the time range (an open one started before it still counts).
EPISODES_IN_RANGE = f"""
FROM {DB}.anomalies FINAL
WHERE start <= $__toTime AND (is_open = 1 OR end >= $__fromTime) AND {SERVICE_FILTER}"""


def board(ds: str) -> Board:
    panels = [
        stat(
            "Open episodes",
            f"SELECT countIf(is_open = 1) AS open {EPISODES_IN_RANGE}",
            thresholds=[(None, "green"), (1, "orange"), (5, "red")],
            needs=("open",),
        ),
        stat(
            "Episodes in range",
            f"SELECT count() AS episodes {EPISODES_IN_RANGE}",
            needs=("episodes",),
        ),
        stat(
            "Critical episodes",
            f"SELECT countIf(severity = 'critical') AS critical {EPISODES_IN_RANGE}",
            thresholds=[(None, "green"), (1, "red")],
            needs=("critical",),
        ),  # fmt: skip
        stat(
            "Anomalous series",
            f"SELECT uniqExact(series_id) AS series {EPISODES_IN_RANGE}",
            needs=("series",),
        ),
        timeseries(
            "Anomalies over time by service",
            f"""
SELECT $__timeInterval(start) AS time, if(service = '', '(host)', service) AS service,
       count() AS episodes
FROM {DB}.anomalies FINAL
WHERE $__timeFilter(start) AND {SERVICE_FILTER}
GROUP BY time, service ORDER BY time""",
            stack=True,
            width=12,
            needs=("service", "episodes"),
            description="Episodes started per interval, stacked by service.",
        ),  # fmt: skip
        heatmap(
            "Anomaly score by service",
            f"""
SELECT $__timeInterval(ts) AS time, if(service = '', '(host)', service) AS service,
       max(score) AS score
FROM {DB}.points
WHERE $__timeFilter(ts) AND {SERVICE_FILTER}
GROUP BY time, service ORDER BY time""",
            width=12,
            needs=("service", "score"),
            description="Highest point score per service and interval (0 normal, 1 anomalous).",
        ),  # fmt: skip
        table(
            "Open episodes",
            f"""
SELECT start AS started, severity, service, {SERIES_LABEL} AS signal,
       round(peak_value, 4) AS peak, round(expected, 4) AS expected,
       round(peak_score, 3) AS score, points, explanation,
       concat(detector, ' v', detector_version) AS detector, toString(series_id) AS series_id
FROM {DB}.anomalies FINAL
WHERE is_open = 1 AND start <= $__toTime AND {SERVICE_FILTER}
ORDER BY peak_score DESC, start DESC LIMIT 100""",
            width=24,
            height=9,
            needs=("started", "severity", "service", "signal", "explanation", "series_id"),
            overrides=[_link_override("signal"), _hide("series_id")],
        ),  # fmt: skip
        table(
            "Top anomalous series",
            f"""
SELECT {SERIES_LABEL} AS signal, service, toString(series_id) AS series_id,
       count() AS episodes, round(max(peak_score), 3) AS max_score,
       sum(points) AS anomalous_points, max(start) AS last_start
{EPISODES_IN_RANGE}
GROUP BY series_id, signal, service
ORDER BY episodes DESC, max_score DESC LIMIT 15""",
            width=12,
            height=9,
            needs=("signal", "episodes", "max_score", "series_id"),
            overrides=[_link_override("signal"), _hide("series_id")],
        ),  # fmt: skip
        table(
            "Drift events",
            f"""
SELECT ts AS time, service, concat(kind, '.', name) AS signal, detector,
       round(before_mean, 4) AS before_mean, round(after_mean, 4) AS after_mean,
       explanation, toString(series_id) AS series_id
FROM {DB}.drift
WHERE $__timeFilter(ts) AND {SERVICE_FILTER}
ORDER BY ts DESC LIMIT 100""",
            width=12,
            height=9,
            needs=("time", "signal", "explanation", "series_id"),
            overrides=[_link_override("signal"), _hide("series_id")],
            description="Changes of a series' normal level or spread (drift detectors).",
        ),  # fmt: skip
    ]
    services = query_variable(
        "service", "Service",
        f"SELECT DISTINCT service FROM {DB}.points WHERE $__timeFilter(ts) ORDER BY service",
        ds, multi=True, include_all=True,
    )  # fmt: skip
    return Board(UID, "Stormwatch / Anomaly overview",
                 "Anomaly episodes, scores and drift across all services.", panels,
                 variables=[services])  # fmt: skip


def _link_override(column: str) -> dict[str, object]:
    return {"matcher": {"id": "byName", "options": column},
            "properties": [{"id": "links", "value": [
                {"title": "Open in series drill-down", "url": DRILL_LINK}]}]}  # fmt: skip


def _hide(column: str) -> dict[str, object]:
    return {"matcher": {"id": "byName", "options": column},
            "properties": [{"id": "custom.hidden", "value": True}]}  # fmt: skip
