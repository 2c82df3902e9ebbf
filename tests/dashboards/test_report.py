"""`stormwatch report` over the simulated demo: a self-contained page with one chart per
anomalous series against its expected band."""

from __future__ import annotations

import re
from pathlib import Path

from stormwatch.commands.report import write_report
from stormwatch.settings import StormwatchSettings
from stormwatch.simulate import Simulation
from stormwatch.store import Store


def test_report_charts_anomalous_series_without_network_assets(
    chdb_store: Store, demo: tuple[StormwatchSettings, Simulation], tmp_path: Path
) -> None:
    db = demo[0].database
    out = tmp_path / "report.html"
    n = write_report(chdb_store, db, out, seconds=3600, limit=6)
    html = out.read_text()
    expected = chdb_store.query(
        f"SELECT uniqExact(series_id) FROM {db}.anomalies FINAL "
        "WHERE end >= now64(3) - INTERVAL 1 HOUR OR is_open = 1"
    ).rows[0][0]
    assert n == min(6, expected) and n > 0
    assert html.count("<svg") == n and html.count('class="value"') == n
    assert html.count('class="band"') == n  # every charted series has a finite band somewhere
    assert html.count('class="episode"') >= n
    # Self-contained: nothing fetched from anywhere.
    assert not re.search(r"<script|<link|<img|@import|url\((?!#)|src=|https?://", html)
    # The most anomalous series (highest peak, then most episodes) comes first, titled by
    # its service and signal.
    top = chdb_store.query(
        f"SELECT any(service), any(kind), any(name), max(peak_score) AS p, count() AS c "
        f"FROM {db}.anomalies FINAL WHERE end >= now64(3) - INTERVAL 1 HOUR OR is_open = 1 "
        "GROUP BY series_id ORDER BY p DESC, c DESC"
    ).rows
    best = {f"{svc or '-'} · {kind}.{name}" for svc, kind, name, p, c in top
            if (p, c) == top[0][3:]}  # fmt: skip
    first_title = re.search(r"</span>([^<]+)</h2>", html)
    assert first_title and any(first_title.group(1).startswith(b) for b in best)


def test_report_on_a_quiet_hour_says_so(
    chdb_store: Store, demo: tuple[StormwatchSettings, Simulation], tmp_path: Path
) -> None:
    out = tmp_path / "quiet.html"
    long_ago = demo[1].start - 86_400
    assert write_report(chdb_store, demo[0].database, out, now=long_ago) == 0
    assert "No anomaly episodes in this window." in out.read_text()
