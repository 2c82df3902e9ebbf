"""The keyed points topic's message: a batch of observations for one partition, with the
metadata of every series it mentions (so any worker can pick up any partition).

A points message is binary: `SWP3`, the number of points n and of series k (uint32 each, then
4 bytes of padding), the k series ids (sorted), then the columns as little-endian arrays (n
uint64 ids, n int64 ms, n float64 values, n int8 aggregations), then the metadata as JSON,
`{"<id>":[kind,name,service,[[k,v],...]],...}` for each of the k series. A decoder that knows
every id never parses the JSON, and hands the columns on as arrays without a Python object
per point. The JSON formats written before (`{"c":...}` and `{"s":...}`) are still read, so
messages written before an upgrade replay after it; a worker of an older release cannot read
these, so workers are upgraded together.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import orjson

from streams.series import Obs, Series

_OBS = partial(tuple.__new__, Obs)  # Obs from a 4-tuple without a Python-level __new__
_CACHE_MAX = 500_000  # series: the cardinality guard's default total
MAGIC = b"SWP3"
_HEADER = struct.Struct("<4sII4x")  # magic, points, series; 16 bytes keep the arrays aligned
_POINT_BYTES = 8 + 8 + 8 + 1
# a message's points cap: 1.25 MB of columns, and room for their series' metadata under the
# 8 MiB a message may take (streams.tuning.MAX_MESSAGE_BYTES)
MESSAGE_POINTS = 50_000
_DTYPES = (np.uint64, np.int64, np.float64, np.int8)  # ids, ts ms, values, aggs


def _meta_fragment(sid: int, s: Series) -> bytes:
    return b'"%d":%s' % (sid, orjson.dumps([s.kind, s.name, s.service, s.labels]))


class PointsEncoder:
    """Encodes points messages; each series' metadata is encoded once and reused as bytes."""

    def __init__(self, meta: Mapping[int, Series]) -> None:
        self.meta = meta  # series id → Series, e.g. the normalizer's (read, never written)
        self._fragments: dict[int, bytes] = {}

    def encode(self, obs: Sequence[Obs]) -> bytes:
        return self.encode_columns(points_of(obs).columns)

    def encode_columns(self, cols: Sequence[Sequence[Any]]) -> bytes:
        """A message from columns (arrays or lists): ids, ts ms, values, aggs."""
        sids = np.asarray(cols[0], np.uint64)
        n = len(sids)
        ids = np.unique(sids)
        id_list = ids.tolist()
        frags = self._fragments
        new = set(id_list).difference(frags)
        if new:
            if len(frags) + len(new) > _CACHE_MAX:
                frags.clear()
                new = set(id_list)
            meta = self.meta
            frags.update((sid, _meta_fragment(sid, meta[sid])) for sid in new)
        return b"".join((
            _HEADER.pack(MAGIC, n, len(id_list)),
            ids.tobytes(),
            sids.tobytes(),
            np.asarray(cols[1], np.int64).tobytes(),
            np.asarray(cols[2], np.float64).tobytes(),
            np.asarray(cols[3], np.int8).tobytes(),
            b"{%s}" % b",".join(map(frags.__getitem__, id_list)),
        ))  # fmt: skip


def encode_points(obs: Sequence[Obs], meta: Mapping[int, Series]) -> bytes:
    """One points message (no cache kept: a long-lived caller holds a `PointsEncoder`)."""
    return PointsEncoder(meta).encode(obs)


def points_of(obs: Sequence[Obs]) -> Points:
    """Observations as the columns a message carries (arrays)."""
    n = len(obs)
    cols = list(zip(*obs, strict=True)) if n else [(), (), (), ()]
    return Points(*(np.fromiter(c, t, n) for c, t in zip(cols, _DTYPES, strict=True)))


def by_partition(
    chunks: Sequence[Points], partitions: int, max_points: int = MESSAGE_POINTS
) -> Iterator[tuple[int, Points]]:
    """Chunks of columns (in stream order) regrouped per points partition, each partition's
    points in the order they came, at most `max_points` a message."""
    chunks = [c for c in chunks if len(c)]
    if not chunks:
        return
    cols = [np.concatenate(col) for col in zip(*(c.columns for c in chunks), strict=True)]
    parts = (cols[0] % np.uint64(partitions)).astype(np.int64)
    order = np.argsort(parts, kind="stable")
    ordered = parts[order]
    starts = np.flatnonzero(np.diff(ordered, prepend=-1))
    for idx, start in zip(np.split(order, starts[1:]), starts.tolist(), strict=True):
        for at in range(0, len(idx), max_points):
            piece = idx[at : at + max_points]
            yield int(ordered[start]), Points(*(c[piece] for c in cols))


class Points:
    """A points message's observations as the columns they travel in (arrays, or lists in
    the older formats): the detect stage takes a batch of pass-through points as arrays,
    without a tuple per point. Iterating gives the `Obs` of each point, in order, in Python
    numbers."""

    __slots__ = ("aggs", "sids", "ts", "values")

    def __init__(
        self, sids: Sequence[int], ts: Sequence[int], values: Sequence[float], aggs: Sequence[int]
    ) -> None:
        self.sids, self.ts, self.values, self.aggs = sids, ts, values, aggs

    def __len__(self) -> int:
        return len(self.sids)

    @property
    def columns(self) -> tuple[Sequence[Any], ...]:
        return self.sids, self.ts, self.values, self.aggs

    def __iter__(self) -> Iterator[Obs]:
        cols = [c.tolist() if isinstance(c, np.ndarray) else c for c in self.columns]
        return map(_OBS, zip(*cols, strict=True))


class PointsDecoder:
    """Decodes points messages, keeping each series' `Series` so a known id costs nothing."""

    def __init__(self) -> None:
        self._series: dict[int, Series] = {}

    def decode(self, raw: bytes) -> tuple[Points | list[Obs], dict[int, Series]]:
        """The observations and the metadata of exactly the series they mention."""
        if raw.startswith(MAGIC):
            return self._decode_binary(raw)
        if raw.startswith(b'{"s"'):
            return _decode_v1(raw)
        cut = raw.index(b"\n")
        sids, ts, values, aggs = orjson.loads(raw[:cut])["c"]
        meta = self._series_of(set(sids), raw[cut + 1 :])
        if not len(sids) == len(ts) == len(values) == len(aggs):
            raise ValueError("points message columns differ in length")
        return Points(sids, ts, values, aggs), meta

    def _decode_binary(self, raw: bytes) -> tuple[Points, dict[int, Series]]:
        _, n, k = _HEADER.unpack_from(raw)
        meta_at = _HEADER.size + 8 * k + _POINT_BYTES * n
        if len(raw) < meta_at:
            raise ValueError("points message shorter than its header says")
        at = _HEADER.size
        ids = np.frombuffer(raw, np.uint64, k, at)
        at += 8 * k
        cols = []
        for dtype, size in ((np.uint64, 8), (np.int64, 8), (np.float64, 8), (np.int8, 1)):
            cols.append(np.frombuffer(raw, dtype, n, at))
            at += size * n
        sids = cols[0]
        if n and (k == 0 or (ids[np.minimum(np.searchsorted(ids, sids), k - 1)] != sids).any()):
            raise ValueError("points message mentions a series outside its list")
        return Points(*cols), self._series_of(set(ids.tolist()), raw[meta_at:])

    def _series_of(self, ids: set[int], meta_json: bytes) -> dict[int, Series]:
        """The `Series` of `ids`, parsing the message's metadata only when one is new."""
        known = self._series
        if not ids.issubset(known):
            self._learn(orjson.loads(meta_json), ids)
        return {sid: known[sid] for sid in ids}

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
