"""The shipped actions: generic executor calls and the demo's remediations (HTTP calls)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator

from actions.base import CommandCall, HttpCall, KafkaCommand
from actions.registry import action

NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Url(_Params):
    url: str

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        u = urlparse(v)
        if u.scheme not in {"http", "https"} or not u.netloc:
            raise ValueError("must be an http(s) URL")
        return v


class HttpPost(_Url):
    body: dict[str, Any] = Field(default_factory=dict)


class RunCommand(_Params):
    command: str = Field(pattern=NAME)
    args: dict[str, str] = Field(default_factory=dict)


class SendCommand(_Params):
    command: str = Field(pattern=NAME)
    target: str = Field(pattern=NAME)
    args: dict[str, str | int | float | bool] = Field(default_factory=dict)


class ScaleConsumers(_Url):
    queue: str = Field(pattern=NAME)
    group: str = Field(pattern=NAME)
    replicas: int = Field(ge=1, le=100)


class RestartService(_Url):
    service: str = Field(pattern=NAME)


class SwitchFallback(_Url):
    service: str = Field(pattern=NAME)
    fallback: str = Field(pattern=NAME)
    enabled: bool = True


@action
def http_post(params: HttpPost) -> HttpCall:
    return HttpCall(url=params.url, json_body=params.body)


@action
def run_command(params: RunCommand) -> CommandCall:
    return CommandCall(command=params.command, args=params.args)


@action
def send_command(params: SendCommand) -> KafkaCommand:
    value = {"command": params.command, "target": params.target, "args": params.args}
    return KafkaCommand(key=params.target, value=value)


@action
def scale_consumers(params: ScaleConsumers) -> HttpCall:
    body = {"action": "scale_consumers", "queue": params.queue, "group": params.group,
            "replicas": params.replicas}  # fmt: skip
    return HttpCall(url=params.url, json_body=body)


@action
def restart_service(params: RestartService) -> HttpCall:
    return HttpCall(url=params.url, json_body={"action": "restart", "service": params.service})


@action
def switch_fallback(params: SwitchFallback) -> HttpCall:
    body = {"action": "switch_fallback", "service": params.service, "fallback": params.fallback,
            "enabled": params.enabled}  # fmt: skip
    return HttpCall(url=params.url, json_body=body)


SHIPPED = [http_post, run_command, send_command, scale_consumers, restart_service, switch_fallback]
