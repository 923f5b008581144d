"""Where a model's files live in the object store, and reading them back safely.

    datasets/<id>                              uploaded or inline training text
    models/<id>/config.json                    resolved model and training configuration
    models/<id>/tokenizer.json                 the tokenizer, loadable without the training data
    models/<id>/checkpoints/step-<n>.pt        the latest checkpoints (the two newest are kept)
    models/<id>/checkpoints/best.pt            the checkpoint with the lowest validation loss
    evaluations/<id>.json                      an evaluation report
"""

from __future__ import annotations

import re

from infra.objectstore.base import ObjectNotFound, ObjectStore
from model.checkpoint import CorruptCheckpoint, unpack_checkpoint

_STEP = re.compile(r"/checkpoints/step-(\d+)\.pt$")
KEEP_LATEST = 2


def dataset_key(dataset_id: str) -> str:
    return f"datasets/{dataset_id}"


def model_prefix(model_id: str) -> str:
    return f"models/{model_id}/"


def config_key(model_id: str) -> str:
    return f"models/{model_id}/config.json"


def tokenizer_key(model_id: str) -> str:
    return f"models/{model_id}/tokenizer.json"


def checkpoint_key(model_id: str, step: int) -> str:
    return f"models/{model_id}/checkpoints/step-{step}.pt"


def best_key(model_id: str) -> str:
    return f"models/{model_id}/checkpoints/best.pt"


def evaluation_key(job_id: str) -> str:
    return f"evaluations/{job_id}.json"


def step_of(key: str) -> int | None:
    match = _STEP.search(key)
    return int(match.group(1)) if match else None


def checkpoint_steps(store: ObjectStore, model_id: str) -> list[tuple[int, str]]:
    """The model's step checkpoints, newest first."""
    keys = store.list(f"models/{model_id}/checkpoints/")
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


def prune_checkpoints(store: ObjectStore, model_id: str, keep: int = KEEP_LATEST) -> None:
    for _, key in checkpoint_steps(store, model_id)[keep:]:
        store.delete(key)
