"""`make bench`: ceiling, pipeline (1 and 2 workers), latency and memory, each in its own
process against its own broker and engine; prints a table, the command lines that produced
it, and `pipeline/ceiling: R (1 worker); 2 workers: S x one worker`.

Exits non-zero if any run lost or duplicated points (counts and ids checked in ClickHouse with
and without FINAL). Timings are reported, never judged: a slow machine does not fail it.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson


def run(cmd: list[str], log: list[str]) -> dict[str, Any]:
    """Run one benchmark module; its last stdout line is its JSON result."""
    log.append(shlex.join(["python", *cmd[1:]]))
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)  # noqa: S603
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    if not lines:
        print(f"benchmark failed (exit {p.returncode}): {shlex.join(cmd)}", file=sys.stderr)
        return {"failed": True, "exit": p.returncode}
    out = orjson.loads(lines[-1])
    out["exit"] = p.returncode
    out["took_s"] = round(time.monotonic() - t0, 1)
    return out


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", type=int, default=2000)
    # 500 points a series: each series goes through its cycle search and well past it, and
    # each pipeline run lasts long enough (~10 s) that start-up and one rebalance are noise
    p.add_argument(
        "--points", type=int, default=1_000_000, help="points in the pre-produced stream"
    )
    p.add_argument("--latency-seconds", type=float, default=20.0)
    p.add_argument("--memory-points", type=int, default=16, help="points per series (memory)")
    p.add_argument("--profile", type=Path, help="py-spy raw stacks of the 1-worker `up` here")
    a = p.parse_args(argv)
    py = sys.executable
    stream = ["--series", str(a.series), "--points", str(a.points)]
    cmds: list[str] = []
    t0 = time.monotonic()

    ceiling = run([py, "-m", "benchmarks.ceiling", *stream], cmds)
    one_cmd = [py, "-m", "benchmarks.pipeline", "--workers", "1", *stream]
    if a.profile:
        one_cmd += ["--profile", str(a.profile)]
    one = run(one_cmd, cmds)
    two = run([py, "-m", "benchmarks.pipeline", "--workers", "2", *stream], cmds)
    rate = max(100, round(one.get("points_per_s", 2000) / 2))
    lat = run(
        [
            py,
            "-m",
            "benchmarks.latency",
            "--rate",
            str(rate),
            "--series",
            str(a.series),
            "--seconds",
            str(a.latency_seconds),
        ],
        cmds,
    )
    mem = [
        run(
            [py, "-m", "benchmarks.memory", "--series", str(n), "--points", str(a.memory_points)],
            cmds,
        )
        for n in (10_000, 100_000)
    ]

    def checked(r: dict[str, Any]) -> str:
        c = r.get("check")
        if not c:
            return "FAILED" if r.get("failed") else "-"
        return (
            f"{'ok' if c['ok'] else 'LOST/DUPLICATED'} ({c['rows']:,} rows, {c['rows_final']:,}"
            f" FINAL, {c['unique_ids']:,} ids of {c['expected']:,})"
        )

    cr = ceiling.get("points_per_s") or 0
    r1, r2 = one.get("points_per_s") or 0, two.get("points_per_s") or 0
    rows: list[tuple[str, ...]] = [("benchmark", "result", "detail", "points check")]
    rows.append(
        (
            "ceiling (raw path, 1 process)",
            f"{fmt(cr)} points/s",
            f"{fmt(ceiling.get('inserts'))} inserts of <= {fmt(ceiling.get('block'))} rows",
            checked(ceiling),
        )
    )
    for name, r in (("pipeline, 1 worker", one), ("pipeline, 2 workers", two)):
        rows.append(
            (
                name,
                f"{fmt(r.get('points_per_s'))} points/s",
                f"{fmt(r.get('seconds'))} s first->last row; "
                f"{fmt(r.get('steady_points_per_s'))}/s after the first 20%; "
                f"{fmt(r.get('points_per_s', 0) / cr if cr else None)} of ceiling",
                checked(r),
            )
        )
    lat_ok = "ok" if lat.get("ok") else "LOST/DUPLICATED" if "ok" in lat else "FAILED"
    rows.append(
        (
            f"latency at {fmt(lat.get('rate'))} points/s",
            "produce -> queryable",
            f"p50 {fmt(lat.get('queryable_p50_ms'))} ms, p99 {fmt(lat.get('queryable_p99_ms'))} ms",
            lat_ok,
        )
    )
    rows.append(
        (
            "",
            "produce -> episode written",
            f"p50 {fmt(lat.get('episode_p50_ms'))} ms, p99 {fmt(lat.get('episode_p99_ms'))} "
            f"ms ({fmt(lat.get('episodes_seen'))} of {fmt(lat.get('spikes'))} spikes)",
            "",
        )
    )
    for m in mem:
        rows.append(
            (
                f"memory, {fmt(m.get('series'))} series",
                "resident per series",
                f"{fmt(m.get('bytes_per_series'))} bytes ({fmt(m.get('points_per_series'))} "
                f"points each; {fmt(m.get('us_per_point'))} us/point in DetectStage)",
                "-",
            )
        )
    print()
    print(table(rows))
    print(f"\nall runs took {time.monotonic() - t0:.0f} s; commands (from the repository root):")
    for c in cmds:
        print(f"  {c}")
    ok = all(r.get("check", {}).get("ok") for r in (ceiling, one, two)) and bool(lat.get("ok"))
    ok = ok and all(not m.get("failed") for m in mem)
    if not ok:
        print("\nFAILED: a run lost or duplicated points, or did not finish (see above)")
    ratio = f"{r1 / cr:.2f}" if cr else "n/a"
    scale = f"{r2 / r1:.2f}" if r1 else "n/a"
    print(f"pipeline/ceiling: {ratio} (1 worker); 2 workers: {scale} x one worker")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
