"""The actions service as one object `stormwatch up` starts and stops in-process.

Threads: a kafka-python consumer of the anomalies topic (each poll batch recorded in one
SQLite transaction, its offsets committed after that commit: at least once, and `on_episode`
is idempotent per episode and policy), the FastAPI app under uvicorn, a ticker (expiry,
notification, watch, audit flush), and a small pool that executes approved proposals so a
Slack click is answered at once.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from actions import ActionsError
from actions.audit import Auditor, FeedbackCallback
from actions.engine import Engine, utcnow
from actions.executors import CommandExecutor, Executors, HttpExecutor, KafkaExecutor
from actions.http import create_app
from actions.library import SHIPPED
from actions.policy import PolicyFile, load_policies
from actions.registry import ActionRegistry
from actions.settings import ActionsSettings
from actions.slack import SlackPoster
from actions.state import StateStore
from detectors.episodes import Episode, EpisodeChanges

log = logging.getLogger("stormwatch.actions")
DEMO_POLICIES = Path(__file__).parent / "policies" / "demo.yaml"


def build_engine(settings: ActionsSettings, *, store: Any | None, database: str,
                 bootstrap: str | None, runner: Callable[..., Any] | None = None,
                 on_feedback: FeedbackCallback | None = None,
                 clock: Callable[[], datetime] = utcnow) -> Engine:  # fmt: skip
    """The composition root shared by the service and `stormwatch actions`."""
    registry = ActionRegistry(SHIPPED)
    policies = load_policies(settings.policies, registry) if settings.policies else PolicyFile()
    state = StateStore(settings.db_path)
    executors = Executors(
        http=HttpExecutor(settings.http_timeout_s, settings.http_retries),
        command=CommandExecutor(policies.commands, settings.command_timeout_s),
        kafka=KafkaExecutor(bootstrap, settings.command_topic) if bootstrap else None,
    )
    webhook = settings.slack_webhook_url.get_secret_value() if settings.slack_webhook_url else None
    poster = SlackPoster(webhook, settings.slack_response_url_prefix, settings.http_timeout_s)
    kw: dict[str, Any] = {"runner": runner} if runner else {}
    return Engine(settings, state, Auditor(state, store, database), registry, policies,
                  executors, poster, on_feedback=on_feedback, clock=clock, **kw)  # fmt: skip


def _policies_marker(settings: ActionsSettings) -> Path:
    return Path(settings.data_dir) / "actions-policies.txt"


def record_policies(settings: ActionsSettings) -> None:
    """Say which policy file the service on this host runs, so `stormwatch actions approve`
    decides with the same policies (the demo's are chosen by `--demo`, not by a setting)."""
    marker = _policies_marker(settings)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(settings.policies.resolve()) if settings.policies else "")


def policies_in_use(settings: ActionsSettings) -> ActionsSettings:
    """STORMWATCH_POLICIES if set, else the file the service on this host recorded."""
    marker = _policies_marker(settings)
    if settings.policies is None and marker.exists() and marker.read_text().strip():
        return settings.model_copy(update={"policies": Path(marker.read_text().strip())})
    return settings


def fresh_demo_state(settings: ActionsSettings, store: Any | None, database: str,
                     now: datetime) -> Path | None:  # fmt: skip
    """Move the last run's actions state aside so a demo run starts with none; returns where
    it went (None: there was none). Kept, it would hold this run's proposals back (one live
    proposal per policy and target, for the 15 minutes a proposal lives) and apply its
    cooldowns, silences and incidents to incidents that are not theirs. Its audit outbox is
    flushed to ClickHouse first, so nothing it recorded is lost to the audit table."""
    path = settings.db_path
    if not path.exists():
        return None
    state = StateStore(path)
    try:
        Auditor(state, store, database).flush()
    finally:
        state.close()  # the last connection: SQLite folds the WAL into the file
    dest = path.with_name(f"{path.stem}-{now.strftime('%Y%m%dT%H%M%SZ')}{path.suffix}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            src.rename(f"{dest}{suffix}")
    return dest


def _listen(host: str, port: int) -> socket.socket:
    """Bind here, before any thread starts, so a taken port is a clear error at start-up."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ActionsError(f"the actions service cannot listen on {host}:{port}: {e.strerror} "
                           "(set STORMWATCH_ACTIONS_ADDR)") from None  # fmt: skip
    sock.set_inheritable(True)
    return sock


class ActionsService:
    """`start()` then `stop()`; safe to stop after a failed start."""

    def __init__(self, settings: ActionsSettings, *, store: Any | None, database: str,
                 bootstrap: str, anomalies_topic: str, demo: bool = False,
                 on_feedback: FeedbackCallback | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:  # fmt: skip
        self.settings, self.store, self.database = settings, store, database
        self.bootstrap, self.topic, self.demo = bootstrap, anomalies_topic, demo
        self.on_feedback, self.clock = on_feedback, clock
        self.engine: Engine | None = None
        self.archived_state: Path | None = None  # a demo run's predecessor state, moved aside
        self.app: Any = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPoolExecutor | None = None
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.actions_addr}"

    def start(self, timeout_s: float = 15.0) -> ActionsService:
        """Build, bind and run; a bad policy file or a taken port raises ActionsError."""
        try:
            return self._start(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout_s: float) -> ActionsService:
        import uvicorn

        sock = _listen(self.settings.host, self.settings.port)
        if self.settings.port == 0:  # a free port (tests): say, and call, the real address
            addr = f"{self.settings.host}:{sock.getsockname()[1]}"
            update = {"actions_addr": addr}
            if self.settings.action_base_url == f"http://{self.settings.actions_addr}":
                update["action_base_url"] = f"http://{addr}"
            self.settings = self.settings.model_copy(update=update)
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="actions-exec")
        self.engine = build_engine(
            self.settings, store=self.store, database=self.database, bootstrap=self.bootstrap,
            runner=self._pool.submit, on_feedback=self.on_feedback, clock=self.clock,
        )  # fmt: skip
        self.engine.recover(self.clock())
        secret = self.settings.slack_signing_secret
        self.app = create_app(self.engine, secret.get_secret_value() if secret else None,
                              self.clock, demo=self.demo)  # fmt: skip
        config = uvicorn.Config(self.app, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._spawn(lambda: self._server.run(sockets=[sock]), "actions-http")
        self._spawn(self._consume, "actions-consumer")
        self._spawn(self._tick, "actions-ticker")
        deadline = time.monotonic() + timeout_s
        while not self._server.started and time.monotonic() < deadline:
            if not self._threads[0].is_alive():
                break
            self._stop.wait(0.05)
        if not self._server.started:
            raise ActionsError(f"the actions service did not start on {self.settings.actions_addr}")
        n = len(self.engine.policies)
        log.info("actions: listening on %s, %d policies, dry run %s", self.url, n,
                    "on" if self.settings.dry_run else "off")  # fmt: skip
        return self

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _consume(self) -> None:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        assert self.engine is not None  # noqa: S101
        consumer = None
        while not self._stop.is_set() and consumer is None:
            try:
                consumer = KafkaConsumer(
                    self.topic, bootstrap_servers=self.bootstrap,
                    group_id=self.settings.consumer_group, enable_auto_commit=False,
                    auto_offset_reset="earliest", max_poll_interval_ms=5000,
                    session_timeout_ms=6000, heartbeat_interval_ms=1000, max_poll_records=200,
                )  # fmt: skip
            except KafkaError as e:
                log.warning("actions: cannot reach Kafka (%s); retrying", type(e).__name__)
                self._stop.wait(2.0)
        try:
            while consumer is not None and not self._stop.is_set():
                self._poll(consumer)
        except Exception:
            log.exception("actions: the anomalies consumer stopped")
        finally:
            if consumer is not None:
                consumer.close()

    def _poll(self, consumer: Any) -> None:
        """Record one poll batch, then commit its offsets: only once its state is durable.

        If the batch cannot be committed to SQLite (locked by another process for longer than
        the busy timeout, disk full), no offset is committed and the consumer goes back to the
        batch's first records, so they are read again.
        """
        batches = consumer.poll(timeout_ms=500)
        if not batches:
            return
        try:
            self._handle_batch([rec.value for records in batches.values() for rec in records])
        except sqlite3.Error as e:
            log.warning("actions: episodes not recorded (%s); reading them again", e)
            for tp, records in batches.items():
                with suppress(ValueError):  # revoked meanwhile: its new owner reads them
                    consumer.seek(tp, records[0].offset)
            self._stop.wait(1.0)
            return
        consumer.commit()

    def _handle_batch(self, values: Sequence[bytes]) -> None:
        """Handle messages in one state transaction (one fsync for the batch, not per episode);
        an episode that fails is logged and skipped as before, the others are committed. Of an
        episode's growth in the batch only the newest state is handled: its first open state
        (which may propose) and its close always are (`EpisodeChanges`)."""
        assert self.engine is not None  # noqa: S101
        changes = EpisodeChanges()
        seen: set[int] = set()
        for value in values:
            try:
                ep = Episode.model_validate_json(value)
            except ValidationError:
                log.warning("actions: skipped a message that is not an episode")
                continue
            first = ep.episode_id not in seen
            seen.add(ep.episode_id)
            step = "close" if not ep.is_open else "open" if first else "grow"
            changes.add(ep.episode_id, ep, step)
        with self.engine.state.batch():
            for ep in changes.take():
                self._handle(ep)

    def _handle(self, ep: Episode) -> None:
        assert self.engine is not None  # noqa: S101
        try:
            self.engine.on_episode(ep, self.clock())
        except Exception:  # one bad episode must not stop the consumer
            log.exception("actions: episode %s not handled", ep.episode_id)

    def _tick(self) -> None:
        assert self.engine is not None  # noqa: S101
        while not self._stop.wait(self.settings.tick_s):
            try:
                self.engine.tick(self.clock())
            except Exception:
                log.exception("actions: tick failed")

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
        for t in self._threads:
            t.join(timeout=15)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self.engine is not None:
            self.engine.auditor.flush()
            self.engine.executors.close()
            self.engine.poster.close()
            self.engine.state.close()
            self.engine = None


def start_in_pipeline(settings: Any, store: Any, *, demo: bool,
                      on_feedback: FeedbackCallback | None = None) -> ActionsService:  # fmt: skip
    """Start the service inside `stormwatch up` (same process, same store and broker).

    With `--demo` and no STORMWATCH_POLICIES, the demo policies are loaded and the service
    also serves the demo's remediation endpoint (`/demo/<name>`) that the policies call.
    A bad policy file or a taken port stops start-up (StormwatchError: the CLI prints it).
    `on_feedback` receives each "Not an anomaly" / "Expected" / "New normal" click, for the
    detectors (`SeriesModel.apply_feedback(label)` of the episode's series).
    """
    from pydantic import ValidationError

    from stormwatch import StormwatchError

    try:
        asettings = ActionsSettings(data_dir=settings.data_dir)
    except ValidationError as e:
        err = e.errors()[0]
        name = "STORMWATCH_" + "_".join(str(p) for p in err["loc"]).upper()
        raise StormwatchError(f"bad settings: {name}: {err['msg']}") from None
    if demo and asettings.policies is None:
        asettings = asettings.model_copy(update={"policies": DEMO_POLICIES})
    archived = fresh_demo_state(asettings, store, settings.database, utcnow()) if demo else None
    record_policies(asettings)
    svc = ActionsService(asettings, store=store, database=settings.database,
                         bootstrap=settings.bootstrap(), anomalies_topic=settings.topics.anomalies,
                         demo=demo, on_feedback=on_feedback)  # fmt: skip
    svc.archived_state = archived
    try:
        return svc.start()
    except ActionsError as e:
        raise StormwatchError(str(e)) from None
