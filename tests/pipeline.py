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
        "STORMWATCH_GATEWAY_PORT": "0",
        "STORMWATCH_ACTIONS_ADDR": "127.0.0.1:0",
    })  # fmt: skip
    for field in ("raw", "otlp_metrics", "otlp_spans", "points", "dlq", "anomalies"):
        env[f"STORMWATCH_TOPIC_{field.upper()}"] = getattr(s.topics, field)
    env["STORMWATCH_TOPIC_PARTITIONS"] = str(s.topics.partitions)
    return env


@contextmanager
def running_pipeline(
    s: StormwatchSettings, bootstrap: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`stormwatch up` against the test broker; stopped with SIGTERM (graceful) on exit."""
    engine = s.chdb_path / "engine.json"
    engine.unlink(missing_ok=True)
    proc = _spawn("up", s, bootstrap, log, env)
    try:
        wait_for(lambda: engine.exists() or proc.poll() is not None, 60, "pipeline start")
        assert proc.poll() is None, log.read_text()[-3000:]
        yield proc
    finally:
        stop(proc)


@contextmanager
def running_worker(
    s: StormwatchSettings, bootstrap: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`stormwatch worker`: one more member of the group, writing through `up`'s engine."""
    proc = _spawn("worker", s, bootstrap, log, env)
    try:
        yield proc
    finally:
        stop(proc)


def _spawn(
    command: str, s: StormwatchSettings, bootstrap: str, log: Path, env: dict[str, str] | None
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "stormwatch.cli", command],
            env={**settings_env(s, bootstrap), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a pipeline process (SIGTERM: graceful; SIGKILL: a crash) and reap it."""
    if proc.poll() is None:
        proc.send_signal(sig)
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


def reference_scores(s: StormwatchSettings, events: list[dict]) -> dict[tuple[str, int], float]:
    """Scores of one uninterrupted run of the configured detector over each metric series
    (keyed by the `unit` label and ms timestamp), in the order the events were produced."""
    from detectors.registry import model_factory

    make = model_factory(s.detector, threshold=s.threshold)
    models: dict[str, object] = {}
    out = {}
    for e in events:
        unit = e["labels"]["unit"]
        model = models.setdefault(unit, make())
        v = model.update({"y": e["value"], "t": e["ts"]})  # type: ignore[attr-defined]
        out[(unit, int(e["ts"] * 1000))] = v.score
    return out


def stored_metric_rows(store: Store, db: str) -> list[tuple[str, int, float, bool]]:
    """(unit, ms, score, has band) of every metric point, after replacement (FINAL)."""
    return [
        (labels["unit"], ts, score, expected is not None)
        for labels, ts, score, expected in store.query(
            f"SELECT labels, toUnixTimestamp64Milli(ts), score, expected FROM {db}.points FINAL "
            f"WHERE kind = 'metric'"
        ).rows
    ]


def reference_unbanded(s: StormwatchSettings, events: list[dict]) -> int:
    """How many points one uninterrupted run scores without a band (its warm-up)."""
    import math

    from detectors.registry import model_factory

    make = model_factory(s.detector, threshold=s.threshold)
    models: dict[str, object] = {}
    n = 0
    for e in events:
        model = models.setdefault(e["labels"]["unit"], make())
        v = model.update({"y": e["value"], "t": e["ts"]})  # type: ignore[attr-defined]
        n += not math.isfinite(v.band.expected)
    return n


def assert_no_offsets_skipped(*logs: Path) -> None:
    """No worker warned of source offsets it never normalized (streams.gaps): a restart,
    crash or rebalance resumes each partition where the last reader committed."""
    for log in logs:
        assert b"never normalized" not in log.read_bytes(), log.read_text()[-3000:]
