"""`stormwatch ship [FILE|-]`: JSON lines → the raw topic, in batches, with progress.

Each line holds one event or an array of events. Invalid lines are not sent; they are
counted and the first few reasons printed. Exit code 1 if anything failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import IO

from ingest.decode import decode_json
from ingest.producer import TelemetryProducer
from stormwatch import StormwatchError
from stormwatch.settings import StormwatchSettings


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ship", help="send JSON lines (a file or stdin) to the raw topic")
    p.add_argument("file", nargs="?", default="-", help="path, or - for stdin (default)")
    p.add_argument("--batch-size", type=int, default=500, help="events per Kafka message")
    p.add_argument("--topic", help="topic (default: the raw topic)")
    p.set_defaults(run=run)


def ship_lines(lines: IO[bytes], producer: TelemetryProducer, *, total_bytes: int = 0,
               progress: IO[str] | None = None) -> tuple[int, int, list[str]]:  # fmt: skip
    """Send every valid event; returns (events sent, events/lines failed, first reasons)."""
    invalid = 0
    reasons: list[str] = []
    done_bytes = 0
    last = start = time.monotonic()
    for lineno, line in enumerate(lines, 1):
        done_bytes += len(line)
        if not line.strip():
            continue
        good, bad = decode_json(line)
        producer.send_many(good)
        invalid += len(bad)
        for r in bad[: max(0, 5 - len(reasons))]:
            where = f"line {lineno}" + (f" item {r.item}" if r.item >= 0 else "")
            reasons.append(f"{where}: {r.reason}")
        now = time.monotonic()
        if progress and now - last >= 0.5:
            last = now
            pct = f" {100 * done_bytes / total_bytes:5.1f}%" if total_bytes else ""
            queued = producer.sent + producer.buffered
            progress.write(f"\rshipping{pct}: {queued} events, {invalid} invalid, "
                           f"{queued / (now - start):,.0f}/s   ")  # fmt: skip
            progress.flush()
    failed = producer.flush() + invalid
    if progress:
        progress.write("\r" + " " * 70 + "\r")
    return producer.sent, failed, reasons + producer.errors[:5]


def run(args: argparse.Namespace, settings: StormwatchSettings) -> int:
    from kafka.errors import KafkaError

    topic = args.topic or settings.topics.raw
    try:
        producer = TelemetryProducer(settings.bootstrap(), topic, batch_size=args.batch_size)
    except KafkaError as e:
        raise StormwatchError(f"cannot reach Kafka at {settings.bootstrap()}: {e}") from e
    total = 0
    if args.file == "-":
        src: IO[bytes] = sys.stdin.buffer
    else:
        try:
            src = open(args.file, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise StormwatchError(f"cannot read {args.file}: {e.strerror}") from e
        import os

        total = os.path.getsize(args.file)
    try:
        sent, failed, reasons = ship_lines(src, producer, total_bytes=total, progress=sys.stderr)
    finally:
        producer.close()
        if src is not sys.stdin.buffer:
            src.close()
    print(f"sent {sent} events to {topic}; {failed} failed")
    for r in reasons:
        print(f"  {r}", file=sys.stderr)
    return 1 if failed else 0
