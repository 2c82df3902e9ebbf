"""`simulate` fills a store the way the pipeline does, fast, without Kafka."""

from __future__ import annotations

from stormwatch.demo import evaluate
from stormwatch.settings import StormwatchSettings
from stormwatch.simulate import Simulation
from stormwatch.store import Store


def test_simulation_writes_every_table_the_dashboards_read(
    chdb_store: Store, demo: tuple[StormwatchSettings, Simulation]
) -> None:
    settings, sim = demo
    db = settings.database
    counts = {t: chdb_store.query(f"SELECT count() FROM {db}.{t}").rows[0][0]
              for t in ("points", "anomalies", "dlq", "health", "action_audit")}  # fmt: skip
    assert counts["points"] == sim.points > 10_000
    assert counts["dlq"] == sim.dead_letters > 0
    assert counts["health"] > 0 and counts["action_audit"] == sim.audit_rows > 0
    assert counts["anomalies"] > 0 and sim.series >= 20
    # Timestamps lie in the simulated span, which ends now.
    lo, hi = chdb_store.query(
        f"SELECT toUnixTimestamp(min(ts)), toUnixTimestamp(max(ts)) FROM {db}.points"
    ).rows[0]
    assert sim.start - 2 <= lo and hi <= sim.end + 1  # windows are stamped with their start


def test_simulation_finds_the_demo_incidents(
    chdb_store: Store, demo: tuple[StormwatchSettings, Simulation]
) -> None:
    """Episodes line up with the injected incidents, as in a real `stormwatch up --demo`."""
    settings, sim = demo
    found = evaluate(chdb_store, settings.database, sim.incidents, slack_s=4.0)
    assert sum(hit for _, hit in found) >= len(found) - 1, [(i.name, h) for i, h in found]
