"""A model's checkpoints in the object store, read back safely: the newest one that verifies, and the pruning of
older ones. Used by the training and the evaluation job, in their child processes."""

from __future__ import annotations

from agents.jobs.child import JobContext
from events import Rejected
from infra.objectstore import ObjectNotFound, ObjectStore
from infra.objectstore.artifacts import checkpoint_prefix, step_of
from model.checkpoint import CorruptCheckpoint, unpack_checkpoint

KEEP_LATEST = 2  # step checkpoints kept besides the best one


def checkpoint_steps(store: ObjectStore, model_id: str) -> list[tuple[int, str]]:
    """The model's step checkpoints, newest first."""
    keys = store.list(checkpoint_prefix(model_id))
    steps = [(step, key) for key in keys if (step := step_of(key)) is not None]
    return sorted(steps, reverse=True)


def load_latest_valid(store: ObjectStore, model_id: str, min_step: int = 0) -> tuple[str, dict] | None:
    """The newest checkpoint at or after `min_step` whose checksum verifies; a torn or corrupt one is skipped."""
    for step, key in checkpoint_steps(store, model_id):
        if step < min_step:
            break
        try:
            return key, unpack_checkpoint(store.get_bytes(key))
        except (CorruptCheckpoint, ObjectNotFound):
            continue
    return None


def load_checkpoint(store: ObjectStore, key: str) -> dict:
    return unpack_checkpoint(store.get_bytes(key))


def read_checkpoint(job: JobContext, key: str, field: str, what: str = "the model's checkpoint") -> dict:
    """The checkpoint a job starts from, waiting out an object store that is away; one that is missing or does not
    verify ends the job as a refusal naming `field`."""
    try:
        return job.stored(lambda: load_checkpoint(job.store, key), "reading the checkpoint")
    except (ObjectNotFound, CorruptCheckpoint) as error:
        raise Rejected(f"{field}: {what} cannot be read ({error})", field) from None


def prune_checkpoints(store: ObjectStore, model_id: str, keep: int = KEEP_LATEST) -> list[str]:
    """Delete all but the `keep` newest step checkpoints; returns the keys deleted."""
    pruned = [key for _, key in checkpoint_steps(store, model_id)[keep:]]
    for key in pruned:
        store.delete(key)
    return pruned
