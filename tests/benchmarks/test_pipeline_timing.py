"""The pipeline benchmark's start: the first partitions assigned in this run's log."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from benchmarks.pipeline import assigned_at, first_assigned, states_resumed


def _line(when: str, pid: int, stage: str, resumed: int = 0) -> bytes:
    # as faust's worker writes a StageRunner line at INFO (tests/e2e/test_faults.py reads one)
    msg = f"{stage}: partitions {{0, 2}} assigned, {resumed} states resumed"
    return f"[{when}] [{pid}] [INFO] {msg} \n".encode()


def test_a_kept_log_is_read_from_this_runs_offset(tmp_path: Path) -> None:
    log = tmp_path / "pipeline.log"
    log.write_bytes(_line("2026-11-27 05:06:49,295", 1, "detect") + b"earlier run's output\n")
    offset = log.stat().st_size
    with open(log, "ab") as f:
        f.write(b"worker: joining group bench-2w\n")
        f.write(_line("2026-11-27 06:10:02,125", 2, "services"))
        f.write(_line("2026-11-27 06:10:02,480", 3, "detect"))
    want = datetime(2026, 11, 27, 6, 10, 2, 125_000).timestamp()
    assert assigned_at(log, offset) == pytest.approx(want)
    assert assigned_at(log) == pytest.approx(datetime(2026, 11, 27, 5, 6, 49, 295_000).timestamp())


def test_a_run_that_never_got_partitions_is_an_error(tmp_path: Path) -> None:
    log = tmp_path / "pipeline.log"
    log.write_bytes(b"[2026-11-27 06:10:02,125] [2] [WARNING] Missing sensor state\n")
    assert first_assigned(log) is None  # what the bench polls for while the workers join
    with pytest.raises(RuntimeError, match="no partitions assigned"):
        assigned_at(log)


def test_a_resumed_run_counts_the_detect_states_its_workers_resumed(tmp_path: Path) -> None:
    log = tmp_path / "pipeline.log"
    log.write_bytes(_line("2026-11-27 05:06:49,295", 1, "detect", 0))  # the warm-up run
    offset = log.stat().st_size
    with open(log, "ab") as f:
        f.write(_line("2026-11-27 06:10:02,125", 2, "services", 10))  # services, not series
        f.write(_line("2026-11-27 06:10:02,480", 2, "detect", 1013))
        f.write(_line("2026-11-27 06:10:02,510", 3, "detect", 987))
    assert states_resumed(log, offset) == 2000
    assert states_resumed(log) == 2000  # the warm-up run resumed none
