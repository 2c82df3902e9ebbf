"""`stormwatch up [--demo] [--duration S]`: the whole pipeline in this process."""

from __future__ import annotations

import argparse

from stormwatch.settings import StormwatchSettings


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("up", help="start broker (if local), worker and storage; Ctrl-C stops")
    p.add_argument("--demo", action="store_true", help="also run the demo telemetry generator")
    p.add_argument("--duration", type=float, help="stop by itself after this many seconds")
    p.add_argument(
        "--no-broker",
        action="store_true",
        help="with a local bootstrap, expect the broker to be running already",
    )
    p.add_argument("--no-gateway", action="store_true", help="do not serve OTLP/HTTP and /ingest")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, settings: StormwatchSettings) -> int:
    from stormwatch.pipeline import run_up

    return run_up(
        settings,
        demo=args.demo,
        duration=args.duration,
        start_broker=not args.no_broker,
        gateway_on=not args.no_gateway,
    )
