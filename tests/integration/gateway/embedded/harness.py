"""What the gateway's tests run against: a real uvicorn server in the test's event loop, the projection applied
from real Kafka (the same `agents.record.projection.apply` the record agent uses), and a scripted stand-in for the agents
that answers commands with plausible facts, for the tests that must not wait for real training."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from starlette.applications import Starlette

from agents.intake import dataset_id_of_job
from agents.record.projection import apply
from infra.joblog import Recorded
from events import (
    CancelRequested,
    Completion,
    EvaluateRequested,
    EvaluationCompleted,
    GenerateRequested,
    GenerationCompleted,
    JobAccepted,
    JobCancelled,
    JobEvent,
    TokensGenerated,
    Topics,
    TrainCompleted,
    TrainProgress,
    SweepRequested,
    TrainRequested,
    TrainStarted,
    decode_command,
    decode_event,
)
from infra.db import create_engine, sessionmaker
from infra.kafka import ensure_topics
from infra.objectstore import artifacts, open_async_object_store
from infra.settings import Settings


@contextlib.asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """Run `app` with uvicorn on a free loopback port; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises the start-up error
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _assigned_consumer(settings: Settings, topics: list[str]) -> AIOKafkaConsumer:
    await ensure_topics(settings)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    await consumer.topics()
    consumer.assign([TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()])
    return consumer


class Projector:
    """Applies every fact on the job-events topic to the database, as the record agent does. `paused` holds it."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.paused = asyncio.Event()
        self.paused.set()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Projector:
        self.engine = create_engine(self.settings.resolved_database_url)
        self.sessions = sessionmaker(self.engine)
        self.consumer = await _assigned_consumer(self.settings, [Topics(self.settings.topic_prefix).job_events])
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.consumer.stop()
        await self.engine.dispose()

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=200)
            for tp, messages in batches.items():
                for message in messages:
                    await self.paused.wait()
                    event = decode_event(message.value)
                    async with self.sessions() as session:
                        await apply(session, Recorded(event, tp.partition, message.offset))
                        await session.commit()


class ScriptedAgents:
    """Answers commands from the request topics with the facts the real agents would publish, instantly."""

    def __init__(self, settings: Settings, tokens: str = "hello world", progress_steps: int = 3):
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.tokens = tokens
        self.progress_steps = progress_steps
        self.commands: list[Any] = []
        self.delay_s = 0.0  # between facts
        self.hold_training = False  # when set, training never completes (to cancel it)
        self._task: asyncio.Task[None] | None = None
        self._seq: dict[str, int] = {}

    async def __aenter__(self) -> ScriptedAgents:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, linger_ms=0)
        await self.producer.start()
        self.consumer = await _assigned_consumer(self.settings, list(self.topics.request_topics))
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.consumer.stop()
        await self.producer.stop()

    async def emit(self, cls: type[JobEvent], job_id: str, kind: str, owner: str | None, **fields: Any) -> None:
        seq = self._seq.get(job_id, 0) + 1
        self._seq[job_id] = seq
        event = cls(job_id=job_id, seq=seq, producer="agents/scripted", owner=owner, kind=kind, **fields)
        await self.producer.send_and_wait(self.topics.job_events, event.to_json(), key=job_id.encode())
        if self.delay_s:
            await asyncio.sleep(self.delay_s)

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=200)
            for messages in batches.values():
                for message in messages:
                    command = decode_command(message.value)
                    self.commands.append(command)
                    await self._answer(command)

    async def _answer(self, command: Any) -> None:
        if isinstance(command, TrainRequested):
            await self._train(command)
        elif isinstance(command, GenerateRequested):
            await self._generate(command)
        elif isinstance(command, EvaluateRequested):
            job, owner = command.job_id, command.owner
            await self.emit(JobAccepted, job, "evaluate", owner, model_id=command.model_id,
                            request=json.loads(command.to_json()))
            await self.emit(EvaluationCompleted, job, "evaluate", owner, model_id=command.model_id,
                            report={"perplexity": 12.5, "prompts": len(command.prompts)},
                            report_key=f"evaluations/{job}.json")
        elif isinstance(command, SweepRequested):  # accepted; its trials are the real runner's to make
            await self.emit(JobAccepted, command.job_id, "sweep", command.owner, model_name=command.model_name)
        elif isinstance(command, CancelRequested):
            await self.emit(JobCancelled, command.job_id, "train", command.owner, reason=command.reason)

    async def _train(self, command: TrainRequested) -> None:
        job, owner, model = command.job_id, command.owner, command.model_id or "m"
        dataset_key = command.dataset.key or artifacts.dataset_key(dataset_id_of_job(job))
        if command.dataset.text is not None:  # as the train agent does: the inline text is stored as a dataset
            await open_async_object_store(self.settings).put_bytes(dataset_key, command.dataset.text.encode())
        await self.emit(JobAccepted, job, "train", owner, model_id=model, model_name=command.model_name,
                        parent_id=command.parent_id, dataset_key=dataset_key, tokenizer=command.tokenizer,
                        hyperparameters=dict(command.hyperparameters))
        if self.hold_training:
            return
        steps = self.progress_steps
        await self.emit(TrainStarted, job, "train", owner, model_id=model, worker="scripted", max_iters=steps,
                        num_parameters=1000, device="cpu")
        for step in range(1, steps + 1):
            await self.emit(TrainProgress, job, "train", owner, step=step, max_iters=steps, loss=3.0 / step,
                            learning_rate=1e-3, tokens_per_s=100.0, elapsed_s=step * 0.1, progress=step / steps)
        await self.emit(TrainCompleted, job, "train", owner, model_id=model, final_step=steps, wall_s=0.3,
                        num_parameters=1000, checkpoint_key=f"models/{model}/checkpoints/step-{steps}.pt")

    async def _generate(self, command: GenerateRequested) -> None:
        job, owner = command.request_id, command.owner
        await self.emit(JobAccepted, job, "generate", owner, model_id=command.model_id,
                        request=json.loads(command.to_json()))
        texts = []
        for sequence in range(command.num_sequences):
            text = self.tokens[: command.max_tokens]
            texts.append(text)
            if command.stream:
                for index, char in enumerate(text):
                    await self.emit(TokensGenerated, job, "generate", owner, sequence=sequence, index=index,
                                    token_ids=[ord(char)], text=char)
        completions = [Completion(index=i, text=t, completion_tokens=len(t), finish_reason="length")
                       for i, t in enumerate(texts)]
        await self.emit(GenerationCompleted, job, "generate", owner, model_id=command.model_id or "m",
                        completions=completions, prompt_tokens=len(command.prompt),
                        completion_tokens=sum(len(t) for t in texts), ttft_ms=1.0, total_ms=2.0)
