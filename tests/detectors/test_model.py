from __future__ import annotations

import pickle
import random
from functools import partial

import pytest

from detectors import DetectorsError
from detectors.model import SeriesModel
from detectors.registry import make_detector
from tests.detectors.fresh import names_from_fresh


def noise(n: int, seed: int = 0, level: float = 100.0, sd: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0, sd) for _ in range(n)]


def model(**kw: object) -> SeriesModel:
    return SeriesModel(partial(make_detector, "robust"), **kw)  # type: ignore[arg-type]


def feed(m: SeriesModel, ys: list[float], t0: int = 0) -> list:
    return [m.update({"y": y, "t": 60.0 * (t0 + i)}) for i, y in enumerate(ys)]


def test_series_model_level_shift_records_one_drift_and_adapts() -> None:
    m = model()
    feed(m, noise(300))
    after = feed(m, noise(300, seed=1, level=130.0), t0=300)
    events = [v.drift for v in after if v.drift is not None]
    assert len(events) == 1
    ev = events[0]
    assert ev.before_mean == pytest.approx(100, abs=2) and ev.after_mean == pytest.approx(
        130, abs=3
    )
    assert not any(v.is_anomaly for v in after[100:])  # the new normal is not flagged forever


def test_a_drift_says_re_baselined_only_when_the_detector_was() -> None:
    """A level shift that keeps alarming re-baselines; a slow change the detector follows
    (the residual drift of a cycle of 94.2 points fitted with a whole number) does not, and
    the drift event's text says which."""
    import math

    rng = random.Random(3)
    sine = [100 + 10 * math.sin(i / 15) + rng.gauss(0, 1) for i in range(1500)]
    step = noise(300) + noise(300, seed=1, level=130.0)
    said: dict[bool, int] = {True: 0, False: 0}
    for ys in (sine, step):
        m = model()
        calls: list[int] = []

        def recorded(last: int, calls: list[int] = calls, inner=m._rebaseline) -> None:  # type: ignore[no-untyped-def]
            calls.append(last)
            inner(last)

        m._rebaseline = recorded  # type: ignore[method-assign]
        for i, y in enumerate(ys):
            v = m.update({"y": y, "t": 60.0 * i})
            if v.drift is None:
                calls.clear()
                continue
            assert ("re-baselined" in v.drift.explanation) == bool(calls), v.drift.explanation
            assert ("follows it already" in v.drift.explanation) != bool(calls)
            said[bool(calls)] += 1
            calls.clear()
    assert said[True] and said[False], said  # both kinds happened


def test_series_model_warmup_uses_fallback_and_flags_outlier() -> None:
    m = model()
    out = feed(m, noise(8) + [150.0])
    assert all(v.fallback for v in out)
    assert out[-1].is_anomaly


def test_series_model_detector_error_falls_back() -> None:
    class Broken:
        name, version = "broken", "0"

        def score_one(self, x):
            raise RuntimeError("boom")

        def learn_one(self, x):
            raise RuntimeError("boom")

        def band(self):
            raise RuntimeError("boom")

    m = SeriesModel(Broken)  # type: ignore[arg-type]
    out = feed(m, noise(40) + [200.0])
    assert all(v.fallback for v in out) and out[-1].is_anomaly


def test_series_model_pickle_restore_matches_uninterrupted_run() -> None:
    ys = noise(400) + [140.0] + noise(200, seed=3, level=120.0)
    whole = model()
    ref = [v.score for v in feed(whole, ys)]
    a = model()
    feed(a, ys[:250])
    b = pickle.loads(pickle.dumps(a))  # noqa: S301 (our own checkpoint)
    assert [v.score for v in feed(b, ys[250:], t0=250)] == ref[250:]
    assert len(pickle.dumps(a)) < 10_000


def test_series_model_shadow_scores_but_never_flags() -> None:
    m = SeriesModel(
        partial(make_detector, "robust"), shadow=partial(make_detector, "zscore", z_at=1.5)
    )
    out = feed(m, noise(300))
    assert all(v.shadow_score is not None for v in out)
    assert any(v.shadow_score >= 0.9 for v in out)  # the shadow would have alerted...
    assert not any(v.is_anomaly for v in out[20:])  # ...but only the active model decides


@pytest.mark.parametrize("label", ["not_anomaly", "expected"])
def test_apply_feedback_normal_labels_stop_pattern_alerting(label: str) -> None:
    m = model()
    feed(m, noise(200))
    assert feed(m, [108.0], t0=200)[0].is_anomaly
    m.apply_feedback(label)
    feed(m, noise(20, seed=5), t0=201)
    assert not feed(m, [108.0], t0=221)[0].is_anomaly
    assert feed(m, [130.0], t0=222)[0].is_anomaly  # a bigger deviation still alerts


def test_apply_feedback_anomaly_restores_alerting() -> None:
    m = model()
    feed(m, noise(200))
    feed(m, [108.0], t0=200)
    m.apply_feedback("not_anomaly")
    assert not feed(m, [108.0], t0=201)[0].is_anomaly
    m.apply_feedback("anomaly")
    assert feed(m, [108.0], t0=202)[0].is_anomaly


def test_apply_feedback_new_normal_rebaselines_now() -> None:
    m, ref = model(), model()
    for x in (m, ref):
        feed(x, noise(200))
        feed(x, [125.0, 124.0, 126.0] * 2, t0=200)  # too few to adapt by itself
    m.apply_feedback("new_normal")
    assert not feed(m, [125.5], t0=206)[0].is_anomaly
    assert feed(ref, [125.5], t0=206)[0].is_anomaly


def test_apply_feedback_unknown_label_raises() -> None:
    with pytest.raises(DetectorsError, match="unknown label"):
        model().apply_feedback("maybe")


WARM_SCRIPT = """
import math
import sys
from numba.core.dispatcher import Dispatcher
from detectors.model import warm_up
from detectors.registry import model_factory
from streams.detect import DetectStage
from streams.series import AGG_LAST, Obs, make_series, series_id

make = model_factory()
if sys.argv[1] == "warm":
    warm_up(make)
loads = []
real = Dispatcher._compile_for_args

def spy(self, *args, **kw):
    loads.append(self.py_func.__name__)
    return real(self, *args, **kw)

Dispatcher._compile_for_args = spy
s = make_series("metric", "cpu", "svc", host="a")
stage = DetectStage(make)
ys = [10 + 3 * math.sin(i * 2 * math.pi / 24.4) + (15 if 250 < i < 270 else 0) for i in range(400)]
stage.add([Obs(series_id(s), i * 10_000, y, AGG_LAST) for i, y in enumerate(ys)],
          {series_id(s): s}, "m1")
assert stage.drain().rows == 400
print(",".join(sorted(set(loads))))
"""


@pytest.mark.parametrize("warm", [True, False])
def test_after_warm_up_a_workers_first_message_loads_no_compiled_code(warm: bool) -> None:
    """numba loads (or compiles) a function on its first call: the warm-up takes that cost
    at start, not in the first verdicts' latency (a fresh interpreter each: loaded code
    stays loaded)."""
    loads = names_from_fresh(WARM_SCRIPT, warm)
    if warm:
        assert loads == set()
    else:  # the check can see a load: without the warm-up the first message pays it, the
        # re-fit's profile at a fractional length too
        assert {"run", "median_profile"} <= loads
