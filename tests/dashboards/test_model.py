"""The generated JSON against Grafana's dashboard model (grafana-foundation-sdk's types).

Decoding with the SDK keeps only what its model knows, so a key that does not survive the
round trip is misspelt or unknown to Grafana, except the few that Grafana and the ClickHouse
plugin write themselves but the SDK leaves untyped (listed with their reason).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from grafana_foundation_sdk.cog import runtime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.build import build_all

UNTYPED_IN_SDK = {
    ".annotations.list[].builtIn": "Grafana's own built-in annotation marker",
    ".annotations.list[].target.refId": "data source annotation query (plugin's CHQuery)",
    ".annotations.list[].target.editorType": "data source annotation query",
    ".annotations.list[].target.format": "data source annotation query",
    ".annotations.list[].target.queryType": "data source annotation query",
    ".annotations.list[].target.rawSql": "data source annotation query",
    ".templating.list[].definition": "query variable's display text, written by Grafana",
}


def _lost(ours: Any, back: Any, path: str = "") -> list[str]:
    """Paths present in `ours` that the round trip dropped or changed."""
    if isinstance(ours, dict):
        if not isinstance(back, dict):
            return [path]
        out = []
        for k, v in ours.items():
            p = f"{path}.{k}"
            out += _lost(v, back[k], p) if k in back else [re.sub(r"\[\d+\]", "[]", p)]
        return out
    if isinstance(ours, list):
        if not isinstance(back, list) or len(ours) != len(back):
            return [path]
        return [x for i, (a, b) in enumerate(zip(ours, back, strict=True))
                for x in _lost(a, b, f"{path}[{i}]")]  # fmt: skip
    return [] if ours == back else [re.sub(r"\[\d+\]", "[]", path)]


DASHBOARDS = build_all("stormwatch")


@pytest.fixture(scope="module", autouse=True)
def _plugins() -> None:
    register_default_plugins()


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_dashboard_round_trips_through_grafana_model(uid: str) -> None:
    ours = DASHBOARDS[uid]
    back = json.loads(json.dumps(Dashboard.from_json(ours), cls=JSONEncoder))
    lost = sorted(set(_lost(ours, back)) - set(UNTYPED_IN_SDK))
    assert not lost, f"not in Grafana's dashboard model: {lost}"


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_dashboard_panels_are_known_types_laid_out_on_the_grid(uid: str) -> None:
    d = DASHBOARDS[uid]
    assert d["uid"] == uid and len(uid) <= 40 and re.fullmatch(r"[a-z0-9-]+", uid)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        assert p["type"] == "row" or runtime.panelcfg_config(p["type"]) is not None, p["type"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24
        mine = {(g["x"] + i, g["y"] + j) for i in range(g["w"]) for j in range(g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine


def test_build_is_stable() -> None:
    """Same input, same bytes: provisioning and push replace rather than duplicate."""
    assert json.dumps(build_all("stormwatch"), sort_keys=True) == json.dumps(
        DASHBOARDS, sort_keys=True
    )
