"""`stormwatch worker`: one more faust worker in the group (scale out on one host or many)."""

from __future__ import annotations

import argparse

from stormwatch.settings import StormwatchSettings


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "worker", help="run one more pipeline worker against a running `stormwatch up`"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace, settings: StormwatchSettings) -> int:
    from stormwatch.pipeline import run_worker

    return run_worker(settings)
