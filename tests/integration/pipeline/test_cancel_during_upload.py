"""A cancel that arrives while the training process is inside a checkpoint upload.

The worker's object store is reached through a proxy (tests/integration/proxy.py) that holds the job's second
checkpoint upload half-way, so the cancel lands inside that PUT every time, however fast or slow the machine is.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from agents.intake import dataset_id_of_job
from agents.train import checkpoints
from infra.objectstore import artifacts
from infra.db import create_engine, sessionmaker
from infra.db.tables import Checkpoint, Model
from infra.objectstore import ObjectNotFound, ObjectStore
from model.checkpoint import CorruptCheckpoint, unpack_checkpoint
from tests.integration.pipeline.conftest import train_request
from tests.integration.proxy import HoldingProxy
from tests.integration.stack import job_processes, poll, recorded, start_worker, wait_until

# Checkpoints at steps 50 and 100 (and on each better validation): the one of step 100 is held.
LONG = {"preset": "tiny", "max_iters": 600, "checkpoint_every": 50, "eval_every": 100}


def _second_step_checkpoint() -> Callable[[str, str], bool]:
    uploads = itertools.count(1)
    return lambda method, path: method == "PUT" and "/checkpoints/step-" in path and next(uploads) == 2


async def test_a_cancel_during_a_checkpoint_upload_ends_the_job_and_no_torn_checkpoint_counts(
        own_env, own_bus, settings, object_store: ObjectStore, tmp_path: Path):
    proxy = HoldingProxy(settings.object_store_url, _second_step_checkpoint())
    worker = start_worker("upload-w", {**own_env, "LFZ_OBJECT_STORE_URL": proxy.url}, tmp_path)
    job_id = f"upload-{uuid.uuid4().hex[:8]}"
    try:
        await own_bus.produce("train.requested", {**train_request(job_id, "torn"), "hyperparameters": LONG},
                              key=job_id)
        assert await asyncio.to_thread(proxy.held.wait, 180), "the job reached its second checkpoint upload"
        children = job_processes(worker.pid)
        assert children, "training runs in a child process of the worker"
        asked = time.monotonic()
        await own_bus.produce("job.control", {"type": "CancelRequested", "job_id": job_id, "reason": "mid-upload"},
                              key=job_id)
        events = await own_bus.job(job_id, timeout=120)
        took = time.monotonic() - asked
        assert events[-1]["type"] == "JobCancelled" and events[-1]["reason"] == "mid-upload"
        assert not any(e["type"] in ("TrainCompleted", "TrainFailed") for e in events)
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), 15, "the job's process to exit")
        assert worker.alive()
        await asyncio.wait_for(poll(lambda: recorded(settings.resolved_database_url, job_id),
                                    lambda rows: rows and rows[-1][2] == "JobCancelled"), 60)
    finally:
        worker.stop()
        proxy.close()

    model_id = next(e["model_id"] for e in events if e["type"] == "JobAccepted")
    try:
        model, rows = await _model_and_checkpoints(settings.resolved_database_url, model_id)
        assert model.status == "cancelled"
        referenced = {model.latest_checkpoint, model.best_checkpoint} | set(rows)
        stored = object_store.list(artifacts.model_prefix(model_id) + "checkpoints/")
        torn = [key for key in stored if not _verifies(object_store, key)]
        assert not torn or not referenced & set(torn), f"torn checkpoints {torn} are referenced: {referenced}"
        assert model.latest_checkpoint is not None, "the checkpoint before the held one still counts"
        latest = object_store.get_bytes(model.latest_checkpoint)
        assert hashlib.sha256(latest).hexdigest() == rows[model.latest_checkpoint]
        assert unpack_checkpoint(latest)["step"] < artifacts.step_of(proxy.held_path or "")
        resumable = checkpoints.load_latest_valid(object_store, model_id)
        assert resumable is not None and resumable[0] in stored and resumable[0] not in torn
        print(f"\ncancel while {proxy.held_path} was half-uploaded: JobCancelled {took:.1f}s after the request; "
              f"stored {sorted(stored)}, latest {model.latest_checkpoint}, torn {torn}")
    finally:
        object_store.delete_prefix(artifacts.model_prefix(model_id))
        object_store.delete(artifacts.dataset_key(dataset_id_of_job(job_id)))


def _verifies(store: ObjectStore, key: str) -> bool:
    try:
        unpack_checkpoint(store.get_bytes(key))
        return True
    except (CorruptCheckpoint, ObjectNotFound):
        return False


async def _model_and_checkpoints(database_url: str, model_id: str) -> tuple[Model, dict[str, str]]:
    """The model's row, and its recorded checkpoints as {key: sha256}."""
    engine = create_engine(database_url)
    try:
        async with sessionmaker(engine)() as session:
            model = await session.get(Model, model_id)
            assert model is not None, f"model {model_id} was recorded"
            rows = await session.execute(select(Checkpoint.key, Checkpoint.sha256)
                                         .where(Checkpoint.model_id == model_id))
            return model, dict(rows.all())
    finally:
        await engine.dispose()
