"""SQL fragments the dashboards share. `${database}` is the dashboards' hidden constant."""

from __future__ import annotations

DB = "${database}"

# A readable name for a series: "checkout span.latency_ms {operation=GET /products}".
# The statement text of DB series is long; its fingerprint label already identifies it.
SERIES_LABEL = (
    "concat(if(service = '', '-', service), ' ', kind, '.', name, "
    "if(empty(mapFilter((k, v) -> k != 'statement' AND v != '', labels)), '', "
    "concat(' {', arrayStringConcat(arrayMap((k, v) -> concat(k, '=', v), "
    "mapKeys(mapFilter((k, v) -> k != 'statement' AND v != '', labels)), "
    "mapValues(mapFilter((k, v) -> k != 'statement' AND v != '', labels))), ', '), '}')))"
)

SERVICE_FILTER = "$__conditionalAll(service IN (${service:singlequote}), $service)"

# Band edges are ±inf while a detector warms up; Grafana cannot draw those.
FINITE_OR_NULL = "if(isFinite({col}), {col}, NULL)"


def finite(col: str) -> str:
    return FINITE_OR_NULL.format(col=col)
