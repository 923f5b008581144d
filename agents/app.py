"""The Faust app of the agents: `create_app(settings)` wires every feature to one runtime.

One worker process runs every agent (train, evaluate, generate, control, record); start more workers to share
the partitions through the consumer group.
"""

from __future__ import annotations

import faust

from agents import control, evaluate, generate, record, train
from agents.runtime import Runtime
from agents.scheduler import Scheduler
from infra.settings import Settings


def create_app(settings: Settings) -> tuple[faust.App, Runtime]:
    runtime = Runtime(settings)
    datadir = settings.data_dir / "faust" / runtime.worker_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.topic_prefix}agents",
        broker=settings.kafka_url,
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        web_enabled=False,
        autodiscover=False,
        store="memory://",
        datadir=str(datadir),
        consumer_auto_offset_reset="earliest",
        # A dead worker's partitions move on after ten seconds, not a minute.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_commit_every=100,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        producer_acks=-1,
    )
    scheduler = Scheduler(runtime)
    train.register(app, runtime, scheduler)
    evaluate.register(app, runtime, scheduler)
    control.register(app, runtime, scheduler)
    generate.register(app, runtime)
    record.register(app, runtime)

    @app.task
    async def schedule_jobs() -> None:
        await scheduler.run_forever()

    runtime.scheduler = scheduler  # type: ignore[attr-defined]
    return app, runtime
