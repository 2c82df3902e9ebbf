"""Every panel, variable and annotation query, expanded as Grafana and the ClickHouse plugin
expand it, runs against the real engine filled by a simulated demo run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dashboards.build import boards, build_all
from dashboards.macros import ALL, TimeRange, expand
from dashboards.model import FORMAT_TIMESERIES, Board, Panel
from stormwatch.settings import StormwatchSettings
from stormwatch.simulate import Simulation
from stormwatch.store import Store

# Panels whose data no part of the pipeline writes yet: they must run and return their
# columns, and are allowed to be empty. Everything else must show the demo's data.
NOT_WRITTEN_YET = {
    "Consumer lag": "no worker writes health metric consumer_lag yet",
    "Drift events": "the detect stage does not write drift rows yet",
    "Series modelled vs capped": "",  # has `series`; `series_capped` is not written yet
}

# Panels that show state the demo may or may not end in: rows are required when it does.
ONLY_WHEN = {
    "Open episodes": "SELECT count() FROM {db}.anomalies FINAL WHERE is_open = 1",
}

ALL_PANELS = [(b.uid, p) for b in boards() for p in b.panels if p.kind != "row"]


def _variables(store: Store, db: str, board: Board) -> dict[str, Any]:
    """The values a user would pick: All services on the overview; on the drill-down the
    service and series of the demo's largest episode."""
    if board.uid != "stormwatch-series":
        return {"database": db, "service": ALL}
    sid, service = store.query(
        f"SELECT series_id, service FROM {db}.anomalies FINAL ORDER BY points DESC LIMIT 1"
    ).rows[0]
    return {"database": db, "service": service, "series": str(sid)}


def _run(store: Store, sql: str, db: str, board: Board) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names (from DESCRIBE, so an empty result has them too) and rows."""
    services = [r[0] for r in store.query(f"SELECT DISTINCT service FROM {db}.points").rows]
    tr = TimeRange.last(3600, now=datetime.now(UTC))
    final = expand(sql, tr, _variables(store, db, board), {"service": services})
    columns = [r[0] for r in store.query(f"DESCRIBE ({final})").rows]
    return columns, store.query(final).rows


def _board(uid: str) -> Board:
    return next(b for b in boards() if b.uid == uid)


@pytest.mark.parametrize(
    ("uid", "panel"), ALL_PANELS, ids=[f"{u}:{p.title}" for u, p in ALL_PANELS]
)
def test_panel_sql_returns_its_columns_from_demo_data(
    chdb_store: Store, demo: tuple[StormwatchSettings, Simulation], uid: str, panel: Panel
) -> None:
    db = demo[0].database
    columns, rows = _run(chdb_store, panel.sql, db, _board(uid))
    assert set(panel.needs) <= set(columns), f"missing {set(panel.needs) - set(columns)}"
    if panel.title in ONLY_WHEN and panel.kind == "table":
        expected = chdb_store.query(ONLY_WHEN[panel.title].format(db=db)).rows[0][0] > 0
        assert bool(rows) == expected, f"{panel.title}: rows {bool(rows)}, expected {expected}"
    elif panel.title not in NOT_WRITTEN_YET:
        assert rows, f"{panel.title}: no rows from the demo run"
    if panel.fmt == FORMAT_TIMESERIES:
        assert columns[0] == "time"
        assert all(isinstance(r[0], datetime) for r in rows)
        # Long frames are widened by their string columns; the rest must be numbers.
        for r in rows:
            assert all(isinstance(v, str | int | float) or v is None for v in r[1:])
    if panel.kind == "stat":
        assert len(rows) == 1 and isinstance(rows[0][0], int | float)


def test_variable_queries_list_demo_services_and_series(
    chdb_store: Store, demo: tuple[StormwatchSettings, Simulation]
) -> None:
    db = demo[0].database
    for board in boards():
        for var in board.variables:
            columns, rows = _run(chdb_store, var["query"]["rawSql"], db, board)
            assert rows, var["name"]
            if var["name"] == "series":
                assert columns == ["value", "text"]
                assert all(v.isdigit() and " " in t for v, t in rows)
    services = {r[0] for r in _run(chdb_store, boards()[0].variables[0]["query"]["rawSql"], db,
                                   boards()[0])[1]}  # fmt: skip
    assert {"checkout", "orders-db", "fulfillment"} <= services


def test_drilldown_annotations_mark_the_series_episodes(
    chdb_store: Store, demo: tuple[StormwatchSettings, Simulation]
) -> None:
    db = demo[0].database
    board = _board("stormwatch-series")
    episodes = next(a for a in board.annotations if a["name"] == "Anomaly episodes")
    columns, rows = _run(chdb_store, episodes["target"]["rawSql"], db, board)
    assert columns == ["time", "timeEnd", "text", "tags"]
    assert rows and all(r[1] >= r[0] for r in rows)
    drift = next(a for a in board.annotations if a["name"] == "Drift")
    columns, _ = _run(chdb_store, drift["target"]["rawSql"], db, board)
    assert columns[:3] == ["time", "text", "tags"]


def test_band_panel_shows_values_inside_and_outside_the_band(
    chdb_store: Store, demo: tuple[StormwatchSettings, Simulation]
) -> None:
    """The drill-down's main panel carries finite band edges Grafana can draw, and at a
    1 s interval an episode whose peak left the normal range shows values outside it."""
    db = demo[0].database
    sid, service = chdb_store.query(
        f"SELECT series_id, service FROM {db}.anomalies FINAL "
        "WHERE peak_value > upper OR peak_value < lower ORDER BY points DESC LIMIT 1"
    ).rows[0]
    board = _board("stormwatch-series")
    tr = TimeRange.last(1800, now=datetime.now(UTC), max_data_points=1800)
    sql = expand(board.panels[0].sql, tr, {"database": db, "service": service,
                                          "series": str(sid)})  # fmt: skip
    r = chdb_store.query(sql)
    idx = {c: i for i, c in enumerate(r.columns)}
    banded = [x for x in r.rows if x[idx["lower"]] is not None and x[idx["upper"]] is not None]
    assert len(banded) > len(r.rows) / 2
    outside = [x for x in banded if not x[idx["lower"]] <= x[idx["value"]] <= x[idx["upper"]]]
    assert outside


def test_build_all_uses_the_database_and_datasource_given() -> None:
    out = build_all("proddb", ds="my-ds")
    for d in out.values():
        consts = [v for v in d["templating"]["list"] if v["name"] == "database"]
        assert consts[0]["query"] == "proddb" and consts[0]["type"] == "constant"
        for p in d["panels"]:
            for t in p.get("targets", []):
                assert t["datasource"] == {"type": "grafana-clickhouse-datasource", "uid": "my-ds"}
                assert t["editorType"] == "sql" and "${database}." in t["rawSql"]
