"""compose/: the file validates with docker-compose, its ClickHouse DDL is the code's, and
.env.example carries every setting with safe defaults (Debian package `docker-compose`)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose"


def _render() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_render", COMPOSE / "render.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def compose_copy(tmp_path: Path) -> Path:
    """compose/ with .env made from .env.example, as the README tells users to do."""
    shutil.copytree(COMPOSE, tmp_path / "compose")
    shutil.copy(COMPOSE / ".env.example", tmp_path / "compose" / ".env")
    return tmp_path


def _compose(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    assert exe, "install Debian's docker-compose package (apt-get install docker-compose)"
    return subprocess.run([exe, "-f", "compose/docker-compose.yml", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_compose_config_validates(compose_copy: Path) -> None:
    r = _compose(compose_copy, "config", "-q")
    assert r.returncode == 0, r.stderr


def test_compose_stack_has_pinned_images_health_checks_and_demo_profile(
    compose_copy: Path,
) -> None:
    r = _compose(compose_copy, "--profile", "demo", "config")
    assert r.returncode == 0, r.stderr
    services = yaml.safe_load(r.stdout)["services"]
    assert set(services) == {"kafka", "clickhouse", "grafana", "worker", "actions", "demo"}
    for name, svc in services.items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned {image}"
        if name != "demo":
            assert "healthcheck" in svc, f"{name} has no health check"
    assert services["demo"]["profiles"] == ["demo"]
    assert "ports" not in services["worker"] and "container_name" not in services["worker"]
    assert services["worker"]["environment"]["STORMWATCH_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "grafana-clickhouse-datasource" in services["grafana"]["environment"][
        "GF_INSTALL_PLUGINS"]  # fmt: skip
    # Only the demo is behind a profile: a plain `up` starts everything else.
    assert [n for n, svc in services.items() if "profiles" in svc] == ["demo"]


def test_compose_scales_worker_without_conflicts(compose_copy: Path) -> None:
    """`--scale worker=3` needs no fixed name or host port on the worker."""
    svc = yaml.safe_load(_compose(compose_copy, "config").stdout)["services"]["worker"]
    assert not {"container_name", "ports", "hostname"} & set(svc)


def test_init_sql_is_the_schema_the_code_creates() -> None:
    assert (COMPOSE / "clickhouse" / "init.sql").read_text() == _render().init_sql(), (
        "stale: run `python compose/render.py`"
    )


def test_init_sql_creates_every_table() -> None:
    from stormwatch.schema import TABLES

    text = (COMPOSE / "clickhouse" / "init.sql").read_text()
    for table in TABLES:
        assert f"CREATE TABLE IF NOT EXISTS stormwatch.{table} (" in text


def test_env_example_lists_every_setting_with_dry_run_on() -> None:
    text = (COMPOSE / ".env.example").read_text()
    assert text == _render().env_example(), "stale: run `python compose/render.py`"
    from actions.settings import ActionsSettings
    from stormwatch.settings import StormwatchSettings, Topics

    names = [f"STORMWATCH_{f.upper()}" for f in StormwatchSettings.model_fields if f != "topics"]
    names += [f"STORMWATCH_TOPIC_{f.upper()}" for f in Topics.model_fields]
    names += [f"STORMWATCH_{f.upper()}" for f in ActionsSettings.model_fields]
    for n in names:
        assert f"{n}=" in text, n
    assert "\nSTORMWATCH_DRY_RUN=true\n" in text and "\nSTORMWATCH_KILL_SWITCH=false\n" in text


def test_env_example_values_are_valid_settings() -> None:
    """What a user copies must load: every uncommented STORMWATCH_* value parses."""
    from actions.settings import ActionsSettings
    from stormwatch.settings import StormwatchSettings

    env = {}
    for line in (COMPOSE / ".env.example").read_text().splitlines():
        if line.startswith("STORMWATCH_") and "=" in line:
            k, _, v = line.partition("=")
            env[k] = v
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        s = StormwatchSettings(clickhouse_dsn="http://u:p@clickhouse:8123",
                               kafka_bootstrap="kafka:9092")  # fmt: skip
        a = ActionsSettings()
    assert s.topics.partitions == 4 and a.dry_run is True and a.kill_switch is False
