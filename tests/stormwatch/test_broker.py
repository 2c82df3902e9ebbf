"""The embedded broker: a real Tansu on loopback, and a clear error when its port is taken."""

from __future__ import annotations

import socket

import pytest

from stormwatch.broker import BrokerError, LocalBroker, free_port


def test_taken_port_names_the_setting_to_change() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(BrokerError, match="STORMWATCH_BROKER_PORT"):
            LocalBroker(port).start()


def test_broker_starts_serves_kafka_and_stops(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from kafka import KafkaAdminClient

    with LocalBroker(free_port(), tmp_path / "b.log") as b:
        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        assert admin.list_topics() == []
        admin.close()
        proc = b.proc
    assert proc is not None and proc.poll() is not None  # stopped with the context
