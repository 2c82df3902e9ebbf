"""Event-level quality on the synthetic suite: `python -m benchmarks.quality`.

A detection event is a run of points scoring >= the threshold (flags at most `MERGE` points
apart are one event). An event touching a labelled window detects it (delay: first flag minus
window start); an event touching none is a false positive. Points in the probation period
are not scored for F1; no anomaly is placed there, so every event in it is a young series'
false alarm, reported apart (`young false`): what an operator sees when a service is new.
The default detector and the rolling z-score baseline (at its best `z_at` of 3, 4 and 5, so
the comparison is not against a straw man) are computed in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.suite import KINDS, PERIODS, PROBATION, Case, make_suite
from detectors.base import Detector
from detectors.registry import DEFAULT, make_detector

MERGE = 10


@dataclass
class Tally:
    tp: int = 0
    fp: int = 0
    events: int = 0  # labelled windows
    delays: list[int] = field(default_factory=list)
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [hit, windows, fp]
    young: int = 0  # events in the (anomaly-free) probation

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return sum(1 for _ in self.delays) / self.events if self.events else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def run_case(det: Detector, case: Case, threshold: float) -> list[int]:
    """Indices whose score reaches the threshold; score before learn."""
    flags = []
    for i, (t, y) in enumerate(zip(case.t, case.y, strict=True)):
        x = {"y": y, "t": t}
        if det.score_one(x) >= threshold:
            flags.append(i)
        det.learn_one(x)
    return flags


def events(flags: list[int]) -> list[list[int]]:
    """Flags grouped into events: at most `MERGE` points apart are one."""
    groups: list[list[int]] = []
    for i in flags:
        if groups and i - groups[-1][-1] <= MERGE:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def tally_case(tally: Tally, case: Case, flags: list[int]) -> None:
    kind = case.name.split("/")[0]
    k = tally.by_kind.setdefault(kind, [0, 0, 0])
    tally.young += len(events([i for i in flags if i < PROBATION]))
    flags = [i for i in flags if i >= PROBATION]
    for g in events(flags):
        if any(a <= i <= b for i in g for a, b in case.windows):
            tally.tp += 1
        else:
            tally.fp += 1
            k[2] += 1
    for a, b in case.windows:
        tally.events += 1
        k[1] += 1
        hit = next((i for i in flags if a <= i <= b), None)
        if hit is not None:
            tally.delays.append(hit - a)
            k[0] += 1


def evaluate(factory: Callable[[], Detector], cases: list[Case], threshold: float) -> Tally:
    tally = Tally()
    for case in cases:
        tally_case(tally, case, run_case(factory(), case, threshold))
    return tally


def report(label: str, t: Tally) -> str:
    d = f"{statistics.mean(t.delays):.1f}/{statistics.median(t.delays):.0f}" if t.delays else "-"
    return (
        f"{label:<22} precision {t.precision:.3f}  recall {t.recall:.3f}  F1 {t.f1:.3f}  "
        f"delay mean/median {d} pts  (tp {t.tp}, fp {t.fp}, windows {t.events}); "
        f"young false {t.young}"
    )


def _periods(text: str) -> tuple[float, ...]:
    try:
        periods = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if any(p != 0 and p < 4 for p in periods):
        raise argparse.ArgumentTypeError("a period is 0 (none) or at least 4 points")
    return periods


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--detector", default=DEFAULT)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--kinds", action="store_true", help="per-kind breakdown")
    ap.add_argument(
        "--periods", type=_periods, default=PERIODS, metavar="P,P,...",
        help=f"cycle lengths in points, 0 for none (default {','.join(map(str, PERIODS))})",
    )  # fmt: skip
    args = ap.parse_args(argv)
    cases = make_suite(args.seed, args.repeats, args.periods)
    main_t = evaluate(lambda: make_detector(args.detector), cases, args.threshold)
    base = {
        z: evaluate(lambda z=z: make_detector("zscore", z_at=z), cases, args.threshold)
        for z in (3.0, 4.0, 5.0)
    }
    best_z = max(base, key=lambda z: base[z].f1)
    out = sys.stdout
    periods = ", ".join(f"{p:g}" for p in args.periods)
    print(f"suite: {len(cases)} series, seed {args.seed}, periods {periods}, "
          f"threshold {args.threshold}", file=out)  # fmt: skip
    print(report(args.detector, main_t), file=out)
    print(report(f"zscore (z_at={best_z:g})", base[best_z]), file=out)
    ratio = main_t.f1 / base[best_z].f1 if base[best_z].f1 else float("inf")
    print(f"F1 ratio {args.detector}/baseline: {ratio:.2f}x", file=out)
    print(f"young false: events in the first {PROBATION} points (no anomalies there) of "
          f"{len(cases)} series", file=out)  # fmt: skip
    if args.kinds:
        for label, t in ((args.detector, main_t), ("zscore", base[best_z])):
            cells = "  ".join(
                f"{k} {v[0]}/{v[1]} fp{v[2]}" for k in KINDS if (v := t.by_kind.get(k))
            )
            print(f"  {label}: {cells}", file=out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
