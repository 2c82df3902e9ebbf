from __future__ import annotations

import pickle
import random

import pytest

from detectors import DetectorsError
from detectors.multivariate import ServiceModel
from tests.detectors.fresh import names_from_fresh

SIGNALS = ["latency_ms", "error_rate", "throughput", "queue_lag", "db_latency_ms"]


def normal(rng: random.Random) -> dict[str, float]:
    return {
        "latency_ms": rng.gauss(90, 5), "error_rate": abs(rng.gauss(0.005, 0.002)),
        "throughput": rng.gauss(20, 2), "queue_lag": rng.gauss(40, 5),
        "db_latency_ms": rng.gauss(4, 0.3),
    }  # fmt: skip


@pytest.mark.parametrize("model", ["ecod", "copod", "iforest"])
def test_service_model_flags_joint_outlier_and_names_signal(model: str) -> None:
    rng = random.Random(0)
    m = ServiceModel(SIGNALS, model=model, window=300, refit_every=100)
    scores = [m.update(normal(rng)).score for _ in range(400)]
    bad = normal(rng) | {"db_latency_ms": 12.0}
    v = m.update(bad)
    assert v.score >= 0.9
    assert max(v.contributions, key=v.contributions.get) == "db_latency_ms"
    assert sum(s >= 0.9 for s in scores[100:]) <= 6  # quiet on normal vectors


def test_service_model_refits_on_schedule_and_pickles() -> None:
    rng = random.Random(1)
    m = ServiceModel(SIGNALS, window=200, refit_every=50, min_fit=60)
    fits = []
    for _ in range(200):
        before = m.fitted_
        m.update(normal(rng))
        fits.append(m.fitted_ is not before)
    assert sum(fits) == 3  # at 60, 110, 160 vectors
    clone = pickle.loads(pickle.dumps(m))  # noqa: S301 (our own state)
    x = normal(rng)
    assert clone.update(x).score == m.update(x).score


def test_service_model_rejects_unknown_model() -> None:
    with pytest.raises(DetectorsError, match="unknown model"):
        ServiceModel(SIGNALS, model="lof")


WARM_SCRIPT = """
import sys
import numpy as np
from detectors.multivariate import ServiceModel, warm_up

def make(signals):
    return ServiceModel(signals, model="ecod", window=360, refit_every=30)

if sys.argv[1] == "warm":
    warm_up(make)
model = make(["latency_ms", "error_rate", "throughput"])
rng = np.random.default_rng(1)
before = set(sys.modules)
for _ in range(model.min_fit + 1):  # the last update fits
    model.update({s: float(rng.normal()) for s in model.signals})
assert model.fitted_ is not None
print(",".join(sorted(m for m in set(sys.modules) - before if m.startswith("pyod"))))
"""


@pytest.mark.parametrize("warm", [True, False])
def test_after_warm_up_a_services_first_fit_imports_nothing(warm: bool) -> None:
    """pyod's import and first fit (~1.8 s) happen at start, not on the event loop when the
    first service reaches `min_fit` buckets (a fresh interpreter each)."""
    imported = names_from_fresh(WARM_SCRIPT, warm)
    if warm:
        assert imported == set()
    else:  # the check can see an import: without the warm-up the first fit pays it
        assert "pyod.models.ecod" in imported
