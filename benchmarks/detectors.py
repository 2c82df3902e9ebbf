"""Cost per registered detector: `python -m benchmarks.detectors`.

Microseconds per point for score + learn (the object API, point by point) over a seeded
seasonal series, and bytes of state per series after it: pickled size (what a checkpoint
stores) and heap measured with tracemalloc (what a worker holds). Then the stream's call
pattern: `SeriesModel.update_batch` over batches of the series' points.
"""

from __future__ import annotations

import argparse
import gc
import pickle
import time
import tracemalloc
from collections.abc import Callable
from functools import partial

import numpy as np

from detectors.base import Detector
from detectors.checks import seeded_series
from detectors.model import SeriesModel
from detectors.registry import DEFAULT, REGISTRY, make_detector


class _Composite:
    """SeriesModel(default) behind the Detector calls the benchmark makes (update = both)."""

    def __init__(self) -> None:
        self.model = SeriesModel(partial(make_detector, DEFAULT))

    def score_one(self, x: dict[str, float]) -> float:
        return self.model.update(x).score

    def learn_one(self, x: dict[str, float]) -> None:
        pass


def per_point_us(make: Callable[[], Detector], xs: list[dict[str, float]], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        det = make()
        t0 = time.perf_counter()
        for x in xs:
            det.score_one(x)
            det.learn_one(x)
        best = min(best, time.perf_counter() - t0)
    return best / len(xs) * 1e6


def batch_us(xs: list[dict[str, float]], batch: int, rounds: int) -> float:
    """Per point, `update_batch` over consecutive batches of `batch` points."""
    ts = np.array([x["t"] for x in xs])
    ys = np.array([x["y"] for x in xs])
    best = float("inf")
    for _ in range(rounds):
        model = SeriesModel(partial(make_detector, DEFAULT))
        t0 = time.perf_counter()
        for i in range(0, len(xs), batch):
            model.update_batch(ts[i : i + batch], ys[i : i + batch])
        best = min(best, time.perf_counter() - t0)
    return best / len(xs) * 1e6


def state_bytes(make: Callable[[], Detector], xs: list[dict[str, float]]) -> tuple[int, int]:
    """(pickled bytes, heap bytes) of one detector after learning `xs`."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    det = make()
    for x in xs:
        det.score_one(x)
        det.learn_one(x)
    gc.collect()
    heap = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return len(pickle.dumps(det)), heap


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    xs, _ = seeded_series(0, args.points)
    print(f"{args.points} points per series (seasonal, period 48), best of {args.rounds} rounds")
    print(f"{'detector':<12} {'us/point':>9} {'pickled B':>10} {'heap B':>8}")
    for name in sorted(REGISTRY):

        def make(name: str = name) -> Detector:
            return make_detector(name)

        us = per_point_us(make, xs, args.rounds)
        pickled, heap = state_bytes(make, xs)
        print(f"{name:<12} {us:>9.2f} {pickled:>10} {heap:>8}")
    us = per_point_us(_Composite, xs, args.rounds)  # type: ignore[arg-type]
    pickled, heap = state_bytes(_Composite, xs)  # type: ignore[arg-type]
    print(f"{'SeriesModel':<12} {us:>9.2f} {pickled:>10} {heap:>8}  (default + drift + fallback)")
    for batch in (1, 10, 100):
        us = batch_us(xs, batch, args.rounds)
        print(f"{'  batch ' + str(batch):<12} {us:>9.2f}  (SeriesModel.update_batch, compiled)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
