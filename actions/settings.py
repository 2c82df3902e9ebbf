"""Settings of the actions service (env prefix STORMWATCH_); secrets are SecretStr, never logged."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ActionsSettings(BaseSettings):
    """What the actions service and `stormwatch actions` need; tests pass overrides."""

    model_config = SettingsConfigDict(env_prefix="STORMWATCH_", frozen=True, extra="ignore")

    data_dir: Path = Path(".stormwatch")
    slack_webhook_url: SecretStr | None = Field(
        default=None, description="incoming webhook (a secret)"
    )
    slack_signing_secret: SecretStr | None = None
    slack_response_url_prefix: str = Field(
        default="https://hooks.slack.com/",
        description="a response_url must start with this, so a request cannot aim our POSTs",
    )
    approvers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Slack user IDs allowed to approve (comma-separated)"
    )
    actions_addr: str = "127.0.0.1:8787"
    action_base_url: str = Field(
        default="", description="{{base_url}} in policies; default the service"
    )
    dry_run: bool = True
    kill_switch: bool = False
    actions_db: Path | None = None
    policies: Path | None = None
    proposal_ttl_s: float = Field(default=900.0, gt=0)
    request_window_s: float = Field(
        default=300.0, gt=0, le=300.0, description="Slack timestamp window"
    )
    group_wait_s: float = Field(
        default=5.0, ge=0, description="wait for more episodes of one service"
    )
    group_window_s: float = Field(
        default=300.0, ge=0, description="episodes within it join the incident"
    )
    max_messages_per_min: int = Field(default=10, ge=1)
    watch_s: float = Field(
        default=120.0, ge=0, description="how long to wait for the anomaly to clear"
    )
    global_max_executions: int = Field(default=20, ge=1)
    global_window_s: float = Field(default=3600.0, gt=0)
    max_episode_age_s: float = Field(
        default=900.0, gt=0, description="older episodes get no proposal"
    )
    http_timeout_s: float = Field(default=5.0, gt=0)
    http_retries: int = Field(default=2, ge=0, le=10)
    command_timeout_s: float = Field(default=30.0, gt=0)
    command_topic: str = "stormwatch.commands"
    consumer_group: str = "stormwatch-actions"
    tick_s: float = Field(default=1.0, gt=0)

    @field_validator("approvers", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            return [u.strip() for u in v.split(",") if u.strip()]
        return v

    @field_validator("actions_addr")
    @classmethod
    def _addr(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"expected host:port, got {v!r}")
        return v

    @model_validator(mode="after")
    def _defaults(self) -> ActionsSettings:
        if self.actions_db is None:
            object.__setattr__(self, "actions_db", self.data_dir / "actions.sqlite3")
        if not self.action_base_url:
            object.__setattr__(self, "action_base_url", f"http://{self.actions_addr}")
        return self

    @property
    def host(self) -> str:
        return self.actions_addr.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.actions_addr.rpartition(":")[2])

    @property
    def db_path(self) -> Path:
        assert self.actions_db is not None  # noqa: S101 - set by the validator
        return self.actions_db
