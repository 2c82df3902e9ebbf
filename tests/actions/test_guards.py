from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from actions.base import Proposal, State
from actions.guards import (
    BlastRadius,
    Cooldown,
    DryRun,
    KillSwitch,
    Maintenance,
    RateLimit,
    StillOpen,
    run_guards,
)
from actions.policy import Policy, Window
from actions.state import StateStore

from .conftest import T0

POLICY = Policy.model_validate({
    "name": "p", "action": "http_post", "match": {},
    "guards": {"cooldown_s": 600, "max_executions": 2, "window_s": 3600, "blast_radius": 2},
})  # fmt: skip
POLICIES = {"p": POLICY, "q": POLICY.model_copy(update={"name": "q"})}


@pytest.fixture
def state(tmp_path: Path) -> StateStore:
    s = StateStore(tmp_path / "a.sqlite3")
    yield s
    s.close()


def proposal(pid: str = "p1", target: str = "queue/orders", policy: str = "p", *,
             state: State = State.proposed, executed_at: datetime | None = None,
             episode_id: int = 1) -> Proposal:  # fmt: skip
    return Proposal(id=pid, state=state, policy=policy, action="http_post", params={},
                    target=target, service="fulfillment", episode_id=episode_id, series_id=7,
                    incident_id="i", created_at=T0, expires_at=T0 + timedelta(hours=1),
                    executed_at=executed_at)  # fmt: skip


def ran(state: StateStore, pid: str, target: str, ago_s: float, policy: str = "p") -> None:
    at = T0 - timedelta(seconds=ago_s)
    state.insert(
        proposal(pid, target, policy, state=State.succeeded, executed_at=at, episode_id=hash(pid))
    )


def test_kill_switch_refuses_from_setting_and_flag(state: StateStore) -> None:
    assert not KillSwitch(state, setting=True).check(proposal(), T0, executing=True).ok
    assert KillSwitch(state).check(proposal(), T0, executing=True).ok
    state.set_flag("kill_switch", "cli:alice")
    v = KillSwitch(state).check(proposal(), T0, executing=True)
    assert not v.ok and "cli:alice" in v.reason


def test_maintenance_refuses_inside_a_window() -> None:
    w = Window(name="db upgrade", start=T0 - timedelta(minutes=5), end=T0 + timedelta(minutes=5),
               services=["fulfillment"])  # fmt: skip
    v = Maintenance([w]).check(proposal(), T0, executing=False)
    assert not v.ok and "db upgrade" in v.reason
    assert Maintenance([w]).check(proposal(), T0 + timedelta(minutes=6), executing=False).ok


def test_cooldown_refuses_the_same_target_until_it_passes(state: StateStore) -> None:
    ran(state, "old", "queue/orders", ago_s=100)
    g = Cooldown(state, POLICIES)
    v = g.check(proposal(), T0, executing=False)
    assert not v.ok and "cooling 500s more" in v.reason
    assert g.check(proposal(target="queue/payments"), T0, executing=False).ok
    assert g.check(proposal(), T0 + timedelta(seconds=501), executing=False).ok


def test_rate_limit_refuses_per_policy_and_globally(state: StateStore) -> None:
    ran(state, "a", "t1", ago_s=60)
    ran(state, "b", "t2", ago_s=120)
    per = RateLimit(state, POLICIES, global_max=100, global_window_s=3600)
    v = per.check(proposal(), T0, executing=False)
    assert not v.ok and "policy p ran 2 times" in v.reason
    assert per.check(proposal(policy="q"), T0, executing=False).ok
    glob = RateLimit(state, POLICIES, global_max=2, global_window_s=3600)
    v = glob.check(proposal(policy="q"), T0, executing=False)
    assert not v.ok and "global limit 2" in v.reason
    assert per.check(proposal(), T0 + timedelta(hours=1), executing=False).ok


def test_blast_radius_refuses_a_new_target_beyond_the_limit(state: StateStore) -> None:
    ran(state, "a", "t1", ago_s=60)
    ran(state, "b", "t2", ago_s=60)
    g = BlastRadius(state, POLICIES)
    v = g.check(proposal(target="t3"), T0, executing=False)
    assert not v.ok and "already touched 2 targets" in v.reason
    assert g.check(proposal(target="t1"), T0, executing=False).ok


def test_still_open_refuses_a_cleared_or_unknown_anomaly(state: StateStore) -> None:
    g = StillOpen(state)
    assert "unknown" in g.check(proposal(), T0, executing=True).reason
    state.put_episode(1, 7, "fulfillment", True, 1000, "{}", T0)
    assert g.check(proposal(), T0, executing=True).ok
    state.put_episode(1, 7, "fulfillment", False, 2000, "{}", T0)
    v = g.check(proposal(), T0, executing=True)
    assert not v.ok and v.reason == "the anomaly has cleared"
    state.put_episode(1, 7, "fulfillment", True, 1500, "{}", T0)  # a stale, redelivered message
    assert not g.check(proposal(), T0, executing=True).ok


def test_dry_run_passes_and_says_so() -> None:
    v = DryRun(True).check(proposal(), T0, executing=True)
    assert v.ok and "dry run" in v.reason


def test_run_guards_fails_closed_when_a_guard_breaks() -> None:
    class Broken:
        name = "broken"

        def check(self, p: Proposal, now: datetime, *, executing: bool) -> object:
            raise RuntimeError("boom")

    [v] = run_guards([Broken()], proposal(), T0, executing=True)  # type: ignore[list-item]
    assert not v.ok and v.guard == "broken" and "RuntimeError" in v.reason


def test_still_open_follows_a_flapping_series(state: StateStore) -> None:
    state.put_episode(1, 7, "fulfillment", False, 2000, "{}", T0)
    state.put_episode(2, 7, "fulfillment", True, 3000, "{}", T0)  # the series opened again
    v = StillOpen(state).check(proposal(), T0, executing=True)
    assert v.ok


def test_silence_refuses_a_silenced_service_until_it_ends(state: StateStore) -> None:
    from actions.guards import Silence

    state.silence("fulfillment", T0 + timedelta(minutes=30), "cli:ops", "db migration")
    v = Silence(state).check(proposal(), T0, executing=False)
    assert not v.ok and v.reason == "fulfillment silenced by cli:ops until 12:30:00: db migration"
    assert Silence(state).check(proposal(), T0 + timedelta(minutes=31), executing=False).ok
    state.silence("*", T0 + timedelta(minutes=5), "cli:ops")
    assert not Silence(state).check(proposal(), T0, executing=False).ok
    state.silence("*", None, "cli:ops")
    state.silence("fulfillment", None, "cli:ops")
    assert Silence(state).check(proposal(), T0, executing=False).ok
