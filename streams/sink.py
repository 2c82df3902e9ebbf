"""The ClickHouse sink: `add` buffers column-oriented rows, `flush` writes them.

`flush()` either writes everything buffered or raises and keeps it: callers ack Kafka
offsets only after it returns, and retry with backoff when it raises (offsets held).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from stormwatch.store import Store
from streams.columns import PointRows

log = logging.getLogger(__name__)


class ClickHouseSink:
    def __init__(self, store: Store, table: str, columns: Sequence[str]) -> None:
        self.store = store
        self.table = table
        self.columns = list(columns)
        self._cols: list[list[Any]] = [[] for _ in self.columns]
        self._batches: list[PointRows] = []  # the detect stage's rows, kept as they come
        self.written = 0

    def __len__(self) -> int:
        return len(self._cols[0]) + sum(b.rows for b in self._batches)

    def add_columns(self, cols: Sequence[Sequence[Any]]) -> None:
        if isinstance(cols, PointRows):
            if cols.rows:
                self._batches.append(cols)
            return
        for mine, theirs in zip(self._cols, cols, strict=True):
            mine.extend(theirs)

    def add(self, row: Sequence[Any]) -> None:
        for mine, v in zip(self._cols, row, strict=True):
            mine.append(v)

    def flush(self) -> int:
        """Write the buffer; on error raise with the buffer intact. Returns rows written."""
        n = 0
        if self._batches:
            batch = PointRows.concat(self._batches)
            self.store.insert(self.table, self.columns, batch)
            self._batches = []
            n += batch.rows
            self.written += batch.rows
        if len(self._cols[0]):
            self.store.insert(self.table, self.columns, self._cols)
            n += len(self._cols[0])
            self.written += len(self._cols[0])
            self._cols = [[] for _ in self.columns]
        return n
