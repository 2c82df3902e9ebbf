"""The one truth of proposals: SQLite, each transition a compare-and-set UPDATE.

`transition(id, frm, to)` runs `UPDATE ... WHERE id=? AND state IN (frm)` in autocommit
mode (WAL, synchronous=FULL): exactly one caller wins a transition, across threads and
processes, and a committed transition survives a crash. So two clicks, two approvers or a
redelivered request move `approved → executing` once, and the action runs at most once.
`batch()` groups many writes into one transaction (one fsync): the consumer records a poll
batch with it before committing the batch's Kafka offsets.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from actions.base import EXECUTED, State, Verdict
from actions.base import Proposal as Proposal

SCHEMA = """
CREATE TABLE IF NOT EXISTS proposals (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, policy TEXT NOT NULL, action TEXT NOT NULL,
    params TEXT NOT NULL, rollback_action TEXT, rollback_params TEXT, target TEXT NOT NULL,
    service TEXT NOT NULL, episode_id INTEGER NOT NULL, series_id INTEGER NOT NULL,
    incident_id TEXT NOT NULL, explanation TEXT NOT NULL DEFAULT '',
    detector TEXT NOT NULL DEFAULT '', detector_version TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL, expires_at REAL NOT NULL, decided_by TEXT NOT NULL DEFAULT '',
    decided_at REAL, executed_at REAL, dry_run INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '', watch_until REAL,
    notified INTEGER NOT NULL DEFAULT 0, response_url TEXT NOT NULL DEFAULT '',
    guards TEXT NOT NULL DEFAULT '[]', updated_at REAL NOT NULL,
    UNIQUE (episode_id, policy)
);
CREATE INDEX IF NOT EXISTS proposals_state ON proposals (state);
CREATE INDEX IF NOT EXISTS proposals_target ON proposals (target, executed_at);
CREATE TABLE IF NOT EXISTS episodes (
    episode_id INTEGER PRIMARY KEY, series_id INTEGER NOT NULL, service TEXT NOT NULL,
    is_open INTEGER NOT NULL, end_ms INTEGER NOT NULL, updated_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY, service TEXT NOT NULL, opened_at REAL NOT NULL, last_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS seen_requests (sig TEXT PRIMARY KEY, ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS silences (
    service TEXT PRIMARY KEY, until REAL NOT NULL, by TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, row TEXT NOT NULL
);
"""

_TIMES = {"created_at", "expires_at", "decided_at", "executed_at", "watch_until"}
_JSON = {"params", "rollback_params", "guards"}
_COLUMNS = {
    "state", "decided_by", "decided_at", "executed_at", "dry_run", "outcome", "detail",
    "watch_until", "notified", "response_url", "guards",
}  # fmt: skip


def ts(dt: datetime | None) -> float | None:
    return dt.timestamp() if dt is not None else None


def dt(x: float | None) -> datetime | None:
    return datetime.fromtimestamp(x, UTC) if x is not None else None


def _encode(key: str, value: Any) -> Any:
    if key in _TIMES:
        return ts(value)
    if key == "guards":
        return orjson.dumps([v if isinstance(v, dict) else v.model_dump() for v in value]).decode()
    if key in _JSON:
        return None if value is None else orjson.dumps(value).decode()
    if isinstance(value, bool):
        return int(value)
    return value


class StateStore:
    """Durable proposal state; safe to share between threads and with other processes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._depth = 0  # nesting of batch(); only the thread holding the lock changes it
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Make the writes of the block one transaction: one fsync instead of one per write.

        The lock is held throughout, so other threads' statements wait for the commit rather
        than join the transaction; a nested `batch()` joins the outer one. The block's writes
        are committed when it ends, including those before an error the block caught; an
        exception that leaves the block rolls them all back. If SQLite rolled the transaction
        back by itself (disk full, I/O error), raises sqlite3.OperationalError: the block's
        writes are not all durable, so the caller must not act as if they were.
        """
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
                if not self._db.in_transaction:
                    raise sqlite3.OperationalError("SQLite rolled back the batch")
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    with suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0

    def _exec(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    # --- proposals ---------------------------------------------------------------------
    def insert(self, p: Proposal) -> bool:
        """Insert a new proposal; False when one exists for this episode and policy."""
        row = {k: _encode(k, v) for k, v in p.model_dump().items()}
        row["state"] = p.state.value
        row["updated_at"] = row["created_at"]
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        cur = self._exec(
            f"INSERT OR IGNORE INTO proposals ({cols}) VALUES ({marks})", list(row.values())
        )
        return cur.rowcount == 1

    def transition(self, pid: str, frm: Iterable[State], to: State, now: datetime,
                   **fields: Any) -> bool:  # fmt: skip
        """Compare-and-set: move `pid` from one of `frm` to `to`; True if this call did it."""
        bad = set(fields) - _COLUMNS
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        old = [s.value for s in frm]
        sets = ["state = ?", "updated_at = ?"] + [f"{k} = ?" for k in fields]
        args = [to.value, now.timestamp()] + [_encode(k, v) for k, v in fields.items()]
        marks = ", ".join("?" for _ in old)
        cur = self._exec(
            f"UPDATE proposals SET {', '.join(sets)} WHERE id = ? AND state IN ({marks})",
            [*args, pid, *old],
        )
        return cur.rowcount == 1

    def update(self, pid: str, *, where_outcome: str | None = None, **fields: Any) -> bool:
        """Set fields without a state change (compare-and-set on `outcome` if given)."""
        bad = set(fields) - _COLUMNS
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        args = [_encode(k, v) for k, v in fields.items()] + [pid]
        sql = f"UPDATE proposals SET {sets} WHERE id = ?"
        if where_outcome is not None:
            sql += " AND outcome = ?"
            args.append(where_outcome)
        return self._exec(sql, args).rowcount == 1

    def get(self, pid: str) -> Proposal | None:
        row = self._exec("SELECT * FROM proposals WHERE id = ?", [pid]).fetchone()
        return _proposal(row) if row else None

    def find(self, pid_prefix: str) -> list[Proposal]:
        rows = self._exec(
            "SELECT * FROM proposals WHERE id LIKE ? ORDER BY created_at", [pid_prefix + "%"]
        ).fetchall()
        return [_proposal(r) for r in rows]

    def where(self, sql: str = "1", args: Sequence[Any] = ()) -> list[Proposal]:
        rows = self._exec(
            f"SELECT * FROM proposals WHERE {sql} ORDER BY created_at", args
        ).fetchall()
        return [_proposal(r) for r in rows]

    def by_state(self, *states: State) -> list[Proposal]:
        marks = ", ".join("?" for _ in states)
        return self.where(f"state IN ({marks})", [s.value for s in states])

    def live_for(self, policy: str, target: str) -> Proposal | None:
        rows = self.where(
            "policy = ? AND target = ? AND state IN (?, ?, ?)",
            [policy, target, State.proposed, State.approved, State.executing],
        )
        return rows[0] if rows else None

    def has(self, episode_id: int, policy: str) -> bool:
        return (
            self._exec(
                "SELECT 1 FROM proposals WHERE episode_id = ? AND policy = ?", [episode_id, policy]
            ).fetchone()
            is not None
        )

    # --- history for the guards --------------------------------------------------------
    def _executed(self) -> str:
        return ", ".join(f"'{s.value}'" for s in EXECUTED)

    def last_execution(self, target: str, exclude: str = "") -> datetime | None:
        row = self._exec(
            f"SELECT max(executed_at) FROM proposals WHERE target = ? AND id != ? AND state IN "
            f"({self._executed()})", [target, exclude],
        ).fetchone()  # fmt: skip
        return dt(row[0])

    def executions_since(self, since: datetime, policy: str | None = None,
                         exclude: str = "") -> int:  # fmt: skip
        sql = "SELECT count() FROM proposals WHERE executed_at >= ? AND id != ? AND state IN "
        sql += f"({self._executed()})"
        args: list[Any] = [since.timestamp(), exclude]
        if policy is not None:
            sql += " AND policy = ?"
            args.append(policy)
        return int(self._exec(sql, args).fetchone()[0])

    def targets_since(self, since: datetime, policy: str, exclude: str = "") -> set[str]:
        rows = self._exec(
            f"SELECT DISTINCT target FROM proposals WHERE executed_at >= ? AND policy = ? AND "
            f"id != ? AND state IN ({self._executed()})", [since.timestamp(), policy, exclude],
        ).fetchall()  # fmt: skip
        return {r[0] for r in rows}

    # --- episodes, incidents, requests, flags, flood -----------------------------------
    def put_episode(self, episode_id: int, series_id: int, service: str, is_open: bool,
                    end_ms: int, body: str, now: datetime) -> None:  # fmt: skip
        """Latest state of an episode; a stale message (older end) never reopens it."""
        self._exec(
            "INSERT INTO episodes VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (episode_id) DO UPDATE "
            "SET is_open = excluded.is_open, end_ms = excluded.end_ms, "
            "updated_at = excluded.updated_at, body = excluded.body "
            "WHERE excluded.end_ms > episodes.end_ms OR "
            "(excluded.end_ms = episodes.end_ms AND excluded.is_open <= episodes.is_open)",
            [episode_id, series_id, service, int(is_open), end_ms, now.timestamp(), body],
        )

    def episode_open(self, episode_id: int) -> bool | None:
        row = self._exec("SELECT is_open FROM episodes WHERE episode_id = ?", [episode_id])
        r = row.fetchone()
        return None if r is None else bool(r[0])

    def series_open(self, series_id: int) -> bool:
        """True while any episode of the series is open (a flapping series opens new ones)."""
        r = self._exec(
            "SELECT 1 FROM episodes WHERE series_id = ? AND is_open = 1 LIMIT 1", [series_id]
        ).fetchone()
        return r is not None

    def anomaly_open(self, episode_id: int, series_id: int) -> bool | None:
        """The episode is open or its series has opened another; None if never seen."""
        own = self.episode_open(episode_id)
        if own or self.series_open(series_id):
            return True
        return own

    def prune_episodes(self, before: datetime) -> int:
        """Forget closed episodes last seen before `before` (proposals keep their own copy)."""
        cur = self._exec(
            "DELETE FROM episodes WHERE is_open = 0 AND updated_at < ?", [before.timestamp()]
        )
        return cur.rowcount

    def episode_body(self, episode_id: int) -> str | None:
        r = self._exec("SELECT body FROM episodes WHERE episode_id = ?", [episode_id]).fetchone()
        return r[0] if r else None

    def incident_for(self, service: str, now: datetime, window_s: float, new_id: str) -> str:
        """The service's incident if one saw an episode within the window, else a new one."""
        with self._lock:
            row = self._exec(
                "SELECT id FROM incidents WHERE service = ? AND last_at >= ? "
                "ORDER BY last_at DESC LIMIT 1", [service, now.timestamp() - window_s],
            ).fetchone()  # fmt: skip
            if row:
                self._exec(
                    "UPDATE incidents SET last_at = ? WHERE id = ?", [now.timestamp(), row[0]]
                )
                return str(row[0])
            self._exec("INSERT INTO incidents VALUES (?, ?, ?, ?)",
                       [new_id, service, now.timestamp(), now.timestamp()])  # fmt: skip
            return new_id

    def first_seen(self, sig: str, now: datetime, keep_s: float) -> bool:
        """Record a request signature; False if it was seen before (a replay)."""
        with self._lock:
            self._exec("DELETE FROM seen_requests WHERE ts < ?", [now.timestamp() - keep_s])
            cur = self._exec(
                "INSERT OR IGNORE INTO seen_requests VALUES (?, ?)", [sig, now.timestamp()]
            )
            return cur.rowcount == 1

    def flag(self, name: str) -> str | None:
        r = self._exec("SELECT value FROM flags WHERE name = ?", [name]).fetchone()
        return r[0] if r else None

    def set_flag(self, name: str, value: str | None) -> None:
        if value is None:
            self._exec("DELETE FROM flags WHERE name = ?", [name])
        else:
            self._exec("INSERT OR REPLACE INTO flags VALUES (?, ?)", [name, value])

    def silence(self, service: str, until: datetime | None, by: str, reason: str = "") -> None:
        """Silence a service ('*': all) until a time; `until=None` lifts the silence."""
        if until is None:
            self._exec("DELETE FROM silences WHERE service = ?", [service])
        else:
            self._exec("INSERT OR REPLACE INTO silences VALUES (?, ?, ?, ?)",
                       [service, until.timestamp(), by, reason])  # fmt: skip

    def silenced(self, service: str, now: datetime) -> tuple[str, datetime, str, str] | None:
        r = self._exec(
            "SELECT service, until, by, reason FROM silences WHERE service IN (?, '*') "
            "AND until > ? ORDER BY until DESC LIMIT 1", [service, now.timestamp()],
        ).fetchone()  # fmt: skip
        return (r[0], datetime.fromtimestamp(r[1], UTC), r[2], r[3]) if r else None

    def messages_since(self, since: datetime) -> int:
        self._exec("DELETE FROM messages WHERE ts < ?", [since.timestamp() - 3600])
        return int(
            self._exec(
                "SELECT count() FROM messages WHERE ts >= ?", [since.timestamp()]
            ).fetchone()[0]
        )

    def message_sent(self, now: datetime) -> None:
        self._exec("INSERT INTO messages VALUES (?)", [now.timestamp()])

    # --- outbox for ClickHouse rows ----------------------------------------------------
    def enqueue(self, table: str, row: dict[str, Any]) -> None:
        self._exec("INSERT INTO outbox (tbl, row) VALUES (?, ?)",
                   [table, orjson.dumps(row).decode()])  # fmt: skip

    def pending(self, limit: int = 1000) -> list[tuple[int, str, dict[str, Any]]]:
        rows = self._exec("SELECT id, tbl, row FROM outbox ORDER BY id LIMIT ?", [limit])
        return [(r[0], r[1], orjson.loads(r[2])) for r in rows.fetchall()]

    def done(self, ids: Sequence[int]) -> None:
        marks = ", ".join("?" for _ in ids)
        self._exec(f"DELETE FROM outbox WHERE id IN ({marks})", list(ids))


def _proposal(row: sqlite3.Row) -> Proposal:
    d = dict(row)
    d.pop("updated_at", None)
    for k in _TIMES:
        d[k] = dt(d[k])
    for k in ("params", "rollback_params"):
        d[k] = orjson.loads(d[k]) if d[k] is not None else None
    d["guards"] = [Verdict(**v) for v in orjson.loads(d["guards"])]
    d["dry_run"] = bool(d["dry_run"])
    d["notified"] = bool(d["notified"])
    return Proposal(**d)
