"""Cardinality control: a cap on series per metric name, per service and in total.

A series past a cap is not modeled: its observations are counted as "unmodeled" (a
pipeline-health counter) and dropped, so a label that carries ids cannot grow memory without
bound. Series admitted once stay admitted (no flapping); pure logic, no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from streams.series import Obs, Series

OTHER = "(other)"


class CardinalityLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    per_name: int = Field(1_000, ge=1)  # per metric name; per service and name for derived kinds
    per_service: int = Field(10_000, ge=1)
    total: int = Field(500_000, ge=1)
    tracked_keys: int = Field(1_000, ge=1)  # names counted one by one in `unmodeled_by`


def name_key(s: Series) -> str:
    """The key a per-name cap counts under. A metric's name is shared across services; a
    derived series (span, queue, db) explodes along its labels within one service."""
    return f"metric:{s.name}" if s.kind == "metric" else f"{s.kind}:{s.service}:{s.name}"


class CardinalityGuard:
    """`admit(series)` says whether a series is modeled; counters say what was turned away."""

    def __init__(self, limits: CardinalityLimits | None = None) -> None:
        self.limits = limits or CardinalityLimits()
        self._admitted: set[Series] = set()
        self._per_name: Counter[str] = Counter()
        self._per_service: Counter[str] = Counter()
        self.unmodeled = 0  # observations of series over a cap
        self.unmodeled_by: Counter[str] = Counter()  # per name key, bounded by tracked_keys

    @property
    def series(self) -> int:
        return len(self._admitted)

    def admit(self, series: Series) -> bool:
        """True if the series is (now) modeled; False counts one unmodeled observation."""
        if series in self._admitted:
            return True
        lim = self.limits
        key = name_key(series)
        if (
            len(self._admitted) >= lim.total
            or self._per_name[key] >= lim.per_name
            or self._per_service[series.service] >= lim.per_service
        ):
            self.unmodeled += 1
            known = key in self.unmodeled_by or len(self.unmodeled_by) < lim.tracked_keys
            self.unmodeled_by[key if known else OTHER] += 1
            return False
        self._admitted.add(series)
        self._per_name[key] += 1
        self._per_service[series.service] += 1
        return True

    def filter(self, obs: Sequence[Obs], meta: Mapping[int, Series]) -> list[Obs]:
        """The observations whose series are admitted (`meta` maps series id → Series)."""
        return [o for o in obs if self.admit(meta[o.series_id])]
