"""The pipeline benchmark's CPU split: a process's interpreter time lands under `python`,
read from /proc, and becomes µs a point between two readings."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from benchmarks.cpu import cores_busy, cpu_by_role, per_point

BUSY = """
import sys, time
t = time.process_time()
while time.process_time() - t < 0.5:
    pass
print("done", flush=True)
sys.stdin.read()
"""


def test_a_busy_interpreter_counts_as_python_cpu_and_divides_per_point() -> None:
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed code
        [sys.executable, "-c", BUSY], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        before = cpu_by_role([proc.pid], None)
        assert proc.stdout is not None and proc.stdout.readline() == b"done\n"
        time.sleep(0.1)
        after = cpu_by_role([proc.pid], None)
    finally:
        proc.kill()
        proc.wait()
    spent = after["python"] - before.get("python", 0.0)
    assert 0.3 <= spent <= 2.0  # the 0.5 s loop, in clock ticks
    assert after.get("native", 0.0) - before.get("native", 0.0) < 0.2
    assert per_point(before, after, 1000)["python"] == pytest.approx(1e3 * spent, rel=1e-6)
    assert cpu_by_role([proc.pid], None) == {}  # gone: nothing counted


def test_cores_busy_is_the_cpu_a_point_at_the_runs_rate() -> None:
    # 4 us of CPU a point at 250k points/s keeps one core busy; at 400k, 1.6 of them
    split = {"python": 3.2, "native": 0.5, "broker": 0.3}
    assert cores_busy(split, 250_000) == pytest.approx(1.0)
    assert cores_busy(split, 400_000) == pytest.approx(1.6)
    assert cores_busy({}, 400_000) == 0.0
