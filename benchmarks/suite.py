"""A seeded, labelled synthetic suite: the cases every detector is measured on.

Each case is one series (timestamps, values) with labelled anomaly windows. Kinds: spikes,
dips, level shifts, variance changes, slow drifts, seasonal pattern breaks, stuck values;
gaps (missing stretches of timestamps) are a robustness case with no label: firing on them
costs precision. Noise levels and seasonalities vary; the same seed gives the same suite.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

KINDS = ("spike", "dip", "level_shift", "variance", "drift", "season_break", "stuck", "gap")
NOISES = (0.02, 0.05, 0.1)  # noise sd relative to the series level
PERIODS = (0, 24, 96)  # 0: no seasonality
LENGTH = 1200
PROBATION = 300  # points before any anomaly; detections here are not counted (as NAB)


@dataclass(frozen=True)
class Case:
    name: str
    t: list[float]
    y: list[float]
    windows: list[tuple[int, int]]  # [start, end] indices, inclusive; a hit anywhere counts
    period: float


def _base(rng: random.Random, n: int, period: float, noise: float) -> tuple[list[float], float]:
    level = rng.choice((1.0, 50.0, 1000.0))
    amp = 0.3 if period else 0.0
    phase = rng.random() * 2 * math.pi
    heavy = rng.random() < 0.5  # half the cases have heavy-tailed (Student t, 4 dof) noise
    y = []
    for i in range(n):
        s = math.sin(2 * math.pi * i / period + phase) if period else 0.0
        e = rng.gauss(0, 1)
        if heavy:
            e = e / math.sqrt(sum(rng.gauss(0, 1) ** 2 for _ in range(4)) / 4) / math.sqrt(2)
        y.append(level * (1.0 + amp * s + noise * e))
    return y, level


def make_case(kind: str, noise: float, period: float, seed: int) -> Case:
    """One series of `LENGTH` points with one or two anomalies of `kind` after the probation."""
    rng = random.Random(seed)
    y, level = _base(rng, LENGTH, period, noise)
    t = [1_700_000_000.0 + 60.0 * i for i in range(LENGTH)]
    sd = noise * level
    windows: list[tuple[int, int]] = []
    starts = [rng.randint(PROBATION + 50, 650), rng.randint(800, 1050)]
    if kind in ("level_shift", "variance", "drift", "stuck"):
        starts = starts[:1]  # a lasting change: one per series
    for a in starts:
        if kind in ("spike", "dip"):
            sign = 1 if kind == "spike" else -1
            width = rng.randint(1, 3)
            for i in range(a, a + width):
                y[i] += sign * rng.uniform(6, 10) * sd
            windows.append((a, a + 10))
        elif kind == "level_shift":
            d = rng.choice((-1, 1)) * rng.uniform(4, 8) * sd
            for i in range(a, LENGTH):
                y[i] += d
            windows.append((a, a + 40))
        elif kind == "variance":
            f = rng.uniform(4, 6)
            for i in range(a, min(LENGTH, a + 200)):
                y[i] += math.sqrt(f * f - 1) * rng.gauss(0, sd)
            windows.append((a, a + 40))
        elif kind == "drift":
            total = rng.choice((-1, 1)) * rng.uniform(10, 15) * sd
            ramp = 150
            for i in range(a, LENGTH):
                y[i] += total * min(1.0, (i - a) / ramp)
            windows.append((a, a + ramp))
        elif kind == "season_break":
            if period == 0:  # no season to break: a burst of oscillation instead
                for i in range(a, a + 30):
                    y[i] += 5 * sd * (1 if (i - a) % 2 else -1)
                windows.append((a, a + 30))
                continue
            # the cycle inverts for two periods (e.g. a nightly job running at noon)
            end = min(LENGTH, a + int(2 * period))
            for i in range(a, end):
                y[i] -= 2 * level * 0.3 * math.sin(2 * math.pi * i / period)
            windows.append((a, end))
        elif kind == "stuck":
            v = y[a - 1]
            for i in range(a, a + 60):
                y[i] = v
            windows.append((a, a + 60))
        elif kind == "gap":
            cut = rng.randint(20, 120)
            del t[a : a + cut], y[a : a + cut]
    return Case(f"{kind}/noise={noise}/period={period}/seed={seed}", t, y, windows, period)


def make_suite(seed: int = 0, repeats: int = 2, periods: tuple[float, ...] = PERIODS) -> list[Case]:
    """Every kind × noise × period, `repeats` times, seeded. `periods` may hold cycles that
    are not a whole number of points (a cycle does not care about the sampling interval)."""
    cases = []
    k = 0
    for kind in KINDS:
        for noise in NOISES:
            for period in periods:
                for _ in range(repeats):
                    cases.append(make_case(kind, noise, period, seed * 100_003 + k))
                    k += 1
    return cases
