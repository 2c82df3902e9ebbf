"""The quality benchmark's scoring: a flag in the anomaly-free probation is a young series'
false alarm, counted apart from F1's true and false positives."""

from __future__ import annotations

import pytest

from benchmarks.quality import Tally, main, tally_case
from benchmarks.suite import KINDS, NOISES, PROBATION, Case, make_suite


def test_probation_flags_count_as_young_false_events_not_as_scored_positives() -> None:
    n = PROBATION + 200
    case = Case("spike/noise=0.1/period=0/seed=0", [float(i) for i in range(n)], [0.0] * n,
                [(PROBATION + 50, PROBATION + 60)], 0)  # fmt: skip
    early = [5, 8, 40, PROBATION - 3]  # three events: 5 and 8 merge; the last ends probation
    late = [PROBATION + 1, PROBATION + 52, PROBATION + 150]
    tally = Tally()
    tally_case(tally, case, early + late)
    assert tally.young == 3
    assert (tally.tp, tally.fp, tally.events, tally.delays) == (1, 2, 1, [2])


def test_the_suite_takes_cycles_between_whole_points() -> None:
    cases = make_suite(0, 1, (24.4,))
    assert len(cases) == len(KINDS) * len(NOISES)
    breaks = [c for c in cases if c.name.startswith("season_break")]
    assert breaks and all(c.period == 24.4 for c in breaks)
    for a, b in (w for c in breaks for w in c.windows):  # two cycles inverted, whole indices
        assert isinstance(a, int) and isinstance(b, int) and b - a == 48


@pytest.mark.parametrize("bad", ["24,x", "0,2", ""])
def test_a_bad_periods_option_is_refused_with_its_reason(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--periods", bad])
    assert e.value.code == 2 and "--periods" in capsys.readouterr().err
