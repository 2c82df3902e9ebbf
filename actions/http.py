"""The actions service's HTTP side: `POST /slack/interactions` (the Slack app's interactivity
Request URL), `GET /healthz`, and, for the demo, `POST /demo/{name}` that records calls.

Every refusal is audited: no or bad signature, a timestamp outside the window → 401; a
request seen before (same signature) → 401; unknown proposal, user not an approver or not
allowed for the policy, expired proposal → 403. Nothing runs on a refusal.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool

from actions.engine import Engine
from actions.slack import check_signature

log = logging.getLogger("stormwatch.actions")
MAX_BODY = 64 * 1024


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class SlackUser(_Loose):
    id: str


class SlackAction(_Loose):
    action_id: str
    value: str = ""


class Interaction(_Loose):
    """The fields of a Slack `block_actions` payload that we use."""

    type: str
    user: SlackUser
    actions: list[SlackAction] = []
    response_url: str = ""


async def _read_capped(request: Request, limit: int = MAX_BODY) -> bytes | None:
    """The body, or None once it exceeds `limit` (read no further: no memory for a flood)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _discard(_: object) -> None:
    return None


def create_app(engine: Engine, secret: str | None, clock: Callable[[], datetime], *,
               demo: bool = False) -> FastAPI:  # fmt: skip
    app = FastAPI(title="stormwatch actions", docs_url=None, redoc_url=None, openapi_url=None)
    window = engine.settings.request_window_s
    app.state.demo_calls = deque(maxlen=1000)

    def reply(code: int, text: str) -> JSONResponse:
        return JSONResponse({"text": text}, status_code=code)

    @app.get("/healthz")
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/slack/interactions")
    async def interactions(request: Request) -> JSONResponse:
        now = clock()
        remote = request.client.host if request.client else ""
        body = await _read_capped(request)
        if body is None:
            return reply(413, "request too large")
        if not secret:
            return reply(503, "the signing secret is not configured")
        why = check_signature(secret, body, request.headers, now, window)
        if why is not None:
            await run_in_threadpool(engine.refuse, now, 401, why, source="slack", remote=remote)
            return reply(401, why)
        sig = request.headers["x-slack-signature"]
        if not await run_in_threadpool(engine.state.first_seen, sig, now, 2 * window):
            await run_in_threadpool(engine.refuse, now, 401, "replayed request", source="slack",
                                    remote=remote)  # fmt: skip
            return reply(401, "replayed request")
        try:
            raw = parse_qs(body.decode("utf-8"), strict_parsing=True)["payload"][0]
            it = Interaction.model_validate_json(raw)
        except (UnicodeDecodeError, ValueError, KeyError, ValidationError):
            await run_in_threadpool(engine.refuse, now, 400, "malformed payload", source="slack",
                                    remote=remote)  # fmt: skip
            return reply(400, "malformed payload")
        if it.type != "block_actions" or not it.actions:
            return reply(200, "ignored")
        act = it.actions[0]
        if act.action_id in ("approve", "reject"):
            d = await run_in_threadpool(
                lambda: engine.decide(
                    act.value,
                    act.action_id == "approve",
                    it.user.id,
                    now,
                    source="slack",
                    response_url=it.response_url,
                    remote=remote,
                )  # fmt: skip
            )
            return reply(d.code, d.message)
        if act.action_id.startswith("feedback_"):
            label = act.action_id.removeprefix("feedback_")
            try:
                ep_id, series = (int(x) for x in act.value.split(":"))
            except ValueError:
                return reply(400, "malformed feedback value")
            ok = await run_in_threadpool(
                lambda: engine.feedback(ep_id, series, label, it.user.id, now, source="slack")
            )
            if ok and it.response_url:
                msg = {"response_type": "ephemeral", "replace_original": False,
                       "text": f"Thanks: recorded as {label.replace('_', ' ')}."}  # fmt: skip
                engine.runner(lambda: _discard(engine.poster.respond(it.response_url, msg)))
            return reply(200 if ok else 400, "recorded" if ok else "unknown label")
        return reply(200, "ignored")

    if demo:

        @app.post("/demo/{name}")
        async def demo_endpoint(name: str, request: Request) -> dict[str, Any]:
            body = await _read_capped(request) or b""
            try:
                payload = orjson.loads(body) if body else {}
            except orjson.JSONDecodeError:
                payload = {"raw": body[:200].decode("utf-8", "replace")}
            app.state.demo_calls.append({"name": name, "payload": payload})
            log.warning("demo remediation endpoint called: %s %s", name, payload)
            return {"ok": True, "recorded": name}

        @app.get("/demo")
        def demo_calls() -> list[dict[str, Any]]:
            return list(app.state.demo_calls)

    return app
