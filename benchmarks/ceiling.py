"""Ceiling: the raw path without detection, in one process, against its own broker and engine.

A pre-produced stream of JSON point batches is consumed with aiokafka `getmany` and written
to chdb with the pipeline's own building blocks, minus detection: decoded and validated into
msgspec records as the normalize stage does, known series looked up with its `KnownMetrics`,
grouped by series into `PointRows` as the detect stage groups a message (a series' columns
once, the numbers in numpy arrays), encoded to Native with numpy, and inserted in large
blocks in a thread while the next block is consumed (one insert in flight, as the detect
stage writes). What this machine allows before any detection work. `--naive` measures
DESIGN.md's path instead (orjson, a list a column, clickhouse-connect's encoder),
`--no-overlap` waits for each insert.

    python -m benchmarks.ceiling --series 2000 --points 300000

prints one JSON line: points/s (from the partitions assigned to the last row's `written_at`,
as the pipeline is measured) plus the counts checked in ClickHouse.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field

from ingest.models import records_json
from stormwatch.broker import LocalBroker, free_port
from stormwatch.settings import StormwatchSettings, load_settings
from streams.columns import POINT_COLUMNS, POINT_TYPES, PointRows, by_series
from streams.normalize import KnownMetrics, Normalizer
from streams.series import Series, series_id
from streams.wire import Points, points_of

PARTITIONS = 4


class StreamSpec(BaseModel):
    """A stream of metric points: `series` series, `points` in all, one point per series per
    second of event time, sent by `producers` SDK producers: each event to its series'
    partition (the SDK's default), or with `keyed` each producer to one partition (an SDK
    producer given a key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    series: int = Field(2000, ge=1)
    points: int = Field(300_000, ge=1)
    producers: int = Field(4, ge=1)
    batch: int = Field(500, ge=1, description="events per Kafka message (the SDK's batch)")
    keyed: bool = False

    @property
    def rounds(self) -> int:
        return math.ceil(self.points / self.series)


def metric_series(i: int) -> Series:
    """The identity of bench series `i` as the normalizer builds it."""
    return Series("metric", f"bench_{i % 20}", f"svc{i % 10}", (("host", f"h{i}"),))


def event(i: int, ts: float, value: float) -> dict[str, Any]:
    s = metric_series(i)
    return {
        "kind": "metric",
        "name": s.name,
        "value": value,
        "ts": ts,
        "service": s.service,
        "labels": dict(s.labels),
    }


def expected_ids(spec: StreamSpec, start_s: float) -> dict[int, tuple[int, int, int]]:
    """series id → (points, first ms, last ms) the stream holds."""
    out = {}
    for i in range(spec.series):
        n = len(range(i, spec.points, spec.series))
        if n:
            out[series_id(metric_series(i))] = (
                n,
                int(start_s * 1000),
                int((start_s + n - 1) * 1000),
            )
    return out


def partition_keys(n: int, partitions: int = PARTITIONS) -> list[str]:
    """`n` producer keys that kafka-python's default partitioner spreads over all partitions."""
    from ingest.topics import partition_keys as keys_by_partition

    keys = keys_by_partition(partitions, "bench-producer-")
    return [keys[k % partitions].decode() for k in range(n)]


def produce_stream(
    bootstrap: str, topic: str, spec: StreamSpec, start_s: float, first_round: int = 0
) -> float:
    """Send the whole stream (series i by producer i % producers, in time order; unkeyed, the
    first round by the first producer); returns the seconds it took. Raises if any event
    failed. `first_round`: where a stream that continues an earlier one starts (its rounds at
    start_s + round, each series' sine where it was)."""
    from ingest.producer import TelemetryProducer

    rng = random.Random(7 + first_round)
    keys = partition_keys(spec.producers) if spec.keyed else [None] * spec.producers
    prods = [TelemetryProducer(bootstrap, topic, batch_size=spec.batch, key=k) for k in keys]
    # The embedded broker (Tansu 0.6.0, memory storage) can lose an acknowledged message when
    # several producers write one partition at the same moment (docs/reliability.md, "Known
    # issue"); the four collided on their first messages, so unkeyed, the first round goes
    # through one producer, flushed, before they all send.
    first = prods if spec.keyed else prods[:1]
    t0 = time.perf_counter()
    sent = 0
    for r in range(first_round, first_round + spec.rounds):
        by = first if r == first_round else prods
        for i in range(spec.series):
            if sent == spec.points:
                break
            v = 100.0 + 10.0 * math.sin(r / 15 + i) + rng.gauss(0, 1)
            by[i % len(by)].send(event(i, start_s + r, v))
            sent += 1
        if by is not prods:
            by[0].flush(timeout=120)  # its failures are counted again below
    failed = sum(p.flush(timeout=120) for p in prods)
    for p in prods:
        p.close()
    if failed:
        raise RuntimeError(f"{failed} events failed to produce: {prods[0].errors[:3]}")
    return time.perf_counter() - t0


def stream_start() -> float:
    """Event time of the first round: recent, and the whole stream within one day partition."""
    return float(int(time.time()) - 3600)


def bench_settings(data_dir: Path, bootstrap: str, **kw: Any) -> StormwatchSettings:
    return load_settings(data_dir=data_dir, kafka_bootstrap=bootstrap, database="bench", **kw)


# The stream is metric points; the pipeline also writes its own rows (a service's
# multivariate score) into `points`, which are not the stream's.
ONLY_METRICS = "kind = 'metric'"


def check_points(store: Any, db: str, want: dict[int, tuple[int, int, int]]) -> dict[str, Any]:
    """Counts with and without FINAL, and per series count/first/last against the stream."""
    total = sum(n for n, _, _ in want.values())
    q = store.query(
        f"SELECT (SELECT count() FROM {db}.points WHERE {ONLY_METRICS}), "
        f"(SELECT count() FROM {db}.points FINAL WHERE {ONLY_METRICS}), "
        f"(SELECT uniqExact(series_id, ts) FROM {db}.points WHERE {ONLY_METRICS})"
    )
    raw, final, unique = q.rows[0]
    got = {
        int(sid): (int(n), int(a), int(b))
        for sid, n, a, b in store.query(
            f"SELECT series_id, count(), toUnixTimestamp64Milli(min(ts)), "
            f"toUnixTimestamp64Milli(max(ts)) FROM {db}.points FINAL WHERE {ONLY_METRICS} "
            "GROUP BY series_id"
        ).rows
    }
    bad = sum(1 for sid, v in want.items() if got.get(sid) != v) + len(set(got) - set(want))
    ok = raw == final == unique == total and bad == 0
    return {
        "expected": total,
        "rows": raw,
        "rows_final": final,
        "unique_ids": unique,
        "series_mismatched": bad,
        "ok": ok,
    }


def sent_series(name: str, service: str, labels: dict[str, str]) -> Series:
    """A bench event's series as the normalizer builds it (labels sorted)."""
    return Series("metric", name, service, tuple(sorted(labels.items())))


class ColumnBuilder:
    """Decoded batches → POINT_COLUMNS arrays; series ids hashed once per series."""

    def __init__(self) -> None:
        self.ids: dict[tuple[Any, ...], int] = {}
        self.cols: list[list[Any]] = [[] for _ in POINT_COLUMNS]

    def add_message(self, raw: bytes) -> int:
        """One stream message (a JSON batch); returns its events."""
        batch = orjson.loads(raw)
        self.add(batch)
        return len(batch)

    def add(self, batch: list[dict[str, Any]]) -> None:
        (
            sid_c,
            ts_c,
            val_c,
            n_c,
            score_c,
            exp_c,
            lo_c,
            up_c,
            an_c,
            kind_c,
            name_c,
            svc_c,
            lab_c,
            det_c,
            ver_c,
        ) = self.cols
        ids = self.ids
        for e in batch:
            labels = e["labels"]
            key = (e["name"], e["service"], *labels.items())
            sid = ids.get(key)
            if sid is None:
                sid = ids[key] = series_id(sent_series(e["name"], e["service"], labels))
            sid_c.append(sid)
            ts_c.append(int(e["ts"] * 1000))
            val_c.append(e["value"])
            kind_c.append("metric")
            name_c.append(e["name"])
            svc_c.append(e["service"])
            lab_c.append(labels)
        k = len(batch)
        n_c.extend([1] * k)
        score_c.extend([0.0] * k)
        exp_c.extend([None] * k)
        lo_c.extend([None] * k)
        up_c.extend([None] * k)
        an_c.extend([0] * k)
        det_c.extend(["none"] * k)
        ver_c.extend(["0"] * k)

    def __len__(self) -> int:
        return len(self.cols[0])

    def take(self) -> list[list[Any]]:
        cols, self.cols = self.cols, [[] for _ in POINT_COLUMNS]
        return cols


class RunBuilder:
    """The pipeline's own building blocks without detection: msgspec records (validated, as
    the normalize stage decodes them), the stage's `KnownMetrics` lookup of series seen before
    (the `Normalizer` for the rest), points grouped by series as the detect stage groups them
    into `PointRows`, and its numpy Native encoding."""

    def __init__(self) -> None:
        self.known = KnownMetrics()
        self.norm = Normalizer()
        self.rows: dict[int, tuple[Any, ...]] = {}  # series id → its row's constant columns
        self._reset()

    def _reset(self) -> None:
        self.parts: list[Points] = []
        self.n = 0

    def add_message(self, raw: bytes) -> int:
        """One stream message (a JSON batch); returns its events."""
        recs = records_json(raw)
        if recs is None:
            raise ValueError("the bench stream holds only valid metric batches")
        taken, rest = self.known.take(recs)
        if taken is not None:
            self.parts.append(taken)
        if rest:  # series not seen before: as the normalize stage learns them
            obs = self.norm.observations(rest)
            self.known.learn(rest, rest, self.norm)
            for sid, _, _, _ in obs:
                if sid not in self.rows:
                    s = self.norm.meta[sid]
                    self.rows[sid] = (sid, s.kind, s.name, s.service, dict(s.labels), "none", "0")
            self.parts.append(points_of(obs))
        self.n += len(recs)
        return len(recs)

    def __len__(self) -> int:
        return self.n

    def take(self) -> PointRows:
        sids = np.concatenate([np.asarray(p.sids, np.uint64) for p in self.parts])
        ts = np.concatenate([np.asarray(p.ts, np.int64) for p in self.parts])
        values = np.concatenate([np.asarray(p.values, np.float64) for p in self.parts])
        self._reset()
        order, run_sids, starts, ends = by_series(sids)  # as the detect stage groups them
        ts, values = ts[order], values[order]
        rows, k = self.rows, len(sids)
        runs = [(rows[sid], n) for sid, n in zip(run_sids.tolist(), (ends - starts).tolist(),
                                                  strict=True)]  # fmt: skip
        none = np.zeros(k, bool)
        return PointRows(runs, ts, values, np.ones(k, np.int64), np.zeros(k),
                         np.full((k, 3), np.nan), none, none)  # fmt: skip


def write_rows(store: Any, table: str, rows: PointRows) -> None:
    """Encode (numpy, as the stage does) and insert one block."""
    body = rows.native_block(POINT_COLUMNS, POINT_TYPES)
    if body is None:
        raise ValueError("points columns changed: the Native encoder no longer fits")
    store.insert_native(table, POINT_COLUMNS, body)


async def consume_insert(
    bootstrap: str,
    topic: str,
    total: int,
    store: Any,
    table: str,
    block: int,
    overlap: bool,
    naive: bool = False,
) -> tuple[float, int]:
    """getmany → decode → columns → insert every `block` rows; (epoch seconds when the
    partitions were assigned, inserts). With
    `overlap`, a block is encoded and inserted in a thread while the next one is consumed,
    one insert in flight, as the detect stage writes. `naive`: orjson, a list a column and
    clickhouse-connect's encoder (DESIGN.md's ~190k points/s path)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(1, thread_name_prefix="ceiling-insert")
    pending: asyncio.Future[None] | None = None

    def write(block_rows: Any) -> None:
        if naive:
            store.insert(table, POINT_COLUMNS, block_rows)
        else:
            write_rows(store, table, block_rows)

    async def insert(block_rows: Any) -> None:
        nonlocal pending
        if pending is not None:
            await pending
            pending = None
        if overlap:
            pending = loop.run_in_executor(pool, write, block_rows)
        else:
            write(block_rows)

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        builder: Any = ColumnBuilder() if naive else RunBuilder()
        seen = inserts = 0
        t0 = time.time()  # partitions assigned: the stream starts to be read
        while seen < total:
            got = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for msgs in got.values():
                for m in msgs:
                    seen += builder.add_message(m.value)
            if len(builder) >= block or (seen >= total and len(builder)):
                await insert(builder.take())
                inserts += 1
        if pending is not None:
            await pending
        return t0, inserts
    finally:
        await consumer.stop()
        pool.shutdown()


def run_ceiling(
    spec: StreamSpec, block: int = 50_000, overlap: bool = True, naive: bool = False
) -> dict[str, Any]:
    from ingest.topics import ensure_topics
    from stormwatch.pipeline import topic_partitions
    from stormwatch.store import create_schema, open_store

    with (
        tempfile.TemporaryDirectory(prefix="sw-ceiling-") as tmp,
        LocalBroker(free_port()) as broker,
    ):
        settings = bench_settings(Path(tmp), broker.bootstrap)
        ensure_topics(broker.bootstrap, topic_partitions(settings))
        start = stream_start()
        produce_s = produce_stream(broker.bootstrap, settings.topics.raw, spec, start)
        store = open_store(settings, own=True)
        try:
            create_schema(store, settings)
            gc.collect()
            gc.freeze()  # the tuned collector the design notes measured (~20%)
            gc.set_threshold(50_000, 50, 100)
            t0, inserts = asyncio.run(
                consume_insert(
                    broker.bootstrap,
                    settings.topics.raw,
                    spec.points,
                    store,
                    f"{settings.database}.points",
                    block,
                    overlap,
                    naive,
                )
            )
            # to the last row's `written_at`, as the pipeline is measured
            last = store.query(
                f"SELECT toUnixTimestamp64Milli(max(written_at)) FROM "
                f"{settings.database}.points WHERE {ONLY_METRICS}"
            ).rows[0][0]
            secs = max(last / 1000 - t0, 1e-3)
            check = check_points(store, settings.database, expected_ids(spec, start))
        finally:
            store.close()
    return {
        "bench": "ceiling",
        "points": spec.points,
        "series": spec.series,
        "seconds": round(secs, 3),
        "points_per_s": round(spec.points / secs),
        "inserts": inserts,
        "block": block,
        "overlap": overlap,
        "naive": naive,
        "produce_s": round(produce_s, 2),
        "check": check,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", type=int, default=2000)
    p.add_argument("--points", type=int, default=300_000)
    p.add_argument("--block", type=int, default=50_000, help="rows per insert")
    p.add_argument(
        "--no-overlap", action="store_true", help="insert in the consuming thread, waiting for each"
    )
    p.add_argument(
        "--naive", action="store_true", help="orjson, a list a column, clickhouse-connect's encoder"
    )
    a = p.parse_args(argv)
    spec = StreamSpec(series=a.series, points=a.points)
    out = run_ceiling(spec, a.block, not a.no_overlap, a.naive)
    print(orjson.dumps(out).decode())
    return 0 if out["check"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
