"""Where a model's files live in the object store (names only: reading checkpoints back is the jobs' business, in
agents/train/checkpoints.py).

    datasets/<id>                              uploaded or inline training text
    uploads/<id>/session.json                  an upload session of a dataset (and parts/<n>.json, its receipts)
    tokens/<dataset>/<tokenization>/           a dataset's tokens: manifest.json, tokenizer.json, shard-<n>.bin
    models/<id>/config.json                    resolved model and training configuration
    models/<id>/tokenizer.json                 the tokenizer, loadable without the training data
    models/<id>/checkpoints/step-<n>.pt        the latest checkpoints (the two newest are kept)
    models/<id>/checkpoints/best.pt            the checkpoint with the lowest validation loss
    evaluations/<id>.json                      an evaluation report
"""

from __future__ import annotations

import re

_STEP = re.compile(r"/checkpoints/step-(\d+)\.pt$")


def dataset_key(dataset_id: str) -> str:
    return f"datasets/{dataset_id}"


def upload_prefix(upload_id: str) -> str:
    return f"uploads/{upload_id}/"


def upload_session_key(upload_id: str) -> str:
    return f"uploads/{upload_id}/session.json"


def upload_receipts_prefix(upload_id: str) -> str:
    return f"uploads/{upload_id}/parts/"


def upload_receipt_key(upload_id: str, number: int) -> str:
    return f"uploads/{upload_id}/parts/{number:05d}.json"


def tokens_prefix(dataset_id: str, tokenization_id: str | None = None) -> str:
    """A dataset's tokenizations, or one of them."""
    return f"tokens/{dataset_id}/" + (f"{tokenization_id}/" if tokenization_id else "")


def manifest_key(dataset_id: str, tokenization_id: str) -> str:
    return f"{tokens_prefix(dataset_id, tokenization_id)}manifest.json"


def model_prefix(model_id: str) -> str:
    return f"models/{model_id}/"


def config_key(model_id: str) -> str:
    return f"models/{model_id}/config.json"


def tokenizer_key(model_id: str) -> str:
    return f"models/{model_id}/tokenizer.json"


def checkpoint_prefix(model_id: str) -> str:
    return f"models/{model_id}/checkpoints/"


def checkpoint_key(model_id: str, step: int) -> str:
    return f"{checkpoint_prefix(model_id)}step-{step}.pt"


def best_key(model_id: str) -> str:
    return f"{checkpoint_prefix(model_id)}best.pt"


def evaluation_key(job_id: str) -> str:
    return f"evaluations/{job_id}.json"


def step_of(key: str) -> int | None:
    match = _STEP.search(key)
    return int(match.group(1)) if match else None


def export_prefix(job_id: str) -> str:
    return f"exports/{job_id}/"


def export_key(job_id: str, name: str) -> str:
    return f"{export_prefix(job_id)}{name}"


def export_content_type(name: str) -> str:
    """How an exported file is stored and served: JSON for the configurations, bytes for the rest."""
    return "application/json" if name.endswith(".json") else "application/octet-stream"


def import_key(job_id: str, name: str) -> str:
    """Where the gateway puts a file of a model directory to import (ImportRequested insists on this place)."""
    return f"imports/{job_id}/{name}"
