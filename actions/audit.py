"""Audit and feedback rows for ClickHouse, written through a durable SQLite outbox.

`record` appends to the outbox in the same database as the proposal state, so an audit row
is never lost when ClickHouse is away; `flush` copies the outbox to ClickHouse and removes
what was written. Rows carry an `audit_id`, and the table replaces on it, so a flush retried
after a crash does not duplicate. Secrets never reach a row: params are the action's params.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from actions.base import Proposal
from actions.state import StateStore

log = logging.getLogger("stormwatch.actions")

AUDIT_COLUMNS = ["ts", "audit_id", "proposal_id", "episode_id", "series_id", "policy", "action",
                 "params", "state", "actor", "source", "detail", "dry_run"]  # fmt: skip
FEEDBACK_COLUMNS = ["ts", "episode_id", "series_id", "label", "user", "source"]
LABELS = {"not_anomaly": "Not an anomaly", "expected": "Expected", "new_normal": "New normal"}


class Feedback(BaseModel):
    """A person's verdict on an episode, handed to the detectors' feedback callback."""

    model_config = ConfigDict(frozen=True)

    ts: datetime
    episode_id: int
    series_id: int
    label: str
    user: str
    source: str


FeedbackCallback = Callable[[Feedback], None]


class Auditor:
    def __init__(self, state: StateStore, store: Any | None, database: str) -> None:
        self.state, self.store, self.database = state, store, database
        self._lock = threading.Lock()

    def record(self, now: datetime, state: str, *, p: Proposal | None = None, actor: str = "",
               source: str = "service", detail: str = "", dry_run: bool | None = None,
               proposal_id: str = "") -> None:  # fmt: skip
        row = {
            "ts": int(now.timestamp() * 1000), "audit_id": _audit_id(),
            "proposal_id": p.id if p else proposal_id,
            "episode_id": p.episode_id if p else 0, "series_id": p.series_id if p else 0,
            "policy": p.policy if p else "", "action": p.action if p else "",
            "params": orjson.dumps(p.params).decode() if p else "",
            "state": state, "actor": actor[:200], "source": source, "detail": detail[:2000],
            "dry_run": int(p.dry_run if dry_run is None and p else bool(dry_run)),
        }  # fmt: skip
        self.state.enqueue("action_audit", row)
        log.info("audit %s %s %s %s", row["proposal_id"] or "-", state, actor or "-", detail)

    def feedback(self, fb: Feedback) -> None:
        row = fb.model_dump()
        row["ts"] = int(fb.ts.timestamp() * 1000)
        self.state.enqueue("feedback", row)

    def flush(self) -> int:
        """Copy the outbox to ClickHouse; returns rows written (0 while it is away)."""
        if self.store is None:
            return 0
        with self._lock:
            written = 0
            while batch := self.state.pending():
                ids = [i for i, _, _ in batch]
                try:
                    for table, columns in (("action_audit", AUDIT_COLUMNS),
                                           ("feedback", FEEDBACK_COLUMNS)):  # fmt: skip
                        rows = [r for _, t, r in batch if t == table]
                        if rows:
                            data = [[_value(c, r[c]) for r in rows] for c in columns]
                            self.store.insert(f"{self.database}.{table}", columns, data)
                except Exception as e:  # StoreError or a transport error: retry on next flush
                    log.warning("audit: ClickHouse write failed, kept in outbox: %s",
                                type(e).__name__)  # fmt: skip
                    return written
                self.state.done(ids)
                written += len(batch)
            return written


def _audit_id() -> str:
    """Unique, and sorts in write order: rows with the same `ts` still read in sequence."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def _value(column: str, v: Any) -> Any:
    if column == "ts":
        return datetime.fromtimestamp(v / 1000, UTC)
    return v
