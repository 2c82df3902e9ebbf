"""Remediation policies from YAML, validated at start-up: a bad file stops start-up with the
line and the reason. A policy matches episodes, names an action with templated params, a
rollback, the guards' limits and who may approve.

Templates are `{{ var }}` with var one of: service, kind, name, severity, series_id,
episode_id, base_url, label.<key>. Nothing else is evaluated (no expressions, no attributes).
"""

from __future__ import annotations

import re
from datetime import datetime, time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from actions import ActionsError
from actions.registry import ActionRegistry
from detectors.episodes import Episode

SEVERITIES = {"minor": 0, "major": 1, "critical": 2}
VAR = re.compile(r"\{\{\s*([a-z_]+(?:\.[A-Za-z0-9_.-]+)?)\s*\}\}")
PLAIN_VARS = {"service", "kind", "name", "severity", "series_id", "episode_id", "base_url"}
SLOT = re.compile(r"^\{([a-z_][a-z0-9_]*)\}$")


def _compile(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(f"not a valid regular expression: {e}") from None


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Match(_Model):
    """Every field given must hold; strings are regular expressions matched in full."""

    service: str | None = None
    kind: str | None = None
    name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    min_severity: Literal["minor", "major", "critical"] = "minor"
    min_duration_s: float = Field(default=0.0, ge=0)
    predicted_breach: bool | None = Field(
        default=None, description="true: only episodes whose signals include 'predicted_breach'"
    )

    @field_validator("service", "kind", "name")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            _compile(v)
        return v

    @field_validator("labels")
    @classmethod
    def _label_regex(cls, v: dict[str, str]) -> dict[str, str]:
        for pattern in v.values():
            _compile(pattern)
        return v


class ActionRef(_Model):
    action: str
    params: dict[str, Any] = Field(default_factory=dict)


class Limits(_Model):
    cooldown_s: float = Field(default=600.0, ge=0, description="per target, after an execution")
    max_executions: int = Field(default=3, ge=1, description="per policy per window")
    window_s: float = Field(default=3600.0, gt=0)
    blast_radius: int = Field(default=3, ge=1, description="distinct targets per window")


class Policy(_Model):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    description: str = ""
    match: Match
    target: str = "{{service}}"
    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    rollback: ActionRef | None = None
    guards: Limits = Field(default_factory=Limits)
    approvers: list[str] = Field(default_factory=list, description="empty: the global list")
    ttl_s: float | None = Field(default=None, gt=0)


class CommandSpec(_Model):
    """An allow-listed command: fixed argv whose `{slot}` elements take one checked value."""

    argv: list[str] = Field(min_length=1)
    args: dict[str, str] = Field(default_factory=dict, description="slot → regex (full match)")

    @model_validator(mode="after")
    def _slots(self) -> CommandSpec:
        if SLOT.match(self.argv[0]):
            raise ValueError("argv[0] (the program) cannot be a slot")
        for part in self.argv:
            m = SLOT.match(part)
            if m and m.group(1) not in self.args:
                raise ValueError(f"slot {{{m.group(1)}}} has no pattern in args")
            if not m and ("{" in part or "}" in part):
                raise ValueError(f"{part!r}: a slot must be a whole argv element")
        for pattern in self.args.values():
            _compile(pattern)
        return self


class Window(_Model):
    """A maintenance window: absolute (start/end) or daily (UTC 'HH:MM'-'HH:MM')."""

    name: str
    services: list[str] = Field(default_factory=list, description="empty: every service")
    start: datetime | None = None
    end: datetime | None = None
    daily_from: time | None = None
    daily_to: time | None = None

    @model_validator(mode="after")
    def _shape(self) -> Window:
        absolute = self.start is not None and self.end is not None
        daily = self.daily_from is not None and self.daily_to is not None
        if absolute == daily:
            raise ValueError("give either start and end, or daily_from and daily_to")
        return self

    def covers(self, service: str, now: datetime) -> bool:
        if self.services and service not in self.services:
            return False
        if self.start is not None and self.end is not None:
            return self.start <= now < self.end
        t, a, b = now.timetz().replace(tzinfo=None), self.daily_from, self.daily_to
        assert a is not None and b is not None  # noqa: S101 - checked by _shape
        return a <= t < b if a <= b else (t >= a or t < b)


class PolicyFile(_Model):
    policies: list[Policy] = Field(default_factory=list)
    commands: dict[str, CommandSpec] = Field(default_factory=dict)
    maintenance: list[Window] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> PolicyFile:
        seen: set[str] = set()
        for p in self.policies:
            if p.name in seen:
                raise ValueError(f"policy name {p.name!r} is used twice")
            seen.add(p.name)
        return self


# --- matching and templates ----------------------------------------------------------------


def matches(policy: Policy, ep: Episode) -> bool:
    m = policy.match
    for pattern, value in ((m.service, ep.service), (m.kind, ep.kind), (m.name, ep.name)):
        if pattern is not None and not re.fullmatch(pattern, value):
            return False
    for key, pattern in m.labels.items():
        if key not in ep.labels or not re.fullmatch(pattern, ep.labels[key]):
            return False
    if SEVERITIES.get(ep.severity, 0) < SEVERITIES[m.min_severity]:
        return False
    if (ep.end_ms - ep.start_ms) / 1000.0 < m.min_duration_s:
        return False
    if m.predicted_breach is not None and m.predicted_breach != ("predicted_breach" in ep.signals):
        return False
    return True


def context(ep: Episode, base_url: str) -> dict[str, str]:
    ctx = {"service": ep.service, "kind": ep.kind, "name": ep.name, "severity": ep.severity,
           "series_id": str(ep.series_id), "episode_id": str(ep.episode_id),
           "base_url": base_url.rstrip("/")}  # fmt: skip
    ctx.update({f"label.{k}": v for k, v in ep.labels.items()})
    return ctx


def _render_str(text: str, ctx: dict[str, str], *, url: bool) -> str:
    def sub(m: re.Match[str]) -> str:
        var = m.group(1)
        if var not in ctx:
            raise ActionsError(f"template variable {var!r} has no value for this episode")
        # In a URL every value except base_url is one quoted path/query piece: no '/', '?'.
        return quote(ctx[var], safe="") if url and var != "base_url" else ctx[var]

    return VAR.sub(sub, text)


def render(value: Any, ctx: dict[str, str], *, key: str = "") -> Any:
    """Fill templates in strings (recursively); a value is substituted whole, never parsed."""
    if isinstance(value, str):
        return _render_str(value, ctx, url=key == "url")
    if isinstance(value, dict):
        return {k: render(v, ctx, key=k) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, ctx) for v in value]
    return value


def _check_vars(value: Any) -> None:
    if isinstance(value, str):
        for var in VAR.findall(value):
            if var not in PLAIN_VARS and not var.startswith("label."):
                raise ValueError(f"unknown template variable {var!r}")
        if "{{" in VAR.sub("", value):
            raise ValueError(f"malformed template in {value!r}")
    elif isinstance(value, dict):
        for v in value.values():
            _check_vars(v)
    elif isinstance(value, list):
        for v in value:
            _check_vars(v)


# --- loading with line numbers ------------------------------------------------------------


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int:
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            nxt = node.value[part] if part < len(node.value) else None
        else:
            nxt = None
        if nxt is None:
            break
        node, line = nxt, nxt.start_mark.line + 1
    return line


def load_policies(path: Path, registry: ActionRegistry) -> PolicyFile:
    """Parse and check a policy file; ActionsError names the file, line and reason."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ActionsError(f"{path}: cannot read policies: {e.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise ActionsError(f"{path}:{line}: not valid YAML: {getattr(e, 'problem', e)}") from None
    try:
        pf = PolicyFile.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(p for p in err["loc"] if not isinstance(p, str) or not p.startswith("["))
        where = ".".join(str(p) for p in loc)
        raise ActionsError(f"{path}:{_line_of(node, loc)}: {where}: {err['msg']}") from None
    for i, p in enumerate(pf.policies):
        refs: list[tuple[tuple[int | str, ...], ActionRef]] = [
            (("policies", i), ActionRef(action=p.action, params=p.params))
        ]
        if p.rollback:
            refs.append((("policies", i, "rollback"), p.rollback))
        for loc, ref in refs:
            _check_ref(path, node, loc, ref, p, registry)
        try:
            _check_vars(p.target)
        except ValueError as e:
            raise ActionsError(f"{path}:{_line_of(node, ('policies', i, 'target'))}: {e}") from None
    return pf


def _check_ref(path: Path, node: yaml.Node | None, loc: tuple[int | str, ...], ref: ActionRef,
               p: Policy, registry: ActionRegistry) -> None:  # fmt: skip
    if ref.action not in registry:
        line = _line_of(node, (*loc, "action"))
        raise ActionsError(
            f"{path}:{line}: policy {p.name}: unknown action {ref.action!r} "
            f"(known: {', '.join(registry.names())})"
        )
    try:
        _check_vars(ref.params)
    except ValueError as e:
        raise ActionsError(f"{path}:{_line_of(node, (*loc, 'params'))}: {e}") from None
    sample = {v: "x1" for v in PLAIN_VARS} | {"base_url": "http://127.0.0.1:1"}
    sample |= {m: "x1" for m in VAR.findall(str(ref.params)) if m.startswith("label.")}
    try:
        registry.get(ref.action).build(render(ref.params, sample))
    except ActionsError as e:
        line = _line_of(node, (*loc, "params", *getattr(e, "loc", ())))
        raise ActionsError(f"{path}:{line}: policy {p.name}: {e}") from None
