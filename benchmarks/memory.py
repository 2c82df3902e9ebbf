"""Memory: resident size of the detect stage per live series, measured in this process.

Drives `streams.detect.DetectStage` with the default model factory (what `stormwatch up`
builds) over `--series` metric series, `--points` points each, in messages of 1,000
observations, and reads VmRSS from /proc/self/status before and after (after a full
collection, with the drained rows dropped), so the difference is the state the series keep.

    python -m benchmarks.memory --series 100000 --points 12
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from typing import Any

import orjson


def rss_kb() -> int:
    """Resident set size of this process in KiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def run_memory(series: int, points: int, message: int = 1000) -> dict[str, Any]:
    from detectors.registry import model_factory
    from stormwatch.settings import StormwatchSettings
    from streams.detect import DetectStage
    from streams.series import AGG_LAST, Obs, Series, series_id

    s = StormwatchSettings()
    stage = DetectStage(
        model_factory(s.detector, threshold=s.threshold, shadow=s.shadow_detector),
        window_s=s.window_s,
        lateness_s=s.lateness_s,
        threshold=s.threshold,
    )
    metas = [
        Series("metric", f"m{i % 50}", f"svc{i % 20}", (("host", f"h{i}"),)) for i in range(series)
    ]
    sids = [series_id(m) for m in metas]
    meta = dict(zip(sids, metas, strict=True))
    # the ids and metadata come from the normalizer in the product: count them as the baseline
    gc.collect()
    before = rss_kb()
    t0 = time.perf_counter()
    base_ms = int(time.time() * 1000) - points * 1000
    tok = 0
    for r in range(points):
        ts = base_ms + r * 1000
        for lo in range(0, series, message):
            obs = [
                Obs(sid, ts, 100.0 + (i * 7 + r * 3) % 11, AGG_LAST)
                for i, sid in enumerate(sids[lo : lo + message], lo)
            ]
            stage.add(obs, meta, tok)
            tok += 1
            stage.drain()  # rows leave for ClickHouse in the product
    secs = time.perf_counter() - t0
    # the idle timer's pass (every 0.2 s on the worker's event loop) over this many series
    ticks = []
    for _ in range(20):
        t1 = time.perf_counter()
        stage.close_idle()
        ticks.append(time.perf_counter() - t1)
    stage.snapshot()  # the dirty set is cleared by checkpoints in the product
    gc.collect()
    after = rss_kb()
    live = len(stage.series)
    return {
        "bench": "memory",
        "series": live,
        "points_per_series": points,
        "rss_before_kb": before,
        "rss_after_kb": after,
        "bytes_per_series": round((after - before) * 1024 / live),
        "us_per_point": round(secs / (series * points) * 1e6, 2),
        "idle_tick_ms": round(sorted(ticks)[len(ticks) // 2] * 1000, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", type=int, default=10_000)
    p.add_argument("--points", type=int, default=12, help="points per series (warm-up is 10)")
    a = p.parse_args(argv)
    print(orjson.dumps(run_memory(a.series, a.points)).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
