"""Episode changes of one batch: opening and close kept, of the growth only the newest."""

from __future__ import annotations

from detectors.episodes import Episode, EpisodeChanges


def change(eid: int, end: int, *, is_open: bool = True) -> Episode:
    return Episode(
        episode_id=eid, series_id=eid // 10, start_ms=0, end_ms=end, is_open=is_open,
        peak_score=0.95, peak_value=1.0, expected=0.0, lower=-1.0, upper=1.0, severity="major",
        kind="metric", name="m", service="s", labels={}, signals=["metric.m"],
        explanation="x", detector="robust", detector_version="3.1", points=end,
    )  # fmt: skip


def test_growth_collapses_to_the_newest_in_place_between_opening_and_close() -> None:
    c = EpisodeChanges()
    c.add(10, change(10, 1), "open")
    c.add(10, change(10, 2), "grow")
    c.add(20, change(20, 5), "grow")  # opened in an earlier batch
    c.add(10, change(10, 3), "grow")
    c.add(10, change(10, 4, is_open=False), "close")
    c.add(11, change(11, 6), "open")  # the same series' next episode, after the close
    got = [(e.episode_id, e.end_ms, e.is_open) for e in c.take()]
    assert got == [(10, 1, True), (10, 3, True), (20, 5, True), (10, 4, False), (11, 6, True)]
    assert c.take() == [] and len(c) == 0


def test_a_superseded_change_is_never_built() -> None:
    built: list[int] = []

    def later(end: int):  # type: ignore[no-untyped-def]
        def make() -> Episode:
            built.append(end)
            return change(10, end)

        return make

    c = EpisodeChanges()
    for end in range(1, 6):
        c.add(10, later(end), "grow")
    assert [e.end_ms for e in c.take()] == [5] and built == [5]
