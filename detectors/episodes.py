"""Point scores → anomaly episodes, with hysteresis and an explanation.

An episode opens when a score reaches `high`, stays open while scores stay above `low`, and
closes after `quiet` points in a row below `low`. Its id is a stable hash of series and start,
so re-emitting it (update, close, replay) replaces the same ClickHouse row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict


class Episode(BaseModel):
    """An anomaly episode as stored and as published on the anomalies topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    episode_id: int
    series_id: int
    start_ms: int
    end_ms: int
    is_open: bool
    peak_score: float
    peak_value: float
    expected: float
    lower: float
    upper: float
    severity: str
    kind: str
    name: str
    service: str
    labels: dict[str, str]
    signals: list[str]
    explanation: str
    detector: str
    detector_version: str
    points: int


def episode_id(series_id: int, start_ms: int) -> int:
    h = hashlib.blake2b(f"{series_id}:{start_ms}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") >> 1


def severity(score: float) -> str:
    return "critical" if score >= 0.99 else "major" if score >= 0.95 else "minor"


@dataclass
class EpisodeTracker:
    """Per-series hysteresis state; `update` returns the episode when it opens, grows or closes."""

    high: float = 0.9
    low: float = 0.6
    quiet: int = 2
    start_ms: int = -1
    end_ms: int = 0
    points: int = 0
    below: int = 0
    peak: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)
    changed: bool = field(default=False)
    why: int = 0  # the peak's reason code (detectors.model_core WHY_*); 0: not known

    @property
    def is_open(self) -> bool:
        return self.start_ms >= 0

    def update(
        self, ts_ms: int, score: float, value: float, band: tuple[float, float, float],
        why: int = 0,
    ) -> str | None:  # fmt: skip
        """Feed one scored point (`why`: its reason code, if flagged); returns 'open',
        'grow', 'close' or None."""
        if not self.is_open:
            if score < self.high:
                return None
            self.start_ms, self.end_ms, self.points, self.below = ts_ms, ts_ms, 1, 0
            self.peak, self.why = (score, value, *band), why
            return "open"
        if score >= self.low:
            self.end_ms, self.below = ts_ms, 0
            self.points += 1
            if score > self.peak[0]:
                self.peak, self.why = (score, value, *band), why
            return "grow"
        self.below += 1
        if self.below >= self.quiet:
            return "close"
        return None

    def reset(self) -> None:
        self.start_ms, self.points, self.below = -1, 0, 0


class EpisodeChanges:
    """One batch's episode changes, in order, coalesced per episode: its opening and its
    close are always kept, and of the growth between them in the batch only the newest (in
    place of the first). The actions service proposes on an open episode, possibly only once
    it has grown severe, and the anomalies table and the approval card need the newest state:
    the steps between are redundant rows, messages and state writes. Under load a batch spans
    many points of a series, so this is where it pays.

    A change may be given as a thunk, built only when taken: a superseded one then costs no
    explanation text and no model."""

    def __init__(self) -> None:
        self._items: list[Episode | Callable[[], Episode]] = []
        self._growth: dict[Hashable, int] = {}  # episode → index of its newest growth

    def __len__(self) -> int:
        return len(self._items)

    def add(self, key: Hashable, change: Episode | Callable[[], Episode], step: str) -> None:
        """`key` names the episode (e.g. series and start); `step` is the tracker's "open",
        "grow" or "close"."""
        if step != "grow":
            self._items.append(change)
            return
        i = self._growth.get(key)
        if i is None:
            self._growth[key] = len(self._items)
            self._items.append(change)
        else:
            self._items[i] = change

    def take(self) -> list[Episode]:
        """The changes so far, built, in order; the batch starts afresh."""
        items, self._items, self._growth = self._items, [], {}
        return [c if isinstance(c, Episode) else c() for c in items]
