"""`stormwatch anomalies` and `stormwatch sql`: look at results without Grafana.

Both work while `stormwatch up` runs: with the embedded engine they ask that process.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from stormwatch.settings import StormwatchSettings
from stormwatch.store import open_store


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    a = sub.add_parser("anomalies", help="recent anomaly episodes as a table")
    a.add_argument("--last", default="1h", help="how far back: 30m, 6h, 2d (default 1h)")
    a.add_argument("--limit", type=int, default=30)
    a.add_argument("--open", action="store_true", help="only episodes still open")
    a.set_defaults(run=run_anomalies)
    s = sub.add_parser("sql", help="run a query against the configured ClickHouse")
    s.add_argument("query")
    s.add_argument("--format", choices=["table", "json", "csv"], default="table")
    s.set_defaults(run=run_sql)


def parse_span(text: str) -> int:
    """'30m' → seconds; units s, m, h, d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return int(float(text[:-1]) * units[text[-1]])
    except (KeyError, ValueError, IndexError):
        raise SystemExit(f"stormwatch: bad duration {text!r}: use e.g. 30m, 6h, 2d") from None


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], out: Any = None) -> None:
    out = out or sys.stdout
    cells = [[("" if v is None else str(v)) for v in r] for r in rows]
    widths = [min(60, max([len(c)] + [len(r[i]) for r in cells])) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    print(line, file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in cells:
        print("  ".join(v[:w].ljust(w) for v, w in zip(r, widths, strict=True)), file=out)


def run_anomalies(args: argparse.Namespace, settings: StormwatchSettings) -> int:
    store = open_store(settings)
    db = settings.database
    where = "AND is_open = 1" if args.open else ""
    r = store.query(
        f"""SELECT formatDateTime(start, '%F %T') AS started,
                   if(is_open, 'open', formatDateTime(end, '%T')) AS until,
                   severity, service, concat(kind, '.', name) AS signal,
                   arrayStringConcat(arrayMap((k, v) -> concat(k, '=', v),
                       mapKeys(labels), mapValues(labels)), ' ') AS labels,
                   round(peak_value, 3) AS peak, round(expected, 3) AS expected,
                   round(peak_score, 3) AS score,
                   concat(detector, ' v', detector_version) AS detector
            FROM {db}.anomalies FINAL
            WHERE start >= now64(3) - INTERVAL {parse_span(args.last)} SECOND {where}
            ORDER BY anomalies.start DESC LIMIT {int(args.limit)}"""
    )
    if not r.rows:
        print(f"no anomaly episodes in the last {args.last}")
        return 0
    print_table(r.columns, r.rows)
    return 0


def run_sql(args: argparse.Namespace, settings: StormwatchSettings) -> int:
    r = open_store(settings).query(args.query)
    if args.format == "json":
        for d in r.dicts():
            sys.stdout.write(orjson.dumps(d, default=str).decode() + "\n")
    elif args.format == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(r.columns)
        w.writerows(r.rows)
    else:
        print_table(r.columns, r.rows)
    return 0
