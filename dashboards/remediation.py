"""Remediation: proposals and their fate, read from the actions audit trail (`action_audit`).

Each audit row is one event of a proposal (proposed, approved, executing, succeeded, ...,
and the watcher's verdicts `effective` / `ineffective`); a proposal's state is its latest
lifecycle event.
"""

from __future__ import annotations

from dashboards.model import Board, barchart, stat, table, timeseries
from dashboards.sql import DB

UID = "stormwatch-remediation"
LIFECYCLE = ("'proposed', 'blocked', 'approved', 'rejected', 'expired', 'executing', "
             "'succeeded', 'failed', 'rolled_back'")  # fmt: skip
AUDIT = f"{DB}.action_audit FINAL"

# One row per proposal seen in the range: latest state, decision and execution facts.
PROPOSALS = f"""
SELECT proposal_id,
       any(policy) AS policy, any(action) AS action, any(series_id) AS series_id,
       argMaxIf(state, ts, state IN ({LIFECYCLE})) AS status,
       minIf(ts, state = 'proposed') AS proposed_at,
       minIf(ts, state IN ('approved', 'rejected')) AS decided_at,
       argMinIf(actor, ts, state IN ('approved', 'rejected')) AS decided_by,
       max(dry_run) AS dry_run,
       countIf(state = 'ineffective') > 0 AS ineffective,
       argMaxIf(detail, ts, state IN ('succeeded', 'failed', 'rolled_back')) AS outcome
FROM {AUDIT}
WHERE proposal_id != '' AND $__timeFilter(ts)
GROUP BY proposal_id"""


def board(ds: str) -> Board:
    panels = [
        stat("Proposals", f"SELECT count() AS proposals FROM ({PROPOSALS})", needs=("proposals",)),
        stat(
            "Awaiting approval",
            f"SELECT countIf(status = 'proposed') AS waiting FROM ({PROPOSALS})",
            thresholds=[(None, "green"), (1, "orange")],
            needs=("waiting",),
        ),
        stat(
            "Median time to decision",
            f"SELECT quantileIf(0.5)(dateDiff('second', proposed_at, decided_at), "
            f"decided_at > proposed_at) AS seconds FROM ({PROPOSALS}) "
            "WHERE toUnixTimestamp64Milli(decided_at) > 0",
            unit="s",
            needs=("seconds",),
        ),
        stat(
            "Ineffective actions",
            f"SELECT countIf(ineffective) AS ineffective FROM ({PROPOSALS})",
            thresholds=[(None, "green"), (1, "red")],
            needs=("ineffective",),
        ),
        barchart(
            "Proposals by state",
            f"SELECT status AS state, count() AS proposals FROM ({PROPOSALS}) "
            "GROUP BY state ORDER BY proposals DESC",
            x="state",
            width=8,
            needs=("proposals",),
        ),  # fmt: skip
        timeseries(
            "Audit events over time by state",
            f"""
SELECT $__timeInterval(ts) AS time, state, count() AS events
FROM {AUDIT}
WHERE $__timeFilter(ts)
GROUP BY time, state ORDER BY time""",
            stack=True,
            width=8,
            needs=("state", "events"),
        ),  # fmt: skip
        barchart(
            "Who decided",
            f"""
SELECT if(actor = '', '(unknown)', actor) AS actor,
       countIf(state = 'approved') AS approved, countIf(state = 'rejected') AS rejected
FROM {AUDIT}
WHERE $__timeFilter(ts) AND state IN ('approved', 'rejected')
GROUP BY actor ORDER BY approved + rejected DESC LIMIT 20""",
            x="actor",
            width=8,
            needs=("approved", "rejected"),
        ),  # fmt: skip
        table(
            "Time to decision",
            f"""
SELECT policy, action, count() AS decided,
       round(quantile(0.5)(dateDiff('millisecond', proposed_at, decided_at)) / 1000, 1)
           AS p50_s,
       round(quantile(0.9)(dateDiff('millisecond', proposed_at, decided_at)) / 1000, 1)
           AS p90_s,
       round(max(dateDiff('millisecond', proposed_at, decided_at)) / 1000, 1) AS max_s
FROM ({PROPOSALS})
WHERE toUnixTimestamp64Milli(decided_at) > 0 AND toUnixTimestamp64Milli(proposed_at) > 0
GROUP BY policy, action ORDER BY decided DESC""",
            width=12,
            height=7,
            needs=("policy", "action", "p50_s", "p90_s"),
        ),  # fmt: skip
        table(
            "Ineffective actions",
            f"""
SELECT ts AS time, policy, action, proposal_id, toString(series_id) AS series_id, detail
FROM {AUDIT}
WHERE $__timeFilter(ts) AND state = 'ineffective'
ORDER BY ts DESC LIMIT 100""",
            width=12,
            height=7,
            needs=("time", "action", "proposal_id", "detail"),
            description="Executed actions after which the anomaly did not clear.",
        ),  # fmt: skip
        table(
            "Executions and outcomes",
            f"""
SELECT proposed_at, policy, action, status AS state, decided_by, decided_at,
       if(dry_run = 1, 'dry run', 'live') AS mode, if(ineffective, 'no', '') AS effective,
       outcome, proposal_id
FROM ({PROPOSALS})
ORDER BY proposed_at DESC LIMIT 200""",
            width=24,
            height=9,
            needs=("proposed_at", "policy", "action", "state", "decided_by", "mode", "outcome"),
        ),  # fmt: skip
    ]
    return Board(UID, "Stormwatch / Remediation",
                 "Remediation proposals, approvals, executions and their effect.",
                 panels)  # fmt: skip
