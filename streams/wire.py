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


def encode_feedback(series_id: int, label: str, episode_id: int = 0) -> bytes:
    """A person's label for a series, sent on the series' own points partition so the worker
    that owns the series applies it, in order with its points."""
    return orjson.dumps({"f": {"series_id": series_id, "label": label, "episode_id": episode_id}})


def decode_feedback(raw: bytes) -> dict[str, object] | None:
    """The feedback a points message carries, or None for a batch of points."""
    if not raw.startswith(b'{"f"'):
        return None
    f = orjson.loads(raw)["f"]
    return {"series_id": int(f["series_id"]), "label": str(f["label"]),
            "episode_id": int(f.get("episode_id", 0))}  # fmt: skip
