"""The remediation engine: episode → proposal → decision → execution → watch → audit.

Plain steps over the durable state (`StateStore`); every public step takes `now` so the
tests drive time. `decide` is what a Slack click or `stormwatch actions approve` calls; it
answers quickly and hands execution to `runner` (a thread pool in the service, inline in the
tests). Execution claims `approved → executing` by compare-and-set, so it happens once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from actions import ActionsError
from actions.audit import LABELS, Auditor, Feedback, FeedbackCallback
from actions.base import CommandCall, HttpCall, Invocation, KafkaCommand, Proposal, State
from actions.executors import Executors, build_argv
from actions.guards import KILL_FLAG, default_guards, refusal, run_guards
from actions.policy import Policy, PolicyFile, context, matches, render
from actions.registry import ActionRegistry
from actions.settings import ActionsSettings
from actions.slack import SlackPoster, digest_message, incident_message, notice_message
from actions.state import StateStore
from detectors.episodes import Episode

log = logging.getLogger("stormwatch.actions")

Runner = Callable[[Callable[[], None]], Any]


def inline(fn: Callable[[], None]) -> None:
    fn()


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Decision:
    """What a decision request gets back: an HTTP status and a sentence for the person."""

    code: int
    message: str
    proposal: Proposal | None = None


class Engine:
    def __init__(self, settings: ActionsSettings, state: StateStore, auditor: Auditor,
                 registry: ActionRegistry, policies: PolicyFile, executors: Executors,
                 poster: SlackPoster, *, runner: Runner = inline,
                 on_feedback: FeedbackCallback | None = None,
                 clock: Callable[[], datetime] = utcnow, guards: Sequence[Any] | None = None,
                 ) -> None:  # fmt: skip
        self.settings, self.state, self.auditor = settings, state, auditor
        self.registry, self.policy_file, self.executors = registry, policies, executors
        self.poster, self.runner, self.on_feedback, self.clock = poster, runner, on_feedback, clock
        self.policies: dict[str, Policy] = {p.name: p for p in policies.policies}
        self._pruned: datetime | None = None
        self.guards = list(guards) if guards is not None else default_guards(
            state, self.policies, policies.maintenance, kill_switch=settings.kill_switch,
            dry_run=settings.dry_run, global_max=settings.global_max_executions,
            global_window_s=settings.global_window_s,
        )  # fmt: skip

    # --- episodes → proposals ----------------------------------------------------------
    def on_episode(self, ep: Episode, now: datetime) -> list[Proposal]:
        """Record the episode's state; propose for each matching policy (once per episode)."""
        self.state.put_episode(ep.episode_id, ep.series_id, ep.service, ep.is_open, ep.end_ms,
                               ep.model_dump_json(), now)  # fmt: skip
        if not ep.is_open or now.timestamp() - ep.end_ms / 1000 > self.settings.max_episode_age_s:
            return []
        out = []
        for policy in self.policies.values():
            if matches(policy, ep) and not self.state.has(ep.episode_id, policy.name):
                p = self._propose(policy, ep, now)
                if p is not None:
                    out.append(p)
        return out

    def _propose(self, policy: Policy, ep: Episode, now: datetime) -> Proposal | None:
        ctx = context(ep, self.settings.action_base_url)
        pid = uuid.uuid4().hex[:10]
        base: dict[str, Any] = {
            "id": pid, "policy": policy.name, "action": policy.action, "target": policy.name,
            "service": ep.service, "episode_id": ep.episode_id, "series_id": ep.series_id,
            "explanation": ep.explanation, "detector": ep.detector,
            "detector_version": ep.detector_version, "created_at": now, "params": {},
            "expires_at": now + timedelta(seconds=policy.ttl_s or self.settings.proposal_ttl_s),
            "dry_run": self.settings.dry_run, "incident_id": "",
        }  # fmt: skip
        try:
            base["target"] = str(render(policy.target, ctx))
            base["params"] = render(policy.params, ctx)
            self._check(self.registry.get(policy.action).build(base["params"]))
            if policy.rollback:
                base["rollback_action"] = policy.rollback.action
                base["rollback_params"] = render(policy.rollback.params, ctx)
                self.registry.get(policy.rollback.action).build(base["rollback_params"])
        except ActionsError as e:
            p = Proposal(state=State.blocked, detail=str(e), **base)
            if self.state.insert(p):
                self.auditor.record(now, "blocked", p=p, detail=str(e))
            return None
        if self.state.live_for(policy.name, base["target"]) is not None:
            return None  # one live proposal per policy and target
        candidate = Proposal(state=State.proposed, **base)
        verdicts = run_guards(self.guards, candidate, now, executing=False)
        no = refusal(verdicts)
        if no is not None:
            p = candidate.model_copy(update={"state": State.blocked, "guards": verdicts,
                                             "detail": f"{no.guard}: {no.reason}"})  # fmt: skip
            if self.state.insert(p):
                self.auditor.record(now, "blocked", p=p, detail=p.detail)
            return None
        incident = self.state.incident_for(ep.service, now, self.settings.group_window_s, pid)
        p = candidate.model_copy(update={"guards": verdicts, "incident_id": incident})
        if not self.state.insert(p):
            return None
        self.auditor.record(now, "proposed", p=p, detail=ep.explanation)
        return p

    # --- decisions ---------------------------------------------------------------------
    def refuse(self, now: datetime, code: int, reason: str, *, actor: str = "", source: str,
               proposal_id: str = "", remote: str = "") -> Decision:  # fmt: skip
        where = f" from {remote}" if remote else ""
        self.auditor.record(now, "refused", proposal_id=proposal_id, actor=actor, source=source,
                            detail=f"{reason}{where}", dry_run=False)  # fmt: skip
        return Decision(code, reason)

    def decide(self, pid: str, approve: bool, actor: str, now: datetime, *, source: str,
               response_url: str = "", remote: str = "",
               check_approver: bool = True) -> Decision:  # fmt: skip
        """Approve or reject `pid` as `actor`; refusals are audited and change nothing."""
        p = self.state.get(pid)
        if p is None:
            return self.refuse(now, 403, "unknown proposal", actor=actor, source=source,
                               proposal_id=pid[:64], remote=remote)  # fmt: skip
        if approve and p.policy not in self.policies:
            # Deciding without the policy would skip its guards: refuse, change nothing.
            return self.refuse(
                now, 409, f"policy {p.policy} is not loaded here: set STORMWATCH_POLICIES to the "
                "file the actions service runs", actor=actor, source=source, proposal_id=pid,
                remote=remote,
            )  # fmt: skip
        if check_approver:
            if actor not in self.settings.approvers:
                return self.refuse(now, 403, f"user {actor} is not an approver", actor=actor,
                                   source=source, proposal_id=pid, remote=remote)  # fmt: skip
            allowed = self.policies.get(p.policy, None)
            if allowed is not None and allowed.approvers and actor not in allowed.approvers:
                return self.refuse(
                    now,
                    403,
                    f"user {actor} may not approve policy {p.policy}",
                    actor=actor,
                    source=source,
                    proposal_id=pid,
                    remote=remote,
                )
        if p.state == State.expired or (p.state == State.proposed and now >= p.expires_at):
            if self.state.transition(pid, [State.proposed], State.expired, now):
                self.auditor.record(now, "expired", p=p, actor="ttl")
            return self.refuse(now, 403, "proposal expired", actor=actor, source=source,
                               proposal_id=pid, remote=remote)  # fmt: skip
        to = State.approved if approve else State.rejected
        won = self.state.transition(pid, [State.proposed], to, now, decided_by=actor,
                                    decided_at=now, response_url=response_url)  # fmt: skip
        p = self.state.get(pid)
        assert p is not None  # noqa: S101 - rows are never deleted
        if not won:
            msg = f"already {p.state.value}" + (f" by {p.decided_by}" if p.decided_by else "")
            self.auditor.record(now, "ignored", p=p, actor=actor, source=source,
                                detail=f"{'approve' if approve else 'reject'}: {msg}")  # fmt: skip
            return Decision(200, msg, p)
        where = f"from {remote}" if remote else ""
        self.auditor.record(now, to.value, p=p, actor=actor, source=source, detail=where)
        if approve:
            self.runner(lambda: self._execute_safely(pid))
        else:
            self.runner(lambda: self.refresh(pid))
        return Decision(200, f"{to.value} by {actor}", p)

    # --- execution ---------------------------------------------------------------------
    def _execute_safely(self, pid: str) -> None:
        try:
            self.execute(pid, self.clock())
        except Exception:
            log.exception("actions: execution of %s failed unexpectedly", pid)

    def execute(self, pid: str, now: datetime) -> Proposal | None:
        """Run an approved proposal if this call wins `approved → executing`."""
        if not self.state.transition(pid, [State.approved], State.executing, now, executed_at=now):
            return None
        p = self.state.get(pid)
        assert p is not None  # noqa: S101
        self.auditor.record(now, "executing", p=p)
        verdicts = run_guards(self.guards, p, now, executing=True)
        no = refusal(verdicts)
        if no is not None:  # nothing ran: no execution time, so no cooldown or rate count
            return self._finish(p, now, ok=False, detail=f"blocked by {no.guard}: {no.reason}",
                                guards=verdicts, executed_at=None)  # fmt: skip
        try:
            call = self.registry.get(p.action).build(p.params)
        except ActionsError as e:
            return self._finish(p, now, ok=False, detail=str(e))
        if p.dry_run or self.settings.dry_run:
            return self._finish(p, now, ok=True, detail=f"would run: {self.describe(call)}",
                                dry_run=True, outcome="dry run")  # fmt: skip
        result = self.executors.run(call)
        watch = result.ok and self.settings.watch_s > 0
        return self._finish(
            p,
            now,
            ok=result.ok,
            detail=result.detail,
            outcome="watching" if watch else "",
            watch_until=now + timedelta(seconds=self.settings.watch_s) if watch else None,
        )

    def _finish(self, p: Proposal, now: datetime, *, ok: bool, detail: str,
                **fields: Any) -> Proposal | None:  # fmt: skip
        to = State.succeeded if ok else State.failed
        self.state.transition(p.id, [State.executing], to, now, detail=detail, **fields)
        done = self.state.get(p.id)
        assert done is not None  # noqa: S101
        self.auditor.record(now, to.value, p=done, detail=detail)
        self.refresh(p.id)
        return done

    def _check(self, call: Invocation) -> None:
        """Refuse a command the allow-list would refuse, before anyone is asked to approve it."""
        if isinstance(call, CommandCall):
            spec = self.policy_file.commands.get(call.command)
            if spec is None:
                raise ActionsError(f"command {call.command!r} is not in the allow-list")
            try:
                build_argv(spec, call.args)
            except ValueError as e:
                raise ActionsError(f"command {call.command}: {e}") from None

    def describe(self, call: Invocation) -> str:
        if isinstance(call, HttpCall):
            return f"POST {call.url} {orjson.dumps(call.json_body).decode()}"
        if isinstance(call, CommandCall):
            spec = self.policy_file.commands.get(call.command)
            try:
                argv = build_argv(spec, call.args) if spec else None
            except ValueError as e:
                return f"command {call.command}: refused: {e}"
            return f"command {argv}" if argv else f"command {call.command}: not allowed"
        if isinstance(call, KafkaCommand):
            return f"Kafka {self.settings.command_topic} key={call.key} {call.value}"
        return repr(call)

    # --- the periodic work -------------------------------------------------------------
    def tick(self, now: datetime) -> None:
        """Expire, notify (grouped, capped), resume approved work, watch outcomes, flush audit."""
        for p in self.state.by_state(State.proposed):
            if now >= p.expires_at and self.state.transition(p.id, [State.proposed],
                                                             State.expired, now):  # fmt: skip
                self.auditor.record(now, "expired", p=p, actor="ttl")
                self.refresh(p.id)
        self.notify(now)
        for p in self.state.by_state(State.approved):
            if p.decided_at is not None and now - p.decided_at >= timedelta(seconds=5):
                self.execute(p.id, now)
        self.watch(now)
        self.auditor.flush()
        if self._pruned is None or now - self._pruned >= timedelta(hours=1):
            self.state.prune_episodes(now - timedelta(days=7))
            self._pruned = now

    def recover(self, now: datetime) -> None:
        """At start-up: an execution cut short by a crash is not retried (at most once)."""
        for p in self.state.by_state(State.executing):
            detail = "interrupted by a restart; outcome unknown, not retried"
            if self.state.transition(p.id, [State.executing], State.failed, now, detail=detail):
                self.auditor.record(now, "failed", p=p, detail=detail)

    def _incident(self, incident_id: str) -> tuple[str, list[Episode], list[Proposal]]:
        # blocked ones and those that expired before anyone was asked are not news
        ps = self.state.where(
            "incident_id = ? AND state != ? AND NOT (state = ? AND notified = 0)",
            [incident_id, State.blocked, State.expired],
        )
        eps: dict[int, Episode] = {}
        for p in ps:
            body = self.state.episode_body(p.episode_id)
            if body and p.episode_id not in eps:
                eps[p.episode_id] = Episode.model_validate_json(body)
        return (ps[0].service if ps else ""), list(eps.values()), ps

    def notify(self, now: datetime) -> int:
        """Send grouped incident messages, capped per minute; the overflow becomes a digest."""
        if not self.poster.configured:
            return 0
        pending = []
        for p in self.state.by_state(State.proposed):
            if p.notified:
                continue
            if self.state.anomaly_open(p.episode_id, p.series_id) is False:
                detail = "the anomaly cleared before anyone was asked"
                if self.state.transition(p.id, [State.proposed], State.expired, now, detail=detail):
                    self.auditor.record(now, "expired", p=p, actor="service", detail=detail)
                continue
            pending.append(p)
        first: dict[str, datetime] = {}
        for p in pending:
            first[p.incident_id] = min(first.get(p.incident_id, p.created_at), p.created_at)
        wait = timedelta(seconds=self.settings.group_wait_s)
        ready = sorted(
            (i for i, t in first.items() if now - t >= wait), key=lambda i: (first[i], i)
        )
        budget = self.settings.max_messages_per_min - self.state.messages_since(
            now - timedelta(seconds=60))  # fmt: skip
        if not ready or budget <= 0:
            return 0
        single, rest = (ready, []) if len(ready) <= budget else (ready[: budget - 1],
                                                                 ready[budget - 1 :])  # fmt: skip
        ids = {p.id for p in pending}
        sent = 0
        for inc in single:
            service, eps, ps = self._incident(inc)
            if not self.poster.post(incident_message(service, eps, ps)):
                return sent  # Slack is away: try again next tick, do not hammer it
            self._mark_sent([p for p in ps if p.id in ids], now)
            sent += 1
        if rest:
            groups = [self._incident(i) for i in rest]
            if self.poster.post(digest_message(groups)):
                self._mark_sent([p for _, _, ps in groups for p in ps if p.id in ids], now)
                sent += 1
        return sent

    def _mark_sent(self, ps: Sequence[Proposal], now: datetime) -> None:
        self.state.message_sent(now)
        for p in ps:
            self.state.update(p.id, notified=True)

    def refresh(self, pid: str) -> None:
        """Replace the Slack message the decision came from with the incident's current state."""
        p = self.state.get(pid)
        if p is None or not p.response_url:
            return
        service, eps, ps = self._incident(p.incident_id)
        msg = incident_message(service, eps, ps) | {"replace_original": True}
        self.poster.respond(p.response_url, msg)

    def watch(self, now: datetime) -> None:
        """After an action: cleared → effective; still open at the deadline → ineffective,
        said in Slack, and the policy's rollback run (once: compare-and-set on the outcome)."""
        for p in self.state.where("state = ? AND outcome = ?", [State.succeeded, "watching"]):
            if self.state.anomaly_open(p.episode_id, p.series_id) is False:
                if self.state.update(p.id, where_outcome="watching", outcome="effective"):
                    self.auditor.record(now, "effective", p=p, detail="the anomaly cleared")
                    self.refresh(p.id)
                continue
            if p.watch_until is None or now < p.watch_until:
                continue
            if not self.state.update(p.id, where_outcome="watching", outcome="ineffective"):
                continue
            secs = self.settings.watch_s
            self.auditor.record(now, "ineffective", p=p,
                                detail=f"the anomaly did not clear within {secs:.0f}s")  # fmt: skip
            text = (f":warning: `{p.action}` on `{p.target}` (proposal `{p.id}`) did not clear "
                    f"the anomaly within {secs:.0f}s.")  # fmt: skip
            if p.rollback_action:
                text += " " + self._rollback(p, now)
            self.poster.post(notice_message(text))
            self.refresh(p.id)

    def _rollback(self, p: Proposal, now: datetime) -> str:
        assert p.rollback_action is not None  # noqa: S101
        try:
            call = self.registry.get(p.rollback_action).build(p.rollback_params or {})
        except ActionsError as e:
            self.auditor.record(now, "rollback_failed", p=p, detail=str(e))
            return f"Rollback `{p.rollback_action}` could not be built: {e}"
        if p.dry_run or self.settings.dry_run:
            ok, detail = True, f"dry run: would roll back: {self.describe(call)}"
        else:
            r = self.executors.run(call)
            ok, detail = r.ok, f"rollback {p.rollback_action}: {r.detail}"
        if ok and self.state.transition(p.id, [State.succeeded], State.rolled_back, now,
                                        detail=detail):  # fmt: skip
            self.auditor.record(now, "rolled_back", p=p, detail=detail)
            return f"Rolled back with `{p.rollback_action}`."
        self.auditor.record(now, "rollback_failed", p=p, detail=detail)
        return f"Rollback `{p.rollback_action}` failed: {detail}"

    # --- feedback and operator switches --------------------------------------------------
    def feedback(self, episode_id: int, series_id: int, label: str, user: str, now: datetime,
                 *, source: str) -> bool:  # fmt: skip
        if label not in LABELS:
            return False
        fb = Feedback(ts=now, episode_id=episode_id, series_id=series_id, label=label,
                      user=user, source=source)  # fmt: skip
        self.auditor.feedback(fb)
        if self.on_feedback is not None:
            try:
                self.on_feedback(fb)
            except Exception:  # the detectors' callback must not break the Slack request
                log.exception("actions: feedback callback failed")
        return True

    def silence(self, service: str, seconds: float | None, actor: str, now: datetime, *,
                source: str, reason: str = "") -> None:  # fmt: skip
        until = now + timedelta(seconds=seconds) if seconds else None
        self.state.silence(service, until, actor, reason)
        detail = f"{service} until {until:%F %T}" if until else f"{service} lifted"
        self.auditor.record(now, "silenced" if until else "unsilenced", actor=actor,
                            source=source, detail=f"{detail} {reason}".strip(),
                            dry_run=False)  # fmt: skip

    def set_kill(self, on: bool, actor: str, now: datetime, *, source: str) -> None:
        self.state.set_flag(KILL_FLAG, actor if on else None)
        self.auditor.record(now, "kill_switch_on" if on else "kill_switch_off", actor=actor,
                            source=source, dry_run=False)  # fmt: skip
