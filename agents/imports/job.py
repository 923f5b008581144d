"""An import, as the child process runs it: read the model directory's files, turn them into our checkpoint, store
it as the new model's step-0 checkpoint (also its best), and announce the model.

The conversion is the model library's (model/export/from_hf.py); what it refuses ends the job with ImportFailed
naming the field. The uploaded files are deleted once the checkpoint holds them.
"""

from __future__ import annotations

import hashlib

from agents.jobs.child import JobContext
from agents.jobs.kinds import JobKind, JobSpec
from events import CheckpointSaved, JobCancelled, ModelImported, Rejected
from infra.objectstore import ObjectNotFound
from infra.objectstore.artifacts import best_key, checkpoint_key, tokenizer_key
from model.checkpoint import load_model, pack_checkpoint
from model.export import ExportError
from model.export.from_hf import state_from_hf


class ImportSpec(JobSpec):
    """An import as the import agent accepted it: the model it creates and where the uploaded files are."""

    files: dict[str, str]
    version: int | None = None  # its number among its name's versions


def run_import(spec: ImportSpec, job: JobContext) -> None:
    store = job.store
    files = {}
    for name, key in spec.files.items():
        try:
            files[name] = job.stored(lambda key=key: store.get_bytes(key), f"reading {name}")
        except ObjectNotFound:
            raise Rejected(f"files.{name}: no upload at {key}", f"files.{name}") from None
    try:
        state = state_from_hf(files)
    except ExportError as error:
        raise Rejected(f"{error.field}: {error.message}", error.field) from None
    model, tokenizer = load_model(state)  # the checkpoint builds the network it describes, or this fails here
    if job.should_stop():
        job.emit(JobCancelled, reason="cancelled by request")
        return
    data = pack_checkpoint(state)
    key, best = checkpoint_key(spec.model_id, 0), best_key(spec.model_id)
    job.stored(lambda: store.put_bytes(tokenizer_key(spec.model_id), state["tokenizer"].encode(), "application/json"),
               "writing the tokenizer")
    job.stored(lambda: store.put_bytes(key, data), "writing the checkpoint")
    job.stored(lambda: store.put_bytes(best, data), "writing the best checkpoint")
    job.emit(CheckpointSaved, model_id=spec.model_id, step=0, key=key, sha256=hashlib.sha256(data).hexdigest(),
             bytes=len(data), is_best=True, best_key=best, pruned=[])
    job.emit(ModelImported, model_id=spec.model_id, architecture=state["imported_from"],
             config={"model": state["model_config"], "train": state["train_config"]},
             num_parameters=model.num_parameters(), vocab_size=tokenizer.vocab_size, tokenizer=tokenizer.kind,
             tokenizer_key=tokenizer_key(spec.model_id), checkpoint_key=best)
    for key in spec.files.values():
        job.stored(lambda key=key: store.delete(key), "deleting the upload")


IMPORT = JobKind("import", ImportSpec, run_import)
