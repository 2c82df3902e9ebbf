"""faust commits a partition only up to its oldest message in flight, on the real broker: our
stages ack out of order (a raw batch waits for its rows, a window for its close), and faust
alone committed past the unacked head of a partition (with no commit yet, or one message at
the head), so a crash lost it."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ingest.topics import ensure_topics
from streams.tuning import ordered_commits
from tests.conftest import unique


def committed(bootstrap: str, group: str, topic: str) -> int | None:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return c.committed(TopicPartition(topic, 0))
    finally:
        c.close()


def produce(bootstrap: str, topic: str, n: int) -> None:
    p = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(n):
        p.send(topic, b"v%d" % i, partition=0)
    p.flush()
    p.close()


async def run(bootstrap: str, topic: str, group: str) -> list[int | None]:
    ordered_commits()
    app = faust.App(group, broker=f"kafka://{bootstrap}", store="memory://",
                    web_enabled=False, topic_allow_declare=False, stream_wait_empty=False,
                    consumer_auto_offset_reset="earliest", broker_commit_every=10**9,
                    broker_commit_interval=10**6, broker_session_timeout=3,
                    broker_heartbeat_interval=1)  # fmt: skip
    taken: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue()

    @app.agent(app.topic(topic, value_serializer="raw"))
    async def hold(stream: faust.StreamT) -> None:
        stream = stream.noack()
        async for ev in stream.events():
            await taken.put((stream, ev))

    async def take(n: int) -> list[tuple[Any, Any]]:
        return [await asyncio.wait_for(taken.get(), 60) for _ in range(n)]

    async def commit() -> int | None:
        await app.consumer.commit()
        return await asyncio.to_thread(committed, bootstrap, group, topic)

    seen: list[int | None] = []
    await app.start()
    try:
        produce(bootstrap, topic, 5)
        (s0, head), *rest = await take(5)  # a new group: nothing committed yet
        for s, ev in rest:
            await s.ack(ev)
        seen.append(await commit())
        await s0.ack(head)
        seen.append(await commit())
        produce(bootstrap, topic, 5)
        (s0, head), *rest = await take(5)  # one message at the head of a committed partition
        for s, ev in rest:
            await s.ack(ev)
        seen.append(await commit())
        await s0.ack(head)
        seen.append(await commit())
    finally:
        await app.stop()
    return seen


def test_no_commit_passes_a_message_still_in_flight(broker) -> None:  # type: ignore[no-untyped-def]
    topic, group = unique("commits"), unique("commits-group")
    ensure_topics(broker.bootstrap, {topic: 1})
    seen = asyncio.run(run(broker.bootstrap, topic, group))
    assert seen == [None, 5, 5, 10]
