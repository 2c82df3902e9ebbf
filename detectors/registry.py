"""Config names → detector constructors. An explicit dict, built here, read by the app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detectors import DetectorsError
from detectors.base import Detector
from detectors.robust import RobustDetector

REGISTRY: dict[str, Callable[..., Detector]] = {
    "robust": RobustDetector,
}


def make_detector(name: str, **params: Any) -> Detector:
    try:
        ctor = REGISTRY[name]
    except KeyError:
        raise DetectorsError(
            f"unknown detector {name!r}; registered: {', '.join(sorted(REGISTRY))}"
        ) from None
    return ctor(**params)
