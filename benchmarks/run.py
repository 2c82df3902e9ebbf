"""`make bench`: ceiling, pipeline (1 and 2 workers), latency and memory, each in its own
process against its own broker and engine; prints a table, the command lines that produced
it, and `pipeline/ceiling: R (1 worker); 2 workers: S x one worker`.

The throughput runs go in rounds (ceiling, 1 worker, 2 workers back to back, 3 rounds by
default): a shared host's speed drifts by ±20 % within minutes, so each round's ratios are
taken between neighbouring runs and the reported ratios are their medians. Every round's
figures are printed. Then a ceiling and a 1-worker run resumed from checkpoints (`--resumed`:
a first run's graceful stop checkpoints every series, a restart takes the stream's
continuation), for settled series beside the rounds' young ones; the final line stays the
rounds'.

Exits non-zero if any run lost or duplicated points (counts and ids checked in ClickHouse with
and without FINAL). Timings are reported, never judged: a slow machine does not fail it.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.cpu import cores_busy


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


Round = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]  # ceiling, 1 worker, 2 workers


def rate(r: dict[str, Any]) -> float:
    return float(r.get("points_per_s") or 0)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def ratios(rounds: list[Round]) -> tuple[list[float], list[float]]:
    """Each round's 1 worker / ceiling and 2 workers / 1 worker, between neighbouring runs."""
    one = [rate(r[1]) / rate(r[0]) for r in rounds if rate(r[0]) and rate(r[1])]
    two = [rate(r[2]) / rate(r[1]) for r in rounds if rate(r[1]) and rate(r[2])]
    return one, two


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
    p.add_argument("--rounds", type=int, default=3, help="throughput rounds (median reported)")
    p.add_argument("--profile", type=Path, help="py-spy raw stacks of the 1-worker `up` here")
    a = p.parse_args(argv)
    if a.rounds < 1:
        p.error("--rounds must be at least 1")
    py = sys.executable
    stream = ["--series", str(a.series), "--points", str(a.points)]
    cmds: list[str] = []
    t0 = time.monotonic()

    one_cmd = [py, "-m", "benchmarks.pipeline", "--workers", "1", *stream]
    if a.profile:
        one_cmd += ["--profile", str(a.profile)]
    rounds: list[Round] = []
    for k in range(a.rounds):
        print(f"round {k + 1} of {a.rounds}: ceiling, 1 worker, 2 workers", file=sys.stderr)
        rounds.append(
            (
                run([py, "-m", "benchmarks.ceiling", *stream], cmds),
                run(one_cmd, cmds),
                run([py, "-m", "benchmarks.pipeline", "--workers", "2", *stream], cmds),
            )
        )
    # settled series: 1 worker restarted on the stream's continuation, beside its own ceiling
    settled: tuple[dict[str, Any], dict[str, Any]] | None = None
    if a.points % a.series == 0:
        print("settled series: ceiling, 1 worker resumed", file=sys.stderr)
        settled = (
            run([py, "-m", "benchmarks.ceiling", *stream], cmds),
            run([py, "-m", "benchmarks.pipeline", "--workers", "1", *stream, "--resumed"], cmds),
        )
    one_ratios, two_ratios = ratios(rounds)
    rate_1w = median([rate(r[1]) for r in rounds if rate(r[1])])
    half = max(100, round(rate_1w / 2) if rate_1w else 1000)
    lat = run(
        [
            py,
            "-m",
            "benchmarks.latency",
            "--rate",
            str(half),
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

    def checked_all(runs: list[dict[str, Any]], each: str = "each round: ") -> str:
        checks = [r.get("check") for r in runs]
        if not all(checks):
            return "FAILED"
        c = checks[-1]
        bad = sum(not x["ok"] for x in checks)  # type: ignore[index]
        return (
            f"{f'{bad} LOST/DUPLICATED' if bad else 'ok'} ({each}{c['rows']:,} rows, "
            f"{c['rows_final']:,} FINAL, {c['unique_ids']:,} ids of {c['expected']:,})"
        )

    def cpu_split(runs: list[dict[str, Any]]) -> str:
        """Median CPU a point by role over the rounds, and the cores it kept busy
        (benchmarks.cpu)."""
        timed = [r for r in runs if r.get("cpu_us_per_point")]
        if not timed:
            return ""
        got = [r["cpu_us_per_point"] for r in timed]
        parts = ", ".join(f"{k} {median([g.get(k, 0.0) for g in got]):.1f}"
                          for k in ("python", "native", "broker"))  # fmt: skip
        cores = median([cores_busy(r["cpu_us_per_point"], rate(r)) for r in timed])
        return f"; CPU us/point: {parts} ({cores:.2f} cores busy)"

    rows: list[tuple[str, ...]] = [("benchmark", "result (median)", "detail", "points check")]
    names = ("ceiling (raw path, 1 process)", "pipeline, 1 worker", "pipeline, 2 workers")
    for i, name in enumerate(names):
        runs = [r[i] for r in rounds]
        each = ", ".join(fmt(round(rate(r))) for r in runs)
        if i == 0:
            detail = (f"rounds: {each}; {fmt(runs[0].get('inserts'))} inserts of "
                      f"{fmt(runs[0].get('block'))}+ rows (what a fetch brought), the stages' "
                      "decoding, series lookup, grouping and Native encoder, one insert in "
                      "flight")  # fmt: skip
        else:
            ratio = one_ratios if i == 1 else two_ratios
            of = "of ceiling" if i == 1 else "x one worker"
            before = ", ".join(f"{r.get('before_first_row_s', 0.0):.2f}" for r in runs)
            also = ""
            if i == 2:  # how much room the raw path leaves two workers
                of_ceiling = [rate(r[2]) / rate(r[0]) for r in rounds if rate(r[0])]
                also = f" ({median(of_ceiling):.2f} of ceiling)"
            detail = (
                f"rounds: {each} = {', '.join(f'{x:.2f}' for x in ratio)} {of}{also}; "
                f"first row written after {before} s{cpu_split(runs)}"
            )
        rows.append(
            (
                name,
                f"{fmt(round(median([rate(r) for r in runs])))} points/s",
                detail,
                checked_all(runs),
            )
        )
    if settled is not None:
        ceiling, resumed = settled
        of = f"{rate(resumed) / rate(ceiling):.2f}" if rate(ceiling) else "n/a"
        rows.append(
            (
                "pipeline, 1 worker, resumed",
                f"{fmt(round(rate(resumed)))} points/s",
                f"{of} of a ceiling run just before ({fmt(round(rate(ceiling)))} points/s); a "
                f"restart on the stream's continuation, every series' detector resumed from "
                f"a first run's checkpoints ({fmt(resumed.get('series_resumed'))} states): "
                f"settled series; first row written after "
                f"{resumed.get('before_first_row_s', 0.0):.2f} s{cpu_split([resumed])}",
                checked_all([resumed], each=""),
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
            f"ms ({fmt(lat.get('episodes_seen'))} of {fmt(lat.get('spikes'))} spikes; "
            f"checkpoints taken while producing: {fmt(lat.get('checkpoints'))}, one every "
            f"{lat.get('checkpoint_s', 0):g} s)",
            "",
        )
    )
    for m in mem:
        rows.append(
            (
                f"memory, {fmt(m.get('series'))} series",
                "resident per series",
                f"{fmt(m.get('bytes_per_series'))} bytes ({fmt(m.get('points_per_series'))} "
                f"points each; {fmt(m.get('us_per_point'))} us/point in DetectStage; idle "
                f"timer pass {fmt(m.get('idle_tick_ms'))} ms)",
                "-",
            )
        )
        new, old = m.get("checkpoint_s"), m.get("legacy_checkpoint_s")
        faster = f"{old / new:.1f}x" if new and old else "n/a"
        rows.append(
            (
                "",
                "checkpoint of every series",
                f"{fmt(new)} s in the event loop, {faster} faster than the earlier format in "
                f"the same run ({fmt(old)} s; zlib, arrays pickled as objects); "
                f"{fmt(m.get('checkpoint_us'))} against {fmt(m.get('legacy_checkpoint_us'))} us "
                f"a series, restore {fmt(m.get('restore_us'))} against "
                f"{fmt(m.get('legacy_restore_us'))}, {fmt(m.get('state_chars'))} against "
                f"{fmt(m.get('legacy_state_chars'))} chars a state",
                "-",
            )
        )
    print()
    print(table(rows))
    print(f"\nall runs took {time.monotonic() - t0:.0f} s; commands (from the repository root):")
    for c in dict.fromkeys(cmds):
        times = cmds.count(c)
        print(f"  {c}" + (f"  (x {times})" if times > 1 else ""))
    runs = [r for rnd in rounds for r in rnd] + list(settled or ())
    ok = all(r.get("check", {}).get("ok") for r in runs) and bool(lat.get("ok"))
    ok = ok and all(not m.get("failed") for m in mem)
    if not ok:
        print("\nFAILED: a run lost or duplicated points, or did not finish (see above)")
    ratio = f"{median(one_ratios):.2f}" if one_ratios else "n/a"
    scale = f"{median(two_ratios):.2f}" if two_ratios else "n/a"
    print(f"pipeline/ceiling: {ratio} (1 worker); 2 workers: {scale} x one worker")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
