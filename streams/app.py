"""The faust app: thin agents around plain logic (normalize.py, detect.py, sink.py).

- normalize: raw JSON batches → observations, re-keyed: one message per points partition,
  or handed in-process to this worker's detect stage when it owns that partition (the raw
  batch acked once those rows are stored). Bad input → the DLQ topic with reason and source
  position; never an exception out.
- detect: per-series windows, detectors and episodes; rows go to ClickHouse and only then
  are the points messages acked (offsets held while a window is open or a write fails).
- dead_letters: the DLQ topic → the `dlq` table.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import faust
import orjson

from detectors.episodes import Episode
from detectors.model import warm_up
from detectors.multivariate import ServiceModel
from detectors.multivariate import warm_up as warm_up_services
from detectors.registry import model_factory
from ingest.cardinality import CardinalityGuard
from ingest.decode import Reject, decode_records
from ingest.otlp import OtlpState, decode_otlp_metrics, decode_otlp_traces
from ingest.redact import Redactor
from stormwatch.settings import StormwatchSettings
from stormwatch.store import Store, StoreError, preload_insert_path
from streams.columns import POINT_COLUMNS
from streams.detect import DRIFT_COLUMNS, SHADOW_COLUMNS, DetectStage
from streams.gaps import OffsetGaps
from streams.normalize import KnownMetrics, Normalizer
from streams.runner import Modulo, SourceAcks, StageRunner, write_with_retry
from streams.services import (
    ServiceBatch,
    ServicePoints,
    ServiceStage,
    decode_service_points,
    encode_service_points,
    service_partition,
)
from streams.sink import ClickHouseSink
from streams.tuning import MAX_MESSAGE_BYTES, ordered_commits, prompt_fetches
from streams.wire import (
    Points,
    PointsDecoder,
    PointsEncoder,
    by_partition,
    decode_feedback,
    points_of,
)

log = logging.getLogger("stormwatch.streams")

EPISODE_COLUMNS = [
    "episode_id", "series_id", "start", "end", "is_open", "peak_score", "peak_value",
    "expected", "lower", "upper", "severity", "kind", "name", "service", "labels", "signals",
    "explanation", "detector", "detector_version", "points", "updated_at",
]  # fmt: skip
DLQ_COLUMNS = ["ts", "source_topic", "source_partition", "source_offset", "item", "reason",
               "payload"]  # fmt: skip
HEALTH_COLUMNS = ["ts", "worker", "stage", "metric", "value"]
MAX_PAYLOAD = 64 * 1024


def episode_row(ep: Episode, now_ms: int) -> list[Any]:
    d = ep.model_dump()
    d["start"], d["end"], d["updated_at"] = ep.start_ms, ep.end_ms, now_ms
    d["is_open"] = int(ep.is_open)
    for k in ("expected", "lower", "upper"):
        d[k] = d[k] if math.isfinite(d[k]) else None
    return [d[c] for c in EPISODE_COLUMNS]


def dlq_record(topic: str, partition: int, offset: int, r: Reject) -> bytes:
    return orjson.dumps({
        "ts": int(time.time() * 1000), "source_topic": topic, "source_partition": partition,
        "source_offset": offset, "item": r.item, "reason": r.reason,
        "payload_b64": base64.b64encode(r.payload[:MAX_PAYLOAD]).decode(),
    })  # fmt: skip


def dlq_row(raw: bytes) -> list[Any]:
    d = orjson.loads(raw)
    payload = base64.b64decode(d["payload_b64"]).decode("utf-8", "replace")
    return [d["ts"], d["source_topic"], d["source_partition"], d["source_offset"], d["item"],
            d["reason"], payload]  # fmt: skip


@dataclass
class Stats:
    """Counters the health timer turns into rows (and `stormwatch up` into a summary)."""

    values: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    started: float = field(default_factory=time.monotonic)

    def add(self, key: str, n: float = 1) -> None:
        self.values[key] += n


class StormApp(faust.App):
    """A faust app whose `before_stop` hooks run while it still owns its partitions: faust
    stops the consumer (leaving the group) first thing in `on_stop`, and a final checkpoint
    written after that could be read stale by the member taking the partitions over."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.before_stop: list[Callable[[], Awaitable[None]]] = []

    async def on_stop(self) -> None:
        for hook in self.before_stop:
            try:
                await hook()
            except Exception as e:  # noqa: BLE001 - never block a stop; replay covers the rest
                log.error("before-stop hook failed: %s", e)
        await super().on_stop()


def build_app(
    settings: StormwatchSettings,
    store: Store,
    stats: Stats | None = None,
    on_episodes: Callable[[list[Episode]], None] | None = None,
) -> faust.App:
    """The faust app for these settings, writing through `store`; `on_episodes` sees each
    batch of episode changes after it is written."""
    prompt_fetches()
    ordered_commits()
    t = settings.topics
    stats = stats or Stats()
    db = settings.database
    app = StormApp(
        settings.app_id,
        broker=[f"kafka://{h}" for h in settings.bootstrap().split(",")],
        store="memory://",
        datadir=str(settings.data_dir / "faust"),  # faust's default is ./<app_id>-data
        web_enabled=False,
        autodiscover=False,
        topic_partitions=t.partitions,
        topic_allow_declare=False,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=min(1.0, settings.broker_session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,  # detect holds events on purpose (open windows)
        producer_max_request_size=MAX_MESSAGE_BYTES,
        consumer_max_fetch_size=MAX_MESSAGE_BYTES,  # per partition: see streams.tuning
        producer_acks=-1,
        logging_config=None,
    )
    app.stormwatch_stats = stats  # type: ignore[attr-defined]
    raw_topic = app.topic(t.raw, value_serializer="raw", key_serializer="raw")
    points_topic = app.topic(t.points, value_serializer="raw", key_serializer="raw",
                             partitions=t.partitions)  # fmt: skip
    dlq_topic = app.topic(t.dlq, value_serializer="raw", key_serializer="raw")
    otlp_metrics_topic = app.topic(t.otlp_metrics, value_serializer="raw", key_serializer="raw")
    otlp_spans_topic = app.topic(t.otlp_spans, value_serializer="raw", key_serializer="raw")
    services_name = t.points + ".services"  # keyed by service: one stage sees all its signals
    services_topic = app.topic(services_name, value_serializer="raw", key_serializer="raw",
                               partitions=t.partitions)  # fmt: skip
    redactor = Redactor()  # defaults: emails, tokens, card numbers, IPs, secret-looking keys
    guard = CardinalityGuard()  # defaults: 1k series per name, 10k per service, 500k in all
    otlp_state = OtlpState()  # per worker: previous cumulative points, publish spans seen
    normalizer = Normalizer(admit=guard.admit)
    known = KnownMetrics()  # metric series seen before skip redact + normalize
    points_encoder = PointsEncoder(normalizer.meta)  # each series' metadata encoded once

    gaps = OffsetGaps()  # source offsets no agent took: warned, counted in health

    async def forget_gaps(sender: object, revoked: set[Any], **kw: Any) -> None:
        gaps.forget(revoked)

    async def read_from(tp: Any) -> int | None:
        """The offset this worker began reading `tp` at: the committed one (faust reads it
        before it fetches), else the partition's first retained (a new group reads from it)."""
        committed = app.consumer._committed_offset.get(tp)
        if committed is not None:
            return int(committed)
        try:
            return (await app.consumer.earliest_offsets(tp)).get(tp)
        except Exception as e:  # noqa: BLE001 - only the check is lost, never the message
            log.warning("%s: first offset unknown, its head goes unchecked: %s", tp, e)
            return None

    app.on_partitions_revoked.connect(forget_gaps)

    async def send_points(partition: int, cols: Points) -> None:
        await points_topic.send(value=points_encoder.encode_columns(cols.columns),
                                partition=partition)  # fmt: skip

    async def normalize_batch(
        stream: faust.StreamT, events: list[Any], decode: Callable[[bytes], Any]
    ) -> None:
        """decode → redact → normalize (cap inside) → DLQ / points, for one take() batch.
        A partition whose detect stage runs in this worker gets its points in-process (the
        source messages acked once their rows are stored); the others through the topic."""
        chunks: list[Points] = []  # each message's points, in stream order
        for ev in events:
            msg = ev.message
            if not gaps.tracks(msg.topic, msg.partition):
                gaps.start(msg.topic, msg.partition, await read_from(msg.tp))
            gaps.see(msg.topic, msg.partition, msg.offset)
            try:
                good, bad = decode(ev.value)
                taken, rest = known.take(good)  # metric series seen before: no more work
                clean = redactor.events(rest)
                obs = normalizer.observations(clean)
                known.learn(rest, clean, normalizer)
            except Exception as e:  # noqa: BLE001 - nothing escapes an agent (it would ack)
                good, obs, taken = [], [], None  # all of the message goes to the DLQ, none on
                bad = [Reject(-1, f"internal error: {type(e).__name__}: {e}", ev.value)]
            if taken is not None:
                chunks.append(taken)
            if obs:
                chunks.append(points_of(obs))
            stats.add("normalize.messages")
            stats.add("normalize.events", len(good))
            for r in bad:
                stats.add("normalize.rejects")
                # The DLQ table is storage too: redact the payload kept there.
                text = redactor.text(r.payload.decode("utf-8", "replace"))
                r = Reject(r.item, r.reason, text.encode())
                await dlq_topic.send(value=dlq_record(msg.topic, msg.partition, msg.offset, r))
        stats.values["normalize.unmodeled"] = guard.unmodeled
        stats.values["normalize.redacted"] = redactor.redacted
        stats.values["normalize.series"] = guard.series
        stats.values["normalize.skipped_offsets"] = gaps.skipped
        acks = SourceAcks(stream, events)
        async with detect.handing:
            if detect.stopping:  # a stop's checkpoint is being taken: replay it after a restart
                return  # unacked, and nothing sent that the replay would send again
            for p, cols in by_partition(chunks, t.partitions):
                send = partial(send_points, p, cols)
                if detect.takes(p):
                    await detect.hand(p, (cols, normalizer.meta), acks.held(send))
                else:
                    await send()
        await acks.done()

    @app.agent(raw_topic)
    async def normalize(stream: faust.StreamT) -> None:
        async for events in stream.take_events(500, within=0.05):
            await normalize_batch(stream, events, decode_records)

    @app.agent(otlp_metrics_topic)
    async def normalize_otlp_metrics(stream: faust.StreamT) -> None:
        async for events in stream.take_events(100, within=0.2):
            await normalize_batch(
                stream, events, lambda raw: decode_otlp_metrics(raw, "auto", otlp_state)
            )

    @app.agent(otlp_spans_topic)
    async def normalize_otlp_spans(stream: faust.StreamT) -> None:
        async for events in stream.take_events(100, within=0.2):
            await normalize_batch(
                stream, events, lambda raw: decode_otlp_traces(raw, "auto", otlp_state)
            )

    stage = DetectStage(
        model_factory(
            settings.detector, threshold=settings.threshold, shadow=settings.shadow_detector
        ),
        window_s=settings.window_s, lateness_s=settings.lateness_s, threshold=settings.threshold,
        lag_threshold=settings.queue_lag_threshold, horizon_s=settings.forecast_horizon_s,
    )  # fmt: skip
    warm_up(stage.make_detector)  # compiled code loaded now, not on the first message
    preload_insert_path()  # and the insert's imports, not on the first write
    app.stormwatch_stage = stage  # type: ignore[attr-defined]
    points_sink = ClickHouseSink(store, f"{db}.points", POINT_COLUMNS)
    episodes_sink = ClickHouseSink(store, f"{db}.anomalies", EPISODE_COLUMNS)
    drift_sink = ClickHouseSink(store, f"{db}.drift", DRIFT_COLUMNS)
    shadow_sink = ClickHouseSink(store, f"{db}.shadow_scores", SHADOW_COLUMNS)

    def rows_to_sinks(points: ClickHouseSink, episodes: ClickHouseSink, out: Any) -> None:
        points.add_columns(out.points)
        now_ms = int(time.time() * 1000)
        for ep in out.episodes:
            episodes.add(episode_row(ep, now_ms))

    def detected_to_sinks(out: Any) -> None:
        rows_to_sinks(points_sink, episodes_sink, out)
        for row in out.drift:
            drift_sink.add(row)
        for row in out.shadow:
            shadow_sink.add(row)

    async def publish_episodes(episodes: list[Episode]) -> None:
        """Each episode change, once written, to the anomalies topic (the actions service),
        keyed by series; returns once the broker has them all, so the points they came from
        are acked only then. Straight to the producer: faust's per-message topic path costs
        more than the message."""
        if not episodes:
            return
        producer = app.producer
        sent = [
            await producer.send(t.anomalies, str(ep.series_id).encode(),
                                ep.model_dump_json().encode(), None, None, None)
            for ep in episodes
        ]  # fmt: skip
        if on_episodes:
            on_episodes(episodes)
        await asyncio.gather(*sent)
        stats.add("episodes.published", len(episodes))

    service_points = ServicePoints(int(settings.window_s * 1000))  # the service stage's buckets

    async def after_detect(out: Any) -> None:
        """Episodes to the actions service; each service's scored signals, before the points
        offsets move, to the one stage that owns the service (a replay re-publishes; closed
        buckets drop repeats)."""
        await publish_episodes(out.episodes)
        if not out.rows:
            return
        by_part: dict[int, ServiceBatch] = defaultdict(dict)
        for svc, cols in service_points(out.points).items():
            by_part[service_partition(svc, t.partitions)][svc] = cols
        sent = [await services_topic.send(value=encode_service_points(batch), partition=p)
                for p, batch in by_part.items()]  # fmt: skip
        await asyncio.gather(*sent)
        stats.add("detect.service_records",
                  sum(len(c[0]) for b in by_part.values() for c in b.values()))  # fmt: skip

    async def feedback(raw: bytes) -> bool:
        """A person's label (from Slack), applied in order with the series' points."""
        fb = decode_feedback(raw)
        if fb is None:
            return False
        applied = stage.apply_feedback(fb["series_id"], fb["label"])
        stats.add("detect.feedback_applied" if applied else "detect.feedback_unknown")
        return True

    common = {
        "app": app, "store": store, "database": db, "stats": stats,
        "restore_before": settings.restore_before, "restore_after": settings.restore_after,
        "checkpoint_s": settings.checkpoint_s,
    }  # fmt: skip
    detect = StageRunner(
        name="detect", topic=points_topic, stage=stage, decode=PointsDecoder().decode,
        sinks=[points_sink, episodes_sink, drift_sink, shadow_sink], to_sinks=detected_to_sinks,
        drop=lambda parts: stage.drop_partitions(parts, t.partitions),
        partition_map=lambda: Modulo(t.partitions), after_write=after_detect, control=feedback,
        hand_overs=True, **common,
    ).install()  # fmt: skip

    # One multivariate model per service over its signals. Records arrive once their detect
    # window closed (window + lateness after the fact), metrics at once: the lateness covers
    # that spread so span signals are not late.
    def service_model(signals: list[str]) -> ServiceModel:
        return ServiceModel(signals, model="ecod", window=360, refit_every=30)

    warm_up_services(service_model)  # pyod imported and fitted now, not minutes into a run
    svc_stage = ServiceStage(
        service_model,
        bucket_s=settings.window_s, lateness_s=settings.window_s + settings.lateness_s + 5.0,
        threshold=settings.threshold,
    )  # fmt: skip
    app.stormwatch_services = svc_stage  # type: ignore[attr-defined]
    svc_points_sink = ClickHouseSink(store, f"{db}.points", POINT_COLUMNS)
    svc_episodes_sink = ClickHouseSink(store, f"{db}.anomalies", EPISODE_COLUMNS)

    def service_partitions() -> dict[int, int]:
        return {st.sid: service_partition(name, t.partitions)
                for name, st in svc_stage.services.items()}  # fmt: skip

    StageRunner(
        name="services", topic=services_topic, stage=svc_stage,
        decode=lambda raw: (decode_service_points(raw),),
        sinks=[svc_points_sink, svc_episodes_sink],
        to_sinks=lambda out: rows_to_sinks(svc_points_sink, svc_episodes_sink, out),
        drop=lambda parts: svc_stage.drop_services(
            lambda svc: service_partition(svc, t.partitions) in parts
        ),
        partition_map=service_partitions,
        after_write=lambda out: publish_episodes(out.episodes),
        flush_rows=1000, idle_s=0.5, **common,
    ).install()  # fmt: skip

    dlq_sink = ClickHouseSink(store, f"{db}.dlq", DLQ_COLUMNS)

    @app.agent(dlq_topic)
    async def dead_letters(stream: faust.StreamT) -> None:
        async for values in stream.take(1000, within=0.5):
            for raw in values:
                try:
                    dlq_sink.add(dlq_row(raw))
                except Exception as e:  # noqa: BLE001 - a foreign message on our DLQ topic
                    log.error("unreadable dead letter: %s", e)
            await write_with_retry(dlq_sink.flush, stats, "dlq")

    health_sink = ClickHouseSink(store, f"{db}.health", HEALTH_COLUMNS)
    worker_name = f"{socket.gethostname()}:{os.getpid()}"
    reported: dict[str, float] = {}

    async def write_health() -> None:
        now_ms = int(time.time() * 1000)
        c = stage.counters
        stats.values["detect.series"] = len(stage.series)
        stats.values["detect.observations"] = c.observations
        stats.values["detect.late"] = c.late
        stats.values["detect.episodes_opened"] = c.episodes_opened
        sc = svc_stage.counters
        stats.values["services.series"] = len(svc_stage.services)
        for key in ("records", "late", "vectors", "unscored", "signals_ignored", "rebuilds",
                    "episodes_opened"):  # fmt: skip
            stats.values[f"services.{key}"] = getattr(sc, key)
        for key, v in list(stats.values.items()):
            stage_name, _, metric = key.partition(".")
            gauge = metric == "series"
            value = v if gauge else v - reported.get(key, 0.0)
            reported[key] = v
            health_sink.add([now_ms, worker_name, stage_name, metric, value])
        try:
            await asyncio.get_running_loop().run_in_executor(None, health_sink.flush)
        except StoreError as e:
            log.warning("health write failed: %s", e)

    @app.timer(5.0)
    async def report_health() -> None:
        await write_health()

    app.before_stop.append(write_health)  # the last counters, after the final checkpoint
    return app
