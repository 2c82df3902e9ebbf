"""`stormwatch replay --input data.csv --output scores.csv [--detector NAME]`.

Runs a `timestamp,value` CSV through the per-series code the stream runs (`SeriesModel`),
one row out per row in, same order; causal: row i's score depends only on rows <= i.
Timestamps are ISO 8601 or epoch seconds (milliseconds if large) and are copied as given.
An empty value is a gap: scored 0, not learned.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from detectors import DetectorsError
from detectors.model import SeriesModel
from detectors.registry import model_factory
from stormwatch import StormwatchError
from stormwatch.settings import StormwatchSettings

OUT_COLUMNS = ["timestamp", "value", "anomaly_score", "is_anomaly", "expected", "lower", "upper"]
PROGRESS_MIN_ROWS = 20_000


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("replay", help="score a timestamp,value CSV offline, as the stream would")
    p.add_argument("--input", required=True, help="CSV with a header: timestamp,value")
    p.add_argument("--output", required=True, help="CSV to write (- for stdout)")
    p.add_argument("--detector", help="registered detector name (default: the configured one)")
    p.add_argument("--threshold", type=float, help="alert threshold (default: the configured one)")
    p.set_defaults(run=run)


def parse_ts(text: str) -> float:
    """Epoch seconds from ISO 8601 or a number (seconds, or milliseconds when > 1e11)."""
    s = text.strip()
    try:
        v = float(s)
    except ValueError:
        dt = datetime.fromisoformat(s)  # ValueError if neither
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    if not math.isfinite(v):
        raise ValueError(f"timestamp {text!r} is not finite")
    return v / 1000 if abs(v) > 1e11 else v


def read_rows(f: IO[str]) -> Iterator[tuple[int, str, float, float, str]]:
    """(line, timestamp, epoch seconds, value, value as given) per row; errors name the line."""
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
        raise StormwatchError("input is empty: expected a header line timestamp,value")
    cols = [h.strip().lower() for h in header]
    if "timestamp" not in cols or "value" not in cols:
        raise StormwatchError(f"line 1: header must name timestamp and value columns, got {header}")
    it, iv = cols.index("timestamp"), cols.index("value")
    for row in reader:
        line = reader.line_num
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != len(cols):
            raise StormwatchError(f"line {line}: expected {len(cols)} fields, got {len(row)}")
        try:
            t = parse_ts(row[it])
        except ValueError:
            raise StormwatchError(f"line {line}: bad timestamp {row[it]!r}") from None
        raw = row[iv].strip()
        try:
            y = float(raw) if raw else math.nan
        except ValueError:
            raise StormwatchError(f"line {line}: bad value {raw!r}") from None
        yield line, row[it], t, y, raw


def _num(v: float) -> str:
    return repr(v) if math.isfinite(v) else ""


def replay(rows: list[tuple[int, str, float, float, str]], model: SeriesModel, out: IO[str],
           progress: IO[str] | None = None) -> int:  # fmt: skip
    """Write one scored row per input row; returns the number of anomalous rows."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(OUT_COLUMNS)
    total, flagged, step = len(rows), 0, max(1, len(rows) // 100)
    for k, (_, ts, t, y, text) in enumerate(rows, 1):
        if y != y:
            w.writerow([ts, "", 0.0, 0, "", "", ""])
        else:
            v = model.update({"y": y, "t": t})
            flagged += v.is_anomaly
            b = v.band
            w.writerow([ts, text, round(v.score, 6), int(v.is_anomaly),
                        _num(b.expected), _num(b.lower), _num(b.upper)])  # fmt: skip
        if progress is not None and (k % step == 0 or k == total):
            bar = "#" * (30 * k // total)
            progress.write(f"\rreplay [{bar:<30}] {k}/{total} rows")
            progress.flush()
    if progress is not None:
        progress.write("\n")
    return flagged


def run(args: argparse.Namespace, settings: StormwatchSettings) -> int:
    name = args.detector or settings.detector
    threshold = args.threshold if args.threshold is not None else settings.threshold
    try:
        model = model_factory(name, threshold=threshold)()  # the stream's own per-series model
    except DetectorsError as e:
        raise StormwatchError(str(e)) from None
    path = Path(args.input)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(read_rows(f))
    except OSError as e:
        raise StormwatchError(f"cannot read {path}: {e.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise StormwatchError(f"{path}: not a readable CSV: {e}") from None
    progress = sys.stderr if len(rows) >= PROGRESS_MIN_ROWS else None
    if args.output == "-":
        flagged = replay(rows, model, sys.stdout, progress)
    else:
        with open(args.output, "w", newline="", encoding="utf-8") as out:
            flagged = replay(rows, model, out, progress)
    print(f"replay: {len(rows)} rows scored with {name}, {flagged} anomalous", file=sys.stderr)
    return 0
