"""Slack: Block Kit messages for incidents, request signature checks, and posting.

Messages go to the incoming webhook; updates go to the `response_url` of a click (only to
URLs under the configured Slack prefix). Posting uses httpx, not slack_sdk's WebhookClient,
because the latter logs the URL (a secret) at debug level. Signature checks use slack_sdk.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx
from slack_sdk.signature import Clock, SignatureVerifier

from actions.audit import LABELS
from actions.base import Proposal, State
from detectors.episodes import Episode

log = logging.getLogger("stormwatch.actions")

ICON = {State.proposed: ":hourglass_flowing_sand:", State.approved: ":white_check_mark:",
        State.rejected: ":no_entry_sign:", State.expired: ":alarm_clock:",
        State.executing: ":gear:", State.succeeded: ":white_check_mark:",
        State.failed: ":x:", State.rolled_back: ":leftwards_arrow_with_hook:",
        State.blocked: ":shield:"}  # fmt: skip


MAX_TEXT = 2900  # Slack refuses a section text over 3000 characters


def esc(text: str) -> str:
    """Escape for mrkdwn: Slack treats &, < and > as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _params(p: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items() if k != "url") or "no params"


def episode_blocks(ep: Episode) -> list[dict[str, Any]]:
    value = f"{ep.episode_id}:{ep.series_id}"
    state = "open" if ep.is_open else "cleared"
    about = (f"signals {', '.join(ep.signals)} · detector {ep.detector} v{ep.detector_version}"
             f" · episode {ep.episode_id}")  # fmt: skip
    text = f"*{esc(ep.severity)}* ({state}) {esc(ep.explanation)}"[: MAX_TEXT - 300]
    return [
        {"type": "section", "block_id": f"e:{ep.episode_id}",
         "text": {"type": "mrkdwn", "text": f"{text}\n_{esc(about)[:280]}_"}},
        {"type": "actions", "block_id": f"f:{ep.episode_id}", "elements": [
            {"type": "button", "action_id": f"feedback_{k}", "value": value,
             "text": {"type": "plain_text", "text": label}} for k, label in LABELS.items()]},
    ]  # fmt: skip


def proposal_blocks(p: Proposal) -> list[dict[str, Any]]:
    guards = "  ".join(f"{':white_check_mark:' if v.ok else ':x:'} {v.guard}" for v in p.guards)
    notes = [v.reason for v in p.guards if v.reason and v.ok]
    text = (f"*Proposed:* `{esc(p.action)}` on `{esc(p.target)}` ({esc(_params(p.params))}) "
            f"by policy `{esc(p.policy)}`\nGuards passed: {guards}")  # fmt: skip
    if notes:
        text += "\n_" + esc("; ".join(notes)) + "_"
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "block_id": f"p:{p.id}",
            "text": {"type": "mrkdwn", "text": text[:MAX_TEXT]},
        }
    ]
    if p.state == State.proposed:
        blocks.append({"type": "actions", "block_id": f"a:{p.id}", "elements": [
            {"type": "button", "action_id": "approve", "value": p.id, "style": "primary",
             "text": {"type": "plain_text", "text": "Approve"},
             "confirm": {"title": {"type": "plain_text", "text": "Run this action?"},
                         "text": {"type": "plain_text", "text": f"{p.action} on {p.target}"[:300]},
                         "confirm": {"type": "plain_text", "text": "Run it"},
                         "deny": {"type": "plain_text", "text": "Cancel"}}},
            {"type": "button", "action_id": "reject", "value": p.id, "style": "danger",
             "text": {"type": "plain_text", "text": "Reject"}},
        ]})  # fmt: skip
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
            f"proposal `{p.id}` · expires {p.expires_at:%H:%M:%S} UTC")}]})  # fmt: skip
    else:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": status(p)}]})
    return blocks


def status(p: Proposal) -> str:
    who = f" by <@{esc(p.decided_by)}>" if p.decided_by and p.decided_by[:1] in "UW" else (
        f" by {esc(p.decided_by)}" if p.decided_by else "")  # fmt: skip
    dry = " (dry run)" if p.dry_run else ""
    out = f" · {esc(p.outcome)}" if p.outcome else ""
    detail = f": {esc(p.detail)}" if p.detail else ""
    return f"{ICON.get(p.state, '')} proposal `{p.id}` *{p.state.value}*{who}{dry}{out}{detail}"


def incident_message(service: str, episodes: Sequence[Episode],
                     proposals: Sequence[Proposal]) -> dict[str, Any]:  # fmt: skip
    unique = list({ep.episode_id: ep for ep in episodes}.values())  # block ids must be unique
    n = len(unique)
    title = f"Incident on {service or 'unknown service'}: {n} anomal" + ("y" if n == 1 else "ies")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}}
    ]
    for ep in unique[:5]:  # 2 blocks each; proposals need 3: stay under Slack's 50
        blocks += episode_blocks(ep)
    if n > 5:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn",
                       "text": f"{n - 5} more anomalies: `stormwatch anomalies`"}]})  # fmt: skip
    for p in proposals[:10]:
        blocks += proposal_blocks(p)
    return {"text": title, "blocks": blocks[:50]}


def digest_message(incidents: Sequence[tuple[str, Sequence[Episode], Sequence[Proposal]]]
                   ) -> dict[str, Any]:  # fmt: skip
    """One message for incidents held back by the messages-per-minute cap."""
    n = sum(len(ps) for _, _, ps in incidents)
    title = f"Digest: {len(incidents)} incidents, {n} proposals (message cap reached)"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}}
    ]
    shown = 0
    for service, eps, ps in incidents:
        lines = "\n".join(f"• {esc(e.explanation)[:200]}" for e in eps[:3])
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                       "text": f"*{esc(service)}*\n{lines}"[:3000]}})  # fmt: skip
        for p in ps:
            if shown < 8:
                blocks += proposal_blocks(p)
                shown += 1
    if n > shown:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn",
                       "text": f"{n - shown} more: `stormwatch actions list`"}]})  # fmt: skip
    return {"text": title, "blocks": blocks[:50]}


def notice_message(text: str) -> dict[str, Any]:
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


class _Clock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def check_signature(secret: str, body: bytes, headers: Mapping[str, str], now: datetime,
                    window_s: float = 300.0) -> str | None:  # fmt: skip
    """None if Slack signed this request within the window, else the reason it is refused."""
    h = {k.lower(): v for k, v in headers.items()}
    stamp, sig = h.get("x-slack-request-timestamp"), h.get("x-slack-signature")
    if not stamp or not sig:
        return "missing Slack signature headers"
    try:
        t = int(stamp)
    except ValueError:
        return "bad timestamp"
    if abs(now.timestamp() - t) > window_s:
        return "stale timestamp"
    if not SignatureVerifier(secret, clock=_Clock(now.timestamp())).is_valid(body, stamp, sig):
        return "bad signature"
    return None


class Redact(logging.Filter):
    """Masks secrets in records of the HTTP client's loggers (httpx logs each URL at INFO)."""

    LOGGERS = ("httpx", "httpcore")

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if any(s in msg for s in self.secrets):
            for s in self.secrets:
                msg = msg.replace(s, "***")
            record.msg, record.args = msg, ()
        return True

    def install(self) -> Redact:
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)
        return self

    def remove(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeFilter(self)


class SlackPoster:
    """Posts JSON to the webhook and to response URLs; never logs or returns a URL."""

    def __init__(
        self, webhook_url: str | None, response_prefix: str, timeout_s: float = 5.0
    ) -> None:
        self._webhook = webhook_url
        self.response_prefix = response_prefix
        self._http = httpx.Client(timeout=timeout_s, follow_redirects=False)
        self._redact = Redact([webhook_url or ""]).install()

    @property
    def configured(self) -> bool:
        return bool(self._webhook)

    def post(self, message: dict[str, Any]) -> bool:
        if not self._webhook:
            return False
        return self._send(self._webhook, message, "webhook")

    def respond(self, response_url: str, message: dict[str, Any]) -> bool:
        if not response_url.startswith(self.response_prefix):
            log.warning("slack: refusing a response_url outside %s", self.response_prefix)
            return False
        return self._send(response_url, message, "response_url")

    def _send(self, url: str, message: dict[str, Any], what: str) -> bool:
        try:
            r = self._http.post(url, json=message)
        except httpx.HTTPError as e:
            log.warning("slack: %s post failed: %s", what, type(e).__name__)
            return False
        if r.status_code >= 300:
            log.warning("slack: %s answered HTTP %s", what, r.status_code)
            return False
        return True

    def close(self) -> None:
        self._http.close()
        self._redact.remove()
