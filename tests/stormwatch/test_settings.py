"""Settings: environment with prefix, overrides, and errors that name the setting."""

from __future__ import annotations

import pytest

from stormwatch import StormwatchError
from stormwatch.settings import load_settings


def test_settings_read_environment_and_default_to_embedded(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("STORMWATCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("STORMWATCH_TOPIC_RAW", "my.raw")
    s = load_settings()
    assert s.local_broker and s.bootstrap() == "127.0.0.1:19092"
    assert s.clickhouse_dsn == f"chdb://{tmp_path.resolve()}/clickhouse"
    assert s.topics.raw == "my.raw"
    assert s.log_level == "WARNING"
    monkeypatch.setenv("STORMWATCH_LOG_LEVEL", "info")
    assert load_settings().log_level == "INFO"


@pytest.mark.parametrize(
    ("env", "value", "needle"),
    [
        ("STORMWATCH_KAFKA_BOOTSTRAP", "no-port-here", "STORMWATCH_KAFKA_BOOTSTRAP"),
        ("STORMWATCH_CLICKHOUSE_DSN", "mysql://x", "STORMWATCH_CLICKHOUSE_DSN"),
        ("STORMWATCH_THRESHOLD", "1.5", "STORMWATCH_THRESHOLD"),
        ("STORMWATCH_WINDOW_S", "soon", "STORMWATCH_WINDOW_S"),
        ("STORMWATCH_LOG_LEVEL", "chatty", "STORMWATCH_LOG_LEVEL"),
    ],
)
def test_bad_setting_stops_with_its_name(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(StormwatchError, match=needle):
        load_settings()


def test_server_dsn_password_is_redacted() -> None:
    s = load_settings(clickhouse_dsn="http://default:hunter2@ch:8123")
    assert not s.embedded_clickhouse
    assert "hunter2" not in s.redacted_dsn() and "***" in s.redacted_dsn()


def test_bad_dsn_error_does_not_echo_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORMWATCH_CLICKHOUSE_DSN", "mysql://admin:hunter2@db:3306")
    with pytest.raises(StormwatchError) as e:
        load_settings()
    assert "hunter2" not in str(e.value) and "'mysql' DSN" in str(e.value)
