"""Pipeline: the ceiling's stream through the real product, against its own broker and engine.

The whole stream is produced first; then `stormwatch up --no-gateway` (and, for 2 workers, a
`stormwatch worker` writing through up's store server) runs it through normalize → detect →
ClickHouse with the default detectors. Throughput is points over the span from the first
partitions assigned (the workers' log, at INFO) to the last row's `written_at`, as the ceiling
measures from its partitions assigned; counts and ids are then checked with and without FINAL.

    python -m benchmarks.pipeline --workers 1 --series 2000 --points 300000 [--profile DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from benchmarks.ceiling import (
    ONLY_METRICS,
    StreamSpec,
    bench_settings,
    check_points,
    expected_ids,
    produce_stream,
    stream_start,
)
from benchmarks.cpu import cpu_by_role, per_point
from stormwatch.broker import LocalBroker, free_port
from stormwatch.settings import StormwatchSettings


def settings_env(s: StormwatchSettings) -> dict[str, str]:
    """The environment that gives a `stormwatch` subprocess these settings."""
    env = dict(os.environ)
    env.update(
        {
            "STORMWATCH_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "STORMWATCH_DATA_DIR": str(s.data_dir),
            "STORMWATCH_DATABASE": s.database,
            "STORMWATCH_APP_ID": s.app_id,
            "STORMWATCH_BROKER_SESSION_TIMEOUT_S": "6",
            "STORMWATCH_GATEWAY_PORT": "0",
            "STORMWATCH_ACTIONS_ADDR": "127.0.0.1:0",  # a free port: 8787 may be taken here
            "STORMWATCH_TOPIC_PARTITIONS": str(s.topics.partitions),
            "STORMWATCH_CHECKPOINT_S": str(s.checkpoint_s),
            "STORMWATCH_LOG_LEVEL": "INFO",  # partition assignments, for `assigned_at`
        }
    )
    return env


def command(role: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "stormwatch.cli",
        role,
        *(["--no-gateway"] if role == "up" else []),
    ]


_ASSIGNED = re.compile(
    rb"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \[\d+\] \[INFO\] \w+: partitions .* assigned"
)


def first_assigned(log: Path, offset: int = 0) -> float | None:
    """Epoch seconds of the first partitions assigned to any worker (`StageRunner` logs it
    at INFO; faust's format gives local time in ms) in `log` past `offset` (a kept log is
    appended to): when the stream starts to be read. None while there is none."""
    with open(log, "rb") as f:
        f.seek(offset)
        lines = f.read().splitlines()
    for line in lines:
        if m := _ASSIGNED.match(line):
            return datetime.strptime(m[1].decode(), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def assigned_at(log: Path, offset: int = 0) -> float:
    """`first_assigned`, which a finished run must have."""
    at = first_assigned(log, offset)
    if at is None:
        raise RuntimeError(f"no partitions assigned in {log}")
    return at


_RESUMED = re.compile(rb"\] detect: partitions .* assigned, (\d+) states resumed")


def states_resumed(log: Path, offset: int = 0) -> int:
    """Series states the detect stage resumed from checkpoints, past `offset` in `log`."""
    with open(log, "rb") as f:
        f.seek(offset)
        return sum(int(m[1]) for m in _RESUMED.finditer(f.read()))


def warm_up_run(settings: StormwatchSettings, workers: int, log: Path, points: int) -> None:
    """Run the pipeline until `points` rows are written, then stop it gracefully: its stop
    writes the last rows and checkpoints every series' detector."""
    from stormwatch.store import open_store

    with running(settings, workers, log):
        store = open_store(settings)
        try:
            q = f"SELECT count() FROM {settings.database}.points WHERE {ONLY_METRICS}"
            wait_for(lambda: int(store.query(q).rows[0][0]) >= points, 420,
                     "the warm-up run's points", every=0.5)  # fmt: skip
        finally:
            store.close()


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while not (v := cond()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
    return v


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def running(settings: StormwatchSettings, workers: int, log: Path) -> Iterator[list[Any]]:
    """`stormwatch up` (+ `workers - 1` x `stormwatch worker`, started with it so that they
    join the group at about the same time); yields their Popen objects once up serves its
    engine; SIGTERM (graceful) on exit."""
    engine = settings.chdb_path / "engine.json"
    procs: list[subprocess.Popen[bytes]] = []
    env = settings_env(settings)
    try:
        with open(log, "ab") as out:

            def spawn(role: str) -> subprocess.Popen[bytes]:
                proc = subprocess.Popen(command(role), env=env, stdout=out,  # noqa: S603
                                        stderr=subprocess.STDOUT)  # fmt: skip
                procs.append(proc)
                return proc

            up = spawn("up")
            for _ in range(workers - 1):  # together: each waits for up to serve the engine
                spawn("worker")
            wait_for(lambda: engine.exists() or up.poll() is not None, 60, "stormwatch up")
            if up.poll() is not None:
                raise RuntimeError(f"stormwatch up exited: {log.read_text()[-2000:]}")
        yield procs
    finally:
        for p in reversed(procs):
            stop(p)


@contextmanager
def profiled(pid: int, path: Path | None, gil: bool = False) -> Iterator[None]:
    """py-spy (if installed and allowed) samples `pid` while the block runs; `gil`: only the
    samples of the thread holding the GIL (what bounds one worker)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if path is None or not Path(spy).exists():
        yield
        return
    proc = subprocess.Popen(  # noqa: S603
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            "200",
            "--threads",
            "--output",
            str(path),
            "--nonblocking",
            *(["--gil"] if gil else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_pipeline(
    spec: StreamSpec,
    workers: int,
    profile: Path | None = None,
    keep_log: Path | None = None,
    gil: bool = False,
    resumed: bool = False,
) -> dict[str, Any]:
    """One throughput run. `resumed`: a first run, not timed, takes the stream and stops
    gracefully (so every series' detector is checkpointed); the timed run is a restart that
    resumes them on the stream's continuation, as a worker restarted in production does:
    settled series, where a fresh run's are all young (their cycle searches and replays)."""
    from ingest.topics import ensure_topics
    from stormwatch.pipeline import topic_partitions
    from stormwatch.store import open_store

    with (
        tempfile.TemporaryDirectory(prefix="sw-pipeline-") as tmp,
        LocalBroker(free_port()) as broker,
    ):
        data = Path(tmp)
        settings = bench_settings(data, broker.bootstrap, app_id=f"bench-{workers}w")
        ensure_topics(broker.bootstrap, topic_partitions(settings))
        start = stream_start()
        log = keep_log or data / "pipeline.log"
        produce_s = produce_stream(broker.bootstrap, settings.topics.raw, spec, start)
        total, timed_from = spec.points, start
        if resumed:
            warm_up_run(settings, workers, log, spec.points)
            timed_from = start + spec.rounds  # the continuation, each series where it was
            produce_s = produce_stream(
                broker.bootstrap, settings.topics.raw, spec, start, first_round=spec.rounds
            )
            total = 2 * spec.points
        log_from = log.stat().st_size if log.exists() else 0
        t_spawn = time.monotonic()
        with running(settings, workers, log) as procs:
            store = open_store(settings)
            db = settings.database

            pids = [p.pid for p in procs]
            cpu: list[tuple[int, dict[str, float]]] = []  # (rows, CPU by role): first, last
            q = f"SELECT count() FROM {db}.points"

            def rows() -> int:
                return int(store.query(q).rows[0][0])

            def count() -> int:
                # the bare count is read from part metadata; the filtered one scans a column:
                # polled every 0.25 s it would take the engine (and its lock) from the workers
                n = rows()
                if n < total:
                    return 0
                cpu[1:] = [(n, cpu_by_role(pids, broker.proc.pid))]
                return int(store.query(f"{q} WHERE {ONLY_METRICS}").rows[0][0])

            def gone() -> bool:
                return any(p.poll() is not None for p in procs)

            with profiled(procs[0].pid, profile, gil):
                # CPU is counted over the timed window: from the partitions assigned (the
                # log read every 20 ms; until the fourteenth round, from the first rows)
                wait_for(lambda: first_assigned(log, log_from) or gone(), 120, "partitions",
                         every=0.02)  # fmt: skip
                cpu.append((rows(), cpu_by_role(pids, broker.proc.pid)))
                wait_for(lambda: count() >= total or gone(), 420, "all points written", every=0.25)
            wall = time.monotonic() - t_spawn
            time.sleep(1.0)  # anything written twice would show now
            first_row, last = store.query(
                f"SELECT toUnixTimestamp64Milli(min(written_at)), "
                f"toUnixTimestamp64Milli(max(written_at)) FROM {db}.points WHERE {ONLY_METRICS}"
                f" AND ts >= toDateTime64({timed_from}, 3)"
            ).rows[0]
            whole = StreamSpec(**{**spec.model_dump(), "points": total})  # both halves
            check = check_points(store, db, expected_ids(whole, start))
            per_worker = store.query(
                f"SELECT worker, sum(value) FROM {db}.health WHERE stage = 'detect' AND "
                f"metric = 'points_written' GROUP BY worker ORDER BY worker"
            ).rows
            store.close()
        first = assigned_at(log, log_from) * 1000
        resumed_states = states_resumed(log, log_from) if resumed else 0
    secs = max((last - first) / 1000, 1e-3)
    return {
        "bench": "pipeline",
        "workers": workers,
        "resumed": resumed,
        "keyed": spec.keyed,
        "series_resumed": resumed_states,
        "points": spec.points,
        "series": spec.series,
        "seconds": round(secs, 3),
        "points_per_s": round(spec.points / secs),
        # what measuring from the first row written left out (until the eleventh round)
        "before_first_row_s": round((first_row - first) / 1000, 3),
        "wall_s": round(wall, 1),
        "produce_s": round(produce_s, 2),
        "per_worker": [int(v) for _, v in per_worker],
        # CPU a point from the partitions assigned to the last row, by role: the workers' Python
        # against the engine's and broker's threads, which 2 workers must share 2 cores with
        "cpu_us_per_point": per_point(cpu[0][1], cpu[-1][1], cpu[-1][0] - cpu[0][0])
        if len(cpu) == 2
        else {},
        "check": check,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=1, choices=[1, 2, 3, 4])
    p.add_argument("--series", type=int, default=2000)
    p.add_argument("--points", type=int, default=300_000)
    p.add_argument("--profile", type=Path, help="write py-spy raw stacks of `up` here")
    p.add_argument("--gil", action="store_true", help="profile only the GIL holder's stacks")
    p.add_argument("--log", type=Path, help="keep the pipeline's log here")
    p.add_argument("--keyed", action="store_true",
                   help="each producer keyed to one partition, not each event to its "
                        "series' partition: points another worker detects hop a topic")  # fmt: skip
    p.add_argument("--resumed", action="store_true",
                   help="time a restart on the stream's continuation, every series' detector "
                        "resumed from the checkpoints of a first run (settled series)")  # fmt: skip
    a = p.parse_args(argv)
    if a.resumed and a.points % a.series:
        p.error("--resumed needs --points to be a whole number of rounds (a multiple of --series)")
    spec = StreamSpec(series=a.series, points=a.points, keyed=a.keyed)
    out = run_pipeline(spec, a.workers, a.profile, a.log, a.gil, a.resumed)
    print(orjson.dumps(out).decode())
    return 0 if out["check"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
