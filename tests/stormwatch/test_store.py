"""The store: one interface over the real engine, served to other local processes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from stormwatch.store import RemoteStore, Store, StoreError, StoreServer, wait_for_engine
from streams.app import HEALTH_COLUMNS


def test_schema_is_idempotent_and_inserts_are_column_oriented(
    chdb_store: Store, db_settings
) -> None:  # type: ignore[no-untyped-def]
    import time

    from stormwatch.store import create_schema

    now_ms = int(time.time() * 1000)
    create_schema(chdb_store, db_settings)  # second time: no error
    db = db_settings.database
    chdb_store.insert(
        f"{db}.health",
        HEALTH_COLUMNS,
        [[now_ms, now_ms + 1000], ["w", "w"], ["s", "s"], ["m", "m"], [1.0, 2.0]],
    )
    assert chdb_store.query(f"SELECT sum(value) FROM {db}.health").rows == [(3.0,)]


def test_points_merge_wider_where_the_engine_can_and_nothing_breaks_where_it_cannot(
    chdb_store: Store, db_settings
) -> None:  # type: ignore[no-untyped-def]
    from stormwatch.schema import MERGE_SETTINGS, merge_tuning
    from stormwatch.store import create_schema

    db = db_settings.database
    chdb_store.command(f"ALTER TABLE {db}.points RESET SETTING merge_selector_base")
    create_schema(chdb_store, db_settings)  # brings an existing table up to date
    engine = chdb_store.query(
        f"SELECT engine_full FROM system.tables WHERE database = '{db}' AND name = 'points'"
    ).rows[0][0]
    base = MERGE_SETTINGS["points"]["merge_selector_base"]
    assert f"merge_selector_base = {base}" in engine
    # an engine that does not know the setting (an older server) gets no statement for it
    assert merge_tuning(db, set()) == []
    assert merge_tuning(db, {"merge_selector_base"}) == [
        f"ALTER TABLE {db}.points MODIFY SETTING merge_selector_base = {base}"
    ]


def test_a_checkpoints_table_from_before_the_hourly_roll_up_is_named_with_how_to_thin_it(
    chdb_store: Store, make_settings, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    from stormwatch.store import create_schema

    old, new = make_settings(), make_settings()
    chdb_store.command(f"CREATE DATABASE IF NOT EXISTS {old.database}")
    chdb_store.command(  # the table as releases before the roll-up created it
        f"CREATE TABLE {old.database}.checkpoints (ts DateTime64(3, 'UTC'), "
        "topic LowCardinality(String), partition UInt16, series_id UInt64, state String) "
        "ENGINE = MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (topic, partition, series_id, ts) "
        "TTL toDateTime(ts) + INTERVAL 7 DAY"
    )
    with caplog.at_level("WARNING", logger="stormwatch.store"):
        create_schema(chdb_store, old)  # leaves the table, says what to do
        create_schema(chdb_store, new)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1
    assert f"RENAME TABLE {old.database}.checkpoints TO {old.database}.checkpoints_old" in warned[0]


def test_store_server_answers_another_process_with_token(chdb_store: Store, db_settings) -> None:  # type: ignore[no-untyped-def]
    server = StoreServer(chdb_store, db_settings)
    try:
        info = json.loads((db_settings.chdb_path / "engine.json").read_text())
        assert (db_settings.chdb_path / "engine.json").stat().st_mode & 0o777 == 0o600
        code = (
            "import sys; from stormwatch.store import RemoteStore;"
            f"r = RemoteStore({info['url']!r}, {info['token']!r});"
            f"print(r.query('SELECT count() FROM {db_settings.database}.points').rows[0][0]);"
            f"bad = RemoteStore({info['url']!r}, 'wrong')\n"
            "try:\n    bad.query('SELECT 1')\nexcept Exception as e:\n    print('refused', e)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        assert out.splitlines()[0] == "0"
        assert "refused unauthorized" in out
    finally:
        server.close()
    assert not (db_settings.chdb_path / "engine.json").exists()


def test_an_engine_file_left_by_a_crash_is_not_taken_for_a_live_owner(
    chdb_store: Store, db_settings
) -> None:  # type: ignore[no-untyped-def]
    """After a crash (the file stays) and a reboot, its pid may be any process's: commands
    would talk to a server that is not there instead of opening the engine themselves."""
    from stormwatch.store import engine_owner

    server = StoreServer(chdb_store, db_settings)
    path = db_settings.chdb_path / "engine.json"
    try:
        info = json.loads(path.read_text())
        assert engine_owner(db_settings) == info  # the live server that wrote it
    finally:
        server.close()
    # the same pid (alive: this process), another process's start: a reused pid
    path.write_text(json.dumps(info | {"started": info["started"].rsplit(":", 1)[0] + ":1"}))
    assert engine_owner(db_settings) is None
    path.write_text(json.dumps(info | {"pid": 2**22 + 1}))  # a pid no process has
    assert engine_owner(db_settings) is None
    path.unlink()


def test_a_worker_inserts_through_the_server_as_native_blocks(
    chdb_store: Store, db_settings
) -> None:  # type: ignore[no-untyped-def]
    """Rows sent by another process land as sent (NULLs, maps, times); a bad value and a bad
    token are refused with a reason, and nothing of them is stored."""
    import time

    from streams.columns import POINT_COLUMNS

    server = StoreServer(chdb_store, db_settings)
    db, now_ms = db_settings.database, int(time.time() * 1000)
    row = [7, now_ms, 1.5, 1, 0.2, None, None, None, 0, "metric", "cpu", "api",
           {"host": "a"}, "fallback", "3.1"]  # fmt: skip
    bad = [*row[:2], "not a number", *row[3:]]
    cols = {"good": [[v] for v in row], "bad": [[v] for v in bad]}
    try:
        info = json.loads((db_settings.chdb_path / "engine.json").read_text())
        code = (
            "import json, sys; from stormwatch.store import RemoteStore, StoreError;"
            f"cols = json.loads({json.dumps(json.dumps(cols))});"
            f"r = RemoteStore({info['url']!r}, {info['token']!r});"
            f"r.insert('{db}.points', {POINT_COLUMNS!r}, cols['good'])\n"
            "for store, data in ((r, cols['bad']),"
            f" (RemoteStore({info['url']!r}, 'wrong'), cols['good'])):\n"
            f"    try:\n        store.insert('{db}.points', {POINT_COLUMNS!r}, data)\n"
            "    except StoreError as e:\n        print('refused', str(e)[:60])"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = proc.stdout
    finally:
        server.close()
    assert [line.split()[1] for line in out.splitlines()] == ["insert", "unauthorized"], out
    got = chdb_store.query(
        f"SELECT series_id, toUnixTimestamp64Milli(ts), value, expected, labels, detector "
        f"FROM {db}.points"
    ).rows
    assert got == [(7, now_ms, 1.5, None, {"host": "a"}, "fallback")]


def test_a_worker_hands_its_blocks_over_as_files_and_no_other_file_is_read(
    chdb_store: Store, db_settings
) -> None:  # type: ignore[no-untyped-def]
    """With the server's spool, a worker's blocks go as files the engine reads (a keyword
    column, `end`, included), each removed once stored. A request naming any other file (a
    path out of the spool, a link in it) is refused and nothing of it is stored; blocks a
    crash left are cleared when the next owner starts."""
    import os
    import time

    from streams.app import EPISODE_COLUMNS
    from streams.columns import POINT_COLUMNS

    spool = db_settings.chdb_path / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    (spool / f"{'0' * 32}.native").write_bytes(b"left by a crash")
    server = StoreServer(chdb_store, db_settings)
    db, now_ms = db_settings.database, int(time.time() * 1000)
    point = [7, now_ms, 1.5, 1, 0.2, None, None, None, 0, "metric", "cpu", "api",
             {"host": "a"}, "fallback", "3.1"]  # fmt: skip
    episode = [1, 7, now_ms - 1000, now_ms, 1, 0.9, 1.5, None, None, None, "minor",
               "metric", "cpu", "api", {"host": "a"}, ["value"], "why", "robust", "3.3", 2,
               now_ms]  # fmt: skip
    try:
        info = json.loads((db_settings.chdb_path / "engine.json").read_text())
        assert info["spool"] == str(spool)
        assert os.listdir(spool) == [] and spool.stat().st_mode & 0o777 == 0o700
        os.symlink(db_settings.chdb_path / "engine.json", spool / f"{'1' * 32}.native")
        code = (
            "import json; from stormwatch.store import RemoteStore, StoreError\n"
            f"r = RemoteStore({info['url']!r}, {info['token']!r}, {info['spool']!r})\n"
            "ops = []; call = r._call\n"
            "r._call = lambda op, *a, **k: ops.append(op) or call(op, *a, **k)\n"
            f"r.insert('{db}.points', {POINT_COLUMNS!r}, [[v] for v in {point!r}])\n"
            f"r.insert('{db}.anomalies', {EPISODE_COLUMNS!r}, [[v] for v in {episode!r}])\n"
            "print(json.dumps(ops))\n"
            f"for name in ('../engine.json', '{'1' * 32}.native', '{'2' * 32}.native'):\n"
            "    try:\n"
            f"        call('insert_file', {{'table': '{db}.points', 'columns': ['series_id'],"
            " 'file': name})\n"
            "    except StoreError as e:\n        print('refused', e)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        left = sorted(os.listdir(spool))
    finally:
        server.close()
    lines = proc.stdout.splitlines()
    inserts = [op for op in json.loads(lines[0]) if op.startswith("insert")]
    assert inserts == ["insert_file", "insert_file"]  # (the blocks' column types: queries)
    assert lines[1:] == [
        "refused not a spooled block's name",
        f"refused spooled block {'1' * 32}.native is not a regular file",
        f"refused no spooled block {'2' * 32}.native",
    ]
    assert left == [f"{'1' * 32}.native"]  # the link made here; every block was removed
    got = chdb_store.query(
        f"SELECT series_id, toUnixTimestamp64Milli(ts), value, labels FROM {db}.points"
    ).rows
    assert got == [(7, now_ms, 1.5, {"host": "a"})]
    assert chdb_store.query(
        f"SELECT episode_id, toUnixTimestamp64Milli(end), signals, points FROM {db}.anomalies"
    ).rows == [(1, now_ms, ["value"], 2)]


def _points_types(store: Store, db: str) -> dict[str, str]:
    return dict(store.query(
        f"SELECT name, type FROM system.columns WHERE database = '{db}' AND table = 'points'"
    ).rows)  # fmt: skip


def _library_block(table: str, types: dict[str, str], cols: list[list], one_block: bool = False
                   ) -> bytes:  # type: ignore[type-arg]  # fmt: skip
    """clickhouse-connect's own Native block for these points columns (after its INSERT line)."""
    from clickhouse_connect.datatypes.registry import get_from_name
    from clickhouse_connect.driver.insert import InsertContext
    from clickhouse_connect.driver.transform import NativeTransform

    from streams.columns import POINT_COLUMNS

    ctx = InsertContext(table, POINT_COLUMNS, [get_from_name(types[c]) for c in POINT_COLUMNS],
                        cols, column_oriented=True,
                        block_size=len(cols[0]) if one_block else None)  # fmt: skip
    body = b"".join(NativeTransform.build_insert(ctx))
    return body[body.index(b"\n") + 1 :]


def test_native_blocks_are_byte_for_byte_the_librarys(chdb_store: Store, db_settings) -> None:  # type: ignore[no-untyped-def]
    """The LowCardinality dictionaries are built faster than clickhouse-connect does, into the
    same bytes: repeats, NULLs, empty and varied label maps, one-row and large blocks; and the
    rows read back as written."""
    import random
    import time

    from streams.columns import POINT_COLUMNS

    db, now_ms, rng = db_settings.database, int(time.time() * 1000), random.Random(4)
    table = f"{db}.points"
    types = _points_types(chdb_store, db)

    for n in (1, 7, 30_000):
        series = [(i, f"name{i % 3}", f"svc{i % 5}", {f"k{j}": f"v{i}" for j in range(i % 3)})
                  for i in range(rng.randint(1, 50))]  # fmt: skip
        rows = []
        for k in range(n):
            sid, name, svc, labels = rng.choice(series)
            band = None if rng.random() < 0.2 else rng.random()
            rows.append([sid, now_ms + k, rng.random(), 1, rng.random(), band, band, band,
                         k % 2, "metric", name, svc, labels, rng.choice(["robust", "fallback"]),
                         "3.1"])  # fmt: skip
        cols = [list(c) for c in zip(*rows, strict=True)]
        body = chdb_store.native.block(table, POINT_COLUMNS, cols)  # type: ignore[attr-defined]
        assert body == _library_block(table, types, cols)
        chdb_store.insert_native(table, POINT_COLUMNS, body)
    got = chdb_store.query(f"SELECT count(), uniqExact(labels), countIf(expected IS NULL) "
                           f"FROM {table}").rows[0]  # fmt: skip
    assert got[0] == 30_008 and got[1] > 1 and got[2] > 0


def test_point_rows_encode_as_the_library_does_and_read_back(
    chdb_store: Store, db_settings
) -> None:  # type: ignore[no-untyped-def]
    """The detect stage's batches (numbers in arrays, a series' columns once per run) encode
    to the bytes clickhouse-connect writes for the same rows as lists: runs long and short,
    the same series in several runs, empty and varied label maps, NULL bands (NaN, inf),
    rows where the fallback decided; and ClickHouse reads back what the lists say."""
    import random
    import time

    import numpy as np

    from streams.columns import POINT_COLUMNS, PointRows

    db, now_ms, rng = db_settings.database, int(time.time() * 1000), random.Random(11)
    table = f"{db}.points"
    types = _points_types(chdb_store, db)

    written = 0
    for n_series, longest, label_keys in ((1, 1, 0), (3, 40, 0), (300, 30, 3), (40, 5, 2)):
        series = [(2**62 + i, "metric", f"name{i % 7}", f"svc{i % 4}",
                   {f"k{j}": f"v{i}é" for j in range(rng.randint(0, label_keys))},
                   "robust", "3.1") for i in range(n_series)]  # fmt: skip
        runs = [(rng.choice(series), rng.randint(1, longest)) for _ in range(n_series * 2)]
        n = sum(k for _, k in runs)
        band = np.array([[rng.random(), rng.random() - 1, rng.random() + 1] for _ in range(n)])
        band[rng.sample(range(n), n // 5)] = [np.nan, -np.inf, np.inf]
        rows = PointRows(
            runs, np.arange(now_ms + written, now_ms + written + n, dtype=np.int64),
            np.array([rng.gauss(0, 1e6) for _ in range(n)]), np.ones(n, np.int64),
            np.array([rng.random() for _ in range(n)]), band,
            np.array([rng.random() < 0.1 for _ in range(n)]),
            np.array([rng.random() < 0.3 for _ in range(n)]),
        )  # fmt: skip
        written += n
        cols = list(rows)
        assert cols[13].count("fallback") == int(rows.fell_back.sum())
        assert cols[5].count(None) >= n // 5
        body = rows.native_block(POINT_COLUMNS, [types[c] for c in POINT_COLUMNS])
        assert body == _library_block(table, types, cols, one_block=True)
        chdb_store.insert(table, POINT_COLUMNS, rows)
        got = chdb_store.query(
            f"SELECT series_id, toUnixTimestamp64Milli(ts), value, expected, upper, is_anomaly, "
            f"labels, detector FROM {table} "
            f"WHERE ts >= fromUnixTimestamp64Milli({now_ms + written - n}) ORDER BY ts"
        ).rows  # fmt: skip
        assert got == [tuple(r) for r in zip(cols[0], cols[1], cols[2], cols[5], cols[7], cols[8],
                                             cols[12], cols[13], strict=True)]  # fmt: skip
    # a table with other types than the batch encodes: the library's serialisers, same rows
    other = [types[c] for c in POINT_COLUMNS]
    other[4] = "Float64"
    assert rows.native_block(POINT_COLUMNS, other) is None


def test_a_worker_waits_for_up_to_serve_the_engine_and_never_opens_it(
    chdb_store: Store, db_settings
) -> None:  # type: ignore[no-untyped-def]
    """A worker started together with `up` (a process manager, compose) waits for the engine's
    owner instead of failing, and gives up with a clear error when none comes."""
    with pytest.raises(StoreError, match=r"no stormwatch process owns .*waited 0.3 s"):
        wait_for_engine(db_settings, 0.3)
    told: list[bool] = []
    servers: list[StoreServer] = []
    timer = threading.Timer(0.5, lambda: servers.append(StoreServer(chdb_store, db_settings)))
    timer.start()
    built_first = RemoteStore()  # the worker's app holds it before the engine is served
    with pytest.raises(StoreError, match="not connected yet"):
        built_first.query("SELECT 1")
    try:
        remote = wait_for_engine(db_settings, 30, lambda: told.append(True), built_first)
        assert remote is built_first and told == [True]
        db = db_settings.database
        assert remote.query(f"SELECT count() FROM {db}.points").rows == [(0,)]
    finally:
        timer.join()
        for s in servers:
            s.close()
