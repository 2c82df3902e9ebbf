"""Checkpoints in the real engine: the newest state restores; a rollback takes an older one."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from detectors.registry import model_factory
from streams.checkpoints import CHECKPOINT_COLUMNS, load_checkpoints
from streams.detect import DetectStage
from streams.series import AGG_LAST, Obs, make_series, series_id
from streams.wire import partition_of

CPU = make_series("metric", "cpu", "", host="a")
SID = series_id(CPU)


def feed(stage: DetectStage, values: list[float], start: int = 0) -> list[float]:
    for i, v in enumerate(values, start):
        stage.add([Obs(SID, i * 10_000, v, AGG_LAST)], {SID: CPU}, i)
    return stage.drain().points[4]  # scores


def test_restore_resumes_and_rollback_returns_to_an_older_checkpoint(
    chdb_store, db_settings
) -> None:  # type: ignore[no-untyped-def]
    db, topic = db_settings.database, "points"
    part = partition_of(SID, 4)
    normal = [10.0 + (i * 7) % 5 * 0.1 for i in range(60)]
    shifted = [30.0 + (i * 3) % 5 * 0.1 for i in range(60)]

    live = DetectStage(model_factory())
    feed(live, normal)
    t_normal = int(time.time() * 1000) - 60_000  # checkpoint 1: learned only the normal level
    (state_normal,) = live.snapshot().values()
    feed(live, shifted, start=60)  # ... then a long shift it adapts to
    (state_shifted,) = live.snapshot().values()
    rows = [[t_normal, topic, part, SID, state_normal],
            [t_normal + 30_000, topic, part, SID, state_shifted]]  # fmt: skip
    chdb_store.insert(
        f"{db}.checkpoints", CHECKPOINT_COLUMNS, list(map(list, zip(*rows, strict=True)))
    )

    probe = [30.0] * 3
    resumed = DetectStage(model_factory())
    resumed.restore(load_checkpoints(chdb_store, db, topic, {part}))
    assert max(feed(resumed, probe, start=120)) < 0.9  # the newest state: 30 is normal now

    rolled = DetectStage(model_factory())
    before = datetime.fromtimestamp((t_normal + 10_000) / 1000, UTC)
    rolled.restore(load_checkpoints(chdb_store, db, topic, {part}, before))
    assert min(feed(rolled, probe, start=120)) >= 0.9  # rolled back: 30 is anomalous again

    assert load_checkpoints(chdb_store, db, topic, {(part + 1) % 4}) == {}
    # starting afresh (each demo run): checkpoints written before the start are not resumed
    after = datetime.fromtimestamp((t_normal + 40_000) / 1000, UTC)
    assert load_checkpoints(chdb_store, db, topic, {part}, after=after) == {}
    after = datetime.fromtimestamp((t_normal + 10_000) / 1000, UTC)
    assert load_checkpoints(chdb_store, db, topic, {part}, after=after) == {SID: state_shifted}
