"""The `stormwatch` command: parses arguments, builds settings, dispatches to a command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from stormwatch import StormwatchError, __version__
from stormwatch.commands import MODULES
from stormwatch.settings import StormwatchSettings, load_settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stormwatch",
        description="Streaming anomaly detection and guarded auto-remediation.",
        epilog="Settings come from STORMWATCH_* environment variables; see README.md.",
    )
    p.add_argument("--version", action="version", version=f"stormwatch {__version__}")
    p.add_argument(
        "--data-dir", help="local state (embedded ClickHouse, logs) [STORMWATCH_DATA_DIR]"
    )
    p.add_argument("--kafka-bootstrap", help="host:port, or 'local' [STORMWATCH_KAFKA_BOOTSTRAP]")
    p.add_argument(
        "--clickhouse-dsn", help="chdb:///path or http://host:8123 [STORMWATCH_CLICKHOUSE_DSN]"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in MODULES:
        importlib.import_module(name).add_parser(sub)
    return p


def settings_from_args(args: argparse.Namespace) -> StormwatchSettings:
    overrides = {
        k: v for k in ("data_dir", "kafka_bootstrap", "clickhouse_dsn")
        if (v := getattr(args, k, None)) is not None
    }  # fmt: skip
    return load_settings(**overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # kafka-python's connection chatter (reconnects, slow polls) is not an operator's news.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        settings = settings_from_args(args)
        # the root's level: the faust worker (stormwatch.pipeline.run_faust) keeps it
        logging.getLogger().setLevel(logging.DEBUG if args.verbose else settings.log_level)
        return int(args.run(args, settings) or 0)
    except StormwatchError as e:
        print(f"stormwatch: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
