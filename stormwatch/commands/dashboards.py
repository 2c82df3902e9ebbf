"""`stormwatch dashboards build --out DIR` and `stormwatch dashboards push --url --token`."""

from __future__ import annotations

import argparse
from pathlib import Path

from stormwatch.settings import StormwatchSettings


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("dashboards", help="Grafana dashboards: write them, or push to Grafana")
    dsub = p.add_subparsers(dest="dashboards_command", required=True, metavar="ACTION")
    b = dsub.add_parser("build", help="write dashboard JSON and provisioning files")
    b.add_argument("--out", type=Path, required=True, help="output folder")
    b.set_defaults(run=run_build)
    u = dsub.add_parser("push", help="upload the dashboards through Grafana's HTTP API")
    u.add_argument("--url", required=True, help="Grafana base URL, e.g. http://localhost:3000")
    u.add_argument("--token", required=True, help="service account token (Editor role)")
    u.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    u.set_defaults(run=run_push)
    for q in (b, u):
        q.add_argument(
            "--datasource-uid",
            default=None,
            help="uid of the ClickHouse data source (default: the provisioned one)",
        )


def _ds(args: argparse.Namespace) -> str:
    from dashboards.build import DATASOURCE_UID

    return args.datasource_uid or DATASOURCE_UID


def run_build(args: argparse.Namespace, settings: StormwatchSettings) -> int:
    from dashboards.build import write_all

    files = write_all(args.out, settings.database, _ds(args))
    for f in files:
        print(f)
    return 0


def run_push(args: argparse.Namespace, settings: StormwatchSettings) -> int:
    from dashboards.build import build_all
    from dashboards.push import push

    res = push(build_all(settings.database, _ds(args)), args.url, args.token,
               timeout=args.timeout)  # fmt: skip
    if res.folder_created:
        print("created folder Stormwatch")
    for uid, path in res.dashboards:
        print(f"pushed {uid} {args.url.rstrip('/')}{path}")
    return 0
