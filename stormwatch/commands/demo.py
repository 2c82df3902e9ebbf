"""`stormwatch demo`: only the demo telemetry, produced to the configured Kafka (for compose,
where workers and storage run as their own services)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from stormwatch.settings import StormwatchSettings


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="produce the demo shop's telemetry (no pipeline)")
    p.add_argument("--duration", type=float, default=600.0, help="seconds per incident cycle")
    p.add_argument("--cycles", type=int, default=0, help="how many cycles; 0 = until stopped")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, settings: StormwatchSettings) -> int:
    from ingest.producer import TelemetryProducer
    from stormwatch.demo import DemoGenerator

    quit_ = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: quit_.set())
    cycle = 0
    try:
        while not quit_.is_set() and (args.cycles == 0 or cycle < args.cycles):
            producer = TelemetryProducer(settings.bootstrap(), settings.topics.raw)
            gen = DemoGenerator(producer, time.time(), args.duration, seed=7 + cycle)
            print(f"demo cycle {cycle + 1}: incidents over the next {args.duration:.0f}s:")
            for inc in gen.incidents:
                start, end = (
                    time.strftime("%H:%M:%S", time.localtime(t)) for t in (inc.start, inc.end)
                )
                print(f"  {inc.name}: {start}-{end}")
            sys.stdout.flush()
            cycle_over = threading.Event()
            threading.Thread(
                target=_until, args=(quit_, cycle_over, args.duration), daemon=True
            ).start()
            gen.run(cycle_over)
            cycle += 1
    except KeyboardInterrupt:
        pass
    return 0


def _until(quit_: threading.Event, over: threading.Event, seconds: float) -> None:
    """End a cycle after `seconds`, or at once when asked to quit."""
    quit_.wait(seconds)
    over.set()
