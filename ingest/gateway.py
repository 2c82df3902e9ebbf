"""The HTTP ingest gateway: OTLP/HTTP (`/v1/metrics`, `/v1/traces`) and JSON lines (`/ingest`).

OTLP bodies (protobuf or JSON, optionally gzip) are validated and forwarded to the OTLP topics
as the Collector's Kafka exporter writes them (`otlp_proto`, one message per resource, keyed by
`service.name`). `/ingest` events go to the raw topic placed by series, as the producer SDK
places them (each under a key that lands on its series' partition). A request is answered 200
only after Kafka acknowledged every message; when it cannot, the answer is 503 with
Retry-After (delivery is at least once: a client retry after a timeout may duplicate).
Without a token the gateway listens on loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from typing import IO, Any, Protocol

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.concurrency import run_in_threadpool

from ingest import IngestError
from ingest.decode import decode_json
from ingest.models import Event
from ingest.otlp import UNKNOWN_SERVICE, attr_map, parse_request
from ingest.producer import COMPRESSION
from ingest.topics import partition_keys
from stormwatch.settings import StormwatchSettings

log = logging.getLogger("stormwatch.gateway")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class GatewaySettings(BaseSettings):
    """STORMWATCH_GATEWAY_* (TOKEN, HOST, PORT, MAX_BODY_BYTES, ...)."""

    model_config = SettingsConfigDict(env_prefix="STORMWATCH_GATEWAY_", frozen=True, extra="ignore")

    token: SecretStr | None = None
    host: str = Field("", description="'' = 0.0.0.0 with a token, 127.0.0.1 without")
    port: int = Field(4318, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="wire and decompressed")
    max_message_bytes: int = Field(
        1_000_000, ge=1024, description="larger OTLP requests are split (Kafka's message limit)"
    )
    body_timeout_s: float = Field(10.0, gt=0, description="the whole body must arrive within")
    kafka_timeout_s: float = Field(5.0, gt=0, description="wait for Kafka's ack, then 503")
    retry_after_s: int = Field(5, ge=1)
    ingest_batch_size: int = Field(500, ge=1, le=100_000, description="events per message")
    max_errors: int = Field(100, ge=1, description="per-line errors listed in a response")

    def bind_host(self) -> str:
        """Where to listen; refuses a non-loopback address without a token."""
        if self.token is not None and self.token.get_secret_value():
            return self.host or "0.0.0.0"  # noqa: S104 - authenticated: meant to be reachable
        if self.host and self.host not in LOOPBACK:
            raise IngestError(
                f"refusing to listen on {self.host} without STORMWATCH_GATEWAY_TOKEN: set a "
                "token, or leave STORMWATCH_GATEWAY_HOST empty to listen on 127.0.0.1 only"
            )
        return self.host or "127.0.0.1"

    def auth_note(self) -> str:
        if self.token is not None and self.token.get_secret_value():
            return "bearer token required"
        return "no STORMWATCH_GATEWAY_TOKEN set: no auth, listening on loopback only"


class KafkaUnavailable(IngestError):
    """Kafka did not acknowledge in time (or cannot be reached): answer 503 + Retry-After."""


class Forwarder(Protocol):
    async def send(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None: ...

    def close(self) -> None: ...


class KafkaForwarder:
    """kafka-python producer, created on first use and again after it could not connect."""

    def __init__(self, bootstrap: str, timeout_s: float, max_message_bytes: int) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self._producer: Any = None
        self._lock = threading.Lock()
        self._retry_at = 0.0

    def _get(self) -> Any:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        with self._lock:
            if self._producer is not None:
                return self._producer
            if time.monotonic() < self._retry_at:
                raise KafkaUnavailable(f"Kafka at {self.bootstrap} was unreachable moments ago")
            ms = int(self.timeout_s * 1000)
            try:
                config = dict(
                    bootstrap_servers=self.bootstrap, acks="all", linger_ms=2, retries=3,
                    bootstrap_timeout_ms=ms, max_block_ms=ms, request_timeout_ms=ms,
                    delivery_timeout_ms=ms + 1000,
                    max_request_size=self.max_message_bytes + 64 * 1024,
                    compression_type=COMPRESSION,  # as the SDK: a quarter of the bytes
                )  # fmt: skip
                # bootstrap_timeout_ms and delivery_timeout_ms are newer than kafka-python 2.2
                known = KafkaProducer.DEFAULT_CONFIG
                self._producer = KafkaProducer(**{k: v for k, v in config.items() if k in known})
            except KafkaError as e:
                self._retry_at = time.monotonic() + 1.0
                raise KafkaUnavailable(f"cannot reach Kafka at {self.bootstrap}: {e}") from e
            return self._producer

    def _send_blocking(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        from kafka.errors import KafkaError

        producer = self._get()
        deadline = time.monotonic() + self.timeout_s + 2.0
        try:
            futures = [producer.send(topic, value=v, key=k) for k, v in messages]
            for f in futures:
                f.get(timeout=max(0.1, deadline - time.monotonic()))
        except KafkaError as e:
            # A producer that failed may be wedged (e.g. its producer id is unknown to a broker
            # that restarted): the next request starts a fresh one.
            self._discard(producer)
            raise KafkaUnavailable(f"Kafka did not accept the data: {type(e).__name__}") from e

    def _discard(self, producer: Any) -> None:
        with self._lock:
            if self._producer is producer:
                self._producer = None
        threading.Thread(target=producer.close, kwargs={"timeout": 0}, daemon=True).start()

    async def send(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._send_blocking, topic, messages)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=self.timeout_s)
                self._producer = None


# --- request helpers ----------------------------------------------------------------------


async def read_body(request: Request, gw: GatewaySettings) -> bytes:
    """The (decompressed) body, enforcing the size limit while it streams and after gunzip,
    and the time limit for the whole body (slow senders get 408)."""
    limit = gw.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise HTTPException(413, f"body of {declared} bytes exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(gw.body_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"body exceeds the {limit}-byte limit")
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPException(408, f"body not received within {gw.body_timeout_s:g}s") from None
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise HTTPException(415, f"Content-Encoding {encoding!r} is not supported (use gzip)")
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise HTTPException(400, f"invalid gzip body: {e}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise HTTPException(413, f"decompressed body exceeds the {limit}-byte limit")
    if not d.eof:
        raise HTTPException(400, "invalid gzip body: truncated")
    return out


def _otlp_format(request: Request) -> str:
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == PROTOBUF:
        return "otlp_proto"
    if ctype == JSON:
        return "otlp_json"
    raise HTTPException(415, f"Content-Type must be {PROTOBUF} or {JSON}, got {ctype!r}")


def split_by_resource(
    req: Message, kind: str, raw: bytes | None, max_bytes: int
) -> list[tuple[bytes, bytes]]:
    """`otlp_proto` messages keyed by service.name, one per resource (so one service's streams
    stay on one partition: cumulative metrics need their previous point on the same worker),
    a resource larger than `max_bytes` split between its records (Kafka's message limit)."""
    field, scopes, records = (
        ("resource_metrics", "scope_metrics", "metrics")
        if kind == "metrics"
        else ("resource_spans", "scope_spans", "spans")
    )
    blocks = getattr(req, field)
    cls = ExportMetricsServiceRequest if kind == "metrics" else ExportTraceServiceRequest
    if len(blocks) == 1 and raw is not None and len(raw) <= max_bytes:
        service = attr_map(blocks[0].resource.attributes).get("service.name")
        return [((service or UNKNOWN_SERVICE).encode(), raw)]
    out = []
    for rb in blocks:
        key = (attr_map(rb.resource.attributes).get("service.name") or UNKNOWN_SERVICE).encode()
        if rb.ByteSize() + 16 <= max_bytes:
            out.append((key, cls(**{field: [rb]}).SerializeToString()))
            continue
        budget = max_bytes - rb.resource.ByteSize() - 64
        chunk, size, target = None, 0, None
        for sb in getattr(rb, scopes):
            target = None  # a new scope block in the current chunk
            for rec in getattr(sb, records):
                n = rec.ByteSize() + 8
                if chunk is not None and size + n > budget:
                    out.append((key, chunk.SerializeToString()))
                    chunk, size, target = None, 0, None
                if chunk is None:
                    chunk = cls()
                    getattr(chunk, field).add(resource=rb.resource, schema_url=rb.schema_url)
                if target is None:
                    target = getattr(getattr(chunk, field)[0], scopes).add(
                        scope=sb.scope, schema_url=sb.schema_url
                    )
                getattr(target, records).append(rec)
                size += n
        if chunk is not None:
            out.append((key, chunk.SerializeToString()))
    return out


_RPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT, 401: code_pb2.UNAUTHENTICATED, 408: code_pb2.DEADLINE_EXCEEDED,
    413: code_pb2.RESOURCE_EXHAUSTED, 415: code_pb2.INVALID_ARGUMENT, 503: code_pb2.UNAVAILABLE,
}  # fmt: skip


def _status_response(status: int, message: str, json_body: bool, headers: Any) -> Response:
    code = _RPC_CODES.get(status, code_pb2.UNKNOWN)
    st = status_pb2.Status(code=code, message=message)
    if json_body:
        return Response(json_format.MessageToJson(st, indent=None), status, headers, JSON)
    return Response(st.SerializeToString(), status, headers, PROTOBUF)


# --- the app ------------------------------------------------------------------------------


def create_app(
    settings: StormwatchSettings, gw: GatewaySettings, forwarder: Forwarder | None = None
) -> FastAPI:
    """The gateway's FastAPI app; `forwarder` defaults to a Kafka producer for `settings`."""
    fwd = forwarder or KafkaForwarder(
        settings.bootstrap(), gw.kafka_timeout_s, max(gw.max_body_bytes, gw.max_message_bytes)
    )
    topics = settings.topics
    raw_keys = partition_keys(topics.partitions)  # the raw topic's, as `up` creates it
    token = gw.token.get_secret_value().encode() if gw.token is not None else b""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        fwd.close()  # flushes what is in flight

    app = FastAPI(
        title="stormwatch gateway", docs_url=None, redoc_url=None, openapi_url=None,
        lifespan=lifespan,
    )  # fmt: skip
    app.state.forwarder = fwd

    @app.exception_handler(HTTPException)
    async def _errors(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/v1/"):
            ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            return _status_response(exc.status_code, str(exc.detail), ctype == JSON, exc.headers)
        return JSONResponse({"error": exc.detail}, exc.status_code, exc.headers)

    def authorize(request: Request) -> None:
        if not token:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(401, "missing bearer token", challenge)
        if not secrets.compare_digest(given.strip().encode(), token):
            raise HTTPException(401, "invalid bearer token", challenge)

    async def forward(topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        try:
            await fwd.send(topic, messages)
        except KafkaUnavailable as e:
            log.warning("503: %s", e)
            raise HTTPException(
                503, "Kafka did not acknowledge the data; retry later",
                {"Retry-After": str(gw.retry_after_s)},
            ) from None  # fmt: skip

    async def otlp(request: Request, kind: str, topic: str, reply: Message) -> Response:
        fmt = _otlp_format(request)
        raw = await read_body(request, gw)
        proto_raw = raw if fmt == "otlp_proto" else None

        def prepare() -> list[tuple[bytes, bytes]]:  # CPU-bound: off the event loop
            req = parse_request(raw, kind, fmt)
            return split_by_resource(req, kind, proto_raw, gw.max_message_bytes)

        try:
            messages = await run_in_threadpool(prepare)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        if messages:
            await forward(topic, messages)
        if fmt == "otlp_json":
            return Response(json_format.MessageToJson(reply, indent=None), 200, media_type=JSON)
        return Response(reply.SerializeToString(), 200, media_type=PROTOBUF)

    @app.post("/v1/metrics", dependencies=[Depends(authorize)])
    async def v1_metrics(request: Request) -> Response:
        return await otlp(request, "metrics", topics.otlp_metrics, ExportMetricsServiceResponse())

    @app.post("/v1/traces", dependencies=[Depends(authorize)])
    async def v1_traces(request: Request) -> Response:
        return await otlp(request, "traces", topics.otlp_spans, ExportTraceServiceResponse())

    @app.post("/ingest", dependencies=[Depends(authorize)])
    async def ingest(request: Request) -> Response:
        raw = await read_body(request, gw)
        good, rejected, errors = await run_in_threadpool(decode_lines, raw, gw.max_errors)
        if not good and not rejected:
            raise HTTPException(400, "empty body: send JSON lines, one event or array per line")
        if good:
            await forward(topics.raw, batches_by_series(good, gw.ingest_batch_size, raw_keys))
        body = {"accepted": len(good), "rejected": rejected, "errors": errors}
        return JSONResponse(body, 200 if good else 400)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def decode_lines(raw: bytes, max_errors: int) -> tuple[list[Event], int, list[dict[str, Any]]]:
    """JSON lines → (valid events, rejected count, the first `max_errors` errors)."""
    good: list[Event] = []
    errors: list[dict[str, Any]] = []
    rejected = 0
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        events, bad = decode_json(line)
        good.extend(events)
        rejected += len(bad)
        for r in bad[: max(0, max_errors - len(errors))]:
            errors.append({"line": lineno, "item": r.item, "reason": r.reason})
    return good, rejected, errors


def batches_by_series(
    events: Sequence[Event], size: int, keys: Sequence[bytes]
) -> list[tuple[bytes | None, bytes]]:
    """JSON arrays of at most `size` events, each under the key (`keys[p]`, one a partition)
    that lands it on its series' partition, as the producer SDK places events: a series stays
    in order, and its normalize and detect stages meet in one worker."""
    from streams.normalize import series_partition

    by_part: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_part[series_partition(e, len(keys)) or 0].append(e.model_dump())
    return [
        (keys[p], orjson.dumps(docs[i : i + size]))
        for p, docs in by_part.items()
        for i in range(0, len(docs), size)
    ]


# --- running it ---------------------------------------------------------------------------


class GatewayServer:
    """uvicorn serving the gateway; `start()`/`stop()` in a thread (for `stormwatch up` and
    tests) or `run()` in the foreground (for `stormwatch gateway`)."""

    def __init__(
        self,
        settings: StormwatchSettings,
        gw: GatewaySettings,
        forwarder: Forwarder | None = None,
    ) -> None:
        import uvicorn

        self.gw = gw
        self.host = gw.bind_host()
        self.app = create_app(settings, gw, forwarder)
        config = uvicorn.Config(
            self.app, host=self.host, port=gw.port, log_level="warning", access_log=False,
            lifespan="on", timeout_keep_alive=5, limit_concurrency=256,
            timeout_graceful_shutdown=5,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on: the bound one once started (STORMWATCH_GATEWAY_PORT=0)."""
        for server in getattr(self.server, "servers", []) or []:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.gw.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def banner(self) -> str:
        return f"gateway: OTLP/HTTP and /ingest on {self.url} ({self.gw.auth_note()})"

    def start(self, out: IO[str] | None = None, timeout_s: float = 10.0) -> GatewayServer:
        self._thread = threading.Thread(target=self.server.run, name="gateway", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive():
                raise IngestError(f"the gateway could not listen on {self.url}")
            if time.monotonic() > deadline:
                self.stop()
                raise IngestError(f"the gateway did not start within {timeout_s:g}s")
            time.sleep(0.02)
        if out:
            out.write(self.banner() + "\n")
            out.flush()
        return self

    def run(self, out: IO[str] | None = None) -> None:
        """Serve in this thread until SIGINT/SIGTERM; the banner once it listens."""
        if out:
            threading.Thread(target=self._announce, args=(out,), daemon=True).start()
        try:
            self.server.run()
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a foreground gateway stops: uvicorn has already shut down
        finally:
            self.app.state.forwarder.close()

    def _announce(self, out: IO[str]) -> None:
        while not self.server.started and not self.server.should_exit:
            time.sleep(0.02)
        if self.server.started:
            out.write(self.banner() + "\n")
            out.flush()

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.app.state.forwarder.close()


def load_gateway_settings(**overrides: object) -> GatewaySettings:
    """GatewaySettings from the environment plus overrides; errors name the variable."""
    try:
        return GatewaySettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        lines = [f"STORMWATCH_GATEWAY_{'_'.join(map(str, err['loc'])).upper()}: {err['msg']}"
                 for err in e.errors()]  # fmt: skip
        raise IngestError("bad gateway settings:\n  " + "\n  ".join(lines)) from None
