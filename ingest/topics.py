"""Topic admin: create the pipeline's topics if they are missing; keys that land on a chosen
partition."""

from __future__ import annotations

import time

from ingest import IngestError


def ensure_topics(bootstrap: str, names: dict[str, int], timeout_s: float = 30.0) -> None:
    """Create each topic (name → partitions) that does not exist yet."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
            break
        except KafkaError as e:
            if time.monotonic() > deadline:
                raise IngestError(f"cannot reach Kafka at {bootstrap}: {e}") from e
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(n, p, 1) for n, p in names.items() if n not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def partition_keys(partitions: int, prefix: str = "p") -> list[bytes]:
    """Key i lands on partition i under Kafka's default partitioner (murmur2, as kafka-python
    and the Java client hash a key): a sender that can only key its messages still places
    them on the partition it wants."""
    from kafka.partitioner.default import murmur2

    keys: dict[int, bytes] = {}
    i = 0
    while len(keys) < partitions:
        key = f"{prefix}{i}".encode()
        keys.setdefault((murmur2(key) & 0x7FFFFFFF) % partitions, key)
        i += 1
    return [keys[p] for p in range(partitions)]
