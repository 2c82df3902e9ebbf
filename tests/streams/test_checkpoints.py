"""Checkpoints in the real engine: the newest state restores; a rollback takes an older one."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from pathlib import Path

from detectors.registry import model_factory
from streams.checkpoints import CHECKPOINT_COLUMNS, LZ4, load_checkpoints
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


def _shop_cpu(i: int) -> float:
    """The series the checkpoint in data/ was taken on: a 24-point cycle, a little noise."""
    return 50 + 5 * math.sin(2 * math.pi * i / 24) + (i * 7919 % 13) / 13


def _feed_shop(stage: DetectStage, points: range) -> list[float]:
    shop = make_series("metric", "cpu", "shop", host="a")
    sid = series_id(shop)
    for i in points:
        stage.add(
            [Obs(sid, 1_700_000_000_000 + i * 10_000, _shop_cpu(i), AGG_LAST)], {sid: shop}, i
        )
    return stage.drain().points[4]


def test_a_checkpoint_of_the_previous_format_resumes_where_it_left_off() -> None:
    """An upgrade keeps the detectors: a state written before LZ4 and packed arrays (by
    `DetectStage.snapshot` at e1b8da8, after 400 points of `_shop_cpu`) restores and scores
    the next points exactly as a detector that never stopped."""
    old = (Path(__file__).parent / "data" / "checkpoint_zlib_e1b8da8.txt").read_text().strip()
    assert not old.startswith(LZ4)
    sid = series_id(make_series("metric", "cpu", "shop", host="a"))
    resumed = DetectStage(model_factory())
    assert resumed.restore({sid: old}) == 1
    assert resumed.counters.unrestored == 0
    live = DetectStage(model_factory())
    _feed_shop(live, range(400))
    nxt = range(400, 460)
    assert _feed_shop(resumed, nxt) == _feed_shop(live, nxt)
    # and what it checkpoints next is this release's format, which restores the same way
    (state,) = resumed.snapshot().values()
    assert state.startswith(LZ4)
    again = DetectStage(model_factory())
    assert again.restore({sid: state}) == 1
    assert _feed_shop(again, range(460, 500)) == _feed_shop(live, range(460, 500))


def test_checkpoints_older_than_an_hour_thin_to_the_last_of_each_hour(
    chdb_store, db_settings
) -> None:  # type: ignore[no-untyped-def]
    """Every checkpoint of the last hour stays (a rollback to minutes ago); of older ones, the
    last of each hour, once the engine merges. The newest still restores, and a rollback gets
    the last state of an hour before the time asked for."""
    db, topic = db_settings.database, "points"
    part = partition_of(SID, 4)
    now = int(time.time() * 1000)
    written = {now - k * 30_000: f"state at {now - k * 30_000}" for k in range(4 * 120)}  # 4 h
    chdb_store.insert(
        f"{db}.checkpoints", CHECKPOINT_COLUMNS,
        [list(written), [topic] * len(written), [part] * len(written), [SID] * len(written),
         list(written.values())],
    )  # fmt: skip
    chdb_store.command(f"OPTIMIZE TABLE {db}.checkpoints FINAL")
    kept = dict(
        chdb_store.query(
            f"SELECT toUnixTimestamp64Milli(ts), state FROM {db}.checkpoints "
            f"WHERE series_id = {SID}"
        ).rows
    )
    hour = 3_600_000
    recent = [t for t in written if t >= now - hour + 300_000]
    assert all(kept.get(t) == written[t] for t in recent)  # the last hour: every checkpoint
    lasts = {}  # each hour all older than an hour: its last checkpoint, alone
    for start in range(min(written) // hour * hour, (now - hour) // hour * hour, hour):
        lasts[start] = max(t for t in written if start <= t < start + hour)
        assert [t for t in kept if start <= t < start + hour] == [lasts[start]]
        assert kept[lasts[start]] == written[lasts[start]]
    assert len(kept) < 200  # of 480
    assert load_checkpoints(chdb_store, db, topic, {part}) == {SID: written[now]}
    before = now - 5 * hour // 2
    rolled = load_checkpoints(
        chdb_store, db, topic, {part}, datetime.fromtimestamp(before / 1000, UTC)
    )
    assert rolled == {SID: written[max(t for t in lasts.values() if t < before)]}
