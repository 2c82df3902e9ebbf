"""Source offsets skipped between two messages the normalize agents took are counted and
warned about, once a minute a partition; replays after a seek and a new owner's start are
not skipped offsets."""

from __future__ import annotations

import logging

import pytest
from faust.types import TP

from streams.gaps import OffsetGaps
from tests.stormwatch.test_console import Clock


def test_consecutive_offsets_skip_nothing() -> None:
    gaps = OffsetGaps()
    assert [gaps.see("raw", 0, o) for o in range(5)] == [0] * 5
    assert [gaps.see("raw", 1, o) for o in (7, 8, 9)] == [0] * 3  # first seen: a start
    assert gaps.skipped == 0


def test_a_hole_is_counted_and_warned_with_its_range(caplog: pytest.LogCaptureFixture) -> None:
    gaps = OffsetGaps()
    with caplog.at_level(logging.WARNING, logger="stormwatch.normalize"):
        for o in (0, 1, 2, 6, 7):
            gaps.see("telemetry.raw", 3, o)
    assert gaps.skipped == 3
    [rec] = caplog.records
    assert "telemetry.raw[3]: offsets 3..5 were never normalized" in rec.getMessage()


def test_a_seek_back_is_a_replay_not_a_hole() -> None:
    gaps = OffsetGaps()
    for o in (10, 11, 12, 4, 5, 6, 7):
        assert gaps.see("raw", 0, o) == 0
    assert gaps.see("raw", 0, 9) == 1  # past the replay's own last offset
    assert gaps.skipped == 1


def test_a_revoked_partition_starts_again_where_it_is_read_next() -> None:
    gaps = OffsetGaps()
    gaps.see("raw", 0, 5)
    gaps.see("raw", 1, 5)
    gaps.forget({TP("raw", 0)})
    assert gaps.see("raw", 0, 900) == 0  # another worker read 6..899 meanwhile
    assert gaps.see("raw", 1, 900) == 894  # still ours: those were skipped


def test_warnings_are_rate_limited_per_partition_and_the_count_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    gaps = OffsetGaps(every_s=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="stormwatch.normalize"):
        for o in range(0, 20, 2):  # a hole of one after every message
            gaps.see("raw", 0, o)
            gaps.see("raw", 1, o)
        assert len(caplog.records) == 2  # one a partition
        clock.t += 60
        gaps.see("raw", 0, 21)
    assert len(caplog.records) == 3
    assert gaps.skipped == 9 + 9 + 2
    assert "(20 skipped in all on this worker)" in caplog.records[-1].getMessage()


def test_a_head_skipped_past_where_reading_began_is_counted() -> None:
    """Where a worker began reading a partition is known (its committed offset, else its
    first retained): a first message past it means the messages before it were skipped."""
    gaps = OffsetGaps()
    gaps.start("raw", 0, 0)
    assert gaps.see("raw", 0, 1) == 1  # offset 0 never came
    gaps.start("raw", 1, 40)
    assert gaps.see("raw", 1, 40) == 0
    gaps.start("raw", 2, None)  # unknown: the head goes unchecked
    assert not gaps.tracks("raw", 2)
    assert gaps.see("raw", 2, 7) == 0
    assert gaps.skipped == 1
