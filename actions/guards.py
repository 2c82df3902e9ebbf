"""Guards: each answers one question about a proposal with a `Verdict`; none raises, none
reads the clock (`now` is passed in). They run when a proposal is made (the message shows
them) and again right before execution (state may have changed while a person decided).
A guard that fails unexpectedly refuses: the guards fail closed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from actions.base import Guard, Proposal, Verdict
from actions.policy import Policy, Window
from actions.state import StateStore

KILL_FLAG = "kill_switch"


def _ok(name: str, reason: str = "") -> Verdict:
    return Verdict(guard=name, ok=True, reason=reason)


def _no(name: str, reason: str) -> Verdict:
    return Verdict(guard=name, ok=False, reason=reason)


@dataclass(frozen=True)
class KillSwitch:
    """Refuses everything while the setting or the flag (`stormwatch actions kill on`) is on."""

    state: StateStore
    setting: bool = False
    name: str = "kill_switch"

    def check(self, p: Proposal, now: datetime, *, executing: bool) -> Verdict:
        if self.setting:
            return _no(self.name, "the kill switch is on (STORMWATCH_KILL_SWITCH)")
        who = self.state.flag(KILL_FLAG)
        if who is not None:
            return _no(self.name, f"the kill switch is on (set by {who})")
        return _ok(self.name)


@dataclass(frozen=True)
class Maintenance:
    windows: Sequence[Window]
    name: str = "maintenance"

    def check(self, p: Proposal, now: datetime, *, executing: bool) -> Verdict:
        for w in self.windows:
            if w.covers(p.service, now):
                return _no(self.name, f"maintenance window {w.name!r} covers {p.service}")
        return _ok(self.name)


@dataclass(frozen=True)
class Silence:
    """Refuses while an operator silenced the service (`stormwatch actions silence`)."""

    state: StateStore
    name: str = "silence"

    def check(self, p: Proposal, now: datetime, *, executing: bool) -> Verdict:
        s = self.state.silenced(p.service, now)
        if s is None:
            return _ok(self.name)
        service, until, by, reason = s
        why = f": {reason}" if reason else ""
        return _no(self.name, f"{service} silenced by {by} until {until:%H:%M:%S}{why}")


@dataclass(frozen=True)
class Cooldown:
    state: StateStore
    policies: Mapping[str, Policy]
    name: str = "cooldown"

    def check(self, p: Proposal, now: datetime, *, executing: bool) -> Verdict:
        cool = self.policies[p.policy].guards.cooldown_s
        last = self.state.last_execution(p.target, exclude=p.id)
        if last is not None and now - last < timedelta(seconds=cool):
            left = cool - (now - last).total_seconds()
            return _no(
                self.name, f"{p.target} was acted on {last:%H:%M:%S}; cooling {left:.0f}s more"
            )
        return _ok(self.name)


@dataclass(frozen=True)
class RateLimit:
    """At most `max_executions` per policy per window, and a global cap over all policies."""

    state: StateStore
    policies: Mapping[str, Policy]
    global_max: int
    global_window_s: float
    name: str = "rate_limit"

    def check(self, p: Proposal, now: datetime, *, executing: bool) -> Verdict:
        lim = self.policies[p.policy].guards
        n = self.state.executions_since(
            now - timedelta(seconds=lim.window_s), p.policy, exclude=p.id
        )
        if n >= lim.max_executions:
            return _no(self.name, f"policy {p.policy} ran {n} times in {lim.window_s:.0f}s "
                                  f"(limit {lim.max_executions})")  # fmt: skip
        g = self.state.executions_since(now - timedelta(seconds=self.global_window_s), exclude=p.id)
        if g >= self.global_max:
            return _no(self.name, f"{g} actions ran in {self.global_window_s:.0f}s "
                                  f"(global limit {self.global_max})")  # fmt: skip
        return _ok(self.name)


@dataclass(frozen=True)
class BlastRadius:
    """At most `blast_radius` distinct targets per policy per window."""

    state: StateStore
    policies: Mapping[str, Policy]
    name: str = "blast_radius"

    def check(self, p: Proposal, now: datetime, *, executing: bool) -> Verdict:
        lim = self.policies[p.policy].guards
        targets = self.state.targets_since(
            now - timedelta(seconds=lim.window_s), p.policy, exclude=p.id
        )
        if p.target not in targets and len(targets) >= lim.blast_radius:
            return _no(self.name, f"policy {p.policy} already touched {len(targets)} targets in "
                                  f"{lim.window_s:.0f}s (limit {lim.blast_radius})")  # fmt: skip
        return _ok(self.name)


@dataclass(frozen=True)
class StillOpen:
    """At execution: the anomaly must still be open (a cleared one needs no remedy). The
    episode's series counts: a flapping series closes one episode and opens the next."""

    state: StateStore
    name: str = "still_open"

    def check(self, p: Proposal, now: datetime, *, executing: bool) -> Verdict:
        is_open = self.state.anomaly_open(p.episode_id, p.series_id)
        if is_open is False:
            return _no(self.name, "the anomaly has cleared")
        if is_open is None:
            return _no(self.name, "the anomaly is unknown to this service")
        return _ok(self.name)


@dataclass(frozen=True)
class DryRun:
    """Never refuses: says whether the action will run or only be recorded."""

    dry_run: bool
    name: str = "dry_run"

    def check(self, p: Proposal, now: datetime, *, executing: bool) -> Verdict:
        if self.dry_run:
            return _ok(self.name, "dry run: the action will be recorded, not run")
        return _ok(self.name, "live: the action will run")


def default_guards(state: StateStore, policies: Mapping[str, Policy], windows: Sequence[Window],
                   *, kill_switch: bool, dry_run: bool, global_max: int,
                   global_window_s: float) -> list[Guard]:  # fmt: skip
    return [
        KillSwitch(state, kill_switch), Maintenance(windows), Silence(state),
        Cooldown(state, policies),
        RateLimit(state, policies, global_max, global_window_s), BlastRadius(state, policies),
        StillOpen(state), DryRun(dry_run),
    ]  # fmt: skip


def run_guards(guards: Sequence[Guard], p: Proposal, now: datetime, *,
               executing: bool) -> list[Verdict]:  # fmt: skip
    out = []
    for g in guards:
        try:
            out.append(g.check(p, now, executing=executing))
        except Exception as e:  # fail closed: a broken guard is a refusal, not a crash
            out.append(
                _no(getattr(g, "name", type(g).__name__), f"guard error: {type(e).__name__}")
            )
    return out


def refusal(verdicts: Sequence[Verdict]) -> Verdict | None:
    return next((v for v in verdicts if not v.ok), None)
