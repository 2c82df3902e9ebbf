"""Pipeline health: is data flowing, what is dead-lettered, what does detection cost.

Reads the `health` table (counters the workers write every few seconds as deltas per
`stage.metric`, gauges such as `detect.series` as values), `points` for ingest by kind, and
`dlq` for dead letters. Metrics a panel reads that no worker writes yet show "No data".
"""

from __future__ import annotations

from dashboards.model import Board, stat, table, timeseries
from dashboards.sql import DB

UID = "stormwatch-health"
HEALTH = f"{DB}.health"


GAUGES = "'series', 'series_capped', 'consumer_lag', 'busy_s'"  # not per-interval counts


def board(ds: str) -> Board:
    panels = [
        stat(
            "Events in / s",
            f"SELECT sum(value) / greatest(1, dateDiff('second', $__fromTime, $__toTime)) "
            f"AS events_per_s FROM {HEALTH} WHERE $__timeFilter(ts) "
            "AND stage = 'normalize' AND metric = 'events'",
            unit="short",
            needs=("events_per_s",),
        ),  # fmt: skip
        stat(
            "Dead letters",
            f"SELECT count() AS dead_letters FROM {DB}.dlq WHERE $__timeFilter(ts)",
            thresholds=[(None, "green"), (1, "orange")],
            needs=("dead_letters",),
        ),
        stat(
            "Series modelled",
            f"SELECT sum(v) AS series FROM (SELECT worker, argMax(value, ts) AS v FROM {HEALTH} "
            "WHERE $__timeFilter(ts) AND stage = 'detect' AND metric = 'series' GROUP BY worker)",
            needs=("series",),
        ),  # fmt: skip
        stat(
            "Detector cost / point",
            f"SELECT sumIf(value, metric = 'busy_s') * 1e6 / "
            f"greatest(1, sumIf(value, metric = 'points_written')) AS us_per_point "
            f"FROM {HEALTH} WHERE $__timeFilter(ts) AND stage = 'detect'",
            unit="µs",
            needs=("us_per_point",),
        ),  # fmt: skip
        timeseries(
            "Ingest rate by kind",
            f"""
SELECT $__timeInterval(ts) AS time, kind, sum(n) / $__interval_s AS observations_per_s
FROM {DB}.points
WHERE $__timeFilter(ts)
GROUP BY time, kind ORDER BY time""",
            unit="short",
            needs=("kind", "observations_per_s"),
            description="Raw observations per second that reached the detectors, by kind.",
        ),  # fmt: skip
        timeseries(
            "Consumer lag",
            f"""
SELECT $__timeInterval(ts) AS time, concat(stage, ' ', worker) AS consumer, max(value) AS lag
FROM {HEALTH}
WHERE $__timeFilter(ts) AND metric = 'consumer_lag'
GROUP BY time, consumer ORDER BY time""",
            unit="short",
            needs=("consumer", "lag"),
            description="Messages behind the end of the topic, per stage and worker.",
        ),  # fmt: skip
        timeseries(
            "Dead-letter rate",
            f"""
SELECT $__timeInterval(ts) AS time, source_topic AS topic, count() / $__interval_s AS per_s
FROM {DB}.dlq
WHERE $__timeFilter(ts)
GROUP BY time, topic ORDER BY time""",
            unit="short",
            needs=("topic", "per_s"),
        ),  # fmt: skip
        table(
            "Dead-letter reasons",
            f"""
SELECT replaceRegexpAll(reason, '[0-9]+', 'N') AS reason, count() AS messages,
       max(ts) AS last_seen, any(substring(payload, 1, 200)) AS example
FROM {DB}.dlq
WHERE $__timeFilter(ts)
GROUP BY reason ORDER BY messages DESC LIMIT 50""",
            needs=("reason", "messages", "last_seen", "example"),
        ),  # fmt: skip
        timeseries(
            "Detector cost per point",
            f"""
SELECT $__timeInterval(ts) AS time,
       sumIf(value, metric = 'busy_s') * 1e6 / greatest(1, sumIf(value, metric = 'points_written'))
           AS us_per_point
FROM {HEALTH}
WHERE $__timeFilter(ts) AND stage = 'detect' AND metric IN ('busy_s', 'points_written')
GROUP BY time ORDER BY time""",
            unit="µs",
            needs=("us_per_point",),
            description="Detect-stage busy time per point written (windows, scoring, learning).",
        ),  # fmt: skip
        timeseries(
            "Series modelled vs capped",
            f"""
SELECT time, metric, sum(v) AS series FROM (
    SELECT $__timeInterval(ts) AS time, worker, metric, max(value) AS v
    FROM {HEALTH}
    WHERE $__timeFilter(ts) AND stage = 'detect' AND metric IN ('series', 'series_capped')
    GROUP BY time, worker, metric)
GROUP BY time, metric ORDER BY time""",
            needs=("metric", "series"),
            description="Series with a detector, and series refused because a cap was reached.",
        ),  # fmt: skip
        timeseries(
            "Pipeline counters",
            f"""
SELECT $__timeInterval(ts) AS time, concat(stage, '.', metric) AS counter,
       sum(value) / $__interval_s AS per_s
FROM {HEALTH}
WHERE $__timeFilter(ts) AND metric NOT IN ({GAUGES})
GROUP BY time, counter ORDER BY time""",
            width=24,
            unit="short",
            needs=("counter", "per_s"),
        ),  # fmt: skip
    ]
    return Board(UID, "Stormwatch / Pipeline health",
                 "Ingest, dead letters, detector cost and series counts of the workers.",
                 panels)  # fmt: skip
