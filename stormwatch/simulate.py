"""Fill a store with realistic demo results in seconds, without Kafka: for tests, dashboards
and local views.

The demo generator runs in simulated time through the real producer SDK (its Kafka client
swapped for a collector), the real decoder, normalizer and detect stage, and the rows land in
the same tables with the same columns as `streams.app` writes them. Bad messages are mixed in
so the dead-letter table has rows; health rows are written the way the app's timer does.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from detectors.registry import model_factory
from ingest.decode import decode_records
from ingest.producer import TelemetryProducer
from stormwatch.demo import DemoGenerator, Incident
from stormwatch.store import Store
from streams.app import (
    DLQ_COLUMNS,
    EPISODE_COLUMNS,
    HEALTH_COLUMNS,
    dlq_record,
    dlq_row,
    episode_row,
)
from streams.columns import POINT_COLUMNS
from streams.detect import DetectStage
from streams.normalize import Normalizer

WORKER = "simulated:0"
HEALTH_EVERY_S = 5
BAD_MESSAGES = (
    b'{"kind": "metric", "name": "cpu"',  # truncated JSON
    b'[{"kind": "metric", "name": "cpu", "value": "high", "ts": 1}]',  # value not a number
    b'"just a string"',
    b'[{"kind": "span", "service": "checkout"}]',  # required fields missing
)


class _Delivered:
    """The part of kafka-python's FutureRecordMetadata the producer SDK uses. Callbacks run at
    the collector's `flush()`, as kafka-python runs them later on its I/O thread: the SDK holds
    its (non-reentrant) lock while it sends."""

    def __init__(self, done: list[Callable[[], None]]) -> None:
        self._done = done

    def add_callback(self, fn: Callable[..., Any], *args: Any) -> _Delivered:
        self._done.append(lambda: fn(*args, None))
        return self

    def add_errback(self, fn: Callable[..., Any], *args: Any) -> _Delivered:
        return self


@dataclass
class Collector:
    """Stands in for KafkaProducer: keeps every message sent, in order."""

    messages: list[bytes] = field(default_factory=list)
    _callbacks: list[Callable[[], None]] = field(default_factory=list)

    def send(self, topic: str, value: bytes, key: bytes | None = None, **_: Any) -> _Delivered:
        self.messages.append(value)
        return _Delivered(self._callbacks)

    def partitions_for(self, topic: str) -> None:
        """No metadata: a producer over the collector sends under its key."""
        return None

    def flush(self, timeout: float | None = None) -> None:
        done, self._callbacks = self._callbacks, []
        for fn in done:
            fn()

    def close(self) -> None:
        return None

    def take(self) -> list[bytes]:
        out, self.messages = self.messages, []
        return out


@dataclass(frozen=True)
class Simulation:
    """What a run wrote, for callers that check or print it."""

    start: float
    end: float
    incidents: list[Incident]
    points: int
    episodes: int
    dead_letters: int
    series: int
    audit_rows: int = 0


def simulate(
    store: Store,
    database: str,
    *,
    end: float | None = None,
    duration_s: float = 1800.0,
    window_s: float = 2.0,
    lateness_s: float = 1.0,
    detector: str = "robust",
    threshold: float = 0.9,
    seed: int = 7,
    period_s: float = 300.0,
) -> Simulation:
    """Run the demo over `duration_s` simulated seconds ending at `end` (default: now) and
    write points, episodes, dead letters and health rows into `database` (schema must exist)."""
    end = time.time() if end is None else end
    t0 = float(int(end - duration_s))
    sim_now = [t0]
    collector = Collector()
    producer = TelemetryProducer("", producer=collector, batch_size=2000)
    gen = DemoGenerator(producer, t0, duration_s, period_s=period_s, seed=seed)
    normalizer = Normalizer()
    stage = DetectStage(
        model_factory(detector, threshold=threshold),
        window_s=window_s, lateness_s=lateness_s, threshold=threshold,
        wall_clock=lambda: sim_now[0],
    )  # fmt: skip
    counts: dict[str, float] = defaultdict(float)
    written = {"points": 0, "episodes": 0, "dlq": 0}
    offset = 0
    health: list[list[Any]] = [[] for _ in HEALTH_COLUMNS]

    def write(now_s: float) -> None:
        out = stage.drain()
        store.insert(f"{database}.points", POINT_COLUMNS, out.points)
        rows = [episode_row(ep, int(now_s * 1000)) for ep in out.episodes]
        if rows:
            store.insert(f"{database}.anomalies", EPISODE_COLUMNS, _columns(rows))
        written["points"] += out.rows
        written["episodes"] += len(rows)
        counts["detect.points_written"] += out.rows

    def consume(now_s: float) -> None:
        nonlocal offset
        dead: list[list[Any]] = []
        for raw in collector.take():
            good, bad = decode_records(raw)
            started = time.perf_counter()
            stage.add(normalizer.observations(good), normalizer.meta, offset)
            counts["detect.busy_s"] += time.perf_counter() - started
            counts["normalize.messages"] += 1
            counts["normalize.events"] += len(good)
            for r in bad:
                counts["normalize.rejects"] += 1
                rec = dlq_record("telemetry.raw", 0, offset, r)
                row = dlq_row(rec)
                row[0] = int(now_s * 1000)
                dead.append(row)
            offset += 1
        if dead:
            store.insert(f"{database}.dlq", DLQ_COLUMNS, _columns(dead))
            written["dlq"] += len(dead)
        write(now_s)

    reported: dict[str, float] = {}

    def report_health(now_s: float) -> None:
        c = stage.counters
        counts["detect.series"] = len(stage.series)
        counts["detect.observations"] = c.observations
        counts["detect.late"] = c.late
        counts["detect.episodes_opened"] = c.episodes_opened
        for key, v in counts.items():
            stage_name, _, metric = key.partition(".")
            value = v if metric == "series" else v - reported.get(key, 0.0)
            reported[key] = v
            for col, x in zip(health, (int(now_s * 1000), WORKER, stage_name, metric, value),
                              strict=True):  # fmt: skip
                col.append(x)

    bad_every = max(1, int(duration_s // (len(BAD_MESSAGES) * 3)))
    t = t0
    tick = 0
    while t < t0 + duration_s:
        sim_now[0] = t
        gen.tick(t)
        if tick % bad_every == bad_every // 2:
            collector.messages.append(BAD_MESSAGES[(tick // bad_every) % len(BAD_MESSAGES)])
        tick += 1
        t += 1.0
        if tick % HEALTH_EVERY_S == 0:
            producer.flush()
            consume(t)
            report_health(t)
    producer.flush()
    sim_now[0] = t + window_s + lateness_s + 1
    consume(t)
    stage.close_idle()
    write(t)
    report_health(t)
    store.insert(f"{database}.health", HEALTH_COLUMNS, health)
    audits = _audit_trail(store, database, t)
    return Simulation(
        start=t0, end=t, incidents=gen.incidents, points=written["points"],
        episodes=written["episodes"], dead_letters=written["dlq"], series=len(stage.series),
        audit_rows=audits,
    )  # fmt: skip


# (decision, actor, seconds to decide, outcome, verdict) for successive proposals.
_FATES = [
    ("approved", "alice", 95, "succeeded", "effective"),
    ("approved", "bob", 240, "succeeded", "ineffective"),
    ("rejected", "alice", 40, "", ""),
    ("approved", "carol", 610, "failed", ""),
    ("expired", "ttl", 900, "", ""),
]


def _audit_trail(store: Store, database: str, end: float) -> int:
    """Remediation audit rows for the largest episodes, in the shape `actions.audit` writes:
    a proposal per episode, decided by a person (or expired), executed in dry-run mode, and
    judged effective or not. The remediation dashboard reads these."""
    from actions.audit import AUDIT_COLUMNS

    eps = store.query(
        f"SELECT episode_id, series_id, service, toUnixTimestamp64Milli(start) FROM "
        f"{database}.anomalies FINAL WHERE service != '' ORDER BY points DESC LIMIT {len(_FATES)}"
    ).rows
    rows: list[list[Any]] = []
    for i, ((eid, sid, service, start_ms), fate) in enumerate(zip(eps, _FATES, strict=False)):
        decision, actor, wait_s, outcome, verdict = fate
        pid = f"sim{i:04d}"
        policy, action = f"{service}-restart", "restart_service"
        t_ms = min(int(start_ms) + 10_000, int(end * 1000) - 1_000_000)
        events = [("proposed", "", t_ms), (decision, actor, t_ms + wait_s * 1000)]
        if outcome:
            events += [("executing", "", t_ms + wait_s * 1000 + 500),
                       (outcome, "", t_ms + wait_s * 1000 + 2500)]  # fmt: skip
        if verdict:
            events.append((verdict, "watcher", t_ms + wait_s * 1000 + 120_000))
        for n, (state, who, ts) in enumerate(events):
            values = {"ts": ts, "audit_id": f"{pid}-{n}", "proposal_id": pid, "episode_id": eid,
                      "series_id": sid, "policy": policy, "action": action,
                      "params": f'{{"service": "{service}"}}', "state": state, "actor": who,
                      "source": "slack" if who not in ("", "ttl", "watcher") else "service",
                      "detail": f"simulated {state}", "dry_run": 1}  # fmt: skip
            rows.append([values[c] for c in AUDIT_COLUMNS])
    if rows:
        store.insert(f"{database}.action_audit", AUDIT_COLUMNS, _columns(rows))
    return len(rows)


def _columns(rows: list[list[Any]]) -> list[list[Any]]:
    return [list(c) for c in zip(*rows, strict=True)]
