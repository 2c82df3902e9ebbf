"""Multivariate detection per service: a pyod model over a service's signals.

The model (ECOD by default; COPOD or IForest) is refit on a sliding window of recent vectors
every `refit_every` vectors, and each new vector is scored online against the last fit,
before it joins the window (causal). The raw pyod score is calibrated like every other
detector: a robust z-score against the fit's own training scores, through `z_to_score`.
Contributions say which signals made the vector unusual: each signal's robust z against
the window, as shares of the total (ECOD's per-dimension tail view, model-independent);
the largest of them also bounds the score from below, as pyod's tail scores saturate.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from detectors import DetectorsError
from detectors.calibrate import z_to_score

MODELS = ("ecod", "copod", "iforest")


class MultiVerdict(NamedTuple):
    score: float
    contributions: dict[str, float]  # signal -> share of the unusualness, summing to 1


def _make_model(name: str, seed: int) -> Any:
    if name == "ecod":
        from pyod.models.ecod import ECOD

        return ECOD()
    if name == "copod":
        from pyod.models.copod import COPOD

        return COPOD()
    from pyod.models.iforest import IForest

    return IForest(n_estimators=50, random_state=seed)


class ServiceModel:
    """One per service. `update(vector)` scores then learns; missing signals are carried."""

    name = "multivariate"
    version = "1"

    def __init__(
        self,
        signals: Sequence[str],
        *,
        model: str = "ecod",
        window: int = 500,
        refit_every: int = 50,
        min_fit: int = 60,
        seed: int = 0,
    ) -> None:
        if model not in MODELS:
            raise DetectorsError(f"unknown model {model!r}; use one of {', '.join(MODELS)}")
        if len(signals) < 2:
            raise DetectorsError("a multivariate model needs at least two signals")
        if not 10 <= min_fit <= window or refit_every < 1:
            raise DetectorsError("need 10 <= min_fit <= window and refit_every >= 1")
        self.signals = list(signals)
        self.model = model
        self.window = window
        self.refit_every = refit_every
        self.min_fit = min_fit
        self.seed = seed
        self.rows_: deque[tuple[float, ...]] = deque(maxlen=window)
        self.last_: list[float] = [0.0] * len(signals)
        self.since_fit_ = 0
        self.fitted_: Any = None
        self.centre_ = 0.0  # median and robust spread of the fit's training scores
        self.spread_ = 1.0
        self.med_: np.ndarray | None = None  # per-signal median and MAD of the window
        self.mad_: np.ndarray | None = None

    def _vector(self, values: Mapping[str, float]) -> tuple[float, ...]:
        for i, s in enumerate(self.signals):
            v = values.get(s)
            if v is not None and v == v:
                self.last_[i] = float(v)
        return tuple(self.last_)

    def _fit(self) -> None:
        x = np.asarray(self.rows_, dtype=float)
        m = _make_model(self.model, self.seed)
        m.fit(x)
        train = np.asarray(m.decision_scores_, dtype=float)
        self.centre_ = float(np.median(train))
        self.spread_ = max(float(1.4826 * np.median(np.abs(train - self.centre_))), 1e-9)
        self.med_ = np.median(x, axis=0)
        mad = 1.4826 * np.median(np.abs(x - self.med_), axis=0)
        self.mad_ = np.maximum(mad, 1e-9 + 1e-3 * np.abs(self.med_))
        self.fitted_ = m
        self.since_fit_ = 0

    def update(self, values: Mapping[str, float]) -> MultiVerdict:
        vec = self._vector(values)
        verdict = MultiVerdict(0.0, {})
        if self.fitted_ is not None and self.med_ is not None and self.mad_ is not None:
            x = np.asarray([vec], dtype=float)
            raw = float(self.fitted_.decision_function(x)[0])
            z = np.abs(x[0] - self.med_) / self.mad_
            # the model sees joint oddities inside the ranges; its tail scores saturate
            # beyond the window's extremes, where the per-signal robust z still measures
            score = z_to_score(max((raw - self.centre_) / self.spread_, float(z.max())))
            total = float(z.sum())
            contrib = {
                s: round(float(v) / total, 4) if total > 0 else 1 / len(z)
                for s, v in zip(self.signals, z, strict=True)
            }
            verdict = MultiVerdict(score, contrib)
        self.rows_.append(vec)
        self.since_fit_ += 1
        if len(self.rows_) >= self.min_fit and (
            self.fitted_ is None or self.since_fit_ >= self.refit_every
        ):
            self._fit()
        return verdict


def warm_up(make: Callable[[list[str]], ServiceModel]) -> None:
    """Fit and score a made-up service once, at start. pyod's import and its first fit take
    ~1.8 s here; the first service to reach `min_fit` buckets, minutes into a run, would
    otherwise stall the worker's event loop (every stage's latency) that long."""
    model = make(["a", "b"])
    rng = np.random.default_rng(0)
    for _ in range(model.min_fit + 1):
        model.update({"a": float(rng.normal()), "b": float(rng.normal())})
