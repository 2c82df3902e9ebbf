"""`points` rows as the detect stage makes them: numbers in numpy arrays, a series' own columns
(id, kind, name, service, labels, detector, version) once per run of its rows.

The stage scores a message's points series by series, so its rows come in runs of one series.
Kept as 15 lists of Python objects, every row cost a list entry per column to build, to merge
and again to encode for ClickHouse, with the series' columns repeated on every row; kept like
this, a batch is built, merged and encoded with numpy and one step per run. It still reads as
the 15 columns (`rows[i]` is column i as a list) for code that wants lists, and encodes itself
as a Native block (`native_block`), byte for byte what clickhouse-connect writes for the same
rows (tested), when the table has the types it was made for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

POINT_COLUMNS = [
    "series_id", "ts", "value", "n", "score", "expected", "lower", "upper", "is_anomaly",
    "kind", "name", "service", "labels", "detector", "detector_version",
]  # fmt: skip
POINT_TYPES = [
    "UInt64", "DateTime64(3, 'UTC')", "Float64", "UInt32", "Float32", "Nullable(Float64)",
    "Nullable(Float64)", "Nullable(Float64)", "UInt8", "LowCardinality(String)",
    "LowCardinality(String)", "LowCardinality(String)", "Map(LowCardinality(String), String)",
    "LowCardinality(String)", "LowCardinality(String)",
]  # fmt: skip
SERIES = {0: 0, 9: 1, 10: 2, 11: 3, 12: 4, 13: 5, 14: 6}  # column → index in a series row
NUMBERS = {1: ("ts", "<i8"), 2: ("value", "<f8"), 3: ("n", "<u4"), 4: ("score", "<f4"),
           8: ("hot", "<u1")}  # column → (array, Native encoding)  # fmt: skip
FALLBACK_DETECTOR = "fallback"  # the detector column where the median/MAD rule decided


def by_series(sids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A message's points grouped into runs of one series, each series' points in arrival
    order: the order to take them in, and each run's series id, start and end in that order."""
    order = np.argsort(sids, kind="stable")
    s = sids[order]
    cut = np.flatnonzero(s[1:] != s[:-1]) + 1
    starts, ends = np.concatenate(([0], cut)), np.concatenate((cut, [len(s)]))
    return order, s[starts], starts, ends


@dataclass(frozen=True, eq=False)
class PointRows(Sequence[list[Any]]):
    """Rows in runs: `runs[k]` = (series row, number of rows); the arrays have a row each."""

    runs: list[tuple[tuple[Any, ...], int]]
    ts: np.ndarray  # int64, ms
    value: np.ndarray  # float64
    n: np.ndarray  # int64
    score: np.ndarray  # float64
    band: np.ndarray  # (rows, 3) float64: expected, lower, upper; not finite = NULL
    hot: np.ndarray  # bool: is_anomaly
    fell_back: np.ndarray  # bool: the detector column says "fallback"

    @property
    def rows(self) -> int:
        return len(self.ts)

    def __len__(self) -> int:
        return len(POINT_COLUMNS)

    def __getitem__(self, i: int) -> list[Any]:  # type: ignore[override]
        return self.column(i)

    def __iter__(self) -> Iterator[list[Any]]:
        return (self.column(i) for i in range(len(POINT_COLUMNS)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def column(self, i: int) -> list[Any]:
        """Column i (POINT_COLUMNS) as a list, as the stage wrote it before: NULL bands None."""
        if i in SERIES:
            k = SERIES[i]
            out = [v for row, n in self.runs for v in [row[k]] * n]
            if i == 13:
                for j in np.flatnonzero(self.fell_back).tolist():
                    out[j] = FALLBACK_DETECTOR
            return out
        if 5 <= i <= 7:
            return _nullable(self.band[:, i - 5])
        arr = getattr(self, NUMBERS[i][0])
        return (arr.astype(np.uint8) if arr.dtype == bool else arr).tolist()

    @property
    def series_ids(self) -> np.ndarray:
        return np.repeat(np.array([r[0] for r, _ in self.runs], np.uint64), self.lengths)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([n for _, n in self.runs], np.int64)

    @classmethod
    def empty(cls) -> PointRows:
        f, b = np.zeros(0), np.zeros(0, bool)
        return cls([], np.zeros(0, np.int64), f, np.zeros(0, np.int64), f, np.zeros((0, 3)), b, b)

    @classmethod
    def concat(cls, parts: Sequence[PointRows]) -> PointRows:
        parts = [p for p in parts if p.rows]
        if len(parts) <= 1:
            return parts[0] if parts else cls.empty()
        return cls(
            [r for p in parts for r in p.runs],
            *(np.concatenate([getattr(p, f) for p in parts])
              for f in ("ts", "value", "n", "score", "band", "hot", "fell_back")),
        )  # fmt: skip

    def native_block(self, columns: Sequence[str], types: Sequence[str]) -> bytes | None:
        """This batch as one Native block (what follows clickhouse-connect's INSERT line), or
        None when the columns or their types are not the ones it encodes."""
        if list(columns) != POINT_COLUMNS or list(types) != POINT_TYPES or not self.rows:
            return None
        from clickhouse_connect.driver.common import write_leb128

        out = bytearray()
        write_leb128(len(POINT_COLUMNS), out)
        write_leb128(self.rows, out)
        lengths = self.lengths
        for i, (name, type_name) in enumerate(zip(POINT_COLUMNS, POINT_TYPES, strict=True)):
            out += _strings((name, type_name))
            if i == 0:
                out += self.series_ids.astype("<u8").tobytes()
            elif i in SERIES:
                self._series_column(i, lengths, out)
            elif 5 <= i <= 7:
                x = self.band[:, i - 5]
                null = ~np.isfinite(x)
                out += null.astype(np.uint8).tobytes()
                out += np.where(null, 0.0, x).astype("<f8").tobytes()
            else:
                field, code = NUMBERS[i]
                out += getattr(self, field).astype(code).tobytes()
        return bytes(out)

    def _series_column(self, i: int, lengths: np.ndarray, out: bytearray) -> None:
        k = SERIES[i]
        if i == 12:
            out += (1).to_bytes(8, "little")  # the keys' LowCardinality version
            _labels(self.runs, lengths, out)
            return
        at: dict[Any, int] = {}
        keys = np.repeat([at.setdefault(row[k], len(at)) for row, _ in self.runs], lengths)
        if i == 13 and self.fell_back.any():
            keys[self.fell_back] = at.setdefault(FALLBACK_DETECTOR, len(at))
            index, keys = _first_appearance(list(at), keys)
        else:
            index = list(at)
        out += (1).to_bytes(8, "little")  # LowCardinality version
        _low_card(index, keys, out)


def _nullable(xs: np.ndarray) -> list[float | None]:
    """NULL, not ±inf or NaN, where the model has no band yet (warm-up)."""
    if np.isfinite(xs).all():
        return xs.tolist()
    return [x if math.isfinite(x) else None for x in xs.tolist()]


def _strings(values: Iterable[Any]) -> bytes:
    """A String column's data (clickhouse-connect encodes str as UTF-8). The import is here,
    once a column, so that importing this module does not load clickhouse-connect."""
    from clickhouse_connect.driver.common import write_leb128

    out = bytearray()
    for v in values:
        b = v.encode() if isinstance(v, str) else bytes(v)
        write_leb128(len(b), out)
        out += b
    return bytes(out)


def _first_appearance(index: list[Any], keys: np.ndarray) -> tuple[list[Any], np.ndarray]:
    """The dictionary in order of first use, as clickhouse-connect builds it."""
    present = [(int(np.argmax(keys == j)), j) for j in range(len(index)) if (keys == j).any()]
    order = [j for _, j in sorted(present)]
    remap = np.zeros(len(index), np.int64)
    remap[order] = np.arange(len(order))
    return [index[j] for j in order], remap[keys]


def _low_card(index: list[Any], keys: np.ndarray, out: bytearray) -> None:
    """A LowCardinality(String) column's data after its version: clickhouse-connect's layout
    (a new dictionary with every block, keys as wide as the dictionary needs)."""
    ix_type = int(math.log(len(index), 2)) >> 3
    out += ((1 << 9) | (1 << 10) | ix_type).to_bytes(8, "little")
    out += len(index).to_bytes(8, "little")
    out += _strings(index)
    out += len(keys).to_bytes(8, "little")
    out += keys.astype(f"<u{1 << ix_type}").tobytes()


def _labels(runs: list[tuple[tuple[Any, ...], int]], lengths: np.ndarray, out: bytearray) -> None:
    """Map(LowCardinality(String), String) data: offsets, keys, values; each distinct map of
    the batch encoded once, a run's entries repeated with bytes and numpy."""
    maps = [row[4] for row, _ in runs]
    sizes = np.array([len(d) for d in maps], np.int64)
    out += np.cumsum(np.repeat(sizes, lengths), dtype=np.uint64).astype("<u8").tobytes()
    total = int(sizes @ lengths)
    if not total:
        return  # no entries: no keys and no values, as clickhouse-connect writes it
    at: dict[Any, int] = {}
    built: dict[int, tuple[list[int], bytes]] = {}
    run_ids: list[int] = []  # each run's key ids, one run after the other
    values: list[bytes] = []
    for d, n in zip(maps, lengths.tolist(), strict=True):
        b = built.get(id(d))  # the maps live in `runs` meanwhile: no id is reused
        if b is None:
            b = built[id(d)] = ([at.setdefault(k, len(at)) for k in d], _strings(d.values()))
        run_ids += b[0]
        values.append(b[1] * n)
    # entry e of run r is key ((e - r's first entry) mod r's size) of r's ids
    per_run = sizes * lengths
    run = np.repeat(np.arange(len(maps)), per_run)
    first = np.cumsum(per_run) - per_run
    ids_at = np.cumsum(sizes) - sizes
    within = np.arange(total) - first[run]
    _low_card(list(at), np.array(run_ids, np.int64)[ids_at[run] + within % sizes[run]], out)
    out += b"".join(values)
