"""Series identity and the observation record that travels on the keyed points topic.

A series id is a stable 64-bit hash of kind, name, service and sorted labels: the same
series gets the same id in every process and release, so it can key Kafka and ClickHouse.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

# How a window combines a series' observations; metrics and queue gauges pass through.
AGG_LAST, AGG_MEAN, AGG_RATE = 0, 1, 2


class Series(NamedTuple):
    kind: str
    name: str
    service: str
    labels: tuple[tuple[str, str], ...]  # sorted

    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


class Obs(NamedTuple):
    """One observation of a series: `agg` says how a window combines it."""

    series_id: int
    ts_ms: int
    value: float
    agg: int


def series_id(s: Series) -> int:
    key = "\x1f".join([s.kind, s.name, s.service, *(f"{k}={v}" for k, v in s.labels)])
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 1


def make_series(kind: str, name: str, service: str = "", **labels: str) -> Series:
    return Series(kind, name, service, tuple(sorted(labels.items())))
