"""Shared fixtures: one real Tansu broker and one real chdb engine per test session.

chdb opens one data path per process, so every test shares the session engine and gets a
database of its own; every test that talks to Kafka gets topics of its own on the shared
broker. Pipelines under test run as subprocesses with their own data directory and are
queried through the store server they run (`open_store` finds it).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stormwatch.broker import LocalBroker, free_port
from stormwatch.settings import StormwatchSettings, Topics, load_settings
from stormwatch.store import ClickHouseStore, Store, create_schema

_counter = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with LocalBroker(free_port(), log) as b:
        yield b


@pytest.fixture(scope="session")
def chdb_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path = tmp_path_factory.mktemp("chdb")
    store = ClickHouseStore(f"chdb://{path}")
    yield store
    store.close()


def unique(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"


def read_partitions(bootstrap: str, topic: str, partitions: int) -> dict[int, list[list[dict]]]:
    """Every message of the topic, decoded, by partition (in each partition's order)."""
    import orjson
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    ends = c.end_offsets(tps)
    out: dict[int, list[list[dict]]] = {p: [] for p in range(partitions)}
    while any(c.position(tp) < ends[tp] for tp in tps):
        for tp, recs in c.poll(timeout_ms=1000).items():
            out[tp.partition] += [orjson.loads(r.value) for r in recs]
    c.close()
    return out


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., StormwatchSettings]:
    """Settings with a database, topics and data dir of their own; kwargs override."""

    def make(**kw: object) -> StormwatchSettings:
        name = unique("t")
        topics = Topics(
            raw=f"{name}.raw", otlp_metrics=f"{name}.otlp_metrics", otlp_spans=f"{name}.otlp_spans",
            points=f"{name}.points", dlq=f"{name}.dlq", anomalies=f"{name}.anomalies",
            partitions=4,
        )  # fmt: skip
        base: dict[str, object] = {
            "database": name, "topics": topics, "app_id": name, "data_dir": tmp_path / name,
        }  # fmt: skip
        base.update(kw)
        return load_settings(**base)

    return make


@pytest.fixture
def db_settings(
    make_settings: Callable[..., StormwatchSettings], chdb_store: Store
) -> StormwatchSettings:
    """Settings whose database exists, with every table, in the session engine."""
    s = make_settings()
    create_schema(chdb_store, s)
    return s
