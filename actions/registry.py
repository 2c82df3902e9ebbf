"""Actions registry: an action is a plain function taking one pydantic params model and
returning an invocation. The registry reads the params type from the signature and rejects a
bad signature when it is built (start-up), not when a person clicks Approve.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from actions import ActionsError
from actions.base import CommandCall, HttpCall, Invocation, KafkaCommand

INVOCATIONS = (HttpCall, CommandCall, KafkaCommand)


def action(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Marks a function as an action; it does not register it (the app builds the registry)."""
    fn.__stormwatch_action__ = True  # type: ignore[attr-defined]
    return fn


@dataclass(frozen=True)
class ActionSpec:
    name: str
    fn: Callable[[BaseModel], Invocation]
    params_type: type[BaseModel]

    def build(self, params: dict[str, Any]) -> Invocation:
        """Validate params and return what would run; raises ActionsError on bad params."""
        try:
            model = self.params_type.model_validate(params)
        except ValidationError as e:
            loc = tuple(e.errors()[0]["loc"])
            raise ParamsError(f"action {self.name}: {_first_error(e)}", loc) from None
        out = self.fn(model)
        if not isinstance(out, INVOCATIONS):
            raise ActionsError(f"action {self.name} returned {type(out).__name__}, not a call")
        return out


class ParamsError(ActionsError):
    """Params that do not fit the action's model; `loc` is the path to the bad value."""

    def __init__(self, message: str, loc: tuple[int | str, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "params"
    return f"{loc}: {err['msg']}"


def spec_of(fn: Callable[..., Any]) -> ActionSpec:
    """Check the signature `fn(params: Model) -> HttpCall | CommandCall | KafkaCommand`."""
    name = getattr(fn, "__name__", repr(fn))
    try:
        hints = typing.get_type_hints(fn)
    except Exception as e:  # unresolvable annotations are a bad signature too
        raise ActionsError(f"action {name}: cannot read annotations: {e}") from None
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 1 or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise ActionsError(f"action {name}: must take exactly one parameter (its params model)")
    ptype = hints.get(params[0].name)
    if not (isinstance(ptype, type) and issubclass(ptype, BaseModel)):
        raise ActionsError(f"action {name}: its parameter must be annotated with a pydantic model")
    ret = hints.get("return")
    rets = typing.get_args(ret) if isinstance(ret, types.UnionType) else (ret,)
    if not rets or not all(isinstance(r, type) and issubclass(r, INVOCATIONS) for r in rets):
        raise ActionsError(f"action {name}: must return HttpCall, CommandCall or KafkaCommand")
    return ActionSpec(name, fn, ptype)


class ActionRegistry:
    """Explicit name → action map, built once by the composition root."""

    def __init__(self, fns: Iterable[Callable[..., Any]]) -> None:
        self._specs: dict[str, ActionSpec] = {}
        for fn in fns:
            spec = spec_of(fn)
            if spec.name in self._specs:
                raise ActionsError(f"action {spec.name} registered twice")
            self._specs[spec.name] = spec

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def names(self) -> list[str]:
        return sorted(self._specs)

    def get(self, name: str) -> ActionSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise ActionsError(f"unknown action {name!r}; known: {self.names()}") from None
