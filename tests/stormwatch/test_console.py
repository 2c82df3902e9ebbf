"""`stormwatch up`'s episode lines: readable during a storm, never a flood."""

from __future__ import annotations

import io

from stormwatch.pipeline import EpisodePrinter
from tests.detectors.test_episodes import change


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_burst_is_capped_and_what_was_held_back_is_counted() -> None:
    out, clock = io.StringIO(), Clock()
    show = EpisodePrinter(out, per_s=2.0, burst=3.0, clock=clock)
    show([change(i, 1) for i in range(10)])
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all("ANOMALY" in x for x in lines)
    show([change(3, 2)])  # held back while it opened: its growth is no new line either
    clock.t = 1.0  # two lines' worth of time
    show([change(i, 3, is_open=False) for i in range(2)])
    lines = out.getvalue().splitlines()[3:]
    assert lines[0] == "... 7 more episode lines not shown (all are stored: `stormwatch top`)"
    assert [("cleared" in x) for x in lines[1:]] == [True, True]


def test_an_open_episode_is_shown_once_and_its_clearing_once() -> None:
    out = io.StringIO()
    show = EpisodePrinter(out)
    show([change(1, 1), change(1, 2)])
    show([change(1, 3), change(1, 4, is_open=False)])
    assert [x.split()[1] for x in out.getvalue().splitlines()] == ["ANOMALY", "cleared"]


def test_an_episode_whose_opening_was_held_back_clears_unseen_too() -> None:
    """A "cleared" line with no ANOMALY line before it would puzzle: both are counted."""
    out, clock = io.StringIO(), Clock()
    show = EpisodePrinter(out, per_s=2.0, burst=1.0, clock=clock)
    show([change(1, 1), change(2, 1)])  # 2's opening is held back
    clock.t = 10.0  # tokens for both clearings
    show([change(2, 3, is_open=False), change(1, 3, is_open=False)])
    lines = out.getvalue().splitlines()
    assert [x.split()[1] for x in lines if not x.startswith("...")] == ["ANOMALY", "cleared"]
    assert lines[1] == "... 2 more episode lines not shown (all are stored: `stormwatch top`)"
