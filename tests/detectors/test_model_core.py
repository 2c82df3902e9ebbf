"""The compiled model core against its references: river's Page-Hinkley test, and the
per-point `SeriesModel.update` that the batch kernel must reproduce exactly."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from river import drift

from benchmarks.suite import make_suite
from detectors import model_core as core
from detectors import robust_core as rc
from detectors.model import SeriesModel
from detectors.registry import make_detector


@pytest.mark.parametrize("mode", ["both", "up"])
def test_page_hinkley_flags_the_points_rivers_does(mode: str) -> None:
    rng = random.Random(3)
    xs = [rng.gauss(0, 1) + (4 if 300 < i < 500 else 0) - (3 if i > 800 else 0)
          for i in range(1200)]  # fmt: skip
    ref = drift.PageHinkley(min_instances=20, threshold=40.0, mode=mode)
    m = np.zeros(core.SIZE)
    core.ph_reset(m, core.PH_LEVEL)
    ours, theirs = [], []
    for x in xs:
        x = abs(x) if mode == "up" else x
        ref.update(x)
        theirs.append(ref.drift_detected)
        ours.append(core.ph_update(m, core.PH_LEVEL, x, mode == "up"))
    assert sum(theirs) >= 2  # the stream has drifts to find
    assert ours == theirs


def _verdicts(model: SeriesModel, t: list[float], y: list[float], sizes: list[int]) -> list:
    out, i = [], 0
    for k in sizes:
        if i >= len(y):
            break
        v = model.update_batch(np.array(t[i : i + k]), np.array(y[i : i + k]))
        drift_at = dict(v.drift)
        for j in range(len(v.score)):
            d = drift_at.get(j)
            out.append((float(v.score[j]), *v.band[j].tolist(), int(v.flags[j]),
                        d.explanation if d else None))  # fmt: skip
        i += k
    return out


def _point_by_point(case, **params) -> list:  # type: ignore[no-untyped-def]
    one, ref = SeriesModel(lambda: make_detector("robust", **params)), []
    for t, y in zip(case.t, case.y, strict=True):
        v = one.update({"y": y, "t": t})
        flags = (core.FLAGGED if v.is_anomaly else 0) | (core.FALLBACK if v.fallback else 0)
        flags |= v.why << core.WHY_SHIFT  # the same reason either way
        ref.append((v.score, *v.band, flags, v.drift.explanation if v.drift else None))
    return ref


def _assert_batches_match(case, rng: random.Random, **params) -> None:  # type: ignore[no-untyped-def]
    ref = _point_by_point(case, **params)
    sizes = [rng.choice((1, 2, 7, 50, 300)) for _ in range(len(case.y))]
    got = _verdicts(SeriesModel(lambda: make_detector("robust", **params)), case.t, case.y, sizes)
    assert len(got) == len(ref)
    for a, b in zip(got, ref, strict=True):
        assert a[4:] == b[4:], case.name
        assert all(x == pytest.approx(z, rel=1e-12) or (math.isnan(x) and math.isnan(z))
                   for x, z in zip(a[:4], b[:4], strict=True)), case.name  # fmt: skip


def test_batches_of_any_size_score_as_point_by_point() -> None:
    cases = [c for c in make_suite(0, 1) if c.name.startswith(("level_shift", "spike", "gap"))]
    rng = random.Random(0)
    for case in cases[:12]:
        _assert_batches_match(case, rng)


def test_a_drift_settled_at_a_period_search_scores_as_point_by_point(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The kernel hands its caller a drift event to build, and a period search to run unless
    it ran it itself; where both fall on one point (these suite cases have one each, the
    search done in the kernel) the batch still scores as `SeriesModel.update` does, event
    included."""
    names = ("spike/noise=0.1/period=96/seed=17", "dip/noise=0.02/period=96/seed=23",
             "drift/noise=0.1/period=96/seed=88")  # fmt: skip
    cases = [c for c in make_suite(0) if c.name in names]
    both, run = [], core.run

    def counting(*args):  # type: ignore[no-untyped-def]
        j, what, kind, found = run(*args)
        searched_here = what == core.EVENT and args[0][rc.NBUF] in rc.DETECT_AT
        both.append(kind > 0 and (what == core.SEARCH or searched_here))
        return j, what, kind, found

    monkeypatch.setattr(core, "run", counting)
    rng = random.Random(1)
    for case in cases:
        _assert_batches_match(case, rng)
    assert len(cases) == 3 and sum(both) >= 3  # the cases still reach what they test


@pytest.mark.parametrize(
    ("cycle", "max_period", "handed"),
    [
        (94.0, 288, [-1]),  # five searches find nothing (48-192 points); numpy's FFT at 288
        (24.0, 288, [24]),  # found at 72 points by the kernel: the object is told, not re-asked
        (0.0, 40, [0]),  # no cycle: the search at 144 points (3 x 40) stops the buffering
    ],
)
def test_a_young_series_searches_in_the_kernel_and_scores_as_point_by_point(
    monkeypatch, cycle: float, max_period: int, handed: list[int]
) -> None:  # type: ignore[no-untyped-def]
    """Searches that find no cycle and leave nothing else to do stay compiled; the object gets
    a search that finds one (with it), one past the lag-by-lag size, or one that ends the
    buffering (with its result). Either way the batch scores as `update` point by point."""
    rng = random.Random(4)
    t = [1.7e9 + 60.0 * i for i in range(400)]
    y = [50 + (10 * math.sin(2 * math.pi * i / cycle) if cycle else 0) + rng.gauss(0, 1)
         for i in range(400)]  # fmt: skip
    case = type(make_suite(0)[0])(f"sine/{cycle}", t, y, [], cycle or None)
    searches, run = [], core.run

    def recording(*args):  # type: ignore[no-untyped-def]
        j, what, kind, found = run(*args)
        if what == core.SEARCH:
            searches.append(found)
        return j, what, kind, found

    monkeypatch.setattr(core, "run", recording)
    _assert_batches_match(case, random.Random(2), max_period=max_period)
    assert searches == handed
