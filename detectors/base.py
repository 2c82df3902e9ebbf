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
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

ARRAYS = "_arrays"  # a packed state's key: its numpy arrays as (dtype, shape, bytes)


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


def pack_arrays(state: Mapping[str, Any]) -> dict[str, Any]:
    """A detector's `__dict__` for pickling, its numpy arrays as raw bytes. Pickle spends
    ~4.6 us on each array and ~0.3 on its bytes; a series' model holds seven, and a
    checkpoint pickles every series it scored, in the event loop."""
    out: dict[str, Any] = {}
    arrays: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    for k, v in state.items():
        if type(v) is np.ndarray:
            arrays[k] = (v.dtype.str, v.shape, v.tobytes())
        else:
            out[k] = v
    out[ARRAYS] = arrays
    return out


def unpack_arrays(state: Mapping[str, Any]) -> dict[str, Any]:
    """`pack_arrays` undone (writable arrays of their own); a state pickled before packing
    (arrays as objects) is returned as it is."""
    out = dict(state)
    for k, (dtype, shape, data) in out.pop(ARRAYS, {}).items():
        out[k] = np.frombuffer(data, dtype).reshape(shape).copy()
    return out
