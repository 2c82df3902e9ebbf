from __future__ import annotations

import sys
import time

import orjson
import pytest

from actions.base import CommandCall, HttpCall, KafkaCommand
from actions.executors import CommandExecutor, Executors, HttpExecutor, KafkaExecutor, build_argv
from actions.policy import CommandSpec
from stormwatch.broker import LocalBroker

from .conftest import Receiver

ECHO = CommandSpec(
    argv=[sys.executable, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", "{unit}"],
    args={"unit": r"[a-z0-9][a-z0-9-]*\.service"},
)


def test_http_executor_posts_json(receiver: Receiver) -> None:
    r = HttpExecutor(timeout_s=2, retries=0).run(
        HttpCall(url=f"{receiver.url}/act/x", json_body={"replicas": 3})
    )
    assert r.ok and r.detail == "HTTP 200"
    assert receiver.posts("/act/x") == [{"replicas": 3}]


def test_http_executor_retries_then_fails_without_leaking_the_url(receiver: Receiver) -> None:
    ex = HttpExecutor(timeout_s=2, retries=2, backoff_s=0.01)
    r = ex.run(HttpCall(url=f"{receiver.url}/fail/token-abc", json_body={}))
    assert not r.ok and r.detail == "HTTP 500"
    assert len(receiver.posts("/fail")) == 3
    dead = ex.run(HttpCall(url="http://127.0.0.1:9/token-abc", json_body={}))
    assert not dead.ok and "token-abc" not in dead.detail and "ConnectError" in dead.detail


def test_http_executor_times_out(receiver: Receiver) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)  # accepts, never answers
    try:
        t = time.monotonic()
        r = HttpExecutor(timeout_s=0.3, retries=0).run(
            HttpCall(url=f"http://127.0.0.1:{s.getsockname()[1]}/x", json_body={})
        )
        assert not r.ok and "Timeout" in r.detail and time.monotonic() - t < 3
    finally:
        s.close()


def test_command_executor_runs_argv_without_a_shell() -> None:
    r = CommandExecutor({"restart": ECHO}).run(
        CommandCall(command="restart", args={"unit": "orders-worker.service"})
    )
    assert r.ok and r.detail == 'exit 0: ["orders-worker.service"]'


@pytest.mark.parametrize(
    "value",
    ["--help", "-rf", "a.service; rm -rf /", "a.service b.service", "$(id).service",
     "a.service\n--evil", "../../etc/passwd", "`id`.service", "a.service\x00"],
)  # fmt: skip
def test_command_executor_refuses_injected_values(value: str) -> None:
    r = CommandExecutor({"restart": ECHO}).run(CommandCall(command="restart", args={"unit": value}))
    assert not r.ok and r.detail.startswith("refused")


def test_command_executor_refuses_unknown_commands_and_extra_args() -> None:
    ex = CommandExecutor({"restart": ECHO})
    assert "allow-list" in ex.run(CommandCall(command="rm", args={})).detail
    extra = ex.run(CommandCall(command="restart", args={"unit": "a.service", "flags": "-x"}))
    assert not extra.ok and "not in the allow-list" in extra.detail


def test_build_argv_keeps_each_value_one_argument() -> None:
    spec = CommandSpec(argv=["kubectl", "scale", "--replicas", "{n}", "{deploy}"],
                       args={"n": r"\d{1,2}", "deploy": r"deploy/[a-z-]+"})  # fmt: skip
    assert build_argv(spec, {"n": "4", "deploy": "deploy/orders"}) == [
        "kubectl", "scale", "--replicas", "4", "deploy/orders"]  # fmt: skip
    with pytest.raises(ValueError, match="deploy"):
        build_argv(spec, {"n": "4", "deploy": "deploy/orders --all-namespaces"})


def test_executors_report_a_missing_executor() -> None:
    r = Executors().run(KafkaCommand(key="k", value={}))
    assert not r.ok and "no kafka executor" in r.detail


def test_kafka_executor_sends_the_command(broker: LocalBroker) -> None:
    from kafka import KafkaConsumer

    from tests.conftest import unique

    topic = unique("cmd")
    ex = KafkaExecutor(broker.bootstrap, topic)
    try:
        r = ex.run(KafkaCommand(key="queue/orders", value={"command": "scale", "n": 3}))
    finally:
        ex.close()
    assert r.ok, r.detail
    c = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                      consumer_timeout_ms=10000)  # fmt: skip
    try:
        msg = next(iter(c))
    finally:
        c.close()
    assert msg.key == b"queue/orders" and orjson.loads(msg.value) == {"command": "scale", "n": 3}
