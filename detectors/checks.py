"""Generic contract checks, run on every registered detector (river's `checks` idea).

Each check takes a factory (fresh detector per call) and raises AssertionError with a reason.
The quality floor is event-free and cheap: ROC AUC of point scores on a seeded series with
injected spikes and a level shift, so a detector that scores noise as well as anomalies fails.
"""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable

from detectors.base import Band, Detector

Factory = Callable[[], Detector]


def _require(ok: object, reason: str) -> None:
    if not ok:
        raise AssertionError(reason)


def seeded_series(seed: int = 0, n: int = 600) -> tuple[list[dict[str, float]], set[int]]:
    """A seasonal noisy series with spikes, dips and a level shift; the anomalous indices."""
    rng = random.Random(seed)  # noqa: S311 (seeded test data)
    xs, bad = [], set()
    for i in range(n):
        y = 100 + 10 * math.sin(2 * math.pi * i / 48) + rng.gauss(0, 1)
        if i in (250, 330, 410):
            y += 12 if i != 330 else -12
            bad.add(i)
        if i >= 480:
            y += 15
            if i < 485:
                bad.add(i)
        xs.append({"y": y, "t": 1_700_000_000.0 + 60 * i})
    return xs, bad


def run(det: Detector, xs: list[dict[str, float]]) -> list[float]:
    """Score then learn each point, as the stream does."""
    out = []
    for x in xs:
        out.append(det.score_one(x))
        det.learn_one(x)
    return out


def check_interface(make: Factory) -> None:
    det = make()
    _require(isinstance(det, Detector), "does not implement the Detector protocol")
    _require(det.name and det.version, "name and version are required")
    _require(isinstance(det.band(), Band), "band() must return a Band")


def check_scores_in_unit_interval(make: Factory) -> None:
    xs, _ = seeded_series(1)
    xs += [{"y": v, "t": 2e9 + i} for i, v in enumerate((0.0, 1e12, -1e12, 0.0, 5.0) * 3)]
    for i, s in enumerate(run(make(), xs)):
        _require(0.0 <= s <= 1.0 and not math.isnan(s), f"score {s} at point {i} not in [0, 1]")


def check_score_is_pure(make: Factory) -> None:
    """score_one must not learn: scoring twice gives the same score and state."""
    xs, _ = seeded_series(2)
    det = make()
    run(det, xs[:300])
    before = pickle.dumps(det)
    a, b = det.score_one(xs[300]), det.score_one(xs[300])
    _require(a == b, "scoring the same point twice gave different scores")
    _require(pickle.dumps(det) == before, "score_one changed the detector's state")


def check_causal(make: Factory) -> None:
    """The score of point i depends only on points <= i."""
    xs, _ = seeded_series(3)
    ys = [dict(x) for x in xs]
    for x in ys[400:]:
        x["y"] = -x["y"] * 7
    a, b = run(make(), xs), run(make(), ys)
    _require(a[:400] == b[:400], "changing later points changed earlier scores")


def check_pickle_roundtrip(make: Factory) -> None:
    """A restored checkpoint scores the rest exactly as the uninterrupted detector."""
    xs, _ = seeded_series(4)
    for cut in (5, 100, 300):
        det = make()
        run(det, xs[:cut])
        clone = pickle.loads(pickle.dumps(det))  # noqa: S301 (our own bytes)
        _require(run(det, xs[cut:]) == run(clone, xs[cut:]), f"restore at {cut} diverged")


def check_deterministic(make: Factory) -> None:
    xs, _ = seeded_series(5)
    _require(run(make(), xs) == run(make(), xs), "two fresh detectors disagree")


def roc_auc(scores: list[float], positive: set[int], skip: int = 0) -> float:
    """Probability that an anomalous point outscores a normal one (ties count half)."""
    pos = [s for i, s in enumerate(scores) if i >= skip and i in positive]
    neg = [s for i, s in enumerate(scores) if i >= skip and i not in positive]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def check_quality_floor(make: Factory, floor: float = 0.9) -> None:
    xs, bad = seeded_series(6)
    auc = roc_auc(run(make(), xs), bad, skip=200)
    _require(auc >= floor, f"ROC AUC {auc:.3f} below the floor {floor}")


CHECKS = (
    check_interface,
    check_scores_in_unit_interval,
    check_score_is_pure,
    check_causal,
    check_pickle_roundtrip,
    check_deterministic,
    check_quality_floor,
)
