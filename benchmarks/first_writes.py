"""How often the embedded broker loses an acknowledged message when several producers make the
first writes to a fresh partition at once (docs/reliability.md, "Known issue").

Each round creates a topic, lets `--producers` kafka-python producers (acks=all) send one
message each to its partition 0 at the same instant, then reads the partition back from its
start and counts what is there. `--opened`: one producer writes (and is acknowledged) first,
then the others send at once, as `benchmarks.ceiling.produce_stream` now opens the
bench's partitions. Messages are counted by reading them, not by the partition's end offset:
Tansu answers a multi-record batch's end offset as its first offset + 1.

    python -m benchmarks.first_writes --rounds 2000
    python -m benchmarks.first_writes --rounds 2000 --opened
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
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


def run_rounds(rounds: int, producers: int, opened: bool) -> dict[str, Any]:
    """Rounds in one broker, each on a fresh topic; returns the counts and the rounds that lost."""
    from kafka import KafkaConsumer, KafkaProducer

    from ingest.topics import ensure_topics

    lost: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with LocalBroker(free_port()) as broker:
        prods = [KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=0)
                 for _ in range(producers)]  # fmt: skip
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                                 consumer_timeout_ms=2000)  # fmt: skip
        try:
            for r in range(rounds):
                topic = f"first-writes-{r}"
                ensure_topics(broker.bootstrap, {topic: 1})
                for p in prods:
                    p.partitions_for(topic)  # metadata first: the sends below go at once
                sent = [f"{r}-{i}".encode() for i in range(producers)]
                if opened:
                    prods[0].send(topic, b"open", partition=0).get(10)
                    sent.append(b"open")
                start = threading.Barrier(producers)

                def send(prod: Any, topic: str, value: bytes, start: threading.Barrier) -> None:
                    start.wait()
                    prod.send(topic, value, partition=0).get(10)

                threads = [threading.Thread(target=send, args=(prods[i], topic, sent[i], start))
                           for i in range(producers)]  # fmt: skip
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                got = read_all(consumer, topic, len(sent))
                if sorted(got) != sorted(sent):
                    missing = sorted(set(sent) - set(got))
                    lost.append({"round": r, "missing": [m.decode() for m in missing]})
                if (r + 1) % 200 == 0:
                    print(f"{r + 1}/{rounds} rounds, {len(lost)} lost", file=sys.stderr)
        finally:
            consumer.close()
            for p in prods:
                p.close()
    return {
        "bench": "first_writes",
        "rounds": rounds,
        "producers": producers,
        "opened": opened,
        "rounds_lost": len(lost),
        "lost": lost[:20],
        "seconds": round(time.perf_counter() - t0, 1),
    }


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
