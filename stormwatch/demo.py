"""Demo telemetry: a small shop's backend in real time, with incidents on a schedule.

Checkout API spans, an orders queue, database queries, a cache hit ratio and host metrics,
with a daily-like cycle compressed into `period_s`, noise, and five injected incidents laid
out over the run. Everything goes through the producer SDK users use.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass

from ingest.fingerprint import fingerprint, normalize_statement
from ingest.producer import TelemetryProducer
from streams.series import Series, make_series, series_id

OPS = {"POST /checkout": (8, 90.0), "GET /cart": (15, 35.0), "GET /products": (25, 22.0)}
STATEMENTS = {
    "SELECT * FROM orders WHERE customer_id = {n} ORDER BY created_at DESC LIMIT 20": (10, 4.0),
    "UPDATE inventory SET qty = qty - {n} WHERE sku = 'SKU-{n}'": (6, 2.5),
    "INSERT INTO orders (customer_id, total) VALUES ({n}, {n}.99)": (4, 3.0),
}
SLOW_SQL = next(iter(STATEMENTS))


@dataclass(frozen=True)
class Incident:
    name: str
    start: float  # epoch seconds
    end: float
    series: tuple[Series, ...]

    @property
    def series_ids(self) -> list[int]:
        return [series_id(s) for s in self.series]


def _db_series(stmt: str, name: str) -> Series:
    shape = normalize_statement(stmt.format(n=1))
    return make_series("db", name, "orders-db", statement=shape, fingerprint=fingerprint(shape),
                       system="postgresql")  # fmt: skip


def schedule(t0: float, duration: float) -> list[Incident]:
    """Five incidents spread over the run, after a warm-up of about a fifth of it."""
    d = duration

    def at(a: float, b: float) -> tuple[float, float]:
        return t0 + a * d, t0 + b * d

    return [
        Incident("db slow-query regression", *at(0.25, 0.38),
                 (_db_series(SLOW_SQL, "latency_ms"),)),
        Incident("orders queue backlog", *at(0.40, 0.60),
                 (make_series("queue", "lag", "fulfillment", queue="orders", group="fulfillment"),
                  make_series("queue", "oldest_age_s", "fulfillment", queue="orders",
                              group="fulfillment"))),
        Incident("checkout error burst", *at(0.55, 0.64),
                 (make_series("span", "error_rate", "checkout", operation="POST /checkout"),)),
        Incident("products latency shift", *at(0.70, 0.86),
                 (make_series("span", "latency_ms", "checkout", operation="GET /products"),)),
        Incident("web-2 memory leak", *at(0.30, 0.97),
                 (make_series("metric", "host.mem_used_mb", "", host="web-2"),)),
    ]  # fmt: skip


class DemoGenerator:
    """Produces one second of telemetry per tick, in real time, until stopped."""

    def __init__(self, producer: TelemetryProducer, t0: float, duration: float, *,
                 period_s: float = 60.0, seed: int = 7) -> None:  # fmt: skip
        self.p = producer
        self.t0 = t0
        self.duration = duration
        self.period_s = period_s
        self.rng = random.Random(seed)
        self.incidents = schedule(t0, duration)
        self._on = {i.name: i for i in self.incidents}
        self.ticks = 0

    def _active(self, name: str, now: float) -> float:
        """0 before/after the incident, else the fraction of it elapsed (0..1]."""
        i = self._on[name]
        return (now - i.start) / (i.end - i.start) if i.start <= now < i.end else 0.0

    def tick(self, now: float) -> None:
        rng = self.rng
        cycle = 1.0 + 0.25 * math.sin(2 * math.pi * (now - self.t0) / self.period_s)
        shift = 2.5 if self._active("products latency shift", now) else 1.0
        burst = self._active("checkout error burst", now) > 0
        for op, (rate, lat) in OPS.items():
            for _ in range(max(1, int(rng.gauss(rate * cycle, math.sqrt(rate))))):
                ms = lat * cycle * (shift if op == "GET /products" else 1.0)
                err = rng.random() < (0.35 if burst and op == "POST /checkout" else 0.005)
                self.p.span("checkout", op, rng.lognormvariate(math.log(ms), 0.25),
                            ts=now + rng.random(), error=err)  # fmt: skip
        slow = 6.0 if self._active("db slow-query regression", now) else 1.0
        for stmt, (rate, lat) in STATEMENTS.items():
            for _ in range(rate):
                n = rng.randint(1, 10_000)
                f = slow if stmt == SLOW_SQL else 1.0
                self.p.db("orders-db", stmt.format(n=n), rng.lognormvariate(math.log(lat * f), 0.2),
                          system="postgresql", ts=now + rng.random())  # fmt: skip
        backlog = self._active("orders queue backlog", now)
        lag = max(0.0, rng.gauss(40 * cycle, 6)) + 3000 * backlog
        self.p.queue("orders", lag, group="fulfillment", oldest_age_s=lag / 20 + rng.random(),
                     ts=now, service="fulfillment")  # fmt: skip
        self.p.metric("cache.hit_ratio", min(1.0, rng.gauss(0.95, 0.004)), ts=now, service="cache")
        leak = self._active("web-2 memory leak", now)
        for host in ("web-1", "web-2"):
            self.p.metric("host.cpu_util", min(1.0, max(0.0, rng.gauss(0.35 * cycle, 0.02))),
                          ts=now, host=host)  # fmt: skip
            drift = 900.0 * leak if host == "web-2" else 0.0
            self.p.metric("host.mem_used_mb", rng.gauss(2048 + drift, 4), ts=now, host=host)
        self.ticks += 1

    def run(self, stop: threading.Event) -> None:
        """Tick once a second (wall clock) until `stop` is set, then flush."""
        nxt = time.time()
        while not stop.is_set():
            self.tick(nxt)
            self.p.flush(timeout=10)
            nxt += 1.0
            stop.wait(max(0.0, nxt - time.time()))
        self.p.close()


def evaluate(store: object, database: str, incidents: list[Incident],
             slack_s: float) -> list[tuple[Incident, bool]]:  # fmt: skip
    """An incident is detected when an episode on one of its series overlaps its time span
    (windows are stamped with their start, so the span is widened by one window)."""
    out = []
    for inc in incidents:
        ids = ",".join(str(i) for i in inc.series_ids)
        r = store.query(  # type: ignore[attr-defined]
            f"SELECT count() FROM {database}.anomalies FINAL WHERE series_id IN ({ids}) "
            f"AND toUnixTimestamp64Milli(start) <= {int((inc.end + slack_s) * 1000)} "
            f"AND toUnixTimestamp64Milli(end) >= {int((inc.start - slack_s) * 1000)}"
        )
        out.append((inc, r.rows[0][0] > 0))
    return out
