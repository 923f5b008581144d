"""An export, as the child process runs it: read the checkpoint, write it in the format asked for, store the files.

The conversion is the model library's (model/export/); this job only moves bytes: from the checkpoint in the object
store to the files under `exports/{job_id}/`, which ExportCompleted lists and the gateway serves.
"""

from __future__ import annotations

from agents.jobs.child import JobContext
from agents.jobs.kinds import JobKind, JobSpec
from agents.train import checkpoints
from events import ExportCompleted, ExportedFile, JobCancelled, Rejected
from infra.objectstore import ObjectNotFound
from infra.objectstore.artifacts import export_key
from model.checkpoint import CorruptCheckpoint
from model.config import model_config_from_dict
from model.export import ExportError
from model.export.gguf import gguf_bytes
from model.export.hf import ARCHITECTURES, hf_files

CONTENT_TYPES = {".json": "application/json", ".safetensors": "application/octet-stream",
                 ".gguf": "application/octet-stream"}


class ExportSpec(JobSpec):
    """An export as the export agent accepted it."""

    checkpoint_key: str
    format: str
    dtype: str


def _content_type(name: str) -> str:
    return next((kind for suffix, kind in CONTENT_TYPES.items() if name.endswith(suffix)), "application/octet-stream")


def run_export(spec: ExportSpec, job: JobContext) -> None:
    store = job.store
    try:
        state = job.stored(lambda: checkpoints.load_checkpoint(store, spec.checkpoint_key), "reading the checkpoint")
    except (ObjectNotFound, CorruptCheckpoint) as error:
        raise Rejected(f"step: the checkpoint {spec.checkpoint_key} cannot be read ({error})", "step") from None
    try:
        if spec.format == "hf":
            files = hf_files(state, spec.dtype)
            architecture = ARCHITECTURES[model_config_from_dict(state["model_config"]).positions]
        else:
            files = {"model.gguf": gguf_bytes(state, spec.dtype)}
            architecture = "gguf:" + ("gptneox" if state["model_config"].get("positions") == "rotary" else "gpt2")
    except ExportError as error:
        raise Rejected(str(error), error.field) from None
    if job.should_stop():
        job.emit(JobCancelled, reason="cancelled by request")
        return
    stored = []
    for name, data in files.items():
        key = export_key(spec.job_id, name)
        job.stored(lambda key=key, data=data, name=name: store.put_bytes(key, data, _content_type(name)),
                   f"writing {name}")
        stored.append(ExportedFile(name=name, key=key, bytes=len(data)))
    job.emit(ExportCompleted, model_id=spec.model_id, format=spec.format, dtype=spec.dtype,
             architecture=architecture, step=int(state.get("step", 0)), checkpoint_key=spec.checkpoint_key,
             files=[f.model_dump() for f in stored])


EXPORT = JobKind("export", ExportSpec, run_export)
