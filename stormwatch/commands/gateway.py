"""`stormwatch gateway [--host H] [--port P]`: the OTLP/HTTP + JSON-lines gateway in the
foreground (STORMWATCH_GATEWAY_* settings; see docs/ingest.md)."""

from __future__ import annotations

import argparse
import sys
import threading

from ingest import IngestError
from stormwatch import StormwatchError
from stormwatch.settings import StormwatchSettings


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("gateway", help="serve OTLP/HTTP (/v1/metrics, /v1/traces) and /ingest")
    p.add_argument("--host", help="listen address [STORMWATCH_GATEWAY_HOST]")
    p.add_argument("--port", type=int, help="listen port, default 4318 [STORMWATCH_GATEWAY_PORT]")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, settings: StormwatchSettings) -> int:
    from ingest.gateway import GatewayServer, load_gateway_settings

    overrides = {k: v for k in ("host", "port") if (v := getattr(args, k, None)) is not None}
    try:
        server = GatewayServer(settings, load_gateway_settings(**overrides))
    except IngestError as e:
        raise StormwatchError(str(e)) from e
    # Topics are created in the background: until Kafka answers, requests get 503, not a hang.
    threading.Thread(target=_ensure_topics, args=(settings,), daemon=True).start()
    server.run(out=sys.stdout)
    return 0


def _ensure_topics(settings: StormwatchSettings) -> None:
    from ingest.topics import ensure_topics

    t = settings.topics
    try:
        names = {t.raw: t.partitions, t.otlp_metrics: t.partitions, t.otlp_spans: t.partitions}
        ensure_topics(settings.bootstrap(), names)
    except IngestError as e:
        print(f"gateway: {e}; requests get 503 until Kafka is reachable", file=sys.stderr)
