"""Config names → detector constructors. An explicit dict, built here, read by the app.

`DEFAULT` is the one place that names the default univariate detector.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detectors import DetectorsError
from detectors.base import Detector
from detectors.robust import RobustDetector
from detectors.zscore import RollingZScore

DEFAULT = "robust"

REGISTRY: dict[str, Callable[..., Detector]] = {
    "robust": RobustDetector,
    "zscore": RollingZScore,
}


def make_detector(name: str, **params: Any) -> Detector:
    """A fresh detector; unknown names and bad parameters raise `DetectorsError`."""
    try:
        ctor = REGISTRY[name]
    except KeyError:
        raise DetectorsError(
            f"unknown detector {name!r}; registered: {', '.join(sorted(REGISTRY))}"
        ) from None
    try:
        return ctor(**params)
    except (TypeError, ValueError) as e:
        raise DetectorsError(f"detector {name!r}: {e}") from None


def model_factory(
    detector: str = DEFAULT, *, threshold: float = 0.9, shadow: str | None = None
) -> Callable[[], Any]:
    """A picklable constructor of the per-series `SeriesModel` (active detector, drift,
    fallback, optional shadow) that the stream and the tests build alike."""
    from functools import partial

    from detectors.model import SeriesModel

    make_detector(detector, threshold=threshold)  # fail now on a bad name or parameter
    return partial(
        SeriesModel,
        partial(make_detector, detector, threshold=threshold),
        threshold=threshold,
        shadow=partial(make_detector, shadow) if shadow else None,
    )
