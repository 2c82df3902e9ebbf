"""StateStore.batch: one transaction for many writes, committed or rolled back as a whole."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from actions.state import StateStore

from .conftest import T0


def _put(store: StateStore, episode_id: int) -> None:
    store.put_episode(episode_id, 7, "checkout", True, 1000, "{}", T0)


def test_batch_commits_its_writes_for_other_connections(tmp_path: Path) -> None:
    store, other = StateStore(tmp_path / "a.db"), StateStore(tmp_path / "a.db")
    with store.batch():
        _put(store, 1)
        with store.batch():  # a nested batch joins the outer transaction
            _put(store, 2)
        assert other.episode_open(1) is None  # not visible before the commit
    assert other.episode_open(1) is True
    assert other.episode_open(2) is True
    store.close()
    other.close()


def test_batch_rolls_back_when_an_error_leaves_it(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "a.db")
    with pytest.raises(RuntimeError), store.batch():
        _put(store, 1)
        raise RuntimeError("boom")
    assert store.episode_open(1) is None
    _put(store, 2)  # back in autocommit mode
    assert StateStore(tmp_path / "a.db").episode_open(2) is True
    store.close()


def test_a_write_from_another_thread_survives_a_batch_rolled_back_meanwhile(
    tmp_path: Path,
) -> None:
    """A Slack click's write waits for the consumer's batch instead of joining it."""
    store = StateStore(tmp_path / "a.db")
    inside, clicked = threading.Event(), threading.Event()

    def click() -> None:
        inside.wait(5)
        store.set_flag("kill_switch", "UALICE")
        clicked.set()

    t = threading.Thread(target=click)
    t.start()
    with pytest.raises(RuntimeError), store.batch():
        _put(store, 1)
        inside.set()
        assert not clicked.wait(0.3)  # the click waits for the batch
        raise RuntimeError("boom")
    t.join(5)
    assert store.episode_open(1) is None
    assert StateStore(tmp_path / "a.db").flag("kill_switch") == "UALICE"
    store.close()
