"""The detect stage: windows, scoring order and the ack-token rule that makes delivery safe."""

from __future__ import annotations

import random

from detectors.registry import model_factory
from streams.columns import POINT_COLUMNS
from streams.detect import DetectStage
from streams.series import AGG_LAST, AGG_MEAN, AGG_RATE, Obs, make_series, series_id
from streams.wire import PointsDecoder, encode_points

LAT = make_series("span", "latency_ms", "svc", operation="op")
THR = make_series("span", "throughput", "svc", operation="op")
CPU = make_series("metric", "cpu", "", host="a")
META = {series_id(s): s for s in (LAT, THR, CPU)}


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def stage(clock: Clock | None = None) -> DetectStage:
    return DetectStage(model_factory(), window_s=10, lateness_s=5, wall_clock=clock or Clock())


def column(out, name):  # type: ignore[no-untyped-def]
    return out.points[POINT_COLUMNS.index(name)]


def test_passthrough_point_is_scored_and_its_token_ready_at_once() -> None:
    st = stage()
    st.add([Obs(series_id(CPU), 1_000, 0.5, AGG_LAST)], META, "m1")
    out = st.drain()
    assert out.rows == 1 and out.tokens == ["m1"]
    assert column(out, "value") == [0.5] and column(out, "n") == [1]


def test_window_holds_token_until_closed_then_emits_mean() -> None:
    st = stage()
    lat = series_id(LAT)
    st.add([Obs(lat, 1_000, 10.0, AGG_MEAN), Obs(lat, 2_000, 20.0, AGG_MEAN)], META, "m1")
    assert st.drain().tokens == []  # the window [0, 10s) is open: m1 must not be acked
    st.add([Obs(lat, 12_000, 30.0, AGG_MEAN)], META, "m2")
    assert st.drain().tokens == []  # watermark 12s < 10s + 5s lateness
    st.add([Obs(lat, 9_000, 40.0, AGG_MEAN), Obs(lat, 15_500, 5.0, AGG_MEAN)], META, "m3")
    out = st.drain()
    assert column(out, "ts") == [0] and column(out, "value") == [(10 + 20 + 40) / 3]
    assert column(out, "n") == [3]
    assert out.tokens == ["m1"]  # m2 and m3 still feed the open window [10s, 20s)


def test_late_observation_is_counted_not_lost_silently() -> None:
    st = stage()
    lat = series_id(LAT)
    st.add([Obs(lat, 1_000, 1.0, AGG_MEAN), Obs(lat, 16_000, 1.0, AGG_MEAN)], META, "m1")
    st.add([Obs(lat, 2_000, 1.0, AGG_MEAN)], META, "m2")
    assert st.counters.late == 1
    assert "m2" in st.drain().tokens


def test_rate_windows_fill_gaps_with_zero() -> None:
    st = stage()
    thr = series_id(THR)
    st.add([Obs(thr, 1_000, 1.0, AGG_RATE)] * 5, META, "m1")
    st.add([Obs(thr, 41_000, 1.0, AGG_RATE), Obs(thr, 60_000, 1.0, AGG_RATE)], META, "m2")
    out = st.drain()
    assert column(out, "ts") == [0, 10_000, 20_000, 30_000, 40_000]
    assert column(out, "value") == [0.5, 0.0, 0.0, 0.0, 0.1]


def test_idle_series_window_closes_on_wall_clock() -> None:
    clock = Clock()
    st = stage(clock)
    st.add([Obs(series_id(LAT), 1_000, 7.0, AGG_MEAN)], META, "m1")
    clock.t = 10.0
    st.close_idle()
    assert st.drain().tokens == []
    clock.t = 15.0
    st.close_idle()
    out = st.drain()
    assert out.tokens == ["m1"] and column(out, "value") == [7.0]


def test_series_idle_again_after_its_windows_closed_is_closed_again() -> None:
    """Windows that closed by the watermark, then by the idle timer, then opened again: each
    time the series goes quiet, its open window still closes on the wall clock."""
    clock = Clock()
    st = stage(clock)
    lat = series_id(LAT)
    st.add([Obs(lat, 1_000, 1.0, AGG_MEAN), Obs(lat, 16_000, 2.0, AGG_MEAN)], META, "m1")
    st.add([Obs(series_id(CPU), 1_000, 0.5, AGG_LAST)], META, "m2")  # a metric: no windows
    assert column(st.drain(), "ts") == [0, 1_000]  # [0, 10s) closed by the watermark
    clock.t = 20.0
    st.close_idle()  # the quiet series' window [10s, 20s) closes on the wall clock
    assert st.drain().tokens == ["m1"]
    clock.t = 21.0
    st.add([Obs(lat, 25_000, 3.0, AGG_MEAN)], META, "m3")
    clock.t = 30.0
    st.close_idle()
    assert st.drain().tokens == []  # 9 s of quiet: not yet
    clock.t = 36.0
    st.close_idle()
    out = st.drain()
    assert out.tokens == ["m3"] and column(out, "ts") == [20_000] and column(out, "value") == [3.0]


def test_level_shift_opens_one_episode_with_explanation() -> None:
    st = stage()
    cpu = series_id(CPU)
    vals = [0.5 + 0.01 * ((i * 7) % 5 - 2) for i in range(60)] + [0.95] * 5 + [0.5] * 10
    for i, v in enumerate(vals):
        st.add([Obs(cpu, i * 10_000, v, AGG_LAST)], META, i)
    eps = st.drain().episodes
    opened = {e.episode_id for e in eps}
    assert len(opened) == 1
    last = eps[-1]
    assert not last.is_open and last.start_ms == 600_000 and last.peak_value == 0.95
    assert last.lower < 0.5 < last.upper and "expected" in last.explanation
    assert last.detector == "robust"


def test_an_episode_peaking_inside_the_range_says_why_it_was_flagged() -> None:
    """The printed range is what one point alone must leave; a peak inside it (flagged for a
    run, a shift, a drift...) says so instead of reading as a contradiction."""
    from detectors.registry import make_detector
    from streams.detect import build_episode

    det, sid = make_detector("robust"), series_id(CPU)
    inside = build_episode(CPU, sid, (0, 10_000, 4, (0.93, 110.2, 103.0, 55.0, 150.9)), det,
                           closed=False)  # fmt: skip
    outside = build_episode(CPU, sid, (0, 10_000, 4, (0.99, 170.0, 103.0, 55.0, 150.9)), det,
                            closed=False)  # fmt: skip
    assert "peaked at 110.2" in inside.explanation
    assert "inside the range a single point may reach" in inside.explanation
    assert "level shift" in inside.explanation
    assert "peaked at 170" in outside.explanation
    assert "inside the range" not in outside.explanation


def test_an_episode_names_the_test_that_flagged_its_peak() -> None:
    """Not the list of every test the detector runs: the one that fired, the same whether
    the points came one by one or in a batch (the compiled path)."""
    rng = random.Random(3)
    noise = [100 + rng.gauss(0, 2) for _ in range(200)]
    cases = {
        "a repeated value": noise + [101.3] * 30,
        "a sustained shift": noise + [103.5 + rng.gauss(0, 2) for _ in range(40)],
    }
    for reason, vals in cases.items():
        cpu = series_id(CPU)
        for batch in (1, 50):
            st = stage()
            for i in range(0, len(vals), batch):
                end = min(i + batch, len(vals))
                st.add([Obs(cpu, j * 10_000, vals[j], AGG_LAST) for j in range(i, end)], META, i)
            eps = st.drain().episodes
            assert eps, reason
            text = eps[-1].explanation
            assert "inside the range a single point may reach" in text, text
            assert f"flagged for {reason}" in text, text
            assert "a run of wide points, a level shift" not in text  # not the generic list


def test_error_rate_needs_three_errors_to_alert() -> None:
    err = make_series("span", "error_rate", "svc", operation="op")
    meta = {series_id(err): err}
    st = stage()
    sid = series_id(err)
    t = 0
    for w in range(40):  # 40 clean windows of 20 requests
        st.add([Obs(sid, w * 10_000 + i, 0.0, AGG_MEAN) for i in range(20)], meta, ("a", w))
        t = w
    one = [Obs(sid, (t + 1) * 10_000 + i, 1.0 if i == 0 else 0.0, AGG_MEAN) for i in range(20)]
    st.add(one, meta, "one error")
    five = [Obs(sid, (t + 2) * 10_000 + i, 1.0 if i < 5 else 0.0, AGG_MEAN) for i in range(20)]
    st.add(five, meta, "five errors")
    st.add([Obs(sid, (t + 4) * 10_000, 0.0, AGG_MEAN)], meta, "later")
    out = st.drain()
    flags = dict(zip(column(out, "ts"), column(out, "is_anomaly"), strict=True))
    assert flags[(t + 1) * 10_000] == 0  # 1 of 20: not enough evidence
    assert flags[(t + 2) * 10_000] == 1  # 5 of 20: an error burst


def test_feedback_new_normal_stops_flagging_a_shifted_level() -> None:
    def run(feedback: bool) -> list[int]:
        st = stage()
        cpu = series_id(CPU)
        base = [0.5 + 0.01 * ((i * 7) % 5 - 2) for i in range(60)]
        shifted = [0.9 + 0.01 * ((i * 3) % 5 - 2) for i in range(12)]
        for i, v in enumerate(base + shifted[:2]):
            st.add([Obs(cpu, i * 10_000, v, AGG_LAST)], META, i)
        if feedback:
            assert st.apply_feedback(cpu, "new_normal")
        for i, v in enumerate(shifted[2:], start=62):
            st.add([Obs(cpu, i * 10_000, v, AGG_LAST)], META, i)
        return column(st.drain(), "is_anomaly")[62:]

    assert sum(run(feedback=False)) >= 5  # the shift keeps alerting
    assert sum(run(feedback=True)) == 0  # "new normal": re-baselined at once


def test_feedback_for_a_series_this_worker_does_not_own_is_refused() -> None:
    assert not stage().apply_feedback(12345, "not_anomaly")


def test_feedback_message_round_trips_and_is_told_apart_from_points() -> None:
    from streams.wire import decode_feedback, encode_feedback, encode_points

    raw = encode_feedback(42, "expected", episode_id=7)
    assert decode_feedback(raw) == {"series_id": 42, "label": "expected", "episode_id": 7}
    points = encode_points([Obs(series_id(CPU), 1, 1.0, AGG_LAST)], META)
    assert decode_feedback(points) is None


def test_rising_queue_lag_is_predicted_to_breach_before_it_does() -> None:
    lag = make_series("queue", "lag", "worker", queue="orders", group="g")
    meta = {series_id(lag): lag}
    st = DetectStage(model_factory(), lag_threshold=1000.0, horizon_s=120.0)
    sid = series_id(lag)
    noise = [((i * 7) % 5 - 2) * 3 for i in range(200)]
    values = [50 + noise[i] for i in range(60)]  # steady
    values += [50 + 20 * k + noise[60 + k] for k in range(60)]  # +2/s: 1000 after ~480 s
    values += [max(0.0, values[-1] - 60 * k) for k in range(1, 40)]  # drained again
    for i, v in enumerate(values):
        st.add([Obs(sid, i * 10_000, v, AGG_LAST)], meta, i)
    breaches = [e for e in st.drain().episodes if "predicted_breach" in e.signals]
    opened = [e for e in breaches if e.is_open]
    assert len(opened) == 1, breaches
    first = opened[0]
    assert first.start_ms // 10_000 < 60 + 60  # predicted while the lag was still below 1000
    assert values[first.start_ms // 10_000] < 1000 and "crosses 1000" in first.explanation
    assert any(not e.is_open and e.episode_id == first.episode_id for e in breaches)


def test_shadow_scores_are_stored_and_never_acted_on(chdb_store, db_settings) -> None:  # type: ignore[no-untyped-def]
    import time

    from streams.detect import SHADOW_COLUMNS

    cpu = series_id(CPU)
    base = int(time.time()) // 10 * 10_000 - 3_600_000  # an hour ago: inside every TTL
    values = [0.5 + 0.01 * ((i * 7) % 5 - 2) for i in range(60)] + [0.95] * 3 + [0.5] * 10

    def run(shadow: str | None):  # type: ignore[no-untyped-def]
        st = DetectStage(model_factory(shadow=shadow), window_s=10, lateness_s=5)
        for i, v in enumerate(values):
            st.add([Obs(cpu, base + i * 10_000, v, AGG_LAST)], META, i)
        return st.drain()

    plain, shadowed = run(None), run("zscore")
    assert plain.shadow == [] and len(shadowed.shadow) == len(values)
    assert column(shadowed, "score") == column(plain, "score")  # the active path is unchanged
    assert column(shadowed, "is_anomaly") == column(plain, "is_anomaly")
    assert [e.model_dump() for e in shadowed.episodes] == [e.model_dump() for e in plain.episodes]
    db = db_settings.database
    chdb_store.insert(f"{db}.shadow_scores", SHADOW_COLUMNS,
                      [list(c) for c in zip(*shadowed.shadow, strict=True)])  # fmt: skip
    rows = chdb_store.query(
        f"SELECT detector, count(), max(score) FROM {db}.shadow_scores GROUP BY detector"
    ).rows
    assert rows[0][0] == "zscore" and rows[0][1] == len(values) and rows[0][2] > 0.9


def test_an_unreadable_checkpoint_starts_that_series_afresh_and_keeps_the_others() -> None:
    stage = DetectStage(model_factory())
    cpu, lat = series_id(CPU), series_id(LAT)
    stage.add([Obs(cpu, i * 1000, 1.0 + i % 3, AGG_LAST) for i in range(20)], META, "m1")
    stage.add([Obs(lat, i * 1000, 5.0, AGG_MEAN) for i in range(40)], META, "m2")
    states = stage.snapshot()
    assert set(states) == {cpu, lat}
    states[lat] = "bm90IGEgY2hlY2twb2ludA=="  # e.g. written by an older model format
    fresh = DetectStage(model_factory())
    assert fresh.restore(states) == 1
    assert set(fresh.series) == {cpu} and fresh.counters.unrestored == 1
    fresh.add([Obs(lat, 50_000, 5.0, AGG_MEAN)], META, "m3")  # a fresh model takes it
    assert lat in fresh.series


def test_columnar_messages_score_exactly_as_point_by_point_through_a_restore() -> None:
    """The points topic's columns (grouped with numpy) and a list of observations give the
    same rows, episodes and acks, and a replay after a restore skips the same points."""
    assert POINT_COLUMNS[0] == "series_id"
    rng = random.Random(3)
    metas = {series_id(s): s for s in (make_series("metric", "m", "svc", host=f"h{i}")
                                       for i in range(12))}  # fmt: skip
    sids = sorted(metas)
    messages = []
    for k in range(40):  # interleaved series, uneven counts, a level shift in one series
        obs = [Obs(sid, (k * 5 + j) * 10_000, rng.gauss(10, 1) + (8 if i == 3 and k > 25 else 0),
                   AGG_LAST)
               for j in range(5) for i, sid in enumerate(sids) if rng.random() < 0.8]  # fmt: skip
        messages.append(encode_points(obs, metas))

    def run(columnar: bool, msgs: list[bytes], st: DetectStage) -> list:  # type: ignore[type-arg]
        dec, outs = PointsDecoder(), []
        for i, raw in enumerate(msgs):
            points, meta = dec.decode(raw)
            st.add(points if columnar else list(points), meta, i)
            outs.append(st.drain())
        # a batch's rows have no order; each series' episodes do
        return [(sorted(zip(*o.points, strict=True), key=repr),
                 sorted((e.model_dump() for e in o.episodes), key=lambda e: e["series_id"]),
                 o.tokens) for o in outs]  # fmt: skip

    a, b = stage(), stage()
    first = run(True, messages[:30], a)
    assert first == run(False, messages[:30], b)
    assert any(episodes for _, episodes, _ in first)
    ra, rb = stage(), stage()
    ra.restore(a.snapshot())
    rb.restore(b.snapshot())
    replay = messages[25:]  # five messages already stored before the checkpoint
    assert run(True, replay, ra) == run(False, replay, rb)
    assert ra.counters.replayed == rb.counters.replayed > 0
    assert ra.counters.observations == rb.counters.observations


def test_a_series_episodes_do_not_depend_on_the_company_it_arrives_in() -> None:
    """One series' level shift among 199 quiet series, 20 points of each a message (its
    points tracked alone), ends in the episode it gives alone, a point a message."""
    rng = random.Random(5)
    metas = {series_id(s): s for s in (make_series("metric", "m", "svc", host=f"h{i}")
                                       for i in range(200))}  # fmt: skip
    sids = sorted(metas)
    shifted = sids[17]

    def value(sid: int, k: int) -> float:
        return rng.gauss(10, 1) + (9 if sid == shifted and 120 <= k < 126 else 0)

    rounds = [[Obs(sid, k * 10_000, value(sid, k), AGG_LAST) for sid in sids] for k in range(200)]
    together, alone = stage(), stage()
    crowd = []
    for m in range(0, 200, 20):
        together.add([o for r in rounds[m : m + 20] for o in r], metas, m)
        crowd += together.drain().episodes
    solo = []
    for k, r in enumerate(rounds):
        alone.add([o for o in r if o.series_id == shifted], metas, k)
        solo += alone.drain().episodes
    # a drain reports an episode's newest state (a point a message shows each step of it)
    mine = {e.episode_id: e.model_dump() for e in crowd if e.series_id == shifted}
    assert [e["is_open"] for e in mine.values()] == [False] and mine == {
        e.episode_id: e.model_dump() for e in solo
    }
    assert next(iter(mine.values()))["points"] == 6
