"""`stormwatch actions` for an operator on the host: same state machine, same audit."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import pytest

from actions.base import State
from actions.service import build_engine
from actions.settings import ActionsSettings
from stormwatch.cli import main
from stormwatch.settings import StormwatchSettings
from stormwatch.store import Store

from .conftest import Receiver, audit_rows, episode


class _Borrowed:
    """The session engine, lent to the command without letting it close it."""

    def __init__(self, store: Store) -> None:
        self._s = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s, name)

    def close(self) -> None:
        return


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, receiver: Receiver,
            chdb_store: Store, db_settings: StormwatchSettings,
            policy_file: Any) -> ActionsSettings:  # fmt: skip
    env = {
        "STORMWATCH_DATABASE": db_settings.database,
        "STORMWATCH_DRY_RUN": "false",
        "STORMWATCH_POLICIES": str(policy_file()),
        "STORMWATCH_APPROVERS": "UALICE",
        "STORMWATCH_ACTION_BASE_URL": receiver.url,
        "STORMWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:9",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr("stormwatch.store.open_store", lambda s, **kw: _Borrowed(chdb_store))
    return ActionsSettings(data_dir=tmp_path)


def _propose(settings: ActionsSettings, **kw: Any) -> str:
    e = build_engine(settings, store=None, database="unused", bootstrap=None)
    try:
        from datetime import UTC, datetime

        [p] = e.on_episode(episode(start=datetime.now(UTC), **kw), datetime.now(UTC))
        return p.id
    finally:
        e.state.close()


def test_cli_lists_and_approves_once_with_audit(
    cli_env: ActionsSettings, tmp_path: Path, receiver: Receiver, chdb_store: Store,
    db_settings: StormwatchSettings, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    pid = _propose(cli_env)
    assert main(["--data-dir", str(tmp_path), "actions", "list"]) == 0
    assert pid in capsys.readouterr().out
    assert main(["--data-dir", str(tmp_path), "actions", "approve", pid[:6]]) == 0
    assert f"{pid}: approved by cli:{getpass.getuser()}" in capsys.readouterr().out
    assert len(receiver.posts("/act/scale")) == 1
    assert main(["--data-dir", str(tmp_path), "actions", "approve", pid]) == 0
    assert "already succeeded" in capsys.readouterr().out
    assert len(receiver.posts("/act/scale")) == 1
    rows = [(r["state"], r["source"]) for r in audit_rows(chdb_store, db_settings.database)]
    assert ("approved", "cli") in rows and ("succeeded", "service") in rows
    assert ("ignored", "cli") in rows


def test_cli_reject_and_kill_switch(
    cli_env: ActionsSettings, tmp_path: Path, receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    pid = _propose(cli_env)
    assert main(["--data-dir", str(tmp_path), "actions", "reject", pid]) == 0
    assert main(["--data-dir", str(tmp_path), "actions", "kill", "on"]) == 0
    e = build_engine(cli_env, store=None, database="unused", bootstrap=None)
    try:
        assert e.state.get(pid).state == State.rejected  # type: ignore[union-attr]
        assert e.state.flag("kill_switch") == f"cli:{getpass.getuser()}"
    finally:
        e.state.close()
    assert main(["--data-dir", str(tmp_path), "actions", "silence", "checkout", "--for", "2h",
                 "--reason", "deploy"]) == 0  # fmt: skip
    e = build_engine(cli_env, store=None, database="unused", bootstrap=None)
    try:
        from datetime import UTC, datetime

        s = e.state.silenced("checkout", datetime.now(UTC))
        assert s is not None and s[2] == f"cli:{getpass.getuser()}" and s[3] == "deploy"
    finally:
        e.state.close()
    assert main(["--data-dir", str(tmp_path), "actions", "approve", "nope"]) == 2
    assert "0 proposals match" in capsys.readouterr().err
    assert receiver.posts("/act/") == []
