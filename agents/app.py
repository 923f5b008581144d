"""The Faust app of the agents: `create_app(settings)` wires every feature to one runtime, one scheduler and one
sweep runner.

One worker process runs every agent (train, evaluate, export, import, tokenize, sweep, generate, control, record);
start more workers to share the partitions through the consumer group. Train, evaluate, export, import and tokenize
jobs run in child processes, which the scheduler starts from the queue; generation runs in the worker itself, one
batching engine per model; sweeps are coordinated in the worker too, by whichever worker holds each one's lease.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust

from agents import control
from agents.evaluate import agent as evaluate
from agents.evaluate.job import EVALUATE
from agents.export import agent as export
from agents.export.job import EXPORT
from agents.generate import agent as generate
from agents.imports import agent as imports
from agents.imports.job import IMPORT
from agents.jobs.scheduler import Scheduler
from agents.record import agent as record
from agents.runtime import Runtime
from agents.sweeps import agent as sweeps
from agents.sweeps.runner import SweepRunner
from agents.tokenize import agent as tokenize
from agents.tokenize.job import TOKENIZE
from agents.train import agent as train
from agents.train.job import TRAIN, TRAIN_JOIN
from agents.transport import App
from infra.kafka import ssl_context
from infra.settings import Settings


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """The settings' SASL and TLS (see infra.kafka.client_options) as Faust takes them."""
    context = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        return faust.SASLCredentials(username=settings.kafka_username, password=settings.kafka_password,
                                     mechanism=settings.kafka_sasl_mechanism, ssl_context=context)
    if context is not None:
        return faust.SSLCredentials(context)
    return None


@dataclass(frozen=True)
class Agents:
    app: faust.App
    runtime: Runtime
    scheduler: Scheduler
    sweeps: SweepRunner


def create_app(settings: Settings) -> Agents:
    runtime = Runtime(settings)
    datadir = settings.data_dir / "faust" / runtime.worker_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = App(
        f"{settings.topic_prefix}agents",
        fetch_wait_ms=settings.fetch_wait_ms,
        broker=settings.kafka_url,
        broker_credentials=faust_credentials(settings),
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
    kinds = (TRAIN, TRAIN_JOIN, EVALUATE, EXPORT, IMPORT, TOKENIZE)
    scheduler = Scheduler(runtime, {kind.name: kind for kind in kinds})
    train.register(app, runtime, scheduler)
    evaluate.register(app, runtime, scheduler)
    export.register(app, runtime, scheduler)
    imports.register(app, runtime, scheduler)
    tokenize.register(app, runtime, scheduler)
    control.register(app, runtime, scheduler)
    generate.register(app, runtime)
    record.register(app, runtime)
    runner = SweepRunner(runtime)
    sweeps.register(app, runtime, runner)

    @app.task
    async def schedule_jobs() -> None:
        await scheduler.run_forever()

    @app.task
    async def coordinate_sweeps() -> None:
        await runner.run_forever()

    return Agents(app, runtime, scheduler, runner)
