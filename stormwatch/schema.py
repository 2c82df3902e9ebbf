"""ClickHouse tables, created idempotently at start-up; the same DDL serves chdb and a server.

Idempotency: every table that a retry can write twice is a ReplacingMergeTree whose ORDER BY
is the row's identity, so a replayed insert replaces instead of duplicating; reads that must
be exact use FINAL. `points` keeps the version with the most observations (`n`), so a window
recomputed from a partial replay never overwrites the complete one.
"""

from __future__ import annotations

TABLES: dict[str, str] = {
    # Every checkpoint for an hour (a rollback to minutes ago), then the last of each hour for
    # a week: a merge rolls the older ones up. Kept all week, 2,000 series checkpointed every
    # 30 s wrote ~29 GB a day (docs/performance.md, seventeenth round).
    "checkpoints": """
CREATE TABLE IF NOT EXISTS {db}.checkpoints (
    ts DateTime64(3, 'UTC'),
    topic LowCardinality(String),
    partition UInt16,
    series_id UInt64,
    state String
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (topic, partition, series_id, toStartOfHour(ts), ts)
TTL toDateTime(ts) + INTERVAL 1 HOUR
        GROUP BY topic, partition, series_id, toStartOfHour(ts)
        SET ts = max(ts), state = argMax(state, ts),
    toDateTime(ts) + INTERVAL 7 DAY
""",
    "points": """
CREATE TABLE IF NOT EXISTS {db}.points (
    series_id UInt64,
    ts DateTime64(3, 'UTC'),
    value Float64,
    n UInt32,
    score Float32,
    expected Nullable(Float64),
    lower Nullable(Float64),
    upper Nullable(Float64),
    is_anomaly UInt8,
    kind LowCardinality(String),
    name LowCardinality(String),
    service LowCardinality(String),
    labels Map(LowCardinality(String), String),
    detector LowCardinality(String),
    detector_version LowCardinality(String),
    written_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(n)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (series_id, ts)
TTL toDateTime(ts) + INTERVAL {retention_days} DAY
""",
    "anomalies": """
CREATE TABLE IF NOT EXISTS {db}.anomalies (
    episode_id UInt64,
    series_id UInt64,
    start DateTime64(3, 'UTC'),
    end DateTime64(3, 'UTC'),
    is_open UInt8,
    peak_score Float32,
    peak_value Float64,
    expected Nullable(Float64),
    lower Nullable(Float64),
    upper Nullable(Float64),
    severity LowCardinality(String),
    kind LowCardinality(String),
    name LowCardinality(String),
    service LowCardinality(String),
    labels Map(LowCardinality(String), String),
    signals Array(String),
    explanation String,
    detector LowCardinality(String),
    detector_version LowCardinality(String),
    points UInt32,
    updated_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(start)
ORDER BY (start, series_id)
TTL toDateTime(start) + INTERVAL {retention_days} DAY
""",
    "drift": """
CREATE TABLE IF NOT EXISTS {db}.drift (
    ts DateTime64(3, 'UTC'),
    series_id UInt64,
    kind LowCardinality(String),
    name LowCardinality(String),
    service LowCardinality(String),
    labels Map(LowCardinality(String), String),
    detector LowCardinality(String),
    detector_version LowCardinality(String),
    before_mean Float64,
    after_mean Float64,
    before_std Float64,
    after_std Float64,
    explanation String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (series_id, ts)
TTL toDateTime(ts) + INTERVAL {retention_days} DAY
""",
    "shadow_scores": """
CREATE TABLE IF NOT EXISTS {db}.shadow_scores (
    series_id UInt64,
    ts DateTime64(3, 'UTC'),
    detector LowCardinality(String),
    detector_version LowCardinality(String),
    score Float32
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (series_id, detector, ts)
TTL toDateTime(ts) + INTERVAL {retention_days} DAY
""",
    "dlq": """
CREATE TABLE IF NOT EXISTS {db}.dlq (
    ts DateTime64(3, 'UTC'),
    source_topic LowCardinality(String),
    source_partition Int32,
    source_offset Int64,
    item Int32,
    reason String,
    payload String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (source_topic, source_partition, source_offset, item)
TTL toDateTime(ts) + INTERVAL {retention_days} DAY
""",
    "health": """
CREATE TABLE IF NOT EXISTS {db}.health (
    ts DateTime64(3, 'UTC'),
    worker LowCardinality(String),
    stage LowCardinality(String),
    metric LowCardinality(String),
    value Float64
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (metric, stage, ts)
TTL toDateTime(ts) + INTERVAL 7 DAY
""",
    "action_audit": """
CREATE TABLE IF NOT EXISTS {db}.action_audit (
    ts DateTime64(3, 'UTC'),
    audit_id String,
    proposal_id String,
    episode_id UInt64,
    series_id UInt64,
    policy LowCardinality(String),
    action LowCardinality(String),
    params String,
    state LowCardinality(String),
    actor String,
    source LowCardinality(String),
    detail String,
    dry_run UInt8
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (proposal_id, ts, audit_id)
TTL toDateTime(ts) + INTERVAL 365 DAY
""",
    "feedback": """
CREATE TABLE IF NOT EXISTS {db}.feedback (
    ts DateTime64(3, 'UTC'),
    episode_id UInt64,
    series_id UInt64,
    label LowCardinality(String),
    user String,
    source LowCardinality(String)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (episode_id, user, ts)
TTL toDateTime(ts) + INTERVAL 365 DAY
""",
}


# Write amplification: each level of merges rewrites every row, and the merge selector's
# `base` sets how many parts of a size one merge takes, so how many levels a row goes through
# (about log_base of the parts inserted). At the default 5, merging the detect stage's
# 50k-row parts cost ~1.2 us of engine CPU a row beside ~0.25 for the insert itself; at 20,
# ~0.75, for up to ~20 parts a level instead of 5 (docs/performance.md, seventh round). Only
# where the engine knows the setting: it came with ClickHouse PR #71497 (November 2024), so
# chdb has it and the compose image's 24.8 server keeps its default.
MERGE_SETTINGS: dict[str, dict[str, int]] = {"points": {"merge_selector_base": 20}}


def merge_tuning(database: str, known: set[str]) -> list[str]:
    """`ALTER ... MODIFY SETTING` for each of MERGE_SETTINGS the engine knows (`known`):
    idempotent, so it also brings tables created before the setting up to date."""
    return [
        f"ALTER TABLE {database}.{table} MODIFY SETTING {name} = {value}"
        for table, names in MERGE_SETTINGS.items()
        for name, value in names.items()
        if name in known
    ]


def checkpoints_unthinned(database: str, sorting_key: str) -> str | None:
    """What to tell an operator whose `checkpoints` table (its sorting key) predates the hourly
    roll-up: `CREATE TABLE IF NOT EXISTS` leaves it as it was, keeping every checkpoint for a
    week, and a sorting key cannot take an expression in its middle. None when it is current."""
    if "toStartOfHour" in sorting_key:
        return None
    t = f"{database}.checkpoints"
    return (
        f"{t} keeps every checkpoint for 7 days (created before checkpoints were thinned to one "
        f"an hour after the first hour). To thin it, with the pipeline stopped: RENAME TABLE "
        f"{t} TO {t}_old; start stormwatch (it creates the table); INSERT INTO {t} SELECT * "
        f"FROM {t}_old; DROP TABLE {t}_old"
    )


def ddl(database: str, retention_days: int = 30) -> list[str]:
    """Every statement needed to create the schema, in order."""
    stmts = [f"CREATE DATABASE IF NOT EXISTS {database}"]
    stmts += [t.format(db=database, retention_days=retention_days).strip() for t in TABLES.values()]
    return stmts
