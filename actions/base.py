"""The actions contract: proposal states, guard verdicts, and the invocations actions return.

An action is a plain function `fn(params: ParamsModel) -> Invocation`: it decides *what* to
run and never runs it. Executors perform invocations; dry-run records them instead. Guards
return a `Verdict` (a refusal is a value, not an exception) and are given the time (`now=`).

Proposal states (one truth, in SQLite):
    proposed → approved | rejected | expired;  approved → executing → succeeded | failed;
    succeeded → rolled_back.  `blocked` is a proposal a guard refused before it was offered.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field


class State(StrEnum):
    blocked = "blocked"
    proposed = "proposed"
    approved = "approved"
    rejected = "rejected"
    expired = "expired"
    executing = "executing"
    succeeded = "succeeded"
    failed = "failed"
    rolled_back = "rolled_back"


LIVE = (State.proposed, State.approved, State.executing)
EXECUTED = (State.executing, State.succeeded, State.failed, State.rolled_back)


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    guard: str
    ok: bool
    reason: str = ""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HttpCall(_Frozen):
    """POST `json` to `url` (the HTTP webhook executor)."""

    executor: Literal["http"] = "http"
    url: str
    json_body: dict[str, Any] = Field(default_factory=dict)


class CommandCall(_Frozen):
    """Run allow-listed command `command` with `args` filling its argv slots (no shell)."""

    executor: Literal["command"] = "command"
    command: str
    args: dict[str, str] = Field(default_factory=dict)


class KafkaCommand(_Frozen):
    """A message for the operator's own agent on the command topic."""

    executor: Literal["kafka"] = "kafka"
    key: str
    value: dict[str, Any]


Invocation = HttpCall | CommandCall | KafkaCommand


class Result(BaseModel):
    model_config = ConfigDict(frozen=True)

    ok: bool
    detail: str


class Executor(Protocol):
    def run(self, call: Any) -> Result:
        """Perform the call; failures are a `Result(ok=False)`, never an exception."""


class Proposal(BaseModel):
    """A remediation offered for approval; the row in the proposals table."""

    model_config = ConfigDict(frozen=True)

    id: str
    state: State
    policy: str
    action: str
    params: dict[str, Any]
    rollback_action: str | None = None
    rollback_params: dict[str, Any] | None = None
    target: str
    service: str
    episode_id: int
    series_id: int
    incident_id: str
    explanation: str = ""
    detector: str = ""
    detector_version: str = ""
    created_at: datetime
    expires_at: datetime
    decided_by: str = ""
    decided_at: datetime | None = None
    executed_at: datetime | None = None
    dry_run: bool = False
    outcome: str = ""
    detail: str = ""
    watch_until: datetime | None = None
    notified: bool = False
    response_url: str = ""
    guards: list[Verdict] = Field(default_factory=list)


class Guard(Protocol):
    @property
    def name(self) -> str: ...

    def check(self, proposal: Proposal, now: datetime, *, executing: bool) -> Verdict: ...
