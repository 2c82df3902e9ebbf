"""Memory: resident size of the detect stage per live series, measured in this process.

Drives `streams.detect.DetectStage` with the default model factory (what `stormwatch up`
builds) over `--series` metric series, `--points` points each, in messages of 1,000
observations, and reads VmRSS from /proc/self/status before and after (after a full
collection, with the drained rows dropped), so the difference is the state the series keep.
Then it times a checkpoint of every live series (`DetectStage.snapshot`, which the worker runs
in its event loop, so its length is the pipeline's pause) and a restore of them into a new
stage, against the format before the seventeenth round (numpy arrays pickled as objects,
zlib) timed on the same states in the same run.

    python -m benchmarks.memory --series 100000 --points 12
"""

from __future__ import annotations

import argparse
import base64
import copyreg
import gc
import io
import pickle
import sys
import time
import zlib
from collections.abc import Callable
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
    costs = checkpoint_costs(stage, lambda: DetectStage(stage.make_detector))
    return {
        "bench": "memory",
        "series": live,
        "points_per_series": points,
        "rss_before_kb": before,
        "rss_after_kb": after,
        "bytes_per_series": round((after - before) * 1024 / live),
        "us_per_point": round(secs / (series * points) * 1e6, 2),
        "idle_tick_ms": round(sorted(ticks)[len(ticks) // 2] * 1000, 3),
        **costs,
    }


class _LegacyPickler(pickle.Pickler):
    """Pickles the default model as releases before the seventeenth round did: its arrays as
    numpy objects (the default reduce, without `pack_arrays`)."""

    def reducer_override(self, obj: Any) -> Any:
        from detectors.model import SeriesModel
        from detectors.robust import RobustDetector

        if type(obj) in (SeriesModel, RobustDetector):
            return copyreg.__newobj__, (type(obj),), dict(obj.__dict__)
        return NotImplemented


def _legacy_encode(blob: Any) -> str:
    f = io.BytesIO()
    _LegacyPickler(f, 5).dump(blob)
    return base64.b64encode(zlib.compress(f.getvalue())).decode()


def checkpoint_costs(stage: Any, fresh: Callable[[], Any]) -> dict[str, Any]:
    """A checkpoint of every series of `stage` and their restore into `fresh()`, in this
    release's format and then the earlier one (`snapshot` with the earlier encoder; `restore`
    reads both): seconds, us a series, characters a state."""
    import streams.detect as detect

    out: dict[str, Any] = {}
    for prefix, encode in (("", detect.encode_state), ("legacy_", _legacy_encode)):
        stage._dirty.update(stage.series)  # every series scored since the last checkpoint
        saved, detect.encode_state = detect.encode_state, encode
        try:
            t0 = time.perf_counter()
            states = stage.snapshot()
            snap = time.perf_counter() - t0
        finally:
            detect.encode_state = saved
        t0 = time.perf_counter()
        restored = fresh().restore(states)
        rest = time.perf_counter() - t0
        n = len(states)
        if restored != n:
            raise RuntimeError(f"restored {restored} of {n} checkpointed series")
        out |= {
            f"{prefix}checkpoint_s": round(snap, 3),
            f"{prefix}checkpoint_us": round(snap / n * 1e6, 1),
            f"{prefix}restore_us": round(rest / n * 1e6, 1),
            f"{prefix}state_chars": round(sum(map(len, states.values())) / n),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", type=int, default=10_000)
    p.add_argument("--points", type=int, default=12, help="points per series (warm-up is 10)")
    a = p.parse_args(argv)
    print(orjson.dumps(run_memory(a.series, a.points)).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
