from __future__ import annotations

import pytest
from pydantic import BaseModel

from actions import ActionsError
from actions.base import HttpCall
from actions.library import SHIPPED, ScaleConsumers, scale_consumers
from actions.registry import ActionRegistry, spec_of


class P(BaseModel):
    x: int


def two_params(params: P, other: int) -> HttpCall:
    return HttpCall(url="http://x")


def untyped(params):  # type: ignore[no-untyped-def]
    return HttpCall(url="http://x")


def not_a_model(params: dict) -> HttpCall:  # type: ignore[type-arg]
    return HttpCall(url="http://x")


def returns_str(params: P) -> str:
    return "rm -rf /"


def good(params: P) -> HttpCall:
    return HttpCall(url="http://127.0.0.1/x", json_body={"x": params.x})


@pytest.mark.parametrize(
    ("fn", "reason"),
    [(two_params, "exactly one parameter"), (untyped, "pydantic model"),
     (not_a_model, "pydantic model"), (returns_str, "must return")],
)  # fmt: skip
def test_registry_rejects_a_bad_signature_at_startup(fn: object, reason: str) -> None:
    with pytest.raises(ActionsError, match=reason):
        ActionRegistry([*SHIPPED, fn])  # type: ignore[list-item]


def test_registry_rejects_duplicates() -> None:
    with pytest.raises(ActionsError, match="twice"):
        ActionRegistry([good, good])


def test_spec_reads_the_params_type_and_validates_params() -> None:
    spec = spec_of(scale_consumers)
    assert spec.params_type is ScaleConsumers
    call = spec.build({"url": "http://h/s", "queue": "orders", "group": "g", "replicas": 3})
    assert call == HttpCall(url="http://h/s", json_body={"action": "scale_consumers",
                            "queue": "orders", "group": "g", "replicas": 3})  # fmt: skip
    with pytest.raises(ActionsError, match="queue"):
        spec.build({"url": "http://h/s", "queue": "--all; rm", "group": "g", "replicas": 3})
    with pytest.raises(ActionsError, match="url"):
        spec.build({"url": "file:///etc/passwd", "queue": "q", "group": "g", "replicas": 3})


def test_registry_get_names_known_actions() -> None:
    with pytest.raises(ActionsError, match="scale_consumers"):
        ActionRegistry(SHIPPED).get("nope")
