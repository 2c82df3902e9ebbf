from __future__ import annotations

import random

from detectors.forecast import LagForecaster


def test_lag_forecaster_predicts_breach_once_before_it_happens() -> None:
    rng = random.Random(0)
    f = LagForecaster(threshold=1000.0, horizon_s=120.0)
    events = []
    for i in range(600):
        lag = 40 + rng.gauss(0, 5) + (5.0 * (i - 300) if i > 300 else 0.0)  # +5/s from t=300
        e = f.update(float(i), lag)
        if e is not None:
            events.append((i, e))
    assert len(events) == 1
    at, e = events[0]
    actual = 300 + (1000 - 40) / 5  # t = 492
    assert at < actual and e.current < 1000
    assert abs((at + e.time_to_breach_s) - actual) < 30


def test_lag_forecaster_quiet_on_steady_lag() -> None:
    rng = random.Random(1)
    f = LagForecaster(threshold=200.0, horizon_s=300.0)
    assert all(f.update(float(i), 40 + rng.gauss(0, 8)) is None for i in range(2000))
