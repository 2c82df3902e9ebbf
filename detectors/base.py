"""The detector contract: one object per series, scoring a point *before* learning it.

`score_one(x)` is pure (never learns) and returns a calibrated score in [0, 1]: higher is
more anomalous, and one threshold means the same on every series. `learn_one(x)` updates in
place. `x` is river-style: {"y": value, "t": epoch seconds}. `band()` tells what the model
expects next, for explanations. Objects must pickle (checkpoints) and be deterministic.
Optional: `rebaseline(last=None)` takes the last points as the new normal (drift, feedback);
a detector without it is rebuilt instead. Generic checks: `detectors.checks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol, runtime_checkable


class Band(NamedTuple):
    expected: float
    lower: float
    upper: float


@runtime_checkable
class Detector(Protocol):
    name: str
    version: str

    def score_one(self, x: Mapping[str, float]) -> float: ...

    def learn_one(self, x: Mapping[str, float]) -> None: ...

    def band(self) -> Band: ...
