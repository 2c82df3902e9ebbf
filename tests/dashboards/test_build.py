"""`stormwatch dashboards build` and the files compose mounts into Grafana."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from dashboards.build import DATASOURCE_UID, FOLDER_UID, build_all, write_all
from stormwatch.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_cli_build_writes_dashboards_and_provisioning(tmp_path: Path) -> None:
    assert main(["dashboards", "build", "--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in (tmp_path / "json").iterdir())
    assert names == sorted(f"{uid}.json" for uid in build_all("stormwatch"))
    ds = yaml.safe_load((tmp_path / "provisioning/datasources/clickhouse.yaml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "grafana-clickhouse-datasource" and source["uid"] == DATASOURCE_UID
    prov = yaml.safe_load((tmp_path / "provisioning/dashboards/stormwatch.yaml").read_text())
    assert prov["providers"][0]["folderUid"] == FOLDER_UID
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/stormwatch"


def test_committed_dashboards_match_the_code(tmp_path: Path) -> None:
    """compose mounts dashboards/json and dashboards/provisioning: they must be current
    (regenerate with `stormwatch dashboards build --out dashboards`)."""
    for path in write_all(tmp_path, "stormwatch"):
        committed = REPO / "dashboards" / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), f"{committed} is stale"
        if path.suffix == ".json":
            assert json.loads(committed.read_text())["uid"] in path.name
