"""CPU seconds of a run's processes by role, from /proc: what a worker's Python costs against
what the engine's and the broker's threads cost beside it. With 2 workers on 2 cores those
share the cores, so the split explains the 2-worker ratio (docs/performance.md)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_by_role(pipeline: Iterable[int], broker: int | None) -> dict[str, float]:
    """CPU seconds so far: `python` (the interpreter threads of the pipeline's processes),
    `native` (their other threads: the engine's), `broker`. Empty where /proc is not there;
    a process that is gone counts nothing."""
    out: Counter[str] = Counter()
    roles = [(pid, None) for pid in pipeline] + ([(broker, "broker")] if broker else [])
    for pid, role in roles:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    comm, _, rest = f.read().partition(" (")[2].rpartition(") ")
            except OSError:
                continue
            fields = rest.split()
            secs = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
            out[role or ("python" if comm.startswith("python") else "native")] += secs
    return dict(out)


def per_point(start: dict[str, float], end: dict[str, float], points: int) -> dict[str, float]:
    """µs of CPU a point by role between two `cpu_by_role` readings."""
    if points <= 0 or not start:
        return {}
    return {k: round(1e6 * (end.get(k, 0.0) - v) / points, 2) for k, v in start.items()}


def cores_busy(split: dict[str, float], points_per_s: float) -> float:
    """Cores kept busy on average by a run whose CPU a point by role is `split` (µs): where
    2 workers on 2 cores fall short of 2, the gap is time a core waited, not work."""
    return sum(split.values()) * points_per_s / 1e6
