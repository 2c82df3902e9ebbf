"""Points messages: every message carries its series' metadata; a decoder that knows a series
reuses it; feedback messages stay distinguishable."""

from __future__ import annotations

import struct

import orjson
import pytest

from streams.series import AGG_LAST, AGG_MEAN, Obs, make_series, series_id
from streams.wire import (
    PointsDecoder,
    PointsEncoder,
    by_partition,
    decode_feedback,
    decode_points,
    encode_feedback,
    encode_points,
    partition_of,
    points_of,
)

CPU = make_series("metric", "cpu", "api", host="a", dc="x")
LAT = make_series("span", "latency_ms", "api", operation='GET /"q"\n')
META = {series_id(CPU): CPU, series_id(LAT): LAT}
OBS = [
    Obs(series_id(CPU), 1_000, 0.5, AGG_LAST),
    Obs(series_id(LAT), 1_000, 12.25, AGG_MEAN),
    Obs(series_id(CPU), 2_000, 0.75, AGG_LAST),
]


def test_points_roundtrip_with_the_metadata_of_each_series_mentioned() -> None:
    obs, meta = decode_points(encode_points(OBS, META))
    assert obs == OBS and all(type(o) is Obs for o in obs)
    assert meta == META
    assert decode_points(encode_points([], META)) == ([], {})


def test_every_message_carries_its_metadata_for_any_decoder() -> None:
    enc = PointsEncoder(META)
    enc.encode(OBS)  # the encoder's cache is warm: later messages still carry the metadata
    raw = enc.encode(OBS[:1])
    points, meta = PointsDecoder().decode(raw)
    assert (list(points), meta) == (OBS[:1], {series_id(CPU): CPU})


def test_decoder_reuses_known_series_and_returns_only_those_mentioned() -> None:
    dec = PointsDecoder()
    _, first = dec.decode(encode_points(OBS, META))
    obs, meta = dec.decode(encode_points(OBS[1:2], META))
    assert list(obs) == OBS[1:2] and meta == {series_id(LAT): LAT}
    assert meta[series_id(LAT)] is first[series_id(LAT)]


def _cut(raw: bytes) -> int:
    """Where a binary message's metadata starts."""
    _, n, k = struct.unpack_from("<4sII", raw)
    return 16 + 8 * k + 25 * n


def test_points_travel_as_arrays_and_read_as_python_numbers() -> None:
    points, _ = PointsDecoder().decode(encode_points(OBS, META))
    assert [c.dtype.kind for c in (points.sids, points.ts, points.values, points.aggs)] == list(
        "uifi"
    )
    assert [type(v) for v in next(iter(points))] == [int, int, float, int]


def test_decoder_rejects_a_message_without_the_metadata_it_needs() -> None:
    raw = encode_points(OBS[:1], META)
    with pytest.raises(ValueError, match="metadata"):
        PointsDecoder().decode(raw[: _cut(raw)] + b"{}")


def test_decoder_rejects_truncated_and_inconsistent_messages() -> None:
    raw = encode_points(OBS, META)
    with pytest.raises(ValueError, match="shorter"):
        PointsDecoder().decode(raw[: _cut(raw) - 1])
    # the first point's series id replaced by one the message does not list
    at = 16 + 8 * 2
    bad = raw[:at] + (12345).to_bytes(8, "little") + raw[at + 8 :]
    with pytest.raises(ValueError, match="outside its list"):
        PointsDecoder().decode(bad)


def test_decoder_reads_the_previous_formats() -> None:
    sid = series_id(CPU)
    v1 = orjson.dumps(
        {"s": {str(sid): [*CPU[:3], list(map(list, CPU.labels))]}, "o": [list(OBS[0])]}
    )
    assert PointsDecoder().decode(v1) == ([OBS[0]], {sid: CPU})
    v2 = b'{"c":%s}\n{"%d":%s}' % (
        orjson.dumps([list(c) for c in zip(*OBS[:1], strict=True)]), sid,
        orjson.dumps([*CPU[:3], list(map(list, CPU.labels))]),
    )  # fmt: skip
    points, meta = PointsDecoder().decode(v2)
    assert (list(points), meta) == ([OBS[0]], {sid: CPU})


def test_feedback_is_told_apart_from_points() -> None:
    raw = encode_feedback(42, "expected", episode_id=7)
    assert decode_feedback(raw) == {"series_id": 42, "label": "expected", "episode_id": 7}
    assert decode_feedback(encode_points(OBS, META)) is None


def test_a_batch_regroups_per_partition_in_order_and_in_capped_messages() -> None:
    sids = [series_id(CPU), series_id(LAT)]
    obs = [Obs(sids[i % 2], 1000 + i, float(i), 0) for i in range(7)]
    chunks = [points_of(obs[:3]), points_of([]), points_of(obs[3:])]
    got: dict[int, list[list[Obs]]] = {}
    for part, pts in by_partition(chunks, 2, max_points=2):
        got.setdefault(part, []).append(list(pts))
    for part, messages in got.items():
        assert all(0 < len(m) <= 2 for m in messages)
        flat = [o for m in messages for o in m]
        assert flat == [o for o in obs if partition_of(o.series_id, 2) == part]  # stream order
    assert sorted(o for ms in got.values() for m in ms for o in m) == sorted(obs)
