"""The quality benchmark's scoring: a flag in the anomaly-free probation is a young series'
false alarm, counted apart from F1's true and false positives."""

from __future__ import annotations

from benchmarks.quality import Tally, tally_case
from benchmarks.suite import PROBATION, Case


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
