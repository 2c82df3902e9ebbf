"""Expand a panel's SQL the way Grafana and `grafana-clickhouse-datasource` do before it runs.

Two steps, as in Grafana: the frontend interpolates template variables (`$var`, `${var}`,
`${var:singlequote}`, `${var:sqlstring}`, `${var:raw}`) and the plugin's `$__conditionalAll`;
the backend (pkg/macros/macros.go) expands the time macros. Used by the tests that run every
panel against the real engine, and by anything else that wants to reuse a panel's query.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from dashboards import DashboardsError

ALL = "$__all"
_VAR = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)|\[\[(\w+)\]\]")
_MACRO = re.compile(r"\$__(\w+)")


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime
    interval_ms: int  # Grafana's $__interval for the panel

    @classmethod
    def last(cls, seconds: float, *, now: datetime | None = None,
             max_data_points: int = 1000) -> TimeRange:  # fmt: skip
        end = now or datetime.now(UTC)
        start = datetime.fromtimestamp(end.timestamp() - seconds, UTC)
        return cls(start, end, interval_for(seconds * 1000, max_data_points))


_NICE_MS = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 15_000, 20_000, 30_000, 60_000,
            120_000, 300_000, 600_000, 900_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
            10_800_000, 21_600_000, 43_200_000, 86_400_000]  # fmt: skip


def interval_for(range_ms: float, max_data_points: int) -> int:
    """Grafana's auto interval: range / data points, rounded to a nice step."""
    raw = range_ms / max(1, max_data_points)
    return next((n for n in _NICE_MS if n >= raw), _NICE_MS[-1])


def _quote(v: str) -> str:
    return "'" + v.replace("\\", "\\\\").replace("'", "''") + "'"


def _format(values: Sequence[str], fmt: str | None) -> str:
    if fmt in ("singlequote", "sqlstring"):
        return ",".join(_quote(v) for v in values)
    if fmt in (None, "raw", "csv"):
        return ",".join(values) if len(values) != 1 else values[0]
    raise DashboardsError(f"template format {fmt!r} is not supported here")


def interpolate(sql: str, variables: Mapping[str, str | Sequence[str]],
                all_values: Mapping[str, Sequence[str]] | None = None) -> str:  # fmt: skip
    """Grafana's template interpolation. A variable set to `$__all` expands to every value
    in `all_values` (Grafana does the same when no custom all value is set)."""
    all_values = all_values or {}

    def values_of(name: str) -> list[str] | None:
        if name.startswith("__"):
            return None  # a macro or Grafana global, not a dashboard variable
        if name not in variables:
            raise DashboardsError(f"variable ${name} is not defined")
        v = variables[name]
        vs = [v] if isinstance(v, str) else list(v)
        if vs == [ALL]:
            return list(all_values.get(name, []))
        return vs

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3) or m.group(4)
        vs = values_of(name)
        if vs is None:
            return m.group(0)
        return _format(vs, m.group(2))

    sql = _conditional_all(sql, variables)
    return _VAR.sub(sub, sql)


def _conditional_all(sql: str, variables: Mapping[str, str | Sequence[str]]) -> str:
    """`$__conditionalAll(cond, $var)`: `1=1` when the variable is All, else the condition."""
    out = sql
    while (i := out.find("$__conditionalAll(")) >= 0:
        args, end = _args(out, i + len("$__conditionalAll"))
        if len(args) != 2:
            raise DashboardsError("$__conditionalAll takes (condition, $variable)")
        name = args[1].strip().lstrip("$").strip("{}")
        v = variables.get(name)
        is_all = v == ALL or (not isinstance(v, str) and v is not None and list(v) == [ALL])
        out = out[:i] + ("1=1" if is_all else args[0].strip()) + out[end:]
    return out


def _args(sql: str, open_at: int) -> tuple[list[str], int]:
    """Split the parenthesised argument list starting at `open_at` on top-level commas."""
    depth, args, cur, quote = 0, [], [], ""
    for j in range(open_at, len(sql)):
        c = sql[j]
        if quote:
            cur.append(c)
            if c == quote:
                quote = ""
            continue
        if c in "'\"":
            quote = c
        elif c == "(":
            depth += 1
            if depth == 1:
                continue
        elif c == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(cur))
                return args, j + 1
        elif c == "," and depth == 1:
            args.append("".join(cur))
            cur = []
            continue
        cur.append(c)
    raise DashboardsError(f"unbalanced parentheses after position {open_at}")


def expand_time(sql: str, tr: TimeRange) -> str:
    """The plugin's backend macros, with its exact output (pkg/macros/macros.go)."""
    f_s, t_s = int(tr.start.timestamp()), int(tr.end.timestamp())
    f_ms, t_ms = int(tr.start.timestamp() * 1000), int(tr.end.timestamp() * 1000)
    interval_s = max(int(tr.interval_ms / 1000), 1)
    interval_ms = max(tr.interval_ms, 1)

    def one(name: str, args: list[str]) -> str:
        a = [x.strip() for x in args]
        simple = {
            "fromTime": f"toDateTime({f_s})", "toTime": f"toDateTime({t_s})",
            "fromTime_ms": f"fromUnixTimestamp64Milli({f_ms})",
            "toTime_ms": f"fromUnixTimestamp64Milli({t_ms})",
            "interval_s": str(interval_s),
        }  # fmt: skip
        if name in simple:
            return simple[name]
        if len(a) != 1 and name != "dateTimeFilter":
            raise DashboardsError(f"$__{name} expects 1 argument, got {len(a)}")
        if name == "timeFilter":
            return f"{a[0]} >= toDateTime({f_s}) AND {a[0]} <= toDateTime({t_s})"
        if name == "timeFilter_ms":
            return (f"{a[0]} >= fromUnixTimestamp64Milli({f_ms}) AND "
                    f"{a[0]} <= fromUnixTimestamp64Milli({t_ms})")  # fmt: skip
        if name == "dateFilter":
            d0, d1 = tr.start.strftime("%Y-%m-%d"), tr.end.strftime("%Y-%m-%d")
            return f"{a[0]} >= toDate('{d0}') AND {a[0]} <= toDate('{d1}')"
        if name == "timeInterval":
            return f"toStartOfInterval(toDateTime({a[0]}), INTERVAL {interval_s} second)"
        if name == "timeInterval_ms":
            return (f"toStartOfInterval(toDateTime64({a[0]}, 3), "
                    f"INTERVAL {interval_ms} millisecond)")  # fmt: skip
        raise DashboardsError(f"macro $__{name} is not one the ClickHouse plugin expands")

    out, pos = [], 0
    for m in _MACRO.finditer(sql):
        if m.start() < pos:
            continue
        name = m.group(1)
        out.append(sql[pos : m.start()])
        end = m.end()
        args: list[str] = []
        if end < len(sql) and sql[end] == "(":
            args, end = _args(sql, end)
        out.append(one(name, args))
        pos = end
    out.append(sql[pos:])
    return "".join(out)


def expand(sql: str, tr: TimeRange, variables: Mapping[str, str | Sequence[str]],
           all_values: Mapping[str, Sequence[str]] | None = None) -> str:  # fmt: skip
    """Template variables first (frontend), then time macros (backend), as Grafana runs them."""
    return expand_time(interpolate(sql, variables, all_values), tr)
