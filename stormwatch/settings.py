"""Typed settings (env prefix STORMWATCH_); one frozen object built per process entry point."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_BROKER = "local"


class Topics(BaseSettings):
    """Kafka topic names (STORMWATCH_TOPIC_RAW and so on)."""

    model_config = SettingsConfigDict(env_prefix="STORMWATCH_TOPIC_", frozen=True, extra="forbid")

    raw: str = "telemetry.raw"
    otlp_metrics: str = "otlp_metrics"
    otlp_spans: str = "otlp_spans"
    points: str = "telemetry.points"
    dlq: str = "telemetry.dlq"
    anomalies: str = "anomalies"
    partitions: int = Field(4, ge=1, le=1024)


class StormwatchSettings(BaseSettings):
    """Everything a stormwatch process needs to know; tests pass overrides as arguments."""

    model_config = SettingsConfigDict(env_prefix="STORMWATCH_", frozen=True, extra="ignore")

    data_dir: Path = Path(".stormwatch")
    kafka_bootstrap: str = LOCAL_BROKER
    broker_port: int = Field(19092, ge=0, le=65535)
    clickhouse_dsn: str = ""
    database: str = "stormwatch"
    topics: Topics = Field(default_factory=Topics)
    app_id: str = "stormwatch"
    window_s: float = Field(10.0, gt=0, description="aggregation window for span and DB series")
    lateness_s: float = Field(
        5.0, ge=0, description="how long a window waits for late observations"
    )
    detector: str = "robust"
    shadow_detector: str | None = Field(
        None, description="a detector scored beside the active one, stored, never acted on"
    )
    threshold: float = Field(0.9, gt=0, lt=1)
    retention_days: int = Field(30, ge=1)
    query_port: int = Field(0, ge=0, le=65535, description="embedded engine's query port; 0 = free")
    engine_wait_s: float = Field(
        60.0, ge=0, description="how long a `stormwatch worker` waits for `up` to serve its engine"
    )
    broker_session_timeout_s: float = Field(6.0, gt=0)
    queue_lag_threshold: float | None = Field(
        1000.0, gt=0, description="forecast queue lag crossing this (predicted breach); None: off"
    )
    forecast_horizon_s: float = Field(300.0, gt=0, description="how far ahead lag is forecast")
    checkpoint_s: float = Field(30.0, gt=0, description="how often detector state is saved")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING",
        description="log lines at this level and above, the stream workers' too; INFO adds "
        "partition assignments and audit lines (`-v`: DEBUG)",
    )
    fault_sink_failures: int = Field(
        0, ge=0, description="chaos testing: fail the first N inserts into points"
    )
    restore_before: datetime | None = Field(
        None, description="roll back: resume detectors from checkpoints older than this"
    )
    restore_after: datetime | None = Field(
        None,
        description="start afresh: ignore checkpoints older than this (`up --demo` sets its "
        "start, so each demo run begins with new detectors)",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, v: str) -> str:
        v = v.strip()
        if v == LOCAL_BROKER:
            return v
        for part in v.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port] or '{LOCAL_BROKER}', got {v!r}")
        return v

    @field_validator("clickhouse_dsn")
    @classmethod
    def _dsn(cls, v: str) -> str:
        scheme = urlparse(v).scheme
        if v and scheme not in {"chdb", "http", "https", "clickhouse", "clickhouses"}:
            # Only the scheme: the DSN may hold a password, and errors end up in logs.
            raise ValueError(f"expected chdb:///path or http(s)://host:8123, got a {scheme!r} DSN")
        return v

    @model_validator(mode="after")
    def _default_dsn(self) -> StormwatchSettings:
        if not self.clickhouse_dsn:
            dsn = f"chdb://{(self.data_dir / 'clickhouse').resolve()}"
            object.__setattr__(self, "clickhouse_dsn", dsn)
        return self

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_dsn.startswith("chdb:")

    @property
    def chdb_path(self) -> Path:
        return Path(urlparse(self.clickhouse_dsn).path)

    @property
    def local_broker(self) -> bool:
        return self.kafka_bootstrap == LOCAL_BROKER

    def bootstrap(self) -> str:
        """The address clients connect to (the embedded broker's when it is local)."""
        return f"127.0.0.1:{self.broker_port}" if self.local_broker else self.kafka_bootstrap

    def redacted_dsn(self) -> str:
        """The DSN without its password, for logs and errors."""
        u = urlparse(self.clickhouse_dsn)
        if u.password:
            return self.clickhouse_dsn.replace(f":{u.password}@", ":***@")
        return self.clickhouse_dsn


def load_settings(**overrides: object) -> StormwatchSettings:
    """Build settings from the environment plus overrides; errors name the setting (env var)."""
    from pydantic import ValidationError

    from stormwatch import StormwatchError

    try:
        return StormwatchSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = "_".join(str(p) for p in err["loc"]).upper()
            lines.append(f"STORMWATCH_{loc}: {err['msg']}")
        raise StormwatchError("bad settings:\n  " + "\n  ".join(lines)) from None
