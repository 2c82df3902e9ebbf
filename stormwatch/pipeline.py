"""Composition root of `stormwatch up`: broker, topics, storage, faust worker, demo, summary.

One process owns the embedded ClickHouse engine and serves it to other local commands.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from detectors.episodes import Episode
from stormwatch.broker import LocalBroker
from stormwatch.settings import StormwatchSettings
from stormwatch.store import Store, StoreServer, create_schema, open_store, with_faults

if TYPE_CHECKING:
    from actions.service import ActionsService

log = logging.getLogger("stormwatch")


def topic_partitions(settings: StormwatchSettings) -> dict[str, int]:
    t = settings.topics
    p = t.partitions
    return {
        t.raw: p, t.otlp_metrics: p, t.otlp_spans: p, t.points: p, f"{t.points}.services": p,
        t.dlq: 1, t.anomalies: p,
    }  # fmt: skip


class EpisodePrinter:
    """Episode lines on the console: one when an episode opens, one when it clears. A burst
    (a new deployment, a backlog replayed) is capped at `per_s` lines a second with `burst`
    to spare; what was held back is counted in one line, since ClickHouse has every episode
    (`stormwatch top`, Grafana). Flushes once per batch, not per line."""

    def __init__(self, out: IO[str], per_s: float = 2.0, burst: float = 20.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.out, self.per_s, self.burst, self.clock = out, per_s, burst, clock
        self.seen: set[int] = set()  # open episodes already shown or held back
        self.unshown: set[int] = set()  # open episodes whose ANOMALY line was held back
        self.tokens, self.at = burst, clock()
        self.held = 0

    def __call__(self, episodes: list[Episode]) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.per_s)
        self.at = now
        lines = []
        for ep in episodes:
            eid = ep.episode_id
            if ep.is_open:
                if eid in self.seen:
                    continue
                self.seen.add(eid)
            else:
                self.seen.discard(eid)  # closed: forgotten, so the sets stay small
                if eid in self.unshown:  # a "cleared" line with no ANOMALY line before it
                    self.unshown.discard(eid)  # would puzzle: held back with its opening
                    self.held += 1
                    continue
            if self.tokens < 1:
                self.held += 1
                if ep.is_open:
                    self.unshown.add(eid)
                continue
            self.tokens -= 1
            if self.held:
                lines.append(f"... {self.held} more episode lines not shown "
                             "(all are stored: `stormwatch top`)\n")  # fmt: skip
                self.held = 0
            at = datetime.fromtimestamp(ep.start_ms / 1000, UTC).strftime("%H:%M:%S")
            state = "ANOMALY" if ep.is_open else "cleared"
            lines.append(f"{at} {state:8} {ep.severity:8} {ep.explanation}\n")
        if lines:
            self.out.write("".join(lines))
            self.out.flush()


def summarize(store: Store, settings: StormwatchSettings, since: float) -> dict[str, int]:
    """What this run wrote (since `since`, epoch seconds): earlier runs' rows in the same
    database are not counted."""
    db, t = settings.database, f"fromUnixTimestamp64Milli({int(since * 1000)})"
    q = store.query(
        f"SELECT (SELECT count() FROM {db}.points FINAL WHERE written_at >= {t}), "
        f"(SELECT uniqExact(series_id) FROM {db}.points WHERE written_at >= {t}), "
        f"(SELECT count() FROM {db}.anomalies FINAL WHERE updated_at >= {t}), "
        f"(SELECT count() FROM {db}.dlq WHERE ts >= {t})"
    )
    points, series, episodes, dead = q.rows[0]
    return {"points": points, "series": series, "episodes": episodes, "dead_letters": dead}


def run_up(
    settings: StormwatchSettings,
    *,
    demo: bool = False,
    duration: float | None = None,
    start_broker: bool = True,
    gateway_on: bool = True,
    out: IO[str] = sys.stdout,
) -> int:
    from ingest.producer import TelemetryProducer
    from ingest.topics import ensure_topics
    from stormwatch.demo import DemoGenerator
    from streams.app import Stats, build_app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if demo:
        # Each demo run starts with new detectors: the last run's checkpoints (same series)
        # would otherwise resume models that already saw its incidents.
        settings = settings.model_copy(update={"restore_after": datetime.now(UTC)})
    if demo and "STORMWATCH_WINDOW_S" not in os.environ:
        # The demo compresses a day into minutes, so it aggregates spans over 2 s, not 10 s.
        settings = settings.model_copy(update={"window_s": 2.0, "lateness_s": 1.0})
    broker = None
    if settings.local_broker and start_broker:
        broker = LocalBroker(settings.broker_port, settings.data_dir / "broker.log").start()
        out.write(f"broker: Tansu on {broker.bootstrap} (embedded, memory storage: its data is "
                  "gone when it stops)\n")  # fmt: skip
    store = server = gateway = actions = None
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        ensure_topics(settings.bootstrap(), topic_partitions(settings))
        store = open_store(settings, own=True)
        create_schema(store, settings)
        out.write(f"storage: {settings.redacted_dsn()} (database {settings.database})\n")
        if gateway_on:
            gateway = _start_gateway(settings, out)
        actions = _start_actions(settings, store, demo, out)
        stats = Stats()
        app = build_app(
            settings, with_faults(store, settings), stats, on_episodes=EpisodePrinter(out)
        )  # type: ignore[arg-type]
        if settings.embedded_clickhouse:  # served last: workers waiting for it join with us
            server = StoreServer(store, settings)
        t0 = time.time()
        gen = None
        if demo:
            gen_duration = duration or 600.0
            producer = TelemetryProducer(settings.bootstrap(), settings.topics.raw)
            gen = DemoGenerator(producer, t0, gen_duration)
            threads.append(threading.Thread(target=gen.run, args=(stop,), daemon=True))
            out.write(f"demo: a shop's backend with {len(gen.incidents)} incidents scheduled "
                      f"over {gen_duration:.0f}s\n")  # fmt: skip
        if duration:
            threads.append(threading.Thread(
                target=_stop_after, args=(duration, settings, stop), daemon=True))  # fmt: skip
        threads.append(threading.Thread(target=_progress, args=(stats, stop, out), daemon=True))
        for t in threads:
            t.start()
        out.write("running: Ctrl-C stops\n")
        out.flush()
        run_faust(app)
        stop.set()
        for t in threads:
            t.join(timeout=15)
        s = summarize(store, settings, t0)
        out.write(f"\nsummary: {s['points']} points from {s['series']} series in "
                  f"{time.time() - t0:.0f}s; {s['episodes']} anomaly episodes; "
                  f"{s['dead_letters']} dead letters\n")  # fmt: skip
        if gen is not None:
            from stormwatch.demo import evaluate

            found = evaluate(store, settings.database, gen.incidents, settings.window_s)
            for inc, hit in found:
                out.write(f"  {'found' if hit else 'MISSED':6} {inc.name}\n")
            out.write(f"detected {sum(h for _, h in found)} of {len(found)} injected incidents\n")
        out.flush()
        return 0
    finally:
        stop.set()
        if actions:
            actions.stop()  # before the store closes: it flushes the audit outbox
            actions.feedback_publisher.close()  # type: ignore[attr-defined]
        if gateway:
            gateway.stop()
        if server:
            server.close()
        if store:
            store.close()
        if broker:
            broker.stop()


def _start_actions(
    settings: StormwatchSettings, store: Store, demo: bool, out: IO[str]
) -> ActionsService:
    """The actions service (proposals, Slack approvals, executors). A bad policy file or a
    taken STORMWATCH_ACTIONS_ADDR stops start-up: nothing should run unguarded."""
    from actions.service import start_in_pipeline

    publisher = FeedbackPublisher(settings)
    try:
        svc = start_in_pipeline(settings, store, demo=demo, on_feedback=publisher)
    except BaseException:
        publisher.close()
        raise
    svc.feedback_publisher = publisher  # type: ignore[attr-defined]
    if svc.archived_state is not None:
        out.write(f"actions: the last run's proposals and audit outbox are kept in "
                  f"{svc.archived_state}; this demo starts with none\n")  # fmt: skip
    n = len(svc.engine.policies) if svc.engine else 0
    dry = "on" if svc.settings.dry_run else "off"
    out.write(
        f"actions: Slack interactivity URL {svc.url}/slack/interactions, {n} policies, "
        f"dry run {dry} (`stormwatch actions list`)\n"
    )
    return svc


class FeedbackPublisher:
    """Sends each label a person gives an episode to the worker that owns its series (on the
    series' own points partition); `close()` before the broker goes away."""

    def __init__(self, settings: StormwatchSettings) -> None:
        from kafka import KafkaProducer

        self.settings = settings
        self._producer = KafkaProducer(bootstrap_servers=settings.bootstrap(), acks="all")

    def __call__(self, fb: Any) -> None:
        from streams.wire import encode_feedback, partition_of

        t = self.settings.topics
        value = encode_feedback(fb.series_id, fb.label, fb.episode_id)
        part = partition_of(fb.series_id, t.partitions)
        self._producer.send(t.points, value, partition=part).get(timeout=10)

    def close(self) -> None:
        self._producer.close(timeout=5)


def _start_gateway(settings: StormwatchSettings, out: IO[str]) -> object | None:
    """The OTLP/HTTP + /ingest gateway; not fatal when it cannot start (port 4318 is often a
    local Collector's)."""
    from ingest import IngestError
    from ingest.gateway import GatewayServer, load_gateway_settings

    try:
        return GatewayServer(settings, load_gateway_settings()).start(out=out)
    except IngestError as e:
        out.write(f"gateway: not started: {e}\n")
        return None


def run_faust(app: object) -> None:
    """Run a faust worker for `app` in this process until SIGINT/SIGTERM, logging at the
    level the command set (faust would set its own)."""
    import faust

    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    worker = faust.Worker(app, loglevel=level, quiet=True, redirect_stdouts=False)
    worker.spinner = None  # its cursor escapes mangle our output and logs
    from streams.tuning import quiet_gc

    restore_gc = quiet_gc()
    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass
    finally:
        restore_gc()


def run_worker(settings: StormwatchSettings, out: IO[str] = sys.stdout) -> int:
    """One more worker in the consumer group: no broker, no engine of its own. With the
    embedded engine it writes through the `stormwatch up` process that owns it."""
    from stormwatch.store import RemoteStore, wait_for_engine
    from streams.app import build_app

    def waiting() -> None:
        out.write(f"worker: waiting up to {settings.engine_wait_s:g} s for `stormwatch up` to "
                  f"serve the engine in {settings.chdb_path}\n")  # fmt: skip
        out.flush()

    store: Store
    if settings.embedded_clickhouse:
        # Connected once `up` serves the engine, which it does right before it joins the
        # group: built first (0.6 s of warm-up), this worker then joins with it. On Tansu a
        # member's join is answered ~3 s after it asked, so one asking later starts later.
        store = RemoteStore()
    else:  # a server: this worker may be the first one up
        store = open_store(settings)
        from ingest.topics import ensure_topics

        create_schema(store, settings)
        ensure_topics(settings.bootstrap(), topic_partitions(settings))
    try:
        app = build_app(settings, with_faults(store, settings), on_episodes=EpisodePrinter(out))
        if isinstance(store, RemoteStore):
            wait_for_engine(settings, settings.engine_wait_s, waiting, store, every=0.02)
        out.write(f"worker: joining group {settings.app_id} on {settings.bootstrap()}\n")
        out.flush()
        run_faust(app)  # type: ignore[arg-type]
    finally:
        store.close()
    return 0


def _stop_after(duration: float, settings: StormwatchSettings, stop: threading.Event) -> None:
    """After `duration`: stop producing, let open windows close and flush, then stop faust."""
    if stop.wait(duration):
        return
    stop.set()
    time.sleep(settings.window_s + settings.lateness_s + 2.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _progress(stats: object, stop: threading.Event, out: IO[str]) -> None:
    while not stop.wait(15):
        v = stats.values  # type: ignore[attr-defined]
        out.write(f"progress: {int(v.get('detect.points_written', 0))} points written, "
                  f"{int(v.get('detect.series', 0))} series, "
                  f"{int(v.get('detect.episodes_opened', 0))} episodes, "
                  f"{int(v.get('normalize.rejects', 0))} dead letters\n")  # fmt: skip
        out.flush()
