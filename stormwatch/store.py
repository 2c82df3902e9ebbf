"""One storage interface over clickhouse-connect, whether the engine is chdb in this process,
a ClickHouse server, or chdb owned by another stormwatch process (asked over loopback HTTP).

chdb allows one process per data directory, so the process that runs the pipeline owns the
engine and serves `query`/`insert`/`command` to the CLI on a loopback port with a token kept
in `<data_dir>/engine.json` (mode 0600). A worker's blocks reach that engine as files in the
server's spool directory (`<data_dir>/spool`, mode 0700), which the engine reads itself: sent
as a request body, a 200,000-row block crossed both processes' busy interpreters and took
0.4-0.5 s to hand over (docs/performance.md, twenty-third round).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import orjson

from stormwatch import StormwatchError
from stormwatch.settings import StormwatchSettings

log = logging.getLogger(__name__)


class StoreError(StormwatchError):
    """A query or insert failed, or the engine could not be reached."""


@dataclass(frozen=True)
class Rows:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


class Store(Protocol):
    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Rows: ...
    def command(self, sql: str) -> None: ...
    def insert(self, table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> None:
        """Column-oriented insert: data[i] holds every value of columns[i]."""

    def insert_native(self, table: str, columns: Sequence[str], body: bytes) -> None:
        """Insert a block already in ClickHouse's Native format."""

    def close(self) -> None: ...


# ReplacingMergeTree tables would otherwise collapse each inserted block by its key on the way
# in: ~2 us of engine CPU a `points` row, four times the rest of the insert (measured in
# docs/performance.md). Duplicates are collapsed by merges and by FINAL, which every exact
# read uses, so the insert-time pass buys nothing the reads rely on.
INSERT_SETTINGS = {"optimize_on_insert": 0}
SPOOL_FILE = re.compile(r"[0-9a-f]{32}\.native")  # what a worker names a block it spools


class ClickHouseStore:
    """A clickhouse-connect client (chdb or HTTP) behind a lock: chdb is not re-entrant."""

    def __init__(self, dsn: str) -> None:
        from urllib.parse import urlparse

        import clickhouse_connect

        self.dsn = dsn
        self._password = urlparse(dsn).password or ""
        self._lock = threading.Lock()
        if dsn.startswith("chdb:"):
            Path(dsn.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
        try:
            self._client = clickhouse_connect.get_client(dsn=dsn)
        except Exception as e:  # clickhouse-connect raises many kinds; all mean "cannot reach"
            raise StoreError(self._scrub(f"cannot open ClickHouse: {type(e).__name__}: {e}")) from e
        self.native = NativeBlocks(self)

    def _scrub(self, text: str) -> str:
        """Errors end up in logs: never with the DSN's password."""
        return text.replace(self._password, "***") if self._password else text

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Rows:
        with self._lock:
            try:
                r = self._client.query(sql, parameters=parameters)
            except Exception as e:
                raise StoreError(self._scrub(str(e).strip().splitlines()[0][:500])) from e
        return Rows(list(r.column_names), [tuple(x) for x in r.result_rows])

    def command(self, sql: str) -> None:
        with self._lock:
            try:
                self._client.command(sql)
            except Exception as e:
                raise StoreError(self._scrub(str(e).strip().splitlines()[0][:500])) from e

    def insert(self, table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> None:
        if not row_count(data):
            return
        self.insert_native(table, columns, self.native.block(table, columns, data))

    def insert_native(self, table: str, columns: Sequence[str], body: bytes) -> None:
        """Insert a block already in ClickHouse's Native format (see `NativeBlocks`)."""
        if not body:
            return
        self._insert(table, lambda: self._client.raw_insert(
            table, list(columns), insert_block=body, fmt="Native", settings=INSERT_SETTINGS
        ))  # fmt: skip

    def insert_file(self, table: str, columns: Sequence[str], path: Path) -> None:
        """Insert the Native block in the file at `path`, read by the engine itself (chdb only:
        a server would look for the file on its own machine). clickhouse-connect's chdb path
        writes every block to a temporary file and does the same; a block another local process
        wrote is inserted without passing through this interpreter."""
        from clickhouse_connect.driver.binding import format_str, quote_identifier

        if not self.dsn.startswith("chdb:"):
            raise StoreError("inserts from a file need the embedded engine")
        if not isinstance(table, str) or not all(isinstance(c, str) for c in columns):
            raise StoreError(f"insert into {str(table)[:100]!r}: not a table and its columns")
        target = ".".join(map(quote_identifier, table.split(".")))
        names = ", ".join(map(quote_identifier, columns))  # `end` is a keyword
        settings = ", ".join(f"{k} = {v}" for k, v in INSERT_SETTINGS.items())
        sql = (f"INSERT INTO {target} ({names}) FROM INFILE {format_str(str(path))} "
               f"SETTINGS {settings} FORMAT Native")  # fmt: skip
        self._insert(table, lambda: self._client.command(sql))

    def _insert(self, table: str, run: Callable[[], Any]) -> None:
        """An insert under the engine's lock; its error without the DSN's password."""
        with self._lock:
            try:
                run()
            except Exception as e:
                raise StoreError(self._scrub(f"insert into {table}: {str(e).strip()[:500]}")) from e

    def close(self) -> None:
        with self._lock:
            self._client.close()


def row_count(data: Sequence[Sequence[Any]]) -> int:
    """Rows of column-oriented data: a batch that knows its count (`rows`) is not expanded."""
    rows = getattr(data, "rows", None)
    if isinstance(rows, int):
        return rows
    return len(data[0]) if data else 0


def _default(o: Any) -> Any:
    if isinstance(o, datetime | date):
        return o.isoformat()
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    raise TypeError(type(o).__name__)


class NativeBlocks:
    """Column-oriented rows → a block in ClickHouse's Native format, with clickhouse-connect's
    own serialisers, or the batch's own encoder (`native_block(columns, type names)`, e.g.
    `streams.columns.PointRows`) when it has one for the table's types. The column types are
    read from the table once."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._types: dict[str, dict[str, Any]] = {}
        self._names: dict[str, dict[str, str]] = {}

    def block(self, table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> bytes:
        from clickhouse_connect.driver.insert import InsertContext
        from clickhouse_connect.driver.transform import NativeTransform

        types = self._types.get(table)
        if types is None:
            types = self._types[table] = self._column_types(table)
        own = getattr(data, "native_block", None)
        if own is not None:
            names = self._names[table]
            body = own(columns, [names.get(c, "") for c in columns])
            if body is not None:
                return body
            data = list(data)  # other types than it encodes: the library's serialisers
        try:
            ctx = InsertContext(table, list(columns), [types[c] for c in columns], data,
                                column_oriented=True)  # fmt: skip
            body = b"".join(NativeTransform.build_insert(ctx))
            if ctx.insert_exception is not None:
                raise ctx.insert_exception
        except Exception as e:  # a value of the wrong type: the insert as a whole fails
            cause = e.__cause__ or e
            raise StoreError(f"insert into {table}: {e}: {str(cause)[:300]}") from e
        return body[body.index(b"\n") + 1 :]  # the INSERT statement is clickhouse-connect's

    def _column_types(self, table: str) -> dict[str, Any]:
        from clickhouse_connect.datatypes.registry import get_from_name

        db, _, name = table.rpartition(".")
        rows = self.store.query(
            "SELECT name, type FROM system.columns WHERE database = {db:String} AND "
            "table = {t:String}", {"db": db or "default", "t": name},
        ).rows  # fmt: skip
        if not rows:
            raise StoreError(f"insert into {table}: no such table")
        self._names[table] = dict(rows)
        return {n: _fast_low_card(get_from_name(t)) for n, t in rows}


def _lc_dictionary(column: Sequence[Any], _ctx: Any) -> tuple[list[Any], list[int]]:
    """clickhouse-connect's LowCardinality dictionary (values in first-appearance order, a key
    per row) built with C-speed builtins: its per-row Python loop was most of a block's cost
    (~1 us of the 1.7 us a `points` row took, 6 such columns)."""
    index = list(dict.fromkeys(column))
    pos = {v: i for i, v in enumerate(index)}
    return index, list(map(pos.__getitem__, column))


def _fast_low_card(t: Any) -> Any:
    """A private copy of a column type whose non-nullable LowCardinality parts (the column, or
    a Map's keys) build their dictionary with `_lc_dictionary`; the same bytes (tested). The
    library's shared type objects are left as they are."""
    import copy

    if getattr(t, "low_card", False) and not getattr(t, "nullable", False):
        t = copy.copy(t)
        t._build_lc_dictionary = _lc_dictionary
    elif getattr(t, "key_type", None) is not None:  # a Map: its keys may be LowCardinality
        key = _fast_low_card(t.key_type)
        if key is not t.key_type:
            t = copy.copy(t)
            t.key_type = key
    return t


def preload_insert_path() -> None:
    """Import now what clickhouse-connect imports on the first insert (pandas, to tell a
    DataFrame from columns: ~0.2 s holding the GIL), so a worker does not pay it while the
    stream waits for its first rows."""
    from clickhouse_connect.driver import options

    _ = options.pd


class RemoteStore:
    """Talks to the process that owns the embedded engine (see `serve_store`). Made without
    an address, it is connected later (`connect`): a worker builds its app meanwhile."""

    def __init__(self, url: str | None = None, token: str = "", spool: str | None = None) -> None:
        self._http: Any = None
        self._spool: Path | None = None
        self.native = NativeBlocks(self)
        if url is not None:
            self.connect(url, token, spool)

    def connect(self, url: str, token: str, spool: str | None = None) -> None:
        """`spool`: the server's directory for blocks handed over as files (engine.json's
        `spool`); without it blocks travel as request bodies."""
        import httpx

        self._http = httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"})
        self._spool = Path(spool) if spool else None

    def _call(
        self, op: str, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None
    ) -> Any:
        import httpx

        if self._http is None:
            raise StoreError("not connected yet to the stormwatch process owning the engine")
        content = body if isinstance(body, bytes) else orjson.dumps(body, default=_default)
        try:
            r = self._http.post(f"/{op}", content=content, headers=headers, timeout=60)
        except httpx.HTTPError as e:
            raise StoreError(f"the stormwatch process owning the engine did not answer: {e}") from e
        if r.status_code != 200:
            raise StoreError(r.text)
        return orjson.loads(r.content)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Rows:
        out = self._call("query", {"sql": sql, "parameters": parameters})
        return Rows(out["columns"], [tuple(r) for r in out["rows"]])

    def command(self, sql: str) -> None:
        self._call("command", {"sql": sql})

    def insert(self, table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> None:
        """The block is serialised here, in the worker: the engine's owner only hands the bytes
        to ClickHouse (its CPU is the one every worker's rows share)."""
        if not row_count(data):
            return
        self.insert_native(table, columns, self.native.block(table, columns, data))

    def insert_native(self, table: str, columns: Sequence[str], body: bytes) -> None:
        """The block goes as a file in the server's spool (one write here, read by the engine
        there), removed once the server answers; as the request body where there is no spool
        or the file cannot be written."""
        path = self._spool_block(body)
        if path is None:
            self._call("insert_native", body, {"x-table": table, "x-columns": ",".join(columns)})
            return
        try:
            self._call("insert_file", {"table": table, "columns": list(columns), "file": path.name})
        finally:
            path.unlink(missing_ok=True)

    def _spool_block(self, body: bytes) -> Path | None:
        """`body` written to a new file in the server's spool; None without a spool, or when
        the file cannot be written (then the block goes as the request body)."""
        if self._spool is None:
            return None
        path = self._spool / f"{secrets.token_hex(16)}.native"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(body)
        except OSError as e:
            path.unlink(missing_ok=True)
            log.warning("cannot spool a block in %s, sending it instead: %s", self._spool, e)
            return None
        return path

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


class FlakyStore:
    """Chaos testing: the first `failures` inserts into `table` raise, as an outage would."""

    def __init__(self, inner: Store, failures: int, table: str = "points") -> None:
        self.inner = inner
        self.left = failures
        self.table = table

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Rows:
        return self.inner.query(sql, parameters)

    def command(self, sql: str) -> None:
        self.inner.command(sql)

    def insert(self, table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> None:
        if self.left > 0 and table.rsplit(".", 1)[-1] == self.table:
            self.left -= 1
            raise StoreError(f"injected fault ({self.left} more to come)")
        self.inner.insert(table, columns, data)

    def insert_native(self, table: str, columns: Sequence[str], body: bytes) -> None:
        self.inner.insert_native(table, columns, body)

    def close(self) -> None:
        self.inner.close()


def with_faults(store: Store, settings: StormwatchSettings) -> Store:
    """Wrap the store in the faults the settings ask for (none by default)."""
    return (
        FlakyStore(store, settings.fault_sink_failures) if settings.fault_sink_failures else store
    )


def _engine_file(settings: StormwatchSettings) -> Path:
    return settings.chdb_path / "engine.json"


def _spool(settings: StormwatchSettings) -> Path:
    """The spool directory, made private (only the owner's user can put a file there), without
    the blocks a crash left: no request can name them (a new owner has a new token)."""
    spool = settings.chdb_path / "spool"
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    spool.chmod(0o700)
    for stale in spool.glob("*.native"):
        stale.unlink(missing_ok=True)
    return spool


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _started(pid: int) -> str | None:
    """When process `pid` started (boot id and clock ticks since boot, from /proc), so a pid
    taken by another process after a crash and a reboot is not mistaken for the engine's
    owner; None where /proc does not say."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}"  # field 22, starttime


def engine_owner(settings: StormwatchSettings) -> dict[str, Any] | None:
    """Where the live process serving this data directory's embedded engine listens, if any:
    the pid must be alive and, where /proc says, still the process that wrote the file."""
    try:
        info = json.loads(_engine_file(settings).read_text())
    except (OSError, ValueError):  # none, or its owner is writing it right now
        return None
    pid = info.get("pid") if isinstance(info, dict) else None
    if not isinstance(pid, int) or not _pid_alive(pid):
        return None
    started = info.get("started")
    return None if started and _started(pid) not in (None, started) else info


def wait_for_engine(
    settings: StormwatchSettings, timeout: float, waiting: Callable[[], None] = lambda: None,
    store: RemoteStore | None = None, every: float = 0.1,
) -> RemoteStore:  # fmt: skip
    """The store served by the process that owns the embedded engine (`store`, connected,
    if given), waiting up to `timeout` seconds for it, looking every `every` s: a worker
    started together with `stormwatch up` (by a process manager, or a benchmark) must neither
    fail nor open the engine itself meanwhile. `waiting` is called once if it has to wait."""
    deadline = time.monotonic() + timeout
    told = False
    while (info := engine_owner(settings)) is None:
        if time.monotonic() >= deadline:
            raise StoreError(
                f"no stormwatch process owns {settings.chdb_path} (waited {timeout:g} s): start "
                "`stormwatch up` first (chdb allows one process per data directory), or use a "
                "ClickHouse server DSN"
            )
        if not told:
            waiting()
            told = True
        time.sleep(every)
    store = store or RemoteStore()
    store.connect(info["url"], info["token"], info.get("spool"))
    return store


def open_store(settings: StormwatchSettings, *, own: bool = False) -> Store:
    """The store for these settings; `own=True` opens chdb here (the pipeline process)."""
    if not settings.embedded_clickhouse:
        return ClickHouseStore(settings.clickhouse_dsn)
    info = None if own else engine_owner(settings)
    if info is not None and info["pid"] != os.getpid():
        return RemoteStore(info["url"], info["token"], info.get("spool"))
    try:
        return ClickHouseStore(settings.clickhouse_dsn)
    except StoreError as e:
        raise StoreError(
            f"{e}\n(chdb allows one process per data directory: is another stormwatch using "
            f"{settings.chdb_path}?)"
        ) from e


def spooled(spool: Path, name: Any) -> Path:
    """The block file `name` in `spool`: a name as workers make them, a regular file (not a
    link): a request names no other file for the engine to read."""
    if not isinstance(name, str) or not SPOOL_FILE.fullmatch(name):
        raise StoreError("not a spooled block's name")
    path = spool / name
    try:
        mode = os.lstat(path).st_mode
    except OSError as e:
        raise StoreError(f"no spooled block {name}") from e
    if not stat.S_ISREG(mode):
        raise StoreError(f"spooled block {name} is not a regular file")
    return path


class _Handler(BaseHTTPRequestHandler):
    store: Store
    token: str
    spool: Path | None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        if not secrets.compare_digest(
            self.headers.get("authorization", ""), f"Bearer {self.token}"
        ):
            self._reply(401, b"unauthorized")
            return
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            if self.path == "/insert_native":
                columns = self.headers.get("x-columns", "").split(",")
                self.store.insert_native(self.headers.get("x-table", ""), columns, raw)
                self._reply(200, b"{}")
                return
            try:
                body = orjson.loads(raw)
                out = self._json_op(body)
            except (orjson.JSONDecodeError, KeyError, TypeError) as e:
                raise StoreError(f"bad {self.path[1:]} request: {e}") from e
            if out is None:
                self._reply(404, b"no such operation")
                return
        except StoreError as e:
            self._reply(400, str(e).encode())
            return
        self._reply(200, orjson.dumps(out, default=_default))

    def _json_op(self, body: Any) -> Any:
        """The answer to a JSON request (None: no such operation)."""
        if self.path == "/query":
            r = self.store.query(body["sql"], body.get("parameters"))
            return {"columns": r.columns, "rows": r.rows}
        if self.path == "/command":
            self.store.command(body["sql"])
        elif self.path == "/insert":
            self.store.insert(body["table"], body["columns"], body["data"])
        elif self.path == "/insert_file" and self.spool is not None:
            columns = body["columns"]
            if not isinstance(columns, list):
                raise TypeError("columns must be a list")
            path = spooled(self.spool, body["file"])
            self.store.insert_file(body["table"], columns, path)  # type: ignore[attr-defined]
        else:
            return None
        return {}

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class StoreServer:
    """Serves this process's store to other local stormwatch commands until `close()`."""

    def __init__(self, store: Store, settings: StormwatchSettings) -> None:
        token = secrets.token_urlsafe(24)
        files = settings.embedded_clickhouse and callable(getattr(store, "insert_file", None))
        spool = _spool(settings) if files else None  # a server's engine reads no file of ours
        handler = type("Handler", (_Handler,), {"store": store, "token": token, "spool": spool})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", settings.query_port), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._info = _engine_file(settings)
        url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._info.parent.mkdir(parents=True, exist_ok=True)
        info = {"pid": os.getpid(), "started": _started(os.getpid()), "url": url, "token": token}
        if spool is not None:
            info["spool"] = str(spool)
        fd = os.open(self._info, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._info.unlink(missing_ok=True)


def create_schema(store: Store, settings: StormwatchSettings) -> None:
    """Create the database and tables if missing (safe to call on every start)."""
    from stormwatch.schema import checkpoints_unthinned, ddl, merge_tuning

    for stmt in ddl(settings.database, settings.retention_days):
        store.command(stmt)
    known = store.query("SELECT name FROM system.merge_tree_settings").rows
    for stmt in merge_tuning(settings.database, {r[0] for r in known}):
        store.command(stmt)
    key = store.query(
        "SELECT sorting_key FROM system.tables WHERE database = {db:String} "
        "AND name = 'checkpoints'",
        {"db": settings.database},
    ).rows
    advice = checkpoints_unthinned(settings.database, key[0][0]) if key else None
    if advice:
        log.warning("%s", advice)
