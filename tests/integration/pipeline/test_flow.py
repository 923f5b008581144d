"""The whole flow, driven as an outside producer would drive it: JSON on the request topics, facts back."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from sqlalchemy import func, select

from infra.db import create_engine, sessionmaker
from infra.db.tables import Checkpoint, Evaluation, Job, JobEventRow, Model
from infra.objectstore import open_object_store
from tests.integration.pipeline.conftest import train_request


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


async def projected(settings, job_id: str, status: str, timeout: float = 30) -> Job:
    engine = create_engine(settings.resolved_database_url)
    sessions = sessionmaker(engine)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            async with sessions() as session:
                job = await session.get(Job, job_id)
                if job is not None and job.status == status:
                    return job
            await asyncio.sleep(0.2)
        raise AssertionError(f"job {job_id} did not reach {status} in the database")
    finally:
        await engine.dispose()


async def test_train_evaluate_generate_from_hand_made_messages(bus, worker, settings):
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    name = f"flow-{uuid.uuid4().hex[:6]}"
    request = train_request(job_id, name)
    del request["job_id"]  # the documented minimal message has none ...
    request["job_id"] = job_id  # ... but a producer that wants to follow the job gives one
    await bus.produce("train.requested", request, key=job_id)

    events = await bus.job(job_id, timeout=120)
    kinds = types(events)
    assert kinds[0] == "JobAccepted" and kinds[-1] == "TrainCompleted", kinds
    assert "TrainStarted" in kinds and "TrainProgress" in kinds and "CheckpointSaved" in kinds
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["event_id"] for e in events}) == len(events)
    assert all(e["producer"].startswith("agents/") and e["time"] for e in events)
    progress = [e for e in events if e["type"] == "TrainProgress"]
    assert progress[-1]["step"] == 50 and progress[0]["loss"] > progress[-1]["loss"]
    completed = events[-1]
    model_id = completed["model_id"]

    # The checkpoint is in the real S3 server, and verifies.
    from model.checkpoint import unpack_checkpoint

    store = open_object_store(settings)
    state = unpack_checkpoint(store.get_bytes(completed["checkpoint_key"]))
    assert state["step"] == 50
    assert store.exists(f"models/{model_id}/tokenizer.json") and store.exists(f"models/{model_id}/config.json")

    # The projection in PostgreSQL.
    job = await projected(settings, job_id, "completed")
    assert job.last_seq == len(events) and job.progress == 1.0
    engine = create_engine(settings.resolved_database_url)
    async with sessionmaker(engine)() as session:
        model = await session.get(Model, model_id)
        assert (model.name, model.status, model.step) == (name, "completed", 50)
        assert model.best_checkpoint == f"models/{model_id}/checkpoints/best.pt"
        checkpoints = (await session.execute(select(Checkpoint).where(Checkpoint.model_id == model_id))).scalars()
        assert {c.step for c in checkpoints} >= {50}

    # Evaluate it by name.
    eval_id = f"eval-{uuid.uuid4().hex[:8]}"
    await bus.produce("evaluate.requested", {"type": "EvaluateRequested", "job_id": eval_id, "model_name": name,
                                             "prompts": ["The model"], "max_new_tokens": 20}, key=eval_id)
    evaluation = await bus.job(eval_id)
    assert types(evaluation) == ["JobAccepted", "EvaluationCompleted"], evaluation[-1]
    report = evaluation[-1]["report"]
    held_out = report["held_out"]
    assert held_out["perplexity"] > 1 and held_out["bits_per_character"] > 0
    assert report["generation"]["completions"] == 1
    assert json.loads(store.get_bytes(evaluation[-1]["report_key"])) == report
    await projected(settings, eval_id, "completed")
    async with sessionmaker(engine)() as session:
        assert (await session.get(Evaluation, eval_id)).model_id == model_id

    # Generate, with tokens streamed as facts before the completion.
    request_id = f"gen-{uuid.uuid4().hex[:8]}"
    await bus.produce("generate.requested", {"type": "GenerateRequested", "schema_version": 1,
                                             "request_id": request_id, "model_name": name, "prompt": "The ",
                                             "max_tokens": 40, "seed": 7}, key=request_id)
    generation = await bus.job(request_id)
    assert types(generation)[0] == "JobAccepted" and types(generation)[-1] == "GenerationCompleted"
    tokens = [e for e in generation if e["type"] == "TokensGenerated"]
    assert tokens, "tokens must be streamed before the completion"
    done = generation[-1]
    assert "".join(t["text"] for t in tokens) == done["completions"][0]["text"]
    assert sum(len(t["token_ids"]) for t in tokens) == done["completion_tokens"] <= 40
    assert done["prompt_tokens"] == 4 and done["ttft_ms"] > 0
    # Every fact of the generation is in the database's copy of the log too.
    await projected(settings, request_id, "completed")
    async with sessionmaker(engine)() as session:
        logged = await session.scalar(select(func.count()).select_from(JobEventRow)
                                      .where(JobEventRow.job_id == request_id))
    await engine.dispose()
    assert logged == len(generation)
