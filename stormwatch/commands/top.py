"""`stormwatch top`: open episodes, recent drift and pipeline health in the terminal.

Fits an 80×24 terminal: every row is one line (long text is cut with an ellipsis) and the
sections share the height. `--once` prints one frame and exits (scripts, tests).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stormwatch.settings import StormwatchSettings
from stormwatch.store import Store, open_store


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("top", help="live terminal view of open episodes, drift and health")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    p.set_defaults(run=run)


@dataclass(frozen=True)
class Frame:
    """What one refresh shows; the queries live in `collect`, the layout in `render`."""

    now: datetime
    episodes: list[dict[str, Any]]
    open_total: int
    drift: list[dict[str, Any]]
    health: dict[str, float]


def collect(store: Store, db: str, now: datetime | None = None) -> Frame:
    now = now or datetime.now(UTC)
    t = now.timestamp()
    episodes = store.query(
        f"""SELECT start, is_open, severity, service, concat(kind, '.', name) AS signal,
                   peak_value, expected, peak_score, explanation
            FROM {db}.anomalies FINAL
            WHERE is_open = 1 OR end >= fromUnixTimestamp({int(t) - 900})
            ORDER BY is_open DESC, peak_score DESC, start DESC LIMIT 8"""
    ).dicts()
    open_total = store.query(f"SELECT count() FROM {db}.anomalies FINAL WHERE is_open = 1")
    drift = store.query(
        f"""SELECT ts, service, concat(kind, '.', name) AS signal, explanation
            FROM {db}.drift WHERE ts >= fromUnixTimestamp({int(t) - 3600})
            ORDER BY ts DESC LIMIT 4"""
    ).dicts()
    h = store.query(
        f"""SELECT
              sumIf(value, stage = 'normalize' AND metric = 'events') / 60 AS events_per_s,
              sumIf(value, stage = 'detect' AND metric = 'points_written') / 60 AS points_per_s,
              sumIf(value, stage = 'normalize' AND metric = 'rejects') AS rejects,
              sumIf(value, metric = 'busy_s') * 1e6
                / greatest(1, sumIf(value, metric = 'points_written')) AS us_per_point,
              uniqExact(worker) AS workers
            FROM {db}.health WHERE ts >= fromUnixTimestamp({int(t) - 60})"""
    ).dicts()[0]
    series = store.query(
        f"""SELECT sum(v) FROM (SELECT worker, argMax(value, ts) AS v FROM {db}.health
            WHERE stage = 'detect' AND metric = 'series'
              AND ts >= fromUnixTimestamp({int(t) - 300}) GROUP BY worker)"""
    ).rows[0][0]
    dead = store.query(
        f"SELECT count() FROM {db}.dlq WHERE ts >= fromUnixTimestamp({int(t) - 300})"
    ).rows[0][0]
    skipped = store.query(  # source offsets never normalized (streams.gaps): rare, so an hour
        f"""SELECT sum(value) FROM {db}.health WHERE stage = 'normalize'
              AND metric = 'skipped_offsets' AND ts >= fromUnixTimestamp({int(t) - 3600})"""
    ).rows[0][0]
    health = {k: float(v or 0) for k, v in h.items()}
    health |= {"series": float(series or 0), "dead_5m": float(dead),
               "skipped_1h": float(skipped or 0)}  # fmt: skip
    return Frame(now, episodes, int(open_total.rows[0][0]), drift, health)


def _num(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    return f"{v:.4g}" if v == v and abs(v) != float("inf") else "-"


def _ago(ts: Any, now: datetime) -> str:
    s = max(0, int(now.timestamp() - ts.timestamp())) if isinstance(ts, datetime) else 0
    return f"{s // 60}m" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}"


def render(frame: Frame, height: int = 24) -> Any:
    """A rich renderable of the frame, one line per row, at most `height` lines."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    colors = {"critical": "bold red", "major": "red", "minor": "yellow"}
    h = frame.health
    head = Text.assemble(
        ("stormwatch top ", "bold"), (frame.now.strftime("%H:%M:%S UTC  "), "dim"),
        (f"{frame.open_total} open", "bold red" if frame.open_total else "green"),
        f"  {h['events_per_s']:.0f} ev/s  {h['points_per_s']:.0f} pt/s  "
        f"{h['series']:.0f} series  {h['workers']:.0f} workers",
        no_wrap=True, overflow="ellipsis",
    )  # fmt: skip
    ep_rows = max(1, min(len(frame.episodes), height - 14))
    eps = Table(
        title="Episodes: open, then closed in the last 15 min (dim)",
        title_justify="left", expand=True, box=None, padding=(0, 1), header_style="bold",
    )  # fmt: skip
    for name, kw in (("age", {"width": 5}), ("sev", {"width": 8}), ("service", {"width": 11}),
                     ("signal", {"width": 17}), ("peak", {"width": 7}),
                     ("expected", {"width": 8}), ("score", {"width": 5})):  # fmt: skip
        eps.add_column(name, no_wrap=True, overflow="ellipsis", **kw)
    for e in frame.episodes[:ep_rows]:
        eps.add_row(_ago(e["start"], frame.now), Text(e["severity"], colors.get(e["severity"], "")),
                    e["service"] or "-", e["signal"], _num(e["peak_value"]),
                    _num(e["expected"]), f"{e['peak_score']:.2f}",
                    style="" if e["is_open"] else "dim")  # fmt: skip
    if not frame.episodes:
        eps.add_row("", Text("none", "green"), "", "", "", "", "")
    why = Text(frame.episodes[0]["explanation"] if frame.episodes else "", style="italic",
               no_wrap=True, overflow="ellipsis")  # fmt: skip
    drift = Table(title="Recent drift (1h)", title_justify="left", expand=True, box=None,
                  padding=(0, 1), header_style="bold")  # fmt: skip
    for name, kw in (("age", {"width": 5}), ("service", {"width": 11}),
                     ("signal", {"width": 17}), ("change", {"ratio": 1})):  # fmt: skip
        drift.add_column(name, no_wrap=True, overflow="ellipsis", **kw)
    for d in frame.drift[:3]:
        drift.add_row(_ago(d["ts"], frame.now), d["service"] or "-", d["signal"],
                      d["explanation"])  # fmt: skip
    if not frame.drift:
        drift.add_row("", "none", "", "")
    dead = h["dead_5m"]
    foot = Text.assemble(
        ("health ", "bold"),
        f"rejects/min {h['rejects']:.0f}  ",
        (f"dead letters 5m {dead:.0f}", "yellow" if dead else ""),
        f"  cost {h['us_per_point']:.1f} µs/pt",
        (f"  skipped offsets 1h {h['skipped_1h']:.0f}" if h.get("skipped_1h") else "", "red"),
        no_wrap=True, overflow="ellipsis",
    )  # fmt: skip
    return Group(head, Text(""), eps, why, Text(""), drift, Text(""), foot)


def run(args: argparse.Namespace, settings: StormwatchSettings) -> int:
    from rich.console import Console
    from rich.live import Live

    store = open_store(settings)
    console = Console()
    try:
        if args.once:
            console.print(render(collect(store, settings.database), console.size.height))
            return 0
        with Live(console=console, screen=True, auto_refresh=False) as live:
            while True:
                live.update(render(collect(store, settings.database), console.size.height),
                            refresh=True)  # fmt: skip
                time.sleep(max(0.2, args.interval))
    finally:
        store.close()
