"""How often the embedded broker loses an acknowledged message when several producers write one
partition at the same moment (docs/reliability.md, "Known issue").

Each round creates a topic, lets `--producers` kafka-python producers (acks=all) send one
message each to its partition 0 at the same instant, then reads the partition back from its
start and counts what is there. `--opened`: one producer writes (and is acknowledged) first,
then the others send at once, as `benchmarks.ceiling.produce_stream` now opens the bench's
partitions; it still loses (2026-11-28: 2 of 2,000 rounds without, 1 of 2,000 with), so the
race is between connections, not about a partition's first write. Messages are counted by
reading them, not by the partition's end offset: Tansu answers a multi-record batch's end
offset as its first offset + 1.

    python -m benchmarks.first_writes --rounds 2000
    python -m benchmarks.first_writes --rounds 2000 --opened
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from stormwatch.broker import LocalBroker, free_port


def read_all(consumer: Any, topic: str, want: int) -> list[bytes]:
    """Every message of `topic`'s partition 0 from its first retained, stopping at `want`."""
    from kafka import TopicPartition

    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got: list[bytes] = []
    for m in consumer:
        got.append(m.value)
        if len(got) >= want:
            break
    return got


def run_rounds(rounds: int, producers: int, opened: bool, per_broker: int = 200) -> dict[str, Any]:
    """Rounds on fresh topics, a fresh broker every `per_broker` rounds (its metadata grows with
    each topic, and rounds slow down); returns the counts and the rounds that lost."""
    lost: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for first in range(0, rounds, per_broker):
        with LocalBroker(free_port()) as broker, clients(broker.bootstrap, producers) as (ps, c):
            for r in range(first, min(rounds, first + per_broker)):
                missing = one_round(broker.bootstrap, f"first-writes-{r}", ps, c, opened)
                if missing:
                    lost.append({"round": r, "missing": missing})
        print(f"{min(rounds, first + per_broker)}/{rounds} rounds, {len(lost)} lost",
              file=sys.stderr)  # fmt: skip
    return {
        "bench": "first_writes",
        "rounds": rounds,
        "producers": producers,
        "opened": opened,
        "rounds_lost": len(lost),
        "lost": lost[:20],
        "seconds": round(time.perf_counter() - t0, 1),
    }


@contextmanager
def clients(bootstrap: str, producers: int) -> Iterator[tuple[list[Any], Any]]:
    """`producers` kafka-python producers (acks=all, no linger) and a consumer, closed after."""
    from kafka import KafkaConsumer, KafkaProducer

    prods = [KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
             for _ in range(producers)]  # fmt: skip
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=2000)  # fmt: skip
    try:
        yield prods, consumer
    finally:
        consumer.close()
        for p in prods:
            p.close()


def one_round(
    bootstrap: str, topic: str, prods: list[Any], consumer: Any, opened: bool
) -> list[str]:
    """Create `topic`, send one message from each producer at once; the messages not read back."""
    from ingest.topics import ensure_topics

    ensure_topics(bootstrap, {topic: 1})
    for p in prods:
        p.partitions_for(topic)  # metadata first: the sends below go at once
    sent = [f"{topic}-{i}".encode() for i in range(len(prods))]
    if opened:
        prods[0].send(topic, b"open", partition=0).get(10)
    start = threading.Barrier(len(prods))

    def send(prod: Any, value: bytes) -> None:
        start.wait()
        prod.send(topic, value, partition=0).get(10)

    threads = [threading.Thread(target=send, args=pv) for pv in zip(prods, sent, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    want = sent + ([b"open"] if opened else [])
    got = read_all(consumer, topic, len(want))
    return sorted(m.decode() for m in set(want) - set(got))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1000)
    p.add_argument("--producers", type=int, default=4)
    p.add_argument("--opened", action="store_true",
                   help="one producer writes first, then all of them at once")  # fmt: skip
    a = p.parse_args(argv)
    print(orjson.dumps(run_rounds(a.rounds, a.producers, a.opened)).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
