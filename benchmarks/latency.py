"""Latency: produce in real time at a fixed rate and time each point to queryable, each spike to
its anomaly episode written, against its own broker and `stormwatch up` (1 worker).

Every point's event time is the wall time it was handed to the SDK. "Queryable" is the
row's `written_at` (ClickHouse sets it when the insert lands) minus that time. Spikes are
injected into warmed-up series; "episode written" is when the episode reaches the anomalies
topic, which the pipeline publishes right after the episode's insert returns. The pipeline
checkpoints every `--checkpoint-s` (10 s; the product's default is 30, longer than a run), so
the figures include the pauses checkpoints make.

    python -m benchmarks.latency --rate 3000 --seconds 20
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.ceiling import bench_settings, event, metric_series, partition_keys
from benchmarks.pipeline import running, wait_for
from stormwatch.broker import LocalBroker, free_port
from streams.series import series_id

WARMUP_POINTS = 20
TICK_S = 0.05


class EpisodeWatch:
    """Consumes the anomalies topic (no group, from the start) and keeps the wall time the
    first message of each episode arrived."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.first: dict[tuple[int, int], float] = {}
        self._stop = threading.Event()
        self._c = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        self._c.assign([TopicPartition(topic, p) for p in range(partitions)])
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msgs in self._c.poll(timeout_ms=50).values():
                now = time.time()
                for m in msgs:
                    ep = orjson.loads(m.value)
                    self.first.setdefault((int(ep["series_id"]), int(ep["start_ms"])), now)

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)
        self._c.close()


def quantile(xs: list[float], q: float) -> float:
    if not xs:
        return math.nan
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def run_latency(
    rate: float,
    seconds: float,
    series: int = 2000,
    log: Path | None = None,
    checkpoint_s: float = 10.0,
) -> dict[str, Any]:
    from ingest.producer import TelemetryProducer
    from ingest.topics import ensure_topics
    from stormwatch.pipeline import topic_partitions
    from stormwatch.store import open_store

    rng = random.Random(11)
    per_tick = max(1, round(rate * TICK_S))
    with (
        tempfile.TemporaryDirectory(prefix="sw-latency-") as tmp,
        LocalBroker(free_port()) as broker,
    ):
        settings = bench_settings(
            Path(tmp), broker.bootstrap, app_id="bench-latency", checkpoint_s=checkpoint_s
        )
        t = settings.topics
        ensure_topics(broker.bootstrap, topic_partitions(settings))
        prods = [
            TelemetryProducer(broker.bootstrap, t.raw, key=k, batch_size=max(1, per_tick // 4))
            for k in partition_keys(4)
        ]
        sids = [series_id(metric_series(i)) for i in range(series)]
        watch = EpisodeWatch(broker.bootstrap, t.anomalies, t.partitions)
        with running(settings, 1, log or Path(tmp) / "pipeline.log"):
            store = open_store(settings)
            db = settings.database

            def count() -> int:
                return int(
                    store.query(f"SELECT count() FROM {db}.points WHERE kind = 'metric'").rows[0][0]
                )

            # warm every series up (event time in the past), and wait until it is all written
            t_warm = time.time() - WARMUP_POINTS - 1
            for r in range(WARMUP_POINTS):
                for i in range(series):
                    prods[i % 4].send(event(i, t_warm + r, 100.0 + rng.gauss(0, 1)))
            for p in prods:
                p.flush()
            total = WARMUP_POINTS * series
            wait_for(lambda: count() >= total, 120, "warm-up points written")
            # real time: `per_tick` points every TICK_S, event time = hand-over time
            spikes: dict[tuple[int, int], float] = {}
            t_start = time.time()
            next_spike = t_start + 2.0
            k = 0
            last_ms: dict[int, int] = {}
            while (now := time.time()) < t_start + seconds:
                for _ in range(per_tick):
                    i = k % series
                    k += 1
                    ts = time.time()
                    ms = max(int(ts * 1000), last_ms.get(i, 0) + 1)
                    last_ms[i] = ms
                    v = 100.0 + rng.gauss(0, 1)
                    if ts >= next_spike:
                        v, next_spike = 1000.0, next_spike + 0.5
                        spikes[(sids[i], ms)] = ms / 1000
                    prods[i % 4].send(event(i, ms / 1000, v))
                total += per_tick
                time.sleep(max(0.0, now + TICK_S - time.time()))
            sent_s = time.time() - t_start
            for p in prods:
                p.flush()
            wait_for(lambda: count() >= total, 120, "real-time points written")
            time.sleep(1.0)
            lat = store.query(
                f"SELECT toUnixTimestamp64Milli(written_at) - toUnixTimestamp64Milli(ts) "
                f"FROM {db}.points WHERE kind = 'metric' AND "
                f"ts >= fromUnixTimestamp64Milli({int(t_start * 1000)})"
            ).rows
            rows = int(
                store.query(f"SELECT count() FROM {db}.points FINAL WHERE kind = 'metric'").rows[0][
                    0
                ]
            )
            # the checkpoints taken while points were produced in real time
            checkpoints = int(
                store.query(
                    f"SELECT uniqExact(ts) FROM {db}.checkpoints WHERE topic = {{t:String}} AND "
                    f"ts BETWEEN fromUnixTimestamp64Milli({int(t_start * 1000)}) AND "
                    f"fromUnixTimestamp64Milli({int((t_start + sent_s) * 1000)})",
                    {"t": t.points},
                ).rows[0][0]
            )
            store.close()
        watch.close()
        for p in prods:
            p.close()
    point_ms = [float(x) for (x,) in lat]
    ep_ms = [(watch.first[key] - ts) * 1000 for key, ts in spikes.items() if key in watch.first]
    return {
        "bench": "latency",
        "rate": round(k / sent_s),
        "target_rate": rate,
        "seconds": round(sent_s, 1),
        "points": len(point_ms),
        "rows_final": rows,
        "expected": total,
        "ok": rows == total,
        "checkpoint_s": checkpoint_s,
        "checkpoints": checkpoints,
        "queryable_p50_ms": round(quantile(point_ms, 0.5)) if point_ms else None,
        "queryable_p99_ms": round(quantile(point_ms, 0.99)) if point_ms else None,
        "spikes": len(spikes),
        "episodes_seen": len(ep_ms),
        "episode_p50_ms": round(quantile(ep_ms, 0.5)) if ep_ms else None,
        "episode_p99_ms": round(quantile(ep_ms, 0.99)) if ep_ms else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, required=True, help="points per second")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--series", type=int, default=2000)
    p.add_argument("--log", type=Path, help="keep the pipeline's log here")
    p.add_argument("--checkpoint-s", type=float, default=10.0, help="the pipeline's checkpoints")
    a = p.parse_args(argv)
    out = run_latency(a.rate, a.seconds, a.series, a.log, a.checkpoint_s)
    print(orjson.dumps(out).decode())
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
