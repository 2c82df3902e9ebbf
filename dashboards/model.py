"""Small builders for Grafana dashboard JSON over `grafana-clickhouse-datasource`.

Plain dicts in Grafana's dashboard model (schemaVersion 39+), checked in tests against
grafana-foundation-sdk's types. Every query is raw SQL (`editorType: sql`); `format` is the
plugin's numeric format (0 time series: a `time` column, long frames widened by the string
columns; 1 table). Panels flow left to right on the 24-column grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PLUGIN = "grafana-clickhouse-datasource"
FORMAT_TIMESERIES = 0
FORMAT_TABLE = 1
DATABASE_VAR = "database"


def ds_ref(uid: str) -> dict[str, str]:
    return {"type": PLUGIN, "uid": uid}


def target(sql: str, *, fmt: int, ds: str, ref: str = "A") -> dict[str, Any]:
    """One query of a panel, as the plugin's SQL editor saves it."""
    return {
        "refId": ref,
        "datasource": ds_ref(ds),
        "editorType": "sql",
        "format": fmt,
        "queryType": "timeSeries" if fmt == FORMAT_TIMESERIES else "table",  # plugin QueryType
        "rawSql": sql.strip(),
    }


@dataclass(frozen=True)
class Panel:
    """A panel before layout: `kind` is Grafana's panel type id."""

    kind: str
    title: str
    sql: str
    fmt: int
    width: int = 12
    height: int = 8
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    overrides: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    transformations: list[dict[str, Any]] = field(default_factory=list)
    needs: tuple[str, ...] = ()  # columns the panel reads, checked by the tests


def timeseries(title: str, sql: str, *, unit: str = "", stack: bool = False, **kw: Any) -> Panel:
    custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                              "showPoints": "never", "spanNulls": False}  # fmt: skip
    if stack:
        custom |= {"stacking": {"mode": "normal", "group": "A"}, "drawStyle": "bars",
                   "fillOpacity": 80}  # fmt: skip
    defaults = {"custom": custom, "unit": unit} if unit else {"custom": custom}
    defaults |= kw.pop("defaults", {})
    options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
               "tooltip": {"mode": "multi", "sort": "desc"}}  # fmt: skip
    return Panel("timeseries", title, sql, FORMAT_TIMESERIES, options=options, defaults=defaults,
                 needs=("time", *kw.pop("needs", ())), **kw)  # fmt: skip


def table(title: str, sql: str, **kw: Any) -> Panel:
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"],
               "countRows": False, "fields": ""}}  # fmt: skip
    return Panel("table", title, sql, FORMAT_TABLE, options=options, **kw)


def stat(title: str, sql: str, *, unit: str = "", thresholds: list[tuple[float | None, str]]
         | None = None, **kw: Any) -> Panel:  # fmt: skip
    steps = [{"color": c, "value": v} for v, c in (thresholds or [(None, "green")])]
    defaults = {"thresholds": {"mode": "absolute", "steps": steps}, "color": {"mode": "thresholds"}}
    if unit:
        defaults["unit"] = unit
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "colorMode": "value", "graphMode": "none", "textMode": "auto",
               "justifyMode": "auto", "orientation": "auto"}  # fmt: skip
    return Panel("stat", title, sql, FORMAT_TABLE, width=kw.pop("width", 6),
                 height=kw.pop("height", 4), options=options, defaults=defaults, **kw)  # fmt: skip


def barchart(title: str, sql: str, *, x: str, **kw: Any) -> Panel:
    options = {"xField": x, "orientation": "horizontal", "showValue": "auto", "stacking": "none",
               "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
               "tooltip": {"mode": "single", "sort": "none"}, "barWidth": 0.8,
               "groupWidth": 0.7, "xTickLabelRotation": 0}  # fmt: skip
    return Panel("barchart", title, sql, FORMAT_TABLE, options=options,
                 needs=(x, *kw.pop("needs", ())), **kw)  # fmt: skip


def heatmap(title: str, sql: str, **kw: Any) -> Panel:
    """Already bucketed rows (time × series): Grafana shows them as they are, no calculation."""
    options = {"calculate": False, "cellGap": 1, "color": {"mode": "scheme", "scheme": "Oranges",
               "fill": "dark-orange", "scale": "exponential", "exponent": 0.5, "steps": 64,
               "reverse": False, "min": 0, "max": 1}, "yAxis": {"axisPlacement": "left"},
               "rowsFrame": {"layout": "auto"}, "legend": {"show": True},
               "tooltip": {"show": True, "yHistogram": False},
               "cellValues": {"decimals": 2}}  # fmt: skip
    return Panel("heatmap", title, sql, FORMAT_TIMESERIES, options=options,
                 needs=("time", *kw.pop("needs", ())), **kw)  # fmt: skip


def row(title: str) -> Panel:
    return Panel("row", title, "", FORMAT_TABLE, width=24, height=1)


def panel_json(p: Panel, pid: int, pos: dict[str, int], ds: str) -> dict[str, Any]:
    if p.kind == "row":
        return {"type": "row", "id": pid, "title": p.title, "collapsed": False, "gridPos": pos,
                "panels": []}  # fmt: skip
    out: dict[str, Any] = {
        "type": p.kind,
        "id": pid,
        "title": p.title,
        "description": p.description,
        "gridPos": pos,
        "datasource": ds_ref(ds),
        "targets": [target(p.sql, fmt=p.fmt, ds=ds)],
        "options": p.options,
        "fieldConfig": {"defaults": p.defaults, "overrides": p.overrides},
    }
    if p.links:
        out["links"] = p.links
    if p.transformations:
        out["transformations"] = p.transformations
    return out


def layout(panels: list[Panel], ds: str) -> list[dict[str, Any]]:
    """Place panels left to right, wrapping at 24 columns; ids follow the order (stable)."""
    out, x, y, line_h = [], 0, 0, 0
    for i, p in enumerate(panels, start=1):
        if x + p.width > 24 or p.kind == "row":
            x, y, line_h = 0, y + line_h, 0
        out.append(panel_json(p, i, {"x": x, "y": y, "w": p.width, "h": p.height}, ds))
        x += p.width
        line_h = max(line_h, p.height)
        if p.kind == "row":
            x, y, line_h = 0, y + p.height, 0
    return out


def database_variable(database: str) -> dict[str, Any]:
    """Hidden constant holding the ClickHouse database every query reads (`${database}`)."""
    return {"type": "constant", "name": DATABASE_VAR, "label": "Database", "hide": 2,
            "query": database, "skipUrlSync": False,
            "current": {"text": database, "value": database, "selected": False},
            "options": [{"text": database, "value": database, "selected": True}]}  # fmt: skip


def query_variable(name: str, label: str, sql: str, ds: str, *, multi: bool = False,
                   include_all: bool = False, refresh: int = 2) -> dict[str, Any]:  # fmt: skip
    """A variable filled by SQL (first column value, optional second column text)."""
    current: dict[str, Any] = (
        {"text": ["All"], "value": ["$__all"], "selected": True} if include_all else {}
    )
    return {"type": "query", "name": name, "label": label, "datasource": ds_ref(ds),
            "definition": sql, "query": {"editorType": "sql", "rawSql": sql, "format": 1},
            "refresh": refresh, "multi": multi, "includeAll": include_all, "sort": 1,
            "hide": 0, "regex": "", "skipUrlSync": False, "options": [],
            "current": current}  # fmt: skip


def annotation(name: str, sql: str, ds: str, color: str) -> dict[str, Any]:
    """An annotation query: columns `time`, optional `timeEnd`, `text`, `tags`, `title`."""
    return {"name": name, "enable": True, "hide": False, "iconColor": color,
            "datasource": ds_ref(ds),
            "target": {"refId": "Anno", "editorType": "sql", "format": FORMAT_TABLE,
                       "queryType": "table", "rawSql": sql.strip()}}  # fmt: skip


def builtin_annotation() -> dict[str, Any]:
    return {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}  # fmt: skip


@dataclass(frozen=True)
class Board:
    """A dashboard before rendering: the unit `build` writes and `push` uploads."""

    uid: str
    title: str
    description: str
    panels: list[Panel]
    variables: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    time_from: str = "now-1h"
    refresh: str = "30s"


def render(board: Board, *, database: str, ds: str) -> dict[str, Any]:
    return {
        "uid": board.uid,
        "title": board.title,
        "description": board.description,
        "tags": ["stormwatch"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": board.refresh,
        "time": {"from": board.time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [
            {
                "title": "Stormwatch",
                "type": "dashboards",
                "tags": ["stormwatch"],
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            }
        ],  # fmt: skip
        "annotations": {"list": [builtin_annotation(), *board.annotations]},
        "templating": {"list": [database_variable(database), *board.variables]},
        "panels": layout(board.panels, ds),
    }
