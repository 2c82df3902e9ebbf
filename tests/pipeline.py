"""Run `stormwatch up` as a subprocess for end-to-end tests, and query it while it runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from stormwatch.settings import StormwatchSettings
from stormwatch.store import Store, open_store


def settings_env(s: StormwatchSettings, bootstrap: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "STORMWATCH_KAFKA_BOOTSTRAP": bootstrap,
        "STORMWATCH_DATA_DIR": str(s.data_dir),
        "STORMWATCH_DATABASE": s.database,
        "STORMWATCH_APP_ID": s.app_id,
        "STORMWATCH_WINDOW_S": str(s.window_s),
        "STORMWATCH_LATENESS_S": str(s.lateness_s),
        "STORMWATCH_BROKER_SESSION_TIMEOUT_S": "6",
    })  # fmt: skip
    for field in ("raw", "otlp_metrics", "otlp_spans", "points", "dlq", "anomalies"):
        env[f"STORMWATCH_TOPIC_{field.upper()}"] = getattr(s.topics, field)
    env["STORMWATCH_TOPIC_PARTITIONS"] = str(s.topics.partitions)
    return env


@contextmanager
def running_pipeline(
    s: StormwatchSettings, bootstrap: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`stormwatch up` against the test broker; stopped with SIGTERM (graceful) on exit."""
    engine = s.chdb_path / "engine.json"
    engine.unlink(missing_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stormwatch.cli", "up"], env=settings_env(s, bootstrap),
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: engine.exists() or proc.poll() is not None, 60, "pipeline start")
        assert proc.poll() is None, log.read_text()[-3000:]
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def remote_store(s: StormwatchSettings) -> Store:
    """The store of the running pipeline (through its store server)."""
    return open_store(s)


def wait_for(cond: Callable[[], object], timeout: float, what: str, every: float = 0.5) -> object:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)
