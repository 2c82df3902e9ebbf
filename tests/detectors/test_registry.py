from __future__ import annotations

import pytest

from detectors import DetectorsError
from detectors.checks import CHECKS
from detectors.registry import DEFAULT, REGISTRY, make_detector


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_detector_passes_contract_check(name: str, check) -> None:
    check(lambda: make_detector(name))


def test_registry_default_is_registered() -> None:
    assert DEFAULT in REGISTRY


def test_make_detector_unknown_name_lists_registered() -> None:
    with pytest.raises(DetectorsError, match="registered: robust"):
        make_detector("nope")


def test_make_detector_bad_params_raise_detectors_error() -> None:
    with pytest.raises(DetectorsError, match="alpha"):
        make_detector("robust", alpha=2.0)
