"""Executors: perform an action's invocation and report a `Result`; they never raise.

HTTP webhook: POST JSON with a timeout and retries (connection errors and 5xx, with backoff).
Command: argv comes from the allow-list in the policy file; each `{slot}` is replaced by one
checked value as one whole argument, never through a shell, and a value cannot start with '-'.
Kafka: a JSON message on the command topic for the operator's own agent.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from actions.base import CommandCall, HttpCall, Invocation, KafkaCommand, Result
from actions.policy import SLOT, CommandSpec


class HttpExecutor:
    def __init__(self, timeout_s: float = 5.0, retries: int = 2, backoff_s: float = 0.5) -> None:
        import httpx

        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False)
        self.retries = retries
        self.backoff_s = backoff_s

    def run(self, call: HttpCall) -> Result:
        import httpx

        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                r = self._client.post(call.url, json=call.json_body)
            except httpx.HTTPError as e:
                last = f"{type(e).__name__} (attempt {attempt + 1})"  # str(e) may hold the URL
                continue
            if r.status_code < 300:
                return Result(ok=True, detail=f"HTTP {r.status_code}")
            last = f"HTTP {r.status_code}"
            if r.status_code < 500:
                break
        return Result(ok=False, detail=last)

    def close(self) -> None:
        self._client.close()


def build_argv(spec: CommandSpec, args: Mapping[str, str]) -> list[str]:
    """The argv for an allow-listed command; ValueError when a value is not allowed."""
    extra = set(args) - set(spec.args)
    if extra:
        raise ValueError(f"arguments not in the allow-list: {sorted(extra)}")
    argv = []
    for part in spec.argv:
        m = SLOT.match(part)
        if not m:
            argv.append(part)
            continue
        slot = m.group(1)
        if slot not in args:
            raise ValueError(f"missing argument {slot}")
        value = args[slot]
        if value.startswith("-") or "\x00" in value or not re.fullmatch(spec.args[slot], value):
            raise ValueError(f"argument {slot}={value!r} is not allowed")
        argv.append(value)
    return argv


class CommandExecutor:
    def __init__(self, commands: Mapping[str, CommandSpec], timeout_s: float = 30.0) -> None:
        self.commands = dict(commands)
        self.timeout_s = timeout_s

    def run(self, call: CommandCall) -> Result:
        spec = self.commands.get(call.command)
        if spec is None:
            return Result(ok=False, detail=f"command {call.command!r} is not in the allow-list")
        try:
            argv = build_argv(spec, call.args)
        except ValueError as e:
            return Result(ok=False, detail=f"refused: {e}")
        try:
            p = subprocess.run(  # noqa: S603 - argv from the allow-list, no shell
                argv, shell=False, capture_output=True, timeout=self.timeout_s, check=False,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as e:
            return Result(ok=False, detail=f"{type(e).__name__} running {argv[0]}")
        out = (p.stdout or p.stderr).decode("utf-8", "replace").strip()[:200]
        return Result(ok=p.returncode == 0, detail=f"exit {p.returncode}: {out}")


class KafkaExecutor:
    def __init__(self, bootstrap: str, topic: str, timeout_s: float = 10.0) -> None:
        self.bootstrap, self.topic, self.timeout_s = bootstrap, topic, timeout_s
        self._producer: Any = None
        self._lock = threading.Lock()

    def run(self, call: KafkaCommand) -> Result:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        try:
            with self._lock:
                if self._producer is None:
                    self._producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
                fut = self._producer.send(
                    self.topic, key=call.key.encode(), value=orjson.dumps(call.value)
                )
            md = fut.get(timeout=self.timeout_s)
        except KafkaError as e:
            return Result(ok=False, detail=f"Kafka: {type(e).__name__}")
        return Result(ok=True, detail=f"sent to {md.topic}[{md.partition}]@{md.offset}")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)


@dataclass
class Executors:
    """Routes an invocation to its executor; a missing executor is a failed result."""

    http: HttpExecutor | None = None
    command: CommandExecutor | None = None
    kafka: KafkaExecutor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def run(self, call: Invocation) -> Result:
        ex = getattr(self, call.executor, None)
        if ex is None:
            return Result(ok=False, detail=f"no {call.executor} executor configured")
        try:
            return ex.run(call)  # type: ignore[no-any-return]
        except Exception as e:  # an executor bug must not kill the service; fail the proposal
            return Result(ok=False, detail=f"executor error: {type(e).__name__}")

    def close(self) -> None:
        for ex in (self.http, self.kafka):
            if ex is not None:
                ex.close()
