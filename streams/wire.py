"""The keyed points topic's message: a batch of observations for one partition, with the
metadata of every series it mentions (so any worker can pick up any partition)."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from streams.series import Obs, Series


def encode_points(obs: Sequence[Obs], meta: dict[int, Series]) -> bytes:
    sids = {o.series_id for o in obs}
    return orjson.dumps(
        {
            "s": {str(sid): [*meta[sid][:3], list(map(list, meta[sid].labels))] for sid in sids},
            "o": [list(o) for o in obs],
        }
    )


def decode_points(raw: bytes) -> tuple[list[Obs], dict[int, Series]]:
    doc = orjson.loads(raw)
    meta = {
        int(sid): Series(k, n, s, tuple((a, b) for a, b in labels))
        for sid, (k, n, s, labels) in doc["s"].items()
    }
    return [Obs(*o) for o in doc["o"]], meta


def partition_of(series_id: int, partitions: int) -> int:
    """Which points partition a series lives on: one series always meets one detector."""
    return series_id % partitions
