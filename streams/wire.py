"""The keyed points topic's message: a batch of observations for one partition, with the
metadata of every series it mentions (so any worker can pick up any partition).

A points message is two JSON lines: the columns `{"c":[[ids],[ts_ms],[values],[aggs]]}`,
then `{"<id>":[kind,name,service,[[k,v],...]],...}` for each series mentioned. A decoder that
knows every id of the first line never parses the second.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import orjson

from streams.series import Obs, Series

_OBS = partial(tuple.__new__, Obs)  # Obs from a 4-tuple without a Python-level __new__
_CACHE_MAX = 500_000  # series: the cardinality guard's default total


def _meta_fragment(sid: int, s: Series) -> bytes:
    return b'"%d":%s' % (sid, orjson.dumps([s.kind, s.name, s.service, s.labels]))


class PointsEncoder:
    """Encodes points messages; each series' metadata is encoded once and reused as bytes."""

    def __init__(self, meta: Mapping[int, Series]) -> None:
        self.meta = meta  # series id → Series, e.g. the normalizer's (read, never written)
        self._fragments: dict[int, bytes] = {}

    def encode(self, obs: Sequence[Obs]) -> bytes:
        return self.encode_columns(list(zip(*obs, strict=True)) if obs else [(), (), (), ()])

    def encode_columns(self, cols: Sequence[Sequence[Any]]) -> bytes:
        """A message from columns: ids, ts ms, values, aggs."""
        ids = set(cols[0])
        frags = self._fragments
        new = ids.difference(frags)
        if new:
            if len(frags) + len(new) > _CACHE_MAX:
                frags.clear()
                new = ids
            meta = self.meta
            frags.update((sid, _meta_fragment(sid, meta[sid])) for sid in new)
        meta_line = b",".join(map(frags.__getitem__, ids))
        return b'{"c":%s}\n{%s}' % (orjson.dumps(cols), meta_line)


def encode_points(obs: Sequence[Obs], meta: Mapping[int, Series]) -> bytes:
    """One points message (no cache kept: a long-lived caller holds a `PointsEncoder`)."""
    return PointsEncoder(meta).encode(obs)


class Points:
    """A points message's observations as the columns they travel in: the detect stage
    takes a batch of pass-through points as arrays, without a tuple per point. Iterating
    gives the `Obs` of each point, in order."""

    __slots__ = ("aggs", "sids", "ts", "values")

    def __init__(self, sids: list[int], ts: list[int], values: list[float], aggs: list[int]):
        self.sids, self.ts, self.values, self.aggs = sids, ts, values, aggs

    def __len__(self) -> int:
        return len(self.sids)

    def __iter__(self) -> Iterator[Obs]:
        return map(_OBS, zip(self.sids, self.ts, self.values, self.aggs, strict=True))


class PointsDecoder:
    """Decodes points messages, keeping each series' `Series` so a known id costs nothing."""

    def __init__(self) -> None:
        self._series: dict[int, Series] = {}

    def decode(self, raw: bytes) -> tuple[Points | list[Obs], dict[int, Series]]:
        """The observations and the metadata of exactly the series they mention."""
        if raw.startswith(b'{"s"'):
            return _decode_v1(raw)
        cut = raw.index(b"\n")
        sids, ts, values, aggs = orjson.loads(raw[:cut])["c"]
        ids = set(sids)
        known = self._series
        if not ids.issubset(known):
            self._learn(orjson.loads(raw[cut + 1 :]), ids)
        if not len(sids) == len(ts) == len(values) == len(aggs):
            raise ValueError("points message columns differ in length")
        points = Points(sids, ts, values, aggs)
        return points, dict(zip(ids, map(known.__getitem__, ids), strict=True))

    def _learn(self, doc: dict[str, list[object]], ids: set[int]) -> None:
        known = self._series
        if len(known) + len(ids) > _CACHE_MAX:
            known.clear()
        for key, (kind, name, service, labels) in doc.items():
            sid = int(key)
            if sid in ids and sid not in known:
                known[sid] = Series(kind, name, service, tuple((a, b) for a, b in labels))
        missing = ids.difference(known)
        if missing:
            raise ValueError(f"points message lacks the metadata of series {min(missing)}")


def decode_points(raw: bytes) -> tuple[list[Obs], dict[int, Series]]:
    """One points message as a list (no cache kept: a long-lived consumer holds a
    `PointsDecoder`)."""
    points, meta = PointsDecoder().decode(raw)
    return list(points), meta


def _decode_v1(raw: bytes) -> tuple[list[Obs], dict[int, Series]]:
    """The previous format, `{"s": {id: meta}, "o": [[id, ts, value, agg], ...]}`: messages
    written before an upgrade are still replayed after it."""
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
