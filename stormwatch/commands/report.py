"""`stormwatch report --out report.html`: the last hour's anomalous series, self-contained.

One HTML file with inline CSS and SVG charts (no scripts, fonts or images from the network):
each anomalous series against its expected band, its episodes shaded, with the explanation.
For a person without Grafana, or to attach to an incident ticket.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from stormwatch import StormwatchError
from stormwatch.settings import StormwatchSettings
from stormwatch.store import Store, open_store

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 760, 200, 56, 12, 10, 24
MAX_POINTS = 400


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("report", help="write an HTML page of the last hour's anomalous series")
    p.add_argument("--out", type=Path, default=Path("report.html"), help="output file")
    p.add_argument("--last", default="1h", help="how far back: 30m, 1h, 6h (default 1h)")
    p.add_argument("--limit", type=int, default=12, help="at most this many series")
    p.set_defaults(run=run)


@dataclass(frozen=True)
class SeriesChart:
    series_id: int
    title: str
    episodes: list[dict[str, Any]]
    points: list[tuple[float, float, float | None, float | None, float | None]]  # t v e lo hi


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def collect(store: Store, db: str, start: float, end: float, limit: int) -> list[SeriesChart]:
    """The `limit` most anomalous series with an episode in [start, end], with their points."""
    rng = f"start <= fromUnixTimestamp({int(end)}) AND end >= fromUnixTimestamp({int(start)})"
    eps = store.query(
        f"""SELECT series_id, toUnixTimestamp64Milli(start) / 1000 AS s,
                   if(is_open = 1, {end}, toUnixTimestamp64Milli(end) / 1000) AS e,
                   is_open, severity, service, kind, name, labels, peak_value, expected,
                   peak_score, explanation, detector, detector_version
            FROM {db}.anomalies FINAL
            WHERE {rng} OR (is_open = 1 AND start <= fromUnixTimestamp({int(end)}))
            ORDER BY start"""
    ).dicts()
    by_series: dict[int, list[dict[str, Any]]] = {}
    for ep in eps:
        by_series.setdefault(int(ep["series_id"]), []).append(ep)
    ranked = sorted(by_series.items(), key=lambda kv: (-max(e["peak_score"] for e in kv[1]),
                                                       -len(kv[1])))[:limit]  # fmt: skip
    step = max(1, int((end - start) / MAX_POINTS))
    out = []
    for sid, series_eps in ranked:
        rows = store.query(
            f"""SELECT toUnixTimestamp(toStartOfInterval(ts, INTERVAL {step} SECOND)) AS t,
                       avg(value), avgIf(expected, isFinite(expected)),
                       avgIf(lower, isFinite(lower)), avgIf(upper, isFinite(upper))
                FROM {db}.points
                WHERE series_id = {sid} AND ts >= fromUnixTimestamp({int(start)})
                  AND ts <= fromUnixTimestamp({int(end)})
                GROUP BY t ORDER BY t"""
        ).rows
        e0 = series_eps[-1]
        labels = " ".join(f"{k}={v}" for k, v in sorted(e0["labels"].items())
                          if v and k != "statement")  # fmt: skip
        title = f"{e0['service'] or '-'} · {e0['kind']}.{e0['name']}" + (
            f" {{{labels}}}" if labels else ""
        )
        pts = [(float(t), float(v), _finite(e), _finite(lo), _finite(hi))
               for t, v, e, lo, hi in rows]  # fmt: skip
        out.append(SeriesChart(sid, title, series_eps, pts))
    return out


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _lasted(ep: dict[str, Any]) -> str:
    return "open" if ep["is_open"] else f"{float(ep['e']) - float(ep['s']):.0f}s"


def svg_chart(c: SeriesChart, start: float, end: float) -> str:
    """Value (blue), expected (dashed), normal range (grey band), episodes (red shading)."""
    if not c.points:
        return '<p class="empty">no points in this window</p>'
    start = max(start, c.points[0][0])  # the axis starts where the series' data does
    # The y range follows the values and the expectation; a band wider than that (while a
    # detector warms up) is cut at the plot's edge instead of flattening the line.
    core = [y for p in c.points for y in (p[1], p[2]) if y is not None]
    edges = [y for p in c.points for y in (p[3], p[4]) if y is not None]
    lo, hi = min(core), max(core)
    span = max(hi - lo, abs(hi) * 0.05, 1e-9)
    lo = max(min(edges, default=lo), lo - span)
    hi = min(max(edges, default=hi), hi + span)
    lo, hi = min(lo, min(core)), max(hi, max(core))
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad
    iw, ih = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def x(t: float) -> float:
        return PAD_L + (t - start) / max(1e-9, end - start) * iw

    def y(v: float) -> float:
        return PAD_T + (hi - v) / (hi - lo) * ih

    clip = f"clip{c.series_id}"
    parts = [
        f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        f'aria-label="{escape(c.title)}">',
        f'<defs><clipPath id="{clip}"><rect x="{PAD_L}" y="{PAD_T}" width="{iw}" '
        f'height="{ih}"/></clipPath></defs>',
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{iw}" height="{ih}" class="plot"/>',
        f'<g clip-path="url(#{clip})">',
    ]
    for ep in c.episodes:
        x0, x1 = max(PAD_L, x(float(ep["s"]))), min(W - PAD_R, x(float(ep["e"])))
        if x1 > x0 - 1:
            parts.append(f'<rect x="{x0:.1f}" y="{PAD_T}" width="{max(2.0, x1 - x0):.1f}" '
                         f'height="{ih}" class="episode"><title>{escape(ep["severity"])}: '
                         f'{escape(ep["explanation"])}</title></rect>')  # fmt: skip
    band = [(p[0], p[3], p[4]) for p in c.points if p[3] is not None and p[4] is not None]
    if band:
        upper = " ".join(f"{x(t):.1f},{y(h):.1f}" for t, _, h in band)
        lower = " ".join(f"{x(t):.1f},{y(low):.1f}" for t, low, _ in reversed(band))
        parts.append(f'<polygon points="{upper} {lower}" class="band"/>')
    exp = [(p[0], p[2]) for p in c.points if p[2] is not None]
    if exp:
        parts.append('<polyline class="expected" points="'
                     + " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in exp) + '"/>')  # fmt: skip
    values = " ".join(f"{x(p[0]):.1f},{y(p[1]):.1f}" for p in c.points)
    parts.append(f'<polyline class="value" points="{values}"/></g>')
    for v in (lo + pad, (lo + hi) / 2, hi - pad):
        parts.append(f'<text x="{PAD_L - 6}" y="{y(v) + 4:.1f}" class="ylab">{_fmt(v)}</text>')
    for k in range(5):
        t = start + (end - start) * k / 4
        label = datetime.fromtimestamp(t, UTC).strftime("%H:%M")
        anchor = ' style="text-anchor:end"' if k == 4 else ""
        parts.append(f'<text x="{x(t):.1f}" y="{H - 6}" class="xlab"{anchor}>{label}</text>')
    parts.append("</svg>")
    return "".join(parts)


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:820px;color:#1d2330;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}.sub{color:#5b6475;margin:0 0 18px}
.card{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:14px 16px;margin:0 0 16px}
.card h2{font-size:15px;margin:0 0 6px;word-break:break-word}
.why{color:#3b4354;margin:6px 0 0;font-size:13px}
.sev{display:inline-block;padding:0 6px;border-radius:4px;font-size:12px;color:#fff;
margin-right:6px}.critical{background:#c62828}.major{background:#e65100}.minor{background:#b28704}
.open{background:#1d2330}
svg{max-width:100%;height:auto}.plot{fill:#fbfcfd;stroke:#e3e6ec}
.band{fill:#9aa4b5;fill-opacity:.28;stroke:none}.episode{fill:#e53935;fill-opacity:.13}
.expected{fill:none;stroke:#6b7385;stroke-width:1.2;stroke-dasharray:5 4}
.value{fill:none;stroke:#1e63d6;stroke-width:1.6}
.ylab{font-size:11px;fill:#5b6475;text-anchor:end}.xlab{font-size:11px;fill:#5b6475;
text-anchor:middle}.legend{font-size:12px;color:#5b6475;margin:0 0 16px}
.legend i{display:inline-block;width:14px;height:10px;margin:0 4px 0 10px;vertical-align:middle}
table{border-collapse:collapse;width:100%;font-size:13px}td,th{text-align:left;padding:3px 6px;
border-bottom:1px solid #eef0f4}.empty{color:#5b6475}
"""


def render_html(charts: list[SeriesChart], start: float, end: float, database: str) -> str:
    when = (f"{datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M} – "
            f"{datetime.fromtimestamp(end, UTC):%H:%M} UTC")  # fmt: skip
    n_eps = sum(len(c.episodes) for c in charts)
    body = [f"<h1>Stormwatch: anomalous series</h1><p class=sub>{escape(when)} · database "
            f"<b>{escape(database)}</b> · {len(charts)} series, {n_eps} episodes</p>",
            '<p class=legend><i style="background:#1e63d6"></i>value'
            '<i style="background:#6b7385"></i>expected<i style="background:#c9ceda"></i>'
            'normal range<i style="background:#f5c6c5"></i>anomaly episode</p>']  # fmt: skip
    if not charts:
        body.append("<div class=card><p class=empty>No anomaly episodes in this window.</p></div>")
    for c in charts:
        worst = max(c.episodes, key=lambda e: e["peak_score"])
        is_open = any(e["is_open"] for e in c.episodes)
        badges = f'<span class="sev {escape(worst["severity"])}">{escape(worst["severity"])}</span>'
        if is_open:
            badges += '<span class="sev open">open</span>'
        rows = "".join(
            f"<tr><td>{datetime.fromtimestamp(float(e['s']), UTC):%H:%M:%S}</td>"
            f"<td>{_lasted(e)}</td>"
            f"<td>{_fmt(e['peak_value'])}</td><td>{_fmt(e['expected'])}</td>"
            f"<td>{e['peak_score']:.3f}</td></tr>"
            for e in c.episodes[-5:]
        )
        body.append(
            f"<div class=card><h2>{badges}{escape(c.title)}</h2>{svg_chart(c, start, end)}"
            f"<p class=why>{escape(worst['explanation'])}</p>"
            "<table><tr><th>started</th><th>lasted</th><th>peak</th><th>expected</th>"
            f"<th>score</th></tr>{rows}</table></div>"
        )
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>Stormwatch report {escape(when)}</title><style>{CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")  # fmt: skip


def write_report(store: Store, db: str, out: Path, *, seconds: int = 3600, limit: int = 12,
                 now: float | None = None) -> int:  # fmt: skip
    """Write the page; returns how many series it charts."""
    end = now if now is not None else datetime.now(UTC).timestamp()
    start = end - seconds
    charts = collect(store, db, start, end, limit)
    try:
        out.write_text(render_html(charts, start, end, db), encoding="utf-8")
    except OSError as e:
        raise StormwatchError(f"cannot write {out}: {e}") from e
    return len(charts)


def run(args: argparse.Namespace, settings: StormwatchSettings) -> int:
    from stormwatch.commands.query import parse_span

    store = open_store(settings)
    try:
        n = write_report(store, settings.database, args.out, seconds=parse_span(args.last),
                         limit=args.limit)  # fmt: skip
    finally:
        store.close()
    print(f"wrote {args.out} ({n} anomalous series)")
    return 0
