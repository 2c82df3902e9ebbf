"""Detector checkpoints in ClickHouse: the latest state of each series, or the latest before
a time (a rollback). Written only after the rows they cover, so a restore never runs ahead
of what is stored."""

from __future__ import annotations

from datetime import datetime

from stormwatch.store import Store

CHECKPOINT_COLUMNS = ["ts", "topic", "partition", "series_id", "state"]


def load_checkpoints(
    store: Store, database: str, topic: str, parts: set[int], before: datetime | None = None,
    after: datetime | None = None,
) -> dict[int, str]:  # fmt: skip
    """series id → its newest checkpointed state among `parts` of `topic` (older than
    `before` when given: STORMWATCH_RESTORE_BEFORE rolls detectors back; newer than `after`:
    STORMWATCH_RESTORE_AFTER starts afresh)."""
    if not parts:
        return {}
    cond = f"AND ts < toDateTime64({before.timestamp():.3f}, 3)" if before else ""
    if after:
        cond += f" AND ts > toDateTime64({after.timestamp():.3f}, 3)"
    r = store.query(
        f"SELECT series_id, argMax(state, ts) FROM {database}.checkpoints "
        f"WHERE topic = {{topic:String}} AND partition IN ({','.join(map(str, sorted(parts)))}) "
        f"{cond} GROUP BY series_id",
        {"topic": topic},
    )
    return {int(sid): state for sid, state in r.rows}
